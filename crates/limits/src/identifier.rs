//! Per-identifier rate limiting (`X-FreeLLM-Identifier`, reference §7.2),
//! also used for the per-IP limit (`RATE_LIMIT_RPM`).
//!
//! # Identifiers
//!
//! [`validate_identifier`] turns a raw `X-FreeLLM-Identifier` header into a
//! bucket key: the value is trimmed; empty, `undefined` and `null` (any case)
//! mean "no identifier" and the caller falls back to `ip:<addr>`; anything
//! else must match [`IDENTIFIER_PATTERN`] or the request is refused (a
//! tainted value is never bucketed).
//!
//! One deliberate change from the reference: identifiers starting with
//! `ip:` (any case) are refused. The pattern allows `:`, so in the reference
//! a client could send `ip:203.0.113.7` and drain the bucket of another
//! client that sends no identifier. The `ip:` namespace is reserved for the
//! gateway's own fallback keys.
//!
//! # Limiter
//!
//! [`IdentifierLimiter`] is an *exact* sliding log: each bucket keeps the
//! timestamps (unix ms) of the requests it admitted within the last window,
//! oldest first, in a `VecDeque`. A request at `now` is admitted when fewer
//! than `max` timestamps `t` satisfy `now - t < window`; a timestamp stops
//! counting exactly `window` ms after it was recorded. Rejected requests are
//! not recorded, so a bucket never holds more than `max` timestamps and its
//! memory is proportional to the traffic it actually admitted (the log is
//! shrunk when it empties out).
//!
//! Each [`Decision`] carries what the reference puts in the
//! `X-FreeLLM-Identifier-Remaining` / `-Reset` headers: the requests left
//! after this one (0 when rejected) and, in ms, the full window when allowed
//! or the time until the oldest slot frees when rejected.
//!
//! ## Concurrency
//!
//! Buckets live in [`SHARDS`] shards, each a `Mutex` around a `HashMap`; the
//! shard is picked by a per-process randomly keyed hash of the key, so
//! unrelated keys rarely contend. Every [`IdentifierLimiter::check`] is one
//! short critical section on one shard (check and record are atomic, so
//! concurrent requests on one key can never overshoot `max`).
//!
//! ## Bounded memory
//!
//! The number of buckets never exceeds `max_buckets`
//! (`FREELLM_IDENTIFIER_MAX_BUCKETS`, default [`DEFAULT_MAX_BUCKETS`]): the
//! budget is split exactly across the shards, and each shard keeps its
//! buckets in least-recently-*seen* order (a `BTreeMap` keyed by a touch
//! counter, so every operation is `O(log n)`, even under an
//! identifier-spraying attack). On every check the shard first drops buckets
//! unseen for at least a window: all their timestamps have aged out, so
//! dropping them loses nothing (the reference waits 2× the window; with the
//! idle test being exact there is no reason to). If the shard is still full
//! and the key is new, the least recently seen bucket is evicted before the
//! new one is created, as in the reference. Recency is tracked per shard, so
//! the evicted bucket is the LRU one of its shard, which approximates the
//! global LRU order. [`IdentifierLimiter::sweep`] drops idle buckets in
//! every shard, for an optional periodic clean-up.
//!
//! Eviction forgets a bucket's history: under a flood of new keys, a
//! legitimate bucket can be evicted and start afresh. That is the price of
//! bounded memory; size `max_buckets` above the expected number of active
//! identifiers per window.
//!
//! ## Time
//!
//! Time is always passed in (`now_ms`, unix milliseconds). If it goes
//! backwards for a bucket, the request is recorded at the newest time that
//! bucket has seen, so the log stays ordered and nothing panics or
//! underflows; the reported reset never exceeds the window.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use thiserror::Error;

/// The identifier syntax the gateway accepts (reference §7.2).
pub const IDENTIFIER_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,128}$";

/// Maximum identifier length, in bytes (= characters: the pattern is ASCII).
pub const MAX_IDENTIFIER_LEN: usize = 128;

/// Default `FREELLM_IDENTIFIER_LIMIT`: 60 requests per 60 000 ms.
pub const DEFAULT_LIMIT: IdentifierLimit = IdentifierLimit { max: 60, window_ms: 60_000 };

/// Default `FREELLM_IDENTIFIER_MAX_BUCKETS`.
pub const DEFAULT_MAX_BUCKETS: usize = 10_000;

