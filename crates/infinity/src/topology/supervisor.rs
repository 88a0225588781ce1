//! The supervisor (`infinity up FILE --foreground`): starts PostgreSQL,
//! Redis, RabbitMQ, the API nodes, the worker processes and the balancer in
//! that order, restarts a crashed node, worker, Redis or balancer, and stops
//! everything in reverse order on SIGTERM or SIGINT.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use infinity_local::{PgCluster, PgOptions, RabbitServer};
use tokio::sync::watch;
use tokio::time::Instant;

use super::child::{stop_all, Launch, SupervisedChild};
use super::file::{self, Database, Redis, Topology};
use super::process::{find_in_path, is_alive, log_tail, pick_free_ports};
use super::state::{write_atomically, ProcessRecord, Role, State};
use super::{http_client, redis_ping};

/// The database that the private PostgreSQL cluster creates for the nodes.
const DATABASE_NAME: &str = "infinity";
/// How long a node may take to pass its first `/readyz`, and the balancer
/// to proxy its first request.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `infinity migrate` may run.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the private Redis may take to reply to its first PING.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the supervisor checks its processes.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How long a node may take to exit after SIGTERM, on top of its drain.
const NODE_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the balancer may take to exit after SIGTERM, on top of its drain.
const LB_STOP_GRACE: Duration = Duration::from_secs(5);
/// How long Redis may take to exit after SIGTERM.
const REDIS_STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a failed process's log that an error message includes.
const LOG_TAIL_LINES: usize = 15;

/// Runs the topology until SIGTERM or SIGINT, then stops it. Returns an
/// error when start-up fails, after stopping what had started.
pub async fn run(topology: Topology, run_dir: PathBuf) -> anyhow::Result<()> {
    let _lock = lock_run_dir(&run_dir)?;
    let stop = StopSignal::listen()?;
    let mut supervisor = Supervisor::new(topology, run_dir)?;
    tracing::info!(
        file = %supervisor.topology.file.display(),
        run_dir = %supervisor.run_dir.display(),
        pid = std::process::id(),
        "starting the topology"
    );
    supervisor.write_state()?;

    let result = supervisor.start(&stop).await;
    let requested = match &result {
        Ok(()) => {
            supervisor.ready = true;
            supervisor.write_state()?;
            tracing::info!(api = ?supervisor.api_url, "the topology is ready");
            print!("{}", super::summary(&supervisor.state()));
            supervisor.monitor(stop).await;
            tracing::info!("stop requested; stopping the topology");
            true
        }
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "start-up failed; stopping what started"
            );
            supervisor.error = Some(format!("{error:#}"));
            stop.is_set()
        }
    };
    supervisor.stop().await;
    if requested {
        supervisor.stopped_at = Some(super::now_rfc3339());
    }
    supervisor.write_state()?;
    tracing::info!("stopped");
    result
}

/// Takes an exclusive lock on `RUN/supervisor.lock` for the life of the
/// process, so that two supervisors never share a run folder. The kernel
/// releases the lock when the process exits, however it exits.
fn lock_run_dir(run_dir: &Path) -> anyhow::Result<File> {
    let path = run_dir.join("supervisor.lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: flock(2) takes a descriptor that `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "{} is locked by another supervisor; stop it with `infinity down --run-dir {}`",
            path.display(),
            run_dir.display()
        );
    }
    Ok(file)
}

/// Set once SIGTERM or SIGINT arrives.
struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "signal received");
            let _ = sender.send(true);
        });
        Ok(Self(receiver))
    }

    fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Fails when a stop was requested, to end start-up early.
    fn check(&self) -> anyhow::Result<()> {
        if self.is_set() {
            bail!("stop requested by a signal during start-up");
        }
        Ok(())
    }

    async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

struct Supervisor {
    topology: Topology,
    run_dir: PathBuf,
    data_dir: PathBuf,
    /// This executable, started again as `serve`, `migrate` and `lb`.
    exe: PathBuf,
    http: reqwest::Client,
    record: ProcessRecord,
    cluster: Option<PgCluster>,
    /// The private RabbitMQ node; dropping it kills the node.
    rabbit: Option<RabbitServer>,
    /// `--broker` and `--broker-prefix` of the nodes and workers.
    broker_flags: Vec<OsString>,
    /// PostgreSQL servers, RabbitMQ and an existing Redis: watched, never
    /// restarted.
    servers: Vec<ProcessRecord>,
    /// Redis, the nodes and the balancer, in start order.
    children: Vec<SupervisedChild>,
    /// `--database`, `--replica` and the other database flags of `serve`.
    database_flags: Vec<OsString>,
    redis_url: Option<String>,
    api_url: Option<String>,
    ready: bool,
    error: Option<String>,
    stopped_at: Option<String>,
    /// Servers already reported down, so each outage is logged once.
    servers_down: Vec<bool>,
}

