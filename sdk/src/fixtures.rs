//! Golden fixtures and conformance cases, run natively against an
//! [`Adapter`] (fast unit tests; the same files also run against the built
//! component with `freellm plugin check`). The file format is described in
//! `docs/fixtures.md`.
//!
//! ```no_run
//! # struct MyAdapter;
//! # impl freellm_sdk::Adapter for MyAdapter {
//! #     fn configure(_: &freellm_sdk::Settings) -> Result<freellm_sdk::AdapterInfo, String> { unimplemented!() }
//! # }
//! #[test]
//! fn fixtures_pass_natively() {
//!     freellm_sdk::fixtures::assert_dir::<MyAdapter>(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
//! }
//! ```

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

pub use freellm_fixtures::{
    Auth, Ctx, Described, FailureOut, Head, Mapped, Normalized, Report, Streamed, Subject, UsageJson, first_difference,
};

use crate::bindings::exports::freellm::provider::adapter::Guest as _;
use crate::glue::Guest;
use crate::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, Failure, FailureKind, FinishReason, HttpMethod,
    NormalizedResponse, RequestBody, ResponseHead, StreamEvent, StreamOutput, UpstreamRequest, Usage, WireFormat,
};

/// Runs every fixture in `dir` against `A` and panics with a report naming
/// each failing fixture and its first difference.
pub fn assert_dir<A: Adapter>(dir: impl AsRef<Path>) {
    let dir = dir.as_ref();
    let report = freellm_fixtures::run_dir(&mut Native::<A>::new(), dir)
        .unwrap_or_else(|e| panic!("fixtures in {}: {e}", dir.display()));
    assert!(
        report.all_passed(),
        "fixtures in {}: {} passed, {} failed\n{report}",
        dir.display(),
        report.passed(),
        report.failures().count()
    );
}

/// Runs the conformance cases that apply to `A` configured with `settings`,
/// then its embedded fixtures, and panics with the report when one fails.
pub fn assert_conformance<A: Adapter>(settings: &[(&str, &str)]) {
    let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let mut subject = Native::<A>::new();
    let report = freellm_fixtures::conformance(&mut subject, &settings);
    assert!(report.all_passed(), "conformance:\n{report}");
    let embedded = A::embedded_fixtures().into_iter().map(|f| (f.name, f.json)).collect::<Vec<_>>();
    let report = freellm_fixtures::run_embedded(&mut subject, &embedded);
    assert!(report.all_passed(), "embedded fixtures:\n{report}");
}

/// An [`Adapter`] seen as a fixture [`Subject`], called in-process. A panic
/// becomes an `adapter-fault` failure, as a trap does in the gateway.
pub struct Native<A>(PhantomData<fn() -> A>);

impl<A: Adapter> Native<A> {
    /// The subject for adapter `A`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<A: Adapter> Default for Native<A> {
    fn default() -> Self {
        Self::new()
    }
}

fn guarded<T>(f: impl FnOnce() -> Result<T, FailureOut>) -> Result<T, FailureOut> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        Err(FailureOut::fault(format!("panicked: {why}")))
    })
}

impl<A: Adapter> Subject for Native<A> {
    fn describe(&mut self, settings: &[(String, String)]) -> Result<Described, String> {
        let info = guarded(|| A::configure(&settings.to_vec()).map_err(FailureOut::fault)).map_err(|f| f.message)?;
        Ok(described(info))
    }

    fn embedded_fixtures(&mut self) -> Result<Vec<(String, String)>, FailureOut> {
        guarded(|| Ok(A::embedded_fixtures().into_iter().map(|f| (f.name, f.json)).collect()))
    }

    fn map(&mut self, ctx: &Ctx, body: &[u8]) -> Result<Mapped, FailureOut> {
        guarded(|| mapped(Guest::<A>::map_request(context(ctx), body.to_vec()).map_err(failure)?, body))
    }

    fn normalize(&mut self, ctx: &Ctx, h: &Head, body: &[u8]) -> Result<Normalized, FailureOut> {
        guarded(|| {
            Guest::<A>::normalize_response(context(ctx), head(h), body.to_vec()).map(normalized).map_err(failure)
        })
    }

    fn classify(&mut self, ctx: &Ctx, h: &Head, body: &[u8]) -> FailureOut {
        guarded(|| Ok(failure(Guest::<A>::classify_failure(context(ctx), head(h), body.to_vec()))))
            .unwrap_or_else(|fault| fault)
    }

    fn stream(&mut self, ctx: &Ctx, h: &Head, events: &[(Option<String>, String)]) -> Result<Streamed, FailureOut> {
        guarded(|| {
            let mut normalizer = A::stream_normalizer(&context(ctx), &head(h));
            let mut all = Streamed::default();
            for (event, data) in events {
                let batch = vec![StreamEvent { event: event.clone(), data: data.clone() }];
                take(&mut all, normalizer.push(batch).map_err(failure)?);
            }
            take(&mut all, normalizer.finish().map_err(failure)?);
            Ok(all)
        })
    }
}

/// A request body as the gateway would send it.
fn flat_body(body: RequestBody, client: &[u8]) -> Result<Vec<u8>, crate::splice::SpliceError> {
    body.assemble(client)
}

freellm_fixtures::binding_conversions!();
