//! `GET /metrics`: Prometheus text exposition (format 0.0.4), see
//! [`crate::ops::metrics`]. Authenticated like every endpoint; open when no
//! credential is configured.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::SharedGateway;

/// The scrape endpoint.
pub async fn metrics(State(gw): State<SharedGateway>) -> Response {
    let mut body = crate::ops::metrics::render(&gw.metrics, &gw.registry.load(), gw.cache.stats(), &gw.events);
    crate::ops::metrics::render_shared_state(&mut body, &gw.fleet.status());
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::ops::metrics::CONTENT_TYPE));
    response
}
