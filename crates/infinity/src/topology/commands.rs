//! The `up`, `status` and `down` commands.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::time::Instant;

use super::file::{Redis, Topology};
use super::process::{find_in_path, is_alive_as, log_tail, send_signal, wait_for_exit};
use super::state::{Role, State};
use super::{http_client, now_rfc3339, status::print_status, summary, supervisor};

const DEFAULT_RUN_DIR: &str = "./infinity-run";
/// How long `up` waits for the supervisor to report ready. A private
/// PostgreSQL cluster with replicas takes most of it.
const UP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the processes left by a dead supervisor get between SIGTERM and
/// SIGKILL, and how long `down` then waits for every pid to go.
const LEFTOVER_GRACE: Duration = Duration::from_secs(15);
/// Lines of the supervisor's log that a failed `up` prints.
const LOG_TAIL_LINES: usize = 30;

/// Flags of `infinity up`.
#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Topology file (TOML) that lists the nodes, the database, Redis and
    /// the load balancer
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Folder for the state file, the logs, the backends file and the
    /// nodes' data
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,

    /// Run the supervisor in this process, logging to standard error,
    /// instead of in the background. SIGTERM or Ctrl-C stops the topology
    #[arg(long)]
    pub foreground: bool,
}

/// Flags of `infinity status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Run folder given to `infinity up`
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
}

/// Flags of `infinity down`.
#[derive(Args, Debug, Clone)]
pub struct DownArgs {
    /// Run folder given to `infinity up`
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,

    /// Seconds to wait for the supervisor's ordered stop before sending
    /// SIGKILL to every recorded process
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

/// Validates the file, starts the supervisor in the background and waits
/// until it reports ready. With `--foreground`, runs the supervisor here.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let topology = Topology::load(&args.file)?;
    let run_dir = std::path::absolute(&args.run_dir)
        .with_context(|| format!("invalid run folder {}", args.run_dir.display()))?;
    check_prerequisites(&topology)?;
    reject_running(&run_dir)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create the run folder {}", run_dir.display()))?;
    if args.foreground {
        return supervisor::run(topology, run_dir).await;
    }

