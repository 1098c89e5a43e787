use super::*;

fn ring(n: usize, limits: Limits) -> KeyRing {
    KeyRing::new((0..n).map(|i| format!("k{i}")).collect(), limits)
}

fn pick_index(r: &KeyRing, exclude: &[usize]) -> Option<usize> {
    r.pick(exclude, Instant::now(), 10).ok().map(|p| p.index)
}

#[test]
fn a_rest_survives_export_and_restore_for_what_is_left_of_it() {
    let r = ring(2, Limits::default());
    r.cool_down(1, Duration::from_secs(90));
    let (now, wall) = (Instant::now(), SystemTime::now());
    let saved = r.export_state_at("groq", now, wall);
    assert_eq!(saved[0].1.cooled_until_unix_ms, None, "a ready key saves no rest");
    let until = saved[1].1.cooled_until_unix_ms.expect("the resting key saves its end");
    assert!((unix_ms(wall) + 89_000..=unix_ms(wall) + 90_000).contains(&until), "{until}");
    let lookup = |id: &str| saved.iter().find(|(s, _)| s == id).map(|(_, state)| state.clone());

    // Restored 30 s later (a restart): 60 s left, on the same key.
    let mut restored = ring(2, Limits::default());
    restored.restore_state_at("groq", &lookup, Instant::now(), wall + Duration::from_secs(30));
    assert_eq!(restored.cooldown_left(0), None);
    let left = restored.cooldown_left(1).expect("still resting");
    assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60), "{left:?}");
    assert_eq!(pick_index(&restored, &[]), Some(0));

    // Restored after the rest ended: ready.
    let mut later = ring(2, Limits::default());
    later.restore_state_at("groq", &lookup, Instant::now(), wall + Duration::from_secs(120));
    assert_eq!(later.cooldown_left(1), None);

    // A key whose secret changed has another store id: it starts fresh.
    let mut other = KeyRing::new(vec!["k0".into(), "k1-rotated".into()], Limits::default());
    other.restore_state_at("groq", &lookup, Instant::now(), wall);
    assert_eq!(other.cooldown_left(1), None);
}

#[test]
fn a_saved_rest_is_capped_and_old_state_still_loads() {
    let wall = SystemTime::now();
    let far = KeyState { windows: WindowState::default(), cooled_until_unix_ms: Some(unix_ms(wall) + 30 * 86_400_000) };
    let mut r = ring(1, Limits::default());
    r.restore_state_at("p", &|_| Some(far.clone()), Instant::now(), wall);
    assert!(r.cooldown_left(0).unwrap() <= MAX_QUOTA_REST, "a clock jump cannot bench a key for a month");

    // State written before cooldowns were saved: windows only.
    let old: KeyState = serde_json::from_str(r#"{"minute":[],"day":[{"startUnixMs":1,"requests":2,"tokens":3}]}"#)
        .expect("old format loads");
    assert_eq!(old.cooled_until_unix_ms, None);
    assert_eq!(old.windows.day.len(), 1);
    let json = serde_json::to_value(&far).unwrap();
    assert!(json["cooledUntilUnixMs"].is_u64() && json["minute"].is_array(), "{json}");
}

#[test]
fn picks_rotate_across_keys() {
    let r = ring(3, Limits::default());
    let picked: Vec<_> = (0..4).map(|_| r.pick(&[], Instant::now(), 1).unwrap().secret.unwrap().to_owned()).collect();
    assert_eq!(picked, ["k0", "k1", "k2", "k0"]);
}

#[test]
fn cooled_key_is_skipped_until_it_is_cleared() {
    let r = ring(2, Limits::default());
    r.cool_down(0, Duration::from_secs(5));
    for _ in 0..3 {
        assert_eq!(pick_index(&r, &[]), Some(1));
    }
    let left = r.cooldown_left(0).unwrap();
    assert!(left > Duration::from_secs(4) && left <= Duration::from_secs(5), "{left:?}");
    r.clear(0);
    assert!(r.cooldown_left(0).is_none());
}

#[test]
fn cooldowns_clamp_and_report_the_wait() {
    assert_eq!(clamp_cooldown(Duration::from_millis(10)), MIN_COOLDOWN);
    assert_eq!(clamp_cooldown(Duration::from_secs(99_999)), MAX_COOLDOWN);
    let r = ring(1, Limits::default());
    r.cool_down(0, Duration::from_secs(30));
    let wait = r.pick(&[], Instant::now(), 1).unwrap_err();
    assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30));
    assert!(r.wait_for_headroom(Instant::now(), 1).is_some());
    assert_eq!(r.available(Instant::now()), 0);
}

#[test]
fn full_windows_are_not_picked() {
    let limits = Limits { requests_per_minute: Some(2), ..Limits::default() };
    let r = ring(2, limits);
    let now = Instant::now();
    let picks: Vec<usize> = (0..4).map(|_| r.pick(&[], now, 1).unwrap().index).collect();
    assert_eq!(picks.iter().filter(|i| **i == 0).count(), 2);
    let wait = r.pick(&[], now, 1).unwrap_err();
    assert!(wait <= Duration::from_secs(60) && wait > Duration::ZERO, "{wait:?}");
    assert!(r.wait_for_headroom(now, 1).is_some());
    assert!(r.status(now).iter().all(|k| k.rate_limited && k.requests_in_window == 2));
}

#[test]
fn a_released_reservation_frees_the_window() {
    let limits = Limits { requests_per_minute: Some(1), ..Limits::default() };
    let r = ring(1, limits);
    let p = r.pick(&[], Instant::now(), 1).unwrap();
    let (index, reservation) = (p.index, p.reservation);
    assert!(r.pick(&[], Instant::now(), 1).is_err());
    r.release(index, reservation);
    assert!(r.pick(&[], Instant::now(), 1).is_ok());
}

#[test]
fn invalid_keys_leave_rotation_until_reset() {
    let r = ring(2, Limits::default());
    r.disable(0, "invalid api key gsk_abcdefghijklmnopqrstuvwxyz");
    for _ in 0..3 {
        assert_eq!(pick_index(&r, &[]), Some(1));
    }
    assert_eq!(r.pick(&[1], Instant::now(), 1).unwrap_err(), Duration::MAX);
    let status = r.status(Instant::now());
    assert!(status[0].invalid && !status[0].invalid_reason.as_deref().unwrap().contains("gsk_abc"));
    r.reset();
    assert!(!r.status(Instant::now())[0].invalid);
}

#[test]
fn quota_exhaustion_rests_until_midnight_utc() {
    let r = ring(1, Limits::default());
    let noon = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 43_200);
    r.exhaust_quota(0, None, noon);
    let left = r.cooldown_left(0).unwrap();
    assert!(left > Duration::from_secs(43_100) && left <= Duration::from_secs(43_200), "{left:?}");
    let r = ring(1, Limits::default());
    r.exhaust_quota(0, Some(Duration::from_secs(7_200)), noon);
    assert!(r.cooldown_left(0).unwrap() > Duration::from_secs(7_100));
}

#[test]
fn excluded_keys_are_not_picked_again() {
    let r = ring(2, Limits::default());
    assert_eq!(pick_index(&r, &[0]), Some(1));
    assert!(r.pick(&[0, 1], Instant::now(), 1).is_err());
    assert!(KeyRing::keyless(Limits::default()).pick(&[], Instant::now(), 1).unwrap().secret.is_none());
}
