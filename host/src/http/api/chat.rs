//! `POST /v1/chat/completions`: read and validate the body, read the
//! routing headers (`X-FreeLLM-Strict`, `X-FreeLLM-Privacy`), plan the route
//! ([`crate::routing::router`]), let [`crate::routing::failover`] find an answer, then add the
//! routing headers and log the request for `/v1/status`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;

use axum::response::IntoResponse;

use crate::access::admission::LimitGate;
use crate::access::auth::Principal;
use crate::access::virtual_keys::{Refusal, Ticket, VirtualKey};
use crate::http::error::ApiError;
use crate::http::server::RequestId;
use crate::json::{Json, ReadError};
use crate::ops::stats::{RequestLogEntry, RequestStatus, unix_ms};
use crate::providers::ProviderEntry;
use crate::routing::cache::{self, CachedAnswer};
use crate::routing::error::RoutingError;
use crate::routing::failover::{self, Answered, RouteRequest, StreamOptions};
use crate::routing::needs::Needs;
use crate::routing::router::{self, PlanRequest, Strategy};
use crate::routing::upstream::joined_header_value;
use crate::state::SharedGateway;
use crate::validate::validate_chat_request;

/// The chat endpoint: `request` carries what the edge put in its
/// extensions (its [`RequestId`], the [`Principal`], the [`LimitGate`]).
/// [`crate::http::server::App::handle`] calls it for every `POST` of the
/// route, before the router would.
pub async fn handle(gw: SharedGateway, mut request: Request) -> Response {
    // Moved out, not cloned (axum's extractors would clone each).
    let extensions = request.extensions_mut();
    let request_id = extensions.remove::<RequestId>().unwrap_or_else(RequestId::fresh);
    let principal = extensions.remove::<Principal>();
    let limits = extensions.remove::<LimitGate>();
    let answer = serve(gw, request_id, principal, limits.clone(), request).await;
    // Limits decided while the request was routed (a fleet): their refusal
    // outranks whatever else the request came to (an answer waited for
    // them before it was sent upstream).
    if let Some(gate) = limits
        && let Err(refusal) = gate.passed().await
    {
        return ApiError::from(refusal).into_response();
    }
    answer.into_response()
}

/// The chat endpoint as the router's handler. `App::handle` answers every
/// `POST` of the path first; the router keeps the route so that another
/// method on it is a 405, and a caller of the router alone is served the
/// same way.
pub async fn chat_completions(State(gw): State<SharedGateway>, request: Request) -> Response {
    handle(gw, request).await
}

