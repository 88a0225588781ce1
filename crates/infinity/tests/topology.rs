//! `infinity up`, `status` and `down` on the example topologies in
//! `examples/`: the API answers through the printed URL, a killed node or
//! balancer comes back, and `down` leaves no process, port or PostgreSQL
//! folder behind. Invalid files fail before anything starts.

mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use process::{infinity, text};
use serde_json::{json, Value};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

/// Hang guard for a restart or a health check to settle.
const SETTLE: Duration = Duration::from_secs(30);

fn example(name: &str) -> PathBuf {
    Path::new(EXAMPLES).join(name)
}

/// Returns whether `pid` runs and is not a zombie. Exited PostgreSQL
/// postmasters and supervisors stay zombies until PID 1 reaps them.
fn is_alive(pid: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

fn kill_9(pid: u64) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) takes plain integers.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -9 {pid}"
    );
}

/// A temporary run folder; `down` runs when it is dropped, so a failed test
/// leaves nothing running.
struct Run {
    root: tempfile::TempDir,
    run_dir: PathBuf,
}

impl Run {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let run_dir = root.path().join("run");
        Self { root, run_dir }
    }

    fn command(&self, args: &[&str]) -> Output {
        infinity(self.root.path())
            .args(args)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .output()
            .expect("run infinity")
    }

    fn up(&self, file: &Path) -> Output {
        self.command(&["up", file.to_str().unwrap()])
    }

    fn status(&self) -> Output {
        self.command(&["status"])
    }

    fn down(&self) -> Output {
        self.command(&["down"])
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.run_dir.join("state.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn process(&self, name: &str) -> Value {
        let state = self.state();
        state["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|process| process["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {state:#}"))
            .clone()
    }

    fn pid(&self, name: &str) -> u64 {
        self.process(name)["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} has no pid"))
    }

    /// Returns every pid that the state file records.
    fn recorded_pids(&self) -> Vec<u64> {
        self.state()["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|process| process["pid"].as_u64())
            .collect()
    }

    /// Runs `status` until it exits 0, and returns its output.
    fn wait_for_healthy_status(&self) -> String {
        let started = Instant::now();
        loop {
            let output = self.status();
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            assert!(
                started.elapsed() < SETTLE,
                "status never exited 0: {}",
                text(&output)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs `down` and checks that every recorded pid has gone.
    fn down_and_check(&self) {
        let pids = self.recorded_pids();
        assert!(pids.len() >= 2, "the supervisor and a node: {pids:?}");
        let output = self.down();
        assert!(output.status.success(), "{}", text(&output));
        for pid in pids {
            assert!(!is_alive(pid), "pid {pid} still runs after down");
        }
        let state = self.state();
        for process in state["processes"].as_array().unwrap() {
            assert_eq!(process["pid"], Value::Null, "{process}");
        }
        assert_eq!(state["ready"], false);
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.run_dir.join("state.json").exists() {
            let _ = self.down();
        }
    }
}

/// Returns the columns of `name`'s line in the `status` output: name, role,
/// pid, process, health, restarts, then the details' words.
fn status_line(stdout: &str, name: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .find(|columns| columns.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{stdout}"))
}

/// Returns the API URL from the first line that `up` prints.
fn api_url(stdout: &str) -> String {
    let first = stdout.lines().next().unwrap_or_default();
    let url = first
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in the first line {first:?}"));
    assert!(url.ends_with("/api"), "{url}");
    url.to_string()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get_json(url: &str) -> (u16, Value) {
    match client().get(url).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Polls `GET url` until it returns 200, and returns the body.
async fn wait_for_ok(url: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = get_json(url).await;
        if status == 200 {
            return body;
        }
        assert!(
            started.elapsed() < SETTLE,
            "GET {url} never returned 200; last {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers `name` and creates an article through `api`, and returns the
/// article's slug.
async fn register_and_post(api: &str, name: &str, title: &str) -> String {
    let http = client();
    let user = json!({"user": {"username": name, "email": format!("{name}@example.com"), "password": format!("password-{name}")}});
    let response = http
        .post(format!("{api}/users"))
        .json(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "register {name}");
    let reply: Value = response.json().await.unwrap();
    let token = reply["user"]["token"].as_str().unwrap().to_string();

    let article =
        json!({"article": {"title": title, "description": "d", "body": "b", "tagList": ["local"]}});
    let response = http
        .post(format!("{api}/articles"))
        .header("Authorization", format!("Token {token}"))
        .json(&article)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "create {title}");
    let reply: Value = response.json().await.unwrap();
    reply["article"]["slug"].as_str().unwrap().to_string()
}

/// Kills `name` with SIGKILL and waits until `status` shows it alive and
/// healthy again with one restart and a new pid.
fn kill_and_wait_for_restart(run: &Run, name: &str) -> Vec<String> {
    let old_pid = run.pid(name);
    kill_9(old_pid);
    let started = Instant::now();
    loop {
        let output = run.status();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = status_line(&stdout, name);
        let restarted = line[2] != "-" && line[2] != old_pid.to_string() && line[5] == "1";
        if output.status.success() && restarted {
            assert_eq!(line[3], "alive", "{stdout}");
            assert_eq!(line[4], "ok", "{stdout}");
            assert_eq!(run.process(name)["restarts"], 1);
            assert!(!is_alive(old_pid));
            return line;
        }
        assert!(
            started.elapsed() < SETTLE,
            "{name} did not come back after kill -9: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_passes_log_format_on() {
    let run = Run::new();
    let file = example("phase-0.toml");
    let output = run.command(&["--log-format", "json", "up", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    let log = std::fs::read_to_string(run.run_dir.join("logs/node-1.log")).unwrap();
    // The node's stdout goes to the same file, and its banner stays text. A
    // text log line starts with its timestamp, a JSON one with a brace.
    let text_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(text_lines.is_empty(), "text log lines: {text_lines:?}");
    let json_lines: Vec<&str> = log.lines().filter(|line| line.starts_with('{')).collect();
    assert!(!json_lines.is_empty(), "the node logged no JSON: {log}");
    for line in json_lines {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON line: {line}");
    }
    run.down_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_0_sqlite_node() {
    let run = Run::new();
    let output = run.up(&example("phase-0.toml"));
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let api = api_url(&stdout);
    assert_eq!(run.state()["api_url"], api.as_str());
    assert_eq!(run.state()["ready"], true);
    assert!(stdout.contains("infinity status --run-dir"), "{stdout}");
    assert!(stdout.contains("infinity down --run-dir"), "{stdout}");

    let (status, body) = get_json(&format!("{api}/articles")).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"articles": [], "articlesCount": 0}));

    let output = run.status();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let node = status_line(&stdout, "node-1");
    assert_eq!(node[1], "node");
    assert_eq!(node[2], run.pid("node-1").to_string());
    assert_eq!(node[3], "alive");
    assert_eq!(node[4], "ok");
    assert_eq!(node[5], "0");
    assert!(stdout.contains("HTTP requests"), "{stdout}");
    let supervisor = status_line(&stdout, "supervisor");
    assert_eq!(supervisor[3], "alive");

    let again = run.up(&example("phase-0.toml"));
    assert!(!again.status.success(), "a second up in the same folder");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already runs"),
        "{}",
        text(&again)
    );

    kill_and_wait_for_restart(&run, "node-1");
    let body = wait_for_ok(&format!("{api}/articles")).await;
    assert_eq!(body["articlesCount"], 0);

    let address = run.process("node-1")["address"]
        .as_str()
        .unwrap()
        .to_string();
    run.down_and_check();
    assert!(
        TcpListener::bind(&address).is_ok(),
        "{address} is still taken after down"
    );
    assert_stopped_status(&run);
}

/// Checks that `status` exits 0 and reports that nothing is running, as it
/// does after `down`.
fn assert_stopped_status(run: &Run) {
    let output = run.status();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("nothing is running"), "{}", text(&output));
    assert!(stdout.contains("stopped at"), "{}", text(&output));
    assert!(
        !stdout.contains("dead"),
        "no process table: {}",
        text(&output)
    );
    assert!(run.state()["stopped_at"].is_string(), "{}", run.state());
}

#[test]
fn status_after_down_exits_zero() {
    let run = Run::new();
    let output = run.up(&example("phase-0.toml"));
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(run.state()["stopped_at"], Value::Null);
    run.down_and_check();
    assert_stopped_status(&run);

    // A second `down` finds nothing to stop and keeps the stopped state.
    let stopped_at = run.state()["stopped_at"].clone();
    let output = run.down();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(run.state()["stopped_at"], stopped_at);
    assert_stopped_status(&run);
}

#[test]
fn status_after_supervisor_crash_fails() {
    let run = Run::new();
    let output = run.up(&example("phase-0.toml"));
    assert!(output.status.success(), "{}", text(&output));
    let supervisor = run.pid("supervisor");
    let node = run.pid("node-1");
    kill_9(supervisor);
    let started = Instant::now();
    while is_alive(supervisor) {
        assert!(started.elapsed() < SETTLE, "supervisor survived kill -9");
        std::thread::sleep(Duration::from_millis(50));
    }

    let output = run.status();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(status_line(&stdout, "supervisor")[3], "dead", "{stdout}");
    assert_eq!(run.state()["stopped_at"], Value::Null);

    // The node may still be draining after the SIGTERM that the
    // supervisor's death sent it, and `down` waits for it or stops it.
    let output = run.down();
    assert!(output.status.success(), "{}", text(&output));
    assert!(!is_alive(node), "node pid {node} still runs after down");
    assert_stopped_status(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_1_postgres_with_replica() {
    let run = Run::new();
    let output = run.up(&example("phase-1.toml"));
    assert!(output.status.success(), "{}", text(&output));
    let api = api_url(&String::from_utf8_lossy(&output.stdout));

    let slug = register_and_post(&api, "ada", "Written to the primary").await;
    let article = wait_for_ok(&format!("{api}/articles/{slug}")).await;
    assert_eq!(article["article"]["title"], "Written to the primary");

    let stdout = run.wait_for_healthy_status();
    let primary = status_line(&stdout, "postgres-primary");
    assert_eq!(primary[1], "postgres-primary");
    assert_eq!(primary[3], "alive");
    assert_eq!(primary[4], "ok");
    assert_eq!(primary[6..9], ["primary,", "lag", "0.000"], "{stdout}");
    let replica = status_line(&stdout, "postgres-replica1");
    assert_eq!(replica[1], "postgres-replica");
    assert_eq!(replica[3], "alive");
    assert_eq!(replica[4], "ok");
    assert_eq!(replica[6..8], ["replica,", "lag"], "{stdout}");

    let cluster_dir = PathBuf::from(run.state()["postgres_cluster_dir"].as_str().unwrap());
    assert!(cluster_dir.is_dir());
    let postgres_pids = [run.pid("postgres-primary"), run.pid("postgres-replica1")];
    for pid in postgres_pids {
        assert!(is_alive(pid), "postgres pid {pid}");
    }

    run.down_and_check();
    for pid in postgres_pids {
        assert!(!is_alive(pid), "postgres pid {pid} still runs after down");
    }
    assert!(
        !cluster_dir.exists(),
        "{} is still there after down",
        cluster_dir.display()
    );
}

/// Prints why a test returned early. It writes to the standard error
/// stream directly, because libtest captures only `eprintln!` and would hide
/// the note of a passing test.
fn report_not_run(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n{test} NOT RUN: {reason}\n");
}

/// Returns why this build cannot run phase 2, if it cannot.
fn phase_2_missing() -> Option<String> {
    let root = tempfile::tempdir().unwrap();
    let lb = infinity(root.path())
        .args(["lb", "--help"])
        .output()
        .unwrap();
    if !lb.status.success() {
        return Some("`infinity lb --help` failed, so this build has no load balancer".into());
    }
    let serve = infinity(root.path())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&serve.stdout).contains("--redis") {
        return Some("`infinity serve --help` lists no --redis flag".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_2_balancer_nodes_redis() {
    if let Some(reason) = phase_2_missing() {
        report_not_run("phase_2_balancer_nodes_redis", &reason);
        return;
    }
    let run = Run::new();
    // The example's fixed port may be taken on a test machine, so the copy
    // listens on a free one.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let original = std::fs::read_to_string(example("phase-2.toml")).unwrap();
    let fixed = "listen = \"127.0.0.1:8000\"";
    assert!(original.contains(fixed), "the example sets {fixed}");
    let file = run.root.path().join("phase-2.toml");
    std::fs::write(
        &file,
        original.replace(fixed, &format!("listen = \"127.0.0.1:{port}\"")),
    )
    .unwrap();

    let output = run.up(&file);
    assert!(output.status.success(), "{}", text(&output));
    let api = api_url(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(api, format!("http://127.0.0.1:{port}/api"));
    let backends = std::fs::read_to_string(run.run_dir.join("backends")).unwrap();
    assert_eq!(backends.lines().count(), 2, "{backends}");

    let slug = register_and_post(&api, "grace", "Through the balancer").await;
    for _ in 0..20 {
        let article = wait_for_ok(&format!("{api}/articles/{slug}")).await;
        assert_eq!(article["article"]["title"], "Through the balancer");
    }

    let stdout = run.wait_for_healthy_status();
    for name in [
        "lb",
        "node-1",
        "node-2",
        "redis",
        "postgres-primary",
        "postgres-replica1",
    ] {
        let line = status_line(&stdout, name);
        assert_eq!(line[3], "alive", "{name}: {stdout}");
        assert_eq!(line[4], "ok", "{name}: {stdout}");
    }
    assert!(
        status_line(&stdout, "redis")
            .join(" ")
            .contains("PING +PONG"),
        "{stdout}"
    );
    // Round robin sends some of the 22 requests to each node.
    for name in ["node-1", "node-2"] {
        let metrics_url = run.process(name)["metrics_url"]
            .as_str()
            .unwrap()
            .to_string();
        let metrics = client()
            .get(metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let article_reads = metrics
            .lines()
            .filter(|line| line.starts_with("infinity_http_requests_total{"))
            .filter(|line| line.contains("method=\"GET\"") && line.contains("/api/articles/"))
            .count();
        assert!(
            article_reads > 0,
            "{name} served no article read:\n{metrics}"
        );
    }

    kill_and_wait_for_restart(&run, "lb");
    let article = wait_for_ok(&format!("{api}/articles/{slug}")).await;
    assert_eq!(article["article"]["title"], "Through the balancer");

    let cluster_dir = PathBuf::from(run.state()["postgres_cluster_dir"].as_str().unwrap());
    let redis_address = run.process("redis")["address"]
        .as_str()
        .unwrap()
        .to_string();
    run.down_and_check();
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    assert!(TcpListener::bind(&redis_address).is_ok());
    assert!(!cluster_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_private_redis() {
    let root = tempfile::tempdir().unwrap();
    let serve = infinity(root.path())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&serve.stdout).contains("--redis") {
        report_not_run(
            "two_nodes_share_private_redis",
            "`infinity serve --help` lists no --redis flag",
        );
        return;
    }
    let run = Run::new();
    let file = run.root.path().join("redis.toml");
    std::fs::write(&file, "[nodes]\ncount = 2\nworkers = 0\n[redis]\n").unwrap();
    let output = run.up(&file);
    assert!(output.status.success(), "{}", text(&output));
    let api = api_url(&String::from_utf8_lossy(&output.stdout));
    let first = run.process("node-1")["url"].as_str().unwrap().to_string();
    assert_eq!(
        api,
        format!("{first}/api"),
        "without a balancer, node-1 serves"
    );
    let redis_url = run.process("redis")["url"].as_str().unwrap().to_string();
    for name in ["node-1", "node-2"] {
        let command_line = std::fs::read(format!("/proc/{}/cmdline", run.pid(name))).unwrap();
        let arguments: Vec<&[u8]> = command_line.split(|&byte| byte == 0).collect();
        let flag = arguments
            .iter()
            .position(|&argument| argument == b"--redis");
        let value = flag.and_then(|index| arguments.get(index + 1));
        assert_eq!(
            value,
            Some(&redis_url.as_bytes()),
            "{name} uses the private Redis"
        );
    }

    // A session made on node-1 works on node-2.
    let slug = register_and_post(&api, "lin", "Shared session").await;
    let second = run.process("node-2")["url"].as_str().unwrap().to_string();
    let article = wait_for_ok(&format!("{second}/api/articles/{slug}")).await;
    assert_eq!(article["article"]["title"], "Shared session");

    let stdout = run.wait_for_healthy_status();
    let redis = status_line(&stdout, "redis");
    assert_eq!(redis[3], "alive");
    assert_eq!(redis[4], "ok");
    assert_eq!(redis[6..8], ["PING", "+PONG"], "{stdout}");
    assert!(std::fs::read_to_string(run.run_dir.join("state.json"))
        .unwrap()
        .contains(&redis_url));

    kill_and_wait_for_restart(&run, "redis");
    let redis_address = run.process("redis")["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(redis_url, format!("redis://{redis_address}"), "same port");
    run.down_and_check();
    assert!(TcpListener::bind(&redis_address).is_ok());
}

#[test]
fn invalid_files_start_nothing() {
    let busy_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_address = busy_listener.local_addr().unwrap();
    let cases = [
        ("[nodes]\ncout = 2\n", "nodes.cout"),
        ("[nodes]\ncount = 0\n", "nodes.count"),
        ("[database]\nengine = \"mysql\"\n", "database.engine"),
        ("[lb]\nlisten = \"127.0.0.1:0\"\n", "lb.listen"),
        ("[redis]\nurl = \"http://127.0.0.1:1\"\n", "redis.url"),
        (&format!("[lb]\nlisten = \"{busy_address}\"\n"), "lb.listen"),
    ];
    for (contents, key) in cases {
        let run = Run::new();
        let file = run.root.path().join("topology.toml");
        std::fs::write(&file, contents).unwrap();
        let output = run.up(&file);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{contents:?}: {}",
            text(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{contents:?} names {key}: {stderr}");
        assert!(
            stderr.contains(file.to_str().unwrap()),
            "names the file: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{}", text(&output));
        assert!(!run.run_dir.exists(), "{contents:?} created the run folder");
    }
}

/// Waits until the shared data folder's e-mail outbox holds `count`
/// messages, and returns their file names.
fn wait_for_mail(run: &Run, count: usize) -> Vec<String> {
    let outbox = run.run_dir.join("data").join("outbox");
    let started = Instant::now();
    loop {
        let names: Vec<String> = std::fs::read_dir(&outbox)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .filter(|name| name.ends_with(".eml"))
                    .collect()
            })
            .unwrap_or_default();
        if names.len() >= count {
            return names;
        }
        assert!(
            started.elapsed() < SETTLE,
            "{} e-mails in {} after {SETTLE:?}, expected {count}",
            names.len(),
            outbox.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_6_broker_and_worker_fleet() {
    if let Some(reason) = phase_2_missing() {
        report_not_run("phase_6_broker_and_worker_fleet", &reason);
        return;
    }
    let run = Run::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let original = std::fs::read_to_string(example("phase-6.toml")).unwrap();
    let fixed = "listen = \"127.0.0.1:8000\"";
    assert!(original.contains(fixed), "the example sets {fixed}");
    let file = run.root.path().join("phase-6.toml");
    std::fs::write(
        &file,
        original.replace(fixed, &format!("listen = \"127.0.0.1:{port}\"")),
    )
    .unwrap();

    let output = run.up(&file);
    assert!(output.status.success(), "{}", text(&output));
    let api = api_url(&String::from_utf8_lossy(&output.stdout));

    // Each registration writes a welcome e-mail job, which only the worker
    // processes run, through the broker.
    register_and_post(&api, "ada", "Through the broker").await;
    let mail = wait_for_mail(&run, 1);
    assert_eq!(mail.len(), 1, "{mail:?}");

    let stdout = run.wait_for_healthy_status();
    for name in ["rabbitmq", "worker-1", "worker-2", "node-1", "node-2", "lb"] {
        let line = status_line(&stdout, name);
        assert_eq!(line[3], "alive", "{name}: {stdout}");
        assert_eq!(line[4], "ok", "{name}: {stdout}");
    }
    assert_eq!(status_line(&stdout, "rabbitmq")[1], "broker");
    assert_eq!(status_line(&stdout, "worker-1")[1], "worker");
    assert!(stdout.contains("queue infinity.jobs: 0 ready"), "{stdout}");

    kill_and_wait_for_restart(&run, "worker-1");
    register_and_post(&api, "grace", "After a worker crash").await;
    let mail = wait_for_mail(&run, 2);
    assert_eq!(mail.len(), 2, "{mail:?}");

    // The nodes publish the per-kind figures every 5 seconds.
    let started = Instant::now();
    let figures = loop {
        let output = run.status();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let line: Vec<String> = stdout
            .lines()
            .find(|line| line.starts_with("email.welcome "))
            .map(|line| line.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        // Columns: kind, pending, done/minute, retrying, dead/minute, dead.
        if line.len() == 6 && line[2] == "2" {
            break line;
        }
        assert!(
            started.elapsed() < SETTLE,
            "no job figures for email.welcome: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(figures[1], "0", "pending: {figures:?}");
    assert_eq!(figures[5], "0", "dead: {figures:?}");

    let broker_pid = run.pid("rabbitmq");
    run.down_and_check();
    assert!(!is_alive(broker_pid), "RabbitMQ still runs after down");
}
