//! The bridge between the generated component bindings and the [`Adapter`]
//! trait: [`Guest<A>`] implements the exported `adapter` interface by
//! forwarding to `A` (`map-request` reaches [`Adapter::map_request_body`]),
//! and [`Stream<A>`] is the exported `stream-normalizer` resource wrapping
//! `A`'s boxed [`StreamNormalizer`]. [`export_adapter!`](crate::export_adapter)
//! names these; nothing here is meant to be used directly.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::bindings::exports::freellm::provider::adapter;
use crate::{
    Adapter, AdapterInfo, CallContext, Failure, FixtureFile, NormalizedResponse, ResponseHead, Settings, StreamEvent,
    StreamNormalizer, StreamOutput, UpstreamRequest,
};

/// The exported `adapter` interface, implemented for any [`Adapter`].
pub struct Guest<A>(PhantomData<fn() -> A>);

/// The exported `stream-normalizer` resource of adapter `A`.
pub struct Stream<A> {
    inner: RefCell<Box<dyn StreamNormalizer>>,
    adapter: PhantomData<fn() -> A>,
}

impl<A: Adapter> adapter::Guest for Guest<A> {
    type StreamNormalizer = Stream<A>;

    fn configure(settings: Settings) -> Result<AdapterInfo, String> {
        // Every instance is configured before its first call (contract
        // 0.3): its calls read the settings from here.
        crate::settings::set_instance(settings.clone());
        A::configure(&settings)
    }

    fn map_request(ctx: CallContext, body: Vec<u8>) -> Result<UpstreamRequest, Failure> {
        // Values of this body may be named, not copied, in the answer.
        let _call = crate::splice::CallBody::register(&body);
        A::map_request_body(&ctx, &body)
    }

    fn normalize_response(ctx: CallContext, head: ResponseHead, body: Vec<u8>) -> Result<NormalizedResponse, Failure> {
        A::normalize_response(&ctx, &head, &body)
    }

    fn classify_failure(ctx: CallContext, head: ResponseHead, body: Vec<u8>) -> Failure {
        A::classify_failure(&ctx, &head, &body)
    }

    fn embedded_fixtures() -> Vec<FixtureFile> {
        A::embedded_fixtures()
    }
}

impl<A: Adapter> adapter::GuestStreamNormalizer for Stream<A> {
    fn new(ctx: CallContext, head: ResponseHead) -> Self {
        Self { inner: RefCell::new(A::stream_normalizer(&ctx, &head)), adapter: PhantomData }
    }

    fn push(&self, events: Vec<StreamEvent>) -> Result<StreamOutput, Failure> {
        self.inner.borrow_mut().push(events)
    }

    fn finish(&self) -> Result<StreamOutput, Failure> {
        self.inner.borrow_mut().finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::exports::freellm::provider::adapter::{Guest as _, GuestStreamNormalizer as _};
    use crate::{
        AuthPlacement, Capabilities, FailureKind, PrivacyInfo, PrivacyPolicy, RateLimits, StreamFraming, WireFormat,
    };

    struct Minimal;

    impl Adapter for Minimal {
        fn configure(settings: &Settings) -> Result<AdapterInfo, String> {
            Ok(AdapterInfo {
                id: crate::setting(settings, "id").unwrap_or("minimal").into(),
                display_name: "Minimal".into(),
                adapter_version: "0.0.0".into(),
                default_base_url: "https://example.com/v1".into(),
                key_env: None,
                auth: AuthPlacement::None,
                stream_framing: StreamFraming::Sse,
                wire_format: WireFormat::OpenaiChat,
                capabilities: Capabilities::empty(),
                models: vec![],
                default_model: "m".into(),
                privacy: PrivacyInfo {
                    policy: PrivacyPolicy::Local,
                    source_url: "https://example.com".into(),
                    last_verified: "2026-04-09".into(),
                    note: String::new(),
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
    }

    fn ctx() -> CallContext {
        CallContext { request_id: "r".into(), upstream_model: "m".into(), is_stream: true }
    }

    fn head() -> ResponseHead {
        ResponseHead { status: 200, headers: vec![] }
    }

    #[test]
    fn exported_functions_forward_to_the_adapter() {
        let info = Guest::<Minimal>::configure(vec![("id".into(), "x".into())]).unwrap();
        assert_eq!(info.id, "x");
        let up = Guest::<Minimal>::map_request(ctx(), br#"{"model":"p/m","messages":[]}"#.to_vec()).unwrap();
        assert_eq!(up.body.as_bytes().expect("a whole body"), br#"{"model":"m","messages":[],"stream":true}"#);
        let f = Guest::<Minimal>::classify_failure(ctx(), ResponseHead { status: 401, headers: vec![] }, vec![]);
        assert_eq!(f.kind, FailureKind::KeyInvalid);
        let n = Guest::<Minimal>::normalize_response(ctx(), head(), br#"{"choices":[]}"#.to_vec()).unwrap();
        assert_eq!(n.body, br#"{"choices":[]}"#);
        assert!(Guest::<Minimal>::embedded_fixtures().is_empty(), "no fixtures unless the adapter embeds some");
    }

    #[test]
    fn an_unparseable_body_is_request_invalid() {
        for body in [&b"{"[..], b"[]", br#"{"model":"m"}"#] {
            let f = Guest::<Minimal>::map_request(ctx(), body.to_vec()).unwrap_err();
            assert_eq!(f.kind, FailureKind::RequestInvalid);
            assert!(f.message.starts_with("invalid chat request body"), "{}", f.message);
        }
    }

    #[test]
    fn the_stream_resource_wraps_the_default_normalizer() {
        let stream = Stream::<Minimal>::new(ctx(), head());
        let events = vec![
            StreamEvent { event: None, data: r#"{"choices":[]}"#.into() },
            StreamEvent { event: None, data: "[DONE]".into() },
        ];
        let out = stream.push(events).unwrap();
        assert_eq!((out.chunks.len(), out.done), (1, true));
        assert_eq!(stream.finish().unwrap(), StreamOutput::empty());
    }
}
