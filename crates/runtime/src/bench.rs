//! `freellm plugin bench`: times an adapter's `map-request` on a request
//! body (and, given an upstream answer, its `normalize-response` on it;
//! given a streamed answer, its stream normalizer on that stream's events),
//! called the way the gateway calls them (the same engine, sandbox limits,
//! warm instances and stream hosts), and reports the time per call (per
//! event for a stream).
//!
//! Given several components, it times them in turns, round after round, so
//! that a comparison (an SDK change, another build of the same adapter)
//! sees the same machine pace on both sides; the report gives each round
//! and the median of the rounds, each component against the first. This
//! is the adapter's own cost, with the copies of the body into and out of
//! its sandbox, and nothing of the gateway's HTTP or routing.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::adapter::{Adapter, AdapterFault};
use super::engine::PluginEngine;
use super::framing::{DEFAULT_MAX_EVENT_BYTES, Framer};
use super::loader::{self, LoadError};
use super::sandbox::SandboxLimits;
use super::splice::{SpliceError, UpstreamBody};
use super::types::{CallContext, Failure, RequestBody, ResponseHead, StreamEvent};

/// What to time.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The components (`.wasm`), timed in turns.
    pub components: Vec<PathBuf>,
    /// The request body each `map-request` gets.
    pub body: Vec<u8>,
    /// An upstream's 2xx answer to time `normalize-response` on as well.
    pub answer: Option<Vec<u8>>,
    /// An upstream's 2xx streamed answer, its bytes as sent (SSE or NDJSON,
    /// as each adapter declares), to time the stream normalizer on as
    /// well: one call opens a stream, pushes its events one at a time (as
    /// the relay does when each network read completes one) and finishes
    /// it; the time is reported per event.
    pub stream_answer: Option<Vec<u8>>,
    /// The upstream model in the call context (default: each adapter's
    /// default model).
    pub model: Option<String>,
    /// Whether the call context says the client asked for a stream.
    pub stream: bool,
    /// Calls per component in each round.
    pub calls: u32,
    /// Rounds.
    pub rounds: u32,
    /// Settings for `configure`.
    pub settings: Vec<(String, String)>,
    /// Where compiled code is cached.
    pub cache_dir: PathBuf,
}