    let log_path = run_dir.join("supervisor.log");
    let mut child = spawn_supervisor(&topology.file, &run_dir, &log_path)?;
    let pid = child.id();
    eprintln!(
        "starting {} in {} (supervisor pid {pid}, log {})",
        topology.file.display(),
        run_dir.display(),
        log_path.display()
    );
    let deadline = Instant::now() + UP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let reason = State::read(&run_dir)
                .ok()
                .and_then(|state| state.error)
                .unwrap_or_else(|| format!("see {}", log_path.display()));
            eprintln!(
                "last lines of {}:\n{}",
                log_path.display(),
                log_tail(&log_path, LOG_TAIL_LINES)
            );
            bail!("the supervisor stopped during start-up ({status}): {reason}");
        }
        if let Ok(state) = State::read(&run_dir) {
            let current = state.supervisor().and_then(|s| s.pid) == Some(pid);
            if current && state.ready {
                print!("{}", summary(&state));
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            send_signal(pid, libc::SIGTERM)?;
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            eprintln!(
                "last lines of {}:\n{}",
                log_path.display(),
                log_tail(&log_path, LOG_TAIL_LINES)
            );
            bail!(
                "the topology was not ready within {} seconds, so it was stopped",
                UP_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `infinity up FILE --run-dir RUN --foreground` in a session of
/// its own, so that it outlives this process and the terminal's signals,
/// with its output in `log_path`.
fn spawn_supervisor(
    file: &Path,
    run_dir: &Path,
    log_path: &Path,
) -> anyhow::Result<std::process::Child> {
    let log =
        File::create(log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the path of this executable")?;
    let mut command = Command::new(exe);
    command
        .arg("up")
        .arg(file)
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--foreground")
        .current_dir(run_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the
    // parent, as `pre_exec` requires between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().context("cannot start the supervisor")
}

/// Fails when a process recorded in the run folder still runs.
fn reject_running(run_dir: &Path) -> anyhow::Result<()> {
    let Ok(state) = State::read(run_dir) else {
        return Ok(());
    };
    let hint = format!(
        "stop it with `infinity down --run-dir {}` or pick another --run-dir",
        run_dir.display()
    );
    if let Some(pid) = state.supervisor().and_then(|s| s.pid) {
        if is_alive_as(pid, Role::Supervisor) {
            bail!(
                "a topology already runs in {} (supervisor pid {pid}): {hint}",
                run_dir.display()
            );
        }
    }
    let leftovers: Vec<String> = state
        .processes
        .iter()
        .filter(|p| p.pid.is_some_and(|pid| is_alive_as(pid, p.role)))
        .map(|p| format!("{} (pid {})", p.name, p.pid.unwrap_or_default()))
        .collect();
    if !leftovers.is_empty() {
        bail!(
            "processes of an earlier run in {} still run: {}; {hint}",
            run_dir.display(),
            leftovers.join(", ")
        );
    }
    Ok(())
}

/// Checks what the supervisor would otherwise find missing only after it
/// has started the database: fixed balancer ports that are taken, a missing
/// `redis-server`, and `infinity lb` or `serve --redis` missing from this
/// build.
fn check_prerequisites(topology: &Topology) -> anyhow::Result<()> {
    let file = topology.file.display();
    if let Some(lb) = &topology.lb {
        for (key, address) in [
            ("lb.listen", lb.listen),
            ("lb.metrics_listen", lb.metrics_listen),
        ] {
            if let Some(address) = address {
                TcpListener::bind(address).map_err(|error| {
                    anyhow::anyhow!("invalid {key} = \"{address}\" in {file}: cannot listen there ({error}); pick another port")
                })?;
            }
        }
        if !subcommand_help(&["lb", "--help"])?.0 {
            bail!("invalid [lb] in {file}: this build of infinity has no `infinity lb` command; remove the section to serve from one node");
        }
    }
    if let Some(redis) = &topology.redis {
        let (_, serve_help) = subcommand_help(&["serve", "--help"])?;
        if !serve_help.contains("--redis") {
            bail!("invalid [redis] in {file}: this build of `infinity serve` has no --redis flag; remove the section to run without Redis");
        }
        if *redis == Redis::Private && find_in_path("redis-server").is_none() {
            bail!("invalid [redis] in {file}: redis-server is not in PATH; install it (Debian package redis-server) or set url to a running server");
        }
    }
    Ok(())
}

/// Runs this executable with `args` and returns whether it succeeded, and
/// its standard output.
fn subcommand_help(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let exe = std::env::current_exe().context("cannot find the path of this executable")?;
    let output = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run infinity {}", args.join(" ")))?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// Prints every recorded process with its health. Fails when one is dead
/// or failing, or when the topology is not running, unless a requested stop
/// ended it and left nothing running.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let run_dir = std::path::absolute(&args.run_dir)?;
    let state = State::read(&run_dir)?;
    if let Some(stopped_at) = &state.stopped_at {
        if !any_running(&state) {
            println!(
                "nothing is running in {}: the topology was stopped at {stopped_at}; start it with `infinity up FILE --run-dir {}`",
                run_dir.display(),
                run_dir.display()
            );
            return Ok(());
        }
    }
    println!(
        "topology {} in {}, API {}",
        state.topology_file.display(),
        run_dir.display(),
        state.api_url.as_deref().unwrap_or("-")
    );
    let http = http_client()?;
    let failing = print_status(&state, &http).await;
    if let Some(error) = &state.error {
        bail!("start-up failed: {error}");
    }
    if !state.ready {
        let supervisor_alive = state
            .supervisor()
            .and_then(|s| s.pid)
            .is_some_and(|pid| is_alive_as(pid, Role::Supervisor));
        if supervisor_alive {
            bail!("the topology is still starting");
        }
        bail!(
            "the topology is stopped; start it with `infinity up FILE --run-dir {}`",
            run_dir.display()
        );
    }
    if failing > 0 {
        bail!(
            "{failing} of {} processes are dead or failing their health check",
            state.processes.len()
        );
    }
    Ok(())
}

/// Stops the supervisor, which stops everything else, and confirms that
/// every recorded process has exited.
pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let run_dir = std::path::absolute(&args.run_dir)?;
    let state = State::read(&run_dir)?;
    let recorded: Vec<(u32, Role)> = state
        .processes
        .iter()
        .filter_map(|p| Some((p.pid?, p.role)))
        .collect();
    let supervisor = state
        .supervisor()
        .and_then(|s| s.pid)
        .filter(|&pid| is_alive_as(pid, Role::Supervisor));

    match supervisor {
        Some(pid) => {
            println!(
                "stopping the topology in {} (supervisor pid {pid})",
                run_dir.display()
            );
            send_signal(pid, libc::SIGTERM)?;
            let timeout = Duration::from_secs(args.timeout);
            if !wait_for_exit(&[(pid, Role::Supervisor)], timeout)
                .await
                .is_empty()
            {
                eprintln!(
                    "the supervisor did not stop within {} seconds; sending SIGKILL to every recorded process",
                    args.timeout
                );
                kill_all(&recorded, libc::SIGKILL);
            }
        }
        None => {
            let leftovers = wait_for_exit(&recorded, Duration::ZERO).await;
            if leftovers.is_empty() {
                record_stop(&run_dir)?;
                println!(
                    "nothing runs in {}: every recorded process has exited",
                    run_dir.display()
                );
                return Ok(());
            }
            println!(
                "the supervisor is not running; stopping {} processes it left",
                leftovers.len()
            );
            kill_all(&leftovers, libc::SIGTERM);
            let rest = wait_for_exit(&leftovers, LEFTOVER_GRACE).await;
            kill_all(&rest, libc::SIGKILL);
        }
    }

    let still_alive = wait_for_exit(&recorded, LEFTOVER_GRACE).await;
    if !still_alive.is_empty() {
        let names: Vec<String> = still_alive
            .iter()
            .map(|(pid, role)| format!("{} pid {pid}", role.as_str()))
            .collect();
        bail!(
            "processes still running after the stop: {}",
            names.join(", ")
        );
    }
    record_stop(&run_dir)?;
    if let Some(dir) = state
        .postgres_cluster_dir
        .as_deref()
        .filter(|dir| dir.exists())
    {
        eprintln!(
            "the PostgreSQL folder {} is still there; its cleanup process removes it within seconds",
            dir.display()
        );
    }
    println!(
        "stopped: all {} recorded processes have exited",
        recorded.len()
    );
    Ok(())
}

/// Returns whether a recorded process that this run started still runs.
fn any_running(state: &State) -> bool {
    state
        .processes
        .iter()
        .any(|p| !p.external && p.pid.is_some_and(|pid| is_alive_as(pid, p.role)))
}

/// Records in the state file that a requested stop ended the topology, so
/// that `status` reports it stopped and not crashed. Call it only once
/// every recorded process has exited.
fn record_stop(run_dir: &Path) -> anyhow::Result<()> {
    let mut state = State::read(run_dir)?;
    state.stopped_at.get_or_insert_with(now_rfc3339);
    state.ready = false;
    for process in &mut state.processes {
        process.pid = None;
    }
    state.write(run_dir)
}

fn kill_all(processes: &[(u32, Role)], signal: libc::c_int) {
    for &(pid, role) in processes {
        if is_alive_as(pid, role) {
            if let Err(error) = send_signal(pid, signal) {
                eprintln!("cannot signal {} pid {pid}: {error}", role.as_str());
            }
        }
    }
}
