//! `freellm-sdk`: everything a FreeLLM provider adapter is written with.
//!
//! An adapter is a WebAssembly component (built for `wasm32-wasip2`) that
//! implements the `freellm:provider@0.3.0` contract in `wit/0.3.0/provider.wit`
//! (the host still loads components built against 0.1.0 and 0.2.0).
//! This crate hides the component plumbing behind a plain Rust trait:
//!
//! * [`Adapter`]: one required function ([`Adapter::configure`], which
//!   describes the provider) and defaults for everything else that suit any
//!   OpenAI-compatible provider (see [`openai_compat`]);
//! * [`StreamNormalizer`]: per-stream state for providers whose streams need
//!   rewriting (the default, [`openai_compat::PassthroughStream`], forwards
//!   OpenAI chunks unchanged);
//! * [`export_adapter!`]: registers the adapter as the component's export;
//! * [`ChatRequest`], [`ChatCompletion`], [`ChatCompletionChunk`]: serde
//!   types for OpenAI chat bodies that keep every unknown field;
//! * the contract's types under short paths ([`AdapterInfo`], [`Failure`],
//!   ...), a few helpers on them, and [`log`].
//!
//! For a provider whose API is not OpenAI-shaped, the SDK has the parts an
//! author would otherwise write by hand:
//!
//! * [`named_events`]: a [`StreamNormalizer`] for streams of named events
//!   (dispatch on the SSE `event:` field or a `type` field, keep-alives
//!   skipped, error events turned into failures, a terminal event ends the
//!   stream); the adapter writes only what each event means;
//! * [`answer`]: [`ChunkBuilder`] (OpenAI chunks with the id and model kept
//!   across chunks, the role sent once, the finish chunk and the final
//!   usage chunk) and [`answer::completion`] for a whole answer;
//! * [`messages`]: the text of a message (a string or content parts), the
//!   system and developer messages taken out, consecutive turns of one role
//!   merged, tool and image parts detected;
//! * [`params`]: `max_completion_tokens` / `max_tokens` and `stop` (a
//!   string or a list) read into one value each;
//! * [`openai_compat`]: finish-reason and usage mapping both ways
//!   ([`openai_compat::finish_reason_from_str`],
//!   [`openai_compat::finish_reason_to_str`],
//!   [`openai_compat::usage_from_counts`], [`openai_compat::usage_to_json`])
//!   and [`openai_compat::UpstreamError`] for error bodies;
//! * [`retry`]: `Retry-After`, reset durations (`1m30s`, `6s`, `250ms`) and
//!   RFC 3339 reset timestamps ([`retry::parse_reset`]);
//! * [`info`]: [`AdapterInfo::builder`], `RateLimits::default().rpm(20)`,
//!   [`PrivacyInfo::new`];
//! * [`settings`]: [`settings::SettingsReader`], typed settings (string,
//!   number, boolean, URL, list, choice) with errors naming the setting and
//!   a "did you mean" for unknown ones, and the settings the instance was
//!   configured with ([`settings::instance`]; calls no longer carry them);
//! * [`splice`]: how a forwarded request names the unchanged parts of the
//!   client's body instead of copying them (contract 0.3);
//! * `fixtures` (cargo feature `fixtures`, for `[dev-dependencies]`): the
//!   golden fixtures and conformance cases run natively in unit tests.
//!
//! An OpenAI-compatible adapter is its data plus a few lines:
//!
//! ```
//! use freellm_sdk::*;
//!
//! /// The Example provider.
//! pub struct Example;
//!
//! impl Adapter for Example {
//!     fn configure(_settings: &Settings) -> Result<AdapterInfo, String> {
//!         Ok(AdapterInfo {
//!             id: "example".into(),
//!             display_name: "Example".into(),
//!             adapter_version: env!("CARGO_PKG_VERSION").into(),
//!             default_base_url: "https://api.example.com/v1".into(),
//!             key_env: Some("EXAMPLE_API_KEY".into()),
//!             auth: AuthPlacement::Bearer,
//!             stream_framing: StreamFraming::Sse,
//!             wire_format: WireFormat::OpenaiChat,
//!             capabilities: Capabilities::TOOLS | Capabilities::JSON_MODE,
//!             models: vec![ModelInfo::new("example-large", 32_768, ModelTags::SMART)],
//!             default_model: "example-large".into(),
//!             privacy: PrivacyInfo {
//!                 policy: PrivacyPolicy::NoTraining,
//!                 source_url: "https://example.com/terms".into(),
//!                 last_verified: "2026-04-09".into(),
//!                 note: "Prompts are not used for training.".into(),
//!             },
//!             limits: RateLimits {
//!                 requests_per_minute: Some(60),
//!                 requests_per_day: None,
//!                 tokens_per_minute: None,
//!                 tokens_per_day: None,
//!                 shared_per_project: false,
//!             },
//!         })
//!     }
//! }
//!
//! freellm_sdk::export_adapter!(Example);
//! # assert_eq!(Example::configure(&Vec::new()).unwrap().id, "example");
//! ```
//!
//! Override a default to adapt a provider, e.g. drop fields it rejects:
//! `fn map_request(ctx: &CallContext, req: ChatRequest) -> ... {
//! openai_compat::map_request(ctx, req, &["logit_bias"]) }`.
//!
//! Adapter crates compile natively too (the export itself is only emitted
//! for `wasm32`), so their unit tests run with a plain `cargo test`.

