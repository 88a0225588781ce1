//! The outbox on PostgreSQL: two relays claim distinct rows, and a job
//! reaches a broker worker once, with the per-kind figures and the count of
//! pending jobs that the expected wait of uploads reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use infinity_broker::{BrokerConfig, BrokerWorker, Relay};
use infinity_jobs::{Handler, Handlers, JobError};
use infinity_local::{shared_database, shared_rabbit};
use infinity_store::{
    JobQueue, JobRecord, JobState, NewJob, Outbox, PostgresOptions, PostgresStore,
};
use serde_json::json;
use tokio::sync::watch;

const KIND: &str = "test.postgres";

struct Counted(Arc<AtomicUsize>);

#[async_trait]
impl Handler for Counted {
    async fn run(&self, _job: &JobRecord) -> Result<(), JobError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn job() -> NewJob {
    NewJob {
        kind: KIND.into(),
        payload: json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outbox_relays_each_job_once() {
    let database = tokio::task::spawn_blocking(|| shared_database("broker outbox"))
        .await
        .unwrap();
    let store = Arc::new(
        PostgresStore::connect(PostgresOptions::new(database.primary_url.clone()))
            .await
            .unwrap(),
    );
    store.migrate().await.unwrap();

    for _ in 0..10 {
        store.enqueue(job()).await.unwrap();
    }
    let first = store
        .claim_unpublished("relay-a", Duration::from_secs(30), 6)
        .await
        .unwrap();
    let second = store
        .claim_unpublished("relay-b", Duration::from_secs(30), 6)
        .await
        .unwrap();
    assert_eq!(first.len(), 6);
    assert_eq!(second.len(), 4, "relay-b gets only the rows relay-a left");
    assert!(second
        .iter()
        .all(|job| !first.iter().any(|f| f.id == job.id)));
    let ids: Vec<_> = first.iter().map(|job| job.id).collect();
    assert_eq!(store.mark_published("relay-b", &ids).await.unwrap(), 0);
    assert_eq!(store.mark_published("relay-a", &ids).await.unwrap(), 6);
    let now_ms = chrono::Utc::now().timestamp_millis();
    assert_eq!(store.pending_before(KIND, now_ms).await.unwrap(), 10);

    let rabbit = shared_rabbit().expect("a private RabbitMQ node starts");
    let config = BrokerConfig {
        prefix: format!("pg-{}", std::process::id()),
        ..BrokerConfig::new(rabbit.url())
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let mut handlers: Handlers = HashMap::new();
    handlers.insert(KIND.into(), Arc::new(Counted(runs.clone())));
    let outbox: Arc<dyn Outbox> = store.clone();
    let (stop, stopped) = watch::channel(false);
    // relay-b's claims expire only after 30 s, so the marked rows and the
    // four it holds wait; the new relay publishes the rows written now.
    let tasks = [
        tokio::spawn(Relay::new(outbox.clone(), &config).run(stopped.clone())),
        tokio::spawn(Arc::new(BrokerWorker::new(outbox, handlers, config, 2)).run(stopped)),
    ];
    let written = store.enqueue(job()).await.unwrap();
    let started = Instant::now();
    loop {
        let jobs = store.jobs(Some(JobState::Done), 100).await.unwrap();
        if jobs.iter().any(|job| job.id == written) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let stats = store.kind_stats(Duration::from_secs(60)).await.unwrap();
    let figures = stats.iter().find(|s| s.kind == KIND).unwrap();
    assert_eq!(figures.done_recently, 1);
    assert_eq!(figures.pending, 10);
    assert_eq!(figures.dead, 0);

    let _ = stop.send(true);
    for task in tasks {
        task.await.unwrap();
    }
}
