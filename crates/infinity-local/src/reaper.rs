//! A detached process that cleans up a cluster after the test process exits.
//!
//! `pg_ctl start` puts the postmaster in a session of its own, so the servers
//! outlive a test process that ends without dropping its [`PgCluster`]
//! (a `static`, an abort, SIGKILL). The reaper is a shell loop in a new session
//! that polls the test process every second. Once that process is gone, the
//! reaper stops every server still running and removes the directory.
//!
//! [`PgCluster`]: crate::PgCluster

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::binaries::Binaries;

/// Arguments: the test process id, the cluster directory, then the command
/// that runs `pg_ctl`. The script exits early when the directory disappears,
/// which is how a dropped cluster ends it.
const SCRIPT: &str = r#"
test_pid=$1
cluster_dir=$2
shift 2
while kill -0 "$test_pid" 2>/dev/null && [ -d "$cluster_dir" ]; do
  sleep 1
done
[ -d "$cluster_dir" ] || exit 0
for data_dir in "$cluster_dir"/*/data; do
  if [ -f "$data_dir/postmaster.pid" ]; then
    "$@" stop -D "$data_dir" -m immediate -w -t 30 >/dev/null 2>&1
  fi
done
# A server process that is still exiting may create a file while rm runs.
rm -rf "$cluster_dir" 2>/dev/null || { sleep 1; rm -rf "$cluster_dir"; }
"#;

/// Spawns the reaper for `cluster_dir`, watching the current process.
pub(crate) fn spawn(binaries: &Binaries, cluster_dir: &Path) -> io::Result<Child> {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(SCRIPT)
        .arg("infinity-local-reaper")
        .arg(std::process::id().to_string())
        .arg(cluster_dir)
        .args(binaries.pg_ctl_argv())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the
    // parent, which is all that `pre_exec` allows between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|error| {
        io::Error::new(
            error.kind(),
            format!(
                "failed to start the cleanup process for {}: {error}",
                cluster_dir.display()
            ),
        )
    })
}
