//! The Groq adapter: an OpenAI-compatible provider, so it is mostly data.
//!
//! On top of the SDK's defaults it drops the request fields Groq rejects,
//! skips Groq for `n > 1` (another provider may serve it), and reads Groq's
//! `x-ratelimit-reset-*` headers when a 429 carries no `retry-after`.
//! Daily limits ("requests per day (RPD)", "tokens per day (TPD)") are
//! recognised by the SDK's classifier as `quota-exhausted`.

#![warn(missing_docs)]

use freellm_sdk::openai_compat;
use freellm_sdk::retry::{clamp_retry_after_ms, parse_reset_duration};
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, ChatRequest, Failure,
    FailureKind, ModelInfo, ModelTags, PrivacyInfo, PrivacyPolicy, RateLimits, ResponseHead,
    Settings, StreamFraming, UpstreamRequest,
};

/// Request fields Groq answers with a 400; they are dropped before sending.
pub const DROP_FIELDS: &[&str] = &["n", "logprobs", "top_logprobs", "logit_bias"];

/// The Groq adapter.
pub struct Groq;

impl Adapter for Groq {
    fn configure(_settings: &Settings) -> Result<AdapterInfo, String> {
        let (fast, smart, tools) = (ModelTags::FAST, ModelTags::SMART, ModelTags::TOOLS);
        Ok(AdapterInfo {
            id: "groq".into(),
            display_name: "Groq".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "https://api.groq.com/openai/v1".into(),
            key_env: Some("GROQ_API_KEY".into()),
            auth: AuthPlacement::Bearer,
            stream_framing: StreamFraming::Sse,
            capabilities: Capabilities::TOOLS
                | Capabilities::JSON_MODE
                | Capabilities::JSON_SCHEMA
                | Capabilities::VISION
                | Capabilities::STREAM_USAGE
                | Capabilities::REASONING
                | Capabilities::ASSISTANT_PREFILL,
            models: vec![
                ModelInfo::new("llama-3.3-70b-versatile", 131_072, fast | smart | tools),
                ModelInfo::new("llama-3.1-8b-instant", 131_072, fast | tools),
                ModelInfo::new(
                    "meta-llama/llama-4-scout-17b-16e-instruct",
                    131_072,
                    fast | ModelTags::VISION | tools,
                ),
                ModelInfo::new(
                    "qwen/qwen3-32b",
                    131_072,
                    smart | ModelTags::REASONING | tools,
                ),
            ],
            default_model: "llama-3.3-70b-versatile".into(),
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::NoTraining,
                source_url: "https://groq.com/terms-of-use/".into(),
                last_verified: "2026-04-09".into(),
                note: "Groq does not train on API prompts or outputs.".into(),
            },
            limits: RateLimits {
                requests_per_minute: Some(30),
                requests_per_day: Some(1_000),
                tokens_per_minute: Some(12_000),
                tokens_per_day: Some(100_000),
                shared_per_project: false,
            },
        })
    }

    fn map_request(ctx: &CallContext, req: ChatRequest) -> Result<UpstreamRequest, Failure> {
        let choices = req
            .n
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1);
        if choices > 1 {
            return Err(Failure::unsupported(
                "Groq returns a single choice (n must be 1)",
            ));
        }
        openai_compat::map_request(ctx, req, DROP_FIELDS)
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        let mut failure = openai_compat::classify_failure(ctx, head, body);
        let limited = matches!(
            failure.kind,
            FailureKind::RateLimited | FailureKind::QuotaExhausted
        );
        if limited && failure.retry_after_ms.is_none() {
            failure.retry_after_ms = reset_after_ms(head);
        }
        failure
    }
}

/// The later of Groq's `x-ratelimit-reset-requests` and
/// `x-ratelimit-reset-tokens` (durations such as `2m59.56s`), clamped like a
/// `retry-after`; `None` when neither parses.
pub fn reset_after_ms(head: &ResponseHead) -> Option<u64> {
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|name| parse_reset_duration(head.header(name)?))
        .max()
        .map(clamp_retry_after_ms)
}

freellm_sdk::export_adapter!(Groq);

#[cfg(test)]
mod tests {
    use super::*;
    use freellm_sdk::HttpMethod;
    use serde_json::Value;

    fn ctx() -> CallContext {
        CallContext {
            request_id: "r".into(),
            upstream_model: "llama-3.1-8b-instant".into(),
            is_stream: false,
            settings: vec![],
        }
    }

    fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn describes_groq() {
        let info = Groq::configure(&vec![]).unwrap();
        assert_eq!(
            (info.id.as_str(), info.display_name.as_str()),
            ("groq", "Groq")
        );
        assert_eq!(info.key_env.as_deref(), Some("GROQ_API_KEY"));
        assert!(info.models.iter().any(|m| m.id == info.default_model));
        assert_eq!(info.models.len(), 4);
        assert!(
            info.capabilities
                .contains(Capabilities::STREAM_USAGE | Capabilities::REASONING)
        );
        assert_eq!(info.limits.requests_per_day, Some(1_000));
    }

    #[test]
    fn rejected_fields_are_dropped() {
        let body = br#"{"model":"groq/llama-3.1-8b-instant","messages":[],"n":1,"logprobs":true,"top_logprobs":2,"logit_bias":{},"seed":7}"#;
        let up = Groq::map_request(&ctx(), ChatRequest::from_slice(body).unwrap()).unwrap();
        assert_eq!(
            (up.method, up.path.as_str()),
            (HttpMethod::Post, "/chat/completions")
        );
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"model": "llama-3.1-8b-instant", "messages": [], "seed": 7})
        );
    }

    #[test]
    fn several_choices_skip_groq() {
        let body = br#"{"model":"m","messages":[],"n":2}"#;
        let f = Groq::map_request(&ctx(), ChatRequest::from_slice(body).unwrap()).unwrap_err();
        assert_eq!(f.kind, FailureKind::Unsupported);
    }

    const RPM: &str = r#"{"error":{"message":"Rate limit reached for model `llama-3.1-8b-instant` in organization `org_1` service tier `on_demand` on requests per minute (RPM): Limit 30, Used 30, Requested 1. Please try again in 2s.","type":"requests","code":"rate_limit_exceeded"}}"#;
    const RPD: &str = r#"{"error":{"message":"Rate limit reached for model `llama-3.1-8b-instant` in organization `org_1` service tier `on_demand` on requests per day (RPD): Limit 1000, Used 1000, Requested 1. Please try again in 1m26.4s.","type":"requests","code":"rate_limit_exceeded"}}"#;
    const TPD: &str = r#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` on tokens per day (TPD): Limit 100000, Used 99990, Requested 200.","type":"tokens","code":"rate_limit_exceeded"}}"#;

    #[test]
    fn retry_after_wins_over_reset_headers() {
        let h = head(
            429,
            &[
                ("retry-after", "2"),
                ("x-ratelimit-reset-requests", "2m59.56s"),
            ],
        );
        let f = Groq::classify_failure(&ctx(), &h, RPM.as_bytes());
        assert_eq!(
            (f.kind, f.retry_after_ms),
            (FailureKind::RateLimited, Some(2_000))
        );
        assert_eq!(f.upstream_code.as_deref(), Some("rate_limit_exceeded"));
    }

    #[test]
    fn reset_headers_stand_in_for_retry_after() {
        let h = head(
            429,
            &[
                ("x-ratelimit-reset-requests", "2m59.56s"),
                ("x-ratelimit-reset-tokens", "7.66s"),
            ],
        );
        let f = Groq::classify_failure(&ctx(), &h, RPM.as_bytes());
        assert_eq!(
            (f.kind, f.retry_after_ms),
            (FailureKind::RateLimited, Some(179_560))
        );
        let h = head(429, &[("x-ratelimit-reset-tokens", "120ms")]);
        assert_eq!(
            Groq::classify_failure(&ctx(), &h, RPM.as_bytes()).retry_after_ms,
            Some(1_000)
        );
        let h = head(429, &[("x-ratelimit-reset-tokens", "soon")]);
        assert_eq!(
            Groq::classify_failure(&ctx(), &h, RPM.as_bytes()).retry_after_ms,
            None
        );
    }

    #[test]
    fn daily_limits_are_quota_exhausted() {
        for body in [RPD, TPD] {
            let f = Groq::classify_failure(
                &ctx(),
                &head(429, &[("retry-after", "86")]),
                body.as_bytes(),
            );
            assert_eq!(
                (f.kind, f.retry_after_ms),
                (FailureKind::QuotaExhausted, Some(86_000))
            );
        }
    }

    #[test]
    fn other_failures_keep_the_default_classification() {
        let f = Groq::classify_failure(
            &ctx(),
            &head(401, &[("x-ratelimit-reset-tokens", "7s")]),
            b"",
        );
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::KeyInvalid, None));
    }
}
