//! End-to-end: chat completions through the real gateway and real adapter
//! components, plain and streaming, against a local mock upstream.

use std::time::Duration;

use freellm_e2e::*;
use serde_json::{Value, json};

fn groq_env(mock: &MockUpstream) -> Vec<(String, String)> {
    vec![
        ("GROQ_API_KEY".into(), "gsk_test_key_one".into()),
        ("GROQ_BASE_URL".into(), format!("{}/openai/v1", mock.url)),
    ]
}

async fn groq_gateway(mock: &MockUpstream) -> Gateway {
    Gateway::start_with(GatewayOptions { config: default_config(), env: groq_env(mock) }).await
}

#[tokio::test]
async fn plain_completion_is_mapped_by_the_component_and_marked() {
    let mock = MockUpstream::completing().await;
    let gw = groq_gateway(&mock).await;
    let mut body = chat_body("groq/llama-3.3-70b-versatile");
    body["temperature"] = json!(0.5);
    body["x_vendor_extra"] = json!({"keep": true});
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "trace-123")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", gw.log());
    let h = r.headers().clone();
    assert_eq!(h["x-request-id"], "trace-123");
    assert_eq!(h["x-freellm-provider"], "groq");
    assert_eq!(h["x-freellm-model"], "groq/llama-3.3-70b-versatile");
    assert_eq!(h["x-freellm-requested-model"], "groq/llama-3.3-70b-versatile");
    assert_eq!(h["x-freellm-cached"], "false");
    assert_eq!(h["x-freellm-route-reason"], "direct");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["x_freellm_provider"], "groq");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello from mock");

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/openai/v1/chat/completions");
    assert_eq!(seen[0].header("authorization").as_deref(), Some("Bearer gsk_test_key_one"));
    let upstream = seen[0].json();
    assert_eq!(upstream["model"], "llama-3.3-70b-versatile", "prefix stripped");
    assert_eq!(upstream["temperature"], 0.5);
    assert_eq!(upstream["x_vendor_extra"], json!({"keep": true}), "unknown fields forwarded");
}

#[tokio::test]
async fn streaming_completion_is_relayed_and_ends_with_done() {
    let mock = MockUpstream::start(|_| {
        Reply::sse(&[&chunk("Hel", None), &chunk("lo", None), &chunk("", Some("stop")), "[DONE]"])
    })
    .await;
    let gw = groq_gateway(&mock).await;
    let mut body = chat_body("groq/llama-3.1-8b-instant");
    body["stream"] = json!(true);
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["x-freellm-provider"], "groq");
    assert_eq!(r.headers()["x-freellm-cached"], "false");
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(mock.requests()[0].json()["stream"], true);
}

#[tokio::test]
async fn a_stream_cut_mid_answer_ends_with_an_error_event_not_done() {
    let mock = MockUpstream::start(|_| Reply::Stream {
        pieces: vec![
            (Duration::ZERO, format!("data: {}\n\n", chunk("partial", None))),
            (Duration::from_millis(50), format!("data: {}\n\n", chunk(" more", None))),
        ],
        cut: true,
    })
    .await;
    let mut gw = groq_gateway(&mock).await;
    let mut body = chat_body("groq/llama-3.1-8b-instant");
    body["stream"] = json!(true);
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let data = sse_data(r).await;
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().expect("events")).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    gw.assert_healthy().await;
}

#[tokio::test]
async fn ollama_gets_no_auth_header_and_its_configured_models() {
    let mock = MockUpstream::completing().await;
    let gw = Gateway::start(&[("OLLAMA_BASE_URL", &mock.url), ("OLLAMA_MODELS", "llama3, qwen2.5 ,")]).await;
    let models: Value = gw.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["free", "free-fast", "free-smart", "ollama/llama3", "ollama/qwen2.5"]);
    let r = gw.chat(chat_body("ollama/qwen2.5")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let seen = &mock.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert!(seen.header("authorization").is_none());
    assert_eq!(seen.json()["model"], "qwen2.5");
}

