//! Hot swap: adapters are replaced, added and removed while the gateway
//! serves, and `[routes.*]` edits apply (the route table is swapped whole
//! when it changed; a file that does not parse changes nothing).
//!
//! A change to `plugins.toml` or to a component file (their directories
//! are watched with `notify`, other files there are ignored; debounced),
//! `POST /v1/plugins/reload` or an upload through
//! `POST /v1/plugins/{id}` runs [`Reloader::reload`]: for each
//! provider whose component or settings changed, the new version is loaded
//! in the background — compile (cached by content hash), check against the
//! WIT world and the sandbox policy, `configure`, conformance self-check —
//! and only then a new live configuration ([`crate::live::Live`]: the
//! provider table, and the routes when they changed) is swapped in as one
//! value. Requests and streams in flight keep the live configuration (and
//! adapter version) they started with; the old version is dropped when its
//! last user ends. A version that fails any step never goes live: the
//! previous one keeps serving, and the step and error are recorded for
//! `/v1/plugins`, the status and the log.
//!
//! A full reload also applies the live settings of the file: the routing
//! policy (`[routing]` retries, waits, canary judging, `[routing.retries]`,
//! `[breaker]`, which every provider's breakers take at once), the
//! per-client policy (`[limits]`, `[cors]`) and `[cache] enabled`. Each
//! start-up setting that changed is named in a warning (`[server] port
//! changed: restart needed`) and in the reload's answer; it applies at the
//! next start.
//!
//! With `canary = N` on a provider, a new version first serves N % of the
//! provider's traffic; its failure rate against the current version's then
//! promotes it or rolls it back ([`crate::providers::registry::Canary`]).
//!
//! An accepted upload pins its provider: the slot runs the uploaded version
//! instead of its component file, across restarts too (the pins are kept in
//! `<data_dir>/upload-pins.json`), until the operator switches back with
//! `POST /v1/plugins/{id}/reload?source=file`. While pinned, a component
//! file that differs from the upload is not loaded, and a reload says so
//! (`pinned_by_upload`, with how to switch) instead of `unchanged`.
//! `/v1/plugins` shows where each running version came from (`file` or
//! `upload`). A provider removed from `plugins.toml` loses its pin and its
//! uploads.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, ProviderConfig, RoutingConfig};
use crate::live::{Live, LiveCell};
use crate::ops::events::{Event, EventBus};
use crate::ops::stats::{iso8601, unix_ms};
use crate::ops::store::Store;
use crate::providers::registry::{self, Canary, Verdict};
use crate::providers::{ProviderEntry, Registry};
use crate::routing::cache::ResponseCache;
use crate::routing::router::RouteTable;
use freellm_runtime::loader::short_hash;
use freellm_runtime::{LoadError, PluginEngine};

/// How long a burst of file events is gathered before one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The step of loading a new version that refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The component file could not be read.
    Read,
    /// It did not compile.
    Compile,
    /// It imports something the sandbox does not grant.
    Sandbox,
    /// It does not implement the WIT contract.
    Contract,
    /// Its `configure` refused the settings.
    Configure,
    /// It failed the conformance self-check.
    SelfCheck,
    /// It failed on canary and was rolled back.
    Canary,
}

impl Step {
    /// The name in `/v1/plugins`, events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Compile => "compile",
            Self::Sandbox => "sandbox",
            Self::Contract => "contract",
            Self::Configure => "configure",
            Self::SelfCheck => "self-check",
            Self::Canary => "canary",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step at which a new version was refused.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// Which step refused it.
    pub step: Step,
    /// What went wrong.
    pub error: String,
    /// The refused file's SHA-256, when it could be read.
    pub hash: Option<String>,
    /// When (ISO-8601).
    pub at: String,
}

/// What a reload did to one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing changed.
    Unchanged,
    /// A new version replaced the live one.
    Swapped,
    /// A provider without a live version got one.
    Added,
    /// The provider left `plugins.toml`.
    Removed,
    /// A new version went on canary.
    Canary,
    /// The new version was refused; the previous one keeps serving.
    Rejected,
    /// An upload pins the slot and the component file differs from it: the
    /// file was not loaded (`POST /v1/plugins/{id}/reload?source=file`
    /// switches to it).
    PinnedByUpload,
}

impl Action {
    /// The name in `/v1/plugins` answers and `adapter` events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Swapped => "swapped",
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Canary => "canary",
            Self::Rejected => "rejected",
            Self::PinnedByUpload => "pinned_by_upload",
        }
    }
}

/// What a reload did to one provider.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Provider id.
    pub id: String,
    /// What happened to it.
    pub action: Action,
    /// The live version's hash after the reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Why the new version was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// What the operator should know (a pin, and how to lift it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Outcome {
    fn new(id: impl Into<String>, action: Action, hash: Option<String>, rejection: Option<Rejection>) -> Self {
        Self { id: id.into(), action, hash, rejection, note: None }
    }
}

/// Where a running adapter version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The provider's `component` file in `plugins.toml`.
    File,
    /// An upload through `POST /v1/plugins/{id}`.
    Upload,
}

impl Source {
    /// The name in `/v1/plugins`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Upload => "upload",
        }
    }
}

/// An upload that pins its provider's slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Pin {
    /// The stored component (`<data_dir>/uploads/<id>-<12 hex>.wasm`).
    #[serde(skip)]
    pub path: PathBuf,
    /// Its file name in the uploads directory (what the pins file records).
    pub file: String,
    /// Its SHA-256.
    pub hash: String,
}

/// The file that records the pins, in the data directory (beside the
/// uploads directory, which holds components only).
const PINS_FILE: &str = "upload-pins.json";