async fn serve(
    gw: SharedGateway,
    request_id: RequestId,
    principal: Option<Principal>,
    limits: Option<LimitGate>,
    request: Request,
) -> Result<Response, ApiError> {
    // The request's own headers, not a copy (a `HeaderMap` extractor clones).
    let (Parts { headers, .. }, body) = request.into_parts();
    check_content_type(&headers)?;
    let bytes = read_limited(body, headers.get(header::CONTENT_LENGTH), gw.config.max_body_bytes).await?;
    let strict = header_flag(&headers, "x-freellm-strict");
    let tenant = principal.as_ref().map_or_else(|| Principal::Open.tenant(), Principal::tenant);
    // What the request says, read once from the body: its values are
    // borrowed from `bytes` and gone before `bytes` moves on.
    let (model, is_stream, no_training, needs, stream_options, cache_key) = {
        let request = parse_json(&bytes)?;
        validate_chat_request(&request).map_err(ApiError::invalid)?;
        let no_training = privacy_posture(&headers)?;
        let model = request.get("model").and_then(Json::as_str).unwrap_or_default().to_owned();
        let is_stream = request.get("stream").and_then(Json::as_bool).unwrap_or(false);
        let needs = Needs::of(&request, bytes.len(), no_training);
        let cache_key = gw.cache.key_for(&request, &needs, &tenant);
        (model, is_stream, no_training, needs, StreamOptions::of(&request), cache_key)
    };
    let started = Instant::now();

    // A virtual key reserves its slot before anything else; a failed route
    // drops the ticket and frees it.
    let ticket = match principal.as_ref().and_then(Principal::virtual_key) {
        Some(key) => Some(
            gw.virtual_keys
                .admit_in(&gw.fleet, key, &model, unix_ms(SystemTime::now()))
                .await
                .map_err(|refusal| refusal_error(refusal, key, &model))?,
        ),
        None => None,
    };

    // One live configuration for the whole request: a reload meanwhile
    // never pairs new providers with old routes.
    let live = gw.live.load_full();
    let (registry, routes) = (live.registry.clone(), live.routes.clone());

    // The cache: strict mode skips reads (one real attempt) but still stores.
    // A hit is served only while the adapter versions that answered it serve.
    if !strict
        && let Some(key) = &cache_key
        && let Some(hit) = gw.cache.lookup(key, |provider| registry.get(provider).and_then(|p| live_versions(p))).await
    {
        // A hit counts as served (the ticket is settled): not before the
        // client's limits pass.
        if let Some(gate) = &limits {
            gate.passed().await?;
        }
        return Ok(cache_hit(&gw, &request_id.0, &model, started, &hit, ticket));
    }
    let plan_request =
        PlanRequest { model: &model, needs, strategy: live.strategy, retries: live.routing.retries, strict };
    let plan = match router::plan(&registry, &routes, &plan_request) {
        Ok(plan) => plan,
        Err(e) => {
            // Strict and privacy refusals reached the router: log them.
            if matches!(e, RoutingError::StrictMetaForbidden { .. } | RoutingError::ModelNotSupported { .. }) {
                log_failure(&gw, &request_id.0, &model, is_stream, started, &e, Vec::new());
            }
            return Err(e.into());
        }
    };
    if plan.strategy == Strategy::QuotaAware
        && let Some(primary) = &plan.primary
        && plan.candidates.iter().skip(1).any(|c| Arc::ptr_eq(&c.provider, primary))
        && !plan.candidates.first().is_some_and(|c| Arc::ptr_eq(&c.provider, primary))
    {
        // The priority-first target had no headroom: routed elsewhere up front.
        gw.metrics.quota_skip();
    }
    if plan.candidates.is_empty() {
        let reasons: Vec<String> = plan.skipped.iter().map(|s| format!("{} {}", s.provider, s.reason)).collect();
        let message = if no_training && plan.skipped.iter().all(|s| s.reason.starts_with("privacy")) {
            format!("No provider matching privacy policy \"no-training\" is configured for model \"{model}\".")
        } else {
            format!("No enabled provider can serve this request on \"{model}\": {}.", reasons.join("; "))
        };
        let e = RoutingError::ModelNotSupported { model: model.clone(), message };
        log_failure(&gw, &request_id.0, &model, is_stream, started, &e, Vec::new());
        return Err(e.into());
    }
    let route_request = RouteRequest {
        gw: &gw,
        request_id: &request_id.0,
        model: &model,
        body: bytes,
        stream_options,
        needs,
        is_stream,
        strict,
        registry: registry.clone(),
        routes: &routes,
        routing: &live.routing,
        ticket: std::sync::Mutex::new(ticket),
        upstream_time: Default::default(),
        limits,
    };
    match failover::route(&route_request, plan).await {
        Ok(answered) => {
            if let Some(ticket) = route_request.ticket.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let tokens = answered.usage.map_or(0, |u| u64::from(u.total_tokens));
                ticket.settle(unix_ms(SystemTime::now()), tokens);
            }
            if let (Some(key), Some(body)) = (cache_key, &answered.body) {
                let entry = CachedAnswer {
                    body: body.clone(),
                    provider: answered.provider.id.clone(),
                    upstream_model: answered.upstream_model.clone(),
                    usage: answered.usage,
                    versions: Arc::from(versions(&answered.provider)),
                };
                gw.cache.store(key, entry, answered.finish_reason).await;
            }
            Ok(finish(&gw, &request_id.0, &model, is_stream, started, route_request.upstream_time.get(), answered))
        }
        // Refused by the client's limits: never routed, as when the guard
        // refused it.
        Err(unanswered) if matches!(unanswered.error, RoutingError::Limited(_)) => Err(unanswered.error.into()),
        Err(unanswered) => {
            log_failure(&gw, &request_id.0, &model, is_stream, started, &unanswered.error, unanswered.attempted);
            // The HTTP edge: the routing failure becomes the client's envelope here.
            Err(unanswered.error.into())
        }
    }
}

