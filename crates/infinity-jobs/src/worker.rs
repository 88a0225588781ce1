//! The worker runtime: takes jobs under a lease, keeps the lease alive while
//! a handler runs, retries failures with exponential backoff and jitter, and
//! moves a job that keeps failing to the dead state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use infinity_store::consistency;
use infinity_store::{JobQueue, JobRecord, Outbox};
use tokio::sync::watch;
use tracing::Instrument;

/// The cause of a job's failure.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A cause that may pass (a server down, a timeout): retry later.
    #[error("{0}")]
    Retry(String),
    /// A cause that will not pass (bad input): no retry.
    #[error("{0}")]
    Permanent(String),
}

/// Runs the jobs of one kind. A job may run more than once (after a crash
/// or a lost lease), so a handler makes its effect idempotent.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn run(&self, job: &JobRecord) -> Result<(), JobError>;
}

/// The handler of each job kind.
pub type Handlers = HashMap<String, Arc<dyn Handler>>;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How long a taken job stays leased without an extension.
    pub lease: Duration,
    /// Attempts before a job is dead.
    pub max_attempts: u32,
    /// How long an idle worker waits before looking for jobs again.
    pub poll_interval: Duration,
    /// The delay before the first retry; each further retry doubles it.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            lease: Duration::from_secs(30),
            max_attempts: 5,
            poll_interval: Duration::from_millis(250),
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
        }
    }
}

pub struct Worker {
    queue: Arc<dyn JobQueue>,
    handlers: Handlers,
    config: WorkerConfig,
    /// This process's name in job leases.
    name: String,
}

/// Computes the delay before retry number `attempt` (1 for the first retry): doubled
/// per attempt, capped, then cut to a random point in its upper half so
/// that jobs that failed together do not retry together.
pub fn backoff(config: &WorkerConfig, attempt: u32) -> Duration {
    let doubled = config
        .base_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = doubled.min(config.max_backoff);
    capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

impl Worker {
    pub fn new(queue: Arc<dyn JobQueue>, config: WorkerConfig) -> Self {
        let name = format!("{}-{}", std::process::id(), rand::random::<u32>());
        Self {
            queue,
            handlers: HashMap::new(),
            config,
            name,
        }
    }

    pub fn handle(mut self, kind: &str, handler: impl Handler) -> Self {
        self.handlers.insert(kind.to_string(), Arc::new(handler));
        self
    }

    /// Replaces the handlers with `handlers`.
    pub fn with_handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = handlers;
        self
    }

    /// Runs `concurrency` job loops until `shutdown` turns true; each loop
    /// finishes its current job first.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        tracing::info!(worker = %self.name, concurrency = self.config.concurrency, "worker started");
        let loops: Vec<_> = (0..self.config.concurrency.max(1))
            .map(|_| tokio::spawn(self.clone().run_loop(shutdown.clone())))
            .collect();
        for job_loop in loops {
            let _ = job_loop.await;
        }
        tracing::info!(worker = %self.name, "worker stopped");
    }

    async fn run_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            match self.queue.take(&self.name, self.config.lease).await {
                Ok(Some(job)) => self.run_job(job).await,
                Ok(None) => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "taking a job failed; retrying");
                    tokio::time::sleep(self.config.poll_interval * 4).await;
                }
            }
        }
    }

    async fn run_job(&self, job: JobRecord) {
        let span =
            tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
        // A job was committed with the rows it is about, and a replica may
        // not have replayed them yet, so a job's reads go to the primary.
        let scope = consistency::Scope::new(consistency::Position::MAX, 0);
        consistency::within(scope, self.run_job_in_span(job).instrument(span)).await;
    }

    async fn run_job_in_span(&self, job: JobRecord) {
        let Some(handler) = self.handlers.get(&job.kind).cloned() else {
            let error = format!("no handler for job kind {:?}", job.kind);
            self.finish(&job, Err(JobError::Permanent(error))).await;
            return;
        };
        if job.attempts > self.config.max_attempts {
            // The job's worker died mid-run too often to count as a failure
            // of its own; stop taking it.
            let error = format!("abandoned after {} attempts", job.attempts - 1);
            self.finish(&job, Err(JobError::Permanent(error))).await;
            return;
        }
        let outcome = tokio::select! {
            outcome = handler.run(&job) => Some(outcome),
            () = self.keep_leased(job.id) => None,
        };
        match outcome {
            Some(outcome) => self.finish(&job, outcome).await,
            None => tracing::warn!("lease lost; another worker will run the job"),
        }
    }

    /// Extends the lease at a third of its length; returns when it is lost.
    async fn keep_leased(&self, id: infinity_store::Id) {
        let mut ticks = tokio::time::interval(self.config.lease / 3);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.queue.extend(id, &self.name, self.config.lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => tracing::warn!(%error, "extending a lease failed"),
            }
        }
    }

    async fn finish(&self, job: &JobRecord, outcome: Result<(), JobError>) {
        let (label, result) = match outcome {
            Ok(()) => ("done", self.queue.complete(job.id, &self.name).await),
            Err(JobError::Retry(error)) if job.attempts < self.config.max_attempts => {
                let delay = backoff(&self.config, job.attempts);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "job failed; will retry");
                let at = Utc::now() + delay;
                (
                    "retry",
                    self.queue.fail(job.id, &self.name, &error, Some(at)).await,
                )
            }
            Err(error) => {
                tracing::error!(%error, "job failed for good; moved to the dead jobs");
                (
                    "dead",
                    self.queue
                        .fail(job.id, &self.name, &error.to_string(), None)
                        .await,
                )
            }
        };
        metrics::counter!("infinity_jobs_processed_total", "kind" => job.kind.clone(), "outcome" => label)
            .increment(1);
        match result {
            Ok(true) => {}
            Ok(false) => tracing::warn!("job was taken over before it finished"),
            Err(error) => tracing::error!(%error, "recording a job's outcome failed"),
        }
    }
}

