//! The failover loop: walks a [`Plan`]'s candidates until one answers.
//!
//! Per target: the circuit breaker must admit the call; a key with room in
//! its windows is picked; the adapter maps the request (wasm); the host
//! sends it; a 2xx is normalized (or, for a stream, committed once its first
//! chunk arrives), anything else is classified by the adapter.
//!
//! | Failure | Effect |
//! |---|---|
//! | rate-limited | key cools for the clamped `Retry-After` (60 s default); next key, else next target. A short wait on the route's primary target is waited out once when the deadline allows. |
//! | quota-exhausted | key cools until the quota resets; next key, else next target |
//! | key-invalid | key taken out (reported in status); next key |
//! | transient, timeout, connection error, adapter fault | retried on the same target with jittered backoff (bounded), then breaker failure and next target |
//! | unsupported | next target, no breaker effect |
//! | context-length | the route's context fallbacks are tried, else the error is returned |
//! | request-invalid, content-filter | returned at once with the provider's reason |
//!
//! Failover only happens before the first byte reaches the client. Strict
//! mode makes exactly one attempt with one key.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::breaker::{Outcome as BreakerOutcome, Permit};
use crate::error::ApiError;
use crate::keys::{DEFAULT_COOLDOWN, clamp_cooldown};
use crate::plugins::types::{CallContext, Failure, FailureKind, FinishReason, ResponseHead, Usage};
use crate::plugins::{Adapter, ProviderEntry, Registry};
use crate::router::{Candidate, Plan, PlanKind, RouteTable};
use crate::state::SharedGateway;
use crate::stats::unix_ms;
use crate::stream::{self, StreamStart};
use crate::upstream::{UpstreamError, UpstreamResponse, response_head};
use crate::virtual_keys::Ticket;

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
    /// The parsed body (for continuations).
    pub request: Arc<Value>,
    /// `stream: true`.
    pub is_stream: bool,
    /// `X-FreeLLM-Strict`.
    pub strict: bool,
    /// Rough prompt tokens, for key windows.
    pub estimated_tokens: u32,
    /// The registry snapshot the plan was made from.
    pub registry: Arc<Registry>,
    /// The route table.
    pub routes: &'a RouteTable,
    /// The caller's virtual-key reservation; a stream takes it along and
    /// settles it when it ends.
    pub ticket: std::sync::Mutex<Option<Ticket>>,
    /// Time spent waiting on upstreams (for the gateway-overhead metric).
    pub upstream_time: crate::metrics::UpstreamTime,
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
    /// What the client gets.
    pub error: ApiError,
    /// Providers tried, in order.
    pub attempted: Vec<String>,
}

/// What one target attempt came to.
enum TargetOutcome {
    Answered(Box<AnsweredTarget>),
    /// Move on; the error is kept for the final report.
    Next(Option<ApiError>),
    /// The prompt is too long for this target.
    ContextLength(ApiError),
    /// Stop routing and return this error.
    Stop(ApiError),
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
    last_error: Option<ApiError>,
}

impl Memory {
    fn note(&mut self, id: &str) {
        if !self.attempted.iter().any(|a| a == id) {
            self.attempted.push(id.to_owned());
        }
    }
}

