//! The cache's guarantees under concurrency: one load per key, no stale value
//! left by a loader that raced a write, and read-your-writes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use infinity_cache::{CacheConfig, ReadThrough};
use tokio::sync::Notify;

fn cache(name: &'static str) -> ReadThrough<String, u64> {
    ReadThrough::new(CacheConfig {
        name,
        capacity: 1000,
        ttl: Duration::from_secs(60),
        jitter: 0.1,
    })
}

type Never = std::convert::Infallible;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_share_one_load() {
    let cache = Arc::new(cache("stampede"));
    let loads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..64 {
        let cache = cache.clone();
        let loads = loads.clone();
        readers.push(tokio::spawn(async move {
            cache
                .get_or_load(&"hot".to_string(), || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, Never>(42)
                })
                .await
                .unwrap()
        }));
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap(), 42);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hit_does_not_load_again() {
    let cache = cache("hit");
    let loads = AtomicUsize::new(0);
    let load = || async {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Never>(7)
    };
    assert_eq!(cache.get_or_load(&"k".into(), load).await.unwrap(), 7);
    assert_eq!(cache.get_or_load(&"k".into(), load).await.unwrap(), 7);
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loader_racing_a_write_leaves_nothing_stale() {
    let cache = Arc::new(cache("race"));
    let database = Arc::new(AtomicU64::new(1));
    let loader_has_read = Arc::new(Notify::new());
    let write_done = Arc::new(Notify::new());

    // A slow loader reads the old value, then stalls until the write is over.
    let slow = {
        let (cache, database) = (cache.clone(), database.clone());
        let (loader_has_read, write_done) = (loader_has_read.clone(), write_done.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(&"k".to_string(), || {
                    let (database, loader_has_read, write_done) = (
                        database.clone(),
                        loader_has_read.clone(),
                        write_done.clone(),
                    );
                    async move {
                        let value = database.load(Ordering::SeqCst);
                        loader_has_read.notify_one();
                        write_done.notified().await;
                        Ok::<_, Never>(value)
                    }
                })
                .await
                .unwrap()
        })
    };

    loader_has_read.notified().await;
    database.store(2, Ordering::SeqCst);
    cache.invalidate(&"k".to_string()).await;
    write_done.notify_one();
    // The slow reader overlapped the write, so either value is allowed.
    let overlapped = slow.await.unwrap();
    assert!(overlapped == 1 || overlapped == 2);

    // Every read that starts after the write sees the new value.
    let after = cache
        .get_or_load(&"k".to_string(), || async {
            Ok::<_, Never>(database.load(Ordering::SeqCst))
        })
        .await
        .unwrap();
    assert_eq!(after, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reader_joining_old_load_sees_own_write() {
    let cache = Arc::new(cache("join"));
    let database = Arc::new(AtomicU64::new(1));
    let loader_has_read = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());

    let slow = {
        let (cache, database) = (cache.clone(), database.clone());
        let (loader_has_read, release) = (loader_has_read.clone(), release.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(&"k".to_string(), || {
                    let (database, loader_has_read, release) =
                        (database.clone(), loader_has_read.clone(), release.clone());
                    async move {
                        let value = database.load(Ordering::SeqCst);
                        loader_has_read.notify_one();
                        release.notified().await;
                        Ok::<_, Never>(value)
                    }
                })
                .await
                .unwrap()
        })
    };
    loader_has_read.notified().await;

    // This user's write completes while the old load is still in flight.
    database.store(2, Ordering::SeqCst);
    cache.invalidate(&"k".to_string()).await;

    // Their next read may join the in-flight load, but must not return its
    // value from before the write.
    let own_read = {
        let (cache, database) = (cache.clone(), database.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(&"k".to_string(), || {
                    let database = database.clone();
                    async move { Ok::<_, Never>(database.load(Ordering::SeqCst)) }
                })
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    release.notify_one();
    assert_eq!(own_read.await.unwrap(), 2);
    slow.await.unwrap();
}

#[tokio::test]
async fn cached_not_found_ends_at_create() {
    let cache: ReadThrough<String, Option<u64>> = ReadThrough::new(CacheConfig {
        name: "absent",
        capacity: 100,
        ttl: Duration::from_secs(60),
        jitter: 0.0,
    });
    let database: std::sync::Mutex<Option<u64>> = std::sync::Mutex::new(None);
    let load = || async { Ok::<_, Never>(*database.lock().unwrap()) };
    assert_eq!(cache.get_or_load(&"slug".into(), load).await.unwrap(), None);

    *database.lock().unwrap() = Some(5);
    cache.invalidate(&"slug".to_string()).await;
    assert_eq!(
        cache.get_or_load(&"slug".into(), load).await.unwrap(),
        Some(5)
    );
}

#[tokio::test]
async fn errors_are_not_cached() {
    let cache = cache("errors");
    let failed = cache
        .get_or_load(&"k".into(), || async { Err::<u64, _>("database down") })
        .await;
    assert_eq!(*failed.unwrap_err(), "database down");
    let value = cache
        .get_or_load(&"k".into(), || async { Ok::<_, &str>(9) })
        .await
        .unwrap();
    assert_eq!(value, 9);
}

#[tokio::test]
async fn invalidate_all_makes_every_entry_stale() {
    let cache = cache("all");
    let version = AtomicU64::new(1);
    let load = || async { Ok::<_, Never>(version.load(Ordering::SeqCst)) };
    for key in ["a", "b", "c"] {
        assert_eq!(cache.get_or_load(&key.into(), load).await.unwrap(), 1);
    }
    version.store(2, Ordering::SeqCst);
    cache.invalidate_all();
    for key in ["a", "b", "c"] {
        assert_eq!(cache.get_or_load(&key.into(), load).await.unwrap(), 2);
    }
}

#[tokio::test]
async fn primed_entry_before_write_is_stale() {
    let cache = cache("prime");
    let key = "k".to_string();
    let snapshot = cache.snapshot(&key);
    cache.invalidate(&key).await;
    cache.prime(key.clone(), snapshot, 1).await;
    let value = cache
        .get_or_load(&key, || async { Ok::<_, Never>(2) })
        .await
        .unwrap();
    assert_eq!(value, 2);
}

#[tokio::test]
async fn invalidation_leaves_floor_for_next_load() {
    let cache = cache("floors");
    let key = "article".to_string();
    assert_eq!(cache.floor(&key), 0);

    cache.invalidate_at(&key, 700).await;
    assert_eq!(cache.floor(&key), 700);
    // A lower floor from an older write never lowers it.
    cache.invalidate_at(&key, 300).await;
    assert_eq!(cache.floor(&key), 700);

    // The loader is told the floor of the write it must observe.
    let seen = cache
        .get_or_load(&key, || async { Ok::<_, Never>(cache.floor(&key)) })
        .await
        .unwrap();
    assert_eq!(seen, 700);

    let other = "other".to_string();
    cache.invalidate_all_at(900);
    assert_eq!(cache.floor(&other), 900);
    assert_eq!(cache.floor(&key), 900);
}
