//! Read-your-writes over asynchronous replicas.
//!
//! A [`Position`] is a point in the primary's write-ahead log. Each request
//! runs inside a [`Scope`] that carries its floor, the lowest position its
//! reads must observe, and collects the highest position at which its own
//! writes committed. An engine with replicas sends a read to a replica only
//! once that replica has replayed the floor; an engine without replicas
//! ignores both.
//!
//! A scope may also carry the node's floor: the highest position at which
//! any request on this node had committed when the scope began. Direct
//! reads observe it too, so that a write acknowledged to one client is seen
//! by every later request to the same node. A cache fill instead runs under
//! [`cache_fill`] with its key's own floor, because the cache knows exactly
//! which writes changed the key.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A byte offset in the primary's write-ahead log. Zero asks for nothing.
pub type Position = u64;

/// The floor and the written position of one request.
#[derive(Debug, Default)]
pub struct Scope {
    floor: AtomicU64,
    node_floor: Position,
    written: AtomicU64,
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
    /// Set inside [`cache_fill`]: the floor of the key being loaded.
    static FILL: Position;
}

impl Scope {
    /// Creates a scope whose reads must observe `floor`, and whose direct
    /// reads must also observe `node_floor`.
    pub fn new(floor: Position, node_floor: Position) -> Arc<Self> {
        Arc::new(Self {
            floor: AtomicU64::new(floor),
            node_floor,
            written: AtomicU64::new(0),
        })
    }

    /// The highest position at which a write in this scope committed, or 0.
    pub fn written(&self) -> Position {
        self.written.load(Ordering::SeqCst)
    }

    /// The lowest position reads in this scope must observe.
    pub fn floor(&self) -> Position {
        self.floor.load(Ordering::SeqCst)
    }
}

/// Runs `future` inside `scope`. Tasks it spawns do not inherit the scope.
pub async fn within<F: Future>(scope: Arc<Scope>, future: F) -> F::Output {
    SCOPE.scope(scope, future).await
}

/// Runs `load`, a read that fills a cache entry, with the floor `key_floor`
/// that writes left on the key in place of the node's floor.
pub async fn cache_fill<F: Future>(key_floor: Position, load: F) -> F::Output {
    FILL.scope(key_floor, load).await
}

/// The position the current read must observe: the scope's floor, raised
/// to the key's floor in a cache fill and to the node's floor elsewhere.
/// Zero outside a scope.
pub fn floor() -> Position {
    let (floor, node_floor) = SCOPE
        .try_with(|scope| (scope.floor(), scope.node_floor))
        .unwrap_or((0, 0));
    match FILL.try_with(|key_floor| *key_floor) {
        Ok(key_floor) => floor.max(key_floor),
        Err(_) => floor.max(node_floor),
    }
}

/// The highest position written in the current scope, or 0 outside one.
pub fn written() -> Position {
    SCOPE.try_with(|scope| scope.written()).unwrap_or(0)
}

/// Records that a write committed at `position`. A later read in the same
/// scope observes it, because the floor rises with it.
pub(crate) fn wrote(position: Position) {
    let _ = SCOPE.try_with(|scope| {
        scope.written.fetch_max(position, Ordering::SeqCst);
        scope.floor.fetch_max(position, Ordering::SeqCst);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scope_collects_writes_and_raises_floor() {
        let scope = Scope::new(10, 0);
        within(scope.clone(), async {
            assert_eq!(floor(), 10);
            wrote(25);
            wrote(20);
            assert_eq!(written(), 25);
            assert_eq!(floor(), 25);
        })
        .await;
        assert_eq!(scope.written(), 25);
        assert_eq!(scope.floor(), 25);
    }

    #[tokio::test]
    async fn cache_fill_uses_key_floor_instead_of_node_floor() {
        within(Scope::new(10, 50), async {
            assert_eq!(floor(), 50);
            assert_eq!(cache_fill(30, async { floor() }).await, 30);
            assert_eq!(cache_fill(5, async { floor() }).await, 10);
            assert_eq!(cache_fill(80, async { floor() }).await, 80);
        })
        .await;
    }

    #[tokio::test]
    async fn outside_a_scope_nothing_is_required() {
        wrote(5);
        assert_eq!(floor(), 0);
        assert_eq!(written(), 0);
    }
}
