//! CORS for browser clients.
//!
//! `ALLOWED_ORIGINS` is an allowlist (comma-separated, or `*`). Without it
//! the gateway allows any origin only while it is open (no key source
//! configured: the decision [`crate::access::auth::is_protected`] makes once, at
//! start); a protected gateway allows none until the operator lists them.
//! Admin endpoints are never opened by `*`, only to listed origins; an
//! open gateway's admin endpoints also refuse unlisted origins other than
//! its own ([`crate::http::guard`]). Preflights
//! are answered here, before authentication (browsers send no credentials
//! on them), with the allowed methods and headers listed explicitly; every
//! answer to an allowed origin exposes `X-Request-Id`, the `X-FreeLLM-*`
//! headers and `Retry-After` so browser code can read them.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

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

    /// Whether `origin` is listed explicitly (`*` lists nobody).
    pub fn lists(&self, origin: &str) -> bool {
        matches!(self, Self::List(list) if list.iter().any(|o| o == origin))
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

/// The CORS verdict on one request, applied to its answer by [`Cors::decorate`].
pub struct Cors {
    allowed: Option<HeaderValue>,
}

impl Cors {
    /// Reads the request's origin. A preflight is answered here (`Err`, the
    /// answer), before authentication; any other request goes on (`Ok`).
    pub fn check(origins: &AllowedOrigins, req: &Request) -> Result<Self, Box<Response>> {
        let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
        // `*` never covers admin endpoints: on an open gateway it would let
        // any page read (and, with a preflight, drive) them.
        let allowed = if crate::http::guard::is_admin_path(req.uri().path()) {
            origin.filter(|o| origins.lists(o)).and_then(|o| HeaderValue::from_str(o).ok())
        } else {
            origin.and_then(|o| origins.allow(o))
        };
        let preflight =
            req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            return Ok(Self { allowed });
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        if let Some(allow) = allowed {
            allow_origin(headers, allow);
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        Err(Box::new(response))
    }

    /// Lets an allowed origin read the answer and its gateway headers.
    pub fn decorate(self, response: &mut Response) {
        if let Some(allow) = self.allowed {
            let headers = response.headers_mut();
            allow_origin(headers, allow);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// `Access-Control-Allow-Origin`, and for an allowlisted origin (never for
/// `*`, which browsers refuse with credentials) `Access-Control-Allow-Credentials:
/// true`, as the reference does: browser code may then send cookies or an
/// `Authorization` header and read the answer.
fn allow_origin(headers: &mut axum::http::HeaderMap, allow: HeaderValue) {
    if allow != "*" {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_allowlisted_origin_is_allowed_with_credentials_and_any_origin_without() {
        let mut headers = axum::http::HeaderMap::new();
        allow_origin(&mut headers, HeaderValue::from_static("https://app.example"));
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let mut headers = axum::http::HeaderMap::new();
        allow_origin(&mut headers, HeaderValue::from_static("*"));
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

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
        assert!(allowed.lists("https://app.example") && !allowed.lists("https://evil.example"));
        assert!(!AllowedOrigins::Any.lists("https://app.example"), "* does not list an origin");
    }
}
