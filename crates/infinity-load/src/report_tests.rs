use super::*;

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// Asserts that `actual` is within 0.1 %, the histogram's resolution, of `expected`.
fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= expected * 0.001,
        "{actual} != {expected}"
    );
}

#[test]
fn percentiles_match_hand_computed_values() {
    let mut recorder = Recorder::default();
    for latency in 1..=100 {
        recorder.record("get_article", ms(latency), Outcome::Status(200));
    }
    let report = recorder.report(Duration::from_secs(10));
    let op = &report.operations[0];
    assert_eq!(op.name, "get_article");
    assert_eq!(op.count, 100);
    assert_close(op.p50_ms, 50.0);
    assert_close(op.p95_ms, 95.0);
    assert_close(op.p99_ms, 99.0);
    assert_close(op.max_ms, 100.0);
    assert_close(op.mean_ms, 50.5);
}

#[test]
fn throughput_is_requests_per_second() {
    let mut recorder = Recorder::default();
    for _ in 0..30 {
        recorder.record("tags", ms(1), Outcome::Status(200));
    }
    for _ in 0..10 {
        recorder.record("feed", ms(1), Outcome::Status(200));
    }
    let report = recorder.report(Duration::from_millis(2500));
    assert_eq!(report.requests, 40);
    assert_close(report.throughput_rps, 16.0);
    let tags = report
        .operations
        .iter()
        .find(|op| op.name == "tags")
        .unwrap();
    assert_close(tags.throughput_rps, 12.0);
}

#[test]
fn errors_are_counted_by_status() {
    let mut recorder = Recorder::default();
    let outcomes = [
        (Outcome::Status(200), 5),
        (Outcome::Status(304), 1),
        (Outcome::Status(500), 3),
        (Outcome::Status(404), 2),
        (Outcome::Status(429), 4),
        (Outcome::Timeout, 1),
        (Outcome::Transport, 2),
    ];
    for (outcome, count) in outcomes {
        for _ in 0..count {
            recorder.record("profile", ms(2), outcome);
        }
    }
    recorder.record("tags", ms(2), Outcome::Status(500));

    let report = recorder.report(Duration::from_secs(1));
    assert_eq!(report.requests, 19);
    assert_eq!(report.ok, 6);
    assert_eq!(report.errors, 9);
    assert_eq!(report.rate_limited, 4);
    assert_eq!(report.errors_by_status["500"], 4);
    assert_eq!(report.errors_by_status["404"], 2);
    assert_eq!(report.errors_by_status["timeout"], 1);
    assert_eq!(report.errors_by_status["transport"], 2);
    assert!(!report.errors_by_status.contains_key("429"));

    let profile = report
        .operations
        .iter()
        .find(|op| op.name == "profile")
        .unwrap();
    assert_eq!(profile.count, 18);
    assert_eq!(profile.errors, 8);
    assert_eq!(profile.rate_limited, 4);
}

#[test]
fn merge_adds_counts_and_latencies() {
    let mut first = Recorder::default();
    first.record("feed", ms(10), Outcome::Status(200));
    first.record("feed", ms(20), Outcome::Status(502));
    let mut second = Recorder::default();
    second.record("feed", ms(40), Outcome::Status(200));
    second.record("tags", ms(1), Outcome::Status(200));

    first.merge(&second);
    assert_eq!(first.total(), 4);
    let report = first.report(Duration::from_secs(2));
    let feed = &report.operations[0];
    assert_eq!(feed.count, 3);
    assert_eq!(feed.ok, 2);
    assert_eq!(feed.errors_by_status["502"], 1);
    assert_close(feed.max_ms, 40.0);
    assert_close(feed.p50_ms, 20.0);
}

#[test]
fn empty_run_reports_zero_throughput() {
    let report = Recorder::default().report(Duration::ZERO);
    assert_eq!(report.requests, 0);
    assert_eq!(report.throughput_rps, 0.0);
    assert!(report.operations.is_empty());
}

#[test]
fn table_lists_each_operation() {
    let mut recorder = Recorder::default();
    recorder.record("feed_100", ms(12), Outcome::Status(200));
    recorder.record("tags", ms(3), Outcome::Status(503));
    let table = recorder.report(Duration::from_secs(1)).to_table();
    assert!(table.contains("2 requests in 1.00 s"), "{table}");
    assert!(
        table.lines().any(|line| line.starts_with("feed_100 ")),
        "{table}"
    );
    assert!(table.contains("errors with 503: 1"), "{table}");
}

#[test]
fn json_report_has_latency_fields() {
    let mut recorder = Recorder::default();
    recorder.record("feed", ms(7), Outcome::Status(200));
    let json = serde_json::to_value(recorder.report(Duration::from_secs(1))).unwrap();
    assert_eq!(json["requests"], 1);
    assert_eq!(json["operations"][0]["name"], "feed");
    assert!(json["operations"][0]["p99_ms"].as_f64().unwrap() > 6.9);
    assert!(json["seeding"].is_null());
}
