//! Assembly of the Pingora server: the proxy, the metrics endpoint and the
//! background services, plus signal handling.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backends, LoadBalancer};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::discovery::BackendDiscovery;
use crate::health::{backend_address, Ejections, ReadyzCheck};
use crate::metrics::metrics;
use crate::proxy::{Balancer, InFlight};
use crate::LbArgs;

/// How often the backends file is checked for changes.
const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Connect and read timeout of one `/readyz` check.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long start-up waits for the listeners to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum interval between refreshes of the healthy-backends gauge.
const MAX_MONITOR_INTERVAL: Duration = Duration::from_secs(1);

/// Seconds Pingora waits for its runtimes to stop after the drain period.
const RUNTIME_SHUTDOWN_SECONDS: u64 = 1;

/// Runs the balancer until SIGTERM or SIGINT, then drains.
///
/// Must be called from `main()` before any tokio runtime exists, because
/// Pingora starts its own runtimes. Returns after a graceful stop, or with an
/// error when start-up fails. After SIGTERM the listener closes at once and
/// in-flight requests get `--drain-seconds` to finish. Pingora 0.9 waits out
/// that whole period even when no request is in flight, then stops its
/// runtimes, so the function returns about `--drain-seconds` after SIGTERM.
/// SIGINT stops without draining.
pub fn run(args: LbArgs) -> anyhow::Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        bail!("infinity_lb::run must not be called inside a tokio runtime because Pingora starts its own: call it from main() before any runtime starts");
    }
    check_addresses(&args)?;

    let discovery = BackendDiscovery::new(&args.backends, args.backends_file.clone())?;
    let initial_backends = discovery.backends();
    if args.backends_file.is_none() && initial_backends.is_empty() {
        bail!("no backends configured: pass --backend ADDR:PORT or --backends-file FILE");
    }

    // Register the metrics before the first scrape.
    metrics();
    let ejections = Arc::new(Ejections::new(args.eject_after, args.healthy_after));
    let in_flight = Arc::new(InFlight::default());
    let health_interval = Duration::from_millis(args.health_interval_ms);

    let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(discovery)));
    lb.set_health_check(Box::new(ReadyzCheck::new(
        args.unhealthy_after,
        args.healthy_after,
        HEALTH_CHECK_TIMEOUT,
        Arc::clone(&ejections),
    )));
    lb.health_check_frequency = Some(health_interval);
    lb.update_frequency = args.backends_file.as_ref().map(|_| FILE_POLL_INTERVAL);
    lb.parallel_health_check = true;
    // Load the backends now so that the first request already has them.
    // Discovery reads a local file and spawns nothing, so this short-lived
    // runtime leaves no task behind.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .context("failed to start a runtime for the initial backend update")?
        .block_on(lb.update())
        .map_err(|error| anyhow::anyhow!("initial backend update failed: {error}"))?;

    let threads = match args.threads {
        Some(threads) => usize::try_from(threads).unwrap_or(usize::MAX),
        None => std::thread::available_parallelism().map_or(1, |count| count.get()),
    };
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(args.drain_seconds),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_SHUTDOWN_SECONDS),
        // Pingora counts attempts, the first one included.
        max_retries: args.retries.saturating_add(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let lb_service = background_service("backend discovery and health checks", lb);
    let lb = lb_service.task();

    let balancer = Balancer {
        lb: Arc::clone(&lb),
        policy: args.policy,
        ejections: Arc::clone(&ejections),
        in_flight: Arc::clone(&in_flight),
        max_retries: args.retries,
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        read_timeout: Duration::from_secs(args.read_timeout_seconds),
        tie_breaker: AtomicUsize::new(0),
    };
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        balancer,
        "infinity lb proxy",
    );
    proxy.add_tcp(&args.listen.to_string());

    let mut metrics_service = pingora_prometheus::prometheus_http_service();
    metrics_service.add_tcp(&args.metrics_listen.to_string());
    metrics_service.threads = Some(1);

    let lifecycle = Arc::new(Lifecycle::default());
    let monitor = background_service(
        "backend monitor",
        Monitor {
            lb,
            ejections,
            in_flight,
            interval: health_interval.min(MAX_MONITOR_INTERVAL),
        },
    );
    let announcer = background_service(
        "start-up announcement",
        Announcer {
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            backends: initial_backends,
            policy: args.policy.to_string(),
            lifecycle: Arc::clone(&lifecycle),
        },
    );

    server.add_service(lb_service);
    server.add_service(monitor);
    server.add_service(proxy);
    server.add_service(metrics_service);
    server.add_service(announcer);

    server.run(RunArgs {
        shutdown_signal: Box::new(SignalWatch {
            lifecycle: Arc::clone(&lifecycle),
            drain_seconds: args.drain_seconds,
        }),
    });

    if lifecycle.startup_failed.load(Ordering::SeqCst) {
        bail!(
            "the listeners on {} and {} did not accept connections within {} s. See the log for the cause",
            args.listen,
            args.metrics_listen,
            STARTUP_TIMEOUT.as_secs()
        );
    }
    tracing::info!("load balancer stopped");
    Ok(())
}

