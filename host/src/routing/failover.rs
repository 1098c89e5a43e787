//! The failover loop: walks a [`Plan`]'s candidates until one answers.
//!
//! Each attempt goes through the same phases, in this order:
//!
//! 1. **plan**: [`route`] takes the candidates in the plan's order (the
//!    route deadline checked before each) and, for a context-length
//!    failure, the route's context fallbacks.
//! 2. **acquire**: the breaker of the target's model must grant a permit
//!    ([`acquire_target`]: the adapter version, a canary's share included,
//!    and the [`AttemptVerdict`] that will record the outcome), then a key
//!    with room in its windows is reserved ([`acquire_key`]).
//! 3. **send**: the adapter maps the request (wasm) and the host sends it
//!    ([`send`]); a request that never reached the upstream releases its
//!    key reservation.
//! 4. **classify**: a non-2xx is read and classified by the adapter
//!    ([`classify`]); a 2xx is normalized, or for a stream committed once
//!    its first chunk arrives ([`crate::routing::stream::start`]), and what goes
//!    wrong there is classified too. Every failure becomes an
//!    [`AttemptFailure`] and a [`RoutingError`].
//! 5. **decide**: one pure function, [`crate::routing::decide::decide`], says what
//!    the failure leads to (retry the target, wait out a short
//!    `Retry-After`, next key, next target, context fallbacks, stop), what
//!    it means for the breaker and for the key. Its module documentation
//!    holds the table.
//! 6. **report**: [`report_sent`](crate::routing::attempt::report_sent), [`report_failure`] and [`report_answer`]
//!    are the one place that feeds the provider's stats, the key's
//!    cooldowns, `/metrics` and the event feed; the [`AttemptVerdict`]
//!    feeds the breaker (at once, or when a committed stream ends, where
//!    the stream counts its own success or failure).
//!
//! A stream cut after content is resumed through the same acquire, send,
//! classify, decide and report phases ([`crate::routing::stream`]'s continuation).
//! Failover only happens before the first byte reaches the client. Strict
//! mode makes exactly one attempt with one key.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::access::admission::LimitGate;
use crate::access::virtual_keys::Ticket;
use crate::clock;
use crate::config::RoutingConfig;
use crate::json::Json;
use crate::ops::metrics::UpstreamTime;
use crate::ops::stats::unix_ms;
use crate::providers::keys::KeyRing;
use crate::providers::{ProviderEntry, Registry};
use crate::routing::attempt::{
    AttemptVerdict, Call, Failed, KeyGrant, acquire_key, acquire_target, classify, report_failure, send,
};
use crate::routing::decide::{Action, AttemptFailure, Blame, Context, Decision, KeyEffect, Retries, decide};
use crate::routing::error::{Advice, RoutingError};
use crate::routing::needs::Needs;
use crate::routing::router::{Candidate, Plan, PlanKind, RouteTable};
use crate::routing::stream::{self, StreamStart};
use crate::routing::upstream::{UpstreamResponse, response_head};
use crate::state::SharedGateway;
use freellm_limits::breaker::Outcome as BreakerOutcome;
use freellm_runtime::Adapter;
use freellm_runtime::types::{CallContext, FinishReason, ResponseHead, Usage};

/// How an answer was routed, for `X-FreeLLM-Route-Reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteReason {
    /// A concrete model answered by its provider on the first try.
    Direct,
    /// A built-in meta-model (`free`, `free-fast`, ...) answered by its first candidate.
    Meta,
    /// A user-defined route (`[routes.*]`) answered by its first candidate.
    Route,
    /// An earlier attempt failed and another key or provider answered.
    Failover,
}

impl RouteReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Meta => "meta",
            Self::Route => "route",
            Self::Failover => "failover",
        }
    }
}