impl Supervisor {
    fn new(topology: Topology, run_dir: PathBuf) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the path of this executable")?;
        let data_dir = topology
            .nodes
            .data_dir
            .clone()
            .unwrap_or_else(|| run_dir.join("data"));
        let record = ProcessRecord {
            name: "supervisor".into(),
            role: Role::Supervisor,
            pid: Some(std::process::id()),
            address: None,
            url: None,
            metrics_url: None,
            log: Some(run_dir.join("supervisor.log")),
            restarts: 0,
            started_at: Some(super::now_rfc3339()),
            external: false,
        };
        Ok(Self {
            topology,
            run_dir,
            data_dir,
            exe,
            http: http_client()?,
            record,
            cluster: None,
            rabbit: None,
            broker_flags: Vec::new(),
            servers: Vec::new(),
            children: Vec::new(),
            database_flags: Vec::new(),
            redis_url: None,
            api_url: None,
            ready: false,
            error: None,
            stopped_at: None,
            servers_down: Vec::new(),
        })
    }

    fn state(&self) -> State {
        let mut processes = vec![self.record.clone()];
        processes.extend(self.servers.iter().cloned());
        processes.extend(self.children.iter().map(|child| child.record.clone()));
        State {
            topology_file: self.topology.file.clone(),
            run_dir: self.run_dir.clone(),
            ready: self.ready,
            api_url: self.api_url.clone(),
            postgres_cluster_dir: self
                .cluster
                .as_ref()
                .map(|cluster| cluster.dir().to_path_buf()),
            error: self.error.clone(),
            stopped_at: self.stopped_at.clone(),
            processes,
        }
    }

    fn write_state(&self) -> anyhow::Result<()> {
        self.state().write(&self.run_dir)
    }

    async fn start(&mut self, stop: &StopSignal) -> anyhow::Result<()> {
        for dir in [self.run_dir.join("logs"), self.data_dir.clone()] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }

        self.start_database()?;
        self.write_state()?;
        stop.check()?;

        self.start_redis(stop).await?;
        self.write_state()?;
        stop.check()?;

        self.start_broker().await?;
        self.write_state()?;
        stop.check()?;

        self.migrate().await?;
        stop.check()?;

        self.start_nodes(stop).await?;
        self.write_state()?;
        self.start_workers(stop).await?;
        self.write_state()?;
        if self.topology.lb.is_some() {
            self.start_lb(stop).await?;
        }

        // Clients use the balancer when there is one, or else the first node.
        let public = self
            .children
            .iter()
            .find(|child| child.record.role == Role::Lb)
            .or_else(|| {
                self.children
                    .iter()
                    .find(|child| child.record.role == Role::Node)
            })
            .and_then(|child| child.record.url.clone())
            .context("no node was started")?;
        self.api_url = Some(format!("{public}/api"));
        Ok(())
    }

    /// Starts the private PostgreSQL cluster, or records the existing
    /// servers, and sets the database flags of the nodes.
    fn start_database(&mut self) -> anyhow::Result<()> {
        let (primary, replicas, synchronous, max_lag) = match self.topology.database.clone() {
            Database::Sqlite => {
                let path = self.data_dir.join("infinity.db");
                let mut flag = OsString::from("sqlite:");
                flag.push(&path);
                self.database_flags = vec!["--database".into(), flag];
                return Ok(());
            }
            Database::PrivatePostgres {
                replicas,
                synchronous,
                max_replica_lag_seconds,
            } => {
                tracing::info!(
                    replicas,
                    synchronous,
                    "starting the private PostgreSQL cluster"
                );
                // NOTE: this blocks the supervisor's thread for the seconds
                // that initdb and the base backups take, so a SIGTERM in that
                // time takes effect once the cluster has started.
                let cluster = PgCluster::start(PgOptions {
                    replicas,
                    synchronous,
                })
                .context("starting the private PostgreSQL cluster failed")?;
                cluster
                    .create_database(DATABASE_NAME)
                    .context("creating the database on the private PostgreSQL cluster failed")?;
                let started_at = super::now_rfc3339();
                let servers = std::iter::once((Role::PostgresPrimary, cluster.primary())).chain(
                    cluster
                        .replicas()
                        .iter()
                        .map(|r| (Role::PostgresReplica, r)),
                );
                for (role, server) in servers {
                    let name = match role {
                        Role::PostgresPrimary => "postgres-primary".to_string(),
                        _ => format!("postgres-{}", server.name()),
                    };
                    self.servers.push(ProcessRecord {
                        name,
                        role,
                        pid: server
                            .postmaster_pid()
                            .and_then(|pid| u32::try_from(pid).ok()),
                        address: Some(format!("127.0.0.1:{}", server.port)),
                        url: Some(cluster.url(server, DATABASE_NAME)),
                        metrics_url: None,
                        log: Some(server.log_file.clone()),
                        restarts: 0,
                        started_at: Some(started_at.clone()),
                        external: false,
                    });
                }
                tracing::info!(dir = %cluster.dir().display(), "PostgreSQL cluster started");
                let primary = cluster.url(cluster.primary(), DATABASE_NAME);
                let replicas = cluster
                    .replicas()
                    .iter()
                    .map(|replica| cluster.url(replica, DATABASE_NAME))
                    .collect::<Vec<_>>();
                self.cluster = Some(cluster);
                (primary, replicas, synchronous, max_replica_lag_seconds)
            }
            Database::ExistingPostgres {
                url,
                replica_urls,
                synchronous,
                max_replica_lag_seconds,
            } => {
                let urls = std::iter::once((Role::PostgresPrimary, &url))
                    .chain(replica_urls.iter().map(|u| (Role::PostgresReplica, u)));
                for (index, (role, server_url)) in urls.enumerate() {
                    let name = match role {
                        Role::PostgresPrimary => "postgres-primary".to_string(),
                        _ => format!("postgres-replica{index}"),
                    };
                    let address = infinity_store::server_name(server_url)
                        .ok()
                        .and_then(|name| name.split('/').next().map(str::to_string));
                    self.servers
                        .push(external_record(name, role, address, server_url));
                }
                (url, replica_urls, synchronous, max_replica_lag_seconds)
            }
        };
        let mut flags: Vec<OsString> = vec!["--database".into(), primary.into()];
        for replica in replicas {
            flags.push("--replica".into());
            flags.push(replica.into());
        }
        if synchronous {
            flags.push("--synchronous-replication".into());
        }
        if let Some(lag) = max_lag {
            flags.push("--max-replica-lag".into());
            flags.push(lag.to_string().into());
        }
        self.database_flags = flags;
        self.servers_down = vec![false; self.servers.len()];
        Ok(())
    }

    async fn start_redis(&mut self, stop: &StopSignal) -> anyhow::Result<()> {
        match self.topology.redis.clone() {
            None => Ok(()),
            Some(Redis::Existing { url }) => {
                let address = file::redis_address(&url);
                self.servers
                    .push(external_record("redis".into(), Role::Redis, address, &url));
                self.servers_down.push(false);
                self.redis_url = Some(url);
                Ok(())
            }
            Some(Redis::Private) => {
                let program = find_in_path("redis-server").context(
                    "redis-server not found in PATH: install it (Debian package redis-server), \
                     or name a running server with url in [redis]",
                )?;
                let port = pick_free_ports(1)?[0];
                let dir = self.run_dir.join("redis");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create the folder {}", dir.display()))?;
                let address = format!("127.0.0.1:{port}");
                let url = format!("redis://{address}");
                // The append-only file keeps Idempotency-Key records (and
                // sessions' marks) across a restart of the server, losing at
                // most the last second of them.
                let args: Vec<OsString> = vec![
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port.to_string().into(),
                    "--save".into(),
                    "".into(),
                    "--appendonly".into(),
                    "yes".into(),
                    "--appendfsync".into(),
                    "everysec".into(),
                    "--dir".into(),
                    dir.into(),
                ];
                let mut child = self.child("redis", Role::Redis, program, args);
                child.record.address = Some(address.clone());
                child.record.url = Some(url.clone());
                child.spawn()?;
                tracing::info!(pid = child.record.pid, %address, "started redis");
                self.children.push(child);
                let deadline = Instant::now() + REDIS_START_TIMEOUT;
                loop {
                    if redis_ping(&address)
                        .await
                        .is_ok_and(|reply| reply == "+PONG")
                    {
                        break;
                    }
                    let child = self.children.last_mut().expect("redis was just added");
                    if let Some(status) = child.try_exit() {
                        return Err(exit_error(child, &status.to_string()));
                    }
                    if Instant::now() >= deadline {
                        return Err(exit_error(
                            child,
                            &format!("no PONG after {} seconds", REDIS_START_TIMEOUT.as_secs()),
                        ));
                    }
                    stop.check()?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                self.redis_url = Some(url);
                Ok(())
            }
        }
    }

    /// Starts the private RabbitMQ node, or records the existing broker, and
    /// sets the broker flags of the nodes and workers.
    async fn start_broker(&mut self) -> anyhow::Result<()> {
        let Some(broker) = self.topology.broker.clone() else {
            return Ok(());
        };
        let url = match broker.url {
            Some(url) => {
                self.servers
                    .push(external_record("rabbitmq".into(), Role::Broker, None, &url));
                url
            }
            None => {
                tracing::info!("starting a private RabbitMQ node");
                let server = tokio::task::spawn_blocking(RabbitServer::start)
                    .await?
                    .context("cannot start the private RabbitMQ node")?;
                let url = server.url();
                self.servers.push(ProcessRecord {
                    name: "rabbitmq".into(),
                    role: Role::Broker,
                    pid: server.pid(),
                    address: Some(format!("127.0.0.1:{}", server.port)),
                    url: Some(url.clone()),
                    metrics_url: None,
                    log: Some(server.dir().join("log")),
                    restarts: 0,
                    started_at: Some(super::now_rfc3339()),
                    external: false,
                });
                tracing::info!(dir = %server.dir().display(), port = server.port, "RabbitMQ ready");
                self.rabbit = Some(server);
                url
            }
        };
        self.servers_down.push(false);
        self.broker_flags = vec![
            "--broker".into(),
            url.into(),
            "--broker-prefix".into(),
            broker.prefix.into(),
        ];
        Ok(())
    }

    /// Starts the `infinity worker` processes. A worker has no HTTP port, so
    /// it counts as started once it has stayed up for 500 ms.
    async fn start_workers(&mut self, stop: &StopSignal) -> anyhow::Result<()> {
        let Some(workers) = self.topology.workers.clone() else {
            return Ok(());
        };
        let first = self.children.len();
        for index in 0..workers.count {
            let mut args: Vec<OsString> = vec![
                "worker".into(),
                "--data-dir".into(),
                self.data_dir.clone().into(),
                "--workers".into(),
                workers.concurrency.to_string().into(),
            ];
            args.extend(self.database_flags.iter().cloned());
            args.extend(self.broker_flags.iter().cloned());
            let name = format!("worker-{}", index + 1);
            let mut child = self.child(&name, Role::Worker, self.exe.clone(), args);
            child.spawn()?;
            tracing::info!(%name, pid = child.record.pid, "started worker");
            self.children.push(child);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.check()?;
        for child in &mut self.children[first..] {
            if let Some(status) = child.try_exit() {
                return Err(exit_error(child, &status.to_string()));
            }
        }
        Ok(())
    }

    /// Runs `infinity migrate` with the nodes' database flags.
    async fn migrate(&mut self) -> anyhow::Result<()> {
        let log_path = self.run_dir.join("logs").join("migrate.log");
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg("migrate")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.database_flags)
            .current_dir(&self.run_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        tracing::info!(log = %log_path.display(), "applying the database schema");
        let mut child = command.spawn().context("cannot start infinity migrate")?;
        let status = tokio::time::timeout(MIGRATE_TIMEOUT, child.wait())
            .await
            .with_context(|| {
                format!(
                    "infinity migrate timed out after {} seconds; see {}",
                    MIGRATE_TIMEOUT.as_secs(),
                    log_path.display()
                )
            })??;
        if !status.success() {
            bail!(
                "infinity migrate failed ({status}): {}",
                log_tail(&log_path, LOG_TAIL_LINES).replace('\n', " | ")
            );
        }
        Ok(())
    }

    async fn start_nodes(&mut self, stop: &StopSignal) -> anyhow::Result<()> {
        let nodes = self.topology.nodes.clone();
        let ports = pick_free_ports(nodes.count)?;
        let first = self.children.len();
        for (index, port) in ports.into_iter().enumerate() {
            let address = format!("127.0.0.1:{port}");
            let mut args: Vec<OsString> = vec![
                "serve".into(),
                "--listen".into(),
                address.clone().into(),
                "--data-dir".into(),
                self.data_dir.clone().into(),
                "--workers".into(),
                nodes.workers.to_string().into(),
                "--drain-seconds".into(),
                nodes.drain_seconds.to_string().into(),
            ];
            args.extend(self.database_flags.iter().cloned());
            args.extend(self.broker_flags.iter().cloned());
            if let Some(url) = &self.redis_url {
                args.push("--redis".into());
                args.push(url.into());
            }
            let name = format!("node-{}", index + 1);
            let mut child = self.child(&name, Role::Node, self.exe.clone(), args);
            child.record.address = Some(address.clone());
            child.record.url = Some(format!("http://{address}"));
            child.record.metrics_url = Some(format!("http://{address}/metrics"));
            child.spawn()?;
            tracing::info!(%name, pid = child.record.pid, %address, "started node");
            self.children.push(child);
        }

        let deadline = Instant::now() + START_TIMEOUT;
        let mut waiting: Vec<usize> = (first..self.children.len()).collect();
        while !waiting.is_empty() {
            let mut still_waiting = Vec::new();
            for index in waiting {
                let child = &mut self.children[index];
                let url = format!("{}/readyz", child.record.url.as_deref().unwrap_or_default());
                let ready = match self.http.get(&url).send().await {
                    Ok(response) => response.status() == reqwest::StatusCode::OK,
                    Err(_) => false,
                };
                if ready {
                    tracing::info!(name = %child.name(), "node ready");
                    continue;
                }
                if let Some(status) = child.try_exit() {
                    return Err(exit_error(child, &status.to_string()));
                }
                if Instant::now() >= deadline {
                    return Err(exit_error(
                        child,
                        &format!(
                            "GET /readyz did not return 200 within {} seconds",
                            START_TIMEOUT.as_secs()
                        ),
                    ));
                }
                still_waiting.push(index);
            }
            waiting = still_waiting;
            stop.check()?;
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    async fn start_lb(&mut self, stop: &StopSignal) -> anyhow::Result<()> {
        let lb = self.topology.lb.clone().context("no [lb] section")?;
        let backends: String = self
            .children
            .iter()
            .filter(|child| child.record.role == Role::Node)
            .filter_map(|child| child.record.address.clone())
            .map(|address| address + "\n")
            .collect();
        let backends_file = self.run_dir.join("backends");
        write_atomically(&backends_file, backends.as_bytes())?;

        let free = pick_free_ports(2)?;
        let listen = lb
            .listen
            .map_or_else(|| format!("127.0.0.1:{}", free[0]), |a| a.to_string());
        let metrics_listen = lb
            .metrics_listen
            .map_or_else(|| format!("127.0.0.1:{}", free[1]), |a| a.to_string());
        let args: Vec<OsString> = vec![
            "lb".into(),
            "--listen".into(),
            listen.clone().into(),
            "--metrics-listen".into(),
            metrics_listen.clone().into(),
            "--backends-file".into(),
            backends_file.into(),
            "--policy".into(),
            lb.policy.clone().into(),
            "--drain-seconds".into(),
            lb.drain_seconds.to_string().into(),
        ];
        let mut child = self.child("lb", Role::Lb, self.exe.clone(), args);
        child.record.address = Some(listen.clone());
        child.record.url = Some(format!("http://{listen}"));
        child.record.metrics_url = Some(format!("http://{metrics_listen}/metrics"));
        child.spawn()?;
        tracing::info!(pid = child.record.pid, %listen, %metrics_listen, "started lb");
        self.children.push(child);

        // Ready once a request goes through to a node and /metrics returns 200.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let proxied = self.get_ok(&format!("http://{listen}/healthz")).await;
            let metrics = self
                .get_ok(&format!("http://{metrics_listen}/metrics"))
                .await;
            if proxied && metrics {
                tracing::info!("lb ready");
                return Ok(());
            }
            let child = self.children.last_mut().expect("the lb was just added");
            if let Some(status) = child.try_exit() {
                return Err(exit_error(child, &status.to_string()));
            }
            if Instant::now() >= deadline {
                return Err(exit_error(
                    child,
                    &format!(
                        "no request went through within {} seconds",
                        START_TIMEOUT.as_secs()
                    ),
                ));
            }
            stop.check()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get_ok(&self, url: &str) -> bool {
        match self.http.get(url).send().await {
            Ok(response) => response.status() == reqwest::StatusCode::OK,
            Err(_) => false,
        }
    }

    fn child(
        &self,
        name: &str,
        role: Role,
        program: PathBuf,
        args: Vec<OsString>,
    ) -> SupervisedChild {
        let log = self.run_dir.join("logs").join(format!("{name}.log"));
        let record = ProcessRecord {
            name: name.to_string(),
            role,
            pid: None,
            address: None,
            url: None,
            metrics_url: None,
            log: Some(log.clone()),
            restarts: 0,
            started_at: None,
            external: false,
        };
        SupervisedChild::new(
            record,
            Launch {
                program,
                args,
                log,
                working_dir: self.run_dir.clone(),
            },
        )
    }

    /// Restarts crashed children and logs servers that went down, until a
    /// stop is requested.
    async fn monitor(&mut self, mut stop: StopSignal) {
        loop {
            tokio::select! {
                () = stop.wait() => return,
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
            }
            let mut changed = false;
            for child in &mut self.children {
                changed |= child.supervise();
            }
            self.watch_servers();
            if changed {
                if let Err(error) = self.write_state() {
                    tracing::error!(error = format!("{error:#}"), "cannot write the state file");
                }
            }
        }
    }

    /// Logs once when a PostgreSQL server of the private cluster or the
    /// private RabbitMQ node goes down and when it is back. The supervisor
    /// does not restart them.
    fn watch_servers(&mut self) {
        for (server, down) in self.servers.iter().zip(self.servers_down.iter_mut()) {
            let Some(pid) = server.pid else {
                continue;
            };
            let alive = is_alive(pid);
            if !alive && !*down {
                tracing::error!(
                    name = %server.name,
                    pid,
                    log = ?server.log,
                    "server exited; the supervisor does not restart PostgreSQL or RabbitMQ"
                );
            } else if alive && *down {
                tracing::info!(name = %server.name, pid, "server is back");
            }
            *down = !alive;
        }
    }

    /// Stops the balancer, then the nodes, then Redis, then PostgreSQL, and
    /// clears every pid from the records.
    async fn stop(&mut self) {
        let node_grace = Duration::from_secs(self.topology.nodes.drain_seconds) + NODE_STOP_GRACE;
        let lb_grace = self
            .topology
            .lb
            .as_ref()
            .map_or(Duration::ZERO, |lb| Duration::from_secs(lb.drain_seconds))
            + LB_STOP_GRACE;
        for (role, grace) in [
            (Role::Lb, lb_grace),
            (Role::Node, node_grace),
            (Role::Worker, node_grace),
            (Role::Redis, REDIS_STOP_GRACE),
        ] {
            let mut group: Vec<&mut SupervisedChild> = self
                .children
                .iter_mut()
                .filter(|child| child.record.role == role)
                .collect();
            if !group.is_empty() {
                tracing::info!(role = role.as_str(), count = group.len(), "stopping");
                stop_all(&mut group, grace).await;
            }
        }
        if let Some(rabbit) = self.rabbit.take() {
            tracing::info!(dir = %rabbit.dir().display(), "stopping RabbitMQ and removing its folder");
            let _ = tokio::task::spawn_blocking(move || drop(rabbit)).await;
        }
        if let Some(cluster) = self.cluster.take() {
            tracing::info!(dir = %cluster.dir().display(), "stopping PostgreSQL and removing its folder");
            drop(cluster);
        }
        for server in &mut self.servers {
            server.pid = None;
        }
        self.record.pid = None;
        self.ready = false;
    }
}

fn external_record(name: String, role: Role, address: Option<String>, url: &str) -> ProcessRecord {
    ProcessRecord {
        name,
        role,
        pid: None,
        address,
        url: Some(url.to_string()),
        metrics_url: None,
        log: None,
        restarts: 0,
        started_at: None,
        external: true,
    }
}

/// Builds the start-up error for a child that exited or never became
/// ready, with the end of its log on the same line.
fn exit_error(child: &SupervisedChild, reason: &str) -> anyhow::Error {
    let log = child.log_path();
    anyhow::anyhow!(
        "{} failed to start ({reason}); last lines of {}: {}",
        child.name(),
        log.display(),
        log_tail(log, LOG_TAIL_LINES).replace('\n', " | ")
    )
}
