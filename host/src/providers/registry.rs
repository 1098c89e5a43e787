//! The set of configured providers as one immutable snapshot.
//!
//! A request takes the snapshot once (an `ArcSwap` load in the gateway
//! state) and keeps it to the end, so a reload never changes the ground
//! under a request in flight. Per-provider state that must outlive adapter
//! versions (key cooldowns) lives in `Arc`s the next snapshot reuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Config, LimitsOverride, ProviderConfig};
use crate::ops::stats::ProviderStats;
use crate::ops::store::{Store, Table};
use crate::providers::health::ModelBreakers;
use crate::providers::keys::KeyRing;
use freellm_limits::quota::Limits;
use freellm_runtime::types::{AuthPlacement, RateLimits};
use freellm_runtime::{Adapter, PluginEngine, loader};

/// One configured provider slot.
pub struct ProviderEntry {
    /// Provider id.
    pub id: Arc<str>,
    /// The live adapter version; `None` when it failed to load.
    pub adapter: Option<Arc<Adapter>>,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Keys, their windows and cooldowns, against the adapter-wide limits.
    pub keys: Arc<KeyRing>,
    /// The same keys for each model that declares limits of its own
    /// (contract 0.2 `model-info.limits`), counted in windows of their own:
    /// a provider whose quotas are per model (Gemini) spends one model's
    /// quota without touching another's.
    pub model_keys: Vec<(String, Arc<KeyRing>)>,
    /// The provider's circuit breakers, one per model (shared by its keys):
    /// one model's failures never keep requests from another.
    pub breakers: Arc<ModelBreakers>,
    /// Counters and token usage.
    pub stats: Arc<ProviderStats>,
    /// True when requests may be routed here.
    pub enabled: bool,
    /// Why the provider is disabled or failed, for operators.
    pub note: Option<String>,
    /// The `plugins.toml` entry this slot was built from.
    pub config: ProviderConfig,
    /// A new adapter version on trial for a share of the traffic.
    pub canary: Option<Arc<Canary>>,
}

/// A new adapter version serving a share of its provider's traffic until
/// its failure rate decides: promoted when it does no worse than the
/// current version (within [`Canary::margin`]), rolled back otherwise.
pub struct Canary {
    /// The new version.
    pub adapter: Arc<Adapter>,
    /// Percent of requests it gets.
    pub percent: u8,
    /// Calls of the new version before a decision.
    pub min_calls: u64,
    /// How much worse (as a failure-rate difference) the new version may be.
    pub margin: f64,
    /// Outcomes of the new version: calls, failures.
    pub new: (AtomicU64, AtomicU64),
    /// Outcomes of the current version during the trial.
    pub old: (AtomicU64, AtomicU64),
    decided: AtomicBool,
}

/// A canary's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The new version replaces the old one.
    Promote,
    /// The new version is dropped.
    RollBack,
}

impl Canary {
    /// A trial of `adapter` on `percent` of the traffic.
    pub fn new(adapter: Arc<Adapter>, percent: u8) -> Self {
        Self {
            adapter,
            percent,
            min_calls: 20,
            margin: 0.2,
            new: (AtomicU64::new(0), AtomicU64::new(0)),
            old: (AtomicU64::new(0), AtomicU64::new(0)),
            decided: AtomicBool::new(false),
        }
    }

    /// Counts one outcome; returns the verdict once, when it is reached.
    pub fn record(&self, canary: bool, failed: bool) -> Option<Verdict> {
        let (calls, failures) = if canary { &self.new } else { &self.old };
        calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            failures.fetch_add(1, Ordering::Relaxed);
        }
        let verdict = self.verdict()?;
        // Only one caller acts on it.
        (!self.decided.swap(true, Ordering::AcqRel)).then_some(verdict)
    }

    /// The verdict the counts support now, if any.
    pub fn verdict(&self) -> Option<Verdict> {
        let new_calls = self.new.0.load(Ordering::Relaxed);
        if new_calls < self.min_calls {
            return None;
        }
        let rate = |(c, f): &(AtomicU64, AtomicU64)| {
            let calls = c.load(Ordering::Relaxed);
            if calls == 0 { 0.0 } else { f.load(Ordering::Relaxed) as f64 / calls as f64 }
        };
        Some(if rate(&self.new) > rate(&self.old) + self.margin { Verdict::RollBack } else { Verdict::Promote })
    }
}

