use super::*;
use std::sync::Barrier;

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn rpm(n: u32) -> Limits {
    Limits { requests_per_minute: Some(n), ..Limits::default() }
}

fn use_of(requests_minute: u64, requests_day: u64, tokens_minute: u64, tokens_day: u64) -> WindowUse {
    WindowUse { requests_minute, requests_day, tokens_minute, tokens_day }
}

fn score(h: Headroom) -> f64 {
    match h {
        Headroom::Ok { score } => score,
        Headroom::Exhausted { wait } => panic!("exhausted, wait {wait:?}"),
    }
}

fn wait(h: Headroom) -> Duration {
    match h {
        Headroom::Exhausted { wait } => wait,
        Headroom::Ok { score } => panic!("ok, score {score}"),
    }
}

#[test]
fn estimate_is_a_quarter_of_the_chars_plus_overhead() {
    assert_eq!(estimate_tokens(0), REQUEST_OVERHEAD_TOKENS);
    assert_eq!(estimate_tokens(1), 1 + REQUEST_OVERHEAD_TOKENS);
    assert_eq!(estimate_tokens(4), 1 + REQUEST_OVERHEAD_TOKENS);
    assert_eq!(estimate_tokens(5), 2 + REQUEST_OVERHEAD_TOKENS);
    assert_eq!(estimate_tokens(4_000), 1_000 + REQUEST_OVERHEAD_TOKENS);
    assert_eq!(estimate_tokens(usize::MAX), u32::MAX);
}

#[test]
fn minute_window_ages_out_after_sixty_seconds() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let _ = w.reserve(t0, 100);
    assert_eq!(w.usage(t0), use_of(1, 1, 100, 100));
    assert_eq!(w.usage(t0 + 59 * SEC + Duration::from_millis(999)), use_of(1, 1, 100, 100));
    assert_eq!(w.usage(t0 + 60 * SEC), use_of(0, 1, 0, 100));
}

#[test]
fn events_are_forgotten_with_their_bucket() {
    // Documented approximation: an event late in its one-second bucket
    // leaves the minute window up to a second early.
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let _ = w.reserve(t0 + Duration::from_millis(900), 1);
    assert_eq!(w.usage(t0 + 59 * SEC).requests_minute, 1);
    assert_eq!(w.usage(t0 + 60 * SEC).requests_minute, 0);
}

#[test]
fn day_window_ages_out_after_a_day() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let _ = w.reserve(t0, 10);
    let _ = w.reserve(t0 + HOUR, 20);
    assert_eq!(w.usage(t0 + DAY - MIN), use_of(0, 2, 0, 30));
    assert_eq!(w.usage(t0 + DAY - SEC), use_of(0, 2, 0, 30));
    assert_eq!(w.usage(t0 + DAY), use_of(0, 1, 0, 20));
    assert_eq!(w.usage(t0 + DAY + HOUR), use_of(0, 0, 0, 0));
}

#[test]
fn settle_and_release_correct_the_counts() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let a = w.reserve(t0, 100);
    let b = w.reserve(t0 + SEC, 50);
    let c = w.reserve(t0 + 2 * SEC, 70);
    assert_eq!(a.estimated_tokens(), 100);
    assert_eq!(w.usage(t0 + 2 * SEC), use_of(3, 3, 220, 220));

    w.settle(a, 180, t0 + 3 * SEC);
    assert_eq!(w.usage(t0 + 3 * SEC), use_of(3, 3, 300, 300));
    w.settle(b, 10, t0 + 3 * SEC);
    assert_eq!(w.usage(t0 + 3 * SEC), use_of(3, 3, 260, 260));
    w.release(c, t0 + 3 * SEC);
    assert_eq!(w.usage(t0 + 3 * SEC), use_of(2, 2, 190, 190));

    // The corrections stay in the reserving buckets: they age out with them.
    assert_eq!(w.usage(t0 + 60 * SEC), use_of(1, 2, 10, 190));
    assert_eq!(w.usage(t0 + 61 * SEC), use_of(0, 2, 0, 190));
}

