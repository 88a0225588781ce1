//! Seeds and loads an in-process mock server on loopback, then checks the report against the
//! requests the mock counted.

mod mock;

use std::path::Path;

use clap::Parser;
use infinity_load::{LoadArgs, Report};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

/// Parses `infinity load` options as the binary would.
fn parse(target: &str, state: &Path, extra: &[&str]) -> LoadArgs {
    let mut argv = vec!["infinity-load", "--target", target, "--quiet"];
    argv.extend(["--state", state.to_str().unwrap()]);
    argv.extend(extra);
    Cli::try_parse_from(argv).unwrap().load
}

/// 30 users, the last following exactly 5 others, and 60 articles with one comment each.
#[rustfmt::skip]
const SMALL_POPULATION: [&str; 10] = [
    "--users", "30", "--articles", "60", "--feed-user-follows", "5", "--seed", "7",
    "--comments-per-article", "1",
];

/// Finds the count of an operation in the report, 0 when absent.
fn reported(report: &Report, name: &str) -> u64 {
    report
        .operations
        .iter()
        .find(|op| op.name == name)
        .map_or(0, |op| op.count)
}

#[tokio::test]
async fn run_counts_match_mock() {
    let (url, mock) = mock::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for name in ["a.jpg", "b.jpg", "c.png"] {
        std::fs::write(photos.join(name), b"not really an image").unwrap();
    }

    let mut seed_args = SMALL_POPULATION.to_vec();
    seed_args.extend(["--seed-only", "--photos", photos.to_str().unwrap()]);
    let seeded = infinity_load::run(parse(&url, &state, &seed_args))
        .await
        .unwrap();
    let summary = seeded.seeding.clone().unwrap();
    assert_eq!(seeded.requests, 0);
    assert_eq!(summary.users, 30);
    assert_eq!(summary.articles, 60);
    assert_eq!(summary.comments, 60);
    assert_eq!(summary.uploads, 3);
    assert_eq!(summary.errors, 0);
    assert_eq!(mock.count("register"), 30);
    assert_eq!(mock.count("create_article"), 60);
    assert_eq!(mock.count("create_comment"), 60);
    assert_eq!(mock.count("upload"), 3);
    assert_eq!(mock.count("follow"), summary.follows);
    assert_eq!(mock.followees("load7u29"), 5);

    mock.reset_counts();
    let reuse = [
        "--reuse",
        state.to_str().unwrap(),
        "--requests",
        "400",
        "--concurrency",
        "8",
    ];
    let report = infinity_load::run(parse(&url, &state, &reuse))
        .await
        .unwrap();
    let counts = mock.counts();
    assert_eq!(report.requests, 400);
    assert!(report.seeding.is_none());
    assert_eq!(
        mock.count("current_user"),
        1,
        "reuse checks one stored token"
    );

    // Feeds of the fixed user count as feed_5, every other feed as feed.
    let fixed_feeds = mock.count("feed:load7u29");
    let all_feeds: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("feed:"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(reported(&report, "feed_5"), fixed_feeds);
    assert_eq!(reported(&report, "feed"), all_feeds - fixed_feeds);
    assert!(fixed_feeds > 0);

    let names = [
        "get_article",
        "get_comments",
        "get_profile",
        "get_tags",
        "list_articles",
        "list_by_tag",
        "list_by_author",
        "list_by_favorited",
        "create_article",
        "create_comment",
        "favorite",
        "unfavorite",
        "follow",
        "unfollow",
    ];
    for name in names {
        assert_eq!(reported(&report, name), mock.count(name), "{name}");
    }
    let mock_total = all_feeds + names.iter().map(|name| mock.count(name)).sum::<u64>();
    assert_eq!(mock_total, 400, "mock counts: {counts:?}");

    // The mock fails every fifth GET /api/tags with 503, and nothing else.
    let failures = mock.count("get_tags_503");
    assert_eq!(failures, mock.count("get_tags") / mock::TAGS_FAILURE_EVERY);
    assert_eq!(report.errors, failures);
    assert_eq!(
        report.errors_by_status.get("503").copied().unwrap_or(0),
        failures
    );
    assert_eq!(report.ok, 400 - failures);
    assert_eq!(report.rate_limited, 0);
    let writes: u64 = names[8..].iter().map(|name| mock.count(name)).sum();
    assert!(
        (10..=80).contains(&writes),
        "{writes} writes of 400 at a 10 % write ratio"
    );
}

#[tokio::test]
async fn open_loop_holds_rate() {
    let (url, mock) = mock::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut args = SMALL_POPULATION.to_vec();
    args.extend(["--rate", "200", "--requests", "100", "--concurrency", "4"]);
    mock.reset_counts();

    let report = infinity_load::run(parse(&url, &state, &args))
        .await
        .unwrap();
    assert_eq!(report.requests, 100);
    assert_eq!(report.errors + report.ok, 100);
    // 100 requests at 200/s: the last is scheduled 0.495 s after the start.
    assert!(report.elapsed_s >= 0.495, "elapsed {}", report.elapsed_s);
    assert!(report.elapsed_s < 5.0, "elapsed {}", report.elapsed_s);
    assert!(
        report.throughput_rps <= 202.5,
        "throughput {}",
        report.throughput_rps
    );
}

#[tokio::test]
async fn duration_run_stops_by_itself() {
    let (url, _mock) = mock::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut args = SMALL_POPULATION.to_vec();
    args.extend(["--duration", "300ms", "--concurrency", "2", "--json"]);

    let report = infinity_load::run(parse(&url, &state, &args))
        .await
        .unwrap();
    assert!(report.requests > 0);
    assert!(report.elapsed_s >= 0.3, "elapsed {}", report.elapsed_s);
    assert!(report.elapsed_s < 5.0, "elapsed {}", report.elapsed_s);
}

#[tokio::test]
async fn reuse_logs_in_after_token_rejection() {
    let (url, mock) = mock::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut seed_args = SMALL_POPULATION.to_vec();
    seed_args.push("--seed-only");
    infinity_load::run(parse(&url, &state, &seed_args))
        .await
        .unwrap();
    let before = std::fs::read_to_string(&state).unwrap();

    mock.revoke_tokens();
    mock.limit_next_login
        .store(true, std::sync::atomic::Ordering::Relaxed);
    mock.reset_counts();
    let reuse = [
        "--reuse",
        state.to_str().unwrap(),
        "--requests",
        "50",
        "--concurrency",
        "2",
    ];
    let report = infinity_load::run(parse(&url, &state, &reuse))
        .await
        .unwrap();

    assert_eq!(mock.count("login_429"), 1);
    assert_eq!(
        mock.count("login"),
        31,
        "30 logins and one rejected with 429"
    );
    assert_eq!(mock.count("feed_unauthorized"), 0);
    assert_eq!(report.requests, 50);
    assert!(
        !report.errors_by_status.contains_key("401"),
        "{:?}",
        report.errors_by_status
    );
    assert_ne!(
        std::fs::read_to_string(&state).unwrap(),
        before,
        "new tokens are saved"
    );
}

#[tokio::test]
async fn reseeding_same_seed_logs_in_existing_users() {
    let (url, mock) = mock::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut seed_args = SMALL_POPULATION.to_vec();
    seed_args.push("--seed-only");
    infinity_load::run(parse(&url, &state, &seed_args))
        .await
        .unwrap();
    let report = infinity_load::run(parse(&url, &state, &seed_args))
        .await
        .unwrap();

    assert_eq!(mock.count("register"), 60);
    assert_eq!(mock.count("login"), 30);
    let summary = report.seeding.unwrap();
    assert_eq!(summary.users, 30);
    assert_eq!(summary.articles, 60);
    assert_eq!(summary.errors, 0);
}

#[tokio::test]
async fn missing_upload_route_skips_uploads() {
    let (url, mock) = mock::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for name in ["a.jpg", "b.jpg", "c.jpg"] {
        std::fs::write(photos.join(name), b"jpeg").unwrap();
    }
    let mut args = SMALL_POPULATION.to_vec();
    args.extend(["--seed-only", "--photos", photos.to_str().unwrap()]);
    // One request in flight, so exactly one upload reaches the missing route.
    args.extend(["--seed-concurrency", "1"]);

    let report = infinity_load::run(parse(&url, &state, &args))
        .await
        .unwrap();
    let summary = report.seeding.unwrap();
    assert_eq!(summary.uploads, 0);
    assert_eq!(summary.errors, 0);
    assert_eq!(mock.count("not_found"), 1);
}

#[test]
fn invalid_options_are_rejected() {
    let state = Path::new("unused.json");
    let cases: [(&[&str], &str); 3] = [
        (&["--write-ratio", "1.5"], "--write-ratio"),
        (
            &["--users", "10", "--feed-user-follows", "10"],
            "--feed-user-follows",
        ),
        (&["--rate", "0"], "--rate"),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (extra, option) in cases {
        let error = runtime.block_on(infinity_load::run(parse(
            "http://127.0.0.1:9",
            state,
            extra,
        )));
        let message = error.unwrap_err().to_string();
        assert!(message.contains(option), "{message}");
    }
    let https = runtime.block_on(infinity_load::run(parse("https://127.0.0.1:9", state, &[])));
    assert!(https.unwrap_err().to_string().contains("http://"));
}
