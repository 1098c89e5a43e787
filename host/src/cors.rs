//! CORS for browser clients.
//!
//! `ALLOWED_ORIGINS` is an allowlist (comma-separated, or `*`). Without it
//! the gateway allows any origin only while no credential is configured; a
//! protected gateway allows none until the operator lists them. Preflights
//! are answered here, before authentication (browsers send no credentials
//! on them), with the allowed methods and headers listed explicitly; every
//! answer to an allowed origin exposes `X-Request-Id`, the `X-FreeLLM-*`
//! headers and `Retry-After` so browser code can read them.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::SharedGateway;

/// Methods the API uses.
pub const ALLOW_METHODS: &str = "GET, POST, PATCH, OPTIONS";
/// Request headers browsers may send.
pub const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, X-Request-Id, X-FreeLLM-Strict, X-FreeLLM-Privacy, X-FreeLLM-Identifier";
/// Response headers browser code may read.
pub const EXPOSE_HEADERS: &str = "X-Request-Id, X-FreeLLM-Provider, X-FreeLLM-Model, X-FreeLLM-Requested-Model, \
     X-FreeLLM-Cached, X-FreeLLM-Route-Reason, X-FreeLLM-Warning, X-FreeLLM-Identifier, \
     X-FreeLLM-Identifier-Remaining, X-FreeLLM-Identifier-Reset, Retry-After";

/// Which origins may call from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`*`).
    Any,
    /// Exactly these origins.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// From `ALLOWED_ORIGINS` and whether any credential is configured.
    pub fn new(configured: Option<&[String]>, protected: bool) -> Self {
        match configured {
            Some(list) if list.iter().any(|o| o == "*") => Self::Any,
            Some(list) => Self::List(list.to_vec()),
            None if protected => Self::List(Vec::new()),
            None => Self::Any,
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request's origin.
    fn allow(&self, origin: &str) -> Option<HeaderValue> {
        match self {
            Self::Any => Some(HeaderValue::from_static("*")),
            Self::List(list) if list.iter().any(|o| o == origin) => HeaderValue::from_str(origin).ok(),
            Self::List(_) => None,
        }
    }
}

/// The CORS middleware.
pub async fn cors(State(gw): State<SharedGateway>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let allowed = origin.as_deref().and_then(|o| gw.cors.allow(o));
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        if let Some(allow) = allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        return response;
    }
    let mut response = next.run(req).await;
    if let Some(allow) = allowed {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_depend_on_whether_the_gateway_is_protected() {
        assert_eq!(AllowedOrigins::new(None, false), AllowedOrigins::Any);
        assert_eq!(AllowedOrigins::new(None, true), AllowedOrigins::List(vec![]));
        let list = vec!["https://app.example".to_owned()];
        let allowed = AllowedOrigins::new(Some(&list), true);
        assert!(allowed.allow("https://app.example").is_some());
        assert!(allowed.allow("https://evil.example").is_none());
        assert_eq!(AllowedOrigins::new(Some(&["*".to_owned()]), true), AllowedOrigins::Any);
    }
}