#[test]
fn settling_after_the_minute_corrects_only_the_day() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let r = w.reserve(t0, 100);
    let _ = w.reserve(t0 + 30 * SEC, 5);
    w.settle(r, 400, t0 + 90 * SEC);
    assert_eq!(w.usage(t0 + 90 * SEC), use_of(0, 2, 0, 405));
    let r = w.reserve(t0 + 90 * SEC, 100);
    w.release(r, t0 + DAY * 2);
    assert_eq!(w.usage(t0 + DAY * 2), use_of(0, 0, 0, 0));
}

#[test]
fn an_older_now_counts_in_the_newest_bucket() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let _ = w.reserve(t0 + 10 * SEC, 1);
    let late = w.reserve(t0 + 5 * SEC, 1);
    assert_eq!(w.usage(t0).requests_minute, 2);
    assert_eq!(w.usage(t0 + 69 * SEC).requests_minute, 2);
    assert_eq!(w.usage(t0 + 70 * SEC).requests_minute, 0);
    // A now before the epoch is the epoch.
    let w = KeyWindows::new(t0 + HOUR);
    let _ = w.reserve(t0, 1);
    assert_eq!(w.usage(t0 + HOUR + 59 * SEC).requests_minute, 1);
    drop(late);
}

#[test]
fn unlimited_keys_score_one() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    for _ in 0..1000 {
        let _ = w.reserve(t0, 1000);
    }
    assert_eq!(w.headroom(&Limits::default(), t0, 1_000_000), Headroom::Ok { score: 1.0 });
    assert!(w.try_reserve(&Limits::default(), t0, 1).is_ok());
}

#[test]
fn rpm_exhaustion_waits_for_the_oldest_bucket() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let limits = rpm(3);
    for s in [0, 10, 20] {
        let _ = w.reserve(t0 + s * SEC, 0);
    }
    assert_eq!(wait(w.headroom(&limits, t0 + 30 * SEC, 0)), 30 * SEC);
    assert_eq!(w.try_reserve(&limits, t0 + 30 * SEC, 0), Err(30 * SEC));
    assert_eq!(w.usage(t0 + 30 * SEC).requests_minute, 3, "a refused try_reserve counts nothing");
    assert_eq!(wait(w.headroom(&limits, t0 + Duration::from_millis(59_250), 0)), Duration::from_millis(750));
    // At 60 s the first request has left: one slot, used up by this request.
    assert_eq!(w.headroom(&limits, t0 + 60 * SEC, 0), Headroom::Ok { score: 0.0 });
}

#[test]
fn rpd_exhaustion_waits_hours() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let limits = Limits { requests_per_minute: Some(100), requests_per_day: Some(2), ..Limits::default() };
    let _ = w.reserve(t0, 0);
    let _ = w.reserve(t0 + 2 * HOUR, 0);
    let h = w.headroom(&limits, t0 + 5 * HOUR, 0);
    assert_eq!(wait(h), DAY - 5 * HOUR);
    assert_eq!(score(w.headroom(&limits, t0 + DAY, 0)), 0.0);
}

#[test]
fn the_longest_wait_across_full_windows_binds() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let limits = Limits { requests_per_minute: Some(1), requests_per_day: Some(1), ..Limits::default() };
    let _ = w.reserve(t0, 0);
    assert_eq!(wait(w.headroom(&limits, t0 + 10 * SEC, 0)), DAY - 10 * SEC);
}

#[test]
fn token_limits_count_the_estimate() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let limits = Limits { tokens_per_minute: Some(1000), ..Limits::default() };
    let _ = w.reserve(t0, 600);
    let _ = w.reserve(t0 + 10 * SEC, 300);
    let now = t0 + 20 * SEC;
    assert!((score(w.headroom(&limits, now, 50)) - 0.05).abs() < 1e-9);
    assert_eq!(score(w.headroom(&limits, now, 100)), 0.0);
    // 200 more needs 100 freed: the first bucket (600) must go, at 60 s.
    assert_eq!(wait(w.headroom(&limits, now, 200)), 40 * SEC);
    // 800 more needs 700 freed: both buckets, the second leaves at 70 s.
    assert_eq!(wait(w.headroom(&limits, now, 800)), 50 * SEC);
    assert_eq!(w.try_reserve(&limits, now, 200), Err(40 * SEC));
    assert!(w.try_reserve(&limits, now, 100).is_ok());
}

