//! The Groq adapter: an OpenAI-compatible provider, so it is mostly data.
//!
//! On top of the SDK's defaults it drops the request fields Groq rejects
//! (including `name` on messages other than tool results), skips Groq for
//! `n > 1` (another provider may serve it), reads Groq's
//! `x-ratelimit-reset-*` headers when a 429 carries no `retry-after`, and
//! picks up the usage Groq puts in `x_groq.usage` on the last stream chunk
//! ([`GroqStream`]). Daily limits ("requests per day (RPD)", "tokens per day
//! (TPD)") are recognised by the SDK's classifier as `quota-exhausted`.

#![warn(missing_docs)]

use freellm_sdk::openai_compat::{self, usage_from_json};
use freellm_sdk::retry::{clamp_retry_after_ms, parse_reset_duration};
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, ChunkRewriter, Failure, FailureKind, ModelInfo,
    ModelTags, PrivacyInfo, PrivacyPolicy, RateLimits, ResponseHead, RewritingStream, Settings, StreamFraming,
    StreamNormalizer, StreamOutput, UpstreamRequest, WireFormat,
};
use serde_json::{Map, Value};

/// Request fields Groq answers with a 400; they are dropped before sending.
/// (Groq's OpenAI-compatibility page also lists `messages[].name`, which
/// [`Groq::map_request_body`] removes from every message but tool results.)
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
            wire_format: WireFormat::OpenaiChat,
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
                ModelInfo::new("meta-llama/llama-4-scout-17b-16e-instruct", 131_072, fast | ModelTags::VISION | tools),
                ModelInfo::new("qwen/qwen3-32b", 131_072, smart | ModelTags::REASONING | tools),
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

    /// Forwards the body as the client wrote it (a large prompt is not
    /// parsed whole), but for the fields Groq rejects.
    fn map_request_body(ctx: &CallContext, body: &[u8]) -> Result<UpstreamRequest, Failure> {
        openai_compat::forward_request(ctx, body, DROP_FIELDS, |req| {
            let choices = req.fields.get::<u64>("n").ok().flatten().unwrap_or(1);
            if choices > 1 {
                return Err(Failure::unsupported("Groq returns a single choice (n must be 1)"));
            }
            for message in &mut req.messages {
                if message.string("role").as_deref() != Some("tool") {
                    message.remove("name");
                }
            }
            Ok(())
        })
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        let mut failure = openai_compat::classify_failure(ctx, head, body);
        let limited = matches!(failure.kind, FailureKind::RateLimited | FailureKind::QuotaExhausted);
        if limited && failure.retry_after_ms.is_none() {
            failure.retry_after_ms = message_hint_ms(&failure.message).or_else(|| reset_after_ms(head));
        }
        failure
    }

    fn stream_normalizer(ctx: &CallContext, head: &ResponseHead) -> Box<dyn StreamNormalizer> {
        let _ = (ctx, head);
        Box::new(GroqStream::default())
    }
}

/// The wait Groq names in its error message ("... Please try again in
/// 1m26.4s."), clamped like a `retry-after`: it is for the limit actually
/// hit, which the headers do not say.
pub fn message_hint_ms(message: &str) -> Option<u64> {
    let (_, rest) = message.split_once("try again in ")?;
    let duration = rest.split_whitespace().next()?.trim_end_matches(['.', ',']);
    parse_reset_duration(duration).map(clamp_retry_after_ms)
}

