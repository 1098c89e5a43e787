//! The guard in front of every endpoint but `/healthz`: authentication,
//! admin-only endpoints, the per-IP limit and the per-identifier limit.
//!
//! Order: authenticate ([`crate::auth`]) → admin check → identifier
//! resolution (`X-FreeLLM-Identifier`, a browser token's pinned identifier,
//! else `ip:<client>`) → per-IP limit (`RATE_LIMIT_RPM`) → identifier limit
//! (`FREELLM_IDENTIFIER_LIMIT`; off unless set — the reference's default of
//! 60 per minute per IP throttles a local gateway and its own dashboard).
//! The principal is handed to handlers as a request extension, and every
//! answer carries `X-FreeLLM-Identifier`, `-Remaining` and `-Reset`.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use crate::auth::{self, AuthFailure, Principal};
use crate::error::ApiError;
use crate::identifier::{Decision, validate_identifier};
use crate::state::Gateway;
use crate::stats::unix_ms;

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

/// What the guard lets through: the identifier headers every answer to an
/// identifier-limited request carries ([`Admission::finish`]).
pub struct Admission {
    identifier: Option<(String, Decision)>,
}

impl Admission {
    /// Adds the identifier headers to the answer.
    pub fn finish(self, response: &mut Response) {
        if let Some((identifier, decision)) = &self.identifier {
            identifier_headers(response.headers_mut(), identifier, decision);
        }
    }
}

/// Authenticates and limits one request. `Ok`: it goes on, its principal
/// in the request's extensions. `Err`: the refusal to answer with.
pub fn admit(gw: &Gateway, req: &mut Request) -> Result<Admission, Box<Response>> {
    let path = req.uri().path();
    if is_public(path) {
        return Ok(Admission { identifier: None });
    }
    let now_ms = unix_ms(SystemTime::now());
    let principal = match auth::authenticate(req.headers(), &gw.credentials, &gw.virtual_keys, now_ms) {
        Ok(p) => p,
        Err(failure) => {
            tracing::info!(path = %path, reason = ?failure_kind(&failure), "request not authenticated");
            return Err(Box::new(auth_error(failure).into_response()));
        }
    };
    if is_admin_only(req.method(), path) && !principal.is_admin(&gw.credentials) {
        return Err(Box::new(
            ApiError::AdminRequired { message: "Admin access required. Set Authorization: Bearer <admin-key>.".into() }
                .into_response(),
        ));
    }

    let client_ip = client_ip(req, gw.config.security.trust_proxy);
    let identifier =
        resolve_identifier(req.headers(), &principal, client_ip).map_err(|e| Box::new(e.into_response()))?;
    if let (Some(limiter), Some(ip)) = (&gw.ip_limiter, client_ip) {
        let d = limiter.check(&format!("ip:{ip}"), now_ms);
        if !d.allowed {
            let rpm = gw.config.security.rate_limit_rpm.unwrap_or_default();
            return Err(Box::new(
                ApiError::ClientRateLimited {
                    message: format!("Client rate limit exceeded. Max {rpm} requests per 60s."),
                    retry_after_ms: d.reset_ms,
                }
                .into_response(),
            ));
        }
    }
    let Some(limiter) = &gw.identifier_limiter else {
        req.extensions_mut().insert(principal);
        return Ok(Admission { identifier: None });
    };
    let decision = limiter.check(&identifier, now_ms);
    if !decision.allowed {
        let mut response = ApiError::IdentifierRateLimited {
            message: format!(
                "Identifier \"{identifier}\" exceeded its rate limit. Retry in {}s.",
                decision.reset_ms.div_ceil(1000).max(1)
            ),
            retry_after_ms: decision.reset_ms,
        }
        .into_response();
        identifier_headers(response.headers_mut(), &identifier, &decision);
        return Err(Box::new(response));
    }
    req.extensions_mut().insert(principal);
    Ok(Admission { identifier: Some((identifier, decision)) })
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
        Some(Err(e)) => Err(ApiError::invalid_body(format!(
            "X-FreeLLM-Identifier must match ^[A-Za-z0-9_.:-]{{1,128}}$ or be omitted ({e})."
        ))),
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
    }
}
