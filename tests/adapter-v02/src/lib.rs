//! A test adapter that targets the frozen `freellm:provider@0.2.0`
//! contract (`wit/0.2.0`), written against wit-bindgen directly as a 0.2
//! adapter was before the SDK moved to 0.3 (its request body is always
//! whole). It speaks OpenAI's chat API to an upstream given by the
//! `base_url` setting, with no key, and sends its `tag` setting upstream as
//! `x-v02-tag` (read from the call context, where 0.2 carries settings).
//! The end-to-end tests load it beside 0.1 and 0.3 components to show that
//! 0.2 components keep loading and serving.
//! Never deploy it.

#![warn(missing_docs)]

use serde_json::{Value, json};

/// Bindings of the 0.2.0 world.
#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/0.2.0", world: "provider" });
}

use bindings::exports::freellm::provider::adapter::{Guest, GuestStreamNormalizer};
use bindings::freellm::provider::types::{
    AdapterInfo, AuthPlacement, CallContext, Capabilities, Failure, FailureKind, FinishReason, FixtureFile, HttpMethod,
    ModelInfo, ModelTags, NormalizedResponse, PrivacyInfo, PrivacyPolicy, RateLimits, ResponseHead, Settings,
    StreamEvent, StreamFraming, StreamOutput, UpstreamRequest, Usage, WireFormat,
};

/// The 0.2 test adapter.
pub struct V02Adapter;

/// The one model it offers.
const MODEL: &str = "v02-model";

include!("../../adapter-v01/src/openai.rs");

impl Guest for V02Adapter {
    type StreamNormalizer = V02Stream;

    fn configure(settings: Settings) -> Result<AdapterInfo, String> {
        let id = settings.iter().rev().find(|(k, _)| k == "id").map_or("v02", |(_, v)| v.as_str());
        Ok(AdapterInfo {
            id: id.to_owned(),
            display_name: "0.2 test adapter".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "http://127.0.0.1:9/v1".into(),
            key_env: None,
            auth: AuthPlacement::None,
            stream_framing: StreamFraming::Sse,
            wire_format: WireFormat::OpenaiChat,
            capabilities: Capabilities::empty(),
            models: vec![ModelInfo { id: MODEL.into(), context_window: 8192, tags: ModelTags::FAST, limits: None }],
            default_model: MODEL.into(),
            privacy: test_privacy("https://example.com/freellm-v02-test-component"),
            limits: no_limits(),
        })
    }

    /// As the 0.2 contract has it, the call context carries the slot's
    /// settings: a `tag` setting is sent upstream as `x-v02-tag`.
    fn map_request(ctx: CallContext, body: Vec<u8>) -> Result<UpstreamRequest, Failure> {
        let tag = ctx.settings.iter().rev().find(|(k, _)| k == "tag").map(|(_, v)| v.clone());
        let mut up = map_openai(ctx, body)?;
        up.headers.extend(tag.map(|tag| ("x-v02-tag".to_owned(), tag)));
        Ok(up)
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

    fn embedded_fixtures() -> Vec<FixtureFile> {
        Vec::new()
    }
}

/// Forwards OpenAI chunks as they are.
pub struct V02Stream;

impl GuestStreamNormalizer for V02Stream {
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
bindings::export!(V02Adapter with_types_in bindings);
