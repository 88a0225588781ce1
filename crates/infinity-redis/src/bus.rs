//! The invalidation bus: every node publishes the changes its writes make
//! to a Redis channel and applies those of the others to its caches.
//!
//! One script drops a change's keys from the shared cache, gives the change
//! the next number of a counter and publishes it, so the numbers follow the
//! order in which subscribers receive the changes. Each node tracks the
//! highest number it has applied, and a request whose session made a later
//! change can wait for it.
//!
//! Redis does not keep messages for a subscriber that is away, so while the
//! subscription is down a node cannot know what others changed. It then
//! bypasses its caches, and empties them before it uses them again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use infinity_api::reads::{Change, ChangeBus};
use infinity_api::shared_cache::Stale;
use infinity_api::AppState;
use infinity_store::consistency::Position;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cache::{stale_name, GENERATION};
use crate::{Redis, PREFIX};

/// How long a node waits before it subscribes again after a failure.
const RESUBSCRIBE_INTERVAL: Duration = Duration::from_millis(500);

/// How often a subscribed node checks that Redis still responds. A frozen
/// server keeps the subscription's connection open but delivers nothing.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// How long a heartbeat waits. With the interval, a node stops using its
/// caches within 350 ms of Redis freezing, before a writer's publish times
/// out (500 ms) and its write is acknowledged without the change.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(250);

/// Invalidates the shared cache entries named in ARGV[5..], then numbers
/// and publishes the message. KEYS: the sequence counter, the shared
/// cache's generation. ARGV: the channel, the message, the change's log
/// position, the lifetime of a shared cache entry in milliseconds, then the
/// stale entries' names. A missing counter starts at the server's clock in
/// microseconds, so numbers keep growing across a restart of Redis that
/// lost it.
const PUBLISH: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local time = redis.call('TIME')
  redis.call('SET', KEYS[1], time[1] .. string.format('%06d', tonumber(time[2])))
end
local generation = redis.call('GET', KEYS[2]) or '0'
local floor = tonumber(ARGV[3])
for i = 5, #ARGV do
  local key = 'PREFIX:cache:' .. generation .. ':' .. ARGV[i]
  local current = tonumber(redis.call('HGET', key, 'floor') or '0')
  if floor > current then
    redis.call('HSET', key, 'floor', ARGV[3])
  end
  redis.call('HDEL', key, 'position', 'value')
  redis.call('PEXPIRE', key, ARGV[4])
end
local sequence = redis.call('INCR', KEYS[1])
-- Concatenating the number itself would print it in exponent notation.
redis.call('PUBLISH', ARGV[1], string.format('%d', sequence) .. ' ' .. ARGV[2])
return sequence
"#;

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

fn sequence_key() -> String {
    format!("{PREFIX}:changes:sequence")
}

/// Publishes this node's changes and applies the other nodes' changes.
pub struct RedisBus {
    node: String,
    redis: Arc<Redis>,
    publish: redis::Script,
    /// The highest sequence number this node has applied.
    applied: watch::Sender<u64>,
    ttl: Duration,
}

impl RedisBus {
    /// Starts applying the other nodes' changes to the caches of `state`,
    /// and hands the bus to them for this node's changes. `ttl` is the
    /// lifetime of a shared cache entry, kept on the keys it invalidates.
    pub fn start(redis: Arc<Redis>, state: AppState, ttl: Duration) -> Arc<Self> {
        let reads = &state.reads;
        let node = format!("{:016x}", rand::random::<u64>());
        // Until the first subscription is in place, changes of other nodes
        // could be missed.
        reads.bypass_caches();
        let bus = Arc::new(Self {
            node,
            redis,
            publish: redis::Script::new(&PUBLISH.replace("PREFIX", PREFIX)),
            applied: watch::Sender::new(0),
            ttl,
        });
        tokio::spawn(subscribe(bus.clone(), state.clone()));
        reads.set_bus(bus.clone());
        bus
    }

    /// This node's name on the bus.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Returns the highest sequence number this node has applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    fn mark_applied(&self, sequence: u64) {
        self.applied.send_if_modified(|applied| {
            let raised = sequence > *applied;
            *applied = (*applied).max(sequence);
            raised
        });
    }
}

