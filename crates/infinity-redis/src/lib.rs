//! Redis as the tier that every node shares: login sessions in front of the
//! database, login rate limits, `Idempotency-Key` records, each session's
//! write position, and the bus that carries cache invalidations between
//! nodes.
//!
//! Redis stores nothing that cannot be lost. Sessions stay in the database,
//! which remains their record, and Redis only spares it the lookups. When
//! Redis is unreachable, every call here fails fast and its caller falls
//! back: sessions to the database, rate limits and idempotency records to
//! the node's memory, reads to the primary, and cached reads to the database, because
//! invalidations from other nodes cannot arrive. The connection comes back
//! on its own.

mod bus;
mod cache;
mod idempotency;
mod limits;
mod positions;
mod sessions;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

pub use bus::RedisBus;
pub use cache::RedisCache;
pub use idempotency::RedisIdempotency;
pub use limits::RedisLimits;
pub use positions::RedisPositions;
pub use sessions::RedisSessions;

/// The prefix of every key and channel, so that Infinity can share a Redis
/// server with other applications.
const PREFIX: &str = "infinity";

/// How long one command may take before its caller falls back.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a node retries a Redis server that was down at start-up.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// A connection to the shared Redis server that reconnects on its own.
pub struct Redis {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
    up: AtomicBool,
    /// Set while this node owes the shared cache a generation raise, after
    /// a write's invalidation failed. Until then the node neither reads nor
    /// fills the shared cache.
    raise_pending: AtomicBool,
}

/// An error of the shared tier, as text for the callers' logs.
pub type SharedResult<T> = Result<T, String>;

impl Redis {
    /// Opens `url` (`redis://HOST:PORT[/DB]`). An unreachable server is not
    /// an error: the node starts, falls back, and keeps trying.
    pub async fn connect(url: &str) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("invalid Redis URL {url:?}: {e}; expected redis://HOST:PORT"))?;
        let redis = Arc::new(Self {
            client,
            manager: OnceCell::new(),
            up: AtomicBool::new(false),
            raise_pending: AtomicBool::new(false),
        });
        if let Err(error) = redis.manager().await {
            tracing::warn!(%error, "Redis unreachable at start-up; falling back until it responds");
            let waiting = redis.clone();
            tokio::spawn(async move {
                while waiting.manager().await.is_err() {
                    tokio::time::sleep(RECONNECT_INTERVAL).await;
                }
                tracing::info!("Redis reachable");
            });
        }
        Ok(redis)
    }

    /// The client, for connections of their own such as a subscription.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// True when the last command succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    async fn manager(&self) -> SharedResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT)
            .set_number_of_retries(1);
        let manager = self
            .manager
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .map_err(|e| format!("Redis connection failed: {e}"))?;
        Ok(manager.clone())
    }

    /// Runs one command with a bounded wait, recording whether Redis
    /// responded.
    pub async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> SharedResult<T> {
        let mut connection = self.manager().await.inspect_err(|_| self.mark(false))?;
        let result = tokio::time::timeout(COMMAND_TIMEOUT, command.query_async(&mut connection))
            .await
            .map_err(|_| {
                format!(
                    "Redis did not answer within {} ms",
                    COMMAND_TIMEOUT.as_millis()
                )
            })
            .and_then(|r| r.map_err(|e| format!("Redis command failed: {e}")));
        self.mark(result.is_ok());
        result
    }

    /// Checks that Redis responds within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> SharedResult<()> {
        let mut connection = self.manager().await.inspect_err(|_| self.mark(false))?;
        let command = redis::cmd("PING");
        let result = tokio::time::timeout(timeout, command.query_async::<String>(&mut connection))
            .await
            .map_err(|_| {
                format!(
                    "Redis did not answer PING within {} ms",
                    timeout.as_millis()
                )
            })
            .and_then(|r| r.map(drop).map_err(|e| format!("Redis PING failed: {e}")));
        self.mark(result.is_ok());
        result
    }

    /// Runs a Lua script with a bounded wait.
    pub async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> SharedResult<T> {
        let mut connection = self.manager().await.inspect_err(|_| self.mark(false))?;
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let result =
            tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| {
                    format!(
                        "Redis did not answer within {} ms",
                        COMMAND_TIMEOUT.as_millis()
                    )
                })
                .and_then(|r| r.map_err(|e| format!("Redis script failed: {e}")));
        self.mark(result.is_ok());
        result
    }

    fn mark(&self, up: bool) {
        if self.up.swap(up, Ordering::SeqCst) != up {
            if up {
                tracing::info!("Redis responds again");
            } else {
                tracing::warn!("Redis stopped responding; falling back");
            }
            metrics::gauge!("infinity_redis_up").set(if up { 1.0 } else { 0.0 });
        }
    }
}

/// The key `infinity:KIND:ID`.
fn key(kind: &str, id: &str) -> String {
    format!("{PREFIX}:{kind}:{id}")
}