/// One request to route.
pub struct RouteRequest<'a> {
    /// The gateway.
    pub gw: &'a SharedGateway,
    /// The request id.
    pub request_id: &'a str,
    /// The model as sent.
    pub model: &'a str,
    /// The client's body.
    pub body: Bytes,
    /// What the body says of `stream_options` (a stream asks for usage).
    pub stream_options: StreamOptions,
    /// What the request needs (its rough size in tokens, whether it asks
    /// for JSON), read with the body.
    pub needs: Needs,
    /// `stream: true`.
    pub is_stream: bool,
    /// `X-FreeLLM-Strict`.
    pub strict: bool,
    /// The registry snapshot the plan was made from.
    pub registry: Arc<Registry>,
    /// The route table.
    pub routes: &'a RouteTable,
    /// Retries, backoff and waits, from the same live configuration.
    pub routing: &'a RoutingConfig,
    /// The caller's virtual-key reservation; a stream takes it along and
    /// settles it when it ends.
    pub ticket: std::sync::Mutex<Option<Ticket>>,
    /// Time spent waiting on upstreams (for the gateway-overhead metric).
    pub upstream_time: UpstreamTime,
    /// The client's limits when they are decided while the request is
    /// routed (a fleet): no attempt sends before they pass.
    pub limits: Option<LimitGate>,
}

/// A successful answer and how it was routed.
pub struct Answered {
    /// The response to send (headers not yet decorated).
    pub response: Response,
    /// The provider that answered.
    pub provider: Arc<ProviderEntry>,
    /// Its upstream model.
    pub upstream_model: String,
    /// Why this provider.
    pub reason: RouteReason,
    /// Providers tried, in order.
    pub attempted: Vec<String>,
    /// Usage (non-streaming).
    pub usage: Option<Usage>,
    /// Finish reason (non-streaming).
    pub finish_reason: Option<FinishReason>,
    /// The body sent (non-streaming), for the cache.
    pub body: Option<Bytes>,
}

/// A route that found no answer.
pub struct Unanswered {
    /// Why.
    pub error: RoutingError,
    /// Providers tried, in order.
    pub attempted: Vec<String>,
}

/// What one target attempt came to.
enum TargetOutcome {
    Answered(Box<AnsweredTarget>),
    /// Move on (the failure, if any, is in the request's memory).
    Next,
    /// The prompt is too long for this target: try the context fallbacks.
    ContextFallbacks,
    /// Stop routing and return this error.
    Stop(RoutingError),
}

struct AnsweredTarget {
    response: Response,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
    body: Option<Bytes>,
}

/// Per-request routing memory.
#[derive(Default)]
struct Memory {
    attempted: Vec<String>,
    failures: u32,
    rate_limited: bool,
    last_error: Option<RoutingError>,
    /// What each attempt and each skipped target came to, for the
    /// exhaustion error's `attempts[]`.
    attempts: Vec<Value>,
}

/// The most `attempts[]` entries an exhaustion error carries; a route of
/// many targets and keys stays a bounded answer.
const MAX_ATTEMPT_ENTRIES: usize = 64;

impl Memory {
    fn note(&mut self, id: &str) {
        if !self.attempted.iter().any(|a| a == id) {
            self.attempted.push(id.to_owned());
        }
    }

    /// Records one attempt (or a target passed over) for `attempts[]`:
    /// what it came to, the upstream's status and, for a failure, its
    /// message (redacted, like the whole error body).
    fn record(&mut self, candidate: &Candidate, outcome: &str, status: Option<u16>, message: Option<String>) {
        if self.attempts.len() < MAX_ATTEMPT_ENTRIES {
            let mut entry = json!({
                "provider": candidate.provider.id.as_ref(),
                "model": candidate.upstream_model,
                "outcome": outcome,
                "status": status,
            });
            if let (Some(message), Some(object)) = (message, entry.as_object_mut()) {
                object.insert("message".into(), Value::String(message));
            }
            self.attempts.push(entry);
        }
    }

