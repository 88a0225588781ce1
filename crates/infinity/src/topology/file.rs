//! The topology file: a TOML description of a local deployment, and its
//! validation into a [`Topology`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::config::MAX_WORKERS;

/// The maximum `nodes.count`. Every node is a full process on this machine.
pub const MAX_NODES: usize = 32;
/// The maximum `database.replicas` of a private cluster.
pub const MAX_REPLICAS: usize = 8;
/// The maximum drain period, in seconds, of a node or the balancer.
pub const MAX_DRAIN_SECONDS: u64 = 300;

const DEFAULT_NODES: usize = 1;
const DEFAULT_WORKERS: usize = 2;
const DEFAULT_DRAIN_SECONDS: u64 = 2;
const DEFAULT_REPLICAS: usize = 1;
/// The maximum `workers.count`. Every worker is a full process on this
/// machine.
pub const MAX_WORKER_PROCESSES: usize = 32;

/// The file as written: every key optional, unknown keys rejected.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    #[serde(default)]
    nodes: NodesSection,
    #[serde(default)]
    database: DatabaseSection,
    redis: Option<RedisSection>,
    lb: Option<LbSection>,
    workers: Option<WorkersSection>,
    broker: Option<BrokerSection>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct WorkersSection {
    count: Option<usize>,
    concurrency: Option<usize>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct BrokerSection {
    url: Option<String>,
    prefix: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct NodesSection {
    count: Option<usize>,
    workers: Option<usize>,
    drain_seconds: Option<u64>,
    data_dir: Option<PathBuf>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    engine: Option<String>,
    replicas: Option<usize>,
    url: Option<String>,
    replica_urls: Option<Vec<String>>,
    synchronous: Option<bool>,
    max_replica_lag_seconds: Option<f64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RedisSection {
    url: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct LbSection {
    listen: Option<String>,
    metrics_listen: Option<String>,
    policy: Option<String>,
    drain_seconds: Option<u64>,
}

/// A validated topology. Paths are absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// The topology file, absolute.
    pub file: PathBuf,
    pub nodes: Nodes,
    pub database: Database,
    pub redis: Option<Redis>,
    pub lb: Option<Lb>,
    pub workers: Option<Workers>,
    pub broker: Option<Broker>,
}

/// Worker processes (`infinity worker`), apart from the nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Workers {
    pub count: usize,
    /// Jobs each worker process runs at once.
    pub concurrency: usize,
}

/// RabbitMQ as the job queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Broker {
    /// `None` starts a private `rabbitmq-server` on free loopback ports.
    pub url: Option<String>,
    pub prefix: String,
}

/// The API nodes: `infinity serve` processes on free loopback ports.
#[derive(Debug, Clone, PartialEq)]
pub struct Nodes {
    pub count: usize,
    /// Background job workers in each node.
    pub workers: usize,
    pub drain_seconds: u64,
    /// The data folder that every node shares, or `None` for `RUN/data`.
    pub data_dir: Option<PathBuf>,
}

/// The nodes' database engine and its servers.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    /// SQLite in the nodes' data folder.
    Sqlite,
    /// PostgreSQL servers that the supervisor starts and removes.
    PrivatePostgres {
        replicas: usize,
        synchronous: bool,
        max_replica_lag_seconds: Option<f64>,
    },
    /// PostgreSQL servers that run already. The supervisor only connects the
    /// nodes to them.
    ExistingPostgres {
        url: String,
        replica_urls: Vec<String>,
        synchronous: bool,
        max_replica_lag_seconds: Option<f64>,
    },
}

/// The Redis shared tier.
#[derive(Debug, Clone, PartialEq)]
pub enum Redis {
    /// A `redis-server` that the supervisor starts on a free loopback port.
    Private,
    /// A server that runs already, as `redis://HOST[:PORT][/DB]`.
    Existing { url: String },
}

/// The load balancer in front of the nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Lb {
    /// `None` picks a free loopback port at start.
    pub listen: Option<SocketAddr>,
    /// `None` picks a free loopback port at start.
    pub metrics_listen: Option<SocketAddr>,
    pub policy: String,
    pub drain_seconds: u64,
}

const POLICIES: [&str; 2] = ["round-robin", "least-connections"];