/// Rejects listen addresses that Pingora could not bind, before Pingora
/// starts: Pingora only logs a failed bind inside a running service.
fn check_addresses(args: &LbArgs) -> anyhow::Result<()> {
    for (flag, address) in [
        ("--listen", args.listen),
        ("--metrics-listen", args.metrics_listen),
    ] {
        if address.port() == 0 {
            bail!("{flag} {address}: port 0 is not supported, pick a free port");
        }
        // The probe socket closes at once. If another process takes the port
        // before Pingora binds it, start-up fails through its timeout.
        TcpListener::bind(address)
            .with_context(|| format!("{flag} {address}: cannot listen on this address"))?;
    }
    if args.listen == args.metrics_listen {
        bail!(
            "--listen and --metrics-listen are both {}. Give them different ports",
            args.listen
        );
    }
    Ok(())
}

/// State shared between the start-up announcement and the signal handler.
#[derive(Default)]
struct Lifecycle {
    /// Notified once the signal handlers are installed.
    signals_ready: Notify,
    /// Notified when start-up failed, to stop the server.
    startup_failure: Notify,
    startup_failed: AtomicBool,
}

/// Pingora's shutdown trigger: SIGTERM drains, SIGINT and a failed start-up
/// stop at once.
struct SignalWatch {
    lifecycle: Arc<Lifecycle>,
    drain_seconds: u64,
}

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        self.lifecycle.signals_ready.notify_one();
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!(drain_seconds = self.drain_seconds,
                    "SIGTERM received: closing the listener and draining in-flight requests");
                ShutdownSignal::GracefulTerminate
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT received: stopping without draining");
                ShutdownSignal::FastShutdown
            }
            _ = self.lifecycle.startup_failure.notified() => ShutdownSignal::FastShutdown,
        }
    }
}

/// Returns an address that reaches a listener bound to `address`: the
/// loopback address of the same family when it is unspecified.
fn probe_address(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

/// Background service that prints the "serving" line once both listeners
/// accept connections and the signal handlers are installed.
struct Announcer {
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    backends: BTreeSet<SocketAddr>,
    policy: String,
    lifecycle: Arc<Lifecycle>,
}

impl Announcer {
    async fn wait_for_listener(&self, address: SocketAddr, deadline: Instant) -> bool {
        let probe = probe_address(address);
        loop {
            if tokio::net::TcpStream::connect(probe).await.is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl BackgroundService for Announcer {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for address in [self.listen, self.metrics_listen] {
            if !self.wait_for_listener(address, deadline).await {
                tracing::error!(%address, timeout_seconds = STARTUP_TIMEOUT.as_secs(),
                    "listener did not accept connections in time, stopping");
                self.lifecycle.startup_failed.store(true, Ordering::SeqCst);
                self.lifecycle.startup_failure.notify_one();
                return;
            }
        }
        self.lifecycle.signals_ready.notified().await;

        let backends: Vec<String> = self.backends.iter().map(ToString::to_string).collect();
        tracing::info!(listen = %self.listen, metrics_listen = %self.metrics_listen,
            backends = backends.join(","), policy = self.policy, "load balancer started");
        let mut stdout = std::io::stdout().lock();
        let printed = writeln!(
            stdout,
            "Infinity lb serving http://{} (metrics http://{}/metrics), {} backends, {}",
            self.listen,
            self.metrics_listen,
            self.backends.len(),
            self.policy
        )
        .and_then(|()| stdout.flush());
        if let Err(error) = printed {
            tracing::warn!(%error, "failed to print the start-up line to stdout");
        }
    }
}

/// Background service that refreshes the healthy-backends gauge and drops
/// per-backend state of removed backends, once per health check interval
/// or at least every second.
struct Monitor {
    lb: Arc<LoadBalancer<RoundRobin>>,
    ejections: Arc<Ejections>,
    in_flight: Arc<InFlight>,
    interval: Duration,
}

impl Monitor {
    fn refresh(&self) {
        let backends = self.lb.backends();
        let members = backends.get_backend();
        let addresses: BTreeSet<SocketAddr> = members.iter().filter_map(backend_address).collect();
        let healthy = members
            .iter()
            .filter(|backend| backends.ready(backend))
            .filter_map(backend_address)
            .filter(|address| !self.ejections.is_ejected(address))
            .count();
        metrics()
            .backends_healthy
            .set(i64::try_from(healthy).unwrap_or(i64::MAX));
        self.ejections.retain(&addresses);
        self.in_flight.retain(&addresses);
    }
}

#[async_trait]
impl BackgroundService for Monitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.refresh(),
                _ = shutdown.changed() => return,
            }
        }
    }
}
