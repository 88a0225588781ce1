//! One cluster per test process, with a new database for each test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::cluster::{PgCluster, PgOptions};

/// Maximum length of the prefix part of a database name. PostgreSQL truncates
/// identifiers to 63 bytes, so the prefix is cut to leave room for the
/// counter.
const MAX_PREFIX_LENGTH: usize = 40;

/// A database of its own on the [`shared_cluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDatabase {
    /// Database name: the sanitized prefix, `_`, and a counter.
    pub name: String,
    /// URL of the database on the primary.
    pub primary_url: String,
    /// URLs of the database on the replicas, `replica1` first.
    pub replica_urls: Vec<String>,
}

/// Returns the cluster shared by every test of this test process, and starts
/// it with [`PgOptions::default`] (one asynchronous replica) on first use.
///
/// The cluster is never dropped. Its reaper stops the servers and removes the
/// directory a second or two after the process exits, however it exits.
/// Tests must not stop, kill, promote or pause its servers, because other
/// tests use them at the same time. Such tests start a [`PgCluster`] of
/// their own.
///
/// # Panics
///
/// Panics when the cluster fails to start. Every later call panics with the
/// same message without trying again.
pub fn shared_cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    let cluster = CLUSTER
        .get_or_init(|| PgCluster::start(PgOptions::default()).map_err(|error| error.to_string()));
    match cluster {
        Ok(cluster) => cluster,
        Err(message) => panic!("failed to start the shared PostgreSQL cluster: {message}"),
    }
}

/// Creates a new database on the [`shared_cluster`] and returns its URLs.
///
/// The name is `prefix`, lower-cased with every character other than ASCII
/// letters, digits and `_` replaced by `_`, followed by `_` and a number that
/// is unique in this process. Returns once every running replica lists the database.
///
/// # Panics
///
/// Panics when the shared cluster fails to start or the database cannot be
/// created.
pub fn shared_database(prefix: &str) -> SharedDatabase {
    static NEXT_NUMBER: AtomicU64 = AtomicU64::new(1);
    let cluster = shared_cluster();
    let number = NEXT_NUMBER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}_{number}", sanitize_prefix(prefix));
    if let Err(error) = cluster.create_database(&name) {
        panic!("failed to create database {name} on the shared PostgreSQL cluster: {error}");
    }
    SharedDatabase {
        primary_url: cluster.url(cluster.primary(), &name),
        replica_urls: cluster
            .replicas()
            .iter()
            .map(|replica| cluster.url(replica, &name))
            .collect(),
        name,
    }
}

/// Turns `prefix` into the start of a database name that needs no quoting.
fn sanitize_prefix(prefix: &str) -> String {
    let mut sanitized: String = prefix
        .chars()
        .take(MAX_PREFIX_LENGTH)
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !sanitized.starts_with(|first: char| first.is_ascii_lowercase() || first == '_') {
        sanitized.insert_str(0, "db_");
    }
    sanitized
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_prefix_lowercases_and_replaces() {
        assert_eq!(sanitize_prefix("Feed-Test é"), "feed_test__");
    }

    #[test]
    fn sanitize_prefix_prepends_to_digit_start() {
        assert_eq!(sanitize_prefix("1st"), "db_1st");
    }

    #[test]
    fn sanitize_prefix_fills_empty_prefix() {
        assert_eq!(sanitize_prefix(""), "db_");
    }

    #[test]
    fn sanitize_prefix_cuts_long_prefix() {
        let long = "a".repeat(100);
        assert_eq!(sanitize_prefix(&long).len(), MAX_PREFIX_LENGTH);
    }
}