impl Topology {
    /// Reads and validates a topology file. Errors are one line that names
    /// the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<Topology> {
        let file = std::path::absolute(path)
            .with_context(|| format!("invalid topology file path {}", path.display()))?;
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read the topology file {}", file.display()))?;
        Self::parse(&text, &file)
    }

    /// Validates the text of the topology file at `file`, which must be
    /// absolute. Relative paths in the text are relative to `file`'s folder.
    pub fn parse(text: &str, file: &Path) -> anyhow::Result<Topology> {
        let raw: TopologyFile = toml::from_str(text).map_err(|error| {
            // toml's messages span several lines with a source excerpt. The key
            // and the message's lines joined with commas fit on one line.
            let message = error
                .message()
                .trim()
                .lines()
                .collect::<Vec<_>>()
                .join(", ");
            match error.span().and_then(|span| key_at(text, span.start)) {
                Some(key) => anyhow::anyhow!("invalid {key} in {}: {message}", file.display()),
                None => anyhow::anyhow!("invalid topology file {}: {message}", file.display()),
            }
        })?;
        let folder = file.parent().unwrap_or(Path::new("/"));
        let invalid = Invalid { file };

        let count = raw.nodes.count.unwrap_or(DEFAULT_NODES);
        if !(1..=MAX_NODES).contains(&count) {
            return Err(invalid.value("nodes.count", &count, &format!("must be 1 to {MAX_NODES}")));
        }
        let workers = raw.nodes.workers.unwrap_or(DEFAULT_WORKERS);
        if workers > MAX_WORKERS {
            return Err(invalid.value(
                "nodes.workers",
                &workers,
                &format!("must be 0 to {MAX_WORKERS}"),
            ));
        }
        let drain_seconds = raw.nodes.drain_seconds.unwrap_or(DEFAULT_DRAIN_SECONDS);
        if drain_seconds > MAX_DRAIN_SECONDS {
            return Err(invalid.value(
                "nodes.drain_seconds",
                &drain_seconds,
                &format!("must be 0 to {MAX_DRAIN_SECONDS}"),
            ));
        }
        let nodes = Nodes {
            count,
            workers,
            drain_seconds,
            data_dir: raw.nodes.data_dir.map(|dir| folder.join(dir)),
        };

        let database = parse_database(raw.database, &invalid)?;
        let redis = raw
            .redis
            .map(|section| parse_redis(section, &invalid))
            .transpose()?;
        let lb = raw
            .lb
            .map(|section| parse_lb(section, drain_seconds, &invalid))
            .transpose()?;
        let workers = raw
            .workers
            .map(|section| parse_workers(section, &invalid))
            .transpose()?;
        let broker = raw
            .broker
            .map(|section| parse_broker(section, &invalid))
            .transpose()?;
        Ok(Topology {
            file: file.to_path_buf(),
            nodes,
            database,
            redis,
            lb,
            workers,
            broker,
        })
    }
}

/// Builds the one-line errors of [`Topology::parse`].
struct Invalid<'a> {
    file: &'a Path,
}

impl Invalid<'_> {
    /// Returns an error for `key = value`.
    fn value(&self, key: &str, value: &dyn std::fmt::Debug, reason: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "invalid {key} = {value:?} in {}: {reason}",
            self.file.display()
        )
    }

    /// Returns an error for a key whose presence is the fault.
    fn key(&self, key: &str, reason: &str) -> anyhow::Error {
        anyhow::anyhow!("invalid {key} in {}: {reason}", self.file.display())
    }
}

