//! Failure drills under load through `infinity lb`: kill -9 one API node,
//! restart every node in turn with SIGTERM, and stop Redis for 10 s.
//!
//! Each drill starts its own PostgreSQL primary and replica, Redis, API
//! nodes and balancer on free loopback ports. It sends concurrent reads and
//! writes through the balancer, each write with a new Idempotency-Key,
//! because the balancer retries only keyed writes. Then it counts failed
//! requests and acknowledged writes that the primary does not have.
//! They run one at a time, because each loads the machine on its own.
//! `bench/drills.sh` runs them in a release build and shows the counts they
//! print.

mod process;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use infinity_local::{PgCluster, PgOptions, RedisServer};
use process::{free_address, infinity, Process};
use serde_json::{json, Value};

/// Held by the running drill.
static ONE_DRILL_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Hang guard for a start, a health change or an exit.
const SETTLE: Duration = Duration::from_secs(30);

/// `--drain-seconds` of every node, as in `examples/phase-2.toml`.
const NODE_DRAIN_SECONDS: u64 = 2;

/// Concurrent load workers, each signed in as its own user.
const LOAD_WORKERS: usize = 6;

/// Pause of a load worker between two requests, so that the drills load a
/// two-core machine without starving the processes under test.
const LOAD_PAUSE: Duration = Duration::from_millis(5);

/// A failed comment creation's key in [`Tally::failures`].
const COMMENT_500: &str = "POST /api/articles/{slug}/comments 500";

