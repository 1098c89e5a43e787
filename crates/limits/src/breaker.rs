//! Per-provider circuit breaker, shared by all of the provider's keys.
//!
//! The breaker is `closed` while the provider answers. `failure_threshold`
//! consecutive failures trip it `open`: the provider is skipped for
//! `open_timeout`. After that the next [`Breaker::try_acquire`] (or
//! [`Breaker::is_available`]) moves it to `half_open`, where exactly one
//! probe request is let through at a time. `success_threshold` successful
//! probes close it again; a failed probe re-opens it for twice the previous
//! open period, up to `max_open_timeout`. Open periods start short, so a
//! provider that was down for a few seconds is back in use within seconds,
//! while one that stays down is probed less and less often; closing starts
//! the next trip at `open_timeout` again.
//!
//! A request takes a [`Permit`] before it goes upstream and hands it back
//! with [`Breaker::record`]. A permit dropped without being recorded (client
//! disconnect, panic, cancelled future) frees the half-open probe slot, so
//! an aborted probe can never wedge the breaker half-open.
//!
//! Outcomes recorded for a permit taken in an earlier phase (for instance a
//! request that was already in flight when the breaker tripped) are ignored:
//! they describe the provider as it was, not as it is.
//!
//! Time is always passed in (`now: Instant`), so tests drive it explicitly.
//! Every operation is one short critical section on a `std::sync::Mutex`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Environment variable: consecutive failures that trip the breaker.
pub const ENV_FAILURE_THRESHOLD: &str = "CB_FAILURE_THRESHOLD";
/// Environment variable: successful half-open probes that close the breaker.
pub const ENV_SUCCESS_THRESHOLD: &str = "CB_SUCCESS_THRESHOLD";
/// Environment variable: how long the breaker first stays open, in milliseconds.
pub const ENV_TIMEOUT_MS: &str = "CB_TIMEOUT_MS";
/// Environment variable: the longest open period, in milliseconds.
pub const ENV_MAX_TIMEOUT_MS: &str = "CB_MAX_TIMEOUT_MS";

/// `retry_in` reported while the half-open probe is in flight: the breaker
/// frees up as soon as the probe answers, so this is only a hint.
pub const PROBE_BUSY_RETRY: Duration = Duration::from_secs(1);

/// Breaker tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures (while closed) that open the breaker. Default 3.
    pub failure_threshold: u32,
    /// Successful half-open probes that close the breaker. Default 2.
    pub success_threshold: u32,
    /// How long the breaker first stays open before probing. Default 5 s.
    pub open_timeout: Duration,
    /// The longest open period: each failed probe doubles the period up to
    /// this. Default 60 s; never shorter than `open_timeout`.
    pub max_open_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            success_threshold: 2,
            open_timeout: Duration::from_secs(5),
            max_open_timeout: Duration::from_secs(60),
        }
    }
}

/// A breaker setting in the environment that is not a positive integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var} must be a positive integer, got {value:?}")]
pub struct BreakerConfigError {
    /// The offending variable, e.g. `CB_TIMEOUT_MS`.
    pub var: &'static str,
    /// Its value as found.
    pub value: String,
}

impl BreakerConfig {
    /// Reads `CB_FAILURE_THRESHOLD`, `CB_SUCCESS_THRESHOLD`,
    /// `CB_TIMEOUT_MS` and `CB_MAX_TIMEOUT_MS` through `lookup` (e.g. `|k| std::env::var(k).ok()`).
    ///
    /// Unset or blank variables keep their default; a value that is not a
    /// positive integer (including `0`) is an error naming the variable.
    ///
    /// # Errors
    ///
    /// [`BreakerConfigError`] for the first variable that is set to anything
    /// but a positive integer.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, BreakerConfigError> {
        let mut config = Self::default();
        if let Some(n) = positive(&lookup, ENV_FAILURE_THRESHOLD)? {
            config.failure_threshold = n;
        }
        if let Some(n) = positive(&lookup, ENV_SUCCESS_THRESHOLD)? {
            config.success_threshold = n;
        }
        if let Some(ms) = positive::<u64>(&lookup, ENV_TIMEOUT_MS)? {
            config.open_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = positive::<u64>(&lookup, ENV_MAX_TIMEOUT_MS)? {
            config.max_open_timeout = Duration::from_millis(ms);
        }
        Ok(config)
    }
}

