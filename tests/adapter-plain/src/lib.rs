//! A test adapter for an upstream whose API is not OpenAI-shaped, written
//! only with the SDK and with no OpenAI pass-through: it declares
//! `wire-format other("freellm-test-plain")`, so conformance checks it with
//! the common cases only, plus the fixtures it embeds. The end-to-end tests
//! check it with `freellm plugin check` and hot-load it into a running
//! gateway. Never deploy it.
//!
//! The "plain" API, as the mock upstream in the tests speaks it:
//!
//! * `POST /v1/generate` with header `x-plain-key: <key>` and body
//!   `{"model", "system"?, "turns": [{"speaker": "user"|"model", "text"}],
//!   "max_output"?, "stream"}`;
//! * answer `{"output": {"text"}, "stop": "end"|"limit", "tokens":
//!   {"input", "output"}}` (no id, no timestamp);
//! * stream: NDJSON lines `{"kind": "text", "text"}`, then `{"kind":
//!   "end", "stop", "tokens"}`, or `{"kind": "error", "detail"}`;
//! * errors: `{"problem": {"reason", "detail"}}`; a 429 may say
//!   `"retry_in_s"` besides `retry-after`.

#![warn(missing_docs)]

use freellm_sdk::retry::retry_after_ms;
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, ChatRequest, Failure, FailureKind, FinishReason,
    FixtureFile, HttpMethod, ModelInfo, ModelTags, NormalizedResponse, PrivacyInfo, PrivacyPolicy, RateLimits,
    ResponseHead, Settings, StreamEvent, StreamFraming, StreamNormalizer, StreamOutput, UpstreamRequest, Usage,
    WireFormat,
};
use serde_json::{Value, json};

/// The plain test adapter.
pub struct Plain;

/// The one model.
const MODEL: &str = "plain-1";

/// The text of an OpenAI message's content: a string, or the text parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}

fn usage(tokens: &Value) -> Option<Usage> {
    let n = |k: &str| tokens.get(k).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok());
    let (input, output) = (n("input")?, n("output")?);
    Some(Usage { prompt_tokens: input, completion_tokens: output, total_tokens: input.saturating_add(output) })
}

fn finish(stop: Option<&str>) -> FinishReason {
    match stop {
        Some("end") => FinishReason::Stop,
        Some("limit") => FinishReason::Length,
        _ => FinishReason::Other,
    }
}

fn finish_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        _ => "stop",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens})
}

