//! A primary and its streaming replicas in one temporary directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::binaries::{binaries, Binaries};
use crate::process::wait_until;
use crate::reaper;
use crate::server::{PgServer, ServerSettings};

/// Time allowed for replicas to connect to the primary and to replay a
/// change. Generous because two test threads may share two slow cores.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Shape of a cluster for [`PgCluster::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// Number of streaming replicas, named `replica1`, `replica2`, ...
    pub replicas: usize,
    /// Makes commits on the primary wait for one replica:
    /// `synchronous_standby_names = 'ANY 1 (replica1, ...)'`. Requires at
    /// least one replica.
    pub synchronous: bool,
}

impl Default for PgOptions {
    /// Returns options for one asynchronous replica.
    fn default() -> Self {
        PgOptions {
            replicas: 1,
            synchronous: false,
        }
    }
}

/// A private PostgreSQL cluster: a primary and streaming replicas, each
/// listening on its own port on 127.0.0.1, in a new temporary directory.
///
/// Dropping the cluster stops every server with `pg_ctl stop -m immediate`
/// and removes the directory. A reaper process does the same when the test
/// process exits without dropping it (a `static`, a panic with
/// `panic = "abort"`, SIGKILL), a second or two later.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    /// The primary first, then the replicas in order.
    servers: Vec<PgServer>,
    reaper: Option<Child>,
}

