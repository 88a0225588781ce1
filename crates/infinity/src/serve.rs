//! `infinity serve`: every role in one process.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use infinity_api::{app, AppState};
use infinity_store::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;

use crate::config::{Database, Settings};

/// Opens the store, binds the listener, prints the banner and serves until
/// SIGTERM or SIGINT; then stops accepting, finishes in-flight requests and
/// returns.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data folder {}",
            settings.data_dir.display()
        )
    })?;
    let store = match &settings.database {
        Database::Sqlite(path) => Arc::new(
            SqliteStore::open(path, SqliteOptions::default())
                .await
                .with_context(|| format!("cannot open the database {}", path.display()))?,
        ),
    };
    let state = AppState::new(store.clone(), store, settings.api.clone());
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener.local_addr()?;
    print_banner(&settings, address);

    spawn_limiter_cleanup(state.clone());
    let shutdown = {
        let state = state.clone();
        let drain = settings.drain;
        async move {
            shutdown_signal().await;
            tracing::info!(
                drain_seconds = drain.as_secs(),
                "shutdown requested; draining"
            );
            state.draining.store(true, Ordering::SeqCst);
            tokio::time::sleep(drain).await;
        }
    };
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("the HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

fn print_banner(settings: &Settings, address: SocketAddr) {
    println!(
        "Infinity {} serving http://{address}/api",
        env!("CARGO_PKG_VERSION")
    );
    println!("  data folder  {}", settings.data_dir.display());
    println!(
        "  tiers        database {}, cache in-process, sessions in the database",
        settings.database.describe()
    );
}

fn spawn_limiter_cleanup(state: AppState) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(infinity_api::ratelimit::FORGET_INTERVAL);
        loop {
            ticks.tick().await;
            state.limiter.forget_idle();
        }
    });
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
