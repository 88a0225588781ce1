//! Infinity's in-process cache tier: a size-bounded read-through cache whose
//! entries carry the version of their key at the time the load started.
//!
//! A write bumps its keys' versions after it commits. A reader then treats any
//! entry loaded before the bump as a miss, which gives three guarantees:
//! a loader that raced a write cannot leave its stale value behind, a cached
//! "not found" never outlives the create that follows it, and a user never
//! reads a value older than their own completed write. Concurrent misses on
//! one key share a single load.
//!
//! A write may also leave a floor on its keys: an opaque, growing position,
//! such as the database's log position at its commit. A load of the key
//! asks [`ReadThrough::floor`] and must read from a copy of the data that
//! has reached it, which keeps a lagging replica from refilling the cache
//! with the value the write replaced.

use std::collections::hash_map::RandomState;
use std::fmt::Debug;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;

/// Version counters are striped: keys that hash to one stripe share a
/// counter, so memory stays fixed and a collision costs only a reload.
const STRIPES: usize = 4096;

/// How many times a read retries when every load it finds is already stale.
const MAX_STALE_RETRIES: usize = 3;

/// Settings for one [`ReadThrough`] cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The name in metrics, such as `article`.
    pub name: &'static str,
    /// The total weight the cache may hold; see [`ReadThrough::with_weigher`].
    pub capacity: u64,
    /// How long an entry lives at most.
    pub ttl: Duration,
    /// The share of `ttl` by which each entry's lifetime is randomly
    /// shortened, so that entries loaded together do not expire together.
    pub jitter: f64,
}

/// The version of a key when a load started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    stripe: u64,
    epoch: u64,
}

#[derive(Clone)]
struct Versioned<V> {
    snapshot: Snapshot,
    value: V,
}

struct JitteredTtl {
    ttl: Duration,
    jitter: f64,
}

impl<K, V> Expiry<K, Versioned<V>> for JitteredTtl {
    fn expire_after_create(&self, _: &K, _: &Versioned<V>, _: Instant) -> Option<Duration> {
        let cut = self.jitter.clamp(0.0, 1.0) * rand::random::<f64>();
        Some(self.ttl.mul_f64(1.0 - cut))
    }
}

/// A read-through cache for one kind of value.
pub struct ReadThrough<K, V> {
    name: &'static str,
    entries: Cache<K, Versioned<V>>,
    stripes: Arc<[AtomicU64]>,
    /// The highest floor left on each stripe by a write.
    floors: Arc<[AtomicU64]>,
    /// Bumped by [`ReadThrough::invalidate_all`].
    epoch: AtomicU64,
    /// The highest floor left by [`ReadThrough::invalidate_all_at`].
    epoch_floor: AtomicU64,
    hasher: RandomState,
}

