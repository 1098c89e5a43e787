//! The NVIDIA NIM adapter: NVIDIA's hosted API catalog
//! (`https://integrate.api.nvidia.com/v1`), an OpenAI-compatible endpoint
//! whose model ids carry an organisation (`meta/llama-3.3-70b-instruct`).
//!
//! On top of the SDK's OpenAI-compatible defaults it:
//!
//! * drops the OpenAI-platform fields NIM's strict request schema refuses
//!   ([`DROP_FIELDS`]) and moves `max_completion_tokens` to the
//!   `max_tokens` NIM documents;
//! * turns `response_format: {"type": "json_schema"}` into NIM's guided
//!   decoding, `nvext.guided_json` ([`map_json_schema`]);
//! * classifies NIM's RFC 7807 problem-details errors
//!   (`{"status": 429, "title": "Too Many Requests", "detail": ...}`) as
//!   well as OpenAI- and vLLM-shaped ones ([`classify`]).

#![warn(missing_docs)]

use freellm_sdk::openai_compat::{self, UpstreamError};
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, Failure, FailureKind, ModelInfo, ModelTags,
    PrivacyInfo, PrivacyPolicy, RateLimits, RawObject, ResponseHead, Settings, StreamFraming, UpstreamRequest,
    WireFormat,
};
use serde_json::{Map, Value};

/// Request fields removed before the request goes to NIM.
///
/// NIM validates bodies strictly and answers unknown fields with a 400/422
/// `extra_forbidden` ("Extra inputs are not permitted"):
///
/// * `max_completion_tokens`: NIM documents `max_tokens`; the value is
///   moved there first (see [`move_max_completion_tokens`]);
/// * `store`, `metadata`, `service_tier`, `prompt_cache_key`,
///   `safety_identifier`: OpenAI-platform features (stored completions,
///   tiers, prompt caching, abuse ids) NIM does not have.
pub const DROP_FIELDS: &[&str] =
    &["max_completion_tokens", "store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier"];

/// Model used when a meta-model picks NIM.
pub const DEFAULT_MODEL: &str = "meta/llama-3.3-70b-instruct";

/// The NVIDIA NIM adapter.
pub struct Nim;

impl Adapter for Nim {
    fn configure(_settings: &Settings) -> Result<AdapterInfo, String> {
        let (fast, smart, reasoning, tools) =
            (ModelTags::FAST, ModelTags::SMART, ModelTags::REASONING, ModelTags::TOOLS);
        Ok(AdapterInfo {
            id: "nim".into(),
            display_name: "NVIDIA NIM".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "https://integrate.api.nvidia.com/v1".into(),
            key_env: Some("NVIDIA_NIM_API_KEY".into()),
            auth: AuthPlacement::Bearer,
            stream_framing: StreamFraming::Sse,
            wire_format: WireFormat::OpenaiChat,
            capabilities: Capabilities::TOOLS
                | Capabilities::JSON_MODE
                | Capabilities::JSON_SCHEMA
                | Capabilities::STREAM_USAGE,
            models: vec![
                ModelInfo::new(DEFAULT_MODEL, 131_072, fast | smart | tools),
                ModelInfo::new("meta/llama-3.1-405b-instruct", 131_072, smart | tools),
                ModelInfo::new("meta/llama-3.1-70b-instruct", 131_072, tools),
                ModelInfo::new("meta/llama-3.1-8b-instruct", 131_072, fast),
                ModelInfo::new("nvidia/llama-3.1-nemotron-70b-instruct", 131_072, smart),
                ModelInfo::new("mistralai/mixtral-8x22b-instruct-v0.1", 65_536, ModelTags::empty()),
                ModelInfo::new("deepseek-ai/deepseek-r1", 131_072, smart | reasoning),
            ],
            default_model: DEFAULT_MODEL.into(),
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::NoTraining,
                source_url:
                    "https://www.nvidia.com/en-us/agreements/cloud-services/service-specific-terms-for-nvidia-nim/"
                        .into(),
                last_verified: "2026-04-09".into(),
                note: "NVIDIA's NIM service terms do not use API inputs or outputs to train \
                       models; the free API catalog is meant for prototyping."
                    .into(),
            },
            limits: RateLimits {
                requests_per_minute: Some(40),
                requests_per_day: None,
                tokens_per_minute: None,
                tokens_per_day: None,
                shared_per_project: false,
            },
        })
    }

    /// Forwards the body as the client wrote it (a large prompt is not
    /// parsed whole), but for the fields below.
    fn map_request_body(ctx: &CallContext, body: &[u8]) -> Result<UpstreamRequest, Failure> {
        openai_compat::forward_request(ctx, body, DROP_FIELDS, |req| {
            move_max_completion_tokens(&mut req.fields);
            map_json_schema(&mut req.fields)
        })
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        classify(ctx, head, body)
    }
}