impl ProviderEntry {
    /// The environment variable this provider's keys come from: the slot's
    /// `key_env`, else what its adapter declares, else `<ID>_API_KEY`;
    /// `None` when its adapter needs no key.
    pub fn key_env(&self) -> Option<String> {
        let info = self.adapter.as_ref().map(|a| &a.info);
        if info.is_some_and(|i| matches!(i.auth, AuthPlacement::None)) {
            return None;
        }
        Some(key_env(&self.config, info.and_then(|i| i.key_env.as_deref())))
    }

    /// The adapter, when the provider is enabled and loaded.
    pub fn live(&self) -> Option<&Arc<Adapter>> {
        if self.enabled { self.adapter.as_ref() } else { None }
    }

    /// The adapter version for one request: the canary for its share of the
    /// traffic, else the current one; `true` when it is the canary.
    pub fn select_adapter(&self) -> Option<(Arc<Adapter>, bool)> {
        let current = self.live()?;
        match &self.canary {
            Some(c) if fastrand::u8(0..100) < c.percent => Some((c.adapter.clone(), true)),
            _ => Some((current.clone(), false)),
        }
    }

    /// The keys a request for upstream `model` is counted against: the
    /// model's own when it declares limits, else the provider's.
    pub fn keys_for(&self, model: &str) -> &Arc<KeyRing> {
        self.model_keys.iter().find(|(m, _)| m == model).map_or(&self.keys, |(_, keys)| keys)
    }

    /// Every key ring with the scope its state is stored under: the
    /// provider id, then `<id>/<model>` for each model with its own limits.
    pub fn key_rings(&self) -> impl Iterator<Item = (String, &Arc<KeyRing>)> {
        std::iter::once((self.id.to_string(), &self.keys))
            .chain(self.model_keys.iter().map(|(model, keys)| (format!("{}/{model}", self.id), keys)))
    }

    /// Clears the cooldowns of every key in every ring (the admin reset;
    /// windows are kept, as in the reference).
    pub fn reset_keys(&self) {
        for (_, keys) in self.key_rings() {
            keys.reset();
        }
    }

    /// Takes key `index` out of every ring: the upstream rejected the key
    /// itself, whatever the model.
    pub fn disable_key(&self, index: usize, reason: &str) {
        for (_, keys) in self.key_rings() {
            keys.disable(index, reason);
        }
    }