#[tokio::test]
async fn meta_model_routes_to_an_enabled_provider_default() {
    let mock = MockUpstream::completing().await;
    let gw = groq_gateway(&mock).await;
    let r = gw.chat(chat_body("free-fast")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-freellm-route-reason"], "meta");
    assert_eq!(r.headers()["x-freellm-model"], "groq/llama-3.3-70b-versatile");
    assert_eq!(r.headers()["x-freellm-requested-model"], "free-fast");
}

#[tokio::test]
async fn a_rate_limited_key_fails_over_to_the_next_key() {
    let mock = MockUpstream::completing().await;
    mock.enqueue([Reply::error(429, "Rate limit reached for requests").with_header("retry-after", "7")]);
    let mut env = groq_env(&mock);
    env[0].1 = "gsk_key_one_xxxxxxx,gsk_key_two_xxxxxxx".into();
    let gw = Gateway::start_with(GatewayOptions { config: default_config(), env }).await;
    let r = gw.chat(chat_body("groq/llama-3.3-70b-versatile")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-route-reason"], "failover");
    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].header("authorization"), seen[1].header("authorization"));
    // The cooled key is skipped by the next request (another prompt: no cache hit).
    let mut other = chat_body("groq/llama-3.3-70b-versatile");
    other["messages"][0]["content"] = json!("Something else");
    let r = gw.chat(other).await;
    assert_eq!(r.status(), 200);
    assert_eq!(mock.requests()[2].header("authorization"), seen[1].header("authorization"));
}

#[tokio::test]
async fn all_keys_rate_limited_is_all_providers_exhausted_with_retry_after() {
    let mock = MockUpstream::start(|_| Reply::error(429, "slow down").with_header("retry-after", "7")).await;
    let gw = groq_gateway(&mock).await;
    let r = gw.chat(chat_body("groq/llama-3.3-70b-versatile")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "all_providers_exhausted");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["retry_after_ms"].as_u64().unwrap() > 6000);
}

#[tokio::test]
async fn an_invalid_request_upstream_is_surfaced_not_retried() {
    let mock = MockUpstream::start(|_| Reply::error(400, "'messages' must contain the word 'json'")).await;
    let gw = groq_gateway(&mock).await;
    let r = gw.chat(chat_body("free")).await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_upstream_error");
    assert_eq!(body["error"]["provider"], "groq");
    assert!(body["error"]["message"].as_str().unwrap().contains("must contain the word"));
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_failing_provider_fails_over_to_the_next_provider() {
    let groq = MockUpstream::start(|_| Reply::error(503, "over capacity")).await;
    let ollama = MockUpstream::completing().await;
    let mut env = groq_env(&groq);
    env.push(("OLLAMA_BASE_URL".into(), ollama.url.clone()));
    env.push(("OLLAMA_MODELS".into(), "llama3".into()));
    let gw = Gateway::start_with(GatewayOptions { config: default_config(), env }).await;
    let r = gw.chat(chat_body("free-fast")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "ollama");
    assert_eq!(r.headers()["x-freellm-route-reason"], "failover");
    // One retry on the same target (ROUTE_TRANSIENT_RETRIES=1), spaced by a
    // jittered backoff, then failover: never hammered.
    let seen = groq.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(90), "{:?}", seen[1].at - seen[0].at);
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out_per_attempt() {
    let mock = MockUpstream::start(|_| Reply::Hang).await;
    let mut env = groq_env(&mock);
    env.push(("UPSTREAM_FIRST_BYTE_TIMEOUT_MS".into(), "300".into()));
    let mut gw = Gateway::start_with(GatewayOptions { config: default_config(), env }).await;
    let started = std::time::Instant::now();
    let r = gw.chat(chat_body("groq/llama-3.3-70b-versatile")).await;
    assert_eq!(r.status(), 429);
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "all_providers_exhausted", "{body}");
    let attempt = &body["error"]["attempts"][0];
    assert_eq!(attempt["outcome"], "timeout", "{body}");
    assert!(attempt["message"].as_str().unwrap().contains("no response within"), "{body}");
    gw.assert_healthy().await;
}

