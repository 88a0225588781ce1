//! Read-your-writes per session over replicated storage.
//!
//! Every request runs in a [`Scope`] whose floor is the highest log position
//! its session has written at, and the position of any write it makes is
//! remembered for that session. The store sends a read to a replica only
//! once the replica has replayed the floor, so a user sees their own writes
//! on the very next request while other sessions keep reading replicas.
//! Direct reads also observe every write this node has acknowledged, while
//! cache fills observe only the writes that changed their key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use infinity_store::consistency::{self, Position, Scope};
use moka::future::Cache;

use crate::auth::token_digest;
use crate::AppState;

/// How long a session's write position is kept. A replica further behind
/// than this has long left rotation, since the lag bound is far shorter.
pub const POSITION_TTL: Duration = Duration::from_secs(15 * 60);

/// Session write positions that every node shares.
#[async_trait]
pub trait SharedPositions: Send + Sync + 'static {
    /// The session's highest write position, 0 when it has none.
    async fn get(&self, digest: &str) -> Result<Position, String>;
    /// Raises the session's position to `position`, keeping it for `ttl`.
    async fn raise(&self, digest: &str, position: Position, ttl: Duration) -> Result<(), String>;
}

/// The highest write position of each recently writing session, keyed by
/// token digest, and of the whole node.
pub struct SessionPositions {
    positions: Cache<String, Position>,
    node: AtomicU64,
    shared: OnceLock<Arc<dyn SharedPositions>>,
}

impl Default for SessionPositions {
    fn default() -> Self {
        Self {
            positions: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(POSITION_TTL)
                .build(),
            node: AtomicU64::new(0),
            shared: OnceLock::new(),
        }
    }
}

impl SessionPositions {
    /// The highest position at which a request on this node has committed.
    pub fn node_floor(&self) -> Position {
        self.node.load(Ordering::SeqCst)
    }

    /// Shares positions with every node through `shared`. Call it once, at
    /// start-up.
    pub fn set_shared(&self, shared: Arc<dyn SharedPositions>) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("shared session positions were already set; keeping the first");
        }
    }

    /// The position the session's reads must observe; 0 when it has made
    /// no recent write. When the shared positions cannot be read, the
    /// session may have written through another node, so its reads go to
    /// the primary.
    pub async fn floor(&self, digest: &str) -> Position {
        let local = self.positions.get(digest).await.unwrap_or(0);
        let Some(shared) = self.shared.get() else {
            return local;
        };
        match shared.get(digest).await {
            Ok(position) => local.max(position),
            Err(error) => {
                tracing::debug!(%error, "shared session positions unavailable");
                Position::MAX
            }
        }
    }

    /// Raises the session's floor to `position`.
    pub async fn raise(&self, digest: &str, position: Position) {
        if position == 0 {
            return;
        }
        self.positions
            .entry_by_ref(digest)
            .and_upsert_with(|entry| async move {
                entry.map_or(position, |e| e.into_value().max(position))
            })
            .await;
        if let Some(shared) = self.shared.get() {
            if let Err(error) = shared.raise(digest, position, POSITION_TTL).await {
                tracing::warn!(%error, "sharing a session's write position failed");
            }
        }
    }
}

/// The token digest of a request's `Authorization` header, if it has one.
fn session_digest(request: &Request) -> Option<String> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (_, token) = value.trim().split_once(' ')?;
    Some(token_digest(token.trim()))
}

/// Runs the request in a consistency scope with its session's floor and the
/// node's, then remembers the position of any write it made. The positions
/// are stored before the response leaves, so a client that has its answer
/// can rely on every later request seeing the write.
pub async fn scope_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let digest = session_digest(&request);
    let floor = match &digest {
        Some(digest) => state.positions.floor(digest).await,
        None => 0,
    };
    let scope = Scope::new(floor, state.positions.node_floor());
    let response = consistency::within(scope.clone(), next.run(request)).await;
    let written = scope.written();
    if written > 0 {
        state.positions.node.fetch_max(written, Ordering::SeqCst);
        if let Some(digest) = digest {
            state.positions.raise(&digest, written).await;
        }
    }
    response
}
