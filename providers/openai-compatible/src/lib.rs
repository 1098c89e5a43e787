//! A generic adapter for any OpenAI-compatible chat endpoint, configured
//! entirely from `plugins.toml`. One component serves any number of provider
//! slots: each `[providers.<id>]` table that points at
//! `freellm_provider_openai_compatible.wasm` becomes its own provider,
//! with its own id, catalog, keys and limits.
//!
//! # Example
//!
//! ```toml
//! # OpenRouter's free models. Keys: OPENROUTER_API_KEY=k1,k2
//! [providers.openrouter]
//! component = "target/wasm32-wasip2/wasm/freellm_provider_openai_compatible.wasm"
//!
//! [providers.openrouter.settings]
//! display_name = "OpenRouter"
//! base_url = "https://openrouter.ai/api/v1"
//! key_env = "OPENROUTER_API_KEY"          # default: OPENROUTER_API_KEY (<ID>_API_KEY)
//! models = [
//!   "meta-llama/llama-3.3-70b-instruct:free|131072|smart+tools",
//!   "deepseek/deepseek-r1:free|163840|reasoning",
//!   "qwen/qwen-2.5-72b-instruct:free",     # context window unknown, no tags
//! ]
//! default_model = "meta-llama/llama-3.3-70b-instruct:free"
//! capabilities = ["tools", "json_mode", "stream_usage"]
//! privacy = "configurable"                 # training depends on the account's settings
//! privacy_source = "https://openrouter.ai/privacy"
//! privacy_verified = "2026-04-09"          # the day you read that page
//! rpm = 20                                 # example values: check the provider's
//! rpd = 50                                 # current free-tier limits
//! shared_per_project = true
//! extra_headers = "HTTP-Referer: https://example.com; X-Title: FreeLLM"
//!
//! # LM Studio on this machine: no key.
//! [providers.lmstudio]
//! component = "target/wasm32-wasip2/wasm/freellm_provider_openai_compatible.wasm"
//! # A keyless provider is enabled only when the host knows its base URL:
//! # here, or via LMSTUDIO_BASE_URL.
//! base_url = "http://localhost:1234/v1"
//!
//! [providers.lmstudio.settings]
//! display_name = "LM Studio"
//! base_url = "http://localhost:1234/v1"
//! auth = "none"
//! models = ["qwen2.5-7b-instruct|32768|fast+tools"]
//! capabilities = ["tools", "json_mode", "json_schema"]
//! privacy = "local"
//! drop_fields = ["logit_bias"]
//! ```
//!
//! # Settings
//!
//! Values are strings; the host writes TOML arrays as comma-joined strings
//! and numbers and booleans as text. A blank value counts as absent (the
//! default applies), except for `capabilities`, where it means none. Every invalid value, and every unknown key, makes
//! `configure` fail with a message naming the setting (unknown keys also
//! list the valid ones), so a typo never passes silently.
//!
//! | Setting | Default | Meaning |
//! |---|---|---|
//! | `id` | passed by the host | the provider slot's name (`[providers.<id>]`), lowercase `a-z 0-9 - _` |
//! | `display_name` | `id` | human name |
//! | `base_url` | **required** | `http://` or `https://` URL the paths are relative to; trailing `/` removed; no query or fragment. The table-level `base_url` and `<ID>_BASE_URL` still override it |
//! | `path` | `/chat/completions` | request path; starts with `/`, no `..`; may carry a query (`/chat/completions?api-version=1`) |
//! | `auth` | `bearer` | `bearer` (`Authorization: Bearer <key>`), `none`, `header:<Name>` (the bare key in that header), `query:<name>` (the key as a query parameter) |
//! | `key_env` | `<ID>_API_KEY` (`-` → `_`), none with `auth = none` | environment variable holding the comma-separated keys; an error with `auth = none` |
//! | `models` | **required** | comma list of `name`, `name\|context_window` or `name\|context_window\|tags`; tags joined by `+` from `fast`, `smart`, `reasoning`, `vision`, `tools`; an empty context window means unknown (0); names may contain `/` and `:`; no repeats |
//! | `default_model` | the first model | must be one of `models` |
//! | `capabilities` | `tools,json_mode,stream_usage` | comma list from `tools`, `json_mode`, `json_schema`, `vision`, `stream_usage`, `reasoning`, `assistant_prefill`; `none` or an empty list (`[]`) for none |
//! | `privacy` | `configurable` | `no-training`, `configurable`, `free-tier-trains` or `local` |
//! | `privacy_source` | `base_url` | http(s) URL of the page stating the policy |
//! | `privacy_verified` | `unverified` | `YYYY-MM-DD` the page was last read |
//! | `privacy_note` | depends on `privacy` | one sentence for operators |
//! | `rpm`, `rpd`, `tpm`, `tpd` | none (unlimited) | free-tier requests/tokens per minute/day per key, positive whole numbers |
//! | `shared_per_project` | `false` | `true` when all keys of one account share the quota |
//! | `drop_fields` | none | comma list of top-level request fields removed before sending (not `model`, `messages`, `stream`) |
//! | `extra_headers` | none | `Name: value; Name2: value` (or a TOML array of `Name: value` strings), sent with every request; printable ASCII values, no line breaks; not `authorization`, `host`, `content-length`, `content-type`, hop-by-hop or other credential headers (use `auth`) |
//!
//! **Privacy default.** A provider whose policy the operator did not state
//! is described as `configurable` ("prompts may be used for training"), so
//! it never passes a no-training filter by accident. Only an explicit
//! `privacy = "no-training"` (or `local`) claims otherwise; the adapter
//! cannot check the claim, so give `privacy_source` and `privacy_verified`.
//!
//! # Behaviour
//!
//! * Requests: `POST <base_url><path>` with the client's body (model
//!   replaced by the upstream id, `stream` set by the host, `drop_fields`
//!   removed), `content-type: application/json` and the `extra_headers`.
//!   A request the provider cannot serve is refused as `unsupported` (the
//!   router tries another provider): `tools` (or legacy `functions`) without
//!   the `tools` capability, `response_format` `json_schema` without
//!   `json_schema`, `json_object` without `json_mode`, image parts without
//!   `vision`. Other fields are passed on as the client sent them: list
//!   the ones a provider rejects in `drop_fields` (e.g. `stream_options`
//!   for a provider without `stream_usage` that refuses it).
//! * Answers and streams: the SDK's OpenAI-compatible defaults
//!   ([`openai_compat::normalize_response`], [`freellm_sdk::PassthroughStream`]).
//! * Failures: [`openai_compat::classify_failure`]; a 429 without
//!   `retry-after` takes its retry hint from `x-ratelimit-reset-requests` /
//!   `x-ratelimit-reset-tokens` (Go-style durations such as `2m59.56s`).