impl Adapter for Plain {
    fn configure(settings: &Settings) -> Result<AdapterInfo, String> {
        Ok(AdapterInfo {
            id: freellm_sdk::setting(settings, "id").unwrap_or("plain").into(),
            display_name: "Plain (test)".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "http://127.0.0.1:9".into(),
            key_env: Some("PLAIN_API_KEY".into()),
            auth: AuthPlacement::Header("x-plain-key".into()),
            stream_framing: StreamFraming::Ndjson,
            wire_format: WireFormat::Other("freellm-test-plain".into()),
            capabilities: Capabilities::empty(),
            // `plain-1-trial` has a free tier of its own: one request a
            // minute, counted apart from `plain-1`'s.
            models: vec![
                ModelInfo::new(MODEL, 8192, ModelTags::FAST),
                ModelInfo::new("plain-1-trial", 8192, ModelTags::empty()).with_limits(RateLimits {
                    requests_per_minute: Some(1),
                    requests_per_day: None,
                    tokens_per_minute: None,
                    tokens_per_day: None,
                    shared_per_project: false,
                }),
            ],
            default_model: MODEL.into(),
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::NoTraining,
                source_url: "https://example.com/freellm-plain-test-component".into(),
                last_verified: "2026-04-09".into(),
                note: "A test component.".into(),
            },
            limits: RateLimits {
                requests_per_minute: Some(60),
                requests_per_day: None,
                tokens_per_minute: None,
                tokens_per_day: None,
                shared_per_project: false,
            },
        })
    }

    fn map_request(ctx: &CallContext, req: ChatRequest) -> Result<UpstreamRequest, Failure> {
        let mut system = Vec::new();
        let mut turns = Vec::new();
        for message in &req.messages {
            let text = text_of(message.get("content").unwrap_or(&Value::Null));
            match message.get("role").and_then(Value::as_str) {
                Some("system" | "developer") => system.push(text),
                Some("user") => turns.push(json!({"speaker": "user", "text": text})),
                Some("assistant") => turns.push(json!({"speaker": "model", "text": text})),
                other => return Err(Failure::unsupported(format!("the plain API has no role {other:?}"))),
            }
        }
        if turns.is_empty() {
            return Err(Failure::request_invalid("the plain API needs at least one user or assistant turn"));
        }
        let mut body = json!({"model": ctx.upstream_model, "turns": turns, "stream": ctx.is_stream});
        if !system.is_empty() {
            body["system"] = json!(system.join("\n"));
        }
        let max = req.max_completion_tokens.as_ref().or(req.max_tokens.as_ref());
        if let Some(max) = max.and_then(Value::as_u64) {
            body["max_output"] = json!(max);
        }
        Ok(UpstreamRequest {
            method: HttpMethod::Post,
            path: "/v1/generate".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).map_err(|e| Failure::request_invalid(e.to_string()))?.into(),
        })
    }

    fn normalize_response(ctx: &CallContext, _head: &ResponseHead, body: &[u8]) -> Result<NormalizedResponse, Failure> {
        let answer: Value =
            serde_json::from_slice(body).map_err(|e| Failure::transient(format!("answer is not JSON: {e}")))?;
        let text = answer
            .pointer("/output/text")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::transient("answer has no output.text"))?;
        let finish_reason = finish(answer.get("stop").and_then(Value::as_str));
        let usage = answer.get("tokens").and_then(usage);
        // `created` 0: the plain API has no timestamp, the host fills it in.
        let mut completion = json!({
            "id": format!("plain-{}", ctx.request_id),
            "object": "chat.completion",
            "created": 0,
            "model": ctx.upstream_model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_name(finish_reason)}],
        });
        if let Some(u) = &usage {
            completion["usage"] = usage_json(u);
        }
        let body = serde_json::to_vec(&completion).map_err(|e| Failure::transient(e.to_string()))?;
        Ok(NormalizedResponse { body, usage, finish_reason: Some(finish_reason) })
    }

    fn classify_failure(_ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        let problem = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("problem").cloned());
        let reason = problem.as_ref().and_then(|p| p.get("reason")).and_then(Value::as_str).map(str::to_owned);
        let detail = problem
            .as_ref()
            .and_then(|p| p.get("detail"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
        let kind = match (head.status, reason.as_deref()) {
            (401 | 403, _) => FailureKind::KeyInvalid,
            (429, Some("daily-quota")) => FailureKind::QuotaExhausted,
            (429, _) => FailureKind::RateLimited,
            (400, Some("too-long")) => FailureKind::ContextLength,
            (s, _) if s >= 500 => FailureKind::Transient,
            _ => FailureKind::RequestInvalid,
        };
        let body_hint = problem.as_ref().and_then(|p| p.get("retry_in_s")).and_then(Value::as_u64).map(|s| s * 1000);
        let retry_after_ms = (head.status == 429).then(|| retry_after_ms(&head.headers).or(body_hint)).flatten();
        Failure { kind, message: detail, retry_after_ms, upstream_code: reason }
    }

    fn stream_normalizer(ctx: &CallContext, _head: &ResponseHead) -> Box<dyn StreamNormalizer> {
        Box::new(PlainStream {
            id: format!("plain-{}", ctx.request_id),
            model: ctx.upstream_model.clone(),
            started: false,
        })
    }

    fn embedded_fixtures() -> Vec<FixtureFile> {
        let mut fixtures = freellm_sdk::embed_fixtures![
            "fixtures/map-system-and-turns.json",
            "fixtures/respond-text.json",
            "fixtures/classify-429-retry-in-body.json",
            "fixtures/stream-text.json",
        ];
        if cfg!(feature = "wrong-fixture") {
            fixtures.extend(freellm_sdk::embed_fixtures!["wrong/wrong-fixture.json"]);
        }
        fixtures
    }
}

/// Turns plain NDJSON events into OpenAI chunks.
struct PlainStream {
    id: String,
    model: String,
    started: bool,
}

impl PlainStream {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        let chunk = json!({"id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        serde_json::to_vec(&chunk).unwrap_or_default()
    }
}

impl StreamNormalizer for PlainStream {
    fn push(&mut self, events: Vec<StreamEvent>) -> Result<StreamOutput, Failure> {
        let mut out = StreamOutput::empty();
        for event in events {
            let Ok(value) = serde_json::from_str::<Value>(&event.data) else { continue };
            match value.get("kind").and_then(Value::as_str) {
                Some("text") => {
                    let text = value.get("text").and_then(Value::as_str).unwrap_or_default();
                    let delta = if self.started {
                        json!({"content": text})
                    } else {
                        json!({"role": "assistant", "content": text})
                    };
                    self.started = true;
                    out.chunks.push(self.chunk(delta, None));
                }
                Some("end") => {
                    let reason = finish(value.get("stop").and_then(Value::as_str));
                    out.chunks.push(self.chunk(json!({}), Some(finish_name(reason))));
                    out.finish_reason = Some(reason);
                    out.usage = value.get("tokens").and_then(usage);
                    out.done = true;
                    break;
                }
                Some("error") => {
                    let detail = value.get("detail").and_then(Value::as_str).unwrap_or("stream error");
                    return Err(Failure::transient(detail.to_owned()));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<StreamOutput, Failure> {
        Ok(StreamOutput::empty())
    }
}

freellm_sdk::export_adapter!(Plain);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_and_embedded_fixtures_pass_natively() {
        freellm_sdk::fixtures::assert_conformance::<Plain>(&[]);
    }

    #[test]
    fn it_embeds_its_fixtures_by_file_stem() {
        let names: Vec<String> = Plain::embedded_fixtures().into_iter().map(|f| f.name).collect();
        assert_eq!(names.len(), 4);
        assert!(names.contains(&"respond-text".to_owned()), "{names:?}");
    }
}