    /// Counts a failure the route moves past, as `decide` blamed it.
    fn blame(&mut self, blame: Blame, error: RoutingError) {
        match blame {
            Blame::None => {}
            Blame::RateLimited => self.last_error = Some(error),
            Blame::Failure => {
                self.failures += 1;
                self.last_error = Some(error);
            }
        }
    }
}

/// Routes a request through its plan.
pub async fn route(req: &RouteRequest<'_>, plan: Plan) -> Result<Answered, Unanswered> {
    let started = clock::now();
    let deadline = started + req.gw.config.upstream.route_timeout;
    let mut memory = Memory::default();
    let all: Vec<Candidate> = plan.candidates.clone();
    let mut queue: VecDeque<Candidate> = plan.candidates.into();
    let mut fallbacks = Some(plan.context_fallbacks);
    let mut first_try = true;
    while let Some(candidate) = queue.pop_front() {
        if clock::now() >= deadline {
            let message = format!(
                "Routing timeout ({}ms) exceeded for model: {}",
                req.gw.config.upstream.route_timeout.as_millis(),
                req.model
            );
            return Err(Unanswered { error: exhausted(req, &memory, message), attempted: memory.attempted });
        }
        // Only the route's priority-first target, tried first, waits out a
        // short Retry-After: a rotated-in target simply fails over.
        let primary = first_try && plan.primary.as_ref().is_some_and(|p| Arc::ptr_eq(p, &candidate.provider));
        first_try = false;
        let has_fallbacks = fallbacks.as_ref().is_some_and(|f| !f.is_empty());
        let target = TargetRoute { candidate: &candidate, all: &all, primary, deadline, has_fallbacks };
        match attempt_target(req, &target, &mut memory).await {
            TargetOutcome::Answered(a) => {
                let reason = if memory.failures > 0 || memory.rate_limited {
                    RouteReason::Failover
                } else {
                    match plan.kind {
                        PlanKind::Concrete => RouteReason::Direct,
                        PlanKind::Meta => RouteReason::Meta,
                        PlanKind::Route => RouteReason::Route,
                    }
                };
                return Ok(Answered {
                    response: a.response,
                    provider: candidate.provider.clone(),
                    upstream_model: candidate.upstream_model.clone(),
                    reason,
                    attempted: memory.attempted,
                    usage: a.usage,
                    finish_reason: a.finish_reason,
                    body: a.body,
                });
            }
            TargetOutcome::Next => {}
            TargetOutcome::ContextFallbacks => {
                tracing::info!(request_id = %req.request_id, provider = %candidate.provider.id,
                    "prompt too long; trying the route's context fallbacks");
                let more = fallbacks.take().unwrap_or_default();
                queue.extend(more.into_iter().filter(|c| !Arc::ptr_eq(&c.provider, &candidate.provider)));
            }
            TargetOutcome::Stop(error) => return Err(Unanswered { error, attempted: memory.attempted }),
        }
    }
    // Strict mode keeps the one upstream's own error; otherwise every
    // candidate failed, was skipped or is cooling down, and the client gets
    // `all_providers_exhausted` with when to retry and what each attempt
    // came to (the reference's contract, which clients key off).
    let error = match memory.last_error.take() {
        Some(e) if req.strict => e,
        _ => exhausted(req, &memory, format!("All providers exhausted for model: {}", req.model)),
    };
    Err(Unanswered { error, attempted: memory.attempted })
}

/// Where one target stands in the plan.
struct TargetRoute<'c> {
    candidate: &'c Candidate,
    /// Every candidate (a stream's continuation may resume on them).
    all: &'c [Candidate],
    /// The route's primary target, on its first try.
    primary: bool,
    deadline: Instant,
    /// The route still has context fallbacks.
    has_fallbacks: bool,
}

