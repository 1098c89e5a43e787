use super::*;

fn lim(max: u32, window_ms: u64) -> IdentifierLimit {
    IdentifierLimit { max, window_ms }
}

fn allowed(remaining: u32, window: u64) -> Decision {
    Decision { allowed: true, remaining, reset_ms: window }
}

fn rejected(reset_ms: u64) -> Decision {
    Decision { allowed: false, remaining: 0, reset_ms }
}

// ---- identifier validation ----

#[test]
fn absent_identifiers_fall_back() {
    for raw in ["", "   ", "\t", "undefined", "UNDEFINED", "Null", "null", "  null  ", " Undefined\t"] {
        assert_eq!(validate_identifier(raw), Ok(None), "{raw:?}");
    }
}

#[test]
fn valid_identifiers_are_trimmed_and_kept() {
    assert_eq!(validate_identifier("portfolio-user-42"), Ok(Some("portfolio-user-42")));
    assert_eq!(validate_identifier("  session-abc \t"), Ok(Some("session-abc")));
    assert_eq!(validate_identifier("a.b:c_d-E9"), Ok(Some("a.b:c_d-E9")));
    assert_eq!(validate_identifier("nullable"), Ok(Some("nullable")));
    assert_eq!(validate_identifier("x:ip:1.2.3.4"), Ok(Some("x:ip:1.2.3.4")));
    let longest = "a".repeat(128);
    assert_eq!(validate_identifier(&longest), Ok(Some(longest.as_str())));
}

#[test]
fn invalid_identifiers_are_refused() {
    assert_eq!(validate_identifier(&"a".repeat(129)), Err(InvalidIdentifier::Length));
    for raw in ["has space", "a/b", "a@b", "é", "tab\tinside", "semi;colon", "a\u{0}b", "quote\"", "ünï"] {
        assert_eq!(validate_identifier(raw), Err(InvalidIdentifier::Character), "{raw:?}");
    }
    for raw in ["ip:203.0.113.7", "IP:1.2.3.4", "Ip:x", "ip:"] {
        assert_eq!(validate_identifier(raw), Err(InvalidIdentifier::ReservedPrefix), "{raw:?}");
    }
    // Multi-byte characters count as bytes against the 128 limit.
    assert_eq!(validate_identifier(&"é".repeat(100)), Err(InvalidIdentifier::Length));
}

#[test]
fn check_identifier_is_strict() {
    assert_eq!(check_identifier("session-abc"), Ok("session-abc"));
    assert_eq!(check_identifier(""), Err(InvalidIdentifier::Length));
    assert_eq!(check_identifier(" a"), Err(InvalidIdentifier::Character));
    assert_eq!(check_identifier("null"), Err(InvalidIdentifier::ReservedWord));
    assert_eq!(check_identifier("UnDeFiNeD"), Err(InvalidIdentifier::ReservedWord));
    assert_eq!(check_identifier("ip:1"), Err(InvalidIdentifier::ReservedPrefix));
    assert!(matches_identifier_pattern("ip:1"));
    assert!(!matches_identifier_pattern(""));
    assert!(!matches_identifier_pattern("a b"));
}

#[test]
fn identifier_errors_do_not_echo_the_value() {
    for e in [
        InvalidIdentifier::Length,
        InvalidIdentifier::Character,
        InvalidIdentifier::ReservedPrefix,
        InvalidIdentifier::ReservedWord,
    ] {
        assert!(e.to_string().starts_with("identifier"), "{e}");
    }
}

// ---- limit parsing ----

#[test]
fn parses_limits() {
    assert_eq!(IdentifierLimit::parse("60/60000"), Ok(lim(60, 60_000)));
    assert_eq!(IdentifierLimit::parse("5/2000"), Ok(lim(5, 2000)));
    assert_eq!(IdentifierLimit::parse(" 5 / 2000 "), Ok(lim(5, 2000)));
    assert_eq!(IdentifierLimit::parse("1000000/86400000"), Ok(lim(1_000_000, 86_400_000)));
    assert_eq!(IdentifierLimit::default(), lim(60, 60_000));
}

