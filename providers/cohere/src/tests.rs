use freellm_sdk::{AuthPlacement, FailureKind, FinishReason, HttpMethod, StreamEvent, StreamFraming};
use serde_json::{Value, json};

use super::*;

fn ctx(stream: bool) -> CallContext {
    CallContext { request_id: "r".into(), upstream_model: DEFAULT_MODEL.into(), is_stream: stream }
}

fn map(body: Value) -> Result<Value, Failure> {
    let req = ChatRequest::from_slice(body.to_string().as_bytes()).unwrap();
    let up = Cohere::map_request(&ctx(false), req)?;
    assert_eq!((up.method, up.path.as_str()), (HttpMethod::Post, "/v2/chat"));
    Ok(serde_json::from_slice(up.body.as_bytes().expect("a whole body")).unwrap())
}

fn head(status: u16) -> ResponseHead {
    ResponseHead { status, headers: vec![] }
}

#[test]
fn fixtures_pass_natively() {
    freellm_sdk::fixtures::assert_dir::<Cohere>(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
}

#[test]
fn describes_cohere_with_its_trial_limits() {
    let info = Cohere::configure(&vec![]).unwrap();
    assert_eq!((info.id.as_str(), info.display_name.as_str()), ("cohere", "Cohere"));
    assert_eq!(info.adapter_version, env!("CARGO_PKG_VERSION"));
    assert_eq!((info.key_env.as_deref(), info.auth), (Some("COHERE_API_KEY"), AuthPlacement::Bearer));
    assert_eq!((info.default_base_url.as_str(), info.stream_framing), ("https://api.cohere.com", StreamFraming::Sse));
    assert_eq!(info.default_model, DEFAULT_MODEL);
    let tagged = |tag| info.models.iter().filter(|m| m.tags.contains(tag)).map(|m| m.id.as_str()).collect::<Vec<_>>();
    assert_eq!(tagged(ModelTags::SMART), ["command-a-03-2025", "command-r-plus-08-2024"]);
    assert_eq!(tagged(ModelTags::FAST), ["command-r7b-12-2024", "command-r-08-2024"]);
    assert!(
        !info.capabilities.contains(Capabilities::VISION)
            && !info.capabilities.contains(Capabilities::ASSISTANT_PREFILL)
    );
    assert!(info.capabilities.contains(Capabilities::TOOLS | Capabilities::STREAM_USAGE));
    assert_eq!(info.limits, RateLimits::default().rpm(20).shared_per_project());
    assert_eq!(info.privacy.policy, PrivacyPolicy::FreeTierTrains);
}

#[test]
fn several_choices_are_left_to_another_provider() {
    let f = map(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2})).unwrap_err();
    assert_eq!(f.kind, FailureKind::Unsupported);
    assert!(map(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1})).is_ok());
}

#[test]
fn requests_cohere_cannot_read_are_the_clients_mistake() {
    for body in [
        json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
        json!({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
        json!({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}],
               "tool_choice": {"type": "function", "function": {"name": "g"}}}),
        json!({"model": "m", "messages": [], "response_format": {"type": "yaml"}}),
        json!({"model": "m", "messages": [], "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
        json!({"model": "m", "messages": [], "stop": 5}),
    ] {
        assert_eq!(map(body.clone()).unwrap_err().kind, FailureKind::RequestInvalid, "{body}");
    }
}

#[test]
fn tool_choice_auto_and_a_text_format_add_nothing() {
    let body = map(json!({"model": "m", "messages": [{"role": "assistant", "content": "Hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto",
        "response_format": {"type": "text"}, "top_p": null}))
    .unwrap();
    assert_eq!(
        body,
        json!({"model": DEFAULT_MODEL, "messages": [{"role": "assistant", "content": "Hi"}], "stream": false,
               "tools": [{"type": "function", "function": {"name": "f"}}]})
    );
    let body = map(json!({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "none"}))
    .unwrap();
    assert_eq!(body["tool_choice"], "NONE");
}

#[test]
fn finish_reasons_map_and_errors_fail() {
    assert_eq!(answer::finish_reason("COMPLETE"), Ok(FinishReason::Stop));
    assert_eq!(answer::finish_reason("STOP_SEQUENCE"), Ok(FinishReason::Stop));
    assert_eq!(answer::finish_reason("ERROR_TOXIC"), Ok(FinishReason::ContentFilter));
    assert_eq!(answer::finish_reason("SOMETHING_NEW"), Ok(FinishReason::Other));
    for reason in ["ERROR", "TIMEOUT", "ERROR_LIMIT"] {
        assert_eq!(answer::finish_reason(reason).unwrap_err().kind, FailureKind::Transient);
    }
}

#[test]
fn a_2xx_error_body_keeps_coheres_message() {
    let f = Cohere::normalize_response(&ctx(false), &head(200), br#"{"id":"x","message":"internal server error"}"#)
        .unwrap_err();
    assert_eq!((f.kind, f.message.as_str()), (FailureKind::Transient, "internal server error"));
    let f = Cohere::normalize_response(&ctx(false), &head(200), b"[]").unwrap_err();
    assert!(f.message.contains("no `message`"), "{}", f.message);
}

#[test]
fn a_monthly_limit_keeps_a_longer_retry_after() {
    let h = ResponseHead { status: 429, headers: vec![("retry-after".into(), "86400".into())] };
    let f = Cohere::classify_failure(&ctx(false), &h, br#"{"message":"limited to 1000 API calls / month"}"#);
    assert_eq!((f.kind, f.retry_after_ms), (FailureKind::QuotaExhausted, Some(600_000)));
}

#[test]
fn odd_stream_events_never_fail_the_stream() {
    let mut s = Cohere::stream_normalizer(&ctx(true), &head(200));
    let odd = |name: &str, data: &str| StreamEvent { event: Some(name.into()), data: data.into() };
    let out = s
        .push(vec![
            odd("message-start", "{}"),
            odd("content-delta", r#"{"delta":{"message":{"content":{"text":7}}}}"#),
            odd("tool-call-start", r#"{"index":"x","delta":null}"#),
            odd("tool-call-delta", "[]"),
            odd("citation-start", r#"{"type":"citation-start","index":0}"#),
            odd("content-delta", "not json"),
        ])
        .unwrap();
    assert!(!out.done);
    assert_eq!(out.chunks.len(), 2, "the opening chunk and an unnamed tool call start");
    let out = s.push(vec![odd("message-end", r#"{"delta":{"usage":{"tokens":{"input_tokens":1}}}}"#)]).unwrap();
    assert!(out.done);
    assert_eq!(out.finish_reason, Some(FinishReason::Stop));
    assert!(out.usage.is_none(), "half a usage block is no usage");
}
