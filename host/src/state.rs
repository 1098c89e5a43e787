//! The gateway's state, in three tiers:
//!
//! 1. **Start-up settings**: the validated [`Config`] and what is built from
//!    it once (credentials, feed limits). A reload never changes them; a
//!    changed start-up setting in `plugins.toml` is named in a warning
//!    ([`Config::startup_changes`]).
//! 2. **The live configuration** ([`Live`]): the provider table, the routes,
//!    the routing strategy, the routing policy (retries, breakers, canaries)
//!    and the per-client policy (CORS, limiters), one value swapped as a
//!    whole by a hot reload or `PATCH /v1/status/routing`. A request loads
//!    it once.
//! 3. **Process-lifetime services**: the adapter engine, the upstream client,
//!    the store, the event bus, the metrics, the request log, the response
//!    cache, virtual keys (which reload their own file), the reloader, the
//!    drain signal.
//!
//! Leaves (the reloader, persistence, metrics) take the handles they
//! need, never the whole gateway, so nothing below this module imports it.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::access::auth::{self, Credentials};
use crate::access::tokens::TokenSecret;
use crate::access::virtual_keys::VirtualKeys;
use crate::config::CacheBackend;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::fleet::cache::SharedCache;
use crate::fleet::health_sync::HealthSync;
use crate::http::clients::ClientPolicy;
use crate::http::shutdown::Drain;
use crate::live::{Live, LiveCell, Section, StrategySection, registry_section, routes_section};
use crate::ops::events::{EventBus, FeedSlots};
use crate::ops::metrics::Metrics;
use crate::ops::reload::{ReloadHandles, Reloader};
use crate::ops::stats::RequestLog;
use crate::ops::store::Store;
use crate::providers::Registry;
use crate::routing::cache::ResponseCache;
use crate::routing::router::RouteTable;
use crate::routing::upstream::Upstream;
use freellm_runtime::PluginEngine;

/// Shared gateway state (cheap to clone: one `Arc`).
pub type SharedGateway = Arc<Gateway>;

/// The gateway's shared state.
pub struct Gateway {
    // Tier 1: start-up settings and what is built from them once.
    /// Validated configuration, as read at start.
    pub config: Arc<Config>,
    /// Master and admin keys, browser-token secret.
    pub credentials: Credentials,
    /// Event feeds held per principal (`max_event_feeds_per_principal`).
    pub event_feeds: FeedSlots,
    /// This instance and the fleet's shared state (`[state]`): the local
    /// backend unless a Redis URL is set.
    pub fleet: Arc<Fleet>,
    /// `X-FreeLLM-Instance`, made once.
    pub instance_header: axum::http::HeaderValue,
    /// Routing health shared with the fleet (nothing happens locally).
    pub fleet_health: Arc<HealthSync>,

    // Tier 2: the live configuration, swapped as a whole.
    /// The live configuration; a request loads it once.
    pub live: Arc<LiveCell>,
    /// Its provider table (`gw.registry.load()`).
    pub registry: Section<Registry>,
    /// Its routes and meta-models.
    pub routes: Section<RouteTable>,
    /// Its global routing strategy (switchable at runtime).
    pub strategy: StrategySection,

    // Tier 3: process-lifetime services.
    /// The adapter engine (kept for reloads).
    pub engine: Arc<PluginEngine>,
    /// The pooled upstream client.
    pub upstream: Upstream,
    /// Where counters survive restarts.
    pub store: Option<Arc<Store>>,
    /// The live event feed (`GET /v1/events`).
    pub events: Arc<EventBus>,
    /// Request-path metrics (`GET /metrics`).
    pub metrics: Metrics,
    /// Recent chat requests and gateway-wide counters.
    pub log: RequestLog,
    /// The response cache.
    pub cache: Arc<ResponseCache>,
    /// Virtual keys and their usage (their file is watched and reloaded).
    pub virtual_keys: Arc<VirtualKeys>,
    /// Hot reloads, uploads and canaries of adapters.
    pub plugins: Arc<Reloader>,
    /// Graceful shutdown: tells open streams when the drain deadline passed.
    pub drain: Drain,
    /// Keeps the virtual-keys file watcher alive.
    _watcher: Option<notify::RecommendedWatcher>,
    /// Keeps the provider keys file watcher alive.
    _keys_watcher: Option<notify::RecommendedWatcher>,
}

impl Gateway {
    /// Builds everything: an invalid credential, keys file or store refuses
    /// to start with a message saying what to fix.
    pub async fn start(config: Config) -> anyhow::Result<SharedGateway> {
        let upstream = Upstream::new(config.upstream, config.upstream_ca_file.as_deref())?;
        Self::start_with(config, upstream).await
    }

