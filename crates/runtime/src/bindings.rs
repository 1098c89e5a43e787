//! Host bindings of every supported contract version, and the one place
//! where older versions meet the host's types.
//!
//! Each released version of `freellm:provider` lives frozen in its own WIT
//! folder (`wit/0.1.0`, `wit/0.2.0`, `wit/0.3.0`) and gets its own bindings
//! module here ([`v0_1`], [`v0_2`], [`v0_3`]). The host works in the newest
//! version's types ([`types`]); [`Bindings`] is an instantiated component of
//! any of them and converts an older version's values on the way in and
//! out, so nothing else in the host knows that more than one version exists.
//!
//! Exports are called through wasmtime's async API: wasmtime-wasi's sync
//! bindings block on an internal runtime and must not run inside tokio tasks.

use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceAny};

/// `freellm:provider@0.1.0`: the first release (OpenAI-shaped adapters).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "provider",
        path: "../../wit/0.1.0",
        exports: { default: async },
    });
}

/// `freellm:provider@0.2.0`: wire-format declaration, per-model limits,
/// embedded fixtures.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "provider",
        path: "../../wit/0.2.0",
        exports: { default: async },
    });
}

/// `freellm:provider@0.3.0`: spliced request bodies. The host's own types
/// are this version's.
pub mod v0_3 {
    wasmtime::component::bindgen!({
        world: "provider",
        path: "../../wit/0.3.0",
        exports: { default: async },
    });
}

pub use self::v0_3::exports::freellm::provider::adapter as guest;
pub use self::v0_3::freellm::provider::types;

use self::types::{
    AdapterInfo, CallContext, Failure, FixtureFile, NormalizedResponse, ResponseHead, StreamEvent, StreamOutput,
    UpstreamRequest, WireFormat,
};

/// A contract version the host can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContractVersion {
    /// `freellm:provider@0.1.0`.
    V0_1,
    /// `freellm:provider@0.2.0`.
    V0_2,
    /// `freellm:provider@0.3.0`.
    V0_3,
}

impl ContractVersion {
    /// The package name and version, e.g. `freellm:provider@0.2.0`.
    pub fn package(self) -> &'static str {
        match self {
            Self::V0_1 => "freellm:provider@0.1.0",
            Self::V0_2 => "freellm:provider@0.2.0",
            Self::V0_3 => "freellm:provider@0.3.0",
        }
    }
}

impl std::fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.package())
    }
}

/// A component pre-instantiated against the world it implements, for
/// stores holding `T` (the sandbox's call state).
pub enum ProviderPre<T: 'static> {
    /// A 0.1 component.
    V0_1(v0_1::ProviderPre<T>),
    /// A 0.2 component.
    V0_2(v0_2::ProviderPre<T>),
    /// A 0.3 component.
    V0_3(v0_3::ProviderPre<T>),
}

impl<T: 'static> Clone for ProviderPre<T> {
    fn clone(&self) -> Self {
        match self {
            Self::V0_1(p) => Self::V0_1(p.clone()),
            Self::V0_2(p) => Self::V0_2(p.clone()),
            Self::V0_3(p) => Self::V0_3(p.clone()),
        }
    }
}

impl<T: Send + 'static> ProviderPre<T> {
    /// Type-checks the component's exports against each supported world,
    /// newest first, and keeps the first that fits. `Err` says why none
    /// did.
    pub fn new(pre: InstancePre<T>) -> Result<Self, String> {
        let v0_3 = match v0_3::ProviderPre::new(pre.clone()) {
            Ok(p) => return Ok(Self::V0_3(p)),
            Err(e) => e,
        };
        let v0_2 = match v0_2::ProviderPre::new(pre.clone()) {
            Ok(p) => return Ok(Self::V0_2(p)),
            Err(e) => e,
        };
        match v0_1::ProviderPre::new(pre) {
            Ok(p) => Ok(Self::V0_1(p)),
            Err(v0_1) => Err(format!(
                "the component implements no supported world: as {}: {v0_3:#}; as {}: {v0_2:#}; as {}: {v0_1:#}",
                ContractVersion::V0_3,
                ContractVersion::V0_2,
                ContractVersion::V0_1
            )),
        }
    }

    /// The contract version the component targets.
    pub fn version(&self) -> ContractVersion {
        match self {
            Self::V0_1(_) => ContractVersion::V0_1,
            Self::V0_2(_) => ContractVersion::V0_2,
            Self::V0_3(_) => ContractVersion::V0_3,
        }
    }

    /// A new instance in `store`.
    pub async fn instantiate_async(&self, store: &mut Store<T>) -> wasmtime::Result<Bindings> {
        Ok(match self {
            Self::V0_1(p) => Bindings::V0_1(p.instantiate_async(store).await?),
            Self::V0_2(p) => Bindings::V0_2(p.instantiate_async(store).await?),
            Self::V0_3(p) => Bindings::V0_3(p.instantiate_async(store).await?),
        })
    }
}

