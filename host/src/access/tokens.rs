//! Short-lived browser tokens (`flt.…`, reference §7.3): a server holding a
//! master or virtual key mints a token for one web origin, and a browser
//! app then calls the gateway with it instead of a long-lived key.
//!
//! # Format
//!
//! ```text
//! flt.<base64url-no-pad(payload JSON)>.<lowercase hex HMAC-SHA256(secret, payload JSON)>
//! ```
//!
//! As in the reference, the MAC covers the payload JSON *bytes* (what the
//! base64 decodes to), keyed with `FREELLM_TOKEN_SECRET`, so tokens are
//! interchangeable with the reference implementation's. This is sound
//! because both encodings are canonical: base64 is decoded strictly (no
//! padding, no whitespace, non-zero trailing bits rejected) and the
//! signature must be exactly 64 *lowercase* hex digits, so every payload
//! has exactly one accepted spelling and no edit of a valid token verifies
//! (a property test checks this).
//!
//! The payload (key order as in the reference):
//!
//! | key          | meaning                                              |
//! |--------------|------------------------------------------------------|
//! | `v`          | version, always 1                                    |
//! | `iat`        | issued at, unix **seconds** (`floor(now_ms / 1000)`) |
//! | `exp`        | expiry, unix seconds: `iat + ttl`                    |
//! | `origin`     | the exact `Origin` the token is bound to             |
//! | `identifier` | optional: the rate-limit bucket the token pins       |
//! | `vk`         | optional: handle of the issuing virtual key          |
//! | `jti`        | optional: random token id (32 hex digits), for logs  |
//!
//! `jti` is our addition; tokens without it (the reference's) verify.
//! Unknown payload keys are ignored.
//!
//! `vk` is the key's *handle*, the lowercase hex SHA-256 of the key
//! ([`key_handle`]), never the key itself: the payload is only base64, so
//! whoever holds a token can read it, and a raw key there would hand out
//! the long-lived credential (which can mint tokens for any origin). The
//! reference put the raw key in `vk`; such a token still verifies here, but
//! [`crate::access::auth`] refuses to let it act for the key (it is rejected as
//! `raw_virtual_key`: the holder must get a fresh token).
//!
//! # Minting ([`mint`])
//!
//! * The TTL is 1..=900 s, 900 when omitted. Out of range is an error
//!   (`ttl_too_small` / `ttl_too_large`), not clamped, as in the reference.
//! * The origin must be exactly what a browser sends in `Origin`:
//!   `https://host[:port]`, or `http://` for `localhost`, `127.0.0.1` or
//!   `[::1]` only (as in the reference); lowercase host, no path (not even
//!   `/`), query, fragment or credentials, no default port (`:443` on
//!   https, `:80` on http), at most 256 characters. The reference accepts
//!   anything non-blank after `https://`; such tokens could never match a
//!   real `Origin` header, so they are refused at mint time instead.
//! * The identifier must pass [`freellm_limits::identifier::check_identifier`]. In
//!   the reference a client header could override it; here the identifier
//!   in a verified token is authoritative (the HTTP layer must not let
//!   `X-FreeLLM-Identifier` replace it).
//!
//! # Verifying ([`verify`])
//!
//! In order: length ≤ [`MAX_TOKEN_LEN`] (before any work), `flt.` prefix,
//! exactly three `.`-separated parts, base64, **signature** (constant time,
//! via `Mac::verify_slice`), JSON syntax, payload shape, version, expiry
//! (expired when `now_ms >= exp * 1000`), then exact `Origin` equality (no
//! normalisation: case, port and trailing `/` all matter). Unlike the
//! reference, the signature is checked before the JSON is parsed, so
//! unauthenticated input never reaches the JSON parser; a forged token
//! therefore reports `bad_signature` where the reference might say
//! `invalid_json`. Each failure is a distinct [`TokenError`] whose
//! [`TokenError::reason`] goes into the 401 message
//! (`Browser token rejected: <reason>`).
//!
//! The `Origin` check is a browser safety belt only: non-browser clients can
//! send any `Origin`. Rotating the secret invalidates every token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

use freellm_limits::identifier::{InvalidIdentifier, check_identifier, matches_identifier_pattern};

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "flt.";

/// Longest token [`verify`] will look at, in bytes. Minted tokens stay far
/// below (about 1.2 KiB at most).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Shortest accepted `FREELLM_TOKEN_SECRET`, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Longest token lifetime, in seconds (also the default).
pub const MAX_TTL_SECS: u64 = 900;

/// Longest accepted origin, in bytes.
pub const MAX_ORIGIN_LEN: usize = 256;

