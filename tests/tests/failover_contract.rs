//! End-to-end: health per model, the exhaustion contract and routes by
//! pattern, against mock upstreams that fail on purpose.

use freellm_e2e::*;
use serde_json::Value;

const BIG: &str = "llama-3.3-70b-versatile";
const SMALL: &str = "llama-3.1-8b-instant";

fn sent_model(r: &Recorded) -> String {
    r.json()["model"].as_str().unwrap_or_default().to_owned()
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    // Routing is under test: identical requests must reach the upstreams.
    env.push(("CACHE_ENABLED".into(), "false".into()));
    env
}

#[tokio::test]
async fn two_models_of_one_slot_keep_independent_breakers() {
    // One groq slot: its big model is down, its small one is healthy.
    let groq = MockUpstream::start(|r| {
        let model = r.json()["model"].as_str().unwrap_or_default().to_owned();
        if model == BIG { Reply::error(503, "over capacity") } else { Reply::ok(completion(&model, "small answers")) }
    })
    .await;
    let gw = Gateway::start_with(GatewayOptions {
        config: default_config(),
        env: env(&[
            ("GROQ_API_KEY", "k1".into()),
            ("GROQ_BASE_URL", format!("{}/v1", groq.url)),
            ("CB_FAILURE_THRESHOLD", "1".into()),
            ("ROUTE_TRANSIENT_RETRIES", "0".into()),
        ]),
    })
    .await;

    let r = gw.chat(chat_body(&format!("groq/{BIG}"))).await;
    assert_eq!(r.status(), 429, "{}", gw.log());
    let r = gw.chat(chat_body(&format!("groq/{SMALL}"))).await;
    assert_eq!(r.status(), 200, "the big model's open breaker does not block the small one: {}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "groq");
    let r = gw.chat(chat_body(&format!("groq/{BIG}"))).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["attempts"][0]["outcome"], "circuit_open", "{body}");
    assert_eq!(groq.requests().len(), 2, "the open model was not called again");

    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let entry = status["providers"].as_array().unwrap().iter().find(|p| p["id"] == "groq").unwrap().clone();
    assert_eq!(entry["modelBreakers"][BIG]["state"], "open", "{entry}");
    assert_eq!(entry["modelBreakers"][SMALL]["state"], "closed", "{entry}");
    assert_eq!(entry["circuitBreakerState"], "open", "the provider's summary is its worst model: {entry}");

    let metrics = gw.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("freellm_model_breaker_state{{provider=\"groq\",model=\"{BIG}\"}} 2")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("freellm_model_breaker_state{{provider=\"groq\",model=\"{SMALL}\"}} 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_5xx_only_exhaustion_returns_429_with_advice_and_attempts() {
    let groq = MockUpstream::start(|_| Reply::error(503, "over capacity")).await;
    let ollama = MockUpstream::start(|_| Reply::error(500, "internal error")).await;
    let gw = Gateway::start_with(GatewayOptions {
        config: default_config(),
        env: env(&[
            ("GROQ_API_KEY", "k1,k2".into()),
            ("GROQ_BASE_URL", format!("{}/v1", groq.url)),
            ("OLLAMA_BASE_URL", ollama.url.clone()),
            ("OLLAMA_MODELS", "llama3".into()),
            ("ROUTE_TRANSIENT_RETRIES", "1".into()),
            ("ROUTE_RETRY_BACKOFF_MS", "1".into()),
        ]),
    })
    .await;
    let r = gw.chat(chat_body("free-fast")).await;
    assert_eq!(r.status(), 429, "{}", gw.log());
    assert_eq!(r.headers()["retry-after"], "1", "a key is usable now");
    let body: Value = r.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["code"], "all_providers_exhausted");
    assert_eq!(error["message"], "All providers exhausted for model: free-fast");
    assert_eq!(error["retry_after_ms"], 0, "{error}");
    let providers = error["providers"].as_array().expect("providers[]");
    assert_eq!(providers[0]["id"], "groq", "tried first, listed first: {error}");
    assert_eq!(providers[0]["keys_total"], 2);
    assert_eq!(providers[0]["keys_available"], 2, "a 5xx does not cool a key");
    assert_eq!(providers[1]["id"], "ollama");
    let suggestions = error["suggestions"].as_array().expect("suggestions[]");
    assert!(suggestions.iter().all(|s| s["model"] != "free-fast" && s["model"] != "free"), "{error}");
    assert!(suggestions.iter().any(|s| s["model"] == "free-smart"), "{error}");
    let attempts: Vec<(String, String, String, u64)> = error["attempts"]
        .as_array()
        .expect("attempts[]")
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (s("provider"), s("model"), s("outcome"), a["status"].as_u64().unwrap_or_default())
        })
        .collect();
    let expected = [("groq", BIG, 503), ("groq", BIG, 503), ("ollama", "llama3", 500), ("ollama", "llama3", 500)]
        .map(|(p, m, s)| (p.to_owned(), m.to_owned(), "server_error".to_owned(), s));
    assert_eq!(attempts, expected, "{error}");
    assert!(error["attempts"][0]["message"].as_str().unwrap_or_default().contains("over capacity"), "{error}");
    assert!(error["request_id"].is_string());
}