/// The window of the per-kind throughput and failure gauges.
pub const KIND_WINDOW: Duration = Duration::from_secs(60);

/// Publishes, every `interval` until `shutdown` turns true, the number of
/// jobs per state as the gauge `infinity_jobs{state}`, and per job kind the
/// gauge `infinity_job_kind{kind, figure}` with the figures `pending`,
/// `retrying`, `dead`, and `done_last_minute` and `dead_last_minute` (over
/// [`KIND_WINDOW`]).
pub async fn publish_queue_gauges(
    queue: Arc<dyn Outbox>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        match queue.counts().await {
            Ok(counts) => {
                for (state, count) in counts {
                    metrics::gauge!("infinity_jobs", "state" => state.as_str()).set(count as f64);
                }
            }
            Err(error) => tracing::warn!(%error, "counting jobs failed"),
        }
        match queue.kind_stats(KIND_WINDOW).await {
            Ok(stats) => {
                for kind in stats {
                    let figures = [
                        ("pending", kind.pending),
                        ("retrying", kind.retrying),
                        ("dead", kind.dead),
                        ("done_last_minute", kind.done_recently),
                        ("dead_last_minute", kind.dead_recently),
                    ];
                    for (figure, value) in figures {
                        metrics::gauge!("infinity_job_kind", "kind" => kind.kind.clone(), "figure" => figure)
                            .set(value as f64);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "counting jobs per kind failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let config = WorkerConfig {
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            ..WorkerConfig::default()
        };
        for _ in 0..100 {
            let first = backoff(&config, 1);
            assert!(first >= Duration::from_secs(1));
            assert!(first <= Duration::from_secs(2));
            let third = backoff(&config, 3);
            assert!(third >= Duration::from_secs(4));
            assert!(third <= Duration::from_secs(8));
            let late = backoff(&config, 30);
            assert!(late >= Duration::from_secs(30));
            assert!(late <= Duration::from_secs(60));
        }
    }
}
