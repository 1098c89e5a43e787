//! `POST /v1/tokens/issue`: mints a short-lived browser token bound to an
//! origin, optionally pinned to an identifier, acting for the caller's
//! virtual key (the token names it by its handle, never the key). A browser
//! token cannot mint tokens.

use std::time::SystemTime;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::auth::Principal;
use crate::access::tokens::{self, MintRequest};
use crate::http::error::ApiError;
use crate::ops::stats::{iso8601, unix_ms};
use crate::state::SharedGateway;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssueBody {
    origin: String,
    identifier: Option<String>,
    ttl_seconds: Option<u64>,
}

/// Mints a browser token.
pub async fn issue(
    State(gw): State<SharedGateway>,
    principal: Option<Extension<Principal>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: IssueBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid_body(format!("invalid token request: {e}")))?;
    let principal = principal.map(|Extension(p)| p).unwrap_or(Principal::Open);
    if matches!(principal, Principal::Browser { .. }) {
        return Err(ApiError::AdminRequired { message: "Browser tokens cannot issue new browser tokens.".into() });
    }
    let Some(secret) = &gw.credentials.token_secret else { return Err(ApiError::BrowserTokensDisabled) };
    let request = MintRequest {
        origin: body.origin,
        ttl_secs: body.ttl_seconds,
        identifier: body.identifier,
        // The handle, never the key: the payload is readable by whoever
        // holds the token.
        virtual_key: principal.virtual_key().map(|k| k.handle()),
    };
    let minted = tokens::mint(secret, &request, unix_ms(SystemTime::now()))
        .map_err(|e| ApiError::invalid_body(format!("cannot issue a browser token: {e}")))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": minted.token,
            "expiresAt": iso8601(minted.expires_at_ms),
            "origin": request.origin,
            "identifier": request.identifier,
        })),
    ))
}