/// Routes a request through its plan.
pub async fn route(req: &RouteRequest<'_>, plan: Plan) -> Result<Answered, Unanswered> {
    let started = Instant::now();
    let deadline = started + req.gw.config.upstream.route_timeout;
    let mut memory = Memory::default();
    let all: Vec<Candidate> = plan.candidates.clone();
    let mut queue: VecDeque<Candidate> = plan.candidates.into();
    let mut fallbacks = Some(plan.context_fallbacks);
    let mut first_try = true;
    while let Some(candidate) = queue.pop_front() {
        if Instant::now() >= deadline {
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
        let outcome = attempt_target(req, &candidate, &all, primary, deadline, &mut memory).await;
        match outcome {
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
            TargetOutcome::Next(error) => {
                if let Some(e) = error {
                    memory.failures += 1;
                    memory.last_error = Some(e);
                }
            }
            TargetOutcome::ContextLength(error) => match fallbacks.take() {
                Some(more) if !more.is_empty() && !req.strict => {
                    tracing::info!(request_id = %req.request_id, provider = %candidate.provider.id,
                        "prompt too long; trying the route's context fallbacks");
                    memory.failures += 1;
                    memory.last_error = Some(error);
                    queue.extend(more.into_iter().filter(|c| !Arc::ptr_eq(&c.provider, &candidate.provider)));
                }
                _ => return Err(Unanswered { error, attempted: memory.attempted }),
            },
            TargetOutcome::Stop(error) => return Err(Unanswered { error, attempted: memory.attempted }),
        }
    }
    // Every candidate failed outright (no rate limit involved): the last
    // failure says more than a generic exhaustion. Otherwise the client gets
    // `all_providers_exhausted` with when to retry.
    let error = match memory.last_error.take() {
        Some(e) if !memory.rate_limited => e,
        _ => exhausted(req, &memory, format!("All providers exhausted for model: {}", req.model)),
    };
    Err(Unanswered { error, attempted: memory.attempted })
}

/// Tries one target: keys in rotation, bounded retries, breaker accounting.
async fn attempt_target(
    req: &RouteRequest<'_>,
    candidate: &Candidate,
    all: &[Candidate],
    primary: bool,
    deadline: Instant,
    memory: &mut Memory,
) -> TargetOutcome {
    let provider = &candidate.provider;
    // The adapter version for this request: a canary takes its share.
    let Some((adapter, on_canary)) = provider.select_adapter() else { return TargetOutcome::Next(None) };
    let permit = match provider.breaker.try_acquire(Instant::now()) {
        Ok(p) => p,
        Err(open) => {
            tracing::debug!(request_id = %req.request_id, provider = %provider.id, retry_in_ms = open.retry_in.as_millis() as u64,
                "circuit open; skipping");
            return TargetOutcome::Next(None);
        }
    };
    // A half-open probe is one attempt: its outcome decides the breaker, and
    // a retry would only hammer a provider that is likely still down.
    let retry_budget = if permit.is_probe() { 0 } else { candidate.retries };
    // A committed stream takes this along and records its verdict when it
    // ends; otherwise it is recorded below, once the attempt is decided.
    let verdict = std::sync::Mutex::new(Some(AttemptVerdict {
        gw: req.gw.clone(),
        provider: provider.clone(),
        permit,
        on_canary,
    }));
    let routing = &req.gw.config.routing;
    let ctx = adapter.context(req.request_id, &candidate.upstream_model, req.is_stream);
    // Streams report usage only when asked: ask the providers that can, and
    // keep the extra usage chunk from clients that did not ask themselves.
    let (body, hide_usage_chunks) = match with_stream_usage(req, &adapter) {
        Some(body) => (body, true),
        None => (req.body.clone(), false),
    };
    // A model with limits of its own (contract 0.2) is counted in its own
    // windows; every other model in the provider's.
    let keys = provider.keys_for(&candidate.upstream_model);
    let mut tried_keys: Vec<usize> = Vec::new();
    let mut transient_tries = 0u32;
    let mut waited_retry_after = false;
    let mut breaker_outcome = BreakerOutcome::Neutral;
    let result = loop {
        if Instant::now() >= deadline {
            break TargetOutcome::Next(None);
        }
        let picked = match keys.pick(&tried_keys, Instant::now(), req.estimated_tokens) {
            Ok(p) => p,
            // Keys cooling down or with full windows: a rate limit, with an
            // ETA. Keys all tried or invalid: nothing more to do here.
            Err(wait) => {
                memory.rate_limited |= wait != Duration::MAX;
                break TargetOutcome::Next(None);
            }
        };
        memory.note(&provider.id);
        let key_index = picked.index;
        let secret = picked.secret.map(str::to_owned);
        let reservation = picked.reservation;

        let upstream_request = match adapter.map_request(&ctx, &body).await {
            Ok(Ok(r)) => r,
            Ok(Err(failure)) => {
                keys.release(key_index, reservation);
                break match failure.kind {
                    FailureKind::Unsupported => TargetOutcome::Next(None),
                    FailureKind::ContextLength => TargetOutcome::ContextLength(provider_error(provider, &failure)),
                    FailureKind::RequestInvalid | FailureKind::ContentFilter => {
                        TargetOutcome::Stop(provider_error(provider, &failure))
                    }
                    _ => TargetOutcome::Next(Some(provider_error(provider, &failure))),
                };
            }
            Err(fault) => {
                keys.release(key_index, reservation);
                breaker_outcome = BreakerOutcome::Failure;
                let error = ApiError::AdapterFault { provider: provider.id.to_string(), message: fault.to_string() };
                provider.stats.failure(unix_ms(SystemTime::now()), false, &fault.to_string());
                break TargetOutcome::Next(Some(error));
            }
        };

        provider.stats.attempt(unix_ms(SystemTime::now()));
        let sent_at = Instant::now();
        let sent =
            req.gw.upstream.send(&provider.base_url, upstream_request, &adapter.info.auth, secret.as_deref()).await;
        observe_upstream(req, provider, sent_at.elapsed());
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(request_id = %req.request_id, provider = %provider.id, error = %e, "upstream attempt failed");
                provider.stats.failure(unix_ms(SystemTime::now()), false, &e.to_string());
                if let UpstreamError::BadAdapterRequest(m) = e {
                    keys.release(key_index, reservation);
                    breaker_outcome = BreakerOutcome::Failure;
                    break TargetOutcome::Next(Some(ApiError::AdapterFault {
                        provider: provider.id.to_string(),
                        message: m,
                    }));
                }
                let error = ApiError::ProviderUpstream {
                    provider: provider.id.to_string(),
                    message: format!("Provider {} failed: {e}", provider.id),
                    upstream_code: None,
                };
                if req.strict {
                    break TargetOutcome::Stop(error);
                }
                // A silent upstream moves on at once: a retry on it would
                // cost the caller another full timeout. Same-target retries
                // are for fast failures (refused, reset).
                if !e.is_timeout()
                    && retry_transient(&mut transient_tries, retry_budget, routing.retry_backoff, deadline).await
                {
                    tried_keys.clear();
                    continue;
                }
                breaker_outcome = BreakerOutcome::Failure;
                break TargetOutcome::Next(Some(error));
            }
        };
        let head = response_head(&response);

        if response.status().is_success() {
            let answered = if req.is_stream {
                let start = StreamStart {
                    adapter: adapter.clone(),
                    ctx: ctx.clone(),
                    head,
                    response,
                    timeouts: *req.gw.upstream.timeouts(),
                    first_token_timeout: req.gw.config.routing.first_token_timeout,
                    request_id: req.request_id.to_owned(),
                    provider: provider.clone(),
                    key_index,
                    reservation,
                    hide_usage_chunks,
                    continuation: stream::Continuation::new(req.gw.clone(), req.request.clone(), all.to_vec()),
                    ticket: &req.ticket,
                    verdict: &verdict,
                };
                // The stream settles its own reservations when it ends.
                stream::start(start).await.map(|response| AnsweredTarget {
                    response,
                    usage: None,
                    finish_reason: None,
                    body: None,
                })
            } else {
                let answered = complete(req, &adapter, &ctx, head, response, provider).await;
                let tokens = answered.as_ref().ok().and_then(|a| a.usage.map(|u| u.total_tokens));
                keys.settle(key_index, reservation, tokens);
                answered
            };
            match answered {
                Ok(a) => {
                    keys.clear(key_index);
                    if let Some(u) = a.usage {
                        req.gw.metrics.record_tokens(&provider.id, u.prompt_tokens, u.completion_tokens);
                        provider.stats.usage.record(
                            unix_ms(SystemTime::now()),
                            u64::from(u.prompt_tokens),
                            u64::from(u.completion_tokens),
                        );
                    }
                    // A committed stream counts its success or failure
                    // when it ends (with the verdict it took along).
                    if !req.is_stream {
                        provider.stats.success();
                    }
                    breaker_outcome = BreakerOutcome::Success;
                    break TargetOutcome::Answered(Box::new(a));
                }
                Err(error) => {
                    provider.stats.failure(unix_ms(SystemTime::now()), false, &error.message());
                    if req.strict {
                        break TargetOutcome::Stop(error);
                    }
                    // A trapping adapter would trap again: no retry on it.
                    let retryable = !matches!(error, ApiError::AdapterFault { .. });
                    if retryable
                        && retry_transient(&mut transient_tries, retry_budget, routing.retry_backoff, deadline).await
                    {
                        continue;
                    }
                    breaker_outcome = BreakerOutcome::Failure;
                    break TargetOutcome::Next(Some(error));
                }
            }
        }

        let status = head.status;
        let error_body = req.gw.upstream.read_body(response).await.unwrap_or_default();
        let failure = match adapter.classify_failure(&ctx, &head, &error_body).await {
            Ok(f) => f,
            Err(fault) => Failure {
                kind: FailureKind::Transient,
                message: format!("{status} from upstream; {fault}"),
                retry_after_ms: None,
                upstream_code: None,
            },
        };
        let limited = matches!(failure.kind, FailureKind::RateLimited | FailureKind::QuotaExhausted);
        provider.stats.failure(unix_ms(SystemTime::now()), limited, &failure.message);
        tracing::warn!(
            request_id = %req.request_id, provider = %provider.id, key_index, status, kind = ?failure.kind,
            retry_after_ms = failure.retry_after_ms, "upstream refused"
        );
        match failure.kind {
            FailureKind::RateLimited => {
                memory.rate_limited = true;
                let wait = failure.retry_after_ms.map(Duration::from_millis);
                keys.cool_down(key_index, clamp_cooldown(wait.unwrap_or(DEFAULT_COOLDOWN)));
                req.gw.events.publish_key_cooldown(&provider.id, key_index, keys.cooldown_left(key_index));
                if req.strict {
                    break TargetOutcome::Stop(ApiError::ProviderRateLimited {
                        provider: provider.id.to_string(),
                        message: failure.message.clone(),
                        retry_after_ms: Some(clamp_cooldown(wait.unwrap_or(DEFAULT_COOLDOWN)).as_millis() as u64),
                    });
                }
                // A short wait on the primary target is cheaper than failing over.
                if let Some(wait) = wait
                    && primary
                    && !waited_retry_after
                    && wait <= routing.max_retry_after_wait
                    && Instant::now() + wait < deadline
                {
                    tracing::info!(request_id = %req.request_id, provider = %provider.id, wait_ms = wait.as_millis() as u64,
                        "waiting out a short Retry-After on the primary target");
                    waited_retry_after = true;
                    tokio::time::sleep(wait).await;
                    keys.clear(key_index);
                    continue;
                }
                memory.last_error = Some(provider_error(provider, &failure));
                tried_keys.push(key_index);
            }
            FailureKind::QuotaExhausted => {
                memory.rate_limited = true;
                keys.exhaust_quota(key_index, failure.retry_after_ms.map(Duration::from_millis), SystemTime::now());
                req.gw.events.publish_key_cooldown(&provider.id, key_index, keys.cooldown_left(key_index));
                if req.strict {
                    break TargetOutcome::Stop(ApiError::ProviderRateLimited {
                        provider: provider.id.to_string(),
                        message: failure.message.clone(),
                        retry_after_ms: keys.cooldown_left(key_index).map(|d| d.as_millis() as u64),
                    });
                }
                memory.last_error = Some(provider_error(provider, &failure));
                tried_keys.push(key_index);
            }
            FailureKind::KeyInvalid => {
                tracing::error!(provider = %provider.id, key_index, "upstream rejected the key; taking it out of rotation");
                provider.disable_key(key_index, &failure.message);
                let error = provider_error(provider, &failure);
                if req.strict {
                    break TargetOutcome::Stop(error);
                }
                memory.failures += 1;
                memory.last_error = Some(error);
                tried_keys.push(key_index);
            }
            FailureKind::Transient => {
                let error = provider_error(provider, &failure);
                if let Some(ms) = failure.retry_after_ms {
                    keys.cool_down(key_index, clamp_cooldown(Duration::from_millis(ms)));
                    req.gw.events.publish_key_cooldown(&provider.id, key_index, keys.cooldown_left(key_index));
                }
                // A client error (an adapter may still call it transient, as
                // Ollama's 404 for a model it has not pulled) says nothing
                // about the provider's health, and the same request would
                // get the same answer: fail over, but neither retry it nor
                // count it against the breaker.
                let health = if is_client_error(status) { BreakerOutcome::Neutral } else { BreakerOutcome::Failure };
                if req.strict {
                    breaker_outcome = health;
                    break TargetOutcome::Stop(error);
                }
                if health == BreakerOutcome::Failure
                    && retry_transient(&mut transient_tries, retry_budget, routing.retry_backoff, deadline).await
                {
                    tried_keys.clear();
                    continue;
                }
                breaker_outcome = health;
                break TargetOutcome::Next(Some(error));
            }
            FailureKind::Unsupported => break TargetOutcome::Next(None),
            FailureKind::ContextLength => break TargetOutcome::ContextLength(provider_error(provider, &failure)),
            FailureKind::RequestInvalid | FailureKind::ContentFilter => {
                break TargetOutcome::Stop(provider_error(provider, &failure));
            }
        }
        if req.strict {
            break TargetOutcome::Stop(memory.last_error.take().unwrap_or_else(|| provider_error(provider, &failure)));
        }
    };
    if let Some(verdict) = verdict.into_inner().unwrap_or_else(|e| e.into_inner()) {
        verdict.record(breaker_outcome);
    }
    result
}

