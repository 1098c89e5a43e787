//! The state every handler shares: configuration, the provider registry
//! snapshot, the plugin engine and the upstream client.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::plugins::{PluginEngine, Registry};
use crate::upstream::Upstream;

/// Shared gateway state (cheap to clone: one `Arc`).
pub type SharedGateway = Arc<Gateway>;

/// The gateway's shared state.
pub struct Gateway {
    /// Validated configuration.
    pub config: Config,
    /// The current provider snapshot; a request loads it once.
    pub registry: ArcSwap<Registry>,
    /// The plugin engine (kept for reloads).
    pub engine: Arc<PluginEngine>,
    /// The pooled upstream client.
    pub upstream: Upstream,
}

impl Gateway {
    /// Builds the engine, loads every configured provider and the client.
    pub async fn start(config: Config) -> anyhow::Result<SharedGateway> {
        let engine = PluginEngine::new()?;
        let registry = Registry::load(&engine, &config).await;
        let upstream = Upstream::new(config.upstream)?;
        Ok(Arc::new(Self { config, registry: ArcSwap::from_pointee(registry), engine, upstream }))
    }
}
