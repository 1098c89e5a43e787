//! A test adapter that targets the frozen `freellm:provider@0.1.0`
//! contract (`wit/0.1.0`), written against wit-bindgen directly as a 0.1
//! adapter was before the SDK moved to 0.2. It speaks OpenAI's chat API to
//! an upstream given by the `base_url` setting, with no key. The end-to-end
//! tests load it beside 0.2 components to show that 0.1 components keep
//! loading and serving. Its OpenAI-shaped logic is in `openai.rs`, which the
//! 0.2 test adapter includes too. Never deploy it.

#![warn(missing_docs)]

use serde_json::{Value, json};

/// Bindings of the 0.1.0 world.
#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/0.1.0", world: "provider" });
}

use bindings::exports::freellm::provider::adapter::{Guest, GuestStreamNormalizer};
use bindings::freellm::provider::types::{
    AdapterInfo, AuthPlacement, CallContext, Capabilities, Failure, FailureKind, FinishReason, HttpMethod, ModelInfo,
    ModelTags, NormalizedResponse, PrivacyInfo, PrivacyPolicy, RateLimits, ResponseHead, Settings, StreamEvent,
    StreamFraming, StreamOutput, UpstreamRequest, Usage,
};

/// The 0.1 test adapter.
pub struct LegacyAdapter;

/// The one model it offers.
const MODEL: &str = "legacy-model";

include!("openai.rs");

impl Guest for LegacyAdapter {
    type StreamNormalizer = LegacyStream;

    fn configure(settings: Settings) -> Result<AdapterInfo, String> {
        let id = settings.iter().rev().find(|(k, _)| k == "id").map_or("legacy", |(_, v)| v.as_str());
        Ok(AdapterInfo {
            id: id.to_owned(),
            display_name: "Legacy 0.1 test adapter".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "http://127.0.0.1:9/v1".into(),
            key_env: None,
            auth: AuthPlacement::None,
            stream_framing: StreamFraming::Sse,
            capabilities: Capabilities::empty(),
            models: vec![ModelInfo { id: MODEL.into(), context_window: 8192, tags: ModelTags::FAST }],
            default_model: MODEL.into(),
            privacy: test_privacy("https://example.com/freellm-legacy-test-component"),
            limits: no_limits(),
        })
    }

    fn map_request(ctx: CallContext, body: Vec<u8>) -> Result<UpstreamRequest, Failure> {
        map_openai(ctx, body)
    }

    fn normalize_response(
        _ctx: CallContext,
        _head: ResponseHead,
        body: Vec<u8>,
    ) -> Result<NormalizedResponse, Failure> {
        normalize_openai(body)
    }

    fn classify_failure(_ctx: CallContext, head: ResponseHead, body: Vec<u8>) -> Failure {
        classify_openai(head, body)
    }
}

/// Forwards OpenAI chunks as they are.
pub struct LegacyStream;

impl GuestStreamNormalizer for LegacyStream {
    fn new(_ctx: CallContext, _head: ResponseHead) -> Self {
        Self
    }

    fn push(&self, events: Vec<StreamEvent>) -> Result<StreamOutput, Failure> {
        push_openai(events)
    }

    fn finish(&self) -> Result<StreamOutput, Failure> {
        Ok(no_output())
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(LegacyAdapter with_types_in bindings);
