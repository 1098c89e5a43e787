//! The guard in front of every endpoint but `/healthz`: authentication,
//! admin-only endpoints, the per-IP limit and the per-identifier limit.
//!
//! Before anything, [`check_host`] refuses a `Host` the gateway does not
//! serve (`[server] allowed_hosts`): a page whose name an attacker points
//! at 127.0.0.1 (DNS rebinding) is same-origin with itself, not with us.
//!
//! Order: authenticate ([`crate::access::auth`]) → admin check → operator views
//! (`/v1/status`, `/v1/events`, `/metrics`: master, admin or open mode
//! only) → on an open gateway, admin endpoints refuse other origins and
//! content types a cross-site form or simple request could send → identifier
//! resolution (`X-FreeLLM-Identifier`, a browser token's pinned identifier,
//! else `ip:<client>`) → per-IP limit (`RATE_LIMIT_RPM`) → identifier limit
//! (`FREELLM_IDENTIFIER_LIMIT`; off unless set — the reference's default of
//! 60 per minute per IP throttles a local gateway and its own dashboard).
//! The principal is handed to handlers as a request extension, and every
//! answer carries `X-FreeLLM-Identifier`, `-Remaining` and `-Reset`.
//!
//! In a fleet (Redis) both limits are the fleet's: one script decides and
//! records ([`crate::fleet::Fleet::check_identifier`]); a chat request does
//! not wait here for it but at its [`LimitGate`], before it sends upstream
//! or answers ([`crate::access::admission`]). While Redis is
//! unreachable `on_redis_error` decides for tenants: `closed` refuses with
//! 503 `shared_state_unavailable`, `open` decides from this instance's own
//! limiter and keeps the count to merge later. Operators (master, admin,
//! open mode) are always decided locally then, so `/v1/status` stays
//! readable during an outage.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};

use crate::access::admission::{LimitGate, LimitOutcome, LimitRefusal};
use crate::access::auth::{self, AuthFailure, Principal};
use crate::config::OnRedisError;
use crate::http::clients::ClientPolicy;
use crate::http::error::ApiError;
use crate::ops::stats::unix_ms;
use crate::state::{Gateway, SharedGateway};
use freellm_limits::identifier::{Decision, IdentifierLimiter, validate_identifier};

/// Endpoints open to everyone.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/api/healthz") || path == "/dashboard" || path.starts_with("/dashboard/")
}

/// Endpoints only the admin may call.
fn is_admin_only(method: &Method, path: &str) -> bool {
    let path = path.strip_prefix("/api").unwrap_or(path);
    (method == Method::PATCH && path == "/v1/status/routing")
        || (method == Method::POST && path.starts_with("/v1/status/providers/"))
        || path == "/v1/status/virtual-keys"
        || path.starts_with("/v1/plugins")
}

/// Paths of admin endpoints, whatever the method (CORS never opens them
/// to any origin: only to listed ones).
pub(crate) fn is_admin_path(path: &str) -> bool {
    let path = path.strip_prefix("/api").unwrap_or(path);
    path == "/v1/status/routing"
        || path.starts_with("/v1/status/providers/")
        || path == "/v1/status/virtual-keys"
        || path.starts_with("/v1/plugins")
}

/// Gateway-wide views: every tenant's traffic and failures are in them.
fn is_operator_only(path: &str) -> bool {
    let path = path.strip_prefix("/api").unwrap_or(path);
    matches!(path, "/v1/status" | "/v1/events" | "/metrics")
}

/// The adapter upload (`POST /v1/plugins/{id}`), which takes a component.
fn is_upload(method: &Method, path: &str) -> bool {
    let path = path.strip_prefix("/api").unwrap_or(path);
    method == Method::POST
        && path.strip_prefix("/v1/plugins/").is_some_and(|id| !id.is_empty() && !id.contains('/') && id != "reload")
}

/// The client's address as the guard saw it (`X-Forwarded-For` when
/// `TRUST_PROXY`), for handlers that count per client.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub Option<IpAddr>);

/// Refuses a request whose `Host` the gateway does not serve (421).
pub fn check_host(gw: &Gateway, req: &Request) -> Result<(), Box<Response>> {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri().host());
    if gw.config.allowed_hosts.allows(host) {
        return Ok(());
    }
    tracing::info!(host = ?host.map(|h| h.chars().take(80).collect::<String>()), "request for a host not served");
    Err(Box::new(ApiError::HostNotAllowed.into_response()))
}

