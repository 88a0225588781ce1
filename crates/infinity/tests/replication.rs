//! `infinity serve` on a private PostgreSQL primary with streaming replicas:
//! read-your-writes while a replica's replay is paused, a replica stopped
//! under load, a replica that lags past the bound, and a failover drill
//! that kills the primary under writes and promotes the replica with
//! `infinity db promote`.

mod process;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infinity_local::{PgCluster, PgOptions};
use process::{infinity, Server};
use serde_json::{json, Value};

/// Hang guard for conditions that probes make true within a second or two.
const SETTLE: Duration = Duration::from_secs(30);

/// A cluster with a database named `infinity` and the flags that point a
/// node at it.
struct Database {
    cluster: PgCluster,
    args: Vec<String>,
}

impl Database {
    fn start(options: PgOptions) -> Self {
        let cluster = PgCluster::start(options).expect("start the PostgreSQL cluster");
        cluster.create_database("infinity").unwrap();
        let mut args = vec![
            "--database".to_string(),
            cluster.url(cluster.primary(), "infinity"),
        ];
        for replica in cluster.replicas() {
            args.push("--replica".to_string());
            args.push(cluster.url(replica, "infinity"));
        }
        Self { cluster, args }
    }

    /// Starts a node with no job workers, with `extra` flags.
    fn node(&self, root: &std::path::Path, log: &str, extra: &[&str]) -> Server {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend_from_slice(&["--workers", "0"]);
        args.extend_from_slice(extra);
        Server::start(root, &args, log)
    }
}

async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .client
        .request(method, format!("{}{path}", server.base))
        .timeout(Duration::from_secs(20));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Token {token}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
        // A refused or reset connection counts as a failed request.
        Err(_) => (0, Value::Null),
    }
}

async fn post_article(server: &Server, token: &str, title: &str) -> (u16, Value) {
    let body =
        json!({"article": {"title": title, "description": "d", "body": "b", "tagList": ["drill"]}});
    call(
        server,
        reqwest::Method::POST,
        "/api/articles",
        Some(token),
        Some(body),
    )
    .await
}