/// When Groq's limits reset, from `x-ratelimit-reset-requests` (the daily
/// request budget) and `x-ratelimit-reset-tokens` (the per-minute token
/// budget), durations such as `2m59.56s`: the reset of the budget whose
/// `x-ratelimit-remaining-*` is 0, or the later of both when neither is
/// known to be spent; clamped like a `retry-after`, `None` when none parses.
pub fn reset_after_ms(head: &ResponseHead) -> Option<u64> {
    let spent = |budget: &&str| {
        head.header(&format!("x-ratelimit-remaining-{budget}"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|left| left <= 0.0)
    };
    let all = ["requests", "tokens"];
    let spent: Vec<&str> = all.iter().copied().filter(|b| spent(b)).collect();
    let budgets = if spent.is_empty() { &all[..] } else { &spent[..] };
    budgets
        .iter()
        .filter_map(|budget| parse_reset_duration(head.header(&format!("x-ratelimit-reset-{budget}"))?))
        .max()
        .map(clamp_retry_after_ms)
}

/// Groq's stream normalizer: the SDK's passthrough (chunks forwarded
/// unchanged, `[DONE]` ends, malformed events skipped, error events fail the
/// stream), plus the usage Groq reports in `x_groq.usage` on the last chunk
/// when the client did not ask for `stream_options.include_usage` (a
/// top-level `usage`, when present, wins).
pub type GroqStream = RewritingStream<GroqUsage>;

/// Picks up `x_groq.usage`; chunks stay as they are.
#[derive(Debug, Default)]
pub struct GroqUsage;

impl ChunkRewriter for GroqUsage {
    fn rewrite(&mut self, chunk: &mut Map<String, Value>, out: &mut StreamOutput) -> bool {
        if chunk.get("usage").and_then(usage_from_json).is_none()
            && let Some(usage) = chunk.get("x_groq").and_then(|x| x.get("usage")).and_then(usage_from_json)
        {
            out.usage = Some(usage);
        }
        false
    }

    /// Only chunks that may carry `x_groq` (a `\u` escape could spell the
    /// name too) are read as maps.
    fn rewrites(&self, data: &str) -> bool {
        openai_compat::may_name(data, &["x_groq"])
    }
}

freellm_sdk::export_adapter!(Groq);

#[cfg(test)]
mod tests {
    use super::*;
    use freellm_sdk::{HttpMethod, StreamEvent};
    use serde_json::Value;

    fn ctx() -> CallContext {
        CallContext { request_id: "r".into(), upstream_model: "llama-3.1-8b-instant".into(), is_stream: false }
    }

    fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead { status, headers: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect() }
    }

    #[test]
    fn describes_groq() {
        let info = Groq::configure(&vec![]).unwrap();
        assert_eq!((info.id.as_str(), info.display_name.as_str()), ("groq", "Groq"));
        assert_eq!(info.key_env.as_deref(), Some("GROQ_API_KEY"));
        assert!(info.models.iter().any(|m| m.id == info.default_model));
        assert_eq!(info.models.len(), 4);
        assert!(info.capabilities.contains(Capabilities::STREAM_USAGE | Capabilities::REASONING));
        assert_eq!(info.limits.requests_per_day, Some(1_000));
    }

    #[test]
    fn rejected_fields_are_dropped() {
        let body = br#"{"model":"groq/llama-3.1-8b-instant","messages":[],"n":1,"logprobs":true,"top_logprobs":2,"logit_bias":{},"seed":7}"#;
        let up = Groq::map_request_body(&ctx(), body).unwrap();
        assert_eq!((up.method, up.path.as_str()), (HttpMethod::Post, "/chat/completions"));
        let sent: Value = serde_json::from_slice(up.body.as_bytes().expect("a whole body")).unwrap();
        assert_eq!(sent, serde_json::json!({"model": "llama-3.1-8b-instant", "messages": [], "seed": 7}));
    }

    #[test]
    fn message_names_are_dropped_except_on_tool_results() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"s","name":"ops"},{"role":"user","content":"u","name":"ann"},{"role":"assistant","content":"a","name":"bot"},{"role":"tool","tool_call_id":"c","name":"f","content":"r"}]}"#;
        let up = Groq::map_request_body(&ctx(), body).unwrap();
        let sent: Value = serde_json::from_slice(up.body.as_bytes().expect("a whole body")).unwrap();
        assert_eq!(
            sent["messages"],
            serde_json::json!([
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"},
                {"role": "tool", "tool_call_id": "c", "name": "f", "content": "r"}
            ])
        );
    }

    fn event(data: &str) -> StreamEvent {
        StreamEvent { event: None, data: data.to_owned() }
    }

    #[test]
    fn stream_usage_comes_from_x_groq_or_the_usage_chunk() {
        let last = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"req_1","usage":{"queue_time":0.01,"prompt_tokens":12,"prompt_time":0.001,"completion_tokens":3,"completion_time":0.004,"total_tokens":15,"total_time":0.005}}}"#;
        let mut s = GroqStream::default();
        let out = s.push(vec![event(last), event("[DONE]")]).unwrap();
        assert_eq!(out.chunks, [last.as_bytes().to_vec()]);
        assert_eq!(out.usage.map(|u| u.total_tokens), Some(15));
        assert!(out.done);

        let usage_chunk = r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":16},"x_groq":{"id":"req_1","usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}}"#;
        let mut s = GroqStream::default();
        let out = s.push(vec![event(usage_chunk)]).unwrap();
        assert_eq!(out.usage.map(|u| u.total_tokens), Some(16));
        let f = s.push(vec![event(r#"{"error":{"message":"boom","type":"internal_server_error"}}"#)]).unwrap_err();
        assert_eq!(f.kind, FailureKind::Transient);
    }

    #[test]
    fn several_choices_skip_groq() {
        let body = br#"{"model":"m","messages":[],"n":2}"#;
        let f = Groq::map_request_body(&ctx(), body).unwrap_err();
        assert_eq!(f.kind, FailureKind::Unsupported);
    }

    const RPM: &str = r#"{"error":{"message":"Rate limit reached for model `llama-3.1-8b-instant` in organization `org_1` service tier `on_demand` on requests per minute (RPM): Limit 30, Used 30, Requested 1. Please try again in 2s.","type":"requests","code":"rate_limit_exceeded"}}"#;
    const RPD: &str = r#"{"error":{"message":"Rate limit reached for model `llama-3.1-8b-instant` in organization `org_1` service tier `on_demand` on requests per day (RPD): Limit 1000, Used 1000, Requested 1. Please try again in 1m26.4s.","type":"requests","code":"rate_limit_exceeded"}}"#;
    const TPD: &str = r#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` on tokens per day (TPD): Limit 100000, Used 99990, Requested 200.","type":"tokens","code":"rate_limit_exceeded"}}"#;

    #[test]
    fn retry_after_wins_over_reset_headers() {
        let h = head(429, &[("retry-after", "2"), ("x-ratelimit-reset-requests", "2m59.56s")]);
        let f = Groq::classify_failure(&ctx(), &h, RPM.as_bytes());
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, Some(2_000)));
        assert_eq!(f.upstream_code.as_deref(), Some("rate_limit_exceeded"));
    }

    /// A 429 whose message names no wait.
    const BARE_429: &str = r#"{"error":{"message":"Rate limit reached for model `llama-3.1-8b-instant`.","type":"requests","code":"rate_limit_exceeded"}}"#;

    #[test]
    fn reset_headers_stand_in_for_retry_after() {
        let h = head(429, &[("x-ratelimit-reset-requests", "2m59.56s"), ("x-ratelimit-reset-tokens", "7.66s")]);
        let f = Groq::classify_failure(&ctx(), &h, BARE_429.as_bytes());
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, Some(179_560)));
        let h = head(429, &[("x-ratelimit-reset-tokens", "120ms")]);
        assert_eq!(Groq::classify_failure(&ctx(), &h, BARE_429.as_bytes()).retry_after_ms, Some(1_000));
        let h = head(429, &[("x-ratelimit-reset-tokens", "soon")]);
        assert_eq!(Groq::classify_failure(&ctx(), &h, BARE_429.as_bytes()).retry_after_ms, None);
    }

    #[test]
    fn the_spent_budget_picks_the_reset_header() {
        // Tokens per minute spent; the daily request bucket is not.
        let h = head(
            429,
            &[
                ("x-ratelimit-remaining-requests", "999"),
                ("x-ratelimit-reset-requests", "1m26.4s"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "7.66s"),
            ],
        );
        let f = Groq::classify_failure(&ctx(), &h, BARE_429.as_bytes());
        assert_eq!(f.retry_after_ms, Some(7_660));
    }

    #[test]
    fn the_message_hint_wins_over_reset_headers() {
        let h = head(429, &[("x-ratelimit-reset-requests", "2m59.56s")]);
        let f = Groq::classify_failure(&ctx(), &h, RPM.as_bytes());
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, Some(2_000)));
        let f = Groq::classify_failure(&ctx(), &head(429, &[]), RPD.as_bytes());
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::QuotaExhausted, Some(86_400)));
        assert_eq!(message_hint_ms("Please try again in 2.25s."), Some(2_250));
        assert_eq!(message_hint_ms("Please try again in a bit."), None);
        assert_eq!(message_hint_ms("no hint"), None);
    }

    #[test]
    fn daily_limits_are_quota_exhausted() {
        for body in [RPD, TPD] {
            let f = Groq::classify_failure(&ctx(), &head(429, &[("retry-after", "86")]), body.as_bytes());
            assert_eq!((f.kind, f.retry_after_ms), (FailureKind::QuotaExhausted, Some(86_000)));
        }
    }

    #[test]
    fn other_failures_keep_the_default_classification() {
        let f = Groq::classify_failure(&ctx(), &head(401, &[("x-ratelimit-reset-tokens", "7s")]), b"");
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::KeyInvalid, None));
    }

    #[test]
    fn fixtures_pass_natively() {
        freellm_sdk::fixtures::assert_dir::<Groq>(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    }

    #[test]
    fn passes_conformance() {
        freellm_sdk::fixtures::assert_conformance::<Groq>(&[]);
    }
}
