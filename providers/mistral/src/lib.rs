//! The Mistral adapter (La Plateforme, `https://api.mistral.ai/v1`).
//!
//! Mistral's chat endpoint is OpenAI-shaped but strict: its request schema
//! forbids unknown fields (a 422 `extra_forbidden`), on the body and on each
//! message. So, on top of the SDK's defaults, [`Mistral::map_request_body`]:
//!
//! * renames what has a Mistral equivalent: `seed` → `random_seed`,
//!   `max_completion_tokens` → `max_tokens` (it wins over an explicit
//!   `max_tokens`; only one is sent), `tool_choice: "required"` → `"any"`,
//!   the `developer` role → `system`;
//! * drops the OpenAI fields Mistral has no equivalent for
//!   ([`DROP_FIELDS`]) and, per message, every field Mistral's message schema
//!   lacks ([`MESSAGE_FIELDS`]: e.g. `name` on user messages, or the
//!   `refusal`, `annotations` and `reasoning_content` that clients copy back
//!   from earlier answers);
//! * rewrites tool call ids that are not 9 ASCII letters or digits (Mistral
//!   rejects `call_…` ids from other providers with a 400) into stable
//!   9-character ids, the same in the assistant's `tool_calls` and in the
//!   `tool` messages ([`mistral_tool_call_id`]);
//! * marks a final assistant message `"prefix": true`, Mistral's switch for
//!   continuing a partial answer (assistant prefill). Mistral's answer then
//!   *starts with* that prefix (its own docs strip it with
//!   `content[len(prefix):]`); the adapter cannot remove it because the
//!   call context does not carry the request.
//!
//! Answers are OpenAI-shaped; [`MistralStream`] and
//! [`Mistral::normalize_response`] only map Mistral's extra finish reason
//! `model_length` to `length`, add the `type: "function"` Mistral leaves
//! out of some tool calls, and turn a Mistral error object into a failure.
//! The final stream chunk always carries `usage` (Mistral has no
//! `stream_options`).
//!
//! [`Mistral::classify_failure`] reads Mistral's error shapes (a bare
//! `{"message": ...}` from the gateway, `{"object": "error", ...}` from the
//! API, a validation `message` that is an object with `detail`) and its
//! `ratelimitbysize-*` headers.

#![warn(missing_docs)]

use freellm_sdk::openai_compat::{self, UpstreamError, stream_error};
use freellm_sdk::retry::{clamp_retry_after_ms, parse_reset_duration, retry_after_ms};
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, ChunkRewriter, Failure, FailureKind, ModelInfo,
    ModelTags, NormalizedResponse, PrivacyInfo, PrivacyPolicy, RateLimits, RawObject, ResponseHead, RewritingStream,
    Settings, StreamFraming, StreamNormalizer, StreamOutput, UpstreamRequest, WireFormat,
};
use serde_json::{Map, Value};

/// OpenAI request fields Mistral's schema lacks (it answers them with a 422
/// `extra_forbidden`); they are dropped before sending.
///
/// * `logit_bias`, `logprobs`, `top_logprobs`: no token-level controls;
/// * `user`, `store`, `metadata`, `service_tier`, `prompt_cache_key`,
///   `safety_identifier`: OpenAI account features;
/// * `reasoning_effort`: the models in the catalog do not take it (Magistral
///   uses `prompt_mode` instead, which is passed through);
/// * `stream_options`: Mistral always puts `usage` on the last chunk;
/// * `modalities`, `audio`, `web_search_options`, `verbosity`: OpenAI-only
///   features;
/// * `functions`, `function_call`: the legacy form of `tools`.
///
/// `seed` and `max_completion_tokens` are renamed, not dropped (see the
/// crate docs). Mistral does take `n`, `presence_penalty`,
/// `frequency_penalty`, `parallel_tool_calls`, `prediction`, `stop` and
/// `response_format` (JSON mode and JSON schema), which pass through, as do
/// Mistral's own `random_seed`, `safe_prompt` and `prompt_mode`.
pub const DROP_FIELDS: &[&str] = &[
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "reasoning_effort",
    "stream_options",
    "modalities",
    "audio",
    "web_search_options",
    "verbosity",
    "functions",
    "function_call",
];

