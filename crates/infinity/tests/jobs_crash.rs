//! Background jobs across real processes: a server killed with SIGKILL in
//! the middle of a job, `infinity worker` on its own, the `infinity jobs`
//! commands and the job gauges of `/metrics`.

mod process;

use std::path::Path;

use infinity_store::{JobQueue, JobState, NewJob};
use process::{
    jobs_command, open_store, visible_files, wait_for_job, Process, Server, SETTLE_BOUND,
};
use serde_json::json;

/// The slowest test photo to render, so its job can be caught running.
const BIG_PHOTO: &str = "scaledown-test.jpg";

/// Returns the variant files of `digest` in the data folder of `root`.
fn variant_files(root: &Path, digest: &str) -> Vec<String> {
    visible_files(
        &root
            .join("data/objects/media")
            .join(&digest[..2])
            .join(digest),
    )
}

fn digest_of(upload: &serde_json::Value) -> String {
    let url = upload["variants"][0]["url"].as_str().unwrap();
    url.split('/').nth(2).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_job_finishes_once_after_restart() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let args = ["--workers", "1", "--job-lease-seconds", "2"];
    let server = Server::start(root, &args, "first.log");
    let token = server.register("ada").await;
    let store = open_store(root).await;
    // Let the welcome e-mail go first, so the one worker is free for the
    // variants job and the kill lands while that job runs.
    wait_for_job(&store, "email.welcome done", |job| {
        job.kind == "email.welcome" && job.state == JobState::Done
    })
    .await;

    let upload = server.upload(&token, BIG_PHOTO).await;
    let id = upload["id"].as_i64().unwrap();
    let digest = digest_of(&upload);
    let running = wait_for_job(&store, "media.variants running", |job| {
        job.kind == "media.variants" && job.state != JobState::Queued
    })
    .await;
    assert_eq!(
        running.state,
        JobState::Running,
        "the render ended before the kill; a slower photo is needed"
    );
    assert_eq!(running.attempts, 1);
    server.process.kill();

    let after_kill = store.jobs(None, 100).await.unwrap();
    let job = after_kill.iter().find(|job| job.id == running.id).unwrap();
    assert_eq!(
        job.state,
        JobState::Running,
        "the killed process cannot finish it"
    );

    let restarted = Server::start(root, &args, "second.log");
    let upload = restarted.settled_upload(&token, id).await;
    assert_eq!(upload["status"], "ready", "{upload}");

    let done = wait_for_job(&store, "media.variants done", |job| {
        job.id == running.id && job.state == JobState::Done
    })
    .await;
    assert!(done.attempts >= 2, "attempts {}", done.attempts);
    assert_eq!(
        variant_files(root, &digest),
        ["v1-1280", "v1-160", "v1-640"]
    );
    assert_eq!(visible_files(&root.join("data/objects/media")).len(), 1);
    let outbox = visible_files(&root.join("data/outbox"));
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    let welcome = std::fs::read_to_string(root.join("data/outbox").join(&outbox[0])).unwrap();
    assert!(welcome.contains("To: ada@example.com"), "{welcome}");
    assert!(
        welcome.contains("Subject: Welcome to Infinity"),
        "{welcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_makes_variants() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let server = Server::start(root, &["--workers", "0"], "serve.log");
    assert!(server.process.banner.contains("serving http://"));
    let token = server.register("ada").await;
    let upload = server.upload(&token, "flower.jpg").await;
    let id = upload["id"].as_i64().unwrap();
    assert_eq!(upload["status"], "processing");

    let worker = Process::start(root, "worker", &["--workers", "1"], "worker.log");
    assert!(
        worker.banner.contains("worker: 1 jobs at once"),
        "{}",
        worker.banner
    );
    let upload = server.settled_upload(&token, id).await;
    assert_eq!(upload["status"], "ready", "{upload}");
    assert_eq!(upload["variants"][2]["width"], 160, "{upload}");
    assert_eq!(
        variant_files(root, &digest_of(&upload)),
        ["v1-1280", "v1-160", "v1-640"]
    );
    let outbox = visible_files(&root.join("data/outbox"));
    assert_eq!(
        outbox.len(),
        1,
        "the worker sent the welcome e-mail: {outbox:?}"
    );
}

#[tokio::test]
async fn worker_process_needs_a_worker() {
    let root = tempfile::tempdir().unwrap();
    let output = process::infinity(root.path())
        .args(["worker", "--workers", "0", "--data-dir"])
        .arg(root.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(error.contains("invalid --workers 0"), "{error}");
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_commands_repair_dead_jobs() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let server = Server::start(root, &["--workers", "1"], "serve.log");
    let store = open_store(root).await;
    let poison = || NewJob {
        kind: "nobody.handles".into(),
        payload: json!({}),
    };
    let retried = store.enqueue(poison()).await.unwrap();
    let discarded = store.enqueue(poison()).await.unwrap();
    for id in [retried, discarded] {
        wait_for_job(&store, "dead", |job| {
            job.id == id && job.state == JobState::Dead
        })
        .await;
    }

    // The gauges refresh every 5 s.
    let started = tokio::time::Instant::now();
    while !server
        .metrics()
        .await
        .contains("infinity_jobs{state=\"dead\"} 2")
    {
        assert!(
            started.elapsed() < SETTLE_BOUND,
            "no dead gauge of 2 in /metrics"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let metrics = server.metrics().await;
    assert!(
        metrics
            .contains("infinity_jobs_processed_total{kind=\"nobody.handles\",outcome=\"dead\"} 2"),
        "{metrics}"
    );
    // Stop the worker, so a retried job stays queued for the checks below.
    server.process.kill();

    let listed = jobs_command(root, &["list", "--state", "dead"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two jobs: {text}");
    assert!(lines[0].starts_with("id"), "{text}");
    for id in [retried, discarded] {
        let line = lines
            .iter()
            .find(|line| line.starts_with(&id.to_string()))
            .unwrap_or_else(|| panic!("job {id} not listed: {text}"));
        assert!(line.contains("nobody.handles"), "{line}");
        assert!(line.contains(" dead "), "{line}");
        assert!(line.contains("no handler for job kind"), "{line}");
    }

    let retry = jobs_command(root, &["retry", &retried.to_string()]);
    assert!(retry.status.success(), "{}", stderr(&retry));
    assert_eq!(stdout(&retry), format!("job {retried} queued again\n"));
    let again = jobs_command(root, &["retry", &retried.to_string()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains(&format!("job {retried} is not a dead job")));
    let not_dead = jobs_command(root, &["discard", &retried.to_string()]);
    assert_eq!(not_dead.status.code(), Some(1));

    let discard = jobs_command(root, &["discard", &discarded.to_string()]);
    assert!(discard.status.success(), "{}", stderr(&discard));
    assert_eq!(stdout(&discard), format!("job {discarded} discarded\n"));
    let gone = jobs_command(root, &["discard", &discarded.to_string()]);
    assert_eq!(gone.status.code(), Some(1));

    let queued = store.jobs(Some(JobState::Queued), 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, retried);
    assert_eq!(queued[0].attempts, 0);

    let counts = jobs_command(root, &["counts"]);
    assert!(counts.status.success());
    assert_eq!(
        stdout(&counts),
        "queued    1\npublished 0\nrunning   0\ndone      0\ndead      0\n"
    );

    let bad_state = jobs_command(root, &["list", "--state", "stuck"]);
    assert_eq!(bad_state.status.code(), Some(1));
    assert!(stderr(&bad_state).contains("invalid --state \"stuck\""));
}
