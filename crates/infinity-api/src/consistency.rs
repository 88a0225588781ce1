//! Read-your-writes per session over replicated storage and per-node caches.
//!
//! Every request runs in a [`Scope`] whose floor is the highest log position
//! its session has written at, and the position of any write it makes is
//! remembered for that session. The store sends a read to a replica only
//! once the replica has replayed the floor, so a user sees their own writes
//! on the very next request while other sessions keep reading replicas.
//! Direct reads also observe every write this node has acknowledged, while
//! cache fills observe only the writes that changed their key.
//!
//! A session also remembers the sequence number that the change bus gave
//! its latest change. A node that has not yet applied that change skips its
//! in-process caches for the session's request, so a write acknowledged by
//! one node is never hidden by another node's cached copy.

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

/// How long a node waits for its change bus to deliver a session's latest
/// change before it serves the session without its in-process caches.
pub const CATCH_UP_WAIT: Duration = Duration::from_millis(100);

/// The lower bound of a session's reads: the highest log position it wrote
/// at, and the bus sequence number of its latest change. Zero requires
/// nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionMark {
    pub position: Position,
    pub change: u64,
}

impl SessionMark {
    /// Returns the higher value of each field.
    pub fn max(self, other: Self) -> Self {
        Self {
            position: self.position.max(other.position),
            change: self.change.max(other.change),
        }
    }

    fn is_zero(self) -> bool {
        self == Self::default()
    }
}

/// Session marks that every node shares.
#[async_trait]
pub trait SharedPositions: Send + Sync + 'static {
    /// Returns the session's mark, zero when it has made no recent write.
    async fn get(&self, digest: &str) -> Result<SessionMark, String>;
    /// Raises each field of the session's mark to `mark`'s, keeping it for
    /// `ttl`.
    async fn raise(&self, digest: &str, mark: SessionMark, ttl: Duration) -> Result<(), String>;
}

/// The mark of each recently writing session, keyed by token digest, and
/// the highest write position of the whole node.
pub struct SessionPositions {
    positions: Cache<String, SessionMark>,
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

    /// The mark the session's reads must observe; zero when it has made no
    /// recent write. When the shared marks cannot be read, the session may
    /// have written through another node, so its reads go to the primary.
    pub async fn mark(&self, digest: &str) -> SessionMark {
        let local = self.positions.get(digest).await.unwrap_or_default();
        let Some(shared) = self.shared.get() else {
            return local;
        };
        match shared.get(digest).await {
            Ok(mark) => local.max(mark),
            Err(error) => {
                tracing::debug!(%error, "shared session positions unavailable");
                SessionMark {
                    position: Position::MAX,
                    change: local.change,
                }
            }
        }
    }

    /// Raises the session's mark to `mark`.
    pub async fn raise(&self, digest: &str, mark: SessionMark) {
        if mark.is_zero() {
            return;
        }
        self.positions
            .entry_by_ref(digest)
            .and_upsert_with(
                |entry| async move { entry.map_or(mark, |e| e.into_value().max(mark)) },
            )
            .await;
        if let Some(shared) = self.shared.get() {
            if let Err(error) = shared.raise(digest, mark, POSITION_TTL).await {
                tracing::warn!(%error, "sharing a session's write position failed");
            }
        }
    }
}

/// A request's state on the change bus: the sequence number of its latest
/// change, and whether it must skip the in-process caches.
#[derive(Debug, Default)]
struct RequestChanges {
    published: AtomicU64,
    skip_local_caches: bool,
}

tokio::task_local! {
    static CHANGES: Arc<RequestChanges>;
}

/// Records that the current request's change got sequence number `change`
/// on the bus.
pub(crate) fn published(change: u64) {
    let _ = CHANGES.try_with(|changes| changes.published.fetch_max(change, Ordering::SeqCst));
}

/// Returns the mark of what the current request has written so far.
pub(crate) fn written_mark() -> SessionMark {
    SessionMark {
        position: consistency::written(),
        change: CHANGES
            .try_with(|changes| changes.published.load(Ordering::SeqCst))
            .unwrap_or(0),
    }
}

/// True when the current request must not read the in-process caches,
/// because this node has not yet applied a change its session made.
pub(crate) fn skip_local_caches() -> bool {
    CHANGES
        .try_with(|changes| changes.skip_local_caches)
        .unwrap_or(false)
}

/// The token digest of a request's `Authorization` header, if it has one.
fn session_digest(request: &Request) -> Option<String> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (_, token) = value.trim().split_once(' ')?;
    Some(token_digest(token.trim()))
}

/// Runs the request in a consistency scope with its session's floor and the
/// node's, then remembers the mark of any write it made. The marks are
/// stored before the response leaves, so a client that has received it can
/// rely on every later request seeing the write.
pub async fn scope_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let digest = session_digest(&request);
    let mark = match &digest {
        Some(digest) => state.positions.mark(digest).await,
        None => SessionMark::default(),
    };
    // While the caches are bypassed there is nothing to wait for.
    let caught_up = mark.change == 0
        || state.reads.bypassed()
        || state.reads.catch_up(mark.change, CATCH_UP_WAIT).await;
    if !caught_up {
        metrics::counter!("infinity_cache_skipped_requests_total").increment(1);
    }
    let changes = Arc::new(RequestChanges {
        published: AtomicU64::new(0),
        skip_local_caches: !caught_up,
    });
    let scope = Scope::new(mark.position, state.positions.node_floor());
    let response = CHANGES
        .scope(
            changes.clone(),
            consistency::within(scope.clone(), next.run(request)),
        )
        .await;
    let written = SessionMark {
        position: scope.written(),
        change: changes.published.load(Ordering::SeqCst),
    };
    if written.position > 0 {
        state
            .positions
            .node
            .fetch_max(written.position, Ordering::SeqCst);
    }
    if let Some(digest) = digest {
        state.positions.raise(&digest, written).await;
    }
    response
}