/// The adapter versions a slot runs (for the cache), whether or not it serves.
fn versions(p: &ProviderEntry) -> String {
    cache::versions_of(
        p.adapter.as_deref().map(|a| a.hash.as_str()),
        p.canary.as_ref().map(|c| c.adapter.hash.as_str()),
    )
}

/// The versions of a slot that serves requests now; `None` when it is
/// disabled or failed (its cached answers are not served).
fn live_versions(p: &ProviderEntry) -> Option<String> {
    p.live().map(|_| versions(p))
}

/// Answers from the cache: the original provider's body, marked.
fn cache_hit(
    gw: &SharedGateway,
    request_id: &str,
    model: &str,
    started: Instant,
    hit: &CachedAnswer,
    ticket: Option<Ticket>,
) -> Response {
    if let Some(ticket) = ticket {
        ticket.settle(unix_ms(SystemTime::now()), hit.usage.map_or(0, |u| u64::from(u.total_tokens)));
    }
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], cache::hit_body(&hit.body))
            .into_response();
    let route = RouteHeaders {
        provider: &hit.provider,
        upstream_model: &hit.upstream_model,
        requested: model,
        reason: "cache",
    };
    route.apply(response.headers_mut());
    response.headers_mut().insert("x-freellm-cached", HeaderValue::from_static("true"));
    let latency_ms = started.elapsed().as_millis() as u64;
    tracing::info!(request_id, model, provider = %hit.provider, reason = "cache", latency_ms, "chat answered from cache");
    let entry = RequestLogEntry {
        id: request_id.to_owned(),
        at_ms: unix_ms(SystemTime::now()),
        requested_model: model.to_owned(),
        resolved_model: Some(format!("{}/{}", hit.provider, hit.upstream_model)),
        provider: Some(hit.provider.to_string()),
        latency_ms,
        streaming: false,
        status: RequestStatus::Success,
        route_reason: Some("cache"),
        attempted: Vec::new(),
        error: None,
        prompt_tokens: hit.usage.map(|u| u.prompt_tokens),
        completion_tokens: hit.usage.map(|u| u.completion_tokens),
        finish_reason: None,
        cached: true,
    };
    record(gw, started, Duration::ZERO, entry);
    response
}

fn refusal_error(refusal: Refusal, key: &VirtualKey, model: &str) -> ApiError {
    let masked = key.masked_id();
    match refusal {
        Refusal::Expired => ApiError::InvalidApiKey { message: format!("virtual key {masked} is expired") },
        Refusal::ModelNotAllowed => ApiError::ModelNotSupported {
            model: model.to_owned(),
            message: format!("virtual key {masked} does not allow model \"{model}\""),
        },
        Refusal::RequestCap(cap) => ApiError::VirtualKeyCapReached {
            message: format!("virtual key {masked} exhausted its 24h request cap ({cap})"),
        },
        Refusal::TokenCap(cap) => ApiError::VirtualKeyCapReached {
            message: format!("virtual key {masked} exhausted its 24h token cap ({cap})"),
        },
        Refusal::SharedStateUnavailable => ApiError::SharedStateUnavailable,
    }
}

