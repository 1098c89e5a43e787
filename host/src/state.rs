//! The state every handler shares: configuration, the provider registry
//! snapshot, routes, credentials and virtual keys, limiters, the response
//! cache, the plugin engine, the upstream client, the request log and the
//! persistent store.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::{self, Credentials};
use crate::cache::ResponseCache;
use crate::config::Config;
use crate::cors::AllowedOrigins;
use crate::identifier::{IdentifierLimit, IdentifierLimiter};
use crate::plugins::{PluginEngine, Registry};
use crate::router::{RouteTable, StrategyCell};
use crate::stats::RequestLog;
use crate::store::Store;
use crate::tokens::TokenSecret;
use crate::upstream::Upstream;
use crate::virtual_keys::VirtualKeys;

/// Shared gateway state (cheap to clone: one `Arc`).
pub type SharedGateway = Arc<Gateway>;

/// The gateway's shared state.
pub struct Gateway {
    /// Validated configuration.
    pub config: Config,
    /// The current provider snapshot; a request loads it once.
    pub registry: ArcSwap<Registry>,
    /// Routes and meta-models (swapped whole when `[routes.*]` change).
    pub routes: ArcSwap<RouteTable>,
    /// The global routing strategy (switchable at runtime).
    pub strategy: StrategyCell,
    /// Master and admin keys, browser-token secret.
    pub credentials: Credentials,
    /// Virtual keys and their usage.
    pub virtual_keys: Arc<VirtualKeys>,
    /// The response cache.
    pub cache: ResponseCache,
    /// Per-identifier limit.
    pub identifier_limiter: Option<IdentifierLimiter>,
    /// Per-IP limit (`RATE_LIMIT_RPM`).
    pub ip_limiter: Option<IdentifierLimiter>,
    /// CORS allowlist.
    pub cors: AllowedOrigins,
    /// The plugin engine (kept for reloads).
    pub engine: Arc<PluginEngine>,
    /// The pooled upstream client.
    pub upstream: Upstream,
    /// Recent chat requests and gateway-wide counters.
    pub log: RequestLog,
    /// Where counters survive restarts.
    pub store: Option<Arc<Store>>,
    /// The live event feed (`GET /v1/events`).
    pub events: crate::events::EventBus,
    /// Request-path metrics (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Hot reloads, uploads and canaries of adapters.
    pub plugins: crate::reload::PluginManager,
    /// Event feeds held per principal (`max_event_feeds_per_principal`).
    pub event_feeds: crate::events::FeedSlots,
    /// Graceful shutdown: tells open streams when the drain deadline passed.
    pub drain: crate::server::Drain,
    /// Keeps the virtual-keys file watcher alive.
    _watcher: Option<notify::RecommendedWatcher>,
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
        let identifier_limiter = match &sec.identifier_limit {
            Some(text) => Some(IdentifierLimiter::new(
                IdentifierLimit::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?,
                sec.identifier_max_buckets,
            )),
            None => None,
        };
        let ip_limiter = match sec.rate_limit_rpm {
            Some(rpm) => Some(IdentifierLimiter::new(
                IdentifierLimit::per_minute(rpm).map_err(|e| anyhow::anyhow!("RATE_LIMIT_RPM: {e}"))?,
                sec.identifier_max_buckets,
            )),
            None => None,
        };
        let cors = AllowedOrigins::new(sec.allowed_origins.as_deref(), credentials.protected);

        let store = Arc::new(Store::open(&config.data_dir).map_err(|e| anyhow::anyhow!("{e}"))?);
        crate::persist::restore_virtual_keys(&store, &virtual_keys).map_err(|e| anyhow::anyhow!("{e}"))?;

        let engine = PluginEngine::new()?;
        let registry = Registry::load(&engine, &config, Some(&store)).await;
        crate::persist::restore_provider_usage(&store, &registry).map_err(|e| anyhow::anyhow!("{e}"))?;
        let routes = RouteTable::new(&config.routes);
        let strategy = StrategyCell::new(config.routing.strategy);
        let cache = ResponseCache::new(config.cache);
        let watcher = virtual_keys.watch();
        let event_feeds = crate::events::FeedSlots::new(config.max_event_feeds_per_principal);
        let gw = Arc::new(Self {
            config,
            registry: ArcSwap::from_pointee(registry),
            routes: ArcSwap::from_pointee(routes),
            strategy,
            credentials,
            virtual_keys,
            cache,
            identifier_limiter,
            ip_limiter,
            cors,
            engine,
            upstream,
            log: RequestLog::default(),
            events: Default::default(),
            metrics: Default::default(),
            store: Some(store.clone()),
            plugins: crate::reload::PluginManager::default(),
            event_feeds,
            drain: crate::server::Drain::default(),
            _watcher: watcher,
        });
        gw.plugins.watch(&gw);
        crate::persist::spawn_snapshots(&gw, store);
        Ok(gw)
    }

    /// Commits the counters one last time (graceful shutdown).
    pub fn persist_now(&self) {
        if let Some(store) = &self.store {
            match crate::persist::snapshot(self, store) {
                Ok(n) => tracing::info!(entries = n, "counters persisted"),
                Err(e) => tracing::error!(error = %e, "cannot persist counters at shutdown"),
            }
        }
    }
}
