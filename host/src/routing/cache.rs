//! The response cache: identical non-streaming requests are answered from
//! memory instead of spending a provider's free quota.
//!
//! The key is SHA-256 over the request fields that change the answer (the
//! requested model, messages, sampling parameters, tools, response format,
//! reasoning effort) plus the privacy posture, so an answer produced by a
//! provider that trains on prompts is never served to a `no-training`
//! request. Streams, failures, empty answers, answers cut by
//! `finish_reason: length`, JSON-schema requests and requests with images
//! are never cached. Entries live in a `moka` cache bounded by
//! `CACHE_MAX_ENTRIES` with a TTL of `CACHE_TTL_MS`.
//!
//! An entry remembers the adapter versions (content hashes) of the provider
//! slot that answered: the live one, and the one on canary if any. A hit is
//! served only while that slot still runs exactly those versions
//! ([`ResponseCache::get_valid`]): after a hot swap, an upload, a canary's
//! verdict or the provider's removal (or once it is disabled), its old
//! answers are never served again, and the first lookup drops them. The
//! check is one registry lookup and a string comparison; a request for a
//! meta-model finds the entry of whichever provider answered it, and the
//! entry is valid only if that provider's versions are unchanged.
//!
//! By default the key also holds the caller's tenant (its virtual key's
//! handle, else its principal kind): with a shared cache, a hit
//! (`X-FreeLLM-Cached: true`, and its speed) tells one tenant what another
//! asked. `CACHE_SCOPE=shared` trades that for a higher hit rate.
//!
//! With `[cache] backend = "redis"` the cache has two levels: this memory
//! first, then the fleet's Redis ([`crate::fleet::cache`]), so an answer
//! cached by one instance is served by every other ([`ResponseCache::lookup`],
//! [`ResponseCache::store`]). The key is the same (tenant, posture, fields),
//! so are the rules (the versions that answered must still serve). A shared
//! entry is versioned bytes ([`encode`]: a format line, a JSON header, the
//! body, the body's SHA-256 in the header) and is verified when read: a
//! corrupt or foreign value is a miss, never an error; so is a Redis that
//! fails. A shared hit is kept in memory for what is left of its TTL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use moka::notification::RemovalCause;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::fleet::cache::SharedCache;
use crate::json::Json;
use crate::routing::needs::Needs;
use freellm_runtime::types::{FinishReason, Usage};

/// The first line of a shared entry: the format and its version.
const SHARED_FORMAT: &[u8] = b"freellm-cache-entry/1\n";

/// Request fields that make up the key, in this order.
const KEY_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "n",
    "logit_bias",
];

/// Who shares cache entries (`[cache] scope`, `CACHE_SCOPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheScope {
    /// Each tenant has its own entries (the default).
    #[default]
    Tenant,
    /// Every caller shares entries.
    Shared,
}

impl std::str::FromStr for CacheScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tenant" => Ok(Self::Tenant),
            "shared" => Ok(Self::Shared),
            other => Err(format!("expected \"tenant\" or \"shared\", got {other:?}")),
        }
    }
}

/// Cache settings (`CACHE_ENABLED`, `CACHE_TTL_MS`, `CACHE_MAX_ENTRIES`,
/// `CACHE_SCOPE`).
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Whether the cache is used at all.
    pub enabled: bool,
    /// How long an entry lives.
    pub ttl: Duration,
    /// Most entries kept.
    pub max_entries: u64,
    /// Who shares entries.
    pub scope: CacheScope,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { enabled: true, ttl: Duration::from_secs(3600), max_entries: 1000, scope: CacheScope::Tenant }
    }
}

/// A cached answer.
#[derive(Debug)]
pub struct CachedAnswer {
    /// The body as first sent (with `x_freellm_provider`).
    pub body: Bytes,
    /// The provider that answered.
    pub provider: Arc<str>,
    /// Its upstream model.
    pub upstream_model: String,
    /// Token usage of the original answer (virtual-key caps count it).
    pub usage: Option<Usage>,
    /// The answering slot's adapter versions when it answered
    /// ([`versions_of`]); the entry is served only while they are live.
    pub versions: Arc<str>,
}