/// Longest accepted `vk` in a verified token, in bytes (the reference's
/// raw keys included, so they can be told apart from garbage).
pub const MAX_VIRTUAL_KEY_LEN: usize = 256;

/// Length of a virtual-key handle: 64 lowercase hex digits.
pub const KEY_HANDLE_LEN: usize = 64;

/// The only payload version.
pub const PAYLOAD_VERSION: u32 = 1;

type HmacSha256 = Hmac<Sha256>;

/// Why a token could not be minted or verified.
///
/// [`TokenError::reason`] gives a short stable code for each variant; the
/// `Display` text is a sentence for operators and 400 bodies.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// `FREELLM_TOKEN_SECRET` is shorter than [`MIN_SECRET_LEN`] bytes
    /// (`short_secret`); the binary refuses to boot.
    #[error("FREELLM_TOKEN_SECRET must be at least 32 bytes, got {len}")]
    ShortSecret {
        /// The secret's length in bytes.
        len: usize,
    },
    /// Mint: the origin is not a browser origin (`invalid_origin`).
    #[error("origin {reason}")]
    InvalidOrigin {
        /// What is wrong, phrased to follow "origin".
        reason: &'static str,
    },
    /// Mint: a TTL of 0 (`ttl_too_small`).
    #[error("ttlSeconds must be at least 1")]
    TtlTooSmall,
    /// Mint: a TTL above [`MAX_TTL_SECS`] (`ttl_too_large`).
    #[error("ttlSeconds must be at most 900, got {ttl}")]
    TtlTooLarge {
        /// The requested TTL in seconds.
        ttl: u64,
    },
    /// Mint: the identifier is not acceptable (`invalid_identifier`).
    #[error(transparent)]
    InvalidIdentifier(#[from] InvalidIdentifier),
    /// Mint: the virtual key handle is not 64 lowercase hex digits
    /// (`invalid_virtual_key`).
    #[error("virtual key handle must be 64 lowercase hex digits")]
    InvalidVirtualKey,
    /// Verify: longer than [`MAX_TOKEN_LEN`] (`too_long`).
    #[error("token is longer than 4096 bytes")]
    TooLong,
    /// Verify: not `flt.<payload>.<signature>` (`invalid_format`).
    #[error("token must have the form flt.<payload>.<signature>")]
    InvalidFormat,
    /// Verify: the payload is not unpadded base64url (`invalid_base64`).
    #[error("token payload is not unpadded base64url")]
    InvalidBase64,
    /// Verify: the signature is not 64 lowercase hex digits, or does not
    /// match (`bad_signature`).
    #[error("token signature does not match")]
    BadSignature,
    /// Verify: a correctly signed payload that is not JSON (`invalid_json`).
    #[error("token payload is not JSON")]
    InvalidJson,
    /// Verify: a correctly signed payload with missing or mistyped fields
    /// (`invalid_payload`).
    #[error("token payload is malformed")]
    InvalidPayload,
    /// Verify: a payload version other than 1 (`invalid_version`).
    #[error("token payload version is not supported")]
    InvalidVersion,
    /// Verify: `now >= exp` (`expired`).
    #[error("token has expired")]
    Expired,
    /// Verify: the request has no `Origin` header (`missing_origin`).
    #[error("request has no Origin header")]
    MissingOrigin,
    /// Verify: `Origin` differs from the token's origin (`origin_mismatch`).
    #[error("request Origin does not match the token")]
    OriginMismatch,
}

impl TokenError {
    /// A short, stable snake_case code for this error, used in
    /// `Browser token rejected: <reason>` and in logs. Never contains
    /// input data.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ShortSecret { .. } => "short_secret",
            Self::InvalidOrigin { .. } => "invalid_origin",
            Self::TtlTooSmall => "ttl_too_small",
            Self::TtlTooLarge { .. } => "ttl_too_large",
            Self::InvalidIdentifier(_) => "invalid_identifier",
            Self::InvalidVirtualKey => "invalid_virtual_key",
            Self::TooLong => "too_long",
            Self::InvalidFormat => "invalid_format",
            Self::InvalidBase64 => "invalid_base64",
            Self::BadSignature => "bad_signature",
            Self::InvalidJson => "invalid_json",
            Self::InvalidPayload => "invalid_payload",
            Self::InvalidVersion => "invalid_version",
            Self::Expired => "expired",
            Self::MissingOrigin => "missing_origin",
            Self::OriginMismatch => "origin_mismatch",
        }
    }
}

