//! `infinity serve --broker` and `infinity jobs --broker` against a private
//! RabbitMQ node: a job that fails for good is dead in the table and in the
//! dead-letter queue, and `infinity jobs` lists, retries and discards it.

mod process;

use std::time::{Duration, Instant};

use infinity_local::RabbitServer;
use infinity_store::{Id, JobQueue, JobState, NewJob};
use process::{jobs_command, open_store, Server};
use serde_json::json;

/// Hang guard for the job to reach a state.
const SETTLE: Duration = Duration::from_secs(60);

async fn wait_for_state(root: &std::path::Path, id: Id, state: JobState, attempts: u32) {
    let store = open_store(root).await;
    let started = Instant::now();
    loop {
        let jobs = store.jobs(None, 100).await.unwrap();
        let job = jobs
            .iter()
            .find(|job| job.id == id)
            .expect("the job exists");
        if job.state == state && job.attempts == attempts {
            return;
        }
        assert!(
            started.elapsed() < SETTLE,
            "job {id} is {:?} after {} attempts, not {state:?} after {attempts}",
            job.state,
            job.attempts
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `infinity jobs counts` until it reports `expected` dead letters. A
/// worker marks the row dead before it publishes the dead letter, so the
/// letter may arrive a moment after the row changes.
async fn wait_for_dead_letters(root: &std::path::Path, url: &str, expected: u32) {
    let line = format!("{expected} dead letters");
    let started = Instant::now();
    loop {
        let counts = output(root, url, &["counts"]);
        if counts.contains(&line) {
            return;
        }
        assert!(started.elapsed() < SETTLE, "{counts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn output(root: &std::path::Path, url: &str, args: &[&str]) -> String {
    let mut all = vec!["--broker", url];
    all.extend_from_slice(args);
    let result = jobs_command(root, &all);
    assert!(
        result.status.success(),
        "infinity jobs {args:?}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8_lossy(&result.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_command_lists_retries_and_discards() {
    let rabbit = tokio::task::spawn_blocking(RabbitServer::start)
        .await
        .unwrap()
        .expect("a private RabbitMQ node starts");
    let url = rabbit.url();
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(
        root.path(),
        &["--workers", "1", "--broker", &url],
        "serve.log",
    );
    assert!(
        server.process.banner.contains("serving"),
        "{}",
        server.process.banner
    );

    // No handler exists for this kind, so its first run fails for good.
    let store = open_store(root.path()).await;
    let id = store
        .enqueue(NewJob {
            kind: "test.unknown".into(),
            payload: json!({}),
        })
        .await
        .unwrap();
    wait_for_state(root.path(), id, JobState::Dead, 1).await;

    let listing = output(root.path(), &url, &["list", "--state", "dead"]);
    assert!(listing.contains(&id.to_string()), "{listing}");
    assert!(listing.contains("no handler for job kind"), "{listing}");
    wait_for_dead_letters(root.path(), &url, 1).await;

    let retried = output(root.path(), &url, &["retry", &id.to_string()]);
    assert!(retried.contains("queued again"), "{retried}");
    // Retried with its attempts reset, it fails again after one attempt.
    wait_for_state(root.path(), id, JobState::Dead, 1).await;
    wait_for_dead_letters(root.path(), &url, 1).await;

    let discarded = output(root.path(), &url, &["discard", &id.to_string()]);
    assert!(discarded.contains("discarded"), "{discarded}");
    let counts = output(root.path(), &url, &["counts"]);
    assert!(counts.contains("0 dead letters"), "{counts}");
    let listing = output(root.path(), &url, &["list"]);
    assert!(!listing.contains(&id.to_string()), "{listing}");
}
