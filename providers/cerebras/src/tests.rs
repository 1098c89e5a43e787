use super::*;
use freellm_sdk::HttpMethod;
use serde_json::{Value, json};

fn ctx(model: &str) -> CallContext {
    CallContext { request_id: "r".into(), upstream_model: model.into(), is_stream: false }
}

fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
    ResponseHead { status, headers: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect() }
}

fn map_for(model: &str, body: Value) -> Result<Value, Failure> {
    let up = Cerebras::map_request_body(&ctx(model), &serde_json::to_vec(&body).unwrap())?;
    assert_eq!((up.method, up.path.as_str()), (HttpMethod::Post, "/chat/completions"));
    Ok(serde_json::from_slice(up.body.as_bytes().expect("a whole body")).unwrap())
}

fn map(body: Value) -> Result<Value, Failure> {
    map_for("llama3.1-8b", body)
}

fn classify(status: u16, headers: &[(&str, &str)], body: &str) -> Failure {
    Cerebras::classify_failure(&ctx("llama3.1-8b"), &head(status, headers), body.as_bytes())
}

#[test]
fn describes_cerebras() {
    let info = Cerebras::configure(&vec![]).unwrap();
    assert_eq!((info.id.as_str(), info.display_name.as_str()), ("cerebras", "Cerebras"));
    assert_eq!(info.default_base_url, "https://api.cerebras.ai/v1");
    assert_eq!(info.key_env.as_deref(), Some("CEREBRAS_API_KEY"));
    assert_eq!(info.default_model, "llama3.1-8b");
    assert!(info.models.iter().any(|m| m.id == info.default_model));
    assert!(!info.capabilities.contains(Capabilities::TOOLS));
    assert!(!info.capabilities.contains(Capabilities::VISION));
    assert!(info.capabilities.contains(Capabilities::JSON_SCHEMA | Capabilities::STREAM_USAGE));
    assert_eq!(info.privacy.policy, PrivacyPolicy::NoTraining);
    let l = info.limits;
    assert_eq!(
        (l.requests_per_minute, l.requests_per_day, l.tokens_per_minute, l.tokens_per_day),
        (Some(30), Some(14_400), Some(60_000), Some(1_000_000))
    );
}

#[test]
fn plain_request_only_gets_the_upstream_model() {
    let body = json!({
        "model": "cerebras/llama3.1-8b",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2, "max_completion_tokens": 64, "seed": 1, "logprobs": true,
        "top_logprobs": 2, "user": "u1", "stop": ["\n"], "response_format": {"type": "json_object"}
    });
    let mut expected = body.clone();
    expected["model"] = json!("llama3.1-8b");
    assert_eq!(map(body).unwrap(), expected);
}

#[test]
fn rejected_fields_are_dropped() {
    let mut body = json!({"model": "m", "messages": []});
    for field in DROP_FIELDS {
        body[*field] = json!(1);
    }
    assert_eq!(map(body).unwrap(), json!({"model": "llama3.1-8b", "messages": []}));
}

#[test]
fn tools_skip_cerebras() {
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
    let f = map(json!({"model": "m", "messages": [], "tools": [tool]})).unwrap_err();
    assert_eq!(f.kind, FailureKind::Unsupported);
    let f = map(json!({"model": "m", "messages": [], "functions": [{"name": "f"}]})).unwrap_err();
    assert_eq!(f.kind, FailureKind::Unsupported);
    // No tools in fact: the empty and null forms are dropped.
    let sent = map(json!({"model": "m", "messages": [], "tools": [], "tool_choice": "auto",
                          "parallel_tool_calls": true, "functions": null}))
    .unwrap();
    assert_eq!(sent, json!({"model": "llama3.1-8b", "messages": []}));
}

#[test]
fn several_choices_skip_cerebras() {
    let f = map(json!({"model": "m", "messages": [], "n": 3})).unwrap_err();
    assert_eq!(f.kind, FailureKind::Unsupported);
    assert!(map(json!({"model": "m", "messages": [], "n": 1})).is_ok());
}

#[test]
fn reasoning_effort_reaches_gpt_oss_only() {
    let body = json!({"model": "m", "messages": [], "reasoning_effort": "high"});
    assert_eq!(map_for("gpt-oss-120b", body.clone()).unwrap()["reasoning_effort"], json!("high"));
    assert!(map(body).unwrap().get("reasoning_effort").is_none());
    for (asked, sent) in [("minimal", Some("low")), ("xhigh", Some("high")), ("medium", Some("medium")), ("none", None)]
    {
        let out = map_for("gpt-oss-120b", json!({"model": "m", "messages": [], "reasoning_effort": asked})).unwrap();
        assert_eq!(out.get("reasoning_effort").and_then(Value::as_str), sent, "{asked}");
    }
}

// Error bodies as Cerebras sends them.
const RPM: &str = r#"{"message":"Requests per minute limit exceeded - too many requests sent.","type":"too_many_requests_error","param":"quota","code":"request_quota_exceeded"}"#;
const TPM: &str = r#"{"message":"Tokens per minute limit exceeded - too many tokens processed.","type":"too_many_requests_error","param":"quota","code":"token_quota_exceeded"}"#;
const RPD: &str = r#"{"message":"Requests per day limit exceeded - too many requests sent.","type":"too_many_requests_error","param":"quota","code":"request_quota_exceeded"}"#;
const TPD: &str = r#"{"message":"Tokens per day limit exceeded - too many tokens processed.","type":"too_many_requests_error","param":"quota","code":"token_quota_exceeded"}"#;
const QUEUE: &str = r#"{"message":"We're experiencing high traffic right now! Please try again soon.","type":"too_many_requests_error","param":"queue","code":"queue_exceeded"}"#;
const WRONG_KEY: &str =
    r#"{"message":"Wrong API Key","type":"invalid_request_error","param":"api_key","code":"wrong_api_key"}"#;
