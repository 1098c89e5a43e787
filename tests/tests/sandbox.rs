//! End-to-end: a deliberately hostile component (infinite loop, unbounded
//! memory growth, panic) fails its own calls and never the host.

use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::Value;

async fn hostile_gateway(mock: &MockUpstream, extra_settings: &str) -> Gateway {
    hostile_gateway_with(mock, extra_settings, &[("CB_FAILURE_THRESHOLD", "10")]).await
}

async fn hostile_gateway_with(mock: &MockUpstream, extra_settings: &str, env: &[(&str, &str)]) -> Gateway {
    let config = format!(
        "[providers.hostile]\ncomponent = \"{{component:freellm-provider-hostile}}\"\n{extra_settings}\
         [providers.hostile.sandbox]\nmemory_mb = 16\ncpu_ms = 100\n"
    );
    Gateway::start_with(GatewayOptions {
        config,
        env: [
            ("HOSTILE_API_KEY".to_owned(), "k".to_owned()),
            ("HOSTILE_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
        ]
        .into_iter()
        .chain(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
        .collect(),
    })
    .await
}

async fn expect_fault(gw: &Gateway, model: &str, needle: &str) {
    let started = Instant::now();
    let r = gw.chat(chat_body(model)).await;
    assert_eq!(r.status(), 429, "{model}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "all_providers_exhausted", "{body}");
    assert_eq!(body["error"]["attempts"][0]["outcome"], "adapter_fault", "{body}");
    let message = body["error"]["attempts"][0]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{model}: {message}");
    assert!(message.contains("adapter \"hostile\" failed"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10), "{model} took {:?}", started.elapsed());
}

#[tokio::test]
async fn hostile_component_faults_are_contained() {
    let mock = MockUpstream::completing().await;
    let mut gw = hostile_gateway(&mock, "").await;
    expect_fault(&gw, "hostile/loop", "CPU time").await;
    gw.assert_healthy().await;
    expect_fault(&gw, "hostile/grow", "memory").await;
    gw.assert_healthy().await;
    expect_fault(&gw, "hostile/panic", "trapped").await;
    assert!(gw.log().contains("hostile adapter panicked on purpose"), "the details stay in the log");
    gw.assert_healthy().await;
    assert!(mock.requests().is_empty(), "nothing reached the upstream");

    // The same component still serves well-behaved calls: a fault retires only its instance.
    let r = gw.chat(chat_body("hostile/ok")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
}

#[tokio::test]
async fn a_trap_after_the_upstream_call_is_a_provider_failure() {
    let mock = MockUpstream::completing().await;
    let mut gw = hostile_gateway(&mock, "settings = { normalize = \"panic\" }\n").await;
    let r = gw.chat(chat_body("hostile/ok")).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["attempts"][0]["outcome"], "adapter_fault", "{body}");
    assert_eq!(mock.requests().len(), 1);
    gw.assert_healthy().await;
}

#[tokio::test]
async fn an_adapter_that_traps_repeatedly_is_quarantined_by_the_breaker_of_that_model() {
    let mock = MockUpstream::completing().await;
    let mut gw = hostile_gateway_with(&mock, "", &[("CB_FAILURE_THRESHOLD", "3"), ("CB_TIMEOUT_MS", "60000")]).await;
    for _ in 0..3 {
        expect_fault(&gw, "hostile/panic", "trapped").await;
    }
    let traps = || gw.log().matches("hostile adapter panicked on purpose").count();
    // The log is read from the gateway's stderr as it comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = traps();
    assert!(before >= 3, "{}", gw.log());
    // The breaker of that model is open: the adapter is not called for it.
    let r = gw.chat(chat_body("hostile/panic")).await;
    assert_eq!(r.status(), 429, "{}", gw.log());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "all_providers_exhausted", "{body}");
    assert_eq!(body["error"]["attempts"][0]["outcome"], "circuit_open", "{body}");
    assert_eq!(body["error"]["providers"][0]["circuit_state"], "open", "the provider's summary: {body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(traps(), before, "no call into the adapter for the quarantined model");
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let hostile = status["providers"].as_array().unwrap().iter().find(|p| p["id"] == "hostile").unwrap().clone();
    assert_eq!(hostile["circuitBreakerState"], "open", "{hostile}");
    assert_eq!(hostile["modelBreakers"]["panic"]["state"], "open", "{hostile}");
    assert!(mock.requests().is_empty());
    // The provider's other models keep serving.
    let r = gw.chat(chat_body("hostile/ok")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    // An admin reset closes every model's breaker again.
    let r = gw.http.post(format!("{}/v1/status/providers/hostile/reset", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["circuitBreakerState"], "closed", "{answer}");
    expect_fault(&gw, "hostile/panic", "trapped").await;
    gw.assert_healthy().await;
}

/// The `x-hostile-calls` header of every upstream request so far: how many
/// `remember` calls the instance that mapped each one had served.
fn instance_call_counts(mock: &MockUpstream) -> Vec<u32> {
    mock.requests().iter().filter_map(|r| r.header("x-hostile-calls")?.parse().ok()).collect()
}

#[tokio::test]
async fn warm_instances_serve_again_and_a_fault_retires_the_instance() {
    let mock = MockUpstream::completing().await;
    // The cache off: every (identical) request must reach the adapter.
    let mut gw = hostile_gateway_with(&mock, "", &[("CACHE_ENABLED", "false")]).await;
    for _ in 0..3 {
        let r = gw.chat(chat_body("hostile/remember")).await;
        assert_eq!(r.status(), 200, "{}", gw.log());
    }
    // Sequential calls reuse one warm instance: its global counter went on.
    assert_eq!(instance_call_counts(&mock), [1, 2, 3]);

    // A trap retires the instance it happened in; the next call gets a fresh one.
    expect_fault(&gw, "hostile/panic", "trapped").await;
    let r = gw.chat(chat_body("hostile/remember")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(instance_call_counts(&mock), [1, 2, 3, 1], "no state survives a fault");

    let plugins: Value = gw.get("/v1/plugins").await.json().await.unwrap();
    let hostile = plugins["plugins"].as_array().unwrap().iter().find(|p| p["id"] == "hostile").unwrap().clone();
    assert_eq!(hostile["sandbox"]["reuse_instances"], true, "{hostile}");
    assert_eq!(hostile["sandbox"]["warm_instances"], 1, "{hostile}");
    gw.assert_healthy().await;
}

#[tokio::test]
async fn without_instance_reuse_every_call_starts_fresh() {
    let mock = MockUpstream::completing().await;
    let config = "[providers.hostile]\ncomponent = \"{component:freellm-provider-hostile}\"\n\
                  [providers.hostile.sandbox]\nreuse_instances = false\n";
    let gw = Gateway::start_with(GatewayOptions {
        config: config.to_owned(),
        env: vec![
            ("HOSTILE_API_KEY".to_owned(), "k".to_owned()),
            ("HOSTILE_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
            ("CACHE_ENABLED".to_owned(), "false".to_owned()),
        ],
    })
    .await;
    for _ in 0..3 {
        let r = gw.chat(chat_body("hostile/remember")).await;
        assert_eq!(r.status(), 200, "{}", gw.log());
    }
    assert_eq!(instance_call_counts(&mock), [1, 1, 1]);
    let plugins: Value = gw.get("/v1/plugins").await.json().await.unwrap();
    let hostile = plugins["plugins"].as_array().unwrap().iter().find(|p| p["id"] == "hostile").unwrap().clone();
    assert_eq!(hostile["sandbox"]["reuse_instances"], false, "{hostile}");
    assert_eq!(hostile["sandbox"]["warm_instances"], 0, "{hostile}");
}
