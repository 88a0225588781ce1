//! Runs the load generator against a real `infinity serve` on loopback: a
//! tiny population, then a few hundred requests of the mix.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use clap::Parser;
use infinity_load::{LoadArgs, Report};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

/// Every operation of the mix, as the report names them. The fixed feed is
/// `feed_3` because the population below makes its last user follow 3 others.
const OPERATIONS: [&str; 16] = [
    "feed",
    "feed_3",
    "get_article",
    "get_profile",
    "list_articles",
    "list_by_tag",
    "list_by_author",
    "list_by_favorited",
    "get_tags",
    "get_comments",
    "create_article",
    "create_comment",
    "favorite",
    "unfavorite",
    "follow",
    "unfollow",
];

const REQUESTS: u64 = 300;

/// A server process that is killed when the test ends, pass or fail.
struct Server {
    child: Child,
    /// Base URL without `/api`, such as `http://127.0.0.1:41234`.
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `infinity serve` on a free loopback port and reads the URL from the
/// first line of its banner: `Infinity <version> serving http://ADDR/api`.
fn start_server(data_dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_infinity"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        // The server reads ./infinity.toml when it exists, so run it where
        // there is none.
        .current_dir(data_dir.parent().expect("the data folder has a parent"))
        .env("INFINITY_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("failed to start the infinity binary");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut banner = String::new();
    BufReader::new(stdout)
        .read_line(&mut banner)
        .expect("failed to read the banner");
    let url = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .and_then(|word| word.strip_suffix("/api"))
        .unwrap_or_else(|| panic!("no http://ADDR/api URL in the banner line {banner:?}"))
        .to_string();
    Server { child, url }
}

fn parse(target: &str, state: &Path, extra: &[&str]) -> LoadArgs {
    let mut argv = vec!["infinity-load", "--target", target, "--quiet"];
    argv.extend(["--state", state.to_str().unwrap()]);
    argv.extend(extra);
    Cli::try_parse_from(argv).unwrap().load
}

fn count_of(report: &Report, name: &str) -> u64 {
    report
        .operations
        .iter()
        .find(|op| op.name == name)
        .map_or(0, |op| op.count)
}

#[tokio::test]
async fn load_against_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let state = dir.path().join("state.json");

    #[rustfmt::skip]
    let seed = [
        "--users", "12", "--articles", "40", "--feed-user-follows", "3", "--seed", "11",
        "--comments-per-article", "1", "--favorites-per-user", "2", "--seed-only",
    ];
    let seeded = infinity_load::run(parse(&server.url, &state, &seed))
        .await
        .unwrap();
    let summary = seeded.seeding.expect("a seeding run reports its summary");
    assert_eq!(summary.users, 12);
    assert_eq!(summary.articles, 40);
    assert_eq!(summary.errors, 0);

    // A 30 % write ratio makes the rarest operations (follow and unfollow,
    // 3 % each) all but certain to appear among 300 requests.
    let requests = REQUESTS.to_string();
    #[rustfmt::skip]
    let mix = [
        "--reuse", state.to_str().unwrap(), "--requests", &requests,
        "--concurrency", "4", "--write-ratio", "0.3",
    ];
    let report = infinity_load::run(parse(&server.url, &state, &mix))
        .await
        .unwrap();

    assert_eq!(report.errors, 0, "{:?}", report.errors_by_status);
    assert!(report.errors_by_status.is_empty());
    assert_eq!(report.rate_limited, 0);
    assert_eq!(report.requests, REQUESTS);
    assert_eq!(report.ok, REQUESTS);
    let names: Vec<&str> = report
        .operations
        .iter()
        .map(|op| op.name.as_str())
        .collect();
    for name in OPERATIONS {
        assert!(count_of(&report, name) > 0, "{name} missing from {names:?}");
    }
    assert_eq!(report.operations.len(), OPERATIONS.len(), "{names:?}");
    let sum: u64 = report.operations.iter().map(|op| op.count).sum();
    assert_eq!(sum, REQUESTS);
}
