use super::*;
use freellm_sdk::{FinishReason, HttpMethod, StreamEvent};
use serde_json::json;

fn ctx(stream: bool) -> CallContext {
    CallContext { request_id: "r".into(), upstream_model: "mistral-small-latest".into(), is_stream: stream }
}

fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
    ResponseHead { status, headers: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect() }
}

fn map(body: Value) -> Value {
    let up = Mistral::map_request_body(&ctx(false), &serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!((up.method, up.path.as_str()), (HttpMethod::Post, "/chat/completions"));
    serde_json::from_slice(up.body.as_bytes().expect("a whole body")).unwrap()
}

fn classify(status: u16, headers: &[(&str, &str)], body: &str) -> Failure {
    Mistral::classify_failure(&ctx(false), &head(status, headers), body.as_bytes())
}

fn event(data: &str) -> StreamEvent {
    StreamEvent { event: None, data: data.to_owned() }
}

#[test]
fn describes_mistral() {
    let info = Mistral::configure(&vec![]).unwrap();
    assert_eq!((info.id.as_str(), info.display_name.as_str()), ("mistral", "Mistral"));
    assert_eq!(info.default_base_url, "https://api.mistral.ai/v1");
    assert_eq!(info.key_env.as_deref(), Some("MISTRAL_API_KEY"));
    assert_eq!(info.adapter_version, env!("CARGO_PKG_VERSION"));
    assert!(info.models.iter().any(|m| m.id == info.default_model));
    assert_eq!(info.default_model, "mistral-small-latest");
    assert!(info.capabilities.contains(
        Capabilities::TOOLS | Capabilities::JSON_SCHEMA | Capabilities::VISION | Capabilities::ASSISTANT_PREFILL
    ));
    assert!(!info.capabilities.contains(Capabilities::REASONING));
    assert_eq!(info.privacy.policy, PrivacyPolicy::Configurable);
    assert_eq!(
        (
            info.limits.requests_per_minute,
            info.limits.tokens_per_minute,
            info.limits.tokens_per_day,
            info.limits.shared_per_project
        ),
        (Some(60), Some(500_000), None, true)
    );
}

#[test]
fn plain_request_only_gets_the_upstream_model() {
    let sent = map(json!({
        "model": "mistral/mistral-small-latest",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.3,
        "n": 2,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "parallel_tool_calls": false,
        "safe_prompt": true
    }));
    assert_eq!(
        sent,
        json!({
            "model": "mistral-small-latest",
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.3,
            "n": 2,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "parallel_tool_calls": false,
            "safe_prompt": true
        })
    );
}

#[test]
fn rejected_fields_are_dropped() {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    for field in DROP_FIELDS {
        body[*field] = json!(1);
    }
    assert_eq!(map(body), json!({"model": "mistral-small-latest", "messages": [{"role": "user", "content": "x"}]}));
}

#[test]
fn seed_and_token_limit_are_renamed_in_place() {
    let body = br#"{"model":"m","seed":7,"messages":[],"max_completion_tokens":256,"stop":["x"]}"#;
    let up = Mistral::map_request_body(&ctx(false), body).unwrap();
    assert_eq!(
        String::from_utf8(up.body.as_bytes().expect("a whole body").to_vec()).unwrap(),
        r#"{"model":"mistral-small-latest","random_seed":7,"messages":[],"max_tokens":256,"stop":["x"]}"#
    );
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let sent = map(json!({"model": "m", "messages": [], "max_tokens": 100, "max_completion_tokens": 300}));
    assert_eq!(sent["max_tokens"], json!(300));
    assert!(sent.get("max_completion_tokens").is_none());
    let sent = map(json!({"model": "m", "messages": [], "max_tokens": 100, "max_completion_tokens": null}));
    assert_eq!(sent["max_tokens"], json!(100));
    assert!(sent.get("max_completion_tokens").is_none());
}

#[test]
fn an_explicit_random_seed_wins_over_seed() {
    let sent = map(json!({"model": "m", "messages": [], "random_seed": 1, "seed": 2}));
    assert_eq!(sent["random_seed"], json!(1));
    assert!(sent.get("seed").is_none());
}

#[test]
fn tool_choice_required_becomes_any() {
    let sent = map(json!({"model": "m", "messages": [], "tool_choice": "required"}));
    assert_eq!(sent["tool_choice"], json!("any"));
    let named = json!({"type": "function", "function": {"name": "f"}});
    let sent = map(json!({"model": "m", "messages": [], "tool_choice": named}));
    assert_eq!(sent["tool_choice"], named);
    assert_eq!(map(json!({"model": "m", "messages": [], "tool_choice": "auto"}))["tool_choice"], json!("auto"));
}

#[test]
fn messages_lose_fields_mistral_forbids() {
    let sent = map(json!({"model": "m", "messages": [
        {"role": "developer", "content": "Be brief.", "name": "ops"},
        {"role": "user", "content": "Hi", "name": "ann"},
        {"role": "assistant", "content": "Hello", "refusal": null, "annotations": [],
         "reasoning_content": "thinking", "audio": null, "function_call": null},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]}
    ]}));
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "and?"}]}
        ])
    );
}

