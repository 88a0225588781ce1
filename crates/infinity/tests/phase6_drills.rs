//! Phase-6 drills under `infinity load` traffic: an API node that runs no
//! jobs, two `infinity worker` processes consuming a private RabbitMQ node,
//! and SQLite in one data folder. Each drill prints its figures;
//! `bench/phase6.sh` runs them one at a time in release mode.
//!
//! - kill -9 a worker mid-job: the job completes in the other worker, once.
//! - stop RabbitMQ for 10 s: writes keep succeeding, every job arrives.
//! - a poison job: it ends in the dead-letter queue, the others complete.
//! - a burst of 1,000 uploads: login p99 against the p99 before the burst.
//! - upload-to-variants latency at a steady upload rate (a benchmark).
//!
//! The workers run at nice 19, standing in for a worker fleet on other
//! machines: on one machine they share the CPUs with the API node, and
//! nice keeps their rendering from taking CPU time that requests need.

mod process;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infinity_local::RabbitServer;
use infinity_store::{Id, JobQueue, JobRecord, JobState, NewUpload, Store};
use process::{infinity, open_store, visible_files, Server, TESTDATA};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Hang guard for jobs and uploads to settle.
const SETTLE: Duration = Duration::from_secs(300);

/// A small photo, so that each upload's in-request check is cheap.
const PHOTO: &str = "flower.jpg";

/// The node, the workers, the broker and the background load.
struct Fleet {
    root: TempDir,
    rabbit: RabbitServer,
    server: Server,
    workers: Vec<Child>,
    load: Option<Child>,
    broker_args: Vec<String>,
}

impl Fleet {
    async fn start(worker_count: usize) -> Self {
        Self::start_with(worker_count, false).await
    }

