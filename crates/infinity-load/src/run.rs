//! Entry point of `infinity load`: seed or reuse a population, run the mix, print the report.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::LoadArgs;
use crate::client::ApiClient;
use crate::driver::{Driver, Stop};
use crate::mix::Mix;
use crate::population::{plan, PlanConfig, Population, User};
use crate::report::{Recorder, Report};
use crate::requests::Targets;
use crate::seed::{progress_bar, Seeder};

/// Seeds a population (or reuses one from `--reuse`), sends the mix, prints the report as a
/// table or as JSON on stdout, and returns it. With `--seed-only` the report has no
/// operations, only the seeding summary.
pub async fn run(args: LoadArgs) -> anyhow::Result<Report> {
    args.validate()?;
    let pool_size = args.concurrency.max(args.seed_concurrency) as usize;
    let client = Arc::new(ApiClient::new(args.base_url(), pool_size, args.timeout)?);

    let (population, seeding) = match &args.reuse {
        Some(_) => (reuse_population(&client, &args).await?, None),
        None => {
            let (population, summary) = seed_population(&client, &args).await?;
            (population, Some(summary))
        }
    };

    let mut report = if args.seed_only {
        Recorder::default().report(Duration::ZERO)
    } else {
        run_mix(client, population, &args).await?
    };
    report.seeding = seeding;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(report)
}

async fn seed_population(
    client: &ApiClient,
    args: &LoadArgs,
) -> anyhow::Result<(Population, crate::report::SeedSummary)> {
    // A default seed below one million keeps usernames short.
    let seed = args
        .seed
        .unwrap_or_else(|| rand::random_range(0..1_000_000));
    // Titles also carry a random suffix, so seeding the same seed twice against one server
    // creates new articles instead of clashing on slugs.
    let title_suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let plan = plan(&PlanConfig::from_args(args), seed, &title_suffix)?;
    notify(
        args,
        &format!(
            "seeding {} users, {} articles, {} comments, {} favourites with seed {seed}",
            plan.users.len(),
            plan.articles.len(),
            plan.comments.len(),
            plan.favorites.len()
        ),
    );

    let concurrency = args.seed_concurrency as usize;
    let seeder = Seeder::new(client, concurrency, args.quiet, args.zipf_exponent);
    let photos = args
        .photos
        .as_deref()
        .map(|folder| (folder, args.max_photos));
    let (population, summary) = seeder.seed(&plan, args.base_url(), seed, photos).await?;
    population.save(&args.state)?;
    notify(
        args,
        &format!("wrote the population to {}", args.state.display()),
    );
    Ok((population, summary))
}

/// Loads the state file and logs every user in again when the target rejects a stored token.
async fn reuse_population(client: &ApiClient, args: &LoadArgs) -> anyhow::Result<Population> {
    let path = args.reuse.as_deref().expect("called with --reuse");
    let mut population = Population::load(path)?;
    if population.target != args.base_url() {
        tracing::warn!(
            stored = %population.target,
            target = %args.base_url(),
            "the state file was seeded against another target"
        );
    }

    let first = &population.users[0];
    let valid = client
        .token_is_valid(&first.token)
        .await
        .context("failed to check a stored token")?;
    if !valid {
        notify(
            args,
            "the target rejected the stored tokens, logging in again",
        );
        relogin(client, &mut population.users, args).await?;
        population.target = args.base_url().to_string();
        population.save(path)?;
    }
    Ok(population)
}

async fn relogin(client: &ApiClient, users: &mut [User], args: &LoadArgs) -> anyhow::Result<()> {
    let concurrency = args.seed_concurrency as usize;
    let bar = progress_bar("logins", users.len() as u64, args.quiet);
    let tokens: Vec<_> = futures::stream::iter(users.iter())
        .map(|user| {
            let bar = &bar;
            async move {
                let token = client.login(&user.email, &user.password).await;
                bar.inc(1);
                token.with_context(|| format!("failed to log in user {}", user.username))
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    bar.finish();
    for (user, token) in users.iter_mut().zip(tokens) {
        user.token = token?;
    }
    Ok(())
}

async fn run_mix(
    client: Arc<ApiClient>,
    population: Population,
    args: &LoadArgs,
) -> anyhow::Result<Report> {
    let seed = population.seed;
    let targets = Targets::new(population, args.zipf_exponent)?;
    let has_fixed_feed = targets.population.feed_user.is_some();
    let mix = Mix::new(args.write_ratio, targets.has_articles(), has_fixed_feed);
    let stop = match args.requests {
        Some(requests) => Stop::Requests(requests),
        None => Stop::After(args.duration),
    };
    let driver = Arc::new(Driver {
        client,
        targets: Arc::new(targets),
        mix,
        seed,
        nonce: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
        progress: run_progress(stop, args.quiet),
        stop,
    });

    let (recorder, elapsed) = match args.rate {
        Some(rate) => Arc::clone(&driver).open_loop(rate, args.concurrency).await,
        None => Arc::clone(&driver).closed_loop(args.concurrency).await,
    };
    driver.progress.finish();
    Ok(recorder.report(elapsed))
}

/// Builds the run's progress bar: counted in requests, or in milliseconds of the duration.
fn run_progress(stop: Stop, quiet: bool) -> ProgressBar {
    let (len, template) = match stop {
        Stop::Requests(total) => (
            total,
            "{prefix:>10} [{bar:30}] {pos}/{len} requests {per_sec}",
        ),
        Stop::After(duration) => (
            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            "{prefix:>10} [{bar:30}] {elapsed} of the run",
        ),
    };
    if quiet {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(template)
        .expect("the template is valid")
        .progress_chars("=> ");
    ProgressBar::new(len).with_style(style).with_prefix("run")
}

/// Prints a status line on stderr unless `--quiet`, keeping stdout for the report.
fn notify(args: &LoadArgs, message: &str) {
    if !args.quiet {
        eprintln!("{message}");
    }
}