#[test]
fn foreign_tool_call_ids_are_rewritten_consistently() {
    let sent = map(json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_Nq7Vd9zKx2", "type": "function", "function": {"name": "w", "arguments": "{}"}},
            {"id": "D681PevKs", "type": "function", "function": {"name": "w", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_Nq7Vd9zKx2", "name": "w", "content": "sunny"},
        {"role": "tool", "tool_call_id": "D681PevKs", "content": "rainy"}
    ]}));
    let new_id = mistral_tool_call_id("call_Nq7Vd9zKx2");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], json!(new_id));
    assert_eq!(sent["messages"][2]["tool_call_id"], json!(new_id));
    assert_eq!(sent["messages"][1]["tool_calls"][1]["id"], json!("D681PevKs"));
    assert_eq!(sent["messages"][3]["tool_call_id"], json!("D681PevKs"));
    assert_eq!(sent["messages"][2]["name"], json!("w"));
}

#[test]
fn tool_call_ids_are_nine_alphanumerics_and_stable() {
    for id in ["call_abc", "", "toolu_01A09q90qw90lq917835lq9", "a-b", "ééééééééé"] {
        let new = mistral_tool_call_id(id);
        assert_eq!(new.len(), 9, "{id:?} -> {new:?}");
        assert!(new.bytes().all(|b| b.is_ascii_alphanumeric()), "{new:?}");
        assert_eq!(new, mistral_tool_call_id(id));
    }
    assert_ne!(mistral_tool_call_id("call_1"), mistral_tool_call_id("call_2"));
    assert_eq!(mistral_tool_call_id("abcDEF123"), "abcDEF123");
}

#[test]
fn a_final_assistant_message_becomes_a_prefix() {
    let sent = map(json!({"model": "m", "messages": [
        {"role": "user", "content": "Count to five"},
        {"role": "assistant", "content": "1, 2,"}
    ]}));
    assert_eq!(sent["messages"][1], json!({"role": "assistant", "content": "1, 2,", "prefix": true}));
    // Only the last message, and not a pending tool call.
    let sent = map(json!({"model": "m", "messages": [
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "x"}
    ]}));
    assert!(sent["messages"][0].get("prefix").is_none());
    let sent = map(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "abcDEF123", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    ]}));
    assert!(sent["messages"][1].get("prefix").is_none());
}

#[test]
fn stream_flag_follows_the_context_and_stream_options_go() {
    let body = br#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#;
    let up = Mistral::map_request_body(&ctx(true), body).unwrap();
    let sent: Value = serde_json::from_slice(up.body.as_bytes().expect("a whole body")).unwrap();
    assert_eq!(sent, json!({"model": "mistral-small-latest", "messages": [], "stream": true}));
}

#[test]
fn malformed_messages_do_not_panic() {
    let sent = map(json!({"model": "m", "messages": [{"role": 3}, {"content": "no role"}]}));
    assert_eq!(sent["messages"], json!([{"role": 3}, {"content": "no role"}]));
    // A message that is not an object is the client's mistake (the gateway
    // refuses it before any adapter sees it).
    let body = json!({"model": "m", "messages": [7, "x"]}).to_string();
    let failure = Mistral::map_request_body(&ctx(false), body.as_bytes()).unwrap_err();
    assert_eq!(failure.kind, FailureKind::RequestInvalid);
}

