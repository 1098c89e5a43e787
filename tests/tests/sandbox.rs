//! End-to-end: a deliberately hostile component (infinite loop, unbounded
//! memory growth, a read past its memory, panic) fails its own calls and
//! never the host.

use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::Value;

async fn hostile_gateway(mock: &MockUpstream, extra_settings: &str) -> Gateway {
    hostile_gateway_with(mock, extra_settings, &[("CB_FAILURE_THRESHOLD", "10")]).await
}

async fn hostile_gateway_with(mock: &MockUpstream, extra_settings: &str, env: &[(&str, &str)]) -> Gateway {
    Gateway::start_with(hostile_options(mock, extra_settings, env)).await
}

/// The hostile component alone, its sandbox tight, pointed at `mock`.
fn hostile_options(mock: &MockUpstream, extra_settings: &str, env: &[(&str, &str)]) -> GatewayOptions {
    let config = format!(
        "[providers.hostile]\ncomponent = \"{{component:freellm-provider-hostile}}\"\n{extra_settings}\
         [providers.hostile.sandbox]\nmemory_mb = 16\ncpu_ms = 100\n"
    );
    GatewayOptions {
        config,
        env: [
            ("HOSTILE_API_KEY".to_owned(), "k".to_owned()),
            ("HOSTILE_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
        ]
        .into_iter()
        .chain(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
        .collect(),
    }
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

/// What the log says when adapter memories fall back to bounds checks.
const BOUNDS_CHECKED: &str = "adapter memories are bounds-checked";

#[tokio::test]
async fn hostile_component_faults_are_contained() {
    let mock = MockUpstream::completing().await;
    let mut gw = hostile_gateway(&mock, "").await;
    assert_faults_contained(&mut gw, &mock).await;
    // With the address space unlimited, memories are guarded by unmapped
    // pages: the peek above was caught by a guard page, not a bounds check.
    // (Under a `ulimit -v` the gateway may fall back, as the next test
    // shows; the faults above are contained either way.)
    if address_space_unlimited() {
        assert!(!gw.log().contains(BOUNDS_CHECKED), "{}", gw.log());
    }
}

/// Whether this process, and so the gateway it starts, has no
/// address-space limit (`RLIMIT_AS`).
fn address_space_unlimited() -> bool {
    std::fs::read_to_string("/proc/self/limits").is_ok_and(|limits| {
        limits.lines().any(|line| line.starts_with("Max address space") && line.contains("unlimited"))
    })
}

/// Where the address space cannot hold a 4 GiB reservation per adapter
/// memory (here `RLIMIT_AS`, 1 TiB: the guard-page pool needs ~8), the
/// gateway falls back to bounds-checked memories, says so, and contains
/// the same faults.
#[tokio::test]
async fn with_little_address_space_memories_are_bounds_checked_and_faults_still_contained() {
    let mock = MockUpstream::completing().await;
    let options = hostile_options(&mock, "", &[("CB_FAILURE_THRESHOLD", "10")]);
    let mut gw = Gateway::start_limited(options, Some(1 << 40)).await;
    assert!(gw.log().contains(BOUNDS_CHECKED), "{}", gw.log());
    assert_faults_contained(&mut gw, &mock).await;
}

/// Every hostile behaviour fails its own call, and the component still
/// serves a well-behaved one.
async fn assert_faults_contained(gw: &mut Gateway, mock: &MockUpstream) {
    expect_fault(gw, "hostile/loop", "CPU time").await;
    gw.assert_healthy().await;
    expect_fault(gw, "hostile/grow", "memory").await;
    gw.assert_healthy().await;
    expect_fault(gw, "hostile/peek", "trapped").await;
    assert!(gw.log().contains("out of bounds memory access"), "{}", gw.log());
    gw.assert_healthy().await;
    expect_fault(gw, "hostile/panic", "trapped").await;
    assert!(gw.log().contains("hostile adapter panicked on purpose"), "the details stay in the log");
    assert!(!gw.log().contains("without a trap"), "{}", gw.log());
    gw.assert_healthy().await;
    // Spliced bodies the host cannot assemble are refused before sending.
    expect_fault(gw, "hostile/splice-outside", "lies outside the").await;
    expect_fault(gw, "hostile/splice-many", "5000 pieces (at most 4096)").await;
    gw.assert_healthy().await;
    assert!(mock.requests().is_empty(), "nothing reached the upstream");

    // The same component still serves well-behaved calls: a fault retires only its instance.
    let r = gw.chat(chat_body("hostile/ok")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
}

/// A 0.3 component is configured again in every instance it gets. One
/// that configured at load and fails a later instance's configure (refused
/// or trapped) fails that instance's call as an adapter fault, before
/// anything is sent, and the gateway keeps serving.
#[tokio::test]
async fn a_configure_that_fails_in_a_later_instance_fails_that_call_only() {
    let cases = [
        (
            "refuse",
            "call failed",
            "configure refused the slot's settings: hostile adapter refuses its settings on purpose",
        ),
        ("panic", "trapped", "hostile adapter panicked on purpose while configuring"),
    ];
    for (how, needle, logged) in cases {
        let mock = MockUpstream::completing().await;
        // The load's configure must come before that time: a start that
        // compiled the component (no cached copy yet) may take longer, so
        // the next try gives it more time.
        let mut margin_ms = 3_000;
        let (mut gw, after) = loop {
            let after = unix_ms() + margin_ms;
            let settings =
                format!("settings = {{ fail_configure_after_ms = \"{after}\", fail_configure = \"{how}\" }}\n");
            // Every call in a new instance (the sandbox table comes last),
            // and none answered from the cache.
            let env = [("CB_FAILURE_THRESHOLD", "10"), ("CACHE_ENABLED", "false")];
            let mut options = hostile_options(&mock, &settings, &env);
            options.config.push_str("reuse_instances = false\n");
            let gw = Gateway::start_with(options).await;
            if unix_ms() + 500 < after {
                break (gw, after);
            }
            assert!(margin_ms < 100_000, "the gateway never started in time: {}", gw.log());
            margin_ms *= 2;
        };
        let r = gw.chat(chat_body("hostile/ok")).await;
        assert_eq!(r.status(), 200, "{how}: {}", gw.log());
        let wait = after.saturating_sub(unix_ms()) + 50;
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        // Now each new instance's configure fails, and so does its call.
        expect_fault(&gw, "hostile/ok", needle).await;
        expect_fault(&gw, "hostile/ok", needle).await;
        assert_eq!(mock.requests().len(), 1, "{how}: the failed calls sent nothing upstream");
        gw.assert_healthy().await;
        // The log read from the gateway's stderr as it comes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(gw.log().contains(logged), "{how}: {}", gw.log());
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
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

/// hostile's entry in `/v1/plugins`.
async fn hostile_plugin(gw: &Gateway) -> Value {
    let plugins: Value = gw.get("/v1/plugins").await.json().await.unwrap();
    plugins["plugins"].as_array().unwrap().iter().find(|p| p["id"] == "hostile").unwrap().clone()
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

    let hostile = hostile_plugin(&gw).await;
    assert_eq!(hostile["sandbox"]["reuse_instances"], true, "{hostile}");
    assert_eq!(hostile["sandbox"]["warm_instances"], 1, "{hostile}");
    gw.assert_healthy().await;
}

/// The hostile adapter with `reuse_instances = false` (and no response cache).
async fn gateway_without_reuse(mock: &MockUpstream) -> Gateway {
    let config = "[providers.hostile]\ncomponent = \"{component:freellm-provider-hostile}\"\n\
                  [providers.hostile.sandbox]\nreuse_instances = false\n";
    Gateway::start_with(GatewayOptions {
        config: config.to_owned(),
        env: vec![
            ("HOSTILE_API_KEY".to_owned(), "k".to_owned()),
            ("HOSTILE_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
            ("CACHE_ENABLED".to_owned(), "false".to_owned()),
        ],
    })
    .await
}

#[tokio::test]
async fn without_instance_reuse_every_call_starts_fresh() {
    let mock = MockUpstream::completing().await;
    let gw = gateway_without_reuse(&mock).await;
    for _ in 0..3 {
        let r = gw.chat(chat_body("hostile/remember")).await;
        assert_eq!(r.status(), 200, "{}", gw.log());
    }
    assert_eq!(instance_call_counts(&mock), [1, 1, 1]);
    let hostile = hostile_plugin(&gw).await;
    assert_eq!(hostile["sandbox"]["reuse_instances"], false, "{hostile}");
    assert_eq!(hostile["sandbox"]["warm_instances"], 0, "{hostile}");
}

/// A streaming mock: `content` of `panic` gets an event the hostile
/// normalizer panics on; any other stream sends "Hi", then "more" every
/// 200 ms until the reader hangs up.
async fn streaming_mock() -> MockUpstream {
    MockUpstream::start(|r| {
        let body = r.json();
        if body["stream"] != true {
            return Reply::ok(completion("ok", "Hi"));
        }
        let event = |content: &str| format!("data: {}\n\n", chunk(content, None));
        if body["messages"][0]["content"] == "panic" {
            return Reply::Stream { pieces: vec![(Duration::ZERO, event("hostile-panic"))], cut: false };
        }
        Reply::Repeat { prefix: event("Hi"), piece: event("more"), every: Duration::from_millis(200), count: None }
    })
    .await
}

fn hostile_stream(content: &str) -> Value {
    serde_json::json!({"model": "hostile/ok", "stream": true, "messages": [{"role": "user", "content": content}]})
}

/// Opens a stream and reads its first bytes.
async fn open_stream(gw: &Gateway) -> reqwest::Response {
    let mut response = gw.chat(hostile_stream("Say hello")).await;
    assert_eq!(response.status(), 200, "{}", gw.log());
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await.expect("first bytes in time");
    assert!(first.expect("stream body").is_some());
    response
}

/// The next bytes of an open stream (it must not have ended).
async fn next_bytes(response: &mut reqwest::Response) -> String {
    let more = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await.expect("more in time");
    String::from_utf8_lossy(&more.expect("stream body").expect("the stream goes on")).into_owned()
}

/// The instances holding hostile's open streams, from `/v1/plugins`.
async fn stream_hosts(gw: &Gateway) -> u64 {
    hostile_plugin(gw).await["sandbox"]["stream_hosts"].as_u64().expect("stream_hosts")
}

/// Waits until `/v1/plugins` reports `hosts` stream hosts.
async fn expect_stream_hosts(gw: &Gateway, hosts: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = stream_hosts(gw).await;
        if now == hosts {
            return;
        }
        assert!(Instant::now() < deadline, "expected {hosts} stream hosts, have {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a stream sends within `window`, and whether it ended.
async fn read_for(response: &mut reqwest::Response, window: Duration) -> (String, bool) {
    let until = tokio::time::Instant::now() + window;
    let mut text = String::new();
    loop {
        match tokio::time::timeout_at(until, response.chunk()).await {
            Err(_) => return (text, false),
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) => return (text, true),
            Ok(Err(e)) => panic!("the stream broke: {e}"),
        }
    }
}

/// The error event a cut stream ends with (and no `[DONE]`).
fn last_error_event(text: &str) -> Value {
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let event: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(event["error"].is_object(), "{event}");
    event
}

#[tokio::test]
async fn open_streams_share_instances() {
    // Streams spread over a few hosts (four per core), then share them, up
    // to 64 a host: 70 streams (more than any spread) need at least 2
    // hosts and fewer than one each.
    let mock = streaming_mock().await;
    let gw = hostile_gateway_with(&mock, "", &[("CACHE_ENABLED", "false")]).await;
    let mut held = Vec::new();
    for _ in 0..70 {
        held.push(open_stream(&gw).await);
    }
    let hosts = stream_hosts(&gw).await;
    assert!((2..70).contains(&hosts), "{hosts} hosts for 70 streams");
    // Every stream is still served while the others are open.
    for response in &mut held {
        assert!(next_bytes(response).await.contains("more"));
    }
    // Closed streams give their seats back; idle hosts beyond the spread go.
    drop(held);
    let mut again = open_stream(&gw).await;
    assert!(next_bytes(&mut again).await.contains("more"));
    assert!(stream_hosts(&gw).await <= hosts);
}

#[tokio::test]
async fn a_fault_in_one_stream_ends_the_streams_sharing_its_instance_and_no_other() {
    let mock = streaming_mock().await;
    // One attempt: a retry would open its stream on another host.
    let env = [("CACHE_ENABLED", "false"), ("ROUTE_TRANSIENT_RETRIES", "0")];
    let mut gw = hostile_gateway_with(&mock, "", &env).await;
    // Open streams until one shares a host: every host then has one stream,
    // one has two.
    let mut held = vec![open_stream(&gw).await];
    loop {
        let before = stream_hosts(&gw).await;
        held.push(open_stream(&gw).await);
        if stream_hosts(&gw).await == before {
            break;
        }
        assert!(held.len() <= 65, "streams never shared a host");
    }
    let hosts = stream_hosts(&gw).await;

    // The next stream joins a host with one stream, and its normalizer panics.
    let c = gw.chat(hostile_stream("panic")).await;
    assert_ne!(c.status(), 200);
    let body: Value = c.json().await.unwrap();
    assert_eq!(body["error"]["attempts"].as_array().map(Vec::len), Some(1), "{body}");
    let message = body["error"]["attempts"][0]["message"].as_str().unwrap();
    assert!(message.contains("adapter \"hostile\" failed (trapped)"), "{message}");
    assert!(gw.log().contains("panicked on purpose while normalizing a stream"), "the details stay in the log");

    // The one stream sharing its instance ends with an error event at its
    // next chunk, never [DONE]; every other stream goes on.
    let reads =
        futures_util::future::join_all(held.iter_mut().map(|response| read_for(response, Duration::from_millis(1500))))
            .await;
    let mut cut = 0;
    for (text, ended) in reads {
        if text.contains("\"error\"") {
            assert!(ended, "an error event ends the stream: {text}");
            let event = last_error_event(&text);
            assert_eq!(event["error"]["provider"], "hostile", "{event}");
            cut += 1;
        } else {
            assert!(!ended && text.contains("more"), "{text}");
        }
    }
    assert_eq!(cut, 1, "exactly the stream that shared the faulting instance");
    // The lost instance is gone; a new stream gets a fresh one and runs.
    let mut d = open_stream(&gw).await;
    assert!(next_bytes(&mut d).await.contains("more"));
    assert!(stream_hosts(&gw).await <= hosts);
    gw.assert_healthy().await;
}

#[tokio::test]
async fn without_instance_reuse_a_stream_fault_ends_only_its_own_stream() {
    let mock = streaming_mock().await;
    let mut gw = gateway_without_reuse(&mock).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open_stream(&gw).await);
    }
    expect_stream_hosts(&gw, 3).await;
    let c = gw.chat(hostile_stream("panic")).await;
    assert_ne!(c.status(), 200);
    for response in &mut held {
        for _ in 0..2 {
            assert!(next_bytes(response).await.contains("more"));
        }
    }
    expect_stream_hosts(&gw, 3).await;
    drop(held);
    expect_stream_hosts(&gw, 0).await;
    gw.assert_healthy().await;
}