/// Tries one target: the phases of the module documentation, in a loop
/// over keys and bounded retries until `decide` moves on.
async fn attempt_target(req: &RouteRequest<'_>, target: &TargetRoute<'_>, memory: &mut Memory) -> TargetOutcome {
    let candidate = target.candidate;
    let provider = &candidate.provider;
    let Some((adapter, verdict)) = acquire_target(req.gw, provider, &candidate.upstream_model, req.request_id).await
    else {
        memory.record(candidate, "circuit_open", None, None);
        return TargetOutcome::Next;
    };
    // A half-open probe is one attempt: its outcome decides the breaker, and
    // a retry would only hammer a provider that is likely still down.
    let retry_budget = if verdict.is_probe() { Retries::NONE } else { candidate.retries };
    // A committed stream takes this along and records its verdict when it
    // ends; otherwise it is recorded below, once the attempt is decided.
    let verdict = std::sync::Mutex::new(Some(verdict));
    let ctx = adapter.context(req.request_id, &candidate.upstream_model, req.is_stream);
    let call = Call {
        gw: req.gw,
        request_id: req.request_id,
        provider,
        adapter: &adapter,
        ctx: &ctx,
        keys: provider.keys_for(&candidate.upstream_model),
        upstream_time: Some(&req.upstream_time),
    };
    // Streams report usage only when asked: ask the providers that can, and
    // keep the extra usage chunk from clients that did not ask themselves.
    let (body, hide_usage_chunks) = match with_stream_usage(req, &adapter) {
        Some(body) => (body, true),
        None => (req.body.clone(), false),
    };
    let routing = req.routing;
    let mut tried_keys: Vec<usize> = Vec::new();
    let mut retries = 0u32;
    let mut waited_retry_after = false;
    let mut health = BreakerOutcome::Neutral;
    let result = loop {
        if clock::now() >= target.deadline {
            memory.record(candidate, "deadline", None, None);
            break TargetOutcome::Next;
        }
        let acquired =
            acquire_key(&call, &candidate.upstream_model, &tried_keys, clock::now(), req.needs.estimated_tokens).await;
        let mut key = match acquired {
            Ok(key) => key,
            // Keys cooling down or with full windows: a rate limit, with an
            // ETA. Keys all tried or invalid: nothing more to do here.
            Err(wait) => {
                memory.rate_limited |= wait != Duration::MAX;
                if tried_keys.is_empty() {
                    let outcome = if wait == Duration::MAX { "no_usable_key" } else { "cooling_down" };
                    memory.record(candidate, outcome, None, None);
                }
                break TargetOutcome::Next;
            }
        };
        // The client's limits, decided meanwhile: nothing leaves for an
        // upstream before they pass. A refusal is the request's, not the
        // target's: the key is released and the breaker hears nothing.
        if let Some(gate) = &req.limits
            && let Err(refusal) = gate.passed().await
        {
            key.release();
            break TargetOutcome::Stop(RoutingError::Limited(refusal));
        }
        memory.note(&provider.id);
        let key_index = key.index;
        let answer = match send(&call, &body, &mut key).await {
            Ok(response) if response.status().is_success() => {
                answer(req, &call, target, key, response, hide_usage_chunks, &verdict).await
            }
            Ok(response) => Err(classify(&call, response).await),
            Err(failed) => Err(failed),
        };
        let failed = match answer {
            Ok(answered) => {
                report_answer(req, &call, key_index, &answered);
                health = BreakerOutcome::Success;
                break TargetOutcome::Answered(Box::new(answered));
            }
            Err(failed) => failed,
        };
        let now = clock::now();
        let context = Context {
            strict: req.strict,
            retries: retry_budget,
            retried: retries,
            backoff: jittered_backoff(routing.retry_backoff, retries),
            remaining: target.deadline.saturating_duration_since(now),
            may_wait_retry_after: target.primary && !waited_retry_after,
            max_retry_after_wait: routing.max_retry_after_wait,
            context_fallbacks: target.has_fallbacks,
        };
        let decision = decide(failed.failure, &context);
        report_failure(&call, key_index, &failed, &decision).await;
        memory.record(candidate, failed.failure.outcome(), failed.failure.status(), Some(failed.error.message()));
        health = decision.health;
        if decision.blame == Blame::RateLimited {
            memory.rate_limited = true;
        }
        match decision.action {
            Action::RetryTarget { after } => {
                tokio::time::sleep(after).await;
                retries += 1;
                tried_keys.clear();
            }
            Action::WaitOutKey { after } => {
                tracing::info!(request_id = %req.request_id, provider = %provider.id, wait_ms = after.as_millis() as u64,
                    "waiting out a short Retry-After on the primary target");
                waited_retry_after = true;
                tokio::time::sleep(after).await;
                call.keys.clear(key_index);
            }
            Action::NextKey => {
                memory.blame(decision.blame, failed.error);
                tried_keys.push(key_index);
            }
            Action::NextTarget => {
                memory.blame(decision.blame, failed.error);
                break TargetOutcome::Next;
            }
            Action::ContextFallbacks => {
                memory.blame(decision.blame, failed.error);
                break TargetOutcome::ContextFallbacks;
            }
            Action::Stop => break TargetOutcome::Stop(stop_error(call.keys, key_index, failed, &decision)),
        }
    };
    if let Some(verdict) = verdict.into_inner().unwrap_or_else(|e| e.into_inner()) {
        verdict.record_shared(health).await;
    }
    result
}