#[tokio::test]
async fn a_glob_route_passes_the_requested_model_through_and_falls_back() {
    // One upstream serving two models is one provider and one route.
    let lab = MockUpstream::start(|r| {
        let model = r.json()["model"].as_str().unwrap_or_default().to_owned();
        if model == "llama-8b" { Reply::error(503, "not loaded") } else { Reply::ok(completion(&model, "from lab")) }
    })
    .await;
    let groq = MockUpstream::completing().await;
    let config = format!(
        "{}\n[providers.lab]\ncomponent = \"{{component:freellm-provider-openai-compatible}}\"\n\
         [providers.lab.settings]\nbase_url = \"{}/v1\"\nmodels = [\"qwen-7b\", \"llama-8b\"]\n\n\
         [routes.\"team-*\"]\ntargets = [\"lab/{{1}}\", \"groq/{BIG}\"]\nretries = 0\n\n\
         [routes.\"team-special\"]\ntargets = [\"groq/{SMALL}\"]\n\n\
         [routes.\"*\"]\ntargets = [\"lab/{{model}}\"]\n",
        default_config(),
        lab.url
    );
    let gw = Gateway::start_with(GatewayOptions {
        config,
        env: env(&[
            ("LAB_API_KEY", "k".into()),
            ("GROQ_API_KEY", "k1".into()),
            ("GROQ_BASE_URL", format!("{}/v1", groq.url)),
        ]),
    })
    .await;

    let r = gw.chat(chat_body("team-qwen-7b")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "lab");
    assert_eq!(r.headers()["x-freellm-model"], "lab/qwen-7b");
    assert_eq!(r.headers()["x-freellm-route-reason"], "route");
    assert_eq!(sent_model(&lab.requests()[0]), "qwen-7b", "the glob's capture reached the upstream");

    let r = gw.chat(chat_body("team-llama-8b")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "groq", "the route's fallback answered");
    assert_eq!(r.headers()["x-freellm-route-reason"], "failover");
    assert_eq!(sent_model(&groq.requests()[0]), BIG);

    let r = gw.chat(chat_body("team-special")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-freellm-model"], format!("groq/{SMALL}"), "an exact name wins over the glob");

    let r = gw.chat(chat_body("qwen-7b")).await;
    assert_eq!(r.status(), 200, "the catch-all passes the whole name: {}", gw.log());
    assert_eq!(r.headers()["x-freellm-model"], "lab/qwen-7b");

    let r = gw.chat(chat_body("groq/no-such-model")).await;
    assert_eq!(r.status(), 404, "a concrete id never matches a glob");

    let models: Value = gw.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"team-special") && !ids.iter().any(|id| id.contains('*')), "{ids:?}");
}

#[tokio::test]
async fn a_429_on_a_model_with_its_own_limits_rests_the_key_for_that_model_only() {
    // The plain test adapter's `plain-1-trial` declares limits of its own,
    // so it has its own key ring; `plain-1` counts against the adapter's.
    let mock = MockUpstream::start(|r| {
        if r.json()["model"] == "plain-1-trial" {
            Reply::Json {
                status: 429,
                headers: vec![("retry-after".into(), "30".into())],
                body: serde_json::json!({"problem": {"reason": "busy", "detail": "trial model busy"}}),
            }
        } else {
            Reply::ok(serde_json::json!({"output": {"text": "plain says hi"}, "stop": "end", "tokens": {"input": 3, "output": 3}}))
        }
    })
    .await;
    let config = format!(
        "[providers.plain]\ncomponent = \"{}\"\nbase_url = \"{}\"\n",
        component_path("freellm-test-adapter-plain").display(),
        mock.url
    );
    let gw = Gateway::start_with(GatewayOptions {
        config,
        env: env(&[("PLAIN_API_KEY", "k-plain".into()), ("ROUTE_MAX_RETRY_AFTER_WAIT_MS", "0".into())]),
    })
    .await;
    let r = gw.chat(chat_body("plain/plain-1-trial")).await;
    assert_eq!(r.status(), 429, "{}", gw.log());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["attempts"][0]["outcome"], "rate_limited", "{body}");
    assert_eq!(body["error"]["attempts"][0]["status"], 429, "{body}");
    let r = gw.chat(chat_body("plain/plain-1-trial")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(mock.requests().len(), 1, "the key rests for the trial model");
    let r = gw.chat(chat_body("plain/plain-1")).await;
    assert_eq!(r.status(), 200, "the same key still serves the other model: {}", gw.log());
    assert_eq!(mock.requests().len(), 2);
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let plain = status["providers"].as_array().unwrap().iter().find(|p| p["id"] == "plain").cloned().unwrap();
    assert_eq!(plain["keysAvailable"], 1, "the provider's ring is untouched: {plain}");
    assert_eq!(plain["modelLimits"]["plain-1-trial"]["keysAvailable"], 0, "{plain}");
}