const CONTEXT: &str = r#"{"message":"Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}"#;

#[test]
fn per_minute_limits_wait_for_the_minute_reset() {
    let headers = [
        ("x-ratelimit-limit-requests-day", "14400"),
        ("x-ratelimit-remaining-requests-day", "14120"),
        ("x-ratelimit-reset-requests-day", "33011.382867"),
        ("x-ratelimit-limit-tokens-minute", "60000"),
        ("x-ratelimit-remaining-tokens-minute", "59800"),
        ("x-ratelimit-reset-tokens-minute", "11.382867"),
    ];
    let f = classify(429, &headers, RPM);
    assert_eq!(
        (f.kind, f.retry_after_ms, f.upstream_code.as_deref()),
        (FailureKind::RateLimited, Some(11_383), Some("request_quota_exceeded"))
    );
    let f = classify(429, &[("retry-after", "4")], TPM);
    assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, Some(4_000)));
    assert_eq!(classify(429, &[], RPM).retry_after_ms, None);
}

#[test]
fn a_spent_day_is_quota_exhausted_until_the_day_resets() {
    // By the headers, whatever the message says.
    let headers = [
        ("x-ratelimit-remaining-requests-day", "0"),
        ("x-ratelimit-reset-requests-day", "245.5"),
        ("x-ratelimit-remaining-tokens-minute", "60000"),
        ("x-ratelimit-reset-tokens-minute", "11.38"),
    ];
    let f = classify(429, &headers, RPM);
    assert_eq!((f.kind, f.retry_after_ms), (FailureKind::QuotaExhausted, Some(245_500)));
    // Long resets are clamped like a retry-after.
    let headers = [("x-ratelimit-remaining-requests-day", "0"), ("x-ratelimit-reset-requests-day", "33011.382867")];
    assert_eq!(classify(429, &headers, RPD).retry_after_ms, Some(freellm_sdk::retry::MAX_RETRY_AFTER_MS));
    // By the message, with the day's reset.
    let f = classify(429, &[("x-ratelimit-reset-requests-day", "120")], TPD);
    assert_eq!(
        (f.kind, f.retry_after_ms, f.upstream_code.as_deref()),
        (FailureKind::QuotaExhausted, Some(120_000), Some("token_quota_exceeded"))
    );
    let headers = [
        ("x-ratelimit-remaining-tokens-day", "0"),
        ("x-ratelimit-reset-tokens-day", "90"),
        ("x-ratelimit-reset-requests-day", "300"),
    ];
    assert_eq!(classify(429, &headers, TPM).retry_after_ms, Some(90_000));
    assert_eq!(classify(429, &[], TPD).kind, FailureKind::QuotaExhausted);
}

#[test]
fn a_full_queue_is_transient() {
    let f = classify(429, &[("x-ratelimit-reset-tokens-minute", "30")], QUEUE);
    assert_eq!(
        (f.kind, f.retry_after_ms, f.upstream_code.as_deref()),
        (FailureKind::Transient, None, Some("queue_exceeded"))
    );
}

#[test]
fn a_wrong_key_is_key_invalid() {
    let f = classify(401, &[], WRONG_KEY);
    assert_eq!(
        (f.kind, f.message.as_str(), f.upstream_code.as_deref()),
        (FailureKind::KeyInvalid, "Wrong API Key", Some("wrong_api_key"))
    );
}

#[test]
fn a_long_prompt_is_context_length() {
    let f = classify(400, &[], CONTEXT);
    assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::ContextLength, Some("context_length_exceeded")));
}

#[test]
fn other_bad_requests_are_request_invalid() {
    let body = r#"{"message":"reasoning_effort is not supported for this model","type":"invalid_request_error","param":"reasoning_effort","code":"wrong_api_format"}"#;
    assert_eq!(classify(400, &[], body).kind, FailureKind::RequestInvalid);
    let body = r#"{"message":"body.messages.0.role: Input should be 'system', 'user', 'assistant' or 'tool'","type":"invalid_request_error","param":"validation_error","code":"wrong_api_format"}"#;
    assert_eq!(classify(422, &[], body).kind, FailureKind::RequestInvalid);
}

#[test]
fn an_unknown_model_skips_cerebras() {
    let body = r#"{"message":"Model llama-3.3-70b does not exist or you do not have access to it.","type":"not_found_error","param":"model","code":"model_not_found"}"#;
    assert_eq!(classify(404, &[], body).kind, FailureKind::Unsupported);
}

#[test]
fn server_errors_are_transient() {
    let body = r#"{"message":"Encountered a server error, please try again.","type":"server_error","param":"","code":"internal_server_error"}"#;
    assert_eq!(classify(500, &[], body).kind, FailureKind::Transient);
    assert_eq!(classify(503, &[], "").kind, FailureKind::Transient);
    assert_eq!(classify(502, &[], "<html>Bad Gateway</html>").kind, FailureKind::Transient);
}

#[test]
fn garbage_headers_never_panic() {
    let headers = [
        ("x-ratelimit-remaining-requests-day", "NaN"),
        ("x-ratelimit-reset-requests-day", "-3"),
        ("x-ratelimit-reset-tokens-minute", "soon"),
    ];
    let f = classify(429, &headers, "\u{0}garbage");
    assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, None));
}

#[test]
fn fixtures_pass_natively() {
    freellm_sdk::fixtures::assert_dir::<Cerebras>(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
}

#[test]
fn passes_conformance() {
    freellm_sdk::fixtures::assert_conformance::<Cerebras>(&[]);
}
