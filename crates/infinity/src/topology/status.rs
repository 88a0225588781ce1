//! `infinity status`: whether each recorded process is alive, a health
//! check per role, and a few figures.

use std::collections::BTreeMap;

use serde_json::Value;

use super::file::Topology;
use super::process::is_alive_as;
use super::redis_ping;
use super::state::{ProcessRecord, Role, State};

/// The result of checking one process.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// `alive`, `dead` or `external` (a server this run did not start).
    pub process: &'static str,
    pub healthy: bool,
    /// The health check's result and the process's figures.
    pub details: String,
}

impl Check {
    fn ok(&self) -> bool {
        self.process != "dead" && self.healthy
    }
}

/// Checks every process of `state`, prints one line each, and returns the
/// number of processes that are dead or failing their health check.
pub async fn print_status(state: &State, http: &reqwest::Client) -> usize {
    let servers = database_servers(state, http).await;
    let prefix = Topology::load(&state.topology_file)
        .ok()
        .and_then(|topology| topology.broker)
        .map_or_else(|| "infinity".to_string(), |broker| broker.prefix);
    println!(
        "{:<18} {:<17} {:>8}  {:<8} {:<7} {:>8}  details",
        "name", "role", "pid", "process", "health", "restarts"
    );
    let mut failing = 0;
    for record in &state.processes {
        let check = check(record, servers.as_ref(), &prefix, http).await;
        if !check.ok() {
            failing += 1;
        }
        let pid = record
            .pid
            .map_or_else(|| "-".to_string(), |pid| pid.to_string());
        println!(
            "{:<18} {:<17} {:>8}  {:<8} {:<7} {:>8}  {}",
            record.name,
            record.role.as_str(),
            pid,
            check.process,
            if check.healthy { "ok" } else { "failing" },
            record.restarts,
            check.details
        );
    }
    print_job_kinds(state, http).await;
    failing
}

/// Prints the per-kind job figures that the first answering node publishes
/// in `/metrics`: pending jobs, jobs done and dead in the last minute, jobs
/// waiting for a retry, and dead jobs.
async fn print_job_kinds(state: &State, http: &reqwest::Client) {
    for node in state.processes.iter().filter(|p| p.role == Role::Node) {
        let Some(url) = node.metrics_url.as_deref() else {
            continue;
        };
        let Ok(response) = http.get(url).send().await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        let kinds = job_kinds(&text);
        if kinds.is_empty() {
            return;
        }
        println!();
        println!(
            "{:<22} {:>8} {:>12} {:>9} {:>12} {:>6}",
            "job kind", "pending", "done/minute", "retrying", "dead/minute", "dead"
        );
        for (kind, figures) in kinds {
            let figure = |name: &str| figures.get(name).copied().unwrap_or(0.0);
            println!(
                "{:<22} {:>8} {:>12} {:>9} {:>12} {:>6}",
                kind,
                figure("pending"),
                figure("done_last_minute"),
                figure("retrying"),
                figure("dead_last_minute"),
                figure("dead")
            );
        }
        return;
    }
}

/// Reads the `infinity_job_kind{kind, figure}` gauges from Prometheus text:
/// the figures of each kind, ordered by kind.
pub fn job_kinds(text: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut kinds: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("infinity_job_kind{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let end = labels[start..].find('"')? + start;
            Some(labels[start..end].to_string())
        };
        let (Some(kind), Some(figure)) = (label("kind"), label("figure")) else {
            continue;
        };
        if let Ok(value) = value.trim().parse::<f64>() {
            kinds.entry(kind).or_default().insert(figure, value);
        }
    }
    kinds
}

/// Reports the ready messages in the broker's work, retry and dead-letter
/// queues, with passive declares.
async fn check_broker(record: &ProcessRecord, prefix: &str) -> (bool, String) {
    let Some(url) = record.url.as_deref() else {
        return (false, "no URL recorded".to_string());
    };
    let connection = match infinity_broker::connect(url, "infinity-status").await {
        Ok(connection) => connection,
        Err(error) => return (false, format!("connecting failed: {error}")),
    };
    let work = queue_depth(&connection, &format!("{prefix}.jobs")).await;
    let dead = queue_depth(&connection, &format!("{prefix}.dead")).await;
    let _ = connection.close(200, "status".into()).await;
    match (work, dead) {
        (Ok(work), Ok(dead)) => (
            true,
            format!("queue {prefix}.jobs: {work} ready, {prefix}.dead: {dead} dead letters"),
        ),
        (Err(error), _) | (_, Err(error)) => (true, format!("queues not declared yet ({error})")),
    }
}

/// Counts the ready messages of `queue` on a channel of its own, because a
/// passive declare of a missing queue closes its channel.
async fn queue_depth(connection: &lapin::Connection, queue: &str) -> Result<u32, String> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    let depth = infinity_broker::QueueNames::depth(&channel, queue)
        .await
        .map_err(|e| e.to_string());
    let _ = channel.close(200, "counted".into()).await;
    depth
}

