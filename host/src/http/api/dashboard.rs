//! `GET /dashboard`: the operator dashboard, a single page of plain HTML,
//! CSS and JavaScript embedded in the binary (no build step, no external
//! requests).
//!
//! The shell is public (it holds no data); every data call the page makes
//! carries `Authorization: Bearer <key>`. Assets are served with a strict
//! Content-Security-Policy: scripts, styles and connections to this origin
//! only, no inline code, no framing.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::SharedGateway;

/// `Content-Security-Policy` of every dashboard answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../../dashboard/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../../dashboard/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("../../../dashboard/api.js")),
    ("charts.js", "text/javascript; charset=utf-8", include_bytes!("../../../dashboard/charts.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../../dashboard/style.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../../dashboard/icon.svg")),
];

/// `GET /dashboard` and `GET /dashboard/`: the page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /dashboard/session`: whether the page must ask for a key (any
/// credential configured). Says nothing about any key.
pub async fn session(State(gw): State<SharedGateway>) -> Response {
    let protected = crate::access::auth::is_protected(&gw.credentials, &gw.virtual_keys);
    let mut response = Json(json!({ "protected": protected })).into_response();
    secure(&mut response);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /dashboard/{file}`: one asset.
pub async fn asset(Path(path): Path<String>) -> Response {
    serve(if path.is_empty() { "index.html" } else { &path })
}

fn serve(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        let mut response = (StatusCode::NOT_FOUND, "not found").into_response();
        secure(&mut response);
        return response;
    };
    let mut response = (*bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(&mut response);
    response
}

fn secure(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_their_content_types_and_unknown_ones_are_404() {
        let page = serve("index.html");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
        assert_eq!(serve("app.js").headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}