/// An instantiated adapter of any supported version; every call takes and
/// returns the host's (0.3) types.
pub enum Bindings {
    /// A 0.1 instance.
    V0_1(v0_1::Provider),
    /// A 0.2 instance.
    V0_2(v0_2::Provider),
    /// A 0.3 instance.
    V0_3(v0_3::Provider),
}

/// One call of an export on an instance of any version: `$newest` is the
/// call on a 0.3 instance; `$older` the same call on an older one, written
/// once with `$up` and `$down` naming that version's conversions (its
/// results into the host's types, the host's arguments into its own).
macro_rules! dispatch {
    ($bindings:expr, |$p:ident| $newest:expr, |$q:ident, $up:ident, $down:ident| $older:expr $(,)?) => {
        match $bindings {
            Bindings::V0_1($q) => {
                // A call may need only one direction.
                #[allow(unused_imports)]
                use {v0_1_down as $down, v0_1_up as $up};
                $older
            }
            Bindings::V0_2($q) => {
                // A call may need only one direction.
                #[allow(unused_imports)]
                use {v0_2_down as $down, v0_2_up as $up};
                $older
            }
            Bindings::V0_3($p) => $newest,
        }
    };
}

impl Bindings {
    /// `configure`.
    pub async fn configure<T: Send>(
        &self,
        store: &mut Store<T>,
        settings: &[(String, String)],
    ) -> wasmtime::Result<Result<AdapterInfo, String>> {
        let settings = settings.to_vec();
        Ok(dispatch!(self, |p| p.freellm_provider_adapter().call_configure(store, &settings).await?, |p, up, down| p
            .freellm_provider_adapter()
            .call_configure(store, &settings)
            .await?
            .map(up::info),))
    }

    /// `map-request`. `settings` are the slot's (an older version's call
    /// context carries them; a 0.3 instance was configured with them).
    pub async fn map_request<T: Send>(
        &self,
        store: &mut Store<T>,
        ctx: &CallContext,
        settings: &[(String, String)],
        body: &[u8],
    ) -> wasmtime::Result<Result<UpstreamRequest, Failure>> {
        Ok(dispatch!(
            self,
            |p| p.freellm_provider_adapter().call_map_request(store, ctx, body).await?,
            |p, up, down| p
                .freellm_provider_adapter()
                .call_map_request(store, &down::context(ctx, settings), body)
                .await?
                .map(up::request)
                .map_err(up::failure),
        ))
    }

    /// `normalize-response` (`settings` as for [`Self::map_request`]).
    pub async fn normalize_response<T: Send>(
        &self,
        store: &mut Store<T>,
        ctx: &CallContext,
        settings: &[(String, String)],
        head: &ResponseHead,
        body: &[u8],
    ) -> wasmtime::Result<Result<NormalizedResponse, Failure>> {
        Ok(dispatch!(
            self,
            |p| p.freellm_provider_adapter().call_normalize_response(store, ctx, head, body).await?,
            |p, up, down| p
                .freellm_provider_adapter()
                .call_normalize_response(store, &down::context(ctx, settings), &down::head(head), body)
                .await?
                .map(up::normalized)
                .map_err(up::failure),
        ))
    }

    /// `classify-failure` (`settings` as for [`Self::map_request`]).
    pub async fn classify_failure<T: Send>(
        &self,
        store: &mut Store<T>,
        ctx: &CallContext,
        settings: &[(String, String)],
        head: &ResponseHead,
        body: &[u8],
    ) -> wasmtime::Result<Failure> {
        Ok(dispatch!(
            self,
            |p| p.freellm_provider_adapter().call_classify_failure(store, ctx, head, body).await?,
            |p, up, down| up::failure(
                p.freellm_provider_adapter()
                    .call_classify_failure(store, &down::context(ctx, settings), &down::head(head), body)
                    .await?,
            ),
        ))
    }

