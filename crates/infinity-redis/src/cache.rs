//! The shared cache in Redis, under each node's in-process caches.
//!
//! An entry is a hash with the value, the log position it was read at and
//! the floor that writes left on the key. The bus's publish script raises
//! the floor and drops the value in the same step that announces a change.
//! A value is stored only if it was read at the floor or later, so a read
//! that raced a write cannot store what the write replaced. Keys live
//! under a generation number: a node that could not invalidate what its
//! write changed raises the generation once Redis responds again, which
//! orphans every entry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use infinity_api::shared_cache::{SharedCache, Stale};
use infinity_store::consistency::Position;

use crate::{Redis, SharedResult, PREFIX};

/// The key of the current generation.
pub(crate) const GENERATION: &str = "infinity:cache:generation";

/// How often a node retries raising the generation.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// Returns the values of the entries named in ARGV[2..] of cache ARGV[1]
/// that are current: read at or above their own floor and the floor left
/// on every key of the cache. KEYS: the generation.
const GET: &str = r#"
local generation = redis.call('GET', KEYS[1]) or '0'
local base = 'PREFIX:cache:' .. generation .. ':' .. ARGV[1] .. ':'
local all = tonumber(redis.call('HGET', base .. 'all', 'floor') or '0')
local result = {}
for i = 2, #ARGV do
  local fields = redis.call('HMGET', base .. 'key:' .. ARGV[i], 'floor', 'position', 'value')
  local value = false
  if fields[3] then
    local floor = math.max(tonumber(fields[1] or '0'), all)
    if tonumber(fields[2]) >= floor then
      value = fields[3]
    end
  end
  result[#result + 1] = value
end
return result
"#;

/// Stores the (name, value) pairs of ARGV[4..] in cache ARGV[1], read at
/// position ARGV[2], for ARGV[3] milliseconds, unless a write left a higher
/// floor or a newer read is stored already. KEYS: the generation.
const PUT: &str = r#"
local generation = redis.call('GET', KEYS[1]) or '0'
local base = 'PREFIX:cache:' .. generation .. ':' .. ARGV[1] .. ':'
local all = tonumber(redis.call('HGET', base .. 'all', 'floor') or '0')
local position = tonumber(ARGV[2])
for i = 4, #ARGV, 2 do
  local key = base .. 'key:' .. ARGV[i]
  local fields = redis.call('HMGET', key, 'floor', 'position')
  local floor = math.max(tonumber(fields[1] or '0'), all)
  local stored = tonumber(fields[2] or '-1')
  if position >= floor and position >= stored then
    redis.call('HSET', key, 'position', ARGV[2], 'value', ARGV[i + 1])
    redis.call('PEXPIRE', key, ARGV[3])
  end
end
return 1
"#;

/// Names a stale entry within its generation, as the bus's publish script
/// expects it.
pub(crate) fn stale_name(stale: &Stale) -> String {
    match &stale.key {
        Some(key) => format!("{}:key:{key}", stale.cache),
        None => format!("{}:all", stale.cache),
    }
}

/// Orphans every shared cache entry as soon as Redis responds, because a
/// change's invalidation may not have reached it.
pub(crate) fn after_lost_invalidation(redis: Arc<Redis>) {
    if redis.raise_pending.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::spawn(async move {
        loop {
            let raised: SharedResult<u64> = redis.run(redis::cmd("INCR").arg(GENERATION)).await;
            if raised.is_ok() {
                redis.raise_pending.store(false, Ordering::SeqCst);
                tracing::info!("shared cache emptied after a lost invalidation");
                return;
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    });
}

pub struct RedisCache {
    redis: Arc<Redis>,
    get: redis::Script,
    put: redis::Script,
}

impl RedisCache {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            get: redis::Script::new(&GET.replace("PREFIX", PREFIX)),
            put: redis::Script::new(&PUT.replace("PREFIX", PREFIX)),
        }
    }

    fn check_usable(&self) -> SharedResult<()> {
        match self.redis.raise_pending.load(Ordering::SeqCst) {
            true => Err("the shared cache is being emptied".to_string()),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl SharedCache for RedisCache {
    async fn get(&self, cache: &str, keys: &[String]) -> SharedResult<Vec<Option<Vec<u8>>>> {
        self.check_usable()?;
        let mut args = Vec::with_capacity(keys.len() + 1);
        args.push(cache.to_string());
        args.extend(keys.iter().cloned());
        self.redis
            .eval(&self.get, &[GENERATION.to_string()], &args)
            .await
    }

    async fn put(
        &self,
        cache: &str,
        entries: &[(String, Vec<u8>)],
        position: Position,
        ttl: Duration,
    ) -> SharedResult<()> {
        self.check_usable()?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut args = Vec::with_capacity(entries.len() * 2 + 3);
        args.push(cache.to_string());
        args.push(position.to_string());
        args.push(ttl.as_millis().to_string());
        for (key, value) in entries {
            args.push(key.clone());
            // Values are JSON, so they are valid UTF-8.
            args.push(String::from_utf8_lossy(value).into_owned());
        }
        let _: i64 = self
            .redis
            .eval(&self.put, &[GENERATION.to_string()], &args)
            .await?;
        Ok(())
    }
}