/// The fields Mistral accepts on a message, per role; any other field of a
/// message with one of these roles is dropped. Messages with other roles are
/// left alone (after `developer` became `system`).
pub const MESSAGE_FIELDS: &[(&str, &[&str])] = &[
    ("system", &["role", "content"]),
    ("user", &["role", "content"]),
    ("assistant", &["role", "content", "tool_calls", "prefix"]),
    ("tool", &["role", "content", "tool_call_id", "name"]),
];

/// Models of the catalog, with context windows and tags.
const MODELS: &[(&str, u32, ModelTags)] = &[
    ("mistral-small-latest", 131_072, ModelTags::FAST.union(ModelTags::TOOLS).union(ModelTags::VISION)),
    ("open-mistral-nemo", 131_072, ModelTags::FAST.union(ModelTags::TOOLS)),
    ("mistral-medium-latest", 131_072, ModelTags::SMART.union(ModelTags::TOOLS).union(ModelTags::VISION)),
];

/// The model meta-models use.
pub const DEFAULT_MODEL: &str = "mistral-small-latest";

/// The Mistral adapter.
pub struct Mistral;

impl Adapter for Mistral {
    fn configure(_settings: &Settings) -> Result<AdapterInfo, String> {
        Ok(AdapterInfo {
            id: "mistral".into(),
            display_name: "Mistral".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "https://api.mistral.ai/v1".into(),
            key_env: Some("MISTRAL_API_KEY".into()),
            auth: AuthPlacement::Bearer,
            stream_framing: StreamFraming::Sse,
            wire_format: WireFormat::OpenaiChat,
            capabilities: Capabilities::TOOLS
                | Capabilities::JSON_MODE
                | Capabilities::JSON_SCHEMA
                | Capabilities::VISION
                | Capabilities::STREAM_USAGE
                | Capabilities::ASSISTANT_PREFILL,
            models: MODELS.iter().map(|(id, window, tags)| ModelInfo::new(*id, *window, *tags)).collect(),
            default_model: DEFAULT_MODEL.into(),
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::Configurable,
                source_url: "https://mistral.ai/terms/".into(),
                last_verified: "2026-04-09".into(),
                note: "On the free Experiment plan Mistral may use prompts and outputs to \
                       train its models unless the workspace opts out in its console settings."
                    .into(),
            },
            limits: free_tier_limits(),
        })
    }

    /// Forwards the body as the client wrote it (a large prompt is not
    /// parsed whole), fitted to Mistral's schema as the module says.
    fn map_request_body(ctx: &CallContext, body: &[u8]) -> Result<UpstreamRequest, Failure> {
        openai_compat::forward_request(ctx, body, DROP_FIELDS, |req| {
            let fields = &mut req.fields;
            if let Some(limit) = fields.raw("max_completion_tokens") {
                if limit.get() == "null" {
                    fields.remove("max_completion_tokens");
                } else {
                    fields.rename("max_completion_tokens", "max_tokens");
                }
            }
            if let Some(seed) = fields.raw("seed") {
                if seed.get() == "null" || fields.contains("random_seed") {
                    fields.remove("seed");
                } else {
                    fields.rename("seed", "random_seed");
                }
            }
            if fields.string("tool_choice").as_deref() == Some("required") {
                fields.set("tool_choice", &"any")?;
            }
            for message in &mut req.messages {
                clean_message(message)?;
            }
            if let Some(last) = req.messages.last_mut()
                && last.string("role").as_deref() == Some("assistant")
                && !has_tool_calls(last)
            {
                last.set("prefix", &true)?;
            }
            Ok(())
        })
    }

    fn normalize_response(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Result<NormalizedResponse, Failure> {
        let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else {
            return openai_compat::normalize_response(ctx, head, body);
        };
        if let Some(failure) = error_object(&answer) {
            return Err(failure);
        }
        if repair_choices(&mut answer, "message") {
            let repaired = serde_json::to_vec(&answer)
                .map_err(|e| Failure::transient(format!("cannot encode the answer: {e}")))?;
            return openai_compat::normalize_response(ctx, head, &repaired);
        }
        openai_compat::normalize_response(ctx, head, body)
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        let mut failure = openai_compat::classify_failure(ctx, head, body);
        let details = validation_details(body);
        if let Some(text) = details_text(&details) {
            failure.message = text;
        }
        let lower = failure.message.to_lowercase();
        let error_type = UpstreamError::parse(body).error_type.unwrap_or_default();

        if head.status == 429 {
            if is_capacity(&lower, &error_type) {
                failure.kind = FailureKind::Transient;
                failure.retry_after_ms = retry_after_ms(&head.headers);
            } else if failure.kind == FailureKind::QuotaExhausted
                || header_is_zero(head, "x-ratelimitbysize-remaining-month")
            {
                // The monthly token budget: its reset is not announced.
                failure.kind = FailureKind::QuotaExhausted;
                failure.retry_after_ms = retry_after_ms(&head.headers);
            } else {
                failure.kind = FailureKind::RateLimited;
                failure.retry_after_ms = retry_after_ms(&head.headers).or_else(|| minute_reset_ms(head, &lower));
            }
            return failure;
        }

        let extra: Vec<String> =
            details.iter().filter(|d| d.kind == "extra_forbidden").map(|d| d.location.clone()).collect();
        if matches!(head.status, 400 | 422) && !extra.is_empty() {
            // Mistral lacks a field the client sent; another provider may
            // take it.
            failure.kind = FailureKind::Unsupported;
            failure.message = format!("Mistral does not accept {} (extra_forbidden)", extra.join(", "));
        } else if matches!(head.status, 400 | 404)
            && (error_type == "invalid_model" || lower.starts_with("invalid model"))
        {
            // The model is not (or no longer) served to this key.
            failure.kind = FailureKind::Unsupported;
        }
        failure
    }

    fn stream_normalizer(ctx: &CallContext, head: &ResponseHead) -> Box<dyn StreamNormalizer> {
        let _ = (ctx, head);
        Box::new(MistralStream::default())
    }
}