    /// `embedded-fixtures` (a 0.1 adapter carries none).
    pub async fn embedded_fixtures<T: Send>(&self, store: &mut Store<T>) -> wasmtime::Result<Vec<FixtureFile>> {
        Ok(match self {
            Self::V0_1(_) => Vec::new(),
            Self::V0_2(p) => p
                .freellm_provider_adapter()
                .call_embedded_fixtures(store)
                .await?
                .into_iter()
                .map(|f| FixtureFile { name: f.name, json: f.json })
                .collect(),
            Self::V0_3(p) => p.freellm_provider_adapter().call_embedded_fixtures(store).await?,
        })
    }

    /// The `stream-normalizer` constructor (`settings` as for
    /// [`Self::map_request`]).
    pub async fn open_stream<T: Send>(
        &self,
        store: &mut Store<T>,
        ctx: &CallContext,
        settings: &[(String, String)],
        head: &ResponseHead,
    ) -> wasmtime::Result<ResourceAny> {
        dispatch!(
            self,
            |p| p.freellm_provider_adapter().stream_normalizer().call_constructor(store, ctx, head).await,
            |p, up, down| p
                .freellm_provider_adapter()
                .stream_normalizer()
                .call_constructor(store, &down::context(ctx, settings), &down::head(head))
                .await,
        )
    }

    /// `stream-normalizer.push`.
    pub async fn push<T: Send>(
        &self,
        store: &mut Store<T>,
        stream: ResourceAny,
        events: &[StreamEvent],
    ) -> wasmtime::Result<Result<StreamOutput, Failure>> {
        Ok(dispatch!(
            self,
            |p| p.freellm_provider_adapter().stream_normalizer().call_push(store, stream, events).await?,
            |p, up, down| {
                let events: Vec<_> = events.iter().map(down::event).collect();
                p.freellm_provider_adapter()
                    .stream_normalizer()
                    .call_push(store, stream, &events)
                    .await?
                    .map(up::output)
                    .map_err(up::failure)
            },
        ))
    }

    /// `stream-normalizer.finish`.
    pub async fn finish<T: Send>(
        &self,
        store: &mut Store<T>,
        stream: ResourceAny,
    ) -> wasmtime::Result<Result<StreamOutput, Failure>> {
        Ok(dispatch!(
            self,
            |p| p.freellm_provider_adapter().stream_normalizer().call_finish(store, stream).await?,
            |p, up, down| p
                .freellm_provider_adapter()
                .stream_normalizer()
                .call_finish(store, stream)
                .await?
                .map(up::output)
                .map_err(up::failure),
        ))
    }
}