/// Decorates a successful answer with the routing headers and logs it.
fn finish(
    gw: &SharedGateway,
    request_id: &str,
    model: &str,
    is_stream: bool,
    started: Instant,
    upstream: Duration,
    a: Answered,
) -> Response {
    let mut response = a.response;
    let route = RouteHeaders {
        provider: &a.provider.id,
        upstream_model: &a.upstream_model,
        requested: model,
        reason: a.reason.as_str(),
    };
    route.apply(response.headers_mut());
    let latency_ms = started.elapsed().as_millis() as u64;
    tracing::info!(request_id, model, provider = %a.provider.id, reason = a.reason.as_str(), latency_ms,
        attempted = ?a.attempted, streaming = is_stream, "chat answered");
    let entry = RequestLogEntry {
        id: request_id.to_owned(),
        at_ms: unix_ms(SystemTime::now()),
        requested_model: model.to_owned(),
        resolved_model: Some(format!("{}/{}", a.provider.id, a.upstream_model)),
        provider: Some(a.provider.id.to_string()),
        latency_ms,
        streaming: is_stream,
        status: RequestStatus::Success,
        route_reason: Some(a.reason.as_str()),
        attempted: a.attempted,
        error: None,
        prompt_tokens: a.usage.map(|u| u.prompt_tokens),
        completion_tokens: a.usage.map(|u| u.completion_tokens),
        finish_reason: a.finish_reason.map(|f| finish_name(f).to_owned()),
        cached: false,
    };
    record(gw, started, upstream, entry);
    response
}

fn log_failure(
    gw: &SharedGateway,
    request_id: &str,
    model: &str,
    is_stream: bool,
    started: Instant,
    error: &RoutingError,
    attempted: Vec<String>,
) {
    let status = error.log_status();
    let text = error.log_text();
    tracing::warn!(request_id, model, error = %text, ?attempted, "chat failed");
    // Only successes say how much time was the gateway's own.
    let entry = RequestLogEntry {
        id: request_id.to_owned(),
        at_ms: unix_ms(SystemTime::now()),
        requested_model: model.to_owned(),
        resolved_model: None,
        provider: None,
        latency_ms: started.elapsed().as_millis() as u64,
        streaming: is_stream,
        status,
        route_reason: None,
        attempted,
        error: Some(text),
        prompt_tokens: None,
        completion_tokens: None,
        finish_reason: None,
        cached: false,
    };
    record(gw, started, Duration::ZERO, entry);
}

/// OpenAI's name of a finish reason.
fn finish_name(reason: freellm_runtime::types::FinishReason) -> &'static str {
    use freellm_runtime::types::FinishReason;
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other => "other",
    }
}

/// Logs a finished request for `/v1/status`, counts it for `/metrics` and
/// publishes it on the event feed.
fn record(gw: &SharedGateway, started: Instant, upstream: Duration, entry: RequestLogEntry) {
    gw.metrics.record_request(&entry, started.elapsed(), upstream);
    gw.events.publish_request(&entry);
    gw.log.push(entry);
}

/// `true`, `1`, `yes` or `on` (case-insensitive).
fn header_flag(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
}

/// `X-FreeLLM-Privacy`: absent or `no-training`; anything else is a 400.
fn privacy_posture(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers.get("x-freellm-privacy").map(|v| v.to_str().map(str::trim)) {
        None => Ok(false),
        Some(Ok("")) => Ok(false),
        Some(Ok(v)) if v.eq_ignore_ascii_case("no-training") => Ok(true),
        _ => Err(ApiError::invalid_header("X-FreeLLM-Privacy", "must be \"no-training\" or omitted")),
    }
}

/// The `X-FreeLLM-*` headers of a successful answer.
struct RouteHeaders<'a> {
    provider: &'a str,
    upstream_model: &'a str,
    requested: &'a str,
    reason: &'static str,
}