    /// `None` when the provider could take a request of `tokens` for
    /// upstream `model` now (the model's breaker admits, a key of its ring
    /// has room), else how long until it can.
    pub fn wait_for_headroom(&self, model: &str, now: Instant, tokens: u32) -> Option<Duration> {
        let breaker = self
            .breakers
            .get(model)
            .filter(|b| !b.is_available(now))
            .map(|b| b.snapshot(now).opened_for_ms_remaining.map_or(Duration::ZERO, Duration::from_millis));
        let keys = self.keys_for(model).wait_for_headroom(now, tokens);
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
                    failed_slot(config, pc, note, None)
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
    let adapter = prepare_adapter(engine, config, pc).await?;
    Ok(assemble(config, pc, Arc::new(adapter), None, store))
}

/// Compiles (through the cache), checks and configures a provider's component.
pub async fn prepare_adapter(
    engine: &Arc<PluginEngine>,
    config: &Config,
    pc: &ProviderConfig,
) -> Result<Adapter, loader::LoadError> {
    let compiled = {
        let engine = engine.clone();
        let path = pc.component.clone();
        let cache_dir = config.cache_dir.clone();
        tokio::task::spawn_blocking(move || loader::load_file(&engine, &path, &cache_dir))
            .await
            .map_err(|e| loader::LoadError::Compile(format!("compile task failed: {e}")))??
    };
    Adapter::configure(engine.clone(), compiled, &pc.id, pc.settings.clone(), pc.sandbox).await
}

/// Builds a provider slot around a configured adapter. With a `previous`
/// slot of the same provider, its breaker and counters carry over, and so
/// do its keys (windows, cooldowns) unless the limits changed.
pub fn assemble(
    config: &Config,
    pc: &ProviderConfig,
    adapter: Arc<Adapter>,
    previous: Option<&ProviderEntry>,
    store: Option<&Store>,
) -> ProviderEntry {
    let info = &adapter.info;
    let needs_key = !matches!(info.auth, AuthPlacement::None);
    let key_env = key_env(pc, info.key_env.as_deref());
    let secrets = if needs_key { config.provider_keys(&pc.id, &key_env) } else { Vec::new() };
    crate::redact::set_secrets(&format!("provider:{}", pc.id), &secrets);
    // A keyless provider (a local server) is enabled only when the operator
    // says where it is: `base_url` in plugins.toml or `<ID>_BASE_URL`, or a
    // `base_url` setting for adapters configured by settings alone.
    let base_url_given = pc.base_url.is_some() || pc.settings.iter().any(|(k, _)| k == "base_url");
    let (enabled, note) = if !pc.enabled {
        (false, Some("disabled in plugins.toml".to_owned()))
    } else if needs_key && secrets.is_empty() && config.keys_file.path().is_some() {
        (false, Some(format!("no API key: set {key_env} or add it to the keys file")))
    } else if needs_key && secrets.is_empty() {
        (false, Some(format!("no API key: set {key_env}")))
    } else if !needs_key && !base_url_given {
        let var = format!("{}_BASE_URL", pc.id.to_ascii_uppercase().replace('-', "_"));
        (false, Some(format!("keyless provider: set {var} to enable it")))
    } else {
        (true, None)
    };
    let override_ = pc.limits.unwrap_or_default();
    let ring = Rings { secrets: &secrets, needs_key, store };
    let keys = ring.build(&pc.id, effective_limits(&info.limits, override_), previous.map(|p| (&p.id, &p.keys)));
    let model_keys = info
        .models
        .iter()
        .filter_map(|m| {
            let declared = m.limits.as_ref()?;
            let scope = format!("{}/{}", pc.id, m.id);
            let before =
                previous.and_then(|p| p.model_keys.iter().find(|(id, _)| *id == m.id)).map(|(_, keys)| (&scope, keys));
            Some((m.id.clone(), ring.build(&scope, effective_limits(declared, override_), before)))
        })
        .collect();
    let base_url = pc.base_url.clone().unwrap_or_else(|| info.default_base_url.trim_end_matches('/').to_owned());
    tracing::debug!(provider = %pc.id, hash = %adapter.hash, version = %info.adapter_version, "adapter loaded");
    ProviderEntry {
        id: adapter.id.clone(),
        adapter: Some(adapter.clone()),
        base_url,
        keys,
        model_keys,
        breakers: previous.map_or_else(|| Arc::new(ModelBreakers::new(config.routing.breaker)), |p| p.breakers.clone()),
        stats: previous.map_or_else(|| Arc::new(ProviderStats::default()), |p| p.stats.clone()),
        enabled,
        note,
        config: pc.clone(),
        canary: None,
    }
}

/// The key variable of a slot: plugins.toml's `key_env`, else what the
/// adapter declares, else `<ID>_API_KEY`.
fn key_env(pc: &ProviderConfig, declared: Option<&str>) -> String {
    pc.key_env
        .clone()
        .or_else(|| declared.map(str::to_owned))
        .unwrap_or_else(|| format!("{}_API_KEY", pc.id.to_ascii_uppercase().replace('-', "_")))
}

/// The slot `entry` rebuilt with the keys its configuration gives now
/// (the environment, then the keys file), or `None` when they are the keys
/// it has. Keys kept keep their windows and cooldowns; the adapter version,
/// canary, breaker and counters carry over.
pub fn rekeyed(config: &Config, entry: &ProviderEntry) -> Option<ProviderEntry> {
    let Some(adapter) = &entry.adapter else {
        // A slot that failed to load only needs its keys redacted.
        crate::redact::set_secrets(
            &format!("provider:{}", entry.id),
            config.provider_keys(&entry.id, &key_env(&entry.config, None)),
        );
        return None;
    };
    if matches!(adapter.info.auth, AuthPlacement::None) {
        return None;
    }
    let secrets = config.provider_keys(&entry.id, &key_env(&entry.config, adapter.info.key_env.as_deref()));
    if entry.keys.holds(&secrets) {
        return None;
    }
    let mut slot = assemble(config, &entry.config, adapter.clone(), Some(entry), None);
    slot.canary = entry.canary.clone();
    Some(slot)
}

/// Declared limits with the operator's override applied: an override
/// wins, and 0 there means unlimited.
fn effective_limits(declared: &RateLimits, o: LimitsOverride) -> Limits {
    let pick = |over: Option<u32>, declared: Option<u32>| match over {
        Some(0) => None,
        Some(v) => Some(v),
        None => declared,
    };
    Limits {
        requests_per_minute: pick(o.rpm, declared.requests_per_minute),
        requests_per_day: pick(o.rpd, declared.requests_per_day),
        tokens_per_minute: pick(o.tpm, declared.tokens_per_minute),
        tokens_per_day: pick(o.tpd, declared.tokens_per_day),
    }
}

/// What every key ring of one slot is built from.
struct Rings<'a> {
    secrets: &'a [String],
    needs_key: bool,
    store: Option<&'a Store>,
}

