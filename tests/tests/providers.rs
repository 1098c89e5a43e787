//! End-to-end: all six adapters plus the generic one, loaded from one
//! plugins.toml against local mock upstreams. `/v1/models` lists every
//! enabled catalog; each provider's quirks are applied by its component on
//! the way to the upstream.

use freellm_e2e::*;
use serde_json::{Value, json};

fn all_providers_config() -> String {
    let mut config = String::new();
    for id in ["groq", "gemini", "mistral", "cerebras", "nim", "ollama"] {
        config.push_str(&format!("[providers.{id}]\ncomponent = \"{{component:freellm-provider-{id}}}\"\n"));
        if id == "ollama" {
            config.push_str("settings_env = { models = \"OLLAMA_MODELS\" }\n");
        }
        config.push('\n');
    }
    config.push_str(
        "[providers.openrouter]\ncomponent = \"{component:freellm-provider-openai-compatible}\"\n\
         key_env = \"OPENROUTER_API_KEY\"\n\
         [providers.openrouter.settings]\ndisplay_name = \"OpenRouter\"\nbase_url = \"https://openrouter.invalid/api/v1\"\n\
         models = [\"meta-llama/llama-3.3-70b-instruct:free|131072|smart+tools\"]\nprivacy = \"configurable\"\n\n\
         [providers.lmstudio]\ncomponent = \"{component:freellm-provider-openai-compatible}\"\n\
         [providers.lmstudio.settings]\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = \"none\"\nmodels = [\"qwen2.5-7b-instruct\"]\nprivacy = \"local\"\n",
    );
    config
}

async fn all_providers(mock: &MockUpstream) -> Gateway {
    let base = format!("{}/v1", mock.url);
    let env: Vec<(String, String)> = [
        ("GROQ_API_KEY", "gsk-test"),
        ("GEMINI_API_KEY", "gem-test"),
        ("MISTRAL_API_KEY", "mis-test"),
        ("CEREBRAS_API_KEY", "csk-test"),
        ("NVIDIA_NIM_API_KEY", "nvapi-test"),
        ("OPENROUTER_API_KEY", "or-test"),
        ("OLLAMA_MODELS", "llama3.1,llava"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .chain(
        ["GROQ", "GEMINI", "MISTRAL", "CEREBRAS", "NIM", "OPENROUTER", "LMSTUDIO"]
            .iter()
            .map(|id| (format!("{id}_BASE_URL"), base.clone())),
    )
    .chain([("OLLAMA_BASE_URL".to_owned(), mock.url.clone())])
    .collect();
    Gateway::start_with(GatewayOptions { config: all_providers_config(), env }).await
}

#[tokio::test]
async fn models_lists_every_enabled_catalog() {
    let mock = MockUpstream::completing().await;
    let gw = all_providers(&mock).await;
    let models: Value = gw.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    for expected in [
        "free",
        "free-fast",
        "free-smart",
        "groq/llama-3.3-70b-versatile",
        "gemini/gemini-2.5-flash",
        "gemini/gemini-2.5-pro",
        "mistral/mistral-small-latest",
        "cerebras/llama3.1-8b",
        "nim/meta/llama-3.3-70b-instruct",
        "nim/deepseek-ai/deepseek-r1",
        "ollama/llama3.1",
        "ollama/llava",
        "openrouter/meta-llama/llama-3.3-70b-instruct:free",
        "lmstudio/qwen2.5-7b-instruct",
    ] {
        assert!(ids.contains(&expected), "{expected} missing from {ids:?}");
    }
    // Registry order: the file's.
    let first = |p: &str| ids.iter().position(|id| id.starts_with(&format!("{p}/"))).unwrap();
    assert!(first("groq") < first("gemini") && first("gemini") < first("mistral") && first("nim") < first("ollama"));
}

#[tokio::test]
async fn each_component_builds_its_providers_request() {
    let mock = MockUpstream::completing().await;
    let gw = all_providers(&mock).await;
    let cases = [
        ("groq/llama-3.1-8b-instant", "/v1/chat/completions", Some("Bearer gsk-test")),
        ("gemini/gemini-2.5-flash", "/v1/chat/completions", Some("Bearer gem-test")),
        ("mistral/mistral-small-latest", "/v1/chat/completions", Some("Bearer mis-test")),
        ("cerebras/llama3.1-8b", "/v1/chat/completions", Some("Bearer csk-test")),
        ("nim/meta/llama-3.3-70b-instruct", "/v1/chat/completions", Some("Bearer nvapi-test")),
        ("ollama/llama3.1", "/v1/chat/completions", None),
        ("openrouter/meta-llama/llama-3.3-70b-instruct:free", "/v1/chat/completions", Some("Bearer or-test")),
        ("lmstudio/qwen2.5-7b-instruct", "/v1/chat/completions", None),
    ];
    for (i, (model, path, auth)) in cases.iter().enumerate() {
        let r =
            gw.chat(json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 64})).await;
        assert_eq!(r.status(), 200, "{model}: {}", gw.log());
        let (provider, upstream_model) = model.split_once('/').unwrap();
        assert_eq!(r.headers()["x-freellm-provider"], *provider);
        let seen = &mock.requests()[i];
        assert_eq!(seen.path, *path, "{model}");
        assert_eq!(seen.header("authorization").as_deref(), *auth, "{model}");
        assert_eq!(seen.json()["model"], *upstream_model, "{model}: prefix stripped");
    }
    let bodies: Vec<Value> = mock.requests().iter().map(|r| r.json()).collect();
    // Gemini: max_tokens → max_completion_tokens, reasoning_effort defaulted.
    assert_eq!(bodies[1]["max_completion_tokens"], 64);
    assert!(bodies[1].get("max_tokens").is_none());
    assert_eq!(bodies[1]["reasoning_effort"], "none");
    // Mistral takes max_tokens as is.
    assert_eq!(bodies[2]["max_tokens"], 64);
}

#[tokio::test]
async fn cerebras_is_skipped_for_tools_and_nim_gets_guided_json() {
    let mock = MockUpstream::completing().await;
    let gw = all_providers(&mock).await;
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    // A concrete Cerebras model cannot take tools: refused up front, nothing sent.
    let r = gw
        .chat(json!({"model": "cerebras/llama3.1-8b", "messages": [{"role": "user", "content": "Hi"}], "tools": tools}))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_supported", "{body}");
    assert!(mock.requests().is_empty());
    // A route that lists Cerebras first skips it.
    let r =
        gw.chat(json!({"model": "free-fast", "messages": [{"role": "user", "content": "Hi"}], "tools": tools})).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_ne!(r.headers()["x-freellm-provider"], "cerebras");

    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let r = gw
        .chat(json!({"model": "nim/meta/llama-3.3-70b-instruct", "messages": [{"role": "user", "content": "Hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}))
        .await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let sent = mock.requests().last().unwrap().json();
    assert_eq!(sent["nvext"]["guided_json"], schema);
    assert!(sent.get("response_format").is_none());
}
