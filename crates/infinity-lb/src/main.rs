//! Standalone `infinity-lb` binary: the balancer without the rest of the
//! `infinity` command, used by this crate's integration tests. Logs go to
//! stderr, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal as _;

use clap::Parser;
use infinity_lb::LbArgs;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "infinity-lb", about = "Infinity's HTTP load balancer")]
struct Cli {
    #[command(flatten)]
    lb: LbArgs,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    infinity_lb::run(Cli::parse().lb)
}