async fn readyz_servers(server: &Server) -> Vec<Value> {
    let (_, body) = call(server, reqwest::Method::GET, "/readyz", None, None).await;
    body["checks"]["database"]["servers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the replica at `index` of `/readyz` is in or out of rotation.
async fn wait_for_rotation(server: &Server, index: usize, in_rotation: bool) {
    let started = Instant::now();
    loop {
        let servers = readyz_servers(server).await;
        if servers.get(index).map(|s| s["in_rotation"] == in_rotation) == Some(true) {
            return;
        }
        assert!(
            started.elapsed() < SETTLE,
            "server {index} never became in_rotation={in_rotation}: {servers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_reads_own_write_while_replay_paused() {
    let database = Database::start(PgOptions::default());
    let root = tempfile::tempdir().unwrap();
    let writer_node = database.node(root.path(), "writer.log", &[]);
    let reader_node = database.node(root.path(), "reader.log", &[]);
    let alice = writer_node.register("alice").await;
    let bob = reader_node.register("bob").await;
    // Both nodes have the replica in rotation before replay stops.
    wait_for_rotation(&writer_node, 1, true).await;
    wait_for_rotation(&reader_node, 1, true).await;

    database.cluster.replicas()[0].pause_replay().unwrap();
    let (status, created) = post_article(&writer_node, &alice, "Written While Paused").await;
    assert_eq!(status, 201, "{created}");
    let slug = created["article"]["slug"].as_str().unwrap().to_string();
    let (status, bio) = call(
        &writer_node,
        reqwest::Method::PUT,
        "/api/user",
        Some(&alice),
        Some(json!({"user": {"bio": "paused replay"}})),
    )
    .await;
    assert_eq!(status, 200, "{bio}");

    // The writer sees both writes at once, through every read path.
    let article_path = format!("/api/articles/{slug}");
    let (status, read) = call(
        &writer_node,
        reqwest::Method::GET,
        &article_path,
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["article"]["title"], "Written While Paused");
    let (_, user) = call(
        &writer_node,
        reqwest::Method::GET,
        "/api/user",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(user["user"]["bio"], "paused replay");
    let (_, list) = call(
        &writer_node,
        reqwest::Method::GET,
        "/api/articles?author=alice&tag=drill",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(list["articlesCount"], 1, "{list}");

    // A session on the other node holds no floor for those writes, so it
    // reads the paused replica and does not see them yet.
    let (status, stale) = call(
        &reader_node,
        reqwest::Method::GET,
        &article_path,
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, 404, "the replica served the write early: {stale}");
    let (_, profile) = call(
        &reader_node,
        reqwest::Method::GET,
        "/api/profiles/alice",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(profile["profile"]["bio"], "");

    database.cluster.replicas()[0].resume_replay().unwrap();
    let started = Instant::now();
    loop {
        let (status, _) = call(
            &reader_node,
            reqwest::Method::GET,
            "/api/articles?author=alice&tag=drill",
            Some(&bob),
            None,
        )
        .await;
        let (_, list) = call(
            &reader_node,
            reqwest::Method::GET,
            "/api/articles?author=alice&tag=drill",
            Some(&bob),
            None,
        )
        .await;
        if status == 200 && list["articlesCount"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < SETTLE,
            "the replica never caught up: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns the id of the article behind `slug`, as the shared cache
/// stores it.
async fn shared_article_id(redis: &infinity_redis::Redis, slug: &str) -> String {
    let id: Option<String> = redis
        .run(
            redis::cmd("HGET")
                .arg(format!("infinity:cache:0:slug:key:{slug}"))
                .arg("value"),
        )
        .await
        .unwrap();
    id.expect("the slug is in the shared cache")
}

/// Returns the body stored in the shared cache for article `id`, whether or
/// not it is current, or `None` when none is stored.
async fn shared_article_body(redis: &infinity_redis::Redis, id: &str) -> Option<String> {
    let stored: Option<String> = redis
        .run(
            redis::cmd("HGET")
                .arg(format!("infinity:cache:0:article:key:{id}"))
                .arg("value"),
        )
        .await
        .unwrap();
    let article: Value = serde_json::from_str(&stored?).unwrap();
    Some(article["body"].as_str()?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_hold_nothing_older_than_a_write() {
    let database = Database::start(PgOptions::default());
    let redis = infinity_local::RedisServer::start().unwrap();
    let redis_url = redis.url();
    let root = tempfile::tempdir().unwrap();
    let shared = ["--redis", redis_url.as_str()];
    let writer_node = database.node(root.path(), "writer.log", &shared);
    let reader_node = database.node(root.path(), "reader.log", &shared);
    let alice = writer_node.register("alice").await;
    wait_for_rotation(&writer_node, 1, true).await;
    wait_for_rotation(&reader_node, 1, true).await;
    let (status, created) = post_article(&writer_node, &alice, "Layered").await;
    assert_eq!(status, 201, "{created}");
    let slug = created["article"]["slug"].as_str().unwrap().to_string();
    let path = format!("/api/articles/{slug}");

    // Once the replica has the article, an anonymous read fills both levels.
    let started = Instant::now();
    loop {
        let (status, _) = call(&reader_node, reqwest::Method::GET, &path, None, None).await;
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < SETTLE, "the replica never had {slug}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connection = infinity_redis::Redis::connect(&redis_url).await.unwrap();
    let id = shared_article_id(&connection, &slug).await;
    assert_eq!(
        shared_article_body(&connection, &id).await.as_deref(),
        Some("b")
    );

    database.cluster.replicas()[0].pause_replay().unwrap();
    let (status, edited) = call(
        &writer_node,
        reqwest::Method::PUT,
        &path,
        Some(&alice),
        Some(json!({"article": {"body": "edited while paused"}})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");

    // The edit's response read the article back, so the shared cache holds
    // the edit. Drop that value as an eviction would, keeping the floor the
    // edit left on the key.
    assert_eq!(
        shared_article_body(&connection, &id).await.as_deref(),
        Some("edited while paused")
    );
    let article_key = format!("infinity:cache:0:article:key:{id}");
    let _: i64 = connection
        .run(
            redis::cmd("HDEL")
                .arg(&article_key)
                .arg("value")
                .arg("position"),
        )
        .await
        .unwrap();

    // A node started after the edit never heard of it. Its caches start
    // from the primary's position when it joined the bus, so even an
    // anonymous load skips the paused replica, and the shared cache gets
    // the edit rather than the older copy.
    let late_node = database.node(root.path(), "late.log", &shared);
    wait_for_rotation(&late_node, 1, true).await;
    let (status, read) = call(&late_node, reqwest::Method::GET, &path, None, None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["article"]["body"], "edited while paused");
    assert_eq!(
        shared_article_body(&connection, &id).await.as_deref(),
        Some("edited while paused")
    );

    // The writer reads the edit through either node.
    for node in [&reader_node, &late_node] {
        let (status, read) = call(node, reqwest::Method::GET, &path, Some(&alice), None).await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["article"]["body"], "edited while paused");
    }
    database.cluster.replicas()[0].resume_replay().unwrap();
}

/// Counts the replies of a read loop over every read path, by status.
#[derive(Default)]
struct ReadTally {
    ok: AtomicU64,
    failed: Mutex<Vec<(String, u16)>>,
}

fn spawn_readers(
    server: &Arc<Server>,
    paths: Vec<String>,
    token: String,
    tally: &Arc<ReadTally>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|reader| {
            let server = server.clone();
            let paths = paths.clone();
            let token = token.clone();
            let tally = tally.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = reader;
                while !stop.load(Ordering::SeqCst) {
                    let path = &paths[n % paths.len()];
                    n += 1;
                    let (status, _) =
                        call(&server, reqwest::Method::GET, path, Some(&token), None).await;
                    if status == 200 {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        tally.failed.lock().unwrap().push((path.clone(), status));
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_replica_costs_no_failed_requests() {
    let database = Database::start(PgOptions::default());
    let root = tempfile::tempdir().unwrap();
    // A tiny cache sends most reads to the database.
    std::fs::write(
        root.path().join("infinity.toml"),
        "cache_entries = 1\ncache_ttl_seconds = 1\n",
    )
    .unwrap();
    let node = Arc::new(database.node(root.path(), "node.log", &[]));
    let token = node.register("reader").await;
    let mut paths = vec![
        "/api/articles?author=reader&tag=drill".to_string(),
        "/api/articles?offset=100".to_string(),
        "/api/profiles/reader".to_string(),
        "/api/user".to_string(),
        "/api/tags".to_string(),
    ];
    for n in 0..5 {
        let (status, article) = post_article(&node, &token, &format!("Seed {n}")).await;
        assert_eq!(status, 201);
        paths.push(format!(
            "/api/articles/{}",
            article["article"]["slug"].as_str().unwrap()
        ));
    }
    wait_for_rotation(&node, 1, true).await;

    let tally = Arc::new(ReadTally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let readers = spawn_readers(&node, paths, token, &tally, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    database.cluster.replicas()[0].stop().unwrap();
    wait_for_rotation(&node, 1, false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    database.cluster.replicas()[0].start().unwrap();
    wait_for_rotation(&node, 1, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }

    let failed = tally.failed.lock().unwrap();
    assert!(failed.is_empty(), "failed reads: {:?}", &failed[..]);
    assert!(tally.ok.load(Ordering::SeqCst) > 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_leaves_rotation_until_it_catches_up() {
    let database = Database::start(PgOptions::default());
    let root = tempfile::tempdir().unwrap();
    let node = database.node(root.path(), "node.log", &["--max-replica-lag", "0.5"]);
    let token = node.register("writer").await;
    wait_for_rotation(&node, 1, true).await;

    database.cluster.replicas()[0].pause_replay().unwrap();
    // Keep writing, so that the replica falls further behind.
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let (status, _) = post_article(&node, &token, &format!("Lag {n}")).await;
        assert_eq!(status, 201);
        let servers = readyz_servers(&node).await;
        if servers[1]["in_rotation"] == false {
            assert!(
                servers[1]["lag_seconds"].as_f64().unwrap() > 0.5,
                "{servers:?}"
            );
            assert!(servers[1]["lag_bytes"].as_u64().unwrap() > 0, "{servers:?}");
            assert!(servers[1]["error"].as_str().unwrap().contains("lag"));
            break;
        }
        assert!(started.elapsed() < SETTLE, "the replica stayed in rotation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (_, metrics) = {
        let response = node
            .client
            .get(format!("{}/metrics", node.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    let lag_line = metrics
        .lines()
        .find(|line| {
            line.starts_with("infinity_db_replica_lag_seconds")
                && line.contains(&format!(":{}/", database.cluster.replicas()[0].port))
        })
        .expect("a lag gauge for the replica");
    let lag: f64 = lag_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(lag > 0.5, "{lag_line}");

    database.cluster.replicas()[0].resume_replay().unwrap();
    wait_for_rotation(&node, 1, true).await;
    let servers = readyz_servers(&node).await;
    assert!(
        servers[1]["lag_seconds"].as_f64().unwrap() <= 0.5,
        "{servers:?}"
    );
}

/// What a failover drill measured.
#[derive(Debug)]
struct Drill {
    acknowledged: usize,
    lost: usize,
    outage: Duration,
}

/// Kills the primary under a steady stream of article writes, promotes the
/// replica with `infinity db promote`, and checks every acknowledged
/// article afterwards.
async fn failover_drill(synchronous: bool) -> Drill {
    let database = Database::start(PgOptions {
        replicas: 1,
        synchronous,
    });
    let root = tempfile::tempdir().unwrap();
    let mut extra = vec![];
    if synchronous {
        extra.push("--synchronous-replication");
    }
    let node = Arc::new(database.node(root.path(), "node.log", &extra));
    let token = node.register("writer").await;

    let acknowledged = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let node = node.clone();
            let token = token.clone();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let (status, body) =
                        post_article(&node, &token, &format!("Drill {writer} {n}")).await;
                    if status == 201 {
                        let slug = body["article"]["slug"].as_str().unwrap().to_string();
                        acknowledged.lock().unwrap().push((slug, Instant::now()));
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    database.cluster.primary().kill().unwrap();
    let killed = Instant::now();
    let mut promote = infinity(root.path());
    promote.arg("db").args(&database.args).arg("promote");
    let output = tokio::task::spawn_blocking(move || promote.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "promote failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("promoted"));

    // Writes resume on the new primary.
    let started = Instant::now();
    loop {
        let resumed = acknowledged
            .lock()
            .unwrap()
            .iter()
            .any(|(_, at)| *at > killed);
        if resumed {
            break;
        }
        assert!(started.elapsed() < SETTLE, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    let before: Vec<&(String, Instant)> =
        acknowledged.iter().filter(|(_, at)| *at < killed).collect();
    let first_after = acknowledged
        .iter()
        .filter(|(_, at)| *at > killed)
        .map(|(_, at)| *at)
        .min()
        .unwrap();
    // Checked on the new primary itself, past every cache of the node.
    let stored = database.cluster.replicas()[0]
        .sql_in("infinity", "SELECT slug FROM articles")
        .unwrap();
    let stored: std::collections::HashSet<&str> = stored.lines().collect();
    let lost = acknowledged
        .iter()
        .filter(|(slug, _)| !stored.contains(slug.as_str()))
        .count();
    assert!(before.len() > 10, "too few writes before the kill");
    Drill {
        acknowledged: acknowledged.len(),
        lost,
        outage: first_after - killed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_synchronous_replica_loses_nothing() {
    let drill = failover_drill(true).await;
    println!("failover drill, synchronous replica: {drill:?}");
    assert_eq!(drill.lost, 0, "{drill:?}");
    assert!(drill.outage < SETTLE, "{drill:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_asynchronous_replica_recovers() {
    // Without a synchronous standby, the last commits may not have reached
    // the replica when the primary dies, so the drill only reports them.
    let drill = failover_drill(false).await;
    println!("failover drill, asynchronous replica: {drill:?}");
    assert!(drill.acknowledged > 10, "{drill:?}");
    assert!(drill.lost <= drill.acknowledged / 2, "{drill:?}");
}
