//! Every error a client can see, and the one place that maps them to HTTP.
//!
//! Handlers return [`ApiError`]; its `IntoResponse` sets the status and
//! parks the OpenAI-shaped body in a response extension. The request-id
//! middleware ([`crate::http::server`]) then renders it as
//! `{"error":{"type","code","message","request_id",...}}`, so every error,
//! including fallbacks and extractor rejections, carries the request's id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::access::admission::LimitRefusal;
use crate::routing::error::{Advice, RoutingError};
use crate::validate::{Issue, issues_message};

/// An error answer to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a valid chat request.
    #[error("{message}")]
    InvalidRequest { message: String, issues: Vec<Issue> },
    /// The body is larger than the configured limit.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body is not `application/json`.
    #[error("unsupported content type")]
    UnsupportedMediaType { got: Option<String> },
    /// The model is neither a meta-model nor in an enabled provider's catalog.
    #[error("model not found")]
    ModelNotFound { model: String, reason: String, available: Vec<String> },
    /// No provider is enabled at all.
    #[error("no provider is configured")]
    NoProvidersConfigured { hint: String },
    /// Strict mode forbids meta-models and routes.
    #[error("strict mode forbids meta-model")]
    StrictMetaForbidden { model: String },
    /// No enabled provider can serve this request (privacy posture,
    /// capabilities such as vision).
    #[error("model not supported")]
    ModelNotSupported { model: String, message: String },
    /// Strict mode: the one provider tried rate-limited the request.
    #[error("provider rate limited")]
    ProviderRateLimited { provider: String, message: String, retry_after_ms: Option<u64> },
    /// Every candidate was rate-limited, out of quota or failed, or the
    /// route deadline passed.
    #[error("all providers exhausted")]
    AllProvidersExhausted { model: String, message: String, advice: Box<Advice> },
    /// No credential on a protected gateway.
    #[error("missing api key")]
    MissingApiKey,
    /// An unknown, expired or rejected credential.
    #[error("invalid api key")]
    InvalidApiKey { message: String },
    /// The endpoint needs the admin key.
    #[error("admin required")]
    AdminRequired { message: String },
    /// A gateway-wide view read by a tenant (virtual key, browser token).
    #[error("operator required")]
    OperatorRequired,
    /// The caller already holds its share of `/v1/events` feeds.
    #[error("too many event feeds")]
    TooManyEventFeeds { max: usize },
    /// The `Host` header names no host this gateway serves (DNS rebinding).
    #[error("host not allowed")]
    HostNotAllowed,
    /// An open gateway's admin endpoint called from another origin.
    #[error("cross-origin admin request refused")]
    CrossOriginRefused,
    /// An open gateway's admin endpoint called with a content type a form
    /// or a simple cross-site request could send.
    #[error("unsupported admin content type")]
    AdminContentType { expected: &'static str },
    /// The per-IP limit (`RATE_LIMIT_RPM`).
    #[error("client rate limited")]
    ClientRateLimited { message: String, retry_after_ms: u64 },
    /// The per-identifier limit.
    #[error("identifier rate limited")]
    IdentifierRateLimited { message: String, retry_after_ms: u64 },
    /// A virtual key's daily cap.
    #[error("virtual key cap reached")]
    VirtualKeyCapReached { message: String },
    /// Browser tokens are not enabled (reference code kept for compatibility).
    #[error("browser tokens disabled")]
    BrowserTokensDisabled,
    /// An admin call named an unknown provider.
    #[error("provider not found")]
    ProviderNotFound { id: String },
    /// The provider refused the request, or every candidate failed.
    #[error("provider error")]
    ProviderUpstream { provider: String, message: String, upstream_code: Option<String> },
    /// No adapter instance was free: the gateway is at capacity.
    #[error("gateway at capacity")]
    AtCapacity,
    /// The provider's adapter component trapped or hit a sandbox limit.
    #[error("adapter fault")]
    AdapterFault { provider: String, message: String },
    /// No such route.
    #[error("not found")]
    NotFound { path: String },
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The client did not finish sending its body within the body-read timeout.
    #[error("request timeout")]
    RequestTimeout { after_ms: u64 },
    /// The gateway holds its maximum of client connections.
    #[error("too many connections")]
    TooManyConnections,
    /// A cap could not be checked: the fleet's shared state is unreachable
    /// and `[state] on_redis_error = "closed"`.
    #[error("shared state unavailable")]
    SharedStateUnavailable,
    /// A bug or an unexpected condition; details go to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The rendered error body (without `request_id`), waiting in the response
/// extensions for the request-id middleware.
#[derive(Clone, Debug)]
pub struct PendingErrorBody(pub Map<String, Value>);

impl ApiError {
    /// Convenience for a validation failure with its issue list.
    pub fn invalid(issues: Vec<Issue>) -> Self {
        Self::InvalidRequest { message: issues_message(&issues), issues }
    }

    /// Convenience for a body-level problem (bad JSON, bad UTF-8).
    pub fn invalid_body(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::invalid(vec![Issue { path: String::new(), message }])
    }

    /// A request header with a bad value: the message names the header
    /// (`header X-FreeLLM-Privacy: ...`), not the body.
    pub fn invalid_header(name: &str, message: impl Into<String>) -> Self {
        Self::invalid(vec![Issue { path: format!("header {name}"), message: message.into() }])
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::StrictMetaForbidden { .. } | Self::ModelNotSupported { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ModelNotFound { .. } | Self::NotFound { .. } | Self::ProviderNotFound { .. } => StatusCode::NOT_FOUND,
            Self::NoProvidersConfigured { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::AllProvidersExhausted { .. } | Self::ProviderRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ProviderUpstream { .. } | Self::AdapterFault { .. } => StatusCode::BAD_GATEWAY,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::MissingApiKey | Self::InvalidApiKey { .. } => StatusCode::UNAUTHORIZED,
            Self::AdminRequired { .. } => StatusCode::FORBIDDEN,
            Self::OperatorRequired | Self::CrossOriginRefused => StatusCode::FORBIDDEN,
            Self::TooManyEventFeeds { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            Self::AdminContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ClientRateLimited { .. } | Self::IdentifierRateLimited { .. } | Self::VirtualKeyCapReached { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::BrowserTokensDisabled => StatusCode::BAD_REQUEST,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyConnections | Self::SharedStateUnavailable | Self::AtCapacity => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `(type, code)` as in OpenAI's and the reference gateway's envelope.
    fn type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidRequest { .. } => ("invalid_request_error", "invalid_request"),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", "payload_too_large"),
            Self::UnsupportedMediaType { .. } => ("invalid_request_error", "unsupported_media_type"),
            Self::ModelNotFound { .. } => ("invalid_request_error", "model_not_found"),
            Self::NoProvidersConfigured { .. } => ("server_error", "no_providers_configured"),
            Self::StrictMetaForbidden { .. } => ("invalid_request_error", "strict_mode_meta_model_forbidden"),
            Self::ModelNotSupported { .. } => ("invalid_request_error", "model_not_supported"),
            Self::ProviderRateLimited { .. } => ("rate_limit_error", "provider_rate_limited"),
            Self::AllProvidersExhausted { .. } => ("rate_limit_error", "all_providers_exhausted"),
            Self::ProviderNotFound { .. } => ("not_found_error", "provider_not_found"),
            Self::ProviderUpstream { .. } => ("provider_error", "provider_upstream_error"),
            Self::AdapterFault { .. } => ("provider_error", "adapter_fault"),
            Self::NotFound { .. } => ("not_found_error", "not_found"),
            Self::MethodNotAllowed => ("invalid_request_error", "method_not_allowed"),
            Self::MissingApiKey => ("authentication_error", "missing_api_key"),
            Self::InvalidApiKey { .. } => ("authentication_error", "invalid_api_key"),
            Self::AdminRequired { .. } => ("permission_error", "admin_required"),
            Self::OperatorRequired => ("permission_error", "operator_required"),
            Self::TooManyEventFeeds { .. } => ("rate_limit_error", "too_many_event_feeds"),
            Self::HostNotAllowed => ("invalid_request_error", "host_not_allowed"),
            Self::CrossOriginRefused => ("permission_error", "cross_origin_refused"),
            Self::AdminContentType { .. } => ("invalid_request_error", "unsupported_media_type"),
            Self::ClientRateLimited { .. } => ("rate_limit_error", "client_rate_limited"),
            Self::IdentifierRateLimited { .. } => ("rate_limit_error", "identifier_rate_limited"),
            Self::VirtualKeyCapReached { .. } => ("rate_limit_error", "virtual_key_cap_reached"),
            Self::BrowserTokensDisabled => ("invalid_request_error", "no_providers_configured"),
            Self::RequestTimeout { .. } => ("invalid_request_error", "request_timeout"),
            Self::TooManyConnections => ("server_error", "too_many_connections"),
            Self::SharedStateUnavailable => ("server_error", "shared_state_unavailable"),
            Self::AtCapacity => ("server_error", "gateway_at_capacity"),
            Self::Internal(_) => ("internal_error", "internal_server_error"),
        }
    }

    fn body(&self) -> Map<String, Value> {
        let (kind, code) = self.type_and_code();
        let mut body = Map::new();
        body.insert("type".into(), kind.into());
        body.insert("code".into(), code.into());
        let message = match self {
            Self::InvalidRequest { message, issues } => {
                body.insert("issues".into(), json!(issues));
                message.clone()
            }
            Self::PayloadTooLarge { limit } => format!("Request body exceeds the limit of {limit} bytes."),
            Self::UnsupportedMediaType { got } => {
                format!("Content-Type must be application/json, got {}.", got.as_deref().unwrap_or("none"))
            }
            Self::ModelNotFound { model, reason, available } => {
                body.insert("requested_model".into(), model.as_str().into());
                body.insert("available_models".into(), json!(available));
                format!("Model \"{model}\" not found: {reason}")
            }
            Self::NoProvidersConfigured { hint } => hint.clone(),
            Self::StrictMetaForbidden { model } => {
                body.insert("requested_model".into(), model.as_str().into());
                crate::routing::error::strict_meta_message(model)
            }
            Self::ModelNotSupported { model, message } => {
                body.insert("requested_model".into(), model.as_str().into());
                message.clone()
            }
            Self::ProviderRateLimited { provider, message, retry_after_ms } => {
                body.insert("provider".into(), provider.as_str().into());
                body.insert("retry_after_ms".into(), json!(retry_after_ms));
                message.clone()
            }
            Self::AllProvidersExhausted { model, message, advice } => {
                body.insert("requested_model".into(), model.as_str().into());
                body.insert("retry_after_ms".into(), json!(advice.retry_after_ms));
                body.insert("providers".into(), Value::Array(advice.providers.clone()));
                body.insert("suggestions".into(), Value::Array(advice.suggestions.clone()));
                // An extension of the reference's contract.
                body.insert("attempts".into(), Value::Array(advice.attempts.clone()));
                message.clone()
            }
            Self::ProviderNotFound { id } => format!("Provider not found: {id}"),
            Self::ProviderUpstream { provider, message, upstream_code } => {
                body.insert("provider".into(), provider.as_str().into());
                if let Some(code) = upstream_code {
                    body.insert("upstream_code".into(), code.as_str().into());
                }
                message.clone()
            }
            Self::AdapterFault { provider, message } => {
                body.insert("provider".into(), provider.as_str().into());
                message.clone()
            }
            Self::NotFound { path } => format!("No route for {path}."),
            Self::MethodNotAllowed => "Method not allowed for this route.".into(),
            Self::MissingApiKey => "Missing API key. Set Authorization: Bearer <key>.".into(),
            Self::OperatorRequired => "This endpoint shows gateway-wide data and needs the master or admin key; \
                 GET /v1/me shows your own usage."
                .into(),
            Self::TooManyEventFeeds { max } => {
                format!("Too many open event feeds for this credential (at most {max}); close one and retry.")
            }
            Self::HostNotAllowed => "This gateway does not serve the host named in the Host header; list it in \
                 [server] allowed_hosts (FREELLM_ALLOWED_HOSTS) to allow it."
                .into(),
            Self::CrossOriginRefused => "Admin endpoints of an open gateway refuse requests from other origins; \
                 call from the gateway's own origin, list the origin in ALLOWED_ORIGINS, or protect the gateway \
                 with FREELLM_ADMIN_KEY."
                .into(),
            Self::AdminContentType { expected } => format!("Content-Type must be {expected} on this endpoint."),
            Self::InvalidApiKey { message }
            | Self::AdminRequired { message }
            | Self::VirtualKeyCapReached { message } => message.clone(),
            Self::ClientRateLimited { message, retry_after_ms }
            | Self::IdentifierRateLimited { message, retry_after_ms } => {
                body.insert("retry_after_ms".into(), json!(retry_after_ms));
                message.clone()
            }
            Self::BrowserTokensDisabled => {
                "Browser tokens are disabled: set FREELLM_TOKEN_SECRET to at least 32 bytes \
                 on the gateway to enable."
                    .into()
            }
            Self::RequestTimeout { after_ms } => format!("The request body was not complete after {after_ms} ms."),
            Self::TooManyConnections => "The gateway is at its connection limit; retry shortly.".into(),
            Self::AtCapacity => "The gateway is at capacity (as many streams are open as it serves at once, \
                 or every adapter instance is in use); retry shortly."
                .into(),
            Self::SharedStateUnavailable => "This request's limits are shared by the gateway's instances and \
                 the shared state is unavailable (degraded: shared state unavailable); retry shortly."
                .into(),
            Self::Internal(_) => "Internal server error".into(),
        };
        // Keep the documented key order: type, code, message, then context.
        let mut ordered = Map::new();
        ordered.insert("type".into(), kind.into());
        ordered.insert("code".into(), code.into());
        // Every variant: messages quote upstreams, adapters and clients.
        ordered.insert("message".into(), crate::redact::redact(&message).into_owned().into());
        for (k, v) in body {
            ordered.entry(k).or_insert(v);
        }
        ordered
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(detail = %detail, "internal error");
        }
        let mut response = self.status().into_response();
        if matches!(self, Self::TooManyConnections | Self::SharedStateUnavailable | Self::AtCapacity) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        let exhausted_retry = match &self {
            Self::AllProvidersExhausted { advice, .. } => advice.retry_after_ms,
            _ => None,
        };
        if let Some(ms) = &exhausted_retry {
            let secs = ms.div_ceil(1000).max(1);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::ProviderRateLimited { retry_after_ms: Some(ms), .. }
        | Self::ClientRateLimited { retry_after_ms: ms, .. }
        | Self::IdentifierRateLimited { retry_after_ms: ms, .. } = &self
        {
            let secs = ms.div_ceil(1000).max(1);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::ProviderUpstream { provider, .. }
        | Self::AdapterFault { provider, .. }
        | Self::ProviderRateLimited { provider, .. } = &self
            && let Ok(v) = HeaderValue::from_str(provider)
        {
            response.headers_mut().insert("x-freellm-provider", v);
        }
        response.extensions_mut().insert(PendingErrorBody(self.body()));
        response
    }
}

/// Renders a parked error body with the request id.
pub fn render_error_body(body: Map<String, Value>, request_id: &str) -> Vec<u8> {
    // The context fields (per-provider errors, suggestions) quote upstream
    // text too, so the whole body is redacted; the marker has no JSON
    // metacharacters, so it stays valid. The request id is added afterwards:
    // a client may choose one that looks like a hex secret.
    let body = serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_owned());
    let body = crate::redact::redact(&body);
    let id = serde_json::to_string(request_id).unwrap_or_else(|_| "\"\"".to_owned());
    let mut out = String::with_capacity(body.len() + id.len() + 32);
    out.push_str("{\"error\":");
    match body.strip_suffix('}') {
        Some(open) if open.len() > 1 => {
            out.push_str(open);
            out.push_str(",\"request_id\":");
        }
        _ => out.push_str("{\"request_id\":"),
    }
    out.push_str(&id);
    out.push_str("}}");
    out.into_bytes()
}

/// The HTTP edge: a refusal by the client's limits as its envelope.
impl From<LimitRefusal> for ApiError {
    fn from(refusal: LimitRefusal) -> Self {
        match refusal {
            LimitRefusal::Client { rpm, decision } => Self::ClientRateLimited {
                message: format!("Client rate limit exceeded. Max {rpm} requests per 60s."),
                retry_after_ms: decision.reset_ms,
            },
            LimitRefusal::Identifier { identifier, decision } => Self::IdentifierRateLimited {
                message: format!(
                    "Identifier \"{identifier}\" exceeded its rate limit. Retry in {}s.",
                    decision.reset_ms.div_ceil(1000).max(1)
                ),
                retry_after_ms: decision.reset_ms,
            },
            LimitRefusal::SharedStateUnavailable => Self::SharedStateUnavailable,
        }
    }
}

/// The HTTP edge: a routing failure as the client's envelope.
impl From<RoutingError> for ApiError {
    fn from(e: RoutingError) -> Self {
        match e {
            RoutingError::Limited(refusal) => refusal.into(),
            RoutingError::ModelNotFound { model, reason, available } => {
                Self::ModelNotFound { model, reason, available }
            }
            RoutingError::NoProvidersConfigured { hint } => Self::NoProvidersConfigured { hint },
            RoutingError::StrictMetaForbidden { model } => Self::StrictMetaForbidden { model },
            RoutingError::ModelNotSupported { model, message } => Self::ModelNotSupported { model, message },
            RoutingError::Provider { provider, message, upstream_code, .. } => {
                Self::ProviderUpstream { provider, message, upstream_code }
            }
            RoutingError::AdapterFault { provider, message } => Self::AdapterFault { provider, message },
            RoutingError::AtCapacity => Self::AtCapacity,
            RoutingError::RateLimited { provider, message, retry_after_ms } => {
                Self::ProviderRateLimited { provider, message, retry_after_ms }
            }
            RoutingError::Exhausted { model, message, advice } => {
                Self::AllProvidersExhausted { model, message, advice }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routing_error_becomes_its_envelope_at_the_edge() {
        let e = RoutingError::StrictMetaForbidden { model: "free".into() };
        assert!(matches!(ApiError::from(e), ApiError::StrictMetaForbidden { .. }));
        let e =
            RoutingError::RateLimited { provider: "groq".into(), message: "slow down".into(), retry_after_ms: Some(7) };
        assert!(matches!(ApiError::from(e), ApiError::ProviderRateLimited { retry_after_ms: Some(7), .. }));
    }

    fn rendered(error: ApiError, request_id: &str) -> Value {
        let body = error.body();
        serde_json::from_slice(&render_error_body(body, request_id)).unwrap()
    }

    #[test]
    fn every_message_and_context_field_is_redacted() {
        crate::redact::set_secrets("test:error", ["odd.Shaped/Key+0001"]);
        let e = rendered(
            ApiError::InvalidApiKey { message: "bad key odd.Shaped/Key+0001".into() },
            "0123456789abcdef0123456789abcdef",
        );
        assert_eq!(e["error"]["message"], "bad key [REDACTED]");
        assert_eq!(e["error"]["request_id"], "0123456789abcdef0123456789abcdef", "the id is not a secret");
        let e = rendered(
            ApiError::AllProvidersExhausted {
                model: "free".into(),
                message: "all failed".into(),
                advice: Box::new(Advice {
                    providers: vec![json!({"id": "groq", "error": "echo odd.Shaped/Key+0001 and Bearer abc"})],
                    attempts: vec![json!({"provider": "groq", "model": "m", "outcome": "server_error", "status": 503})],
                    ..Advice::default()
                }),
            },
            "rid",
        );
        assert_eq!(e["error"]["providers"][0]["error"], "echo [REDACTED] and Bearer [REDACTED]", "{e}");
        assert_eq!(e["error"]["code"], "all_providers_exhausted");
        assert_eq!(e["error"]["attempts"][0]["status"], 503, "{e}");
        assert_eq!(e["error"]["request_id"], "rid");
    }

    #[test]
    fn an_empty_body_still_renders_an_envelope() {
        let v: Value = serde_json::from_slice(&render_error_body(Map::new(), "r\"1")).unwrap();
        assert_eq!(v, json!({"error": {"request_id": "r\"1"}}));
    }
}