/// The pins recorded in `<data_dir>/upload-pins.json` whose upload is
/// still there. A missing or unreadable record pins nothing (logged): the
/// component files serve.
pub fn read_pins(data_dir: &Path) -> HashMap<String, Pin> {
    let dir = data_dir.join("uploads");
    let text = match std::fs::read_to_string(data_dir.join(PINS_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the upload pins; the component files serve");
            return HashMap::new();
        }
    };
    let pins: HashMap<String, Pin> = match serde_json::from_str(&text) {
        Ok(pins) => pins,
        Err(e) => {
            tracing::error!(error = %e, "the upload pins do not parse; the component files serve");
            return HashMap::new();
        }
    };
    pins.into_iter()
        .filter_map(|(id, mut pin)| {
            // Only `<id>-<12 hex>.wasm` in the uploads directory: the record
            // never points elsewhere.
            if !is_upload_of(std::ffi::OsStr::new(&pin.file), &id) || !dir.join(&pin.file).is_file() {
                tracing::warn!(provider = %id, file = %pin.file, "a pinned upload is missing; the component file serves");
                return None;
            }
            pin.path = dir.join(&pin.file);
            Some((id, pin))
        })
        .collect()
}

/// `config` with each pinned provider's component replaced by its upload
/// (the configuration a restart loads).
pub fn apply_pins(config: &Config, pins: &HashMap<String, Pin>) -> Config {
    let mut boot = config.clone();
    for pc in &mut boot.providers {
        if let Some(pin) = pins.get(&pc.id) {
            tracing::info!(provider = %pc.id, upload = %pin.file, "an upload pins this provider; POST /v1/plugins/{}/reload?source=file switches to the component file", pc.id);
            pc.component = pin.path.clone();
        }
    }
    boot
}

/// What one reload did: each provider's outcome, and the settings of the
/// file it applied or found changed but not applied (by file key).
#[derive(Debug, Serialize)]
pub struct Reloaded {
    /// Each provider's outcome.
    pub outcomes: Vec<Outcome>,
    /// Live settings that changed and now apply.
    pub applied: Vec<&'static str>,
    /// Start-up settings that changed: they apply at the next start.
    pub restart_needed: Vec<&'static str>,
}

/// What the reloader reads and swaps: the handles it needs, not the gateway.
pub struct ReloadHandles {
    /// The running configuration (its file is re-read at each reload).
    pub config: Arc<Config>,
    /// The engine new adapter versions are compiled with.
    pub engine: Arc<PluginEngine>,
    /// The live configuration a reload swaps.
    pub live: Arc<LiveCell>,
    /// Where adapter changes are published.
    pub events: Arc<EventBus>,
    /// Where a new provider's saved key windows are read from.
    pub store: Option<Arc<Store>>,
    /// The response cache: a removed provider's answers are purged from it.
    pub cache: Arc<ResponseCache>,
}

impl ReloadHandles {
    /// The provider table now live.
    fn registry(&self) -> Arc<Registry> {
        self.live.load().registry.clone()
    }

    /// Swaps in `registry` (and `routes` when given) as one live configuration.
    fn swap(&self, registry: &Arc<Registry>, routes: Option<Arc<RouteTable>>) {
        self.live.rcu(|live| Live {
            registry: registry.clone(),
            routes: routes.clone().unwrap_or_else(|| live.routes.clone()),
            ..Live::clone(live)
        });
    }

    /// The routing policy now live.
    fn routing(&self) -> Arc<RoutingConfig> {
        self.live.load().routing.clone()
    }

    /// Applies the live settings of `fresh` that differ from the running
    /// ones; returns them by file key.
    fn apply_settings(&self, fresh: &Config) -> Vec<&'static str> {
        let live = self.live.load_full();
        let routing_changes = live.routing.changes(&fresh.routing);
        let client_changes = live.clients.config.changes(&fresh.clients);
        let mut applied: Vec<&'static str> = routing_changes.iter().chain(&client_changes).copied().collect();
        if self.cache.is_enabled() != fresh.cache.enabled {
            self.cache.set_enabled(fresh.cache.enabled);
            applied.push("[cache] enabled");
        }
        if routing_changes.is_empty() && client_changes.is_empty() {
            return applied;
        }
        let routing = if routing_changes.is_empty() { live.routing.clone() } else { Arc::new(fresh.routing.clone()) };
        let clients = if client_changes.is_empty() {
            live.clients.clone()
        } else {
            Arc::new(live.clients.updated(&fresh.clients))
        };
        self.live.rcu(|now| Live { routing: routing.clone(), clients: clients.clone(), ..Live::clone(now) });
        applied
    }
}

/// Reloads, uploads, canary verdicts; serialized by one lock.
pub struct Reloader {
    handles: ReloadHandles,
    lock: tokio::sync::Mutex<()>,
    rejections: Mutex<HashMap<String, Rejection>>,
    events: Mutex<Vec<String>>,
    /// Uploads that pin their provider: used instead of the configured path.
    overrides: Mutex<HashMap<String, Pin>>,
    /// Where each loaded version came from, by provider and hash.
    origins: Mutex<HashMap<(String, String), Source>>,
    /// The component files of pinned providers: still watched, so a rebuilt
    /// file is reported (`pinned_by_upload`), not silently ignored.
    pinned_components: Mutex<Vec<PathBuf>>,
    /// Canary shares set through the API (`plugins.toml`'s `canary` wins).
    canaries: Mutex<HashMap<String, u8>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// File names in the watched directories whose changes mean a reload:
    /// `plugins.toml` and the components. Other files there (a log, an
    /// editor's swap file) are ignored.
    watched_names: Arc<RwLock<HashSet<OsString>>>,
    /// Reloads run so far, whatever started them.
    reloads: AtomicU64,
}

