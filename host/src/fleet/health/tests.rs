use super::*;
use crate::testing::{Bench, provider};
use serde_json::json;

const NOW: u64 = 1_800_000_000_000;

fn cooled(until: u64) -> HealthChange {
    HealthChange::KeyCooled { provider: "p".into(), ring: "p".into(), key: "p#0123456789abcdef".into(), until }
}

fn envelope(from: &str, change: HealthChange) -> Envelope {
    Envelope::new(from, NOW * 1000, change)
}

#[test]
fn every_change_survives_the_wire() {
    let changes = [
        cooled(NOW + 5_000),
        HealthChange::KeyCooled {
            provider: "gemini".into(),
            ring: "gemini/gemini-2.0-flash".into(),
            key: "gemini/gemini-2.0-flash#keyless".into(),
            until: NOW,
        },
        HealthChange::KeyInvalid { provider: "p".into(), key: "p#0123456789abcdef".into(), reason: "401".into() },
        breaker_opened("p", "llama3:8b", Duration::from_secs(5), NOW),
        HealthChange::BreakerClosed { provider: "p".into(), model: "m".into() },
        HealthChange::ProviderReset { provider: "p".into() },
    ];
    for change in changes {
        let e = envelope("gw-1", change);
        assert_eq!(Envelope::parse(e.encode().as_bytes()), Ok(e.clone()), "{}", e.encode());
    }
}

#[test]
fn hostile_or_garbage_messages_are_refused_not_applied() {
    let good = serde_json::to_value(envelope("gw-1", cooled(NOW))).expect("json");
    let with = |pointer: &str, value: serde_json::Value| {
        let mut v = good.clone();
        *v.pointer_mut(pointer).expect("field") = value;
        v.to_string().into_bytes()
    };
    let mut extra = good.clone();
    extra["change"]["secret"] = json!("x");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (vec![0xff, 0xfe, 0x00], "not UTF-8"),
        (b"[1,2,3]".to_vec(), "not an object"),
        (vec![b' '; MAX_MESSAGE_BYTES + 1], "oversized"),
        (with("/v", json!(2)), "a newer version"),
        (with("/v", json!("1")), "a version that is not a number"),
        (with("/from", json!("gw 1\n")), "an instance id no instance has"),
        (with("/change/kind", json!("key_stolen")), "an unknown kind"),
        (with("/change/provider", json!("../etc")), "a provider id no provider has"),
        (with("/change/ring", json!("other")), "a ring of another provider"),
        (with("/change/key", json!("sk-live-secret")), "a key that is not a store id"),
        (with("/change/until", json!(-5)), "a negative time"),
        (extra.to_string().into_bytes(), "an unknown field"),
    ];
    for (bytes, what) in cases {
        assert!(Envelope::parse(&bytes).is_err(), "{what} was accepted");
    }
    assert_eq!(Envelope::parse(with("/v", json!(2)).as_slice()), Err(WireError::Version(2)));
}

#[test]
fn own_and_expired_changes_do_nothing_and_long_ones_are_bounded() {
    let e = envelope("gw-1", cooled(NOW + 5_000));
    assert_eq!(decide(&e, Some("gw-1"), NOW), None, "this instance's own message");
    assert!(
        matches!(decide(&e, None, NOW), Some(Apply::CoolKey { wait, .. }) if wait == Duration::from_secs(5)),
        "a resynchronisation relearns what this instance published before a restart"
    );
    assert!(matches!(decide(&e, Some("gw-2"), NOW), Some(Apply::CoolKey { .. })));
    assert_eq!(decide(&e, Some("gw-2"), NOW + 5_000), None, "over already");
    let forever = envelope("gw-1", cooled(u64::MAX));
    assert!(matches!(decide(&forever, None, NOW), Some(Apply::CoolKey { wait, .. }) if wait == MAX_QUOTA_REST));
    let open = envelope("gw-1", breaker_opened("p", "m", Duration::from_secs(10 * 3600), NOW));
    assert!(matches!(
        decide(&open, None, NOW),
        Some(Apply::OpenBreaker { remaining, period, .. }) if remaining == MAX_BREAKER_OPEN && period == MAX_BREAKER_OPEN
    ));
}

#[test]
fn items_expire_with_the_change_and_a_reset_has_none() {
    assert_eq!(cooled(NOW + 1_500).keep_ms(NOW), 1_500);
    assert_eq!(cooled(NOW).keep_ms(NOW + 1), 0);
    assert_eq!(cooled(NOW).item_id().as_deref(), Some("p:cool:p:p#0123456789abcdef"));
    assert_eq!(HealthChange::ProviderReset { provider: "p".into() }.item_id(), None);
    let closed = HealthChange::BreakerClosed { provider: "p".into(), model: "m".into() };
    assert_eq!((closed.keep_ms(NOW), closed.item_id()), (0, breaker_opened("p", "m", Duration::ZERO, NOW).item_id()));
}