#[test]
fn answers_get_mistral_finish_reasons_and_tool_types_repaired() {
    let body = json!({
        "id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "mistral-small-latest",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "cut", "tool_calls": null},
                     "finish_reason": "model_length"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    });
    let out = Mistral::normalize_response(&ctx(false), &head(200, &[]), body.to_string().as_bytes()).unwrap();
    let answer: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], json!("length"));
    assert_eq!(out.finish_reason, Some(FinishReason::Length));
    assert_eq!(out.usage.map(|u| u.total_tokens), Some(15));

    let body = json!({
        "id": "cmpl-2", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "", "tool_calls": [
            {"id": "D681PevKs", "function": {"name": "w", "arguments": "{}"}, "index": 0}]},
            "finish_reason": "tool_calls"}]
    });
    let out = Mistral::normalize_response(&ctx(false), &head(200, &[]), body.to_string().as_bytes()).unwrap();
    let answer: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(answer["choices"][0]["message"]["tool_calls"][0]["type"], json!("function"));
    assert_eq!(out.finish_reason, Some(FinishReason::ToolCalls));
}

#[test]
fn an_untouched_answer_keeps_its_bytes() {
    let body =
        br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#;
    let out = Mistral::normalize_response(&ctx(false), &head(200, &[]), body).unwrap();
    assert_eq!(out.body, body);
}

#[test]
fn an_error_object_with_status_200_is_a_failure() {
    let body = br#"{"object":"error","message":"Internal server error","type":"internal_server_error","param":null,"code":"1000"}"#;
    let f = Mistral::normalize_response(&ctx(false), &head(200, &[]), body).unwrap_err();
    assert_eq!(
        (f.kind, f.message.as_str(), f.upstream_code.as_deref()),
        (FailureKind::Transient, "Internal server error", Some("1000"))
    );
}

#[test]
fn stream_passes_chunks_and_repairs_tool_calls() {
    let mut s = MistralStream::default();
    let first = r#"{"id":"a","object":"chat.completion.chunk","created":1,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
    let call = r#"{"id":"a","object":"chat.completion.chunk","created":1,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"tool_calls":[{"id":"D681PevKs","function":{"name":"w","arguments":"{\"city\": \"Paris\"}"},"index":0}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":80,"total_tokens":104,"completion_tokens":24}}"#;
    let out = s.push(vec![event(first), event(call), event("[DONE]")]).unwrap();
    assert_eq!(out.chunks[0], first.as_bytes());
    let repaired: Value = serde_json::from_slice(&out.chunks[1]).unwrap();
    assert_eq!(repaired["choices"][0]["delta"]["tool_calls"][0]["type"], json!("function"));
    assert_eq!(out.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(out.usage.map(|u| u.total_tokens), Some(104));
    assert!(out.done);
    assert!(s.push(vec![event(first)]).unwrap().chunks.is_empty());
    assert_eq!(s.finish().unwrap(), StreamOutput::empty());
}

#[test]
fn stream_fails_on_an_error_event_and_skips_garbage() {
    let mut s = MistralStream::default();
    let out = s.push(vec![event("{broken"), event(""), event("[1]")]).unwrap();
    assert!(out.chunks.is_empty() && !out.done);
    let f = s
        .push(vec![event(
            r#"{"object":"error","message":"Service unavailable","type":"internal_server_error","param":null,"code":"1000"}"#,
        )])
        .unwrap_err();
    assert_eq!((f.kind, f.message.as_str()), (FailureKind::Transient, "Service unavailable"));
}

// Error bodies as Mistral sends them.
const GATEWAY_429: &str =
    r#"{"message":"Requests rate limit exceeded","request_id":"5b0d4c5e0f2b3a1c9d8e7f6a5b4c3d2e"}"#;
const API_429: &str = r#"{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300","raw_status_code":429}"#;
const TOKENS_429: &str = r#"{"object":"error","message":"Tokens per minute rate limit exceeded","type":"rate_limited","param":null,"code":"1300"}"#;
const MONTHLY_429: &str = r#"{"object":"error","message":"You have reached your monthly token limit","type":"rate_limited","param":null,"code":"1300"}"#;
const CAPACITY_429: &str = r#"{"object":"error","message":"Service tier capacity exceeded for this model.","type":"service_tier_capacity_exceeded","param":null,"code":"3505"}"#;
const UNAUTHORIZED: &str = r#"{"message":"Unauthorized","request_id":"0e4c0e7a3b2f4d1e9a8b7c6d5e4f3a2b"}"#;
const CONTEXT_400: &str = r#"{"object":"error","message":"Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum context length","type":"invalid_request_message_error","param":null,"code":"3051"}"#;
const EXTRA_422: &str = r#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","top_k"],"msg":"Extra inputs are not permitted","input":40}]},"type":"invalid_request_message_error","param":null,"code":null}"#;
const VALUE_422: &str = r#"{"object":"error","message":{"detail":[{"type":"less_than_equal","loc":["body","temperature"],"msg":"Input should be less than or equal to 1.5","input":1.8,"ctx":{"le":1.5}}]},"type":"invalid_request_message_error","param":null,"code":null}"#;
const TOOL_ID_400: &str = r#"{"object":"error","message":"Tool call id was call_abc but must be a-z, A-Z, 0-9, with a length of 9.","type":"invalid_function_call","param":null,"code":"3280"}"#;
const INVALID_MODEL: &str = r#"{"object":"error","message":"Invalid model: mistral-tiny-2312","type":"invalid_model","param":null,"code":"1500"}"#;

#[test]
fn rate_limits_use_retry_after_then_mistral_headers() {
    let f = classify(429, &[("retry-after", "3")], GATEWAY_429);
    assert_eq!(
        (f.kind, f.retry_after_ms, f.message.as_str()),
        (FailureKind::RateLimited, Some(3_000), "Requests rate limit exceeded")
    );
    // The per-second request limit: one second.
    let f = classify(429, &[], GATEWAY_429);
    assert_eq!((f.kind, f.retry_after_ms, f.upstream_code), (FailureKind::RateLimited, Some(1_000), None));
    let f = classify(429, &[], API_429);
    assert_eq!(
        (f.kind, f.retry_after_ms, f.upstream_code.as_deref()),
        (FailureKind::RateLimited, Some(1_000), Some("1300"))
    );
    // The minute's token budget: the reset header.
    let spent = [("x-ratelimitbysize-remaining-minute", "0"), ("ratelimitbysize-reset", "42")];
    assert_eq!(classify(429, &spent, API_429).retry_after_ms, Some(42_000));
    let f = classify(429, &[("ratelimitbysize-reset", "17")], TOKENS_429);
    assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, Some(17_000)));
    assert_eq!(classify(429, &[], TOKENS_429).retry_after_ms, None);
}

