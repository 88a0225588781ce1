//! The broker tier against a private RabbitMQ node and a SQLite outbox:
//! delivery, effects once, rolled-back writes, a broker outage, retries with
//! backoff, dead letters and the operator's retry and discard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use infinity_broker::dead::DeadLetters;
use infinity_broker::{connect, BrokerConfig, BrokerWorker, JobMessage, Relay};
use infinity_jobs::{Handler, Handlers, JobError};
use infinity_local::{shared_rabbit, RabbitServer};
use infinity_store::{
    Id, JobQueue, JobRecord, JobState, NewJob, NewUser, Outbox, SqliteOptions, SqliteStore, Store,
};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::watch;

/// Hang guard for jobs to reach the states a test waits for.
const SETTLE_BOUND: Duration = Duration::from_secs(60);

const COUNTED: &str = "test.counted";
const POISON: &str = "test.poison";

/// Records each run of a job: its id and when it started.
#[derive(Default)]
struct Runs(Mutex<Vec<(Id, Instant)>>);

impl Runs {
    fn of(&self, id: Id) -> Vec<Instant> {
        let runs = self.0.lock().unwrap();
        runs.iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, at)| *at)
            .collect()
    }

    fn total(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Counts its runs, holds each for `hold`, and fails while `failing` is set.
struct Counted {
    runs: Arc<Runs>,
    hold: Duration,
    failing: Arc<AtomicBool>,
    permanent: bool,
}

#[async_trait]
impl Handler for Counted {
    async fn run(&self, job: &JobRecord) -> Result<(), JobError> {
        self.runs.0.lock().unwrap().push((job.id, Instant::now()));
        tokio::time::sleep(self.hold).await;
        if self.failing.load(Ordering::SeqCst) {
            let error = format!("failing on purpose, attempt {}", job.attempts);
            return Err(if self.permanent {
                JobError::Permanent(error)
            } else {
                JobError::Retry(error)
            });
        }
        Ok(())
    }
}

/// A SQLite store, a relay and a worker on one broker, with their own
/// queue prefix.
struct Harness {
    store: Arc<SqliteStore>,
    config: BrokerConfig,
    runs: Arc<Runs>,
    poison_runs: Arc<Runs>,
    /// Makes `test.counted` jobs fail while set.
    failing: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

static PREFIX: AtomicU64 = AtomicU64::new(0);

fn config(url: &str) -> BrokerConfig {
    let prefix = format!(
        "test-{}-{}",
        std::process::id(),
        PREFIX.fetch_add(1, Ordering::SeqCst)
    );
    BrokerConfig {
        prefix,
        prefetch: 4,
        max_attempts: 4,
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
        lease: Duration::from_secs(3),
        ..BrokerConfig::new(url)
    }
}

impl Harness {
    async fn start(config: BrokerConfig, hold: Duration, permanent: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("jobs.db"), SqliteOptions::default())
                .await
                .unwrap(),
        );
        let runs = Arc::new(Runs::default());
        let poison_runs = Arc::new(Runs::default());
        let failing = Arc::new(AtomicBool::new(false));
        let mut handlers: Handlers = HashMap::new();
        handlers.insert(
            COUNTED.into(),
            Arc::new(Counted {
                runs: runs.clone(),
                hold,
                failing: failing.clone(),
                permanent,
            }),
        );
        handlers.insert(
            POISON.into(),
            Arc::new(Counted {
                runs: poison_runs.clone(),
                hold: Duration::ZERO,
                failing: Arc::new(AtomicBool::new(true)),
                permanent: false,
            }),
        );
        let (stop, stopped) = watch::channel(false);
        let outbox: Arc<dyn Outbox> = store.clone();
        let relay = Relay::new(outbox.clone(), &config);
        let worker = Arc::new(BrokerWorker::new(outbox, handlers, config.clone(), 2));
        let tasks = vec![
            tokio::spawn(relay.run(stopped.clone())),
            tokio::spawn(worker.run(stopped)),
        ];
        Self {
            store,
            config,
            runs,
            poison_runs,
            failing,
            stop,
            tasks,
            _dir: dir,
        }
    }

    async fn stop(&mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }

    /// Creates a user and, in the same transaction, one job of `kind`.
    /// Returns the job's id.
    async fn write(&self, username: &str, kind: &str) -> Id {
        self.store
            .create_user(user(username), vec![job(kind)])
            .await
            .unwrap();
        self.job_ids(kind).await.into_iter().max().unwrap()
    }

    async fn job_ids(&self, kind: &str) -> Vec<Id> {
        let jobs = self.store.jobs(None, 10_000).await.unwrap();
        jobs.into_iter()
            .filter(|j| j.kind == kind)
            .map(|j| j.id)
            .collect()
    }

    async fn find(&self, id: Id) -> Option<JobRecord> {
        let jobs = self.store.jobs(None, 10_000).await.unwrap();
        jobs.into_iter().find(|job| job.id == id)
    }

    /// Waits until job `id` is in `state`.
    async fn settled(&self, id: Id, state: JobState) -> JobRecord {
        let started = Instant::now();
        loop {
            let job = self.find(id).await.expect("the job exists");
            if job.state == state {
                return job;
            }
            assert!(
                started.elapsed() < SETTLE_BOUND,
                "job {id} is still {:?} after {SETTLE_BOUND:?}, not {state:?}",
                job.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn dead_letters(&self) -> DeadLetters {
        DeadLetters::open(self.store.clone(), self.config.clone())
            .await
            .unwrap()
    }
}

fn user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "x".into(),
    }
}

fn job(kind: &str) -> NewJob {
    NewJob {
        kind: kind.into(),
        payload: json!({}),
    }
}

/// Publishes `message` straight to the work queue, as a relay that crashed
/// after the confirm, before marking the row, would publish it again.
async fn publish_again(config: &BrokerConfig, message: &JobMessage) {
    let connection = connect(&config.url, "test-publisher").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            "".into(),
            config.names().work.as_str().into(),
            BasicPublishOptions::default(),
            &message.encode(),
            message.properties(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    connection.close(200, "done".into()).await.unwrap();
}

fn shared_url() -> String {
    shared_rabbit()
        .expect("a private RabbitMQ node starts")
        .url()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_once_and_rollback_sends_nothing() {
    let mut harness = Harness::start(config(&shared_url()), Duration::ZERO, false).await;

    let id = harness.write("ada", COUNTED).await;
    let done = harness.settled(id, JobState::Done).await;
    assert_eq!(done.attempts, 1);
    assert_eq!(harness.runs.of(id).len(), 1);

    // The same username violates a unique index, so the transaction rolls
    // back with its job.
    let failed = harness
        .store
        .create_user(user("ada"), vec![job(COUNTED)])
        .await;
    assert!(failed.is_err());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(harness.job_ids(COUNTED).await, vec![id]);
    assert_eq!(harness.runs.total(), 1);
    let depths = harness.dead_letters().await.depths().await.unwrap();
    assert_eq!(depths.work, 0);
    assert_eq!(depths.dead, 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivery_has_one_effect() {
    let mut harness =
        Harness::start(config(&shared_url()), Duration::from_millis(500), false).await;

    let id = harness.write("grace", COUNTED).await;
    let message = JobMessage {
        id,
        kind: COUNTED.into(),
    };
    // One copy arrives while the first run holds the job, one after it is
    // done.
    harness.settled(id, JobState::Running).await;
    publish_again(&harness.config, &message).await;
    harness.settled(id, JobState::Done).await;
    publish_again(&harness.config, &message).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(harness.runs.of(id).len(), 1);
    let done = harness.find(id).await.unwrap();
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.attempts, 1);
    let depths = harness.dead_letters().await.depths().await.unwrap();
    assert_eq!(depths.work, 0);
    assert_eq!(depths.waiting, 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_written_during_an_outage_arrive() {
    let server = tokio::task::spawn_blocking(RabbitServer::start)
        .await
        .unwrap()
        .expect("a private RabbitMQ node starts");
    let mut harness = Harness::start(config(&server.url()), Duration::ZERO, false).await;
    let first = harness.write("before", COUNTED).await;
    harness.settled(first, JobState::Done).await;

    let server = tokio::task::spawn_blocking(move || {
        server.kill().unwrap();
        server
    })
    .await
    .unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(harness.write(&format!("during{n}"), COUNTED).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in &ids {
        let job = harness.find(*id).await.unwrap();
        assert_eq!(job.state, JobState::Queued, "job {id} left the outbox");
    }

    let server = tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    })
    .await
    .unwrap();
    for id in &ids {
        harness.settled(*id, JobState::Done).await;
        assert_eq!(harness.runs.of(*id).len(), 1, "job {id}");
    }
    assert_eq!(harness.runs.of(first).len(), 1);
    harness.stop().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_job_dies_with_growing_delays() {
    let mut harness = Harness::start(config(&shared_url()), Duration::ZERO, false).await;

    let poison = harness.write("poison", POISON).await;
    let mut good = Vec::new();
    for n in 0..5 {
        good.push(harness.write(&format!("good{n}"), COUNTED).await);
    }
    for id in &good {
        harness.settled(*id, JobState::Done).await;
    }
    let dead = harness.settled(poison, JobState::Dead).await;
    assert_eq!(dead.attempts, 4);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("failing on purpose, attempt 4")
    );

    // Steps of 200, 400 and 800 ms, each cut to 50 % to 100 % by the jitter.
    let runs = harness.poison_runs.of(poison);
    assert_eq!(runs.len(), 4);
    let gaps: Vec<Duration> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(400), "{gaps:?}");
    assert!(gaps[2] > gaps[0], "{gaps:?}");

    let letters = harness.dead_letters().await.list().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, poison);
    assert_eq!(letters[0].kind, POISON);
    assert_eq!(letters[0].error, "failing on purpose, attempt 4");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_job_is_retried_and_discarded() {
    let mut harness = Harness::start(config(&shared_url()), Duration::ZERO, true).await;
    harness.failing.store(true, Ordering::SeqCst);
    let retried = harness.write("retried", COUNTED).await;
    let discarded = harness.write("discarded", COUNTED).await;
    for id in [retried, discarded] {
        let dead = harness.settled(id, JobState::Dead).await;
        assert_eq!(dead.attempts, 1, "a permanent error is not retried");
    }
    let dead_letters = harness.dead_letters().await;
    let mut listed: Vec<Id> = dead_letters
        .list()
        .await
        .unwrap()
        .iter()
        .map(|l| l.id)
        .collect();
    listed.sort();
    assert_eq!(listed, vec![retried.min(discarded), retried.max(discarded)]);

    harness.failing.store(false, Ordering::SeqCst);
    assert!(dead_letters.retry(retried).await.unwrap());
    let done = harness.settled(retried, JobState::Done).await;
    assert_eq!(done.attempts, 1, "attempts restart from zero");
    assert!(dead_letters.discard(discarded).await.unwrap());
    assert!(harness.find(discarded).await.is_none());
    assert!(dead_letters.list().await.unwrap().is_empty());
    assert!(!dead_letters.retry(discarded).await.unwrap());
    assert_eq!(harness.runs.of(retried).len(), 2);
    dead_letters.close().await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_dead_letters_are_marked_dead() {
    let mut harness = Harness::start(config(&shared_url()), Duration::ZERO, false).await;
    harness.stop().await;
    // A letter the broker dead-lettered on its own has a row still
    // published; syncing marks it dead.
    let id = harness.store.enqueue(job(COUNTED)).await.unwrap();
    let dead_letters = harness.dead_letters().await;
    let message = JobMessage {
        id,
        kind: COUNTED.into(),
    };
    let names = harness.config.names();
    // Publish straight into the dead-letter queue, as the broker would.
    let connection = connect(&harness.config.url, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            names.dead.as_str().into(),
            BasicPublishOptions::default(),
            &message.encode(),
            message.properties(),
        )
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();

    let started = Instant::now();
    while dead_letters.list().await.unwrap().is_empty() {
        assert!(started.elapsed() < SETTLE_BOUND);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dead_letters.sync().await.unwrap(), 1);
    let dead = harness.find(id).await.unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("unknown"));
    assert_eq!(
        dead_letters.sync().await.unwrap(),
        0,
        "syncing twice marks once"
    );
    assert_eq!(
        dead_letters.list().await.unwrap().len(),
        1,
        "listing keeps the letters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_limit_dead_letters_a_crash_loop() {
    let mut config = config(&shared_url());
    config.delivery_limit = 2;
    let mut harness = Harness::start(config, Duration::ZERO, false).await;
    harness.stop().await;
    let id = harness.store.enqueue(job(COUNTED)).await.unwrap();
    let dead_letters = harness.dead_letters().await;
    let message = JobMessage {
        id,
        kind: COUNTED.into(),
    };
    publish_again(&harness.config, &message).await;

    // A consumer that dies with the message each time: take it and return
    // it, as a closed channel would.
    let names = harness.config.names();
    let connection = connect(&harness.config.url, "test-crasher").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut returns = 0;
    let started = Instant::now();
    while dead_letters.list().await.unwrap().is_empty() {
        let got = channel
            .basic_get(
                names.work.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap();
        if let Some(got) = got {
            got.delivery
                .acker
                .nack(lapin::options::BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await
                .unwrap();
            returns += 1;
        }
        assert!(started.elapsed() < SETTLE_BOUND, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    connection.close(200, "done".into()).await.unwrap();
    assert!(returns >= 2, "dead-lettered after {returns} returns");

    let letters = dead_letters.list().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, id);
    assert_eq!(letters[0].error, "the broker's delivery limit was reached");
    assert_eq!(dead_letters.sync().await.unwrap(), 1);
    let dead = harness.find(id).await.unwrap();
    assert_eq!(dead.state, JobState::Dead);
}
