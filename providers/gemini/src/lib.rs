//! The Gemini adapter: Google's Gemini API through its OpenAI-compatible
//! endpoint (`https://generativelanguage.googleapis.com/v1beta/openai`).
//!
//! On top of the SDK's OpenAI-compatible defaults it:
//!
//! * drops the request fields the endpoint rejects ([`DROP_FIELDS`]) and
//!   moves `max_tokens` to `max_completion_tokens`;
//! * sends a `reasoning_effort` when the caller gave none, so Gemini 2.5
//!   does not spend a hidden thinking budget on every request
//!   ([`default_reasoning_effort`]);
//! * repairs streamed tool calls, which Gemini sends without `index`
//!   ([`stream::ToolCallIndexer`]);
//! * classifies Google's error bodies (often a one-element JSON array, with
//!   `QuotaFailure`, `RetryInfo` and `ErrorInfo` details) in
//!   [`errors::classify`].

#![warn(missing_docs)]

pub mod errors;
pub mod stream;

use freellm_sdk::openai_compat;
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, Failure, ModelInfo, ModelTags, PrivacyInfo,
    PrivacyPolicy, RateLimits, RawObject, ResponseHead, Settings, StreamFraming, StreamNormalizer, UpstreamRequest,
    WireFormat,
};

/// Request fields removed before the request goes to Gemini.
///
/// * `max_tokens`: moved to `max_completion_tokens` first (see
///   [`move_max_tokens`]); never sent.
/// * `logit_bias`: not supported by Gemini at all (400).
/// * `logprobs`, `top_logprobs`: "Logprobs is not enabled for
///   models/gemini-2.5-…" (400) on the 2.5 family.
/// * `frequency_penalty`, `presence_penalty`: "Penalty is not enabled for
///   models/gemini-2.5-…" (400) for any non-zero value on the 2.5 family.
/// * `parallel_tool_calls`: rejected by the compatibility layer ("Parallel
///   tool calls are not supported" / "Unknown name"); Gemini decides itself.
/// * `store`, `metadata`, `service_tier`, `prompt_cache_key`,
///   `safety_identifier`: OpenAI-platform fields the endpoint's strict
///   schema rejects with "Invalid JSON payload received. Unknown name …".
pub const DROP_FIELDS: &[&str] = &[
    "max_tokens",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "frequency_penalty",
    "presence_penalty",
    "parallel_tool_calls",
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// Model used when a meta-model picks Gemini.
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";

/// A free-tier quota of Gemini: `rpm` requests per minute, `rpd` per day,
/// 250k tokens per minute (the same for every 2.5 model), shared by the
/// keys of one project.
fn free_tier(rpm: u32, rpd: u32) -> RateLimits {
    RateLimits {
        requests_per_minute: Some(rpm),
        requests_per_day: Some(rpd),
        tokens_per_minute: Some(250_000),
        tokens_per_day: None,
        shared_per_project: true,
    }
}

/// The Gemini adapter.
pub struct Gemini;

impl Adapter for Gemini {
    fn configure(_settings: &Settings) -> Result<AdapterInfo, String> {
        let (fast, smart, reasoning, vision, tools) =
            (ModelTags::FAST, ModelTags::SMART, ModelTags::REASONING, ModelTags::VISION, ModelTags::TOOLS);
        Ok(AdapterInfo {
            id: "gemini".into(),
            display_name: "Gemini".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "https://generativelanguage.googleapis.com/v1beta/openai".into(),
            key_env: Some("GEMINI_API_KEY".into()),
            auth: AuthPlacement::Bearer,
            stream_framing: StreamFraming::Sse,
            wire_format: WireFormat::OpenaiChat,
            capabilities: Capabilities::TOOLS
                | Capabilities::JSON_MODE
                | Capabilities::JSON_SCHEMA
                | Capabilities::VISION
                | Capabilities::STREAM_USAGE
                | Capabilities::REASONING,
            // Free-tier quotas are per model and per Google Cloud project
            // (https://ai.google.dev/gemini-api/docs/rate-limits): Flash
            // has the adapter-wide limits below, Pro and Flash-Lite their
            // own, each counted in its own windows.
            models: vec![
                ModelInfo::new(DEFAULT_MODEL, 1_048_576, fast | smart | vision | tools | reasoning),
                ModelInfo::new("gemini-2.5-pro", 1_048_576, smart | vision | tools | reasoning)
                    .with_limits(free_tier(5, 100)),
                ModelInfo::new("gemini-2.5-flash-lite", 1_048_576, fast | vision | tools)
                    .with_limits(free_tier(15, 1_000)),
            ],
            default_model: DEFAULT_MODEL.into(),
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::FreeTierTrains,
                source_url: "https://ai.google.dev/gemini-api/terms".into(),
                last_verified: "2026-04-09".into(),
                note: "On the free tier Google may use prompts and answers to improve its \
                       products, with human review; paid (billed) usage is not used."
                    .into(),
            },
            // Free tier of Gemini 2.5 Flash; quotas belong to the Google
            // Cloud project, so keys of one project share them.
            limits: free_tier(10, 250),
        })
    }

    /// Forwards the body as the client wrote it (a large prompt is not
    /// parsed whole), but for the fields below.
    fn map_request_body(ctx: &CallContext, body: &[u8]) -> Result<UpstreamRequest, Failure> {
        openai_compat::forward_request(ctx, body, DROP_FIELDS, |req| {
            move_max_tokens(&mut req.fields);
            if req.fields.non_null("reasoning_effort").is_none() {
                req.fields.set("reasoning_effort", &default_reasoning_effort(&ctx.upstream_model))?;
            }
            Ok(())
        })
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        errors::classify(ctx, head, body)
    }

    fn stream_normalizer(_ctx: &CallContext, _head: &ResponseHead) -> Box<dyn StreamNormalizer> {
        Box::new(stream::ToolCallIndexer::default())
    }
}