/// The conversions every older version shares with the host's types (its
/// records and enums that 0.3 kept as they were): expanded in each
/// version's `up` and `down` modules, where `old` names that version's
/// types and `new` the host's.
macro_rules! shared_up {
    () => {
        pub fn auth(a: old::AuthPlacement) -> new::AuthPlacement {
            match a {
                old::AuthPlacement::None => new::AuthPlacement::None,
                old::AuthPlacement::Bearer => new::AuthPlacement::Bearer,
                old::AuthPlacement::Header(h) => new::AuthPlacement::Header(h),
                old::AuthPlacement::Query(q) => new::AuthPlacement::Query(q),
            }
        }

        pub fn framing(f: old::StreamFraming) -> new::StreamFraming {
            match f {
                old::StreamFraming::Sse => new::StreamFraming::Sse,
                old::StreamFraming::Ndjson => new::StreamFraming::Ndjson,
            }
        }

        pub fn privacy(p: old::PrivacyInfo) -> new::PrivacyInfo {
            new::PrivacyInfo {
                policy: match p.policy {
                    old::PrivacyPolicy::NoTraining => new::PrivacyPolicy::NoTraining,
                    old::PrivacyPolicy::Configurable => new::PrivacyPolicy::Configurable,
                    old::PrivacyPolicy::FreeTierTrains => new::PrivacyPolicy::FreeTierTrains,
                    old::PrivacyPolicy::Local => new::PrivacyPolicy::Local,
                },
                source_url: p.source_url,
                last_verified: p.last_verified,
                note: p.note,
            }
        }

        pub fn limits(l: old::RateLimits) -> new::RateLimits {
            new::RateLimits {
                requests_per_minute: l.requests_per_minute,
                requests_per_day: l.requests_per_day,
                tokens_per_minute: l.tokens_per_minute,
                tokens_per_day: l.tokens_per_day,
                shared_per_project: l.shared_per_project,
            }
        }

        /// Flag sets have no bit access in wasmtime's bindings: copy flag by flag.
        pub fn capabilities(c: old::Capabilities) -> new::Capabilities {
            use new::Capabilities as N;
            use old::Capabilities as O;
            [
                (O::TOOLS, N::TOOLS),
                (O::JSON_MODE, N::JSON_MODE),
                (O::JSON_SCHEMA, N::JSON_SCHEMA),
                (O::VISION, N::VISION),
                (O::STREAM_USAGE, N::STREAM_USAGE),
                (O::REASONING, N::REASONING),
                (O::ASSISTANT_PREFILL, N::ASSISTANT_PREFILL),
            ]
            .into_iter()
            .filter(|(o, _)| c.contains(*o))
            .fold(N::empty(), |acc, (_, n)| acc | n)
        }

        pub fn tags(t: old::ModelTags) -> new::ModelTags {
            use new::ModelTags as N;
            use old::ModelTags as O;
            [
                (O::FAST, N::FAST),
                (O::SMART, N::SMART),
                (O::REASONING, N::REASONING),
                (O::VISION, N::VISION),
                (O::TOOLS, N::TOOLS),
            ]
            .into_iter()
            .filter(|(o, _)| t.contains(*o))
            .fold(N::empty(), |acc, (_, n)| acc | n)
        }

        /// A body before 0.3 was always whole.
        pub fn request(r: old::UpstreamRequest) -> new::UpstreamRequest {
            new::UpstreamRequest {
                method: match r.method {
                    old::HttpMethod::Get => new::HttpMethod::Get,
                    old::HttpMethod::Post => new::HttpMethod::Post,
                },
                path: r.path,
                headers: r.headers,
                body: new::RequestBody::Bytes(r.body),
            }
        }

        pub fn failure(f: old::Failure) -> new::Failure {
            new::Failure {
                kind: match f.kind {
                    old::FailureKind::RateLimited => new::FailureKind::RateLimited,
                    old::FailureKind::QuotaExhausted => new::FailureKind::QuotaExhausted,
                    old::FailureKind::KeyInvalid => new::FailureKind::KeyInvalid,
                    old::FailureKind::RequestInvalid => new::FailureKind::RequestInvalid,
                    old::FailureKind::ContextLength => new::FailureKind::ContextLength,
                    old::FailureKind::ContentFilter => new::FailureKind::ContentFilter,
                    old::FailureKind::Transient => new::FailureKind::Transient,
                    old::FailureKind::Unsupported => new::FailureKind::Unsupported,
                },
                message: f.message,
                retry_after_ms: f.retry_after_ms,
                upstream_code: f.upstream_code,
            }
        }

        fn usage(u: old::Usage) -> new::Usage {
            new::Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            }
        }

        fn finish(r: old::FinishReason) -> new::FinishReason {
            match r {
                old::FinishReason::Stop => new::FinishReason::Stop,
                old::FinishReason::Length => new::FinishReason::Length,
                old::FinishReason::ToolCalls => new::FinishReason::ToolCalls,
                old::FinishReason::ContentFilter => new::FinishReason::ContentFilter,
                old::FinishReason::Other => new::FinishReason::Other,
            }
        }

        pub fn normalized(n: old::NormalizedResponse) -> new::NormalizedResponse {
            new::NormalizedResponse {
                body: n.body,
                usage: n.usage.map(usage),
                finish_reason: n.finish_reason.map(finish),
            }
        }

        pub fn output(o: old::StreamOutput) -> new::StreamOutput {
            new::StreamOutput {
                chunks: o.chunks,
                usage: o.usage.map(usage),
                finish_reason: o.finish_reason.map(finish),
                done: o.done,
            }
        }
    };
}