/// The error a stopped route returns: a strict request's rate limit says
/// when the key is usable again; anything else is the failure itself.
fn stop_error(keys: &KeyRing, key_index: usize, failed: Failed, decision: &Decision) -> RoutingError {
    let retry_after_ms = match decision.key {
        KeyEffect::CoolDown(wait) => Some(wait.as_millis() as u64),
        KeyEffect::ExhaustQuota(_) => keys.cooldown_left(key_index).map(|d| d.as_millis() as u64),
        KeyEffect::Keep | KeyEffect::Disable => return failed.error,
    };
    if decision.blame != Blame::RateLimited {
        return failed.error;
    }
    match failed.error {
        RoutingError::Provider { provider, message, .. } => {
            RoutingError::RateLimited { provider, message, retry_after_ms }
        }
        other => other,
    }
}

/// Classify, 2xx part: a non-streaming answer is read and normalized; a
/// stream is committed once its first chunk arrives. What goes wrong
/// before that is a failed attempt like any other.
async fn answer(
    req: &RouteRequest<'_>,
    call: &Call<'_>,
    target: &TargetRoute<'_>,
    mut key: KeyGrant,
    response: UpstreamResponse,
    hide_usage_chunks: bool,
    verdict: &std::sync::Mutex<Option<AttemptVerdict>>,
) -> Result<AnsweredTarget, Failed> {
    let provider = call.provider;
    let head = response_head(&response);
    if req.is_stream {
        let start = StreamStart {
            adapter: call.adapter.clone(),
            ctx: call.ctx.clone(),
            head,
            response,
            first_token_timeout: req.routing.first_token_timeout,
            request_id: req.request_id.to_owned(),
            provider: provider.clone(),
            hold: key.take_hold(),
            hide_usage_chunks,
            continuation: stream::Continuation::new(req.gw.clone(), &req.body, target.all, target.candidate),
            model: target.candidate.upstream_model.clone(),
            ticket: &req.ticket,
            verdict,
        };
        // The stream settles its own reservations when it ends. Boxed: the
        // opening of a stream is the largest future of an attempt, and every
        // request's future (plain answers too) would otherwise carry it.
        return Box::pin(stream::start(start))
            .await
            .map(|response| AnsweredTarget { response, usage: None, finish_reason: None, body: None })
            .map_err(|not_committed| {
                let detail = Some(not_committed.error.message());
                Failed { failure: not_committed.failure, error: not_committed.error, detail }
            });
    }
    let answered = complete(req, call.adapter, call.ctx, head, response, provider).await;
    let tokens = answered.as_ref().ok().and_then(|a| a.usage.map(|u| u.total_tokens));
    if let Some(hold) = key.take_hold() {
        hold.settle(tokens);
    }
    answered.map_err(|error| {
        // A trapping adapter would trap again: no retry on it.
        let failure = match error {
            RoutingError::AdapterFault { .. } => AttemptFailure::AdapterFault,
            RoutingError::AtCapacity => AttemptFailure::AtCapacity,
            _ => AttemptFailure::BrokenAnswer,
        };
        Failed { failure, detail: Some(error.message()), error }
    })
}

