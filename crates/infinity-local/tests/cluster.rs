//! Tests of private clusters against real PostgreSQL servers.

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use infinity_local::{PgCluster, PgOptions};

/// Time a replica gets to replay a change made on the primary.
const REPLAY_DEADLINE: Duration = Duration::from_secs(10);

/// Time a replica gets to reconnect to a restarted primary. A standby tries
/// again every `wal_retrieve_retry_interval` (5 s by default).
const RECONNECT_DEADLINE: Duration = Duration::from_secs(30);

fn start_cluster(options: PgOptions) -> PgCluster {
    let started = Instant::now();
    let cluster = PgCluster::start(options.clone()).expect("start cluster");
    eprintln!("started cluster {options:?} in {:?}", started.elapsed());
    cluster
}

fn is_port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Returns whether process `pid` has exited (a zombie counts as exited).
fn has_exited(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 1..];
            matches!(after_name.split_whitespace().next(), Some("Z" | "X"))
        }
        Err(_) => true,
    }
}

#[test]
fn replica_receives_primary_rows() {
    let cluster = start_cluster(PgOptions::default());
    let primary = cluster.primary();
    assert_eq!(cluster.replicas().len(), 1);
    let replica = &cluster.replicas()[0];
    assert_eq!(primary.name(), "primary");
    assert_eq!(replica.name(), "replica1");
    assert_ne!(primary.port, replica.port);
    assert_eq!(primary.sql("SELECT pg_is_in_recovery()").unwrap(), "f");
    assert_eq!(replica.sql("SELECT pg_is_in_recovery()").unwrap(), "t");

    primary
        .sql("CREATE TABLE photos (id int PRIMARY KEY, caption text); INSERT INTO photos VALUES (1, 'sunset')")
        .unwrap();
    replica
        .wait_for(
            "postgres",
            "SELECT caption FROM photos WHERE id = 1",
            "sunset",
            REPLAY_DEADLINE,
        )
        .unwrap();
    assert_eq!(replica.sql("SELECT count(*) FROM photos").unwrap(), "1");
}

#[test]
fn replica_rejects_writes_with_stderr() {
    let cluster = start_cluster(PgOptions::default());
    let error = cluster.replicas()[0]
        .sql("CREATE TABLE comments (id int)")
        .expect_err("a standby is read-only");
    assert!(
        error.to_string().contains("read-only transaction"),
        "{error}"
    );
}

#[test]
fn servers_listen_on_loopback_only() {
    let cluster = start_cluster(PgOptions::default());
    for server in [cluster.primary(), &cluster.replicas()[0]] {
        assert_eq!(server.sql("SHOW listen_addresses").unwrap(), "127.0.0.1");
        assert_eq!(server.sql("SHOW port").unwrap(), server.port.to_string());
        assert_eq!(server.sql("SHOW unix_socket_directories").unwrap(), "");
        assert!(server.data_dir.starts_with(cluster.dir()));
        assert!(server.log_file.is_file(), "{}", server.log_file.display());
    }
}

#[test]
fn paused_replica_holds_back_rows() {
    let cluster = start_cluster(PgOptions::default());
    let primary = cluster.primary();
    let replica = &cluster.replicas()[0];
    primary
        .sql("CREATE TABLE likes (id int PRIMARY KEY); INSERT INTO likes VALUES (1)")
        .unwrap();
    replica
        .wait_for(
            "postgres",
            "SELECT count(*) FROM likes",
            "1",
            REPLAY_DEADLINE,
        )
        .unwrap();

    replica.pause_replay().unwrap();
    assert_eq!(
        replica
            .sql("SELECT pg_get_wal_replay_pause_state()")
            .unwrap(),
        "paused"
    );
    let replayed_before = replica.replay_lsn().unwrap();
    primary.sql("INSERT INTO likes VALUES (2)").unwrap();
    let insert_lsn = primary.sql("SELECT pg_current_wal_lsn()").unwrap();
    // The replica receives the WAL of the insert but does not apply it.
    replica
        .wait_for(
            "postgres",
            &format!("SELECT pg_last_wal_receive_lsn() >= '{insert_lsn}'"),
            "t",
            REPLAY_DEADLINE,
        )
        .unwrap();
    assert_eq!(
        replica
            .sql("SELECT count(*) FROM likes WHERE id = 2")
            .unwrap(),
        "0"
    );
    assert_eq!(replica.replay_lsn().unwrap(), replayed_before);

    replica.resume_replay().unwrap();
    assert_eq!(
        replica
            .sql("SELECT pg_get_wal_replay_pause_state()")
            .unwrap(),
        "not paused"
    );
    replica
        .wait_for(
            "postgres",
            "SELECT count(*) FROM likes WHERE id = 2",
            "1",
            REPLAY_DEADLINE,
        )
        .unwrap();
    assert_ne!(replica.replay_lsn().unwrap(), replayed_before);
}

#[test]
fn stopped_replica_catches_up() {
    let cluster = start_cluster(PgOptions::default());
    let primary = cluster.primary();
    let replica = &cluster.replicas()[0];

    replica.stop().unwrap();
    assert!(!replica.is_running());
    assert!(replica.sql("SELECT 1").is_err());
    primary
        .sql("CREATE TABLE follows (id int); INSERT INTO follows SELECT generate_series(1, 100)")
        .unwrap();

    replica.start().unwrap();
    assert!(replica.is_running());
    replica
        .wait_for(
            "postgres",
            "SELECT count(*) FROM follows",
            "100",
            REPLAY_DEADLINE,
        )
        .unwrap();
}

