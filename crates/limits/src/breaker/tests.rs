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

#[test]
fn a_retuned_threshold_applies_to_the_next_failure_and_keeps_the_counts() {
    let t0 = Instant::now();
    let b = breaker();
    fail(&b, t0);
    b.retune(BreakerConfig { failure_threshold: 2, ..fixed() });
    assert_eq!(b.snapshot(t0).consecutive_failures, 1, "the count survives");
    fail(&b, t0);
    assert_eq!(b.snapshot(t0).state, BreakerState::Open, "two failures now trip it");
}

#[test]
fn a_retuned_open_period_applies_from_the_next_trip() {
    let t0 = Instant::now();
    let b = tripped(t0);
    b.retune(BreakerConfig {
        open_timeout: Duration::from_secs(1),
        max_open_timeout: Duration::from_secs(1),
        ..fixed()
    });
    assert_eq!(b.snapshot(t0 + Duration::from_secs(2)).state, BreakerState::Open, "the running period ends as set");
    b.retune(BreakerConfig { failure_threshold: 0, ..fixed() });
    assert_eq!(b.config().failure_threshold, 1, "normalized like a new breaker");
}

#[test]
fn the_environment_is_laid_over_a_given_configuration() {
    let file = BreakerConfig { failure_threshold: 7, success_threshold: 4, ..BreakerConfig::default() };
    let c = file.with_env(env(&[(ENV_SUCCESS_THRESHOLD, "1")])).unwrap();
    assert_eq!((c.failure_threshold, c.success_threshold), (7, 1));
}

#[test]
fn a_remote_trip_opens_until_the_shared_time_then_probes_here() {
    let config = BreakerConfig { open_timeout: Duration::from_secs(5), ..BreakerConfig::default() };
    let b = Breaker::new(config);
    let t0 = Instant::now();
    let in_flight = b.try_acquire(t0).expect("closed");
    assert!(b.open_until(t0, Duration::from_secs(4), Duration::from_secs(5)));
    let snap = b.snapshot(t0);
    assert_eq!((snap.state, snap.opened_for_ms_remaining, snap.trips), (BreakerState::Open, Some(4000), 0));
    // A request sent before the remote trip says nothing about the provider now.
    b.record(in_flight, Outcome::Success, t0);
    assert_eq!(b.snapshot(t0).state, BreakerState::Open);
    // Once the shared open-until passes, this breaker probes; a failed probe
    // doubles the shared period.
    let t1 = t0 + Duration::from_secs(4);
    let probe = b.try_acquire(t1).expect("half-open probe");
    b.record(probe, Outcome::Failure, t1);
    assert_eq!(b.snapshot(t1).opened_for_ms_remaining, Some(10_000));
}

#[test]
fn a_remote_trip_never_shortens_an_open_breaker() {
    let t0 = Instant::now();
    let b = tripped(t0);
    assert!(!b.open_until(t0, Duration::from_secs(10), TIMEOUT), "30 s left here already");
    assert!(!b.open_until(t0, Duration::ZERO, TIMEOUT));
    assert!(b.open_until(t0, Duration::from_secs(40), TIMEOUT));
    assert_eq!(b.snapshot(t0).opened_for_ms_remaining, Some(40_000));
}
