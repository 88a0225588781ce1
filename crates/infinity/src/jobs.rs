//! Background work in this process (`serve`, `worker`) and the operator's
//! `infinity jobs` command.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use infinity_broker::dead::DeadLetters;
use infinity_broker::{BrokerConfig, BrokerWorker, Relay};
use infinity_jobs::handlers::{
    MakeVariants, NewFollowerEmail, WelcomeEmail, MAKE_VARIANTS, NEW_FOLLOWER_EMAIL, WELCOME_EMAIL,
};
use infinity_jobs::mail::Mailer;
use infinity_jobs::objects::ObjectStore;
use infinity_jobs::worker::publish_queue_gauges;
use infinity_jobs::{Handlers, Worker, WorkerConfig};
use infinity_store::{Id, JobQueue, JobState, Store};
use tokio::sync::watch;

use crate::config::Settings;
use crate::serve::Stores;

/// How long making the variants of one upload may take.
const RENDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The kind of process that runs the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `infinity serve`: the API, with the outbox relay when there is a
    /// broker, and `--workers` workers.
    Serve,
    /// `infinity worker`: workers only.
    Worker,
}

/// Builds the broker settings of the relay and the workers, or `None` for
/// the embedded queue.
pub fn broker_config(settings: &Settings) -> Option<BrokerConfig> {
    let broker = settings.jobs.broker.as_ref()?;
    let defaults = WorkerConfig::default();
    Some(BrokerConfig {
        url: broker.url.clone(),
        prefix: broker.prefix.clone(),
        prefetch: broker.prefetch,
        max_attempts: settings.jobs.max_attempts,
        base_backoff: defaults.base_backoff,
        max_backoff: defaults.max_backoff,
        delivery_limit: broker.delivery_limit,
        lease: settings.jobs.lease,
    })
}

/// Starts the job workers, the queue gauges and, for `serve` with a broker,
/// the outbox relay; they stop when `shutdown` turns true. Returns `None`
/// when nothing but the gauges runs here.
pub fn start(
    settings: &Settings,
    stores: &Stores,
    objects: Arc<dyn ObjectStore>,
    role: Role,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    tokio::spawn(publish_queue_gauges(
        stores.outbox.clone(),
        Duration::from_secs(5),
        shutdown.clone(),
    ));
    let mut tasks = Vec::new();
    let broker = broker_config(settings);
    if let (Some(config), Role::Serve) = (&broker, role) {
        let relay = Relay::new(stores.outbox.clone(), config);
        tasks.push(tokio::spawn(relay.run(shutdown.clone())));
    }
    if settings.jobs.workers > 0 {
        let handlers = handlers(settings, stores.store.clone(), objects)?;
        let task = match broker {
            Some(config) => {
                let worker = BrokerWorker::new(
                    stores.outbox.clone(),
                    handlers,
                    config,
                    settings.jobs.workers,
                );
                tokio::spawn(Arc::new(worker).run(shutdown))
            }
            None => {
                let config = WorkerConfig {
                    concurrency: settings.jobs.workers,
                    lease: settings.jobs.lease,
                    max_attempts: settings.jobs.max_attempts,
                    ..WorkerConfig::default()
                };
                let worker = Worker::new(stores.jobs.clone(), config).with_handlers(handlers);
                tokio::spawn(Arc::new(worker).run(shutdown))
            }
        };
        tasks.push(task);
    }
    if tasks.is_empty() {
        return Ok(None);
    }
    Ok(Some(tokio::spawn(async move {
        for task in tasks {
            let _ = task.await;
        }
    })))
}

/// Builds the handler of every job kind.
fn handlers(
    settings: &Settings,
    store: Arc<dyn Store>,
    objects: Arc<dyn ObjectStore>,
) -> anyhow::Result<Handlers> {
    let mailer = Arc::new(
        Mailer::new(
            settings.jobs.smtp_url.as_deref(),
            settings.data_dir.join("outbox"),
            &settings.jobs.mail_from,
        )
        .context("invalid e-mail settings")?,
    );
    let mut handlers: Handlers = Handlers::new();
    handlers.insert(WELCOME_EMAIL.into(), Arc::new(WelcomeEmail(mailer.clone())));
    handlers.insert(
        NEW_FOLLOWER_EMAIL.into(),
        Arc::new(NewFollowerEmail {
            mailer,
            store: store.clone(),
        }),
    );
    handlers.insert(
        MAKE_VARIANTS.into(),
        Arc::new(MakeVariants {
            store,
            objects,
            limits: infinity_media::Limits::default(),
            timeout: RENDER_TIMEOUT,
        }),
    );
    Ok(handlers)
}

/// `infinity jobs`: inspect and repair the job queue.
#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first
    List {
        /// Only jobs in this state: queued, published, running, done or dead
        #[arg(long)]
        state: Option<String>,
        /// Maximum number of jobs to list
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Queue a dead job again, with its attempts reset
    Retry { id: Id },
    /// Delete a dead job
    Discard { id: Id },
    /// Count jobs per state
    Counts,
}

/// Runs an `infinity jobs` subcommand, printing to stdout. With a broker,
/// `dead` is its dead-letter queue: jobs that the broker dead-lettered on
/// its own are marked dead first, and retry and discard act on the queue
/// too. A closed stdout (as in `infinity jobs list | head`) ends the listing
/// quietly.
pub async fn run_command(
    queue: &dyn JobQueue,
    dead: Option<&DeadLetters>,
    command: JobsCommand,
) -> anyhow::Result<()> {
    if let Some(dead) = dead {
        dead.sync()
            .await
            .context("reading the broker's dead-letter queue failed")?;
    }
    match print_command(queue, dead, command).await {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

async fn print_command(
    queue: &dyn JobQueue,
    dead: Option<&DeadLetters>,
    command: JobsCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        JobsCommand::List { state, limit } => {
            let state = match state.as_deref() {
                Some(text) => Some(JobState::parse(text).with_context(|| {
                    format!("invalid --state {text:?}: expected queued, published, running, done or dead")
                })?),
                None => None,
            };
            let jobs = queue.jobs(state, limit).await?;
            writeln!(
                out,
                "{:<18} {:<20} {:<9} {:>8}  last error",
                "id", "kind", "state", "attempts"
            )?;
            for job in jobs {
                writeln!(
                    out,
                    "{:<18} {:<20} {:<9} {:>8}  {}",
                    job.id,
                    job.kind,
                    job.state.as_str(),
                    job.attempts,
                    job.last_error.unwrap_or_default()
                )?;
            }
        }
        JobsCommand::Retry { id } => {
            let retried = match dead {
                Some(dead) => dead.retry(id).await?,
                None => queue.retry(id).await?,
            };
            anyhow::ensure!(retried, "job {id} is not a dead job");
            writeln!(out, "job {id} queued again")?;
        }
        JobsCommand::Discard { id } => {
            let discarded = match dead {
                Some(dead) => dead.discard(id).await?,
                None => queue.discard(id).await?,
            };
            anyhow::ensure!(discarded, "job {id} is not a dead job");
            writeln!(out, "job {id} discarded")?;
        }
        JobsCommand::Counts => {
            for (state, count) in queue.counts().await? {
                writeln!(out, "{:<9} {count}", state.as_str())?;
            }
            if let Some(dead) = dead {
                let depths = dead.depths().await?;
                writeln!(
                    out,
                    "broker    {} ready, {} waiting to retry, {} dead letters",
                    depths.work, depths.waiting, depths.dead
                )?;
            }
        }
    }
    Ok(())
}
