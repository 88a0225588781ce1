//! The second cache level: one cache that every node shares, under each
//! node's in-process caches.
//!
//! Each stored value carries the log position its read was guaranteed to
//! observe. A write invalidates its keys synchronously, before it is
//! acknowledged, and leaves its own position on each key. The shared cache
//! then accepts a value for the key only if it was read at that position or
//! later. A value read before the write can therefore never be stored after
//! it, and a value that is present is never older than an acknowledged
//! write. This needs real log positions, so it is used only over engines
//! that report them.

use std::time::Duration;

use async_trait::async_trait;

use infinity_store::consistency::Position;
use infinity_store::Page;

/// A cache that every node shares. Values are opaque bytes.
#[async_trait]
pub trait SharedCache: Send + Sync + 'static {
    /// Returns the stored value of each of `keys` in `cache`, in order, or
    /// `None` for a key that is missing or invalidated.
    async fn get(&self, cache: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String>;

    /// Stores `entries` of `cache`, read at `position`, for `ttl`. An entry
    /// whose key a write at a later position has invalidated is dropped.
    async fn put(
        &self,
        cache: &str,
        entries: &[(String, Vec<u8>)],
        position: Position,
        ttl: Duration,
    ) -> Result<(), String>;
}

/// A key, or every key, of a cache that a write has made stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub cache: &'static str,
    /// `None` for every key of the cache.
    pub key: Option<String>,
}

/// A cache key's name in the shared cache.
pub trait CacheKey {
    fn cache_key(&self) -> String;
}

impl CacheKey for i64 {
    fn cache_key(&self) -> String {
        self.to_string()
    }
}

impl CacheKey for String {
    fn cache_key(&self) -> String {
        self.clone()
    }
}

impl CacheKey for Page {
    fn cache_key(&self) -> String {
        format!("{}+{}", self.offset, self.limit)
    }
}

impl CacheKey for () {
    fn cache_key(&self) -> String {
        String::new()
    }
}
