//! `infinity serve`: every role in one process; `infinity worker`: the job
//! workers alone, against the same data.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use infinity_api::backlog::Backlog;
use infinity_api::uploads::UploadSettings;
use infinity_api::{app, AppState};
use infinity_jobs::objects::{LocalFolder, ObjectStore};
use infinity_redis::{
    Redis, RedisBus, RedisCache, RedisIdempotency, RedisLimits, RedisPositions, RedisSessions,
};
use infinity_store::{
    JobQueue, Outbox, PostgresStore, SessionStore, SqliteOptions, SqliteStore, Store,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Database, Settings};
use crate::jobs::Role;

/// How long an upload's in-request check may take.
const UPLOAD_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The storage tier as the roles use it: one engine behind four interfaces.
#[derive(Clone)]
pub struct Stores {
    pub store: Arc<dyn Store>,
    pub sessions: Arc<dyn SessionStore>,
    pub jobs: Arc<dyn JobQueue>,
    /// The `jobs` table as the outbox in front of a broker.
    pub outbox: Arc<dyn Outbox>,
}

impl Stores {
    fn of<S: Store + SessionStore + Outbox>(engine: S) -> Self {
        let engine = Arc::new(engine);
        Self {
            store: engine.clone(),
            sessions: engine.clone(),
            jobs: engine.clone(),
            outbox: engine,
        }
    }
}

/// Creates the data folder, opens the database and brings its schema up to
/// date.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Stores> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data folder {}",
            settings.data_dir.display()
        )
    })?;
    match &settings.database {
        Database::Sqlite(path) => Ok(Stores::of(
            SqliteStore::open(path, SqliteOptions::default())
                .await
                .with_context(|| format!("cannot open the database {}", path.display()))?,
        )),
        Database::Postgres(_) => {
            let store = connect_postgres(settings).await?;
            store.migrate().await.with_context(|| {
                format!(
                    "cannot apply the schema to {}",
                    settings.database.describe()
                )
            })?;
            Ok(Stores::of(store))
        }
    }
}

/// Connects to the configured PostgreSQL servers without touching the
/// schema.
pub async fn connect_postgres(settings: &Settings) -> anyhow::Result<PostgresStore> {
    let Database::Postgres(options) = &settings.database else {
        anyhow::bail!("this command needs a postgres:// database (--database)");
    };
    PostgresStore::connect(options.clone())
        .await
        .with_context(|| format!("cannot connect to {}", settings.database.describe()))
}

/// Builds the API's state, with Redis as the tier every node shares when
/// one is configured.
async fn shared_tier(
    settings: &Settings,
    stores: &Stores,
    uploads: UploadSettings,
) -> anyhow::Result<AppState> {
    let Some(url) = &settings.redis else {
        let state = AppState::new(
            stores.store.clone(),
            stores.sessions.clone(),
            settings.api.clone(),
        );
        return Ok(state.with_uploads(uploads));
    };
    let redis = Redis::connect(url).await.map_err(anyhow::Error::msg)?;
    let sessions = Arc::new(RedisSessions::new(redis.clone(), stores.sessions.clone()));
    let state = AppState::new(stores.store.clone(), sessions, settings.api.clone())
        .with_uploads(uploads)
        .with_idempotency(Arc::new(RedisIdempotency::new(redis.clone())));
    state
        .positions
        .set_shared(Arc::new(RedisPositions::new(redis.clone())));
    state
        .limiter
        .set_shared(Arc::new(RedisLimits::new(redis.clone())));
    // The shared cache relies on log positions, which only PostgreSQL
    // reports; SQLite runs a single node anyway.
    if matches!(settings.database, Database::Postgres(_)) {
        state
            .reads
            .set_shared_cache(Arc::new(RedisCache::new(redis.clone())));
    }
    RedisBus::start(redis, state.clone(), settings.api.cache.ttl);
    Ok(state)
}

fn objects(settings: &Settings) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFolder::new(settings.data_dir.join("objects")))
}

/// Opens the store, binds the listener, prints the banner and serves until
/// SIGTERM or SIGINT; then fails `/readyz`, stops accepting, finishes
/// in-flight requests and jobs, and returns.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let stores = open_store(&settings).await?;
    let objects = objects(&settings);
    let uploads = UploadSettings {
        objects: objects.clone(),
        limits: infinity_media::Limits::default(),
        check_timeout: UPLOAD_CHECK_TIMEOUT,
        public_url: settings.public_url.clone(),
        backlog: Some(Arc::new(Backlog::new(stores.outbox.clone()))),
    };
    let state = shared_tier(&settings, &stores, uploads).await?;
    let (stop_jobs, jobs_stopped) = watch::channel(false);
    let workers = crate::jobs::start(&settings, &stores, objects, Role::Serve, jobs_stopped)?;

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

    let _ = stop_jobs.send(true);
    if let Some(workers) = workers {
        let _ = workers.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs the job workers alone until SIGTERM or SIGINT, then lets each
/// finish its current job.
pub async fn run_worker(settings: Settings) -> anyhow::Result<()> {
    let stores = open_store(&settings).await?;
    let (stop, stopped) = watch::channel(false);
    let Some(workers) = crate::jobs::start(
        &settings,
        &stores,
        objects(&settings),
        Role::Worker,
        stopped,
    )?
    else {
        anyhow::bail!("invalid --workers 0: a worker process needs at least one");
    };
    let queue = match &settings.jobs.broker {
        Some(broker) => format!("RabbitMQ queue {}.jobs", broker.prefix),
        None => "the embedded queue".to_string(),
    };
    println!(
        "Infinity {} worker: {} jobs at once from {queue}, data folder {}",
        env!("CARGO_PKG_VERSION"),
        settings.jobs.workers,
        settings.data_dir.display()
    );
    shutdown_signal().await;
    tracing::info!("shutdown requested; finishing current jobs");
    let _ = stop.send(true);
    let _ = workers.await;
    Ok(())
}

/// Prints the start-up banner. A closed stdout (a supervisor that stopped
/// reading) must not stop the server, so write errors are ignored.
fn print_banner(settings: &Settings, address: SocketAddr) {
    let mail = if settings.jobs.smtp_url.is_some() {
        "SMTP"
    } else {
        "outbox folder"
    };
    let workers = match settings.jobs.workers {
        0 => "none in this process".to_string(),
        n => format!("{n} in this process"),
    };
    let queue = match &settings.jobs.broker {
        Some(broker) => format!("RabbitMQ behind the outbox, queue {}.jobs", broker.prefix),
        None => "embedded queue".to_string(),
    };
    let (cache, sessions) = match &settings.redis {
        Some(url) => (
            format!("in-process, invalidated through Redis ({url})"),
            "in Redis before the database",
        ),
        None => ("in-process".to_string(), "in the database"),
    };
    let banner = format!(
        "Infinity {} serving http://{address}/api\n  \
         data folder  {}\n  \
         tiers        database {}, cache {cache}, sessions {sessions},\n               \
         jobs {queue} ({workers}), media local folder, e-mail {mail}\n",
        env!("CARGO_PKG_VERSION"),
        settings.data_dir.display(),
        settings.database.describe(),
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(banner.as_bytes());
    let _ = stdout.flush();
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
