//! The worker runtime over a real SQLite queue: leases, retries with
//! backoff, dead jobs and the operator's retry and discard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use infinity_jobs::{Handler, JobError, Worker, WorkerConfig};
use infinity_store::{Id, JobQueue, JobRecord, JobState, NewJob, SqliteOptions, SqliteStore};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::watch;

/// Hang guard for a job to reach the state a test waits for.
const SETTLE_BOUND: Duration = Duration::from_secs(30);

async fn queue() -> (Arc<SqliteStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("jobs.db"), SqliteOptions::default())
        .await
        .unwrap();
    (Arc::new(store), dir)
}

fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 1,
        lease: Duration::from_secs(30),
        max_attempts: 5,
        poll_interval: Duration::from_millis(10),
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(5),
    }
}

fn job(kind: &str) -> NewJob {
    NewJob {
        kind: kind.into(),
        payload: json!({}),
    }
}

/// A worker running on its own task.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(worker: Worker) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(Arc::new(worker).run(stopped));
        Self { stop, task }
    }

    /// Stops the worker after its current jobs end.
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}

/// One run of a [`Scripted`] handler: the job as taken, and when the
/// handler returned.
struct Run {
    job: JobRecord,
    returned: DateTime<Utc>,
}

/// What a [`Scripted`] handler saw.
#[derive(Default)]
struct Probe {
    running: AtomicUsize,
    max_running: AtomicUsize,
    runs: Mutex<Vec<Run>>,
}

impl Probe {
    fn run_count(&self) -> usize {
        self.runs.lock().unwrap().len()
    }
}

/// A test handler: sleeps for `hold` in each run, then fails the first
/// `failures` runs with `error` and succeeds after.
struct Scripted {
    probe: Arc<Probe>,
    hold: Duration,
    failures: usize,
    error: fn(String) -> JobError,
}

impl Scripted {
    fn new(probe: &Arc<Probe>) -> Self {
        Self {
            probe: probe.clone(),
            hold: Duration::ZERO,
            failures: 0,
            error: JobError::Retry,
        }
    }
}

#[async_trait]
impl Handler for Scripted {
    async fn run(&self, job: &JobRecord) -> Result<(), JobError> {
        let now_running = self.probe.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.probe
            .max_running
            .fetch_max(now_running, Ordering::SeqCst);
        tokio::time::sleep(self.hold).await;
        self.probe.running.fetch_sub(1, Ordering::SeqCst);
        let mut runs = self.probe.runs.lock().unwrap();
        let index = runs.len();
        runs.push(Run {
            job: job.clone(),
            returned: Utc::now(),
        });
        if index < self.failures {
            Err((self.error)(format!("scripted failure {}", index + 1)))
        } else {
            Ok(())
        }
    }
}

async fn find(queue: &SqliteStore, id: Id) -> Option<JobRecord> {
    let jobs = queue.jobs(None, 1000).await.unwrap();
    jobs.into_iter().find(|job| job.id == id)
}

