//! The worker side: consumes the work queue with manual acknowledgements and
//! a bounded prefetch, and records every run on the job's row.
//!
//! A message is acknowledged only after its outcome is in the database (and
//! any retry or dead-letter copy is confirmed by the broker), so a worker
//! that dies mid-job leaves the message to be delivered again. Before a run
//! the worker starts the job on its row. A job already done or dead is
//! acknowledged and skipped, which is how a message delivered twice runs its
//! job once. A job that another worker runs under a live lease is put back
//! to wait.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use infinity_jobs::{Handlers, JobError};
use infinity_store::consistency;
use infinity_store::{Id, JobRecord, Outbox, StartOutcome};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use crate::message::{with_error, JobMessage};
use crate::publisher::Publisher;
use crate::{connect, process_name, BrokerConfig, BrokerError, QueueNames};

const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Runs jobs from the broker's work queue.
pub struct BrokerWorker {
    outbox: Arc<dyn Outbox>,
    handlers: Handlers,
    config: BrokerConfig,
    names: QueueNames,
    /// Jobs run at once by this process.
    concurrency: usize,
    /// This process's name in job leases and its consumer tag.
    name: String,
}

impl BrokerWorker {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        handlers: Handlers,
        config: BrokerConfig,
        concurrency: usize,
    ) -> Self {
        Self {
            outbox,
            handlers,
            names: config.names(),
            config,
            concurrency: concurrency.max(1),
            name: process_name("worker"),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Consumes until `shutdown` turns true, then lets the running jobs
    /// finish. A lost connection is reopened with exponential backoff and
    /// logged once per outage.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(worker = %self.name, concurrency = self.concurrency, prefetch = self.config.prefetch, "broker worker started");
        let mut delay = MIN_RECONNECT_DELAY;
        let mut outage = false;
        while !*shutdown.borrow() {
            match self.clone().consume(&mut shutdown, &mut outage).await {
                Ok(()) => break,
                Err(error) => {
                    if !outage {
                        tracing::warn!(worker = %self.name, %error, "consuming from the broker failed; reconnecting");
                        outage = true;
                    }
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!(worker = %self.name, "broker worker stopped");
    }

    /// Runs one connection's consumer. Returns `Ok` at shutdown, once the
    /// jobs it started have finished.
    async fn consume(
        self: Arc<Self>,
        shutdown: &mut watch::Receiver<bool>,
        outage: &mut bool,
    ) -> Result<(), BrokerError> {
        let connection = connect(&self.config.url, &self.name).await?;
        let publisher = Arc::new(Publisher::open(&connection).await?);
        self.names.declare(publisher.channel()).await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                self.names.work.as_str().into(),
                self.name.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        if std::mem::take(outage) {
            tracing::info!(worker = %self.name, "consuming from the broker again");
        }
        let permits = Arc::new(Semaphore::new(self.concurrency));
        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = shutdown.changed() => break,
            };
            let delivery = tokio::select! {
                delivery = consumer.next() => delivery,
                _ = shutdown.changed() => break,
            };
            let delivery = match delivery {
                Some(delivery) => delivery?,
                None => return Err(BrokerError::ConsumerClosed),
            };
            let worker = self.clone();
            let publisher = publisher.clone();
            tokio::spawn(async move {
                worker.settle(delivery, &publisher).await;
                drop(permit);
            });
        }
        // Stop new deliveries, let the running jobs finish, then close: the
        // broker returns the prefetched messages that no job took.
        let _ = channel
            .basic_cancel(self.name.as_str().into(), BasicCancelOptions::default())
            .await;
        let _ = permits.acquire_many(self.concurrency as u32).await;
        let _ = connection.close(200, "shutdown".into()).await;
        Ok(())
    }

    /// Handles one delivery, then acknowledges, rejects or returns it.
    async fn settle(&self, delivery: Delivery, publisher: &Publisher) {
        let message = match JobMessage::decode(&delivery.data) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(%error, "a message on the work queue is not a job; dead-lettering it");
                let _ = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
                return;
            }
        };
        let span = tracing::info_span!("job", id = message.id, kind = %message.kind);
        // A job was committed with the rows it is about, and a replica may
        // not have replayed them yet, so a job's reads go to the primary.
        let scope = consistency::Scope::new(consistency::Position::MAX, 0);
        let outcome = consistency::within(scope, self.process(&message, publisher))
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        let result = match outcome {
            Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
            Err(error) => {
                // A database outage is no fault of the job, so the message
                // waits out a retry step instead of being returned at once,
                // which would count towards the delivery limit.
                tracing::warn!(%error, "recording a job's run failed; retrying it after a delay");
                match self.wait(&message, 1, publisher).await {
                    Ok(_) => delivery.acker.ack(BasicAckOptions::default()).await,
                    Err(error) => {
                        tracing::warn!(%error, "delaying a job failed; returning its message");
                        delivery
                            .acker
                            .nack(BasicNackOptions {
                                multiple: false,
                                requeue: true,
                            })
                            .await
                    }
                }
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "settling a message failed; the broker will deliver it again");
        }
    }

    /// Runs the job of `message` unless it is done, dead or held elsewhere,
    /// and records the outcome. `Ok` means the message can be acknowledged.
    async fn process(
        &self,
        message: &JobMessage,
        publisher: &Publisher,
    ) -> Result<(), BrokerError> {
        let job = match self
            .outbox
            .start(message.id, &self.name, self.config.lease)
            .await?
        {
            StartOutcome::Started(job) => job,
            StartOutcome::Busy => {
                tracing::debug!("another worker runs the job; putting it back to wait");
                self.wait(message, 1, publisher).await?;
                return Ok(());
            }
            other => {
                tracing::debug!(state = ?other, "duplicate or stale message; skipping it");
                return Ok(());
            }
        };
        if job.attempts > self.config.max_attempts {
            // Its earlier runs ended without an outcome (a worker died each
            // time), too often to try again.
            let error = format!("abandoned after {} attempts", job.attempts - 1);
            self.bury(&job, &error, publisher).await?;
            return Ok(());
        }
        let Some(handler) = self.handlers.get(&job.kind).cloned() else {
            let error = format!("no handler for job kind {:?}", job.kind);
            self.bury(&job, &error, publisher).await?;
            return Ok(());
        };
        let outcome = tokio::select! {
            outcome = handler.run(&job) => outcome,
            () = self.keep_leased(job.id) => {
                tracing::warn!("lease lost; the worker that took the job over settles it");
                return Ok(());
            }
        };
        self.record(&job, outcome, message, publisher).await
    }

    /// Records a run's outcome: done, a retry in a wait queue, or dead.
    async fn record(
        &self,
        job: &JobRecord,
        outcome: Result<(), JobError>,
        message: &JobMessage,
        publisher: &Publisher,
    ) -> Result<(), BrokerError> {
        let label = match outcome {
            Ok(()) => {
                if !self.outbox.complete(job.id, &self.name).await? {
                    tracing::warn!("job was taken over before it finished");
                }
                "done"
            }
            Err(JobError::Retry(error)) if job.attempts < self.config.max_attempts => {
                self.outbox.defer(job.id, &self.name, &error).await?;
                let delay = self.wait(message, job.attempts, publisher).await?;
                tracing::warn!(%error, attempt = job.attempts, retry_in_ms = delay.as_millis() as u64, "job failed; will retry");
                "retry"
            }
            Err(error) => {
                self.bury(job, &error.to_string(), publisher).await?;
                "dead"
            }
        };
        metrics::counter!("infinity_jobs_processed_total", "kind" => job.kind.clone(), "outcome" => label)
            .increment(1);
        Ok(())
    }

    /// Publishes `message` to the wait queue of retry `retry`, from which it
    /// returns to the work queue after a jittered delay. Returns the delay.
    async fn wait(
        &self,
        message: &JobMessage,
        retry: u32,
        publisher: &Publisher,
    ) -> Result<Duration, BrokerError> {
        let (queue, delay) = self.names.wait_step(retry);
        let properties = message
            .properties()
            .with_expiration(delay.as_millis().to_string().into());
        publisher
            .publish(queue, &message.encode(), properties)
            .await?;
        Ok(delay)
    }

    /// Marks the job dead, then puts its message in the dead-letter queue
    /// with `error`.
    async fn bury(
        &self,
        job: &JobRecord,
        error: &str,
        publisher: &Publisher,
    ) -> Result<(), BrokerError> {
        tracing::error!(%error, attempts = job.attempts, "job failed for good; moved to the dead-letter queue");
        self.outbox.fail(job.id, &self.name, error, None).await?;
        let message = JobMessage::of(job);
        let properties = with_error(message.properties(), error);
        publisher
            .publish(&self.names.dead, &message.encode(), properties)
            .await
    }

    /// Extends the job's lease at a third of its length; returns when it is
    /// lost.
    async fn keep_leased(&self, id: Id) {
        let mut ticks = tokio::time::interval(self.config.lease / 3);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.outbox.extend(id, &self.name, self.config.lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => tracing::warn!(%error, "extending a lease failed"),
            }
        }
    }
}
