//! One PostgreSQL server of a cluster: its settings, start, stop and queries.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binaries::{run, Binaries};
use crate::process::{
    child_pids, is_port_free, is_process_alive, pick_free_port, process_exists, wait_until,
};

/// File inside a data directory with this crate's settings. It is included at
/// the end of `postgresql.conf`, so its values win over the defaults there.
const SETTINGS_FILE: &str = "testkit.conf";

/// Number of attempts at starting a new server, each on a newly picked port,
/// before a port clash is reported as an error.
const PORT_ATTEMPTS: usize = 5;

/// Time allowed for `pg_ctl` start, stop and promote and for the waits in this
/// file. Generous because two test threads may share two slow cores.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of the server log quoted in start errors.
const LOG_TAIL_LINES: usize = 20;

/// One PostgreSQL server of a [`PgCluster`](crate::PgCluster): the primary or
/// a streaming replica.
///
/// Every method runs a PostgreSQL program (`pg_ctl` or `psql`) and waits for
/// it. The server keeps its port across [`stop`](Self::stop),
/// [`kill`](Self::kill) and [`start`](Self::start).
#[derive(Debug)]
pub struct PgServer {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Data directory (`PGDATA`).
    pub data_dir: PathBuf,
    /// Server log, written by `pg_ctl start -l`.
    pub log_file: PathBuf,
    name: String,
    binaries: &'static Binaries,
}

/// Settings that differ between the servers of a cluster.
pub(crate) struct ServerSettings {
    pub synchronous_standby_names: String,
    /// Connection string to the primary. `Some` makes the server a standby.
    pub primary_conninfo: Option<String>,
}