#[test]
fn an_estimate_above_the_whole_limit_needs_an_empty_window() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    let limits = Limits { tokens_per_minute: Some(1000), ..Limits::default() };
    assert_eq!(w.headroom(&limits, t0, 5000), Headroom::Ok { score: 0.0 });
    let _ = w.reserve(t0, 5000);
    assert_eq!(wait(w.headroom(&limits, t0 + 5 * SEC, 5000)), 55 * SEC);
    assert_eq!(wait(w.headroom(&limits, t0 + 5 * SEC, 1)), 55 * SEC);
}

#[test]
fn a_zero_limit_is_always_exhausted() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    assert_eq!(wait(w.headroom(&rpm(0), t0, 0)), MIN);
    let tpd0 = Limits { tokens_per_day: Some(0), ..Limits::default() };
    assert_eq!(wait(w.headroom(&tpd0, t0, 0)), DAY);
}

#[test]
fn fuller_keys_score_lower() {
    let t0 = Instant::now();
    let limits = Limits { requests_per_minute: Some(100), tokens_per_day: Some(1_000_000), ..Limits::default() };
    let busy = KeyWindows::new(t0);
    let idle = KeyWindows::new(t0);
    for _ in 0..90 {
        let _ = busy.reserve(t0, 10);
    }
    for _ in 0..10 {
        let _ = idle.reserve(t0, 10);
    }
    let busy_score = score(busy.headroom(&limits, t0, 10));
    let idle_score = score(idle.headroom(&limits, t0, 10));
    assert!((busy_score - 0.09).abs() < 1e-9, "{busy_score}");
    assert!((idle_score - 0.89).abs() < 1e-9, "{idle_score}");
    assert!(busy_score < idle_score);
    // The smallest fraction across windows decides.
    let tight = Limits { tokens_per_day: Some(120), ..limits };
    assert!((score(idle.headroom(&tight, t0, 10)) - 10.0 / 120.0).abs() < 1e-9);
}

#[test]
fn windows_survive_a_restart() {
    let t0 = Instant::now();
    let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let before = KeyWindows::new(t0);
    let _ = before.reserve(t0, 1);
    let _ = before.reserve(t0 + HOUR, 10);
    let _ = before.reserve(t0 + 2 * HOUR + 30 * SEC, 100);
    let _ = before.reserve(t0 + 2 * HOUR + 50 * SEC, 1000);
    let export_at = t0 + 2 * HOUR + 55 * SEC;
    let state = before.export_at(export_at, wall0 + (export_at - t0));
    assert_eq!(state.minute.len(), 2);
    assert_eq!(state.day.len(), 3);

    // Through JSON, as it would be persisted.
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.contains("\"startUnixMs\""), "{json}");
    let state: WindowState = serde_json::from_str(&json).unwrap();

    // The process is back 65 s later (a minute boundary of the old epoch),
    // with a fresh monotonic clock.
    let restart = Instant::now() + 1000 * DAY;
    let gap = 65 * SEC;
    let after = KeyWindows::import_at(&state, restart, wall0 + (export_at - t0) + gap);
    assert_eq!(after.usage(restart), use_of(0, 4, 0, 1111));
    // Step through the next 25 hours: both sides age out identically.
    for secs in (0..=25 * 3600).step_by(20) {
        let later = Duration::from_secs(secs);
        assert_eq!(after.usage(restart + later), before.usage(export_at + gap + later), "{later:?} after restart");
    }
    assert_eq!(after.usage(restart + 25 * HOUR), WindowUse::default());
}

#[test]
fn a_quick_restart_keeps_the_minute_window() {
    let t0 = Instant::now();
    let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let before = KeyWindows::new(t0);
    for s in 0..10 {
        let _ = before.reserve(t0 + s * 5 * SEC, 7);
    }
    let state = before.export_at(t0 + 50 * SEC, wall0 + 50 * SEC);
    let restart = Instant::now();
    let after = KeyWindows::import_at(&state, restart, wall0 + 52 * SEC);
    let limits = rpm(10);
    assert_eq!(after.usage(restart), use_of(10, 10, 70, 70));
    // The first request (t0) leaves at wall0 + 60 s, 8 s after the restart.
    assert_eq!(wait(after.headroom(&limits, restart, 0)), 8 * SEC);
    assert_eq!(after.usage(restart + 8 * SEC).requests_minute, 9);
}

