//! End-to-end: access control holes of issue #13 — browser tokens carry a
//! handle, not the virtual key; protection does not follow the keys file;
//! an open gateway's admin endpoints refuse cross-site calls and foreign
//! `Host` headers; tenants cannot read operator views but see `/v1/me`;
//! event feeds are capped per principal; the response cache is per tenant;
//! the `Bearer` scheme is case-insensitive.

use std::time::Duration;

use freellm_e2e::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MASTER: &str = "master-secret-key-access-0123456789";
const TOKEN_SECRET: &str = "an-hmac-secret-that-is-long-enough-0123456789";
const TEAM: &str = "sk-freellm-team-access-key-0001";
const OTHER: &str = "sk-freellm-other-tenant-key-0002";
const ORIGIN: &str = "https://app.example";

fn env(mock: &MockUpstream, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("GROQ_API_KEY".to_owned(), "gsk_access_test_key".to_owned()),
        ("GROQ_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

async fn gateway(mock: &MockUpstream, extra: &[(&str, &str)]) -> Gateway {
    Gateway::start_with(GatewayOptions { config: default_config(), env: env(mock, extra) }).await
}

fn keys_file(dir: &std::path::Path, body: &Value) -> String {
    let path = dir.join("virtual-keys.json");
    std::fs::write(&path, body.to_string()).unwrap();
    path.display().to_string()
}

fn two_keys() -> Value {
    json!({"keys": [
        {"id": TEAM, "label": "Team", "dailyRequestCap": 50},
        {"id": OTHER, "label": "Other"},
    ]})
}

async fn error_of(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let e = &body["error"];
    (status, e["code"].as_str().unwrap_or("").to_owned(), e["message"].as_str().unwrap_or("").to_owned())
}

fn get(gw: &Gateway, path: &str, bearer: Option<&str>) -> reqwest::RequestBuilder {
    let r = gw.http.get(format!("{}{path}", gw.url));
    match bearer {
        Some(b) => r.bearer_auth(b),
        None => r,
    }
}

fn chat(gw: &Gateway, bearer: &str, content: &str) -> reqwest::RequestBuilder {
    let mut body = chat_body("groq/llama-3.3-70b-versatile");
    body["messages"][0]["content"] = json!(content);
    gw.http.post(format!("{}/v1/chat/completions", gw.url)).bearer_auth(bearer).json(&body)
}

// ------------------------------------------------ base64url and HMAC (test-side)

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = B64.iter().position(|b| *b == c).expect("base64url digit") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

/// A token signed the way the reference gateway signs one.
fn reference_token(json: &str) -> String {
    format!(
        "flt.{}.{}",
        b64url_encode(json.as_bytes()),
        hex::encode(hmac_sha256(TOKEN_SECRET.as_bytes(), json.as_bytes()))
    )
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

// ---------------------------------------------------------------- item 1

#[tokio::test]
async fn a_browser_token_carries_a_handle_never_the_virtual_key() {
    let mock = MockUpstream::completing().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), &two_keys());
    let gw = gateway(&mock, &[("FREELLM_VIRTUAL_KEYS_PATH", &keys), ("FREELLM_TOKEN_SECRET", TOKEN_SECRET)]).await;

    let r = gw
        .http
        .post(format!("{}/v1/tokens/issue", gw.url))
        .bearer_auth(TEAM)
        .json(&json!({"origin": ORIGIN, "identifier": "user-7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let payload = String::from_utf8(b64url_decode(token.split('.').nth(1).unwrap())).unwrap();
    assert!(!payload.contains(TEAM) && !payload.contains("sk-freellm"), "the key leaks: {payload}");
    let handle = hex::encode(Sha256::digest(TEAM.as_bytes()));
    assert!(payload.contains(&handle), "{payload}");

    // The token still acts for its key (its usage counts against the key).
    let ok = chat(&gw, &token, "via token").header("origin", ORIGIN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let me: Value =
        get(&gw, "/v1/me", Some(&token)).header("origin", ORIGIN).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["principal"], "browser_token");
    assert_eq!(me["token"]["origin"], ORIGIN);
    assert_eq!(me["token"]["identifier"], "user-7");
    assert_eq!(me["virtualKey"]["label"], "Team");
    assert_eq!(me["virtualKey"]["requestsInWindow"], 1);
    assert!(!me.to_string().contains(TEAM), "{me}");

    // A reference-format token carrying the raw key is not accepted as
    // acting for that key; one without `vk` still verifies.
    let now = unix_secs();
    let raw =
        reference_token(&format!(r#"{{"v":1,"iat":{now},"exp":{},"origin":"{ORIGIN}","vk":"{TEAM}"}}"#, now + 60));
    let (status, _, message) = error_of(chat(&gw, &raw, "raw").header("origin", ORIGIN).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(message.contains("raw_virtual_key"), "{message}");
    assert!(!message.contains(TEAM), "{message}");
    let plain = reference_token(&format!(r#"{{"v":1,"iat":{now},"exp":{},"origin":"{ORIGIN}"}}"#, now + 60));
    let me = get(&gw, "/v1/me", Some(&plain)).header("origin", ORIGIN).send().await.unwrap();
    assert_eq!(me.status(), 200);
    // The handle is no credential.
    assert_eq!(error_of(get(&gw, "/v1/models", Some(&handle)).send().await.unwrap()).await.0, 401);
}

// ---------------------------------------------------------------- item 2

#[tokio::test]
async fn emptying_the_keys_file_never_opens_the_gateway() {
    let mock = MockUpstream::completing().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), &json!({"keys": [{"id": TEAM, "label": "Team"}]}));
    let gw = gateway(&mock, &[("FREELLM_VIRTUAL_KEYS_PATH", &keys)]).await;
    assert!(!gw.log().contains("OPEN"), "{}", gw.log());
    assert_eq!(get(&gw, "/v1/models", Some(TEAM)).send().await.unwrap().status(), 200);

    keys_file(dir.path(), &json!({"keys": []}));
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if get(&gw, "/v1/models", Some(TEAM)).send().await.unwrap().status() == 401 {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the emptied file was not reloaded:\n{}", gw.log());
    for path in ["/v1/models", "/v1/status", "/v1/status/virtual-keys", "/v1/plugins", "/metrics", "/v1/me"] {
        assert_eq!(error_of(get(&gw, path, None).send().await.unwrap()).await.1, "missing_api_key", "{path}");
    }
    let upload = gw
        .http
        .post(format!("{}/v1/plugins/groq", gw.url))
        .header("content-type", "application/wasm")
        .body(vec![0u8; 8])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 401);

    // A broken file neither.
    std::fs::write(dir.path().join("virtual-keys.json"), "{\"keys\": [").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&gw, "/v1/status", None).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_gateway_started_with_an_empty_keys_file_is_protected_and_open_mode_is_announced() {
    let mock = MockUpstream::completing().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), &json!({"keys": []}));
    let gw = gateway(&mock, &[("FREELLM_VIRTUAL_KEYS_PATH", &keys)]).await;
    assert_eq!(get(&gw, "/v1/models", None).send().await.unwrap().status(), 401);
    let session: Value = get(&gw, "/dashboard/session", None).send().await.unwrap().json().await.unwrap();
    assert_eq!(session["protected"], true);

    let open = gateway(&mock, &[]).await;
    assert_eq!(get(&open, "/v1/models", None).send().await.unwrap().status(), 200);
    let log = open.log();
    let warn = log.lines().find(|l| l.contains("gateway is OPEN")).unwrap_or_else(|| panic!("{log}"));
    assert!(warn.contains("WARN") && warn.contains("FREELLM_ADMIN_KEY"), "{warn}");
}

// ---------------------------------------------------------------- item 8

#[tokio::test]
async fn an_open_gateway_refuses_cross_site_admin_calls() {
    let mock = MockUpstream::completing().await;
    let gw = gateway(&mock, &[]).await;
    let host = gw.url.trim_start_matches("http://").to_owned();
    let upload = |origin: Option<&str>, content_type: Option<&str>| {
        let mut r = gw.http.post(format!("{}/v1/plugins/groq", gw.url)).body(b"\0asm not really".to_vec());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(t) = content_type {
            r = r.header("content-type", t);
        }
        r.send()
    };
    // The attack: a cross-site text/plain POST (no preflight).
    let (status, code, _) = error_of(upload(Some("https://evil.example"), Some("text/plain")).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "cross_origin_refused"));
    let r = upload(Some("https://evil.example"), Some("application/wasm")).await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    assert_eq!(error_of(r).await.1, "cross_origin_refused");
    assert_eq!(error_of(upload(Some("null"), Some("application/wasm")).await.unwrap()).await.1, "cross_origin_refused");
    let cross = gw
        .http
        .post(format!("{}/v1/plugins/reload", gw.url))
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(cross).await.1, "cross_origin_refused");
    // Content types a form or a simple request could send.
    for bad in
        [Some("text/plain"), Some("multipart/form-data; boundary=x"), Some("application/x-www-form-urlencoded"), None]
    {
        let (status, code, _) = error_of(upload(None, bad).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (415, "unsupported_media_type"), "{bad:?}");
    }
    let patch = gw
        .http
        .patch(format!("{}/v1/status/routing", gw.url))
        .header("content-type", "text/plain")
        .body(r#"{"strategy":"random"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(patch).await.0, 415);
    let status: Value = get(&gw, "/v1/status", None).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["routingStrategy"], "quota_aware", "the refused PATCH changed nothing");

    // The gateway's own page (same origin), the right content type: the
    // upload reaches the handler (which judges the component).
    let own = format!("http://{host}");
    let r = upload(Some(&own), Some("application/wasm")).await.unwrap();
    let (status, code, _) = error_of(r).await;
    assert!(!matches!(code.as_str(), "cross_origin_refused" | "unsupported_media_type"), "{status} {code}");
    let r = upload(None, Some("application/octet-stream")).await.unwrap();
    assert!(!matches!(error_of(r).await.1.as_str(), "cross_origin_refused" | "unsupported_media_type"));
    // A POST that takes no body needs no content type.
    let reset = gw.http.post(format!("{}/v1/status/providers/groq/reset", gw.url)).send().await.unwrap();
    assert_eq!(reset.status(), 200);
    let switch = gw
        .http
        .patch(format!("{}/v1/status/routing", gw.url))
        .header("origin", &own)
        .json(&json!({"strategy": "random"}))
        .send()
        .await
        .unwrap();
    assert_eq!(switch.status(), 200);
    // Non-admin endpoints are untouched (chat is CORS-open in open mode).
    let chat = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("origin", "https://evil.example")
        .json(&chat_body("groq/llama-3.3-70b-versatile"))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
}

#[tokio::test]
async fn a_loopback_gateway_refuses_foreign_host_headers() {
    let mock = MockUpstream::completing().await;
    let gw = gateway(&mock, &[]).await;
    let port = gw.url.rsplit(':').next().unwrap().to_owned();
    let with_host =
        |host: String, path: &'static str| gw.http.get(format!("{}{path}", gw.url)).header("host", host).send();
    for host in ["evil.example".to_owned(), format!("evil.example:{port}"), format!("127.0.0.1.nip.io:{port}")] {
        for path in ["/v1/status", "/healthz", "/v1/plugins", "/dashboard/session"] {
            let r = with_host(host.clone(), path).await.unwrap();
            assert!(r.headers().contains_key("x-request-id"));
            let (status, code, message) = error_of(r).await;
            assert_eq!((status, code.as_str()), (421, "host_not_allowed"), "{host} {path}");
            assert!(message.contains("allowed_hosts"), "{message}");
        }
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        assert_eq!(with_host(host.clone(), "/v1/status").await.unwrap().status(), 200, "{host}");
    }
    // A configured list replaces the defaults.
    let named = gateway(&mock, &[("FREELLM_ALLOWED_HOSTS", "gw.example, 127.0.0.1")]).await;
    let named_host = |host: &str| named.http.get(format!("{}/v1/models", named.url)).header("host", host).send();
    assert_eq!(named_host("gw.example").await.unwrap().status(), 200);
    assert_eq!(named_host(&format!("localhost:{port}")).await.unwrap().status(), 421, "localhost is no longer listed");
}

// ---------------------------------------------------------------- item 9

#[tokio::test]
async fn tenants_cannot_read_operator_views_and_see_their_own_usage_instead() {
    let mock = MockUpstream::completing().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), &two_keys());
    let gw = gateway(
        &mock,
        &[("FREELLM_VIRTUAL_KEYS_PATH", &keys), ("FREELLM_API_KEY", MASTER), ("FREELLM_TOKEN_SECRET", TOKEN_SECRET)],
    )
    .await;
    assert_eq!(chat(&gw, TEAM, "mine").send().await.unwrap().status(), 200);
    let token: Value = gw
        .http
        .post(format!("{}/v1/tokens/issue", gw.url))
        .bearer_auth(TEAM)
        .json(&json!({"origin": ORIGIN}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    for path in ["/v1/status", "/v1/events", "/metrics", "/api/v1/status", "/api/metrics"] {
        for bearer in [TEAM, token.as_str()] {
            let r = get(&gw, path, Some(bearer)).header("origin", ORIGIN).send().await.unwrap();
            let (status, code, message) = error_of(r).await;
            assert_eq!((status, code.as_str()), (403, "operator_required"), "{path}");
            assert!(message.contains("/v1/me"), "{message}");
        }
        assert!(get(&gw, path, Some(MASTER)).send().await.unwrap().status().is_success(), "{path}");
    }

    let me: Value = get(&gw, "/v1/me", Some(TEAM)).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["principal"], "virtual_key");
    let key = &me["virtualKey"];
    assert_eq!(key["label"], "Team");
    assert_eq!(key["requestsInWindow"], 1);
    assert_eq!(key["dailyRequestCap"], 50);
    assert_eq!(key["requestCapRemaining"], 49);
    assert!(key["maskedId"].as_str().unwrap().contains("..."));
    assert!(!me.to_string().contains(TEAM) && !me.to_string().contains("Other"), "{me}");
    let other: Value = get(&gw, "/v1/me", Some(OTHER)).send().await.unwrap().json().await.unwrap();
    assert_eq!(other["virtualKey"]["requestsInWindow"], 0, "each tenant sees its own usage");
    let master: Value = get(&gw, "/v1/me", Some(MASTER)).send().await.unwrap().json().await.unwrap();
    assert_eq!(master["principal"], "master");
    assert_eq!(error_of(get(&gw, "/v1/me", None).send().await.unwrap()).await.0, 401);
}

#[tokio::test]
async fn event_feeds_are_capped_per_principal_and_a_closed_feed_frees_its_slot() {
    let mock = MockUpstream::completing().await;
    let gw = gateway(&mock, &[("FREELLM_MAX_EVENT_FEEDS", "2")]).await;
    let open_feed = || async {
        // A client of its own, so dropping the feed closes its connection.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        client.get(format!("{}/v1/events", gw.url)).send().await.unwrap()
    };
    let first = open_feed().await;
    let second = open_feed().await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = open_feed().await;
    let (status, code, message) = error_of(third).await;
    assert_eq!((status, code.as_str()), (429, "too_many_event_feeds"));
    assert!(message.contains("at most 2"), "{message}");

    drop(first);
    let mut reopened = None;
    for i in 0..60 {
        // Each request is an event the closed feed tries to write, which
        // is how its end is noticed.
        let _ = gw.chat(json!({"model": "groq/llama-3.3-70b-versatile", "messages": [{"role": "user", "content": format!("poke {i}")}]})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = open_feed().await;
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
    }
    assert!(reopened.is_some(), "the closed feed's slot was never freed:\n{}", gw.log());
    drop(second);
}

// ---------------------------------------------------------------- item 10a

#[tokio::test]
async fn the_response_cache_is_scoped_per_tenant_unless_shared() {
    let mock = MockUpstream::completing().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), &two_keys());
    let cached = |r: &reqwest::Response| r.headers()["x-freellm-cached"].to_str().unwrap().to_owned();

    let gw = gateway(&mock, &[("FREELLM_VIRTUAL_KEYS_PATH", &keys), ("FREELLM_API_KEY", MASTER)]).await;
    let a1 = chat(&gw, TEAM, "a secret question").send().await.unwrap();
    assert_eq!(cached(&a1), "false");
    let a2 = chat(&gw, TEAM, "a secret question").send().await.unwrap();
    assert_eq!(cached(&a2), "true", "a tenant's own repeat is cached");
    let b = chat(&gw, OTHER, "a secret question").send().await.unwrap();
    assert_eq!((b.status().as_u16(), cached(&b)), (200, "false".to_owned()), "another tenant learns nothing");
    let m = chat(&gw, MASTER, "a secret question").send().await.unwrap();
    assert_eq!(cached(&m), "false");
    drop(gw);

    let shared =
        gateway(&mock, &[("FREELLM_VIRTUAL_KEYS_PATH", &keys), ("FREELLM_API_KEY", MASTER), ("CACHE_SCOPE", "shared")])
            .await;
    assert_eq!(cached(&chat(&shared, TEAM, "a shared question").send().await.unwrap()), "false");
    assert_eq!(cached(&chat(&shared, OTHER, "a shared question").send().await.unwrap()), "true");
}

// ---------------------------------------------------------------- item 10d

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let mock = MockUpstream::completing().await;
    let gw = gateway(&mock, &[("FREELLM_API_KEY", MASTER)]).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = gw.http.get(format!("{}/v1/models", gw.url)).header("authorization", format!("{scheme} {MASTER}"));
        assert_eq!(r.send().await.unwrap().status(), 200, "{scheme}");
    }
    for bad in [format!("Basic {MASTER}"), format!("Bearer{MASTER}"), MASTER.to_owned()] {
        let r = gw.http.get(format!("{}/v1/models", gw.url)).header("authorization", bad.clone());
        assert_eq!(r.send().await.unwrap().status(), 401, "{bad}");
    }
}