fn parse_database(section: DatabaseSection, invalid: &Invalid) -> anyhow::Result<Database> {
    let engine = section.engine.as_deref().unwrap_or("sqlite");
    let synchronous = section.synchronous.unwrap_or(false);
    if let Some(lag) = section.max_replica_lag_seconds {
        // The nodes accept the same range for --max-replica-lag.
        if !(lag > 0.0 && lag <= 300.0) {
            return Err(invalid.value(
                "database.max_replica_lag_seconds",
                &lag,
                "must be above 0 and at most 300",
            ));
        }
    }
    match engine {
        "sqlite" => {
            let postgres_only = [
                ("database.replicas", section.replicas.is_some()),
                ("database.url", section.url.is_some()),
                ("database.replica_urls", section.replica_urls.is_some()),
                ("database.synchronous", section.synchronous.is_some()),
                (
                    "database.max_replica_lag_seconds",
                    section.max_replica_lag_seconds.is_some(),
                ),
            ];
            if let Some((key, _)) = postgres_only.iter().find(|(_, set)| *set) {
                return Err(invalid.key(
                    key,
                    "applies only to engine = \"postgres\", and the engine is sqlite",
                ));
            }
            Ok(Database::Sqlite)
        }
        "postgres" => match section.url {
            Some(url) => {
                if section.replicas.is_some() {
                    return Err(invalid.value(
                        "database.replicas",
                        &section.replicas.unwrap_or_default(),
                        "sets the private cluster's replicas, and database.url names an existing \
                         server: list its replicas in database.replica_urls instead",
                    ));
                }
                check_postgres_url("database.url", &url, invalid)?;
                let replica_urls = section.replica_urls.unwrap_or_default();
                for replica in &replica_urls {
                    check_postgres_url("database.replica_urls", replica, invalid)?;
                }
                if synchronous && replica_urls.is_empty() {
                    return Err(invalid.value(
                        "database.synchronous",
                        &true,
                        "needs at least one replica in database.replica_urls",
                    ));
                }
                Ok(Database::ExistingPostgres {
                    url,
                    replica_urls,
                    synchronous,
                    max_replica_lag_seconds: section.max_replica_lag_seconds,
                })
            }
            None => {
                if let Some(urls) = section.replica_urls {
                    return Err(invalid.value(
                        "database.replica_urls",
                        &urls,
                        "needs database.url, the primary the replicas follow",
                    ));
                }
                let replicas = section.replicas.unwrap_or(DEFAULT_REPLICAS);
                if replicas > MAX_REPLICAS {
                    return Err(invalid.value(
                        "database.replicas",
                        &replicas,
                        &format!("must be 0 to {MAX_REPLICAS}"),
                    ));
                }
                if synchronous && replicas == 0 {
                    return Err(invalid.value(
                        "database.synchronous",
                        &true,
                        "needs database.replicas of 1 or more",
                    ));
                }
                Ok(Database::PrivatePostgres {
                    replicas,
                    synchronous,
                    max_replica_lag_seconds: section.max_replica_lag_seconds,
                })
            }
        },
        other => Err(invalid.value(
            "database.engine",
            &other,
            "expected \"sqlite\" or \"postgres\"",
        )),
    }
}

fn check_postgres_url(key: &str, url: &str, invalid: &Invalid) -> anyhow::Result<()> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid.key(key, "expected postgres://USER@HOST:PORT/DB"));
    }
    // The URL may contain a password, so the message shows only the store's
    // error, which hides it.
    infinity_store::server_name(url).map_err(|error| invalid.key(key, &error.to_string()))?;
    Ok(())
}

fn parse_workers(section: WorkersSection, invalid: &Invalid) -> anyhow::Result<Workers> {
    let count = section.count.unwrap_or(1);
    if !(1..=MAX_WORKER_PROCESSES).contains(&count) {
        return Err(invalid.value(
            "workers.count",
            &count,
            &format!("must be 1 to {MAX_WORKER_PROCESSES}"),
        ));
    }
    let concurrency = section.concurrency.unwrap_or(DEFAULT_WORKERS);
    if !(1..=MAX_WORKERS).contains(&concurrency) {
        return Err(invalid.value(
            "workers.concurrency",
            &concurrency,
            &format!("must be 1 to {MAX_WORKERS}"),
        ));
    }
    Ok(Workers { count, concurrency })
}

fn parse_broker(section: BrokerSection, invalid: &Invalid) -> anyhow::Result<Broker> {
    if let Some(url) = &section.url {
        // The message leaves the URL out, since it may contain a password.
        infinity_broker::check_url(url).map_err(|_| {
            invalid.key(
                "broker.url",
                "expected amqp://USER:PASSWORD@HOST:PORT[/VHOST]",
            )
        })?;
    }
    let prefix = section.prefix.unwrap_or_else(|| "infinity".to_string());
    let valid = !prefix.is_empty()
        && prefix.len() <= 100
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(invalid.value(
            "broker.prefix",
            &prefix,
            "use 1 to 100 letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(Broker {
        url: section.url,
        prefix,
    })
}

fn parse_redis(section: RedisSection, invalid: &Invalid) -> anyhow::Result<Redis> {
    match section.url {
        None => Ok(Redis::Private),
        Some(url) => {
            if redis_address(&url).is_none() {
                return Err(invalid.key(
                    "redis.url",
                    "expected redis://[USER:PASSWORD@]HOST[:PORT][/DB]",
                ));
            }
            Ok(Redis::Existing { url })
        }
    }
}

