//! The link to the shared state, as a pure state machine with injected time.
//!
//! Up: every shared call goes to Redis. [`FAILURES_TO_DEGRADE`] errors or
//! timeouts in a row take the link down ("degraded: shared state
//! unavailable"); one failed call alone does not, so a single slow answer
//! (a busy Redis, a starved instance) costs only the requests it delayed,
//! not a quarter second of the whole instance. Once down, no request waits
//! on Redis at all; one background probe at a time tries it again, first
//! after [`FIRST_PROBE`], doubling up to [`MAX_PROBE`]. A probe that answers
//! brings the link back up. Each change of state is returned
//! as a [`Transition`] exactly once, so the caller logs one line per
//! transition, not one per failed call.

use std::time::{Duration, Instant};

/// First wait before probing a link that went down.
pub const FIRST_PROBE: Duration = Duration::from_millis(250);
/// Longest wait between probes.
pub const MAX_PROBE: Duration = Duration::from_secs(5);
/// Failed calls in a row (no call answering in between) that take the link
/// down. Redis that refuses connections fails three calls in microseconds;
/// one that hangs, in three call timeouts.
pub const FAILURES_TO_DEGRADE: u32 = 3;

/// What clients read from `/v1/status` and `/metrics` while degraded.
pub const DEGRADED_TEXT: &str = "degraded: shared state unavailable";

/// The state of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Redis answers.
    Up,
    /// Redis did not answer; shared calls are skipped until a probe answers.
    Degraded {
        /// When it went down (unix ms, for status).
        since_unix_ms: u64,
        /// When it went down (monotonic, to measure the outage).
        since: Instant,
        /// The error that took it down (already redacted by the caller).
        reason: String,
        /// When the next probe may run.
        next_probe: Instant,
        /// The wait after the next failed probe.
        backoff: Duration,
    },
}

/// A change of state, reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The link went down.
    Down {
        /// Why.
        reason: String,
    },
    /// The link is back after an outage of this long.
    Up {
        /// How long it was down.
        outage: Duration,
    },
}

/// The link's state machine.
#[derive(Debug, Clone)]
pub struct Link {
    state: LinkState,
    /// Failed calls in a row while up.
    failures: u32,
}

impl Default for Link {
    fn default() -> Self {
        Self::up()
    }
}

impl Link {
    /// A link that is up.
    pub fn up() -> Self {
        Self { state: LinkState::Up, failures: 0 }
    }

    /// The current state.
    pub fn state(&self) -> &LinkState {
        &self.state
    }

    /// Whether the link is down.
    pub fn is_degraded(&self) -> bool {
        matches!(self.state, LinkState::Degraded { .. })
    }

    /// A call failed (error or timeout). The [`FAILURES_TO_DEGRADE`]th in a
    /// row takes the link down, reported; already degraded: nothing new (a
    /// failed probe goes through [`Link::probe_failed`]).
    pub fn failed(&mut self, now: Instant, now_unix_ms: u64, reason: &str) -> Option<Transition> {
        if self.is_degraded() {
            return None;
        }
        self.failures += 1;
        if self.failures < FAILURES_TO_DEGRADE {
            return None;
        }
        self.down(now, now_unix_ms, reason)
    }

    /// Redis is known not to answer (its first ping at start failed): down
    /// at once, reported; already degraded: nothing new.
    pub fn down(&mut self, now: Instant, now_unix_ms: u64, reason: &str) -> Option<Transition> {
        if self.is_degraded() {
            return None;
        }
        self.failures = 0;
        self.state = LinkState::Degraded {
            since_unix_ms: now_unix_ms,
            since: now,
            reason: reason.to_owned(),
            next_probe: now + FIRST_PROBE,
            backoff: FIRST_PROBE.saturating_mul(2).min(MAX_PROBE),
        };
        Some(Transition::Down { reason: reason.to_owned() })
    }

    /// A call or probe answered. Degraded → up, reported with the outage;
    /// up: the run of failed calls is over.
    pub fn succeeded(&mut self, now: Instant) -> Option<Transition> {
        self.failures = 0;
        let LinkState::Degraded { since, .. } = self.state else { return None };
        self.state = LinkState::Up;
        Some(Transition::Up { outage: now.saturating_duration_since(since) })
    }

