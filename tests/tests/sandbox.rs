//! End-to-end: a deliberately hostile component (infinite loop, unbounded
//! memory growth, panic) fails its own calls and never the host.

use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::Value;

async fn hostile_gateway(mock: &MockUpstream, extra_settings: &str) -> Gateway {
    let config = format!(
        "[providers.hostile]\ncomponent = \"{{component:freellm-provider-hostile}}\"\n{extra_settings}\
         [providers.hostile.sandbox]\nmemory_mb = 16\ncpu_ms = 100\n"
    );
    Gateway::start_with(GatewayOptions {
        config,
        env: vec![("HOSTILE_API_KEY".into(), "k".into()), ("HOSTILE_BASE_URL".into(), format!("{}/v1", mock.url))],
    })
    .await
}

async fn expect_fault(gw: &Gateway, model: &str, needle: &str) {
    let started = Instant::now();
    let r = gw.chat(chat_body(model)).await;
    assert_eq!(r.status(), 502, "{model}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "adapter_fault", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{model}: {message}");
    assert!(message.contains("from adapter \"hostile\""), "{message}");
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
    expect_fault(&gw, "hostile/panic", "hostile adapter panicked on purpose").await;
    gw.assert_healthy().await;
    assert!(mock.requests().is_empty(), "nothing reached the upstream");

    // The same component still serves well-behaved calls: each call has a fresh instance.
    let r = gw.chat(chat_body("hostile/ok")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
}

#[tokio::test]
async fn a_trap_after_the_upstream_call_is_a_provider_failure() {
    let mock = MockUpstream::completing().await;
    let mut gw = hostile_gateway(&mock, "settings = { normalize = \"panic\" }\n").await;
    let r = gw.chat(chat_body("hostile/ok")).await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "adapter_fault");
    assert_eq!(mock.requests().len(), 1);
    gw.assert_healthy().await;
}