    /// Starts the fleet; with `jobs_in_node`, the node runs two workers of
    /// the embedded queue itself, as before phase 6, and RabbitMQ is idle.
    async fn start_with(worker_count: usize, jobs_in_node: bool) -> Self {
        let root = tempfile::tempdir().unwrap();
        // The drills log in far more often than the default limits allow.
        std::fs::write(
            root.path().join("infinity.toml"),
            "login_attempts_per_minute_per_account = 100000\n\
             login_attempts_per_minute_per_address = 100000\n",
        )
        .unwrap();
        let rabbit = tokio::task::spawn_blocking(RabbitServer::start)
            .await
            .unwrap()
            .expect("a private RabbitMQ node starts");
        let broker_args = vec![
            "--broker".to_string(),
            rabbit.url(),
            "--job-lease-seconds".to_string(),
            "3".to_string(),
            "--job-max-attempts".to_string(),
            "3".to_string(),
        ];
        let args: Vec<&str> = if jobs_in_node {
            vec!["--workers", "2"]
        } else {
            let mut args = vec!["--workers", "0"];
            args.extend(broker_args.iter().map(String::as_str));
            args
        };
        let server = Server::start(root.path(), &args, "serve.log");
        let mut fleet = Self {
            root,
            rabbit,
            server,
            workers: Vec::new(),
            load: None,
            broker_args,
        };
        for index in 0..worker_count {
            let worker = fleet.start_worker(index);
            fleet.workers.push(worker);
        }
        fleet
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    /// Starts `nice -n 19 infinity worker` with two jobs at once.
    fn start_worker(&self, index: usize) -> Child {
        let log = std::fs::File::create(self.root().join(format!("worker-{index}.log"))).unwrap();
        let mut command = Command::new("nice");
        command
            .args(["-n", "19", env!("CARGO_BIN_EXE_infinity"), "worker"])
            .arg("--data-dir")
            .arg(self.root().join("data"))
            .args(["--workers", "2"])
            .args(&self.broker_args)
            .current_dir(self.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, _) in std::env::vars() {
            if key.starts_with("INFINITY_") {
                command.env_remove(key);
            }
        }
        command.spawn().expect("start infinity worker")
    }

    /// Starts `infinity load` against the node at `rate` requests a second,
    /// after it has seeded a small population.
    fn start_load(&mut self, rate: u32) {
        let log = std::fs::File::create(self.root().join("load.log")).unwrap();
        let child = infinity(self.root())
            .args(["load", "--target", &self.server.base])
            .args(["--users", "20", "--articles", "40", "--seed", "6"])
            .args(["--rate", &rate.to_string(), "--duration", "30m", "--quiet"])
            .arg("--state")
            .arg(self.root().join("load-state.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start infinity load");
        self.load = Some(child);
    }

    fn outbox_files(&self) -> Vec<String> {
        visible_files(&self.root().join("data/outbox"))
    }

    /// Stops the load, then waits until every job in the table is done or
    /// dead.
    async fn wait_for_quiet_queue(&mut self) -> Vec<JobRecord> {
        if let Some(mut load) = self.load.take() {
            let _ = load.kill();
            let _ = load.wait();
        }
        let store = open_store(self.root()).await;
        let started = Instant::now();
        loop {
            let jobs = store.jobs(None, 100_000).await.unwrap();
            let pending = jobs
                .iter()
                .filter(|job| !matches!(job.state, JobState::Done | JobState::Dead))
                .count();
            if pending == 0 {
                return jobs;
            }
            assert!(
                started.elapsed() < SETTLE,
                "{pending} jobs still pending after {SETTLE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain(self.load.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Returns the `q` quantile (0 to 1) of `samples`, in milliseconds.
fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[index].as_secs_f64() * 1000.0
}

/// Logs `name` in one time after another, `count` times or, with `until`,
/// until that task ends, and returns each latency.
async fn login_latencies(
    server: &Server,
    name: &str,
    count: usize,
    until: Option<&tokio::task::JoinHandle<Vec<i64>>>,
) -> Vec<Duration> {
    let body = json!({"user": {"email": format!("{name}@example.com"), "password": format!("password-{name}")}});
    let mut latencies = Vec::with_capacity(count);
    loop {
        let more = match until {
            Some(task) => !task.is_finished(),
            None => latencies.len() < count,
        };
        if !more {
            break;
        }
        let started = Instant::now();
        let response = server
            .client
            .post(format!("{}/api/users/login", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login {name}");
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies
}

/// Uploads `bytes` as `PHOTO` and returns the upload's id.
async fn upload_bytes(client: &reqwest::Client, base: &str, token: &str, bytes: &[u8]) -> i64 {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(PHOTO);
    let response = client
        .post(format!("{base}/api/uploads"))
        .header("Authorization", format!("Token {token}"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "upload");
    let reply: Value = response.json().await.unwrap();
    reply["upload"]["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a drill: run by bench/phase6.sh"]
async fn kill_9_worker_mid_job() {
    let mut fleet = Fleet::start(2).await;
    fleet.start_load(20);
    let token = fleet.server.register("ada").await;
    let store = open_store(fleet.root()).await;

    let mut uploads = Vec::new();
    for _ in 0..20 {
        uploads.push(fleet.server.upload(&token, "scaledown-test.jpg").await);
    }
    // Kill the worker process that runs a variant job now.
    let running = process::wait_for_job(&store, "running media.variants", |job| {
        job.state == JobState::Running && job.kind == "media.variants"
    })
    .await;
    let owner = running.lease_owner.clone().unwrap();
    let pid: u32 = owner.split('-').nth(1).unwrap().parse().unwrap();
    let index = fleet
        .workers
        .iter()
        .position(|child| child_pid_matches(child, pid))
        .expect("the lease names a worker process of this fleet");
    let mut killed = fleet.workers.remove(index);
    killed.kill().unwrap();
    killed.wait().unwrap();

    for upload in &uploads {
        let id = upload["id"].as_i64().unwrap();
        let settled = fleet.server.settled_upload(&token, id).await;
        assert_eq!(settled["status"], "ready", "upload {id}");
    }
    let jobs = fleet.wait_for_quiet_queue().await;
    let taken_over = jobs.iter().find(|job| job.id == running.id).unwrap();
    println!(
        "kill_9_worker_mid_job: job {} done after {} attempts, {} uploads ready",
        taken_over.id,
        taken_over.attempts,
        uploads.len()
    );
    assert_eq!(taken_over.state, JobState::Done);
    assert_eq!(taken_over.attempts, 2, "one run per worker");
    let variants = jobs
        .iter()
        .filter(|job| job.kind == "media.variants" && job.state == JobState::Done)
        .count();
    assert_eq!(variants, uploads.len());
}

/// Returns whether `child` is process `pid`. A worker's lease owner is
/// `worker-PID-RANDOM`, and `nice` executes the worker in place, so the
/// child's pid is the worker's.
fn child_pid_matches(child: &Child, pid: u32) -> bool {
    child.id() == pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a drill: run by bench/phase6.sh"]
async fn rabbitmq_down_for_ten_seconds() {
    let mut fleet = Fleet::start(2).await;
    fleet.start_load(20);
    fleet.server.register("before").await;

    let rabbit_stopped = Instant::now();
    tokio::task::block_in_place(|| fleet.rabbit.kill().unwrap());
    let mut registered = 1;
    while rabbit_stopped.elapsed() < Duration::from_secs(10) {
        fleet.server.register(&format!("during{registered}")).await;
        registered += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::block_in_place(|| fleet.rabbit.restart().unwrap());
    let restarted = Instant::now();

    let jobs = fleet.wait_for_quiet_queue().await;
    let caught_up = restarted.elapsed();
    let welcome = jobs
        .iter()
        .filter(|job| job.kind == "email.welcome")
        .count();
    let mail = jobs
        .iter()
        .filter(|job| job.kind.starts_with("email."))
        .count();
    println!(
        "rabbitmq_down_for_ten_seconds: {registered} registrations succeeded, {} jobs, every one done {:.1} s after the restart, {} e-mails",
        jobs.len(),
        caught_up.as_secs_f64(),
        fleet.outbox_files().len()
    );
    assert!(jobs.iter().all(|job| job.state == JobState::Done));
    assert!(welcome >= registered, "{welcome} welcome jobs");
    assert_eq!(
        fleet.outbox_files().len(),
        mail,
        "one e-mail per e-mail job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a drill: run by bench/phase6.sh"]
async fn poison_job_ends_dead() {
    let mut fleet = Fleet::start(2).await;
    fleet.start_load(20);
    let token = fleet.server.register("ada").await;
    let store = open_store(fleet.root()).await;

    // An upload whose original is a folder: every read of it fails with an
    // error worth retrying, so the job fails on every attempt.
    let digest = "ab".repeat(32);
    let original = fleet.root().join("data/objects/originals/ab").join(&digest);
    std::fs::create_dir_all(&original).unwrap();
    let user = store.user_id_by_username("ada").await.unwrap().unwrap();
    let poison_upload = store.next_id(0);
    store
        .create_upload(
            NewUpload {
                id: poison_upload,
                user_id: user,
                source_digest: digest,
                format: "JPEG".into(),
                width: 10,
                height: 10,
                animated: false,
            },
            vec![infinity_jobs::handlers::make_variants(poison_upload)],
        )
        .await
        .unwrap();
    let mut uploads = Vec::new();
    for _ in 0..20 {
        uploads.push(fleet.server.upload(&token, PHOTO).await);
    }
    for upload in &uploads {
        let id = upload["id"].as_i64().unwrap();
        let settled = fleet.server.settled_upload(&token, id).await;
        assert_eq!(settled["status"], "ready", "upload {id}");
    }

    let jobs = fleet.wait_for_quiet_queue().await;
    let poison = poison_job(&jobs, poison_upload);
    println!(
        "poison_job_ends_dead: poison job {} dead after {} attempts ({}), {} other uploads ready",
        poison.id,
        poison.attempts,
        poison.last_error.clone().unwrap_or_default(),
        uploads.len()
    );
    assert_eq!(poison.state, JobState::Dead);
    assert_eq!(poison.attempts, 3);

    let listing = process::jobs_command(
        fleet.root(),
        &["--broker", &fleet.rabbit.url(), "list", "--state", "dead"],
    );
    let stdout = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "{stdout}");
    assert!(stdout.contains(&poison.id.to_string()), "{stdout}");
    let counts = process::jobs_command(fleet.root(), &["--broker", &fleet.rabbit.url(), "counts"]);
    let stdout = String::from_utf8_lossy(&counts.stdout);
    assert!(stdout.contains("1 dead letters"), "{stdout}");
    let discard = process::jobs_command(
        fleet.root(),
        &[
            "--broker",
            &fleet.rabbit.url(),
            "discard",
            &poison.id.to_string(),
        ],
    );
    assert!(
        discard.status.success(),
        "{}",
        String::from_utf8_lossy(&discard.stderr)
    );
    let counts = process::jobs_command(fleet.root(), &["--broker", &fleet.rabbit.url(), "counts"]);
    let stdout = String::from_utf8_lossy(&counts.stdout);
    assert!(stdout.contains("0 dead letters"), "{stdout}");
}

fn poison_job(jobs: &[JobRecord], upload: Id) -> JobRecord {
    jobs.iter()
        .find(|job| job.payload == json!({ "upload_id": upload }))
        .cloned()
        .expect("the poison job exists")
}

/// Sends 1,000 uploads as fast as the node answers, and returns the login
/// p99 before and during the burst, in milliseconds. Prints the figures
/// under `name`.
async fn upload_burst(mut fleet: Fleet, name: &str) -> (f64, f64) {
    fleet.start_load(20);
    let token = fleet.server.register("uploader").await;
    for user in ["grace", "linus"] {
        fleet.server.register(user).await;
    }
    // Let the load generator seed its population first.
    tokio::time::sleep(Duration::from_secs(20)).await;

    let mut before = login_latencies(&fleet.server, "grace", 200, None).await;

    let bytes = std::fs::read(Path::new(TESTDATA).join("images").join(PHOTO)).unwrap();
    let client = fleet.server.client.clone();
    let base = fleet.server.base.clone();
    let burst_started = Instant::now();
    let burst = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..1000 {
            ids.push(upload_bytes(&client, &base, &token, &bytes).await);
        }
        ids
    });
    let mut during = login_latencies(&fleet.server, "linus", 0, Some(&burst)).await;
    let ids = burst.await.unwrap();
    let burst_seconds = burst_started.elapsed().as_secs_f64();
    assert_eq!(ids.len(), 1000);

    let p99_before = quantile_ms(&mut before, 0.99);
    let p99_during = quantile_ms(&mut during, 0.99);
    println!(
        "{name}: 1000 uploads in {burst_seconds:.1} s; {} logins before, {} during; login p50 {:.1} ms -> {:.1} ms, p99 {p99_before:.1} ms -> {p99_during:.1} ms ({:+.1} %)",
        before.len(),
        during.len(),
        quantile_ms(&mut before, 0.5),
        quantile_ms(&mut during, 0.5),
        (p99_during / p99_before - 1.0) * 100.0
    );
    let drained = Instant::now();
    fleet.wait_for_quiet_queue().await;
    println!(
        "{name}: the variants were done {:.1} s after the burst",
        drained.elapsed().as_secs_f64()
    );
    (p99_before, p99_during)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a drill: run by bench/phase6.sh"]
async fn upload_burst_keeps_logins_fast() {
    let fleet = Fleet::start(2).await;
    let (p99_before, p99_during) = upload_burst(fleet, "upload_burst_keeps_logins_fast").await;
    assert!(
        p99_during <= p99_before * 1.10,
        "login p99 rose from {p99_before:.1} ms to {p99_during:.1} ms"
    );
}

/// The same burst with the jobs run by the node itself, for comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a drill: run by bench/phase6.sh"]
async fn upload_burst_with_jobs_in_the_node() {
    let fleet = Fleet::start_with(0, true).await;
    upload_burst(fleet, "upload_burst_with_jobs_in_the_node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by bench/jobs.sh"]
async fn upload_to_variants_latency() {
    let fleet = Fleet::start(2).await;
    let token = fleet.server.register("steady").await;
    // NOTE: this benchmark runs without background load, so that the
    // latency is the pipeline's own: relay, broker, worker and render.
    let rate = 4.0;
    let count = 120;
    let interval = Duration::from_secs_f64(1.0 / rate);

    let mut pending: Vec<(i64, Instant)> = Vec::new();
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut sent = 0;
    while latencies.len() < count {
        if sent < count && started.elapsed() >= interval * sent as u32 {
            let upload = fleet.server.upload(&token, PHOTO).await;
            pending.push((upload["id"].as_i64().unwrap(), Instant::now()));
            sent += 1;
        }
        let mut still = Vec::new();
        for (id, at) in pending.drain(..) {
            let upload = fleet.server.upload_status(&token, id).await;
            if upload["status"] == "processing" {
                still.push((id, at));
            } else {
                latencies.push(at.elapsed());
            }
        }
        pending = still;
        assert!(started.elapsed() < SETTLE, "uploads did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "upload_to_variants_latency: {count} uploads at {rate}/s, p50 {:.0} ms, p99 {:.0} ms",
        quantile_ms(&mut latencies, 0.5),
        quantile_ms(&mut latencies, 0.99)
    );
}