/// Returns `HOST:PORT` of a `redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]`
/// URL, with Redis's default port 6379.
pub fn redis_address(url: &str) -> Option<String> {
    let rest = url.strip_prefix("redis://")?;
    let authority = rest.split('/').next()?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host_port.is_empty() {
        return None;
    }
    // A bracketed IPv6 host contains colons of its own.
    let has_port = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].contains(':'),
        None => host_port.contains(':'),
    };
    if has_port {
        let (_, port) = host_port.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        Some(host_port.to_string())
    } else {
        Some(format!("{host_port}:6379"))
    }
}

fn parse_lb(section: LbSection, node_drain_seconds: u64, invalid: &Invalid) -> anyhow::Result<Lb> {
    let address = |key: &str, text: Option<String>| -> anyhow::Result<Option<SocketAddr>> {
        let Some(text) = text else {
            return Ok(None);
        };
        let address: SocketAddr = text
            .parse()
            .map_err(|_| invalid.value(key, &text, "expected IP:PORT, as in 127.0.0.1:8000"))?;
        if address.port() == 0 {
            return Err(invalid.value(
                key,
                &text,
                "port 0 is not allowed because clients need a fixed port: name one, or remove \
                 the key to have a free port picked at start",
            ));
        }
        Ok(Some(address))
    };
    let listen = address("lb.listen", section.listen)?;
    let metrics_listen = address("lb.metrics_listen", section.metrics_listen)?;
    if listen.is_some() && listen == metrics_listen {
        return Err(invalid.value(
            "lb.metrics_listen",
            &metrics_listen,
            "must differ from lb.listen",
        ));
    }
    let policy = section.policy.unwrap_or_else(|| POLICIES[0].to_string());
    if !POLICIES.contains(&policy.as_str()) {
        return Err(invalid.value(
            "lb.policy",
            &policy,
            "expected \"round-robin\" or \"least-connections\"",
        ));
    }
    let drain_seconds = section.drain_seconds.unwrap_or(node_drain_seconds);
    if drain_seconds > MAX_DRAIN_SECONDS {
        return Err(invalid.value(
            "lb.drain_seconds",
            &drain_seconds,
            &format!("must be 0 to {MAX_DRAIN_SECONDS}"),
        ));
    }
    Ok(Lb {
        listen,
        metrics_listen,
        policy,
        drain_seconds,
    })
}