/// Largest `max` accepted by [`IdentifierLimit::parse`] and
/// [`IdentifierLimit::per_minute`] (a full bucket holds `max` 8-byte
/// timestamps).
pub const MAX_REQUESTS_PER_WINDOW: u32 = 1_000_000;

/// Largest window accepted by [`IdentifierLimit::parse`]: 24 hours.
pub const MAX_WINDOW_MS: u64 = 86_400_000;

/// Number of shards (fewer when `max_buckets` is smaller).
pub const SHARDS: usize = 16;

const ENV_LIMIT: &str = "FREELLM_IDENTIFIER_LIMIT";
const ENV_RPM: &str = "RATE_LIMIT_RPM";

/// Whether `s` matches [`IDENTIFIER_PATTERN`] (and nothing more).
///
/// Used to check identifiers from trusted sources (a signed browser token);
/// for client input use [`check_identifier`] or [`validate_identifier`].
pub fn matches_identifier_pattern(s: &str) -> bool {
    (1..=MAX_IDENTIFIER_LEN).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Why an identifier was refused. The messages never echo the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InvalidIdentifier {
    /// Not 1..=128 characters.
    #[error("identifier must be 1 to 128 characters long")]
    Length,
    /// A character outside `[A-Za-z0-9_.:-]`.
    #[error("identifier may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'")]
    Character,
    /// Starts with `ip:`, the namespace of the client-IP fallback keys.
    #[error("identifier must not start with \"ip:\" (reserved for the client-IP fallback)")]
    ReservedPrefix,
    /// `undefined` or `null`, which mean "no identifier" in the header.
    #[error("identifier must not be \"undefined\" or \"null\"")]
    ReservedWord,
}

/// Checks an identifier exactly as given (no trimming, no "absent" values):
/// it must match [`IDENTIFIER_PATTERN`], must not start with `ip:` and must
/// not be `undefined` or `null` (any case).
///
/// Used for identifiers pinned into browser tokens at mint time; headers go
/// through [`validate_identifier`].
pub fn check_identifier(s: &str) -> Result<&str, InvalidIdentifier> {
    if !(1..=MAX_IDENTIFIER_LEN).contains(&s.len()) {
        return Err(InvalidIdentifier::Length);
    }
    if !matches_identifier_pattern(s) {
        return Err(InvalidIdentifier::Character);
    }
    if s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ip:")) {
        return Err(InvalidIdentifier::ReservedPrefix);
    }
    if is_absent_word(s) {
        return Err(InvalidIdentifier::ReservedWord);
    }
    Ok(s)
}

fn is_absent_word(s: &str) -> bool {
    s.eq_ignore_ascii_case("undefined") || s.eq_ignore_ascii_case("null")
}

/// Resolves a raw `X-FreeLLM-Identifier` header value.
///
/// The value is trimmed. Empty, `undefined` or `null` (any case) give
/// `Ok(None)`: the caller buckets the request under `ip:<addr>`. Otherwise
/// the trimmed value must pass [`check_identifier`] and is returned as the
/// bucket key; an error means 400 `invalid_request`.
pub fn validate_identifier(raw: &str) -> Result<Option<&str>, InvalidIdentifier> {
    let s = raw.trim();
    if s.is_empty() || is_absent_word(s) {
        return Ok(None);
    }
    check_identifier(s).map(Some)
}

/// A limit of `max` requests per sliding window of `window_ms`.
///
/// Built by [`IdentifierLimit::parse`] or [`IdentifierLimit::per_minute`],
/// which refuse zero and oversized values. The fields are public for
/// literal construction; [`IdentifierLimiter`] then treats `max == 0` as
/// "refuse everything" and `window_ms == 0` as "never limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifierLimit {
    /// Requests admitted per window.
    pub max: u32,
    /// Window length in milliseconds.
    pub window_ms: u64,
}

/// A rate-limit setting that cannot be used; the message names the
/// environment variable, so the binary can print it and refuse to boot.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{var} {reason}, got {value:?}")]
pub struct InvalidLimit {
    /// The environment variable (`FREELLM_IDENTIFIER_LIMIT` or `RATE_LIMIT_RPM`).
    pub var: &'static str,
    /// The offending value (truncated to 64 characters).
    pub value: String,
    /// What is wrong, phrased to follow the variable name.
    pub reason: &'static str,
}

impl InvalidLimit {
    fn new(var: &'static str, value: &str, reason: &'static str) -> Self {
        Self { var, value: value.chars().take(64).collect(), reason }
    }
}