impl PgServer {
    /// Creates the data directory of a new primary with `initdb`, in
    /// `server_dir/data`.
    pub(crate) fn init_primary_data(binaries: &Binaries, server_dir: &Path) -> io::Result<PathBuf> {
        let data_dir = server_dir.join("data");
        let mut command = binaries.server_command("initdb");
        command.arg("-D").arg(&data_dir).args([
            "--auth=trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(&mut command, "initdb")?;
        include_settings_file(&data_dir)?;
        Ok(data_dir)
    }

    /// Copies the running `primary` into `server_dir/data` with
    /// `pg_basebackup` and marks the copy as a standby.
    pub(crate) fn copy_replica_data(
        binaries: &Binaries,
        primary: &PgServer,
        server_dir: &Path,
    ) -> io::Result<PathBuf> {
        let data_dir = server_dir.join("data");
        let mut command = binaries.server_command("pg_basebackup");
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data_dir)
            .args([
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
                "--no-manifest",
            ]);
        run(
            &mut command,
            &format!("pg_basebackup from {}", primary.name),
        )?;
        // `standby.signal` and `primary_conninfo` are written here instead of
        // with `pg_basebackup -R`, which would put `primary_conninfo` into
        // postgresql.auto.conf where it overrides the settings file.
        let signal = data_dir.join("standby.signal");
        fs::write(&signal, "")?;
        binaries.give_to_server_user(&signal)?;
        Ok(data_dir)
    }

    /// Starts a server on `data_dir` on a newly picked free port and returns
    /// it. A start that fails because another process took the port is
    /// retried on another port.
    pub(crate) fn start_new(
        binaries: &'static Binaries,
        name: &str,
        data_dir: PathBuf,
        settings: &ServerSettings,
    ) -> io::Result<PgServer> {
        let log_file = data_dir
            .parent()
            .expect("a data directory lies inside its server directory")
            .join("postgres.log");
        let mut attempt = 1;
        loop {
            let server = PgServer {
                port: pick_free_port()?,
                data_dir: data_dir.clone(),
                log_file: log_file.clone(),
                name: name.to_string(),
                binaries,
            };
            server.write_settings(settings)?;
            let log_length_before = fs::metadata(&log_file).map(|meta| meta.len()).unwrap_or(0);
            match server.start() {
                Ok(()) => return Ok(server),
                Err(_)
                    if attempt < PORT_ATTEMPTS
                        && server.log_reports_port_clash(log_length_before) =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Returns the server's name in its cluster: `primary`, `replica1`, ...
    /// Replicas also use it as `application_name`, so it is the name in the
    /// primary's `pg_stat_replication`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns a URL to `database` on this server:
    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`. The database name is
    /// percent-encoded.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port,
            percent_encode(database)
        )
    }

    /// Runs `sql` in the `postgres` database with `psql -X -At` and returns
    /// the trimmed standard output: one line per row, columns separated by
    /// `|`. The error contains psql's standard error.
    pub fn sql(&self, sql: &str) -> io::Result<String> {
        self.sql_in("postgres", sql)
    }

    /// Runs `sql` in `database`, like [`sql`](Self::sql).
    pub fn sql_in(&self, database: &str, sql: &str) -> io::Result<String> {
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres dbname={} connect_timeout=10",
            self.port,
            quote_conninfo_value(database)
        );
        let mut command = self.binaries.psql_command();
        command
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &conninfo,
                "-c",
                sql,
            ])
            .env("PGAPPNAME", "infinity-local");
        run(
            &mut command,
            &format!("psql on {} (port {})", self.name, self.port),
        )
    }

    /// Polls `sql` on `database` until its output equals `expected` and
    /// fails after `timeout`. Query errors count as "not yet", so this also
    /// waits through a server restart.
    pub fn wait_for(
        &self,
        database: &str,
        sql: &str,
        expected: &str,
        timeout: Duration,
    ) -> io::Result<()> {
        let mut last_output = String::new();
        let result = wait_until(
            timeout,
            &format!("`{sql}` on {} to return {expected:?}", self.name),
            || {
                last_output = self.sql_in(database, sql)?;
                Ok(last_output == expected)
            },
        );
        result.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("{error}; last output: {last_output:?}"),
            )
        })
    }

    /// Returns the postmaster's process id from the first line of
    /// `postmaster.pid`, or `None` when that file is missing. The file stays
    /// behind after [`kill`](Self::kill), so the id may be of a process that
    /// has exited. Use [`is_running`](Self::is_running) to check.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Returns whether the server's postmaster process is alive.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(is_process_alive)
    }

    /// Starts the server again after [`stop`](Self::stop) or
    /// [`kill`](Self::kill) with `pg_ctl start -w`, on the same port.
    ///
    /// NOTE: while the server is down, a client socket of another process may
    /// get the port as its local port, and the start then fails with "Address
    /// already in use" in the log.
    pub fn start(&self) -> io::Result<()> {
        let mut command = self.binaries.server_command("pg_ctl");
        command
            .args([
                "start",
                "-w",
                "-t",
                &SERVER_TIMEOUT.as_secs().to_string(),
                "-D",
            ])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file);
        run(
            &mut command,
            &format!("pg_ctl start of {} on port {}", self.name, self.port),
        )
        .map(|_| ())
        .map_err(|error| io::Error::new(error.kind(), format!("{error}\n{}", self.log_tail())))
    }

    /// Stops the server with `pg_ctl stop -m fast -w`: open sessions are
    /// ended and the server shuts down cleanly.
    pub fn stop(&self) -> io::Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server as a crash would: sends SIGKILL to the postmaster,
    /// waits until it has been reaped and its child processes have exited,
    /// then waits until the port is free.
    ///
    /// The child processes are not signalled: they exit on their own once
    /// they notice that the postmaster is gone. The next
    /// [`start`](Self::start) runs crash recovery.
    pub fn kill(&self) -> io::Result<()> {
        let pid = self
            .postmaster_pid()
            .filter(|&pid| is_process_alive(pid))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "cannot kill {}: the server is not running",
                    self.name
                ))
            })?;
        let children = child_pids(pid);
        self.send_sigkill(pid)?;

        // A new postmaster refuses to start while the process named in
        // postmaster.pid exists, and a zombie does, so this waits until the
        // postmaster's parent has reaped it. `pg_ctl start` leaves the
        // postmaster to be reparented, usually to PID 1, which may reap it
        // late (after about two seconds on the machine this was tested on).
        wait_until(
            SERVER_TIMEOUT,
            &format!(
                "the postmaster of {} (pid {pid}) to exit and be reaped by its parent",
                self.name
            ),
            || Ok(!process_exists(pid)),
        )?;
        wait_until(
            SERVER_TIMEOUT,
            &format!("the processes of {} to exit", self.name),
            || Ok(!children.iter().any(|&child| is_process_alive(child))),
        )?;
        wait_until(
            SERVER_TIMEOUT,
            &format!("port {} to be free", self.port),
            || Ok(is_port_free(self.port)),
        )
    }

    /// Pauses WAL replay on this replica with `pg_wal_replay_pause()` and
    /// waits until `pg_get_wal_replay_pause_state()` is `paused`. The replica
    /// still receives WAL but applies none of it.
    pub fn pause_replay(&self) -> io::Result<()> {
        self.sql("SELECT pg_wal_replay_pause()")?;
        self.wait_for(
            "postgres",
            "SELECT pg_get_wal_replay_pause_state()",
            "paused",
            SERVER_TIMEOUT,
        )
    }

    /// Resumes WAL replay with `pg_wal_replay_resume()` and waits until the
    /// pause state is `not paused`.
    pub fn resume_replay(&self) -> io::Result<()> {
        self.sql("SELECT pg_wal_replay_resume()")?;
        self.wait_for(
            "postgres",
            "SELECT pg_get_wal_replay_pause_state()",
            "not paused",
            SERVER_TIMEOUT,
        )
    }

    /// Promotes this replica to a primary with `pg_ctl promote -w`, which
    /// returns once the server accepts writes.
    pub fn promote(&self) -> io::Result<()> {
        let mut command = self.binaries.server_command("pg_ctl");
        command
            .args([
                "promote",
                "-w",
                "-t",
                &SERVER_TIMEOUT.as_secs().to_string(),
                "-D",
            ])
            .arg(&self.data_dir);
        run(&mut command, &format!("pg_ctl promote of {}", self.name)).map(|_| ())
    }

    /// Returns `pg_last_wal_replay_lsn()`, the last WAL position this replica
    /// has applied, such as `0/3000148`. Returns an empty string on a server
    /// that has never been a standby.
    pub fn replay_lsn(&self) -> io::Result<String> {
        self.sql("SELECT pg_last_wal_replay_lsn()")
    }

    /// Stops the server with `pg_ctl stop -m immediate` if it runs, for
    /// cleanup.
    pub(crate) fn stop_immediately(&self) -> io::Result<()> {
        if self.is_running() {
            self.pg_ctl_stop("immediate")
        } else {
            Ok(())
        }
    }

    fn send_sigkill(&self, pid: i32) -> io::Result<()> {
        // SAFETY: kill(2) takes plain integers and has no memory effects.
        if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        Err(io::Error::new(
            error.kind(),
            format!(
                "failed to send SIGKILL to the postmaster of {} (pid {pid}): {error}",
                self.name
            ),
        ))
    }

    fn pg_ctl_stop(&self, mode: &str) -> io::Result<()> {
        let mut command = self.binaries.server_command("pg_ctl");
        command
            .args([
                "stop",
                "-w",
                "-t",
                &SERVER_TIMEOUT.as_secs().to_string(),
                "-m",
                mode,
                "-D",
            ])
            .arg(&self.data_dir);
        run(
            &mut command,
            &format!("pg_ctl stop -m {mode} of {}", self.name),
        )
        .map(|_| ())
    }

    /// Writes the settings file for this server's port and `settings`.
    fn write_settings(&self, settings: &ServerSettings) -> io::Result<()> {
        let path = self.data_dir.join(SETTINGS_FILE);
        fs::write(&path, render_settings(self.port, settings))?;
        self.binaries.give_to_server_user(&path)
    }

    /// Returns whether the log written after byte `offset` reports that the
    /// port was taken.
    fn log_reports_port_clash(&self, offset: u64) -> bool {
        let Ok(log) = fs::read(&self.log_file) else {
            return false;
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
        String::from_utf8_lossy(&log[start..]).contains("Address already in use")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "last lines of {}:\n{}",
            self.log_file.display(),
            tail.join("\n")
        )
    }
}

/// Appends an `include` of the settings file to `postgresql.conf`.
fn include_settings_file(data_dir: &Path) -> io::Result<()> {
    let mut conf = OpenOptions::new()
        .append(true)
        .open(data_dir.join("postgresql.conf"))?;
    writeln!(
        conf,
        "\n# Settings of infinity-local\ninclude '{SETTINGS_FILE}'"
    )
}

/// Renders the settings file. Durability settings are off because the tests
/// kill server processes but never the machine, and an unsynced write
/// survives a killed process.
fn render_settings(port: u16, settings: &ServerSettings) -> String {
    let mut text = format!(
        "listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = ''\n\
         fsync = off\n\
         full_page_writes = off\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n\
         wal_keep_size = '256MB'\n\
         shared_buffers = '32MB'\n\
         max_connections = 200\n\
         logging_collector = off\n\
         synchronous_standby_names = '{}'\n",
        settings.synchronous_standby_names
    );
    if let Some(conninfo) = &settings.primary_conninfo {
        text.push_str(&format!("primary_conninfo = '{conninfo}'\n"));
    }
    text
}

/// Quotes a value for a libpq connection string: in single quotes, with `\`
/// and `'` escaped by a backslash.
fn quote_conninfo_value(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

/// Percent-encodes every byte except the URL unreserved characters
/// (RFC 3986, section 2.3).
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encode_keeps_unreserved_bytes() {
        assert_eq!(percent_encode("feed_test-1.a~"), "feed_test-1.a~");
    }

    #[test]
    fn percent_encode_escapes_reserved_bytes() {
        assert_eq!(percent_encode("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }

    #[test]
    fn conninfo_value_escapes_quotes_and_backslashes() {
        assert_eq!(quote_conninfo_value(r"it's\x"), r"'it\'s\\x'");
    }

    #[test]
    fn settings_of_replica_name_primary() {
        let settings = ServerSettings {
            synchronous_standby_names: String::new(),
            primary_conninfo: Some("host=127.0.0.1 port=5000".to_string()),
        };
        let text = render_settings(6000, &settings);
        assert!(text.contains("port = 6000\n"), "{text}");
        assert!(text.contains("synchronous_standby_names = ''\n"), "{text}");
        assert!(
            text.contains("primary_conninfo = 'host=127.0.0.1 port=5000'\n"),
            "{text}"
        );
    }

    #[test]
    fn settings_of_primary_have_no_conninfo() {
        let settings = ServerSettings {
            synchronous_standby_names: "ANY 1 (replica1)".to_string(),
            primary_conninfo: None,
        };
        let text = render_settings(6000, &settings);
        assert!(
            text.contains("synchronous_standby_names = 'ANY 1 (replica1)'\n"),
            "{text}"
        );
        assert!(!text.contains("primary_conninfo"), "{text}");
    }
}