/// The free "Experiment" tier, per workspace (every key of a workspace
/// shares it): 1 request per second (60 per minute) and 500,000 tokens per
/// minute. Its third limit, 1,000,000,000 tokens per month, has no field in
/// the contract, so `tokens_per_day` is `None`: there is no daily limit.
pub fn free_tier_limits() -> RateLimits {
    RateLimits {
        requests_per_minute: Some(60),
        requests_per_day: None,
        tokens_per_minute: Some(500_000),
        tokens_per_day: None,
        shared_per_project: true,
    }
}

fn has_tool_calls(message: &RawObject<'_>) -> bool {
    message.get::<Vec<serde::de::IgnoredAny>>("tool_calls").ok().flatten().is_some_and(|calls| !calls.is_empty())
}

/// Makes one message fit Mistral's schema: `developer` → `system`, fields
/// outside [`MESSAGE_FIELDS`] dropped, tool call ids made Mistral-shaped.
fn clean_message(message: &mut RawObject<'_>) -> Result<(), Failure> {
    let mut role = message.string("role").map(|role| role.into_owned()).unwrap_or_default();
    if role == "developer" {
        role = "system".to_owned();
        message.set("role", &role)?;
    }
    if let Some((_, allowed)) = MESSAGE_FIELDS.iter().find(|(r, _)| *r == role) {
        message.retain(|key| allowed.contains(&key));
    }
    if let Some(id) = message.get::<Value>("tool_call_id").ok().flatten().as_ref().and_then(Value::as_str) {
        let mapped = mistral_tool_call_id(id);
        if mapped != id {
            message.set("tool_call_id", &mapped)?;
        }
    }
    if let Some(Value::Array(mut calls)) = message.get::<Value>("tool_calls").ok().flatten() {
        let mut changed = false;
        for call in &mut calls {
            if let Some(Value::String(id)) = call.get_mut("id") {
                let mapped = mistral_tool_call_id(id);
                changed |= mapped != *id;
                *id = mapped;
            }
        }
        if changed {
            message.set("tool_calls", &calls)?;
        }
    }
    Ok(())
}

