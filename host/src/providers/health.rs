//! A provider's health, per model: one circuit breaker per (provider,
//! model). One upstream often serves many models, and one model failing
//! (pulled, overloaded, its deployment down) says little about the others,
//! so an open breaker only keeps requests away from the model it judged.
//!
//! Breakers are made on first use. A request only reaches a model through a
//! plan, and a plan only holds models of the adapter's catalog, so the table
//! never grows past the catalog. The provider's own state, for status and
//! `/metrics`, is a summary: the worst state of its models.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use freellm_limits::breaker::{Breaker, BreakerConfig, BreakerSnapshot, BreakerState};

/// The breakers of one provider slot, one per model. Shared across reloads
/// of the slot, so a new adapter version inherits what the old one learned.
#[derive(Debug)]
pub struct ModelBreakers {
    /// What a breaker made now starts with ([`ModelBreakers::retune`]).
    config: Mutex<BreakerConfig>,
    by_model: Mutex<Vec<(String, Arc<Breaker>)>>,
}

impl ModelBreakers {
    /// No model judged yet.
    pub fn new(config: BreakerConfig) -> Self {
        Self { config: Mutex::new(config), by_model: Mutex::new(Vec::new()) }
    }

    /// Applies `config` (a reload of `[breaker]`) to every model's breaker,
    /// keeping its state and counts, and to breakers made from now on.
    pub fn retune(&self, config: BreakerConfig) {
        {
            let mut current = self.config.lock().unwrap_or_else(PoisonError::into_inner);
            if *current == config {
                return;
            }
            *current = config;
        }
        for (_, b) in self.models() {
            b.retune(config);
        }
    }

    /// The breaker of `model` (made closed on first use).
    pub fn for_model(&self, model: &str) -> Arc<Breaker> {
        let mut by_model = self.by_model.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, b)) = by_model.iter().find(|(m, _)| m == model) {
            return b.clone();
        }
        let config = *self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let breaker = Arc::new(Breaker::new(config));
        by_model.push((model.to_owned(), breaker.clone()));
        breaker
    }

    /// The breaker of `model`, if it was ever used.
    pub fn get(&self, model: &str) -> Option<Arc<Breaker>> {
        let by_model = self.by_model.lock().unwrap_or_else(PoisonError::into_inner);
        by_model.iter().find(|(m, _)| m == model).map(|(_, b)| b.clone())
    }

    /// Every model's breaker used so far, sorted by model.
    pub fn models(&self) -> Vec<(String, Arc<Breaker>)> {
        let mut all = self.by_model.lock().unwrap_or_else(PoisonError::into_inner).clone();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Whether `model`'s breaker would admit a request now.
    pub fn is_available(&self, model: &str, now: Instant) -> bool {
        self.get(model).is_none_or(|b| b.is_available(now))
    }

    /// Closes every model's breaker (the admin reset).
    pub fn reset(&self) {
        for (_, b) in self.models() {
            b.reset();
        }
    }

    /// The provider's summary: the snapshot of its worst model (open, then
    /// half-open, then closed; among open ones the longest left open), with
    /// the trips of all models added up. Closed when no model was judged.
    pub fn summary(&self, now: Instant) -> BreakerSnapshot {
        let snapshots: Vec<BreakerSnapshot> = self.models().iter().map(|(_, b)| b.snapshot(now)).collect();
        summarize(&snapshots)
    }
}

/// The worst of several snapshots (see [`ModelBreakers::summary`]).
pub fn summarize(snapshots: &[BreakerSnapshot]) -> BreakerSnapshot {
    let rank = |s: &BreakerSnapshot| {
        let state = match s.state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        (state, s.opened_for_ms_remaining.unwrap_or(0), s.consecutive_failures)
    };
    let trips = snapshots.iter().map(|s| s.trips).sum();
    let worst = snapshots.iter().max_by_key(|s| rank(s)).cloned();
    let mut summary = worst.unwrap_or(BreakerSnapshot {
        state: BreakerState::Closed,
        consecutive_failures: 0,
        half_open_successes: 0,
        opened_for_ms_remaining: None,
        probe_in_flight: false,
        trips: 0,
    });
    summary.trips = trips;
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use freellm_limits::breaker::Outcome;
    use std::time::Duration;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 1,
            success_threshold: 1,
            open_timeout: Duration::from_secs(5),
            max_open_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_failing_model_opens_only_its_own_breaker() {
        let breakers = ModelBreakers::new(config());
        let now = Instant::now();
        let permit = breakers.for_model("a").try_acquire(now).expect("closed");
        breakers.for_model("a").record(permit, Outcome::Failure, now);
        assert!(!breakers.is_available("a", now));
        assert!(breakers.is_available("b", now), "another model is not judged by a's failure");
        assert!(breakers.for_model("b").try_acquire(now).is_ok());
        let summary = breakers.summary(now);
        assert_eq!(summary.state, BreakerState::Open, "the summary shows the worst model");
        assert_eq!(summary.trips, 1);
        breakers.reset();
        assert!(breakers.is_available("a", now), "the admin reset closes every model");
    }

    #[test]
    fn a_retune_reaches_the_breakers_in_use_and_those_made_later() {
        let breakers = ModelBreakers::new(BreakerConfig { failure_threshold: 3, ..config() });
        let used = breakers.for_model("a");
        breakers.retune(config());
        assert_eq!((used.config().failure_threshold, breakers.for_model("b").config().failure_threshold), (1, 1));
    }

    #[test]
    fn the_summary_of_no_model_is_closed_and_picks_the_worst_state() {
        assert_eq!(summarize(&[]).state, BreakerState::Closed);
        let snap = |state, left: Option<u64>, trips| BreakerSnapshot {
            state,
            consecutive_failures: 0,
            half_open_successes: 0,
            opened_for_ms_remaining: left,
            probe_in_flight: false,
            trips,
        };
        let s = summarize(&[
            snap(BreakerState::Closed, None, 0),
            snap(BreakerState::Open, Some(100), 1),
            snap(BreakerState::HalfOpen, None, 2),
            snap(BreakerState::Open, Some(900), 3),
        ]);
        assert_eq!((s.state, s.opened_for_ms_remaining, s.trips), (BreakerState::Open, Some(900), 6));
    }
}
