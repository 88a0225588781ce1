//! Settings of `infinity serve`: command-line flags, `INFINITY_*`
//! environment variables and an optional TOML file, in that order of
//! precedence, over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use infinity_store::PostgresOptions;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./infinity-data";
pub const DEFAULT_CONFIG_FILE: &str = "infinity.toml";
/// The maximum number of jobs one process runs at once, because each may keep a
/// decoded photo in memory.
pub const MAX_WORKERS: usize = 64;

/// Flags shared by the roles that serve HTTP.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address and port to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "INFINITY_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Folder for the database, media and outbox [default: ./infinity-data]
    #[arg(long, env = "INFINITY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Database URL: sqlite:PATH, or postgres://USER@HOST:PORT/DB for the
    /// PostgreSQL primary [default: sqlite:DATA_DIR/infinity.db]
    #[arg(long, env = "INFINITY_DATABASE", value_name = "URL")]
    pub database: Option<String>,

    #[command(flatten)]
    pub replication: ReplicationArgs,

    /// Redis shared by every node, as redis://HOST:PORT: login sessions in
    /// front of the database, login rate limits, Idempotency-Key records,
    /// session write positions, cache invalidations and, on PostgreSQL, a
    /// second cache level [default: none, node-local]
    #[arg(long, env = "INFINITY_REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,

    /// TOML settings file [default: ./infinity.toml when it exists]
    #[arg(long, env = "INFINITY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Seconds between failing /readyz and closing the listener at shutdown,
    /// so a load balancer can take the node out of rotation first [default: 0]
    #[arg(long, env = "INFINITY_DRAIN_SECONDS", value_name = "SECONDS")]
    pub drain_seconds: Option<u64>,

    /// Mount GET and PUT /bench/bare, a handler that returns stored bytes, for
    /// benchmarks. Any client can replace the bytes, so keep it off on a
    /// public server
    #[arg(long, env = "INFINITY_BENCH_ROUTES")]
    pub bench_routes: bool,

    #[command(flatten)]
    pub jobs: JobArgs,
}

/// PostgreSQL flags: replicas for reads and how they are used.
#[derive(Args, Debug, Clone, Default)]
pub struct ReplicationArgs {
    /// A streaming replica of the PostgreSQL primary, for reads; repeat the
    /// flag, or separate URLs with commas in the environment variable
    #[arg(
        long = "replica",
        env = "INFINITY_REPLICAS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub replicas: Vec<String>,

    /// Seconds a replica may fall behind the primary before it stops serving
    /// reads [default: 5]
    #[arg(long, env = "INFINITY_MAX_REPLICA_LAG", value_name = "SECONDS")]
    pub max_replica_lag: Option<f64>,

    /// Refuse to start unless the primary confirms each commit with a
    /// synchronous standby (its synchronous_standby_names is set), so that
    /// no acknowledged write is lost when the primary dies
    #[arg(long, env = "INFINITY_SYNCHRONOUS_REPLICATION")]
    pub synchronous_replication: bool,

    /// Connections to each PostgreSQL server [default: 16]
    #[arg(long, env = "INFINITY_DB_CONNECTIONS", value_name = "N")]
    pub db_connections: Option<u32>,
}

/// Flags of the roles that run background jobs.
#[derive(Args, Debug, Clone, Default)]
pub struct JobArgs {
    /// Jobs run at once in this process; 0 runs none here, for a node whose
    /// jobs run in `infinity worker` [default: 2]
    #[arg(long, env = "INFINITY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// SMTP server for e-mail, as smtp://HOST[:PORT] (sent without TLS);
    /// without it, e-mail is written as .eml files to DATA_DIR/outbox
    #[arg(long, env = "INFINITY_SMTP_URL", value_name = "URL")]
    pub smtp_url: Option<String>,

    /// Sender of e-mail [default: Infinity <no-reply@infinity.invalid>]
    #[arg(long, env = "INFINITY_MAIL_FROM", value_name = "ADDRESS")]
    pub mail_from: Option<String>,

    /// Seconds a worker holds a job before another may take it, unless the
    /// worker extends the lease while the job runs [default: 30]
    #[arg(long, env = "INFINITY_JOB_LEASE_SECONDS", value_name = "SECONDS")]
    pub job_lease_seconds: Option<u64>,