impl PgCluster {
    /// Creates and starts a cluster, and returns once every replica streams
    /// from the primary. When `synchronous`, it also waits until every
    /// replica is a quorum standby that can confirm commits.
    ///
    /// The first call in a process may install PostgreSQL (see the crate
    /// documentation). On error, every server started so far is stopped and
    /// the directory removed.
    pub fn start(options: PgOptions) -> io::Result<PgCluster> {
        if options.synchronous && options.replicas == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a synchronous cluster needs at least one replica: set PgOptions::replicas to 1 or more",
            ));
        }
        let binaries = binaries()?;
        let dir = create_cluster_dir(binaries)?;
        // From here on, an early return drops `cluster`, which stops the
        // servers started so far and removes the directory.
        let mut cluster = PgCluster {
            dir,
            servers: Vec::new(),
            reaper: None,
        };
        cluster.reaper = Some(reaper::spawn(binaries, &cluster.dir)?);

        let replica_names: Vec<String> = (1..=options.replicas)
            .map(|number| format!("replica{number}"))
            .collect();
        let synchronous_standby_names = if options.synchronous {
            format!("ANY 1 ({})", replica_names.join(", "))
        } else {
            String::new()
        };

        let primary_dir = cluster.create_server_dir(binaries, "primary")?;
        let primary_data = PgServer::init_primary_data(binaries, &primary_dir)?;
        let primary_settings = ServerSettings {
            synchronous_standby_names,
            primary_conninfo: None,
        };
        let primary = PgServer::start_new(binaries, "primary", primary_data, &primary_settings)?;
        cluster.servers.push(primary);

        for name in &replica_names {
            let server_dir = cluster.create_server_dir(binaries, name)?;
            let data_dir = PgServer::copy_replica_data(binaries, cluster.primary(), &server_dir)?;
            let settings = ServerSettings {
                // A promoted replica must not wait for standbys it does not have.
                synchronous_standby_names: String::new(),
                primary_conninfo: Some(format!(
                    "host=127.0.0.1 port={} user=postgres application_name={name}",
                    cluster.primary().port
                )),
            };
            let replica = PgServer::start_new(binaries, name, data_dir, &settings)?;
            cluster.servers.push(replica);
        }

        cluster.wait_for_streaming(&replica_names, options.synchronous)?;
        Ok(cluster)
    }

    /// Returns the server started as the primary. It stays the same after a
    /// replica is promoted with [`PgServer::promote`].
    pub fn primary(&self) -> &PgServer {
        &self.servers[0]
    }

    /// Returns the replicas, `replica1` first.
    pub fn replicas(&self) -> &[PgServer] {
        &self.servers[1..]
    }

    /// Returns the cluster's temporary directory. It contains one directory
    /// per server, named like the server, with `data/` and `postgres.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns a URL to `database` on `server`:
    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, server: &PgServer, database: &str) -> String {
        server.url(database)
    }

    /// Creates database `name` on the primary and waits until every running
    /// replica that is still in recovery lists it in `pg_database`.
    ///
    /// A replica whose replay is paused never lists the database, so this
    /// fails after a timeout of 60 seconds.
    pub fn create_database(&self, name: &str) -> io::Result<()> {
        self.primary()
            .sql(&format!("CREATE DATABASE {}", quote_identifier(name)))?;
        let query = format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            quote_literal(name)
        );
        for replica in self.replicas() {
            if !replica.is_running() || replica.sql("SELECT pg_is_in_recovery()")? != "t" {
                continue;
            }
            replica.wait_for("postgres", &query, "1", REPLICATION_TIMEOUT)?;
        }
        Ok(())
    }

    fn create_server_dir(&self, binaries: &Binaries, name: &str) -> io::Result<PathBuf> {
        let server_dir = self.dir.join(name);
        fs::create_dir(&server_dir)?;
        binaries.give_to_server_user(&server_dir)?;
        Ok(server_dir)
    }

    /// Waits until `pg_stat_replication` on the primary shows every replica
    /// in state `streaming` and, when `synchronous`, every replica with
    /// `sync_state` `quorum`.
    ///
    /// A walsender reports `async` or `potential` until its standby has sent
    /// a first flush position, so checking for one `quorum` row alone would
    /// let a test see another replica still in that state.
    fn wait_for_streaming(&self, replica_names: &[String], synchronous: bool) -> io::Result<()> {
        let mut last_rows = String::new();
        let condition = if synchronous {
            "every replica to stream from the primary as a synchronous (quorum) standby"
        } else {
            "every replica to stream from the primary"
        };
        let result = wait_until(REPLICATION_TIMEOUT, condition, || {
            last_rows = self
                .primary()
                .sql("SELECT application_name, state, sync_state FROM pg_stat_replication")?;
            let ready: Vec<&str> = last_rows
                .lines()
                .filter_map(|row| {
                    let mut columns = row.split('|');
                    let name = columns.next()?;
                    let state = columns.next()?;
                    let sync_state = columns.next()?;
                    let is_synchronous = matches!(sync_state, "sync" | "quorum");
                    (state == "streaming" && (is_synchronous || !synchronous)).then_some(name)
                })
                .collect();
            Ok(replica_names
                .iter()
                .all(|name| ready.contains(&name.as_str())))
        });
        result.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("{error}; pg_stat_replication rows (name|state|sync_state): {last_rows:?}"),
            )
        })
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        for server in self.servers.iter().rev() {
            if server.stop_immediately().is_err() && server.is_running() {
                let _ = server.kill();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
    }
}

/// Creates the cluster's temporary directory, owned by the server account.
///
/// As root it is created in `/tmp`, whatever `TMPDIR` is set to, because
/// the `postgres` account must be able to reach it.
fn create_cluster_dir(binaries: &Binaries) -> io::Result<PathBuf> {
    let parent = if binaries.runs_as_other_user() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("infinity-pg-")
        .tempdir_in(&parent)
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "failed to create a temporary directory in {}: {error}",
                    parent.display()
                ),
            )
        })?
        .keep();
    if let Err(error) = binaries.give_to_server_user(&dir) {
        let _ = fs::remove_dir_all(&dir);
        return Err(error);
    }
    Ok(dir)
}

/// Quotes an SQL identifier: in double quotes, with `"` doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal: in single quotes, with `'` doubled. Relies on
/// `standard_conforming_strings = on`, the default since PostgreSQL 9.1.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_identifier_doubles_quotes() {
        assert_eq!(quote_identifier(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn quote_literal_doubles_quotes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn synchronous_without_replicas_is_rejected() {
        let options = PgOptions {
            replicas: 0,
            synchronous: true,
        };
        let error = PgCluster::start(options).expect_err("no replica to wait for");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
