//! Recording of request outcomes and the report built from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms resolve: one hour, in microseconds. Longer ones are
/// recorded as one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target responded with this HTTP status.
    Status(u16),
    /// The request timed out before the whole response arrived.
    Timeout,
    /// The connection failed or broke.
    Transport,
}

/// Outcomes and latencies of one operation.
#[derive(Debug, Clone)]
struct OperationStats {
    latency_us: Histogram<u64>,
    ok: u64,
    rate_limited: u64,
    errors_by_status: BTreeMap<String, u64>,
}

impl OperationStats {
    fn new() -> Self {
        let latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("histogram bounds are valid constants");
        Self {
            latency_us,
            ok: 0,
            rate_limited: 0,
            errors_by_status: BTreeMap::new(),
        }
    }
}

/// Collects the outcome and latency of every request, per operation.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    operations: BTreeMap<String, OperationStats>,
}

impl Recorder {
    /// Records one request of `operation`. Every request counts towards the latency
    /// percentiles, failed ones included. A 429 counts as rate limited, not as an error.
    pub fn record(&mut self, operation: &str, latency: Duration, outcome: Outcome) {
        let stats = match self.operations.get_mut(operation) {
            Some(stats) => stats,
            None => self
                .operations
                .entry(operation.to_string())
                .or_insert_with(OperationStats::new),
        };
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        stats.latency_us.saturating_record(micros.max(1));

        match outcome {
            Outcome::Status(status) if (200..400).contains(&status) => stats.ok += 1,
            Outcome::Status(429) => stats.rate_limited += 1,
            Outcome::Status(status) => {
                *stats
                    .errors_by_status
                    .entry(status.to_string())
                    .or_default() += 1
            }
            Outcome::Timeout => *stats.errors_by_status.entry("timeout".into()).or_default() += 1,
            Outcome::Transport => {
                *stats
                    .errors_by_status
                    .entry("transport".into())
                    .or_default() += 1
            }
        }
    }

    /// Adds everything `other` recorded to this recorder.
    pub fn merge(&mut self, other: &Recorder) {
        for (name, theirs) in &other.operations {
            let ours = self
                .operations
                .entry(name.clone())
                .or_insert_with(OperationStats::new);
            ours.latency_us
                .add(&theirs.latency_us)
                .expect("histograms share the same bounds");
            ours.ok += theirs.ok;
            ours.rate_limited += theirs.rate_limited;
            for (key, count) in &theirs.errors_by_status {
                *ours.errors_by_status.entry(key.clone()).or_default() += count;
            }
        }
    }

    /// Total number of requests recorded.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.operations
            .values()
            .map(|stats| stats.latency_us.len())
            .sum()
    }

    /// Builds the report of a run that lasted `elapsed`.
    pub fn report(&self, elapsed: Duration) -> Report {
        let seconds = elapsed.as_secs_f64();
        let operations: Vec<OperationReport> = self
            .operations
            .iter()
            .map(|(name, stats)| operation_report(name, stats, seconds))
            .collect();

        let mut errors_by_status = BTreeMap::new();
        for operation in &operations {
            for (key, count) in &operation.errors_by_status {
                *errors_by_status.entry(key.clone()).or_default() += count;
            }
        }
        let requests = operations.iter().map(|operation| operation.count).sum();
        Report {
            elapsed_s: seconds,
            requests,
            ok: operations.iter().map(|operation| operation.ok).sum(),
            errors: operations.iter().map(|operation| operation.errors).sum(),
            rate_limited: operations
                .iter()
                .map(|operation| operation.rate_limited)
                .sum(),
            throughput_rps: per_second(requests, seconds),
            errors_by_status,
            operations,
            seeding: None,
        }
    }
}

fn operation_report(name: &str, stats: &OperationStats, seconds: f64) -> OperationReport {
    let histogram = &stats.latency_us;
    let millis = |micros: u64| micros as f64 / 1000.0;
    OperationReport {
        name: name.to_string(),
        count: histogram.len(),
        ok: stats.ok,
        errors: stats.errors_by_status.values().sum(),
        rate_limited: stats.rate_limited,
        throughput_rps: per_second(histogram.len(), seconds),
        mean_ms: histogram.mean() / 1000.0,
        p50_ms: millis(histogram.value_at_quantile(0.50)),
        p95_ms: millis(histogram.value_at_quantile(0.95)),
        p99_ms: millis(histogram.value_at_quantile(0.99)),
        max_ms: millis(histogram.max()),
        errors_by_status: stats.errors_by_status.clone(),
    }
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Result of a load run: totals, then one entry per operation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    pub requests: u64,
    /// Requests with a 2xx or 3xx response status.
    pub ok: u64,
    /// Requests that failed, not counting 429s.
    pub errors: u64,
    /// Requests with a 429 Too Many Requests response.
    pub rate_limited: u64,
    /// Requests per second over the whole run.
    pub throughput_rps: f64,
    /// Failed requests by HTTP status, or by "timeout" and "transport".
    pub errors_by_status: BTreeMap<String, u64>,
    pub operations: Vec<OperationReport>,
    /// Summary of seeding, when this invocation seeded.
    pub seeding: Option<SeedSummary>,
}

/// Counts and latency percentiles of one operation. Latencies are in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct OperationReport {
    pub name: String,
    pub count: u64,
    pub ok: u64,
    pub errors: u64,
    pub rate_limited: u64,
    pub throughput_rps: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors_by_status: BTreeMap<String, u64>,
}

/// Counts of what seeding created and of its failed requests.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SeedSummary {
    /// Wall time of seeding, in seconds.
    pub elapsed_s: f64,
    pub users: u64,
    pub follows: u64,
    pub articles: u64,
    pub comments: u64,
    pub favorites: u64,
    pub uploads: u64,
    /// Seeding requests that failed after retries.
    pub errors: u64,
    /// 429 responses received and waited out while seeding.
    pub rate_limited: u64,
}

impl Report {
    /// Renders the report as a text table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if let Some(seed) = &self.seeding {
            let _ = writeln!(
                out,
                "seeded in {:.1} s: {} users, {} follows, {} articles, {} comments, {} favourites, \
                 {} uploads, {} errors, {} rate limited",
                seed.elapsed_s, seed.users, seed.follows, seed.articles, seed.comments,
                seed.favorites, seed.uploads, seed.errors, seed.rate_limited
            );
        }
        let _ = writeln!(
            out,
            "{} requests in {:.2} s: {:.1} req/s, {} ok, {} errors, {} rate limited (429)",
            self.requests,
            self.elapsed_s,
            self.throughput_rps,
            self.ok,
            self.errors,
            self.rate_limited
        );
        let _ = writeln!(
            out,
            "{:<18} {:>8} {:>9} {:>7} {:>5} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "req/s", "errors", "429", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for op in &self.operations {
            let _ = writeln!(
                out,
                "{:<18} {:>8} {:>9.1} {:>7} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                op.name,
                op.count,
                op.throughput_rps,
                op.errors,
                op.rate_limited,
                op.p50_ms,
                op.p95_ms,
                op.p99_ms,
                op.max_ms
            );
        }
        for (status, count) in &self.errors_by_status {
            let _ = writeln!(out, "errors with {status}: {count}");
        }
        out
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