#[test]
fn a_cooled_key_is_found_by_its_store_id_and_rests_for_the_wait() {
    let keys = KeyRing::new(vec!["key-one-aaaaaaaa".into(), "key-two-bbbbbbbb".into()], Default::default());
    let second = keys.store_id("p", 1).expect("id");
    assert!(cool_key(&keys, "p", &second, Duration::from_secs(30)));
    assert!(keys.cooldown_left(0).is_none());
    assert!(keys.cooldown_left(1).is_some_and(|left| left > Duration::from_secs(29)));
    assert!(!cool_key(&keys, "p", "p#ffffffffffffffff", Duration::from_secs(30)), "no such key");
    assert!(!cool_key(&keys, "q", &second, Duration::from_secs(30)), "another scope names other keys");
    // A shorter rest never shortens a longer one.
    cool_key(&keys, "p", &second, Duration::from_secs(1));
    assert!(keys.cooldown_left(1).is_some_and(|left| left > Duration::from_secs(29)));
}

async fn bench() -> Bench {
    Bench::start(&provider("p", "tools"), &[("P_API_KEY", "key-one-aaaaaaaa,key-two-bbbbbbbb")]).await
}

#[tokio::test]
async fn received_changes_land_on_the_keys_and_breakers() {
    let b = bench().await;
    let registry = b.gw.registry.load().clone();
    let p = b.provider("p");
    let now = crate::clock::now();
    let key = p.keys.store_id("p", 1).expect("id");
    let apply_at = |change: HealthChange| {
        let change = decide(&envelope("gw-9", change), Some("gw-0"), NOW).expect("applies");
        apply(&registry, &change, now)
    };

    assert!(apply_at(HealthChange::KeyCooled {
        provider: "p".into(),
        ring: "p".into(),
        key: key.clone(),
        until: NOW + 60_000
    }));
    assert!(p.keys.cooldown_left(1).is_some() && p.keys.cooldown_left(0).is_none());

    assert!(apply_at(HealthChange::KeyInvalid {
        provider: "p".into(),
        key: key.clone(),
        reason: "401 bad key".into()
    }));
    assert!(p.keys.status(now)[1].invalid);
    assert!(!apply_at(HealthChange::KeyInvalid { provider: "p".into(), key, reason: "again".into() }), "once");

    assert!(apply_at(breaker_opened("p", "m", Duration::from_secs(8), NOW)));
    assert!(!p.breakers.is_available("m", now));
    assert!(!apply_at(breaker_opened("p", "not-in-the-catalog", Duration::from_secs(8), NOW)));
    assert!(p.breakers.get("not-in-the-catalog").is_none(), "a message never grows the breaker table");
    assert!(apply_at(HealthChange::BreakerClosed { provider: "p".into(), model: "m".into() }));
    assert!(p.breakers.is_available("m", now));

    apply_at(breaker_opened("p", "m", Duration::from_secs(8), NOW));
    assert!(apply_at(HealthChange::ProviderReset { provider: "p".into() }));
    assert!(p.breakers.is_available("m", now) && p.keys.status(now).iter().all(|k| !k.invalid && !k.rate_limited));

    assert!(!apply_at(HealthChange::ProviderReset { provider: "absent".into() }), "an unknown provider");
}

#[tokio::test]
async fn what_one_instance_has_in_force_another_learns_whole() {
    let (a, b) = (bench().await, bench().await);
    let (pa, pb) = (a.provider("p"), b.provider("p"));
    let now = crate::clock::now();
    pa.keys.cool_down(0, Duration::from_secs(90));
    pa.disable_key(1, "401 from upstream");
    pa.breakers.for_model("m").open_until(now, Duration::from_secs(20), Duration::from_secs(20));

    let changes = in_force(&a.gw.registry.load(), now, NOW);
    assert_eq!(changes.len(), 3, "{changes:?}");
    for change in changes {
        let wire = Envelope::parse(envelope("gw-0", change).encode().as_bytes()).expect("parses");
        let apply_change = decide(&wire, None, NOW).expect("in force");
        assert!(apply(&b.gw.registry.load(), &apply_change, now));
    }
    assert!(pb.keys.cooldown_left(0).is_some_and(|left| left > Duration::from_secs(80)));
    assert!(pb.keys.status(now)[1].invalid);
    assert_eq!(pb.breakers.summary(now).state, BreakerState::Open);
}