    /// Attempts before a failing job moves to the dead jobs [default: 5]
    #[arg(long, env = "INFINITY_JOB_MAX_ATTEMPTS", value_name = "N")]
    pub job_max_attempts: Option<u32>,

    /// RabbitMQ as the job queue, as amqp://USER:PASSWORD@HOST:PORT[/VHOST]:
    /// jobs are relayed from the database's outbox to the broker, and
    /// workers consume them there [default: none, the embedded queue]
    #[arg(long, env = "INFINITY_BROKER", value_name = "URL")]
    pub broker: Option<String>,

    /// The first part of every queue name on the broker, so that several
    /// deployments can share one broker [default: infinity]
    #[arg(long, env = "INFINITY_BROKER_PREFIX", value_name = "NAME")]
    pub broker_prefix: Option<String>,

    /// Maximum unacknowledged messages a worker process takes from the
    /// broker [default: twice --workers]
    #[arg(long, env = "INFINITY_PREFETCH", value_name = "N")]
    pub prefetch: Option<u16>,
}

/// The TOML file's keys; every one is optional.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    replicas: Option<Vec<String>>,
    redis_url: Option<String>,
    max_replica_lag_seconds: Option<f64>,
    synchronous_replication: Option<bool>,
    db_connections: Option<u32>,
    drain_seconds: Option<u64>,
    cache_entries: Option<u64>,
    cache_ttl_seconds: Option<u64>,
    session_days: Option<u64>,
    login_attempts_per_minute_per_account: Option<u32>,
    login_attempts_per_minute_per_address: Option<u32>,
    trusted_proxies: Option<Vec<String>>,
    public_url: Option<String>,
    workers: Option<usize>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
    job_lease_seconds: Option<u64>,
    job_max_attempts: Option<u32>,
    broker_url: Option<String>,
    broker_prefix: Option<String>,
    prefetch: Option<u16>,
    broker_delivery_limit: Option<u32>,
}

/// The database engine and its location.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(PostgresOptions),
}

impl Database {
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite ({})", path.display()),
            Database::Postgres(options) => {
                let primary = infinity_store::server_name(&options.primary)
                    .unwrap_or_else(|_| "?".to_string());
                match options.replicas.len() {
                    0 => format!("postgres ({primary})"),
                    1 => format!("postgres ({primary}, 1 replica)"),
                    n => format!("postgres ({primary}, {n} replicas)"),
                }
            }
        }
    }
}

/// The largest accepted replica lag bound. Sessions keep their write
/// positions for 15 minutes, which must outlast any lag a replica in
/// rotation can have.
const MAX_REPLICA_LAG_BOUND: f64 = 300.0;

/// Settings after merging every source.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: Database,
    /// The shared Redis server, if any.
    pub redis: Option<String>,
    pub drain: Duration,
    pub api: infinity_api::ApiConfig,
    /// Prefix of media URLs; empty for URLs relative to the API's host.
    pub public_url: String,
    pub jobs: JobSettings,
}

/// Background-job settings after merging every source.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub workers: usize,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub lease: Duration,
    pub max_attempts: u32,
    /// RabbitMQ, when it is the job queue.
    pub broker: Option<BrokerSettings>,
}

/// RabbitMQ settings after merging every source.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub url: String,
    pub prefix: String,
    pub prefetch: u16,
    /// Deliveries of one message before the broker dead-letters it.
    pub delivery_limit: u32,
}

