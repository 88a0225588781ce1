//! RabbitMQ as Infinity's job queue, fed by a transactional outbox.
//!
//! Jobs stay rows of the `jobs` table, written in the same transaction as
//! the change that causes them. A [`Relay`] in each API node publishes new
//! rows with publisher confirms and marks them published after the confirm,
//! so a broker outage leaves them in the table and a rolled-back write sends
//! nothing. [`BrokerWorker`]s consume the work queue with manual
//! acknowledgements and record every run on the job's row, which is how a
//! message delivered twice runs its job once. Failed runs wait in delayed
//! retry queues, and jobs that keep failing end in a dead-letter queue that
//! `infinity jobs` lists, retries and discards (see [`dead`]).
//!
//! The queue layout is in [`topology`].

pub mod dead;
mod message;
mod publisher;
pub mod relay;
pub mod topology;
pub mod worker;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

pub use message::JobMessage;
pub use relay::Relay;
pub use topology::QueueNames;
pub use worker::BrokerWorker;

/// How long a connection attempt to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the broker tier.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid broker URL {0:?}: expected amqp://USER:PASSWORD@HOST:PORT[/VHOST]")]
    Url(String),
    #[error("connecting to the broker timed out after {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker closed the consumer")]
    ConsumerClosed,
    #[error("the broker rejected (nacked) a message for {0}")]
    Nacked(String),
    #[error("database: {0}")]
    Store(#[from] infinity_store::StoreError),
}

/// Settings of the broker tier, shared by the relay, the workers and the
/// operator's commands.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `amqp://USER:PASSWORD@HOST:PORT[/VHOST]`.
    pub url: String,
    /// The first part of every queue name, so that several deployments (or
    /// tests) can share one broker.
    pub prefix: String,
    /// The maximum number of unacknowledged messages per worker process
    /// (basic.qos prefetch count).
    pub prefetch: u16,
    /// Runs of a job before it is dead.
    pub max_attempts: u32,
    /// The delay before the first retry; each further retry doubles it.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Deliveries of one message (redeliveries after a crash or a lost
    /// connection included) before the broker itself dead-letters it.
    pub delivery_limit: u32,
    /// How long a worker holds a job's row without extending its lease.
    pub lease: Duration,
}

impl BrokerConfig {
    /// Builds a configuration with the defaults of `infinity serve`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "infinity".to_string(),
            prefetch: 4,
            max_attempts: 5,
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
            delivery_limit: 20,
            lease: Duration::from_secs(30),
        }
    }

    pub fn names(&self) -> QueueNames {
        QueueNames::new(self)
    }
}

/// Checks that `url` is a plain `amqp://` URL.
// NOTE: lapin is built without a TLS backend, so amqps:// is rejected.
pub fn check_url(url: &str) -> Result<(), BrokerError> {
    let rest = url
        .strip_prefix("amqp://")
        .ok_or_else(|| BrokerError::Url(url.to_string()))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() || host.starts_with(':') {
        return Err(BrokerError::Url(url.to_string()));
    }
    Ok(())
}

/// Opens a connection to the broker, bounded by [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    check_url(url)?;
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(connection) => Ok(connection?),
        Err(_) => Err(BrokerError::ConnectTimeout),
    }
}

/// Returns a name that identifies this process in leases and on the
/// broker's connection list.
pub(crate) fn process_name(role: &str) -> String {
    format!("{role}-{}-{}", std::process::id(), rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672").is_ok());
        assert!(check_url("amqp://127.0.0.1:5672/%2f").is_ok());
        for bad in ["", "amqps://h", "http://h", "amqp://", "amqp://user@:5672"] {
            assert!(check_url(bad).is_err(), "{bad:?} accepted");
        }
    }
}
