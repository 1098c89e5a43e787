//! The set of configured providers as one immutable snapshot.
//!
//! A request takes the snapshot once (an `ArcSwap` load in the gateway
//! state) and keeps it to the end, so a reload never changes the ground
//! under a request in flight. Per-provider state that must outlive adapter
//! versions (key cooldowns) lives in `Arc`s the next snapshot reuses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::adapter::Adapter;
use super::engine::PluginEngine;
use super::loader;
use super::types::AuthPlacement;
use crate::breaker::Breaker;
use crate::config::{Config, ProviderConfig};
use crate::keys::KeyRing;
use crate::quota::Limits;
use crate::stats::ProviderStats;
use crate::store::Store;

/// One configured provider slot.
pub struct ProviderEntry {
    /// Provider id.
    pub id: Arc<str>,
    /// The live adapter version; `None` when it failed to load.
    pub adapter: Option<Arc<Adapter>>,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Keys, their windows and cooldowns.
    pub keys: Arc<KeyRing>,
    /// The provider's circuit breaker (shared by its keys).
    pub breaker: Arc<Breaker>,
    /// Counters and token usage.
    pub stats: Arc<ProviderStats>,
    /// True when requests may be routed here.
    pub enabled: bool,
    /// Why the provider is disabled or failed, for operators.
    pub note: Option<String>,
}

impl ProviderEntry {
    /// The adapter, when the provider is enabled and loaded.
    pub fn live(&self) -> Option<&Arc<Adapter>> {
        if self.enabled { self.adapter.as_ref() } else { None }
    }

    /// `None` when the provider could take a request of `tokens` now (breaker
    /// admits, a key has room), else how long until it can.
    pub fn wait_for_headroom(&self, now: Instant, tokens: u32) -> Option<Duration> {
        let breaker = (!self.breaker.is_available(now))
            .then(|| self.breaker.snapshot(now).opened_for_ms_remaining.map_or(Duration::ZERO, Duration::from_millis));
        let keys = self.keys.wait_for_headroom(now, tokens);
        match (breaker, keys) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or_default().max(b.unwrap_or_default())),
        }
    }

    /// When an enabled provider can take a request again: `Some(0)` now,
    /// `None` never (disabled, or every key invalid).
    pub fn available_in(&self, now: Instant) -> Option<Duration> {
        self.live()?;
        match self.keys.wait_for_headroom(now, 0) {
            None => Some(Duration::ZERO),
            Some(Duration::MAX) => None,
            Some(d) => Some(d),
        }
    }
}

/// All provider slots, in registry order.
#[derive(Default)]
pub struct Registry {
    /// Slots in the order of `plugins.toml`.
    pub providers: Vec<Arc<ProviderEntry>>,
}

impl Registry {
    /// Finds a slot by id.
    pub fn get(&self, id: &str) -> Option<&Arc<ProviderEntry>> {
        self.providers.iter().find(|p| &*p.id == id)
    }

    /// Slots that can take requests.
    pub fn enabled(&self) -> impl Iterator<Item = &Arc<ProviderEntry>> {
        self.providers.iter().filter(|p| p.live().is_some())
    }

    /// Loads every configured provider. A provider that fails to load is kept
    /// as a disabled slot with the error as its note; the gateway still starts.
    pub async fn load(engine: &Arc<PluginEngine>, config: &Config, store: Option<&Store>) -> Self {
        // Components load concurrently (compilation runs on blocking threads);
        // the registry keeps the file's order.
        let loaded =
            futures_util::future::join_all(config.providers.iter().map(|pc| load_provider(engine, config, pc, store)))
                .await;
        let mut providers = Vec::with_capacity(config.providers.len());
        for (pc, loaded) in config.providers.iter().zip(loaded) {
            let entry = match loaded {
                Ok(entry) => entry,
                Err(e) => {
                    let note = format!("failed to load {}: {e}", pc.component.display());
                    tracing::error!(provider = %pc.id, error = %note, "provider not loaded");
                    ProviderEntry {
                        id: Arc::from(pc.id.as_str()),
                        adapter: None,
                        base_url: pc.base_url.clone().unwrap_or_default(),
                        keys: Arc::new(KeyRing::new(Vec::new(), Limits::default())),
                        breaker: Arc::new(Breaker::new(config.routing.breaker)),
                        stats: Arc::new(ProviderStats::default()),
                        enabled: false,
                        note: Some(note),
                    }
                }
            };
            if entry.enabled {
                tracing::info!(provider = %entry.id, keys = entry.keys.len(), base_url = %entry.base_url, "provider enabled");
            } else if entry.adapter.is_some() {
                tracing::info!(provider = %entry.id, reason = entry.note.as_deref().unwrap_or(""), "provider disabled");
            }
            providers.push(Arc::new(entry));
        }
        Self { providers }
    }
}