/// Parses `var` as a positive integer; `None` when unset or blank.
fn positive<T>(lookup: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<Option<T>, BreakerConfigError>
where
    T: std::str::FromStr + Default + PartialEq,
{
    let Some(raw) = lookup(var) else { return Ok(None) };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    match trimmed.parse::<T>() {
        Ok(n) if n != T::default() => Ok(Some(n)),
        _ => Err(BreakerConfigError { var, value: raw }),
    }
}

/// The breaker's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow; consecutive failures are counted.
    Closed,
    /// Requests are refused until the open timeout has elapsed.
    Open,
    /// One probe request at a time decides whether to close or re-open.
    HalfOpen,
}

/// How an upstream attempt went, as far as provider health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered properly.
    Success,
    /// The provider failed (5xx, timeout, connection error, garbage).
    Failure,
    /// Says nothing about provider health (429, invalid request, client
    /// disconnect): frees the probe slot without changing any count.
    Neutral,
}

/// Refusal from [`Breaker::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open, retry in {retry_in:?}")]
pub struct Open {
    /// Time until the breaker lets a request through again: the rest of the
    /// open timeout, or [`PROBE_BUSY_RETRY`] while a half-open probe is in
    /// flight.
    pub retry_in: Duration,
}

/// Leave to send one request. Hand it back with [`Breaker::record`]; dropping
/// it unrecorded counts as [`Outcome::Neutral`].
#[must_use = "record the outcome with Breaker::record, or drop the permit to release it"]
pub struct Permit {
    /// Breaker phase the permit was issued in; stale permits are ignored.
    generation: u64,
    /// Set for the half-open probe: the breaker whose slot the permit holds.
    probe: Option<Arc<Shared>>,
}

impl Permit {
    /// True when this permit is the single half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("generation", &self.generation).field("probe", &self.is_probe()).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(shared) = self.probe.take() {
            shared.lock().release_probe(self.generation);
        }
    }
}

/// A point-in-time view of a breaker, for the admin/health endpoints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BreakerSnapshot {
    /// Current phase (`"closed"`, `"open"` or `"half_open"`).
    pub state: BreakerState,
    /// Consecutive failures counted while closed (kept while open, for
    /// diagnosis; zeroed when the breaker closes).
    pub consecutive_failures: u32,
    /// Successful probes so far in the current half-open phase.
    pub half_open_successes: u32,
    /// Milliseconds (rounded up) until an open breaker starts probing;
    /// `None` unless open.
    pub opened_for_ms_remaining: Option<u64>,
    /// True while the half-open probe is in flight.
    pub probe_in_flight: bool,
    /// How many times the breaker has opened since it was created.
    pub trips: u64,
}

/// A circuit breaker for one provider. Share it by reference or in an `Arc`;
/// every method takes `&self`.
#[derive(Debug)]
pub struct Breaker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No critical section can panic midway, so a poisoned lock still
        // guards consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    /// Open since `since` for `period`.
    Open {
        since: Instant,
        period: Duration,
    },
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped on every phase change and reset: permits from an earlier
    /// generation no longer count.
    generation: u64,
    consecutive_failures: u32,
    half_open_successes: u32,
    probe_in_flight: bool,
    trips: u64,
    /// The open period of the last trip; zero while closed (the next trip
    /// then opens for `open_timeout`).
    last_period: Duration,
}

