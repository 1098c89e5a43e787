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
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
    const ORIGIN: &str = "https://app.example.com";
    /// 2023-11-14T22:13:20.500Z
    const NOW: u64 = 1_700_000_000_500;

    fn secret() -> TokenSecret {
        TokenSecret::new(SECRET).expect("test secret is long enough")
    }

    fn request(origin: &str) -> MintRequest {
        MintRequest {
            origin: origin.to_owned(),
            ttl_secs: Some(300),
            identifier: Some("session-abc".to_owned()),
            virtual_key: Some(key_handle("sk-freellm-demo1")),
        }
    }

    fn minted() -> Minted {
        mint(&secret(), &request(ORIGIN), NOW).expect("mint")
    }

    fn err(token: &str) -> TokenError {
        verify(&secret(), token, Some(ORIGIN), NOW + 1000).expect_err("must not verify")
    }

    /// An independent HMAC computation, as the reference does it.
    fn reference_sign(secret: &[u8], json: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(secret).expect("hmac key");
        mac.update(json.as_bytes());
        let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("flt.{}.{sig}", URL_SAFE_NO_PAD.encode(json))
    }

    // ---- secret ----

    #[test]
    fn short_secrets_are_refused_with_a_clear_message() {
        let e = TokenSecret::new([7u8; 31]).expect_err("31 bytes");
        assert_eq!(e.to_string(), "FREELLM_TOKEN_SECRET must be at least 32 bytes, got 31");
        assert_eq!(e.reason(), "short_secret");
        assert_eq!(
            TokenSecret::new("").expect_err("empty").to_string(),
            "FREELLM_TOKEN_SECRET must be at least 32 bytes, got 0"
        );
        // UTF-8 bytes count, not characters: 11 × 3 bytes = 33.
        assert!(TokenSecret::new("€€€€€€€€€€€").is_ok());
        assert!(TokenSecret::new([7u8; 32]).is_ok());
        assert_eq!(format!("{:?}", secret()), "TokenSecret(<redacted>)");
    }

    // ---- round trip and format ----

    #[test]
    fn round_trip() {
        let m = minted();
        assert!(looks_like_token(&m.token));
        let claims = verify(&secret(), &m.token, Some(ORIGIN), NOW).expect("verifies");
        assert_eq!(claims, m.claims);
        assert_eq!(claims.version, 1);
        assert_eq!(claims.iat, 1_700_000_000);
        assert_eq!(claims.exp, 1_700_000_300);
        assert_eq!(claims.origin, ORIGIN);
        assert_eq!(claims.identifier.as_deref(), Some("session-abc"));
        assert_eq!(claims.virtual_key, Some(key_handle("sk-freellm-demo1")));
        assert_eq!(claims.jti.as_deref().map(str::len), Some(32));
        assert_eq!(m.expires_at_ms, 1_700_000_300_000);
        assert_eq!(claims.issued_at_ms(), 1_700_000_000_000);
    }

    #[test]
    fn minimal_round_trip_and_default_ttl() {
        let req = MintRequest { origin: "http://localhost:4173".into(), ..MintRequest::default() };
        let m = mint(&secret(), &req, NOW).expect("mint");
        assert_eq!(m.claims.exp - m.claims.iat, 900);
        let claims = verify(&secret(), &m.token, Some("http://localhost:4173"), NOW).expect("verifies");
        assert_eq!((claims.identifier, claims.virtual_key), (None, None));
    }

    #[test]
    fn tokens_are_unique() {
        assert_ne!(minted().token, minted().token);
    }

    #[test]
    fn a_minted_token_never_carries_the_raw_key() {
        let key = "sk-freellm-demo1";
        let m = minted();
        let payload = m.token.split('.').nth(1).expect("payload");
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("utf-8");
        assert!(!json.contains(key), "{json}");
        assert!(!json.contains("sk-freellm"), "{json}");
        assert!(json.contains(&key_handle(key)), "{json}");
        assert!(is_key_handle(&key_handle(key)));
        assert!(!is_key_handle(key));
    }

    #[test]
    fn a_reference_token_with_a_raw_key_still_verifies_for_auth_to_refuse() {
        let token = reference_sign(
            SECRET,
            r#"{"v":1,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com","vk":"sk-freellm-demo1"}"#,
        );
        let claims = verify(&secret(), &token, Some(ORIGIN), NOW).expect("verifies");
        assert_eq!(claims.virtual_key.as_deref(), Some("sk-freellm-demo1"));
        assert!(!is_key_handle("sk-freellm-demo1"));
    }

    #[test]
    fn wire_format_matches_the_reference() {
        let m = minted();
        let parts: Vec<&str> = m.token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "flt");
        assert!(!parts[1].contains('='));
        let json = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url");
        let text = String::from_utf8(json).expect("utf-8");
        let handle = key_handle("sk-freellm-demo1");
        let head = format!(
            r#"{{"v":1,"iat":1700000000,"exp":1700000300,"origin":"https://app.example.com","identifier":"session-abc","vk":"{handle}","jti":""#
        );
        assert!(text.starts_with(&head), "{text}");
        // The signature is HMAC-SHA256 over the JSON text, lowercase hex.
        assert_eq!(reference_sign(SECRET, &text), m.token);
    }

    #[test]
    fn reference_minted_tokens_verify() {
        let json = r#"{"v":1,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com","identifier":"session-abc","vk":"sk-freellm-demo1"}"#;
        let token = reference_sign(SECRET, json);
        let claims = verify(&secret(), &token, Some(ORIGIN), NOW).expect("verifies");
        assert_eq!(claims.identifier.as_deref(), Some("session-abc"));
        assert_eq!(claims.jti, None);
        // Unknown keys are ignored.
        let json =
            r#"{"v":1,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com","extra":[1,{"a":null}]}"#;
        assert!(verify(&secret(), &reference_sign(SECRET, json), Some(ORIGIN), NOW).is_ok());
    }

    #[test]
    fn looks_like_token_is_a_prefix_test() {
        assert!(looks_like_token("flt."));
        assert!(looks_like_token("flt.abc.def"));
        assert!(!looks_like_token("sk-freellm-abcd"));
        assert!(!looks_like_token("FLT.abc.def"));
        assert!(!looks_like_token("flt"));
        assert!(!looks_like_token(""));
    }

    // ---- mint validation ----

    #[test]
    fn ttl_limits() {
        let s = secret();
        let with_ttl = |ttl| mint(&s, &MintRequest { ttl_secs: Some(ttl), ..request(ORIGIN) }, NOW);
        assert_eq!(with_ttl(0), Err(TokenError::TtlTooSmall));
        assert_eq!(with_ttl(901), Err(TokenError::TtlTooLarge { ttl: 901 }));
        assert_eq!(with_ttl(u64::MAX).map_err(|e| e.reason()), Err("ttl_too_large"));
        assert_eq!(with_ttl(901).expect_err("901").to_string(), "ttlSeconds must be at most 900, got 901");
        assert_eq!(with_ttl(1).expect("1").claims.exp, 1_700_000_001);
        assert_eq!(with_ttl(900).expect("900").claims.exp, 1_700_000_900);
    }

    #[test]
    fn origins() {
        let good = [
            "https://app.example.com",
            "https://example.com:8443",
            "https://a",
            "https://xn--bcher-kva.example",
            "https://my_host.example-1.com",
            "https://192.0.2.1",
            "https://[2001:db8::1]",
            "https://[2001:db8::1]:8443",
            "http://localhost",
            "http://localhost:4173",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
            "https://localhost",
        ];
        for origin in good {
            assert_eq!(validate_origin(origin), Ok(()), "{origin}");
        }
        let long_host = format!("https://{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(long_host.len() > 256);
        let bad = [
            "",
            "app.example.com",
            "ftp://example.com",
            "HTTPS://example.com",
            "https://",
            "https://example.com/",
            "https://example.com/path",
            "https://example.com?q=1",
            "https://example.com#f",
            "https://user:pw@example.com",
            "https://user@example.com",
            "https://Example.com",
            "https://exa mple.com",
            " https://example.com",
            "https://example.com\n",
            "https://bücher.example",
            "https://example..com",
            "https://.example.com",
            "https://example.com.",
            "https://exa!mple.com",
            "https://example.com:",
            "https://example.com:0",
            "https://example.com:65536",
            "https://example.com:08443",
            "https://example.com:8a",
            "https://example.com:443",
            "https://example.com:1:2",
            "https://[2001:db8::1",
            "https://[2001:db8::1]x",
            "https://[]",
            "https://[zz::1]",
            "https://[2001:DB8::1]",
            "http://example.com",
            "http://evil",
            "http://localhost:80",
            "http://localhost.evil.com",
            "http://127.0.0.2",
            "https://exa\\mple.com",
            "null",
            long_host.as_str(),
        ];
        for origin in bad {
            let e = validate_origin(origin).expect_err(origin);
            assert_eq!(e.reason(), "invalid_origin", "{origin}");
            assert!(e.to_string().starts_with("origin "), "{e}");
        }
        let e = mint(&secret(), &request("http://evil"), NOW).expect_err("http");
        assert_eq!(e.to_string(), "origin must use https:// unless the host is localhost, 127.0.0.1 or [::1]");
        // Exactly 256 is fine.
        let at_limit = format!("https://{}", "a".repeat(MAX_ORIGIN_LEN - 8));
        assert!(at_limit.len() == 256 && validate_origin(&at_limit).is_err(), "label > 63");
        let labels = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(56)].join(".");
        let at_limit = format!("https://{labels}");
        assert_eq!(at_limit.len(), 256);
        assert_eq!(validate_origin(&at_limit), Ok(()));
        assert!(validate_origin(&format!("{at_limit}e")).is_err());
    }

    #[test]
    fn identifiers_and_virtual_keys() {
        let s = secret();
        let with_id = |id: &str| mint(&s, &MintRequest { identifier: Some(id.to_owned()), ..request(ORIGIN) }, NOW);
        assert!(with_id(&"a".repeat(128)).is_ok());
        assert!(with_id("user.42:tab_1-x").is_ok());
        for bad in ["", "has space", " session", "null", "undefined", "ip:1.2.3.4", &"a".repeat(129), "é"] {
            let e = with_id(bad).expect_err(bad);
            assert_eq!(e.reason(), "invalid_identifier", "{bad:?}");
        }
        assert_eq!(with_id("a b").expect_err("space"), TokenError::InvalidIdentifier(InvalidIdentifier::Character));
        let with_vk = |vk: &str| mint(&s, &MintRequest { virtual_key: Some(vk.to_owned()), ..request(ORIGIN) }, NOW);
        assert!(with_vk(&key_handle(&format!("sk-freellm-{}", "x".repeat(128)))).is_ok());
        let handle = key_handle("sk-freellm-demo1");
        for bad in [
            String::new(),
            "sk-freellm-demo1".into(),
            "a b".into(),
            "x".repeat(257),
            "sk-\u{7f}".into(),
            "\"quoted\u{0}\"".into(),
            handle.to_uppercase(),
            handle[..63].to_owned(),
            format!("{handle}0"),
            format!("{}g", &handle[..63]),
        ] {
            assert_eq!(with_vk(&bad), Err(TokenError::InvalidVirtualKey), "{bad:?}");
        }
    }

    #[test]
    fn largest_token_fits() {
        let req = MintRequest {
            origin: format!("https://{}", ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(56)].join(".")),
            ttl_secs: Some(900),
            identifier: Some("z".repeat(128)),
            virtual_key: Some("f".repeat(KEY_HANDLE_LEN)),
        };
        let m = mint(&secret(), &req, u64::MAX).expect("mint");
        assert!(m.token.len() < 1500, "{}", m.token.len());
        // u64::MAX ms: exp saturates instead of overflowing.
        assert!(m.claims.exp >= m.claims.iat);
    }

    // ---- rejections ----

    #[test]
    fn every_reason_is_distinct() {
        let all = [
            TokenError::ShortSecret { len: 0 },
            TokenError::InvalidOrigin { reason: "x" },
            TokenError::TtlTooSmall,
            TokenError::TtlTooLarge { ttl: 0 },
            TokenError::InvalidIdentifier(InvalidIdentifier::Length),
            TokenError::InvalidVirtualKey,
            TokenError::TooLong,
            TokenError::InvalidFormat,
            TokenError::InvalidBase64,
            TokenError::BadSignature,
            TokenError::InvalidJson,
            TokenError::InvalidPayload,
            TokenError::InvalidVersion,
            TokenError::Expired,
            TokenError::MissingOrigin,
            TokenError::OriginMismatch,
        ];
        let reasons: std::collections::HashSet<&str> = all.iter().map(TokenError::reason).collect();
        assert_eq!(reasons.len(), all.len());
        assert!(reasons.iter().all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    }

    #[test]
    fn too_long_is_refused_before_any_work() {
        let m = minted();
        let padded = format!("{}{}", m.token, "a".repeat(MAX_TOKEN_LEN - m.token.len() + 1));
        assert_eq!(err(&padded), TokenError::TooLong);
        assert_eq!(err(&"x".repeat(1 << 20)), TokenError::TooLong);
    }

    #[test]
    fn format_errors() {
        let m = minted();
        let (_, rest) = m.token.split_at(4);
        let (payload, sig) = rest.split_once('.').expect("two parts");
        for bad in [
            String::new(),
            "flt".into(),
            "flt.".into(),
            "flt..".into(),
            format!("flt.{payload}"),
            format!("flt.{payload}{sig}"),
            format!("flt..{sig}"),
            format!("flt.{payload}.{sig}.x"),
            format!("flt.{payload}..{sig}"),
            format!("FLT.{payload}.{sig}"),
            format!("flt:{payload}.{sig}"),
            format!(" flt.{payload}.{sig}"),
            format!("xflt.{payload}.{sig}"),
            format!("sk-freellm-{payload}.{sig}"),
        ] {
            assert_eq!(err(&bad), TokenError::InvalidFormat, "{bad:?}");
        }
    }

    #[test]
    fn base64_errors() {
        let m = minted();
        let (_, rest) = m.token.split_at(4);
        let (payload, sig) = rest.split_once('.').expect("two parts");
        let std_alphabet = format!("{}+/", &payload[..payload.len() - 2]);
        let padded = format!("{payload}==");
        for bad_payload in [&std_alphabet, &padded, "a", "ab cd", "ab%3D", &format!("{payload}\n")] {
            assert_eq!(err(&format!("flt.{bad_payload}.{sig}")), TokenError::InvalidBase64, "{bad_payload:?}");
        }
        // Non-canonical trailing bits: "QR" decodes like "QQ" ("A") only if
        // trailing bits were allowed.
        assert_eq!(URL_SAFE_NO_PAD.encode("A"), "QQ");
        assert_eq!(err(&format!("flt.QR.{sig}")), TokenError::InvalidBase64);
    }

    #[test]
    fn signature_errors() {
        let m = minted();
        let (_, rest) = m.token.split_at(4);
        let (payload, sig) = rest.split_once('.').expect("two parts");
        let flip = |s: &str, i: usize| {
            let mut b = s.as_bytes().to_vec();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).expect("ascii")
        };
        for bad_sig in [
            flip(sig, 0),
            flip(sig, 63),
            sig.to_uppercase(),
            sig[..62].to_owned(),
            format!("{sig}00"),
            String::new(),
            "g".repeat(64),
            format!("+{}", &sig[1..]),
            format!("{}{}", &sig[..60], "  "),
        ] {
            if bad_sig == sig {
                continue; // an all-digit signature has no uppercase form
            }
            assert_eq!(err(&format!("flt.{payload}.{bad_sig}")), TokenError::BadSignature, "{bad_sig:?}");
        }
    }

    #[test]
    fn another_secret_does_not_verify() {
        let other = TokenSecret::new(b"another-secret-that-is-32-bytes-long!").expect("secret");
        let m = mint(&other, &request(ORIGIN), NOW).expect("mint");
        assert_eq!(err(&m.token), TokenError::BadSignature);
        // A secret differing in one byte.
        let mut near = SECRET.to_vec();
        near[0] ^= 1;
        let m = mint(&TokenSecret::new(near).expect("secret"), &request(ORIGIN), NOW).expect("mint");
        assert_eq!(err(&m.token), TokenError::BadSignature);
    }

    #[test]
    fn tampered_payload_with_original_signature() {
        let m = minted();
        let sig = m.token.rsplit_once('.').expect("sig").1;
        for tamper in [
            Claims { exp: m.claims.exp + 3600, ..m.claims.clone() },
            Claims { origin: "https://evil.example".into(), ..m.claims.clone() },
            Claims { identifier: Some("someone-else".into()), ..m.claims.clone() },
            Claims { identifier: None, ..m.claims.clone() },
            Claims { virtual_key: Some("sk-freellm-admin".into()), ..m.claims.clone() },
            Claims { virtual_key: None, ..m.claims.clone() },
        ] {
            let json = serde_json::to_vec(&tamper).expect("json");
            let token = format!("flt.{}.{sig}", URL_SAFE_NO_PAD.encode(&json));
            assert_eq!(err(&token), TokenError::BadSignature);
        }
        // Same claims, different JSON spelling: still a different message.
        let json = serde_json::to_string_pretty(&m.claims).expect("json");
        assert_eq!(err(&format!("flt.{}.{sig}", URL_SAFE_NO_PAD.encode(json))), TokenError::BadSignature);
    }

    #[test]
    fn signed_but_invalid_payloads() {
        let forge = |json: &str| reference_sign(SECRET, json);
        let cases = [
            ("not json", TokenError::InvalidJson),
            ("{\"v\":1,", TokenError::InvalidJson),
            ("", TokenError::InvalidFormat),
            ("[]", TokenError::InvalidPayload),
            ("{}", TokenError::InvalidPayload),
            ("null", TokenError::InvalidPayload),
            (r#"{"v":1,"iat":1700000000,"origin":"https://app.example.com"}"#, TokenError::InvalidPayload),
            (
                r#"{"v":1,"iat":"1700000000","exp":1700000900,"origin":"https://app.example.com"}"#,
                TokenError::InvalidPayload,
            ),
            (
                r#"{"v":1,"iat":1700000000,"exp":1700000900.5,"origin":"https://app.example.com"}"#,
                TokenError::InvalidPayload,
            ),
            (r#"{"v":1,"iat":1700000000,"exp":1700000900,"origin":""}"#, TokenError::InvalidPayload),
            (r#"{"v":1,"iat":1700000000,"exp":1700000900,"origin":7}"#, TokenError::InvalidPayload),
            (
                r#"{"v":1,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com","identifier":"a b"}"#,
                TokenError::InvalidPayload,
            ),
            (
                r#"{"v":1,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com","identifier":5}"#,
                TokenError::InvalidPayload,
            ),
            (
                r#"{"v":1,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com","vk":"a\nb"}"#,
                TokenError::InvalidPayload,
            ),
            (
                r#"{"v":1,"iat":1700000000,"exp":1700000901,"origin":"https://app.example.com"}"#,
                TokenError::InvalidPayload,
            ),
            (
                r#"{"v":1,"iat":1700000001,"exp":1700000000,"origin":"https://app.example.com"}"#,
                TokenError::InvalidPayload,
            ),
            (
                r#"{"v":1,"v":1,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com"}"#,
                TokenError::InvalidPayload,
            ),
            (
                r#"{"v":2,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com"}"#,
                TokenError::InvalidVersion,
            ),
            (
                r#"{"v":0,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com"}"#,
                TokenError::InvalidVersion,
            ),
            (r#"{"v":1,"iat":1699990000,"exp":1699990900,"origin":"https://app.example.com"}"#, TokenError::Expired),
        ];
        for (json, expected) in cases {
            assert_eq!(err(&forge(json)), expected, "{json}");
        }
    }

    #[test]
    fn expiry_boundary() {
        let m = minted();
        let exp_ms = m.expires_at_ms;
        assert!(verify(&secret(), &m.token, Some(ORIGIN), exp_ms - 1).is_ok());
        assert_eq!(verify(&secret(), &m.token, Some(ORIGIN), exp_ms), Err(TokenError::Expired));
        assert_eq!(verify(&secret(), &m.token, Some(ORIGIN), u64::MAX), Err(TokenError::Expired));
        // Expiry is checked before the origin.
        assert_eq!(verify(&secret(), &m.token, None, exp_ms), Err(TokenError::Expired));
        // A token is valid from before its iat (clock skew between instances).
        assert!(verify(&secret(), &m.token, Some(ORIGIN), 0).is_ok());
    }

    #[test]
    fn origin_must_match_exactly() {
        let m = minted();
        let check = |origin: Option<&str>| verify(&secret(), &m.token, origin, NOW).map(|_| ());
        assert_eq!(check(Some(ORIGIN)), Ok(()));
        assert_eq!(check(None), Err(TokenError::MissingOrigin));
        for other in [
            "",
            "null",
            "https://App.example.com",
            "HTTPS://app.example.com",
            "https://app.example.com/",
            "https://app.example.com:443",
            "https://app.example.com:8443",
            "http://app.example.com",
            "https://app.example.com.",
            "https://evil.example.com",
            " https://app.example.com",
            "https://app.example.co",
        ] {
            assert_eq!(check(Some(other)), Err(TokenError::OriginMismatch), "{other:?}");
        }
        let m = mint(&secret(), &request("http://localhost:4173"), NOW).expect("mint");
        let check = |origin: &str| verify(&secret(), &m.token, Some(origin), NOW).map(|_| ());
        assert_eq!(check("http://localhost:4173"), Ok(()));
        assert_eq!(check("http://localhost:4174"), Err(TokenError::OriginMismatch));
        assert_eq!(check("http://localhost"), Err(TokenError::OriginMismatch));
        assert_eq!(check("http://127.0.0.1:4173"), Err(TokenError::OriginMismatch));
    }

    // ---- properties ----

    #[derive(Debug, Clone)]
    enum Edit {
        Replace(prop::sample::Index, u8),
        Insert(prop::sample::Index, u8),
        Delete(prop::sample::Index),
        Truncate(prop::sample::Index),
        Swap(prop::sample::Index, prop::sample::Index),
    }

    fn token_byte() -> impl Strategy<Value = u8> {
        prop_oneof![any::<u8>(), prop::sample::select(b"0123456789abcdefABCDEFQRSTwxyz-_.=+/ \n".to_vec()),]
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<prop::sample::Index>(), token_byte()).prop_map(|(i, b)| Edit::Replace(i, b)),
            (any::<prop::sample::Index>(), token_byte()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<prop::sample::Index>().prop_map(Edit::Delete),
            any::<prop::sample::Index>().prop_map(Edit::Truncate),
            (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(i, j)| Edit::Swap(i, j)),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
        match edit {
            Edit::Replace(i, b) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            Edit::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.insert(i, *b);
            }
            Edit::Delete(i) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes.remove(i);
            }
            Edit::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Edit::Swap(i, j) if !bytes.is_empty() => {
                let (i, j) = (i.index(bytes.len()), j.index(bytes.len()));
                bytes.swap(i, j);
            }
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// No edit of a valid token verifies, and none panics.
        #[test]
        fn edited_tokens_never_verify(
            ttl in 1u64..=900,
            identifier in prop::option::of("[A-Za-z0-9_.-]{1,40}"),
            edits in prop::collection::vec(edit(), 1..4),
        ) {
            let s = secret();
            let req = MintRequest { ttl_secs: Some(ttl), identifier, ..request(ORIGIN) };
            let token = mint(&s, &req, NOW).expect("mint").token;
            prop_assert!(verify(&s, &token, Some(ORIGIN), NOW).is_ok());
            let mut bytes = token.clone().into_bytes();
            for e in &edits {
                apply(&mut bytes, e);
            }
            let edited = String::from_utf8_lossy(&bytes).into_owned();
            prop_assume!(edited != token);
            prop_assert!(verify(&s, &edited, Some(ORIGIN), NOW).is_err(), "{edited:?} verified");
        }

        /// Arbitrary strings never panic and never verify.
        #[test]
        fn random_strings_never_verify(
            token in prop_oneof![
                any::<String>(),
                "flt\\.[A-Za-z0-9_-]{0,400}\\.[0-9a-f]{0,70}",
                "flt\\.[A-Za-z0-9_.=+/-]{0,200}",
                prop::collection::vec(any::<u8>(), 0..600).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ],
            origin in prop::option::of(".{0,40}"),
            now in any::<u64>(),
        ) {
            prop_assert!(verify(&secret(), &token, origin.as_deref(), now).is_err());
        }

        /// Any valid request round-trips until its expiry.
        #[test]
        fn valid_requests_round_trip(
            ttl in prop::option::of(1u64..=900),
            identifier in prop::option::of("[A-Za-z0-9_.-][A-Za-z0-9_.:-]{0,127}"),
            now in 0u64..4_000_000_000_000,
        ) {
            prop_assume!(identifier.as_deref().is_none_or(|i| check_identifier(i).is_ok()));
            let s = secret();
            let req = MintRequest { ttl_secs: ttl, identifier: identifier.clone(), ..request(ORIGIN) };
            let m = mint(&s, &req, now).expect("mint");
            let claims = verify(&s, &m.token, Some(ORIGIN), now).expect("verify");
            prop_assert_eq!(claims.identifier, identifier);
            prop_assert!(m.expires_at_ms > now);
            prop_assert!(m.expires_at_ms <= now + ttl.unwrap_or(900) * 1000);
            prop_assert!(verify(&s, &m.token, Some(ORIGIN), m.expires_at_ms - 1).is_ok());
            prop_assert_eq!(verify(&s, &m.token, Some(ORIGIN), m.expires_at_ms), Err(TokenError::Expired));
        }
    }
}