impl Default for IdentifierLimit {
    fn default() -> Self {
        DEFAULT_LIMIT
    }
}

impl IdentifierLimit {
    /// Parses `FREELLM_IDENTIFIER_LIMIT`: `<max>/<windowMs>`, whitespace
    /// allowed around either number (e.g. `60/60000`, ` 5 / 2000 `).
    ///
    /// `max` must be in `1..=`[`MAX_REQUESTS_PER_WINDOW`] and the window in
    /// `1..=`[`MAX_WINDOW_MS`]. Unlike the reference, which silently falls
    /// back to `60/60000` on garbage, a bad value is an error.
    pub fn parse(value: &str) -> Result<Self, InvalidLimit> {
        const FORMAT: &str = "must be <max>/<windowMs> with positive integers, e.g. 60/60000";
        let err = |reason| InvalidLimit::new(ENV_LIMIT, value, reason);
        let (max, window) = value.split_once('/').ok_or_else(|| err(FORMAT))?;
        let max: u32 = parse_positive(max).ok_or_else(|| err(FORMAT))?;
        let window_ms: u64 = parse_positive(window).ok_or_else(|| err(FORMAT))?;
        if max > MAX_REQUESTS_PER_WINDOW {
            return Err(err("max must be at most 1000000 requests per window"));
        }
        if window_ms > MAX_WINDOW_MS {
            return Err(err("window must be at most 86400000 ms (24 h)"));
        }
        Ok(Self { max, window_ms })
    }

    /// The per-IP limit `RATE_LIMIT_RPM`: `rpm` requests per sliding 60 s.
    /// `rpm` must be in `1..=`[`MAX_REQUESTS_PER_WINDOW`].
    pub fn per_minute(rpm: u32) -> Result<Self, InvalidLimit> {
        if rpm == 0 || rpm > MAX_REQUESTS_PER_WINDOW {
            return Err(InvalidLimit::new(ENV_RPM, &rpm.to_string(), "must be between 1 and 1000000"));
        }
        Ok(Self { max: rpm, window_ms: 60_000 })
    }
}

/// Parses a trimmed, strictly positive decimal integer (digits only).
fn parse_positive<T: std::str::FromStr + PartialEq + Default>(s: &str) -> Option<T> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<T>().ok().filter(|v| *v != T::default())
}

/// The outcome of one [`IdentifierLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted (and was recorded).
    pub allowed: bool,
    /// Requests left in the window after this one; 0 when rejected
    /// (`X-FreeLLM-Identifier-Remaining`).
    pub remaining: u32,
    /// Milliseconds: the full window when allowed; when rejected, the time
    /// until the oldest recorded request leaves the window, in
    /// `1..=window_ms` (`X-FreeLLM-Identifier-Reset`, `retry_after_ms`).
    pub reset_ms: u64,
}

impl Decision {
    /// `reset_ms` rounded up to whole seconds, at least 1 (`Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        self.reset_ms.div_ceil(1000).max(1)
    }
}

/// A thread-safe, memory-bounded sliding-window limiter keyed by strings
/// (identifiers, or `ip:<addr>` keys). See the module docs for the design.
pub struct IdentifierLimiter {
    limit: IdentifierLimit,
    max_buckets: usize,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for IdentifierLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifierLimiter")
            .field("limit", &self.limit)
            .field("max_buckets", &self.max_buckets)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl IdentifierLimiter {
    /// A limiter applying `limit` to each key, holding at most `max_buckets`
    /// buckets (values below 1 are raised to 1).
    pub fn new(limit: IdentifierLimit, max_buckets: usize) -> Self {
        Self::with_shards(limit, max_buckets, SHARDS)
    }

    fn with_shards(limit: IdentifierLimit, max_buckets: usize, shards: usize) -> Self {
        let max_buckets = max_buckets.max(1);
        let n = shards.clamp(1, max_buckets);
        let (base, extra) = (max_buckets / n, max_buckets % n);
        let shards = (0..n).map(|i| Mutex::new(Shard::new(base + usize::from(i < extra)))).collect();
        Self { limit, max_buckets, hasher: RandomState::new(), shards }
    }

    /// The limit applied to every key.
    pub fn limit(&self) -> IdentifierLimit {
        self.limit
    }

    /// The bucket budget (`FREELLM_IDENTIFIER_MAX_BUCKETS`).
    pub fn max_buckets(&self) -> usize {
        self.max_buckets
    }

    /// Checks one request for `key` at `now_ms` (unix ms) and, when it is
    /// admitted, records it. Rejected requests are not recorded.
    pub fn check(&self, key: &str, now_ms: u64) -> Decision {
        self.shard(key).check(key, now_ms, self.limit)
    }

    /// Drops every bucket unseen for at least a window (all its requests
    /// have aged out). Optional: checks already do this for their shard.
    pub fn sweep(&self, now_ms: u64) {
        for shard in self.shards.iter() {
            lock(shard).collect_idle(now_ms, self.limit.window_ms);
        }
    }

    /// The number of buckets currently held (never above `max_buckets`).
    pub fn bucket_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).buckets.len()).sum()
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let n = self.shards.len() as u64;
        // The remainder is below `n`, itself a `usize`: the cast is lossless.
        let i = (self.hasher.hash_one(key) % n) as usize;
        lock(&self.shards[i])
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock cannot leave a shard inconsistent in a
    // way that matters for rate limiting; keep serving.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One shard: buckets plus their least-recently-seen order.
