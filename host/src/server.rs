//! The HTTP server: routes, the middleware stack and graceful shutdown.
//!
//! Every route is served at `/` and again under `/api` (as the reference
//! gateway does). In front of the routes, one middleware ([`edge`]) runs,
//! in order: the request id (assigns or echoes `X-Request-Id` and renders
//! every error body with it), the `Host` check ([`guard::check_host`]),
//! CORS ([`crate::cors`], answers preflights
//! before authentication), the guard ([`crate::guard`]: authentication,
//! admin-only endpoints, per-IP and per-identifier limits).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::serve::ListenerExt;

use crate::api;
use crate::cors::Cors;
use crate::error::{ApiError, PendingErrorBody, render_error_body};
use crate::guard;
use crate::state::SharedGateway;

/// The request's id, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Builds the application router.
pub fn app(gw: SharedGateway) -> Router {
    let routes = Router::new()
        .route("/healthz", get(api::health::healthz))
        .route("/v1/chat/completions", post(api::chat::chat_completions))
        .route("/v1/models", get(api::models::list_models))
        .route("/v1/status", get(api::status::status))
        .route("/v1/status/routing", patch(api::status::set_routing))
        .route("/v1/status/providers/{id}/reset", post(api::status::reset_provider))
        .route("/v1/status/virtual-keys", get(api::status::virtual_keys))
        .route("/v1/tokens/issue", post(api::tokens::issue))
        .route("/v1/me", get(api::me::me))
        .route("/v1/events", get(api::events::events))
        .route("/metrics", get(api::metrics::metrics))
        .route("/v1/plugins", get(api::plugins::list))
        .route("/v1/plugins/reload", post(api::plugins::reload))
        .route("/v1/plugins/{id}", post(api::plugins::upload))
        .route("/v1/plugins/{id}/canary", post(api::plugins::set_canary));
    Router::new()
        .merge(routes.clone())
        .nest("/api", routes)
        // The dashboard's shell is public (see `guard`): only at /dashboard.
        .route("/dashboard", get(api::dashboard::index))
        .route("/dashboard/", get(api::dashboard::index))
        .route("/dashboard/session", get(api::dashboard::session))
        .route("/dashboard/{*file}", get(api::dashboard::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The chat handler enforces the configured limit itself (413 with our envelope).
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(gw.clone(), edge))
        .with_state(gw)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound { path: req.uri().path().to_owned() }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// True for ids the gateway echoes: `^[A-Za-z0-9_.:-]{1,128}$`.
fn is_valid_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(b))
}

/// The stack in front of every route, in one middleware (each layer of its
/// own would cost the request path a boxed future and a service clone):
/// the request id, CORS, then the guard; on the way back the guard's and
/// CORS's headers, then the request id, which also renders parked error
/// bodies.
async fn edge(State(gw): State<SharedGateway>, mut req: Request, next: Next) -> Response {
    let id = assign_request_id(&mut req);
    if let Err(refusal) = guard::check_host(&gw, &req) {
        return finish_request_id(*refusal, &id);
    }
    let response = match Cors::check(&gw, &req) {
        Err(preflight) => *preflight,
        Ok(cors) => {
            let mut response = match guard::admit(&gw, &mut req) {
                Err(refusal) => *refusal,
                Ok(admission) => {
                    let mut response = next.run(req).await;
                    admission.finish(&mut response);
                    response
                }
            };
            cors.decorate(&mut response);
            response
        }
    };
    finish_request_id(response, &id)
}

/// Echoes a valid inbound `X-Request-Id` or makes one; handlers read it as
/// the [`RequestId`] extension.
fn assign_request_id(req: &mut Request) -> String {
    let id = match req.headers().get("x-request-id") {
        Some(v) if is_valid_request_id(v.as_bytes()) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    id
}

/// Renders a parked error body with the request id, and sets the header.
fn finish_request_id(mut response: Response, id: &str) -> Response {
    if let Some(PendingErrorBody(body)) = response.extensions_mut().remove::<PendingErrorBody>() {
        let status = response.status();
        let mut headers = std::mem::take(response.headers_mut());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response = (status, render_error_body(body, id)).into_response();
        response.headers_mut().extend(headers);
    } else if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        tracing::debug!("payload too large from a layer");
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Serves until SIGINT/SIGTERM, then drains in-flight requests.
pub async fn serve(gw: SharedGateway) -> anyhow::Result<()> {
    let addr = SocketAddr::new(gw.config.host, gw.config.port);
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, "FreeLLM gateway listening");
    let listener = listener.tap_io(tune_connection);
    let app = app(gw.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let feeds = gw.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Open event feeds would keep the drain waiting forever.
        feeds.events.close();
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    gw.persist_now();
    tracing::info!("gateway stopped");
    Ok(())
}

/// Per-connection socket options. Stream chunks are small writes: without
/// `TCP_NODELAY`, Nagle's algorithm holds each one back until the client has
/// acknowledged the previous one.
fn tune_connection(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received; draining");
}

#[cfg(test)]
mod tests {
    use super::{is_valid_request_id, tune_connection};

    #[test]
    fn request_ids_are_checked_against_the_reference_pattern() {
        assert!(is_valid_request_id(b"abc-123_x.y:z"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(&[b'a'; 129]));
    }

    #[tokio::test]
    async fn client_connections_get_tcp_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap(), "accepted sockets start with Nagle on");
        tune_connection(&mut accepted);
        assert!(accepted.nodelay().unwrap());
    }
}
