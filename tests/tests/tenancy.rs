//! End-to-end: the response cache, credentials, virtual keys with exact
//! caps, persistence across restarts and crashes, per-identifier limits,
//! browser tokens, CORS, and secrets kept out of logs.

use std::time::Duration;

use freellm_e2e::*;
use serde_json::{Value, json};

const MASTER: &str = "master-secret-key-0123456789";
const ADMIN: &str = "admin-secret-key-9876543210";
const GROQ_KEY: &str = "gsk_live_secret_abcdefghijklmnop";
const TOKEN_SECRET: &str = "an-hmac-secret-that-is-long-enough-0123456789";

fn env(mock: &MockUpstream, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("GROQ_API_KEY".to_owned(), GROQ_KEY.to_owned()),
        ("GROQ_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

async fn gateway(mock: &MockUpstream, extra: &[(&str, &str)]) -> Gateway {
    Gateway::start_with(GatewayOptions { config: default_config(), env: env(mock, extra) }).await
}

fn post(gw: &Gateway, bearer: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
    let r = gw.http.post(format!("{}/v1/chat/completions", gw.url)).json(body);
    match bearer {
        Some(b) => r.bearer_auth(b),
        None => r,
    }
}

async fn code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
}

fn keys_file(dir: &std::path::Path, body: &Value) -> std::path::PathBuf {
    let path = dir.join("virtual-keys.json");
    std::fs::write(&path, body.to_string()).unwrap();
    path
}

#[tokio::test]
async fn identical_requests_are_answered_from_the_cache() {
    let mock = MockUpstream::completing().await;
    let gw = gateway(&mock, &[]).await;
    let body = chat_body("groq/llama-3.3-70b-versatile");
    let first = gw.chat(body.clone()).await;
    assert_eq!(first.headers()["x-freellm-cached"], "false");
    let second = gw.chat(body.clone()).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-freellm-cached"], "true");
    assert_eq!(second.headers()["x-freellm-route-reason"], "cache");
    assert_eq!(second.headers()["x-freellm-provider"], "groq");
    assert_eq!(second.headers()["x-freellm-model"], "groq/llama-3.3-70b-versatile");
    let json: Value = second.json().await.unwrap();
    assert_eq!(json["x_freellm_cached"], true);
    assert_eq!(json["x_freellm_provider"], "groq");
    assert_eq!(mock.requests().len(), 1);

    // Another posture, a stream, or strict mode go upstream.
    let private = gw.http.post(format!("{}/v1/chat/completions", gw.url)).header("x-freellm-privacy", "no-training");
    assert_eq!(private.json(&body).send().await.unwrap().headers()["x-freellm-cached"], "false");
    let strict = gw.http.post(format!("{}/v1/chat/completions", gw.url)).header("x-freellm-strict", "1");
    assert_eq!(strict.json(&body).send().await.unwrap().headers()["x-freellm-cached"], "false");
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    // A stream needs a real event stream: a JSON body is not one (it fails over).
    mock.enqueue([Reply::sse(&[&chunk("Hi", Some("stop")), "[DONE]"])]);
    let _ = sse_data(gw.chat(stream).await).await;
    assert_eq!(mock.requests().len(), 4);

    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["cache"]["hits"], 1, "{}", status["cache"]);
    assert!(status["cache"]["sets"].as_u64().unwrap() >= 1);
    assert_eq!(status["recentRequests"][3]["cached"], true);
}

