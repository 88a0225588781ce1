//! Operating-system helpers: process liveness and signals through `/proc`
//! and kill(2), free loopback ports and log tails.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::state::Role;

/// How often waits poll a process or a port.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Returns whether process `pid` exists and has not exited. A zombie counts
/// as exited, because the supervisor's children stay zombies until it reaps
/// them and an orphaned supervisor may never be reaped.
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name in brackets may contain spaces and brackets, so the
    // state is the first field after the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

/// Returns whether `pid` is alive and its command name contains the word of
/// `role`, so that a recorded pid that the kernel has since given to an
/// unrelated process does not count. The command name (`/proc/PID/comm`)
/// is used rather than the command line, which reads as empty while a
/// process is exiting and which Redis and PostgreSQL rewrite.
pub fn is_alive_as(pid: u32, role: Role) -> bool {
    if !is_alive(pid) {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|name| name.contains(role.command_word()))
}

/// Sends `signal` to `pid`. A process that has already exited is not an
/// error.
pub fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(error)
}

/// Polls until every process in `processes` has exited or `timeout` passes,
/// and returns those still alive.
pub async fn wait_for_exit(processes: &[(u32, Role)], timeout: Duration) -> Vec<(u32, Role)> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<(u32, Role)> = processes
            .iter()
            .copied()
            .filter(|&(pid, role)| is_alive_as(pid, role))
            .collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Picks `count` distinct ports on 127.0.0.1 that were free a moment ago.
/// Another process may take one before its server binds it, and the
/// supervisor then restarts that server.
pub fn pick_free_ports(count: usize) -> io::Result<Vec<u16>> {
    // Every listener stays open until all are bound, so no port repeats.
    let listeners = (0..count)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// Returns the last `lines` lines of the file at `path`, or a note that it
/// cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("({} cannot be read: {error})", path.display()),
    }
}

/// Returns the first `program` in the folders of `PATH`.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|folder| folder.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_as_itself() {
        let pid = std::process::id();
        assert!(is_alive(pid));
        // The test binary's path contains the crate name, `infinity`.
        assert!(is_alive_as(pid, Role::Node));
        assert!(!is_alive_as(pid, Role::Redis));
    }

    #[test]
    fn reaped_child_is_not_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(is_alive(pid));
        send_signal(pid, libc::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(!is_alive(pid));
        send_signal(pid, libc::SIGTERM).expect("a gone process is not an error");
    }

    #[test]
    fn zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // `true` exits at once and stays a zombie until `wait`.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!is_alive(pid));
        child.wait().unwrap();
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = pick_free_ports(5).unwrap();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 5, "{ports:?}");
        assert!(ports.iter().all(|&port| port != 0));
    }

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        assert_eq!(log_tail(&path, 2), "two\nthree");
        assert!(log_tail(&dir.path().join("none.log"), 2).contains("cannot be read"));
    }
}
