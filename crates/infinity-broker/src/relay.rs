//! The outbox relay: publishes the job rows that writes committed, and
//! marks each one published once the broker has confirmed it.

use std::sync::Arc;
use std::time::Duration;

use infinity_store::{JobRecord, Outbox};
use lapin::Connection;
use tokio::sync::watch;

use crate::message::JobMessage;
use crate::publisher::Publisher;
use crate::{connect, process_name, BrokerConfig, BrokerError, QueueNames};

/// Rows published per round.
const BATCH: u32 = 200;
/// How long the rows a relay claimed stay its own. After that another
/// node's relay may publish them, which matters when a relay crashed.
const CLAIM_LEASE: Duration = Duration::from_secs(30);
/// The pause between two looks at an empty outbox.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Publishes outbox rows to the work queue.
pub struct Relay {
    outbox: Arc<dyn Outbox>,
    names: QueueNames,
    url: String,
    /// This relay's name in row leases.
    name: String,
}

/// An open connection with a publisher in confirm mode.
struct Link {
    connection: Connection,
    publisher: Publisher,
}

impl Relay {
    pub fn new(outbox: Arc<dyn Outbox>, config: &BrokerConfig) -> Self {
        Self {
            outbox,
            names: config.names(),
            url: config.url.clone(),
            name: process_name("relay"),
        }
    }

    /// Relays rows until `shutdown` turns true. While the broker is
    /// unreachable the rows stay in the table. The relay retries with
    /// exponential backoff and logs once when the outage starts and once
    /// when it ends.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(relay = %self.name, queue = %self.names.work, "outbox relay started");
        let mut link: Option<Link> = None;
        let mut outage: Option<BrokerError> = None;
        let mut delay = MIN_RECONNECT_DELAY;
        while !*shutdown.borrow() {
            let pause = match self.round(&mut link).await {
                Ok(published) => {
                    if let Some(error) = outage.take() {
                        tracing::info!(%error, "broker reachable again; relaying the outbox");
                    }
                    delay = MIN_RECONNECT_DELAY;
                    if published == BATCH as usize {
                        continue;
                    }
                    POLL_INTERVAL
                }
                Err(error) => {
                    link = None;
                    if outage.is_none() {
                        tracing::warn!(%error, "relaying the outbox failed; jobs stay in the database until the broker is back");
                        metrics::counter!("infinity_outbox_outages_total").increment(1);
                        outage = Some(error);
                    }
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
        if let Some(link) = link {
            let _ = link.connection.close(200, "shutdown".into()).await;
        }
        tracing::info!(relay = %self.name, "outbox relay stopped");
    }

    /// Publishes every row waiting now, for `infinity jobs retry`, which
    /// must not depend on a running node. Returns how many it published.
    pub async fn run_once(&self) -> Result<usize, BrokerError> {
        let mut link = None;
        let mut total = 0;
        loop {
            let published = self.round(&mut link).await?;
            total += published;
            if published < BATCH as usize {
                break;
            }
        }
        if let Some(link) = link {
            let _ = link.connection.close(200, "done".into()).await;
        }
        Ok(total)
    }

    /// Claims one batch of rows, publishes it and marks the confirmed rows.
    /// Returns how many rows it published.
    async fn round(&self, link: &mut Option<Link>) -> Result<usize, BrokerError> {
        let jobs = self
            .outbox
            .claim_unpublished(&self.name, CLAIM_LEASE, BATCH)
            .await?;
        if jobs.is_empty() {
            return Ok(0);
        }
        if link.is_none() {
            *link = Some(self.open().await?);
        }
        let publisher = &link.as_ref().expect("the link was just opened").publisher;
        let confirmed = self.publish(publisher, &jobs).await?;
        self.outbox.mark_published(&self.name, &confirmed).await?;
        metrics::counter!("infinity_outbox_published_total").increment(confirmed.len() as u64);
        tracing::debug!(published = confirmed.len(), "outbox rows relayed");
        if confirmed.len() < jobs.len() {
            return Err(BrokerError::Nacked(self.names.work.clone()));
        }
        Ok(jobs.len())
    }

    async fn open(&self) -> Result<Link, BrokerError> {
        let connection = connect(&self.url, &self.name).await?;
        let publisher = Publisher::open(&connection).await?;
        self.names.declare(publisher.channel()).await?;
        Ok(Link {
            connection,
            publisher,
        })
    }

    /// Returns the ids of the jobs the broker confirmed. A nacked row keeps
    /// this relay's claim, which the relay may take again at once.
    async fn publish(
        &self,
        publisher: &Publisher,
        jobs: &[JobRecord],
    ) -> Result<Vec<infinity_store::Id>, BrokerError> {
        let batch: Vec<_> = jobs
            .iter()
            .map(|job| {
                let message = JobMessage::of(job);
                (message.encode(), message.properties())
            })
            .collect();
        let acked = publisher.publish_batch(&self.names.work, &batch).await?;
        Ok(jobs
            .iter()
            .zip(acked)
            .filter_map(|(job, acked)| acked.then_some(job.id))
            .collect())
    }
}
