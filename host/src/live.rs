//! The live configuration: everything that can change while the gateway
//! serves (the provider table, the routes, the routing strategy), held as
//! one value and swapped as a whole.
//!
//! A request loads one [`Live`] and keeps it to the end, so it never sees a
//! new provider table with old routes. A hot reload ([`crate::ops::reload`])
//! and `PATCH /v1/status/routing` build the next value and swap it in.

use std::sync::Arc;

use arc_swap::ArcSwap;

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