/// A tool call id Mistral accepts: exactly 9 ASCII letters or digits. An id
/// that already is one is kept; any other id maps to a stable one derived
/// from a hash of it, so an assistant's `tool_calls` and the `tool`
/// messages answering them still match.
pub fn mistral_tool_call_id(id: &str) -> String {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_owned();
    }
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // FNV-1a, then the splitmix64 finalizer to spread the bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (0..9)
        .map(|_| {
            let c = ALPHABET[(h % 62) as usize] as char;
            h /= 62;
            c
        })
        .collect()
}

/// Repairs the choices of an answer (`part` = `"message"`) or a chunk
/// (`part` = `"delta"`): finish reason `model_length` → `length`, and
/// `type: "function"` on tool calls that carry an id but no type. Returns
/// whether anything changed.
fn repair_choices(object: &mut Map<String, Value>, part: &str) -> bool {
    let Some(Value::Array(choices)) = object.get_mut("choices") else {
        return false;
    };
    let mut changed = false;
    for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
        if choice.get("finish_reason").and_then(Value::as_str) == Some("model_length") {
            choice.insert("finish_reason".to_owned(), Value::from("length"));
            changed = true;
        }
        let calls = choice.get_mut(part).and_then(|p| p.get_mut("tool_calls")).and_then(Value::as_array_mut);
        for call in calls.into_iter().flatten().filter_map(Value::as_object_mut) {
            if call.contains_key("id") && !call.contains_key("type") {
                call.insert("type".to_owned(), Value::from("function"));
                changed = true;
            }
        }
    }
    changed
}

/// A Mistral error object (`{"object": "error", "message": ...}`, or the
/// OpenAI-style `{"error": ...}`) where an answer or chunk was expected, as
/// a `transient` failure.
fn error_object(object: &Map<String, Value>) -> Option<Failure> {
    if object.contains_key("choices") {
        return None;
    }
    if object.get("object").and_then(Value::as_str) != Some("error") {
        return stream_error(object);
    }
    let error = UpstreamError::from_json(&Value::Object(object.clone()));
    Some(Failure {
        kind: FailureKind::Transient,
        message: error.message.unwrap_or_else(|| "Mistral reported an error".to_owned()),
        retry_after_ms: None,
        upstream_code: error.code.or(error.error_type),
    })
}

/// One entry of a validation error's `detail` list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Detail {
    /// `type`, e.g. `extra_forbidden`.
    kind: String,
    /// `loc` without the leading `body`, joined with dots.
    location: String,
    /// `msg`.
    message: String,
}

