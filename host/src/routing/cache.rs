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
//! By default the key also holds the caller's tenant (its virtual key's
//! handle, else its principal kind): with a shared cache, a hit
//! (`X-FreeLLM-Cached: true`, and its speed) tells one tenant what another
//! asked. `CACHE_SCOPE=shared` trades that for a higher hit rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use moka::notification::RemovalCause;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use freellm_runtime::types::{FinishReason, Usage};

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
    /// hits / (hits + misses), or 0.
    pub hit_rate: f64,
}

/// The response cache.
pub struct ResponseCache {
    config: CacheConfig,
    entries: moka::sync::Cache<CacheKey, Arc<CachedAnswer>>,
    hits: AtomicU64,
    misses: AtomicU64,
    sets: AtomicU64,
    evictions: Arc<AtomicU64>,
}

impl ResponseCache {
    /// A cache with `config`.
    pub fn new(config: CacheConfig) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_entries)
            .time_to_live(config.ttl)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self { config, entries, hits: AtomicU64::new(0), misses: AtomicU64::new(0), sets: AtomicU64::new(0), evictions }
    }

    /// The key of `tenant`'s request, or `None` when it must not be cached
    /// (disabled, stream, JSON schema, images). `tenant` counts only with
    /// [`CacheScope::Tenant`].
    pub fn key_for(&self, request: &Value, no_training: bool, tenant: &str) -> Option<CacheKey> {
        if !self.config.enabled || request.get("stream").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        if request.pointer("/response_format/type").and_then(Value::as_str) == Some("json_schema") {
            return None;
        }
        let has_images = request.get("messages").and_then(Value::as_array).is_some_and(|msgs| {
            msgs.iter().any(|m| {
                m.get("content").and_then(Value::as_array).is_some_and(|parts| {
                    parts.iter().any(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
                })
            })
        });
        if has_images {
            return None;
        }
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
            match request.get(*field) {
                // Absent and null are the same request.
                None | Some(Value::Null) => hasher.update(b"null"),
                Some(v) => hasher.update(v.to_string().as_bytes()),
            }
            hasher.update(b"\n");
        }
        Some(hasher.finalize().into())
    }

    /// Looks a key up (counting a hit or a miss).
    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedAnswer>> {
        let found = self.entries.get(key);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores an answer unless it must not be cached: no choices, empty
    /// content everywhere, or any `finish_reason: length`.
    pub fn put(&self, key: CacheKey, answer: CachedAnswer, finish: Option<FinishReason>) {
        if finish == Some(FinishReason::Length) || !cacheable_body(&answer.body) {
            return;
        }
        self.entries.insert(key, Arc::new(answer));
        self.sets.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters for `/v1/status`.
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        CacheStats {
            enabled: self.config.enabled,
            ttl_ms: self.config.ttl.as_millis() as u64,
            max_entries: self.config.max_entries,
            current_size: self.entries.entry_count(),
            hits,
            misses,
            sets: self.sets.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            hit_rate: if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
        }
    }
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

    fn answer(body: Value) -> CachedAnswer {
        CachedAnswer {
            body: Bytes::from(body.to_string()),
            provider: Arc::from("groq"),
            upstream_model: "m".into(),
            usage: None,
        }
    }

    fn ok_body(content: &str, finish: &str) -> Value {
        json!({"x_freellm_provider": "groq", "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}]})
    }

    #[test]
    fn keys_cover_the_answer_changing_fields_and_the_posture() {
        let c = ResponseCache::new(CacheConfig::default());
        let base = json!({"model": "free", "messages": [{"role": "user", "content": "hi"}]});
        let k = c.key_for(&base, false, T).unwrap();
        let mut with_null = base.clone();
        with_null["temperature"] = Value::Null;
        assert_eq!(c.key_for(&with_null, false, T).unwrap(), k, "absent == null");
        let mut user = base.clone();
        user["user"] = json!("someone");
        assert_eq!(c.key_for(&user, false, T).unwrap(), k, "user is not part of the key");
        let mut warmer = base.clone();
        warmer["temperature"] = json!(0.9);
        assert_ne!(c.key_for(&warmer, false, T).unwrap(), k);
        let mut other_model = base.clone();
        other_model["model"] = json!("free-fast");
        assert_ne!(c.key_for(&other_model, false, T).unwrap(), k);
        assert_ne!(c.key_for(&base, true, T).unwrap(), k, "privacy posture is part of the key");
    }

    #[test]
    fn tenants_get_their_own_entries_unless_the_cache_is_shared() {
        let body = json!({"model": "free", "messages": [{"role": "user", "content": "hi"}]});
        let scoped = ResponseCache::new(CacheConfig::default());
        let a = scoped.key_for(&body, false, "vk:aaaa").unwrap();
        assert_ne!(a, scoped.key_for(&body, false, "vk:bbbb").unwrap());
        assert_ne!(a, scoped.key_for(&body, false, "master").unwrap());
        assert_ne!(scoped.key_for(&body, false, "ab").unwrap(), scoped.key_for(&body, false, "a").unwrap());
        assert_eq!(a, scoped.key_for(&body, false, "vk:aaaa").unwrap());
        let shared = ResponseCache::new(CacheConfig { scope: CacheScope::Shared, ..CacheConfig::default() });
        assert_eq!(shared.key_for(&body, false, "vk:aaaa").unwrap(), shared.key_for(&body, false, "vk:bbbb").unwrap());
        assert_eq!("Shared".parse::<CacheScope>(), Ok(CacheScope::Shared));
        assert!("everyone".parse::<CacheScope>().is_err());
    }

    #[test]
    fn streams_schemas_and_images_are_not_cached() {
        let c = ResponseCache::new(CacheConfig::default());
        assert!(c.key_for(&json!({"model": "m", "messages": [], "stream": true}), false, T).is_none());
        assert!(
            c.key_for(&json!({"model": "m", "messages": [], "response_format": {"type": "json_schema"}}), false, T)
                .is_none()
        );
        let img = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]});
        assert!(c.key_for(&img, false, T).is_none());
        let off = ResponseCache::new(CacheConfig { enabled: false, ..CacheConfig::default() });
        assert!(off.key_for(&json!({"model": "m", "messages": []}), false, T).is_none());
    }

    #[test]
    fn only_complete_non_empty_answers_are_stored() {
        let c = ResponseCache::new(CacheConfig::default());
        let key = [1u8; 32];
        c.put(key, answer(ok_body("cut", "length")), Some(FinishReason::Length));
        c.put(key, answer(ok_body("", "stop")), Some(FinishReason::Stop));
        c.put(key, answer(json!({"choices": []})), None);
        assert!(c.get(&key).is_none());
        c.put(key, answer(ok_body("Hello", "stop")), Some(FinishReason::Stop));
        assert_eq!(c.get(&key).unwrap().provider.as_ref(), "groq");
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.sets, s.current_size), (1, 1, 1, 1));
        assert!((s.hit_rate - 0.5).abs() < 1e-9);
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
    fn a_hit_body_is_marked() {
        let out = hit_body(br#"{"x_freellm_provider":"groq","id":"x"}"#);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["x_freellm_cached"], true);
        assert_eq!(v["x_freellm_provider"], "groq");
    }
}