impl Reloader {
    /// A manager that reloads through `handles`.
    pub fn new(handles: ReloadHandles) -> Self {
        Self {
            handles,
            lock: tokio::sync::Mutex::new(()),
            rejections: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            overrides: Mutex::new(HashMap::new()),
            origins: Mutex::new(HashMap::new()),
            pinned_components: Mutex::new(Vec::new()),
            canaries: Mutex::new(HashMap::new()),
            watcher: Mutex::new(None),
            watched_names: Arc::new(RwLock::new(HashSet::new())),
            reloads: AtomicU64::new(0),
        }
    }
}

impl Reloader {
    /// The same reloader with the pins a restart found (the registry was
    /// loaded from them, see [`apply_pins`]).
    pub fn with_pins(self, pins: HashMap<String, Pin>) -> Self {
        {
            let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
            for (id, pin) in &pins {
                origins.insert((id.clone(), pin.hash.clone()), Source::Upload);
            }
        }
        *self.overrides.lock().unwrap_or_else(|e| e.into_inner()) = pins;
        self
    }

    /// Where provider `id`'s version `hash` came from.
    pub fn source_of(&self, id: &str, hash: &str) -> Source {
        let origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        origins.get(&(id.to_owned(), hash.to_owned())).copied().unwrap_or(Source::File)
    }

    /// The upload pinning provider `id`, if any.
    pub fn pin(&self, id: &str) -> Option<Pin> {
        self.overrides.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Records the pins in the data directory (write, then rename), so a
    /// restart runs the same versions.
    fn save_pins(&self) {
        let pins = self.overrides.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let dir = self.handles.config.data_dir.clone();
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let text = serde_json::to_vec_pretty(&pins).map_err(std::io::Error::other)?;
            let tmp = dir.join(format!("{PINS_FILE}.tmp"));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, dir.join(PINS_FILE))
        })();
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot record the upload pins; after a restart the component files serve");
        }
    }
}

fn step_of(e: &LoadError) -> Step {
    match e {
        LoadError::Read { .. } => Step::Read,
        LoadError::Compile(_) => Step::Compile,
        LoadError::ForbiddenImport(_) => Step::Sandbox,
        LoadError::Contract(_) => Step::Contract,
        LoadError::Configure(_) => Step::Configure,
    }
}

fn file_hash(path: &Path) -> std::io::Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