/// Articles created before the load starts, which the load reads and
/// comments on.
const SEED_ARTICLES: usize = 10;

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Returns the status of `GET url`, or 0 when the request fails.
async fn get_status(http: &reqwest::Client, url: &str) -> u16 {
    match http.get(url).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls `GET url` until it returns 200.
async fn wait_for_ok(http: &reqwest::Client, url: &str) {
    let started = Instant::now();
    loop {
        let status = get_status(http, url).await;
        if status == 200 {
            return;
        }
        assert!(
            started.elapsed() < SETTLE,
            "GET {url} never returned 200; last {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) takes plain integers.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

/// One `infinity serve` behind the balancer, restarted on the same address.
struct Node {
    address: String,
    root: PathBuf,
    process: Option<Process>,
    starts: u32,
}

/// `infinity lb` with JSON logs, killed when dropped.
struct Balancer {
    child: Child,
    address: String,
    metrics_address: String,
    log: PathBuf,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL primary with one streaming replica, Redis, API nodes and a
/// balancer, all on loopback.
struct Fleet {
    nodes: Vec<Node>,
    balancer: Balancer,
    redis: RedisServer,
    database: PgCluster,
    database_args: Vec<String>,
    http: reqwest::Client,
    // Dropped last, after every process that writes into it.
    _root: tempfile::TempDir,
}

impl Fleet {
    async fn start(node_count: usize) -> Self {
        let root = tempfile::tempdir().unwrap();
        let (database, redis) = tokio::task::block_in_place(|| {
            let database = PgCluster::start(PgOptions::default()).expect("start PostgreSQL");
            database.create_database("infinity").unwrap();
            (database, RedisServer::start().expect("start redis-server"))
        });
        let database_args = vec![
            "--database".to_string(),
            database.url(database.primary(), "infinity"),
            "--replica".to_string(),
            database.url(&database.replicas()[0], "infinity"),
        ];
        let nodes: Vec<Node> = (1..=node_count)
            .map(|index| {
                let root = root.path().join(format!("node-{index}"));
                std::fs::create_dir_all(&root).unwrap();
                Node {
                    address: free_address(),
                    root,
                    process: None,
                    starts: 0,
                }
            })
            .collect();
        let balancer = start_balancer(root.path(), &nodes);
        let mut fleet = Self {
            nodes,
            balancer,
            redis,
            database,
            database_args,
            http: http_client(),
            _root: root,
        };
        // One at a time, because each node applies the schema at start-up.
        for index in 0..node_count {
            fleet.start_node(index).await;
        }
        wait_for_ok(&fleet.http, &format!("{}/api/tags", fleet.base())).await;
        fleet
    }

    fn base(&self) -> String {
        format!("http://{}", self.balancer.address)
    }

    /// Starts node `index` on its address and waits until its `/readyz`
    /// returns 200.
    async fn start_node(&mut self, index: usize) {
        let redis_url = self.redis.url();
        let node = &mut self.nodes[index];
        node.starts += 1;
        let mut args = vec![
            "--listen",
            &node.address,
            "--workers",
            "0",
            "--redis",
            &redis_url,
        ];
        let drain = NODE_DRAIN_SECONDS.to_string();
        args.extend(["--drain-seconds", &drain]);
        args.extend(self.database_args.iter().map(String::as_str));
        let log = format!("serve-{}.log", node.starts);
        let process =
            tokio::task::block_in_place(|| Process::start(&node.root, "serve", &args, &log));
        node.process = Some(process);
        let url = format!("http://{}/readyz", node.address);
        wait_for_ok(&self.http, &url).await;
    }

    /// Registers a user through the balancer and returns its token.
    async fn register(&self, name: &str) -> String {
        let body = json!({"user": {"username": name, "email": format!("{name}@example.com"), "password": format!("password-{name}")}});
        let response = self
            .http
            .post(format!("{}/api/users", self.base()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "register {name}");
        let reply: Value = response.json().await.unwrap();
        reply["user"]["token"].as_str().unwrap().to_string()
    }

    /// Registers the load's users and the articles it reads, and returns
    /// the tokens and the slugs.
    async fn seed(&self) -> (Vec<String>, Vec<String>) {
        let mut tokens = Vec::new();
        for worker in 0..LOAD_WORKERS {
            tokens.push(self.register(&format!("drill{worker}")).await);
        }
        let mut slugs = Vec::new();
        for index in 0..SEED_ARTICLES {
            let body = json!({"article": {"title": format!("Seed {index}"), "description": "d", "body": "b", "tagList": ["drill"]}});
            let response = self
                .http
                .post(format!("{}/api/articles", self.base()))
                .header("Authorization", format!("Token {}", tokens[0]))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "seed article {index}");
            let reply: Value = response.json().await.unwrap();
            slugs.push(reply["article"]["slug"].as_str().unwrap().to_string());
        }
        (tokens, slugs)
    }

    /// Runs one query on the primary and returns its output's lines.
    fn primary_rows(&self, sql: &str) -> HashSet<String> {
        let output = tokio::task::block_in_place(|| {
            self.database.primary().sql_in("infinity", sql).unwrap()
        });
        output.lines().map(str::to_string).collect()
    }

    /// Checks every write the load recorded against the primary.
    fn check_writes(&self, tally: &Tally) -> WriteCheck {
        let slugs = self.primary_rows("SELECT slug FROM articles");
        let titles = self.primary_rows("SELECT title FROM articles");
        let comments = self.primary_rows("SELECT id FROM comments");
        let lost_articles = tally
            .articles
            .iter()
            .filter(|slug| !slugs.contains(*slug))
            .count();
        let lost_comments = tally
            .comments
            .iter()
            .filter(|id| !comments.contains(*id))
            .count();
        WriteCheck {
            acknowledged: tally.articles.len() + tally.comments.len(),
            lost: lost_articles + lost_comments,
            unacknowledged_articles: tally.failed_titles.len(),
            unacknowledged_but_stored: tally
                .failed_titles
                .iter()
                .filter(|title| titles.contains(*title))
                .count(),
        }
    }

    /// Returns `infinity_lb_retries_total` from the balancer's metrics.
    async fn lb_retries(&self) -> u64 {
        let url = format!("http://{}/metrics", self.balancer.metrics_address);
        let text = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("infinity_lb_retries_total "))
            .map_or(0, |value| value.trim().parse().unwrap())
    }

    /// Returns the first lines of the nodes' logs that report an error, to
    /// explain the 5xx responses a drill counted.
    fn node_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for node in &self.nodes {
            for start in 1..=node.starts {
                let log = node.root.join(format!("serve-{start}.log"));
                let text = std::fs::read_to_string(log).unwrap_or_default();
                errors.extend(
                    text.lines()
                        .filter(|line| line.contains("ERROR"))
                        .map(|line| format!("{}: {line}", node.address)),
                );
            }
        }
        errors.truncate(5);
        errors
    }

    /// Counts the lines of the nodes' logs that contain `text`.
    fn count_in_node_logs(&self, text: &str) -> u64 {
        let mut count = 0;
        for node in &self.nodes {
            for start in 1..=node.starts {
                let log = node.root.join(format!("serve-{start}.log"));
                let contents = std::fs::read_to_string(log).unwrap_or_default();
                count += contents.lines().filter(|line| line.contains(text)).count() as u64;
            }
        }
        count
    }

    /// Asserts that every failure is a comment that collided on its id, and
    /// returns the number of those.
    ///
    /// NOTE: nodes mint row ids with a per-process sequence and no process
    /// component (infinity-store's `IdGenerator`), and a comment's id takes
    /// its article's shard, so two nodes commenting on one article in the
    /// same millisecond can mint the same id. The PostgreSQL store then mints
    /// another, up to five times; a 500 on `comments_pkey` would mean those
    /// tries ran out. The drills count such failures apart, and check that
    /// each one matches a line in a node's log.
    fn id_collisions(&self, tally: &Tally) -> u64 {
        let collisions = tally.failures.get(COMMENT_500).copied().unwrap_or(0);
        let logged = self.count_in_node_logs("violates unique constraint \"comments_pkey\"");
        assert_eq!(
            collisions, logged,
            "comment 500s against logged id collisions"
        );
        assert_eq!(tally.failed() - collisions, 0, "{tally:#?}");
        collisions
    }

    /// Returns how many of `tokens` the API no longer accepts.
    async fn rejected_tokens(&self, tokens: &[String]) -> usize {
        let mut rejected = 0;
        for token in tokens {
            let response = self
                .http
                .get(format!("{}/api/user", self.base()))
                .header("Authorization", format!("Token {token}"))
                .send()
                .await
                .unwrap();
            if response.status() != 200 {
                rejected += 1;
            }
        }
        rejected
    }
}

fn start_balancer(root: &Path, nodes: &[Node]) -> Balancer {
    let address = free_address();
    let metrics_address = free_address();
    let log = root.join("lb.log");
    let mut command = infinity(root);
    command.args([
        "lb",
        "--log-format",
        "json",
        "--listen",
        &address,
        "--metrics-listen",
        &metrics_address,
    ]);
    for node in nodes {
        command.args(["--backend", &node.address]);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start infinity lb");
    Balancer {
        child,
        address,
        metrics_address,
        log,
    }
}

/// One line of the balancer's JSON log about a backend.
#[derive(Debug, Clone)]
struct LbEvent {
    at: DateTime<Utc>,
    message: String,
    backend: String,
}

/// Reads every event of the balancer's log that names a backend.
fn lb_events(log: &Path) -> Vec<LbEvent> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|line| {
            let at = DateTime::parse_from_rfc3339(line["timestamp"].as_str()?).ok()?;
            Some(LbEvent {
                at: at.with_timezone(&Utc),
                message: line["fields"]["message"].as_str()?.to_string(),
                backend: line["fields"]["backend"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// Returns whether an event takes a backend out of rotation: a failed
/// health check or an ejection after failed requests.
fn is_removal(event: &LbEvent) -> bool {
    event.message.starts_with("backend down") || event.message.starts_with("backend ejected")
}

fn is_return(event: &LbEvent) -> bool {
    event.message.starts_with("backend up") || event.message.starts_with("ejected backend returns")
}

/// Polls the balancer's log until an event about `backend` at or after
/// `since` satisfies `matches`, and returns it.
async fn wait_for_event(
    log: &Path,
    backend: &str,
    since: DateTime<Utc>,
    matches: fn(&LbEvent) -> bool,
) -> LbEvent {
    let started = Instant::now();
    loop {
        let found = lb_events(log)
            .into_iter()
            .find(|event| event.backend == backend && event.at >= since && matches(event));
        if let Some(event) = found {
            return event;
        }
        assert!(
            started.elapsed() < SETTLE,
            "no such balancer event about {backend} since {since}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// What the load workers sent and got back.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    /// Write responses marked `Idempotent-Replayed: true`.
    replayed: u64,
    /// Failed requests by method, route and status (or `transport`).
    failures: BTreeMap<String, u64>,
    /// The first failures of each worker, with the time since the load started.
    failure_samples: Vec<String>,
    /// Slugs of the article creations that returned 201.
    articles: Vec<String>,
    /// Ids of the comments whose creation returned 2xx.
    comments: Vec<String>,
    /// Titles of the article creations that got no 2xx.
    failed_titles: Vec<String>,
}

impl Tally {
    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Counts the failures whose key ends with `suffix`, such as `" 409"`.
    fn failed_with(&self, suffix: &str) -> u64 {
        self.failures
            .iter()
            .filter(|(key, _)| key.ends_with(suffix))
            .map(|(_, count)| count)
            .sum()
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.replayed += other.replayed;
        for (key, count) in other.failures {
            *self.failures.entry(key).or_default() += count;
        }
        self.failure_samples.extend(other.failure_samples);
        self.articles.extend(other.articles);
        self.comments.extend(other.comments);
        self.failed_titles.extend(other.failed_titles);
    }

    fn record_failure(&mut self, key: String, detail: &str, since_start: Duration) {
        if self.failure_samples.len() < 3 {
            self.failure_samples.push(format!(
                "{key} at {:.3} s: {detail}",
                since_start.as_secs_f64()
            ));
        }
        *self.failures.entry(key).or_default() += 1;
    }
}

/// Acknowledged writes checked against the primary.
#[derive(Debug)]
struct WriteCheck {
    acknowledged: usize,
    lost: usize,
    unacknowledged_articles: usize,
    /// Article creations that got no 2xx but were applied all the same.
    unacknowledged_but_stored: usize,
}

/// Concurrent reads and keyed writes through the balancer until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    fn start(base: String, tokens: &[String], slugs: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let slugs = Arc::new(slugs.to_vec());
        let http = http_client();
        let started = Instant::now();
        let workers = tokens
            .iter()
            .enumerate()
            .map(|(worker, token)| {
                let worker = LoadWorker {
                    http: http.clone(),
                    base: base.clone(),
                    token: token.clone(),
                    slugs: slugs.clone(),
                    index: worker,
                    started,
                };
                tokio::spawn(worker.run(stop.clone()))
            })
            .collect();
        Self { stop, workers }
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut tally = Tally::default();
        for worker in self.workers {
            tally.merge(worker.await.unwrap());
        }
        tally
    }
}

struct LoadWorker {
    http: reqwest::Client,
    base: String,
    token: String,
    slugs: Arc<Vec<String>>,
    index: usize,
    started: Instant,
}

impl LoadWorker {
    async fn run(self, stop: Arc<AtomicBool>) -> Tally {
        let mut tally = Tally::default();
        let mut sent = 0usize;
        while !stop.load(Ordering::SeqCst) {
            sent += 1;
            let slug = &self.slugs[(sent * 7 + self.index) % self.slugs.len()];
            // Seven reads, one of them a session check, for every three writes.
            match sent % 10 {
                0..=3 => {
                    let path = format!("/api/articles/{slug}");
                    self.read(&mut tally, "GET /api/articles/{slug}", &path)
                        .await;
                }
                4 | 5 => {
                    self.read(&mut tally, "GET /api/articles", "/api/articles?limit=10")
                        .await;
                }
                6 => self.read(&mut tally, "GET /api/user", "/api/user").await,
                7 | 8 => self.create_article(&mut tally, sent).await,
                _ => self.comment(&mut tally, slug).await,
            }
            tokio::time::sleep(LOAD_PAUSE).await;
        }
        tally
    }

    /// Sends one request and returns the status, whether it was replayed
    /// and the body, or the transport error.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, bool, Value), String> {
        let response = request
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await
            .map_err(|error| format!("{error:?}"))?;
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|value| value == "true");
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("{error:?}"))?;
        Ok((
            status,
            replayed,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        ))
    }

    /// Sends one request and counts it. Returns the body of a 2xx response.
    async fn count(
        &self,
        tally: &mut Tally,
        route: &str,
        request: reqwest::RequestBuilder,
    ) -> Option<Value> {
        tally.requests += 1;
        match self.send(request).await {
            Ok((status, replayed, body)) if (200..300).contains(&status) => {
                tally.replayed += u64::from(replayed);
                Some(body)
            }
            Ok((status, _, body)) => {
                let detail = body["errors"]["body"].to_string();
                tally.record_failure(format!("{route} {status}"), &detail, self.started.elapsed());
                None
            }
            Err(error) => {
                tally.record_failure(format!("{route} transport"), &error, self.started.elapsed());
                None
            }
        }
    }

    async fn read(&self, tally: &mut Tally, route: &str, path: &str) {
        let request = self.http.get(format!("{}{path}", self.base));
        self.count(tally, route, request).await;
    }

    fn keyed_post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header("Idempotency-Key", format!("{:032x}", rand_key()))
            .json(body)
    }

    async fn create_article(&self, tally: &mut Tally, sent: usize) {
        let title = format!("Drill {} {sent}", self.index);
        let body = json!({"article": {"title": title, "description": "d", "body": "b", "tagList": ["drill"]}});
        let request = self.keyed_post("/api/articles", &body);
        match self.count(tally, "POST /api/articles", request).await {
            Some(reply) => {
                let slug = reply["article"]["slug"].as_str().unwrap_or_default();
                tally.articles.push(slug.to_string());
            }
            None => tally.failed_titles.push(title),
        }
    }

    async fn comment(&self, tally: &mut Tally, slug: &str) {
        let body = json!({"comment": {"body": "drill"}});
        let request = self.keyed_post(&format!("/api/articles/{slug}/comments"), &body);
        let route = "POST /api/articles/{slug}/comments";
        if let Some(reply) = self.count(tally, route, request).await {
            tally.comments.push(reply["comment"]["id"].to_string());
        }
    }
}

/// Returns 128 random bits for an Idempotency-Key, from the standard
/// library's randomly seeded hasher, because this test crate has no `rand`.
fn rand_key() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let high = RandomState::new().hash_one(0u8);
    let low = RandomState::new().hash_one(1u8);
    (u128::from(high) << 64) | u128::from(low)
}

fn print_tally(drill: &str, tally: &Tally, writes: &WriteCheck, lb_retries: u64) {
    println!(
        "{drill}: {} requests, {} failed {:?}, {lb_retries} balancer retries, {} replayed writes; \
         {} acknowledged writes, {} lost; {} article writes not acknowledged, {} of them stored",
        tally.requests,
        tally.failed(),
        tally.failures,
        tally.replayed,
        writes.acknowledged,
        writes.lost,
        writes.unacknowledged_articles,
        writes.unacknowledged_but_stored,
    );
    for sample in &tally.failure_samples {
        println!("{drill}:   {sample}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_node_of_three() {
    let _one_at_a_time = ONE_DRILL_AT_A_TIME.lock().await;
    const DRILL: &str = "kill -9";
    let mut fleet = Fleet::start(3).await;
    let (tokens, slugs) = fleet.seed().await;
    let load = Load::start(fleet.base(), &tokens, &slugs);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let victim = fleet.nodes[1].address.clone();
    let killed_at = Utc::now();
    fleet.nodes[1].process.take().unwrap().kill();
    let removal = wait_for_event(&fleet.balancer.log, &victim, killed_at, is_removal).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tally = load.stop().await;

    // Every proxied attempt at the dead node is a failed connection, which
    // the balancer logs, so the last one shows when traffic stopped reaching it.
    let last_attempt = lb_events(&fleet.balancer.log)
        .into_iter()
        .filter(|event| {
            event.backend == victim && event.message.starts_with("failed to connect to backend")
        })
        .map(|event| event.at)
        .max();
    let removed_after = seconds_between(killed_at, removal.at);
    let last_attempt_after = last_attempt.map_or(0.0, |at| seconds_between(killed_at, at));
    let writes = fleet.check_writes(&tally);
    print_tally("kill -9", &tally, &writes, fleet.lb_retries().await);
    for line in fleet.node_errors() {
        println!("node error: {line}");
    }
    println!(
        "kill -9: {victim} out of rotation {removed_after:.3} s after the kill ({:?}), \
         last proxied attempt at it {last_attempt_after:.3} s after the kill",
        removal.message
    );

    assert!(removed_after < 2.0, "removed after {removed_after} s");
    assert!(
        last_attempt_after < 2.0,
        "requests reached the dead node until {last_attempt_after} s"
    );
    assert_eq!(writes.lost, 0, "{writes:?}");
    let collisions = fleet.id_collisions(&tally);
    println!("{DRILL}: {collisions} failed requests were comment id collisions, none other failed");
    assert_eq!(fleet.rejected_tokens(&tokens).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_node() {
    let _one_at_a_time = ONE_DRILL_AT_A_TIME.lock().await;
    const DRILL: &str = "rolling restart";
    let mut fleet = Fleet::start(2).await;
    let (tokens, slugs) = fleet.seed().await;
    let load = Load::start(fleet.base(), &tokens, &slugs);
    tokio::time::sleep(Duration::from_secs(2)).await;

    for index in 0..fleet.nodes.len() {
        let address = fleet.nodes[index].address.clone();
        let mut process = fleet.nodes[index].process.take().unwrap();
        let signalled_at = Utc::now();
        send_signal(&process.child, libc::SIGTERM);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = process.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < SETTLE, "{address} did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let exited_at = Utc::now();
        assert!(status.success(), "{address} exited with {status}");
        let removal = wait_for_event(&fleet.balancer.log, &address, signalled_at, is_removal).await;
        println!(
            "rolling restart: {address} left rotation {:.3} s after SIGTERM ({:?}) and exited after {:.3} s",
            seconds_between(signalled_at, removal.at),
            removal.message,
            seconds_between(signalled_at, exited_at),
        );
        assert!(
            removal.at < exited_at,
            "the balancer removed {address} only after it exited"
        );

        let restarted_at = Utc::now();
        fleet.start_node(index).await;
        let back = wait_for_event(&fleet.balancer.log, &address, restarted_at, is_return).await;
        println!(
            "rolling restart: {address} back in rotation {:.3} s after its restart began",
            seconds_between(restarted_at, back.at)
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;
    let writes = fleet.check_writes(&tally);
    print_tally("rolling restart", &tally, &writes, fleet.lb_retries().await);
    for line in fleet.node_errors() {
        println!("node error: {line}");
    }

    assert_eq!(tally.failed_with(" 401"), 0, "signed out: {tally:#?}");
    assert_eq!(fleet.rejected_tokens(&tokens).await, 0);
    assert_eq!(writes.lost, 0, "{writes:?}");
    let collisions = fleet.id_collisions(&tally);
    println!("{DRILL}: {collisions} failed requests were comment id collisions, none other failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_ten_seconds() {
    let _one_at_a_time = ONE_DRILL_AT_A_TIME.lock().await;
    const DRILL: &str = "redis down";
    let fleet = Fleet::start(2).await;
    let (tokens, slugs) = fleet.seed().await;
    let load = Load::start(fleet.base(), &tokens, &slugs);
    tokio::time::sleep(Duration::from_secs(3)).await;

    tokio::task::block_in_place(|| fleet.redis.kill()).unwrap();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| fleet.redis.restart()).unwrap();
    let down_for = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tally = load.stop().await;
    let writes = fleet.check_writes(&tally);
    print_tally("redis down", &tally, &writes, fleet.lb_retries().await);
    for line in fleet.node_errors() {
        println!("node error: {line}");
    }
    println!("redis down: Redis was down {:.3} s", down_for.as_secs_f64());

    assert_eq!(writes.lost, 0, "{writes:?}");
    assert_eq!(fleet.rejected_tokens(&tokens).await, 0);
    let collisions = fleet.id_collisions(&tally);
    println!("{DRILL}: {collisions} failed requests were comment id collisions, none other failed");
    assert!(tally.requests > 100, "{tally:#?}");
}
