//! End-to-end: contract versions side by side, and conformance by
//! declaration.
//!
//! Components built against the frozen `freellm:provider@0.1.0`
//! (`tests/adapter-v01`) and 0.2.0 (`tests/adapter-v02`) and one built
//! against 0.3.0 with the SDK (`tests/adapter-plain`, whose upstream API is
//! not OpenAI-shaped) serve as three providers of one gateway; `plugin
//! check` names each one's version; the non-OpenAI adapter
//! passes `plugin check` with only the cases its declaration calls for, and
//! hot-loads into a running gateway through the load-time self-check.

use std::path::Path;
use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::{Value, json};

const LEGACY: &str = "freellm-test-adapter-v01";
const V02: &str = "freellm-test-adapter-v02";
const PLAIN: &str = "freellm-test-adapter-plain";

/// One mock for both providers: OpenAI's API under `/v1/chat/completions`,
/// the plain API under `/v1/generate` (NDJSON when streaming).
async fn mock() -> MockUpstream {
    MockUpstream::start(|r| {
        if r.path.starts_with("/v1/generate") {
            if r.json()["stream"] == true {
                let lines = concat!(
                    "{\"kind\":\"text\",\"text\":\"plain \"}\n",
                    "{\"kind\":\"text\",\"text\":\"streams\"}\n",
                    "{\"kind\":\"end\",\"stop\":\"end\",\"tokens\":{\"input\":3,\"output\":2}}\n"
                );
                Reply::Raw {
                    status: 200,
                    content_type: "application/x-ndjson".into(),
                    body: bytes::Bytes::from_static(lines.as_bytes()),
                }
            } else {
                Reply::ok(
                    json!({"output": {"text": "plain says hi"}, "stop": "end", "tokens": {"input": 3, "output": 3}}),
                )
            }
        } else if r.json()["model"] == "v02-model" {
            Reply::ok(completion("v02-model", "v02 says hi"))
        } else {
            Reply::ok(completion("legacy-model", "legacy says hi"))
        }
    })
    .await
}

fn legacy_config(mock: &MockUpstream) -> String {
    format!("[providers.legacy]\ncomponent = \"{{component:{LEGACY}}}\"\nbase_url = \"{}/v1\"\n", mock.url)
}

fn v02_config(mock: &MockUpstream) -> String {
    format!(
        "[providers.v02]\ncomponent = \"{{component:{V02}}}\"\nbase_url = \"{}/v1\"\nsettings = {{ tag = \"from-settings\" }}\n",
        mock.url
    )
}

fn plain_config(mock: &MockUpstream) -> String {
    format!("[providers.plain]\ncomponent = \"{}\"\nbase_url = \"{}\"\n", component_path(PLAIN).display(), mock.url)
}

async fn start(config: String) -> Gateway {
    Gateway::start_with(GatewayOptions {
        config,
        env: vec![("CACHE_ENABLED".into(), "false".into()), ("PLAIN_API_KEY".into(), "k-plain".into())],
    })
    .await
}

async fn plugin(gw: &Gateway, id: &str) -> Value {
    let list: Value = gw.get("/v1/plugins").await.json().await.unwrap();
    list["plugins"].as_array().unwrap().iter().find(|p| p["id"] == id).cloned().unwrap_or(Value::Null)
}