/// The `reasoning_effort` sent when the caller gave none: Gemini 2.5 models
/// think by default, which costs latency and tokens on every request.
/// `2.5-pro` cannot turn thinking off (Google rejects `"none"` there), so it
/// gets `"low"`; `2.5-flash` (and `-lite`) get `"none"`; anything else
/// `"low"`, which every thinking model accepts.
pub fn default_reasoning_effort(upstream_model: &str) -> &'static str {
    if upstream_model.contains("2.5-pro") {
        "low"
    } else if upstream_model.contains("2.5-flash") {
        "none"
    } else {
        "low"
    }
}

/// Moves the legacy `max_tokens` to `max_completion_tokens` (taking its
/// place in the body's key order) unless the caller already set
/// `max_completion_tokens`, which wins. `max_tokens` itself is dropped by
/// [`DROP_FIELDS`].
pub fn move_max_tokens(fields: &mut RawObject<'_>) {
    fields.move_unless_set("max_tokens", "max_completion_tokens");
}

freellm_sdk::export_adapter!(Gemini);

#[cfg(test)]
mod tests {
    use super::*;
    use freellm_sdk::HttpMethod;
    use serde_json::{Value, json};

    fn ctx(model: &str, stream: bool) -> CallContext {
        CallContext { request_id: "r".into(), upstream_model: model.into(), is_stream: stream }
    }

    fn map(model: &str, body: &str) -> (UpstreamRequest, String) {
        let up = Gemini::map_request_body(&ctx(model, false), body.as_bytes()).unwrap();
        let text = String::from_utf8(up.body.as_bytes().expect("a whole body").to_vec()).unwrap();
        (up, text)
    }

    fn sent(model: &str, body: &str) -> Value {
        serde_json::from_str(&map(model, body).1).unwrap()
    }