#[test]
fn bad_limits_name_the_variable() {
    for bad in [
        "",
        "abc",
        "60",
        "60/",
        "/60000",
        "0/1000",
        "5/0",
        "-1/1000",
        "5/-3",
        "5/2000/3",
        "+5/2000",
        "5.5/2000",
        "1e3/5",
        "5 0/2000",
        "99999999999/1000",
        "1000001/1000",
        "5/86400001",
        "５/2000",
    ] {
        let e = IdentifierLimit::parse(bad).expect_err(bad);
        assert_eq!(e.var, "FREELLM_IDENTIFIER_LIMIT");
        assert!(e.to_string().starts_with("FREELLM_IDENTIFIER_LIMIT "), "{e}");
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
    let long = "9".repeat(500);
    assert_eq!(IdentifierLimit::parse(&long).expect_err("long").value.len(), 64);
}

#[test]
fn per_minute_limits() {
    assert_eq!(IdentifierLimit::per_minute(100), Ok(lim(100, 60_000)));
    let e = IdentifierLimit::per_minute(0).expect_err("zero");
    assert_eq!(e.var, "RATE_LIMIT_RPM");
    assert!(e.to_string().starts_with("RATE_LIMIT_RPM "), "{e}");
    assert!(IdentifierLimit::per_minute(MAX_REQUESTS_PER_WINDOW + 1).is_err());
}

// ---- sliding window ----

#[test]
fn allows_max_then_rejects() {
    let l = IdentifierLimiter::new(lim(3, 1000), 100);
    assert_eq!(l.check("k", 10_000), allowed(2, 1000));
    assert_eq!(l.check("k", 10_100), allowed(1, 1000));
    assert_eq!(l.check("k", 10_200), allowed(0, 1000));
    assert_eq!(l.check("k", 10_300), rejected(700));
    assert_eq!(l.check("k", 10_999), rejected(1));
    assert_eq!(l.check("k", 11_000), allowed(0, 1000));
}

#[test]
fn reset_is_time_until_the_oldest_slot_frees() {
    // The reference's 700 ms example.
    let l = IdentifierLimiter::new(lim(2, 1000), 100);
    assert!(l.check("k", 5_000).allowed);
    assert!(l.check("k", 5_300).allowed);
    let d = l.check("k", 5_300);
    assert_eq!(d, rejected(700));
    assert_eq!(d.retry_after_secs(), 1);
    assert_eq!(rejected(1001).retry_after_secs(), 2);
    assert_eq!(rejected(0).retry_after_secs(), 1);
}

#[test]
fn window_slides_and_frees_one_slot_at_a_time() {
    let l = IdentifierLimiter::new(lim(2, 1000), 100);
    assert!(l.check("k", 0).allowed);
    assert!(l.check("k", 300).allowed);
    assert!(!l.check("k", 999).allowed);
    // The request at 0 stops counting at exactly 1000.
    assert_eq!(l.check("k", 1000), allowed(0, 1000));
    // Now the oldest is the one at 300.
    assert_eq!(l.check("k", 1000), rejected(300));
    assert_eq!(l.check("k", 1300), allowed(0, 1000));
    // After a full quiet window everything is free again.
    assert_eq!(l.check("k", 5000), allowed(1, 1000));
}

#[test]
fn rejected_requests_do_not_consume_slots() {
    let l = IdentifierLimiter::new(lim(2, 1000), 100);
    assert!(l.check("k", 0).allowed);
    assert!(l.check("k", 0).allowed);
    for t in (0..1000).step_by(10) {
        assert!(!l.check("k", t).allowed);
    }
    // Had rejections been recorded, the window would still be full.
    assert_eq!(l.check("k", 1000), allowed(1, 1000));
    assert_eq!(l.check("k", 1000), allowed(0, 1000));
}

#[test]
fn keys_are_isolated() {
    let l = IdentifierLimiter::new(lim(1, 1000), 100);
    assert!(l.check("a", 0).allowed);
    assert!(!l.check("a", 1).allowed);
    assert!(l.check("b", 1).allowed);
    assert!(l.check("ip:10.0.0.1", 1).allowed);
    assert_eq!(l.bucket_count(), 3);
}

#[test]
fn degenerate_limits() {
    let none = IdentifierLimiter::new(lim(0, 1000), 10);
    assert_eq!(none.check("k", 0), rejected(1000));
    assert_eq!(none.check("k", 5000), rejected(1000));
    let unlimited = IdentifierLimiter::new(lim(1, 0), 10);
    for t in 0..10 {
        assert!(unlimited.check("k", t / 2).allowed);
    }
}

#[test]
fn time_going_backwards_is_safe() {
    let l = IdentifierLimiter::new(lim(2, 1000), 10);
    assert!(l.check("k", 10_000).allowed);
    assert!(l.check("k", 9_000).allowed); // recorded at 10_000
    let d = l.check("k", 5_000);
    assert!(!d.allowed);
    assert_eq!(d.reset_ms, 1000); // clamped to the window
    assert!(l.check("k", 11_000).allowed);
    l.check("k", 0);
    assert!(l.check("k", u64::MAX).allowed);
}

// ---- memory bounds ----

#[test]
fn bucket_count_stays_bounded_under_spraying() {
    let l = IdentifierLimiter::new(lim(60, 60_000), 1000);
    for i in 0..100_000u64 {
        let d = l.check(&format!("spray-{i}"), 1_000_000 + i / 10);
        assert!(d.allowed);
        if i % 997 == 0 {
            assert!(l.bucket_count() <= 1000);
        }
    }
    assert!(l.bucket_count() <= 1000);
    assert!(l.bucket_count() >= 900, "the budget should be mostly used: {}", l.bucket_count());
}

#[test]
fn tiny_budgets_hold() {
    for max_buckets in [0, 1, 2, 3, 15, 16, 17, 33] {
        let l = IdentifierLimiter::new(lim(5, 60_000), max_buckets);
        for i in 0..500 {
            l.check(&format!("k{i}"), 1000);
            assert!(l.bucket_count() <= max_buckets.max(1), "{max_buckets}");
        }
        assert_eq!(l.bucket_count(), max_buckets.max(1));
    }
}

#[test]
fn least_recently_seen_bucket_is_evicted() {
    let l = IdentifierLimiter::with_shards(lim(5, 60_000), 3, 1);
    l.check("a", 1000);
    l.check("b", 1000);
    l.check("c", 1000);
    l.check("a", 1001); // a is now the most recent; b the least
    l.check("d", 1002); // evicts b
    assert_eq!(l.bucket_count(), 3);
    assert_eq!(l.check("a", 1003).remaining, 2, "a kept its history");
    assert_eq!(l.check("c", 1003).remaining, 3, "c kept its history");
    // b was forgotten: it starts afresh (and evicts d, now the LRU).
    assert_eq!(l.check("b", 1004).remaining, 4);
    assert_eq!(l.check("d", 1005).remaining, 4, "d was evicted");
    assert_eq!(l.bucket_count(), 3);
}

#[test]
fn rejected_requests_count_as_seen() {
    let l = IdentifierLimiter::with_shards(lim(1, 60_000), 2, 1);
    l.check("a", 1000);
    l.check("b", 1000);
    assert!(!l.check("a", 1001).allowed); // touches a
    l.check("c", 1002); // evicts b, not a
    assert!(!l.check("a", 1003).allowed, "a is still limited");
}

#[test]
fn idle_buckets_are_collected_losslessly() {
    let l = IdentifierLimiter::with_shards(lim(2, 1000), 100, 1);
    for i in 0..10 {
        l.check(&format!("k{i}"), 0);
    }
    l.check("live", 500);
    assert_eq!(l.bucket_count(), 11);
    // At 999 nothing is idle yet.
    l.check("live", 999);
    assert_eq!(l.bucket_count(), 11);
    // At 1000 the ten buckets last seen at 0 hold nothing that counts.
    l.check("live", 1000);
    assert_eq!(l.bucket_count(), 1);
    // Idle buckets go before live ones when the shard is full.
    let l = IdentifierLimiter::with_shards(lim(1, 1000), 2, 1);
    l.check("old", 0);
    l.check("live", 900);
    l.check("new", 1000); // "old" is idle: dropped instead of "live"
    assert!(!l.check("live", 1001).allowed, "live kept its history");
}

#[test]
fn sweep_drops_idle_buckets_everywhere() {
    let l = IdentifierLimiter::new(lim(2, 1000), 1000);
    for i in 0..200 {
        l.check(&format!("k{i}"), 0);
    }
    l.check("recent", 600);
    l.sweep(999);
    assert_eq!(l.bucket_count(), 201);
    l.sweep(1000);
    assert_eq!(l.bucket_count(), 1);
    l.sweep(1600);
    assert_eq!(l.bucket_count(), 0);
}

#[test]
fn shard_capacities_sum_to_the_budget() {
    for max_buckets in [1, 5, 16, 17, 1000, 10_000] {
        let l = IdentifierLimiter::new(DEFAULT_LIMIT, max_buckets);
        let total: usize = l.shards.iter().map(|s| lock(s).capacity).sum();
        assert_eq!(total, max_buckets);
        assert!(l.shards.iter().all(|s| lock(s).capacity >= 1));
        assert_eq!(l.max_buckets(), max_buckets);
        assert_eq!(l.limit(), DEFAULT_LIMIT);
    }
}

// ---- concurrency ----

#[test]
fn concurrent_requests_never_overshoot() {
    let l = IdentifierLimiter::new(lim(50, 60_000), 10_000);
    let admitted = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                for _ in 0..100 {
                    if l.check("shared", 1_000_000).allowed {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.into_inner(), 50);
    assert_eq!(l.check("shared", 1_000_000), rejected(60_000));
}

#[test]
fn concurrent_spraying_stays_bounded() {
    let l = IdentifierLimiter::new(lim(5, 60_000), 500);
    std::thread::scope(|s| {
        for t in 0..8 {
            let l = &l;
            s.spawn(move || {
                for i in 0..5_000 {
                    l.check(&format!("t{t}-{i}"), 1000);
                }
            });
        }
    });
    assert!(l.bucket_count() <= 500);
}

// ---- model check ----

mod model {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// With non-decreasing time and no eviction, the limiter matches
        /// a naive sliding log exactly.
        #[test]
        fn matches_a_naive_sliding_log(
            max in 1u32..6,
            window in 1u64..200,
            ops in prop::collection::vec((0usize..4, 0u64..60), 1..300),
        ) {
            let l = IdentifierLimiter::new(lim(max, window), 100);
            let mut model: Vec<Vec<u64>> = vec![Vec::new(); 4];
            let mut now = 1_000u64;
            for (key, step) in ops {
                now += step;
                let log = &mut model[key];
                log.retain(|&t| now - t < window);
                let expected = if (log.len() as u32) < max {
                    log.push(now);
                    allowed(max - log.len() as u32, window)
                } else {
                    rejected(log[0] + window - now)
                };
                prop_assert_eq!(l.check(&format!("key{key}"), now), expected);
            }
        }

        /// Arbitrary (even decreasing) times and keys never panic, never
        /// exceed the bucket budget, and report sane numbers.
        #[test]
        fn never_panics_and_stays_sane(
            max in 0u32..4,
            window in 0u64..100,
            budget in 0usize..6,
            ops in prop::collection::vec((".{0,6}", any::<u64>()), 1..200),
        ) {
            let l = IdentifierLimiter::new(lim(max, window), budget);
            for (key, now) in ops {
                let d = l.check(&key, now);
                prop_assert!(d.remaining < max.max(1));
                if d.allowed {
                    prop_assert_eq!(d.reset_ms, window);
                } else {
                    prop_assert_eq!(d.remaining, 0);
                    prop_assert!(d.reset_ms <= window.max(1));
                }
                prop_assert!(l.bucket_count() <= budget.max(1));
            }
        }
    }
}
