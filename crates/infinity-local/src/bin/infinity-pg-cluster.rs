//! Starts a private PostgreSQL cluster for benchmarks and manual drills,
//! prints its URLs, and stops it on SIGTERM or SIGINT.
//!
//! Usage: infinity-pg-cluster [--replicas N] [--synchronous] [--database NAME]
//!
//! Output, one line each: `primary URL`, `replica URL` per replica, then
//! `ready`. The cluster lives in a temporary folder that is removed on exit.

use std::io::Write;
use std::process::ExitCode;

use infinity_local::{PgCluster, PgOptions};

const USAGE: &str = "usage: infinity-pg-cluster [--replicas N] [--synchronous] [--database NAME]";

fn parse() -> Result<(PgOptions, String), String> {
    let mut options = PgOptions::default();
    let mut database = "infinity".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--replicas" => {
                let value = args.next().ok_or("--replicas needs a number")?;
                options.replicas = value
                    .parse()
                    .map_err(|_| format!("invalid --replicas {value:?}: expected a number"))?;
            }
            "--synchronous" => options.synchronous = true,
            "--database" => database = args.next().ok_or("--database needs a name")?,
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if options.synchronous && options.replicas == 0 {
        return Err("--synchronous needs at least one replica".to_string());
    }
    Ok((options, database))
}

/// Blocks SIGTERM and SIGINT, so that [`wait_for`] receives them. Called
/// first in `main`, so every thread started later inherits the mask.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a zeroed signal set owned by this function.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits until one of the blocked signals in `set` arrives.
fn wait_for(set: &libc::sigset_t) {
    let mut signal = 0;
    // SAFETY: `set` is an initialised signal set and `signal` a valid out
    // pointer.
    unsafe {
        libc::sigwait(set, &mut signal);
    }
}

fn main() -> ExitCode {
    let stop_signals = block_stop_signals();
    let (options, database) = match parse() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("infinity-pg-cluster: {message}");
            return ExitCode::from(2);
        }
    };
    let cluster = match PgCluster::start(options) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("infinity-pg-cluster: starting the cluster failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = cluster.create_database(&database) {
        eprintln!("infinity-pg-cluster: creating database {database} failed: {error}");
        return ExitCode::FAILURE;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "primary {}",
        cluster.url(cluster.primary(), &database)
    );
    for replica in cluster.replicas() {
        let _ = writeln!(stdout, "replica {}", cluster.url(replica, &database));
    }
    let _ = writeln!(stdout, "ready");
    let _ = stdout.flush();
    drop(stdout);
    wait_for(&stop_signals);
    eprintln!("infinity-pg-cluster: stopping");
    drop(cluster);
    ExitCode::SUCCESS
}
