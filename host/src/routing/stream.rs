//! Relaying a streaming answer: upstream bytes → framer (host) → the
//! adapter's stream normalizer (wasm) → `data: <chunk>` events to the client.
//!
//! * **Commit on the first chunk.** [`start`] reads the upstream until the
//!   normalizer emits its first chunk (within `STREAM_FIRST_TOKEN_TIMEOUT_MS`)
//!   before answering the client, so a provider that is slow to start, or
//!   breaks before saying anything, can still be failed over. A 2xx whose
//!   stream ends (or reports an error) before any chunk, garbage included,
//!   is a failed attempt like a 5xx.
//! * **Verdict at the end.** A committed stream is counted a success (status,
//!   `/metrics`, breaker) only when it finishes properly; one that ends
//!   without a finish counts as a failure of its provider.
//! * **Bounds.** One event (`STREAM_MAX_EVENT_BYTES`), the bytes read from
//!   one upstream stream (`STREAM_MAX_BYTES`), a stream's duration
//!   (`STREAM_MAX_DURATION_MS`) and the answer text kept for a continuation
//!   (`STREAM_CONTINUATION_MAX_BYTES`) are capped, so a hostile upstream
//!   costs bounded memory and time; past a cap the client gets an error
//!   event.
//! * **Relay.** The response body then drives the relay ([`RelayBody`]): the
//!   client's connection asks for the next bytes, the relay reads the
//!   upstream until it has some, with no task or channel of its own; a
//!   client that reads slowly slows the upstream read, one that stops
//!   reading is cut by the server's write-stall timeout, and one that goes
//!   away ends the relay at its next hand-over. While the
//!   upstream is silent the client gets `: keep-alive` comments (after
//!   `STREAM_IDLE_TIMEOUT_MS`, 0 = never) — also while bytes arrive that
//!   complete no event; past `STREAM_STALL_TIMEOUT_MS` without a byte the
//!   upstream is given up.
//! * **Continuation.** If the upstream breaks off (or stalls) after content
//!   reached the client, the answer is resumed on another candidate that
//!   accepts an assistant prefill: same messages plus the partial answer,
//!   spliced into the same stream (route reason `continuation` in the log and
//!   status). If none can, the stream ends with an OpenAI-style error event
//!   and no `[DONE]`, so no client mistakes a truncated answer for a
//!   complete one. A route with no other target (an explicit model) has
//!   nothing to resume on: its stream keeps neither the request body nor
//!   the answer text, and relays each chunk without reading it (unless it
//!   may be a usage chunk to hide).
//! * **Usage.** The last usage a stream reports is recorded for its provider
//!   and key.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use memchr::memmem;
use serde_json::Value;
use tokio::time::Sleep;

use crate::access::virtual_keys::Ticket;
use crate::config::UpstreamConfig;
use crate::ops::stats::unix_ms;
use crate::providers::ProviderEntry;
use crate::routing::attempt::{
    AttemptVerdict, Call, Failed, KeyHold, acquire_key, acquire_target, classify, report_failure, send,
};
use crate::routing::decide::{AttemptFailure, Context, Retries, decide};
use crate::routing::error::RoutingError;
use crate::routing::relay_body::{ClientGone, Outbox, RelayBody};
use crate::routing::router::Candidate;
use crate::routing::upstream::{UpstreamResponse, response_head};
use crate::state::SharedGateway;
use freellm_limits::breaker::Outcome as BreakerOutcome;
use freellm_runtime::framing::Framer;
use freellm_runtime::types::{CallContext, Capabilities, ResponseHead, StreamEvent, StreamOutput, Usage};
use freellm_runtime::{Adapter, StreamSession};

/// Appends one SSE event carrying `data`. A payload with line breaks (an
/// upstream may send pretty-printed JSON over several `data:` lines, which
/// the framer joins with `\n`) gets one `data:` field per line, so the client
/// joins it back to the same text instead of losing every line but the first.
fn push_event(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(b"data: ");
    let mut rest = data;
    while let Some(i) = memchr::memchr2(b'\n', b'\r', rest) {
        buf.extend_from_slice(&rest[..i]);
        buf.extend_from_slice(b"\ndata: ");
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    buf.extend_from_slice(rest);
    buf.extend_from_slice(b"\n\n");
}

/// Everything needed to start relaying one stream.
pub struct StreamStart<'t> {
    /// The adapter version that mapped the request (and normalizes the stream).
    pub adapter: Arc<Adapter>,
    /// Call context for the normalizer.
    pub ctx: CallContext,
    /// The upstream's 2xx head.
    pub head: ResponseHead,
    /// The upstream response (body not yet read).
    pub response: UpstreamResponse,
    /// Longest wait for the first chunk before failing over.
    pub first_token_timeout: Duration,
    /// For log lines and error events.
    pub request_id: String,
    /// The provider answering.
    pub provider: Arc<ProviderEntry>,
    /// The upstream model answering (a continuation skips this one, not
    /// the provider's other models).
    pub model: String,
    /// The request counted in the answering key's windows (settled with the
    /// real usage when the stream ends).
    pub hold: Option<KeyHold>,
    /// The gateway asked for usage the client did not: drop usage-only chunks.
    pub hide_usage_chunks: bool,
    /// Where a cut stream may be resumed.
    pub continuation: Continuation,
    /// The caller's virtual-key reservation, taken once the stream commits.
    pub ticket: &'t std::sync::Mutex<Option<Ticket>>,
    /// The attempt's breaker permit, taken once the stream commits and
    /// recorded when it ends.
    pub verdict: &'t std::sync::Mutex<Option<AttemptVerdict>>,
}