/// Polls the queue until job `id` is in `state` and returns it.
async fn settled(queue: &SqliteStore, id: Id, state: JobState) -> JobRecord {
    let started = tokio::time::Instant::now();
    loop {
        let job = find(queue, id).await.expect("the job exists");
        if job.state == state {
            return job;
        }
        assert!(
            started.elapsed() < SETTLE_BOUND,
            "job {id} is still {:?} after {SETTLE_BOUND:?}, not {state:?}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_job_keeps_its_lease() {
    let (queue, _dir) = queue().await;
    let probe = Arc::new(Probe::default());
    let short_lease = WorkerConfig {
        lease: Duration::from_secs(1),
        ..config()
    };
    // The job runs for three leases; without extensions the second worker
    // would take it while the first still runs it.
    let slow = || Scripted {
        hold: Duration::from_millis(3200),
        ..Scripted::new(&probe)
    };
    let first =
        Running::start(Worker::new(queue.clone(), short_lease.clone()).handle("slow", slow()));
    let second = Running::start(Worker::new(queue.clone(), short_lease).handle("slow", slow()));

    let id = queue.enqueue(job("slow")).await.unwrap();
    let done = settled(&queue, id, JobState::Done).await;
    first.stop().await;
    second.stop().await;

    assert_eq!(probe.max_running.load(Ordering::SeqCst), 1);
    assert_eq!(probe.run_count(), 1);
    assert_eq!(done.attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_worker_job_runs_again() {
    let (queue, _dir) = queue().await;
    let id = queue.enqueue(job("echo")).await.unwrap();
    let abandoned = queue
        .take("vanished-worker", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("the job is due");
    assert_eq!(abandoned.id, id);
    assert_eq!(abandoned.state, JobState::Running);

    let probe = Arc::new(Probe::default());
    let worker =
        Running::start(Worker::new(queue.clone(), config()).handle("echo", Scripted::new(&probe)));
    let done = settled(&queue, id, JobState::Done).await;
    worker.stop().await;

    assert_eq!(probe.run_count(), 1);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.lease_owner, None);
    // The first worker's late report no longer counts.
    assert!(!queue.complete(id, "vanished-worker").await.unwrap());
}

#[tokio::test]
async fn held_lease_blocks_other_takers() {
    let (queue, _dir) = queue().await;
    let id = queue.enqueue(job("echo")).await.unwrap();
    let lease = Duration::from_secs(60);
    assert_eq!(queue.take("first", lease).await.unwrap().unwrap().id, id);
    assert!(queue.take("second", lease).await.unwrap().is_none());
    assert!(queue.extend(id, "first", lease).await.unwrap());
    assert!(!queue.extend(id, "second", lease).await.unwrap());
    assert!(!queue.complete(id, "second").await.unwrap());
    assert!(queue.complete(id, "first").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_then_succeed() {
    let (queue, _dir) = queue().await;
    let probe = Arc::new(Probe::default());
    let backoff = WorkerConfig {
        base_backoff: Duration::from_millis(200),
        ..config()
    };
    let flaky = Scripted {
        failures: 2,
        ..Scripted::new(&probe)
    };
    let worker = Running::start(Worker::new(queue.clone(), backoff).handle("flaky", flaky));
    let id = queue.enqueue(job("flaky")).await.unwrap();
    let done = settled(&queue, id, JobState::Done).await;
    worker.stop().await;

    assert_eq!(done.attempts, 3);
    assert_eq!(done.last_error.as_deref(), Some("scripted failure 2"));
    let runs = probe.runs.lock().unwrap();
    let attempts: Vec<u32> = runs.iter().map(|run| run.job.attempts).collect();
    assert_eq!(attempts, [1, 2, 3]);

    // The delay a failure scheduled: from the handler's return to the
    // `run_at` the next attempt was taken with. The first retry waits
    // 100-200 ms and the second 200-400 ms (base 200 ms, doubled, with
    // jitter over the upper half); the upper bounds allow for slow
    // scheduling between the return and the recorded failure.
    let delay = |n: usize| (runs[n + 1].job.run_at - runs[n].returned).num_milliseconds();
    let (first, second) = (delay(0), delay(1));
    assert!((99..=300).contains(&first), "first retry delay {first} ms");
    assert!(
        (199..=500).contains(&second),
        "second retry delay {second} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_dies_then_retry_and_discard() {
    let (queue, _dir) = queue().await;
    let probe = Arc::new(Probe::default());
    let three_attempts = WorkerConfig {
        max_attempts: 3,
        ..config()
    };
    let broken = || Scripted {
        failures: usize::MAX,
        ..Scripted::new(&probe)
    };
    let worker = Running::start(
        Worker::new(queue.clone(), three_attempts.clone()).handle("broken", broken()),
    );
    let id = queue.enqueue(job("broken")).await.unwrap();
    let dead = settled(&queue, id, JobState::Dead).await;
    worker.stop().await;

    assert_eq!(dead.attempts, 3);
    assert_eq!(probe.run_count(), 3);
    assert_eq!(dead.last_error.as_deref(), Some("scripted failure 3"));
    assert_eq!(dead.lease_owner, None);

    assert!(queue.retry(id).await.unwrap());
    let queued = find(&queue, id).await.unwrap();
    assert_eq!(queued.state, JobState::Queued);
    assert_eq!(queued.attempts, 0);
    assert!(!queue.retry(id).await.unwrap(), "retry of a queued job");
    assert!(!queue.discard(id).await.unwrap(), "discard of a queued job");

    // Retried, it runs its attempts again before it dies a second time.
    let worker =
        Running::start(Worker::new(queue.clone(), three_attempts).handle("broken", broken()));
    let dead_again = settled(&queue, id, JobState::Dead).await;
    worker.stop().await;
    assert_eq!(dead_again.attempts, 3);
    assert_eq!(probe.run_count(), 6);

    assert!(queue.discard(id).await.unwrap());
    assert!(find(&queue, id).await.is_none());
    assert!(
        !queue.discard(id).await.unwrap(),
        "discard of a missing job"
    );
    assert!(!queue.retry(id).await.unwrap(), "retry of a missing job");
}

#[tokio::test]
async fn retry_and_discard_skip_done_jobs() {
    let (queue, _dir) = queue().await;
    let id = queue.enqueue(job("echo")).await.unwrap();
    queue
        .take("w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(queue.complete(id, "w").await.unwrap());
    assert!(!queue.retry(id).await.unwrap());
    assert!(!queue.discard(id).await.unwrap());
    assert_eq!(find(&queue, id).await.unwrap().state, JobState::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_error_dies_at_once() {
    let (queue, _dir) = queue().await;
    let probe = Arc::new(Probe::default());
    let invalid = Scripted {
        failures: usize::MAX,
        error: JobError::Permanent,
        ..Scripted::new(&probe)
    };
    let worker = Running::start(Worker::new(queue.clone(), config()).handle("invalid", invalid));
    let id = queue.enqueue(job("invalid")).await.unwrap();
    let dead = settled(&queue, id, JobState::Dead).await;
    worker.stop().await;

    assert_eq!(dead.attempts, 1);
    assert_eq!(probe.run_count(), 1);
    assert_eq!(dead.last_error.as_deref(), Some("scripted failure 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kind_dies_at_once() {
    let (queue, _dir) = queue().await;
    let probe = Arc::new(Probe::default());
    let worker =
        Running::start(Worker::new(queue.clone(), config()).handle("echo", Scripted::new(&probe)));
    let id = queue.enqueue(job("nobody.handles")).await.unwrap();
    let dead = settled(&queue, id, JobState::Dead).await;
    worker.stop().await;

    assert_eq!(dead.attempts, 1);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("no handler for job kind \"nobody.handles\"")
    );
    assert_eq!(probe.run_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_job_does_not_block_others() {
    let (queue, _dir) = queue().await;
    let poison_probe = Arc::new(Probe::default());
    let good_probe = Arc::new(Probe::default());
    let backoff = WorkerConfig {
        base_backoff: Duration::from_millis(50),
        ..config()
    };
    let poison = Scripted {
        failures: usize::MAX,
        ..Scripted::new(&poison_probe)
    };
    let good = Scripted {
        hold: Duration::from_millis(20),
        ..Scripted::new(&good_probe)
    };
    let worker = Running::start(
        Worker::new(queue.clone(), backoff)
            .handle("poison", poison)
            .handle("good", good),
    );

    let poison_id = queue.enqueue(job("poison")).await.unwrap();
    let mut good_ids = Vec::new();
    for _ in 0..10 {
        good_ids.push(queue.enqueue(job("good")).await.unwrap());
    }
    for id in &good_ids {
        let done = settled(&queue, *id, JobState::Done).await;
        assert_eq!(done.attempts, 1);
    }
    let dead = settled(&queue, poison_id, JobState::Dead).await;
    worker.stop().await;

    assert_eq!(good_probe.run_count(), 10);
    assert_eq!(dead.attempts, 5);
    assert_eq!(poison_probe.run_count(), 5);
    let counts = queue.counts().await.unwrap();
    assert!(counts.contains(&(JobState::Done, 10)), "{counts:?}");
    assert!(counts.contains(&(JobState::Dead, 1)), "{counts:?}");
}
