//! Command-line options of `infinity load`.

use std::path::PathBuf;
use std::time::Duration;

/// Options of `infinity load`: the target, the population to seed and the traffic to send.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Base URL of the Infinity server, for example http://127.0.0.1:8080. All traffic goes
    /// only to this address. Plain http only, because this build has no TLS.
    #[arg(long, env = "INFINITY_LOAD_TARGET")]
    pub target: String,

    /// Run length as a duration such as 30s or 2m. Ignored when --requests is given.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Number of requests to send in the run, in place of --duration.
    #[arg(long)]
    pub requests: Option<u64>,

    /// Closed-loop workers, each sending its next request when the previous one returns. With
    /// --rate, the maximum number of requests in flight. Also sizes the connection pool.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Open-loop rate in requests per second. Requests are scheduled by the clock and latency
    /// is measured from each request's scheduled send time.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Fraction of run requests that are writes, from 0 to 1.
    #[arg(long, default_value_t = 0.1)]
    pub write_ratio: f64,

    /// Number of users to register.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..))]
    pub users: u32,

    /// Number of articles to create.
    #[arg(long, default_value_t = 2000)]
    pub articles: u32,

    /// Mean number of users each user follows. Followees are picked by Zipf popularity, so
    /// follower counts are heavy-tailed.
    #[arg(long, default_value_t = 10.0)]
    pub follows_per_user: f64,

    /// Make the last seeded user follow exactly this many others, and report its feed latency
    /// separately as the operation feed_N (feed_100 for 100).
    #[arg(long)]
    pub feed_user_follows: Option<u32>,

    /// Mean number of comments per article.
    #[arg(long, default_value_t = 2.0)]
    pub comments_per_article: f64,

    /// Mean number of articles each user favourites.
    #[arg(long, default_value_t = 5.0)]
    pub favorites_per_user: f64,

    /// Number of distinct tags.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub tags: u32,

    /// Zipf exponent of user, article and tag popularity (greater is more skewed).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,

    /// Folder of photos to upload while seeding, one upload per file.
    #[arg(long)]
    pub photos: Option<PathBuf>,

    /// Maximum number of photos to upload from --photos.
    #[arg(long, default_value_t = 200)]
    pub max_photos: usize,

    /// Requests in flight while seeding.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub seed_concurrency: u32,

    /// Seed of the random number generator, so the same seed builds the same population.
    /// A random seed is drawn, printed and stored in the state file when this is absent.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Prefix of seeded usernames. Usernames also contain the seed.
    #[arg(long, default_value = "load")]
    pub prefix: String,

    /// File the seeded population (credentials, tokens, usernames, slugs) is written to.
    #[arg(long, default_value = "infinity-load.json")]
    pub state: PathBuf,

    /// Load the population from this state file instead of seeding a new one, so the population
    /// options and --seed are ignored. Users log in again when the target rejects the stored
    /// tokens, and the new tokens are written back to this file.
    #[arg(long, conflicts_with = "seed_only")]
    pub reuse: Option<PathBuf>,

    /// Seed the population, write the state file and stop without running the mix.
    #[arg(long)]
    pub seed_only: bool,

    /// Timeout of a single request, as a duration such as 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Print the report as JSON on stdout. Progress still goes to stderr.
    #[arg(long)]
    pub json: bool,

    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// Checks the values that clap cannot check alone.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.target.starts_with("http://") {
            anyhow::bail!(
                "invalid --target {:?}: expected an http:// URL such as http://127.0.0.1:8080",
                self.target
            );
        }
        if !(0.0..=1.0).contains(&self.write_ratio) {
            anyhow::bail!(
                "invalid --write-ratio {}: expected 0 to 1",
                self.write_ratio
            );
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                anyhow::bail!("invalid --rate {rate}: expected a positive number of requests/s");
            }
        }
        if let Some(follows) = self.feed_user_follows {
            if follows >= self.users {
                anyhow::bail!(
                    "invalid --feed-user-follows {follows}: must be less than --users {}",
                    self.users
                );
            }
        }
        let means = [
            ("--follows-per-user", self.follows_per_user),
            ("--comments-per-article", self.comments_per_article),
            ("--favorites-per-user", self.favorites_per_user),
        ];
        for (name, value) in means {
            if !(value.is_finite() && value >= 0.0) {
                anyhow::bail!("invalid {name} {value}: expected a number of at least 0");
            }
        }
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent >= 0.0) {
            anyhow::bail!(
                "invalid --zipf-exponent {}: expected at least 0",
                self.zipf_exponent
            );
        }
        Ok(())
    }

    /// Returns the target URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.target.trim_end_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(extra: &[&str]) -> Result<LoadArgs, clap::Error> {
        let mut argv = vec!["infinity-load", "--target", "http://127.0.0.1:8080/"];
        argv.extend(extra);
        Cli::try_parse_from(argv).map(|cli| cli.load)
    }

    #[test]
    fn options_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_fit_a_quick_run() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.users, 200);
        assert_eq!(args.articles, 2000);
        assert_eq!(args.duration, Duration::from_secs(30));
        assert_eq!(args.concurrency, 32);
        assert_eq!(args.write_ratio, 0.1);
        assert_eq!(args.state, PathBuf::from("infinity-load.json"));
        assert_eq!(args.rate, None);
        assert_eq!(args.feed_user_follows, None);
        assert_eq!(args.base_url(), "http://127.0.0.1:8080");
        args.validate().unwrap();
    }

    #[test]
    fn durations_use_humantime() {
        let args = parse(&["--duration", "2m", "--timeout", "500ms"]).unwrap();
        assert_eq!(args.duration, Duration::from_secs(120));
        assert_eq!(args.timeout, Duration::from_millis(500));
    }

    #[test]
    fn reuse_conflicts_with_seed_only() {
        assert!(parse(&["--reuse", "state.json", "--seed-only"]).is_err());
    }

    #[test]
    fn zero_concurrency_is_rejected() {
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--users", "1"]).is_err());
    }

    #[test]
    fn validate_rejects_bad_means() {
        let args = parse(&["--follows-per-user=-1"]).unwrap();
        let message = args.validate().unwrap_err().to_string();
        assert!(message.contains("--follows-per-user"), "{message}");
    }
}
