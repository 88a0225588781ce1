//! Two API nodes over one database and one private Redis server: sessions,
//! idempotency records and cache invalidations cross nodes, and losing
//! Redis degrades to database reads without a failed request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infinity_api::{app, ApiConfig, AppState};
use infinity_local::RedisServer;
use infinity_redis::{Redis, RedisBus, RedisIdempotency, RedisPositions, RedisSessions};
use infinity_store::{SqliteOptions, SqliteStore};
use serde_json::{json, Value};

/// Hang guard for what the bus and reconnection make true within moments.
const SETTLE: Duration = Duration::from_secs(20);

struct Node {
    base: String,
    state: AppState,
}

async fn start_node(database: &std::path::Path, redis_url: &str) -> Node {
    let store = Arc::new(
        SqliteStore::open(database, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let redis = Redis::connect(redis_url).await.unwrap();
    let sessions = Arc::new(RedisSessions::new(redis.clone(), store.clone()));
    let state = AppState::new(store, sessions, ApiConfig::default())
        .with_idempotency(Arc::new(RedisIdempotency::new(redis.clone())));
    state
        .positions
        .set_shared(Arc::new(RedisPositions::new(redis.clone())));
    RedisBus::start(redis, state.clone());
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