/// Moves `max_completion_tokens` to `max_tokens` (taking its place in the
/// body's key order) unless the caller also set `max_tokens`, which then
/// wins. `max_completion_tokens` itself is dropped by [`DROP_FIELDS`].
pub fn move_max_completion_tokens(fields: &mut RawObject<'_>) {
    fields.move_unless_set("max_completion_tokens", "max_tokens");
}

/// NIM's structured output: `response_format: {"type": "json_schema",
/// "json_schema": {"schema": S, ...}}` becomes `nvext: {"guided_json": S}`
/// and `response_format` is removed. An existing `nvext` object keeps its
/// fields (a `guided_json` the caller set there wins). `json_object`, and a
/// `json_schema` without a `schema`, pass through unchanged.
///
/// # Errors
///
/// Only when the new `nvext` cannot be encoded (never for parsed JSON).
pub fn map_json_schema(fields: &mut RawObject<'_>) -> Result<(), Failure> {
    let Some(format) = fields.get::<Value>("response_format").ok().flatten() else {
        return Ok(());
    };
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Ok(());
    }
    let Some(schema) = format.get("json_schema").and_then(|s| s.get("schema")).filter(|s| !s.is_null()).cloned() else {
        return Ok(());
    };
    fields.remove("response_format");
    let mut nvext = fields
        .get::<Value>("nvext")
        .ok()
        .flatten()
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(nvext) = nvext.as_object_mut() {
        nvext.entry("guided_json").or_insert(schema);
    }
    fields.set("nvext", &nvext)
}

/// Classifies a non-2xx NIM answer. NIM speaks several error dialects:
/// problem details (`{"type", "title", "status", "detail"}`, the `detail`
/// sometimes missing), `{"error": "text"}`, OpenAI's `{"error": {...}}` and
/// vLLM's `{"object": "error", "message", "code"}`.
///
/// | answer | kind |
/// |---|---|
/// | 429 | `rate-limited` (`quota-exhausted` only if the error names a daily/monthly quota; NIM publishes none) |
/// | 402 (out of credits) | `quota-exhausted` |
/// | 401, 403 | `key-invalid` |
/// | 400/422 `extra_forbidden` ("Extra inputs are not permitted") | `unsupported` (NIM refuses a field another provider may take) |
/// | 400/413/422 over the context window | `context-length` |
/// | 404 ("Function '…': Not found for account", model not found), 410 (model retired), other 400/422 | `request-invalid` |
/// | 500, 502, 503, 504, anything else | `transient` |
///
/// The message is the `detail` (else the `title`); `upstream_code` is the
/// problem `type` unless it is the empty `about:blank`.
pub fn classify(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
    let mut failure = openai_compat::classify_failure(ctx, head, body);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let problem = parsed.as_ref().and_then(Value::as_object).filter(|o| {
        o.get("status").is_some_and(Value::is_u64) && (o.contains_key("title") || o.contains_key("detail"))
    });
    if let Some(problem) = problem {
        if UpstreamError::from_json(parsed.as_ref().unwrap_or(&Value::Null)).message.is_none() {
            let detail = problem.get("detail").filter(|d| !d.is_null());
            let text = match detail {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Some(other @ (Value::Array(_) | Value::Object(_))) => Some(other.to_string()),
                _ => problem.get("title").and_then(Value::as_str).map(str::to_owned),
            };
            if let Some(text) = text {
                failure.message = truncate(&text);
            }
        }
        if failure.upstream_code.as_deref() == Some("about:blank") {
            failure.upstream_code = None;
        }
    }
    let lower = String::from_utf8_lossy(body).to_lowercase();
    failure.kind = match head.status {
        400 | 422 if is_extra_forbidden(&lower) => FailureKind::Unsupported,
        400 | 413 | 422 if is_context_length(&lower) => FailureKind::ContextLength,
        410 => FailureKind::RequestInvalid,
        _ => failure.kind,
    };
    if !matches!(failure.kind, FailureKind::RateLimited | FailureKind::QuotaExhausted | FailureKind::Transient) {
        failure.retry_after_ms = None;
    }
    failure
}

