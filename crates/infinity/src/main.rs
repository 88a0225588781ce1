//! The `infinity` executable: parses the command line and runs a role.

mod config;
mod db;
mod jobs;
mod serve;
mod topology;

use anyhow::Context;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::ServeArgs;

/// mimalloc in place of the C library's allocator: a proxied request or an
/// API response allocates and frees many short-lived buffers from several
/// threads, and glibc malloc spent about a tenth of the balancer's CPU time
/// on them. mimalloc keeps freed memory for a while, so a node's RSS stays
/// near its peak after a burst of logins, each of which takes a 19 MiB
/// Argon2 buffer. `MIMALLOC_PURGE_DELAY=0` returns that memory at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "infinity",
    version,
    about = "A social photo-blogging service that scales by configuration"
)]
struct Cli {
    /// With no subcommand, `infinity` runs `serve` with these flags. With a
    /// subcommand, [`parse_cli`] rejects them.
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
    /// Apply the database schema and exit
    Migrate(ServeArgs),
    /// Inspect the PostgreSQL servers and promote a replica
    Db {
        #[command(flatten)]
        target: ServeArgs,
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Seed a realistic population on a running service and measure it
    /// under a read-heavy mix
    Load(infinity_load::LoadArgs),
    /// Run the HTTP load balancer (Pingora) in front of API nodes
    Lb(infinity_lb::LbArgs),
    /// Start a local topology from a TOML file: PostgreSQL, Redis, API nodes
    /// and a load balancer, under a supervisor in the background
    Up(topology::UpArgs),
    /// Show each process of a local topology, whether it is alive and
    /// healthy; exit status 1 when one is not, and 0 after `infinity down`
    Status(topology::StatusArgs),
    /// Stop a local topology started with `infinity up`
    Down(topology::DownArgs),
}

/// Parses the command line. The global `--log-format` may come before or
/// after the subcommand. The serve flags before a subcommand are rejected,
/// because the subcommand would ignore them.
// NOTE: clap's `args_conflicts_with_subcommands` cannot do this, because it
// also rejects a global flag before the subcommand (clap 4.6).
fn parse_cli() -> Cli {
    let mut command = Cli::command();
    let matches = command.get_matches_mut();
    if let Some((subcommand, _)) = matches.subcommand() {
        let misplaced = command.get_arguments().find(|arg| {
            !arg.is_global_set()
                && matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine)
        });
        if let Some(arg) = misplaced {
            let flag = arg.get_long().unwrap_or(arg.get_id().as_str());
            let accepted = command.find_subcommand(subcommand).is_some_and(|sub| {
                sub.get_arguments()
                    .any(|candidate| candidate.get_long() == Some(flag))
            });
            let advice = if accepted {
                format!("Put it after '{subcommand}'")
            } else {
                format!("'{subcommand}' does not take it")
            };
            let message = format!(
                "the argument '--{flag}' cannot be used before the subcommand '{subcommand}'. {advice}"
            );
            command.error(ErrorKind::ArgumentConflict, message).exit();
        }
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_env("INFINITY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run_jobs(target: ServeArgs, command: jobs::JobsCommand) -> anyhow::Result<()> {
    let settings = target.resolve()?;
    if let config::Database::Sqlite(path) = &settings.database {
        if !path.exists() {
            anyhow::bail!(
                "no database at {}: pass the --data-dir or --database of the service, before the subcommand",
                path.display()
            );
        }
    }
    let stores = serve::open_store(&settings).await?;
    let dead = match jobs::broker_config(&settings) {
        Some(config) => Some(
            infinity_broker::dead::DeadLetters::open(stores.outbox.clone(), config)
                .await
                .context("connecting to the broker (--broker) failed")?,
        ),
        None => None,
    };
    let result = jobs::run_command(stores.jobs.as_ref(), dead.as_ref(), command).await;
    if let Some(dead) = dead {
        dead.close().await;
    }
    result
}

fn main() {
    let cli = parse_cli();
    init_logging(&cli.log_format);
    // Processes this one starts, such as the nodes of `infinity up`, log in
    // the same format. No other thread runs yet, so the write is not racy.
    std::env::set_var("INFINITY_LOG_FORMAT", &cli.log_format);
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    // Pingora makes runtimes of its own, and refuses to start inside one.
    if let Command::Lb(args) = command {
        exit_on_error(infinity_lb::run(args));
        return;
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
        .block_on(run(command));
    exit_on_error(result);
}

fn exit_on_error(result: anyhow::Result<()>) {
    if let Err(error) = result {
        eprintln!("infinity: {error:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => match args.resolve() {
            Ok(settings) => serve::run(settings).await,
            Err(error) => Err(error),
        },
        Command::Worker(args) => match args.resolve() {
            Ok(settings) => serve::run_worker(settings).await,
            Err(error) => Err(error),
        },
        Command::Jobs { target, command } => run_jobs(target, command).await,
        Command::Migrate(args) => match args.resolve() {
            Ok(settings) => db::migrate(&settings).await,
            Err(error) => Err(error),
        },
        Command::Db { target, command } => match target.resolve() {
            Ok(settings) => db::run(&settings, command).await,
            Err(error) => Err(error),
        },
        Command::Load(args) => infinity_load::run(args).await.map(|_| ()),
        Command::Up(args) => topology::up(args).await,
        Command::Status(args) => topology::status(args).await,
        Command::Down(args) => topology::down(args).await,
        Command::Lb(_) => unreachable!("main runs the balancer before any runtime starts"),
    }
}
