//! The live configuration: everything that can change while the gateway
//! serves (the provider table, the routes, the routing strategy, the
//! routing policy, the per-client policy of the edge), held as one value
//! and swapped as a whole.
//!
//! A request loads one [`Live`] and keeps it to the end, so it never sees a
//! new provider table with old routes. A hot reload ([`crate::ops::reload`])
//! and `PATCH /v1/status/routing` build the next value and swap it in.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::RoutingConfig;
use crate::http::clients::ClientPolicy;
use crate::providers::Registry;
use crate::routing::router::RouteTable;
use crate::routing::strategy::Strategy;

/// One version of the live configuration.
#[derive(Clone)]
pub struct Live {
    /// The provider table.
    pub registry: Arc<Registry>,
    /// Routes and meta-models.
    pub routes: Arc<RouteTable>,
    /// The global routing strategy.
    pub strategy: Strategy,
    /// Retries per failure kind, backoff, waits, breaker and canary
    /// settings (`[routing]`, `[routing.retries]`, `[breaker]`).
    pub routing: Arc<RoutingConfig>,
    /// CORS origins and client limits (`[cors]`, `[limits]`).
    pub clients: Arc<ClientPolicy>,
}

/// The one swap point of the live configuration, shared by the gateway and
/// the reloader.
pub type LiveCell = ArcSwap<Live>;

/// One section of the live configuration, read and replaced on its own (a
/// replacement swaps the whole [`Live`] with that section changed).
pub struct Section<T> {
    live: Arc<LiveCell>,
    get: fn(&Live) -> &Arc<T>,
    with: fn(&Live, Arc<T>) -> Live,
}

impl<T> Section<T> {
    /// The section of the current live configuration.
    pub fn load(&self) -> Arc<T> {
        (self.get)(&self.live.load()).clone()
    }

    /// The same as [`Section::load`] (the name `ArcSwap` callers know).
    pub fn load_full(&self) -> Arc<T> {
        self.load()
    }

    /// Swaps in a live configuration whose section is `value`.
    pub fn store(&self, value: Arc<T>) {
        self.live.rcu(|live| (self.with)(live, value.clone()));
    }
}

/// The provider table of the live configuration.
pub fn registry_section(live: &Arc<LiveCell>) -> Section<Registry> {
    Section { live: live.clone(), get: |l| &l.registry, with: |l, registry| Live { registry, ..l.clone() } }
}

/// The routes of the live configuration.
pub fn routes_section(live: &Arc<LiveCell>) -> Section<RouteTable> {
    Section { live: live.clone(), get: |l| &l.routes, with: |l, routes| Live { routes, ..l.clone() } }
}

/// The routing strategy of the live configuration.
pub struct StrategySection(Arc<LiveCell>);

impl StrategySection {
    /// Reads the strategy of `live`.
    pub fn new(live: &Arc<LiveCell>) -> Self {
        Self(live.clone())
    }

    /// The current strategy.
    pub fn get(&self) -> Strategy {
        self.0.load().strategy
    }

    /// Switches strategy.
    pub fn set(&self, strategy: Strategy) {
        self.0.rcu(|live| Live { strategy, ..Live::clone(live) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell() -> Arc<LiveCell> {
        Arc::new(ArcSwap::from_pointee(Live {
            registry: Arc::new(Registry { providers: Vec::new() }),
            routes: Arc::new(RouteTable::new(&[])),
            strategy: Strategy::QuotaAware,
            routing: Arc::new(RoutingConfig::default()),
            clients: Arc::new(ClientPolicy::new(&Default::default(), false)),
        }))
    }

    #[test]
    fn replacing_one_section_swaps_the_whole_value_and_keeps_the_other_sections() {
        let live = cell();
        let (registry, routes, strategy) =
            (registry_section(&live), routes_section(&live), StrategySection::new(&live));
        let before = live.load_full();
        let new_registry = Arc::new(Registry { providers: Vec::new() });
        registry.store(new_registry.clone());
        strategy.set(Strategy::Random);
        let after = live.load_full();
        assert!(Arc::ptr_eq(&registry.load(), &new_registry) && Arc::ptr_eq(&after.registry, &new_registry));
        assert!(Arc::ptr_eq(&after.routes, &before.routes) && Arc::ptr_eq(&routes.load(), &before.routes));
        assert_eq!((after.strategy, strategy.get()), (Strategy::Random, Strategy::Random));
    }

    #[test]
    fn a_loaded_live_configuration_does_not_change_under_a_swap() {
        let live = cell();
        let held = live.load_full();
        StrategySection::new(&live).set(Strategy::RoundRobin);
        routes_section(&live).store(Arc::new(RouteTable::new(&[])));
        assert_eq!(held.strategy, Strategy::QuotaAware);
        assert!(!Arc::ptr_eq(&held.routes, &live.load().routes));
    }
}
