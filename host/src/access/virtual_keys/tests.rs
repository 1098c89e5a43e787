use super::*;

const FILE: &str = r#"{"keys": [
        {"id": "sk-freellm-alice-0001", "label": "Alice", "dailyRequestCap": 3, "allowedModels": ["free", "groq/llama-3.3-70b-versatile"]},
        {"id": "sk-freellm-bob-0002", "label": "Bob", "dailyTokenCap": 100, "expiresAt": "2026-01-01T00:00:00Z", "extra": 1}
    ]}"#;

#[test]
fn files_are_parsed_and_validated() {
    let set = KeySet::parse(FILE).unwrap();
    assert_eq!(set.len(), 2);
    let alice = set.find("sk-freellm-alice-0001").unwrap();
    assert!(alice.allows("free") && !alice.allows("free-fast"));
    assert!(set.find("sk-freellm-nobody").is_none());
    let bob = set.find("sk-freellm-bob-0002").unwrap();
    assert_eq!(bob.expires_at_ms, Some(1_767_225_600_000));
    assert!(bob.expired(1_767_225_600_001) && !bob.expired(1_767_225_600_000));
    for bad in [
        r#"{"keys": [{"id": "sk-nope", "label": "x"}]}"#,
        r#"{"keys": [{"id": "sk-freellm-abcd", "label": ""}]}"#,
        r#"{"keys": [{"id": "sk-freellm-abcd", "label": "x", "dailyRequestCap": 0}]}"#,
        r#"{"keys": [{"id": "sk-freellm-abcd", "label": "x", "expiresAt": "tomorrow"}]}"#,
        r#"{"keys": [{"id": "sk-freellm-abcd", "label": "x"}, {"id": "sk-freellm-abcd", "label": "y"}]}"#,
        r#"{"keys": "no"}"#,
        "not json",
    ] {
        assert!(KeySet::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn keys_are_found_by_their_handle_but_never_by_the_raw_key_as_a_handle() {
    let set = KeySet::parse(FILE).unwrap();
    let alice = set.find("sk-freellm-alice-0001").unwrap();
    let handle = alice.handle();
    assert_eq!(handle.len(), 64);
    assert!(!handle.contains("alice"));
    assert_eq!(set.find_by_handle(&handle).map(|k| k.label.as_str()), Some("Alice"));
    for bad in ["sk-freellm-alice-0001", "", &handle.to_uppercase(), &handle[..62], &format!("{handle}00")] {
        assert!(set.find_by_handle(bad).is_none(), "{bad:?}");
    }
    // A handle is not a bearer either.
    assert!(set.find(&handle).is_none());
}

#[test]
fn iso_dates_parse() {
    assert_eq!(parse_iso_utc("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_iso_utc("2000-02-29T12:30:15.250Z"), Some(951_827_415_250));
    for bad in ["2026-13-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01 00:00:00Z", "2026-1-1T0:0:0Z"] {
        assert!(parse_iso_utc(bad).is_none(), "{bad}");
    }
}

#[test]
fn masks_never_show_the_whole_id() {
    assert_eq!(mask("sk-freellm-alice-0001"), "sk-freellm-a...0001");
    assert!(!mask("sk-freellm-ab").contains("ab"));
}

#[test]
fn caps_are_exact_and_failed_requests_do_not_count() {
    let keys = VirtualKeys::with_set(None, KeySet::parse(FILE).unwrap());
    let alice = keys.current().find("sk-freellm-alice-0001").unwrap().clone();
    let now = 1_000 * DAY_MS;
    let t1 = keys.admit(&alice, "free", now).unwrap();
    let t2 = keys.admit(&alice, "free", now).unwrap();
    let t3 = keys.admit(&alice, "free", now).unwrap();
    assert_eq!(keys.admit(&alice, "free", now).unwrap_err(), Refusal::RequestCap(3), "in-flight requests count");
    drop(t3); // failed: released
    t1.settle(now, 10);
    t2.settle(now, 10);
    let t4 = keys.admit(&alice, "free", now).unwrap();
    assert!(keys.admit(&alice, "free", now).is_err());
    t4.settle(now, 5);
    assert_eq!(keys.usage_of(&alice.id, now), (3, 25));
    assert_eq!(keys.admit(&alice, "free-fast", now).unwrap_err(), Refusal::ModelNotAllowed);
    // A day later the window is empty again.
    assert!(keys.admit(&alice, "free", now + DAY_MS + MINUTE_MS).is_ok());
}

#[test]
fn concurrent_admissions_never_overshoot() {
    let keys = Arc::new(VirtualKeys::with_set(None, KeySet::parse(FILE).unwrap()));
    let alice = keys.current().find("sk-freellm-alice-0001").unwrap().clone();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (keys, alice) = (keys.clone(), alice.clone());
            std::thread::spawn(move || keys.admit(&alice, "free", 5 * DAY_MS).map(|t| t.settle(5 * DAY_MS, 1)).is_ok())
        })
        .collect();
    let admitted = handles.into_iter().map(|h| h.join().is_ok_and(|ok| ok)).filter(|ok| *ok).count();
    assert_eq!(admitted, 3);
}

#[test]
fn token_caps_and_expiry_refuse() {
    let keys = VirtualKeys::with_set(None, KeySet::parse(FILE).unwrap());
    let bob = keys.current().find("sk-freellm-bob-0002").unwrap().clone();
    let before = 1_767_225_000_000;
    keys.admit(&bob, "free", before).unwrap().settle(before, 150);
    assert_eq!(keys.admit(&bob, "free", before).unwrap_err(), Refusal::TokenCap(100));
    assert_eq!(keys.admit(&bob, "free", 1_767_225_600_001).unwrap_err(), Refusal::Expired);
}

#[test]
fn usage_round_trips_for_the_store_and_reload_keeps_old_keys_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    std::fs::write(&path, FILE).unwrap();
    let keys = VirtualKeys::load(&path).unwrap();
    let alice = keys.current().find("sk-freellm-alice-0001").unwrap().clone();
    let now = 2_000 * DAY_MS;
    keys.admit(&alice, "free", now).unwrap().settle(now, 7);
    let saved = keys.export_usage();
    let restored = VirtualKeys::load(&path).unwrap();
    restored.import_usage(saved);
    assert_eq!(restored.usage_of(&alice.id, now), (1, 7));

    std::fs::write(&path, "{broken").unwrap();
    assert!(keys.reload().is_err());
    assert!(keys.last_error().is_some());
    assert_eq!(keys.current().len(), 2, "previous keys stay in force");
    std::fs::write(&path, r#"{"keys": [{"id": "sk-freellm-carol-0003", "label": "Carol"}]}"#).unwrap();
    assert_eq!(keys.reload().unwrap(), 1);
    assert!(keys.last_error().is_none());
    assert!(keys.current().find("sk-freellm-alice-0001").is_none());
}