    #[test]
    fn fixtures_pass_natively() {
        freellm_sdk::fixtures::assert_dir::<Gemini>(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    }

    #[test]
    fn passes_conformance() {
        freellm_sdk::fixtures::assert_conformance::<Gemini>(&[]);
    }

    #[test]
    fn describes_gemini() {
        let info = Gemini::configure(&vec![]).unwrap();
        assert_eq!((info.id.as_str(), info.display_name.as_str()), ("gemini", "Gemini"));
        assert_eq!(info.adapter_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.key_env.as_deref(), Some("GEMINI_API_KEY"));
        assert_eq!(info.auth, AuthPlacement::Bearer);
        assert_eq!(info.default_model, "gemini-2.5-flash");
        assert!(info.models.iter().any(|m| m.id == info.default_model));
        let flash = &info.models[0];
        assert_eq!(flash.context_window, 1_048_576);
        assert!(flash.tags.contains(
            ModelTags::FAST | ModelTags::SMART | ModelTags::VISION | ModelTags::TOOLS | ModelTags::REASONING
        ));
        assert!(!info.models[1].tags.contains(ModelTags::FAST));
        assert!(!info.capabilities.contains(Capabilities::ASSISTANT_PREFILL));
        assert!(info.capabilities.contains(Capabilities::TOOLS | Capabilities::JSON_SCHEMA | Capabilities::REASONING));
        assert_eq!(info.privacy.policy, PrivacyPolicy::FreeTierTrains);
        assert_eq!(
            (
                info.limits.requests_per_minute,
                info.limits.requests_per_day,
                info.limits.tokens_per_minute,
                info.limits.tokens_per_day,
                info.limits.shared_per_project
            ),
            (Some(10), Some(250), Some(250_000), None, true)
        );
        let rpm = |id: &str| {
            info.models.iter().find(|m| m.id == id).map(|m| m.limits.as_ref().map(|l| l.requests_per_minute))
        };
        assert_eq!(rpm("gemini-2.5-flash"), Some(None), "flash uses the adapter-wide limits");
        assert_eq!(rpm("gemini-2.5-pro"), Some(Some(Some(5))));
        assert_eq!(rpm("gemini-2.5-flash-lite"), Some(Some(Some(15))));
    }

    #[test]
    fn plain_request_keeps_order_and_gets_a_reasoning_default() {
        let (up, text) = map(
            "gemini-2.5-flash",
            r#"{"model":"gemini/gemini-2.5-flash","messages":[{"role":"user","content":"Hi"}],"temperature":0.3}"#,
        );
        assert_eq!((up.method, up.path.as_str()), (HttpMethod::Post, "/chat/completions"));
        assert_eq!(up.headers, [("content-type".to_owned(), "application/json".to_owned())]);
        assert_eq!(
            text,
            r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"Hi"}],"temperature":0.3,"reasoning_effort":"none"}"#
        );
    }

    #[test]
    fn reasoning_effort_defaults_by_model() {
        assert_eq!(default_reasoning_effort("gemini-2.5-pro"), "low");
        assert_eq!(default_reasoning_effort("gemini-2.5-pro-preview-06-05"), "low");
        assert_eq!(default_reasoning_effort("gemini-2.5-flash"), "none");
        assert_eq!(default_reasoning_effort("gemini-2.5-flash-lite"), "none");
        assert_eq!(default_reasoning_effort("gemini-3-flash-preview"), "low");
        let body = r#"{"model":"m","messages":[]}"#;
        assert_eq!(sent("gemini-2.5-pro", body)["reasoning_effort"], "low");
        assert_eq!(sent("gemini-2.5-flash", body)["reasoning_effort"], "none");
        // An explicit null counts as "not given".
        let body = r#"{"model":"m","messages":[],"reasoning_effort":null}"#;
        assert_eq!(sent("gemini-2.5-flash", body)["reasoning_effort"], "none");
    }

    #[test]
    fn explicit_reasoning_effort_is_kept() {
        let body = r#"{"model":"m","messages":[],"reasoning_effort":"high"}"#;
        assert_eq!(sent("gemini-2.5-flash", body)["reasoning_effort"], "high");
        let body = r#"{"model":"m","messages":[],"reasoning_effort":"none"}"#;
        assert_eq!(
            sent("gemini-2.5-pro", body)["reasoning_effort"],
            "none",
            "the caller's choice is passed on, even where Google refuses it"
        );
    }

    #[test]
    fn max_tokens_becomes_max_completion_tokens_in_place() {
        let (_, text) =
            map("gemini-2.5-flash", r#"{"model":"m","max_tokens":256,"messages":[],"reasoning_effort":"low"}"#);
        assert_eq!(
            text,
            r#"{"model":"gemini-2.5-flash","max_completion_tokens":256,"messages":[],"reasoning_effort":"low"}"#
        );
    }

    #[test]
    fn explicit_max_completion_tokens_wins() {
        let v =
            sent("gemini-2.5-flash", r#"{"model":"m","messages":[],"max_tokens":256,"max_completion_tokens":1024}"#);
        assert_eq!(v["max_completion_tokens"], 1024);
        assert!(v.get("max_tokens").is_none());
        let v =
            sent("gemini-2.5-flash", r#"{"model":"m","messages":[],"max_tokens":256,"max_completion_tokens":null}"#);
        assert_eq!(v["max_completion_tokens"], 256);
        let v = sent("gemini-2.5-flash", r#"{"model":"m","messages":[],"max_tokens":null}"#);
        assert!(v.get("max_tokens").is_none() && v.get("max_completion_tokens").is_none());
    }

    #[test]
    fn rejected_fields_are_dropped_and_the_rest_kept() {
        let v = sent(
            "gemini-2.5-pro",
            r#"{"model":"m","messages":[],"logit_bias":{"1":5},"logprobs":true,"top_logprobs":3,
                "frequency_penalty":0.5,"presence_penalty":0.2,"parallel_tool_calls":false,
                "store":false,"metadata":{"a":"b"},"service_tier":"auto","prompt_cache_key":"k",
                "safety_identifier":"u","seed":7,"n":2,"stop":["x"],"top_p":0.9,"user":"u1",
                "response_format":{"type":"json_object"},"tools":[],"tool_choice":"auto",
                "stream_options":{"include_usage":true},"extra_body":{"google":{}}}"#,
        );
        assert_eq!(
            v,
            json!({
                "model": "gemini-2.5-pro", "messages": [], "seed": 7, "n": 2, "stop": ["x"],
                "top_p": 0.9, "user": "u1", "response_format": {"type": "json_object"},
                "tools": [], "tool_choice": "auto", "stream_options": {"include_usage": true},
                "extra_body": {"google": {}}, "reasoning_effort": "low"
            })
        );
    }

    #[test]
    fn streaming_requests_set_stream() {
        let up = Gemini::map_request_body(&ctx("gemini-2.5-flash", true), br#"{"model":"m","messages":[]}"#).unwrap();
        let v: Value = serde_json::from_slice(up.body.as_bytes().expect("a whole body")).unwrap();
        assert_eq!(v["stream"], true);
    }
}
