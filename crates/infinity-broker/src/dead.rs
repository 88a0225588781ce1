//! The dead-letter queue, for `infinity jobs`.
//!
//! The `jobs` table stays the record: a worker marks a job dead before it
//! dead-letters the message. A message that the broker dead-lettered on its
//! own (after `delivery_limit` deliveries) has a row that is not dead yet,
//! so [`DeadLetters::sync`] marks those rows before the operator's commands
//! read the table.
//!
//! AMQP has no way to read a queue without taking its messages, so listing
//! takes every message with `basic.get` and leaves them unacknowledged, and
//! closing the channel returns them all to the queue. Removing one acks its
//! copies and returns the rest the same way.

use std::sync::Arc;

use infinity_store::{Id, Outbox};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{Channel, Connection};

use crate::message::{error_of, JobMessage};
use crate::{connect, process_name, BrokerConfig, BrokerError, QueueNames, Relay};

/// The maximum number of messages one command reads from the dead-letter
/// queue.
const MAX_READ: usize = 100_000;

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: Id,
    pub kind: String,
    pub error: String,
}

/// The dead-letter queue of one deployment.
pub struct DeadLetters {
    outbox: Arc<dyn Outbox>,
    config: BrokerConfig,
    names: QueueNames,
    connection: Connection,
}

impl DeadLetters {
    /// Connects and declares the queues.
    pub async fn open(outbox: Arc<dyn Outbox>, config: BrokerConfig) -> Result<Self, BrokerError> {
        let connection = connect(&config.url, &process_name("jobs")).await?;
        let names = config.names();
        let channel = connection.create_channel().await?;
        names.declare(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(Self {
            outbox,
            config,
            names,
            connection,
        })
    }

    /// Returns every message in the dead-letter queue, oldest first, and
    /// leaves them there.
    pub async fn list(&self) -> Result<Vec<DeadLetter>, BrokerError> {
        let channel = self.connection.create_channel().await?;
        let mut letters = Vec::new();
        while letters.len() < MAX_READ {
            let Some(message) = get(&channel, &self.names.dead).await? else {
                break;
            };
            let delivery = message.delivery;
            match JobMessage::decode(&delivery.data) {
                Ok(job) => letters.push(DeadLetter {
                    id: job.id,
                    kind: job.kind,
                    error: error_of(&delivery.properties),
                }),
                Err(error) => tracing::warn!(%error, "a dead letter is not a job message"),
            }
        }
        channel.close(200, "listed".into()).await?;
        Ok(letters)
    }

    /// Marks dead the rows of dead letters that are neither dead nor done
    /// yet, because the broker dead-lettered them. Returns how many rows it
    /// marked.
    pub async fn sync(&self) -> Result<usize, BrokerError> {
        let mut marked = 0;
        for letter in self.list().await? {
            if self.outbox.bury(letter.id, &letter.error).await? {
                tracing::info!(id = letter.id, kind = %letter.kind, error = %letter.error, "job dead-lettered by the broker; marked dead");
                marked += 1;
            }
        }
        Ok(marked)
    }

    /// Removes the job's messages from the dead-letter queue. Returns how
    /// many it removed.
    pub async fn remove(&self, id: Id) -> Result<usize, BrokerError> {
        let channel = self.connection.create_channel().await?;
        let mut removed = 0;
        for _ in 0..MAX_READ {
            let Some(message) = get(&channel, &self.names.dead).await? else {
                break;
            };
            let delivery = message.delivery;
            if JobMessage::decode(&delivery.data).is_ok_and(|job| job.id == id) {
                delivery.acker.ack(BasicAckOptions::default()).await?;
                removed += 1;
            }
        }
        channel.close(200, "removed".into()).await?;
        Ok(removed)
    }

    /// Queues a dead job again with its attempts reset: removes its dead
    /// letter, marks its row queued and publishes it. Returns false when the
    /// row is not dead.
    pub async fn retry(&self, id: Id) -> Result<bool, BrokerError> {
        self.remove(id).await?;
        if !self.outbox.retry(id).await? {
            return Ok(false);
        }
        Relay::new(self.outbox.clone(), &self.config)
            .run_once()
            .await?;
        Ok(true)
    }

    /// Deletes a dead job and its dead letter. Returns false when the row is
    /// not dead.
    pub async fn discard(&self, id: Id) -> Result<bool, BrokerError> {
        self.remove(id).await?;
        Ok(self.outbox.discard(id).await?)
    }

    /// Returns the number of ready messages in the work queue, the wait
    /// queues and the dead-letter queue.
    pub async fn depths(&self) -> Result<QueueDepths, BrokerError> {
        let channel = self.connection.create_channel().await?;
        let depths = depths(&channel, &self.names).await;
        let _ = channel.close(200, "counted".into()).await;
        depths
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Ready messages per queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepths {
    pub work: u32,
    pub waiting: u32,
    pub dead: u32,
}

/// Counts the ready messages of each queue with passive declares.
pub async fn depths(channel: &Channel, names: &QueueNames) -> Result<QueueDepths, BrokerError> {
    let mut waiting = 0;
    for (queue, _) in &names.steps {
        waiting += QueueNames::depth(channel, queue).await?;
    }
    Ok(QueueDepths {
        work: QueueNames::depth(channel, &names.work).await?,
        waiting,
        dead: QueueNames::depth(channel, &names.dead).await?,
    })
}

async fn get(
    channel: &Channel,
    queue: &str,
) -> Result<Option<lapin::message::BasicGetMessage>, BrokerError> {
    Ok(channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await?)
}