/// The HMAC key (`FREELLM_TOKEN_SECRET`). `Debug` never shows it.
#[derive(Clone)]
pub struct TokenSecret {
    /// HMAC state already keyed with the secret; cloned per operation.
    keyed: HmacSha256,
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

impl TokenSecret {
    /// Wraps a secret of at least [`MIN_SECRET_LEN`] bytes (for an env
    /// variable: its UTF-8 bytes). Shorter → [`TokenError::ShortSecret`],
    /// whose message is meant for the boot failure.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, TokenError> {
        let bytes = bytes.as_ref();
        let len = bytes.len();
        if len < MIN_SECRET_LEN {
            return Err(TokenError::ShortSecret { len });
        }
        // HMAC accepts keys of any length; the error branch is unreachable.
        let keyed = HmacSha256::new_from_slice(bytes).map_err(|_| TokenError::ShortSecret { len })?;
        Ok(Self { keyed })
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(payload);
        mac
    }
}

/// A verified (or freshly minted) token's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Payload version (`v`), always [`PAYLOAD_VERSION`].
    #[serde(rename = "v")]
    pub version: u32,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expiry, unix seconds; the token is valid while `now < exp`.
    pub exp: u64,
    /// The exact origin the token is bound to.
    pub origin: String,
    /// The rate-limit identifier the token pins, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// The issuing virtual key's handle (`vk`), if any; in a reference
    /// token, possibly its raw key (see the module docs).
    #[serde(rename = "vk", default, skip_serializing_if = "Option::is_none")]
    pub virtual_key: Option<String>,
    /// Random token id, if any (absent in reference-minted tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// Expiry as unix milliseconds.
    pub fn expires_at_ms(&self) -> u64 {
        self.exp.saturating_mul(1000)
    }

    /// Issue time as unix milliseconds.
    pub fn issued_at_ms(&self) -> u64 {
        self.iat.saturating_mul(1000)
    }
}

/// What to mint (the validated body of `POST /v1/tokens/issue` plus the
/// caller's virtual key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MintRequest {
    /// The browser origin the token is bound to (see the module docs).
    pub origin: String,
    /// Lifetime in seconds, 1..=900; `None` → 900.
    pub ttl_secs: Option<u64>,
    /// The identifier to pin, if any.
    pub identifier: Option<String>,
    /// The issuing virtual key's handle ([`key_handle`]), if the caller is
    /// one; never the key.
    pub virtual_key: Option<String>,
}

/// A freshly minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The `flt.…` bearer.
    pub token: String,
    /// Expiry as unix milliseconds (`exp * 1000`; for `expiresAt`).
    pub expires_at_ms: u64,
    /// The payload that was signed.
    pub claims: Claims,
}

/// Whether `s` is shaped like a browser token (starts with `flt.`), so auth
/// can tell tokens from API keys without verifying.
pub fn looks_like_token(s: &str) -> bool {
    s.starts_with(TOKEN_PREFIX)
}

/// Mints a token at `now_ms` (unix ms). `iat` is `floor(now_ms / 1000)`, so
/// the token lives between `ttl - 1` and `ttl` seconds.
pub fn mint(secret: &TokenSecret, request: &MintRequest, now_ms: u64) -> Result<Minted, TokenError> {
    validate_origin(&request.origin)?;
    let ttl = match request.ttl_secs {
        None => MAX_TTL_SECS,
        Some(0) => return Err(TokenError::TtlTooSmall),
        Some(ttl) if ttl > MAX_TTL_SECS => return Err(TokenError::TtlTooLarge { ttl }),
        Some(ttl) => ttl,
    };
    if let Some(identifier) = &request.identifier {
        check_identifier(identifier)?;
    }
    if let Some(vk) = &request.virtual_key
        && !is_key_handle(vk)
    {
        return Err(TokenError::InvalidVirtualKey);
    }
    let iat = now_ms / 1000;
    let claims = Claims {
        version: PAYLOAD_VERSION,
        iat,
        exp: iat.saturating_add(ttl),
        origin: request.origin.clone(),
        identifier: request.identifier.clone(),
        virtual_key: request.virtual_key.clone(),
        jti: Some(uuid::Uuid::new_v4().simple().to_string()),
    };
    // Serializing plain strings and integers cannot fail.
    let json = serde_json::to_vec(&claims).map_err(|_| TokenError::InvalidPayload)?;
    let token = sign(secret, &json);
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    Ok(Minted { token, expires_at_ms: claims.expires_at_ms(), claims })
}

/// `flt.<b64(json)>.<hex(hmac(json))>` over arbitrary payload bytes.
fn sign(secret: &TokenSecret, json: &[u8]) -> String {
    let tag = secret.mac(json).finalize().into_bytes();
    format!("{TOKEN_PREFIX}{}.{}", URL_SAFE_NO_PAD.encode(json), hex::encode(tag))
}