fn is_extra_forbidden(lower_body: &str) -> bool {
    lower_body.contains("extra_forbidden")
        || lower_body.contains("extra inputs are not permitted")
        || lower_body.contains("extra fields not permitted")
}

fn is_context_length(lower_body: &str) -> bool {
    [
        "maximum context length",
        "context length",
        "context window",
        "maximum model length",
        "max_model_len",
        "max_input_len",
        "max_seq_len",
        "reduce the length",
        "too many tokens",
    ]
    .iter()
    .any(|n| lower_body.contains(n))
}

fn truncate(text: &str) -> String {
    const MAX: usize = 1_000;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

freellm_sdk::export_adapter!(Nim);

#[cfg(test)]
mod tests {
    use super::*;
    use freellm_sdk::HttpMethod;
    use serde_json::json;

    fn ctx(stream: bool) -> CallContext {
        CallContext { request_id: "r".into(), upstream_model: DEFAULT_MODEL.into(), is_stream: stream }
    }

    fn map(body: &str) -> (UpstreamRequest, String) {
        let up = Nim::map_request_body(&ctx(false), body.as_bytes()).unwrap();
        let text = String::from_utf8(up.body.as_bytes().expect("a whole body").to_vec()).unwrap();
        (up, text)
    }

    fn sent(body: &str) -> Value {
        serde_json::from_str(&map(body).1).unwrap()
    }

    fn classify_with(status: u16, headers: &[(&str, &str)], body: &str) -> Failure {
        let head = ResponseHead { status, headers: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect() };
        classify(&ctx(false), &head, body.as_bytes())
    }

    #[test]
    fn fixtures_pass_natively() {
        freellm_sdk::fixtures::assert_dir::<Nim>(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    }

    #[test]
    fn passes_conformance() {
        freellm_sdk::fixtures::assert_conformance::<Nim>(&[]);
    }

    #[test]
    fn describes_nim() {
        let info = Nim::configure(&vec![]).unwrap();
        assert_eq!((info.id.as_str(), info.display_name.as_str()), ("nim", "NVIDIA NIM"));
        assert_eq!(info.adapter_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.default_base_url, "https://integrate.api.nvidia.com/v1");
        assert_eq!(info.key_env.as_deref(), Some("NVIDIA_NIM_API_KEY"));
        assert_eq!(info.models.len(), 7);
        assert!(info.models.iter().any(|m| m.id == info.default_model));
        assert!(info.models.iter().all(|m| m.id.contains('/')));
        let mixtral = info.models.iter().find(|m| m.id.starts_with("mistralai/")).unwrap();
        assert_eq!(mixtral.context_window, 65_536);
        let r1 = info.models.iter().find(|m| m.id == "deepseek-ai/deepseek-r1").unwrap();
        assert!(r1.tags.contains(ModelTags::REASONING | ModelTags::SMART));
        assert!(!info.capabilities.contains(Capabilities::VISION));
        assert_eq!(info.privacy.policy, PrivacyPolicy::NoTraining);
        assert_eq!(
            (info.limits.requests_per_minute, info.limits.requests_per_day, info.limits.shared_per_project),
            (Some(40), None, false)
        );
    }

    #[test]
    fn plain_request_keeps_the_slashed_model_id() {
        let (up, text) = map(
            r#"{"model":"nim/meta/llama-3.3-70b-instruct","messages":[{"role":"user","content":"Hi"}],"temperature":0.2,"max_tokens":64}"#,
        );
        assert_eq!((up.method, up.path.as_str()), (HttpMethod::Post, "/chat/completions"));
        assert_eq!(
            text,
            r#"{"model":"meta/llama-3.3-70b-instruct","messages":[{"role":"user","content":"Hi"}],"temperature":0.2,"max_tokens":64}"#
        );
    }

    #[test]
    fn openai_platform_fields_are_dropped() {
        let v = sent(
            r#"{"model":"m","messages":[],"store":true,"metadata":{"a":"b"},"service_tier":"auto",
                "prompt_cache_key":"k","safety_identifier":"u","seed":1,"frequency_penalty":0.1,
                "tools":[],"stream_options":{"include_usage":true},"nvext":{"top_k":5}}"#,
        );
        assert_eq!(
            v,
            json!({"model": DEFAULT_MODEL, "messages": [], "seed": 1, "frequency_penalty": 0.1,
                   "tools": [], "stream_options": {"include_usage": true}, "nvext": {"top_k": 5}})
        );
    }

    #[test]
    fn max_completion_tokens_becomes_max_tokens() {
        let (_, text) = map(r#"{"model":"m","max_completion_tokens":100,"messages":[]}"#);
        assert_eq!(text, r#"{"model":"meta/llama-3.3-70b-instruct","max_tokens":100,"messages":[]}"#);
        let v = sent(r#"{"model":"m","messages":[],"max_tokens":50,"max_completion_tokens":100}"#);
        assert_eq!(v["max_tokens"], 50);
        assert!(v.get("max_completion_tokens").is_none());
    }

    #[test]
    fn json_schema_becomes_guided_json() {
        let (_, text) = map(
            r#"{"model":"m","messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"city","strict":true,"schema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}},"temperature":0}"#,
        );
        assert_eq!(
            text,
            r#"{"model":"meta/llama-3.3-70b-instruct","messages":[],"temperature":0,"nvext":{"guided_json":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}"#
        );
    }

    #[test]
    fn existing_nvext_is_merged_not_overwritten() {
        let v = sent(
            r#"{"model":"m","messages":[],"nvext":{"top_k":40,"repetition_penalty":1.1},"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}"#,
        );
        assert_eq!(v["nvext"], json!({"top_k": 40, "repetition_penalty": 1.1, "guided_json": {"type": "object"}}));
        assert!(v.get("response_format").is_none());
        let v = sent(
            r#"{"model":"m","messages":[],"nvext":{"guided_json":{"type":"array"}},"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}}"#,
        );
        assert_eq!(v["nvext"], json!({"guided_json": {"type": "array"}}));
        let v = sent(
            r#"{"model":"m","messages":[],"nvext":null,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}}"#,
        );
        assert_eq!(v["nvext"], json!({"guided_json": {"type": "object"}}));
    }

    #[test]
    fn other_response_formats_pass_through() {
        for format in [
            json!({"type": "json_object"}),
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": null}}),
            json!({"type": "json_schema"}),
            json!({"type": "text"}),
        ] {
            let body = json!({"model": "m", "messages": [], "response_format": format}).to_string();
            let v = sent(&body);
            assert_eq!(v["response_format"], format);
            assert!(v.get("nvext").is_none());
        }
    }

    #[test]
    fn rate_limits() {
        let f = classify_with(429, &[], r#"{"status":429,"title":"Too Many Requests"}"#);
        assert_eq!(
            (f.kind, f.message.as_str(), f.retry_after_ms, f.upstream_code),
            (FailureKind::RateLimited, "Too Many Requests", None, None)
        );
        let f = classify_with(
            429,
            &[("retry-after", "20")],
            r#"{"type":"about:blank","status":429,"title":"Too Many Requests","detail":"Rate limit exceeded, please retry later."}"#,
        );
        assert_eq!(
            (f.kind, f.message.as_str(), f.retry_after_ms, f.upstream_code),
            (FailureKind::RateLimited, "Rate limit exceeded, please retry later.", Some(20_000), None)
        );
        let f = classify_with(429, &[], "ResourceExhausted: Worker local total request limit reached (33/32)");
        assert_eq!(f.kind, FailureKind::RateLimited);
    }

    #[test]
    fn payment_required_is_quota_exhausted() {
        let f = classify_with(
            402,
            &[],
            r#"{"type":"about:blank","status":402,"title":"Payment Required","detail":"Account 'abc': Cloud credits expired - Please contact NVIDIA representatives"}"#,
        );
        assert_eq!(f.kind, FailureKind::QuotaExhausted);
        assert!(f.message.contains("credits expired"));
    }

    #[test]
    fn bad_keys() {
        let f = classify_with(
            401,
            &[],
            r#"{"type":"about:blank","status":401,"title":"Unauthorized","detail":"Authentication failed"}"#,
        );
        assert_eq!(
            (f.kind, f.message.as_str(), f.upstream_code),
            (FailureKind::KeyInvalid, "Authentication failed", None)
        );
        let f = classify_with(403, &[], r#"{"status":403,"title":"Forbidden","detail":"Authorization failed"}"#);
        assert_eq!(f.kind, FailureKind::KeyInvalid);
    }

    #[test]
    fn unknown_models_are_request_invalid() {
        let f = classify_with(
            404,
            &[],
            r#"{"status":404,"title":"Not Found","detail":"Function '23d4f03a-b8a6-4adb-a183-7daa083a09cc': Not found for account 'Qawmu2vUw3rdcREnubcAVqe1c55nUTb1hCogKQx4BCA'"}"#,
        );
        assert_eq!(f.kind, FailureKind::RequestInvalid);
        assert!(f.message.starts_with("Function '23d4f03a"));
        let f = classify_with(
            404,
            &[],
            r#"{"error":{"message":"The model `meta/llama-9` does not exist.","type":"NotFoundError","code":404}}"#,
        );
        assert_eq!(f.kind, FailureKind::RequestInvalid);
        let f = classify_with(
            410,
            &[],
            r#"{"status":410,"title":"Gone","detail":"The model 'meta/llama2-70b' has reached its end of life."}"#,
        );
        assert_eq!(f.kind, FailureKind::RequestInvalid);
    }

    #[test]
    fn forbidden_extra_fields_are_unsupported() {
        let f = classify_with(
            400,
            &[],
            r#"{"error":"[{'type': 'extra_forbidden', 'loc': ('body', 'prompt_cache_key'), 'msg': 'Extra inputs are not permitted', 'input': 'main'}]"}"#,
        );
        assert_eq!(f.kind, FailureKind::Unsupported);
        assert!(f.message.contains("prompt_cache_key"));
        let f = classify_with(
            422,
            &[],
            r#"{"type":"urn:inference-service:problem-details:unprocessable-entity","title":"Unprocessable Entity","status":422,"detail":"body -> n\n  Extra inputs are not permitted (type=extra_forbidden)","instance":"/v2/nvcf/pexec/functions/b0fcd392","requestId":"380d3287"}"#,
        );
        assert_eq!(
            (f.kind, f.upstream_code.as_deref()),
            (FailureKind::Unsupported, Some("urn:inference-service:problem-details:unprocessable-entity"))
        );
        let f = classify_with(
            422,
            &[],
            r#"{"detail":[{"type":"extra_forbidden","loc":["body","store"],"msg":"Extra inputs are not permitted","input":true}]}"#,
        );
        assert_eq!(f.kind, FailureKind::Unsupported);
    }

    #[test]
    fn context_length() {
        let f = classify_with(
            400,
            &[],
            r#"{"object":"error","message":"This model's maximum context length is 131072 tokens. However, you requested 140000 tokens (139000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#,
        );
        assert_eq!(f.kind, FailureKind::ContextLength);
        let f = classify_with(
            400,
            &[],
            r#"{"type":"urn:nvcf-worker-service:problem-details:bad-request","title":"Bad Request","status":400,"detail":"The prompt (total length 140001) is longer than the maximum model length of 131072."}"#,
        );
        assert_eq!(f.kind, FailureKind::ContextLength);
    }

    #[test]
    fn other_bad_requests_are_request_invalid() {
        let f = classify_with(
            400,
            &[],
            r#"{"object":"error","message":"'messages' must contain at least one message","type":"BadRequestError","param":null,"code":400}"#,
        );
        assert_eq!(
            (f.kind, f.upstream_code.as_deref(), f.retry_after_ms),
            (FailureKind::RequestInvalid, Some("400"), None)
        );
    }

    #[test]
    fn server_errors_are_transient() {
        for (status, body) in [
            (
                500,
                r#"{"type":"urn:kaizen:problem-details:internal-server-error","title":"Internal Server Error","status":500}"#,
            ),
            (502, r#"{"status":502,"title":"Bad Gateway"}"#),
            (
                503,
                r#"{"type":"about:blank","status":503,"title":"Service Unavailable","detail":"Function '8f4118ba': no instances available"}"#,
            ),
            (504, "<html><body>504 Gateway Time-out</body></html>"),
        ] {
            let f = classify_with(status, &[("retry-after", "3")], body);
            assert_eq!((f.kind, f.retry_after_ms), (FailureKind::Transient, Some(3_000)), "{body}");
        }
        assert_eq!(classify_with(502, &[], r#"{"status":502,"title":"Bad Gateway"}"#).message, "Bad Gateway");
    }
}