impl RouteHeaders<'_> {
    fn apply(&self, headers: &mut HeaderMap) {
        const PROVIDER: HeaderName = HeaderName::from_static("x-freellm-provider");
        const MODEL: HeaderName = HeaderName::from_static("x-freellm-model");
        const REQUESTED: HeaderName = HeaderName::from_static("x-freellm-requested-model");
        const CACHED: HeaderName = HeaderName::from_static("x-freellm-cached");
        const REASON: HeaderName = HeaderName::from_static("x-freellm-route-reason");
        let mut set = |name: HeaderName, parts: &[&str]| {
            if let Ok(v) = joined_header_value(parts) {
                headers.insert(name, v);
            }
        };
        set(PROVIDER, &[self.provider]);
        set(MODEL, &[self.provider, "/", self.upstream_model]);
        set(REQUESTED, &[self.requested]);
        headers.insert(CACHED, HeaderValue::from_static("false"));
        headers.insert(REASON, HeaderValue::from_static(self.reason));
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()));
    let is_json = value.as_deref().is_some_and(|v| {
        let mime = v.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
            || mime.len() > 5 && mime.as_bytes()[mime.len() - 5..].eq_ignore_ascii_case(b"+json")
    });
    if is_json { Ok(()) } else { Err(ApiError::UnsupportedMediaType { got: value.map(|v| v.into_owned()) }) }
}

/// Oversized bodies up to this size are read before the 413 is sent.
const MAX_DRAIN_BYTES: u64 = 16 << 20;

async fn read_limited(body: Body, content_length: Option<&HeaderValue>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = content_length.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        // Read (and drop) a moderately oversized body before answering, so
        // the client sees the 413 instead of a connection reset mid-upload;
        // anything larger, or slower than a second, is cut off.
        if declared.is_some_and(|len| len <= MAX_DRAIN_BYTES) {
            let drain = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_DRAIN_BYTES as usize));
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
        }
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::invalid_body(format!("cannot read body: {e}"))
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Json<'_>, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid_body("body is empty; expected a JSON object"));
    }
    Json::read(bytes).map_err(|e| match e {
        ReadError::NotUtf8 { valid_up_to } => {
            ApiError::invalid_body(format!("body is not valid UTF-8 (at byte {valid_up_to})"))
        }
        ReadError::Malformed(e) => ApiError::invalid_body(format!("malformed JSON: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_and_privacy_headers_are_read() {
        let mut h = HeaderMap::new();
        assert!(!header_flag(&h, "x-freellm-strict"));
        for v in ["true", "1", "YES", "on"] {
            h.insert("x-freellm-strict", HeaderValue::from_static(v));
            assert!(header_flag(&h, "x-freellm-strict"), "{v}");
        }
        h.insert("x-freellm-strict", HeaderValue::from_static("nope"));
        assert!(!header_flag(&h, "x-freellm-strict"));
        assert!(!privacy_posture(&h).unwrap());
        h.insert("x-freellm-privacy", HeaderValue::from_static("No-Training"));
        assert!(privacy_posture(&h).unwrap());
        h.insert("x-freellm-privacy", HeaderValue::from_static("whatever"));
        assert!(privacy_posture(&h).is_err());
    }

    #[test]
    fn json_content_types_are_recognized() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_err());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(check_content_type(&h).is_err());
        for (value, json) in [
            (&b"APPLICATION/JSON"[..], true),
            (b"application/vnd.api+JSON; q=1", true),
            (b"+json", false),
            // Non-ASCII bytes around the suffix: read, not sliced mid-character.
            (b"x/\xc3\xa9+json", true),
            (b"x/\xc3\xa9\xc3\xa9\xc3\xa9", false),
            (b"\xff\xfe\xfd\xfc\xfb\xfa", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_bytes(value).unwrap());
            assert_eq!(check_content_type(&h).is_ok(), json, "{value:?}");
        }
    }

    #[test]
    fn bad_bodies_are_invalid_requests_not_internal_errors() {
        for body in [&b""[..], b"{", b"\xff\xfe", b"nul"] {
            assert!(matches!(parse_json(body), Err(ApiError::InvalidRequest { .. })));
        }
    }
}
