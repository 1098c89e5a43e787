//! The Cerebras adapter (`https://api.cerebras.ai/v1`): an OpenAI-compatible
//! provider, so it is mostly data.
//!
//! On top of the SDK's defaults:
//!
//! * a request with tools (or legacy `functions`) is skipped (`unsupported`):
//!   this adapter does not offer Cerebras for function calling, and declares
//!   no `tools` capability; empty `tools` and a stray `tool_choice` are
//!   dropped;
//! * `n > 1` is skipped too (Cerebras returns one choice);
//! * the fields Cerebras answers with a 400 are dropped ([`DROP_FIELDS`]);
//! * `reasoning_effort` only reaches the models that take it
//!   ([`takes_reasoning_effort`]; the others answer 400 `wrong_api_format`),
//!   with OpenAI's `minimal` / `xhigh` mapped to Cerebras' `low` / `high`;
//! * 429s are read together with Cerebras' `x-ratelimit-*-{minute,day}`
//!   headers: a spent daily budget is `quota-exhausted` until the day's
//!   reset, a per-minute limit waits for the minute's reset, and
//!   `queue_exceeded` (Cerebras itself is overloaded) is `transient`;
//! * a 404 `model_not_found` skips Cerebras (`unsupported`): its catalog
//!   changes often, and another provider may serve the model.

#![warn(missing_docs)]

use freellm_sdk::openai_compat::{self, UpstreamError};
use freellm_sdk::retry::{clamp_retry_after_ms, parse_reset_duration, retry_after_ms};
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, Failure, FailureKind, ModelInfo, ModelTags,
    PrivacyInfo, PrivacyPolicy, RateLimits, ResponseHead, Settings, StreamFraming, UpstreamRequest, WireFormat,
};

/// Request fields Cerebras rejects with a 400 (its OpenAI-compatibility
/// page lists `frequency_penalty`, `presence_penalty`, `logit_bias`,
/// `parallel_tool_calls` and `service_tier`), OpenAI account features it
/// does not have (`store`, `metadata`, `prompt_cache_key`,
/// `safety_identifier`, `verbosity`, `modalities`, `audio`,
/// `web_search_options`), and `n` (only `n = 1` gets this far). They are
/// dropped before sending; `logprobs`, `top_logprobs`, `seed`, `user`,
/// `stop`, `max_completion_tokens`, `stream_options` and `response_format`
/// (JSON mode and JSON schema) pass through.
pub const DROP_FIELDS: &[&str] = &[
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "parallel_tool_calls",
    "service_tier",
    "store",
    "metadata",
    "prompt_cache_key",
    "safety_identifier",
    "verbosity",
    "modalities",
    "audio",
    "web_search_options",
    "n",
];

/// The free-tier catalog, with the context windows of the free tier.
const MODELS: &[(&str, u32, ModelTags)] = &[
    ("llama3.1-8b", 8_192, ModelTags::FAST),
    ("qwen-3-235b-a22b-instruct-2507", 65_536, ModelTags::SMART),
    ("gpt-oss-120b", 65_536, ModelTags::SMART.union(ModelTags::REASONING)),
];

/// The model meta-models use.
pub const DEFAULT_MODEL: &str = "llama3.1-8b";

/// The Cerebras adapter.
pub struct Cerebras;