/// Returns the dotted key (`nodes.count`) or table (`[lb]`) on the line of
/// byte `offset`, so that an error whose message names only a type also
/// names the key.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return Some(line.split('#').next()?.trim().to_string());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('[') && !line.starts_with("[["))
        .and_then(|header| header.split('#').next())
        .map(|header| {
            header
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
        });
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Topology> {
        Topology::parse(text, Path::new("/srv/topologies/local.toml"))
    }

    fn error(text: &str) -> String {
        let message = parse(text).unwrap_err().to_string();
        assert!(!message.contains('\n'), "not one line: {message}");
        message
    }

    #[test]
    fn empty_file_is_one_sqlite_node() {
        let topology = parse("").unwrap();
        assert_eq!(
            topology.nodes,
            Nodes {
                count: 1,
                workers: 2,
                drain_seconds: 2,
                data_dir: None
            }
        );
        assert_eq!(topology.database, Database::Sqlite);
        assert_eq!(topology.redis, None);
        assert_eq!(topology.lb, None);
    }

    #[test]
    fn full_file_parses() {
        let topology = parse(
            "[nodes]\ncount = 2\nworkers = 1\ndrain_seconds = 3\ndata_dir = \"data\"\n\
             [database]\nengine = \"postgres\"\nreplicas = 2\nsynchronous = true\n\
             [redis]\n\
             [lb]\nlisten = \"127.0.0.1:8000\"\npolicy = \"least-connections\"\n",
        )
        .unwrap();

        assert_eq!(topology.nodes.count, 2);
        assert_eq!(topology.nodes.workers, 1);
        assert_eq!(
            topology.nodes.data_dir,
            Some(PathBuf::from("/srv/topologies/data"))
        );
        assert_eq!(
            topology.database,
            Database::PrivatePostgres {
                replicas: 2,
                synchronous: true,
                max_replica_lag_seconds: None
            }
        );
        assert_eq!(topology.redis, Some(Redis::Private));

        let lb = topology.lb.unwrap();
        assert_eq!(lb.listen, Some("127.0.0.1:8000".parse().unwrap()));
        assert_eq!(lb.metrics_listen, None);
        assert_eq!(lb.policy, "least-connections");
        assert_eq!(
            lb.drain_seconds, 3,
            "the balancer drains as long as the nodes"
        );
    }

    #[test]
    fn existing_servers_parse() {
        let topology = parse(
            "[database]\nengine = \"postgres\"\nurl = \"postgres://app@127.0.0.1:5433/infinity\"\n\
             replica_urls = [\"postgres://app@127.0.0.1:5434/infinity\"]\n\
             [redis]\nurl = \"redis://127.0.0.1:6380\"\n",
        )
        .unwrap();
        assert_eq!(
            topology.database,
            Database::ExistingPostgres {
                url: "postgres://app@127.0.0.1:5433/infinity".into(),
                replica_urls: vec!["postgres://app@127.0.0.1:5434/infinity".into()],
                synchronous: false,
                max_replica_lag_seconds: None
            }
        );
        assert_eq!(
            topology.redis,
            Some(Redis::Existing {
                url: "redis://127.0.0.1:6380".into()
            })
        );
    }

    #[test]
    fn workers_and_broker_sections() {
        let file = Path::new("/srv/phase-6.toml");
        let topology = Topology::parse("[workers]\ncount = 3\n[broker]\n", file).unwrap();
        assert_eq!(
            topology.workers,
            Some(Workers {
                count: 3,
                concurrency: DEFAULT_WORKERS
            })
        );
        assert_eq!(
            topology.broker,
            Some(Broker {
                url: None,
                prefix: "infinity".into()
            })
        );
        let existing = "[broker]\nurl = \"amqp://u:p@127.0.0.1:5673/%2f\"\nprefix = \"x\"\n";
        let topology = Topology::parse(existing, file).unwrap();
        let broker = topology.broker.unwrap();
        assert_eq!(broker.url.as_deref(), Some("amqp://u:p@127.0.0.1:5673/%2f"));
        assert_eq!(broker.prefix, "x");
        assert_eq!(topology.workers, None);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[nodes]\ncout = 2\n", "nodes.cout"),
            ("[nodes]\ncount = 0\n", "nodes.count"),
            ("[nodes]\ncount = \"two\"\n", "nodes.count"),
            ("[nodes]\nworkers = 65\n", "nodes.workers"),
            ("[nodez]\ncount = 1\n", "nodez"),
            ("[workers]\ncount = 0\n", "workers.count"),
            ("[workers]\nconcurrency = 0\n", "workers.concurrency"),
            ("[broker]\nurl = \"http://x\"\n", "broker.url"),
            ("[broker]\nprefix = \"a b\"\n", "broker.prefix"),
            ("[database]\nengine = \"mysql\"\n", "database.engine"),
            ("[database]\nreplicas = 1\n", "database.replicas"),
            (
                "[database]\nengine = \"postgres\"\nreplicas = 0\nsynchronous = true\n",
                "database.synchronous",
            ),
            (
                "[database]\nengine = \"postgres\"\nurl = \"mysql://x\"\n",
                "database.url",
            ),
            (
                "[database]\nengine = \"postgres\"\nreplica_urls = [\"postgres://a@b/c\"]\n",
                "database.replica_urls",
            ),
            ("[redis]\nurl = \"http://x\"\n", "redis.url"),
            ("[lb]\nlisten = \"127.0.0.1:0\"\n", "lb.listen"),
            ("[lb]\nlisten = \"localhost\"\n", "lb.listen"),
            ("[lb]\npolicy = \"random\"\n", "lb.policy"),
            (
                "[lb]\nlisten = \"127.0.0.1:8000\"\nmetrics_listen = \"127.0.0.1:8000\"\n",
                "lb.metrics_listen",
            ),
        ];
        for (text, key) in cases {
            let message = error(text);
            assert!(message.contains(key), "{text:?}: {message}");
            assert!(
                message.contains("/srv/topologies/local.toml"),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn redis_addresses() {
        assert_eq!(
            redis_address("redis://127.0.0.1:6380").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(
            redis_address("redis://cache/2").as_deref(),
            Some("cache:6379")
        );
        assert_eq!(
            redis_address("redis://user:secret@127.0.0.1:7000/0").as_deref(),
            Some("127.0.0.1:7000")
        );
        assert_eq!(
            redis_address("redis://[::1]:7000").as_deref(),
            Some("[::1]:7000")
        );
        assert_eq!(
            redis_address("redis://[::1]").as_deref(),
            Some("[::1]:6379")
        );
        assert_eq!(redis_address("redis://host:port"), None);
        assert_eq!(redis_address("http://host"), None);
        assert_eq!(redis_address("redis://"), None);
    }
}