#[async_trait]
impl ChangeBus for RedisBus {
    async fn publish(&self, change: &Change, floor: Position, stale: &[Stale]) -> Option<u64> {
        let message = Message {
            node: self.node.clone(),
            floor,
            change: change.clone(),
        };
        let json = serde_json::to_string(&message).expect("a change serializes");
        let mut args = vec![
            channel(),
            json,
            floor.to_string(),
            self.ttl.as_millis().to_string(),
        ];
        args.extend(stale.iter().map(stale_name));
        let keys = [sequence_key(), GENERATION.to_string()];
        match self.redis.eval::<u64>(&self.publish, &keys, &args).await {
            Ok(sequence) => {
                metrics::counter!("infinity_bus_messages_total", "direction" => "sent")
                    .increment(1);
                Some(sequence)
            }
            // The other nodes have most likely lost their subscriptions too,
            // so they bypass their caches until Redis is back.
            Err(error) => {
                metrics::counter!("infinity_bus_messages_total", "direction" => "lost")
                    .increment(1);
                tracing::warn!(%error, "publishing a change failed");
                crate::cache::after_lost_invalidation(self.redis.clone());
                None
            }
        }
    }

    async fn catch_up(&self, change: u64, wait: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let reached = applied.wait_for(|applied| *applied >= change);
        let caught_up = matches!(tokio::time::timeout(wait, reached).await, Ok(Ok(_)));
        caught_up
    }
}

async fn subscribe(bus: Arc<RedisBus>, state: AppState) {
    let reads = &state.reads;
    let mut after_failure = false;
    loop {
        match listen(&bus, &state, after_failure).await {
            Ok(()) => tracing::warn!("the change subscription ended; bypassing caches"),
            Err(error) => {
                tracing::warn!(%error, "the change subscription failed; bypassing caches")
            }
        }
        reads.bypass_caches();
        after_failure = true;
        tokio::time::sleep(RESUBSCRIBE_INTERVAL).await;
    }
}

/// Subscribes, then applies changes until the subscription ends or Redis
/// stops responding. After a failure, when a writer may have been unable to
/// drop its keys from the shared cache, it empties the shared cache first.
async fn listen(bus: &RedisBus, state: &AppState, after_failure: bool) -> Result<(), String> {
    let reads = &state.reads;
    let mut pubsub = bus
        .redis
        .client()
        .get_async_pubsub()
        .await
        .map_err(|e| format!("connecting for the change subscription failed: {e}"))?;
    pubsub
        .subscribe(channel())
        .await
        .map_err(|e| format!("subscribing to changes failed: {e}"))?;
    // Every change numbered up to the counter's value now was published
    // before the subscription, and every write it names committed before
    // the log position read next. Emptying the caches with that position
    // as their floor covers them; later changes arrive on the subscription.
    let counter: Option<u64> = bus.redis.run(redis::cmd("GET").arg(sequence_key())).await?;
    let position = reads
        .store()
        .current_position()
        .await
        .map_err(|e| format!("reading the database's log position failed: {e}"))?;
    if after_failure {
        let _: u64 = bus.redis.run(redis::cmd("INCR").arg(GENERATION)).await?;
    }
    reads.use_caches(position);
    bus.mark_applied(counter.unwrap_or(0));
    let mut messages = pubsub.on_message();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            _ = heartbeat.tick() => {
                bus.redis.ping(HEARTBEAT_TIMEOUT).await?;
                continue;
            }
        };
        let Some(message) = message else {
            break;
        };
        let Ok(payload) = message.get_payload::<String>() else {
            continue;
        };
        let parsed = payload.split_once(' ').and_then(|(sequence, json)| {
            Some((
                sequence.parse::<u64>().ok()?,
                serde_json::from_str::<Message>(json),
            ))
        });
        match parsed {
            Some((sequence, Ok(message))) => {
                if message.node != bus.node {
                    metrics::counter!("infinity_bus_messages_total", "direction" => "received")
                        .increment(1);
                    reads.apply(&message.change, message.floor).await;
                }
                bus.mark_applied(sequence);
            }
            Some((_, Err(error))) => {
                tracing::warn!(%error, "ignoring an invalid change message");
            }
            None => tracing::warn!("ignoring a change message without a sequence number"),
        }
    }
    Ok(())
}
