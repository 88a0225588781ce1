//! Health checks, connect failures, retries, ejection and draining.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{closed_address, count_backends, wait_until, Balancer, TestBackend};

fn args(backends: &[SocketAddr], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = backends
        .iter()
        .flat_map(|address| ["--backend".to_string(), address.to_string()])
        .collect();
    args.extend(extra.iter().map(ToString::to_string));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_failure_hysteresis() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let c = TestBackend::start("c").await;
    let lb = Balancer::start(&args(
        &[a.address, b.address, c.address],
        &[
            "--health-interval-ms",
            "300",
            "--unhealthy-after",
            "2",
            "--healthy-after",
            "3",
        ],
    ))
    .await;
    let client = reqwest::Client::new();
    let url = lb.url("/api/articles");
    let failed = || c.state.readyz_failed.load(Ordering::SeqCst);
    let succeeded = || c.state.readyz_ok.load(Ordering::SeqCst);
    let timeout = Duration::from_secs(5);

    // A single failed check between successful ones is not enough to leave
    // rotation.
    c.state.fail_next.store(1, Ordering::SeqCst);
    wait_until("one failed check", timeout, || failed() == 1).await;
    let ok_after_failure = succeeded();
    wait_until("a successful check after it", timeout, || {
        succeeded() > ok_after_failure
    })
    .await;
    let counts = count_backends(&client, &url, 3).await;
    assert_eq!(
        counts.get("c"),
        Some(&1),
        "after one failed check: {counts:?}"
    );
    assert!(!lb.log().contains("backend down"), "log:\n{}", lb.log());

    // Two consecutive failures take it out of rotation.
    c.set_ready(false);
    let elapsed = wait_until("two more failed checks", timeout, || failed() >= 3).await;
    lb.wait_for_log("backend down").await;
    assert!(
        elapsed < Duration::from_secs(2),
        "two checks took {elapsed:?}"
    );
    let counts = count_backends(&client, &url, 30).await;
    assert_eq!(counts.get("c"), None, "after two failed checks: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 30);

    // Two successful checks followed by a failed one do not bring it back.
    let ok_before = succeeded();
    let failed_before = failed();
    c.state.succeed_next.store(2, Ordering::SeqCst);
    wait_until("two successes and a failure", timeout, || {
        succeeded() == ok_before + 2 && failed() > failed_before
    })
    .await;
    let counts = count_backends(&client, &url, 6).await;
    assert_eq!(
        counts.get("c"),
        None,
        "after two successful checks: {counts:?}"
    );
    assert!(!lb.log().contains("backend up"), "log:\n{}", lb.log());

    // Three consecutive successful checks bring it back.
    c.set_ready(true);
    lb.wait_for_log("backend up").await;
    let ok_since_ready = succeeded() - ok_before - 2;
    assert!(
        ok_since_ready >= 3,
        "back after {ok_since_ready} successful checks"
    );
    let counts = count_backends(&client, &url, 30).await;
    assert_eq!(
        counts.get("c"),
        Some(&10),
        "after three successful checks: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_backend_returns_503() {
    let dead = closed_address();
    let lb = Balancer::start(&args(&[dead], &["--health-interval-ms", "100"])).await;
    lb.wait_for_log("backend down").await;

    let response = reqwest::get(lb.url("/api/articles")).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["content-type"], "application/json");
    let id = response.headers()["x-request-id"].to_str().unwrap().len();
    assert_eq!(id, 32);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"errors": {"body": ["no healthy backend"]}})
    );
    lb.wait_for_metric(
        "infinity_lb_requests_total",
        &[("backend", "none"), ("status", "503")],
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_times_out_with_504() {
    let backend = TestBackend::start("slow").await;
    let lb = Balancer::start(&args(
        &[backend.address],
        &["--read-timeout-seconds", "1", "--retries", "0"],
    ))
    .await;
    backend.set_delay(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let response = reqwest::get(lb.url("/api/articles")).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"errors": {"body": ["gateway timeout"]}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_retries_safe_and_keyed() {
    let dead = closed_address();
    let alive = TestBackend::start("alive").await;
    // A long health interval keeps the dead backend in rotation, since one
    // failed check is below --unhealthy-after, and a high --eject-after
    // keeps passive ejection out of this test.
    let lb = Balancer::start(&args(
        &[dead, alive.address],
        &["--health-interval-ms", "60000", "--eject-after", "100"],
    ))
    .await;
    let client = reqwest::Client::new();
    let url = lb.url("/api/articles");

    // GETs that picked the dead backend are retried on the live one.
    let counts = count_backends(&client, &url, 6).await;
    assert_eq!(counts.get("alive"), Some(&6));
    let get_retries = lb.metric("infinity_lb_retries_total", &[]).await.unwrap();
    assert!(
        (3.0..=6.0).contains(&get_retries),
        "retries after 6 GETs: {get_retries}"
    );

    // Round robin alternates between the two backends for requests that are
    // not retried, so exactly half of these POSTs pick the dead backend.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = client.post(&url).body("hello").send().await.unwrap();
        let status = response.status().as_u16();
        if status == 502 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(
                body,
                serde_json::json!({"errors": {"body": ["bad gateway"]}})
            );
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 502, 502]);
    let retries = lb.metric("infinity_lb_retries_total", &[]).await.unwrap();
    assert_eq!(
        retries, get_retries,
        "POSTs without a key must not be retried"
    );

    // With an Idempotency-Key every POST succeeds, the body included.
    for attempt in 0..4 {
        let response = client
            .post(&url)
            .header("idempotency-key", format!("key-{attempt}"))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "keyed POST {attempt}");
        let seen: serde_json::Value = response.json().await.unwrap();
        assert_eq!(seen["backend"], "alive");
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["body"], "hello");
    }
    let keyed_retries = lb.metric("infinity_lb_retries_total", &[]).await.unwrap() - retries;
    assert!(
        keyed_retries >= 2.0,
        "retries for keyed POSTs: {keyed_retries}"
    );
    assert_eq!(alive.requests(), 6 + 2 + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_after_failures() {
    let dead = closed_address();
    let alive = TestBackend::start("alive").await;
    let lb = Balancer::start(&args(
        &[dead, alive.address],
        &["--health-interval-ms", "60000", "--eject-after", "3"],
    ))
    .await;
    let client = reqwest::Client::new();
    let url = lb.url("/api/articles");

    // POSTs without a key are not retried: the dead backend's picks fail
    // until its third consecutive failure ejects it.
    let mut failures = 0;
    for _ in 0..10 {
        let response = client.post(&url).send().await.unwrap();
        match response.status().as_u16() {
            200 => {}
            502 => failures += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(failures, 3);
    assert_eq!(alive.requests(), 7);

    let dead_label = dead.to_string();
    let ejections = lb
        .metric("infinity_lb_ejections_total", &[("backend", &dead_label)])
        .await;
    assert_eq!(ejections, Some(1.0));
    lb.wait_for_metric("infinity_lb_backends_healthy", &[], 1.0)
        .await;
    let failed = lb
        .metric(
            "infinity_lb_requests_total",
            &[("backend", &dead_label), ("status", "502")],
        )
        .await;
    assert_eq!(failed, Some(3.0));
    assert!(
        lb.log().contains("backend ejected"),
        "log has no ejection event:\n{}",
        lb.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight() {
    let slow = TestBackend::start("slow").await;
    slow.set_delay(Duration::from_millis(2000));
    let mut lb = Balancer::start(&args(&[slow.address], &["--drain-seconds", "4"])).await;

    let in_flight = tokio::spawn(reqwest::get(lb.url("/api/slow")));
    wait_until("request at the backend", Duration::from_secs(2), || {
        slow.requests() == 1
    })
    .await;
    lb.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let connect_result = tokio::net::TcpStream::connect(lb.listen).await;
    assert!(
        connect_result.is_err(),
        "balancer accepted a connection after SIGTERM"
    );

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["backend"], "slow");
    assert_eq!(seen["path"], "/api/slow");

    let status = lb.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "balancer exit status: {status}");
}
