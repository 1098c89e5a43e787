//! End-to-end: the meta-models are built from what adapters declare, with no
//! provider known by name in the host. An adapter loaded from outside
//! `providers/`, under a provider id the host has never heard of, joins
//! `free-fast` because it tags a model `fast`; the operator's order applies
//! live; status and the "nothing enabled" answer name each provider's own
//! key variable.

use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::Value;

/// Registry order: `bigbrain` (the generic adapter, one smart model), then
/// `outside` (a built component copied to a temporary directory, loaded
/// under a provider id of its own, declaring one fast model).
fn config(outside: &std::path::Path, mock: &str, extra: &str) -> String {
    format!(
        "[providers.bigbrain]\ncomponent = \"{{component:freellm-provider-openai-compatible}}\"\n\
         [providers.bigbrain.settings]\nbase_url = \"{mock}/v1\"\nauth = \"none\"\nmodels = [\"deep|0|smart\"]\n\
         privacy = \"local\"\n\n\
         [providers.outside]\ncomponent = \"{}\"\n[providers.outside.settings]\nbase_url = \"{mock}/v1\"\n\
         auth = \"none\"\nmodels = [\"quick|0|fast\"]\nprivacy = \"local\"\n{extra}",
        outside.display()
    )
}

async fn answered_by(gw: &Gateway, model: &str) -> String {
    let r = gw.chat(chat_body(model)).await;
    assert_eq!(r.status(), 200, "{model}: {}", gw.log());
    assert_eq!(r.headers()["x-freellm-route-reason"], "meta");
    r.headers()["x-freellm-model"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_adapter_from_outside_the_tree_that_tags_a_fast_model_serves_free_fast() {
    build_artifacts();
    let mock = MockUpstream::completing().await;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("third-party-adapter.wasm");
    std::fs::copy(component_path("freellm-provider-openai-compatible"), &outside).unwrap();
    let env = vec![("CACHE_ENABLED".to_owned(), "false".to_owned())];
    let gw = Gateway::start_with(GatewayOptions { config: config(&outside, &mock.url, ""), env }).await;

    assert_eq!(answered_by(&gw, "free-fast").await, "outside/quick", "the only provider tagging a fast model");
    assert_eq!(answered_by(&gw, "free-smart").await, "bigbrain/deep", "outside tags no smart model");
    assert_eq!(answered_by(&gw, "free").await, "bigbrain/deep", "registry order without an order");

    let models: Value = gw.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"outside/quick") && ids.contains(&"free-fast"), "{ids:?}");

    // Status lists the registry, nothing else.
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let listed: Vec<&str> = status["providers"].as_array().unwrap().iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(listed, ["bigbrain", "outside"]);

    // The operator's order applies live: `outside` first for every meta-model.
    let text = std::fs::read_to_string(gw.config_file()).unwrap();
    std::fs::write(gw.config_file(), format!("[routing]\norder = [\"outside\"]\n\n{text}")).unwrap();
    let started = Instant::now();
    while answered_by(&gw, "free").await != "outside/quick" {
        assert!(started.elapsed() < Duration::from_secs(20), "the order never applied:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered_by(&gw, "free-smart").await, "bigbrain/deep", "order ranks, tags still choose");
    assert!(!gw.log().contains("restart needed"), "the order is not a start-up setting");
}

#[tokio::test]
async fn with_nothing_enabled_the_answer_names_each_providers_own_key_variable() {
    let config = "[providers.acme]\ncomponent = \"{component:freellm-provider-openai-compatible}\"\n\
                  key_env = \"ACME_SECRET_TOKEN\"\n[providers.acme.settings]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                  models = [\"a1\"]\nprivacy = \"local\"\n"
        .to_owned();
    let gw = Gateway::start_with(GatewayOptions { config, env: Vec::new() }).await;
    let r = gw.chat(chat_body("free")).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(status.is_client_error() || status.is_server_error(), "{status} {body}");
    assert!(message.contains("acme") && message.contains("ACME_SECRET_TOKEN"), "{body}");
    assert!(!message.to_ascii_lowercase().contains("groq"), "no provider known by name: {body}");
    let s: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(s["providers"][0]["keyEnv"], "ACME_SECRET_TOKEN", "{}", s["providers"]);
    assert_eq!(s["providers"].as_array().unwrap().len(), 1);
    assert!(gw.log().contains("ACME_SECRET_TOKEN"), "the start-up warning names it:\n{}", gw.log());
}