/// Why a benchmark did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Nothing to time, or no calls or rounds asked for.
    #[error("{0}")]
    Usage(&'static str),
    /// The engine could not be built.
    #[error("cannot build the engine: {0}")]
    Engine(String),
    /// The async runtime could not be started.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// A component did not load or configure.
    #[error("{component}: {error}")]
    Load {
        /// The component file.
        component: String,
        /// What went wrong.
        error: LoadError,
    },
    /// The adapter refused the body or the answer (a classified
    /// failure): there is nothing to time.
    #[error("{component}: {call} refused the {what} ({kind}): {message}")]
    Refused {
        /// The component file.
        component: String,
        /// The contract function.
        call: &'static str,
        /// `body` or `answer`.
        what: &'static str,
        /// The failure's kind.
        kind: String,
        /// Its message.
        message: String,
    },
    /// The adapter mapped the body to a spliced body the gateway cannot
    /// assemble.
    #[error("{component}: map-request returned a body that cannot be sent: {error}")]
    Splice {
        /// The component file.
        component: String,
        /// What is wrong with it.
        error: SpliceError,
    },
    /// The streamed answer framed into no event at all, or into one
    /// larger than the gateway takes.
    #[error("{component}: the streamed answer {problem}")]
    Stream {
        /// The component file.
        component: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A call trapped or hit a sandbox limit.
    #[error("{component}: {fault}")]
    Fault {
        /// The component file.
        component: String,
        /// The fault.
        fault: AdapterFault,
    },
}

/// Runs the benchmark and returns its report.
///
/// # Errors
///
/// When a component does not load, refuses the body or faults, and for
/// options that ask for nothing.
pub fn run(options: &BenchOptions) -> Result<String, BenchError> {
    if options.components.is_empty() {
        return Err(BenchError::Usage("name at least one component"));
    }
    if options.calls == 0 || options.rounds == 0 {
        return Err(BenchError::Usage("calls and rounds must be at least 1"));
    }
    let engine =
        PluginEngine::new(crate::DEFAULT_OPEN_STREAMS as usize).map_err(|e| BenchError::Engine(format!("{e:#}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(BenchError::Runtime)?;
    runtime.block_on(bench(options, engine))
}

async fn bench(options: &BenchOptions, engine: Arc<PluginEngine>) -> Result<String, BenchError> {
    let mut text = String::new();
    let _ = write!(text, "body       {} bytes", options.body.len());
    if let Some(answer) = &options.answer {
        let _ = write!(text, "; answer {} bytes", answer.len());
    }
    if let Some(stream) = &options.stream_answer {
        let _ = write!(text, "; streamed answer {} bytes", stream.len());
    }
    let _ = writeln!(text, "; {} calls a round, {} rounds; components in turns", options.calls, options.rounds);
    let head = ResponseHead { status: 200, headers: vec![("content-type".to_owned(), "application/json".to_owned())] };
    let stream_head =
        ResponseHead { status: 200, headers: vec![("content-type".to_owned(), "text/event-stream".to_owned())] };
    let body = Bytes::copy_from_slice(&options.body);
    let mut calls = vec![Call::Map(&body)];
    if let Some(answer) = &options.answer {
        calls.push(Call::Normalize(&head, answer));
    }
    if options.stream_answer.is_some() {
        calls.push(Call::Stream(&stream_head));
    }
    let mut subjects = Vec::with_capacity(options.components.len());
    for (i, path) in options.components.iter().enumerate() {
        let component = path.display().to_string();
        let load = |error| BenchError::Load { component: component.clone(), error };
        let compiled = loader::load_file(&engine, path, &options.cache_dir).map_err(load)?;
        let hash = compiled.hash.clone();
        let adapter =
            Adapter::configure_as(engine.clone(), compiled, None, options.settings.clone(), SandboxLimits::default())
                .await
                .map_err(load)?;
        let adapter = Arc::new(adapter);
        let model = options.model.clone().unwrap_or_else(|| adapter.info.default_model.clone());
        let ctx = adapter.context("bench", &model, options.stream);
        let stream_ctx = adapter.context("bench", &model, true);
        let events = match &options.stream_answer {
            Some(bytes) => stream_events(&adapter, bytes)
                .map_err(|problem| BenchError::Stream { component: component.clone(), problem })?,
            None => Vec::new(),
        };
        let _ = writeln!(
            text,
            "[{}]        {component} (sha256 {}, {} {})",
            i + 1,
            loader::short_hash(&hash),
            adapter.id,
            model
        );
        // A refusal or a fault is said by the first call below.
        if let Ok(Ok(mapped)) = adapter.map_request(&ctx, &body).await {
            let _ = writeln!(text, "           map-request's body: {}", describe(&mapped.body));
        }
        if !events.is_empty() {
            let _ = writeln!(text, "           the streamed answer frames into {} events", events.len());
        }
        let subject = Subject { component, adapter, ctx, stream_ctx, events };
        // One call of each before the clock: the body and the answer must
        // be ones the adapter takes, and the first instance is made here,
        // not in round 1.
        for &call in &calls {
            subject.call(call).await?;
        }
        subjects.push(subject);
    }

    for &call in &calls {
        let _ = writeln!(text, "\n{}", call.name());
        time_rounds(&mut text, options, &subjects, call).await?;
    }
    Ok(text)
}

/// The streamed answer's events, framed as the adapter declares (the
/// gateway's framer and event bound), or what is wrong with it.
fn stream_events(adapter: &Adapter, bytes: &[u8]) -> Result<Vec<StreamEvent>, &'static str> {
    let mut framer = Framer::new(adapter.info.stream_framing, DEFAULT_MAX_EVENT_BYTES);
    let mut events = Vec::new();
    framer.push(bytes, &mut events).map_err(|_| "holds an event larger than the gateway takes")?;
    framer.finish(&mut events);
    if events.is_empty() {
        return Err("frames into no event (SSE `data:` lines, or NDJSON lines, as the adapter declares)");
    }
    Ok(events)
}

/// How a mapped body is made: whole, or how much of it is named from the
/// client's body.
fn describe(body: &RequestBody) -> String {
    match body {
        RequestBody::Bytes(bytes) => format!("whole, {} bytes", bytes.len()),
        RequestBody::Spliced(spliced) => {
            let named = spliced.pieces.iter().filter(|p| p.source == super::types::PieceSource::Client);
            let (ranges, bytes) = named.fold((0, 0_u64), |(n, sum), p| (n + 1, sum + u64::from(p.len)));
            let plural = if ranges == 1 { "" } else { "s" };
            format!(
                "spliced, {bytes} bytes named in {ranges} range{plural} of the client's body, {} bytes written ({} pieces)",
                spliced.written.len(),
                spliced.pieces.len()
            )
        }
    }
}

/// A contract function the benchmark times, with what it is called on.
#[derive(Debug, Clone, Copy)]
enum Call<'a> {
    /// `map-request` on the request body (and the assembly of what it
    /// returns, as the gateway assembles it before sending).
    Map(&'a Bytes),
    /// `normalize-response` on an upstream answer with its head.
    Normalize(&'a ResponseHead, &'a [u8]),
    /// A stream normalizer opened with this head, fed the streamed
    /// answer's events one at a time, and finished.
    Stream(&'a ResponseHead),
}

impl Call<'_> {
    fn name(self) -> &'static str {
        match self {
            Call::Map(_) => "map-request",
            Call::Normalize(..) => "normalize-response",
            Call::Stream(_) => "stream-normalizer (open, push per event, finish)",
        }
    }

    /// What one call's time is divided into for the report.
    fn unit(self) -> &'static str {
        match self {
            Call::Stream(_) => "µs/event",
            _ => "µs/call",
        }
    }
}

/// Times `call` on every subject in turns, round after round, and writes
/// each round and the medians.
async fn time_rounds(
    text: &mut String,
    options: &BenchOptions,
    subjects: &[Subject],
    call: Call<'_>,
) -> Result<(), BenchError> {
    let mut per_call = vec![Vec::with_capacity(options.rounds as usize); subjects.len()];
    let _ = write!(text, "round");
    for i in 0..subjects.len() {
        let _ = write!(text, "  [{}] {}", i + 1, call.unit());
    }
    let _ = writeln!(text);
    for round in 1..=options.rounds {
        let _ = write!(text, "{round:>5}");
        for (subject, times) in subjects.iter().zip(&mut per_call) {
            let started = Instant::now();
            for _ in 0..options.calls {
                subject.call(call).await?;
            }
            let units = f64::from(options.calls) * subject.units(call) as f64;
            let micros = started.elapsed().as_secs_f64() * 1e6 / units;
            times.push(micros);
            let _ = write!(text, "  {micros:>13.2}");
        }
        let _ = writeln!(text);
    }
    let medians: Vec<f64> = per_call.iter().map(|times| median(times)).collect();
    let _ = write!(text, "median");
    for (i, m) in medians.iter().enumerate() {
        if i == 0 {
            let _ = write!(text, " {m:>13.2}");
        } else {
            let _ = write!(text, "  {m:>8.2} ({:.3}× [1])", m / medians[0]);
        }
    }
    let _ = writeln!(text);
    Ok(())
}

/// One component under test.
struct Subject {
    component: String,
    adapter: Arc<Adapter>,
    ctx: CallContext,
    /// The context of a streamed answer's calls.
    stream_ctx: CallContext,
    /// The streamed answer's events (none without one).
    events: Vec<StreamEvent>,
}

impl Subject {
    /// How many units one call of `call` counts for: its events for a
    /// stream, else one.
    fn units(&self, call: Call<'_>) -> usize {
        match call {
            Call::Stream(_) => self.events.len().max(1),
            _ => 1,
        }
    }

    async fn call(&self, call: Call<'_>) -> Result<(), BenchError> {
        let fault = |fault| BenchError::Fault { component: self.component.clone(), fault };
        let (what, failure) = match call {
            Call::Stream(head) => match self.stream(head).await.map_err(fault)? {
                Ok(()) => return Ok(()),
                Err(failure) => ("streamed answer", failure),
            },
            Call::Map(body) => match self.adapter.map_request(&self.ctx, body).await.map_err(fault)? {
                Ok(mapped) => {
                    // Assembled as the gateway does before sending.
                    let sent = UpstreamBody::assemble(mapped.body, body)
                        .map_err(|error| BenchError::Splice { component: self.component.clone(), error })?;
                    std::hint::black_box(sent);
                    return Ok(());
                }
                Err(failure) => ("body", failure),
            },
            Call::Normalize(head, answer) => {
                match self.adapter.normalize_response(&self.ctx, head, answer).await.map_err(fault)? {
                    Ok(normalized) => {
                        std::hint::black_box(normalized);
                        return Ok(());
                    }
                    Err(failure) => ("answer", failure),
                }
            }
        };
        Err(BenchError::Refused {
            component: self.component.clone(),
            call: call.name(),
            what,
            kind: super::check::kind_name(failure.kind).to_owned(),
            message: failure.message,
        })
    }

    /// One stream: opened, its events pushed one at a time, finished.
    async fn stream(&self, head: &ResponseHead) -> Result<Result<(), Failure>, AdapterFault> {
        let mut session = self.adapter.open_stream(&self.stream_ctx, head).await?;
        for event in &self.events {
            match session.push(std::slice::from_ref(event)).await? {
                Ok(output) => {
                    std::hint::black_box(output);
                }
                Err(failure) => return Ok(Err(failure)),
            }
        }
        Ok(session.finish().await?.map(|output| {
            std::hint::black_box(output);
        }))
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn asking_for_nothing_is_refused_before_any_work() {
        let options = BenchOptions {
            components: vec![],
            body: b"{}".to_vec(),
            answer: None,
            stream_answer: None,
            model: None,
            stream: false,
            calls: 10,
            rounds: 1,
            settings: vec![],
            cache_dir: std::env::temp_dir(),
        };
        assert!(matches!(run(&options), Err(BenchError::Usage(_))));
        let options = BenchOptions { components: vec!["x.wasm".into()], calls: 0, ..options };
        assert!(matches!(run(&options), Err(BenchError::Usage(_))));
    }
}