impl Inner {
    /// Lazily moves an open breaker whose period has elapsed to half-open.
    fn refresh(&mut self, now: Instant) {
        if let Phase::Open { since, period } = self.phase
            && now.saturating_duration_since(since) >= period
        {
            self.enter(Phase::HalfOpen);
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
        self.half_open_successes = 0;
        self.probe_in_flight = false;
        if phase == Phase::Closed {
            self.consecutive_failures = 0;
            self.last_period = Duration::ZERO;
        }
    }

    /// Opens the breaker: for `open_timeout` after closed, for twice the
    /// previous period (capped) after a failed probe.
    fn trip(&mut self, now: Instant, config: &BreakerConfig) {
        self.trips = self.trips.saturating_add(1);
        let period = if self.last_period.is_zero() {
            config.open_timeout
        } else {
            self.last_period.saturating_mul(2).min(config.max_open_timeout)
        };
        self.last_period = period;
        self.enter(Phase::Open { since: now, period });
    }

    fn release_probe(&mut self, generation: u64) {
        if generation == self.generation && self.phase == Phase::HalfOpen {
            self.probe_in_flight = false;
        }
    }

    fn remaining_open(&self, now: Instant) -> Option<Duration> {
        match self.phase {
            Phase::Open { since, period } => Some(period.saturating_sub(now.saturating_duration_since(since))),
            _ => None,
        }
    }
}

impl Breaker {
    /// A closed breaker. Thresholds of zero are treated as one.
    pub fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            success_threshold: config.success_threshold.max(1),
            max_open_timeout: config.max_open_timeout.max(config.open_timeout),
            ..config
        };
        let inner = Inner {
            phase: Phase::Closed,
            generation: 0,
            consecutive_failures: 0,
            half_open_successes: 0,
            probe_in_flight: false,
            trips: 0,
            last_period: Duration::ZERO,
        };
        Self { shared: Arc::new(Shared { config, inner: Mutex::new(inner) }) }
    }

    /// The effective configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// Asks to send one request. Closed: always granted. Open: refused until
    /// the open timeout has elapsed, then the breaker turns half-open.
    /// Half-open: granted as the probe if no other probe is in flight.
    ///
    /// # Errors
    ///
    /// [`Open`] when the breaker is open or its half-open probe is taken.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, Open> {
        let mut inner = self.shared.lock();
        inner.refresh(now);
        match inner.phase {
            Phase::Closed => Ok(Permit { generation: inner.generation, probe: None }),
            Phase::Open { .. } => Err(Open { retry_in: inner.remaining_open(now).unwrap_or_default() }),
            Phase::HalfOpen if inner.probe_in_flight => Err(Open { retry_in: PROBE_BUSY_RETRY }),
            Phase::HalfOpen => {
                inner.probe_in_flight = true;
                Ok(Permit { generation: inner.generation, probe: Some(Arc::clone(&self.shared)) })
            }
        }
    }

    /// Reports how the request sent under `permit` went. The permit must come
    /// from this breaker; one from an earlier phase is ignored.
    pub fn record(&self, mut permit: Permit, outcome: Outcome, now: Instant) {
        let probe = permit.probe.take();
        if let Some(owner) = &probe
            && !Arc::ptr_eq(owner, &self.shared)
        {
            // Someone else's probe: free its slot there, count nothing here.
            owner.lock().release_probe(permit.generation);
            return;
        }
        let config = self.shared.config;
        let mut inner = self.shared.lock();
        if permit.generation != inner.generation {
            return;
        }
        match (inner.phase, outcome) {
            (_, Outcome::Neutral) => inner.release_probe(permit.generation),
            (Phase::Closed, Outcome::Success) => inner.consecutive_failures = 0,
            (Phase::Closed, Outcome::Failure) => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                if inner.consecutive_failures >= config.failure_threshold {
                    inner.trip(now, &config);
                }
            }
            (Phase::HalfOpen, Outcome::Success) => {
                inner.probe_in_flight = false;
                inner.half_open_successes = inner.half_open_successes.saturating_add(1);
                if inner.half_open_successes >= config.success_threshold {
                    inner.enter(Phase::Closed);
                }
            }
            (Phase::HalfOpen, Outcome::Failure) => inner.trip(now, &config),
            // No permit is issued while open, and every phase change bumps the
            // generation, so a current-generation permit never lands here.
            (Phase::Open { .. }, _) => {}
        }
    }

    /// True when [`Breaker::try_acquire`] would grant a permit now. Its only
    /// side effect is the lazy open → half-open transition.
    pub fn is_available(&self, now: Instant) -> bool {
        let mut inner = self.shared.lock();
        inner.refresh(now);
        match inner.phase {
            Phase::Closed => true,
            Phase::Open { .. } => false,
            Phase::HalfOpen => !inner.probe_in_flight,
        }
    }

    /// The current state (after the lazy open → half-open transition).
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let mut inner = self.shared.lock();
        inner.refresh(now);
        BreakerSnapshot {
            state: match inner.phase {
                Phase::Closed => BreakerState::Closed,
                Phase::Open { .. } => BreakerState::Open,
                Phase::HalfOpen => BreakerState::HalfOpen,
            },
            consecutive_failures: inner.consecutive_failures,
            half_open_successes: inner.half_open_successes,
            opened_for_ms_remaining: inner.remaining_open(now).map(ceil_millis),
            probe_in_flight: inner.probe_in_flight,
            trips: inner.trips,
        }
    }

    /// Forces the breaker closed with zeroed counts (admin endpoint). Permits
    /// issued before the reset no longer count; `trips` is kept.
    pub fn reset(&self) {
        self.shared.lock().enter(Phase::Closed);
    }
}

