use super::*;
use axum::http::HeaderValue;

const SECRET: &str = "an-hmac-secret-that-is-long-enough-0123456789";
const KEY: &str = "sk-freellm-tenant-0001";
const ORIGIN: &str = "https://app.example";
const NOW: u64 = 1_700_000_000_000;

fn keys(dir: &std::path::Path, body: &str) -> VirtualKeys {
    let path = dir.join("keys.json");
    std::fs::write(&path, body).expect("write keys");
    VirtualKeys::load(&path).expect("load keys")
}

fn credentials(master: Option<&str>, keys: &VirtualKeys) -> Credentials {
    let mut c = Credentials {
        master: master.map(str::to_owned),
        admin: None,
        token_secret: Some(TokenSecret::new(SECRET).expect("secret")),
        protected: false,
    };
    c.protected = is_protected(&c, keys);
    c
}

fn headers(authorization: &str, origin: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(axum::http::header::AUTHORIZATION, HeaderValue::from_str(authorization).expect("header"));
    if let Some(o) = origin {
        h.insert(axum::http::header::ORIGIN, HeaderValue::from_str(o).expect("header"));
    }
    h
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    for v in ["Bearer k", "bearer k", "BEARER k", "bEaReR k", "Bearer   k  "] {
        assert_eq!(bearer_credential(v), Some("k"), "{v:?}");
    }
    for v in ["Basic k", "Bearer", "Bearer ", "Bearerk", "", " Bearer k", "Token k"] {
        assert_eq!(bearer_credential(v), None, "{v:?}");
    }
}

#[test]
fn a_configured_keys_file_protects_even_when_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = keys(dir.path(), r#"{"keys":[]}"#);
    let c = credentials(None, &empty);
    assert!(c.protected);
    assert_eq!(authenticate(&HeaderMap::new(), &c, &empty, NOW).err(), Some(AuthFailure::Missing));
    // No key source at all: open.
    let none = VirtualKeys::none();
    let open = credentials(None, &none);
    assert!(!open.protected);
    assert!(matches!(authenticate(&HeaderMap::new(), &open, &none, NOW), Ok(Principal::Open)));
    assert!(is_protected(&credentials(Some("m"), &none), &none));
}

#[test]
fn protection_does_not_follow_the_keys_file_once_decided() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vk = keys(dir.path(), &format!(r#"{{"keys":[{{"id":"{KEY}","label":"T"}}]}}"#));
    let c = credentials(None, &vk);
    std::fs::write(dir.path().join("keys.json"), r#"{"keys":[]}"#).expect("rewrite");
    vk.reload().expect("reload");
    assert!(vk.current().is_empty());
    assert_eq!(authenticate(&HeaderMap::new(), &c, &vk, NOW).err(), Some(AuthFailure::Missing));
    assert_eq!(authenticate(&headers(&format!("Bearer {KEY}"), None), &c, &vk, NOW).err(), Some(AuthFailure::Invalid));
}

#[test]
fn a_token_acts_for_the_key_its_handle_names_and_a_raw_key_token_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vk = keys(dir.path(), &format!(r#"{{"keys":[{{"id":"{KEY}","label":"T"}}]}}"#));
    let c = credentials(None, &vk);
    let secret = c.token_secret.clone().expect("secret");
    let mint = |virtual_key: Option<String>| {
        let request = tokens::MintRequest { origin: ORIGIN.into(), virtual_key, ..Default::default() };
        tokens::mint(&secret, &request, NOW).expect("mint").token
    };
    let token = mint(Some(tokens::key_handle(KEY)));
    match authenticate(&headers(&format!("Bearer {token}"), Some(ORIGIN)), &c, &vk, NOW) {
        Ok(Principal::Browser { virtual_key: Some(k), .. }) => assert_eq!(k.id, KEY),
        other => panic!("{other:?}"),
    }
    // A reference-format token carrying the raw key (signed like the
    // reference does it) verifies but may not act for the key.
    let json = format!(r#"{{"v":1,"iat":{},"exp":{},"origin":"{ORIGIN}","vk":"{KEY}"}}"#, NOW / 1000, NOW / 1000 + 60);
    let raw = reference_token(&json);
    assert_eq!(
        authenticate(&headers(&format!("Bearer {raw}"), Some(ORIGIN)), &c, &vk, NOW).err(),
        Some(AuthFailure::TokenRejected("raw_virtual_key".into()))
    );
    // A reference token with no `vk` still verifies.
    let json = format!(r#"{{"v":1,"iat":{},"exp":{},"origin":"{ORIGIN}"}}"#, NOW / 1000, NOW / 1000 + 60);
    let plain = reference_token(&json);
    assert!(matches!(
        authenticate(&headers(&format!("bearer {plain}"), Some(ORIGIN)), &c, &vk, NOW),
        Ok(Principal::Browser { virtual_key: None, .. })
    ));
    // A handle of a key that is not loaded.
    let unknown = mint(Some(tokens::key_handle("sk-freellm-someone-else")));
    assert_eq!(
        authenticate(&headers(&format!("Bearer {unknown}"), Some(ORIGIN)), &c, &vk, NOW).err(),
        Some(AuthFailure::TokenRejected("unknown_virtual_key".into()))
    );
    // The handle itself is no credential.
    let handle = tokens::key_handle(KEY);
    assert_eq!(
        authenticate(&headers(&format!("Bearer {handle}"), None), &c, &vk, NOW).err(),
        Some(AuthFailure::Invalid)
    );
}

fn reference_token(json: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac");
    mac.update(json.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    format!("flt.{}.{sig}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
}

#[test]
fn only_operators_read_gateway_wide_views_and_tenants_are_scoped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vk = keys(dir.path(), &format!(r#"{{"keys":[{{"id":"{KEY}","label":"T"}}]}}"#));
    let key = vk.current().find(KEY).cloned().expect("key");
    let tenant = Principal::Virtual(key);
    assert!(Principal::Open.is_operator() && Principal::Master.is_operator() && Principal::Admin.is_operator());
    assert!(!tenant.is_operator());
    assert_eq!(tenant.tenant(), format!("vk:{}", tokens::key_handle(KEY)));
    assert!(!tenant.tenant().contains(KEY));
    assert_eq!(Principal::Master.tenant(), "master");
    assert_eq!(Principal::Open.feed_owner(Some([127, 0, 0, 1].into())), "ip:127.0.0.1");
    assert_eq!(Principal::Admin.feed_owner(None), "admin");
}
