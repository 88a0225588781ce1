//! `--log-format` on the command line: it is accepted before or after any
//! subcommand, `lb` included, while a serve flag before a subcommand is
//! still rejected.

mod process;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use process::{free_address, infinity, text};
use serde_json::Value;

/// Hang guard for the balancer's first log line.
const START_BOUND: Duration = Duration::from_secs(60);

fn run(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    infinity(dir.path())
        .args(args)
        .output()
        .expect("run infinity")
}

#[test]
fn log_format_before_subcommand_is_accepted() {
    for subcommand in ["lb", "serve", "status", "down"] {
        let output = run(&["--log-format", "json", subcommand, "--help"]);
        assert!(output.status.success(), "{subcommand}: {}", text(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("Usage:"), "{subcommand}: {}", text(&output));
    }
}

#[test]
fn serve_flag_before_subcommand_is_rejected() {
    let output = run(&["--listen", "127.0.0.1:1", "status"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("'--listen'"), "{}", text(&output));
    assert!(stderr.contains("'status'"), "{}", text(&output));
    assert!(
        stderr.contains("'status' does not take it"),
        "{}",
        text(&output)
    );

    // `worker` takes the serve flags, so the advice is to move the flag.
    let output = run(&["--workers", "3", "worker"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Put it after 'worker'"),
        "{}",
        text(&output)
    );
}

#[test]
fn lb_logs_json_with_global_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, metrics, backend) = (free_address(), free_address(), free_address());
    let mut child = infinity(dir.path())
        .args(["--log-format", "json", "lb", "--listen", &listen])
        .args(["--metrics-listen", &metrics, "--backend", &backend])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start infinity lb");

    // Lines arrive on a channel, so that a silent balancer fails the test
    // instead of hanging it.
    let stderr = child.stderr.take().unwrap();
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let started = loop {
        let Ok(line) = lines.recv_timeout(START_BOUND) else {
            break None;
        };
        let parsed = serde_json::from_str::<Value>(&line).ok();
        seen.push(line);
        if let Some(entry) = parsed.filter(|e| e["fields"]["message"] == "load balancer started") {
            break Some(entry);
        }
    };
    let _ = child.kill();
    let _ = child.wait();

    let entry = started.unwrap_or_else(|| panic!("no JSON start-up line; stderr:\n{seen:#?}"));
    assert_eq!(entry["level"], "INFO", "{entry}");
    assert_eq!(entry["fields"]["listen"], listen.as_str(), "{entry}");
    for line in &seen {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "a line that is not JSON: {line}"
        );
    }
}