/// Whole milliseconds, rounded up so a breaker still open never reports 0.
fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Barrier;

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// Fixed 30 s open periods (no growth), so the phase tests read simply.
    fn fixed() -> BreakerConfig {
        BreakerConfig { open_timeout: TIMEOUT, max_open_timeout: TIMEOUT, ..BreakerConfig::default() }
    }

    fn breaker() -> Breaker {
        Breaker::new(fixed())
    }

    fn fail(b: &Breaker, now: Instant) {
        let permit = b.try_acquire(now).expect("permit");
        b.record(permit, Outcome::Failure, now);
    }

    fn succeed(b: &Breaker, now: Instant) {
        let permit = b.try_acquire(now).expect("permit");
        b.record(permit, Outcome::Success, now);
    }

    /// A breaker tripped at `t0`.
    fn tripped(t0: Instant) -> Breaker {
        let b = breaker();
        for _ in 0..3 {
            fail(&b, t0);
        }
        b
    }

    #[test]
    fn defaults() {
        let c = BreakerConfig::default();
        assert_eq!(
            (c.failure_threshold, c.success_threshold, c.open_timeout, c.max_open_timeout),
            (3, 2, Duration::from_secs(5), Duration::from_secs(60))
        );
    }

    #[test]
    fn consecutive_failures_trip_at_threshold() {
        let t0 = Instant::now();
        let b = breaker();
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.snapshot(t0).state, BreakerState::Closed);
        assert_eq!(b.snapshot(t0).consecutive_failures, 2);
        assert!(b.is_available(t0));
        fail(&b, t0);
        let snap = b.snapshot(t0);
        assert_eq!(snap.state, BreakerState::Open);
        assert_eq!(snap.trips, 1);
        assert_eq!(snap.opened_for_ms_remaining, Some(30_000));
        assert!(!b.is_available(t0));
    }

    #[test]
    fn success_resets_failure_count() {
        let t0 = Instant::now();
        let b = breaker();
        fail(&b, t0);
        fail(&b, t0);
        succeed(&b, t0);
        assert_eq!(b.snapshot(t0).consecutive_failures, 0);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.snapshot(t0).state, BreakerState::Closed);
    }

    #[test]
    fn neutral_outcomes_do_not_count_while_closed() {
        let t0 = Instant::now();
        let b = breaker();
        fail(&b, t0);
        fail(&b, t0);
        for _ in 0..5 {
            let p = b.try_acquire(t0).unwrap();
            b.record(p, Outcome::Neutral, t0);
        }
        assert_eq!(b.snapshot(t0).consecutive_failures, 2);
        assert_eq!(b.snapshot(t0).state, BreakerState::Closed);
    }

    #[test]
    fn open_blocks_until_timeout() {
        let t0 = Instant::now();
        let b = tripped(t0);
        let err = b.try_acquire(t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(err.retry_in, Duration::from_secs(20));
        let almost = t0 + TIMEOUT - Duration::from_millis(1);
        assert_eq!(b.try_acquire(almost).unwrap_err().retry_in, Duration::from_millis(1));
        assert!(!b.is_available(almost));
        assert_eq!(b.snapshot(almost).opened_for_ms_remaining, Some(1));

        let later = t0 + TIMEOUT;
        assert!(b.is_available(later));
        let snap = b.snapshot(later);
        assert_eq!(snap.state, BreakerState::HalfOpen);
        assert_eq!(snap.opened_for_ms_remaining, None);
        assert!(b.try_acquire(later).unwrap().is_probe());
    }

    #[test]
    fn closed_permits_are_not_probes() {
        let t0 = Instant::now();
        assert!(!breaker().try_acquire(t0).unwrap().is_probe());
    }

    #[test]
    fn half_open_admits_exactly_one_probe_at_a_time() {
        let t0 = Instant::now();
        let b = tripped(t0);
        let t1 = t0 + TIMEOUT;
        let probe = b.try_acquire(t1).unwrap();
        assert!(probe.is_probe());
        let err = b.try_acquire(t1).unwrap_err();
        assert_eq!(err.retry_in, PROBE_BUSY_RETRY);
        assert!(!b.is_available(t1));
        assert!(b.snapshot(t1).probe_in_flight);
        // Still exactly one, however long the probe takes.
        assert!(b.try_acquire(t1 + Duration::from_secs(600)).is_err());

        b.record(probe, Outcome::Success, t1);
        assert!(b.is_available(t1));
        let second = b.try_acquire(t1).unwrap();
        assert!(second.is_probe());
        assert!(b.try_acquire(t1).is_err());
        drop(second);
    }

    #[test]
    fn probe_successes_close_the_breaker() {
        let t0 = Instant::now();
        let b = tripped(t0);
        let t1 = t0 + TIMEOUT;
        succeed(&b, t1);
        let snap = b.snapshot(t1);
        assert_eq!((snap.state, snap.half_open_successes), (BreakerState::HalfOpen, 1));
        succeed(&b, t1);
        let snap = b.snapshot(t1);
        assert_eq!(snap.state, BreakerState::Closed);
        assert_eq!((snap.consecutive_failures, snap.half_open_successes, snap.trips), (0, 0, 1));
        // Closed again: concurrent permits, and the failure count starts afresh.
        let a = b.try_acquire(t1).unwrap();
        let c = b.try_acquire(t1).unwrap();
        assert!(!a.is_probe() && !c.is_probe());
        b.record(a, Outcome::Failure, t1);
        b.record(c, Outcome::Failure, t1);
        assert_eq!(b.snapshot(t1).state, BreakerState::Closed);
    }

    #[test]
    fn probe_failure_reopens_for_the_next_period() {
        let t0 = Instant::now();
        let b = tripped(t0);
        let t1 = t0 + TIMEOUT + Duration::from_secs(5);
        succeed(&b, t1);
        fail(&b, t1);
        let snap = b.snapshot(t1);
        assert_eq!(snap.state, BreakerState::Open);
        assert_eq!(snap.trips, 2);
        assert_eq!(snap.half_open_successes, 0);
        assert_eq!(snap.opened_for_ms_remaining, Some(30_000));
        assert!(b.try_acquire(t1 + TIMEOUT - Duration::from_millis(1)).is_err());
        assert!(b.try_acquire(t1 + TIMEOUT).unwrap().is_probe());
    }

    #[test]
    fn neutral_outcome_frees_the_probe_without_counting() {
        let t0 = Instant::now();
        let b = tripped(t0);
        let t1 = t0 + TIMEOUT;
        succeed(&b, t1);
        let probe = b.try_acquire(t1).unwrap();
        b.record(probe, Outcome::Neutral, t1);
        let snap = b.snapshot(t1);
        assert_eq!((snap.state, snap.half_open_successes, snap.probe_in_flight), (BreakerState::HalfOpen, 1, false));
        assert!(b.try_acquire(t1).unwrap().is_probe());
    }

    #[test]
    fn dropped_probe_frees_the_slot() {
        let t0 = Instant::now();
        let b = tripped(t0);
        let t1 = t0 + TIMEOUT;
        let probe = b.try_acquire(t1).unwrap();
        assert!(b.try_acquire(t1).is_err());
        drop(probe);
        assert!(!b.snapshot(t1).probe_in_flight);
        assert!(b.is_available(t1));
        let again = b.try_acquire(t1).unwrap();
        assert!(again.is_probe());
        b.record(again, Outcome::Success, t1);
        assert_eq!(b.snapshot(t1).half_open_successes, 1);
    }

    #[test]
    fn panicking_request_frees_the_probe() {
        let t0 = Instant::now();
        let b = tripped(t0);
        let t1 = t0 + TIMEOUT;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _probe = b.try_acquire(t1).unwrap();
            panic!("request handler blew up");
        }));
        assert!(result.is_err());
        assert!(b.try_acquire(t1).unwrap().is_probe());
    }

    #[test]
    fn stale_permits_are_ignored() {
        let t0 = Instant::now();
        let b = breaker();
        let in_flight: Vec<_> = (0..5).map(|_| b.try_acquire(t0).unwrap()).collect();
        for _ in 0..3 {
            fail(&b, t0);
        }
        let t1 = t0 + TIMEOUT;
        let probe = b.try_acquire(t1).unwrap();
        // Late answers from before the trip neither close nor re-open it.
        let mut late = in_flight.into_iter();
        b.record(late.next().unwrap(), Outcome::Success, t1);
        b.record(late.next().unwrap(), Outcome::Success, t1);
        b.record(late.next().unwrap(), Outcome::Failure, t1);
        drop(late);
        let snap = b.snapshot(t1);
        assert_eq!((snap.state, snap.half_open_successes, snap.probe_in_flight), (BreakerState::HalfOpen, 0, true));
        b.record(probe, Outcome::Success, t1);
        assert_eq!(b.snapshot(t1).half_open_successes, 1);
    }

    #[test]
    fn reset_closes_and_ignores_older_permits() {
        let t0 = Instant::now();
        let b = tripped(t0);
        assert!(b.try_acquire(t0).is_err());
        b.reset();
        let snap = b.snapshot(t0);
        assert_eq!(snap.state, BreakerState::Closed);
        assert_eq!((snap.consecutive_failures, snap.probe_in_flight, snap.trips), (0, false, 1));
        assert!(b.is_available(t0));

        // A probe outstanding across a reset neither counts nor frees anything.
        let b = tripped(t0);
        let probe = b.try_acquire(t0 + TIMEOUT).unwrap();
        b.reset();
        b.record(probe, Outcome::Failure, t0 + TIMEOUT);
        assert_eq!(b.snapshot(t0 + TIMEOUT).state, BreakerState::Closed);
    }

    #[test]
    fn a_permit_recorded_on_the_wrong_breaker_frees_its_own_slot() {
        let t0 = Instant::now();
        let a = tripped(t0);
        let other = breaker();
        let t1 = t0 + TIMEOUT;
        let probe = a.try_acquire(t1).unwrap();
        other.record(probe, Outcome::Failure, t1);
        assert_eq!(other.snapshot(t1).consecutive_failures, 0);
        let snap = a.snapshot(t1);
        assert_eq!((snap.state, snap.probe_in_flight, snap.trips), (BreakerState::HalfOpen, false, 1));
    }

    #[test]
    fn zero_thresholds_are_treated_as_one() {
        let t0 = Instant::now();
        let b = Breaker::new(BreakerConfig { failure_threshold: 0, success_threshold: 0, ..fixed() });
        fail(&b, t0);
        assert_eq!(b.snapshot(t0).state, BreakerState::Open);
        succeed(&b, t0 + TIMEOUT);
        assert_eq!(b.snapshot(t0 + TIMEOUT).state, BreakerState::Closed);
    }

    #[test]
    fn snapshot_serializes_with_snake_case_state() {
        let t0 = Instant::now();
        let b = tripped(t0);
        let json = serde_json::to_value(b.snapshot(t0 + Duration::from_millis(500))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "state": "open",
                "consecutive_failures": 3,
                "half_open_successes": 0,
                "opened_for_ms_remaining": 29_500,
                "probe_in_flight": false,
                "trips": 1,
            })
        );
        let json = serde_json::to_value(b.snapshot(t0 + TIMEOUT)).unwrap();
        assert_eq!(json["state"], "half_open");
        assert_eq!(json["opened_for_ms_remaining"], serde_json::Value::Null);
        assert_eq!(serde_json::to_value(BreakerState::Closed).unwrap(), "closed");
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn from_env_reads_all_three_variables() {
        let c = BreakerConfig::from_env(env(&[
            ("CB_FAILURE_THRESHOLD", "5"),
            ("CB_SUCCESS_THRESHOLD", " 4 "),
            ("CB_TIMEOUT_MS", "1500"),
        ]))
        .unwrap();
        assert_eq!(
            c,
            BreakerConfig {
                failure_threshold: 5,
                success_threshold: 4,
                open_timeout: Duration::from_millis(1500),
                ..BreakerConfig::default()
            }
        );
        let c = BreakerConfig::from_env(env(&[("CB_MAX_TIMEOUT_MS", "9000")])).unwrap();
        assert_eq!(c.max_open_timeout, Duration::from_millis(9000));
    }

    /// A failed probe doubles the open period, up to the maximum; closing
    /// starts over at the first period.
    #[test]
    fn open_periods_grow_on_failed_probes_up_to_the_maximum_and_reset_on_close() {
        let first = Duration::from_secs(5);
        let config = BreakerConfig {
            failure_threshold: 1,
            success_threshold: 1,
            open_timeout: first,
            max_open_timeout: Duration::from_secs(18),
        };
        let b = Breaker::new(config);
        let mut t = Instant::now();
        fail(&b, t);
        let mut periods = Vec::new();
        for _ in 0..4 {
            let remaining = b.snapshot(t).opened_for_ms_remaining.expect("open");
            periods.push(remaining);
            t += Duration::from_millis(remaining);
            // The single probe fails: open again, for longer.
            fail(&b, t);
        }
        assert_eq!(periods, [5_000, 10_000, 18_000, 18_000]);
        let remaining = b.snapshot(t).opened_for_ms_remaining.expect("open");
        t += Duration::from_millis(remaining);
        succeed(&b, t);
        assert_eq!(b.snapshot(t).state, BreakerState::Closed);
        fail(&b, t);
        assert_eq!(b.snapshot(t).opened_for_ms_remaining, Some(5_000));
    }

    #[test]
    fn a_maximum_shorter_than_the_first_period_is_raised_to_it() {
        let b = Breaker::new(BreakerConfig {
            failure_threshold: 1,
            open_timeout: Duration::from_secs(60),
            max_open_timeout: Duration::from_secs(1),
            ..BreakerConfig::default()
        });
        assert_eq!(b.config().max_open_timeout, Duration::from_secs(60));
    }

    #[test]
    fn from_env_defaults_when_unset_or_blank() {
        assert_eq!(BreakerConfig::from_env(env(&[])).unwrap(), BreakerConfig::default());
        let blank = env(&[("CB_FAILURE_THRESHOLD", ""), ("CB_TIMEOUT_MS", "  ")]);
        assert_eq!(BreakerConfig::from_env(blank).unwrap(), BreakerConfig::default());
        let partial = BreakerConfig::from_env(env(&[("CB_SUCCESS_THRESHOLD", "1")])).unwrap();
        assert_eq!(partial, BreakerConfig { success_threshold: 1, ..BreakerConfig::default() });
    }

    #[test]
    fn from_env_rejects_invalid_and_zero_values_naming_the_variable() {
        let cases = [
            ("CB_FAILURE_THRESHOLD", "0"),
            ("CB_FAILURE_THRESHOLD", "-1"),
            ("CB_FAILURE_THRESHOLD", "three"),
            ("CB_FAILURE_THRESHOLD", "99999999999"),
            ("CB_SUCCESS_THRESHOLD", "0"),
            ("CB_SUCCESS_THRESHOLD", "1.5"),
            ("CB_TIMEOUT_MS", "0"),
            ("CB_TIMEOUT_MS", "30s"),
            ("CB_MAX_TIMEOUT_MS", "0"),
        ];
        for (var, value) in cases {
            let err = BreakerConfig::from_env(env(&[(var, value)])).unwrap_err();
            assert_eq!(err, BreakerConfigError { var: var_name(var), value: value.to_string() });
            let message = err.to_string();
            assert!(message.contains(var) && message.contains(value), "{message}");
        }
    }

    fn var_name(var: &str) -> &'static str {
        [ENV_FAILURE_THRESHOLD, ENV_SUCCESS_THRESHOLD, ENV_TIMEOUT_MS, ENV_MAX_TIMEOUT_MS]
            .into_iter()
            .find(|v| *v == var)
            .unwrap()
    }

    #[test]
    fn racing_threads_get_exactly_one_probe() {
        const THREADS: usize = 8;
        for _round in 0..20 {
            let t0 = Instant::now();
            let b = tripped(t0);
            let t1 = t0 + TIMEOUT;
            let start = Barrier::new(THREADS);
            let done = Barrier::new(THREADS);
            let granted = std::thread::scope(|s| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            let result = b.try_acquire(t1);
                            // Hold any permit until every thread has tried.
                            done.wait();
                            result.map(|p| p.is_probe())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
            });
            assert_eq!(granted.iter().filter(|r| matches!(r, Ok(true))).count(), 1, "{granted:?}");
            assert_eq!(granted.iter().filter(|r| r.is_err()).count(), THREADS - 1);
            // The winning permit was dropped unrecorded: the slot is free again.
            assert!(b.is_available(t1));
        }
    }
}
