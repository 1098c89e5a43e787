//! `freellm plugin check`: loads any component the way the gateway does
//! (and names the contract version it targets), then runs the conformance
//! cases its declaration calls for (wire format, capabilities), the
//! fixtures it embeds and a fixtures directory against it through this
//! runtime, and prints a pass/fail report with the contract rule or first
//! difference of each failure.
//!
//! The cases and the fixture format live in `freellm-fixtures`, shared with
//! the SDK's native runner; this module only provides the [`Subject`] that
//! calls into the sandboxed component.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use freellm_fixtures::{Ctx, Described, FailureOut, Head, Mapped, Normalized, Streamed, Subject};

use super::adapter::Adapter;
use super::engine::PluginEngine;
use super::loader::{self, Compiled};
use super::sandbox::SandboxLimits;
use super::splice::UpstreamBody;
use super::types::{
    AdapterInfo, AuthPlacement, CallContext, Capabilities, Failure, FailureKind, FinishReason, HttpMethod,
    NormalizedResponse, RequestBody, ResponseHead, StreamEvent, StreamOutput, UpstreamRequest, Usage, WireFormat,
};

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The component file.
    pub component: PathBuf,
    /// A fixtures directory to run besides the conformance cases.
    pub fixtures: Option<PathBuf>,
    /// Settings for the conformance cases' `configure`.
    pub settings: Vec<(String, String)>,
    /// Where compiled code is cached.
    pub cache_dir: PathBuf,
}

/// The outcome of a check: the printable report and whether all passed.
pub struct CheckResult {
    /// Human-readable report.
    pub text: String,
    /// Every step and case passed.
    pub passed: bool,
}

/// Runs the whole check. Never panics on a bad component: every problem is
/// a failed step in the report.
pub fn run(options: &CheckOptions) -> CheckResult {
    let mut text = String::new();
    let _ = writeln!(text, "component  {}", options.component.display());
    let fail = |mut text: String, step: &str, why: String| {
        let _ = writeln!(text, "FAIL {step}: {why}");
        let _ = writeln!(text, "\nresult: FAILED at {step}");
        CheckResult { text, passed: false }
    };
    let engine = match PluginEngine::new(crate::MAX_OPEN_STREAMS as usize) {
        Ok(e) => e,
        Err(e) => return fail(text, "engine", format!("{e:#}")),
    };
    let compiled = match loader::load_file(&engine, &options.component, &options.cache_dir) {
        Ok(c) => c,
        Err(e) => return fail(text, "load", e.to_string()),
    };
    let _ = writeln!(text, "sha256     {}", compiled.hash);
    let version = compiled.version();
    let _ = writeln!(text, "contract   {version}");
    let _ = writeln!(text, "PASS load: compiled, sandbox policy and {version} world checked");
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(text, "runtime", e.to_string()),
    };
    let mut subject = RuntimeSubject { runtime, engine, compiled, adapter: None };

    let conformance = freellm_fixtures::conformance(&mut subject, &options.settings);
    if let Some(adapter) = &subject.adapter {
        let info = &adapter.info;
        let _ = writeln!(
            text,
            "adapter    {} {} \"{}\", {} model(s), default {}, wire format {}",
            info.id,
            info.adapter_version,
            info.display_name,
            info.models.len(),
            info.default_model,
            info.wire_format.name()
        );
    }
    let _ = writeln!(text, "conformance");
    let _ = write!(text, "{conformance}");
    let mut totals = (conformance.passed(), conformance.failures().count());

    if subject.adapter.is_some() {
        match embedded_report(&mut subject) {
            Ok(Some(report)) => {
                let _ = writeln!(text, "embedded fixtures");
                let _ = write!(text, "{report}");
                totals.0 += report.passed();
                totals.1 += report.failures().count();
            }
            Ok(None) => {}
            Err(e) => {
                let _ = writeln!(text, "embedded fixtures\n  FAIL embedded-fixtures: {e}");
                totals.1 += 1;
            }
        }
    }

    if let Some(dir) = &options.fixtures {
        let _ = writeln!(text, "fixtures ({})", dir.display());
        match freellm_fixtures::run_dir(&mut subject, dir) {
            Ok(report) => {
                let _ = write!(text, "{report}");
                totals.0 += report.passed();
                totals.1 += report.failures().count();
            }
            Err(e) => {
                let _ = writeln!(text, "  FAIL {e}");
                totals.1 += 1;
            }
        }
    }
    let passed = totals.1 == 0;
    let _ = writeln!(
        text,
        "\nresult: {} ({} passed, {} failed)",
        if passed { "PASSED" } else { "FAILED" },
        totals.0,
        totals.1
    );
    CheckResult { text, passed }
}

