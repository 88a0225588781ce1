//! `RUN/state.json`: what the supervisor started, where it listens and
//! how often it was restarted. The supervisor writes it, and `up`,
//! `status` and `down` read it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The state file's name in the run folder.
pub const STATE_FILE: &str = "state.json";

/// The run folder's state, as the supervisor last wrote it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct State {
    /// The topology file, absolute.
    pub topology_file: PathBuf,
    /// The run folder, absolute.
    pub run_dir: PathBuf,
    /// True once every process has started and passed its first check, and
    /// false while starting and after a stop.
    pub ready: bool,
    /// The public API URL, `http://ADDR/api`: the balancer's, or the
    /// single node's.
    pub api_url: Option<String>,
    /// The folder of the private PostgreSQL cluster, removed at stop.
    pub postgres_cluster_dir: Option<PathBuf>,
    /// The error that ended start-up, if one did.
    pub error: Option<String>,
    /// When a requested stop (`infinity down`, or SIGTERM or SIGINT to the
    /// supervisor) ended the topology, in RFC 3339 (UTC). `None` while it
    /// starts or runs, and after the supervisor itself died.
    #[serde(default)]
    pub stopped_at: Option<String>,
    /// The supervisor first, then in start order.
    pub processes: Vec<ProcessRecord>,
}

/// One process of the topology.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProcessRecord {
    /// Unique in the run: `supervisor`, `postgres-primary`,
    /// `postgres-replica1`, `redis`, `rabbitmq`, `node-1`, `worker-1`, `lb`.
    pub name: String,
    pub role: Role,
    /// `None` for a server that this run did not start (`external`), and
    /// for every process after a stop.
    pub pid: Option<u32>,
    /// `HOST:PORT` it listens on.
    pub address: Option<String>,
    /// `http://`, `postgres://`, `redis://` or `amqp://` URL of the service.
    pub url: Option<String>,
    /// The Prometheus metrics URL, for nodes and the balancer.
    pub metrics_url: Option<String>,
    pub log: Option<PathBuf>,
    /// Restarts after a crash since `up`.
    pub restarts: u32,
    /// When the current process started, in RFC 3339 (UTC).
    pub started_at: Option<String>,
    /// True for a server named in the topology file that runs already.
    #[serde(default)]
    pub external: bool,
}

/// What a process is, which decides how `status` checks it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Supervisor,
    PostgresPrimary,
    PostgresReplica,
    Redis,
    Node,
    Lb,
    /// A RabbitMQ node.
    Broker,
    /// An `infinity worker` process.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::PostgresPrimary => "postgres-primary",
            Role::PostgresReplica => "postgres-replica",
            Role::Redis => "redis",
            Role::Node => "node",
            Role::Lb => "lb",
            Role::Broker => "broker",
            Role::Worker => "worker",
        }
    }

    /// Returns a word that the command name of this role's process contains,
    /// to tell the recorded process from an unrelated one that got its pid.
    pub fn command_word(self) -> &'static str {
        match self {
            Role::Supervisor | Role::Node | Role::Lb | Role::Worker => "infinity",
            // The Erlang VM that runs RabbitMQ.
            Role::Broker => "beam",
            Role::PostgresPrimary | Role::PostgresReplica => "postgres",
            Role::Redis => "redis-server",
        }
    }
}

impl State {
    /// Returns the supervisor's record.
    pub fn supervisor(&self) -> Option<&ProcessRecord> {
        self.processes
            .iter()
            .find(|process| process.role == Role::Supervisor)
    }

    /// Reads `RUN/state.json`.
    pub fn read(run_dir: &Path) -> anyhow::Result<State> {
        let path = run_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: no topology was started in {} (start one with `infinity up FILE --run-dir {}`)",
                path.display(),
                run_dir.display(),
                run_dir.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("invalid state file {}", path.display()))
    }

    /// Writes `RUN/state.json` atomically: a reader sees the old or the new
    /// file, never a partial one.
    pub fn write(&self, run_dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self).context("cannot encode the state")?;
        write_atomically(&run_dir.join(STATE_FILE), &json)
    }
}

/// Replaces `path` with `contents` through a temporary file in the same
/// folder and a rename.
pub fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| {
        format!(
            "cannot rename {} to {}",
            temporary.display(),
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            topology_file: "/srv/phase-1.toml".into(),
            run_dir: "/srv/run".into(),
            ready: true,
            api_url: Some("http://127.0.0.1:4000/api".into()),
            postgres_cluster_dir: Some("/tmp/infinity-pg-abc".into()),
            error: None,
            stopped_at: None,
            processes: vec![
                ProcessRecord {
                    name: "supervisor".into(),
                    role: Role::Supervisor,
                    pid: Some(10),
                    address: None,
                    url: None,
                    metrics_url: None,
                    log: Some("/srv/run/supervisor.log".into()),
                    restarts: 0,
                    started_at: Some("2025-01-01T00:00:00Z".into()),
                    external: false,
                },
                ProcessRecord {
                    name: "postgres-replica1".into(),
                    role: Role::PostgresReplica,
                    pid: Some(12),
                    address: Some("127.0.0.1:5001".into()),
                    url: Some("postgres://postgres@127.0.0.1:5001/infinity".into()),
                    metrics_url: None,
                    log: None,
                    restarts: 0,
                    started_at: None,
                    external: false,
                },
            ],
        }
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = sample();
        state.write(dir.path()).unwrap();
        assert_eq!(State::read(dir.path()).unwrap(), state);
        assert!(
            !dir.path().join("state.json.tmp").exists(),
            "the temporary file is renamed"
        );
    }

    #[test]
    fn roles_are_kebab_case() {
        let text = serde_json::to_string(&sample()).unwrap();
        assert!(text.contains("\"role\":\"postgres-replica\""), "{text}");
        assert_eq!(Role::PostgresReplica.as_str(), "postgres-replica");
    }

    #[test]
    fn missing_state_names_the_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let message = State::read(dir.path()).unwrap_err().to_string();
        assert!(message.contains("infinity up"), "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
    }
}
