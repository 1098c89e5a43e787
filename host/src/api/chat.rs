//! `POST /v1/chat/completions`: read and validate the body, plan the route,
//! then try candidates until one answers.
//!
//! Per attempt: pick a key, let the adapter map the request (wasm), send it,
//! and either normalize the 2xx answer (wasm) or let the adapter classify the
//! failure (wasm). Rate limits cool the key and move to the next key or
//! provider; transient failures, timeouts and adapter faults move to the next
//! provider; a request the provider calls invalid stops the route with the
//! provider's reason. Failover happens only before the first byte reaches
//! the client: a 2xx streaming head commits the answer to that provider.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::Value;

use crate::error::ApiError;
use crate::plugins::types::{Failure, FailureKind, FinishReason};
use crate::plugins::{Adapter, ProviderEntry};
use crate::router::{self, Candidate};
use crate::server::RequestId;
use crate::state::SharedGateway;
use crate::stream::{self, StreamStart};
use crate::upstream::{UpstreamError, response_head};
use crate::validate::validate_chat_request;

/// How an answer was routed, for `X-FreeLLM-Route-Reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteReason {
    /// A concrete model answered by its provider on the first try.
    Direct,
    /// A meta-model answered by its first candidate.
    Meta,
    /// An earlier attempt failed and another key or provider answered.
    Failover,
}

impl RouteReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Meta => "meta",
            Self::Failover => "failover",
        }
    }
}

/// The chat endpoint.
pub async fn chat_completions(
    State(gw): State<SharedGateway>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_content_type(&headers)?;
    let bytes = read_limited(body, headers.get(header::CONTENT_LENGTH), gw.config.max_body_bytes).await?;
    let request = parse_json(&bytes)?;
    validate_chat_request(&request).map_err(ApiError::invalid)?;
    let model = request.get("model").and_then(Value::as_str).unwrap_or_default();
    let is_stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);

    let registry = gw.registry.load_full();
    let plan = router::plan(&registry, model)?;
    let started = Instant::now();
    let deadline = started + gw.config.upstream.route_timeout;

    let mut attempts = Attempts::default();
    for candidate in &plan.candidates {
        let reason = if attempts.failed > 0 {
            RouteReason::Failover
        } else if plan.is_meta {
            RouteReason::Meta
        } else {
            RouteReason::Direct
        };
        let answer = attempt_provider(&gw, &request_id, candidate, &bytes, is_stream, deadline, &mut attempts).await;
        match answer {
            Outcome::Answered(mut response) => {
                // The reason must reflect failures within this provider too.
                let reason = if attempts.failed > 0 { RouteReason::Failover } else { reason };
                let route = RouteHeaders { provider: &candidate.provider.id, upstream_model: &candidate.upstream_model, requested: model, reason };
                route.apply(response.headers_mut());
                if !is_stream {
                    tracing::info!(
                        request_id = %request_id.0, model, provider = %candidate.provider.id,
                        reason = reason.as_str(), latency_ms = started.elapsed().as_millis() as u64, "chat completed"
                    );
                }
                return Ok(response);
            }
            Outcome::NextProvider if Instant::now() > deadline => break,
            Outcome::NextProvider => {}
            Outcome::Stop(error) => return Err(error),
        }
    }
    Err(attempts.exhausted(model, &plan.candidates))
}

/// What the route has seen so far.
#[derive(Default)]
struct Attempts {
    failed: u32,
    rate_limited: bool,
    last_error: Option<ApiError>,
}

impl Attempts {
    fn fail(&mut self, error: ApiError) {
        self.failed += 1;
        self.last_error = Some(error);
    }