/// The adapter versions a provider slot runs: its live version's content
/// hash, and `+<hash>` of the version on canary. Either may have answered,
/// and a change to either (a swap, a canary's start or verdict) changes this.
pub fn versions_of(live: Option<&str>, canary: Option<&str>) -> String {
    match (live, canary) {
        (Some(l), Some(c)) => format!("{l}+{c}"),
        (Some(l), None) => l.to_owned(),
        (None, Some(c)) => format!("+{c}"),
        (None, None) => String::new(),
    }
}

/// A cache key.
pub type CacheKey = [u8; 32];

/// Counters for `/v1/status`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    /// Whether the cache is on.
    pub enabled: bool,
    /// Entry TTL.
    pub ttl_ms: u64,
    /// Capacity.
    pub max_entries: u64,
    /// Entries now.
    pub current_size: u64,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that were not.
    pub misses: u64,
    /// Answers stored.
    pub sets: u64,
    /// Entries pushed out by capacity.
    pub evictions: u64,
    /// Entries dropped at lookup because the adapter version that answered
    /// no longer serves (swapped, rolled back, provider removed); each also
    /// counts as a miss.
    pub stale: u64,
    /// hits / (hits + misses), or 0.
    pub hit_rate: f64,
    /// `local` or `redis`.
    pub backend: &'static str,
    /// Hits served from the fleet's level (counted in `hits` too).
    pub shared_hits: u64,
    /// Shared values refused when read: corrupt, foreign or another format.
    pub shared_rejected: u64,
    /// Answers not stored in the fleet's level: too large, or Redis did not
    /// take them.
    pub shared_not_stored: u64,
}

/// The response cache.
pub struct ResponseCache {
    config: CacheConfig,
    /// `[cache] enabled`, switched by a reload ([`ResponseCache::set_enabled`]).
    enabled: AtomicBool,
    entries: moka::sync::Cache<CacheKey, Entry>,
    hits: AtomicU64,
    misses: AtomicU64,
    sets: AtomicU64,
    evictions: Arc<AtomicU64>,
    stale: AtomicU64,
    /// The fleet's level (`[cache] backend = "redis"`).
    shared: Option<SharedCache>,
    shared_hits: AtomicU64,
    shared_rejected: AtomicU64,
    shared_not_stored: AtomicU64,
}

/// An entry in memory: the answer, and for a copy of a shared entry, what
/// was left of its TTL (it never outlives the shared one).
#[derive(Clone)]
struct Entry {
    answer: Arc<CachedAnswer>,
    ttl: Option<Duration>,
}

/// Gives a copy of a shared entry its own, shorter, TTL.
struct EntryTtl;

impl moka::Expiry<CacheKey, Entry> for EntryTtl {
    fn expire_after_create(&self, _key: &CacheKey, entry: &Entry, _at: std::time::Instant) -> Option<Duration> {
        entry.ttl
    }
}

