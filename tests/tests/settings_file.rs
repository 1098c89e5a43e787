//! End-to-end: settings from `plugins.toml` alone (no variable sets them)
//! take effect, and a reload applies the live ones and names those that
//! need a restart.

use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::{Value, json};

const SMALL: &str = "llama-3.1-8b-instant";
const BIG: &str = "llama-3.3-70b-versatile";

/// A groq provider whose base URL and key come from the file (the key
/// through a keys file), so no variable configures the gateway but the
/// harness's own (address, data and cache directories, log level).
fn file_config(upstream: &str, keys_dir: &tempfile::TempDir, extra: &str) -> String {
    let keys = keys_dir.path().join("keys.toml");
    std::fs::write(&keys, "GROQ_API_KEY = [\"k1\"]\n").unwrap();
    format!(
        "{extra}\n[keys]\nfile = \"{}\"\n\n[providers.groq]\ncomponent = \"{{component:freellm-provider-groq}}\"\n\
         base_url = \"{upstream}/v1\"\n",
        keys.display()
    )
}

/// A chat request counted under its own identifier, so the limit under
/// test sees only the requests meant for it.
async fn chat_as(gw: &Gateway, identifier: &str, body: &Value) -> reqwest::Response {
    gw.http
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-freellm-identifier", identifier)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn chat_on(model: &str, content: &str) -> Value {
    json!({"model": format!("groq/{model}"), "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn a_gateway_configured_by_the_file_alone_applies_its_cache_breaker_cors_and_identifier_settings() {
    // The big model is down; the small one answers.
    let groq = MockUpstream::start(|r| {
        let model = r.json()["model"].as_str().unwrap_or_default().to_owned();
        if model == BIG { Reply::error(503, "over capacity") } else { Reply::ok(completion(&model, "hello")) }
    })
    .await;
    let keys = tempfile::tempdir().unwrap();
    let settings = "[cache]\nenabled = false\n\n[breaker]\nfailure_threshold = 1\n\n\
                    [cors]\nallowed_origins = [\"https://app.example\"]\n\n\
                    [limits]\nidentifier_limit = { max = 2, window_ms = 60000 }\n";
    let gw =
        Gateway::start_with(GatewayOptions { config: file_config(&groq.url, &keys, settings), env: Vec::new() }).await;

    // [cache] enabled = false: the same request reaches the upstream twice.
    for n in 1..=2 {
        let r = chat_as(&gw, &format!("cache-{n}"), &chat_on(SMALL, "Hi")).await;
        assert_eq!(r.status(), 200, "{}", gw.log());
        assert_eq!(r.headers()["x-freellm-cached"], "false");
    }
    assert_eq!(groq.requests().len(), 2, "no answer served from a cache");

    // [cors] allowed_origins: the listed origin is allowed, not `*` (the
    // default of an open gateway), and another origin gets nothing.
    let r = gw.http.get(format!("{}/v1/models", gw.url)).header("origin", "https://app.example");
    let r = r.header("x-freellm-identifier", "cors-1").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    let r = gw.http.get(format!("{}/v1/models", gw.url)).header("origin", "https://other.example");
    let r = r.header("x-freellm-identifier", "cors-2").send().await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    // [limits] identifier_limit = 2 per minute: the third request is refused.
    for _ in 0..2 {
        assert_eq!(chat_as(&gw, "limited", &chat_on(SMALL, "Hi")).await.status(), 200);
    }
    let r = chat_as(&gw, "limited", &chat_on(SMALL, "Hi")).await;
    assert_eq!(r.status(), 429, "{}", gw.log());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "identifier_rate_limited", "{body}");

    // [breaker] failure_threshold = 1: one failed request opens the model's
    // breaker (the default, 3, would let the next one through).
    let before = groq.requests().len();
    assert_eq!(chat_as(&gw, "breaker-1", &chat_on(BIG, "Hi")).await.status(), 429);
    let called = groq.requests().len() - before;
    let r = chat_as(&gw, "breaker-2", &chat_on(BIG, "Hi")).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["attempts"][0]["outcome"], "circuit_open", "{body}");
    assert_eq!(groq.requests().len() - before, called, "the open model was not called again");
}

#[tokio::test]
async fn a_reload_applies_live_settings_and_names_those_that_need_a_restart() {
    let groq = MockUpstream::completing().await;
    let keys = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(GatewayOptions { config: file_config(&groq.url, &keys, ""), env: Vec::new() }).await;
    let origin_allowed = || async {
        let r = gw.http.get(format!("{}/v1/models", gw.url)).header("origin", "https://new.example").send().await;
        r.unwrap().headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(origin_allowed().await.as_deref(), Some("*"), "an open gateway allows any origin by default");
    let r = gw.chat(chat_on(SMALL, "Hi")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(gw.chat(chat_on(SMALL, "Hi")).await.headers()["x-freellm-cached"], "true", "cached by default");

    // A live section ([cors], [cache] enabled) and a restart-only one
    // ([server] max_body_bytes) change together.
    let edited = file_config(
        &groq.url,
        &keys,
        "[server]\nmax_body_bytes = 1048576\n\n[cors]\nallowed_origins = [\"https://new.example\"]\n\n\
         [cache]\nenabled = false\n",
    );
    let edited = edited
        .replace("{component:freellm-provider-groq}", &component_path("freellm-provider-groq").display().to_string());
    // Replaced whole (write, then rename), so the watcher never reads half a file.
    let incoming = gw.config_file().with_extension("incoming");
    std::fs::write(&incoming, edited).unwrap();
    std::fs::rename(&incoming, gw.config_file()).unwrap();
    let r = gw.http.post(format!("{}/v1/plugins/reload", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["restart_needed"], json!(["[server] max_body_bytes"]), "{answer}");

    // Applied by this reload or by the watcher's, whichever ran first.
    let started = Instant::now();
    while origin_allowed().await.as_deref() != Some("https://new.example") {
        assert!(started.elapsed() < Duration::from_secs(10), "CORS never reloaded:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = groq.requests().len();
    let r = gw.chat(chat_on(SMALL, "Hi")).await;
    assert_eq!(r.headers()["x-freellm-cached"], "false", "the cache is off now");
    assert_eq!(groq.requests().len(), before + 1);
    let list: Value = gw.get("/v1/plugins").await.json().await.unwrap();
    let events = list["events"].to_string();
    assert!(events.contains("settings applied: [cors] allowed_origins, [cache] enabled"), "{events}");
    assert!(gw.log().contains("[server] max_body_bytes changed: restart needed"), "{}", gw.log());
}
