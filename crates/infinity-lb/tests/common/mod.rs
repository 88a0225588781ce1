//! Test harness: small axum backends in the test process, and the
//! `infinity-lb` binary as a child process on loopback ports.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a balancer may take to print its "serving" line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Shared state of one test backend.
#[derive(Default)]
pub struct BackendState {
    /// Requests other than `/readyz`.
    pub requests: AtomicUsize,
    /// `/readyz` returns 503 while this is set.
    pub not_ready: AtomicBool,
    /// Number of coming `/readyz` checks that return 200 regardless of
    /// `not_ready`.
    pub succeed_next: AtomicUsize,
    /// Number of coming `/readyz` checks that return 503 regardless of
    /// `not_ready`, once `succeed_next` is used up.
    pub fail_next: AtomicUsize,
    pub readyz_ok: AtomicUsize,
    pub readyz_failed: AtomicUsize,
    /// Delay in milliseconds before responding to any request but `/readyz`.
    pub delay_ms: AtomicUsize,
}

/// An axum server on 127.0.0.1 that serves `/readyz` and echoes every
/// other request as JSON.
pub struct TestBackend {
    pub name: String,
    pub address: SocketAddr,
    pub state: Arc<BackendState>,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let state = Arc::new(BackendState::default());
        let router = Router::new()
            .route("/readyz", get(readyz))
            .fallback(echo)
            .with_state((name.to_string(), Arc::clone(&state)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        TestBackend {
            name: name.to_string(),
            address,
            state,
        }
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.state.not_ready.store(!ready, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        let millis = usize::try_from(delay.as_millis()).unwrap();
        self.state.delay_ms.store(millis, Ordering::SeqCst);
    }
}

type BackendContext = (String, Arc<BackendState>);

/// Decrements `counter` if it is positive, and returns whether it was.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
            count.checked_sub(1)
        })
        .is_ok()
}

async fn readyz(State((_, state)): State<BackendContext>) -> StatusCode {
    let fail = if take_one(&state.succeed_next) {
        false
    } else {
        take_one(&state.fail_next) || state.not_ready.load(Ordering::SeqCst)
    };
    if fail {
        state.readyz_failed.fetch_add(1, Ordering::SeqCst);
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        state.readyz_ok.fetch_add(1, Ordering::SeqCst);
        StatusCode::OK
    }
}

async fn echo(
    State((name, state)): State<BackendContext>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(delay).unwrap())).await;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_string())
    };
    let echoed = serde_json::json!({
        "backend": name,
        "method": method.as_str(),
        "path": uri.path(),
        "body": String::from_utf8_lossy(&body),
        "x_forwarded_for": header("x-forwarded-for"),
        "x_forwarded_proto": header("x-forwarded-proto"),
        "x_request_id": header("x-request-id"),
    });
    ([("x-backend", name)], Json(echoed)).into_response()
}

/// Returns a port that was free a moment ago. Another process could take it
/// before the balancer binds it, which the balancer reports as a start-up
/// error.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Returns the address of a loopback port with no listener, so connecting
/// to it is refused.
pub fn closed_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The `infinity-lb` binary running as a child process.
pub struct Balancer {
    child: Child,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// The line the balancer printed once it was ready.
    pub serving_line: String,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Balancer {
    /// Starts the balancer with `args` plus fresh `--listen` and
    /// `--metrics-listen` ports, and waits for its "serving" line.
    pub async fn start(args: &[String]) -> Balancer {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log_dir = tempfile::tempdir().unwrap();
        let log_path = log_dir.path().join("lb.log");
        let log_file = std::fs::File::create(&log_path).unwrap();

        let mut child = Command::new(env!("CARGO_BIN_EXE_infinity-lb"))
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--metrics-listen")
            .arg(metrics_listen.to_string())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first_line = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let serving_line = match first_line {
            Ok(Ok(Some(line))) => line,
            other => panic!(
                "balancer printed no serving line ({other:?}). Its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        };
        // Keep reading so that a later write to stdout cannot block.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        Balancer {
            child,
            listen,
            metrics_listen,
            serving_line,
            log_path,
            _log_dir: log_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("balancer is running")
    }

    /// Sends SIGTERM to the balancer process.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit and returns its exit status.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("balancer did not exit in time")
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Polls the balancer's log until it contains `text`.
    pub async fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "log has no {text:?} after 5 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Returns the text served at /metrics.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics_listen);
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Returns the value of one metric series, or `None` when no series has
    /// exactly these labels.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Polls a metric until it has the expected value.
    pub async fn wait_for_metric(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let value = self.metric(name, labels).await;
            if value == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {value:?}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("balancer log:\n{}", self.log());
        }
    }
}

/// Parses one series from Prometheus text format.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let parsed: Vec<(String, String)> = series_labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap();
                (key.to_string(), value.trim_matches('"').to_string())
            })
            .collect();
        let matches = parsed.len() == labels.len()
            && labels
                .iter()
                .all(|(key, value)| parsed.iter().any(|(k, v)| k == key && v == value));
        if matches {
            return Some(value.parse().unwrap());
        }
    }
    None
}

/// Sends GETs one after another and counts responses per `x-backend`.
pub async fn count_backends(
    client: &reqwest::Client,
    url: &str,
    requests: usize,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..requests {
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {url}");
        let backend = response.headers()["x-backend"]
            .to_str()
            .unwrap()
            .to_string();
        *counts.entry(backend).or_default() += 1;
    }
    counts
}

/// Polls `condition` every 5 ms until it holds. Returns the time it took.
pub async fn wait_until(what: &str, timeout: Duration, condition: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// Replaces a file atomically: write a sibling, then rename it over.
pub fn write_atomically(path: &Path, contents: &str) {
    let staging = path.with_extension("tmp");
    std::fs::write(&staging, contents).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// A response read from a [`KeepAliveConnection`].
pub struct RawResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// One HTTP/1.1 connection that sends requests one after another, so a
/// test can check that the balancer keeps it open.
pub struct KeepAliveConnection {
    stream: BufReader<TcpStream>,
}

impl KeepAliveConnection {
    pub async fn open(address: SocketAddr) -> KeepAliveConnection {
        let stream = TcpStream::connect(address).await.unwrap();
        KeepAliveConnection {
            stream: BufReader::new(stream),
        }
    }

    /// Sends a GET and reads the response, which must have a
    /// Content-Length. Fails if the balancer closed the connection.
    pub async fn get(&mut self, path: &str) -> std::io::Result<RawResponse> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: lb.test\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await?;

        let mut status_line = String::new();
        if self.stream.read_line(&mut status_line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the response",
            ));
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("invalid status line {status_line:?}"));

        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        let length: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok(RawResponse {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        })
    }
}