impl Reloader {
    /// The last refusal of each provider still not superseded by a success.
    pub fn rejections(&self) -> HashMap<String, Rejection> {
        self.rejections.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads run so far (file changes, the admin API, uploads).
    pub fn reload_count(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Recent swap events, newest last (at most 100).
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn note(&self, event: String) {
        tracing::info!(event = %event, "adapters");
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == 100 {
            events.remove(0);
        }
        events.push(format!("{} {event}", iso8601(unix_ms(SystemTime::now()))));
    }

    fn reject(&self, id: &str, step: Step, error: String, hash: Option<String>) -> Rejection {
        tracing::error!(provider = id, step = %step, error = %error, "new adapter version rejected; the previous one keeps serving");
        let r = Rejection { step, error, hash, at: iso8601(unix_ms(SystemTime::now())) };
        self.rejections.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_owned(), r.clone());
        self.note(format!("{id}: rejected at {step}"));
        r
    }

    fn accept(&self, id: &str) {
        self.rejections.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Re-reads `plugins.toml` and every component; loads, checks and swaps
    /// in what changed (only provider `only` when given).
    pub async fn reload(&self, only: Option<&str>) -> Result<Vec<Outcome>, String> {
        self.reload_report(only).await.map(|r| r.outcomes)
    }

    /// [`Reloader::reload`], with the settings it applied and those that
    /// need a restart.
    pub async fn reload_report(&self, only: Option<&str>) -> Result<Reloaded, String> {
        let gw = &self.handles;
        let _serial = self.lock.lock().await;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let fresh = gw.config.reread().map_err(|e| {
            let message = e.to_string();
            tracing::error!(error = %message, "plugins.toml rejected; the running providers stay as they are");
            self.note(format!("plugins.toml rejected: {message}"));
            message
        })?;
        let restart_needed = gw.config.startup_changes(&fresh);
        for setting in &restart_needed {
            tracing::warn!(setting, "plugins.toml: {setting} changed: restart needed");
        }
        if !restart_needed.is_empty() {
            self.note(format!("changed, restart needed: {}", restart_needed.join(", ")));
        }
        // Settings, like routes, apply on a reload of the whole file.
        let applied = if only.is_none() { gw.apply_settings(&fresh) } else { Vec::new() };
        if !applied.is_empty() {
            tracing::info!(settings = %applied.join(", "), "plugins.toml: settings applied");
            self.note(format!("settings applied: {}", applied.join(", ")));
        }
        let (mut configs, routes, meta_order) = (fresh.providers, fresh.routes, fresh.meta_order);
        // Pinned providers: the component file each would load if not pinned.
        let mut pinned_files: HashMap<String, (PathBuf, String)> = HashMap::new();
        {
            let overrides = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
            let canaries = self.canaries.lock().unwrap_or_else(|e| e.into_inner());
            for pc in &mut configs {
                if let Some(pin) = overrides.get(&pc.id) {
                    pinned_files.insert(pc.id.clone(), (pc.component.clone(), pin.hash.clone()));
                    pc.component = pin.path.clone();
                }
                if pc.canary.is_none() {
                    pc.canary = canaries.get(&pc.id).copied();
                }
            }
        }
        *self.pinned_components.lock().unwrap_or_else(|e| e.into_inner()) =
            pinned_files.values().map(|(file, _)| file.clone()).collect();
        let current = gw.registry();
        let mut next: Vec<Arc<ProviderEntry>> = Vec::with_capacity(configs.len());
        let mut outcomes = Vec::new();
        for pc in &configs {
            let old = current.get(&pc.id);
            if only.is_some_and(|o| o != pc.id) {
                if let Some(old) = old {
                    next.push(old.clone());
                }
                continue;
            }
            let (entry, mut outcome) = self.reload_one(pc, old).await;
            if outcome.action == Action::Unchanged
                && let Some((file, pinned)) = pinned_files.get(&pc.id)
            {
                self.flag_pinned_file(&mut outcome, file, pinned).await;
            }
            next.push(entry);
            outcomes.push(outcome);
        }
        if only.is_none() {
            let mut unpinned = false;
            for old in current.providers.iter().filter(|p| !configs.iter().any(|c| c.id == *p.id)) {
                self.note(format!("{}: removed", old.id));
                outcomes.push(Outcome::new(old.id.to_string(), Action::Removed, None, None));
                // A removed provider's uploads go with it: re-adding it starts from its file.
                if self.overrides.lock().unwrap_or_else(|e| e.into_inner()).remove(&*old.id).is_some() {
                    unpinned = true;
                }
                remove_stale_uploads(&gw.config.data_dir.join("uploads"), &old.id, &[]);
                let purged = gw.cache.purge_provider(&old.id);
                tracing::info!(provider = %old.id, purged, "provider removed; its cached answers purged");
            }
            if unpinned {
                self.save_pins();
            }
        } else if let Some(id) = only
            && !configs.iter().any(|c| c.id == id)
        {
            return Err(format!("no provider \"{id}\" in plugins.toml"));
        }
        let registry = Arc::new(Registry { providers: next });
        // `[breaker]` as live now, for the breakers in use and those to come.
        let breaker = gw.routing().breaker;
        for provider in &registry.providers {
            provider.breakers.retune(breaker);
        }
        self.origins.lock().unwrap_or_else(|e| e.into_inner()).retain(|(id, hash), _| {
            registry.get(id).is_some_and(|p| {
                p.adapter.as_ref().is_some_and(|a| a.hash == *hash)
                    || p.canary.as_ref().is_some_and(|c| c.adapter.hash == *hash)
            })
        });
        let routes_changed = only.is_none() && {
            let table = gw.live.load().routes.clone();
            table.configured() != routes.as_slice() || *table.meta_order() != meta_order
        };
        gw.swap(&registry, routes_changed.then(|| Arc::new(RouteTable::new(&routes).with_meta_order(&meta_order))));
        if routes_changed {
            self.note(format!("routes: {} configured route(s) and the meta-model order applied", routes.len()));
            tracing::info!(routes = routes.len(), "routes reloaded");
        }
        for o in outcomes.iter().filter(|o| o.action != Action::Unchanged) {
            let live = registry.get(&o.id).and_then(|p| p.adapter.as_ref());
            gw.events.publish(Event::Adapter {
                id: o.id.clone(),
                version: live.map(|a| a.info.adapter_version.clone()).unwrap_or_default(),
                hash: o.rejection.as_ref().and_then(|r| r.hash.clone()).or_else(|| o.hash.clone()).unwrap_or_default(),
                state: o.action.as_str().to_owned(),
                error: o.rejection.as_ref().map(|r| format!("{}: {}", r.step, r.error)),
            });
        }
        Ok(Reloaded { outcomes, applied, restart_needed })
    }

    /// Loads one provider's new version, if anything changed.
    async fn reload_one(&self, pc: &ProviderConfig, old: Option<&Arc<ProviderEntry>>) -> (Arc<ProviderEntry>, Outcome) {
        let gw = &self.handles;
        let id = pc.id.clone();
        let keep = |old: Option<&Arc<ProviderEntry>>, rejection: Rejection| {
            let entry = match old {
                Some(o) => o.clone(),
                None => Arc::new(registry::failed_slot(
                    &gw.config,
                    pc,
                    format!("{}: {}", rejection.step, rejection.error),
                    None,
                )),
            };
            let hash = entry.adapter.as_ref().map(|a| a.hash.clone());
            (entry, Outcome::new(id.clone(), Action::Rejected, hash, Some(rejection)))
        };
        let path = pc.component.clone();
        let hash = match tokio::task::spawn_blocking(move || file_hash(&path)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                return keep(old, self.reject(&id, Step::Read, format!("{}: {e}", pc.component.display()), None));
            }
            Err(e) => return keep(old, self.reject(&id, Step::Read, e.to_string(), None)),
        };
        // Unchanged: the live version, or the canary on trial, is this file.
        let serving = |o: &ProviderEntry| {
            o.adapter.as_ref().is_some_and(|a| a.hash == hash)
                || o.canary.as_ref().is_some_and(|c| c.adapter.hash == hash)
        };
        if let Some(o) = old
            && serving(o)
            && (o.config == *pc || o.canary.is_some() && o.config.component == pc.component)
        {
            return (o.clone(), Outcome::new(id, Action::Unchanged, Some(hash), None));
        }
        // The same rejected file again: nothing new to try.
        let known_bad = self
            .rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .filter(|r| r.hash.as_deref() == Some(hash.as_str()) && old.is_some_and(|o| o.config == *pc))
            .cloned();
        if let Some(rejection) = known_bad {
            return keep(old, rejection);
        }
        let adapter = match registry::prepare_adapter(&gw.engine, &gw.config, pc).await {
            Ok(a) => Arc::new(a),
            Err(e) => return keep(old, self.reject(&id, step_of(&e), e.to_string(), Some(hash))),
        };
        let engine = gw.engine.clone();
        let candidate = adapter.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The check drives its own small runtime: a plain thread, not a worker.
        std::thread::spawn(move || {
            let _ = tx.send(freellm_runtime::check::self_check(engine, &candidate));
        });
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return keep(old, self.reject(&id, Step::SelfCheck, e, Some(hash))),
            Err(_) => return keep(old, self.reject(&id, Step::SelfCheck, "the self-check crashed".into(), Some(hash))),
        }
        self.accept(&id);
        let source = if self.pin(&id).is_some_and(|p| p.path == pc.component) { Source::Upload } else { Source::File };
        self.origins.lock().unwrap_or_else(|e| e.into_inner()).insert((id.clone(), hash.clone()), source);
        let version = adapter.info.adapter_version.clone();
        let old_live = old.filter(|o| o.live().is_some());
        match (pc.canary, old_live.and_then(|o| o.adapter.clone().map(|a| (o, a)))) {
            (Some(percent), Some((o, current))) => {
                let mut entry = registry::assemble(&gw.config, pc, current, Some(o), None);
                let mut canary = Canary::new(adapter, percent);
                let routing = gw.routing();
                canary.min_calls = routing.canary_min_calls;
                canary.margin = routing.canary_margin;
                entry.canary = Some(Arc::new(canary));
                self.note(format!("{id}: version {version} ({}) on canary at {percent}%", short_hash(&hash)));
                let live = entry.adapter.as_ref().map(|a| a.hash.clone());
                (Arc::new(entry), Outcome::new(id, Action::Canary, live, None))
            }
            _ => {
                let entry = registry::assemble(&gw.config, pc, adapter, old.map(|o| o.as_ref()), gw.store.as_deref());
                let action = if old.is_some_and(|o| o.adapter.is_some()) { Action::Swapped } else { Action::Added };
                self.note(format!("{id}: {} to version {version} ({})", action.as_str(), short_hash(&hash)));
                (Arc::new(entry), Outcome::new(id, action, Some(hash), None))
            }
        }
    }