/// The breaker permit of one attempt and what its verdict feeds (breaker,
/// events, canary). Recorded once the attempt is decided: at once for an
/// answer or a refusal, at its end for a committed stream, which can still
/// fail after its first chunk.
pub struct AttemptVerdict {
    gw: SharedGateway,
    provider: Arc<ProviderEntry>,
    permit: Permit,
    on_canary: bool,
}

impl AttemptVerdict {
    /// A verdict for an attempt outside [`route`]'s loop (a stream resumed on
    /// another provider), when that provider's breaker admits it.
    pub fn acquire(gw: &SharedGateway, provider: &Arc<ProviderEntry>, now: Instant) -> Option<Self> {
        let permit = provider.breaker.try_acquire(now).ok()?;
        Some(Self { gw: gw.clone(), provider: provider.clone(), permit, on_canary: false })
    }

    /// Feeds the outcome to the provider's breaker (publishing a state
    /// change) and, for a provider with a canary, to the canary's judgement.
    pub fn record(self, outcome: BreakerOutcome) {
        let Self { gw, provider, permit, on_canary } = self;
        let was_probe = permit.is_probe();
        // A canary's failures are judged by the canary (rolled back), not held
        // against the provider's breaker, which protects the current version.
        let health = if on_canary && outcome == BreakerOutcome::Failure { BreakerOutcome::Neutral } else { outcome };
        provider.breaker.record(permit, health, Instant::now());
        publish_breaker_change(&gw, &provider, was_probe, health);
        if let Some(canary) = &provider.canary {
            let failed = matches!(outcome, BreakerOutcome::Failure);
            let counted = !matches!(outcome, BreakerOutcome::Neutral);
            if counted && let Some(verdict) = canary.record(on_canary, failed) {
                let (gw, id, canary) = (gw.clone(), provider.id.to_string(), canary.clone());
                tokio::spawn(async move { gw.plugins.conclude_canary(&gw, &id, &canary, verdict).await });
            }
        }
    }
}