    /// Whether a probe is due: degraded and its time has come. The caller
    /// runs one probe, then reports [`Link::succeeded`] or
    /// [`Link::probe_failed`].
    pub fn probe_due(&self, now: Instant) -> bool {
        matches!(self.state, LinkState::Degraded { next_probe, .. } if now >= next_probe)
    }

    /// How long until the next probe (`None` when up).
    pub fn until_probe(&self, now: Instant) -> Option<Duration> {
        match self.state {
            LinkState::Up => None,
            LinkState::Degraded { next_probe, .. } => Some(next_probe.saturating_duration_since(now)),
        }
    }

    /// A probe failed: wait longer before the next one (doubling, at most
    /// [`MAX_PROBE`]). Not a transition.
    pub fn probe_failed(&mut self, now: Instant) {
        if let LinkState::Degraded { next_probe, backoff, .. } = &mut self.state {
            *next_probe = now + *backoff;
            *backoff = backoff.saturating_mul(2).min(MAX_PROBE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes an up link down with failures in a row; the last one's reason.
    fn take_down(link: &mut Link, now: Instant, reason: &str) {
        for _ in 1..FAILURES_TO_DEGRADE {
            assert_eq!(link.failed(now, 0, "earlier"), None);
        }
        assert_eq!(link.failed(now, 0, reason), Some(Transition::Down { reason: reason.into() }));
    }

    #[test]
    fn one_slow_call_does_not_take_the_link_down() {
        let t0 = Instant::now();
        let mut link = Link::up();
        for round in 0..5 {
            for _ in 1..FAILURES_TO_DEGRADE {
                assert_eq!(link.failed(t0, 0, "timeout"), None, "round {round}");
            }
            assert!(!link.is_degraded());
            assert_eq!(link.succeeded(t0), None, "an answer in between ends the run; no transition");
        }
        assert!(!link.is_degraded());
    }

    #[test]
    fn failures_in_a_row_take_the_link_down_once() {
        let t0 = Instant::now();
        let mut link = Link::up();
        for _ in 1..FAILURES_TO_DEGRADE {
            assert_eq!(link.failed(t0, 900, "refused"), None);
        }
        assert_eq!(link.failed(t0, 1_000, "timeout"), Some(Transition::Down { reason: "timeout".into() }));
        assert!(link.is_degraded());
        assert_eq!(link.failed(t0 + Duration::from_millis(5), 1_005, "again"), None, "one line per transition");
        assert!(
            matches!(link.state(), LinkState::Degraded { reason, since_unix_ms: 1_000, .. } if reason == "timeout")
        );
    }

    #[test]
    fn a_link_known_down_goes_down_at_once() {
        let t0 = Instant::now();
        let mut link = Link::up();
        assert_eq!(link.down(t0, 0, "refused"), Some(Transition::Down { reason: "refused".into() }));
        assert_eq!(link.down(t0, 0, "refused"), None);
        assert_eq!(link.until_probe(t0), Some(FIRST_PROBE));
    }

    #[test]
    fn probes_back_off_until_one_answers() {
        let t0 = Instant::now();
        let mut link = Link::up();
        take_down(&mut link, t0, "refused");
        assert!(!link.probe_due(t0), "no probe at once");
        assert!(link.probe_due(t0 + FIRST_PROBE));
        let mut at = t0 + FIRST_PROBE;
        let mut waits = Vec::new();
        for _ in 0..6 {
            link.probe_failed(at);
            let wait = link.until_probe(at).expect("degraded");
            waits.push(wait);
            assert!(!link.probe_due(at + wait - Duration::from_millis(1)));
            at += wait;
            assert!(link.probe_due(at));
        }
        assert_eq!(waits[0], FIRST_PROBE * 2);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(*waits.last().expect("waits"), MAX_PROBE);
        assert_eq!(link.succeeded(at), Some(Transition::Up { outage: at - t0 }));
        assert!(!link.is_degraded() && link.until_probe(at).is_none());
        assert_eq!(link.succeeded(at), None, "already up: no transition");
    }

    #[test]
    fn a_new_outage_starts_probing_early_again() {
        let t0 = Instant::now();
        let mut link = Link::up();
        take_down(&mut link, t0, "a");
        for i in 1..10 {
            link.probe_failed(t0 + Duration::from_secs(i));
        }
        link.succeeded(t0 + Duration::from_secs(20));
        let t1 = t0 + Duration::from_secs(30);
        take_down(&mut link, t1, "b");
        assert_eq!(link.until_probe(t1), Some(FIRST_PROBE));
    }
}