    /// Acts on a canary verdict: the new version replaces the old one, or is
    /// dropped.
    pub async fn conclude_canary(&self, id: &str, canary: &Arc<Canary>, verdict: Verdict) {
        let gw = &self.handles;
        let _serial = self.lock.lock().await;
        let current = gw.registry();
        let Some(entry) = current.get(id) else { return };
        if !entry.canary.as_ref().is_some_and(|c| Arc::ptr_eq(c, canary)) {
            return; // superseded meanwhile
        }
        let replacement = match verdict {
            Verdict::Promote => {
                registry::assemble(&gw.config, &entry.config, canary.adapter.clone(), Some(entry), None)
            }
            Verdict::RollBack => {
                let Some(adapter) = entry.adapter.clone() else { return };
                registry::assemble(&gw.config, &entry.config, adapter, Some(entry), None)
            }
        };
        let (new, old) = (&canary.new, &canary.old);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let summary =
            format!("new version {}/{} failed, current {}/{}", load(&new.1), load(&new.0), load(&old.1), load(&old.0));
        match verdict {
            Verdict::Promote => {
                self.note(format!("{id}: canary {} promoted ({summary})", short_hash(&canary.adapter.hash)))
            }
            Verdict::RollBack => {
                self.unpin_rolled_back(id, entry.adapter.as_ref().map(|a| a.hash.as_str()));
                let error = format!("canary rolled back: {summary}");
                self.reject(id, Step::Canary, error, Some(canary.adapter.hash.clone()));
                self.note(format!("{id}: canary {} rolled back ({summary})", short_hash(&canary.adapter.hash)));
            }
        }
        gw.events.publish(Event::Adapter {
            id: id.to_owned(),
            version: canary.adapter.info.adapter_version.clone(),
            hash: canary.adapter.hash.clone(),
            state: match verdict {
                Verdict::Promote => "promoted",
                Verdict::RollBack => "rolled_back",
            }
            .to_owned(),
            error: (verdict == Verdict::RollBack).then(|| summary.clone()),
        });
        let replacement = Arc::new(replacement);
        let providers = current
            .providers
            .iter()
            .map(|p| if Arc::ptr_eq(p, entry) { replacement.clone() } else { p.clone() })
            .collect();
        gw.swap(&Arc::new(Registry { providers }), None);
    }

    /// After a rolled-back canary that was an upload, the pin follows the
    /// version that keeps serving: its own upload when it came from one
    /// (kept on disk during the trial), else none (the component file), so
    /// a restart never brings the refused version back.
    fn unpin_rolled_back(&self, id: &str, live_hash: Option<&str>) {
        let uploads = self.handles.config.data_dir.join("uploads");
        let back = live_hash.filter(|h| self.source_of(id, h) == Source::Upload).and_then(|hash| {
            let file = format!("{id}-{}.wasm", short_hash(hash));
            let path = uploads.join(&file);
            path.is_file().then(|| Pin { path, file, hash: hash.to_owned() })
        });
        let mut overrides = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        if overrides.get(id).is_none_or(|pin| Some(pin.hash.as_str()) == live_hash) {
            return; // not pinned by the refused version
        }
        match back {
            Some(pin) => overrides.insert(id.to_owned(), pin),
            None => overrides.remove(id),
        };
        drop(overrides);
        self.save_pins();
    }