#[test]
fn import_drops_what_has_aged_out_and_accepts_future_stamps() {
    let t0 = Instant::now();
    let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let before = KeyWindows::new(t0);
    let _ = before.reserve(t0, 5);
    let state = before.export_at(t0, wall0);

    let after = KeyWindows::import_at(&state, t0, wall0 + 2 * MIN);
    assert_eq!(after.usage(t0), use_of(0, 1, 0, 5));
    let after = KeyWindows::import_at(&state, t0, wall0 + DAY + SEC);
    assert_eq!(after.usage(t0), WindowUse::default());
    // Wall clock stepped backwards: the buckets count as current.
    let after = KeyWindows::import_at(&state, t0, wall0 - HOUR);
    assert_eq!(after.usage(t0), use_of(1, 1, 5, 5));
    assert_eq!(after.usage(t0 + 60 * SEC), use_of(0, 1, 0, 5));
    // Empty or partial documents import as empty windows.
    let empty: WindowState = serde_json::from_str("{}").unwrap();
    assert_eq!(KeyWindows::import(&empty, t0).usage(t0), WindowUse::default());
    assert_eq!(KeyWindows::new(t0).export(t0), WindowState::default());
}

#[test]
fn rings_wrap_cleanly_after_long_idle_gaps() {
    let t0 = Instant::now();
    let w = KeyWindows::new(t0);
    for s in 0..200 {
        let _ = w.reserve(t0 + s * SEC, 1);
    }
    assert_eq!(w.usage(t0 + 199 * SEC), use_of(60, 200, 60, 200));

    // Three days of silence, then traffic again.
    let t1 = t0 + 3 * DAY + 17 * SEC;
    assert_eq!(w.usage(t1), WindowUse::default());
    for s in 0..3 {
        let _ = w.reserve(t1 + s * SEC, 2);
    }
    assert_eq!(w.usage(t1 + 2 * SEC), use_of(3, 3, 6, 6));
    // A gap shorter than the window clears only the buckets it skips,
    // wrapping around the end of the ring.
    let t2 = t1 + 50 * SEC;
    let _ = w.reserve(t2, 4);
    assert_eq!(w.usage(t2), use_of(4, 4, 10, 10));
    assert_eq!(w.usage(t1 + 60 * SEC), use_of(3, 4, 8, 10));
    assert_eq!(w.usage(t1 + 62 * SEC), use_of(1, 4, 4, 10));
    assert_eq!(w.usage(t1 + DAY), use_of(0, 1, 0, 4));
    assert_eq!(w.usage(t1 + DAY + MIN), use_of(0, 0, 0, 0));
    // Many laps of idle-then-burst keep the sums consistent.
    let mut t = t1 + DAY + MIN;
    for lap in 1..=50u32 {
        t += Duration::from_millis(u64::from(lap) * 7_777);
        let _ = w.reserve(t, lap);
    }
    let u = w.usage(t);
    let state = w.export_at(t, UNIX_EPOCH + DAY);
    let sum = |b: &[BucketState]| {
        b.iter().map(|b| (u64::from(b.requests), u64::from(b.tokens))).fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1))
    };
    assert_eq!(sum(&state.minute), (u.requests_minute, u.tokens_minute));
    assert_eq!(sum(&state.day), (u.requests_day, u.tokens_day));
}

#[test]
fn try_reserve_admits_exactly_the_limit_under_contention() {
    const THREADS: usize = 16;
    for _round in 0..20 {
        let t0 = Instant::now();
        let w = KeyWindows::new(t0);
        let limits = rpm(10);
        let now = t0 + 5 * SEC;
        let start = Barrier::new(THREADS);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        w.try_reserve(&limits, now, 25)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10);
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|wait| *wait == 60 * SEC), "{results:?}");
        assert_eq!(w.usage(now), use_of(10, 10, 250, 250));
    }
}

#[test]
fn usage_serializes_in_camel_case() {
    let json = serde_json::to_value(use_of(1, 2, 3, 4)).unwrap();
    assert_eq!(json, serde_json::json!({"requestsMinute": 1, "requestsDay": 2, "tokensMinute": 3, "tokensDay": 4}));
}
