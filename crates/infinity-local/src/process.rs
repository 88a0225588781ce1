//! Polling, process and port helpers. Process state comes from Linux's `/proc`.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Ok(true)` or `timeout` passes.
///
/// An `Err` from `check` counts as "not yet", because servers reject
/// connections while they start. The timeout error names `condition` and
/// contains the last such error.
pub(crate) fn wait_until(
    timeout: Duration,
    condition: &str,
    mut check: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            let detail = match last_error {
                Some(error) => format!("; last error: {error}"),
                None => String::new(),
            };
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {timeout:?} waiting for {condition}{detail}"),
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Returns a port on 127.0.0.1 that was free a moment ago. Another process
/// may take it before the caller binds it, so callers retry on a clash.
pub(crate) fn pick_free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Returns whether a listener could bind 127.0.0.1:`port` now.
pub(crate) fn is_port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Returns whether process `pid` exists and has not exited. A zombie counts as
/// exited: PostgreSQL's postmaster is reparented when `pg_ctl` exits, and its
/// new parent may reap it late or never.
pub(crate) fn is_process_alive(pid: i32) -> bool {
    match read_stat(pid) {
        Some(stat) => !matches!(stat.state, 'Z' | 'X'),
        None => false,
    }
}

/// Returns whether process `pid` exists, even as a zombie that its parent has
/// not reaped yet.
pub(crate) fn process_exists(pid: i32) -> bool {
    read_stat(pid).is_some()
}

/// Returns the ids of the live processes whose parent is `pid`.
pub(crate) fn child_pids(pid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&candidate| {
            read_stat(candidate)
                .is_some_and(|stat| stat.parent_pid == pid && !matches!(stat.state, 'Z' | 'X'))
        })
        .collect()
}

/// Fields of `/proc/<pid>/stat` that this crate reads.
struct ProcessStat {
    state: char,
    parent_pid: i32,
}

fn read_stat(pid: i32) -> Option<ProcessStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in the second field is in brackets and may itself
    // contain spaces and brackets, so the fields after it start after the
    // last ')'.
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent_pid = fields.next()?.parse().ok()?;
    Some(ProcessStat { state, parent_pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive() {
        assert!(is_process_alive(std::process::id() as i32));
    }

    #[test]
    fn child_pids_lists_spawned_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let children = child_pids(std::process::id() as i32);
        child.kill().expect("kill sleep");
        child.wait().expect("wait for sleep");
        assert!(children.contains(&(child.id() as i32)), "{children:?}");
    }

    #[test]
    fn bound_port_is_not_free() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("local address").port();
        assert!(!is_port_free(port));
        drop(listener);
        // A process that another test thread forks at this moment keeps a
        // copy of the socket until it calls exec, so the port is free only
        // after that.
        wait_until(Duration::from_secs(5), "the port to be free", || {
            Ok(is_port_free(port))
        })
        .unwrap();
    }

    #[test]
    fn wait_until_times_out_with_last_error() {
        let error = wait_until(Duration::from_millis(120), "the answer", || {
            Err(io::Error::other("not yet"))
        })
        .expect_err("check never succeeds");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("the answer"), "{error}");
        assert!(error.to_string().contains("not yet"), "{error}");
    }
}
