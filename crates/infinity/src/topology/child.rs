//! A process that the supervisor starts, restarts after a crash and stops:
//! Redis, an API node or the balancer.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::process::send_signal;
use super::state::ProcessRecord;

/// The first delay before a restart. Each crash in a row doubles it.
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// The maximum delay before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A process that ran this long before it exited is restarted after
/// [`MIN_BACKOFF`] again.
const STABLE_RUN: Duration = Duration::from_secs(10);

/// How to start the process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Standard output and error are appended to this file.
    pub log: PathBuf,
    pub working_dir: PathBuf,
}

/// A supervised process and its record in the state file.
pub struct SupervisedChild {
    pub record: ProcessRecord,
    launch: Launch,
    process: Option<Child>,
    started: Instant,
    /// The delay before the next restart after a crash.
    backoff: Duration,
    /// When the crashed process is due to start again.
    restart_at: Option<Instant>,
}

impl SupervisedChild {
    pub fn new(record: ProcessRecord, launch: Launch) -> Self {
        Self {
            record,
            launch,
            process: None,
            started: Instant::now(),
            backoff: MIN_BACKOFF,
            restart_at: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn log_path(&self) -> &std::path::Path {
        &self.launch.log
    }

    /// Starts the process and records its pid.
    ///
    /// The child gets a process group of its own, so that a Ctrl-C meant
    /// for a supervisor in the foreground reaches the children only through
    /// the supervisor's ordered stop. It also gets SIGTERM when the
    /// supervisor dies (PR_SET_PDEATHSIG), so no node outlives a killed
    /// supervisor. Linux sends that signal when the spawning thread exits,
    /// so the supervisor spawns from its main thread only.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.launch.log)
            .with_context(|| format!("cannot open the log {}", self.launch.log.display()))?;
        let mut command = std::process::Command::new(&self.launch.program);
        command
            .args(&self.launch.args)
            .current_dir(&self.launch.working_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);

        let parent = libc::pid_t::try_from(std::process::id())?;
        // SAFETY: prctl(2) and getppid(2) are async-signal-safe, and the
        // closure allocates nothing, as `pre_exec` requires between fork and
        // exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // The supervisor died before prctl took effect.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }

        let child = command.spawn().with_context(|| {
            format!(
                "cannot start {} ({})",
                self.record.name,
                self.launch.program.display()
            )
        })?;
        self.record.pid = Some(child.id());
        self.record.started_at = Some(super::now_rfc3339());
        self.started = Instant::now();
        self.process = Some(child);
        self.restart_at = None;
        Ok(())
    }

    /// Reaps the process if it has exited, and returns its exit status.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.process.as_mut()?.try_wait().ok()??;
        self.process = None;
        self.record.pid = None;
        Some(status)
    }

    /// Checks the process once: schedules a restart after an exit, and
    /// restarts it when the delay has passed. Returns whether the record
    /// changed.
    pub fn supervise(&mut self) -> bool {
        let pid = self.record.pid;
        if self.process.is_some() {
            let Some(status) = self.try_exit() else {
                return false;
            };
            let delay = self.next_delay();
            tracing::warn!(
                name = %self.record.name,
                pid,
                %status,
                restart_in_seconds = delay.as_secs_f64(),
                log = %self.launch.log.display(),
                "process exited; restarting it"
            );
            self.restart_at = Some(Instant::now() + delay);
            return true;
        }
        match self.restart_at {
            Some(at) if Instant::now() >= at => {}
            _ => return false,
        }
        match self.spawn() {
            Ok(()) => {
                self.record.restarts += 1;
                tracing::info!(
                    name = %self.record.name,
                    pid = self.record.pid,
                    restarts = self.record.restarts,
                    "process restarted"
                );
            }
            Err(error) => {
                let delay = self.next_delay();
                tracing::error!(
                    name = %self.record.name,
                    error = format!("{error:#}"),
                    retry_in_seconds = delay.as_secs_f64(),
                    "restart failed"
                );
                self.restart_at = Some(Instant::now() + delay);
            }
        }
        true
    }

