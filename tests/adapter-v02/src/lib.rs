//! A test adapter that targets the frozen `freellm:provider@0.2.0`
//! contract (`wit/0.2.0`), written against wit-bindgen directly as a 0.2
//! adapter was before the SDK moved to 0.3 (its request body is always
//! whole). It speaks OpenAI's chat API to an upstream given by the
//! `base_url` setting, with no key. The end-to-end tests load it beside 0.1
//! and 0.3 components to show that 0.2 components keep loading and serving.
//! Never deploy it.

#![warn(missing_docs)]

use serde_json::{Value, json};

/// Bindings of the 0.2.0 world.
#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/0.2.0", world: "provider" });
}

use bindings::exports::freellm::provider::adapter::{Guest, GuestStreamNormalizer};
use bindings::freellm::provider::types::{
    AdapterInfo, AuthPlacement, CallContext, Capabilities, Failure, FailureKind, FinishReason, FixtureFile, HttpMethod,
    ModelInfo, ModelTags, NormalizedResponse, PrivacyInfo, PrivacyPolicy, RateLimits, ResponseHead, Settings,
    StreamEvent, StreamFraming, StreamOutput, UpstreamRequest, Usage, WireFormat,
};

/// The 0.2 test adapter.
pub struct V02Adapter;

/// The one model it offers.
const MODEL: &str = "v02-model";

fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure { kind, message: message.into(), retry_after_ms: None, upstream_code: None }
}

fn usage(value: &Value) -> Option<Usage> {
    let u = value.get("usage")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok());
    Some(Usage {
        prompt_tokens: n("prompt_tokens")?,
        completion_tokens: n("completion_tokens")?,
        total_tokens: n("total_tokens")?,
    })
}

fn finish(value: &Value) -> Option<FinishReason> {
    Some(match value.pointer("/choices/0/finish_reason")?.as_str()? {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    })
}

impl Guest for V02Adapter {
    type StreamNormalizer = V02Stream;

    fn configure(settings: Settings) -> Result<AdapterInfo, String> {
        let id = settings.iter().rev().find(|(k, _)| k == "id").map_or("v02", |(_, v)| v.as_str());
        Ok(AdapterInfo {
            id: id.to_owned(),
            display_name: "0.2 test adapter".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "http://127.0.0.1:9/v1".into(),
            key_env: None,
            auth: AuthPlacement::None,
            stream_framing: StreamFraming::Sse,
            wire_format: WireFormat::OpenaiChat,
            capabilities: Capabilities::empty(),
            models: vec![ModelInfo { id: MODEL.into(), context_window: 8192, tags: ModelTags::FAST, limits: None }],
            default_model: MODEL.into(),
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::Local,
                source_url: "https://example.com/freellm-v02-test-component".into(),
                last_verified: "2026-04-09".into(),
                note: "A test component.".into(),
            },
            limits: RateLimits {
                requests_per_minute: None,
                requests_per_day: None,
                tokens_per_minute: None,
                tokens_per_day: None,
                shared_per_project: false,
            },
        })
    }

    fn map_request(ctx: CallContext, body: Vec<u8>) -> Result<UpstreamRequest, Failure> {
        let mut req: Value = serde_json::from_slice(&body)
            .map_err(|e| failure(FailureKind::RequestInvalid, format!("invalid chat request body: {e}")))?;
        let Some(obj) = req.as_object_mut().filter(|o| o.get("messages").is_some_and(Value::is_array)) else {
            return Err(failure(FailureKind::RequestInvalid, "a chat request is an object with a messages list"));
        };
        obj.insert("model".into(), json!(ctx.upstream_model));
        obj.insert("stream".into(), json!(ctx.is_stream));
        Ok(UpstreamRequest {
            method: HttpMethod::Post,
            path: "/chat/completions".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&req).unwrap_or_default(),
        })
    }

    fn normalize_response(
        _ctx: CallContext,
        _head: ResponseHead,
        body: Vec<u8>,
    ) -> Result<NormalizedResponse, Failure> {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| failure(FailureKind::Transient, format!("answer is not JSON: {e}")))?;
        if !value.get("choices").is_some_and(Value::is_array) {
            return Err(failure(FailureKind::Transient, "answer is not a chat completion"));
        }
        Ok(NormalizedResponse { usage: usage(&value), finish_reason: finish(&value), body })
    }

    fn classify_failure(_ctx: CallContext, head: ResponseHead, body: Vec<u8>) -> Failure {
        let message = String::from_utf8_lossy(&body).chars().take(200).collect::<String>();
        let kind = match head.status {
            401 | 403 => FailureKind::KeyInvalid,
            429 => FailureKind::RateLimited,
            s if s >= 500 => FailureKind::Transient,
            _ => FailureKind::RequestInvalid,
        };
        let retry_after_ms = head
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .map(|s| s.saturating_mul(1000));
        Failure { kind, message, retry_after_ms: retry_after_ms.filter(|_| head.status == 429), upstream_code: None }
    }

    fn embedded_fixtures() -> Vec<FixtureFile> {
        Vec::new()
    }
}

/// Forwards OpenAI chunks as they are.
pub struct V02Stream;

impl GuestStreamNormalizer for V02Stream {
    fn new(_ctx: CallContext, _head: ResponseHead) -> Self {
        Self
    }

    fn push(&self, events: Vec<StreamEvent>) -> Result<StreamOutput, Failure> {
        let mut out = StreamOutput { chunks: Vec::new(), usage: None, finish_reason: None, done: false };
        for event in events {
            if event.data.trim() == "[DONE]" {
                out.done = true;
                break;
            }
            let Ok(value) = serde_json::from_str::<Value>(&event.data) else { continue };
            if !value.is_object() {
                continue;
            }
            out.usage = usage(&value).or(out.usage);
            out.finish_reason = finish(&value).or(out.finish_reason);
            out.chunks.push(event.data.into_bytes());
        }
        Ok(out)
    }

    fn finish(&self) -> Result<StreamOutput, Failure> {
        Ok(StreamOutput { chunks: Vec::new(), usage: None, finish_reason: None, done: false })
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(V02Adapter with_types_in bindings);