fn check(component: &Path) -> (bool, String) {
    let out = plugin_command("check").arg(component).output().expect("freellm runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn components_of_0_1_0_2_and_0_3_serve_side_by_side() {
    let mock = mock().await;
    let gw = start(format!("{}\n{}\n{}", legacy_config(&mock), v02_config(&mock), plain_config(&mock))).await;

    let r = gw.chat(chat_body("legacy/legacy-model")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "legacy");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "legacy says hi");

    let r = gw.chat(chat_body("v02/v02-model")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "v02");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "v02 says hi");

    let r = gw.chat(chat_body("plain/plain-1")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "plain");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "plain says hi");
    assert_eq!(v["usage"]["total_tokens"], 6);
    let created = v["created"].as_u64().expect("created is a number");
    assert!(created > 1_700_000_000, "the host filled the adapter's created 0 with the time: {created}");

    let sent = mock.requests();
    let legacy = sent.iter().find(|r| r.json()["model"] == "legacy-model").expect("the 0.1 adapter's request");
    assert_eq!(legacy.path, "/v1/chat/completions");
    let v02 = sent.iter().find(|r| r.json()["model"] == "v02-model").expect("the 0.2 adapter's request");
    assert_eq!((v02.path.as_str(), &v02.json()["messages"][0]["role"]), ("/v1/chat/completions", &json!("user")));
    // 0.3 configures each instance instead; a 0.2 call still carries the settings.
    assert_eq!(v02.header("x-v02-tag").as_deref(), Some("from-settings"));
    let plain = sent.iter().find(|r| r.path == "/v1/generate").expect("the 0.3 adapter's request");
    assert_eq!(plain.header("x-plain-key").as_deref(), Some("k-plain"));
    assert_eq!(plain.json()["turns"][0]["speaker"], "user");

    assert_eq!(plugin(&gw, "legacy").await["contract"], "freellm:provider@0.1.0");
    assert_eq!(plugin(&gw, "v02").await["contract"], "freellm:provider@0.2.0");
    assert_eq!(plugin(&gw, "plain").await["contract"], "freellm:provider@0.3.0");
    assert_eq!(plugin(&gw, "plain").await["wire_format"], "freellm-test-plain");
    gw.terminate().await;
}

#[tokio::test]
async fn a_model_with_its_own_limits_is_counted_apart_from_the_others() {
    let mock = mock().await;
    let gw = start(plain_config(&mock)).await;
    // plain-1-trial declares 1 request a minute; plain-1 has the adapter's 60.
    assert_eq!(gw.chat(chat_body("plain/plain-1-trial")).await.status(), 200, "{}", gw.log());
    let r = gw.chat(chat_body("plain/plain-1-trial")).await;
    assert_eq!(r.status(), 429, "the model's own window is full: {}", r.text().await.unwrap());
    for _ in 0..3 {
        assert_eq!(gw.chat(chat_body("plain/plain-1")).await.status(), 200, "the other model's window is its own");
    }
    assert_eq!(mock.requests().len(), 4, "the refused request never went upstream");
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let plain = status["providers"].as_array().unwrap().iter().find(|p| p["id"] == "plain").cloned().unwrap();
    assert_eq!(plain["limits"]["requestsPerMinute"], 60, "{plain}");
    assert_eq!(plain["modelLimits"]["plain-1-trial"]["requestsPerMinute"], 1, "{plain}");
    assert_eq!(plain["modelLimits"]["plain-1-trial"]["keysAvailable"], 0, "{plain}");
    gw.terminate().await;
}

#[tokio::test]
async fn a_non_openai_stream_is_normalized_and_timestamped() {
    let mock = mock().await;
    let gw = start(plain_config(&mock)).await;
    let mut body = chat_body("plain/plain-1");
    body["stream"] = json!(true);
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data.iter().filter_map(|d| serde_json::from_str(d).ok()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "plain streams");
    assert!(chunks.iter().all(|c| c["created"].as_u64().is_some_and(|t| t > 1_700_000_000)), "{chunks:?}");
    gw.terminate().await;
}

#[test]
fn plugin_check_names_the_contract_version_each_component_targets() {
    let (ok, text) = check(&component_path(LEGACY));
    assert!(ok, "{text}");
    assert!(text.contains("contract   freellm:provider@0.1.0"), "{text}");
    assert!(text.contains("PASS openai-round-trip"), "a 0.1 adapter is an OpenAI-shaped one:\n{text}");

    let (ok, text) = check(&component_path(V02));
    assert!(ok, "{text}");
    assert!(text.contains("contract   freellm:provider@0.2.0"), "{text}");
    assert!(text.contains("PASS openai-round-trip"), "{text}");

    let (ok, text) = check(&component_path(PLAIN));
    assert!(ok, "{text}");
    assert!(text.contains("contract   freellm:provider@0.3.0"), "{text}");
}