#[test]
fn the_monthly_budget_is_quota_exhausted() {
    let f = classify(429, &[], MONTHLY_429);
    assert_eq!((f.kind, f.retry_after_ms), (FailureKind::QuotaExhausted, None));
    let f = classify(
        429,
        &[("x-ratelimitbysize-remaining-month", "0"), ("x-ratelimitbysize-limit-month", "1000000000")],
        API_429,
    );
    assert_eq!(f.kind, FailureKind::QuotaExhausted);
}

#[test]
fn capacity_429_is_transient() {
    let f = classify(429, &[], CAPACITY_429);
    assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::Transient, Some("3505")));
    let old_shape = r#"{"object":"error","message":"Service tier capacity exceeded for this model.","type":"invalid_request_error","param":null,"code":null}"#;
    assert_eq!(classify(429, &[], old_shape).kind, FailureKind::Transient);
}

#[test]
fn a_bad_key_is_key_invalid() {
    let f = classify(401, &[], UNAUTHORIZED);
    assert_eq!((f.kind, f.message.as_str()), (FailureKind::KeyInvalid, "Unauthorized"));
}

#[test]
fn a_long_prompt_is_context_length() {
    let f = classify(400, &[], CONTEXT_400);
    assert_eq!(f.kind, FailureKind::ContextLength);
    assert!(f.message.contains("32768 maximum context length"));
}

