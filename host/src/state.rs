//! The state every handler shares: configuration, the provider registry
//! snapshot, the route table, the plugin engine, the upstream client and
//! the request log.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::plugins::{PluginEngine, Registry};
use crate::router::{RouteTable, StrategyCell};
use crate::stats::RequestLog;
use crate::upstream::Upstream;

/// Shared gateway state (cheap to clone: one `Arc`).
pub type SharedGateway = Arc<Gateway>;

/// The gateway's shared state.
pub struct Gateway {
    /// Validated configuration.
    pub config: Config,
    /// The current provider snapshot; a request loads it once.
    pub registry: ArcSwap<Registry>,
    /// Routes and meta-models.
    pub routes: RouteTable,
    /// The global routing strategy (switchable at runtime).
    pub strategy: StrategyCell,
    /// The plugin engine (kept for reloads).
    pub engine: Arc<PluginEngine>,
    /// The pooled upstream client.
    pub upstream: Upstream,
    /// Recent chat requests and gateway-wide counters.
    pub log: RequestLog,
}

impl Gateway {
    /// Builds the engine, loads every configured provider and the client.
    pub async fn start(config: Config) -> anyhow::Result<SharedGateway> {
        let engine = PluginEngine::new()?;
        let registry = Registry::load(&engine, &config).await;
        let upstream = Upstream::new(config.upstream)?;
        let routes = RouteTable::new(&config.routes);
        let strategy = StrategyCell::new(config.routing.strategy);
        Ok(Arc::new(Self {
            config,
            registry: ArcSwap::from_pointee(registry),
            routes,
            strategy,
            engine,
            upstream,
            log: RequestLog::default(),
        }))
    }
}