impl<K, V> ReadThrough<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Creates a cache in which every entry weighs 1, so `capacity` counts
    /// entries.
    pub fn new(config: CacheConfig) -> Self {
        Self::with_weigher(config, |_, _| 1)
    }

    /// Creates a cache whose entries weigh what `weigher` returns (bytes, for
    /// example), so that `capacity` bounds the total.
    pub fn with_weigher(config: CacheConfig, weigher: fn(&K, &V) -> u32) -> Self {
        let entries = Cache::builder()
            .max_capacity(config.capacity)
            .weigher(move |k: &K, v: &Versioned<V>| weigher(k, &v.value))
            .expire_after(JitteredTtl {
                ttl: config.ttl,
                jitter: config.jitter,
            })
            .build();
        Self {
            name: config.name,
            entries,
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            floors: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            epoch_floor: AtomicU64::new(0),
            hasher: RandomState::new(),
        }
    }

    fn stripe_index(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % STRIPES
    }

    fn stripe(&self, key: &K) -> &AtomicU64 {
        &self.stripes[self.stripe_index(key)]
    }

    /// Returns the cache's name in metrics, such as `article`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The highest floor that writes have left on `key`: a load of the key
    /// must read data that has reached it. Zero when no write left one.
    pub fn floor(&self, key: &K) -> u64 {
        self.floors[self.stripe_index(key)]
            .load(Ordering::SeqCst)
            .max(self.epoch_floor.load(Ordering::SeqCst))
    }

    /// The current version of `key`. Take it before reading the database
    /// for a value that [`ReadThrough::prime`] will store.
    pub fn snapshot(&self, key: &K) -> Snapshot {
        Snapshot {
            stripe: self.stripe(key).load(Ordering::SeqCst),
            epoch: self.epoch.load(Ordering::SeqCst),
        }
    }

    /// Returns the cached value of `key`, or runs `load` to fetch it. Only
    /// one load per key runs at a time; concurrent callers wait for it.
    /// Errors are not cached; every caller that waited on a failed load gets
    /// the same error.
    pub async fn get_or_load<F, Fut, E>(&self, key: &K, load: F) -> Result<V, Arc<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Debug + Send + Sync + 'static,
    {
        for _ in 0..MAX_STALE_RETRIES {
            // Anything loaded before this point may predate a write that
            // completed before this read began.
            let wanted = self.snapshot(key);
            if let Some(entry) = self.entries.get(key).await {
                if entry.snapshot == wanted {
                    self.count("hit");
                    return Ok(entry.value);
                }
                self.entries.invalidate(key).await;
            }
            self.count("miss");
            let entry = self
                .entries
                .try_get_with_by_ref(key, async {
                    let snapshot = self.snapshot(key);
                    metrics::counter!("infinity_cache_loads_total", "cache" => self.name)
                        .increment(1);
                    load().await.map(|value| Versioned { snapshot, value })
                })
                .await;
            match entry {
                Ok(entry) if entry.snapshot == wanted => return Ok(entry.value),
                // The load this call joined began before a write that has
                // since completed; its value must not be shown.
                Ok(_) => self.entries.invalidate(key).await,
                Err(error) => return Err(error),
            }
        }
        // Writes keep landing on this key: read through without caching.
        load().await.map_err(Arc::new)
    }

    /// Returns the cached value of `key` if it is present and current,
    /// without loading it. Counts a hit or a miss.
    pub async fn get_current(&self, key: &K) -> Option<V> {
        let wanted = self.snapshot(key);
        let entry = self.entries.get(key).await.filter(|e| e.snapshot == wanted);
        self.count(if entry.is_some() { "hit" } else { "miss" });
        entry.map(|e| e.value)
    }

    /// Stores a value read from the database after `snapshot` was taken.
    /// A write since then makes the entry stale, so it is never served.
    pub async fn prime(&self, key: K, snapshot: Snapshot, value: V) {
        self.entries
            .insert(key, Versioned { snapshot, value })
            .await;
    }

    /// Makes every entry of `key` loaded so far stale. Call it after the
    /// write that changes the key's value has committed.
    pub async fn invalidate(&self, key: &K) {
        self.invalidate_at(key, 0).await;
    }

    /// Like [`ReadThrough::invalidate`], and leaves `floor` on the key for
    /// the loads that follow. The floor is stored before the version moves,
    /// so a load that sees the new version also sees the floor.
    pub async fn invalidate_at(&self, key: &K, floor: u64) {
        let stripe = self.stripe_index(key);
        self.floors[stripe].fetch_max(floor, Ordering::SeqCst);
        self.stripes[stripe].fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(key).await;
    }

    /// Makes every entry stale.
    pub fn invalidate_all(&self) {
        self.invalidate_all_at(0);
    }

    /// Like [`ReadThrough::invalidate_all`], and leaves `floor` on every key.
    pub fn invalidate_all_at(&self, floor: u64) {
        self.epoch_floor.fetch_max(floor, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }

    /// The number of entries, for tests and metrics. Approximate while
    /// moka's maintenance tasks are pending.
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    fn count(&self, result: &'static str) {
        metrics::counter!("infinity_cache_requests_total", "cache" => self.name, "result" => result)
            .increment(1);
    }
}