    /// Sets (1..=99) or clears (0) the canary share new versions of `id`
    /// get, for providers whose `plugins.toml` entry sets none.
    pub fn set_canary(&self, id: &str, percent: u8) {
        let mut canaries = self.canaries.lock().unwrap_or_else(|e| e.into_inner());
        if percent == 0 {
            canaries.remove(id);
        } else {
            canaries.insert(id.to_owned(), percent.min(99));
        }
        drop(canaries);
        self.note(format!("{id}: canary share for new versions set to {percent}%"));
    }

    /// Stores an uploaded component for provider `id` and loads it like a
    /// changed file (checked the same way). A refused upload changes
    /// nothing: its file is deleted and `canary` (the share it would have
    /// been tried on) is not kept. Of the uploads of `id`, only the live
    /// version and the one on canary stay on disk.
    pub async fn upload(&self, id: &str, bytes: &[u8], canary: Option<u8>) -> Result<Vec<Outcome>, String> {
        let gw = &self.handles;
        let (current, _) = gw.config.reload_live_sections().map_err(|e| e.to_string())?;
        if !current.iter().any(|p| p.id == id) {
            return Err(format!("no provider \"{id}\" in plugins.toml"));
        }
        let hash = hex::encode(Sha256::digest(bytes));
        let dir = gw.config.data_dir.join("uploads");
        let path = dir.join(format!("{id}-{}.wasm", short_hash(&hash)));
        let bytes = bytes.to_vec();
        let target = path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = target.with_extension("tmp");
            let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &target));
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot store the upload: {e}"))?;
        let pin = Pin {
            path: path.clone(),
            file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            hash: hash.clone(),
        };
        let previous = self.overrides.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_owned(), pin);
        // The share applies to this upload's trial, and stays only if it passes.
        let previous_canary = canary.map(|percent| self.swap_canary(id, percent));
        let result = self.reload(Some(id)).await;
        let accepted = result.as_ref().is_ok_and(|outcomes| !outcomes.iter().any(|o| o.action == Action::Rejected));
        if accepted {
            if let Some(percent) = canary {
                self.note(format!("{id}: canary share for new versions set to {percent}%"));
            }
            let on_canary = result.as_ref().is_ok_and(|outcomes| outcomes.iter().any(|o| o.action == Action::Canary));
            let keep: Vec<PathBuf> =
                std::iter::once(path).chain(previous.map(|p| p.path).filter(|_| on_canary)).collect();
            remove_stale_uploads(&gw.config.data_dir.join("uploads"), id, &keep);
            self.save_pins();
        } else {
            // A refused upload must not become the slot's component.
            let mut overrides = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
            match &previous {
                Some(p) => overrides.insert(id.to_owned(), p.clone()),
                None => overrides.remove(id),
            };
            drop(overrides);
            if let Some(previous_canary) = previous_canary {
                self.swap_canary(id, previous_canary.unwrap_or(0));
            }
            if previous.as_ref().map(|p| &p.path) != Some(&path)
                && let Err(e) = std::fs::remove_file(&path)
            {
                tracing::warn!(provider = id, error = %e, "cannot delete a refused upload");
            }
        }
        result
    }

    /// `POST /v1/plugins/{id}/reload?source=file`: lifts provider `id`'s
    /// upload pin and loads its component file, checked like any new
    /// version. A refused file changes nothing: the upload keeps serving and
    /// stays pinned. Once the file serves, the provider's uploads are deleted.
    pub async fn reload_from_file(&self, id: &str) -> Result<Vec<Outcome>, String> {
        let previous = self.overrides.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let result = self.reload(Some(id)).await;
        let accepted = result.as_ref().is_ok_and(|outcomes| !outcomes.iter().any(|o| o.action == Action::Rejected));
        match previous {
            Some(pin) if !accepted => {
                self.overrides.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_owned(), pin);
            }
            Some(_) => {
                self.note(format!("{id}: upload pin lifted; the component file serves"));
                self.save_pins();
                remove_stale_uploads(&self.handles.config.data_dir.join("uploads"), id, &[]);
            }
            None => {}
        }
        result
    }

    /// Turns an `unchanged` outcome of a pinned provider into
    /// `pinned_by_upload` when its component file differs from the upload.
    async fn flag_pinned_file(&self, outcome: &mut Outcome, file: &Path, pinned: &str) {
        let path = file.to_path_buf();
        let file_hash = match tokio::task::spawn_blocking(move || file_hash(&path)).await {
            Ok(Ok(h)) => h,
            // An unreadable file is not what serves either; say so the same way.
            _ => "unreadable".to_owned(),
        };
        if file_hash == pinned {
            return;
        }
        let id = &outcome.id;
        let note = format!(
            "provider \"{id}\" runs an uploaded version ({}); its component file {} ({}) is not loaded while the \
             upload pins the slot: POST /v1/plugins/{id}/reload?source=file switches to the file",
            short_hash(pinned),
            file.display(),
            short_hash(&file_hash)
        );
        tracing::warn!(provider = %id, "{note}");
        self.note(format!(
            "{id}: pinned by upload {}; component file {} not loaded",
            short_hash(pinned),
            short_hash(&file_hash)
        ));
        outcome.action = Action::PinnedByUpload;
        outcome.note = Some(note);
    }

    /// Sets the canary share of `id` quietly (0 clears it); returns the one before.
    fn swap_canary(&self, id: &str, percent: u8) -> Option<u8> {
        let mut canaries = self.canaries.lock().unwrap_or_else(|e| e.into_inner());
        if percent == 0 { canaries.remove(id) } else { canaries.insert(id.to_owned(), percent.min(99)) }
    }

    /// Watches `plugins.toml` and the component files (their directories,
    /// so atomic replaces are seen) and reloads on change.
    pub fn watch(self: &Arc<Self>) {
        use notify::{RecursiveMode, Watcher};
        let gw = &self.handles;
        let Some(config_path) = gw.config.path.clone() else { return };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        self.note_watched_names(&config_path, gw.config.providers.iter().map(|p| p.component.as_path()));
        let names = self.watched_names.clone();
        let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| concerns(&e, &names.read().unwrap_or_else(|e| e.into_inner()))) {
                let _ = tx.send(());
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch plugins.toml and the components; reload with POST /v1/plugins/reload");
                return;
            }
        };
        let mut dirs: Vec<PathBuf> = vec![parent(&config_path)];
        dirs.extend(gw.config.providers.iter().map(|p| parent(&p.component)));
        dirs.sort();
        dirs.dedup();
        for dir in &dirs {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
            }
        }
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let Some(plugins) = weak.upgrade() else { break };
                if let Err(e) = plugins.reload(None).await {
                    tracing::error!(error = %e, "adapter reload failed");
                }
                plugins.watch_new_dirs();
            }
        });
    }

    /// Adds watches for component directories that appeared in a reload.
    fn watch_new_dirs(&self) {
        use notify::{RecursiveMode, Watcher};
        let gw = &self.handles;
        let mut guard = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let Some(watcher) = guard.as_mut() else { return };
        let registry = gw.registry();
        let pinned = self.pinned_components.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let components: Vec<&Path> = registry
            .providers
            .iter()
            .map(|p| p.config.component.as_path())
            .chain(pinned.iter().map(PathBuf::as_path))
            .collect();
        for component in &components {
            let _ = watcher.watch(&parent(component), RecursiveMode::NonRecursive);
        }
        if let Some(config_path) = &gw.config.path {
            self.note_watched_names(config_path, components.into_iter());
        }
    }

    /// Records the file names whose changes start a reload.
    fn note_watched_names<'a>(&self, config_path: &'a Path, components: impl Iterator<Item = &'a Path>) {
        let names: HashSet<OsString> =
            std::iter::once(config_path).chain(components).filter_map(|p| p.file_name()).map(OsString::from).collect();
        *self.watched_names.write().unwrap_or_else(|e| e.into_inner()) = names;
    }
}