#![warn(missing_docs)]

mod settings;

pub use settings::{
    CAPABILITY_NAMES, DEFAULT_CAPABILITIES, DEFAULT_PATH, KEYS, RequestConfig, TAG_NAMES, UNVERIFIED, describe,
    describe_with_request,
};

use std::cell::RefCell;
use std::rc::Rc;

use freellm_sdk::openai_compat;
use freellm_sdk::retry::{clamp_retry_after_ms, parse_reset_duration};
use freellm_sdk::{
    Adapter, AdapterInfo, CallContext, Capabilities, Failure, FailureKind, ForwardRequest, RawObject, ResponseHead,
    Settings, UpstreamRequest,
};
use serde_json::Value;

/// The generic OpenAI-compatible adapter.
pub struct OpenAiCompatible;

thread_local! {
    /// What this instance's settings say of requests, parsed once when the
    /// host configures the instance (contract 0.3: before its first call).
    static CONFIG: RefCell<Option<Rc<RequestConfig>>> = const { RefCell::new(None) };
}

impl Adapter for OpenAiCompatible {
    fn configure(settings: &Settings) -> Result<AdapterInfo, String> {
        let (info, config) = describe_with_request(settings)?;
        CONFIG.with(|cell| *cell.borrow_mut() = Some(Rc::new(config)));
        Ok(info)
    }