impl ResponseCache {
    /// A cache with `config`.
    pub fn new(config: CacheConfig) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_entries)
            .time_to_live(config.ttl)
            .expire_after(EntryTtl)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            enabled: AtomicBool::new(config.enabled),
            config,
            entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            sets: AtomicU64::new(0),
            evictions,
            stale: AtomicU64::new(0),
            shared: None,
            shared_hits: AtomicU64::new(0),
            shared_rejected: AtomicU64::new(0),
            shared_not_stored: AtomicU64::new(0),
        }
    }

    /// This cache with the fleet's level behind it.
    pub fn with_shared(mut self, shared: SharedCache) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The key of `tenant`'s request (with the `needs` read from it), or
    /// `None` when it must not be cached (disabled, stream, JSON schema,
    /// images). `tenant` counts only with
    /// [`CacheScope::Tenant`].
    pub fn key_for(&self, request: &Json<'_>, needs: &Needs, tenant: &str) -> Option<CacheKey> {
        if !self.enabled.load(Ordering::Relaxed) || request.get("stream").and_then(Json::as_bool) == Some(true) {
            return None;
        }
        if needs.json_schema || needs.vision {
            return None;
        }
        let no_training = needs.no_training;
        let mut hasher = Sha256::new();
        hasher.update(if no_training { b"posture:no-training\n" as &[u8] } else { b"posture:any\n" });
        if self.config.scope == CacheScope::Tenant {
            // Length-prefixed, so no tenant name can collide with another's.
            hasher.update(format!("tenant:{}:", tenant.len()).as_bytes());
            hasher.update(tenant.as_bytes());
            hasher.update(b"\n");
        }
        for field in KEY_FIELDS {
            hasher.update(field.as_bytes());
            hasher.update(b"=");
            match request.get(field) {
                // Absent and null are the same request.
                None | Some(Json::Null) => hasher.update(b"null"),
                // Encoded straight into the hash: no copy of a large prompt.
                Some(v) => serde_json::to_writer(&mut hasher, v).ok()?,
            }
            hasher.update(b"\n");
        }
        Some(hasher.finalize().into())
    }

    /// Looks a key up, serving the entry only when `live(provider)` still
    /// returns the versions that produced it ([`versions_of`]; `None`: the
    /// provider is gone or disabled). A stale entry is dropped and counts
    /// as a miss.
    pub fn get_valid(&self, key: &CacheKey, live: impl Fn(&str) -> Option<String>) -> Option<Arc<CachedAnswer>> {
        let found = self.get_local(key, &live);
        self.count(found.is_some());
        found
    }

    /// [`ResponseCache::get_valid`], then, on a miss, the fleet's level: a
    /// shared entry that verifies and whose versions still serve is kept in
    /// memory (for what is left of its TTL) and served.
    pub async fn lookup(&self, key: &CacheKey, live: impl Fn(&str) -> Option<String>) -> Option<Arc<CachedAnswer>> {
        let mut found = self.get_local(key, &live);
        if found.is_none()
            && let Some(shared) = &self.shared
            && let Some(entry) = shared.get(&hex::encode(key)).await
        {
            match decode(&entry.bytes).filter(|_| entry.ttl_left.is_some()) {
                Some(answer) if live(&answer.provider).as_deref() == Some(&*answer.versions) => {
                    let answer = Arc::new(answer);
                    self.entries.insert(*key, Entry { answer: answer.clone(), ttl: entry.ttl_left });
                    self.shared_hits.fetch_add(1, Ordering::Relaxed);
                    found = Some(answer);
                }
                // Answered by versions that no longer serve here.
                Some(_) => {
                    self.stale.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.shared_rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.count(found.is_some());
        found
    }

    fn get_local(&self, key: &CacheKey, live: &impl Fn(&str) -> Option<String>) -> Option<Arc<CachedAnswer>> {
        let entry = self.entries.get(key)?;
        if live(&entry.answer.provider).as_deref() == Some(&*entry.answer.versions) {
            return Some(entry.answer);
        }
        self.entries.invalidate(key);
        self.stale.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores an answer unless it must not be cached: no choices, empty
    /// content everywhere, or any `finish_reason: length`.
    pub fn put(&self, key: CacheKey, answer: CachedAnswer, finish: Option<FinishReason>) {
        self.put_local(key, answer, finish);
    }

    fn put_local(
        &self,
        key: CacheKey,
        answer: CachedAnswer,
        finish: Option<FinishReason>,
    ) -> Option<Arc<CachedAnswer>> {
        // Disabled meanwhile: a request keyed before the switch stores nothing.
        if finish == Some(FinishReason::Length) || !cacheable_body(&answer.body) || !self.is_enabled() {
            return None;
        }
        let answer = Arc::new(answer);
        self.entries.insert(key, Entry { answer: answer.clone(), ttl: None });
        self.sets.fetch_add(1, Ordering::Relaxed);
        Some(answer)
    }

    /// [`ResponseCache::put`], and into the fleet's level (waited for, so
    /// the next request to any instance finds it; a failure only counts).
    pub async fn store(&self, key: CacheKey, answer: CachedAnswer, finish: Option<FinishReason>) {
        let Some(answer) = self.put_local(key, answer, finish) else { return };
        if let Some(shared) = &self.shared
            && !shared.set(&hex::encode(key), encode(&answer), self.config.ttl).await
        {
            self.shared_not_stored.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops every entry provider `id` answered (the provider left the
    /// configuration: its answers must not come back if it is added again
    /// with the same component). Returns how many were dropped.
    pub fn purge_provider(&self, id: &str) -> u64 {
        let mut dropped = 0;
        for (key, entry) in self.entries.iter() {
            if &*entry.answer.provider == id {
                self.entries.invalidate(&*key);
                dropped += 1;
            }
        }
        self.stale.fetch_add(dropped, Ordering::Relaxed);
        dropped
    }

    /// Turns the cache on or off (a reload of `[cache] enabled`). Turning it
    /// off drops every entry, so turning it on again starts empty.
    pub fn set_enabled(&self, enabled: bool) {
        if !self.enabled.swap(enabled, Ordering::Relaxed) || enabled {
            return;
        }
        self.entries.invalidate_all();
    }

    /// Whether answers are cached and served now.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Counters for `/v1/status`.
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        CacheStats {
            enabled: self.enabled.load(Ordering::Relaxed),
            ttl_ms: self.config.ttl.as_millis() as u64,
            max_entries: self.config.max_entries,
            current_size: self.entries.entry_count(),
            hits,
            misses,
            sets: self.sets.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            hit_rate: if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            backend: if self.shared.is_some() { "redis" } else { "local" },
            shared_hits: self.shared_hits.load(Ordering::Relaxed),
            shared_rejected: self.shared_rejected.load(Ordering::Relaxed),
            shared_not_stored: self.shared_not_stored.load(Ordering::Relaxed),
        }
    }
}

/// The header line of a shared entry.
#[derive(Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SharedHeader {
    provider: String,
    upstream_model: String,
    versions: String,
    /// Prompt, completion and total tokens.
    usage: Option<[u32; 3]>,
    /// Hex SHA-256 of the body.
    body_sha256: String,
}

/// A shared entry: [`SHARED_FORMAT`], the header's JSON on one line, the body.
pub fn encode(answer: &CachedAnswer) -> Vec<u8> {
    let header = SharedHeader {
        provider: answer.provider.to_string(),
        upstream_model: answer.upstream_model.clone(),
        versions: answer.versions.to_string(),
        usage: answer.usage.map(|u| [u.prompt_tokens, u.completion_tokens, u.total_tokens]),
        body_sha256: hex::encode(Sha256::digest(&answer.body)),
    };
    // A struct of strings and numbers always serializes.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(SHARED_FORMAT.len() + header.len() + 1 + answer.body.len());
    out.extend_from_slice(SHARED_FORMAT);
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(&answer.body);
    out
}

/// Reads a shared entry back; `None` unless it is exactly what [`encode`]
/// writes (the format line, a header with only its fields, a body whose
/// hash matches, a body worth serving).
pub fn decode(bytes: &[u8]) -> Option<CachedAnswer> {
    let rest = bytes.strip_prefix(SHARED_FORMAT)?;
    let split = rest.iter().position(|b| *b == b'\n')?;
    let header: SharedHeader = serde_json::from_slice(&rest[..split]).ok()?;
    let body = &rest[split + 1..];
    if hex::encode(Sha256::digest(body)) != header.body_sha256 || !cacheable_body(body) {
        return None;
    }
    let valid_id = |id: &str| {
        (1..=64).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
    };
    if !valid_id(&header.provider) {
        return None;
    }
    Some(CachedAnswer {
        body: Bytes::copy_from_slice(body),
        provider: Arc::from(header.provider),
        upstream_model: header.upstream_model,
        usage: header.usage.map(|[prompt_tokens, completion_tokens, total_tokens]| Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens,
        }),
        versions: Arc::from(header.versions),
    })
}

/// A body worth caching: some choice, none cut by length, some content or
/// tool call.
fn cacheable_body(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return false };
    let Some(choices) = value.get("choices").and_then(Value::as_array) else { return false };
    if choices.is_empty() {
        return false;
    }
    if choices.iter().any(|c| c.get("finish_reason").and_then(Value::as_str) == Some("length")) {
        return false;
    }
    choices.iter().any(|c| {
        let message = c.get("message");
        let content = message.and_then(|m| m.get("content")).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        let tools = message.and_then(|m| m.get("tool_calls")).and_then(Value::as_array).is_some_and(|t| !t.is_empty());
        content || tools
    })
}

/// The body of a cache hit: `"x_freellm_cached":true` inserted first.
pub fn hit_body(body: &[u8]) -> Vec<u8> {
    let start = body.iter().position(|b| *b == b'{').map_or(body.len(), |i| i + 1);
    let rest = &body[start..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(if empty { b"{\"x_freellm_cached\":true" as &[u8] } else { b"{\"x_freellm_cached\":true," });
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: &str = "master";

    /// The key of `body` as the gateway reads it (from its text).
    fn key_of(cache: &ResponseCache, body: &Value, no_training: bool, tenant: &str) -> Option<CacheKey> {
        let text = body.to_string();
        let request = Json::parse(&text).unwrap();
        cache.key_for(&request, &Needs::of(&request, text.len(), no_training), tenant)
    }

    fn answer(body: Value) -> CachedAnswer {
        CachedAnswer {
            body: Bytes::from(body.to_string()),
            provider: Arc::from("groq"),
            upstream_model: "m".into(),
            usage: None,
            versions: Arc::from("v1"),
        }
    }

    fn ok_body(content: &str, finish: &str) -> Value {
        json!({"x_freellm_provider": "groq", "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}]})
    }

    #[test]
    fn keys_cover_the_answer_changing_fields_and_the_posture() {
        let c = ResponseCache::new(CacheConfig::default());
        let base = json!({"model": "free", "messages": [{"role": "user", "content": "hi"}]});
        let k = key_of(&c, &base, false, T).unwrap();
        let mut with_null = base.clone();
        with_null["temperature"] = Value::Null;
        assert_eq!(key_of(&c, &with_null, false, T).unwrap(), k, "absent == null");
        let mut user = base.clone();
        user["user"] = json!("someone");
        assert_eq!(key_of(&c, &user, false, T).unwrap(), k, "user is not part of the key");
        let mut warmer = base.clone();
        warmer["temperature"] = json!(0.9);
        assert_ne!(key_of(&c, &warmer, false, T).unwrap(), k);
        let mut other_model = base.clone();
        other_model["model"] = json!("free-fast");
        assert_ne!(key_of(&c, &other_model, false, T).unwrap(), k);
        assert_ne!(key_of(&c, &base, true, T).unwrap(), k, "privacy posture is part of the key");
    }

    #[test]
    fn tenants_get_their_own_entries_unless_the_cache_is_shared() {
        let body = json!({"model": "free", "messages": [{"role": "user", "content": "hi"}]});
        let scoped = ResponseCache::new(CacheConfig::default());
        let a = key_of(&scoped, &body, false, "vk:aaaa").unwrap();
        assert_ne!(a, key_of(&scoped, &body, false, "vk:bbbb").unwrap());
        assert_ne!(a, key_of(&scoped, &body, false, "master").unwrap());
        assert_ne!(key_of(&scoped, &body, false, "ab").unwrap(), key_of(&scoped, &body, false, "a").unwrap());
        assert_eq!(a, key_of(&scoped, &body, false, "vk:aaaa").unwrap());
        let shared = ResponseCache::new(CacheConfig { scope: CacheScope::Shared, ..CacheConfig::default() });
        assert_eq!(
            key_of(&shared, &body, false, "vk:aaaa").unwrap(),
            key_of(&shared, &body, false, "vk:bbbb").unwrap()
        );
        assert_eq!("Shared".parse::<CacheScope>(), Ok(CacheScope::Shared));
        assert!("everyone".parse::<CacheScope>().is_err());
    }

    #[test]
    fn streams_schemas_and_images_are_not_cached() {
        let c = ResponseCache::new(CacheConfig::default());
        assert!(key_of(&c, &json!({"model": "m", "messages": [], "stream": true}), false, T).is_none());
        assert!(
            key_of(&c, &json!({"model": "m", "messages": [], "response_format": {"type": "json_schema"}}), false, T)
                .is_none()
        );
        let img = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]});
        assert!(key_of(&c, &img, false, T).is_none());
        let off = ResponseCache::new(CacheConfig { enabled: false, ..CacheConfig::default() });
        assert!(key_of(&off, &json!({"model": "m", "messages": []}), false, T).is_none());
    }

    #[test]
    fn only_complete_non_empty_answers_are_stored() {
        let c = ResponseCache::new(CacheConfig::default());
        let key = [1u8; 32];
        c.put(key, answer(ok_body("cut", "length")), Some(FinishReason::Length));
        c.put(key, answer(ok_body("", "stop")), Some(FinishReason::Stop));
        c.put(key, answer(json!({"choices": []})), None);
        assert!(c.get_valid(&key, |_| Some("v1".into())).is_none());
        c.put(key, answer(ok_body("Hello", "stop")), Some(FinishReason::Stop));
        assert_eq!(c.get_valid(&key, |_| Some("v1".into())).unwrap().provider.as_ref(), "groq");
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.sets, s.current_size), (1, 1, 1, 1));
        assert!((s.hit_rate - 0.5).abs() < 1e-9);
    }

    #[test]
    fn an_answer_is_served_only_while_the_versions_that_produced_it_serve() {
        let c = ResponseCache::new(CacheConfig::default());
        let key = [7u8; 32];
        let live = |versions: &'static str| move |provider: &str| (provider == "groq").then(|| versions.to_owned());
        c.put(key, answer(ok_body("Hello", "stop")), None);
        assert!(c.get_valid(&key, live("v1")).is_some(), "same version: a hit");
        assert!(c.get_valid(&key, live("v2")).is_none(), "swapped: never served");
        assert!(c.get_valid(&key, live("v1")).is_none(), "and dropped, not kept for a swap back");
        c.put(key, answer(ok_body("Hello", "stop")), None);
        assert!(c.get_valid(&key, |_| None).is_none(), "provider removed or disabled");
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.stale), (1, 3, 2), "{s:?}");
    }

    #[test]
    fn a_removed_providers_answers_are_purged_and_the_others_kept() {
        let c = ResponseCache::new(CacheConfig::default());
        c.put([1; 32], answer(ok_body("a", "stop")), None);
        let mut other = answer(ok_body("b", "stop"));
        other.provider = Arc::from("gemini");
        c.put([2; 32], other, None);
        assert_eq!(c.purge_provider("groq"), 1);
        let live = |_: &str| Some("v1".to_owned());
        assert!(c.get_valid(&[1; 32], live).is_none(), "even with the same version back");
        assert!(c.get_valid(&[2; 32], live).is_some());
    }

    #[test]
    fn switching_the_cache_off_drops_its_answers_and_stores_nothing_until_it_is_on_again() {
        let c = ResponseCache::new(CacheConfig::default());
        let request = json!({"model": "m", "messages": []});
        let key = key_of(&c, &request, false, T).unwrap();
        c.put(key, answer(ok_body("a", "stop")), None);
        c.set_enabled(false);
        assert!(key_of(&c, &request, false, T).is_none() && !c.stats().enabled);
        c.put(key, answer(ok_body("b", "stop")), None);
        c.set_enabled(true);
        assert!(c.get_valid(&key, |_| Some("v1".to_owned())).is_none(), "nothing kept across the off period");
        c.put(key, answer(ok_body("c", "stop")), None);
        assert!(c.get_valid(&key, |_| Some("v1".to_owned())).is_some());
    }

    #[test]
    fn versions_name_the_live_and_the_canary_version() {
        assert_eq!(versions_of(Some("a"), None), "a");
        assert_eq!(versions_of(Some("a"), Some("b")), "a+b");
        assert_ne!(versions_of(Some("a"), Some("b")), versions_of(Some("a"), None), "a canary's verdict changes it");
        assert_eq!(versions_of(None, None), "");
    }

    #[test]
    fn capacity_evicts_and_counts() {
        let c = ResponseCache::new(CacheConfig { max_entries: 2, ..CacheConfig::default() });
        for i in 0..20u8 {
            c.put([i; 32], answer(ok_body("x", "stop")), None);
        }
        let s = c.stats();
        assert!(s.current_size <= 2, "{s:?}");
        assert!(s.evictions >= 1, "{s:?}");
    }

    #[test]
    fn a_shared_entry_reads_back_whole_and_anything_else_is_refused() {
        let mut original = answer(ok_body("Hello", "stop"));
        original.usage = Some(Usage { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
        let bytes = encode(&original);
        let back = decode(&bytes).expect("reads back");
        assert_eq!(
            (back.body, back.provider, back.versions),
            (original.body.clone(), original.provider.clone(), original.versions.clone())
        );
        assert_eq!(back.usage.map(|u| u.total_tokens), Some(8));

        let flipped = {
            let mut b = bytes.clone();
            let last = b.len() - 2;
            b[last] ^= 1;
            b
        };
        let other_format = [b"freellm-cache-entry/2\n".as_slice(), &bytes[SHARED_FORMAT.len()..]].concat();
        let extra_field =
            String::from_utf8(bytes.clone()).expect("utf-8").replacen("{\"provider\"", "{\"x\":1,\"provider\"", 1);
        let hostile_provider = String::from_utf8(bytes.clone()).expect("utf-8").replacen("\"groq\"", "\"../x\"", 1);
        for (bad, what) in [
            (flipped, "a body that does not match its hash"),
            (other_format, "another format"),
            (extra_field.into_bytes(), "a header with a field it never has"),
            (hostile_provider.into_bytes(), "a provider id no provider has"),
            (b"{\"choices\":[]}".to_vec(), "a foreign value"),
            (Vec::new(), "nothing"),
            (bytes[..bytes.len() / 2].to_vec(), "a truncated value"),
        ] {
            assert!(decode(&bad).is_none(), "{what} was served");
        }
    }

    #[tokio::test]
    async fn without_the_fleets_level_lookup_and_store_are_the_local_cache() {
        let c = ResponseCache::new(CacheConfig::default());
        let key = [3u8; 32];
        c.store(key, answer(ok_body("Hello", "stop")), None).await;
        assert!(c.lookup(&key, |_| Some("v1".into())).await.is_some());
        assert!(c.lookup(&[4u8; 32], |_| Some("v1".into())).await.is_none());
        let s = c.stats();
        assert_eq!((s.backend, s.hits, s.misses, s.sets, s.shared_hits), ("local", 1, 1, 1, 0));
    }

    #[test]
    fn a_hit_body_is_marked() {
        let out = hit_body(br#"{"x_freellm_provider":"groq","id":"x"}"#);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["x_freellm_cached"], true);
        assert_eq!(v["x_freellm_provider"], "groq");
    }
}