/// Counts an upstream wait for the provider's latency histogram and the
/// request's gateway-overhead figure.
fn observe_upstream(req: &RouteRequest<'_>, provider: &ProviderEntry, elapsed: Duration) {
    req.upstream_time.add(elapsed);
    req.gw.metrics.observe_upstream(&provider.id, elapsed);
}

/// Publishes the breaker's new state when `record` moved it. A permit is
/// only issued closed (or half-open for the probe), so the state before is
/// known without a lock, and a success while closed never moves it.
fn publish_breaker_change(gw: &SharedGateway, provider: &ProviderEntry, was_probe: bool, outcome: BreakerOutcome) {
    use crate::breaker::BreakerState;
    if !(was_probe || outcome == BreakerOutcome::Failure) || !gw.events.has_subscribers() {
        return;
    }
    let before = if was_probe { BreakerState::HalfOpen } else { BreakerState::Closed };
    let after = provider.breaker.snapshot(Instant::now()).state;
    if after != before {
        gw.events.publish_breaker(&provider.id, after);
    }
}

/// For a stream to a provider that reports usage on request: the body with
/// `stream_options.include_usage = true`, unless the client set it.
fn with_stream_usage(req: &RouteRequest<'_>, adapter: &Adapter) -> Option<Bytes> {
    use crate::plugins::types::Capabilities;
    if !req.is_stream || !adapter.info.capabilities.contains(Capabilities::STREAM_USAGE) {
        return None;
    }
    if req.request.pointer("/stream_options/include_usage").is_some() {
        return None;
    }
    let mut request = (*req.request).clone();
    let object = request.as_object_mut()?;
    let options = object.entry("stream_options").or_insert_with(|| json!({}));
    options.as_object_mut()?.insert("include_usage".into(), Value::Bool(true));
    serde_json::to_vec(&request).ok().map(Bytes::from)
}

