//! The invalidation bus: every node publishes the changes its writes make
//! to a Redis channel and applies those of the others to its caches.
//!
//! Redis does not keep messages for a subscriber that is away, so while the
//! subscription is down a node cannot know what others changed. It then
//! bypasses its caches, and empties them before it uses them again.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use infinity_api::reads::{Change, ChangeBus};
use infinity_api::AppState;
use infinity_store::consistency::Position;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{Redis, PREFIX};

/// How long a node waits before it subscribes again after a failure.
const RESUBSCRIBE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Serialize, Deserialize)]
struct Message {
    /// The publishing node, which skips its own messages.
    node: String,
    floor: Position,
    change: Change,
}

fn channel() -> String {
    format!("{PREFIX}:changes")
}

/// Publishes this node's changes, in order, from one task.
pub struct RedisBus {
    node: String,
    outbox: mpsc::UnboundedSender<(Change, Position)>,
}

impl RedisBus {
    /// Starts publishing this node's changes and applying the other nodes'
    /// changes to the caches of `state`, and hands the bus to them.
    pub fn start(redis: Arc<Redis>, state: AppState) -> Arc<Self> {
        let reads = &state.reads;
        let node = format!("{:016x}", rand::random::<u64>());
        let (outbox, pending) = mpsc::unbounded_channel();
        tokio::spawn(publish(redis.clone(), node.clone(), pending));
        // Until the first subscription is in place, changes of other nodes
        // could be missed.
        reads.set_bypass(true);
        tokio::spawn(subscribe(redis, node.clone(), state.clone()));
        let bus = Arc::new(Self { node, outbox });
        reads.set_bus(bus.clone());
        bus
    }

    /// This node's name on the bus.
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl ChangeBus for RedisBus {
    fn publish(&self, change: &Change, floor: Position) {
        let _ = self.outbox.send((change.clone(), floor));
    }
}

async fn publish(
    redis: Arc<Redis>,
    node: String,
    mut pending: mpsc::UnboundedReceiver<(Change, Position)>,
) {
    while let Some((change, floor)) = pending.recv().await {
        let message = Message {
            node: node.clone(),
            floor,
            change,
        };
        let json = serde_json::to_string(&message).expect("a change serializes");
        let sent: Result<i64, String> = redis
            .run(redis::cmd("PUBLISH").arg(channel()).arg(json))
            .await;
        match sent {
            Ok(_) => {
                metrics::counter!("infinity_bus_messages_total", "direction" => "sent").increment(1)
            }
            // The other nodes have lost their subscriptions too, so they
            // bypass their caches until Redis is back.
            Err(error) => {
                metrics::counter!("infinity_bus_messages_total", "direction" => "lost")
                    .increment(1);
                tracing::warn!(%error, "publishing a change failed");
            }
        }
    }
}

async fn subscribe(redis: Arc<Redis>, node: String, state: AppState) {
    let reads = &state.reads;
    loop {
        match redis.client().get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(channel()).await {
                Ok(()) => {
                    reads.set_bypass(false);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Message>(&payload) {
                            Ok(message) if message.node != node => {
                                metrics::counter!("infinity_bus_messages_total", "direction" => "received")
                                    .increment(1);
                                reads.apply(&message.change, message.floor).await;
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "ignoring an invalid change message");
                            }
                        }
                    }
                    tracing::warn!("the change subscription ended; bypassing caches");
                }
                Err(error) => tracing::warn!(%error, "subscribing to changes failed"),
            },
            Err(error) => tracing::debug!(%error, "connecting for the change subscription failed"),
        }
        reads.set_bypass(true);
        tokio::time::sleep(RESUBSCRIBE_INTERVAL).await;
    }
}