/// On an open gateway anyone who can reach it is the operator, browsers
/// included: a page on another site could swap an adapter with a simple
/// (unpreflighted) cross-site POST. Admin endpoints there take requests
/// only from the gateway's own origin or an `ALLOWED_ORIGINS` entry, and
/// only with the content type they read.
fn check_open_admin(clients: &ClientPolicy, req: &Request) -> Result<(), ApiError> {
    let headers = req.headers();
    let cross_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site");
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri().host());
        if !(is_own_origin(origin, host) || clients.origins.lists(origin)) {
            return Err(ApiError::CrossOriginRefused);
        }
    } else if cross_site {
        return Err(ApiError::CrossOriginRefused);
    }
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    let expected: &[&str] = if is_upload(req.method(), req.uri().path()) {
        &["application/wasm", "application/octet-stream"]
    } else {
        &["application/json"]
    };
    let describe =
        if expected.len() == 2 { "application/wasm or application/octet-stream" } else { "application/json" };
    match headers.get(header::CONTENT_TYPE) {
        Some(v) => {
            let media =
                v.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            if expected.contains(&media.as_str()) {
                Ok(())
            } else {
                Err(ApiError::AdminContentType { expected: describe })
            }
        }
        None if has_empty_body(headers) => Ok(()),
        None => Err(ApiError::AdminContentType { expected: describe }),
    }
}

