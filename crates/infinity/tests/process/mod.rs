//! `infinity` as a child process on a temporary data folder, with a small
//! HTTP client for the calls the job tests need.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use infinity_store::{JobRecord, SqliteOptions, SqliteStore};
use serde_json::{json, Value};

pub const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata");

/// Hang guard for anything a test waits for: a job, an upload, an e-mail.
pub const SETTLE_BOUND: Duration = Duration::from_secs(300);

/// Returns `infinity` with no `INFINITY_*` variables, run in `dir` so that
/// no `infinity.toml` of the developer's is read.
pub fn infinity(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infinity"));
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("INFINITY_") {
            command.env_remove(key);
        }
    }
    command
}

/// Formats a finished command's exit code and output for an assertion
/// message.
pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Returns a loopback address with a port that was free a moment ago.
pub fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Runs `infinity jobs --data-dir ROOT/data ARGS` to its end.
// NOTE: the data folder goes before the subcommand, because `infinity jobs
// list --data-dir DIR` is rejected: the flags belong to `jobs`, not to `list`.
pub fn jobs_command(root: &Path, args: &[&str]) -> Output {
    infinity(root)
        .arg("jobs")
        .arg("--data-dir")
        .arg(root.join("data"))
        .args(args)
        .output()
        .expect("run infinity jobs")
}

/// A running `infinity serve` or `infinity worker`, killed when dropped.
pub struct Process {
    pub child: Child,
    /// The first line it printed.
    pub banner: String,
    /// Kept open so that later prints do not fail with a broken pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Process {
    /// Starts `infinity ROLE --data-dir ROOT/data ARGS`, logging to
    /// `ROOT/LOG_NAME`, and returns once it has printed its first line.
    pub fn start(root: &Path, role: &str, args: &[&str], log_name: &str) -> Self {
        let log = File::create(root.join(log_name)).unwrap();
        let mut child = infinity(root)
            .arg(role)
            .arg("--data-dir")
            .arg(root.join("data"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start infinity");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        stdout.read_line(&mut banner).unwrap();
        assert!(
            !banner.is_empty(),
            "infinity {role} stopped at start-up; see {}",
            root.join(log_name).display()
        );
        Self {
            child,
            banner: banner.trim_end().to_string(),
            _stdout: stdout,
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `infinity serve` and its address.
pub struct Server {
    pub process: Process,
    pub root: PathBuf,
    pub base: String,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts `infinity serve` on a free loopback port with the data folder
    /// `root/data`.
    pub fn start(root: &Path, args: &[&str], log_name: &str) -> Self {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let process = Process::start(root, "serve", &all, log_name);
        // The banner's first line reads `Infinity VERSION serving http://ADDR/api`.
        let url = process
            .banner
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in the banner {:?}", process.banner));
        let base = url.trim_end_matches("/api").to_string();
        Self {
            process,
            root: root.to_path_buf(),
            base,
            client: reqwest::Client::new(),
        }
    }

    /// Registers `name` with the e-mail address `name@example.com` and
    /// returns the token.
    pub async fn register(&self, name: &str) -> String {
        let body = json!({"user": {"username": name, "email": format!("{name}@example.com"), "password": format!("password-{name}")}});
        let response = self
            .client
            .post(format!("{}/api/users", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "register {name}");
        let reply: Value = response.json().await.unwrap();
        reply["user"]["token"].as_str().unwrap().to_string()
    }

    /// Makes the user of `token` follow `username`.
    pub async fn follow(&self, token: &str, username: &str) {
        let response = self
            .client
            .post(format!("{}/api/profiles/{username}/follow", self.base))
            .header("Authorization", format!("Token {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "follow {username}");
    }

    /// Uploads `images/NAME` from the test data and returns the upload.
    pub async fn upload(&self, token: &str, name: &str) -> Value {
        let bytes = std::fs::read(Path::new(TESTDATA).join("images").join(name)).unwrap();
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        let response = self
            .client
            .post(format!("{}/api/uploads", self.base))
            .header("Authorization", format!("Token {token}"))
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "upload {name}");
        let reply: Value = response.json().await.unwrap();
        reply["upload"].clone()
    }

    /// Returns `GET /api/uploads/{id}`'s upload.
    pub async fn upload_status(&self, token: &str, id: i64) -> Value {
        let response = self
            .client
            .get(format!("{}/api/uploads/{id}", self.base))
            .header("Authorization", format!("Token {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "upload {id}");
        let reply: Value = response.json().await.unwrap();
        reply["upload"].clone()
    }

    /// Polls upload `id` until it leaves `processing` and returns it.
    pub async fn settled_upload(&self, token: &str, id: i64) -> Value {
        let started = tokio::time::Instant::now();
        loop {
            let upload = self.upload_status(token, id).await;
            if upload["status"] != "processing" {
                return upload;
            }
            assert!(
                started.elapsed() < SETTLE_BOUND,
                "upload {id} still processing after {SETTLE_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Returns the text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}

/// Opens the database of `root/data` beside the running processes, as
/// `infinity jobs` does.
pub async fn open_store(root: &Path) -> SqliteStore {
    SqliteStore::open(&root.join("data/infinity.db"), SqliteOptions::default())
        .await
        .expect("open the server's database")
}

/// Polls the queue until `find` picks a job out of all jobs, and returns it.
pub async fn wait_for_job(
    store: &impl infinity_store::JobQueue,
    what: &str,
    find: impl Fn(&JobRecord) -> bool,
) -> JobRecord {
    let started = tokio::time::Instant::now();
    loop {
        let jobs = store.jobs(None, 1000).await.unwrap();
        if let Some(job) = jobs.into_iter().find(|job| find(job)) {
            return job;
        }
        assert!(
            started.elapsed() < SETTLE_BOUND,
            "no job {what} after {SETTLE_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Lists the names of the files in `folder` that do not start with a dot.
/// The object store's and the outbox's temporary files start with one.
pub fn visible_files(folder: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}