impl Reloader {
    /// Re-reads the provider keys file and rebuilds the slot of each
    /// provider whose keys changed ([`registry::rekeyed`]: keys kept keep
    /// their windows and cooldowns). A file that cannot be read or does not
    /// parse changes nothing; the error is logged. Returns the providers
    /// whose keys changed.
    pub async fn reload_keys(&self) -> Result<Vec<String>, String> {
        let gw = &self.handles;
        let _serial = self.lock.lock().await;
        let file = gw.config.keys_file.clone();
        let read = tokio::task::spawn_blocking(move || file.reload()).await.map_err(|e| e.to_string())?;
        let fresh = read.map_err(|e| {
            // The message names a position or an entry, never a key.
            let message = crate::redact::redact(&e.to_string()).into_owned();
            tracing::error!(error = %message, "keys file rejected; the providers keep their keys");
            self.note(format!("keys file rejected: {message}"));
            message
        })?;
        let current = gw.registry();
        let mut changed = Vec::new();
        let providers = current
            .providers
            .iter()
            .map(|entry| match registry::rekeyed(&gw.config, entry) {
                Some(slot) => {
                    changed.push(entry.id.to_string());
                    Arc::new(slot)
                }
                None => entry.clone(),
            })
            .collect();
        if !changed.is_empty() {
            gw.swap(&Arc::new(Registry { providers }), None);
        }
        let names = fresh.names().collect::<Vec<_>>().join(", ");
        tracing::info!(entries = %names, rekeyed = %changed.join(", "), "keys file read");
        self.note(format!("keys file read ({names}); new keys for: {}", changed.join(", ")));
        Ok(changed)
    }

    /// Watches the provider keys file (its directory, so atomic replaces and
    /// a file created later are seen) and re-reads it on change. The
    /// watcher lives as long as the returned handle.
    pub fn watch_keys_file(self: &Arc<Self>) -> Option<notify::RecommendedWatcher> {
        use notify::{RecursiveMode, Watcher};
        let path = self.handles.config.keys_file.path()?.to_path_buf();
        let names: HashSet<OsString> = path.file_name().map(OsString::from).into_iter().collect();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| concerns(&e, &names)) {
                let _ = tx.send(());
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the keys file; its changes apply at the next start");
                return None;
            }
        };
        let dir = parent(&path);
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot watch the keys file's directory");
            return None;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let Some(reloader) = weak.upgrade() else { break };
                // A refused file was logged; the old keys stay.
                let _ = reloader.reload_keys().await;
            }
        });
        Some(watcher)
    }
}

/// Whether a file event may change what is loaded: a change (not a read) to
/// a watched file name, or to a `..`-prefixed entry (Kubernetes swaps a
/// mounted ConfigMap by renaming its `..data` link, and the files in it are
/// symbolic links through that). An event without paths (the watcher lost
/// track, e.g. its queue overflowed) counts, to be safe.
fn concerns(event: &notify::Event, names: &HashSet<OsString>) -> bool {
    let watched =
        |p: &PathBuf| p.file_name().is_some_and(|n| names.contains(n) || n.as_encoded_bytes().starts_with(b".."));
    !matches!(event.kind, notify::EventKind::Access(_)) && (event.paths.is_empty() || event.paths.iter().any(watched))
}

