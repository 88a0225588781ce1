//! `Idempotency-Key` records in Redis, so that a repeat reaching another
//! node still returns the first response. While Redis is down, the node
//! keeps records in its own memory.

use std::sync::Arc;

use async_trait::async_trait;
use infinity_api::idempotency::{
    Begin, IdempotencyStore, LocalIdempotency, Record, StoredResponse, ATTEMPT_LEASE, RECORD_TTL,
};

use crate::{key, Redis, SharedResult};

/// Extends a record's lifetime to ARGV[1] milliseconds while it has no
/// response. A finished record keeps its own lifetime.
const RENEW: &str = r#"
local record = redis.call('GET', KEYS[1])
if record and cjson.decode(record).response == cjson.null then
  return redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 0
"#;

pub struct RedisIdempotency {
    redis: Arc<Redis>,
    fallback: LocalIdempotency,
    renew: redis::Script,
}

impl RedisIdempotency {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            fallback: LocalIdempotency::default(),
            renew: redis::Script::new(RENEW),
        }
    }

    async fn begin_shared(&self, id: &str, fingerprint: &str) -> SharedResult<Begin> {
        let record = Record {
            fingerprint: fingerprint.to_string(),
            response: None,
        };
        let json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        let created: Option<String> = self
            .redis
            .run(
                redis::cmd("SET")
                    .arg(key("idempotency", id))
                    .arg(json)
                    .arg("NX")
                    .arg("PX")
                    .arg(ATTEMPT_LEASE.as_millis() as u64),
            )
            .await?;
        if created.is_some() {
            return Ok(Begin::Started);
        }
        let stored: Option<String> = self
            .redis
            .run(redis::cmd("GET").arg(key("idempotency", id)))
            .await?;
        match stored {
            Some(json) => {
                let record: Record = serde_json::from_str(&json)
                    .map_err(|e| format!("invalid idempotency record: {e}"))?;
                Ok(record.begin(fingerprint))
            }
            // It expired between the two commands: try once more.
            None => Box::pin(self.begin_shared(id, fingerprint)).await,
        }
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn begin(&self, id: &str, fingerprint: &str) -> SharedResult<Begin> {
        match self.begin_shared(id, fingerprint).await {
            Ok(begin) => Ok(begin),
            Err(error) => {
                tracing::warn!(%error, "idempotency records fall back to this node's memory");
                self.fallback.begin(id, fingerprint).await
            }
        }
    }

    async fn finish(
        &self,
        id: &str,
        fingerprint: &str,
        response: StoredResponse,
    ) -> SharedResult<()> {
        let record = Record {
            fingerprint: fingerprint.to_string(),
            response: Some(response.clone()),
        };
        let json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        let stored: SharedResult<Option<String>> = self
            .redis
            .run(
                redis::cmd("SET")
                    .arg(key("idempotency", id))
                    .arg(json)
                    .arg("PX")
                    .arg(RECORD_TTL.as_millis() as u64),
            )
            .await;
        if let Err(error) = stored {
            tracing::warn!(%error, "storing an idempotency record in Redis failed; keeping it in memory");
            return self.fallback.finish(id, fingerprint, response).await;
        }
        Ok(())
    }

    async fn renew(&self, id: &str) -> SharedResult<()> {
        let _: i64 = self
            .redis
            .eval(
                &self.renew,
                &[key("idempotency", id)],
                &[ATTEMPT_LEASE.as_millis().to_string()],
            )
            .await?;
        Ok(())
    }

    async fn release(&self, id: &str) -> SharedResult<()> {
        self.fallback.release(id).await?;
        let _: i64 = self
            .redis
            .run(redis::cmd("DEL").arg(key("idempotency", id)))
            .await?;
        Ok(())
    }
}