impl ServeArgs {
    /// Merges flags and environment (already in `self`), the TOML file and
    /// the defaults. An invalid value fails with a message naming the setting.
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let file = self.load_file()?;
        let listen = match (self.listen, &file.listen) {
            (Some(listen), _) => listen,
            (None, Some(text)) => text.parse().with_context(|| {
                format!("invalid listen = {text:?} in the settings file: expected ADDR:PORT")
            })?,
            (None, None) => DEFAULT_LISTEN.parse().expect("the default address parses"),
        };
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let database = match self.database.as_ref().or(file.database.as_ref()) {
            Some(url) => parse_database(url)?,
            None => Database::Sqlite(data_dir.join("infinity.db")),
        };
        let database = self.replication.apply(database, &file)?;
        let mut api = infinity_api::ApiConfig {
            bench_routes: self.bench_routes,
            ..Default::default()
        };
        if let Some(entries) = file.cache_entries {
            api.cache.entries = entries;
        }
        if let Some(seconds) = file.cache_ttl_seconds {
            if seconds == 0 {
                bail!("invalid cache_ttl_seconds = 0 in the settings file: must be at least 1");
            }
            api.cache.ttl = Duration::from_secs(seconds);
        }
        if let Some(days) = file.session_days {
            if days == 0 {
                bail!("invalid session_days = 0 in the settings file: must be at least 1");
            }
            api.session_ttl = Duration::from_secs(days * 24 * 3600);
        }
        if let Some(rate) = file.login_attempts_per_minute_per_account {
            api.login_per_account.per_minute = rate;
            api.login_per_account.burst = rate;
        }
        if let Some(rate) = file.login_attempts_per_minute_per_address {
            api.login_per_address.per_minute = rate;
            api.login_per_address.burst = rate;
        }
        if let Some(networks) = &file.trusted_proxies {
            api.trusted_proxies = networks
                .iter()
                .map(|network| parse_network(network))
                .collect::<anyhow::Result<_>>()?;
        }
        let jobs = self.jobs.resolve(&file)?;
        let public_url = file.public_url.clone().unwrap_or_default();
        if !public_url.is_empty() && !public_url.starts_with("http") {
            bail!("invalid public_url = {public_url:?} in the settings file: expected http(s)://HOST[:PORT]");
        }
        let redis = self.redis.clone().or(file.redis_url.clone());
        if let Some(url) = &redis {
            if !url.starts_with("redis://") {
                bail!("invalid Redis URL {url:?} (--redis): expected redis://HOST:PORT");
            }
        }
        Ok(Settings {
            listen,
            data_dir,
            database,
            redis,
            drain: Duration::from_secs(self.drain_seconds.or(file.drain_seconds).unwrap_or(0)),
            api,
            public_url: public_url.trim_end_matches('/').to_string(),
            jobs,
        })
    }

    fn load_file(&self) -> anyhow::Result<FileSettings> {
        let (path, required) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        if !required && !path.exists() {
            return Ok(FileSettings::default());
        }
        read_file(&path)
    }
}