/// A 4xx answer about the request (not 408 Request Timeout, not 429 Too
/// Many Requests): never a breaker failure, never retried on the target.
fn is_client_error(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// Whether a transient failure gets another try on the same target: while
/// `tries` is within the route's retry budget and the backoff fits before the
/// deadline. Sleeps the backoff and counts the try when it does.
async fn retry_transient(tries: &mut u32, budget: u32, base: Duration, deadline: Instant) -> bool {
    if *tries >= budget || !backoff(base, *tries, deadline).await {
        return false;
    }
    *tries += 1;
    true
}

/// Sleeps `base * 2^attempt`, jittered to 50-150 %, if the deadline allows.
/// Returns false (without sleeping) when it does not.
async fn backoff(base: Duration, attempt: u32, deadline: Instant) -> bool {
    let nominal = base.saturating_mul(1u32 << attempt.min(6));
    let jittered = nominal.mul_f64(0.5 + fastrand::f64());
    if Instant::now() + jittered >= deadline {
        return false;
    }
    tokio::time::sleep(jittered).await;
    true
}

fn provider_error(provider: &ProviderEntry, failure: &Failure) -> ApiError {
    ApiError::ProviderUpstream {
        provider: provider.id.to_string(),
        message: failure.message.clone(),
        upstream_code: failure.upstream_code.clone(),
    }
}

/// The `all_providers_exhausted` error with the reference's advice fields.
fn exhausted(req: &RouteRequest<'_>, memory: &Memory, message: String) -> ApiError {
    let now = Instant::now();
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
                "circuit_state": p.breaker.snapshot(now).state,
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
    ApiError::AllProvidersExhausted { model: req.model.to_owned(), message, retry_after_ms, providers, suggestions }
}

/// When the first provider of `route` can take a request again.
fn route_eta(registry: &Registry, route: &crate::router::Route, now: Instant) -> Option<Duration> {
    use crate::router::Target;
    let mut best: Option<Duration> = None;
    let mut consider = |p: &ProviderEntry| {
        if let Some(d) = p.available_in(now) {
            best = Some(best.map_or(d, |b| b.min(d)));
        }
    };
    for t in &route.targets {
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
) -> Result<AnsweredTarget, ApiError> {
    let upstream_error = |message: String| ApiError::ProviderUpstream {
        provider: provider.id.to_string(),
        message,
        upstream_code: None,
    };
    let read_at = Instant::now();
    let body = req.gw.upstream.read_body(response).await.map_err(|e| upstream_error(e.to_string()))?;
    req.upstream_time.add(read_at.elapsed());
    let normalized = match adapter.normalize_response(ctx, &head, &body).await {
        Ok(Ok(n)) => n,
        Ok(Err(failure)) => return Err(upstream_error(failure.message)),
        Err(fault) => {
            return Err(ApiError::AdapterFault { provider: provider.id.to_string(), message: fault.to_string() });
        }
    };
    let body = fill_created(normalized.body, unix_now());
    let out = with_provider_marker(body, &provider.id).ok_or_else(|| ApiError::AdapterFault {
        provider: provider.id.to_string(),
        message: format!("adapter \"{}\" returned a body that is not a JSON object", provider.id),
    })?;
    let out = Bytes::from(out);
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], out.clone()).into_response();
    if normalized.finish_reason == Some(FinishReason::Length) && wants_json(&req.request) {
        response.headers_mut().insert("x-freellm-warning", HeaderValue::from_static("json-possibly-truncated"));
    }
    Ok(AnsweredTarget { response, usage: normalized.usage, finish_reason: normalized.finish_reason, body: Some(out) })
}

