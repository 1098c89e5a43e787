//! A test adapter for the gateway's hot-swap tests. It is an
//! OpenAI-compatible adapter (id `swap`) whose answers say which build
//! variant produced them: every normalized answer and stream chunk gets
//! `"x_adapter_variant": "<variant>"`. Variants are cargo features: `v1`
//! (default), `v2`, `broken` (misclassifies failures, so it fails the
//! conformance self-check) and `flaky` (fails to normalize about half of the
//! answers, chosen by request id). Never deploy it.

#![warn(missing_docs)]

use freellm_sdk::openai_compat;
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, ChunkRewriter, Failure, FailureKind, ModelInfo,
    ModelTags, NormalizedResponse, PrivacyInfo, PrivacyPolicy, RateLimits, ResponseHead, RewritingStream, Settings,
    StreamFraming, StreamNormalizer, StreamOutput, WireFormat,
};
use serde_json::{Map, Value};

/// The build variant.
pub const VARIANT: &str = if cfg!(feature = "broken") {
    "broken"
} else if cfg!(feature = "flaky") {
    "flaky"
} else if cfg!(feature = "v2") {
    "v2"
} else {
    "v1"
};

/// The swap-test adapter.
pub struct SwapTest;

fn tag(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    value.as_object_mut()?.insert("x_adapter_variant".into(), Value::String(VARIANT.into()));
    serde_json::to_vec(&value).ok()
}

impl Adapter for SwapTest {
    fn configure(_settings: &Settings) -> Result<AdapterInfo, String> {
        Ok(AdapterInfo {
            id: "swap".into(),
            display_name: format!("Swap test ({VARIANT})"),
            adapter_version: format!("{}-{VARIANT}", env!("CARGO_PKG_VERSION")),
            default_base_url: "http://127.0.0.1:9/v1".into(),
            key_env: None,
            auth: AuthPlacement::None,
            stream_framing: StreamFraming::Sse,
            wire_format: WireFormat::OpenaiChat,
            capabilities: Capabilities::TOOLS | Capabilities::ASSISTANT_PREFILL,
            models: vec![ModelInfo::new("m", 0, ModelTags::FAST)],
            default_model: "m".into(),
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::Local,
                source_url: "https://example.com/freellm-swap-test-component".into(),
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

    fn normalize_response(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Result<NormalizedResponse, Failure> {
        if cfg!(feature = "flaky") && ctx.request_id.bytes().last().is_some_and(|b| b % 2 == 0) {
            return Err(Failure::transient("flaky variant failed on purpose"));
        }
        let mut out = openai_compat::normalize_response(ctx, head, body)?;
        if let Some(tagged) = tag(&out.body) {
            out.body = tagged;
        }
        Ok(out)
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        let failure = openai_compat::classify_failure(ctx, head, body);
        if cfg!(feature = "broken") { Failure { kind: FailureKind::Transient, ..failure } } else { failure }
    }

    fn stream_normalizer(_ctx: &CallContext, _head: &ResponseHead) -> Box<dyn StreamNormalizer> {
        Box::new(RewritingStream::new(Tag))
    }
}

/// Tags every chunk with the variant.
#[derive(Debug, Default)]
struct Tag;

impl ChunkRewriter for Tag {
    fn rewrite(&mut self, chunk: &mut Map<String, Value>, _out: &mut StreamOutput) -> bool {
        chunk.insert("x_adapter_variant".into(), Value::String(VARIANT.into()));
        true
    }
}

freellm_sdk::export_adapter!(SwapTest);
