//! End-to-end: an adapter written in JavaScript (`adapters/js-openai`,
//! built with componentize-js by `scripts/build-js-adapter.sh`) against the
//! same contract passes `plugin check`, is loaded by the same host and
//! answers through the gateway, plain and streaming.

use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;

use freellm_e2e::*;
use serde_json::json;

/// The built JavaScript component and the `plugin check` report on it. The
/// check runs once, before any gateway starts, so it also fills the
/// compiled-component cache the gateways share (compiling the 12 MB
/// component takes tens of seconds; a cached load takes milliseconds).
fn js_component() -> &'static (PathBuf, bool, String) {
    static BUILT: OnceLock<(PathBuf, bool, String)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let status = std::process::Command::new(root.join("scripts/build-js-adapter.sh"))
            .current_dir(&root)
            .status()
            .expect("the build script runs");
        assert!(status.success(), "scripts/build-js-adapter.sh failed");
        let component = root.join("target/js-adapter/freellm_provider_js_openai.wasm");
        let Output { status, stdout, stderr } = plugin_command("check")
            .arg(&component)
            .args(["--setting", "id=jsopenai", "--setting", "base_url=https://api.example.com/v1"])
            .output()
            .expect("freellm runs");
        let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
        (component, status.success(), text)
    })
}

async fn gateway(mock: &MockUpstream) -> Gateway {
    let (component, _, _) = js_component();
    // The CPU deadline is counted in wall-clock epochs: on a busy 2-core
    // machine (the whole suite at once) the JavaScript engine's first
    // calls in a fresh instance have taken over the default 250 ms, and
    // the adapter then never went live. This test is about the language,
    // not the deadline (the sandbox tests cover that).
    let config = format!(
        "[providers.jsopenai]\ncomponent = \"{}\"\n[providers.jsopenai.settings]\nmodels = \"gpt-4o-mini, gpt-4o\"\n\
         [providers.jsopenai.sandbox]\ncpu_ms = 2000\n",
        component.display()
    );
    let env = vec![
        ("JSOPENAI_API_KEY".to_owned(), "js-test-key".to_owned()),
        ("JSOPENAI_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
    ];
    Gateway::start_with(GatewayOptions { config, env }).await
}

#[test]
fn the_javascript_adapter_passes_plugin_check() {
    let (_, ok, text) = js_component();
    assert!(ok, "{text}");
    assert!(text.contains("adapter    jsopenai"), "{text}");
    // Built against the frozen 0.1 contract: the host loads it beside 0.2 adapters.
    assert!(text.contains("contract   freellm:provider@0.1.0"), "{text}");
    assert!(text.contains("PASS openai-round-trip"), "{text}");
    assert!(text.contains("result: PASSED (11 passed, 0 failed)"), "{text}");
}

#[tokio::test]
async fn the_javascript_adapter_answers_through_the_gateway() {
    let mock = MockUpstream::start(|_| Reply::ok(completion("gpt-4o", "Hello from upstream"))).await;
    let gw = gateway(&mock).await;

    let r =
        gw.chat(json!({"model": "jsopenai/gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "top_k": 3})).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "jsopenai");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from upstream");

    let sent = &mock.requests()[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(sent.header("authorization").as_deref(), Some("Bearer js-test-key"));
    let sent = sent.json();
    assert_eq!((sent["model"].as_str(), sent["top_k"].as_i64()), (Some("gpt-4o"), Some(3)));

    let models: serde_json::Value = gw.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"jsopenai/gpt-4o-mini") && ids.contains(&"jsopenai/gpt-4o"), "{ids:?}");
    gw.terminate().await;
}

#[tokio::test]
async fn the_javascript_adapter_streams_through_the_gateway() {
    let mock = MockUpstream::start(|_| Reply::sse(&[&chunk("Hel", None), &chunk("lo", Some("stop")), "[DONE]"])).await;
    let gw = gateway(&mock).await;

    let r = gw
        .chat(json!({"model": "jsopenai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "stream": true}))
        .await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let data = sse_data(r).await;
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(mock.requests()[0].json()["stream"], true);
    gw.terminate().await;
}
