//! Login rate limits in Redis, so that every node draws on the same
//! buckets.
//!
//! Each bucket is one key holding its theoretical arrival time, as in the
//! generic cell rate algorithm (GCRA): an attempt is allowed while that
//! time, advanced by one interval, stays within `burst` intervals of now.
//! The script reads the clock of the Redis server, so nodes whose clocks
//! disagree still share one bucket correctly.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use infinity_api::ratelimit::{LoginQuota, SharedLimits};

use crate::{key, Redis};

/// Takes one attempt. ARGV: the interval and the burst, in milliseconds
/// and attempts. Returns 0 when allowed, or the milliseconds to wait.
const TAKE: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local next_tat = tat + interval
local excess = next_tat - now - burst * interval
if excess > 0 then
  return excess
end
redis.call('SET', KEYS[1], next_tat, 'PX', next_tat - now)
return 0
"#;

pub struct RedisLimits {
    redis: Arc<Redis>,
    take: redis::Script,
}

impl RedisLimits {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            take: redis::Script::new(TAKE),
        }
    }
}

#[async_trait]
impl SharedLimits for RedisLimits {
    async fn take(&self, bucket: &str, quota: LoginQuota) -> Result<Option<Duration>, String> {
        let interval = quota.interval().as_millis().max(1);
        let wait_ms: u64 = self
            .redis
            .eval(
                &self.take,
                &[key("login", bucket)],
                &[interval.to_string(), quota.burst.max(1).to_string()],
            )
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }
}