impl Rings<'_> {
    /// The ring stored under `scope`: the previous one when its limits and
    /// keys are unchanged, else a new one that takes over the previous
    /// one's windows and cooldowns (or, at start-up, the stored ones).
    fn build(&self, scope: &str, limits: Limits, previous: Option<(&impl AsRef<str>, &Arc<KeyRing>)>) -> Arc<KeyRing> {
        let same_keys = |p: &KeyRing| if self.needs_key { p.holds(self.secrets) } else { p.len() == 1 };
        if let Some((_, p)) = previous
            && *p.limits() == limits
            && same_keys(p)
            && !p.is_empty()
        {
            return p.clone();
        }
        let mut keys =
            if self.needs_key { KeyRing::new(self.secrets.to_vec(), limits) } else { KeyRing::keyless(limits) };
        if let Some((previous_scope, p)) = previous {
            let saved = p.export_state(previous_scope.as_ref());
            keys.restore_state(scope, &|id| saved.iter().find(|(s, _)| s == id).map(|(_, w)| w.clone()));
        } else if let Some(store) = self.store {
            keys.restore_state(scope, &|id| store.get(Table::KeyWindows, id).ok().flatten());
        }
        Arc::new(keys)
    }
}

/// A slot whose component could not be loaded: kept (disabled) so status
/// shows why.
pub fn failed_slot(
    config: &Config,
    pc: &ProviderConfig,
    note: String,
    previous: Option<&ProviderEntry>,
) -> ProviderEntry {
    // The slot is down, but its keys are configured and an error about it
    // may still quote them.
    crate::redact::set_secrets(&format!("provider:{}", pc.id), config.provider_keys(&pc.id, &key_env(pc, None)));
    ProviderEntry {
        id: Arc::from(pc.id.as_str()),
        adapter: None,
        base_url: pc.base_url.clone().unwrap_or_default(),
        keys: Arc::new(KeyRing::new(Vec::new(), Limits::default())),
        model_keys: Vec::new(),
        breakers: previous.map_or_else(|| Arc::new(ModelBreakers::new(config.routing.breaker)), |p| p.breakers.clone()),
        stats: previous.map_or_else(|| Arc::new(ProviderStats::default()), |p| p.stats.clone()),
        enabled: false,
        // Shown in status; a load error may quote settings or guest output.
        note: Some(crate::redact::redact(&note).into_owned()),
        config: pc.clone(),
        canary: None,
    }
}