/// The host's values into an older version's arguments (records every
/// version shares unchanged).
macro_rules! shared_down {
    () => {
        /// Before 0.3 the settings came with every call.
        pub fn context(c: &new::CallContext, settings: &[(String, String)]) -> old::CallContext {
            old::CallContext {
                request_id: c.request_id.clone(),
                upstream_model: c.upstream_model.clone(),
                is_stream: c.is_stream,
                settings: settings.to_vec(),
            }
        }

        pub fn head(h: &new::ResponseHead) -> old::ResponseHead {
            old::ResponseHead { status: h.status, headers: h.headers.clone() }
        }

        pub fn event(e: &new::StreamEvent) -> old::StreamEvent {
            old::StreamEvent { event: e.event.clone(), data: e.data.clone() }
        }
    };
}

/// 0.1 values into the host's types. 0.1 had no wire-format declaration:
/// every 0.1 adapter was written against OpenAI's chat API (the contract
/// said so), so it is `openai-chat`; it had no per-model limits.
mod v0_1_up {
    use super::types as new;
    use super::v0_1::freellm::provider::types as old;

    shared_up!();

    pub fn info(i: old::AdapterInfo) -> new::AdapterInfo {
        new::AdapterInfo {
            id: i.id,
            display_name: i.display_name,
            adapter_version: i.adapter_version,
            default_base_url: i.default_base_url,
            key_env: i.key_env,
            auth: auth(i.auth),
            stream_framing: framing(i.stream_framing),
            wire_format: new::WireFormat::OpenaiChat,
            capabilities: capabilities(i.capabilities),
            models: i
                .models
                .into_iter()
                .map(|m| new::ModelInfo {
                    id: m.id,
                    context_window: m.context_window,
                    tags: tags(m.tags),
                    limits: None,
                })
                .collect(),
            default_model: i.default_model,
            privacy: privacy(i.privacy),
            limits: limits(i.limits),
        }
    }
}

/// The host's values into 0.1 arguments.
mod v0_1_down {
    use super::types as new;
    use super::v0_1::freellm::provider::types as old;

    shared_down!();
}

/// 0.2 values into the host's types: 0.3 changed only the request body.
mod v0_2_up {
    use super::types as new;
    use super::v0_2::freellm::provider::types as old;

    shared_up!();

    pub fn info(i: old::AdapterInfo) -> new::AdapterInfo {
        new::AdapterInfo {
            id: i.id,
            display_name: i.display_name,
            adapter_version: i.adapter_version,
            default_base_url: i.default_base_url,
            key_env: i.key_env,
            auth: auth(i.auth),
            stream_framing: framing(i.stream_framing),
            wire_format: match i.wire_format {
                old::WireFormat::OpenaiChat => new::WireFormat::OpenaiChat,
                old::WireFormat::Other(name) => new::WireFormat::Other(name),
            },
            capabilities: capabilities(i.capabilities),
            models: i
                .models
                .into_iter()
                .map(|m| new::ModelInfo {
                    id: m.id,
                    context_window: m.context_window,
                    tags: tags(m.tags),
                    limits: m.limits.map(limits),
                })
                .collect(),
            default_model: i.default_model,
            privacy: privacy(i.privacy),
            limits: limits(i.limits),
        }
    }
}

/// The host's values into 0.2 arguments.
mod v0_2_down {
    use super::types as new;
    use super::v0_2::freellm::provider::types as old;

    shared_down!();
}