/// Report, answer part: the key is usable again, the tokens are counted
/// (`/metrics`, the provider's usage) and a non-streaming success is
/// counted; a committed stream counts its own ending.
fn report_answer(req: &RouteRequest<'_>, call: &Call<'_>, key_index: usize, answered: &AnsweredTarget) {
    let provider = call.provider;
    call.keys.clear(key_index);
    if let Some(u) = answered.usage {
        req.gw.metrics.record_tokens(&provider.id, u.prompt_tokens, u.completion_tokens);
        provider.stats.usage.record(
            unix_ms(SystemTime::now()),
            u64::from(u.prompt_tokens),
            u64::from(u.completion_tokens),
        );
    }
    if !req.is_stream {
        provider.stats.success();
    }
}

/// For a stream to a provider that reports usage on request: the body with
/// `stream_options.include_usage = true`, unless the client set it. With no
/// `stream_options` at all (the usual case) the field is put in front of
/// the client's own, whose text is left as it came; an object without
/// `include_usage` is merged through the tree.
fn with_stream_usage(req: &RouteRequest<'_>, adapter: &Adapter) -> Option<Bytes> {
    use freellm_runtime::types::Capabilities;
    if !req.is_stream || !adapter.info.capabilities.contains(Capabilities::STREAM_USAGE) {
        return None;
    }
    match req.stream_options {
        StreamOptions::Absent => {
            with_leading_field(&req.body, br#""stream_options":{"include_usage":true}"#).map(Bytes::from)
        }
        StreamOptions::UsageSet => None,
        StreamOptions::Other => {
            // Rare: the body is read again, as a tree to change.
            let mut request: Value = serde_json::from_slice(&req.body).ok()?;
            let options = request.as_object_mut()?.get_mut("stream_options")?.as_object_mut()?;
            options.insert("include_usage".into(), Value::Bool(true));
            serde_json::to_vec(&request).ok().map(Bytes::from)
        }
    }
}

/// What a request body says of `stream_options`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamOptions {
    /// No `stream_options`.
    Absent,
    /// `stream_options.include_usage` is there (whatever its value: the
    /// client's choice stands).
    UsageSet,
    /// `stream_options` without `include_usage` (or not an object).
    Other,
}

impl StreamOptions {
    /// Reads a request body's `stream_options`.
    pub fn of(request: &Json<'_>) -> Self {
        match request.get("stream_options") {
            None => Self::Absent,
            Some(options) if options.get("include_usage").is_some() => Self::UsageSet,
            Some(_) => Self::Other,
        }
    }
}

/// The backoff before same-target retry number `retry` (from 0):
/// `base * 2^retry`, jittered to 50-150 % so concurrent retries spread.
fn jittered_backoff(base: Duration, retry: u32) -> Duration {
    base.saturating_mul(1u32 << retry.min(6)).mul_f64(0.5 + fastrand::f64())
}

