//! `infinity migrate` and `infinity db`: the schema, and the PostgreSQL
//! servers behind the service.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use infinity_store::{PostgresStore, Role, ServerStatus, Store};
use sqlx::postgres::PgPoolOptions;

use crate::config::{Database, Settings};
use crate::serve;

/// How long `db promote` waits for the replica to finish its promotion.
const PROMOTE_WAIT_SECONDS: i32 = 60;

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Show every server's role, WAL position, lag and place in rotation
    Status,
    /// Promote a replica to primary, with PostgreSQL's own pg_promote();
    /// running nodes follow the new primary without a restart
    Promote {
        /// The replica to promote [default: the reachable replica that has
        /// replayed the most]
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Promote even though the current primary still answers, which
        /// leaves two primaries until the old one is stopped
        #[arg(long)]
        force: bool,
    },
}

/// Applies the schema and reports the engine it is on.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    serve::open_store(settings).await?;
    println!("schema up to date on {}", settings.database.describe());
    Ok(())
}

pub async fn run(settings: &Settings, command: DbCommand) -> anyhow::Result<()> {
    if let Database::Sqlite(_) = settings.database {
        bail!("infinity db needs a postgres:// database (--database); SQLite has no servers to manage");
    }
    let store = serve::connect_postgres(settings).await?;
    match command {
        DbCommand::Status => {
            print_status(&store.servers());
            Ok(())
        }
        DbCommand::Promote { server, force } => promote(settings, &store, server, force).await,
    }
}

fn print_status(servers: &[ServerStatus]) {
    println!(
        "{:<32} {:<12} {:<10} {:>16} {:>10} {:>12}  note",
        "server", "role", "rotation", "position", "lag (s)", "lag (bytes)"
    );
    for server in servers {
        let role = match server.role {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Unreachable => "unreachable",
        };
        println!(
            "{:<32} {:<12} {:<10} {:>16} {:>10.3} {:>12}  {}",
            server.name,
            role,
            if server.in_rotation { "in" } else { "out" },
            server.position,
            server.lag_seconds,
            server.lag_bytes,
            server.error.as_deref().unwrap_or("")
        );
    }
}

async fn promote(
    settings: &Settings,
    store: &PostgresStore,
    server: Option<String>,
    force: bool,
) -> anyhow::Result<()> {
    let Database::Postgres(options) = &settings.database else {
        unreachable!("checked by the caller");
    };
    let servers = store.servers();
    let primary = servers
        .iter()
        .find(|s| s.role == Role::Primary && s.in_rotation);
    if let (Some(primary), false) = (primary, force) {
        bail!(
            "the primary {} still answers; stop it first, or pass --force to accept two primaries until it is stopped",
            primary.name
        );
    }
    let mut urls = vec![options.primary.clone()];
    urls.extend(options.replicas.iter().cloned());
    let url = match server {
        Some(url) => url,
        None => {
            // The most advanced replica loses the fewest transactions.
            let (index, _) = servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.role == Role::Replica)
                .max_by_key(|(_, s)| s.position)
                .context("no reachable replica to promote")?;
            urls[index].clone()
        }
    };
    let name = infinity_store::server_name(&url)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .with_context(|| format!("cannot connect to {name}"))?;
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&pool)
        .await?;
    if !in_recovery {
        bail!("{name} is not a replica: it is already a primary");
    }
    let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, $1)")
        .bind(PROMOTE_WAIT_SECONDS)
        .fetch_one(&pool)
        .await
        .with_context(|| format!("promoting {name} failed"))?;
    if !promoted {
        bail!("{name} did not finish its promotion within {PROMOTE_WAIT_SECONDS} seconds; check its log");
    }
    store.probe().await;
    println!("promoted {name}; running nodes follow it at their next probe");
    print_status(&store.servers());
    Ok(())
}
