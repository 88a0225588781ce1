//! Each session's highest write position, shared by every node, so that a
//! session reads its own writes whichever node serves it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use infinity_api::consistency::SharedPositions;
use infinity_store::consistency::Position;

use crate::{key, Redis, SharedResult};

/// Raises a stored position, never lowers it, and renews its lifetime.
const RAISE: &str = r#"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
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
    async fn get(&self, digest: &str) -> SharedResult<Position> {
        let stored: Option<String> = self
            .redis
            .run(redis::cmd("GET").arg(key("position", digest)))
            .await?;
        Ok(stored.and_then(|text| text.parse().ok()).unwrap_or(0))
    }

    async fn raise(&self, digest: &str, position: Position, ttl: Duration) -> SharedResult<()> {
        let _: i64 = self
            .redis
            .eval(
                &self.raise,
                &[key("position", digest)],
                &[position.to_string(), ttl.as_millis().to_string()],
            )
            .await?;
        Ok(())
    }
}
