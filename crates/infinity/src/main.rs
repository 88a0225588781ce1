//! The `infinity` executable: parses the command line and runs a role.

mod config;
mod jobs;
mod serve;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::ServeArgs;

#[derive(Parser)]
#[command(
    name = "infinity",
    version,
    about = "A social photo-blogging service that scales by configuration",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// With no subcommand, `infinity` runs `serve` with these flags.
    #[command(flatten)]
    serve: ServeArgs,

    /// Log format: text or json
    #[arg(long, global = true, env = "INFINITY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole service in one process (the default)
    Serve(ServeArgs),
    /// Run the background job workers alone, against the same data as serve
    Worker(ServeArgs),
    /// List, retry and discard background jobs
    Jobs {
        #[command(flatten)]
        target: ServeArgs,
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Seed a realistic population on a running service and measure it
    /// under a read-heavy mix
    Load(infinity_load::LoadArgs),
}

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_env("INFINITY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run_jobs(target: ServeArgs, command: jobs::JobsCommand) -> anyhow::Result<()> {
    let settings = target.resolve()?;
    let store = serve::open_store(&settings).await?;
    jobs::run_command(store.as_ref(), command).await
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => match args.resolve() {
            Ok(settings) => serve::run(settings).await,
            Err(error) => Err(error),
        },
        Command::Worker(args) => match args.resolve() {
            Ok(settings) => serve::run_worker(settings).await,
            Err(error) => Err(error),
        },
        Command::Jobs { target, command } => run_jobs(target, command).await,
        Command::Load(args) => infinity_load::run(args).await.map(|_| ()),
    };
    if let Err(error) = result {
        eprintln!("infinity: {error:#}");
        std::process::exit(1);
    }
}
