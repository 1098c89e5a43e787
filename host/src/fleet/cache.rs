//! The fleet's level of the response cache (`[cache] backend = "redis"`):
//! entries as opaque bytes under `<prefix>cache:<hex of the cache key>`,
//! stored with `PX` = the cache's TTL so Redis forgets them by itself.
//!
//! What an entry holds, how it is versioned and verified, and when it may
//! be served are the response cache's business
//! ([`crate::routing::cache`]); this level only moves bytes. It never
//! fails a request: a Redis error, a timeout or a link that is down is a
//! miss (and a store that does not happen).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use crate::fleet::Fleet;

/// The largest entry stored in Redis; a larger answer stays in the local
/// level only.
pub const MAX_SHARED_ENTRY_BYTES: usize = 512 << 10;

/// Reads an entry and its time left. `KEYS[1]`: the entry. Returns
/// `{value, pttl}` or nothing.
static GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local v = redis.call('GET', KEYS[1])
if not v then return {} end
return {v, redis.call('PTTL', KEYS[1])}",
    )
});

/// Stores an entry. `KEYS[1]`: the entry; ARGV: the bytes, ms to keep.
static SET: LazyLock<Script> =
    LazyLock::new(|| Script::new(r"return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])"));

/// The shared level of the response cache.
#[derive(Debug, Clone)]
pub struct SharedCache {
    fleet: Arc<Fleet>,
}

/// An entry read from the shared level.
#[derive(Debug)]
pub struct SharedEntry {
    /// The stored bytes (to be verified by the reader).
    pub bytes: Vec<u8>,
    /// Its time left in Redis; `None` for a value without one, which this
    /// level never writes (a foreign value).
    pub ttl_left: Option<Duration>,
}

impl SharedCache {
    /// The shared level of `fleet` (which must have a Redis backend for
    /// anything to be stored).
    pub fn new(fleet: Arc<Fleet>) -> Self {
        Self { fleet }
    }

    fn key(&self, id: &str) -> Option<String> {
        Some(self.fleet.shared()?.client().key("cache", id))
    }

    /// The entry under `id` (the hex of a cache key); `None` on a miss or
    /// any failure.
    pub async fn get(&self, id: &str) -> Option<SharedEntry> {
        let key = self.key(id)?;
        let found: Vec<redis::Value> =
            self.fleet.call(|c| async move { c.run::<_, String>(&GET, &[key], &[]).await }).await.ok()?;
        let mut found = found.into_iter();
        let bytes = match found.next()? {
            redis::Value::BulkString(bytes) => bytes,
            _ => return None,
        };
        let ttl_left = match found.next()? {
            redis::Value::Int(ms) if ms > 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        };
        Some(SharedEntry { bytes, ttl_left })
    }

    /// Stores `bytes` under `id` for `ttl`. False when not stored: too
    /// large (over [`MAX_SHARED_ENTRY_BYTES`]), or Redis did not take it.
    pub async fn set(&self, id: &str, bytes: Vec<u8>, ttl: Duration) -> bool {
        let Some(key) = self.key(id) else { return false };
        if bytes.len() > MAX_SHARED_ENTRY_BYTES {
            return false;
        }
        let args = [bytes, ttl.as_millis().max(1).to_string().into_bytes()];
        let stored = self.fleet.call(|c| async move { c.run::<(), _>(&SET, &[key], &args).await }).await;
        stored.is_ok()
    }
}