/// Verifies `token` at `now_ms` (unix ms) for a request whose `Origin`
/// header is `origin_header`. See the module docs for the order of checks.
pub fn verify(
    secret: &TokenSecret,
    token: &str,
    origin_header: Option<&str>,
    now_ms: u64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let rest = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::InvalidFormat)?;
    let (payload_b64, signature_hex) = rest.split_once('.').ok_or(TokenError::InvalidFormat)?;
    if payload_b64.is_empty() || signature_hex.contains('.') {
        return Err(TokenError::InvalidFormat);
    }
    let json = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| TokenError::InvalidBase64)?;
    let tag = decode_signature(signature_hex).ok_or(TokenError::BadSignature)?;
    secret.mac(&json).verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;

    let claims: Claims = serde_json::from_slice(&json).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => TokenError::InvalidPayload,
        _ => TokenError::InvalidJson,
    })?;
    if claims.version != PAYLOAD_VERSION {
        return Err(TokenError::InvalidVersion);
    }
    let shape_ok = !claims.origin.is_empty()
        && claims.exp >= claims.iat
        && claims.exp - claims.iat <= MAX_TTL_SECS
        && claims.identifier.as_deref().is_none_or(matches_identifier_pattern)
        && claims.virtual_key.as_deref().is_none_or(valid_virtual_key);
    if !shape_ok {
        return Err(TokenError::InvalidPayload);
    }
    if now_ms >= claims.expires_at_ms() {
        return Err(TokenError::Expired);
    }
    match origin_header {
        None => Err(TokenError::MissingOrigin),
        Some(origin) if origin == claims.origin => Ok(claims),
        Some(_) => Err(TokenError::OriginMismatch),
    }
}

/// Exactly 64 lowercase hex digits → 32 bytes.
fn decode_signature(hex_digits: &str) -> Option<[u8; 32]> {
    if hex_digits.len() != 64 || !hex_digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut tag = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut tag).ok()?;
    Some(tag)
}

fn valid_virtual_key(vk: &str) -> bool {
    (1..=MAX_VIRTUAL_KEY_LEN).contains(&vk.len()) && vk.bytes().all(|b| b.is_ascii_graphic())
}

/// The non-secret handle of a virtual key that tokens carry: the lowercase
/// hex SHA-256 of the key (what the key set is indexed by).
pub fn key_handle(key: &str) -> String {
    use sha2::Digest as _;
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `vk` is shaped like a handle (64 lowercase hex digits), as
/// opposed to a raw key from a reference-minted token.
pub fn is_key_handle(vk: &str) -> bool {
    vk.len() == KEY_HANDLE_LEN && vk.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks that `origin` is exactly what a browser would send in `Origin`
/// for a page we allow to hold tokens (see the module docs).
fn validate_origin(origin: &str) -> Result<(), TokenError> {
    let bad = |reason| Err(TokenError::InvalidOrigin { reason });
    if origin.is_empty() {
        return bad("must not be empty");
    }
    if origin.len() > MAX_ORIGIN_LEN {
        return bad("must be at most 256 characters");
    }
    if !origin.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("must be printable ASCII without spaces (use punycode for international hosts)");
    }
    let (https, authority) = if let Some(rest) = origin.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = origin.strip_prefix("http://") {
        (false, rest)
    } else {
        return bad("must start with https:// (or http:// for localhost)");
    };
    if authority.bytes().any(|b| matches!(b, b'/' | b'?' | b'#' | b'\\')) {
        return bad("must be scheme://host[:port] with no path (not even a trailing /), query or fragment");
    }
    if authority.contains('@') {
        return bad("must not contain credentials");
    }
    let (host, port) = if authority.starts_with('[') {
        let Some(end) = authority.find(']') else { return bad("has an unclosed IPv6 bracket") };
        let (host, after) = authority.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return bad("has garbage after the IPv6 address"),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return bad("host must be lowercase, as browsers send it");
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.contains(':') && v6.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b':' | b'.')),
        None => host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        }),
    };
    if !host_ok {
        return bad("has an invalid host");
    }
    if let Some(port) = port {
        let digits_ok = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
        let value = if digits_ok && !port.starts_with('0') { port.parse::<u32>().ok() } else { None };
        match value {
            Some(p) if (1..=65_535).contains(&p) => {
                if p == if https { 443 } else { 80 } {
                    return bad("must omit the default port, as browsers do");
                }
            }
            _ => return bad("has an invalid port"),
        }
    }
    if !https && !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        return bad("must use https:// unless the host is localhost, 127.0.0.1 or [::1]");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