#[test]
fn a_non_openai_adapter_passes_the_cases_its_declaration_calls_for() {
    let (ok, text) = check(&component_path(PLAIN));
    assert!(ok, "{text}");
    assert!(text.contains("wire format freellm-test-plain"), "{text}");
    for common in [
        "configure-is-deterministic",
        "classify-401",
        "classify-429",
        "classify-500",
        "classify-503",
        "malformed-input-does-not-trap",
    ] {
        assert!(text.contains(&format!("PASS {common}\n")), "{common}:\n{text}");
    }
    for openai in
        ["openai-round-trip", "openai-classify-400", "openai-malformed-answers-refused", "streaming-tool-calls"]
    {
        assert!(
            text.contains(&format!("SKIP {openai}: wire format other(freellm-test-plain), not openai-chat")),
            "{openai}:\n{text}"
        );
    }
    assert!(text.contains("embedded fixtures\n"), "{text}");
    for fixture in ["map-system-and-turns", "respond-text", "classify-429-retry-in-body", "stream-text"] {
        assert!(text.contains(&format!("PASS {fixture}\n")), "{fixture}:\n{text}");
    }
}

#[tokio::test]
async fn a_non_openai_adapter_hot_loads_into_a_running_gateway_and_answers() {
    let mock = mock().await;
    let gw = start(legacy_config(&mock)).await;
    assert_eq!(gw.chat(chat_body("plain/plain-1")).await.status(), 404);

    let base = std::fs::read_to_string(gw.config_file()).unwrap();
    std::fs::write(gw.config_file(), format!("{base}\n{}", plain_config(&mock))).unwrap();
    let started = Instant::now();
    while plugin(&gw, "plain").await["state"] != "active" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "plain never went active: {}\n{}",
            plugin(&gw, "plain").await,
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = gw.chat(chat_body("plain/plain-1")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "plain says hi");
    gw.terminate().await;
}

#[test]
fn a_failing_embedded_fixture_fails_plugin_check_with_its_name_and_difference() {
    let (ok, text) = check(&swap_variant("plain-wrong-fixture"));
    assert!(!ok, "{text}");
    assert!(text.contains("embedded fixtures\n"), "{text}");
    assert!(
        text.contains("FAIL wrong-fixture: classify-failure: failure kind: expected transient, got key-invalid"),
        "{text}"
    );
}

#[tokio::test]
async fn the_load_time_self_check_refuses_a_version_that_breaks_its_embedded_fixtures() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("plain.wasm");
    std::fs::copy(component_path(PLAIN), &component).unwrap();
    let config = format!("[providers.plain]\ncomponent = \"{}\"\nbase_url = \"{}\"\n", component.display(), mock.url);
    let gw = start(config).await;
    assert_eq!(gw.chat(chat_body("plain/plain-1")).await.status(), 200, "{}", gw.log());
    let good = plugin(&gw, "plain").await["hash"].clone();

    let incoming = dir.path().join("plain.incoming");
    std::fs::copy(swap_variant("plain-wrong-fixture"), &incoming).unwrap();
    std::fs::rename(&incoming, &component).unwrap();
    let started = Instant::now();
    let refused = loop {
        let p = plugin(&gw, "plain").await;
        if p["last_error"]["step"] == "self-check" {
            break p;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never refused: {p}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error = refused["last_error"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("embedded fixture wrong-fixture"), "{refused}");
    assert_eq!(refused["hash"], good, "the good version stays live");
    assert_eq!(gw.chat(chat_body("plain/plain-1")).await.status(), 200);
    gw.terminate().await;
}
