//! Who is calling: the master key, the admin key, a virtual key or a
//! browser token, and which endpoints each may use.
//!
//! * Protection is decided once, at start, from the configuration: with no
//!   key source configured (no `FREELLM_API_KEY`, no `FREELLM_ADMIN_KEY`,
//!   no `FREELLM_VIRTUAL_KEYS_PATH`) the gateway is open, and says so in the
//!   start-up log. A keys file that later empties or breaks never opens a
//!   protected gateway (it used to: protection was recomputed per request
//!   from the keys currently loaded).
//! * Otherwise every endpoint but `/healthz` (and the dashboard's static
//!   shell) needs `Authorization: Bearer <credential>` (the scheme in any
//!   case, RFC 9110 §11.1). Keys are compared in constant time; virtual keys
//!   are found by the hash of the bearer.
//! * An expired virtual key is refused on every endpoint.
//! * Admin endpoints (routing changes, resets, the virtual-key inventory,
//!   plugin management) need the admin key, or the master key when no
//!   admin key is set.
//! * A browser token (`flt.…`) acts for its issuing virtual key (named by
//!   its handle, never the key), is bound to its `Origin`, and cannot mint
//!   tokens. A reference token carrying a raw key is refused.
//! * Operator views (`/v1/status`, `/v1/events`, `/metrics`) show every
//!   tenant's traffic: only the master and admin keys (and open mode) may
//!   read them ([`Principal::is_operator`]); tenants read `GET /v1/me`.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::access::tokens::{self, Claims, TokenSecret};
use crate::access::virtual_keys::{VirtualKey, VirtualKeys};

/// Configured credentials.
#[derive(Default)]
pub struct Credentials {
    /// `FREELLM_API_KEY`.
    pub master: Option<String>,
    /// `FREELLM_ADMIN_KEY`.
    pub admin: Option<String>,
    /// `FREELLM_TOKEN_SECRET` (browser tokens enabled when set).
    pub token_secret: Option<TokenSecret>,
    /// Decided once at start ([`is_protected`]): when false, every caller
    /// is [`Principal::Open`].
    pub protected: bool,
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub enum Principal {
    /// No credential is configured: everyone is the operator.
    Open,
    /// The master key.
    Master,
    /// The admin key.
    Admin,
    /// A virtual key.
    Virtual(Arc<VirtualKey>),
    /// A browser token, maybe acting for a virtual key.
    Browser {
        /// The verified token.
        claims: Arc<Claims>,
        /// Its issuing virtual key, when still loaded.
        virtual_key: Option<Arc<VirtualKey>>,
    },
}

impl Principal {
    /// May call admin endpoints.
    pub fn is_admin(&self, credentials: &Credentials) -> bool {
        match self {
            Self::Open | Self::Admin => true,
            Self::Master => credentials.admin.is_none(),
            _ => false,
        }
    }

    /// May read gateway-wide views (`/v1/status`, `/v1/events`,
    /// `/metrics`): every tenant's traffic is there, so tenants may not.
    pub fn is_operator(&self) -> bool {
        matches!(self, Self::Open | Self::Master | Self::Admin)
    }

    /// Whose response-cache entries this caller shares: its virtual key
    /// (by handle), else its principal kind.
    pub fn tenant(&self) -> Cow<'static, str> {
        match self.virtual_key() {
            Some(key) => Cow::Owned(format!("vk:{}", key.handle())),
            None => Cow::Borrowed(self.kind()),
        }
    }

    /// Whose event-feed slots this caller uses (`ip` counts for open mode,
    /// where everyone is the same principal).
    pub fn feed_owner(&self, ip: Option<std::net::IpAddr>) -> String {
        match self {
            Self::Open => match ip {
                Some(ip) => format!("ip:{ip}"),
                None => "ip:unknown".to_owned(),
            },
            Self::Browser { claims, virtual_key: None } => format!("browser:{}", claims.origin),
            _ => self.tenant().into_owned(),
        }
    }

    /// The virtual key whose caps apply.
    pub fn virtual_key(&self) -> Option<&Arc<VirtualKey>> {
        match self {
            Self::Virtual(k) => Some(k),
            Self::Browser { virtual_key, .. } => virtual_key.as_ref(),
            _ => None,
        }
    }

    /// The identifier a browser token pins (the client cannot override it).
    pub fn pinned_identifier(&self) -> Option<&str> {
        match self {
            Self::Browser { claims, .. } => claims.identifier.as_deref(),
            _ => None,
        }
    }

    /// A name for logs (never the secret).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Master => "master",
            Self::Admin => "admin",
            Self::Virtual(_) => "virtual_key",
            Self::Browser { .. } => "browser_token",
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No bearer at all.
    Missing,
    /// Not a known credential.
    Invalid,
    /// A virtual key past its expiry.
    Expired(String),
    /// A browser token that did not verify.
    TokenRejected(String),
}

/// Whether any key source is configured, so the gateway is protected: the
/// master key, the admin key or a virtual keys file. What the file holds
/// does not matter: an empty or unreadable file must never open the gateway.
pub fn is_protected(credentials: &Credentials, keys: &VirtualKeys) -> bool {
    credentials.master.is_some() || credentials.admin.is_some() || keys.path().is_some()
}

/// The credential of an `Authorization` value: `<scheme> <credential>`
/// where the scheme is `Bearer` in any case (RFC 9110 §11.1).
pub fn bearer_credential(value: &str) -> Option<&str> {
    let (scheme, credential) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(credential.trim()).filter(|c| !c.is_empty())
}

fn eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Authenticates a request from its headers.
pub fn authenticate(
    headers: &HeaderMap,
    credentials: &Credentials,
    keys: &VirtualKeys,
    now_ms: u64,
) -> Result<Principal, AuthFailure> {
    if !credentials.protected {
        return Ok(Principal::Open);
    }
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credential)
        .ok_or(AuthFailure::Missing)?;
    // Both comparisons always run, so timing says nothing about which matched.
    let is_master = credentials.master.as_deref().is_some_and(|m| eq(bearer, m));
    let is_admin = credentials.admin.as_deref().is_some_and(|a| eq(bearer, a));
    if is_admin {
        return Ok(Principal::Admin);
    }
    if is_master {
        return Ok(Principal::Master);
    }
    let set = keys.current();
    if let Some(key) = set.find(bearer) {
        if key.expired(now_ms) {
            return Err(AuthFailure::Expired(key.masked_id()));
        }
        return Ok(Principal::Virtual(key.clone()));
    }
    if tokens::looks_like_token(bearer)
        && let Some(secret) = &credentials.token_secret
    {
        let origin = headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok());
        let claims = tokens::verify(secret, bearer, origin, now_ms)
            .map_err(|e| AuthFailure::TokenRejected(e.reason().to_owned()))?;
        let virtual_key = match claims.virtual_key.as_deref() {
            // A reference token carries the raw key: whoever holds such a
            // token holds the key, so it must not act for it.
            Some(vk) if !tokens::is_key_handle(vk) => {
                return Err(AuthFailure::TokenRejected("raw_virtual_key".into()));
            }
            Some(vk) => {
                let key = set
                    .find_by_handle(vk)
                    .cloned()
                    .ok_or_else(|| AuthFailure::TokenRejected("unknown_virtual_key".into()))?;
                if key.expired(now_ms) {
                    return Err(AuthFailure::Expired(key.masked_id()));
                }
                Some(key)
            }
            None => None,
        };
        return Ok(Principal::Browser { claims: Arc::new(claims), virtual_key });
    }
    Err(AuthFailure::Invalid)
}

#[cfg(test)]
mod tests;
