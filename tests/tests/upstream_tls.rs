//! End-to-end: HTTPS upstreams. Every hosted provider is HTTPS, so the
//! gateway must verify and speak TLS; a private CA is trusted through
//! `UPSTREAM_CA_FILE`, and a certificate nobody vouches for is refused.

use freellm_e2e::*;
use serde_json::Value;

fn tls_env(mock: &MockUpstream, ca_file: Option<String>) -> Vec<(String, String)> {
    let mut env = vec![
        ("GROQ_API_KEY".to_owned(), "gsk_tls_key".to_owned()),
        ("GROQ_BASE_URL".to_owned(), format!("{}/openai/v1", mock.url)),
    ];
    if let Some(ca) = ca_file {
        env.push(("UPSTREAM_CA_FILE".to_owned(), ca));
    }
    env
}

#[tokio::test]
async fn an_https_upstream_signed_by_the_configured_ca_answers() {
    let mock =
        MockUpstream::start_tls(|r| Reply::ok(completion(r.json()["model"].as_str().unwrap_or("m"), "over TLS"))).await;
    assert!(mock.url.starts_with("https://"));
    let ca = test_ca_file().display().to_string();
    let gw = Gateway::start_with(GatewayOptions { config: default_config(), env: tls_env(&mock, Some(ca)) }).await;

    let r = gw.chat(chat_body("groq/llama-3.3-70b-versatile")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "over TLS");

    // A streamed answer over the same pooled TLS connection.
    let mut body = chat_body("groq/llama-3.3-70b-versatile");
    body["stream"] = true.into();
    mock.enqueue([Reply::sse(&[&chunk("Hel", None), &chunk("lo", Some("stop")), "[DONE]"])]);
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");

    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/openai/v1/chat/completions");
    assert_eq!(seen[0].header("authorization").as_deref(), Some("Bearer gsk_tls_key"));
    assert!(seen.iter().all(|r| r.version == "HTTP/2.0"), "HTTP/2 negotiated by ALPN: {:?}", seen[0].version);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_named() {
    let mock = MockUpstream::start_tls(|_| Reply::ok(completion("m", "must not arrive"))).await;
    let mut gw = Gateway::start_with(GatewayOptions { config: default_config(), env: tls_env(&mock, None) }).await;

    let r = gw.chat(chat_body("groq/llama-3.3-70b-versatile")).await;
    assert_eq!(r.status(), 429);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "all_providers_exhausted");
    let message = error["error"]["attempts"][0]["message"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(message.contains("certificate"), "the TLS failure is named: {message}");
    assert!(mock.requests().is_empty(), "no request crossed an unverified connection");
    gw.assert_healthy().await;
}

#[tokio::test]
async fn a_missing_or_empty_ca_file_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for (path, expect) in [(dir.path().join("missing.pem"), "cannot read"), (empty, "no PEM certificate")] {
        let (code, log) = Gateway::start_failing(GatewayOptions {
            config: String::new(),
            env: vec![("UPSTREAM_CA_FILE".into(), path.display().to_string())],
        })
        .await;
        assert_ne!(code, Some(0), "{log}");
        assert!(log.contains("UPSTREAM_CA_FILE") && log.contains(expect), "{log}");
    }
}
