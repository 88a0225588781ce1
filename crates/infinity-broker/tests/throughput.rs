//! Jobs per second through RabbitMQ (outbox, relay, broker, worker) against
//! the embedded queue, on one SQLite database with a handler that does
//! nothing, so that the figures are the queues' own cost. `bench/jobs.sh`
//! runs it in release mode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use infinity_broker::{BrokerConfig, BrokerWorker, Relay};
use infinity_jobs::{Handler, Handlers, JobError, Worker, WorkerConfig};
use infinity_local::RabbitServer;
use infinity_store::{JobQueue, JobRecord, NewJob, Outbox, SqliteOptions, SqliteStore};
use serde_json::json;
use tokio::sync::watch;

const JOBS: usize = 5000;
const CONCURRENCY: usize = 4;
const KIND: &str = "bench.noop";

/// Counts its runs and does nothing else.
struct Noop(Arc<AtomicUsize>);

#[async_trait]
impl Handler for Noop {
    async fn run(&self, _job: &JobRecord) -> Result<(), JobError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn store(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::open(&dir.path().join("jobs.db"), SqliteOptions::default())
            .await
            .unwrap(),
    )
}

async fn enqueue_all(store: &SqliteStore) {
    for _ in 0..JOBS {
        store
            .enqueue(NewJob {
                kind: KIND.into(),
                payload: json!({}),
            })
            .await
            .unwrap();
    }
}

async fn wait_for(runs: &AtomicUsize) {
    let started = Instant::now();
    while runs.load(Ordering::Relaxed) < JOBS {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "jobs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn handlers(runs: &Arc<AtomicUsize>) -> Handlers {
    let mut handlers: Handlers = HashMap::new();
    handlers.insert(KIND.into(), Arc::new(Noop(runs.clone())));
    handlers
}

/// Returns jobs per second through the embedded queue.
async fn embedded() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    enqueue_all(&store).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let config = WorkerConfig {
        concurrency: CONCURRENCY,
        poll_interval: Duration::from_millis(10),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(store.clone(), config).with_handlers(handlers(&runs));
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(Arc::new(worker).run(stopped));
    wait_for(&runs).await;
    let rate = JOBS as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    task.await.unwrap();
    rate
}

/// Returns jobs per second through the outbox, the relay and RabbitMQ.
async fn broker(server: &RabbitServer) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    enqueue_all(&store).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let config = BrokerConfig {
        prefix: format!("bench-{}", std::process::id()),
        prefetch: (CONCURRENCY * 2) as u16,
        ..BrokerConfig::new(server.url())
    };
    let outbox: Arc<dyn Outbox> = store.clone();
    let relay = Relay::new(outbox.clone(), &config);
    let worker = BrokerWorker::new(outbox, handlers(&runs), config, CONCURRENCY);
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let tasks = [
        tokio::spawn(relay.run(stopped.clone())),
        tokio::spawn(Arc::new(worker).run(stopped)),
    ];
    wait_for(&runs).await;
    let rate = JOBS as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    for task in tasks {
        task.await.unwrap();
    }
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by bench/jobs.sh"]
async fn jobs_per_second_broker_against_embedded() {
    let server = tokio::task::spawn_blocking(RabbitServer::start)
        .await
        .unwrap()
        .expect("a private RabbitMQ node starts");
    let embedded = embedded().await;
    let broker = broker(&server).await;
    println!(
        "jobs per second ({JOBS} no-op jobs, {CONCURRENCY} at once, SQLite): \
         embedded queue {embedded:.0}, RabbitMQ through the outbox {broker:.0} \
         (ratio {:.2})",
        broker / embedded
    );
}
