//! What the edge applies to each client, as one value of the live
//! configuration: the CORS allowlist, the per-IP and per-identifier
//! limiters, and whether `X-Forwarded-For` names the client.
//!
//! Built from [`ClientsConfig`] at start and rebuilt by a reload when
//! `[limits]` or `[cors]` changed. A limiter whose limit and bucket budget
//! did not change is kept, counts included; a changed one starts empty
//! (its clients get a fresh window under the new limit). Whether the
//! gateway is protected was decided once at start and is kept: it decides
//! what an unset allowlist means ([`AllowedOrigins::new`]).

use std::sync::Arc;

use crate::config::ClientsConfig;
use crate::http::cors::AllowedOrigins;
use freellm_limits::identifier::{IdentifierLimit, IdentifierLimiter};

/// The per-client policy of the edge (`[limits]`, `[cors]`).
#[derive(Debug)]
pub struct ClientPolicy {
    /// The settings it was built from.
    pub config: ClientsConfig,
    /// A credential was configured at start.
    protected: bool,
    /// Browser origins allowed to call.
    pub origins: AllowedOrigins,
    /// Per-identifier limit (per client IP without an identifier).
    pub identifier_limiter: Option<Arc<IdentifierLimiter>>,
    /// Per-IP limit (`per_ip_rpm`).
    pub ip_limiter: Option<Arc<IdentifierLimiter>>,
}

impl ClientPolicy {
    /// The policy of `config` on a gateway that is `protected` (or open).
    pub fn new(config: &ClientsConfig, protected: bool) -> Self {
        Self::build(config, protected, None)
    }

    /// The policy of `config`, keeping this one's limiters (and their
    /// counts) where their settings did not change.
    pub fn updated(&self, config: &ClientsConfig) -> Self {
        Self::build(config, self.protected, Some(self))
    }

    /// Requests per minute per client IP, when limited.
    pub fn per_ip_rpm(&self) -> Option<u32> {
        self.config.per_ip_rpm
    }

    /// Take the client IP from the last `X-Forwarded-For` hop.
    pub fn trust_proxy(&self) -> bool {
        self.config.trust_proxy
    }

    fn build(config: &ClientsConfig, protected: bool, previous: Option<&Self>) -> Self {
        let buckets = config.identifier_max_buckets;
        let keep_or_make = |limit: Option<IdentifierLimit>, old: Option<&Arc<IdentifierLimiter>>| {
            let limit = limit?;
            match old {
                Some(old) if old.limit() == limit && old.max_buckets() == buckets.max(1) => Some(old.clone()),
                _ => Some(Arc::new(IdentifierLimiter::new(limit, buckets))),
            }
        };
        let per_ip = config.per_ip_rpm.and_then(|rpm| IdentifierLimit::per_minute(rpm).ok());
        Self {
            config: config.clone(),
            protected,
            origins: AllowedOrigins::new(config.allowed_origins.as_deref(), protected),
            identifier_limiter: keep_or_make(
                config.identifier_limit,
                previous.and_then(|p| p.identifier_limiter.as_ref()),
            ),
            ip_limiter: keep_or_make(per_ip, previous.and_then(|p| p.ip_limiter.as_ref())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(max: u32) -> ClientsConfig {
        ClientsConfig {
            identifier_limit: Some(IdentifierLimit { max, window_ms: 60_000 }),
            per_ip_rpm: Some(10),
            ..ClientsConfig::default()
        }
    }

    #[test]
    fn an_unchanged_limiter_keeps_its_counts_and_a_changed_one_starts_empty() {
        let policy = ClientPolicy::new(&limited(1), true);
        let limiter = policy.identifier_limiter.clone().expect("limited");
        assert!(limiter.check("a", 1_000).allowed && !limiter.check("a", 1_001).allowed);
        let same = policy.updated(&ClientsConfig { allowed_origins: Some(vec!["https://x".into()]), ..limited(1) });
        assert!(Arc::ptr_eq(same.identifier_limiter.as_ref().expect("kept"), &limiter));
        assert!(Arc::ptr_eq(same.ip_limiter.as_ref().expect("kept"), policy.ip_limiter.as_ref().expect("set")));
        assert!(same.origins.lists("https://x"));
        let raised = same.updated(&limited(2));
        assert!(raised.identifier_limiter.as_ref().expect("limited").check("a", 1_002).allowed, "a fresh window");
        assert!(same.updated(&ClientsConfig::default()).identifier_limiter.is_none());
    }

    #[test]
    fn an_unset_allowlist_keeps_meaning_what_the_start_decided() {
        let open = ClientPolicy::new(&ClientsConfig::default(), false).updated(&ClientsConfig::default());
        assert_eq!(open.origins, AllowedOrigins::Any);
        let protected = ClientPolicy::new(&ClientsConfig::default(), true).updated(&ClientsConfig::default());
        assert_eq!(protected.origins, AllowedOrigins::List(Vec::new()));
    }
}
