//! Each session's mark (its highest write position and the bus sequence
//! number of its latest change), shared by every node, so that a session
//! reads its own writes whichever node serves it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use infinity_api::consistency::{SessionMark, SharedPositions};

use crate::{key, Redis, SharedResult};

/// Raises each field of a stored mark, never lowers it, and renews its
/// lifetime. ARGV: the position, the change, the lifetime in milliseconds.
const RAISE: &str = r#"
local fields = {'position', 'change'}
for i, field in ipairs(fields) do
  local current = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  if tonumber(ARGV[i]) > current then
    redis.call('HSET', KEYS[1], field, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

pub struct RedisPositions {
    redis: Arc<Redis>,
    raise: redis::Script,
}

impl RedisPositions {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            raise: redis::Script::new(RAISE),
        }
    }
}

#[async_trait]
impl SharedPositions for RedisPositions {
    async fn get(&self, digest: &str) -> SharedResult<SessionMark> {
        let (position, change): (Option<u64>, Option<u64>) = self
            .redis
            .run(
                redis::cmd("HMGET")
                    .arg(key("mark", digest))
                    .arg("position")
                    .arg("change"),
            )
            .await?;
        Ok(SessionMark {
            position: position.unwrap_or(0),
            change: change.unwrap_or(0),
        })
    }

    async fn raise(&self, digest: &str, mark: SessionMark, ttl: Duration) -> SharedResult<()> {
        let _: i64 = self
            .redis
            .eval(
                &self.raise,
                &[key("mark", digest)],
                &[
                    mark.position.to_string(),
                    mark.change.to_string(),
                    ttl.as_millis().to_string(),
                ],
            )
            .await?;
        Ok(())
    }
}