/// Checks one process. `servers` is the `servers` array of a node's
/// `/readyz`, or the reason there is none.
async fn check(
    record: &ProcessRecord,
    servers: Result<&Vec<Value>, &String>,
    prefix: &str,
    http: &reqwest::Client,
) -> Check {
    let process = match record.pid {
        _ if record.external => "external",
        Some(pid) if is_alive_as(pid, record.role) => "alive",
        _ => "dead",
    };
    if process == "dead" {
        let details = match record.pid {
            Some(pid) => format!("pid {pid} has exited"),
            None => "not running".to_string(),
        };
        return Check {
            process,
            healthy: false,
            details,
        };
    }
    let (healthy, details) = match record.role {
        Role::Supervisor => (true, String::new()),
        Role::Node => check_node(record, http).await,
        Role::Lb => check_lb(record, http).await,
        Role::Redis => check_redis(record).await,
        Role::PostgresPrimary | Role::PostgresReplica => check_postgres(record, servers),
        Role::Broker => check_broker(record, prefix).await,
        // A worker serves nothing to check; the job figures show its work.
        Role::Worker => (true, String::new()),
    };
    Check {
        process,
        healthy,
        details,
    }
}

async fn check_node(record: &ProcessRecord, http: &reqwest::Client) -> (bool, String) {
    let url = record.url.as_deref().unwrap_or_default();
    let (healthy, mut details) = match http.get(format!("{url}/readyz")).send().await {
        Ok(response) => {
            let code = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let status = body["status"].as_str().unwrap_or("?").to_string();
            (
                code == reqwest::StatusCode::OK,
                format!("GET /readyz {} ({status})", code.as_u16()),
            )
        }
        Err(error) => (false, format!("GET /readyz failed: {}", error_text(&error))),
    };
    if let Some(total) = fetch_counter(http, record, "infinity_http_requests_total").await {
        details.push_str(&format!(", {total} HTTP requests"));
    }
    (healthy, details)
}

async fn check_lb(record: &ProcessRecord, http: &reqwest::Client) -> (bool, String) {
    let Some(url) = record.metrics_url.as_deref() else {
        return (false, "no metrics URL recorded".to_string());
    };
    match http.get(url).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => {
            let text = response.text().await.unwrap_or_default();
            let mut details = "GET /metrics 200".to_string();
            if let Some(total) = sum_metric(&text, "infinity_lb_requests_total") {
                details.push_str(&format!(", {total} proxied requests"));
            }
            (true, details)
        }
        Ok(response) => (
            false,
            format!("GET /metrics {}", response.status().as_u16()),
        ),
        Err(error) => (
            false,
            format!("GET /metrics failed: {}", error_text(&error)),
        ),
    }
}

async fn check_redis(record: &ProcessRecord) -> (bool, String) {
    let Some(address) = record.address.as_deref() else {
        return (false, "no address recorded".to_string());
    };
    // NOTE: the PING carries no AUTH, so a server that requires a password
    // replies -NOAUTH and counts as failing.
    match redis_ping(address).await {
        Ok(reply) => (reply == "+PONG", format!("PING {reply}")),
        Err(error) => (false, format!("PING failed: {error}")),
    }
}

/// Reports the role and lag that the nodes see for this server.
fn check_postgres(record: &ProcessRecord, servers: Result<&Vec<Value>, &String>) -> (bool, String) {
    let servers = match servers {
        Ok(servers) => servers,
        Err(reason) => return (false, reason.clone()),
    };
    let address = record.address.as_deref().unwrap_or_default();
    let prefix = format!("{address}/");
    let Some(server) = servers.iter().find(|server| {
        server["name"]
            .as_str()
            .is_some_and(|name| name.starts_with(&prefix))
    }) else {
        return (false, format!("the nodes' /readyz does not list {address}"));
    };
    let role = server["role"].as_str().unwrap_or("?");
    let expected = match record.role {
        Role::PostgresPrimary => "primary",
        _ => "replica",
    };
    let in_rotation = server["in_rotation"].as_bool().unwrap_or(false);
    let mut details = format!(
        "{role}, lag {:.3} s, {} bytes, {}",
        server["lag_seconds"].as_f64().unwrap_or(f64::NAN),
        server["lag_bytes"].as_u64().unwrap_or(0),
        if in_rotation {
            "in rotation"
        } else {
            "out of rotation"
        }
    );
    if let Some(error) = server["error"].as_str() {
        details.push_str(&format!(": {error}"));
    }
    if role != expected {
        details.push_str(&format!(" (started as the {expected})"));
    }
    (role == expected && in_rotation, details)
}

