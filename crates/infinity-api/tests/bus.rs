//! Two nodes over one database, joined by an in-memory change bus whose
//! delivery the test can hold back. A session reads its own write through a
//! node that has not yet received it. Other sessions may see that node's
//! cached copy until the change arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use infinity_api::consistency::{SessionMark, SharedPositions};
use infinity_api::reads::{Change, ChangeBus};
use infinity_api::shared_cache::Stale;
use infinity_api::{app, ApiConfig, AppState};
use infinity_store::consistency::Position;
use infinity_store::{SqliteOptions, SqliteStore};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Delivers every change to the other node, in order, unless held.
#[derive(Default)]
struct Wire {
    sequence: u64,
    held: bool,
    pending: Vec<(u64, Change, Position)>,
}

struct MemoryBus {
    wire: Arc<Mutex<Wire>>,
    /// The node this bus delivers to, set once both nodes exist.
    peer: Mutex<Option<(AppState, Arc<watch::Sender<u64>>)>>,
    applied: Arc<watch::Sender<u64>>,
}

impl MemoryBus {
    async fn deliver(&self) {
        let Some((peer, peer_applied)) = self.peer.lock().unwrap().clone() else {
            return;
        };
        let ready: Vec<_> = {
            let mut wire = self.wire.lock().unwrap();
            if wire.held {
                return;
            }
            wire.pending.drain(..).collect()
        };
        for (sequence, change, floor) in ready {
            peer.reads.apply(&change, floor).await;
            peer_applied.send_modify(|applied| *applied = (*applied).max(sequence));
        }
    }
}

#[async_trait]
impl ChangeBus for MemoryBus {
    async fn publish(&self, change: &Change, floor: Position, _stale: &[Stale]) -> Option<u64> {
        let sequence = {
            let mut wire = self.wire.lock().unwrap();
            wire.sequence += 1;
            let sequence = wire.sequence;
            wire.pending.push((sequence, change.clone(), floor));
            sequence
        };
        self.applied
            .send_modify(|applied| *applied = (*applied).max(sequence));
        self.deliver().await;
        Some(sequence)
    }

    async fn catch_up(&self, change: u64, wait: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let reached = applied.wait_for(|applied| *applied >= change);
        let caught_up = matches!(tokio::time::timeout(wait, reached).await, Ok(Ok(_)));
        caught_up
    }
}

#[derive(Default)]
struct MemoryPositions(Mutex<HashMap<String, SessionMark>>);

#[async_trait]
impl SharedPositions for MemoryPositions {
    async fn get(&self, digest: &str) -> Result<SessionMark, String> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(digest)
            .copied()
            .unwrap_or_default())
    }

    async fn raise(&self, digest: &str, mark: SessionMark, _ttl: Duration) -> Result<(), String> {
        let mut marks = self.0.lock().unwrap();
        let stored = marks.entry(digest.to_string()).or_default();
        *stored = stored.max(mark);
        Ok(())
    }
}

struct Node {
    base: String,
    bus: Arc<MemoryBus>,
}

async fn start_node(
    database: &std::path::Path,
    wire: Arc<Mutex<Wire>>,
    positions: Arc<MemoryPositions>,
) -> (Node, AppState) {
    let store = Arc::new(
        SqliteStore::open(database, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let state = AppState::new(store.clone(), store, ApiConfig::default());
    state.positions.set_shared(positions);
    let bus = Arc::new(MemoryBus {
        wire,
        peer: Mutex::new(None),
        applied: Arc::new(watch::Sender::new(0)),
    });
    state.reads.set_bus(bus.clone());
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
        base: format!("http://{address}/api"),
        bus,
    };
    (node, state)
}

async fn call(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Token {token}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reads_own_write_before_bus_delivers() {
    let data = tempfile::tempdir().unwrap();
    let database = data.path().join("shared.db");
    let positions = Arc::new(MemoryPositions::default());
    // Each direction has its own wire, so holding A's changes back from B
    // leaves B's own changes alone.
    let a_to_b = Arc::new(Mutex::new(Wire::default()));
    let b_to_a = Arc::new(Mutex::new(Wire::default()));
    let (a, a_state) = start_node(&database, a_to_b.clone(), positions.clone()).await;
    let (b, b_state) = start_node(&database, b_to_a, positions).await;
    *a.bus.peer.lock().unwrap() = Some((b_state, b.bus.applied.clone()));
    *b.bus.peer.lock().unwrap() = Some((a_state, a.bus.applied.clone()));

    let registration = json!({"user": {"username": "alice", "email": "alice@example.com", "password": "password-alice"}});
    let user = call(
        reqwest::Method::POST,
        format!("{}/users", a.base),
        None,
        Some(registration),
    )
    .await;
    let token = user["user"]["token"].as_str().unwrap().to_string();
    let article = json!({"article": {"title": "Held", "description": "d", "body": "first"}});
    let created = call(
        reqwest::Method::POST,
        format!("{}/articles", a.base),
        Some(&token),
        Some(article),
    )
    .await;
    let slug = created["article"]["slug"].as_str().unwrap();
    let on_b = format!("{}/articles/{slug}", b.base);

    // Node B caches the article, then stops hearing from node A.
    let cached = call(reqwest::Method::GET, on_b.clone(), None, None).await;
    assert_eq!(cached["article"]["body"], "first");
    a_to_b.lock().unwrap().held = true;
    let edit = json!({"article": {"body": "second"}});
    let on_a = format!("{}/articles/{slug}", a.base);
    call(reqwest::Method::PUT, on_a, Some(&token), Some(edit)).await;

    let own = call(reqwest::Method::GET, on_b.clone(), Some(&token), None).await;
    assert_eq!(
        own["article"]["body"], "second",
        "the writer saw B's stale copy"
    );
    let other = call(reqwest::Method::GET, on_b.clone(), None, None).await;
    assert_eq!(
        other["article"]["body"], "first",
        "without the held change B's cache should still hold the old body"
    );

    a_to_b.lock().unwrap().held = false;
    a.bus.deliver().await;
    let other = call(reqwest::Method::GET, on_b, None, None).await;
    assert_eq!(other["article"]["body"], "second");
}