async fn load_provider(
    engine: &Arc<PluginEngine>,
    config: &Config,
    pc: &ProviderConfig,
    store: Option<&Store>,
) -> Result<ProviderEntry, loader::LoadError> {
    let compiled = {
        let engine = engine.clone();
        let path = pc.component.clone();
        let cache_dir = config.cache_dir.clone();
        tokio::task::spawn_blocking(move || loader::load_file(&engine, &path, &cache_dir))
            .await
            .map_err(|e| loader::LoadError::Compile(format!("compile task failed: {e}")))??
    };
    let adapter = Adapter::configure(engine.clone(), compiled, &pc.id, pc.settings.clone(), pc.sandbox).await?;
    let info = &adapter.info;

    let needs_key = !matches!(info.auth, AuthPlacement::None);
    // The key variable: plugins.toml, else what the adapter declares, else
    // `<ID>_API_KEY`.
    let key_env = pc
        .key_env
        .clone()
        .or_else(|| info.key_env.clone())
        .unwrap_or_else(|| format!("{}_API_KEY", pc.id.to_ascii_uppercase().replace('-', "_")));
    let keys = if needs_key { config.keys_from(&key_env) } else { Vec::new() };
    // A keyless provider (a local server) is enabled only when the operator
    // says where it is: `base_url` in plugins.toml or `<ID>_BASE_URL`, or a
    // `base_url` setting for adapters configured by settings alone.
    let base_url_given = pc.base_url.is_some() || pc.settings.iter().any(|(k, _)| k == "base_url");
    let (enabled, note) = if !pc.enabled {
        (false, Some("disabled in plugins.toml".to_owned()))
    } else if needs_key && keys.is_empty() {
        (false, Some(format!("no API key: set {key_env}")))
    } else if !needs_key && !base_url_given {
        let var = format!("{}_BASE_URL", pc.id.to_ascii_uppercase().replace('-', "_"));
        (false, Some(format!("keyless provider: set {var} to enable it")))
    } else {
        (true, None)
    };
    let l = &info.limits;
    let o = pc.limits.unwrap_or_default();
    // An operator override wins; 0 there means unlimited.
    let pick = |over: Option<u32>, declared: Option<u32>| match over {
        Some(0) => None,
        Some(v) => Some(v),
        None => declared,
    };
    let limits = Limits {
        requests_per_minute: pick(o.rpm, l.requests_per_minute),
        requests_per_day: pick(o.rpd, l.requests_per_day),
        tokens_per_minute: pick(o.tpm, l.tokens_per_minute),
        tokens_per_day: pick(o.tpd, l.tokens_per_day),
    };
    let mut keys = if needs_key { KeyRing::new(keys, limits) } else { KeyRing::keyless(limits) };
    if let Some(store) = store {
        keys.restore_windows(&pc.id, &|id| crate::persist::saved_window(store, id));
    }
    let base_url = pc.base_url.clone().unwrap_or_else(|| info.default_base_url.trim_end_matches('/').to_owned());
    tracing::debug!(provider = %pc.id, hash = %adapter.hash, version = %info.adapter_version, "adapter loaded");
    Ok(ProviderEntry {
        id: adapter.id.clone(),
        adapter: Some(Arc::new(adapter)),
        base_url,
        keys: Arc::new(keys),
        breaker: Arc::new(Breaker::new(config.routing.breaker)),
        stats: Arc::new(ProviderStats::default()),
        enabled,
        note,
    })
}
