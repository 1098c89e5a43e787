//! End-to-end: routing health travels across gateway processes sharing a
//! real `redis-server` (#17 item 3). A 429 with `Retry-After` seen by one
//! instance cools that key for the others before their next request; an
//! invalid key is out for all; a breaker opened by one is open for all, its
//! half-open probe is sent by one instance only; an admin reset on one
//! resets all; an instance that starts late learns what is in force.
//!
//! Propagation is measured (publish on A → applied on B, from B's log) and
//! printed, never asserted on time: the assertions are about order.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::Value;

const ADMIN: &str = "admin-secret-key-9876543210";
const MODEL: &str = "groq/llama-3.3-70b-versatile";
/// A declared per-key window no test here fills.
const ROOMY_RPM: u32 = 100_000;

/// `n` distinct groq keys.
fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("gsk_fleet_health_key_{i:02}_abcdefghijkl")).collect()
}

fn options(mock: &MockUpstream, keys: &[String], extra: &[(&str, &str)]) -> GatewayOptions {
    let mut env = vec![
        ("GROQ_API_KEY".to_owned(), keys.join(",")),
        ("GROQ_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
        ("FREELLM_ADMIN_KEY".to_owned(), ADMIN.to_owned()),
        ("CACHE_ENABLED".to_owned(), "false".to_owned()),
        ("ROUTE_MAX_RETRY_AFTER_WAIT_MS".to_owned(), "0".to_owned()),
        ("ROUTE_TRANSIENT_RETRIES".to_owned(), "0".to_owned()),
        // The applied changes and their lag, for the measurement.
        ("LOG_LEVEL".to_owned(), "info,freellm::fleet::health_sync=debug".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    // Groq declares 30 rpm per key, and with Redis that window is the
    // fleet's: the tests' hundred-odd requests a minute would fill it. These
    // tests are about health, not windows (fleet_caps.rs tests those), so
    // the window is roomy; but declared, as every built-in adapter's is, so
    // each pick is confirmed in Redis, where a key's rest is read too.
    GatewayOptions { config: config_with_groq_rpm(ROOMY_RPM), env }
}

async fn chat(gw: &Gateway) -> reqwest::Response {
    gw.http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(ADMIN)
        .json(&chat_body(MODEL))
        .send()
        .await
        .expect("answer")
}

async fn admin(gw: &Gateway, method: reqwest::Method, path: &str) -> Value {
    let r = gw.http.request(method, format!("{}{path}", gw.url)).bearer_auth(ADMIN).send().await.expect("admin call");
    r.json().await.expect("json")
}

/// The key (its secret) each upstream request since `from` carried.
fn keys_used(mock: &MockUpstream, from: usize) -> Vec<String> {
    mock.requests()[from..]
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().trim_start_matches("Bearer ").to_owned())
        .collect()
}

/// Waits until every instance's subscriber has resynchronised (it
/// subscribes first), so the test measures propagation, not start-up.
async fn wait_subscribed(fleet: &[Gateway]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fleet.iter().all(|gw| gw.log().contains("fleet health resynchronised")) {
        assert!(Instant::now() < deadline, "a subscriber never resynchronised");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `text` without ANSI colour sequences (the log may be coloured).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `lag_us` of every applied change of `kind` in a log.
fn lags_us(log: &str, kind: &str) -> Vec<u64> {
    plain(log)
        .lines()
        .filter(|l| l.contains("fleet health change applied") && l.contains(kind))
        .filter_map(|l| l.split("lag_us=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// How many changes of `kind` an instance applied (and that changed something).
fn applied(gw: &Gateway, kind: &str) -> usize {
    plain(&gw.log())
        .lines()
        .filter(|l| l.contains("fleet health change applied") && l.contains(kind) && l.contains("changed=true"))
        .count()
}

/// How many changes of `kind` an instance received and applied, whether
/// or not they changed anything.
fn received(gw: &Gateway, kind: &str) -> usize {
    plain(&gw.log()).lines().filter(|l| l.contains("fleet health change applied") && l.contains(kind)).count()
}

/// Waits until `gw` has applied `n` changes of `kind`. The tests that use
/// it are about what a change does once it arrives; the order guarantee
/// itself is asserted by the rate-limit test, which does not wait.
async fn wait_applied(gw: &Gateway, kind: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while applied(gw, kind) < n {
        assert!(Instant::now() < deadline, "{kind} never applied:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test]
async fn a_key_rate_limited_on_one_instance_is_not_used_by_another() {
    const ROUNDS: usize = 20;
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let keys = keys(4);
    let fleet = Gateway::start_fleet(2, &redis.url(), |_| options(&mock, &keys, &[])).await;
    let (a, b) = (&fleet[0], &fleet[1]);
    wait_subscribed(&fleet).await;

    for round in 0..ROUNDS {
        // A fresh start each round: the reset on A is shared before A answers.
        admin(a, reqwest::Method::POST, "/v1/status/providers/groq/reset").await;
        // B's rotation below must start from that reset, not see it land
        // midway (a late reset empties B's windows and B repeats a key).
        let deadline = Instant::now() + Duration::from_secs(10);
        while received(b, "ResetProvider") < round + 1 {
            assert!(Instant::now() < deadline, "round {round}: B never got the reset:\n{}", b.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = mock.requests().len();
        mock.enqueue([Reply::error(429, "rate limited").with_header("retry-after", "60")]);
        assert_eq!(chat(a).await.status(), 200, "A fails over to its next key");
        let used = keys_used(&mock, before);
        let cooled = used.first().cloned().expect("A called the upstream");
        assert_eq!(used.len(), 2, "one 429, then one answer: {used:?}");

        // Right after A answered: B, asked as many times as it has keys
        // (its rotation would reach every key), never sends the cooled one.
        let before_b = mock.requests().len();
        for _ in 0..keys.len() {
            assert_eq!(chat(b).await.status(), 200);
        }
        let used_by_b = keys_used(&mock, before_b);
        assert!(!used_by_b.contains(&cooled), "round {round}: B used the key A saw rate-limited: {used_by_b:?}");
        assert_eq!(used_by_b.iter().collect::<HashSet<_>>().len(), keys.len() - 1, "B rotates over the others");
    }
    let status = admin(b, reqwest::Method::GET, "/v1/status").await;
    assert!(status.to_string().contains("\"instanceId\":\"gw-1\""));

    let lags = lags_us(&b.log(), "CoolKey");
    assert!(lags.len() >= ROUNDS, "B applied every rest: {} of {ROUNDS}", lags.len());
    let mut sorted = lags.clone();
    sorted.sort_unstable();
    println!(
        "propagation of a key's rest, A's publish -> applied on B, over {} changes: median {} us, p90 {} us, max {} us",
        lags.len(),
        median(lags.clone()),
        sorted[sorted.len() * 9 / 10],
        sorted[sorted.len() - 1]
    );
}

#[tokio::test]
async fn a_key_rejected_on_one_instance_is_out_for_all() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let keys = keys(2);
    let fleet = Gateway::start_fleet(2, &redis.url(), |_| options(&mock, &keys, &[])).await;
    let (a, b) = (&fleet[0], &fleet[1]);
    wait_subscribed(&fleet).await;

    mock.enqueue([Reply::error(401, "invalid api key")]);
    assert_eq!(chat(a).await.status(), 200);
    let rejected = keys_used(&mock, 0).first().cloned().expect("a call");
    wait_applied(b, "DisableKey", 1).await;
    let before = mock.requests().len();
    for _ in 0..4 {
        assert_eq!(chat(b).await.status(), 200);
    }
    assert!(!keys_used(&mock, before).contains(&rejected), "B sent the key the upstream rejected on A");
    let status = admin(b, reqwest::Method::GET, "/v1/status").await;
    let groq =
        status["providers"].as_array().and_then(|p| p.iter().find(|p| p["id"] == "groq")).cloned().expect("groq");
    assert_eq!(groq["keys"].as_array().map(|k| k.iter().filter(|k| k["invalid"] == true).count()), Some(1), "{groq}");
    let text = status.to_string();
    assert!(!keys.iter().any(|k| text.contains(k.as_str())), "no secret in status");
}

#[tokio::test]
async fn a_breaker_opened_on_one_instance_is_open_for_all_and_probed_once() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let keys = keys(1);
    let breaker = [("CB_FAILURE_THRESHOLD", "1"), ("CB_SUCCESS_THRESHOLD", "1"), ("CB_TIMEOUT_MS", "1500")];
    let fleet = Gateway::start_fleet(3, &redis.url(), |_| options(&mock, &keys, &breaker)).await;
    wait_subscribed(&fleet).await;

    mock.enqueue([Reply::error(500, "upstream down")]);
    assert!(!chat(&fleet[0]).await.status().is_success(), "A's only target failed");
    for gw in &fleet[1..] {
        wait_applied(gw, "OpenBreaker", 1).await;
    }
    let before = mock.requests().len();
    for gw in &fleet[1..] {
        let r = chat(gw).await;
        assert!(!r.status().is_success(), "the breaker A opened is open here: {}", r.status());
    }
    assert_eq!(mock.requests().len(), before, "no instance called the model whose breaker is open");

    // Open-until is shared: every instance turns half-open at once, and one
    // of them (whichever claims it) sends the single probe.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    mock.enqueue([Reply::Delayed(Duration::from_millis(600), Box::new(Reply::ok(completion("m", "probe ok"))))]);
    let before = mock.requests().len();
    let answers = futures_util::future::join_all(fleet.iter().map(chat)).await;
    assert_eq!(mock.requests().len() - before, 1, "one probe across the fleet");
    assert_eq!(answers.iter().filter(|r| r.status().is_success()).count(), 1, "only the probe answered");

    // The probe closed the breaker everywhere.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.iter().filter(|gw| applied(gw, "CloseBreaker") >= 1).count() < fleet.len() - 1 {
        assert!(Instant::now() < deadline, "the probe's outcome never reached the others");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for gw in &fleet {
        assert_eq!(chat(gw).await.status(), 200);
    }
}

#[tokio::test]
async fn an_admin_reset_on_one_instance_resets_all() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let keys = keys(1);
    let breaker = [("CB_FAILURE_THRESHOLD", "1"), ("CB_TIMEOUT_MS", "60000")];
    let fleet = Gateway::start_fleet(2, &redis.url(), |_| options(&mock, &keys, &breaker)).await;
    let (a, b) = (&fleet[0], &fleet[1]);
    wait_subscribed(&fleet).await;
    mock.enqueue([Reply::error(500, "upstream down")]);
    assert!(!chat(a).await.status().is_success());
    wait_applied(b, "OpenBreaker", 1).await;
    assert!(!chat(b).await.status().is_success(), "open on B too");
    admin(a, reqwest::Method::POST, "/v1/status/providers/groq/reset").await;
    wait_applied(b, "ResetProvider", 1).await;
    assert_eq!(chat(b).await.status(), 200, "A's reset closed B's breaker");
}

#[tokio::test]
async fn an_instance_that_starts_later_learns_the_health_in_force() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let keys = keys(2);
    let first = Gateway::start_fleet(1, &redis.url(), |_| options(&mock, &keys, &[])).await;
    wait_subscribed(&first).await;
    mock.enqueue([Reply::error(429, "rate limited").with_header("retry-after", "120")]);
    assert_eq!(chat(&first[0]).await.status(), 200);
    let cooled = keys_used(&mock, 0).first().cloned().expect("a call");

    let late = Gateway::start_with({
        let mut o = options(&mock, &keys, &[("FREELLM_INSTANCE_ID", "gw-late")]);
        o.env.push(("FREELLM_REDIS_URL".into(), redis.url()));
        o
    })
    .await;
    wait_subscribed(std::slice::from_ref(&late)).await;
    let before = mock.requests().len();
    for _ in 0..4 {
        assert_eq!(chat(&late).await.status(), 200);
    }
    assert!(!keys_used(&mock, before).contains(&cooled), "the late instance used a key resting fleet-wide");
}

#[tokio::test]
async fn garbage_on_the_channel_is_ignored_with_a_warning() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let keys = keys(1);
    let fleet = Gateway::start_fleet(1, &redis.url(), |_| options(&mock, &keys, &[])).await;
    wait_subscribed(&fleet).await;
    for garbage in [
        "not json",
        "{\"v\":99}",
        "{\"v\":1,\"from\":\"x\",\"atUs\":1,\"change\":{\"kind\":\"provider_reset\",\"provider\":\"../\"}}",
    ] {
        redis.command(&["PUBLISH", "freellm:health", garbage]).await.expect("published");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(chat(&fleet[0]).await.status(), 200, "still serving");
    assert!(fleet[0].log().contains("ignored a malformed fleet health message"), "{}", fleet[0].log());
    assert!(!fleet[0].log().contains("panicked"));
}

#[tokio::test]
async fn health_learned_while_redis_was_down_is_written_back_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let keys = keys(2);
    let fleet = Gateway::start_fleet(2, &redis.url(), |_| options(&mock, &keys, &[])).await;
    let (a, b) = (&fleet[0], &fleet[1]);
    wait_subscribed(&fleet).await;

    redis.kill();
    // Routing health fails open: A decides alone, as a single instance would.
    mock.enqueue([Reply::error(429, "rate limited").with_header("retry-after", "120")]);
    assert_eq!(chat(a).await.status(), 200);
    let cooled = keys_used(&mock, 0).first().cloned().expect("a call");

    // Redis returns empty; A writes back what it learned alone.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let resyncs = |gw: &Gateway| gw.log().matches("fleet health resynchronised").count();
    while !(resyncs(a) >= 2 && resyncs(b) >= 2) {
        assert!(Instant::now() < deadline, "no resynchronisation after Redis returned:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = mock.requests().len();
    for _ in 0..4 {
        assert_eq!(chat(b).await.status(), 200);
    }
    assert!(!keys_used(&mock, before).contains(&cooled), "B used the key A cooled while Redis was down");
}

/// The id a key has in Redis: `<provider>#` and the first 16 hex digits of
/// its secret's SHA-256 (never the secret).
fn store_id(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("groq#{}", &hex::encode(Sha256::digest(secret.as_bytes()))[..16])
}

#[tokio::test]
async fn a_key_the_fleet_rests_is_skipped_before_its_message_arrives() {
    // The order window: an instance may pick a key before it has applied
    // the message that rested it elsewhere (a starved instance, a slow
    // subscriber). The pick's reservation reads the fleet's health in the
    // same script, so the rest in Redis alone is enough. The items are
    // written straight into Redis here, with no message at all.
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let keys = keys(3);
    let fleet = Gateway::start_fleet(1, &redis.url(), |_| options(&mock, &keys, &[])).await;
    wait_subscribed(&fleet).await;
    let gw = &fleet[0];

    let rest = format!("freellm:health:groq:cool:groq:{}", store_id(&keys[0]));
    let invalid = format!("freellm:health:groq:invalid:{}", store_id(&keys[1]));
    assert_eq!(redis.command(&["SET", &rest, "{}", "PX", "60000"]).await.as_deref(), Some("+OK\r\n"));
    assert_eq!(redis.command(&["SET", &invalid, "{}", "PX", "60000"]).await.as_deref(), Some("+OK\r\n"));
    let before = mock.requests().len();
    for _ in 0..6 {
        assert_eq!(chat(gw).await.status(), 200);
    }
    let used = keys_used(&mock, before);
    assert_eq!(used.len(), 6, "one upstream call per request: {used:?}");
    assert!(used.iter().all(|k| *k == keys[2]), "only the key the fleet holds good: {used:?}");
}