/// The `all_providers_exhausted` error with the reference's advice fields.
fn exhausted(req: &RouteRequest<'_>, memory: &Memory, message: String) -> RoutingError {
    let now = clock::now();
    let registry = &req.registry;
    // Providers tried first, then every other enabled one.
    let mut order: Vec<&Arc<ProviderEntry>> = memory.attempted.iter().filter_map(|id| registry.get(id)).collect();
    for p in registry.enabled() {
        if !order.iter().any(|o| Arc::ptr_eq(o, p)) {
            order.push(p);
        }
    }
    let providers: Vec<Value> = order
        .iter()
        .map(|p| {
            json!({
                "id": p.id.as_ref(),
                "retry_after_ms": p.available_in(now).map(|d| d.as_millis() as u64),
                "keys_available": p.keys.available(now),
                "keys_total": p.keys.len(),
                "circuit_state": p.breakers.summary(now).state,
            })
        })
        .collect();
    let retry_after_ms = registry.enabled().filter_map(|p| p.available_in(now)).min().map(|d| d.as_millis() as u64);
    let suggestions: Vec<Value> = ["free-fast", "free-smart"]
        .iter()
        .filter(|name| **name != req.model)
        .filter_map(|name| {
            let route = req.routes.get(name)?;
            let eta = route_eta(registry, route, now)?;
            Some(json!({"model": name, "available_in_ms": eta.as_millis() as u64}))
        })
        .collect();
    let advice = Advice { retry_after_ms, providers, suggestions, attempts: memory.attempts.clone() };
    RoutingError::Exhausted { model: req.model.to_owned(), message, advice: Box::new(advice) }
}

/// When the first provider of `route` can take a request again.
fn route_eta(registry: &Registry, route: &crate::routing::router::Route, now: Instant) -> Option<Duration> {
    use crate::routing::router::{Target, current_targets};
    let mut best: Option<Duration> = None;
    let mut consider = |p: &ProviderEntry| {
        if let Some(d) = p.available_in(now) {
            best = Some(best.map_or(d, |b| b.min(d)));
        }
    };
    for t in &current_targets(registry, route) {
        match t {
            Target::AllProviders => registry.enabled().for_each(|p| consider(p)),
            Target::Provider { id, .. } => {
                if let Some(p) = registry.get(id).filter(|p| p.live().is_some()) {
                    consider(p);
                }
            }
        }
    }
    best
}

/// Reads, normalizes (wasm) and returns a 2xx non-streaming answer.
async fn complete(
    req: &RouteRequest<'_>,
    adapter: &Adapter,
    ctx: &CallContext,
    head: ResponseHead,
    response: UpstreamResponse,
    provider: &ProviderEntry,
) -> Result<AnsweredTarget, RoutingError> {
    let upstream_error = |message: String| RoutingError::provider(&provider.id, message, None);
    let read_at = clock::now();
    let body = req.gw.upstream.read_body(response).await.map_err(|e| upstream_error(e.to_string()))?;
    req.upstream_time.add(clock::now().saturating_duration_since(read_at));
    let normalized = match adapter.normalize_response(ctx, &head, &body).await {
        Ok(Ok(n)) => n,
        Ok(Err(failure)) => return Err(upstream_error(failure.message)),
        Err(fault) => return Err(RoutingError::from_fault(&provider.id, &fault)),
    };
    let body = crate::routing::created::fill_created(normalized.body, crate::routing::created::unix_now);
    let out = with_provider_marker(body, &provider.id).ok_or_else(|| RoutingError::AdapterFault {
        provider: provider.id.to_string(),
        message: format!("adapter \"{}\" returned a body that is not a JSON object", provider.id),
    })?;
    let out = Bytes::from(out);
    let mut response = Response::new(Body::from(out.clone()));
    // Room for the headers the edge and the route add, allocated once.
    response.headers_mut().reserve(ANSWER_HEADERS);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if normalized.finish_reason == Some(FinishReason::Length) && req.needs.wants_json() {
        response.headers_mut().insert("x-freellm-warning", HeaderValue::from_static("json-possibly-truncated"));
    }
    Ok(AnsweredTarget { response, usage: normalized.usage, finish_reason: normalized.finish_reason, body: Some(out) })
}