/// The `detail` list of a Mistral validation error, wherever it sits: in a
/// `message` object, in a `message` string holding JSON, as a `message`
/// array, or at the top level.
fn validation_details(body: &[u8]) -> Vec<Detail> {
    let Ok(Value::Object(error)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let from_message = match error.get("message") {
        Some(Value::String(text)) if text.trim_start().starts_with('{') => serde_json::from_str::<Value>(text).ok(),
        Some(other) => Some(other.clone()),
        None => None,
    };
    let list = match from_message {
        Some(Value::Object(m)) => m.get("detail").cloned(),
        Some(list @ Value::Array(_)) => Some(list),
        _ => None,
    }
    .or_else(|| error.get("detail").cloned());
    let Some(Value::Array(items)) = list else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(Value::as_object)
        .map(|item| {
            let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
            let location = item
                .get("loc")
                .and_then(Value::as_array)
                .map(|loc| {
                    loc.iter()
                        .skip_while(|part| part.as_str() == Some("body"))
                        .map(|part| match part {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .unwrap_or_default();
            Detail { kind: text("type"), location, message: text("msg") }
        })
        .collect()
}

/// A readable message from validation details (the first three).
fn details_text(details: &[Detail]) -> Option<String> {
    let parts: Vec<String> = details
        .iter()
        .map(|d| {
            let what = if d.message.is_empty() { &d.kind } else { &d.message };
            match (d.location.is_empty(), what.is_empty()) {
                (_, true) => d.location.clone(),
                (true, false) => what.clone(),
                (false, false) => format!("{}: {what}", d.location),
            }
        })
        .filter(|part| !part.is_empty())
        .collect();
    if parts.is_empty() {
        return None;
    }
    let more = parts.len().saturating_sub(3);
    let parts = &parts[..parts.len().min(3)];
    Some(if more > 0 { format!("{} (and {more} more)", parts.join("; ")) } else { parts.join("; ") })
}

/// A 429 that is Mistral running out of capacity for the model (its
/// "Service tier capacity exceeded"), not this key's limit.
fn is_capacity(lower_message: &str, error_type: &str) -> bool {
    error_type.contains("capacity")
        || lower_message.contains("capacity exceeded")
        || lower_message.contains("overloaded")
}

fn header_is_zero(head: &ResponseHead, name: &str) -> bool {
    head.header(name).and_then(|v| v.trim().parse::<f64>().ok()).is_some_and(|v| v <= 0.0)
}

/// Wait for a per-minute or per-second 429 without `retry-after`: the
/// `ratelimitbysize-reset` seconds when the token budget of the minute is
/// spent (or the error names tokens); otherwise the limit hit is the free
/// tier's one request per second, so one second.
fn minute_reset_ms(head: &ResponseHead, lower_message: &str) -> Option<u64> {
    let tokens_spent = header_is_zero(head, "x-ratelimitbysize-remaining-minute")
        || header_is_zero(head, "ratelimitbysize-remaining")
        || lower_message.contains("token");
    if tokens_spent {
        head.header("ratelimitbysize-reset").and_then(parse_reset_duration).map(clamp_retry_after_ms)
    } else {
        Some(clamp_retry_after_ms(1_000))
    }
}

/// The stream normalizer: forwards Mistral's chunks (already OpenAI-shaped),
/// repairing finish reasons and tool call types (see the crate docs), picks
/// up usage and finish reason, ends at `[DONE]`, skips malformed events and
/// fails the stream on an error object.
pub type MistralStream = RewritingStream<MistralChunks>;

/// Mistral's per-chunk repairs.
#[derive(Debug, Default)]
pub struct MistralChunks;

impl ChunkRewriter for MistralChunks {
    fn error(&self, chunk: &Map<String, Value>) -> Option<Failure> {
        error_object(chunk)
    }

    fn rewrite(&mut self, chunk: &mut Map<String, Value>, _out: &mut StreamOutput) -> bool {
        repair_choices(chunk, "delta")
    }

    /// Chunks read as maps: those that may hold what is repaired (a
    /// `model_length` finish, tool calls) or an error (an `"error"` string
    /// or member, or no `choices`), and any with a `\u` escape, which could
    /// spell one of these. The others are forwarded after a borrowed read.
    fn rewrites(&self, data: &str) -> bool {
        !openai_compat::contains(data, "\"choices\"")
            || openai_compat::may_name(data, &["model_length", "tool_calls", "\"error\""])
    }
}

freellm_sdk::export_adapter!(Mistral);

#[cfg(test)]
mod tests;
