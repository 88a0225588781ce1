//! `infinity serve` as a process: the banner, start-up errors, graceful
//! shutdown on SIGTERM and data that outlives a restart.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Returns `infinity` with a clean environment, run in `dir` so that no
/// `infinity.toml` of the developer's is read.
fn infinity(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infinity"));
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("INFINITY_") {
            command.env_remove(key);
        }
    }
    command
}

/// A running server and the lines of its start-up banner.
struct Server {
    child: Child,
    address: String,
    banner: Vec<String>,
}

impl Server {
    /// Starts `infinity serve` on a free loopback port, with `root/data` as
    /// its data folder and its log in `root/serve.log`.
    fn start(root: &Path) -> Self {
        let data = root.join("data");
        let log = File::create(root.join("serve.log")).unwrap();
        let mut child = infinity(root)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start infinity");

        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // The banner ends with the tiers, which may take more than one line.
        let mut banner: Vec<String> = Vec::new();
        while !banner.iter().any(|line| line.contains("tiers")) {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                panic!("infinity stopped during start-up after printing {banner:?}");
            }
            banner.push(line.trim_end().to_string());
        }
        // Keep reading, so that a later line on standard output cannot fail.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));

        let url = banner[0]
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in the banner: {banner:?}"));
        let address = url
            .trim_start_matches("http://")
            .trim_end_matches("/api")
            .to_string();
        Self {
            child,
            address,
            banner,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn register(server: &Server, name: &str) -> Value {
    let body = json!({"user": {"username": name, "email": format!("{name}@example.com"), "password": "password-1"}});
    let response = reqwest::Client::new()
        .post(server.url("/api/users"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn login(server: &Server, name: &str) -> reqwest::StatusCode {
    let body = json!({"user": {"email": format!("{name}@example.com"), "password": "password-1"}});
    reqwest::Client::new()
        .post(server.url("/api/users/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

/// Runs `infinity` with `args` and environment `env`, expecting it to stop
/// at start-up. Returns the exit status and standard error.
fn fails(args: &[&str], env: &[(&str, &str)], files: &[(&str, &str)]) -> (ExitStatus, String) {
    let root = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(root.path().join(name), text).unwrap();
    }
    let mut command = infinity(root.path());
    command.args(args).args(["--data-dir", "data"]);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(
        output.stdout.is_empty(),
        "printed a banner: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    (output.status, String::from_utf8(output.stderr).unwrap())
}

#[tokio::test]
async fn banner_names_url_data_engine() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path());
    assert!(server.banner[0].contains(&format!("http://{}/api", server.address)));
    assert!(server.banner[1].contains("data folder"));
    assert!(server.banner[1].contains(&root.path().join("data").display().to_string()));
    let tiers = server.banner[2..].join(" ");
    assert!(tiers.contains("database sqlite"), "{:?}", server.banner);
    assert!(root.path().join("data/infinity.db").exists());

    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn bad_listen_flag_stops_startup() {
    let (status, stderr) = fails(&["serve", "--listen", "nowhere"], &[], &[]);
    assert!(!status.success());
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("--listen"), "{stderr}");
    assert!(first.contains("nowhere"), "{stderr}");
}

#[test]
fn bad_listen_env_stops_startup() {
    let (status, stderr) = fails(&["serve"], &[("INFINITY_LISTEN", "localhost:port")], &[]);
    assert!(!status.success());
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("listen"), "{stderr}");
    assert!(first.contains("localhost:port"), "{stderr}");
}

#[test]
fn bad_config_values_stop_startup() {
    let cases = [
        ("listen = \"nowhere\"\n", "listen"),
        ("cache_ttl_seconds = 0\n", "cache_ttl_seconds"),
        ("session_days = \"soon\"\n", "session_days"),
        (
            "login_attempts_per_minute_per_account = -3\n",
            "login_attempts_per_minute_per_account",
        ),
        ("lisen = \"127.0.0.1:1\"\n", "lisen"),
        ("listen = \n", "infinity.toml"),
    ];
    for (text, setting) in cases {
        let (status, stderr) = fails(
            &["serve", "--config", "infinity.toml"],
            &[],
            &[("infinity.toml", text)],
        );
        assert!(!status.success(), "{text:?} was accepted");
        assert_eq!(stderr.trim().lines().count(), 1, "{text:?}: {stderr}");
        assert!(stderr.contains(setting), "{text:?}: {stderr}");
    }
}

#[test]
fn missing_config_file_stops_startup() {
    let (status, stderr) = fails(&["serve", "--config", "absent.toml"], &[], &[]);
    assert!(!status.success());
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

/// Sends the headers of a registration that expects `100 Continue`, and
/// waits for it: the server has then parsed the request and is reading the
/// body. Returns the stream and the body still to send.
async fn start_registration(address: &str, name: &str) -> (TcpStream, String) {
    let body = json!({"user": {"username": name, "email": format!("{name}@example.com"), "password": "password-1"}})
        .to_string();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /api/users HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 64];
    let read = stream.read(&mut interim).await.unwrap();
    let interim = String::from_utf8_lossy(&interim[..read]);
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "no 100 Continue: {interim:?}"
    );
    (stream, body)
}

/// Sends the rest of a request and returns the final status line.
async fn finish_request(mut stream: TcpStream, body: String) -> String {
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path());
    let mut in_flight = Vec::new();
    for n in 0..3 {
        in_flight.push(start_registration(&server.address, &format!("late{n}")).await);
    }

    server.terminate();
    let mut statuses = Vec::new();
    for (stream, body) in in_flight {
        statuses.push(finish_request(stream, body).await);
    }
    for status in &statuses {
        assert_eq!(status, "HTTP/1.1 201 Created");
    }
    let exit = server.wait();
    assert_eq!(exit.code(), Some(0), "log: {}", read_log(&root));

    // The registrations committed before the process stopped.
    let again = Server::start(root.path());
    for n in 0..3 {
        assert_eq!(login(&again, &format!("late{n}")).await, 200);
    }
}

#[tokio::test]
async fn data_survives_restart() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path());
    let user = register(&server, "keeper").await;
    assert_eq!(user["user"]["username"], "keeper");
    server.terminate();
    assert_eq!(server.wait().code(), Some(0));

    let again = Server::start(root.path());
    assert_eq!(login(&again, "keeper").await, 200);
    let profile: Value = reqwest::get(again.url("/api/profiles/keeper"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(profile["profile"]["username"], "keeper");
    let token = user["user"]["token"].as_str().unwrap();
    let me = reqwest::Client::new()
        .get(again.url("/api/user"))
        .header("Authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "sessions are stored in the database");
}

fn read_log(root: &TempDir) -> String {
    std::fs::read_to_string(root.path().join("serve.log")).unwrap_or_default()
}