impl ReplicationArgs {
    /// Adds the replica settings to a PostgreSQL database, and rejects them
    /// for SQLite, which has no replicas.
    fn apply(&self, database: Database, file: &FileSettings) -> anyhow::Result<Database> {
        let replicas = if self.replicas.is_empty() {
            file.replicas.clone().unwrap_or_default()
        } else {
            self.replicas.clone()
        };
        let synchronous =
            self.synchronous_replication || file.synchronous_replication == Some(true);
        let mut options = match database {
            Database::Postgres(options) => options,
            Database::Sqlite(path) => {
                if !replicas.is_empty() || synchronous {
                    bail!("invalid replica settings: replicas need a postgres:// database, and the database is sqlite");
                }
                return Ok(Database::Sqlite(path));
            }
        };
        for url in &replicas {
            if !is_postgres_url(url) {
                bail!("invalid replica {url:?}: expected postgres://USER@HOST:PORT/DB");
            }
            check_postgres_url(url)?;
        }
        options.replicas = replicas;
        options.synchronous = synchronous;
        if let Some(lag) = self.max_replica_lag.or(file.max_replica_lag_seconds) {
            if !(lag > 0.0 && lag <= MAX_REPLICA_LAG_BOUND) {
                bail!("invalid max replica lag of {lag} seconds (--max-replica-lag): must be above 0 and at most {MAX_REPLICA_LAG_BOUND}");
            }
            options.max_replica_lag = Duration::from_secs_f64(lag);
        }
        if let Some(connections) = self.db_connections.or(file.db_connections) {
            if connections == 0 || connections > 1000 {
                bail!("invalid db connections {connections} (--db-connections): must be 1 to 1000");
            }
            options.connections = connections;
        }
        Ok(Database::Postgres(options))
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Parses a trusted proxy: a network such as 10.0.0.0/8, or one address.
fn parse_network(text: &str) -> anyhow::Result<ipnet::IpNet> {
    if let Ok(network) = text.parse::<ipnet::IpNet>() {
        return Ok(network);
    }
    match text.parse::<std::net::IpAddr>() {
        Ok(address) => Ok(address.into()),
        Err(_) => bail!(
            "invalid trusted_proxies entry {text:?} in the settings file: expected an address or a network such as 10.0.0.0/8"
        ),
    }
}

/// Checks that a PostgreSQL URL names its host and database. Left out, the
/// driver would fill in libpq's defaults, such as a local socket, and reach
/// whichever server runs there.
fn check_postgres_url(url: &str) -> anyhow::Result<()> {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let database = path.split('?').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || database.is_empty() {
        bail!("invalid PostgreSQL URL {url:?}: expected postgres://USER@HOST:PORT/DATABASE, with the host and database named");
    }
    infinity_store::server_name(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

impl JobArgs {
    fn resolve(&self, file: &FileSettings) -> anyhow::Result<JobSettings> {
        let lease = self
            .job_lease_seconds
            .or(file.job_lease_seconds)
            .unwrap_or(30);
        if lease == 0 {
            bail!("invalid job lease of 0 seconds (--job-lease-seconds): must be at least 1");
        }
        let max_attempts = self.job_max_attempts.or(file.job_max_attempts).unwrap_or(5);
        if max_attempts == 0 {
            bail!("invalid job max attempts of 0 (--job-max-attempts): must be at least 1");
        }
        let workers = self.workers.or(file.workers).unwrap_or(2);
        if workers > MAX_WORKERS {
            bail!("invalid workers = {workers} (--workers): the maximum is {MAX_WORKERS}");
        }
        let broker = self.resolve_broker(file, workers)?;
        Ok(JobSettings {
            workers,
            smtp_url: self.smtp_url.clone().or(file.smtp_url.clone()),
            mail_from: self
                .mail_from
                .clone()
                .or(file.mail_from.clone())
                .unwrap_or_else(|| "Infinity <no-reply@infinity.invalid>".to_string()),
            lease: Duration::from_secs(lease),
            max_attempts,
            broker,
        })
    }

    fn resolve_broker(
        &self,
        file: &FileSettings,
        workers: usize,
    ) -> anyhow::Result<Option<BrokerSettings>> {
        let Some(url) = self.broker.clone().or(file.broker_url.clone()) else {
            return Ok(None);
        };
        infinity_broker::check_url(&url).map_err(|e| anyhow::anyhow!("{e} (--broker)"))?;
        let prefix = self
            .broker_prefix
            .clone()
            .or(file.broker_prefix.clone())
            .unwrap_or_else(|| "infinity".to_string());
        let valid_prefix = !prefix.is_empty()
            && prefix.len() <= 100
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_prefix {
            bail!("invalid broker prefix {prefix:?} (--broker-prefix): use 1 to 100 letters, digits, '-', '_' or '.'");
        }
        let default_prefetch = (workers * 2).clamp(1, usize::from(u16::MAX)) as u16;
        let prefetch = self.prefetch.or(file.prefetch).unwrap_or(default_prefetch);
        if prefetch == 0 {
            bail!("invalid prefetch 0 (--prefetch): must be at least 1, since 0 means no bound to RabbitMQ");
        }
        let delivery_limit = file.broker_delivery_limit.unwrap_or(20);
        if delivery_limit == 0 {
            bail!("invalid broker_delivery_limit = 0 in the settings file: must be at least 1");
        }
        Ok(Some(BrokerSettings {
            url,
            prefix,
            prefetch,
            delivery_limit,
        }))
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // Syntax errors span several lines; one line reads better in a log.
        let message = e.message().trim().lines().collect::<Vec<_>>().join(", ");
        match e.span().and_then(|span| key_before(&text, span.start)) {
            Some(key) => anyhow::anyhow!(
                "invalid {key} in the settings file {}: {message}",
                path.display()
            ),
            None => anyhow::anyhow!("invalid settings file {}: {message}", path.display()),
        }
    })
}

/// Returns the key of the `key = value` line holding byte `offset`, so that
/// a type error, whose message names only the types, also names the setting.
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text.get(start..offset)?.split_once('=')?;
    Some(key.trim()).filter(|key| !key.is_empty())
}

/// Parses `sqlite:PATH`, `sqlite://PATH`, a bare path, or a PostgreSQL URL.
pub fn parse_database(url: &str) -> anyhow::Result<Database> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            bail!("invalid database {url:?}: sqlite: needs a file path, as in sqlite:./infinity-data/infinity.db");
        }
        return Ok(Database::Sqlite(PathBuf::from(path)));
    }
    if is_postgres_url(url) {
        check_postgres_url(url)?;
        return Ok(Database::Postgres(PostgresOptions::new(url)));
    }
    if url.contains("://") {
        bail!("invalid database {url:?}: expected sqlite:PATH or postgres://USER@HOST:PORT/DB");
    }
    Ok(Database::Sqlite(PathBuf::from(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            parse_database("sqlite:a.db").unwrap(),
            Database::Sqlite("a.db".into())
        );
        assert_eq!(
            parse_database("sqlite:///tmp/a.db").unwrap(),
            Database::Sqlite("/tmp/a.db".into())
        );
        assert_eq!(
            parse_database("b.db").unwrap(),
            Database::Sqlite("b.db".into())
        );
        assert_eq!(
            parse_database("postgres://app@db:5433/photos").unwrap(),
            Database::Postgres(PostgresOptions::new("postgres://app@db:5433/photos"))
        );
        assert!(parse_database("sqlite:").is_err());
        assert!(parse_database("postgres://").is_err());
        assert!(parse_database("postgres://app@db:5432").is_err());
        assert!(parse_database("postgres://app@:5432/photos").is_err());
        assert!(parse_database("postgresql://db/photos").is_ok());
        assert!(parse_database("mysql://x").is_err());
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let args = ServeArgs {
            config: None,
            ..Default::default()
        };
        // Tests run in the crate's folder, which contains no infinity.toml.
        let settings = args.resolve().unwrap();
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(settings.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(
            settings.database,
            Database::Sqlite(PathBuf::from(DEFAULT_DATA_DIR).join("infinity.db"))
        );
        assert!(!settings.api.bench_routes);
        assert!(settings.jobs.broker.is_none());
    }

    #[test]
    fn broker_settings_resolve_and_reject_bad_values() {
        let mut args = ServeArgs::default();
        args.jobs.broker = Some("amqp://guest:guest@127.0.0.1:5999".into());
        args.jobs.workers = Some(3);
        let broker = args.resolve().unwrap().jobs.broker.unwrap();
        assert_eq!(broker.prefix, "infinity");
        assert_eq!(broker.prefetch, 6);
        assert_eq!(broker.delivery_limit, 20);

        args.jobs.prefetch = Some(0);
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--prefetch"));
        args.jobs.prefetch = None;
        args.jobs.broker_prefix = Some("a b".into());
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--broker-prefix"));
        args.jobs.broker_prefix = None;
        args.jobs.broker = Some("amqps://h".into());
        assert!(args.resolve().unwrap_err().to_string().contains("--broker"));
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("infinity.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/x\"\ncache_entries = 7\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let settings = args.resolve().unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(settings.data_dir, PathBuf::from("/srv/x"));
        assert_eq!(settings.api.cache.entries, 7);

        args.listen = Some("127.0.0.1:9100".parse().unwrap());
        assert_eq!(args.resolve().unwrap().listen.to_string(), "127.0.0.1:9100");
    }

    #[test]
    fn bad_file_values_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        std::fs::write(&path, "listen = \"nowhere\"\n").unwrap();
        assert!(args.resolve().unwrap_err().to_string().contains("listen"));
        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").unwrap();
        assert!(args.resolve().unwrap_err().to_string().contains("lisen"));
        std::fs::write(&path, "cache_ttl_seconds = 0\n").unwrap();
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("cache_ttl_seconds"));
        let missing = ServeArgs {
            config: Some(dir.path().join("absent.toml")),
            ..Default::default()
        };
        assert!(missing
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("absent.toml"));
    }
}