#[tokio::test]
async fn truncated_answers_are_not_cached() {
    let mock = MockUpstream::start(|_| {
        let mut c = completion("m", "cut");
        c["choices"][0]["finish_reason"] = json!("length");
        Reply::ok(c)
    })
    .await;
    let gw = gateway(&mock, &[]).await;
    for _ in 0..2 {
        assert_eq!(gw.chat(chat_body("groq/llama-3.3-70b-versatile")).await.headers()["x-freellm-cached"], "false");
    }
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn credentials_guard_every_endpoint_but_healthz() {
    let mock = MockUpstream::completing().await;
    let gw = gateway(&mock, &[("FREELLM_API_KEY", MASTER), ("FREELLM_ADMIN_KEY", ADMIN)]).await;
    assert_eq!(gw.get("/healthz").await.status(), 200);
    assert_eq!(code(gw.get("/v1/models").await).await, (401, "missing_api_key".into()));
    let wrong = gw.http.get(format!("{}/v1/models", gw.url)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(code(wrong).await, (401, "invalid_api_key".into()));
    let ok = gw.http.get(format!("{}/v1/models", gw.url)).bearer_auth(MASTER).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(post(&gw, Some(MASTER), &chat_body("free")).send().await.unwrap().status(), 200);
    // Admin endpoints need the admin key.
    let patch = |bearer: &str| {
        gw.http
            .patch(format!("{}/v1/status/routing", gw.url))
            .bearer_auth(bearer)
            .json(&json!({"strategy": "random"}))
            .send()
    };
    assert_eq!(code(patch(MASTER).await.unwrap()).await, (403, "admin_required".into()));
    assert_eq!(patch(ADMIN).await.unwrap().status(), 200);
    let api = gw.http.get(format!("{}/api/v1/status", gw.url)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(api.status(), 200);
}

#[tokio::test]
async fn virtual_key_caps_are_exact_under_concurrency_and_failures_do_not_count() {
    let mock = MockUpstream::completing().await;
    let dir = tempfile::tempdir().unwrap();
    let path = keys_file(
        dir.path(),
        &json!({"keys": [
            {"id": "sk-freellm-team-alpha", "label": "Alpha", "dailyRequestCap": 10},
            {"id": "sk-freellm-team-beta", "label": "Beta", "dailyRequestCap": 2, "allowedModels": ["groq/llama-3.3-70b-versatile"]},
            {"id": "sk-freellm-team-old", "label": "Old", "expiresAt": "2020-01-01T00:00:00Z"}
        ]}),
    );
    let path = path.display().to_string();
    let gw = gateway(&mock, &[("FREELLM_VIRTUAL_KEYS_PATH", &path), ("FREELLM_ADMIN_KEY", ADMIN)]).await;
    // 50 simultaneous requests (distinct bodies: no cache) against a cap of 10.
    let requests = (0..50).map(|i| {
        let mut body = chat_body("groq/llama-3.3-70b-versatile");
        body["messages"][0]["content"] = json!(format!("question {i}"));
        post(&gw, Some("sk-freellm-team-alpha"), &body).send()
    });
    let results = futures_util::future::join_all(requests).await;
    let mut ok = 0;
    for r in results {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => assert_eq!(code(r).await.1, "virtual_key_cap_reached"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(mock.requests().len(), 10);

    // Beta: an upstream failure does not consume the cap.
    mock.enqueue([Reply::error(400, "bad request from upstream")]);
    let beta = |i: usize| {
        let mut body = chat_body("groq/llama-3.3-70b-versatile");
        body["messages"][0]["content"] = json!(format!("beta {i}"));
        post(&gw, Some("sk-freellm-team-beta"), &body).send()
    };
    assert_eq!(beta(0).await.unwrap().status(), 502);
    assert_eq!(beta(1).await.unwrap().status(), 200);
    assert_eq!(beta(2).await.unwrap().status(), 200);
    assert_eq!(code(beta(3).await.unwrap()).await, (429, "virtual_key_cap_reached".into()));
    // Allowlist and expiry.
    assert_eq!(
        code(post(&gw, Some("sk-freellm-team-beta"), &chat_body("free")).send().await.unwrap()).await.1,
        "model_not_supported"
    );
    let expired = gw.http.get(format!("{}/v1/models", gw.url)).bearer_auth("sk-freellm-team-old").send().await.unwrap();
    assert_eq!(code(expired).await, (401, "invalid_api_key".into()));

    let inventory: Value = gw
        .http
        .get(format!("{}/v1/status/virtual-keys", gw.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alpha = inventory["keys"].as_array().unwrap().iter().find(|k| k["label"] == "Alpha").unwrap().clone();
    assert_eq!(alpha["requestsInWindow"], 10);
    assert_eq!(alpha["requestCapRemaining"], 0);
    assert!(!inventory.to_string().contains("sk-freellm-team-alpha"), "ids are masked");
    let denied = gw
        .http
        .get(format!("{}/v1/status/virtual-keys", gw.url))
        .bearer_auth("sk-freellm-team-alpha")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
}

#[tokio::test]
async fn the_keys_file_is_reloaded_and_a_broken_one_is_rejected() {
    let mock = MockUpstream::completing().await;
    let dir = tempfile::tempdir().unwrap();
    let path = keys_file(dir.path(), &json!({"keys": [{"id": "sk-freellm-first-key", "label": "First"}]}));
    let shown = path.display().to_string();
    let gw = gateway(&mock, &[("FREELLM_VIRTUAL_KEYS_PATH", &shown), ("FREELLM_ADMIN_KEY", ADMIN)]).await;
    let models = |bearer: &'static str| gw.http.get(format!("{}/v1/models", gw.url)).bearer_auth(bearer).send();
    assert_eq!(models("sk-freellm-first-key").await.unwrap().status(), 200);
    assert_eq!(models("sk-freellm-second-key").await.unwrap().status(), 401);

    keys_file(
        dir.path(),
        &json!({"keys": [{"id": "sk-freellm-first-key", "label": "First"}, {"id": "sk-freellm-second-key", "label": "Second"}]}),
    );
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if models("sk-freellm-second-key").await.unwrap().status() == 200 {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "new key live without a restart:\n{}", gw.log());

    std::fs::write(&path, "{\"keys\": [{\"id\": \"bad\"}").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(models("sk-freellm-second-key").await.unwrap().status(), 200, "previous keys stay in force");
    let status: Value =
        gw.http.get(format!("{}/v1/status", gw.url)).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    assert!(
        status["virtualKeys"]["lastReloadError"].as_str().unwrap_or("").contains("invalid virtual keys file"),
        "{}",
        status["virtualKeys"]
    );
}

#[tokio::test]
async fn usage_survives_a_restart_and_a_crash() {
    let mock = MockUpstream::completing().await;
    let dir = tempfile::tempdir().unwrap();
    let path = keys_file(
        dir.path(),
        &json!({"keys": [{"id": "sk-freellm-durable-key", "label": "Durable", "dailyRequestCap": 4}]}),
    );
    let data = dir.path().join("data").display().to_string();
    let shown = path.display().to_string();
    let extra = [
        ("FREELLM_VIRTUAL_KEYS_PATH", shown.as_str()),
        ("FREELLM_DATA_DIR", data.as_str()),
        ("FREELLM_ADMIN_KEY", ADMIN),
    ];
    let ask = |gw: &Gateway, i: usize| {
        let mut body = chat_body("groq/llama-3.3-70b-versatile");
        body["messages"][0]["content"] = json!(format!("q{i}"));
        post(gw, Some("sk-freellm-durable-key"), &body).send()
    };
    let gw = gateway(&mock, &extra).await;
    assert_eq!(ask(&gw, 0).await.unwrap().status(), 200);
    assert_eq!(ask(&gw, 1).await.unwrap().status(), 200);
    gw.terminate().await; // graceful: persisted at shutdown

    let gw = gateway(&mock, &extra).await;
    assert_eq!(ask(&gw, 2).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await; // past one snapshot
    gw.kill().await; // SIGKILL: only the last second may be lost

    let gw = gateway(&mock, &extra).await;
    assert_eq!(ask(&gw, 3).await.unwrap().status(), 200);
    assert_eq!(code(ask(&gw, 4).await.unwrap()).await, (429, "virtual_key_cap_reached".into()));
    let status: Value = gw
        .http
        .get(format!("{}/v1/status", gw.url))
        // Gateway-wide usage is an operator view.
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["providers"][0]["usage"]["requestCount"].as_u64().unwrap() >= 4,
        "provider usage restored: {status}"
    );
}

#[tokio::test]
async fn a_key_benched_on_a_spent_daily_quota_stays_benched_after_a_restart() {
    let mock = MockUpstream::completing().await;
    mock.enqueue([Reply::error(429, "Rate limit reached for requests per day (RPD): Limit 14400, Used 14400")]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let extra = [("FREELLM_DATA_DIR", data.as_str()), ("CACHE_ENABLED", "false")];
    let key_state = |status: &Value| status["providers"][0]["keys"][0].clone();

    let gw = gateway(&mock, &extra).await;
    let r = post(&gw, None, &chat_body("groq/llama-3.3-70b-versatile")).send().await.unwrap();
    assert_eq!(code(r).await, (429, "all_providers_exhausted".into()));
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(key_state(&status)["rateLimited"], true, "{status}");
    gw.terminate().await;

    let gw = gateway(&mock, &extra).await;
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let key = key_state(&status);
    assert_eq!(key["rateLimited"], true, "the rest outlives the restart: {key}");
    assert!(key["retryAfterMs"].as_u64().unwrap_or(0) > 60_000, "resting until the quota resets: {key}");
    let r = post(&gw, None, &chat_body("groq/llama-3.3-70b-versatile")).send().await.unwrap();
    assert_eq!(code(r).await, (429, "all_providers_exhausted".into()));
    assert_eq!(mock.requests().len(), 1, "the benched key was not tried again upstream");
}

#[tokio::test]
async fn identifiers_are_limited_and_reported() {
    let mock = MockUpstream::completing().await;
    let gw = gateway(&mock, &[("FREELLM_IDENTIFIER_LIMIT", "3/60000")]).await;
    let with_id = |id: &str| gw.http.get(format!("{}/v1/models", gw.url)).header("x-freellm-identifier", id).send();
    for left in [2, 1, 0] {
        let r = with_id("user-42").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-freellm-identifier"], "user-42");
        assert_eq!(r.headers()["x-freellm-identifier-remaining"], left.to_string().as_str());
        assert_eq!(r.headers()["x-freellm-identifier-reset"], "60000");
    }
    let r = with_id("user-42").await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(code(r).await, (429, "identifier_rate_limited".into()));
    assert_eq!(with_id("user-43").await.unwrap().status(), 200, "buckets are per identifier");
    let bad = with_id("bad identifier!").await.unwrap();
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(
        body["error"]["message"].as_str().unwrap_or_default().starts_with("header X-FreeLLM-Identifier: "),
        "{body}"
    );
    let r = with_id("undefined").await.unwrap();
    assert!(r.headers()["x-freellm-identifier"].to_str().unwrap().starts_with("ip:"));
    assert_eq!(gw.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn browser_tokens_are_bound_to_origin_expiry_and_identifier() {
    let mock = MockUpstream::completing().await;
    let gw = gateway(
        &mock,
        &[
            ("FREELLM_API_KEY", MASTER),
            ("FREELLM_TOKEN_SECRET", TOKEN_SECRET),
            ("FREELLM_IDENTIFIER_LIMIT", "100/60000"),
        ],
    )
    .await;
    let issue = |bearer: &str, body: Value| {
        gw.http.post(format!("{}/v1/tokens/issue", gw.url)).bearer_auth(bearer).json(&body).send()
    };
    let r = issue(MASTER, json!({"origin": "https://app.example", "identifier": "user-1", "ttlSeconds": 60}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let minted: Value = r.json().await.unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("flt."));
    let call = |token: &str, origin: Option<&str>, identifier: Option<&str>| {
        let mut r = post(&gw, Some(token), &chat_body("free"));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(i) = identifier {
            r = r.header("x-freellm-identifier", i);
        }
        r.send()
    };
    let ok = call(&token, Some("https://app.example"), Some("someone-else")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-freellm-identifier"], "user-1", "the token's identifier cannot be overridden");

    let rejected = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        (status, body["error"]["message"].as_str().unwrap_or("").to_owned())
    };
    let (s, m) = rejected(call(&token, Some("https://evil.example"), None).await.unwrap()).await;
    assert_eq!(s, 401);
    assert!(m.starts_with("Browser token rejected:"), "{m}");
    let (s, _) = rejected(call(&token, None, None).await.unwrap()).await;
    assert_eq!(s, 401);
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('0') { '1' } else { '0' });
    let (s, m) = rejected(call(&tampered, Some("https://app.example"), None).await.unwrap()).await;
    assert_eq!(s, 401);
    assert!(m.contains("signature"), "{m}");
    // A token cannot mint tokens (even from its own origin).
    let chained = gw
        .http
        .post(format!("{}/v1/tokens/issue", gw.url))
        .bearer_auth(&token)
        .header("origin", "https://app.example")
        .json(&json!({"origin": "https://app.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(chained).await, (403, "admin_required".into()));
    // Bad bodies are 400s.
    assert_eq!(
        code(issue(MASTER, json!({"origin": "https://app.example", "ttlSeconds": 901})).await.unwrap()).await.0,
        400
    );
    assert_eq!(code(issue(MASTER, json!({"origin": "ftp://x"})).await.unwrap()).await.0, 400);
    // Expiry.
    let short: Value =
        issue(MASTER, json!({"origin": "https://app.example", "ttlSeconds": 1})).await.unwrap().json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, m) =
        rejected(call(short["token"].as_str().unwrap(), Some("https://app.example"), None).await.unwrap()).await;
    assert_eq!(s, 401);
    assert!(m.contains("expired"), "{m}");
}

#[tokio::test]
async fn a_short_token_secret_refuses_to_boot() {
    let (code, log) = Gateway::start_failing(GatewayOptions {
        config: String::new(),
        env: vec![("FREELLM_TOKEN_SECRET".into(), "too-short".into())],
    })
    .await;
    assert_ne!(code, Some(0));
    assert!(log.contains("FREELLM_TOKEN_SECRET") && log.contains("32"), "{log}");
}

#[tokio::test]
async fn cors_preflights_and_exposed_headers() {
    let mock = MockUpstream::completing().await;
    let gw = gateway(&mock, &[("FREELLM_API_KEY", MASTER), ("ALLOWED_ORIGINS", "https://app.example")]).await;
    let preflight = |origin: &str| {
        gw.http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/chat/completions", gw.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let r = preflight("https://app.example").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(r.headers()["access-control-allow-credentials"], "true", "as the reference, on preflights too");
    assert!(r.headers()["access-control-allow-headers"].to_str().unwrap().contains("Authorization"));
    assert!(r.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let r = preflight("https://evil.example").await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = post(&gw, Some(MASTER), &chat_body("free")).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let exposed = r.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    for h in ["X-Request-Id", "X-FreeLLM-Provider", "X-FreeLLM-Route-Reason", "Retry-After"] {
        assert!(exposed.contains(h), "{exposed}");
    }
}

#[tokio::test]
async fn secrets_never_reach_logs_or_error_bodies() {
    // The upstream echoes the key it was sent, as some providers do.
    let mock = MockUpstream::start(|r| {
        let auth = r.header("authorization").unwrap_or_default();
        Reply::error(401, &format!("Invalid API key: {auth}"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = keys_file(dir.path(), &json!({"keys": [{"id": "sk-freellm-secret-tenant-key", "label": "T"}]}));
    let shown = path.display().to_string();
    let gw = gateway(
        &mock,
        &[
            ("FREELLM_API_KEY", MASTER),
            ("FREELLM_ADMIN_KEY", ADMIN),
            ("FREELLM_TOKEN_SECRET", TOKEN_SECRET),
            ("FREELLM_VIRTUAL_KEYS_PATH", &shown),
            ("LOG_LEVEL", "debug"),
        ],
    )
    .await;
    let mut bodies = String::new();
    for bearer in [MASTER, ADMIN, "sk-freellm-secret-tenant-key", "flt.bogus.token", "wrong-key"] {
        let r = post(&gw, Some(bearer), &chat_body("groq/llama-3.3-70b-versatile")).send().await.unwrap();
        bodies.push_str(&r.text().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.log();
    for secret in [MASTER, ADMIN, GROQ_KEY, TOKEN_SECRET, "sk-freellm-secret-tenant-key"] {
        assert!(!log.contains(secret), "{secret} leaked into the log:\n{log}");
        assert!(!bodies.contains(secret), "{secret} leaked into a response: {bodies}");
    }
    assert!(bodies.contains("REDACTED"), "{bodies}");
}