    /// Returns the delay before the next restart and doubles the one after,
    /// up to [`MAX_BACKOFF`]. A process that ran for [`STABLE_RUN`] starts
    /// again from [`MIN_BACKOFF`].
    fn next_delay(&mut self) -> Duration {
        if self.started.elapsed() >= STABLE_RUN {
            self.backoff = MIN_BACKOFF;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        delay
    }

    /// Cancels a pending restart and sends SIGTERM to the process.
    pub fn terminate(&mut self) {
        self.restart_at = None;
        if let (Some(pid), Some(_)) = (self.record.pid, &self.process) {
            if let Err(error) = send_signal(pid, libc::SIGTERM) {
                tracing::warn!(name = %self.record.name, pid, %error, "cannot send SIGTERM");
            }
        }
    }

    /// Returns whether the process is running (not yet reaped).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Sends SIGKILL to the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
        self.record.pid = None;
    }
}

/// Sends SIGTERM to every child, waits until all have exited or `grace`
/// passes, then sends SIGKILL to the rest. Logs how each one stopped.
pub async fn stop_all(children: &mut [&mut SupervisedChild], grace: Duration) {
    for child in children.iter_mut() {
        child.terminate();
    }
    let deadline = Instant::now() + grace;
    loop {
        for child in children.iter_mut() {
            let pid = child.record.pid;
            if let Some(status) = child.try_exit() {
                tracing::info!(name = %child.name(), pid, %status, "stopped");
            }
        }
        if children.iter().all(|child| !child.is_running()) {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for child in children.iter_mut().filter(|child| child.is_running()) {
        tracing::warn!(
            name = %child.name(),
            pid = child.record.pid,
            grace_seconds = grace.as_secs(),
            "still running after SIGTERM; sending SIGKILL"
        );
        child.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::state::Role;

    fn sleeper(dir: &std::path::Path, seconds: &str) -> SupervisedChild {
        let record = ProcessRecord {
            name: "sleeper".into(),
            role: Role::Node,
            pid: None,
            address: None,
            url: None,
            metrics_url: None,
            log: None,
            restarts: 0,
            started_at: None,
            external: false,
        };
        SupervisedChild::new(
            record,
            Launch {
                program: "sleep".into(),
                args: vec![seconds.into()],
                log: dir.join("sleeper.log"),
                working_dir: dir.to_path_buf(),
            },
        )
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = sleeper(dir.path(), "1");
        let delays: Vec<Duration> = (0..7).map(|_| child.next_delay()).collect();
        let millis: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
    }

    #[tokio::test]
    async fn crashed_child_restarts_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = sleeper(dir.path(), "30");
        child.spawn().unwrap();
        let first = child.record.pid.unwrap();
        assert!(!child.supervise(), "a running child needs nothing");

        send_signal(first, libc::SIGKILL).unwrap();
        let started = Instant::now();
        while !child.supervise() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(child.record.pid, None);
        assert_eq!(child.record.restarts, 0);

        while !child.supervise() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(started.elapsed() >= MIN_BACKOFF);
        let second = child.record.pid.unwrap();
        assert_ne!(second, first);
        assert_eq!(child.record.restarts, 1);

        let mut children = [&mut child];
        stop_all(&mut children, Duration::from_secs(5)).await;
        assert!(!child.is_running());
        assert!(!super::super::process::is_alive(second));
    }

    #[tokio::test]
    async fn stop_all_kills_a_child_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let record = sleeper(dir.path(), "1").record;
        let mut child = SupervisedChild::new(
            record,
            Launch {
                program: "sh".into(),
                args: vec!["-c".into(), "trap '' TERM; exec sleep 30".into()],
                log: dir.path().join("stubborn.log"),
                working_dir: dir.path().to_path_buf(),
            },
        );
        child.spawn().unwrap();
        let pid = child.record.pid.unwrap();
        // Give the shell time to install its trap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let mut children = [&mut child];
        stop_all(&mut children, Duration::from_millis(500)).await;
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert!(!super::super::process::is_alive(pid));
        assert_eq!(child.record.pid, None);
    }
}