#[test]
fn validation_errors_with_an_object_message() {
    let f = classify(422, &[], EXTRA_422);
    assert_eq!(f.kind, FailureKind::Unsupported);
    assert_eq!(f.message, "Mistral does not accept top_k (extra_forbidden)");
    assert_eq!(f.upstream_code.as_deref(), Some("invalid_request_message_error"));
    let f = classify(422, &[], VALUE_422);
    assert_eq!(
        (f.kind, f.message.as_str()),
        (FailureKind::RequestInvalid, "temperature: Input should be less than or equal to 1.5")
    );
    // The older shapes: the detail as a JSON string, or as a list.
    let stringly = r#"{"object":"error","message":"{\"detail\":[{\"type\":\"extra_forbidden\",\"loc\":[\"body\",\"frequency_penalty\"],\"msg\":\"Extra inputs are not permitted\",\"input\":0.0}]}","type":"internal_error_proxy","param":null,"code":"1000"}"#;
    let f = classify(422, &[], stringly);
    assert_eq!(f.kind, FailureKind::Unsupported);
    assert!(f.message.contains("frequency_penalty"), "{}", f.message);
    let listed = r#"{"object":"Error","detail":[{"type":"extra_forbidden","loc":["body","messages",2,"assistant","reasoning_content"],"msg":"Extra inputs are not permitted","input":""}],"message":[{"type":"extra_forbidden","loc":["body","messages",2,"assistant","reasoning_content"],"msg":"Extra inputs are not permitted","input":""}],"type":"invalid_request_error","code":3001}"#;
    let f = classify(422, &[], listed);
    assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::Unsupported, Some("3001")));
    assert!(f.message.contains("messages.2.assistant.reasoning_content"), "{}", f.message);
}

#[test]
fn other_bad_requests_are_request_invalid() {
    let f = classify(400, &[], TOOL_ID_400);
    assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::RequestInvalid, Some("3280")));
}

#[test]
fn an_unknown_model_skips_mistral() {
    let f = classify(400, &[], INVALID_MODEL);
    assert_eq!((f.kind, f.message.as_str()), (FailureKind::Unsupported, "Invalid model: mistral-tiny-2312"));
}

#[test]
fn server_errors_are_transient() {
    for (status, body) in [
        (
            503,
            r#"{"object":"error","message":"Service unavailable","type":"internal_server_error","param":null,"code":"1000"}"#,
        ),
        (
            500,
            r#"{"object":"error","message":"Internal server error","type":"internal_server_error","param":null,"code":"1000"}"#,
        ),
        (502, "<html><body>502 Bad Gateway</body></html>"),
        (504, ""),
    ] {
        assert_eq!(classify(status, &[], body).kind, FailureKind::Transient, "{status}");
    }
    assert_eq!(classify(503, &[("retry-after", "5")], "").retry_after_ms, Some(5_000));
}

#[test]
fn garbage_never_panics() {
    for body in ["", "\u{0}\u{ff}", "[]", "{\"message\":{\"detail\":7}}", "{\"detail\":[1,{\"loc\":5}]}"] {
        for status in [400, 422, 429, 500] {
            let _ = classify(status, &[("ratelimitbysize-reset", "soon")], body);
        }
    }
}

#[test]
fn fixtures_pass_natively() {
    freellm_sdk::fixtures::assert_dir::<Mistral>(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
}

#[test]
fn passes_conformance() {
    freellm_sdk::fixtures::assert_conformance::<Mistral>(&[]);
}

#[test]
fn chunks_left_to_the_borrowed_read_come_out_as_from_the_full_path() {
    use freellm_sdk::openai_compat::EveryChunk;
    let chunks = [
        r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"model_length"}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"model\u005flength"}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"id":"abc123def","function":{"name":"f","arguments":"{}"}}]}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        r#"{"id":"c","object":"chat.completion.chunk"}"#,
        r#"{"object":"error","message":"Service tier capacity exceeded","type":"service_tier_capacity_exceeded","code":"3505"}"#,
        r#"{"object" : "error","message":"spaced"}"#,
        r#"{"error":{"message":"rate limited","code":"429"}}"#,
        r#"{"ch\u006fices":[],"object":"error","message":"escaped"}"#,
        r#"{"choices":[],"object":"error"}"#,
        "not json",
        "[DONE]",
    ];
    let events = |from: usize| chunks[from..].iter().map(|c| event(c)).collect::<Vec<_>>();
    for (from, first) in chunks.iter().enumerate() {
        let peeked = MistralStream::default().push(events(from));
        let full = RewritingStream::new(EveryChunk(MistralChunks)).push(events(from));
        assert_eq!(peeked, full, "from {first}");
    }
    for single in chunks {
        let peeked = MistralStream::default().push(vec![event(single)]);
        assert_eq!(peeked, RewritingStream::new(EveryChunk(MistralChunks)).push(vec![event(single)]), "{single}");
    }
    assert!(!MistralChunks.rewrites(chunks[0]) && MistralChunks.rewrites(chunks[6]));
}
