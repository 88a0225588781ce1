//! Publishing with publisher confirms.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};

use crate::BrokerError;

/// A channel in confirm mode: every publish returns once the broker has
/// taken responsibility for the message (written it to a quorum of disks).
pub(crate) struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub(crate) async fn open(connection: &Connection) -> Result<Self, BrokerError> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `body` to `queue` through the default exchange and waits
    /// for the broker's confirm. A nack, which a full or unavailable queue
    /// sends, is an error.
    pub(crate) async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(BrokerError::Nacked(queue.to_string()));
        }
        Ok(())
    }

    /// Publishes every message of `batch` to `queue`, then waits for all the
    /// confirms together. Returns, in order, whether each was confirmed.
    pub(crate) async fn publish_batch(
        &self,
        queue: &str,
        batch: &[(Vec<u8>, BasicProperties)],
    ) -> Result<Vec<bool>, BrokerError> {
        let mut confirms = Vec::with_capacity(batch.len());
        for (body, properties) in batch {
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties.clone(),
                )
                .await?;
            confirms.push(confirm);
        }
        let mut acked = Vec::with_capacity(confirms.len());
        for confirm in futures::future::join_all(confirms).await {
            acked.push(confirm?.is_ack());
        }
        Ok(acked)
    }
}
