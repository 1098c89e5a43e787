//! End-to-end: secrets never leave the gateway. An upstream that echoes
//! configured keys (of shapes no pattern would catch), a stream that fails
//! after content with a `Bearer` header in its error, and an adapter that
//! traps: no response body, `/v1/status` field, `/v1/events` frame,
//! `/metrics` line or log line carries a secret, and clients get no wasm
//! backtrace or panic location.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freellm_e2e::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Keys in shapes the pattern rules do not know.
const GROQ_KEY: &str = "zz-Custom.Key/Value+123456";
const GROQ_KEY_2: &str = "second~groq~key~7777";
const ADMIN: &str = "adm!n-Odd*Shape-0042";
const SECRETS: [&str; 3] = [GROQ_KEY, GROQ_KEY_2, ADMIN];

/// The upstream's error text, echoing every secret (as some providers echo
/// the key they were sent, and a misconfigured proxy may echo headers).
fn echo() -> String {
    format!(
        "Invalid API Key {GROQ_KEY}; also saw {GROQ_KEY_2} and {ADMIN}; header was Authorization: Bearer {GROQ_KEY}"
    )
}

async fn gateway(mock: &MockUpstream) -> Gateway {
    let env = vec![
        ("GROQ_API_KEY".to_owned(), format!("{GROQ_KEY},{GROQ_KEY_2}")),
        ("GROQ_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
        ("FREELLM_ADMIN_KEY".to_owned(), ADMIN.to_owned()),
        ("CACHE_ENABLED".to_owned(), "false".to_owned()),
        ("ROUTE_TRANSIENT_RETRIES".to_owned(), "0".to_owned()),
    ];
    Gateway::start_with(GatewayOptions { config: default_config(), env }).await
}

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks {secret:?}:\n{text}");
    }
}

async fn admin_get(gw: &Gateway, path: &str) -> String {
    let r = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ADMIN).send().await.expect("get");
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.expect("body")
}

/// Collects the raw `/v1/events` feed in the background.
fn record_feed(gw: &Gateway) -> Arc<Mutex<String>> {
    let raw = Arc::new(Mutex::new(String::new()));
    let (url, out) = (format!("{}/v1/events", gw.url), raw.clone());
    tokio::spawn(async move {
        let r = reqwest::Client::new().get(url).bearer_auth(ADMIN).send().await.expect("feed");
        let mut stream = r.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            out.lock().expect("lock").push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    raw
}

/// Waits (bounded) until the feed holds `needle`.
async fn feed_until(raw: &Arc<Mutex<String>>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = raw.lock().expect("lock").clone();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in the feed:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_upstream_echoing_configured_keys_of_any_shape_leaks_them_nowhere() {
    let mock = MockUpstream::start(|_| Reply::error(401, &echo())).await;
    let gw = gateway(&mock).await;
    let feed = record_feed(&gw);
    feed_until(&feed, "event: snapshot").await;

    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(ADMIN)
        .json(&chat_body("groq/llama-3.3-70b-versatile"))
        .send()
        .await
        .expect("chat");
    assert!(r.status().is_client_error() || r.status().is_server_error(), "{}", r.status());
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = r.text().await.unwrap();
    assert_clean("the error body", &body);
    assert!(body.contains("[REDACTED]"), "the upstream's message is kept, redacted: {body}");
    assert_eq!(mock.requests().len(), 2, "both keys were tried and refused");

    let status = admin_get(&gw, "/v1/status").await;
    assert_clean("/v1/status", &status);
    let status: Value = serde_json::from_str(&status).unwrap();
    let groq = status["providers"].as_array().unwrap().iter().find(|p| p["id"] == "groq").unwrap().clone();
    assert!(groq["lastErrorMessage"].as_str().unwrap().contains("[REDACTED]"), "{groq}");
    assert!(groq["keys"][0]["invalidReason"].as_str().unwrap().contains("[REDACTED]"), "{groq}");
    let recent = &status["recentRequests"][0];
    assert_eq!(recent["id"], id.as_str());
    assert!(recent["error"].as_str().unwrap().contains("[REDACTED]"), "{recent}");

    assert_clean("/v1/events", &feed_until(&feed, &id).await);
    assert_clean("/metrics", &admin_get(&gw, "/metrics").await);
    assert_clean("the gateway log", &gw.log());
}

#[tokio::test]
async fn a_stream_failing_after_content_redacts_its_error_event_and_log() {
    let mock = MockUpstream::start(|_| {
        let error = json!({"error": {"message": echo(), "type": "server_error"}}).to_string();
        Reply::sse(&[&chunk("Hello", None), &error])
    })
    .await;
    let gw = gateway(&mock).await;
    let mut body = chat_body("groq/llama-3.3-70b-versatile");
    body["stream"] = json!(true);
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("chat");
    assert_eq!(r.status(), 200, "the stream was committed before the error");
    let events = sse_data(r).await;
    let text = events.join("\n");
    assert!(text.contains("Hello"), "{text}");
    let error: Value = events.iter().rev().find_map(|e| serde_json::from_str::<Value>(e).ok()).unwrap();
    let message = error["error"]["message"].as_str().unwrap_or_else(|| panic!("an error event: {text}"));
    assert!(message.contains("Bearer [REDACTED]"), "{message}");
    assert_clean("the stream", &text);

    // The cut is logged (with the upstream's message), redacted.
    assert!(gw.wait_for_log("stream cut", Duration::from_secs(10)).await, "no stream-cut log line:\n{}", gw.log());
    let log = gw.log();
    assert!(log.contains("[REDACTED]"), "{log}");
    assert_clean("the gateway log", &log);
    assert_clean("/v1/status", &admin_get(&gw, "/v1/status").await);
}

#[tokio::test]
async fn a_trapping_adapter_shows_clients_a_plain_message_and_keeps_details_in_the_log() {
    let mock = MockUpstream::completing().await;
    let config = "[providers.hostile]\ncomponent = \"{component:freellm-provider-hostile}\"\n\
                  [providers.hostile.sandbox]\nmemory_mb = 16\ncpu_ms = 100\n";
    let mut gw = Gateway::start_with(GatewayOptions {
        config: config.to_owned(),
        env: vec![
            ("HOSTILE_API_KEY".to_owned(), "k".to_owned()),
            ("HOSTILE_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
        ],
    })
    .await;
    let r = gw.chat(chat_body("hostile/panic")).await;
    assert_eq!(r.status(), 429);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["attempts"][0]["outcome"], "adapter_fault", "{body}");
    let message = body["error"]["attempts"][0]["message"].as_str().unwrap();
    assert_eq!(message, format!("adapter \"hostile\" failed (trapped); see the gateway log, request id {id}"));
    let text = body.to_string();
    for detail in ["panicked", ".rs:", "backtrace", "wasm", "stderr", "0x"] {
        assert!(!text.contains(detail), "the client sees {detail:?}: {text}");
    }
    let status = gw.get("/v1/status").await.text().await.unwrap();
    assert!(!status.contains("panicked") && !status.contains(".rs:"), "{status}");

    // The operator finds the details under the request id.
    let log = gw.log();
    assert!(
        log.lines().any(|l| l.contains("adapter call failed") && l.contains(&id)),
        "no fault line for {id}:\n{log}"
    );
    assert!(log.contains("panicked on purpose"), "{log}");
    gw.assert_healthy().await;
}