/// Inserts `"x_freellm_provider":"<id>"` as the first field of a JSON object
/// without re-serializing it.
fn with_provider_marker(body: Vec<u8>, provider: &str) -> Option<Vec<u8>> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[start] != b'{' {
        return None;
    }
    let rest = &body[start + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(body.len() + provider.len() + 24);
    out.extend_from_slice(b"{\"x_freellm_provider\":");
    out.extend_from_slice(serde_json::to_string(provider).ok()?.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// The current unix time in seconds (0 before 1970, which never happens).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Replaces a top-level `"created": 0` of an answer or chunk by `now`
/// (contract 0.2: an adapter whose provider reports no timestamp leaves it
/// 0 and the host fills it in; done for 0.1 adapters too). Bodies without
/// that exact field pass through untouched and unparsed, so the cost is one
/// byte search per answer.
pub(crate) fn fill_created(body: Vec<u8>, now: u64) -> Vec<u8> {
    if !has_zero_created(&body) {
        return body;
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&body) else { return body };
    match value.get_mut("created") {
        Some(created) if created.as_u64() == Some(0) => *created = Value::from(now),
        _ => return body,
    }
    serde_json::to_vec(&value).unwrap_or(body)
}

/// Whether `"created"` followed by `:` and the number 0 occurs (spaces
/// allowed), a cheap pre-filter for [`fill_created`].
fn has_zero_created(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"created\"";
    let mut rest = body;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        rest = &rest[at + KEY.len()..];
        let mut tail = rest.iter().skip_while(|b| b.is_ascii_whitespace());
        if tail.next() != Some(&b':') {
            continue;
        }
        let mut tail = tail.skip_while(|b| b.is_ascii_whitespace());
        if tail.next() == Some(&b'0') && !tail.next().is_some_and(|b| b.is_ascii_digit() || *b == b'.') {
            return true;
        }
    }
    false
}

/// True when the request asked for JSON output (`json_object`/`json_schema`).
fn wants_json(request: &Value) -> bool {
    matches!(request.pointer("/response_format/type").and_then(Value::as_str), Some("json_object" | "json_schema"))
}

#[cfg(test)]
mod tests {

    #[test]
    fn client_errors_are_4xx_but_request_timeout_and_rate_limits() {
        for status in [400, 401, 403, 404, 409, 413, 422, 451] {
            assert!(is_client_error(status), "{status}");
        }
        for status in [200, 302, 408, 429, 500, 502, 503, 504] {
            assert!(!is_client_error(status), "{status}");
        }
    }

    use super::*;

    #[test]
    fn a_zero_created_is_filled_with_now_and_others_are_untouched() {
        let out = fill_created(br#"{"id":"x","created": 0,"choices":[]}"#.to_vec(), 1_800_000_000);
        assert_eq!(out, br#"{"id":"x","created":1800000000,"choices":[]}"#);
        for kept in [
            &br#"{"id":"x","created":1700000000}"#[..],
            br#"{"id":"x","created":0.5}"#,
            br#"{"id":"x"}"#,
            br#"{"choices":[{"message":{"created":0}}],"created":5}"#,
            b"not json \"created\":0",
        ] {
            assert_eq!(fill_created(kept.to_vec(), 9), kept, "{}", String::from_utf8_lossy(kept));
        }
    }

    #[test]
    fn provider_marker_is_inserted_first() {
        let out = with_provider_marker(br#" {"id":"x","choices":[]}"#.to_vec(), "groq").unwrap();
        assert_eq!(out, br#"{"x_freellm_provider":"groq","id":"x","choices":[]}"#);
        assert_eq!(with_provider_marker(b"{ }".to_vec(), "g").unwrap(), br#"{"x_freellm_provider":"g" }"#);
        assert!(with_provider_marker(b"[1]".to_vec(), "g").is_none());
        assert!(with_provider_marker(b"".to_vec(), "g").is_none());
    }

    #[tokio::test]
    async fn backoff_respects_the_deadline() {
        let soon = Instant::now() + Duration::from_millis(5);
        assert!(!backoff(Duration::from_secs(1), 0, soon).await);
        let later = Instant::now() + Duration::from_secs(5);
        let t = Instant::now();
        assert!(backoff(Duration::from_millis(10), 1, later).await);
        let slept = t.elapsed();
        assert!(slept >= Duration::from_millis(10) && slept < Duration::from_millis(200), "{slept:?}");
    }

    #[tokio::test]
    async fn transient_retries_stop_at_the_budget_and_the_deadline() {
        let later = Instant::now() + Duration::from_secs(5);
        let mut tries = 0;
        assert!(retry_transient(&mut tries, 2, Duration::from_millis(1), later).await);
        assert!(retry_transient(&mut tries, 2, Duration::from_millis(1), later).await);
        assert_eq!(tries, 2);
        let t = Instant::now();
        assert!(!retry_transient(&mut tries, 2, Duration::from_secs(10), later).await, "budget spent");
        assert!(t.elapsed() < Duration::from_millis(100), "no sleep once the budget is spent");
        let mut fresh = 0;
        let soon = Instant::now() + Duration::from_millis(5);
        assert!(!retry_transient(&mut fresh, 2, Duration::from_secs(1), soon).await, "backoff past the deadline");
        assert_eq!(fresh, 0);
    }

    #[test]
    fn json_mode_is_detected() {
        assert!(wants_json(&json!({"response_format": {"type": "json_object"}})));
        assert!(!wants_json(&json!({"response_format": {"type": "text"}})));
        assert!(!wants_json(&json!({})));
    }
}
