//! `GET /v1/me`: what the caller itself is and has used. Tenants may not
//! read the gateway-wide views (`/v1/status`, `/v1/events`, `/metrics`);
//! this is their own slice.
//!
//! * A virtual key: its masked id, label, allowed models, caps, usage in
//!   the rolling 24 h and expiry.
//! * A browser token: its origin, pinned identifier and expiry, and its
//!   virtual key's usage as above (null when the token acts for none).
//! * The master key, the admin key, open mode: the principal kind.
//!
//! Never a key, a token or anything about another tenant.

use std::time::SystemTime;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{Value, json};

use crate::access::auth::Principal;
use crate::access::virtual_keys::VirtualKey;
use crate::ops::stats::{iso8601, unix_ms};
use crate::state::SharedGateway;

/// The caller's own view.
pub async fn me(State(gw): State<SharedGateway>, principal: Option<Extension<Principal>>) -> Json<Value> {
    let principal = principal.map_or(Principal::Open, |Extension(p)| p);
    let now_ms = unix_ms(SystemTime::now());
    // The fleet's usage when instances share state, else this instance's.
    let usage = match principal.virtual_key() {
        Some(key) => gw.virtual_keys.usage_in(&gw.fleet, key, now_ms).await,
        None => (0, 0),
    };
    Json(me_json(&principal, principal.is_admin(&gw.credentials), usage, now_ms))
}

/// The `/v1/me` object of `principal` at `now_ms`; `usage` is its virtual
/// key's `(requests, tokens)` in the rolling 24 h.
pub fn me_json(principal: &Principal, admin: bool, usage: (u64, u64), now_ms: u64) -> Value {
    let mut out = json!({ "principal": principal.kind(), "admin": admin });
    match principal {
        Principal::Virtual(key) => {
            out["virtualKey"] = key_json(key, usage, now_ms);
        }
        Principal::Browser { claims, virtual_key } => {
            out["token"] = json!({
                "origin": claims.origin,
                "identifier": claims.identifier,
                "issuedAt": iso8601(claims.issued_at_ms()),
                "expiresAt": iso8601(claims.expires_at_ms()),
            });
            out["virtualKey"] = virtual_key.as_ref().map_or(Value::Null, |k| key_json(k, usage, now_ms));
        }
        Principal::Open | Principal::Master | Principal::Admin => {}
    }
    out
}

/// One virtual key as the operator inventory (`/v1/status/virtual-keys`)
/// and its own tenant (`/v1/me`) see it: masked id, caps, rolling usage
/// (`(requests, tokens)`).
pub(crate) fn key_json(key: &VirtualKey, (requests, tokens): (u64, u64), now_ms: u64) -> Value {
    json!({
        "maskedId": key.masked_id(),
        "label": key.label,
        "allowedModels": key.allowed_models,
        "expiresAt": key.expires_at,
        "expired": key.expired(now_ms),
        "dailyRequestCap": key.daily_request_cap,
        "dailyTokenCap": key.daily_token_cap,
        "requestsInWindow": requests,
        "tokensInWindow": tokens,
        "requestCapRemaining": key.daily_request_cap.map(|c| c.saturating_sub(requests)),
        "tokenCapRemaining": key.daily_token_cap.map(|c| c.saturating_sub(tokens)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const KEY: &str = "sk-freellm-tenant-secret-0001";

    fn key() -> Arc<VirtualKey> {
        Arc::new(VirtualKey {
            id: KEY.into(),
            label: "Team".into(),
            daily_request_cap: Some(10),
            daily_token_cap: None,
            allowed_models: Some(vec!["free".into()]),
            expires_at: Some("2030-01-01T00:00:00Z".into()),
            expires_at_ms: Some(1_893_456_000_000),
        })
    }

    #[test]
    fn a_virtual_key_sees_its_own_caps_and_usage_but_never_its_key() {
        let v = me_json(&Principal::Virtual(key()), false, (0, 0), 1_700_000_000_000);
        assert_eq!(v["principal"], "virtual_key");
        assert_eq!(v["virtualKey"]["label"], "Team");
        assert_eq!(v["virtualKey"]["requestCapRemaining"], 10);
        assert_eq!(v["virtualKey"]["expired"], false);
        assert!(!v.to_string().contains(KEY), "{v}");
    }

    #[test]
    fn a_browser_token_sees_its_binding_and_operators_their_kind() {
        let claims = crate::access::tokens::Claims {
            version: 1,
            iat: 1_700_000_000,
            exp: 1_700_000_900,
            origin: "https://app.example".into(),
            identifier: Some("user-1".into()),
            virtual_key: Some(crate::access::tokens::key_handle(KEY)),
            jti: None,
        };
        let browser = Principal::Browser { claims: Arc::new(claims), virtual_key: Some(key()) };
        let v = me_json(&browser, false, (3, 0), 1_700_000_000_000);
        assert_eq!(v["token"]["origin"], "https://app.example");
        assert_eq!(v["token"]["identifier"], "user-1");
        assert_eq!(v["virtualKey"]["label"], "Team");
        assert_eq!(v["virtualKey"]["requestCapRemaining"], 7);
        assert!(!v.to_string().contains(KEY), "{v}");
        let admin = me_json(&Principal::Admin, true, (0, 0), 0);
        assert_eq!(admin, json!({"principal": "admin", "admin": true}));
    }
}