/// `Origin` is this gateway itself, as the `Host` header names it.
fn is_own_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// No body: a zero length, or neither a length nor a chunked body.
fn has_empty_body(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_LENGTH) {
        Some(len) => len.as_bytes() == b"0",
        None => !headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// What the guard lets through: the identifier headers every answer to an
/// identifier-limited request carries ([`Admission::finish`]).
pub struct Admission {
    limits: Limits,
}

/// Where the request's limits stand when the guard lets it through.
enum Limits {
    /// No identifier limit applies.
    None,
    /// Decided: the identifier and its decision.
    Decided(String, Decision),
    /// Being decided while the request is routed ([`LimitGate`]).
    Later(String, LimitGate),
}

impl Admission {
    /// Adds the identifier headers to the answer (waiting for a decision
    /// still under way; the request has waited for it before answering).
    pub async fn finish(self, response: &mut Response) {
        let (identifier, decision) = match self.limits {
            Limits::None => return,
            Limits::Decided(identifier, decision) => (identifier, decision),
            Limits::Later(identifier, gate) => match gate.outcome().await {
                Ok(Some(decision)) => (identifier, decision),
                Err(LimitRefusal::Identifier { identifier, decision }) => (identifier, decision),
                Ok(None) | Err(_) => return,
            },
        };
        identifier_headers(response.headers_mut(), &identifier, &decision);
    }
}

/// Authenticates and limits one request. `Ok`: it goes on, its principal
/// in the request's extensions. `Err`: the refusal to answer with.
///
/// In a fleet a chat request's limits are decided while it is routed: it
/// carries a [`LimitGate`] instead of waiting here for Redis
/// ([`crate::access::admission`]).
pub async fn admit(
    gw: &SharedGateway,
    clients: &Arc<ClientPolicy>,
    req: &mut Request,
) -> Result<Admission, Box<Response>> {
    let path = req.uri().path();
    if is_public(path) {
        return Ok(Admission { limits: Limits::None });
    }
    let now_ms = unix_ms(SystemTime::now());
    let principal = match auth::authenticate(req.headers(), &gw.credentials, &gw.virtual_keys, now_ms) {
        Ok(p) => p,
        Err(failure) => {
            tracing::info!(path = %path, reason = ?failure_kind(&failure), "request not authenticated");
            return Err(Box::new(auth_error(failure).into_response()));
        }
    };
    let admin_only = is_admin_only(req.method(), path);
    if admin_only && !principal.is_admin(&gw.credentials) {
        return Err(Box::new(
            ApiError::AdminRequired { message: "Admin access required. Set Authorization: Bearer <admin-key>.".into() }
                .into_response(),
        ));
    }
    if is_operator_only(path) && !principal.is_operator() {
        return Err(Box::new(ApiError::OperatorRequired.into_response()));
    }
    if admin_only && matches!(principal, Principal::Open) {
        check_open_admin(clients, req).map_err(|e| Box::new(e.into_response()))?;
    }

    let client_ip = client_ip(req, clients.trust_proxy());
    req.extensions_mut().insert(ClientAddr(client_ip));
    let identifier =
        resolve_identifier(req.headers(), &principal, client_ip).map_err(|e| Box::new(e.into_response()))?;
    if clients.ip_limiter.is_none() && clients.identifier_limiter.is_none() {
        req.extensions_mut().insert(principal);
        return Ok(Admission { limits: Limits::None });
    }
    if gw.fleet.shared().is_some() && is_chat(req.method(), req.uri().path()) {
        let (gw, clients, who) = (gw.clone(), clients.clone(), principal.clone());
        let name = identifier.clone();
        let gate = LimitGate::start(async move { decide_limits(&gw, &clients, &who, &name, client_ip, now_ms).await });
        req.extensions_mut().insert(gate.clone());
        req.extensions_mut().insert(principal);
        return Ok(Admission { limits: Limits::Later(identifier, gate) });
    }
    match decide_limits(gw, clients, &principal, &identifier, client_ip, now_ms).await {
        Ok(decision) => {
            req.extensions_mut().insert(principal);
            let limits = decision.map_or(Limits::None, |d| Limits::Decided(identifier, d));
            Ok(Admission { limits })
        }
        Err(refusal) => Err(Box::new(refusal_response(refusal))),
    }
}

/// `POST /v1/chat/completions` (or its `/api` twin).
fn is_chat(method: &Method, path: &str) -> bool {
    method == Method::POST && path.strip_prefix("/api").unwrap_or(path) == "/v1/chat/completions"
}

/// The answer to a request its limits refuse, with the identifier headers
/// when the identifier's limit refused it.
fn refusal_response(refusal: LimitRefusal) -> Response {
    let headers = match &refusal {
        LimitRefusal::Identifier { identifier, decision } => Some((identifier.clone(), *decision)),
        _ => None,
    };
    let mut response = ApiError::from(refusal).into_response();
    if let Some((identifier, decision)) = headers {
        identifier_headers(response.headers_mut(), &identifier, &decision);
    }
    response
}

/// The client's limits, in order: the per-IP limit, then the identifier's
/// (a request the first refuses is not counted by the second). In a fleet
/// with both, one round trip decides both.
async fn decide_limits(
    gw: &Gateway,
    clients: &ClientPolicy,
    principal: &Principal,
    identifier: &str,
    client_ip: Option<IpAddr>,
    now_ms: u64,
) -> LimitOutcome {
    let ip = clients.ip_limiter.as_deref().zip(client_ip).map(|(limiter, ip)| (limiter, format!("ip:{ip}")));
    let id_limiter = clients.identifier_limiter.as_deref();
    let mut both = None;
    let mut fleet_failed = false;
    if let (Some((ip_limiter, ip_name)), Some(id_limiter)) = (&ip, id_limiter)
        && gw.fleet.shared().is_some()
    {
        let (ip_limit, id_limit) = ((ip_name.as_str(), ip_limiter.limit()), (identifier, id_limiter.limit()));
        match gw.fleet.check_client_limits(ip_limit, id_limit).await {
            Ok(decisions) => both = Some(decisions),
            Err(_) if refuses_without_fleet(gw, principal) => return Err(LimitRefusal::SharedStateUnavailable),
            Err(_) => fleet_failed = true,
        }
    }
    if let Some((limiter, name)) = &ip {
        let decision = match both {
            Some((decision, _)) => decision,
            None => check_limit(gw, limiter, "ip", name, principal, now_ms, fleet_failed).await?,
        };
        if !decision.allowed {
            return Err(LimitRefusal::Client { rpm: clients.per_ip_rpm().unwrap_or_default(), decision });
        }
    }
    let Some(limiter) = id_limiter else {
        return Ok(None);
    };
    let decision = match both.and_then(|(_, identifier)| identifier) {
        Some(decision) => decision,
        None => check_limit(gw, limiter, "id", identifier, principal, now_ms, fleet_failed).await?,
    };
    if !decision.allowed {
        return Err(LimitRefusal::Identifier { identifier: identifier.to_owned(), decision });
    }
    Ok(Some(decision))
}

/// Redis cannot decide, and `on_redis_error = "closed"` refuses this
/// principal rather than guess (operators are decided locally).
fn refuses_without_fleet(gw: &Gateway, principal: &Principal) -> bool {
    gw.fleet.on_redis_error() == OnRedisError::Closed && !principal.is_operator()
}

/// One limit's decision for `name`: the fleet's when it shares state, else
/// (or, for operators and with `on_redis_error = "open"`, while Redis is
/// unreachable, or when `fleet_failed` says it just did not answer) the
/// local limiter's, its count kept to merge later.
async fn check_limit(
    gw: &Gateway,
    limiter: &IdentifierLimiter,
    kind: &'static str,
    name: &str,
    principal: &Principal,
    now_ms: u64,
    fleet_failed: bool,
) -> Result<Decision, LimitRefusal> {
    if gw.fleet.shared().is_none() {
        return Ok(limiter.check(name, now_ms));
    }
    if !fleet_failed {
        match gw.fleet.check_identifier(kind, name, limiter.limit()).await {
            Ok(decision) => return Ok(decision),
            Err(_) if refuses_without_fleet(gw, principal) => return Err(LimitRefusal::SharedStateUnavailable),
            Err(_) => {}
        }
    }
    let decision = limiter.check(name, now_ms);
    if decision.allowed {
        gw.fleet.keep_identifier_count(kind, name, limiter.limit());
    }
    Ok(decision)
}

fn failure_kind(f: &AuthFailure) -> &'static str {
    match f {
        AuthFailure::Missing => "missing",
        AuthFailure::Invalid => "invalid",
        AuthFailure::Expired(_) => "expired",
        AuthFailure::TokenRejected(_) => "token_rejected",
    }
}