impl WireFormat {
    /// How reports name it: `openai-chat` or the adapter's own name.
    pub fn name(&self) -> &str {
        match self {
            Self::OpenaiChat => "openai-chat",
            Self::Other(name) => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v0_1::freellm::provider::types as old;
    use super::*;

    fn old_info(capabilities: old::Capabilities, tags: old::ModelTags) -> old::AdapterInfo {
        old::AdapterInfo {
            id: "legacy".into(),
            display_name: "Legacy".into(),
            adapter_version: "0.1.0".into(),
            default_base_url: "https://example.com/v1".into(),
            key_env: Some("LEGACY_API_KEY".into()),
            auth: old::AuthPlacement::Header("x-key".into()),
            stream_framing: old::StreamFraming::Ndjson,
            capabilities,
            models: vec![old::ModelInfo { id: "m".into(), context_window: 4096, tags }],
            default_model: "m".into(),
            privacy: old::PrivacyInfo {
                policy: old::PrivacyPolicy::Configurable,
                source_url: "https://example.com/terms".into(),
                last_verified: "2026-04-09".into(),
                note: String::new(),
            },
            limits: old::RateLimits {
                requests_per_minute: Some(30),
                requests_per_day: Some(1000),
                tokens_per_minute: None,
                tokens_per_day: None,
                shared_per_project: true,
            },
        }
    }

    #[test]
    fn a_0_1_adapter_info_is_openai_chat_with_every_flag_and_limit_kept() {
        let info = v0_1_up::info(old_info(old::Capabilities::all(), old::ModelTags::all()));
        assert!(matches!(info.wire_format, WireFormat::OpenaiChat));
        assert!(info.capabilities == types::Capabilities::all(), "{:?}", info.capabilities);
        assert!(info.models[0].tags == types::ModelTags::all());
        assert!(info.models[0].limits.is_none(), "0.1 had no per-model limits");
        assert_eq!((info.limits.requests_per_minute, info.limits.requests_per_day), (Some(30), Some(1000)));
        assert!(matches!(info.auth, types::AuthPlacement::Header(ref h) if h == "x-key"));
        assert!(matches!(info.stream_framing, types::StreamFraming::Ndjson));

        let none = v0_1_up::info(old_info(old::Capabilities::empty(), old::ModelTags::FAST));
        assert!(none.capabilities == types::Capabilities::empty());
        assert!(none.models[0].tags == types::ModelTags::FAST);
    }

    #[test]
    fn a_0_2_adapter_info_keeps_its_wire_format_and_model_limits_and_its_bodies_are_whole() {
        use super::v0_2::freellm::provider::types as v2;
        let limits = v2::RateLimits {
            requests_per_minute: Some(1),
            requests_per_day: None,
            tokens_per_minute: Some(600),
            tokens_per_day: None,
            shared_per_project: false,
        };
        let info = v0_2_up::info(v2::AdapterInfo {
            id: "two".into(),
            display_name: "Two".into(),
            adapter_version: "0.2.0".into(),
            default_base_url: "https://example.com".into(),
            key_env: None,
            auth: v2::AuthPlacement::Query("key".into()),
            stream_framing: v2::StreamFraming::Sse,
            wire_format: v2::WireFormat::Other("two-chat".into()),
            capabilities: v2::Capabilities::TOOLS | v2::Capabilities::ASSISTANT_PREFILL,
            models: vec![v2::ModelInfo {
                id: "m".into(),
                context_window: 1,
                tags: v2::ModelTags::SMART,
                limits: Some(limits),
            }],
            default_model: "m".into(),
            privacy: v2::PrivacyInfo {
                policy: v2::PrivacyPolicy::NoTraining,
                source_url: "https://example.com/terms".into(),
                last_verified: "2026-12-05".into(),
                note: String::new(),
            },
            limits,
        });
        assert_eq!(info.wire_format.name(), "two-chat");
        assert!(info.capabilities == (types::Capabilities::TOOLS | types::Capabilities::ASSISTANT_PREFILL));
        let model = &info.models[0].limits;
        assert_eq!(model.as_ref().map(|l| (l.requests_per_minute, l.tokens_per_minute)), Some((Some(1), Some(600))));
        assert!(matches!(info.auth, types::AuthPlacement::Query(ref q) if q == "key"));

        let request = v0_2_up::request(v2::UpstreamRequest {
            method: v2::HttpMethod::Post,
            path: "/chat".into(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
        });
        assert!(matches!(request.body, types::RequestBody::Bytes(ref b) if b == b"{}"));
    }

    #[test]
    fn contract_versions_name_their_package() {
        assert_eq!(ContractVersion::V0_1.to_string(), "freellm:provider@0.1.0");
        assert_eq!(ContractVersion::V0_2.package(), "freellm:provider@0.2.0");
        assert_eq!(ContractVersion::V0_3.package(), "freellm:provider@0.3.0");
        assert_eq!(WireFormat::Other("cohere-chat-v2".into()).name(), "cohere-chat-v2");
    }
}