fn parent(path: &Path) -> PathBuf {
    path.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Deletes the stored uploads of provider `id` other than `keep`.
fn remove_stale_uploads(dir: &Path, id: &str, keep: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if is_upload_of(&entry.file_name(), id)
            && !keep.contains(&path)
            && let Err(e) = std::fs::remove_file(&path)
        {
            tracing::warn!(provider = id, error = %e, "cannot delete a superseded upload");
        }
    }
}

/// Whether `name` is an upload of provider `id`: `<id>-<12 hex>.wasm` (so
/// provider `a` never claims the uploads of provider `a-b`).
fn is_upload_of(name: &std::ffi::OsStr, id: &str) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(id)?.strip_prefix('-')?.strip_suffix(".wasm"))
        .is_some_and(|hash| hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, DataChange, EventKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        paths.iter().fold(notify::Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    }

    #[test]
    fn uploads_are_matched_to_their_provider_exactly() {
        let name = |n: &str| OsString::from(n);
        assert!(is_upload_of(&name("swap-0123456789ab.wasm"), "swap"));
        assert!(!is_upload_of(&name("swap-2-0123456789ab.wasm"), "swap"), "another provider's upload");
        assert!(!is_upload_of(&name("swap-0123456789ab.tmp"), "swap"));
        assert!(!is_upload_of(&name("swap-xyz.wasm"), "swap"));
        assert!(!is_upload_of(&name("swap.wasm"), "swap"));
    }

    #[test]
    fn a_refused_or_superseded_upload_leaves_only_the_kept_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, b"x").unwrap();
            p
        };
        let (live, canary, stale, other) = (
            file("swap-aaaaaaaaaaaa.wasm"),
            file("swap-bbbbbbbbbbbb.wasm"),
            file("swap-cccccccccccc.wasm"),
            file("groq-cccccccccccc.wasm"),
        );
        remove_stale_uploads(dir.path(), "swap", &[live.clone(), canary.clone()]);
        assert!(live.exists() && canary.exists() && other.exists());
        assert!(!stale.exists());
    }

    #[test]
    fn pins_are_read_back_only_for_uploads_still_in_the_uploads_directory() {
        let data = tempfile::tempdir().unwrap();
        let uploads = data.path().join("uploads");
        std::fs::create_dir_all(&uploads).unwrap();
        assert!(read_pins(data.path()).is_empty(), "no record: nothing pinned");
        std::fs::write(uploads.join("swap-aaaaaaaaaaaa.wasm"), b"x").unwrap();
        let record = serde_json::json!({
            "swap": {"file": "swap-aaaaaaaaaaaa.wasm", "hash": "aa"},
            "gone": {"file": "gone-bbbbbbbbbbbb.wasm", "hash": "bb"},
            "sneaky": {"file": "../../plugins.toml", "hash": "cc"},
            "other": {"file": "swap-aaaaaaaaaaaa.wasm", "hash": "aa"},
        });
        std::fs::write(data.path().join(PINS_FILE), record.to_string()).unwrap();
        let pins = read_pins(data.path());
        assert_eq!(pins.keys().collect::<Vec<_>>(), ["swap"], "missing, outside or another provider's: dropped");
        assert_eq!(pins["swap"].path, uploads.join("swap-aaaaaaaaaaaa.wasm"));
        std::fs::write(data.path().join(PINS_FILE), b"{not json").unwrap();
        assert!(read_pins(data.path()).is_empty(), "an unreadable record pins nothing");
    }

    #[test]
    fn a_pinned_provider_boots_from_its_upload_and_the_others_from_their_files() {
        let config = Config::from_toml_str(
            "[providers.a]\ncomponent = \"a.wasm\"\n[providers.b]\ncomponent = \"b.wasm\"\n",
            Path::new("/cfg"),
            HashMap::new(),
        )
        .unwrap();
        let pin = Pin { path: PathBuf::from("/data/uploads/a-aaaaaaaaaaaa.wasm"), file: "a".into(), hash: "h".into() };
        let boot = apply_pins(&config, &HashMap::from([("a".to_owned(), pin.clone())]));
        assert_eq!(boot.providers[0].component, pin.path);
        assert_eq!(boot.providers[1].component, config.providers[1].component);
        assert_eq!(
            config.providers[0].component,
            PathBuf::from("/cfg/a.wasm"),
            "the running configuration keeps the file"
        );
    }

    #[test]
    fn only_changes_to_watched_files_start_a_reload() {
        let names: HashSet<OsString> = ["plugins.toml", "groq.wasm"].into_iter().map(OsString::from).collect();
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        assert!(concerns(&event(write, &["/etc/freellm/plugins.toml"]), &names));
        assert!(concerns(&event(write, &["./groq.wasm"]), &names));
        // An editor's atomic replace: the rename onto the watched name.
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(concerns(&event(rename, &["/c/.plugins.toml.swp", "/c/plugins.toml"]), &names));
        // A Kubernetes ConfigMap update.
        assert!(concerns(&event(EventKind::Create(CreateKind::Any), &["/c/..data"]), &names));
        // The watcher lost events: reload to be safe.
        assert!(concerns(&event(EventKind::Any, &[]), &names));

        assert!(!concerns(&event(write, &["/c/gateway.log"]), &names), "a log next to the config");
        assert!(!concerns(&event(write, &["/c/plugins.toml.bak"]), &names));
        assert!(!concerns(&event(EventKind::Access(AccessKind::Any), &["/c/plugins.toml"]), &names), "a read");
    }
}