#![warn(missing_docs)]

pub mod answer;
pub mod chat;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod forward;
pub mod info;
pub mod messages;
pub mod named_events;
pub mod openai_compat;
pub mod params;
pub mod retry;
pub mod settings;
pub mod splice;

mod glue;

/// What the SDK's own tests share.
#[cfg(test)]
pub(crate) mod test_random {
    /// A fixed-seed xorshift: each call gives a number below its argument
    /// (the same sequence every run, so a failure can be replayed).
    pub(crate) fn below(seed: u64) -> impl FnMut(usize) -> usize {
        let mut state = seed;
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        }
    }
}

pub use answer::ChunkBuilder;
pub use chat::{ChatCompletion, ChatCompletionChunk, ChatRequest};
pub use forward::{ForwardRequest, RawObject};
pub use info::AdapterInfoBuilder;
pub use named_events::{EventHandler, NamedEvent, NamedEventStream};
pub use openai_compat::{ChunkRewriter, PassthroughStream, RewritingStream};

/// Bindings generated by `wit-bindgen` from `wit/0.3.0/provider.wit`.
///
/// Adapter authors rarely need this module: the types they use are
/// re-exported at the crate root, and [`export_adapter!`] does the export.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/0.3.0",
        world: "provider",
        pub_export_macro: true,
        default_bindings_module: "freellm_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::freellm::provider::host::LogLevel;
pub use bindings::freellm::provider::types::{
    AdapterInfo, AuthPlacement, BodyPiece, CallContext, Capabilities, Failure, FailureKind, FinishReason, FixtureFile,
    Headers, HttpMethod, ModelInfo, ModelTags, NormalizedResponse, PieceSource, PrivacyInfo, PrivacyPolicy, RateLimits,
    RequestBody, ResponseHead, Settings, SplicedBody, StreamEvent, StreamFraming, StreamOutput, UpstreamRequest, Usage,
    WireFormat,
};

/// A provider adapter, written as plain Rust.
///
/// Only [`configure`](Adapter::configure) is required; every other function
/// defaults to the behaviour of an OpenAI-compatible provider
/// ([`openai_compat`]). Register the implementation with
/// [`export_adapter!`]. All functions are associated functions: an adapter
/// keeps no state between calls, only a [`StreamNormalizer`] lives for one
/// stream. The host may run many calls in one warm instance or each in a
/// fresh one, so globals may hold what an earlier call (perhaps another
/// client's) left there: never keep request data in them.
pub trait Adapter: 'static {
    /// Applies the operator's settings and describes the provider. An error
    /// keeps the adapter from going live; the message is shown to the
    /// operator. The host calls it at load and then on every new instance
    /// before its first call, with the same settings: what an adapter makes
    /// of them (parsed once) may be kept in a `thread_local!` for the
    /// instance's calls; [`settings::instance`] has them as given.
    fn configure(settings: &Settings) -> Result<AdapterInfo, String>;

    /// Maps an OpenAI chat request to the provider's HTTP request.
    ///
    /// Default: [`openai_compat::map_request`] with no dropped fields
    /// (`POST /chat/completions`, JSON body, `model` replaced by the upstream
    /// model id).
    fn map_request(ctx: &CallContext, req: ChatRequest) -> Result<UpstreamRequest, Failure> {
        openai_compat::map_request(ctx, req, &[])
    }

    /// Maps the request body's bytes; this is what the host calls.
    ///
    /// Default: the body parsed into a [`ChatRequest`] (a `request-invalid`
    /// failure when it is not one), then [`map_request`](Adapter::map_request).
    /// An adapter that forwards most of the body untouched overrides this
    /// instead, with [`openai_compat::forward_request`]: a large prompt then
    /// costs one pass over its bytes, not a parse into a tree and a
    /// re-encode. (Its [`map_request`](Adapter::map_request) is then not
    /// called.)
    fn map_request_body(ctx: &CallContext, body: &[u8]) -> Result<UpstreamRequest, Failure> {
        let req = ChatRequest::from_slice(body).map_err(openai_compat::invalid_body)?;
        Self::map_request(ctx, req)
    }

    /// Turns a 2xx upstream answer into an OpenAI `chat.completion`.
    ///
    /// Default: [`openai_compat::normalize_response`] (validates the body and
    /// returns it unchanged, with usage and finish reason).
    fn normalize_response(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Result<NormalizedResponse, Failure> {
        openai_compat::normalize_response(ctx, head, body)
    }

    /// Classifies a non-2xx upstream answer.
    ///
    /// Default: [`openai_compat::classify_failure`].
    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        openai_compat::classify_failure(ctx, head, body)
    }

    /// Creates the state for one streaming answer (called after a 2xx head).
    ///
    /// Default: [`PassthroughStream`], which forwards OpenAI chunks as they
    /// are.
    fn stream_normalizer(ctx: &CallContext, head: &ResponseHead) -> Box<dyn StreamNormalizer> {
        let _ = (ctx, head);
        Box::new(PassthroughStream::default())
    }

    /// The golden fixtures this component carries; the gateway runs them
    /// in its load-time self-check, so a version that breaks them never
    /// goes live. Embed files with [`embed_fixtures!`].
    ///
    /// Default: none.
    fn embedded_fixtures() -> Vec<FixtureFile> {
        Vec::new()
    }
}

