//! Tests of the shared cluster and of its cleanup after the test process dies.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use infinity_local::{shared_cluster, shared_database};

/// Environment variable that makes `reaper_child_process` start the shared
/// cluster instead of returning at once.
const CHILD_ENV: &str = "INFINITY_TESTKIT_REAPER_CHILD";

/// First word of the child process's report of its cluster.
const CHILD_REPORT: &str = "reaper-child-cluster";

/// Time the reaper gets to clean up after the test process is killed.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(15);

fn is_port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Returns whether process `pid` has exited (a zombie counts as exited).
fn has_exited(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 1..];
            matches!(after_name.split_whitespace().next(), Some("Z" | "X"))
        }
        Err(_) => true,
    }
}

/// Runs `psql` on `url` as a client of the project would, and returns its
/// trimmed output.
fn psql_url(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn shared_cluster_is_one_instance() {
    let first = shared_cluster();
    let second = shared_cluster();
    assert!(std::ptr::eq(first, second));
    assert_eq!(first.replicas().len(), 1);
}

#[test]
fn shared_databases_have_unique_names() {
    let first = shared_database("Feed test");
    let second = shared_database("feed test");
    assert_ne!(first.name, second.name);
    assert!(first.name.starts_with("feed_test_"), "{}", first.name);
    assert!(second.name.starts_with("feed_test_"), "{}", second.name);
}

#[test]
fn shared_database_urls_connect() {
    let cluster = shared_cluster();
    let database = shared_database("urls");
    assert_eq!(
        database.primary_url,
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            cluster.primary().port,
            database.name
        )
    );
    assert_eq!(database.replica_urls.len(), 1);

    assert_eq!(
        psql_url(&database.primary_url, "SELECT current_database()"),
        database.name
    );
    assert_eq!(
        psql_url(&database.primary_url, "SELECT pg_is_in_recovery()"),
        "f"
    );
    assert_eq!(
        psql_url(&database.replica_urls[0], "SELECT current_database()"),
        database.name
    );
    assert_eq!(
        psql_url(&database.replica_urls[0], "SELECT pg_is_in_recovery()"),
        "t"
    );
}

/// Stands in for a test binary that dies: started by
/// `reaper_cleans_up_after_sigkill` in a child process, it starts the shared
/// cluster, reports it on standard output and waits to be killed.
#[test]
#[ignore = "runs only as the child process of reaper_cleans_up_after_sigkill"]
fn reaper_child_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cluster = shared_cluster();
    let replica = &cluster.replicas()[0];
    println!(
        "{CHILD_REPORT} {} {} {} {} {}",
        cluster.primary().port,
        cluster
            .primary()
            .postmaster_pid()
            .expect("primary postmaster.pid"),
        replica.port,
        replica.postmaster_pid().expect("replica postmaster.pid"),
        cluster.dir().display()
    );
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn reaper_cleans_up_after_sigkill() {
    let test_binary = std::env::current_exe().expect("path of the test binary");
    let mut child = Command::new(test_binary)
        .args([
            "reaper_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child test process");
    let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    // libtest prints "test reaper_child_process ... " without a line break
    // before the test runs, so the report starts in the middle of a line.
    let report = stdout
        .lines()
        .map(|line| line.expect("read child stdout"))
        .find_map(|line| {
            let start = line.find(CHILD_REPORT)?;
            Some(line[start..].to_string())
        })
        .expect("child exited without reporting its cluster");
    let fields: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(fields.len(), 6, "{report}");
    let ports: Vec<u16> = vec![fields[1].parse().unwrap(), fields[3].parse().unwrap()];
    let pids: Vec<i32> = vec![fields[2].parse().unwrap(), fields[4].parse().unwrap()];
    let dir = PathBuf::from(fields[5]);
    assert!(dir.is_dir(), "{} is missing", dir.display());
    for &port in &ports {
        assert!(!is_port_free(port), "port {port} is not in use");
    }

    child.kill().expect("send SIGKILL to the child");
    let status = child.wait().expect("wait for the child");
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    let killed_at = Instant::now();
    while killed_at.elapsed() < CLEANUP_DEADLINE {
        let servers_gone = pids.iter().all(|&pid| has_exited(pid));
        let ports_free = ports.iter().all(|&port| is_port_free(port));
        if servers_gone && ports_free && !dir.exists() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("cleanup after SIGKILL took {:?}", killed_at.elapsed());
    assert!(!dir.exists(), "{} still exists", dir.display());
    for pid in pids {
        assert!(has_exited(pid), "postmaster {pid} still runs");
    }
    for port in ports {
        assert!(is_port_free(port), "port {port} is still taken");
    }
}