    /// The error when no candidate answered: a rate-limit exhaustion (with
    /// when to retry) if any provider was limited, else the last failure.
    fn exhausted(self, model: &str, candidates: &[Candidate<'_>]) -> ApiError {
        match self.last_error {
            Some(error) if !self.rate_limited => error,
            _ => {
                let providers: Vec<Value> = candidates
                    .iter()
                    .map(|c| {
                        let wait = c.provider.keys.earliest_ready().as_millis() as u64;
                        serde_json::json!({
                            "id": c.provider.id.as_ref(),
                            "retry_after_ms": wait,
                            "keys_available": (0..c.provider.keys.len()).filter(|&i| c.provider.keys.cooldown_left(i).is_none()).count(),
                            "keys_total": c.provider.keys.len(),
                        })
                    })
                    .collect();
                let retry_after_ms = candidates.iter().map(|c| c.provider.keys.earliest_ready().as_millis() as u64).min();
                ApiError::AllProvidersExhausted { model: model.to_owned(), retry_after_ms, providers }
            }
        }
    }
}

enum Outcome {
    Answered(Response),
    NextProvider,
    Stop(ApiError),
}

/// Tries one provider, key after key while its keys are rate-limited.
async fn attempt_provider(
    gw: &SharedGateway,
    request_id: &RequestId,
    candidate: &Candidate<'_>,
    body: &Bytes,
    is_stream: bool,
    deadline: Instant,
    attempts: &mut Attempts,
) -> Outcome {
    let provider: &ProviderEntry = candidate.provider;
    let Some(adapter) = provider.live() else { return Outcome::NextProvider };
    let ctx = adapter.context(&request_id.0, &candidate.upstream_model, is_stream);
    let mut tried_keys: Vec<usize> = Vec::new();
    loop {
        if Instant::now() > deadline {
            return Outcome::NextProvider;
        }
        let Some(key) = provider.keys.pick(&tried_keys) else {
            attempts.rate_limited = true;
            return Outcome::NextProvider;
        };
        tried_keys.push(key.index);

        let upstream_request = match adapter.map_request(&ctx, body).await {
            Ok(Ok(r)) => r,
            Ok(Err(failure)) if failure.kind == FailureKind::Unsupported => return Outcome::NextProvider,
            Ok(Err(failure)) if stops_route(failure.kind) => {
                return Outcome::Stop(ApiError::InvalidRequest {
                    message: format!("{}: {}", provider.id, failure.message),
                    issues: Vec::new(),
                });
            }
            Ok(Err(failure)) => {
                attempts.fail(provider_error(provider, &failure));
                return Outcome::NextProvider;
            }
            Err(fault) => {
                attempts.fail(ApiError::AdapterFault { provider: provider.id.to_string(), message: fault.to_string() });
                return Outcome::NextProvider;
            }
        };

        let response = match gw.upstream.send(&provider.base_url, upstream_request, &adapter.info.auth, key.secret).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(request_id = %request_id.0, provider = %provider.id, error = %e, "upstream attempt failed");
                let error = match e {
                    UpstreamError::BadAdapterRequest(m) => {
                        ApiError::AdapterFault { provider: provider.id.to_string(), message: m }
                    }
                    other => ApiError::ProviderUpstream {
                        provider: provider.id.to_string(),
                        message: format!("Provider {} failed: {other}", provider.id),
                        upstream_code: None,
                    },
                };
                attempts.fail(error);
                return Outcome::NextProvider;
            }
        };
        let head = response_head(&response);

        if response.status().is_success() {
            let answered = if is_stream {
                stream::start(StreamStart {
                    adapter: adapter.clone(),
                    ctx,
                    head,
                    response,
                    framing: adapter.info.stream_framing,
                    timeouts: *gw.upstream.timeouts(),
                    request_id: request_id.0.clone(),
                    provider: provider.id.clone(),
                })
                .await
            } else {
                complete(gw, adapter, &ctx, head, response, body, provider).await
            };
            return match answered {
                Ok(response) => {
                    provider.keys.clear(key.index);
                    Outcome::Answered(response)
                }
                Err(error) => {
                    attempts.fail(error);
                    Outcome::NextProvider
                }
            };
        }

        let status = head.status;
        let error_body = gw.upstream.read_body(response).await.unwrap_or_default();
        let failure = match adapter.classify_failure(&ctx, &head, &error_body).await {
            Ok(f) => f,
            Err(fault) => Failure {
                kind: FailureKind::Transient,
                message: format!("{status} from upstream; {fault}"),
                retry_after_ms: None,
                upstream_code: None,
            },
        };
        tracing::warn!(
            request_id = %request_id.0, provider = %provider.id, status, kind = ?failure.kind,
            retry_after_ms = failure.retry_after_ms, "upstream refused"
        );
        match failure.kind {
            FailureKind::RateLimited | FailureKind::QuotaExhausted => {
                let default = if failure.kind == FailureKind::QuotaExhausted { 3_600_000 } else { 0 };
                let wait = failure.retry_after_ms.or((default > 0).then_some(default)).map(Duration::from_millis);
                provider.keys.cool_down(key.index, wait);
                attempts.rate_limited = true;
                attempts.fail(provider_error(provider, &failure));
            }
            FailureKind::KeyInvalid => {
                tracing::error!(provider = %provider.id, key_index = key.index, "upstream rejected the key; resting it");
                provider.keys.cool_down(key.index, Some(crate::keys::MAX_COOLDOWN));
                attempts.fail(provider_error(provider, &failure));
            }
            FailureKind::Unsupported => return Outcome::NextProvider,
            FailureKind::Transient => {
                attempts.fail(provider_error(provider, &failure));
                return Outcome::NextProvider;
            }
            FailureKind::RequestInvalid | FailureKind::ContextLength | FailureKind::ContentFilter => {
                return Outcome::Stop(provider_error(provider, &failure));
            }
        }
    }
}

