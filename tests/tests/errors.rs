//! End-to-end: bad input gets a clear OpenAI-shaped error, never a panic or
//! a hang, and the gateway stays healthy after each.

use freellm_e2e::*;
use serde_json::{Value, json};

async fn gateway() -> (MockUpstream, Gateway) {
    let mock = MockUpstream::completing().await;
    let gw = Gateway::start(&[("GROQ_API_KEY", "gsk_test"), ("GROQ_BASE_URL", &format!("{}/v1", mock.url))]).await;
    (mock, gw)
}

/// Asserts the envelope shape and returns the `error` object.
async fn error_of(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status(), status);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let e = body["error"].clone();
    assert_eq!(e["code"], code, "{body}");
    assert!(e["type"].is_string() && e["message"].is_string(), "{body}");
    assert_eq!(e["request_id"], request_id.as_str(), "body id matches header");
    e
}

async fn post_raw(gw: &Gateway, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    gw.http
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_json_is_400_not_500() {
    let (mock, mut gw) = gateway().await;
    let e = error_of(post_raw(&gw, "application/json", b"{\"model\":".to_vec()).await, 400, "invalid_request").await;
    assert!(e["message"].as_str().unwrap().contains("malformed JSON"), "{e}");
    let e = error_of(post_raw(&gw, "application/json", b"\xff\xfe{}".to_vec()).await, 400, "invalid_request").await;
    assert!(e["message"].as_str().unwrap().contains("UTF-8"), "{e}");
    assert!(mock.requests().is_empty());
    gw.assert_healthy().await;
}

#[tokio::test]
async fn oversize_body_is_413() {
    let (_mock, mut gw) = gateway().await;
    let big = json!({"model": "free", "messages": [{"role": "user", "content": "x".repeat(3 << 20)}]});
    let r = post_raw(&gw, "application/json", serde_json::to_vec(&big).unwrap()).await;
    error_of(r, 413, "payload_too_large").await;
    gw.assert_healthy().await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let (_mock, mut gw) = gateway().await;
    let r = post_raw(&gw, "text/plain", serde_json::to_vec(&chat_body("free")).unwrap()).await;
    error_of(r, 415, "unsupported_media_type").await;
    gw.assert_healthy().await;
}

#[tokio::test]
async fn missing_messages_and_bad_types_list_every_issue() {
    let (_mock, gw) = gateway().await;
    let e = error_of(gw.chat(json!({"model": "free", "temperature": 7})).await, 400, "invalid_request").await;
    let paths: Vec<&str> = e["issues"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"messages"), "{e}");
    assert!(paths.contains(&"temperature"), "{e}");
}

#[tokio::test]
async fn unknown_model_is_404_with_the_valid_ids() {
    let (mock, mut gw) = gateway().await;
    for model in ["gpt-4o", "groq/not-a-model", "nope/x", "ollama/llama3"] {
        let e = error_of(gw.chat(chat_body(model)).await, 404, "model_not_found").await;
        let available = e["available_models"].as_array().unwrap();
        assert!(available.iter().any(|m| m == "groq/llama-3.3-70b-versatile"), "{e}");
        assert!(available.iter().any(|m| m == "free"), "{e}");
    }
    assert!(mock.requests().is_empty());
    gw.assert_healthy().await;
}

#[tokio::test]
async fn request_ids_are_echoed_when_valid_and_replaced_otherwise() {
    let (_mock, gw) = gateway().await;
    let r = gw.http.get(format!("{}/healthz", gw.url)).header("x-request-id", "abc.123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc.123");
    let r = gw.http.get(format!("{}/healthz", gw.url)).header("x-request-id", "bad id").send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a fresh uuid: {id}");
}

#[tokio::test]
async fn every_route_is_also_served_under_api() {
    let (_mock, gw) = gateway().await;
    let health: Value = gw.get("/api/healthz").await.json().await.unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let models: Value = gw.get("/api/v1/models").await.json().await.unwrap();
    assert_eq!(models["object"], "list");
    let r = gw.http.post(format!("{}/api/v1/chat/completions", gw.url)).json(&chat_body("free")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let (_mock, gw) = gateway().await;
    error_of(gw.get("/v1/embeddings").await, 404, "not_found").await;
    error_of(gw.get("/v1/chat/completions").await, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn models_lists_meta_models_then_enabled_catalogs() {
    let (_mock, gw) = gateway().await;
    let models: Value = gw.get("/v1/models").await.json().await.unwrap();
    let data = models["data"].as_array().unwrap();
    assert_eq!(
        data[0],
        json!({"id": "free", "object": "model", "created": 1700000000, "owned_by": "freellm", "provider": "freellm"})
    );
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"groq/meta-llama/llama-4-scout-17b-16e-instruct"));
    assert!(!ids.iter().any(|id| id.starts_with("ollama/")), "ollama is not enabled");
}

#[tokio::test]
async fn with_no_provider_the_gateway_starts_and_names_what_to_set() {
    let mut gw = Gateway::start(&[]).await;
    let e = error_of(gw.chat(chat_body("free")).await, 503, "no_providers_configured").await;
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("GROQ_API_KEY") && message.contains("OLLAMA_BASE_URL"), "{message}");
    gw.assert_healthy().await;
}
