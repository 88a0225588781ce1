//! Login sessions in Redis, in front of the database.
//!
//! The database stays the record of every session: a node writes it there
//! first, then to Redis, and looks it up in Redis before the database. So a
//! restarted or flushed Redis logs nobody out, and while Redis is down the
//! lookups go to the database. A logout that cannot reach Redis is retried
//! until it does, so a stale copy cannot outlive the session.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use infinity_store::{Id, SessionRecord, SessionStore, StoreResult};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{key, Redis};

/// How long a copy lives in Redis at most; a lookup that misses refills it.
const COPY_TTL: Duration = Duration::from_secs(3600);

/// How often a failed deletion is tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Serialize, Deserialize)]
struct Copy {
    user_id: Id,
    created_at: i64,
    expires_at: i64,
}

pub struct RedisSessions {
    redis: Arc<Redis>,
    database: Arc<dyn SessionStore>,
    retries: mpsc::UnboundedSender<String>,
}

impl RedisSessions {
    /// Puts Redis in front of `database`.
    pub fn new(redis: Arc<Redis>, database: Arc<dyn SessionStore>) -> Self {
        let (retries, pending) = mpsc::unbounded_channel();
        tokio::spawn(retry_deletions(redis.clone(), pending));
        Self {
            redis,
            database,
            retries,
        }
    }

    async fn store_copy(&self, session: &SessionRecord) {
        let lifetime = (session.expires_at - Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(COPY_TTL);
        if lifetime.is_zero() {
            return;
        }
        let copy = Copy {
            user_id: session.user_id,
            created_at: session.created_at.timestamp_millis(),
            expires_at: session.expires_at.timestamp_millis(),
        };
        let json = serde_json::to_string(&copy).expect("a session copy serializes");
        let stored: Result<(), String> = self
            .redis
            .run(
                redis::cmd("SET")
                    .arg(key("session", &session.token_digest))
                    .arg(json)
                    .arg("PX")
                    .arg(lifetime.as_millis() as u64),
            )
            .await;
        if let Err(error) = stored {
            tracing::debug!(%error, "caching a session in Redis failed");
        }
    }

    async fn delete_copy(&self, digest: &str) {
        let deleted: Result<i64, String> = self
            .redis
            .run(redis::cmd("DEL").arg(key("session", digest)))
            .await;
        if let Err(error) = deleted {
            tracing::warn!(%error, "deleting a session from Redis failed; retrying until it responds");
            let _ = self.retries.send(digest.to_string());
        }
    }
}

async fn retry_deletions(redis: Arc<Redis>, mut pending: mpsc::UnboundedReceiver<String>) {
    while let Some(digest) = pending.recv().await {
        loop {
            let deleted: Result<i64, String> = redis
                .run(redis::cmd("DEL").arg(key("session", &digest)))
                .await;
            if deleted.is_ok() {
                break;
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn create_session(&self, session: SessionRecord) -> StoreResult<()> {
        self.database.create_session(session.clone()).await?;
        self.store_copy(&session).await;
        Ok(())
    }

    async fn session(&self, token_digest: &str) -> StoreResult<Option<SessionRecord>> {
        let cached: Result<Option<String>, String> = self
            .redis
            .run(redis::cmd("GET").arg(key("session", token_digest)))
            .await;
        if let Ok(Some(json)) = &cached {
            if let Ok(copy) = serde_json::from_str::<Copy>(json) {
                if let (Some(created_at), Some(expires_at)) =
                    (from_ms(copy.created_at), from_ms(copy.expires_at))
                {
                    metrics::counter!("infinity_redis_sessions_total", "result" => "hit")
                        .increment(1);
                    return Ok(Some(SessionRecord {
                        token_digest: token_digest.to_string(),
                        user_id: copy.user_id,
                        created_at,
                        expires_at,
                    })
                    .filter(|s| s.expires_at > Utc::now()));
                }
            }
        }
        metrics::counter!("infinity_redis_sessions_total", "result" => "miss").increment(1);
        let found = self.database.session(token_digest).await?;
        if let (Some(session), Ok(_)) = (&found, &cached) {
            self.store_copy(session).await;
        }
        Ok(found)
    }

    async fn delete_session(&self, token_digest: &str) -> StoreResult<bool> {
        let deleted = self.database.delete_session(token_digest).await?;
        self.delete_copy(token_digest).await;
        Ok(deleted)
    }

    async fn delete_sessions_except(&self, user: Id, keep: &str) -> StoreResult<Vec<String>> {
        let digests = self.database.delete_sessions_except(user, keep).await?;
        for digest in &digests {
            self.delete_copy(digest).await;
        }
        Ok(digests)
    }
}