/// Returns the `servers` of the first node whose `/readyz` lists them, or
/// why there are none. SQLite topologies have no servers to list.
async fn database_servers(state: &State, http: &reqwest::Client) -> Result<Vec<Value>, String> {
    let mut last_error = "no node is running to report the database servers".to_string();
    for node in state.processes.iter().filter(|p| p.role == Role::Node) {
        let Some(url) = node.url.as_deref() else {
            continue;
        };
        match http.get(format!("{url}/readyz")).send().await {
            Ok(response) => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if let Some(servers) = body["checks"]["database"]["servers"].as_array() {
                    return Ok(servers.clone());
                }
                last_error = format!("{}'s /readyz lists no database servers", node.name);
            }
            Err(error) => {
                last_error = format!("{}'s /readyz failed: {}", node.name, error_text(&error));
            }
        }
    }
    Err(last_error)
}

async fn fetch_counter(http: &reqwest::Client, record: &ProcessRecord, name: &str) -> Option<f64> {
    let response = http.get(record.metrics_url.as_deref()?).send().await.ok()?;
    let text = response.text().await.ok()?;
    sum_metric(&text, name)
}

/// Adds up every sample of metric `name` in Prometheus text format, across
/// all label sets. Returns `None` when the text has no sample of it.
pub fn sum_metric(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labels) = rest.strip_prefix('{') {
            // Label values may contain spaces but not an unescaped '}' at the
            // end of the label set, which is the last '}' on the line.
            labels.rsplit_once('}').map(|(_, value)| value)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            // A longer name with the same prefix, such as `name_bucket`.
            None
        };
        let Some(value) = value.and_then(|v| v.split_whitespace().next()) else {
            continue;
        };
        if let Ok(value) = value.parse::<f64>() {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// Returns reqwest's error with its causes, which name the refused
/// connection or the timeout.
fn error_text(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# HELP infinity_http_requests_total HTTP requests.
# TYPE infinity_http_requests_total counter
infinity_http_requests_total{method=\"GET\",route=\"/api/articles\",status=\"200\"} 3
infinity_http_requests_total{method=\"POST\",route=\"/api/users\",status=\"201\"} 2
infinity_http_requests_total_extra 100
infinity_http_request_duration_seconds_bucket{le=\"0.1\"} 7
";

    #[test]
    fn sum_metric_adds_every_label_set() {
        assert_eq!(
            sum_metric(METRICS, "infinity_http_requests_total"),
            Some(5.0)
        );
    }

    #[test]
    fn sum_metric_without_labels() {
        assert_eq!(sum_metric("up 1\nup_other 7\n", "up"), Some(1.0));
    }

    #[test]
    fn job_kinds_reads_each_figure() {
        let text = "# TYPE infinity_job_kind gauge\n\
            infinity_job_kind{kind=\"media.variants\",figure=\"pending\"} 12\n\
            infinity_job_kind{kind=\"media.variants\",figure=\"done_last_minute\"} 300\n\
            infinity_job_kind{kind=\"email.welcome\",figure=\"dead\"} 1\n\
            infinity_jobs{state=\"dead\"} 1\n";
        let kinds = job_kinds(text);
        assert_eq!(kinds.len(), 2);
        assert_eq!(kinds["media.variants"]["pending"], 12.0);
        assert_eq!(kinds["media.variants"]["done_last_minute"], 300.0);
        assert_eq!(kinds["email.welcome"]["dead"], 1.0);
    }

    #[test]
    fn sum_metric_missing_is_none() {
        assert_eq!(sum_metric(METRICS, "infinity_lb_requests_total"), None);
    }

    fn postgres_record(role: Role, port: u16) -> ProcessRecord {
        ProcessRecord {
            name: "postgres".into(),
            role,
            pid: Some(1),
            address: Some(format!("127.0.0.1:{port}")),
            url: None,
            metrics_url: None,
            log: None,
            restarts: 0,
            started_at: None,
            external: false,
        }
    }

    #[test]
    fn postgres_check_reads_the_nodes_view() {
        let servers: Vec<Value> = serde_json::from_str(
            r#"[{"name":"127.0.0.1:5001/infinity","role":"primary","in_rotation":true,"lag_seconds":0.0,"lag_bytes":0,"error":null},
                {"name":"127.0.0.1:5002/infinity","role":"replica","in_rotation":false,"lag_seconds":9.5,"lag_bytes":4096,"error":"lag above the bound"}]"#,
        )
        .unwrap();
        let (healthy, details) =
            check_postgres(&postgres_record(Role::PostgresPrimary, 5001), Ok(&servers));
        assert!(healthy, "{details}");
        assert_eq!(details, "primary, lag 0.000 s, 0 bytes, in rotation");

        let (healthy, details) =
            check_postgres(&postgres_record(Role::PostgresReplica, 5002), Ok(&servers));
        assert!(!healthy, "{details}");
        assert_eq!(
            details,
            "replica, lag 9.500 s, 4096 bytes, out of rotation: lag above the bound"
        );

        let (healthy, details) =
            check_postgres(&postgres_record(Role::PostgresReplica, 5001), Ok(&servers));
        assert!(!healthy, "a primary where a replica was started: {details}");

        let (healthy, _) =
            check_postgres(&postgres_record(Role::PostgresReplica, 5003), Ok(&servers));
        assert!(!healthy, "a server the nodes do not list");
    }
}
