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
    let json = r#"{"v":1,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com","extra":[1,{"a":null}]}"#;
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
        (r#"{"v":1,"iat":1700000000,"exp":1700000901,"origin":"https://app.example.com"}"#, TokenError::InvalidPayload),
        (r#"{"v":1,"iat":1700000001,"exp":1700000000,"origin":"https://app.example.com"}"#, TokenError::InvalidPayload),
        (
            r#"{"v":1,"v":1,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com"}"#,
            TokenError::InvalidPayload,
        ),
        (r#"{"v":2,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com"}"#, TokenError::InvalidVersion),
        (r#"{"v":0,"iat":1700000000,"exp":1700000900,"origin":"https://app.example.com"}"#, TokenError::InvalidVersion),
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