fn auth_error(failure: AuthFailure) -> ApiError {
    match failure {
        AuthFailure::Missing => ApiError::MissingApiKey,
        AuthFailure::Invalid => ApiError::InvalidApiKey { message: "Invalid API key.".into() },
        AuthFailure::Expired(masked) => ApiError::InvalidApiKey { message: format!("virtual key {masked} is expired") },
        AuthFailure::TokenRejected(reason) => {
            ApiError::InvalidApiKey { message: format!("Browser token rejected: {reason}") }
        }
    }
}

/// The bucket a request counts against: a browser token's identifier (which
/// the client cannot override), else a valid `X-FreeLLM-Identifier`, else
/// the client IP.
fn resolve_identifier(headers: &HeaderMap, principal: &Principal, ip: Option<IpAddr>) -> Result<String, ApiError> {
    if let Some(pinned) = principal.pinned_identifier() {
        return Ok(pinned.to_owned());
    }
    let header = headers.get("x-freellm-identifier").map(|v| v.to_str().unwrap_or("\u{fffd}"));
    match header.map(validate_identifier) {
        Some(Ok(Some(id))) => Ok(id.to_owned()),
        Some(Err(e)) => Err(ApiError::invalid_header(
            "X-FreeLLM-Identifier",
            format!("must match ^[A-Za-z0-9_.:-]{{1,128}}$ or be omitted ({e})."),
        )),
        None | Some(Ok(None)) => Ok(match ip {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".to_owned(),
        }),
    }
}

fn client_ip(req: &Request, trust_proxy: bool) -> Option<IpAddr> {
    if trust_proxy
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

fn identifier_headers(headers: &mut HeaderMap, identifier: &str, d: &Decision) {
    if let Ok(v) = HeaderValue::from_str(identifier) {
        headers.insert("x-freellm-identifier", v);
    }
    headers.insert("x-freellm-identifier-remaining", HeaderValue::from(d.remaining));
    headers.insert("x-freellm-identifier-reset", HeaderValue::from(d.reset_ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_admin_paths() {
        assert!(is_public("/healthz") && is_public("/api/healthz") && is_public("/dashboard/app.js"));
        assert!(!is_public("/v1/models"));
        assert!(is_admin_only(&Method::PATCH, "/v1/status/routing"));
        assert!(is_admin_only(&Method::POST, "/api/v1/status/providers/groq/reset"));
        assert!(is_admin_only(&Method::GET, "/v1/status/virtual-keys"));
        assert!(!is_admin_only(&Method::GET, "/v1/status"));
        assert!(!is_admin_only(&Method::POST, "/v1/chat/completions"));
        for operator in ["/v1/status", "/api/v1/status", "/v1/events", "/metrics", "/api/metrics"] {
            assert!(is_operator_only(operator), "{operator}");
        }
        for tenant in ["/v1/me", "/v1/models", "/v1/chat/completions", "/v1/status/x", "/metricsx"] {
            assert!(!is_operator_only(tenant), "{tenant}");
        }
        assert!(is_upload(&Method::POST, "/v1/plugins/groq") && is_upload(&Method::POST, "/api/v1/plugins/groq"));
        assert!(
            !is_upload(&Method::POST, "/v1/plugins/reload") && !is_upload(&Method::POST, "/v1/plugins/groq/canary")
        );
        assert!(!is_upload(&Method::GET, "/v1/plugins/groq") && !is_upload(&Method::POST, "/v1/plugins/"));
        assert!(is_admin_path("/v1/plugins") && is_admin_path("/api/v1/status/routing"));
        assert!(!is_admin_path("/v1/status") && !is_admin_path("/v1/chat/completions"));
    }

    #[test]
    fn own_origin_and_empty_bodies() {
        assert!(is_own_origin("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(is_own_origin("https://GW.example", Some("gw.example")));
        assert!(!is_own_origin("http://127.0.0.1:3001", Some("127.0.0.1:3000")));
        assert!(!is_own_origin("null", Some("127.0.0.1:3000")));
        assert!(!is_own_origin("http://127.0.0.1:3000", None));
        let mut h = HeaderMap::new();
        assert!(has_empty_body(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(has_empty_body(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(!has_empty_body(&h));
        h.remove(header::CONTENT_LENGTH);
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(!has_empty_body(&h));
    }
}