    /// [`Gateway::start`] with a given upstream client (the in-process
    /// tests pass one that answers from memory).
    pub async fn start_with(config: Config, upstream: Upstream) -> anyhow::Result<SharedGateway> {
        let sec = &config.security;
        let token_secret = match &sec.token_secret {
            Some(s) => Some(TokenSecret::new(s.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => None,
        };
        let virtual_keys = Arc::new(match &sec.virtual_keys_path {
            Some(path) => VirtualKeys::load(path)?,
            None => VirtualKeys::none(),
        });
        let mut credentials =
            Credentials { master: sec.api_key.clone(), admin: sec.admin_key.clone(), token_secret, protected: false };
        // Decided here, once: what the keys file holds later never opens the gateway.
        credentials.protected = auth::is_protected(&credentials, &virtual_keys);
        if credentials.protected {
            tracing::info!("gateway protected: every endpoint but /healthz needs a key");
        } else {
            tracing::warn!(
                "no key source configured: the gateway is OPEN (anyone who can reach it is the operator); \
                 set FREELLM_ADMIN_KEY, FREELLM_API_KEY or FREELLM_VIRTUAL_KEYS_PATH to protect it"
            );
        }
        crate::redact::set_secrets(
            "credentials",
            [&sec.api_key, &sec.admin_key, &sec.token_secret].into_iter().flatten(),
        );
        let clients = ClientPolicy::new(&config.clients, credentials.protected);
        // A bad URL refuses to start; an unreachable Redis starts degraded.
        let fleet = Fleet::start(&config.state).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let instance_header = axum::http::HeaderValue::from_str(fleet.instance_id())
            .map_err(|_| anyhow::anyhow!("instance id {:?} is not a header value", fleet.instance_id()))?;
        let fleet_health = HealthSync::new(fleet.clone(), &config.state);

        let store = Arc::new(Store::open(&config.data_dir).map_err(|e| anyhow::anyhow!("{e}"))?);
        crate::ops::persist::restore_virtual_keys(&store, &virtual_keys).map_err(|e| anyhow::anyhow!("{e}"))?;

        // Read before the providers load, so they start with its keys; at
        // start a broken file is an error to fix, not a silent key loss.
        if let Some(path) = config.keys_file.path() {
            let file = config.keys_file.reload().map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(file = %path.display(), entries = file.names().count(), "provider keys file read");
        }
        let engine = PluginEngine::new(config.edge.max_streams)?;
        // An upload pins its provider across restarts, until the operator
        // reloads that provider from its file.
        let pins = crate::ops::reload::read_pins(&config.data_dir);
        let boot = crate::ops::reload::apply_pins(&config, &pins);
        let registry = Registry::load(&engine, &boot, Some(&store)).await;
        drop(boot);
        crate::ops::persist::restore_provider_usage(&store, &registry).map_err(|e| anyhow::anyhow!("{e}"))?;
        let live: Arc<LiveCell> = Arc::new(ArcSwap::from_pointee(Live {
            registry: Arc::new(registry),
            routes: Arc::new(RouteTable::new(&config.routes).with_meta_order(&config.meta_order)),
            strategy: config.strategy,
            routing: Arc::new(config.routing.clone()),
            clients: Arc::new(clients),
        }));
        fleet_health.spawn_subscriber(Arc::downgrade(&live));
        let cache = match config.state.cache_backend {
            CacheBackend::Local => ResponseCache::new(config.cache),
            CacheBackend::Redis => ResponseCache::new(config.cache).with_shared(SharedCache::new(fleet.clone())),
        };
        let cache = Arc::new(cache);
        let watcher = virtual_keys.watch();
        let event_feeds = FeedSlots::new(config.max_event_feeds_per_principal);
        let config = Arc::new(config);
        let events = Arc::new(EventBus::default());
        let plugins = Arc::new(
            Reloader::new(ReloadHandles {
                config: config.clone(),
                engine: engine.clone(),
                live: live.clone(),
                events: events.clone(),
                store: Some(store.clone()),
                cache: cache.clone(),
            })
            .with_pins(pins),
        );
        plugins.watch();
        let keys_watcher = plugins.watch_keys_file();
        crate::ops::persist::spawn_snapshots(&virtual_keys, &live, store.clone());
        Ok(Arc::new(Self {
            config,
            credentials,
            event_feeds,
            fleet,
            instance_header,
            fleet_health,
            registry: registry_section(&live),
            routes: routes_section(&live),
            strategy: StrategySection::new(&live),
            live,
            engine,
            upstream,
            store: Some(store),
            events,
            metrics: Metrics::default(),
            log: RequestLog::default(),
            cache,
            virtual_keys,
            plugins,
            drain: Drain::default(),
            _watcher: watcher,
            _keys_watcher: keys_watcher,
        }))
    }

    /// Commits the counters one last time (graceful shutdown).
    pub fn persist_now(&self) {
        if let Some(store) = &self.store {
            match crate::ops::persist::snapshot(&self.virtual_keys, &self.live.load().registry, store) {
                Ok(n) => tracing::info!(entries = n, "counters persisted"),
                Err(e) => tracing::error!(error = %e, "cannot persist counters at shutdown"),
            }
        }
    }
}
