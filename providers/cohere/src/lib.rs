//! The Cohere adapter: Cohere's own Chat API v2 (`POST /v2/chat`), not an
//! OpenAI-compatible endpoint, written with the SDK's helpers for other API
//! shapes.
//!
//! * [`request`]: the OpenAI body rebuilt as Cohere's (`p` for `top_p`,
//!   `stop_sequences`, `tool_choice` `REQUIRED`/`NONE`, one leading system
//!   message, `response_format` with a `json_schema`);
//! * [`answer`]: Cohere's answer (content blocks, `finish_reason` in
//!   capitals, `usage.tokens` / `usage.billed_units`) as an OpenAI
//!   `chat.completion`, and Cohere's error bodies (`{"message": ...}`,
//!   trial-key limits per minute and per month, status 498 for a bad key);
//! * [`stream`]: the named events (`message-start`, `content-delta`,
//!   `tool-call-start` / `-delta`, `message-end`) as OpenAI chunks.
//!
//! Quirks and limits are in `docs/adapters.md` (section "Cohere").

#![warn(missing_docs)]

pub mod answer;
pub mod request;
pub mod stream;

use freellm_sdk::named_events::NamedEventStream;
use freellm_sdk::{
    Adapter, AdapterInfo, CallContext, Capabilities, ChatRequest, ChunkBuilder, Failure, ModelInfo, ModelTags,
    NormalizedResponse, PrivacyInfo, PrivacyPolicy, RateLimits, ResponseHead, Settings, StreamNormalizer,
    UpstreamRequest, WireFormat,
};

/// Model used when a meta-model picks Cohere.
pub const DEFAULT_MODEL: &str = "command-a-03-2025";

/// Chat requests per minute a trial key may make (Cohere's rate-limit page,
/// every Command model). The 1,000 calls a month of a trial key, over a
/// rolling 30 days, has no field in the contract: a 429 naming the month is
/// classified `quota-exhausted` instead.
pub const TRIAL_RPM: u32 = 20;

/// The Cohere adapter.
pub struct Cohere;

impl Adapter for Cohere {
    fn configure(_settings: &Settings) -> Result<AdapterInfo, String> {
        let (fast, smart, tools) = (ModelTags::FAST, ModelTags::SMART, ModelTags::TOOLS);
        AdapterInfo::builder("cohere", "Cohere")
            .version(env!("CARGO_PKG_VERSION"))
            .base_url("https://api.cohere.com")
            .bearer_key("COHERE_API_KEY")
            .wire_format(WireFormat::Other("cohere-chat-v2".into()))
            .capabilities(
                Capabilities::TOOLS | Capabilities::JSON_MODE | Capabilities::JSON_SCHEMA | Capabilities::STREAM_USAGE,
            )
            .models([
                ModelInfo::new(DEFAULT_MODEL, 256_000, smart | tools),
                ModelInfo::new("command-r7b-12-2024", 128_000, fast | tools),
                ModelInfo::new("command-r-plus-08-2024", 128_000, smart | tools),
                ModelInfo::new("command-r-08-2024", 128_000, fast | tools),
            ])
            .privacy(PrivacyInfo::new(
                PrivacyPolicy::FreeTierTrains,
                "https://cohere.com/data-usage-policy",
                "2026-12-03",
                "Prompts and generations may be used for training by default; an organisation admin can opt \
                 out in the dashboard's data controls, but the policy's opt-out commitment names commercial API \
                 customers and excludes free services, so trial keys are treated as training.",
            ))
            .limits(RateLimits::default().rpm(TRIAL_RPM).shared_per_project())
            .build()
    }

    fn map_request(ctx: &CallContext, req: ChatRequest) -> Result<UpstreamRequest, Failure> {
        request::map(ctx, req)
    }

    fn normalize_response(ctx: &CallContext, _head: &ResponseHead, body: &[u8]) -> Result<NormalizedResponse, Failure> {
        answer::normalize(ctx, body)
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        answer::classify(ctx, head, body)
    }

    fn stream_normalizer(ctx: &CallContext, _head: &ResponseHead) -> Box<dyn StreamNormalizer> {
        Box::new(NamedEventStream::new(stream::Events::default(), ChunkBuilder::new("", ctx.upstream_model.clone())))
    }
}

freellm_sdk::export_adapter!(Cohere);

#[cfg(test)]
mod tests;
