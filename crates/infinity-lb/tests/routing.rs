//! Balancing policies, forwarding headers, metrics and the backends file.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{count_backends, write_atomically, Balancer, KeepAliveConnection, TestBackend};

fn backend_args(backends: &[&TestBackend]) -> Vec<String> {
    backends
        .iter()
        .flat_map(|backend| ["--backend".to_string(), backend.address.to_string()])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let c = TestBackend::start("c").await;
    let lb = Balancer::start(&backend_args(&[&a, &b, &c])).await;
    assert_eq!(
        lb.serving_line,
        format!(
            "Infinity lb serving http://{} (metrics http://{}/metrics), 3 backends, round-robin",
            lb.listen, lb.metrics_listen
        )
    );

    let client = reqwest::Client::new();
    let counts = count_backends(&client, &lb.url("/api/articles"), 30).await;
    let expected: HashMap<String, usize> = [("a", 10), ("b", 10), ("c", 10)]
        .map(|(name, count)| (name.to_string(), count))
        .into();
    assert_eq!(counts, expected);
    for backend in [&a, &b, &c] {
        assert_eq!(backend.requests(), 10, "requests seen by {}", backend.name);
    }

    for backend in [&a, &b, &c] {
        let address = backend.address.to_string();
        let served = lb
            .metric(
                "infinity_lb_requests_total",
                &[("backend", &address), ("status", "200")],
            )
            .await;
        assert_eq!(served, Some(10.0), "requests_total of {}", backend.name);
    }
    lb.wait_for_metric("infinity_lb_backends_healthy", &[], 3.0)
        .await;
    let retries = lb.metric("infinity_lb_retries_total", &[]).await;
    assert_eq!(retries, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_slow_backend() {
    let fast_a = TestBackend::start("fast-a").await;
    let fast_b = TestBackend::start("fast-b").await;
    let slow = TestBackend::start("slow").await;
    slow.set_delay(Duration::from_millis(500));
    let mut args = backend_args(&[&fast_a, &fast_b, &slow]);
    args.extend(["--policy".to_string(), "least-connections".to_string()]);
    let lb = Balancer::start(&args).await;
    assert!(
        lb.serving_line.ends_with("3 backends, least-connections"),
        "serving line: {}",
        lb.serving_line
    );

    let client = reqwest::Client::new();
    let url = lb.url("/api/articles");
    // The requests start 10 ms apart, so a fast backend has finished its
    // previous request when the next one arrives, while each slow request
    // stays in flight for the next 50 arrivals. All 20 start within 200 ms,
    // well inside one slow request's 500 ms.
    let mut requests = Vec::new();
    for _ in 0..20 {
        requests.push(tokio::spawn(client.get(&url).send()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let responses = join_all(requests).await;
    for response in responses {
        assert_eq!(response.unwrap().status(), 200);
    }

    let (a, b, s) = (fast_a.requests(), fast_b.requests(), slow.requests());
    assert_eq!(a + b + s, 20);
    assert!(s < a, "slow backend got {s} requests, fast-a got {a}");
    assert!(s < b, "slow backend got {s} requests, fast-b got {b}");
    // Round robin would give the slow backend 6 or 7 of the 20.
    assert!(s <= 3, "slow backend got {s} requests");
}

/// Waits for spawned tasks and collects their outputs in order.
async fn join_all<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_request_id() {
    let backend = TestBackend::start("only").await;
    let lb = Balancer::start(&backend_args(&[&backend])).await;
    let client = reqwest::Client::new();
    let url = lb.url("/api/tags");

    // A valid client id and an existing x-forwarded-for are kept.
    let response = client
        .get(&url)
        .header("x-request-id", "client-id-42")
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "client-id-42");
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["x_request_id"], "client-id-42");
    assert_eq!(seen["x_forwarded_for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(seen["x_forwarded_proto"], "http");

    // Without an id the balancer generates one and sends it both ways.
    let mut generated = HashSet::new();
    for _ in 0..2 {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 32, "generated id {id}");
        assert!(
            id.chars().all(|c| c.is_ascii_hexdigit()),
            "generated id {id}"
        );
        let seen: serde_json::Value = response.json().await.unwrap();
        assert_eq!(seen["x_request_id"], id.as_str());
        assert_eq!(seen["x_forwarded_for"], "127.0.0.1");
        generated.insert(id);
    }
    assert_eq!(generated.len(), 2, "generated ids must differ");

    // Ids with spaces or over 128 characters are replaced.
    for invalid in ["has space".to_string(), "x".repeat(129)] {
        let response = client
            .get(&url)
            .header("x-request-id", invalid.as_str())
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_ne!(id, invalid);
        assert_eq!(id.len(), 32, "replacement id {id}");
        let seen: serde_json::Value = response.json().await.unwrap();
        assert_eq!(seen["x_request_id"], id.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_file_add_and_remove() {
    let first = TestBackend::start("first").await;
    let second = TestBackend::start("second").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backends");
    write_atomically(&file, &format!("# test nodes\n{}\n", first.address));
    let lb = Balancer::start(&["--backends-file".to_string(), file.display().to_string()]).await;
    assert!(
        lb.serving_line.ends_with("1 backends, round-robin"),
        "serving line: {}",
        lb.serving_line
    );

    // One client connection stays open for the whole test.
    let mut connection = KeepAliveConnection::open(lb.listen).await;
    let response = connection.get("/api/articles").await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["x-backend"], "first");

    // Adding a line brings the second backend into rotation.
    write_atomically(
        &file,
        &format!("{}\n{}  # added\n", first.address, second.address),
    );
    let added_at = Instant::now();
    loop {
        let response = connection.get("/api/articles").await.unwrap();
        assert_eq!(response.status, 200);
        if response.headers["x-backend"] == "second" {
            break;
        }
        assert!(
            added_at.elapsed() < Duration::from_secs(3),
            "second backend got no request within 3 s of being added"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two slow requests are in flight, one on each backend, while the
    // second backend is removed; both still complete.
    first.set_delay(Duration::from_millis(2000));
    second.set_delay(Duration::from_millis(2000));
    let client = reqwest::Client::new();
    let requests_before = first.requests() + second.requests();
    let slow_requests: Vec<_> = (0..2)
        .map(|_| tokio::spawn(client.get(lb.url("/api/slow")).send()))
        .collect();
    let both_started = Instant::now();
    while first.requests() + second.requests() < requests_before + 2 {
        assert!(both_started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    write_atomically(&file, &format!("{}\n", first.address));
    let mut slow_backends = HashSet::new();
    for request in slow_requests {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        let backend = response.headers()["x-backend"]
            .to_str()
            .unwrap()
            .to_string();
        slow_backends.insert(backend);
    }
    let expected: HashSet<String> = ["first".to_string(), "second".to_string()].into();
    assert_eq!(slow_backends, expected);
    first.set_delay(Duration::ZERO);
    second.set_delay(Duration::ZERO);

    // The file change is applied within a poll interval, so by now no
    // request reaches the removed backend.
    let second_before = second.requests();
    for _ in 0..10 {
        let response = connection.get("/api/articles").await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.headers["x-backend"], "first");
    }
    assert_eq!(second.requests(), second_before);
    assert!(
        lb.log().contains("backend removed"),
        "log has no removal event:\n{}",
        lb.log()
    );
}