fn stops_route(kind: FailureKind) -> bool {
    matches!(kind, FailureKind::RequestInvalid | FailureKind::ContextLength | FailureKind::ContentFilter)
}

fn provider_error(provider: &ProviderEntry, failure: &Failure) -> ApiError {
    ApiError::ProviderUpstream {
        provider: provider.id.to_string(),
        message: failure.message.clone(),
        upstream_code: failure.upstream_code.clone(),
    }
}

/// Reads, normalizes (wasm) and returns a 2xx non-streaming answer.
async fn complete(
    gw: &SharedGateway,
    adapter: &Adapter,
    ctx: &crate::plugins::types::CallContext,
    head: crate::plugins::types::ResponseHead,
    response: reqwest::Response,
    request_body: &Bytes,
    provider: &ProviderEntry,
) -> Result<Response, ApiError> {
    let upstream_error = |message: String| ApiError::ProviderUpstream {
        provider: provider.id.to_string(),
        message,
        upstream_code: None,
    };
    let body = gw.upstream.read_body(response).await.map_err(|e| upstream_error(e.to_string()))?;
    let normalized = match adapter.normalize_response(ctx, &head, &body).await {
        Ok(Ok(n)) => n,
        Ok(Err(failure)) => return Err(upstream_error(failure.message)),
        Err(fault) => return Err(ApiError::AdapterFault { provider: provider.id.to_string(), message: fault.to_string() }),
    };
    let out = with_provider_marker(normalized.body, &provider.id)
        .ok_or_else(|| ApiError::AdapterFault {
            provider: provider.id.to_string(),
            message: format!("adapter \"{}\" returned a body that is not a JSON object", provider.id),
        })?;
    let mut response = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], out).into_response();
    if normalized.finish_reason == Some(FinishReason::Length) && wants_json(request_body) {
        response.headers_mut().insert("x-freellm-warning", HeaderValue::from_static("json-possibly-truncated"));
    }
    Ok(response)
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

/// True when the request asked for JSON output (`json_object`/`json_schema`).
fn wants_json(request_body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(request_body) else { return false };
    matches!(
        v.pointer("/response_format/type").and_then(Value::as_str),
        Some("json_object" | "json_schema")
    )
}

/// The `X-FreeLLM-*` headers of a successful answer.
struct RouteHeaders<'a> {
    provider: &'a str,
    upstream_model: &'a str,
    requested: &'a str,
    reason: RouteReason,
}

impl RouteHeaders<'_> {
    fn apply(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        set("x-freellm-provider", self.provider);
        set("x-freellm-model", &format!("{}/{}", self.provider, self.upstream_model));
        set("x-freellm-requested-model", self.requested);
        set("x-freellm-cached", "false");
        set("x-freellm-route-reason", self.reason.as_str());
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_json = value.as_deref().is_some_and(|v| {
        let mime = v.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json") || mime.to_ascii_lowercase().ends_with("+json")
    });
    if is_json { Ok(()) } else { Err(ApiError::UnsupportedMediaType { got: value }) }
}

async fn read_limited(body: Body, content_length: Option<&HeaderValue>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = content_length.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large { ApiError::PayloadTooLarge { limit } } else { ApiError::invalid_body(format!("cannot read body: {e}")) }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid_body("body is empty; expected a JSON object"));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ApiError::invalid_body(format!("body is not valid UTF-8 (at byte {})", e.valid_up_to())));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid_body(format!("malformed JSON: {e}")))
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
    fn json_content_types_are_recognized() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_err());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(check_content_type(&h).is_err());
    }

    #[test]
    fn bad_bodies_are_invalid_requests_not_internal_errors() {
        for body in [&b""[..], b"{", b"\xff\xfe", b"nul"] {
            assert!(matches!(parse_json(body), Err(ApiError::InvalidRequest { .. })));
        }
    }
}
