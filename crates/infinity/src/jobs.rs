//! Background work in this process (`serve`, `worker`) and the operator's
//! `infinity jobs` command.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use infinity_jobs::handlers::{
    MakeVariants, NewFollowerEmail, WelcomeEmail, MAKE_VARIANTS, NEW_FOLLOWER_EMAIL, WELCOME_EMAIL,
};
use infinity_jobs::mail::Mailer;
use infinity_jobs::objects::ObjectStore;
use infinity_jobs::worker::publish_queue_gauges;
use infinity_jobs::{Worker, WorkerConfig};
use infinity_store::{Id, JobQueue, JobState, Store};
use tokio::sync::watch;

use crate::config::Settings;

/// How long making the variants of one upload may take.
const RENDER_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts the job workers and the queue gauges; they stop when `shutdown`
/// turns true. Returns `None` when the settings run no workers here.
pub fn start(
    settings: &Settings,
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    objects: Arc<dyn ObjectStore>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    tokio::spawn(publish_queue_gauges(
        queue.clone(),
        Duration::from_secs(5),
        shutdown.clone(),
    ));
    if settings.jobs.workers == 0 {
        return Ok(None);
    }
    let mailer = Arc::new(
        Mailer::new(
            settings.jobs.smtp_url.as_deref(),
            settings.data_dir.join("outbox"),
            &settings.jobs.mail_from,
        )
        .context("invalid e-mail settings")?,
    );
    let config = WorkerConfig {
        concurrency: settings.jobs.workers,
        lease: settings.jobs.lease,
        max_attempts: settings.jobs.max_attempts,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(queue, config)
        .handle(WELCOME_EMAIL, WelcomeEmail(mailer.clone()))
        .handle(
            NEW_FOLLOWER_EMAIL,
            NewFollowerEmail {
                mailer,
                store: store.clone(),
            },
        )
        .handle(
            MAKE_VARIANTS,
            MakeVariants {
                store,
                objects,
                limits: infinity_media::Limits::default(),
                timeout: RENDER_TIMEOUT,
            },
        );
    Ok(Some(tokio::spawn(Arc::new(worker).run(shutdown))))
}

/// `infinity jobs`: inspect and repair the job queue.
#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first
    List {
        /// Only jobs in this state: queued, running, done or dead
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

/// Runs an `infinity jobs` subcommand, printing to stdout. A closed stdout
/// (as in `infinity jobs list | head`) ends the listing quietly.
pub async fn run_command(queue: &dyn JobQueue, command: JobsCommand) -> anyhow::Result<()> {
    match print_command(queue, command).await {
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

async fn print_command(queue: &dyn JobQueue, command: JobsCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        JobsCommand::List { state, limit } => {
            let state = match state.as_deref() {
                Some(text) => Some(JobState::parse(text).with_context(|| {
                    format!("invalid --state {text:?}: expected queued, running, done or dead")
                })?),
                None => None,
            };
            let jobs = queue.jobs(state, limit).await?;
            writeln!(
                out,
                "{:<18} {:<20} {:<8} {:>8}  last error",
                "id", "kind", "state", "attempts"
            )?;
            for job in jobs {
                writeln!(
                    out,
                    "{:<18} {:<20} {:<8} {:>8}  {}",
                    job.id,
                    job.kind,
                    job.state.as_str(),
                    job.attempts,
                    job.last_error.unwrap_or_default()
                )?;
            }
        }
        JobsCommand::Retry { id } => {
            anyhow::ensure!(queue.retry(id).await?, "job {id} is not a dead job");
            writeln!(out, "job {id} queued again")?;
        }
        JobsCommand::Discard { id } => {
            anyhow::ensure!(queue.discard(id).await?, "job {id} is not a dead job");
            writeln!(out, "job {id} discarded")?;
        }
        JobsCommand::Counts => {
            for (state, count) in queue.counts().await? {
                writeln!(out, "{:<8} {count}", state.as_str())?;
            }
        }
    }
    Ok(())
}