#[test]
fn killed_replica_frees_port_and_catches_up() {
    let cluster = start_cluster(PgOptions::default());
    let primary = cluster.primary();
    let replica = &cluster.replicas()[0];
    let old_pid = replica
        .postmaster_pid()
        .expect("replica has a postmaster.pid");

    replica.kill().unwrap();
    assert!(has_exited(old_pid));
    assert!(!replica.is_running());
    assert!(is_port_free(replica.port));
    primary
        .sql("CREATE TABLE tags (name text); INSERT INTO tags VALUES ('beach')")
        .unwrap();

    replica.start().unwrap();
    assert_ne!(replica.postmaster_pid(), Some(old_pid));
    replica
        .wait_for(
            "postgres",
            "SELECT name FROM tags",
            "beach",
            REPLAY_DEADLINE,
        )
        .unwrap();
}

#[test]
fn killed_primary_restarts_and_streams_again() {
    let cluster = start_cluster(PgOptions::default());
    let primary = cluster.primary();
    let replica = &cluster.replicas()[0];
    let old_pid = primary
        .postmaster_pid()
        .expect("primary has a postmaster.pid");

    primary.kill().unwrap();
    assert!(has_exited(old_pid));
    assert!(is_port_free(primary.port));
    assert!(primary.kill().is_err(), "a second kill finds no server");

    primary.start().unwrap();
    primary
        .sql("CREATE TABLE albums (title text); INSERT INTO albums VALUES ('summer')")
        .unwrap();
    replica
        .wait_for(
            "postgres",
            "SELECT title FROM albums",
            "summer",
            RECONNECT_DEADLINE,
        )
        .unwrap();
}

#[test]
fn synchronous_cluster_reports_sync_state() {
    let cluster = start_cluster(PgOptions {
        replicas: 2,
        synchronous: true,
    });
    let primary = cluster.primary();
    assert_eq!(
        primary.sql("SHOW synchronous_standby_names").unwrap(),
        "ANY 1 (replica1, replica2)"
    );
    for replica in cluster.replicas() {
        assert_eq!(replica.sql("SHOW synchronous_standby_names").unwrap(), "");
    }
    let states = primary
        .sql("SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY application_name")
        .unwrap();
    assert_eq!(
        states,
        "replica1|streaming|quorum\nreplica2|streaming|quorum"
    );

    // With both replicas up, a commit returns once one of them has flushed it.
    primary.sql("CREATE TABLE reports (id int)").unwrap();
    cluster.replicas()[1]
        .wait_for(
            "postgres",
            "SELECT count(*) FROM pg_class WHERE relname = 'reports'",
            "1",
            REPLAY_DEADLINE,
        )
        .unwrap();
}

#[test]
fn asynchronous_cluster_reports_async_state() {
    let cluster = start_cluster(PgOptions::default());
    let states = cluster
        .primary()
        .sql("SELECT application_name, state, sync_state FROM pg_stat_replication")
        .unwrap();
    assert_eq!(states, "replica1|streaming|async");
}

#[test]
fn promoted_replica_accepts_writes() {
    let cluster = start_cluster(PgOptions {
        replicas: 1,
        synchronous: true,
    });
    let replica = &cluster.replicas()[0];
    replica.promote().unwrap();
    assert_eq!(replica.sql("SELECT pg_is_in_recovery()").unwrap(), "f");
    // The promoted server has no standby, so a commit must not wait for one.
    replica
        .sql("CREATE TABLE drafts (id int); INSERT INTO drafts VALUES (7)")
        .unwrap();
    assert_eq!(replica.sql("SELECT id FROM drafts").unwrap(), "7");
}

#[test]
fn created_database_is_on_replica() {
    let cluster = start_cluster(PgOptions::default());
    let replica = &cluster.replicas()[0];
    cluster.create_database("photos_test").unwrap();
    assert_eq!(
        replica
            .sql("SELECT datname FROM pg_database WHERE datname = 'photos_test'")
            .unwrap(),
        "photos_test"
    );
    assert_eq!(
        replica
            .sql_in("photos_test", "SELECT current_database()")
            .unwrap(),
        "photos_test"
    );
    assert_eq!(
        cluster.url(replica, "photos_test"),
        format!("postgres://postgres@127.0.0.1:{}/photos_test", replica.port)
    );
}

#[test]
fn created_database_name_is_quoted() {
    let cluster = start_cluster(PgOptions::default());
    let name = "Feed \"v2\" it's";
    cluster.create_database(name).unwrap();
    assert_eq!(
        cluster.replicas()[0]
            .sql_in(name, "SELECT current_database()")
            .unwrap(),
        name
    );
    assert_eq!(
        cluster.url(cluster.primary(), name),
        format!(
            "postgres://postgres@127.0.0.1:{}/Feed%20%22v2%22%20it%27s",
            cluster.primary().port
        )
    );
}

#[test]
fn dropped_cluster_stops_servers() {
    let cluster = start_cluster(PgOptions {
        replicas: 2,
        synchronous: false,
    });
    let dir = cluster.dir().to_path_buf();
    let servers: Vec<(u16, i32)> = [cluster.primary()]
        .into_iter()
        .chain(cluster.replicas())
        .map(|server| {
            (
                server.port,
                server.postmaster_pid().expect("postmaster.pid"),
            )
        })
        .collect();
    assert!(dir.is_dir());

    drop(cluster);
    assert!(!dir.exists(), "{} still exists", dir.display());
    for (port, pid) in servers {
        assert!(has_exited(pid), "postmaster {pid} still runs");
        assert!(is_port_free(port), "port {port} is still taken");
    }
}