/// Embeds fixture files (paths relative to the adapter crate's root) for
/// [`Adapter::embedded_fixtures`]; each is named by its file stem:
/// `fn embedded_fixtures() -> Vec<FixtureFile> {
/// freellm_sdk::embed_fixtures!["fixtures/classify-401.json", "fixtures/respond-text.json"] }`.
#[macro_export]
macro_rules! embed_fixtures {
    ($($path:literal),* $(,)?) => {
        vec![$($crate::FixtureFile {
            name: $crate::fixture_name($path),
            json: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $path)).to_owned(),
        }),*]
    };
}

/// The name of a fixture file: its stem (`fixtures/a-b.json` → `a-b`).
#[doc(hidden)]
pub fn fixture_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".json").unwrap_or(file).to_owned()
}

/// Per-stream state that turns upstream events into OpenAI
/// `chat.completion.chunk` objects.
pub trait StreamNormalizer {
    /// Normalizes a batch of complete events, in order.
    fn push(&mut self, events: Vec<StreamEvent>) -> Result<StreamOutput, Failure>;

    /// The upstream ended: flushes anything held back.
    fn finish(&mut self) -> Result<StreamOutput, Failure>;
}

/// Registers `$adapter` (a type implementing [`Adapter`]) as this
/// component's implementation of the `adapter` interface.
///
/// Use it once, at the root of an adapter crate:
/// `freellm_sdk::export_adapter!(MyAdapter);`. The component export is only
/// emitted when compiling for `wasm32`; natively the macro expands to
/// nothing that links, so the crate's unit tests run on the host.
#[macro_export]
macro_rules! export_adapter {
    ($adapter:ty) => {
        const _: () = {
            #[allow(dead_code)]
            type __FreellmAdapterExport = $crate::__private::Guest<$adapter>;
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::export!(__FreellmAdapterExport with_types_in $crate::bindings);
        };
    };
}

/// Implementation details of [`export_adapter!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::glue::{Guest, Stream};
}

/// Writes a line to the gateway's log (tagged with the adapter id by the
/// host, which also bounds size and rate). A no-op outside WebAssembly, so
/// native unit tests can run code that logs.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::freellm::provider::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// The value of `key` in `settings` (the last one wins if a key repeats).
pub fn setting<'a>(settings: &'a Settings, key: &str) -> Option<&'a str> {
    settings.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The value of header `name` (compared case-insensitively), the first one
/// if it repeats.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

impl ResponseHead {
    /// The value of response header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl ModelInfo {
    /// A catalog entry: upstream id (without the provider prefix), context
    /// window in tokens (0 when unknown) and tags.
    pub fn new(id: impl Into<String>, context_window: u32, tags: ModelTags) -> Self {
        Self { id: id.into(), context_window, tags, limits: None }
    }

    /// The same entry with its own free-tier limits (used instead of the
    /// adapter-wide ones for this model).
    pub fn with_limits(mut self, limits: RateLimits) -> Self {
        self.limits = Some(limits);
        self
    }
}

impl Failure {
    /// A failure of `kind` with `message`, no retry hint and no upstream code.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), retry_after_ms: None, upstream_code: None }
    }

    /// A `request-invalid` failure: the request itself is wrong.
    pub fn request_invalid(message: impl Into<String>) -> Self {
        Self::new(FailureKind::RequestInvalid, message)
    }

    /// An `unsupported` failure: this provider cannot serve the request, the
    /// router tries another one.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Unsupported, message)
    }

    /// A `transient` failure: the provider misbehaved, try elsewhere.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Transient, message)
    }
}

impl StreamOutput {
    /// An output with no chunks, no usage, no finish reason, not done.
    pub fn empty() -> Self {
        Self { chunks: Vec::new(), usage: None, finish_reason: None, done: false }
    }
}

impl Default for StreamOutput {
    fn default() -> Self {
        Self::empty()
    }
}
