//! Infinity's HTTP load balancer, built on Cloudflare's Pingora.
//!
//! [`run`] proxies HTTP/1.1 traffic to a set of Infinity API nodes. It checks
//! each node's `/readyz` in the background, ejects nodes that fail proxied
//! requests, retries requests that never reached a node, follows a backends
//! file that can change at run time, and serves Prometheus metrics.

mod discovery;
mod health;
mod metrics;
mod proxy;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use server::run;

/// Flags of `infinity lb`. Every flag can also be set through the
/// environment variable named next to it in `--help`.
#[derive(clap::Args, Debug, Clone)]
pub struct LbArgs {
    /// Address (IP:PORT) that accepts the proxied HTTP traffic. Port 0 is
    /// rejected because the balancer could not report the port it bound.
    #[arg(long, env = "INFINITY_LB_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Address (IP:PORT) that serves Prometheus metrics in text format at
    /// /metrics.
    #[arg(
        long,
        env = "INFINITY_LB_METRICS_LISTEN",
        default_value = "127.0.0.1:9000"
    )]
    pub metrics_listen: SocketAddr,

    /// Backend node address as IP:PORT. Host names are not resolved. Repeat
    /// the flag, or separate addresses with commas, to add several nodes.
    #[arg(
        long = "backend",
        env = "INFINITY_LB_BACKEND",
        value_delimiter = ',',
        value_name = "ADDR:PORT"
    )]
    pub backends: Vec<SocketAddr>,

    /// File with one backend address (IP:PORT) per line. Blank lines and
    /// text after `#` are ignored. The balancer checks the file's
    /// modification time every second and applies added and removed lines
    /// without closing client connections. Replace the file atomically
    /// (write a temporary file, then rename it) so that a half-written file
    /// is never read. A file that fails to parse is ignored with a warning,
    /// and the previous backends stay in place.
    #[arg(long, env = "INFINITY_LB_BACKENDS_FILE", value_name = "FILE")]
    pub backends_file: Option<PathBuf>,

    /// Backend selection policy: `round-robin` takes healthy backends in
    /// turn, `least-connections` takes the healthy backend with the fewest
    /// requests in flight.
    #[arg(
        long,
        env = "INFINITY_LB_POLICY",
        value_enum,
        default_value_t = Policy::RoundRobin
    )]
    pub policy: Policy,

    /// Interval in milliseconds between active health checks (HTTP GET
    /// /readyz, healthy only on status 200) of every backend.
    #[arg(
        long,
        env = "INFINITY_LB_HEALTH_INTERVAL_MS",
        default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub health_interval_ms: u64,

    /// Number of consecutive failed health checks that take a healthy
    /// backend out of rotation.
    #[arg(
        long,
        env = "INFINITY_LB_UNHEALTHY_AFTER",
        default_value_t = 2,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub unhealthy_after: u64,

    /// Number of consecutive successful health checks that bring a down or
    /// ejected backend back into rotation.
    #[arg(
        long,
        env = "INFINITY_LB_HEALTHY_AFTER",
        default_value_t = 3,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub healthy_after: u64,

    /// Number of consecutive failed proxied requests (connect failure, or a
    /// 502, 503 or 504 response) that eject a backend until health checks
    /// bring it back.
    #[arg(
        long,
        env = "INFINITY_LB_EJECT_AFTER",
        default_value_t = 3,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub eject_after: u64,

    /// Maximum number of retries on another backend after a failed attempt:
    /// a connect failure, or a backend connection that broke before the
    /// response header arrived. GET, HEAD and OPTIONS requests are retried,
    /// and other methods only when the request has an Idempotency-Key header.
    #[arg(long, env = "INFINITY_LB_RETRIES", default_value_t = 2)]
    pub retries: usize,

    /// Timeout in milliseconds for opening a TCP connection to a backend.
    #[arg(
        long,
        env = "INFINITY_LB_CONNECT_TIMEOUT_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub connect_timeout_ms: u64,

    /// Seconds a backend may take to send each part of its response (and
    /// to accept each part of the request) before the request fails with
    /// 504, so that a frozen backend cannot hold requests forever.
    #[arg(
        long,
        env = "INFINITY_LB_READ_TIMEOUT_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub read_timeout_seconds: u64,

    /// Seconds that in-flight requests get to finish after SIGTERM. The
    /// listener closes at once, and the process exits once this period ends.
    /// SIGINT stops at once.
    #[arg(long, env = "INFINITY_LB_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,

    /// Worker threads of the proxy service [default: number of CPUs].
    #[arg(long, env = "INFINITY_LB_THREADS", value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,
}

/// Backend selection policy.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Healthy backends in turn, through Pingora's round-robin selection.
    RoundRobin,
    /// The healthy backend with the fewest requests in flight.
    LeastConnections,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::RoundRobin => f.write_str("round-robin"),
            Policy::LeastConnections => f.write_str("least-connections"),
        }
    }
}