/// A stream that failed before its first chunk: nothing reached the
/// client, so the attempt fails over like any other.
#[derive(Debug)]
pub struct NotCommitted {
    /// How the attempt failed, for the failover policy.
    pub failure: AttemptFailure,
    /// What the client learns if routing ends here.
    pub error: RoutingError,
}

/// Opens the adapter's normalizer and waits for the first chunk, then
/// commits: returns the SSE response whose body the relay task feeds. Any
/// failure before that allows failover, since nothing has reached the client.
/// A first token that does not come in time (or an upstream silent for the
/// stall timeout before it) is a silent upstream: failed over at once,
/// like a connect or first-byte timeout.
pub async fn start(s: StreamStart<'_>) -> Result<Response, NotCommitted> {
    let broken = |message: String| NotCommitted {
        failure: AttemptFailure::BrokenAnswer,
        error: RoutingError::provider(&s.provider.id, message, None),
    };
    let silent = |message: String| NotCommitted {
        failure: AttemptFailure::Silent,
        error: RoutingError::provider(&s.provider.id, message, None),
    };
    let session = s.adapter.open_stream(&s.ctx, &s.head).await.map_err(|fault| {
        let error = RoutingError::from_fault(&s.provider.id, &fault);
        NotCommitted { failure: AttemptFailure::of_fault_error(&error), error }
    })?;
    let started = crate::clock::now();
    // The gateway's upstream timeouts, which the relay reads the same way.
    let timeouts = *s.continuation.gw.upstream.timeouts();
    let mut source =
        Source::new(session, s.response, &s.adapter, (s.provider.clone(), s.model.clone()), s.hold, &timeouts);
    let first_deadline = started + s.first_token_timeout;
    let mut first = Vec::new();
    // Nothing is committed until a chunk is: garbage, an empty stream or an
    // error event before it fail over like any transient failure.
    loop {
        let stall_at = source.last_data + timeouts.stream_stall_timeout;
        match source.next(stall_at.min(first_deadline)).await {
            Step::Output(out) => {
                let has_chunk = !out.chunks.is_empty();
                let done = out.done;
                first.push(out);
                if has_chunk {
                    break;
                }
                if done {
                    return Err(broken("the upstream stream ended without a single chunk".into()));
                }
            }
            Step::Eof => {
                return Err(broken("the upstream answered 2xx but its stream held no usable chunk".into()));
            }
            Step::Idle if crate::clock::now() >= first_deadline => {
                return Err(silent(format!("no first token within {} ms", s.first_token_timeout.as_millis())));
            }
            Step::Idle if crate::clock::now() >= source.last_data + timeouts.stream_stall_timeout => {
                return Err(silent(format!("the upstream sent nothing for {:?}", timeouts.stream_stall_timeout)));
            }
            Step::Idle => {}
            Step::Cut { message, .. } | Step::Limit { message, .. } if crate::clock::now() >= first_deadline => {
                return Err(silent(format!(
                    "no first token within {} ms ({message})",
                    s.first_token_timeout.as_millis()
                )));
            }
            Step::Cut { message, .. } | Step::Limit { message, .. } => return Err(broken(message)),
        }
    }
    source.verdict = s.verdict.lock().unwrap_or_else(|e| e.into_inner()).take();
    let deadline = started + timeouts.stream_max_duration;
    let ticket = s.ticket.lock().unwrap_or_else(|e| e.into_inner()).take();
    let body = RelayBody::new(|tx| {
        // Boxed on its own: an `async fn` keeps a by-value argument twice in
        // its future (as the argument and as the local), ~1 KiB more in
        // every open stream.
        let relay = Box::new(Relay {
            source,
            request_id: s.request_id,
            tx,
            continuation: s.continuation,
            answered: Prefill::new(timeouts.stream_continuation_max_bytes),
            deadline,
            last_sent: crate::clock::now(),
            stream_id: None,
            splice: None,
            hide_usage_chunks: s.hide_usage_chunks,
            ticket,
        });
        relay.run(first)
    });
    let mut response = Body::new(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Later than any wake-up time of a stream (and within Tokio's longest
/// sleep, ~2.2 years): the initial setting of [`Source::arm`]'s timer.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// One step of an upstream source.
enum Step {
    /// Normalized output.
    Output(StreamOutput),
    /// Nothing arrived before the wake-up time (heartbeat opportunity).
    Idle,
    /// The upstream ended and everything is flushed.
    Eof,
    /// The upstream broke off, stalled or sent something unusable.
    Cut { code: &'static str, message: String },
    /// The stream passed one of its caps: it ends here, not resumed.
    Limit { code: &'static str, message: String },
}

/// The upstream side of a stream: bytes → events → normalized output.
struct Source {
    session: StreamSession,
    response: UpstreamResponse,
    framer: Framer,
    events: Vec<StreamEvent>,
    ended: bool,
    /// A finish reason or done was seen.
    finished: bool,
    usage: Option<Usage>,
    provider: Arc<ProviderEntry>,
    /// The upstream model this source answers with.
    model: String,
    hold: Option<KeyHold>,
    /// When the last byte arrived (the stall timer measures silence).
    last_data: Instant,
    /// The wake-up timer of [`Source::next`], kept across calls so a
    /// stream's chunks do not each register and cancel a timer of their own.
    wake: Pin<Box<Sleep>>,
    /// Bytes read so far, against `max_bytes`.
    received: u64,
    max_bytes: u64,
    /// The breaker permit, recorded when the stream ends (none before it
    /// commits).
    verdict: Option<AttemptVerdict>,
    /// Success or failure was counted for the provider.
    concluded: bool,
}

impl Source {
    fn new(
        session: StreamSession,
        mut response: UpstreamResponse,
        adapter: &Adapter,
        (provider, model): (Arc<ProviderEntry>, String),
        hold: Option<KeyHold>,
        limits: &UpstreamConfig,
    ) -> Self {
        response.release_head();
        Self {
            model,
            session,
            response,
            framer: Framer::new(adapter.info.stream_framing, limits.stream_max_event_bytes),
            events: Vec::new(),
            ended: false,
            finished: false,
            usage: None,
            provider,
            hold,
            last_data: crate::clock::now(),
            // Armed by the first `next`: any wake-up time is earlier.
            wake: Box::pin(tokio::time::sleep(FAR_FUTURE)),
            received: 0,
            max_bytes: limits.stream_max_bytes,
            verdict: None,
            concluded: false,
        }
    }

    /// The next normalized output, waiting at most until `wake_at`. It may
    /// return [`Step::Idle`] earlier (see [`Source::arm`]): callers check
    /// their timers on every `Idle`.
    async fn next(&mut self, wake_at: Instant) -> Step {
        if self.ended {
            return Step::Eof;
        }
        self.arm(wake_at);
        loop {
            let read = tokio::select! {
                biased;
                read = self.response.chunk() => read,
                () = self.wake.as_mut() => return Step::Idle,
            };
            match read {
                Ok(Some(chunk)) => {
                    if let Err(step) = self.frame(&chunk) {
                        return step;
                    }
                }
                Ok(None) => return self.end().await,
                Err(e) => {
                    return Step::Cut {
                        code: "stream_interrupted",
                        message: format!("the upstream stream broke off: {}", e.0),
                    };
                }
            }
            if self.events.is_empty() {
                // Bytes that complete no event still hand control back in
                // time for heartbeats and the caller's deadlines.
                if crate::clock::now() >= wake_at {
                    return Step::Idle;
                }
                tokio::task::coop::consume_budget().await;
                continue;
            }
            let events = std::mem::take(&mut self.events);
            return match self.normalize(&events, false).await {
                Ok(out) => {
                    self.note(&out);
                    Step::Output(out)
                }
                Err(cut) => cut,
            };
        }
    }

    /// Sets the wake-up timer to fire no later than `wake_at`. A wake-up
    /// time only moves later while chunks arrive (it follows the last byte
    /// read or sent), so the timer is moved earlier at once but later only
    /// after it has fired: a stream's chunks cost no timer work, and a
    /// timer that fires before the time now asked for is one `Idle`, which
    /// callers take as a wake-up with nothing due.
    fn arm(&mut self, wake_at: Instant) {
        let wake_at = tokio::time::Instant::from_std(wake_at);
        if wake_at < self.wake.deadline() || self.wake.is_elapsed() {
            self.wake.as_mut().reset(wake_at);
        }
    }

    /// Counts and frames bytes read from the upstream; the stream ends at
    /// its byte cap or an event past the event cap.
    fn frame(&mut self, chunk: &[u8]) -> Result<(), Step> {
        self.last_data = crate::clock::now();
        self.received = self.received.saturating_add(chunk.len() as u64);
        if self.received > self.max_bytes {
            self.ended = true;
            return Err(Step::Limit {
                code: "stream_too_large",
                message: format!("the upstream stream exceeded {} bytes", self.max_bytes),
            });
        }
        if let Err(e) = self.framer.push(chunk, &mut self.events) {
            self.ended = true;
            return Err(Step::Cut { code: "stream_event_too_large", message: e.to_string() });
        }
        Ok(())
    }

    /// The upstream ended: the framer's last event and the normalizer's
    /// tail, as one output.
    async fn end(&mut self) -> Step {
        self.ended = true;
        self.framer.finish(&mut self.events);
        let events = std::mem::take(&mut self.events);
        let mut out = match self.normalize(&events, false).await {
            Ok(o) => o,
            Err(cut) => return cut,
        };
        match self.normalize(&[], true).await {
            Ok(tail) => {
                out.chunks.extend(tail.chunks);
                out.usage = tail.usage.or(out.usage);
                out.finish_reason = tail.finish_reason.or(out.finish_reason);
                out.done |= tail.done;
            }
            Err(cut) => return cut,
        }
        self.note(&out);
        Step::Output(out)
    }

    fn note(&mut self, out: &StreamOutput) {
        self.finished |= out.finish_reason.is_some() || out.done;
        if out.usage.is_some() {
            self.usage = out.usage;
        }
    }

    async fn normalize(&mut self, events: &[StreamEvent], finish: bool) -> Result<StreamOutput, Step> {
        // Boxed: the adapter call's future (~1 KiB) would otherwise be part
        // of every open stream's relay while it waits on the upstream.
        let result =
            if finish { Box::pin(self.session.finish()).await } else { Box::pin(self.session.push(events)).await };
        match result {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(failure)) => Err(Step::Cut { code: "stream_failed", message: failure.message }),
            Err(fault) => Err(Step::Cut { code: "adapter_fault", message: fault.to_string() }),
        }
    }

    /// Counts how the stream went for its provider: status and `/metrics`
    /// (success or failure, once) and the breaker (its verdict, when it
    /// committed). `failure` is the reason a stream did not finish.
    fn conclude(&mut self, outcome: BreakerOutcome, failure: Option<&str>) {
        if !std::mem::replace(&mut self.concluded, true) {
            match failure {
                Some(message) => self.provider.stats.failure(unix_ms(SystemTime::now()), false, message),
                None => self.provider.stats.success(),
            }
        }
        if let Some(verdict) = self.verdict.take() {
            verdict.record(outcome);
        }
    }

    /// Records the stream's usage for its provider and key (once).
    fn account(&mut self) {
        if let Some(u) = self.usage {
            self.provider.stats.usage.record(
                unix_ms(SystemTime::now()),
                u64::from(u.prompt_tokens),
                u64::from(u.completion_tokens),
            );
        }
        if let Some(hold) = self.hold.take() {
            hold.settle(self.usage.map(|u| u.total_tokens));
        }
    }
}

/// What the relay reads of a normalized chunk: its `id`, whether it only
/// carries usage, and the first choice's content. Borrowed where the JSON
/// has no escapes.
#[derive(serde::Deserialize)]
struct ChunkView<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceView<'a>>>,
    #[serde(default)]
    usage: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
}

#[derive(serde::Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

impl ChunkView<'_> {
    /// No choices and a usage object: the usage chunk a stream ends with.
    fn is_usage_only(&self) -> bool {
        self.choices.as_ref().is_some_and(Vec::is_empty) && self.usage.is_some()
    }

    /// The first choice's content text.
    fn content(&self) -> Option<&str> {
        self.choices.as_ref()?.first()?.delta.as_ref()?.content.as_deref()
    }
}

/// Why a committed stream could not complete.
enum Cut {
    /// The client went away; nothing more to say.
    ClientGone,
    /// The stream failed; tell the client with an error event.
    Failed { code: &'static str, message: String },
}

/// A resumed answer being spliced into the client's stream.
struct Splice {
    /// The partial answer the continuation was asked to continue; a
    /// provider that echoes it before continuing has the echo removed.
    echo: String,
    /// Continuation text held back while it still matches `echo`.
    held: String,
    /// The echo is settled (removed or ruled out).
    settled: bool,
}

struct Relay {
    source: Source,
    request_id: String,
    tx: Outbox,
    continuation: Continuation,
    /// Content sent to the client so far (the prefill for a continuation).
    answered: Prefill,
    /// `STREAM_MAX_DURATION_MS` after the stream started.
    deadline: Instant,
    /// When the client was last sent anything (heartbeats follow silence).
    last_sent: Instant,
    /// The `id` of the stream's chunks, kept across a continuation.
    stream_id: Option<String>,
    /// Boxed: only a continued stream has one.
    splice: Option<Box<Splice>>,
    hide_usage_chunks: bool,
    /// Settled with the stream's token use when it ends.
    ticket: Option<Ticket>,
}

impl Relay {
    /// The gateway's upstream timeouts (read through the gateway, not
    /// copied into every open stream).
    fn timeouts(&self) -> &UpstreamConfig {
        self.continuation.gw.upstream.timeouts()
    }

    /// Counts the current source's reported tokens for `/metrics`.
    fn count_tokens(&self) {
        if let Some(u) = self.source.usage {
            self.continuation.gw.metrics.record_tokens(&self.source.provider.id, u.prompt_tokens, u.completion_tokens);
        }
    }

    async fn run(mut self: Box<Self>, first: Vec<StreamOutput>) {
        let started = crate::clock::now();
        let result = self.relay(first).await;
        self.count_tokens();
        self.source.account();
        match &result {
            Ok(()) => self.source.conclude(BreakerOutcome::Success, None),
            // The provider was answering; the client left.
            Err(Cut::ClientGone) => self.source.conclude(BreakerOutcome::Neutral, None),
            Err(Cut::Failed { message, .. }) => self.source.conclude(BreakerOutcome::Failure, Some(message)),
        }
        if let Some(ticket) = self.ticket.take() {
            // A committed stream used the provider whatever its ending.
            let tokens = self.source.usage.map_or(0, |u| u64::from(u.total_tokens));
            ticket.settle(unix_ms(SystemTime::now()), tokens);
        }
        let provider = self.source.provider.id.clone();
        match result {
            Ok(()) => {
                tracing::info!(request_id = %self.request_id, provider = %provider,
                    continued = self.splice.is_some(), latency_ms = crate::clock::now().saturating_duration_since(started).as_millis() as u64, "stream completed");
            }
            Err(Cut::ClientGone) => {
                tracing::info!(request_id = %self.request_id, provider = %provider, "client closed the stream");
            }
            Err(Cut::Failed { code, message }) => {
                tracing::warn!(request_id = %self.request_id, provider = %provider, code, error = %message, "stream cut");
                let event = serde_json::json!({ "error": {
                    "type": "provider_error",
                    "code": code,
                    "message": crate::redact::redact(&message),
                    "request_id": self.request_id,
                    "provider": provider.as_ref(),
                }});
                // The client has it once the connection takes it; one that
                // left is past telling.
                let _ = self.tx.send(Bytes::from(format!("data: {event}\n\n"))).await;
            }
        }
    }

    async fn relay(&mut self, first: Vec<StreamOutput>) -> Result<(), Cut> {
        for out in first {
            if self.emit(out).await? {
                return self.done().await;
            }
        }
        let mut cutoff = self.continuation.gw.drain.streams_cutoff();
        // One wait for the whole relay, not a new one for every chunk.
        let shutdown = cutoff.wait_for(|cut| *cut);
        tokio::pin!(shutdown);
        loop {
            let now = crate::clock::now();
            if now >= self.deadline {
                return Err(self.too_long());
            }
            let clock = Clock { deadline: self.deadline, last_data: self.source.last_data, last_sent: self.last_sent };
            let step = tokio::select! {
                // The drain deadline passed: end the stream with an error event
                // rather than let the process exit mid-chunk.
                _ = &mut shutdown => {
                    return Err(Cut::Failed { code: "shutdown", message: "the gateway is shutting down".into() });
                }
                step = self.source.next(clock.wake_at(self.timeouts())) => step,
            };
            match step {
                Step::Output(out) => {
                    if self.emit(out).await? {
                        return self.done().await;
                    }
                }
                Step::Eof if self.source.finished => return self.done().await,
                Step::Eof => {
                    self.resume_or_fail(
                        "stream_incomplete",
                        "the upstream stream ended before the answer was complete".into(),
                    )
                    .await?;
                }
                Step::Idle => {
                    // Read afresh: bytes that arrived during the wait count.
                    let clock =
                        Clock { deadline: self.deadline, last_data: self.source.last_data, last_sent: self.last_sent };
                    match clock.on_idle(crate::clock::now(), self.timeouts()) {
                        Wake::TooLong => return Err(self.too_long()),
                        Wake::Stalled => {
                            let message =
                                format!("the upstream sent nothing for {:?}", self.timeouts().stream_stall_timeout);
                            self.resume_or_fail("stream_stalled", message).await?;
                        }
                        Wake::Heartbeat => self.send(Bytes::from_static(b": keep-alive\n\n")).await?,
                        Wake::Wait => {}
                    }
                }
                Step::Cut { code, message } => self.resume_or_fail(code, message).await?,
                Step::Limit { code, message } => return Err(Cut::Failed { code, message }),
            }
        }
    }

    fn too_long(&self) -> Cut {
        Cut::Failed {
            code: "stream_too_long",
            message: format!("the stream exceeded {} ms", self.timeouts().stream_max_duration.as_millis()),
        }
    }

    /// Resumes the answer elsewhere, or fails the stream with the original
    /// reason.
    async fn resume_or_fail(&mut self, code: &'static str, message: String) -> Result<(), Cut> {
        if self.answered.is_empty() {
            return Err(Cut::Failed { code, message });
        }
        let failed = (self.source.provider.clone(), self.source.model.clone());
        let Some(prefill) = self.answered.text().map(str::to_owned) else {
            tracing::warn!(request_id = %self.request_id, provider = %failed.0.id, code, error = %message,
                "stream cut after more content than a continuation may carry");
            return Err(Cut::Failed { code, message });
        };
        tracing::warn!(request_id = %self.request_id, provider = %failed.0.id, model = %failed.1, code,
            error = %message, "stream cut after content; looking for a continuation");
        let remaining = self.deadline.saturating_duration_since(crate::clock::now());
        // Boxed: a continuation is rare, and its future (a whole attempt)
        // would otherwise be part of every open stream's relay.
        let resumed =
            tokio::time::timeout(remaining, Box::pin(self.continuation.resume(&prefill, &failed, &self.request_id)))
                .await;
        match resumed {
            Ok(Some(source)) => {
                tracing::info!(request_id = %self.request_id, from = %failed.0.id, to = %source.provider.id,
                    model = %source.model, "stream continued on another target");
                self.count_tokens();
                self.source.account();
                self.source.conclude(BreakerOutcome::Failure, Some(&message));
                self.source = source;
                self.splice = Some(Box::new(Splice { echo: prefill, held: String::new(), settled: false }));
                self.continuation.gw.log.continuations.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(None) => Err(Cut::Failed { code, message }),
            Err(_) => Err(self.too_long()),
        }
    }

    async fn done(&mut self) -> Result<(), Cut> {
        self.flush_held().await?;
        self.send(Bytes::from_static(b"data: [DONE]\n\n")).await
    }

    /// Writes one batch of chunks; returns whether the stream is done.
    async fn emit(&mut self, output: StreamOutput) -> Result<bool, Cut> {
        let done = output.done;
        if output.chunks.is_empty() {
            return Ok(done);
        }
        let mut buf = Vec::with_capacity(output.chunks.iter().map(|c| c.len() + 8).sum());
        for chunk in output.chunks {
            let chunk = crate::routing::created::fill_created(chunk, crate::routing::created::unix_now);
            let Some(chunk) = self.prepare(chunk) else { continue };
            push_event(&mut buf, &chunk);
        }
        if !buf.is_empty() {
            self.send(Bytes::from(buf)).await?;
        }
        Ok(done)
    }

    /// Notes the content of a chunk and, during a continuation, rewrites it
    /// to belong to the original stream (its `id`, the echo removed).
    /// `None` drops the chunk.
    fn prepare(&mut self, chunk: Vec<u8>) -> Option<Vec<u8>> {
        // With no continuation possible, nothing of a chunk is needed but
        // whether it is a usage chunk to hide, and most chunks cannot be.
        let worth_reading = self.continuation.is_possible() || (self.hide_usage_chunks && may_carry_usage(&chunk));
        if !worth_reading {
            return Some(chunk);
        }
        // The common case reads three fields without building a JSON tree;
        // only a continuation's chunks are rewritten (a tree, then).
        if self.splice.is_none()
            && let Ok(view) = serde_json::from_slice::<ChunkView<'_>>(&chunk)
        {
            if self.hide_usage_chunks && view.is_usage_only() {
                return None; // counted by the source already
            }
            self.note_own(view.id.as_deref(), view.content());
            return Some(chunk);
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(&chunk) else { return Some(chunk) };
        if self.hide_usage_chunks
            && value.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
            && value.get("usage").is_some_and(|u| !u.is_null())
        {
            return None; // counted by the source already
        }
        let content = value.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned);
        let Some(splice) = self.splice.as_mut() else {
            // A chunk the view could not read (a field of an unexpected type).
            self.note_own(value.get("id").and_then(Value::as_str), content.as_deref());
            return Some(chunk);
        };
        if let (Some(id), Some(slot)) = (&self.stream_id, value.get_mut("id")) {
            *slot = Value::String(id.clone());
        }
        // The continuation's own role chunk would repeat the opening.
        if let Some(delta) = value.pointer_mut("/choices/0/delta").and_then(Value::as_object_mut) {
            delta.remove("role");
        }
        if let Some(text) = content {
            let out = if splice.settled {
                text
            } else {
                splice.held.push_str(&text);
                if splice.held.len() < splice.echo.len() && splice.echo.starts_with(&splice.held) {
                    String::new() // may still be an echo: hold it
                } else {
                    splice.settled = true;
                    let held = std::mem::take(&mut splice.held);
                    match held.strip_prefix(splice.echo.as_str()) {
                        Some(rest) => rest.to_owned(),
                        None => held,
                    }
                }
            };
            self.answered.push(&out);
            if let Some(slot) = value.pointer_mut("/choices/0/delta/content") {
                *slot = Value::String(out.clone());
            }
            let has_more = value.pointer("/choices/0/finish_reason").is_some_and(|f| !f.is_null())
                || value.pointer("/choices/0/delta/tool_calls").is_some()
                || value.get("usage").is_some_and(|u| !u.is_null());
            if out.is_empty() && !has_more {
                return None;
            }
        }
        serde_json::to_vec(&value).ok()
    }

    /// Notes a chunk of the stream's own (no continuation yet): the first
    /// `id` seen is the stream's, and the content is the answer so far
    /// (both kept only for a continuation).
    fn note_own(&mut self, id: Option<&str>, content: Option<&str>) {
        if !self.continuation.is_possible() {
            return;
        }
        if self.stream_id.is_none() {
            self.stream_id = id.map(str::to_owned);
        }
        if let Some(text) = content {
            self.answered.push(text);
        }
    }

    /// At the end of a continuation, text held as a possible echo that never
    /// completed is real content: send it.
    async fn flush_held(&mut self) -> Result<(), Cut> {
        let Some(splice) = self.splice.as_mut() else { return Ok(()) };
        if splice.settled || splice.held.is_empty() {
            return Ok(());
        }
        splice.settled = true;
        let held = std::mem::take(&mut splice.held);
        let chunk = serde_json::json!({
            "id": self.stream_id.clone().unwrap_or_default(),
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": held}, "finish_reason": null}],
        });
        self.send(Bytes::from(format!("data: {chunk}\n\n"))).await
    }

    /// Hands bytes to the client's connection; resolves when it asks for
    /// more. A client that stops reading is cut by the server's write-stall
    /// timeout, which ends the stream as a departed client.
    async fn send(&mut self, bytes: Bytes) -> Result<(), Cut> {
        self.tx.send(bytes).await.map_err(|ClientGone| Cut::ClientGone)?;
        self.last_sent = crate::clock::now();
        Ok(())
    }
}

/// The timers of a committed stream.
#[derive(Clone, Copy)]
struct Clock {
    /// `STREAM_MAX_DURATION_MS` after the stream started.
    deadline: Instant,
    /// The last byte from the upstream (the stall timer measures silence).
    last_data: Instant,
    /// The last bytes to the client (a heartbeat follows idle time).
    last_sent: Instant,
}

/// What a relay does when its wait for upstream output ends empty-handed.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    /// The stream's duration cap is reached.
    TooLong,
    /// The upstream has been silent for the stall timeout.
    Stalled,
    /// The client has heard nothing for the idle timeout.
    Heartbeat,
    /// None of these yet (woken early).
    Wait,
}

impl Clock {
    /// When the next of the three timers fires.
    fn wake_at(&self, t: &UpstreamConfig) -> Instant {
        let stall_at = self.last_data + t.stream_stall_timeout;
        let heartbeat_at = t.stream_idle_timeout.map_or(stall_at, |idle| self.last_sent + idle);
        stall_at.min(heartbeat_at).min(self.deadline)
    }

    fn on_idle(&self, now: Instant, t: &UpstreamConfig) -> Wake {
        if now >= self.deadline {
            Wake::TooLong
        } else if now >= self.last_data + t.stream_stall_timeout {
            Wake::Stalled
        } else if t.stream_idle_timeout.is_some_and(|idle| now >= self.last_sent + idle) {
            Wake::Heartbeat
        } else {
            Wake::Wait
        }
    }
}

/// The answer text sent so far, kept as the prefill of a continuation up to
/// a cap. Past the cap the text is dropped, not trimmed to a tail: a
/// continuation asked to go on from a tail would answer a different
/// question, so a longer answer simply is not resumed.
struct Prefill {
    text: String,
    cap: usize,
    /// Some content reached the client.
    any: bool,
    overflowed: bool,
}

impl Prefill {
    fn new(cap: usize) -> Self {
        Self { text: String::new(), cap, any: false, overflowed: false }
    }

    fn push(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.any = true;
        if self.overflowed {
            return;
        }
        if self.text.len().saturating_add(text.len()) > self.cap {
            self.overflowed = true;
            self.text = String::new();
        } else {
            self.text.push_str(text);
        }
    }

    /// No content reached the client.
    fn is_empty(&self) -> bool {
        !self.any
    }

    /// The prefill, while the answer is within the cap.
    fn text(&self) -> Option<&str> {
        (self.any && !self.overflowed).then_some(self.text.as_str())
    }
}

/// Where a cut stream may be resumed: the request's other candidates that
/// accept an assistant prefill.
pub struct Continuation {
    gw: SharedGateway,
    /// The client's body as it came: parsed again only for a continuation,
    /// which is rare, so an open stream holds its bytes and not a JSON tree.
    /// Empty when no continuation is possible.
    body: Bytes,
    /// The route's targets; empty when none but the answering one, and no
    /// continuation is possible.
    candidates: Vec<Candidate>,
}

impl Continuation {
    /// The continuation options of a request whose stream `answering`
    /// opened, among the route's targets `all`. With no other target (an
    /// explicit model), no continuation is possible: the stream keeps
    /// neither the body nor, as it relays, the answer's text. Otherwise the
    /// body is copied: a small one shares the client connection's read
    /// buffer, which hyper would replace with a new one while an open stream
    /// held the old.
    pub fn new(gw: SharedGateway, body: &[u8], all: &[Candidate], answering: &Candidate) -> Self {
        let other = |c: &Candidate| {
            !Arc::ptr_eq(&c.provider, &answering.provider) || c.upstream_model != answering.upstream_model
        };
        if all.iter().any(other) {
            Self { gw, body: Bytes::copy_from_slice(body), candidates: all.to_vec() }
        } else {
            Self { gw, body: Bytes::new(), candidates: Vec::new() }
        }
    }

    /// Whether a cut stream may be resumed on another target.
    fn is_possible(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// Starts the continuation on the first candidate (other than the
    /// `failed` provider and model: another model of the same provider may
    /// continue) that accepts a prefill and answers 2xx. Each candidate gets one
    /// attempt through the failover phases: its breaker and a key are
    /// acquired, the request sent, a refusal classified by its adapter,
    /// decided and reported like any failed attempt (stats, key cooldowns,
    /// breaker), and a reservation that never reached the upstream is
    /// released.
    async fn resume(
        &self,
        partial: &str,
        (failed, failed_model): &(Arc<ProviderEntry>, String),
        request_id: &str,
    ) -> Option<Source> {
        let limits = self.gw.upstream.timeouts();
        let body = Bytes::from(continuation_body(&self.body, partial)?);
        for candidate in &self.candidates {
            let provider = &candidate.provider;
            let same_target = Arc::ptr_eq(provider, failed) && candidate.upstream_model == *failed_model;
            if same_target || !accepts_prefill(provider.live()) {
                continue;
            }
            // Held from here, so the continuation's ending reaches the breaker.
            let Some((adapter, verdict)) =
                acquire_target(&self.gw, provider, &candidate.upstream_model, request_id).await
            else {
                continue;
            };
            if !accepts_prefill(Some(&adapter)) {
                continue; // a canary without prefill: the permit goes back unused
            }
            let keys = provider.keys_for(&candidate.upstream_model);
            let ctx = adapter.context(request_id, &candidate.upstream_model, true);
            let call =
                Call { gw: &self.gw, request_id, provider, adapter: &adapter, ctx: &ctx, keys, upstream_time: None };
            let Ok(mut key) = acquire_key(&call, &candidate.upstream_model, &[], crate::clock::now(), 0).await else {
                continue;
            };
            let failure = match send(&call, &body, &mut key).await {
                Ok(response) if response.status().is_success() => {
                    let head = response_head(&response);
                    match adapter.open_stream(&ctx, &head).await {
                        Ok(session) => {
                            let hold = key.take_hold();
                            let target = (provider.clone(), candidate.upstream_model.clone());
                            let mut source = Source::new(session, response, &adapter, target, hold, limits);
                            source.verdict = Some(verdict);
                            return Some(source);
                        }
                        Err(fault) => {
                            let error = RoutingError::from_fault(&provider.id, &fault);
                            let detail = Some(format!("the adapter could not open the stream: {fault}"));
                            Failed { failure: AttemptFailure::of_fault_error(&error), error, detail }
                        }
                    }
                }
                Ok(response) => classify(&call, response).await,
                Err(failure) => failure,
            };
            tracing::info!(request_id, provider = %provider.id, error = %failure.error.message(), "continuation refused");
            // One attempt per candidate: no retry, no wait, no fallbacks;
            // whatever the decision, the next candidate is tried.
            let context = Context {
                strict: false,
                retries: Retries::NONE,
                retried: 0,
                backoff: Duration::ZERO,
                remaining: Duration::ZERO,
                may_wait_retry_after: false,
                max_retry_after_wait: Duration::ZERO,
                context_fallbacks: false,
            };
            let decision = decide(failure.failure, &context);
            report_failure(&call, key.index, &failure, &decision).await;
            verdict.record_shared(decision.health).await;
        }
        None
    }
}

/// Whether a normalized chunk may hold a `usage` member: it names it, or
/// holds a `\u` escape (a key may be written `"\u0075sage"`). A chunk
/// without either is not a usage chunk.
fn may_carry_usage(chunk: &[u8]) -> bool {
    static USAGE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"usage"));
    static ESCAPE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\\u"));
    USAGE.find(chunk).is_some() || ESCAPE.find(chunk).is_some()
}

/// Whether an adapter takes an assistant prefill (a continuation needs it).
fn accepts_prefill(adapter: Option<&Arc<Adapter>>) -> bool {
    adapter.is_some_and(|a| a.info.capabilities.contains(Capabilities::ASSISTANT_PREFILL))
}

/// The original request with the partial answer appended as an assistant
/// prefill, streaming.
fn continuation_body(body: &[u8], partial: &str) -> Option<Vec<u8>> {
    let mut request: Value = serde_json::from_slice(body).ok()?;
    let messages = request.get_mut("messages")?.as_array_mut()?;
    messages.push(serde_json::json!({"role": "assistant", "content": partial}));
    request["stream"] = Value::Bool(true);
    serde_json::to_vec(&request).ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_chunk_is_read_without_a_json_tree() {
        let view: ChunkView<'_> = serde_json::from_slice(
            br#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a \"q\" b"},"finish_reason":null}],"usage":null}"#,
        )
        .unwrap();
        assert_eq!(view.id.as_deref(), Some("c1"));
        assert_eq!(view.content(), Some("a \"q\" b"));
        assert!(!view.is_usage_only(), "usage null is no usage");
        let usage: ChunkView<'_> =
            serde_json::from_slice(br#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5}}"#)
                .unwrap();
        assert!(usage.is_usage_only() && usage.content().is_none());
        let role: ChunkView<'_> =
            serde_json::from_slice(br#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant"}}]}"#).unwrap();
        assert!(!role.is_usage_only() && role.content().is_none());
        let tool: ChunkView<'_> = serde_json::from_slice(
            br#"{"choices":[{"delta":{"content":null,"tool_calls":[{"index":0}]},"finish_reason":"tool_calls"}]}"#,
        )
        .unwrap();
        assert!(tool.id.is_none() && tool.content().is_none());
    }

    #[test]
    fn an_event_payload_with_line_breaks_gets_one_data_field_per_line() {
        let mut buf = Vec::new();
        super::push_event(&mut buf, b"{\"a\":1}");
        assert_eq!(buf, b"data: {\"a\":1}\n\n");
        let mut buf = Vec::new();
        super::push_event(&mut buf, b"{\"a\":\n1,\r\n\"b\":2\r}");
        assert_eq!(buf, b"data: {\"a\":\ndata: 1,\ndata: \"b\":2\ndata: }\n\n");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn a_chunk_may_carry_usage_only_when_it_names_it_or_holds_an_escape() {
        for chunk in [
            &br#"{"choices":[],"usage":{"total_tokens":5}}"#[..],
            br#"{"choices":[],"\u0075sage":{"total_tokens":5}}"#,
            br#"{"choices":[],"us\u0061ge":{"total_tokens":5}}"#,
            br#"{"choices":[{"delta":{"content":"caf\u00e9"}}]}"#,
        ] {
            assert!(may_carry_usage(chunk), "{}", String::from_utf8_lossy(chunk));
        }
        for chunk in [
            &br#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}"#[..],
            br#"{"choices":[{"delta":{"content":"a \"usa\" b\n"}}]}"#,
            b"",
        ] {
            assert!(!may_carry_usage(chunk), "{}", String::from_utf8_lossy(chunk));
        }
    }

    #[test]
    fn the_continuation_body_appends_the_partial_answer() {
        let request = json!({"model": "free", "messages": [{"role": "user", "content": "Count"}], "stream": true});
        let request = serde_json::to_vec(&request).unwrap();
        let body: Value = serde_json::from_slice(&continuation_body(&request, "1, 2, 3").unwrap()).unwrap();
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2, 3"}])
        );
        assert_eq!(body["stream"], json!(true));
        assert!(continuation_body(br#"{"messages": "x"}"#, "p").is_none());
        assert!(continuation_body(b"{", "p").is_none());
    }

    #[test]
    fn the_prefill_is_kept_up_to_its_cap_then_dropped_not_grown() {
        let mut p = Prefill::new(10);
        assert!(p.is_empty());
        assert_eq!(p.text(), None, "nothing to continue yet");
        p.push("");
        assert!(p.is_empty());
        p.push("Hello");
        p.push(", wor");
        assert_eq!(p.text(), Some("Hello, wor"));
        p.push("l");
        assert_eq!(p.text(), None, "past the cap a continuation is not offered");
        assert!(!p.is_empty(), "content still reached the client");
        for _ in 0..1000 {
            p.push("more text");
        }
        assert_eq!(p.text.capacity(), 0, "nothing is kept past the cap");
        let mut off = Prefill::new(0);
        off.push("a");
        assert_eq!(off.text(), None, "a zero cap never continues");
    }

    fn timeouts(idle: Option<u64>) -> UpstreamConfig {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(1),
            first_byte_timeout: Duration::from_secs(1),
            stream_stall_timeout: Duration::from_millis(1000),
            stream_idle_timeout: idle.map(Duration::from_millis),
            route_timeout: Duration::from_secs(1),
            stream_max_event_bytes: 1 << 20,
            stream_max_bytes: 1 << 26,
            stream_max_duration: Duration::from_secs(60),
            stream_continuation_max_bytes: 1 << 18,
        }
    }

    #[test]
    fn the_stall_timer_measures_upstream_silence_and_heartbeats_client_silence() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let t = timeouts(Some(200));
        // Bytes keep arriving (no event completes) and the client heard
        // nothing: a heartbeat, not a stall.
        let flowing = Clock { deadline: ms(60_000), last_data: ms(1_450), last_sent: ms(0) };
        assert_eq!(flowing.wake_at(&t), ms(200));
        assert_eq!(flowing.on_idle(ms(1_500), &t), Wake::Heartbeat);
        // Silent upstream: stalled once the stall timeout passes.
        let silent = Clock { deadline: ms(60_000), last_data: ms(0), last_sent: ms(900) };
        assert_eq!(silent.on_idle(ms(1_000), &t), Wake::Stalled);
        assert_eq!(silent.on_idle(ms(999), &t), Wake::Wait);
        // The duration cap wins over everything.
        let capped = Clock { deadline: ms(50), last_data: ms(49), last_sent: ms(49) };
        assert_eq!(capped.wake_at(&t), ms(50));
        assert_eq!(capped.on_idle(ms(50), &t), Wake::TooLong);
        // Heartbeats off: only stall and deadline wake the relay.
        let off = timeouts(None);
        let quiet = Clock { deadline: ms(60_000), last_data: ms(100), last_sent: ms(0) };
        assert_eq!(quiet.wake_at(&off), ms(1_100));
        assert_eq!(quiet.on_idle(ms(1_050), &off), Wake::Wait);
    }
}