struct Shard {
    buckets: HashMap<Arc<str>, Bucket>,
    /// Touch counter → key, oldest first. Holds exactly the keys of `buckets`.
    lru: BTreeMap<u64, Arc<str>>,
    next_tick: u64,
    capacity: usize,
}

struct Bucket {
    /// Admitted request times (unix ms), oldest first, at most `max`.
    hits: VecDeque<u64>,
    /// This bucket's key in `Shard::lru`.
    tick: u64,
    /// The newest `now_ms` this bucket has seen (admitted or not).
    last_seen_ms: u64,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Self { buckets: HashMap::new(), lru: BTreeMap::new(), next_tick: 0, capacity }
    }

    /// Drops least-recently-seen buckets for as long as they are idle, i.e.
    /// unseen for at least `window_ms`, so every timestamp they hold has
    /// aged out and dropping them is lossless.
    fn collect_idle(&mut self, now_ms: u64, window_ms: u64) {
        while let Some(entry) = self.lru.first_entry() {
            let idle =
                self.buckets.get(&**entry.get()).is_none_or(|b| b.last_seen_ms.saturating_add(window_ms) <= now_ms);
            if !idle {
                break;
            }
            let key = entry.remove();
            self.buckets.remove(&*key);
        }
    }

    fn check(&mut self, key: &str, now_ms: u64, limit: IdentifierLimit) -> Decision {
        self.collect_idle(now_ms, limit.window_ms);
        let tick = self.next_tick;
        self.next_tick += 1;
        if let Some(bucket) = self.buckets.get_mut(key) {
            let k = self.lru.remove(&bucket.tick).unwrap_or_else(|| Arc::from(key));
            self.lru.insert(tick, k);
            bucket.tick = tick;
            return bucket.admit(now_ms, limit);
        }
        while self.buckets.len() >= self.capacity {
            let Some((_, oldest)) = self.lru.pop_first() else { break };
            self.buckets.remove(&*oldest);
        }
        let k: Arc<str> = Arc::from(key);
        self.lru.insert(tick, k.clone());
        let bucket = self.buckets.entry(k).or_insert(Bucket { hits: VecDeque::new(), tick, last_seen_ms: now_ms });
        bucket.admit(now_ms, limit)
    }
}

impl Bucket {
    fn admit(&mut self, now_ms: u64, limit: IdentifierLimit) -> Decision {
        let window = limit.window_ms;
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        while self.hits.front().is_some_and(|&t| now_ms.saturating_sub(t) >= window) {
            self.hits.pop_front();
        }
        if self.hits.capacity() > 64 && self.hits.len() < self.hits.capacity() / 4 {
            self.hits.shrink_to(self.hits.len() * 2);
        }
        // At most `max` hits are ever stored, so this fits a u32.
        let used = u32::try_from(self.hits.len()).unwrap_or(u32::MAX);
        if used < limit.max {
            let at = self.hits.back().map_or(now_ms, |&newest| newest.max(now_ms));
            self.hits.push_back(at);
            return Decision { allowed: true, remaining: limit.max - used - 1, reset_ms: window };
        }
        let reset_ms = match self.hits.front() {
            Some(&oldest) => oldest.saturating_add(window).saturating_sub(now_ms).clamp(1, window.max(1)),
            None => window,
        };
        Decision { allowed: false, remaining: 0, reset_ms }
    }
}

#[cfg(test)]
mod tests;