/// The conformance self-check a new adapter version must pass before it
/// goes live (hot reload): the cases of `plugin check` that apply to the
/// adapter's declared wire format and capabilities, run with the slot's
/// settings, then the fixtures the component embeds. Blocks; call it off
/// the async workers. `Err` names the failed cases, each with its rule or
/// first difference.
pub fn self_check(engine: Arc<PluginEngine>, adapter: &Adapter) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the self-check: {e}"))?;
    let mut subject = RuntimeSubject { runtime, engine, compiled: adapter.compiled(), adapter: None };
    let report = freellm_fixtures::conformance(&mut subject, adapter.settings());
    let mut failures: Vec<String> = report
        .failures()
        .map(|o| format!("{}: {}", o.name, o.result.as_ref().err().map_or("", String::as_str)))
        .collect();
    if subject.adapter.is_some() {
        match embedded_report(&mut subject) {
            Ok(Some(report)) => failures.extend(report.failures().map(|o| {
                format!("embedded fixture {}: {}", o.name, o.result.as_ref().err().map_or("", String::as_str))
            })),
            Ok(None) => {}
            Err(e) => failures.push(format!("embedded-fixtures: {e}")),
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
}

/// Runs the fixtures the component embeds; `None` when it embeds none.
fn embedded_report(subject: &mut RuntimeSubject) -> Result<Option<freellm_fixtures::Report>, String> {
    let fixtures = subject.embedded_fixtures().map_err(|f| f.message)?;
    if fixtures.is_empty() {
        return Ok(None);
    }
    Ok(Some(freellm_fixtures::run_embedded(subject, &fixtures)))
}

/// The default cache for `plugin check`: inside the system temp directory,
/// so checking does not touch the gateway's data directory.
pub fn default_cache_dir() -> PathBuf {
    std::env::temp_dir().join("freellm-plugin-check")
}

/// A component driven through the gateway's runtime, one call at a time.
struct RuntimeSubject {
    runtime: tokio::runtime::Runtime,
    engine: Arc<PluginEngine>,
    compiled: Compiled,
    adapter: Option<Arc<Adapter>>,
}

impl RuntimeSubject {
    fn adapter(&self) -> Result<&Arc<Adapter>, FailureOut> {
        self.adapter.as_ref().ok_or_else(|| FailureOut::fault("the adapter is not configured"))
    }
}

impl Subject for RuntimeSubject {
    fn describe(&mut self, settings: &[(String, String)]) -> Result<Described, String> {
        let adapter = self
            .runtime
            .block_on(Adapter::configure_as(
                self.engine.clone(),
                self.compiled.clone(),
                None,
                settings.to_vec(),
                SandboxLimits::default(),
            ))
            .map_err(|e| e.to_string())?;
        let described = described(adapter.info.clone());
        self.adapter = Some(Arc::new(adapter));
        Ok(described)
    }

    fn embedded_fixtures(&mut self) -> Result<Vec<(String, String)>, FailureOut> {
        let adapter = self.adapter()?;
        let files = self.runtime.block_on(adapter.embedded_fixtures()).map_err(|f| FailureOut::fault(f.detailed()))?;
        Ok(files.into_iter().map(|f| (f.name, f.json)).collect())
    }

    fn map(&mut self, ctx: &Ctx, body: &[u8]) -> Result<Mapped, FailureOut> {
        let adapter = self.adapter()?;
        let result = self
            .runtime
            .block_on(adapter.map_request(&context(ctx), body))
            .map_err(|fault| FailureOut::fault(fault.detailed()))?;
        mapped(result.map_err(failure)?, body)
    }

    fn normalize(&mut self, ctx: &Ctx, h: &Head, body: &[u8]) -> Result<Normalized, FailureOut> {
        let adapter = self.adapter()?;
        let result = self
            .runtime
            .block_on(adapter.normalize_response(&context(ctx), &head(h), body))
            .map_err(|fault| FailureOut::fault(fault.detailed()))?;
        result.map(normalized).map_err(failure)
    }

    fn classify(&mut self, ctx: &Ctx, h: &Head, body: &[u8]) -> FailureOut {
        let adapter = match self.adapter() {
            Ok(a) => a,
            Err(fault) => return fault,
        };
        match self.runtime.block_on(adapter.classify_failure(&context(ctx), &head(h), body)) {
            Ok(f) => failure(f),
            Err(fault) => FailureOut::fault(fault.detailed()),
        }
    }

    fn stream(&mut self, ctx: &Ctx, h: &Head, events: &[(Option<String>, String)]) -> Result<Streamed, FailureOut> {
        let adapter = self.adapter()?.clone();
        self.runtime.block_on(async {
            let fault = |f: super::AdapterFault| FailureOut::fault(f.detailed());
            let mut session = adapter.open_stream(&context(ctx), &head(h)).await.map_err(fault)?;
            let mut all = Streamed::default();
            for (event, data) in events {
                let batch = [StreamEvent { event: event.clone(), data: data.clone() }];
                take(&mut all, session.push(&batch).await.map_err(fault)?.map_err(failure)?);
            }
            take(&mut all, session.finish().await.map_err(fault)?.map_err(failure)?);
            Ok(all)
        })
    }
}

/// A request body as the gateway would send it (see [`UpstreamBody`]).
fn flat_body(body: RequestBody, client: &[u8]) -> Result<Vec<u8>, super::splice::SpliceError> {
    UpstreamBody::assemble(body, &bytes::Bytes::copy_from_slice(client)).map(|b| b.to_bytes().into())
}

freellm_fixtures::binding_conversions!();

/// Parses `KEY=VALUE` for `--setting`.
pub fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_as_key_value() {
        assert_eq!(parse_setting("models=a,b").unwrap(), ("models".to_owned(), "a,b".to_owned()));
        assert_eq!(parse_setting("x=").unwrap(), ("x".to_owned(), String::new()));
        assert!(parse_setting("novalue").is_err());
        assert!(parse_setting("=v").is_err());
    }

    #[test]
    fn a_missing_component_fails_the_load_step() {
        let result = run(&CheckOptions {
            component: PathBuf::from("/nonexistent/adapter.wasm"),
            fixtures: None,
            settings: vec![],
            cache_dir: default_cache_dir(),
        });
        assert!(!result.passed);
        assert!(result.text.contains("FAIL load"), "{}", result.text);
    }
}
