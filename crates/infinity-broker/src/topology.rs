//! The queues on the broker, declared idempotently by every relay, worker
//! and operator command before use.
//!
//! - `PREFIX.jobs`, the work queue: a durable quorum queue whose messages
//!   are dead-lettered (at least once) into `PREFIX.dead` after
//!   `delivery_limit` deliveries, so that a message that crashes every
//!   worker that takes it stops being delivered.
//! - `PREFIX.dead`, the dead-letter queue: jobs that failed for good, with
//!   the error in the `x-error` header.
//! - `PREFIX.wait.<N>ms`, one wait queue per retry step: a failed job is
//!   published there with a per-message expiration of 50 % to 100 % of N
//!   (the jitter), and an expired message is dead-lettered back to the work
//!   queue. RabbitMQ drops expired messages only at the head of a queue, so
//!   a message waits at most N even behind a later one, and at least its own
//!   expiration. Steps double from `base_backoff` up to `max_backoff`.
//!
//! This layout needs no plugin. Quorum queues support delivery limits,
//! message TTL and at-least-once dead-lettering from RabbitMQ 3.10 on.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Channel;

use crate::{BrokerConfig, BrokerError};

/// The maximum number of wait queues; later retries reuse the last one.
const MAX_STEPS: u32 = 12;

/// The names of the queues of one deployment and the delay of each retry
/// step.
#[derive(Debug, Clone)]
pub struct QueueNames {
    pub work: String,
    pub dead: String,
    /// `(queue name, message TTL)` of each retry step, shortest first.
    pub steps: Vec<(String, Duration)>,
    delivery_limit: u32,
}

impl QueueNames {
    pub fn new(config: &BrokerConfig) -> Self {
        let retries = config.max_attempts.saturating_sub(1).clamp(1, MAX_STEPS);
        let steps = (1..=retries)
            .map(|step| {
                let delay = config
                    .base_backoff
                    .saturating_mul(1u32 << (step - 1))
                    .min(config.max_backoff)
                    .max(Duration::from_millis(1));
                let name = format!("{}.wait.{}ms", config.prefix, delay.as_millis());
                (name, delay)
            })
            .collect::<Vec<_>>();
        let mut unique: Vec<(String, Duration)> = Vec::with_capacity(steps.len());
        for step in steps {
            if unique.last().map(|(name, _)| name) != Some(&step.0) {
                unique.push(step);
            }
        }
        Self {
            work: format!("{}.jobs", config.prefix),
            dead: format!("{}.dead", config.prefix),
            steps: unique,
            delivery_limit: config.delivery_limit,
        }
    }

    /// Returns the wait queue of retry number `retry` (1 for the first) and
    /// a jittered expiration for one message in it.
    pub fn wait_step(&self, retry: u32) -> (&str, Duration) {
        let index = (retry.max(1) as usize - 1).min(self.steps.len() - 1);
        let (name, delay) = &self.steps[index];
        let jittered = delay.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        (name, jittered.max(Duration::from_millis(1)))
    }

    /// Declares every queue; declaring an existing queue with the same
    /// arguments changes nothing.
    pub async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        let mut work = quorum();
        dead_letter_to(&mut work, &self.dead);
        work.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(self.delivery_limit.min(i32::MAX as u32) as i32),
        );
        declare(channel, &self.work, work).await?;
        declare(channel, &self.dead, quorum()).await?;
        for (name, delay) in &self.steps {
            let mut wait = quorum();
            dead_letter_to(&mut wait, &self.work);
            wait.insert(
                "x-message-ttl".into(),
                AMQPValue::LongInt(delay.as_millis().min(i32::MAX as u128) as i32),
            );
            declare(channel, name, wait).await?;
        }
        Ok(())
    }

    /// Returns the number of ready messages in `queue` (a passive declare),
    /// without the unacknowledged ones that workers hold.
    pub async fn depth(channel: &Channel, queue: &str) -> Result<u32, BrokerError> {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await?;
        Ok(queue.message_count())
    }
}

fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), string("quorum"));
    arguments
}

/// Dead-letters into `queue` through the default exchange, at least once.
/// RabbitMQ requires `reject-publish` overflow for that strategy.
fn dead_letter_to(arguments: &mut FieldTable, queue: &str) {
    arguments.insert("x-dead-letter-exchange".into(), string(""));
    arguments.insert("x-dead-letter-routing-key".into(), string(queue));
    arguments.insert("x-dead-letter-strategy".into(), string("at-least-once"));
    arguments.insert("x-overflow".into(), string("reject-publish"));
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

async fn declare(channel: &Channel, name: &str, arguments: FieldTable) -> Result<(), BrokerError> {
    channel
        .queue_declare(
            ShortString::from(name),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_and_stop_at_the_cap() {
        let config = BrokerConfig {
            prefix: "t".into(),
            max_attempts: 6,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            ..BrokerConfig::new("amqp://127.0.0.1")
        };
        let names = QueueNames::new(&config);
        let delays: Vec<u64> = names.steps.iter().map(|(_, d)| d.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5]);
        assert_eq!(names.steps[0].0, "t.wait.1000ms");
        assert_eq!(names.work, "t.jobs");
        assert_eq!(names.dead, "t.dead");
        for _ in 0..100 {
            let (queue, expiration) = names.wait_step(3);
            assert_eq!(queue, "t.wait.4000ms");
            assert!(expiration >= Duration::from_secs(2));
            assert!(expiration <= Duration::from_secs(4));
            assert_eq!(names.wait_step(9).0, "t.wait.5000ms");
        }
    }
}