impl Adapter for Cerebras {
    fn configure(_settings: &Settings) -> Result<AdapterInfo, String> {
        Ok(AdapterInfo {
            id: "cerebras".into(),
            display_name: "Cerebras".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "https://api.cerebras.ai/v1".into(),
            key_env: Some("CEREBRAS_API_KEY".into()),
            auth: AuthPlacement::Bearer,
            stream_framing: StreamFraming::Sse,
            wire_format: WireFormat::OpenaiChat,
            capabilities: Capabilities::JSON_MODE
                | Capabilities::JSON_SCHEMA
                | Capabilities::STREAM_USAGE
                | Capabilities::REASONING,
            models: MODELS.iter().map(|(id, window, tags)| ModelInfo::new(*id, *window, *tags)).collect(),
            default_model: DEFAULT_MODEL.into(),
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::NoTraining,
                source_url: "https://www.cerebras.net/privacy-policy/".into(),
                last_verified: "2026-04-09".into(),
                note: "Cerebras does not use API prompts or outputs to train models.".into(),
            },
            limits: RateLimits {
                requests_per_minute: Some(30),
                requests_per_day: Some(14_400),
                tokens_per_minute: Some(60_000),
                tokens_per_day: Some(1_000_000),
                shared_per_project: false,
            },
        })
    }

    /// Forwards the body as the client wrote it (a large prompt is not
    /// parsed whole), without what Cerebras refuses.
    fn map_request_body(ctx: &CallContext, body: &[u8]) -> Result<UpstreamRequest, Failure> {
        openai_compat::forward_request(ctx, body, DROP_FIELDS, |req| {
            let fields = &mut req.fields;
            if fields.is_set("tools") || fields.is_set("functions") {
                return Err(Failure::unsupported("tool calling is not offered through Cerebras"));
            }
            let choices = fields.get::<u64>("n").ok().flatten().unwrap_or(1);
            if choices > 1 {
                return Err(Failure::unsupported("Cerebras returns a single choice (n must be 1)"));
            }
            for key in ["tools", "tool_choice", "functions", "function_call"] {
                fields.remove(key);
            }
            if !takes_reasoning_effort(&ctx.upstream_model) {
                fields.remove("reasoning_effort");
            } else if let Some(effort) = fields.string("reasoning_effort") {
                match cerebras_effort(&effort) {
                    Effort::Keep => {}
                    Effort::Drop => {
                        fields.remove("reasoning_effort");
                    }
                    Effort::Send(effort) => fields.set("reasoning_effort", &effort)?,
                }
            }
            Ok(())
        })
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        let mut failure = openai_compat::classify_failure(ctx, head, body);
        let error = UpstreamError::parse(body);
        match head.status {
            429 => classify_429(&mut failure, head, &error),
            404 if error.code.as_deref() == Some("model_not_found") => {
                failure.kind = FailureKind::Unsupported;
            }
            _ => {}
        }
        failure
    }
}

/// Whether `model` takes `reasoning_effort` (the gpt-oss family; Llama,
/// Qwen and GLM answer it with a 400).
pub fn takes_reasoning_effort(model: &str) -> bool {
    model.starts_with("gpt-oss")
}

/// Cerebras knows `low`, `medium` and `high`: OpenAI's `minimal` becomes
/// `low`, `xhigh` becomes `high`, and `none` (no reasoning, which gpt-oss
/// cannot do) is dropped so the model reasons at its default effort.
fn cerebras_effort(effort: &str) -> Effort {
    match effort {
        "minimal" => Effort::Send("low"),
        "xhigh" => Effort::Send("high"),
        "none" => Effort::Drop,
        _ => Effort::Keep,
    }
}

/// What becomes of a `reasoning_effort` sent to Cerebras.
enum Effort {
    /// Sent as the client wrote it.
    Keep,
    /// Not sent.
    Drop,
    /// Sent as this.
    Send(&'static str),
}

fn classify_429(failure: &mut Failure, head: &ResponseHead, error: &UpstreamError) {
    let overloaded =
        error.code.as_deref() == Some("queue_exceeded") || failure.message.to_lowercase().contains("high traffic");
    if overloaded {
        // Cerebras' own queue is full: not this key's limit.
        failure.kind = FailureKind::Transient;
        failure.retry_after_ms = retry_after_ms(&head.headers);
        return;
    }
    let day_spent = spent(head, "day");
    if failure.kind == FailureKind::QuotaExhausted || !day_spent.is_empty() {
        failure.kind = FailureKind::QuotaExhausted;
        failure.retry_after_ms = retry_after_ms(&head.headers).or_else(|| reset_after_ms(head, "day", &day_spent));
    } else {
        failure.kind = FailureKind::RateLimited;
        let minute_spent = spent(head, "minute");
        failure.retry_after_ms =
            retry_after_ms(&head.headers).or_else(|| reset_after_ms(head, "minute", &minute_spent));
    }
}

/// The budgets (`requests`, `tokens`) of `window` whose
/// `x-ratelimit-remaining-<budget>-<window>` header is 0.
fn spent(head: &ResponseHead, window: &str) -> Vec<&'static str> {
    ["requests", "tokens"]
        .into_iter()
        .filter(|budget| {
            head.header(&format!("x-ratelimit-remaining-{budget}-{window}"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|left| left <= 0.0)
        })
        .collect()
}

/// When the `window` limit resets, from `x-ratelimit-reset-<budget>-<window>`
/// (seconds, e.g. `33011.382867`): the latest reset of the `spent` budgets,
/// or of both budgets when none is known to be spent; clamped like a
/// `retry-after`.
fn reset_after_ms(head: &ResponseHead, window: &str, spent: &[&str]) -> Option<u64> {
    let budgets: &[&str] = if spent.is_empty() { &["requests", "tokens"] } else { spent };
    budgets
        .iter()
        .filter_map(|budget| parse_reset_duration(head.header(&format!("x-ratelimit-reset-{budget}-{window}"))?))
        .max()
        .map(clamp_retry_after_ms)
}

freellm_sdk::export_adapter!(Cerebras);

#[cfg(test)]
mod tests;