    /// Forwards the body as the client wrote it (a large prompt is not
    /// parsed whole), without the fields the settings drop.
    fn map_request_body(ctx: &CallContext, body: &[u8]) -> Result<UpstreamRequest, Failure> {
        // The host configures every instance before its first call; an
        // instance without its settings is the host's fault, which no other
        // provider would fix either.
        let config = CONFIG
            .with(|cell| cell.borrow().clone())
            .ok_or_else(|| Failure::transient("adapter misconfigured: the instance was not configured"))?;
        let drop: Vec<&str> = config.drop_fields.iter().map(String::as_str).collect();
        let mut up =
            openai_compat::forward_request_to(ctx, body, &config.path, &drop, |req| check_capabilities(&config, req))?;
        up.headers.extend(config.extra_headers.iter().cloned());
        Ok(up)
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        let mut failure = openai_compat::classify_failure(ctx, head, body);
        let limited = matches!(failure.kind, FailureKind::RateLimited | FailureKind::QuotaExhausted);
        if limited && failure.retry_after_ms.is_none() {
            failure.retry_after_ms = reset_after_ms(head);
        }
        failure
    }
}

/// Refuses (as `unsupported`) a request needing a capability the settings
/// do not grant.
fn check_capabilities(config: &RequestConfig, req: &ForwardRequest<'_>) -> Result<(), Failure> {
    let lacks = |flag: Capabilities| !config.capabilities.contains(flag);
    let refuse = |what: &str, capability: &str| {
        Err(Failure::unsupported(format!(
            "{} does not support {what} (capability `{capability}` is not in its settings)",
            config.id
        )))
    };
    if lacks(Capabilities::TOOLS) && (req.fields.is_set("tools") || req.fields.is_set("functions")) {
        return refuse("tools", "tools");
    }
    let format = req.fields.get::<Value>("response_format").ok().flatten();
    match format.as_ref().and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_schema") if lacks(Capabilities::JSON_SCHEMA) => {
            return refuse("response_format json_schema", "json_schema");
        }
        Some("json_object") if lacks(Capabilities::JSON_MODE) => {
            return refuse("response_format json_object", "json_mode");
        }
        _ => {}
    }
    if lacks(Capabilities::VISION) && has_image(&req.messages) {
        return refuse("image input", "vision");
    }
    Ok(())
}

/// Whether a message carries an image content part (only content given
/// as a list of parts is read).
fn has_image(messages: &[RawObject<'_>]) -> bool {
    messages.iter().any(|message| {
        let parts = message.raw("content").filter(|raw| raw.get().starts_with('['));
        parts.and_then(|raw| serde_json::from_str::<Vec<Value>>(raw.get()).ok()).is_some_and(|parts| {
            parts.iter().any(|part| {
                matches!(part.get("type").and_then(Value::as_str), Some("image_url" | "input_image" | "image"))
            })
        })
    })
}

/// The later of `x-ratelimit-reset-requests` and `x-ratelimit-reset-tokens`
/// (Go-style durations such as `2m59.56s`), clamped like a `retry-after`;
/// `None` when neither parses. (Same as the Groq adapter's helper; the SDK
/// has no shared one yet.)
pub fn reset_after_ms(head: &ResponseHead) -> Option<u64> {
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|name| parse_reset_duration(head.header(name)?))
        .max()
        .map(clamp_retry_after_ms)
}

freellm_sdk::export_adapter!(OpenAiCompatible);

#[cfg(test)]
mod tests;
