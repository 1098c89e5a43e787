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
        Self::default().with_env(lookup)
    }

    /// This configuration with the variables [`BreakerConfig::from_env`]
    /// reads set over it (the environment wins over a file's values).
    ///
    /// # Errors
    ///
    /// As [`BreakerConfig::from_env`].
    pub fn with_env(self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, BreakerConfigError> {
        let mut config = self;
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

impl BreakerConfig {
    /// Thresholds of zero raised to one; the longest open period never
    /// shorter than the first.
    fn normalized(self) -> Self {
        Self {
            failure_threshold: self.failure_threshold.max(1),
            success_threshold: self.success_threshold.max(1),
            max_open_timeout: self.max_open_timeout.max(self.open_timeout),
            ..self
        }
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
    /// The thresholds and periods; [`Breaker::retune`] replaces them.
    config: BreakerConfig,
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
        let inner = Inner {
            config: config.normalized(),
            phase: Phase::Closed,
            generation: 0,
            consecutive_failures: 0,
            half_open_successes: 0,
            probe_in_flight: false,
            trips: 0,
            last_period: Duration::ZERO,
        };
        Self { shared: Arc::new(Shared { inner: Mutex::new(inner) }) }
    }

    /// The effective configuration.
    pub fn config(&self) -> BreakerConfig {
        self.shared.lock().config
    }

    /// Replaces the thresholds and periods (a configuration reload). The
    /// state and its counts are kept: a new failure threshold applies to the
    /// next failure, a new open period to the next trip (an open period
    /// already running ends as it was set).
    pub fn retune(&self, config: BreakerConfig) {
        self.shared.lock().config = config.normalized();
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
        let mut inner = self.shared.lock();
        let config = inner.config;
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

    /// Opens the breaker because another judge tripped it (another
    /// instance of a fleet sharing its breakers): open for `remaining` from
    /// `now`, with `period` as the trip's open period, so a failed probe
    /// here doubles from the same period. An open-until that is already as
    /// late is kept; no trip is counted (the judge that tripped counts it).
    /// Returns whether the breaker changed.
    pub fn open_until(&self, now: Instant, remaining: Duration, period: Duration) -> bool {
        let mut inner = self.shared.lock();
        let config = inner.config;
        inner.refresh(now);
        if remaining.is_zero() || inner.remaining_open(now).is_some_and(|left| left >= remaining) {
            return false;
        }
        inner.enter(Phase::Open { since: now, period: remaining });
        inner.last_period = period.clamp(config.open_timeout, config.max_open_timeout);
        true
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
mod tests;
