//! Two API nodes over one database and one private Redis server: sessions,
//! idempotency records and cache invalidations cross nodes, and losing
//! Redis degrades to database reads without a failed request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infinity_api::idempotency::{Begin, IdempotencyStore, StoredResponse, ATTEMPT_LEASE};
use infinity_api::ratelimit::LoginQuota;
use infinity_api::reads::{Change, ChangeBus};
use infinity_api::shared_cache::{SharedCache, Stale};
use infinity_api::{app, ApiConfig, AppState};
use infinity_local::RedisServer;
use infinity_redis::{
    Redis, RedisBus, RedisCache, RedisIdempotency, RedisLimits, RedisPositions, RedisSessions,
};
use infinity_store::{SqliteOptions, SqliteStore};
use serde_json::{json, Value};

/// Hang guard for what the bus and reconnection make true within moments.
const SETTLE: Duration = Duration::from_secs(20);

/// The lifetime of shared cache entries in these tests.
const TTL: Duration = Duration::from_secs(60);

struct Node {
    base: String,
    state: AppState,
    bus: Arc<RedisBus>,
}

async fn start_node(database: &std::path::Path, redis_url: &str) -> Node {
    start_node_with(database, redis_url, ApiConfig::default()).await
}

/// Starts a node with every part of the shared tier. The shared cache is
/// on although SQLite reports no log positions: these tests check that
/// writes empty it, not which reads it accepts.
async fn start_node_with(database: &std::path::Path, redis_url: &str, config: ApiConfig) -> Node {
    let store = Arc::new(
        SqliteStore::open(database, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let redis = Redis::connect(redis_url).await.unwrap();
    let sessions = Arc::new(RedisSessions::new(redis.clone(), store.clone()));
    let state = AppState::new(store, sessions, config)
        .with_idempotency(Arc::new(RedisIdempotency::new(redis.clone())));
    state
        .positions
        .set_shared(Arc::new(RedisPositions::new(redis.clone())));
    state
        .limiter
        .set_shared(Arc::new(RedisLimits::new(redis.clone())));
    state
        .reads
        .set_shared_cache(Arc::new(RedisCache::new(redis.clone())));
    let bus = RedisBus::start(redis, state.clone(), TTL);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = state.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app(served).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let node = Node {
        base: format!("http://{address}"),
        state,
        bus,
    };
    node.wait_for_caches(true).await;
    node
}

impl Node {
    /// Waits until the node uses its caches (`true`) or bypasses them.
    async fn wait_for_caches(&self, in_use: bool) {
        let started = Instant::now();
        while self.state.reads.bypassed() == in_use {
            assert!(
                started.elapsed() < SETTLE,
                "caches never became in_use={in_use}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut request =
            reqwest::Client::new().request(method, format!("{}/api{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Token {token}"));
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, name: &str) -> String {
        let body = json!({"user": {"username": name, "email": format!("{name}@example.com"), "password": format!("password-{name}")}});
        let (status, reply) = self
            .call(reqwest::Method::POST, "/users", None, Some(body), None)
            .await;
        assert_eq!(status, 201, "{reply}");
        reply["user"]["token"].as_str().unwrap().to_string()
    }
}

async fn two_nodes(redis: &RedisServer) -> (tempfile::TempDir, Node, Node) {
    let data = tempfile::tempdir().unwrap();
    let database = data.path().join("shared.db");
    let a = start_node(&database, &redis.url()).await;
    let b = start_node(&database, &redis.url()).await;
    (data, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_on_one_node_reaches_other_cache() {
    let redis = RedisServer::start().unwrap();
    let (_data, a, b) = two_nodes(&redis).await;
    let token = a.register("alice").await;
    let (status, created) = a
        .call(
            reqwest::Method::POST,
            "/articles",
            Some(&token),
            Some(json!({"article": {"title": "Shared", "description": "d", "body": "first"}})),
            None,
        )
        .await;
    assert_eq!(status, 201);
    let slug = created["article"]["slug"].as_str().unwrap().to_string();
    let path = format!("/articles/{slug}");

    // Node B caches the article, then node A edits it.
    let (_, before) = b.call(reqwest::Method::GET, &path, None, None, None).await;
    assert_eq!(before["article"]["body"], "first");
    let (status, _) = a
        .call(
            reqwest::Method::PUT,
            &path,
            Some(&token),
            Some(json!({"article": {"body": "second"}})),
            None,
        )
        .await;
    assert_eq!(status, 200);

    let started = Instant::now();
    loop {
        let (_, after) = b.call(reqwest::Method::GET, &path, None, None, None).await;
        if after["article"]["body"] == "second" {
            break;
        }
        assert!(started.elapsed() < SETTLE, "node B kept {after}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_key_work_on_either_node() {
    let redis = RedisServer::start().unwrap();
    let (_data, a, b) = two_nodes(&redis).await;
    let token = a.register("bob").await;
    let (status, user) = b
        .call(reqwest::Method::GET, "/user", Some(&token), None, None)
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["user"]["username"], "bob");

    let body = json!({"article": {"title": "Once Only", "description": "d", "body": "b"}});
    let (first, created) = a
        .call(
            reqwest::Method::POST,
            "/articles",
            Some(&token),
            Some(body.clone()),
            Some("key-1"),
        )
        .await;
    let (second, repeated) = b
        .call(
            reqwest::Method::POST,
            "/articles",
            Some(&token),
            Some(body),
            Some("key-1"),
        )
        .await;
    assert_eq!(first, 201);
    assert_eq!(second, 201);
    assert_eq!(repeated, created);
    let (_, list) = b
        .call(
            reqwest::Method::GET,
            "/articles?author=bob",
            None,
            None,
            None,
        )
        .await;
    assert_eq!(list["articlesCount"], 1, "{list}");

    // A logout through node B ends the session on node A too.
    let (status, _) = b
        .call(
            reqwest::Method::DELETE,
            "/user/session",
            Some(&token),
            None,
            None,
        )
        .await;
    assert!(status < 300, "{status}");
    let started = Instant::now();
    loop {
        let (status, _) = a
            .call(reqwest::Method::GET, "/user", Some(&token), None, None)
            .await;
        if status == 401 {
            break;
        }
        assert!(started.elapsed() < SETTLE, "node A kept the ended session");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_redis_degrades_without_errors() {
    let redis = RedisServer::start().unwrap();
    let (_data, a, b) = two_nodes(&redis).await;
    let token = a.register("carol").await;
    let (status, created) = a
        .call(
            reqwest::Method::POST,
            "/articles",
            Some(&token),
            Some(json!({"article": {"title": "Outage", "description": "d", "body": "before"}})),
            None,
        )
        .await;
    assert_eq!(status, 201);
    let slug = created["article"]["slug"].as_str().unwrap().to_string();
    let path = format!("/articles/{slug}");
    let (_, cached) = b.call(reqwest::Method::GET, &path, None, None, None).await;
    assert_eq!(cached["article"]["body"], "before");

    redis.kill().unwrap();
    a.wait_for_caches(false).await;
    b.wait_for_caches(false).await;

    // Nobody is logged out, writes succeed, and node B reads node A's
    // write, because it reads the database while it cannot hear changes.
    let (status, user) = b
        .call(reqwest::Method::GET, "/user", Some(&token), None, None)
        .await;
    assert_eq!(status, 200, "{user}");
    let (status, edited) = a
        .call(
            reqwest::Method::PUT,
            &path,
            Some(&token),
            Some(json!({"article": {"body": "during"}})),
            Some("during-outage"),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    let (status, read) = b.call(reqwest::Method::GET, &path, None, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(read["article"]["body"], "during");
    let fresh = b.register("dave").await;
    let (status, _) = a
        .call(reqwest::Method::GET, "/user", Some(&fresh), None, None)
        .await;
    assert_eq!(status, 200);

    // Back again, the caches fill and follow changes once more.
    redis.restart().unwrap();
    a.wait_for_caches(true).await;
    b.wait_for_caches(true).await;
    let (_, after) = b.call(reqwest::Method::GET, &path, None, None, None).await;
    assert_eq!(after["article"]["body"], "during");
    let (status, _) = a
        .call(
            reqwest::Method::PUT,
            &path,
            Some(&token),
            Some(json!({"article": {"body": "after"}})),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let started = Instant::now();
    loop {
        let (_, read) = b.call(reqwest::Method::GET, &path, None, None, None).await;
        if read["article"]["body"] == "after" {
            break;
        }
        assert!(started.elapsed() < SETTLE, "node B kept {read}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_hides_no_write() {
    let redis = RedisServer::start().unwrap();
    let (_data, a, b) = two_nodes(&redis).await;
    let token = a.register("ivan").await;
    let (status, created) = a
        .call(
            reqwest::Method::POST,
            "/articles",
            Some(&token),
            Some(json!({"article": {"title": "Frozen", "description": "d", "body": "before"}})),
            None,
        )
        .await;
    assert_eq!(status, 201);
    let slug = created["article"]["slug"].as_str().unwrap().to_string();
    let path = format!("/articles/{slug}");
    let (_, cached) = b.call(reqwest::Method::GET, &path, None, None, None).await;
    assert_eq!(cached["article"]["body"], "before");

    // A frozen server keeps every connection open and delivers nothing, so
    // the edit's change cannot reach node B.
    redis.freeze().unwrap();
    let (status, edited) = a
        .call(
            reqwest::Method::PUT,
            &path,
            Some(&token),
            Some(json!({"article": {"body": "during"}})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    for token in [Some(token.as_str()), None] {
        let (status, read) = b.call(reqwest::Method::GET, &path, token, None, None).await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["article"]["body"], "during", "token {token:?}");
    }
    assert!(b.state.reads.bypassed(), "node B still uses its caches");

    redis.thaw().unwrap();
    b.wait_for_caches(true).await;
    let (_, read) = b.call(reqwest::Method::GET, &path, None, None, None).await;
    assert_eq!(read["article"]["body"], "during");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_span_nodes() {
    let redis = RedisServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let database = data.path().join("shared.db");
    // Four attempts per address, refilled too slowly to matter here; the
    // per-account bucket is large enough never to be the one that stops.
    let config = ApiConfig {
        login_per_address: LoginQuota {
            burst: 4,
            per_minute: 1,
        },
        login_per_account: LoginQuota {
            burst: 100,
            per_minute: 100,
        },
        ..ApiConfig::default()
    };
    let a = start_node_with(&database, &redis.url(), config.clone()).await;
    let b = start_node_with(&database, &redis.url(), config).await;
    a.register("erin").await;
    for (round, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let (status, reply) = attempt(node).await;
        assert_ne!(status, 429, "attempt {} was limited: {reply}", round + 1);
    }
    let (status, reply) = attempt(&b).await;
    assert_eq!(status, 429, "the fifth attempt over both nodes: {reply}");
    let (status, _) = attempt(&a).await;
    assert_eq!(status, 429);

    // Without Redis each node counts alone, from a full bucket.
    redis.kill().unwrap();
    let (status, reply) = attempt(&a).await;
    assert_ne!(status, 429, "node A should count locally: {reply}");
    assert!(status < 500, "{status}: {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_numbered_in_order() {
    let redis = RedisServer::start().unwrap();
    let (_data, a, b) = two_nodes(&redis).await;
    let token = a.register("frank").await;
    let digest = infinity_api::auth::token_digest(&token);
    let connection = Redis::connect(&redis.url()).await.unwrap();
    let mark = |connection: Arc<Redis>, digest: String| async move {
        let change: Option<u64> = connection
            .run(
                redis::cmd("HGET")
                    .arg(format!("infinity:mark:{digest}"))
                    .arg("change"),
            )
            .await
            .unwrap();
        change.unwrap_or(0)
    };
    let (status, _) = a
        .call(
            reqwest::Method::PUT,
            "/user",
            Some(&token),
            Some(json!({"user": {"bio": "first"}})),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let first = mark(connection.clone(), digest.clone()).await;
    assert!(first > 0, "the session's mark has no change number");
    assert!(
        b.state.reads.catch_up(first, SETTLE).await,
        "node B never applied change {first}"
    );
    assert!(b.bus.applied() >= first);

    // Redis loses everything in a restart; numbers must still grow, or a
    // node could believe it had applied changes it never saw.
    redis.kill().unwrap();
    redis.restart().unwrap();
    a.wait_for_caches(true).await;
    b.wait_for_caches(true).await;
    let token = a.register("grace").await;
    let (status, _) = a
        .call(
            reqwest::Method::PUT,
            "/user",
            Some(&token),
            Some(json!({"user": {"bio": "second"}})),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let digest = infinity_api::auth::token_digest(&token);
    let connection = Redis::connect(&redis.url()).await.unwrap();
    let second = mark(connection, digest).await;
    assert!(
        second > first,
        "change {second} after a restart is not above {first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_cache_drops_stale_fills() {
    let redis = RedisServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&data.path().join("shared.db"), &redis.url()).await;
    let cache = RedisCache::new(Redis::connect(&redis.url()).await.unwrap());
    let get = || async {
        let found = cache.get("article", &["7".to_string()]).await.unwrap();
        found[0]
            .as_ref()
            .map(|v| String::from_utf8(v.clone()).unwrap())
    };
    let put = |value: &'static str, position: u64| {
        let entries = vec![("7".to_string(), value.as_bytes().to_vec())];
        let cache = &cache;
        async move { cache.put("article", &entries, position, TTL).await.unwrap() }
    };
    let change = Change::Comments { article: 7 };
    let stale = |key: Option<&str>| Stale {
        cache: "article",
        key: key.map(str::to_string),
    };

    put("\"one\"", 5).await;
    assert_eq!(get().await.as_deref(), Some("\"one\""));

    // A write at 10 drops the entry; a read from before it cannot return.
    node.bus
        .publish(&change, 10, &[stale(Some("7"))])
        .await
        .unwrap();
    assert_eq!(get().await, None);
    put("\"stale\"", 7).await;
    assert_eq!(get().await, None);
    put("\"two\"", 10).await;
    assert_eq!(get().await.as_deref(), Some("\"two\""));
    put("\"older\"", 9).await;
    assert_eq!(get().await.as_deref(), Some("\"two\""));

    // A change to every key of the cache.
    node.bus.publish(&change, 20, &[stale(None)]).await.unwrap();
    assert_eq!(get().await, None);
    put("\"stale\"", 15).await;
    assert_eq!(get().await, None);
    put("\"three\"", 20).await;
    assert_eq!(get().await.as_deref(), Some("\"three\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_empties_shared_cache_before_reply() {
    let redis = RedisServer::start().unwrap();
    let (_data, a, b) = two_nodes(&redis).await;
    let cache = RedisCache::new(Redis::connect(&redis.url()).await.unwrap());
    let token = a.register("heidi").await;
    let (status, created) = a
        .call(
            reqwest::Method::POST,
            "/articles",
            Some(&token),
            Some(json!({"article": {"title": "Layered", "description": "d", "body": "first"}})),
            None,
        )
        .await;
    assert_eq!(status, 201);
    let slug = created["article"]["slug"].as_str().unwrap().to_string();
    let path = format!("/articles/{slug}");

    // Node B's read fills the shared cache for the slug and the article.
    let (_, read) = b.call(reqwest::Method::GET, &path, None, None, None).await;
    assert_eq!(read["article"]["body"], "first");
    let id = cache
        .get("slug", std::slice::from_ref(&slug))
        .await
        .unwrap()[0]
        .clone()
        .map(|id| String::from_utf8(id).unwrap())
        .expect("the slug is in the shared cache");
    let stored = cache
        .get("article", std::slice::from_ref(&id))
        .await
        .unwrap()[0]
        .clone();
    let stored: Value = serde_json::from_slice(&stored.expect("the article is shared")).unwrap();
    assert_eq!(stored["body"], "first");

    // Node A's delete empties it before the reply.
    let (status, _) = a
        .call(reqwest::Method::DELETE, &path, Some(&token), None, None)
        .await;
    assert!(status < 300, "{status}");
    let stored = cache.get("article", &[id]).await.unwrap();
    assert_eq!(stored, vec![None]);
    let stored = cache.get("slug", &[slug]).await.unwrap();
    assert_eq!(stored, vec![None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_lease_is_short_until_finished() {
    let redis = RedisServer::start().unwrap();
    let connection = Redis::connect(&redis.url()).await.unwrap();
    let records = RedisIdempotency::new(connection.clone());
    let ttl = |connection: Arc<Redis>| async move {
        let ttl: i64 = connection
            .run(redis::cmd("PTTL").arg("infinity:idempotency:k"))
            .await
            .unwrap();
        ttl
    };
    let lease = ATTEMPT_LEASE.as_millis() as i64;

    assert_eq!(records.begin("k", "f").await.unwrap(), Begin::Started);
    let first = ttl(connection.clone()).await;
    assert!(
        first > 0 && first <= lease,
        "a running attempt's lease is {first} ms"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    records.renew("k").await.unwrap();
    let renewed = ttl(connection.clone()).await;
    assert!(renewed > lease - 1000, "the renewed lease is {renewed} ms");

    // Renewing a finished record leaves its day-long lifetime alone.
    let response = StoredResponse {
        status: 201,
        content_type: None,
        body: b"{}".to_vec(),
    };
    records.finish("k", "f", response.clone()).await.unwrap();
    records.renew("k").await.unwrap();
    let kept = ttl(connection).await;
    assert!(kept > 3_600_000, "the finished record lives {kept} ms");
    assert_eq!(
        records.begin("k", "f").await.unwrap(),
        Begin::Done(response)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_runs_after_dead_attempt_lease() {
    let redis = RedisServer::start().unwrap();
    let (_data, a, _b) = two_nodes(&redis).await;
    let token = a.register("judy").await;
    let body = json!({"article": {"title": "Orphaned", "description": "d", "body": "b"}});

    // The key's record as a node leaves it when it dies mid-request: the
    // attempt's mark, which nobody renews. The fingerprint is the guard's:
    // method, path below /api, and body.
    let fingerprint = {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"POST");
        hasher.update([0]);
        hasher.update(b"/articles");
        hasher.update([0]);
        hasher.update(serde_json::to_vec(&body).unwrap());
        hex::encode(hasher.finalize())
    };
    let digest = infinity_api::auth::token_digest(&token);
    let records = RedisIdempotency::new(Redis::connect(&redis.url()).await.unwrap());
    let record = format!("{digest}:orphan-1");
    assert_eq!(
        records.begin(&record, &fingerprint).await.unwrap(),
        Begin::Started
    );

    let started = Instant::now();
    let (status, created) = a
        .call(
            reqwest::Method::POST,
            "/articles",
            Some(&token),
            Some(body),
            Some("orphan-1"),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(
        started.elapsed() < ATTEMPT_LEASE + Duration::from_secs(2),
        "the repeat waited {:?}",
        started.elapsed()
    );
}

/// Sends one failed login through `node`.
async fn attempt(node: &Node) -> (u16, Value) {
    let body = json!({"user": {"email": "erin@example.com", "password": "wrong-password"}});
    node.call(
        reqwest::Method::POST,
        "/users/login",
        None,
        Some(body),
        None,
    )
    .await
}