/// The component reads strings many bytes a step: an escape or a
/// multi-byte character at every offset around those steps, in strings
/// ending at every offset, reaches the upstream as the client wrote it.
#[tokio::test]
async fn escapes_and_characters_at_every_offset_of_a_string_are_forwarded_as_written() {
    let mock = MockUpstream::completing().await;
    let gw = groq_gateway(&mock).await;
    // The last two change the component's reading mid-string: ASCII
    // until a multi-byte character, then an escape after it (and back).
    let stops = [
        r#"\n"#,
        r#"\""#,
        r#"\\"#,
        r#"\u00e9"#,
        "\u{e9}",
        "\u{4e2d}",
        "\u{1f600}",
        "\u{e9}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\\"",
        "\\n\u{4e2d}\\t",
    ];
    let mut messages = Vec::new();
    for offset in 0..70 {
        for stop in stops {
            let (before, after) = ("a".repeat(offset), "b".repeat(offset % 19));
            messages.push(format!(r#"{{"role":"user","content":"{before}{stop}{after}"}}"#));
        }
    }
    let messages = messages.join(",");
    let sent = format!(r#"{{"model":"groq/llama-3.3-70b-versatile","messages":[{messages}]}}"#);
    let r = gw.chat_text(sent).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let seen = mock.requests();
    let upstream = String::from_utf8(seen[0].body.to_vec()).expect("UTF-8");
    assert_eq!(upstream, format!(r#"{{"model":"llama-3.3-70b-versatile","messages":[{messages}]}}"#));
}

/// A large prompt goes through the groq component without being parsed and
/// encoded again: the upstream receives the client's own text (its escapes,
/// its number spellings) with only the model replaced and the fields Groq
/// refuses removed.
#[tokio::test]
async fn a_large_prompt_reaches_the_upstream_as_the_client_wrote_it() {
    let mock = MockUpstream::completing().await;
    let gw = groq_gateway(&mock).await;
    let line = r#"a line with \"quotes\", a back\\slash, caf\u00e9 and \ud83d\ude00; "#;
    let big = line.repeat(300 * 1024 / line.len());
    let messages = |first_user: &str| {
        format!(
            r#"[{{"role":"system","content":"Be br\u00efef \"and\" kind\n"}},{first_user},{{"role":"assistant","content":"ok \ud83d\ude00"}},{{"role":"user","content":[{{"type":"text","text":"more"}}]}}]"#
        )
    };
    let sent = format!(
        r#"{{"model":"groq/llama-3.3-70b-versatile","messages":{},"temperature":1.0,"top_p":1e0,"logit_bias":{{"42":-1}},"x_vendor":{{"deep":[1,2.50]}}}}"#,
        messages(&format!(r#"{{"role":"user","name":"ann","content":"{big}"}}"#))
    );
    let expected = format!(
        r#"{{"model":"llama-3.3-70b-versatile","messages":{},"temperature":1.0,"top_p":1e0,"x_vendor":{{"deep":[1,2.50]}}}}"#,
        messages(&format!(r#"{{"role":"user","content":"{big}"}}"#))
    );
    let r = gw.chat_text(sent.clone()).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert!(sent.len() > 300 * 1024, "the prompt is large");
    let upstream = String::from_utf8(seen[0].body.to_vec()).expect("UTF-8");
    assert!(
        upstream == expected,
        "the upstream body differs from the client's text (length {} vs {})",
        upstream.len(),
        expected.len()
    );
}

/// Many long values, in messages and beside them: the groq component names
/// a few of them as ranges of the client's body (contract 0.3) and writes
/// the rest, and the upstream receives one body, exactly the expected
/// text, with a `Content-Length` that matches it. Streamed and plain.
#[tokio::test]
async fn many_long_values_reach_the_upstream_whole_in_order() {
    let mock = MockUpstream::start(|r| {
        if r.json()["stream"] == true {
            Reply::sse(&[&chunk("ok", Some("stop")), "[DONE]"])
        } else {
            Reply::ok(completion("llama-3.3-70b-versatile", "ok"))
        }
    })
    .await;
    // Groq's declared tokens per minute would refuse a body this long.
    let gw = Gateway::start_with(GatewayOptions { config: config_with_groq_rpm(0), env: groq_env(&mock) }).await;
    let long = |i: usize| format!("message {i}: {}", "lorem \\\"ipsum\\\" dolor ".repeat(300 + 37 * i));
    let messages: Vec<String> = (0..13)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            format!(r#"{{"role":"{role}","content":"{}"}}"#, long(i))
        })
        .collect();
    for stream in [false, true] {
        let sent = format!(
            r#"{{"x_note":"{}","model":"groq/llama-3.3-70b-versatile","messages":[{}],"stream":{stream},"n":1}}"#,
            long(99),
            messages.join(",")
        );
        // A stream to groq asks for usage: the host's leading field.
        let usage = if stream { r#""stream_options":{"include_usage":true},"# } else { "" };
        let expected = format!(
            r#"{{{usage}"x_note":"{}","model":"llama-3.3-70b-versatile","messages":[{}],"stream":{stream}}}"#,
            long(99),
            messages.join(",")
        );
        let r = gw.chat_text(sent).await;
        assert_eq!(r.status(), 200, "{}", gw.log());
        let _ = r.bytes().await.unwrap();
        let seen = mock.requests();
        let last = seen.last().expect("the upstream got the request");
        let upstream = String::from_utf8(last.body.to_vec()).expect("UTF-8");
        assert!(
            upstream == expected,
            "stream {stream}: the upstream body differs ({} vs {} bytes)",
            upstream.len(),
            expected.len()
        );
        assert_eq!(last.header("content-length"), Some(expected.len().to_string()));
    }
}