/// The headers an answer gets on its way out (content type, routing
/// headers, request id, instance, CORS), room made for them at once.
const ANSWER_HEADERS: usize = 16;

/// Inserts `"x_freellm_provider":"<id>"` as the first field of a JSON object
/// without re-serializing it.
fn with_provider_marker(body: Vec<u8>, provider: &str) -> Option<Vec<u8>> {
    const NAME: &[u8] = b"\"x_freellm_provider\":";
    let mut field = Vec::with_capacity(NAME.len() + provider.len() + 2);
    field.extend_from_slice(NAME);
    serde_json::to_writer(&mut field, provider).ok()?;
    with_leading_field(&body, &field)
}

/// The JSON object `body` with `field` (`"name":value`) as its first
/// member, the rest of its text as it was; `None` when `body` is not an
/// object.
fn with_leading_field(body: &[u8], field: &[u8]) -> Option<Vec<u8>> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[start] != b'{' {
        return None;
    }
    let rest = &body[start + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    // Exactly the length written: `Bytes` then takes the buffer as it is
    // (spare capacity would cost it an allocation of its own).
    let mut out = Vec::with_capacity(1 + field.len() + usize::from(!empty) + rest.len());
    out.push(b'{');
    out.extend_from_slice(field);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_marker_is_inserted_first() {
        let out = with_provider_marker(br#" {"id":"x","choices":[]}"#.to_vec(), "groq").unwrap();
        assert_eq!(out, br#"{"x_freellm_provider":"groq","id":"x","choices":[]}"#);
        assert_eq!(with_provider_marker(b"{ }".to_vec(), "g").unwrap(), br#"{"x_freellm_provider":"g" }"#);
        assert!(with_provider_marker(b"[1]".to_vec(), "g").is_none());
        assert!(with_provider_marker(b"".to_vec(), "g").is_none());
    }

    #[test]
    fn a_leading_field_goes_in_front_of_the_text_as_it_came() {
        let field = br#""stream_options":{"include_usage":true}"#;
        let body = br#"{"model":"m","messages":[{"role":"user","content":"a\u00e9 \"q\""}],"n":1.0}"#;
        let out = with_leading_field(body, field).unwrap();
        assert_eq!(out, [&b"{"[..], field, b",", &body[1..]].concat());
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["stream_options"], json!({"include_usage": true}));
        assert_eq!(parsed["messages"][0]["content"], json!("a\u{e9} \"q\""));
        assert_eq!(with_leading_field(b" {\n}", b"\"a\":1").unwrap(), b"{\"a\":1\n}");
        assert!(with_leading_field(b"[]", field).is_none());
        assert!(with_leading_field(b"  ", field).is_none());
    }

    #[test]
    fn the_backoff_doubles_per_retry_within_its_jitter() {
        let base = Duration::from_millis(100);
        for retry in 0..4u32 {
            let nominal = base * (1 << retry);
            for _ in 0..50 {
                let b = jittered_backoff(base, retry);
                assert!(b >= nominal / 2 && b <= nominal * 3 / 2, "retry {retry}: {b:?}");
            }
        }
        assert!(jittered_backoff(base, 40) <= base * 64 * 3 / 2, "the doubling is capped");
    }

    #[test]
    fn stream_options_are_read_in_three_cases() {
        let of = |text: &str| StreamOptions::of(&Json::parse(text).unwrap());
        assert_eq!(of(r#"{"model":"m"}"#), StreamOptions::Absent);
        assert_eq!(of(r#"{"stream_options":{"include_usage":false}}"#), StreamOptions::UsageSet);
        assert_eq!(of(r#"{"stream_options":{"include_usage":null}}"#), StreamOptions::UsageSet);
        assert_eq!(of(r#"{"stream_options":{}}"#), StreamOptions::Other);
        assert_eq!(of(r#"{"stream_options":null}"#), StreamOptions::Other);
    }
}
