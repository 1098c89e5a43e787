use super::*;
use freellm_sdk::{AuthPlacement, HttpMethod, ModelTags, PrivacyPolicy};
use serde_json::json;

const BASE: &[(&str, &str)] = &[
    ("id", "openrouter"),
    ("base_url", "https://openrouter.ai/api/v1/"),
    ("models", "meta-llama/llama-3.3-70b-instruct:free|131072|smart+tools"),
];

fn settings(extra: &[(&str, &str)]) -> Settings {
    BASE.iter().chain(extra).map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn configure(extra: &[(&str, &str)]) -> Result<AdapterInfo, String> {
    OpenAiCompatible::configure(&settings(extra))
}

/// The configure error for `extra`, which must name `key`.
fn error(extra: &[(&str, &str)], key: &str) -> String {
    let e = configure(extra).expect_err("configure should fail");
    assert!(e.contains(&format!("`{key}`")), "{e:?} should name `{key}`");
    e
}

/// The context of a call on an instance configured with `extra` (as the
/// host configures every instance before its first call).
fn ctx(extra: &[(&str, &str)], stream: bool) -> CallContext {
    OpenAiCompatible::configure(&settings(extra)).expect("valid settings");
    CallContext {
        request_id: "r".into(),
        upstream_model: "meta-llama/llama-3.3-70b-instruct:free".into(),
        is_stream: stream,
    }
}

fn map(extra: &[(&str, &str)], body: Value) -> Result<UpstreamRequest, Failure> {
    OpenAiCompatible::map_request_body(&ctx(extra, false), body.to_string().as_bytes())
}

fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
    ResponseHead { status, headers: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect() }
}

#[test]
fn minimal_settings_and_defaults() {
    let info = configure(&[]).unwrap();
    assert_eq!(info.id, "openrouter");
    assert_eq!(info.display_name, "openrouter");
    assert_eq!(info.default_base_url, "https://openrouter.ai/api/v1");
    assert_eq!(info.key_env.as_deref(), Some("OPENROUTER_API_KEY"));
    assert_eq!(info.auth, AuthPlacement::Bearer);
    assert_eq!(info.capabilities, Capabilities::TOOLS | Capabilities::JSON_MODE | Capabilities::STREAM_USAGE);
    assert_eq!(info.models.len(), 1);
    assert_eq!(info.models[0].id, "meta-llama/llama-3.3-70b-instruct:free");
    assert_eq!(info.models[0].context_window, 131_072);
    assert_eq!(info.models[0].tags, ModelTags::SMART | ModelTags::TOOLS);
    assert_eq!(info.default_model, info.models[0].id);
    assert_eq!(info.privacy.policy, PrivacyPolicy::Configurable);
    assert_eq!(info.privacy.source_url, "https://openrouter.ai/api/v1");
    assert_eq!(info.privacy.last_verified, "unverified");
    assert!(info.privacy.note.contains("not stated"));
    assert_eq!(info.limits.requests_per_minute, None);
    assert_eq!(info.limits.requests_per_day, None);
    assert_eq!(info.limits.tokens_per_minute, None);
    assert_eq!(info.limits.tokens_per_day, None);
    assert!(!info.limits.shared_per_project);
    assert_eq!(info.adapter_version, env!("CARGO_PKG_VERSION"));
}

#[test]
fn full_settings() {
    let info = configure(&[
        ("display_name", " OpenRouter "),
        ("path", "/chat/completions?x=1"),
        ("key_env", "OR_KEYS"),
        ("auth", "header:X-Key"),
        ("models", "a/b:free|8192|fast+vision, c||reasoning ,d|0, e"),
        ("default_model", "c"),
        ("capabilities", "tools, json-mode,JSON_SCHEMA,vision,stream_usage,reasoning,assistant_prefill"),
        ("privacy", "no_training"),
        ("privacy_source", "https://openrouter.ai/privacy/"),
        ("privacy_verified", "2024-02-29"),
        ("privacy_note", "Free models may log."),
        ("rpm", "20"),
        ("rpd", "50"),
        ("tpm", "100000"),
        ("tpd", "4294967295"),
        ("shared_per_project", "TRUE"),
        ("drop_fields", "logit_bias, n,logit_bias"),
        ("extra_headers", "HTTP-Referer: https://example.com; X-Title: Free LLM;"),
    ])
    .unwrap();
    assert_eq!(info.display_name, "OpenRouter");
    assert_eq!(info.key_env.as_deref(), Some("OR_KEYS"));
    assert_eq!(info.auth, AuthPlacement::Header("X-Key".into()));
    let models: Vec<(&str, u32, ModelTags)> =
        info.models.iter().map(|m| (m.id.as_str(), m.context_window, m.tags)).collect();
    assert_eq!(
        models,
        [
            ("a/b:free", 8192, ModelTags::FAST | ModelTags::VISION),
            ("c", 0, ModelTags::REASONING),
            ("d", 0, ModelTags::empty()),
            ("e", 0, ModelTags::empty()),
        ]
    );
    assert_eq!(info.default_model, "c");
    assert_eq!(info.capabilities, Capabilities::all());
    assert_eq!(info.privacy.policy, PrivacyPolicy::NoTraining);
    assert_eq!(info.privacy.source_url, "https://openrouter.ai/privacy");
    assert_eq!(info.privacy.last_verified, "2024-02-29");
    assert_eq!(info.privacy.note, "Free models may log.");
    assert_eq!(info.limits.requests_per_minute, Some(20));
    assert_eq!(info.limits.requests_per_day, Some(50));
    assert_eq!(info.limits.tokens_per_minute, Some(100_000));
    assert_eq!(info.limits.tokens_per_day, Some(u32::MAX));
    assert!(info.limits.shared_per_project);
}

#[test]
fn blank_values_mean_default() {
    let info = configure(&[("display_name", " "), ("privacy", ""), ("rpm", ""), ("default_model", "")]).unwrap();
    assert_eq!(info.display_name, "openrouter");
    assert!(info.capabilities.contains(Capabilities::TOOLS));
    assert_eq!(info.privacy.policy, PrivacyPolicy::Configurable);
    assert_eq!(info.limits.requests_per_minute, None);
}

#[test]
fn id_is_required_and_checked() {
    let no_id: Settings = BASE[1..].iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let e = OpenAiCompatible::configure(&no_id).unwrap_err();
    assert!(e.contains("`id` is required"), "{e}");
    for bad in ["OpenRouter", "open router", "a.b", "é"] {
        error(&[("id", bad)], "id");
    }
    assert_eq!(configure(&[("id", "my-provider_2")]).unwrap().id, "my-provider_2");
    assert_eq!(configure(&[("id", "lm-studio")]).unwrap().key_env.as_deref(), Some("LM_STUDIO_API_KEY"));
}

#[test]
fn unknown_keys_are_rejected_with_a_hint() {
    let e = error(&[("modles", "x")], "modles");
    assert!(e.contains("did you mean `models`?"), "{e}");
    assert!(e.contains("valid settings: id, display_name, base_url"), "{e}");
    let e = error(&[("temperature", "1")], "temperature");
    assert!(!e.contains("did you mean"), "{e}");
}

#[test]
fn display_name_rejects_control_characters() {
    error(&[("display_name", "a\u{7}b")], "display_name");
}

#[test]
fn base_url_is_required_and_checked() {
    let no_url: Settings = [BASE[0], BASE[2]].iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let e = OpenAiCompatible::configure(&no_url).unwrap_err();
    assert!(e.contains("`base_url` is required"), "{e}");
    for bad in [
        "openrouter.ai/api/v1",
        "ftp://x",
        "https://",
        "https:///v1",
        "https://a b",
        "https://x/v1?key=1",
        "https://x/v1#top",
    ] {
        error(&[("base_url", bad)], "base_url");
    }
    let info = configure(&[("base_url", "http://localhost:1234/v1//")]).unwrap();
    assert_eq!(info.default_base_url, "http://localhost:1234/v1");
}

#[test]
fn path_is_checked() {
    for bad in ["chat/completions", "//evil.com/x", "/a/../b", "/a b", "/a#b"] {
        error(&[("path", bad)], "path");
    }
    let up = map(&[("path", "/v1/chat")], json!({"model": "x", "messages": []})).unwrap();
    assert_eq!(up.path, "/v1/chat");
}

#[test]
fn auth_placements() {
    let auth = |value: &str| configure(&[("auth", value)]).map(|i| (i.auth, i.key_env));
    assert_eq!(auth("BEARER").unwrap(), (AuthPlacement::Bearer, Some("OPENROUTER_API_KEY".into())));
    assert_eq!(auth("none").unwrap(), (AuthPlacement::None, None));
    assert_eq!(auth("header: x-goog-api-key").unwrap().0, AuthPlacement::Header("x-goog-api-key".into()));
    assert_eq!(auth("query:key").unwrap().0, AuthPlacement::Query("key".into()));
    for bad in [
        "basic",
        "bearer:x",
        "none:x",
        "header",
        "header:",
        "header:bad name",
        "header:Host",
        "header:content-length",
        "query:",
        "query:a&b",
    ] {
        error(&[("auth", bad)], "auth");
    }
}

#[test]
fn key_env_is_checked() {
    error(&[("key_env", "1KEY")], "key_env");
    error(&[("key_env", "MY-KEY")], "key_env");
    let e = error(&[("auth", "none"), ("key_env", "X_KEY")], "key_env");
    assert!(e.contains("auth"), "{e}");
    assert_eq!(configure(&[("key_env", "_K1")]).unwrap().key_env.as_deref(), Some("_K1"));
}

#[test]
fn models_are_checked() {
    for bad in ["a|1|fast|x", "|100", "my model", "a|12k", "a|-1", "a|99999999999", "a|1|fast+genius", "a,b,a", " , ,"]
    {
        error(&[("models", bad)], "models");
    }
    let e = error(&[("models", "a|1|genius")], "models");
    assert!(e.contains("valid tags: fast, smart, reasoning, vision, tools"), "{e}");
    let e = error(&[("models", "a,b,a|5")], "models");
    assert!(e.contains("a is listed twice"), "{e}");
    let no_models: Settings = BASE[..2].iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let e = OpenAiCompatible::configure(&no_models).unwrap_err();
    assert!(e.contains("`models` is required"), "{e}");
    let info = configure(&[("models", "x,,y,|")]);
    assert!(info.is_err(), "an entry of only '|' has no name");
    let info = configure(&[("models", "x,,y,")]).unwrap();
    assert_eq!(info.models.len(), 2);
}

#[test]
fn default_model_must_be_listed() {
    let e = error(&[("default_model", "gpt-4o")], "default_model");
    assert!(e.contains("meta-llama/llama-3.3-70b-instruct:free"), "{e}");
    let info = configure(&[("models", "a,b"), ("default_model", "b")]).unwrap();
    assert_eq!(info.default_model, "b");
}

#[test]
fn capabilities_are_checked() {
    let e = error(&[("capabilities", "tools,streaming")], "capabilities");
    assert!(
        e.contains("valid: tools, json_mode, json_schema, vision, stream_usage, reasoning, assistant_prefill"),
        "{e}"
    );
    assert_eq!(configure(&[("capabilities", "none")]).unwrap().capabilities, Capabilities::empty());
    assert_eq!(configure(&[("capabilities", "vision")]).unwrap().capabilities, Capabilities::VISION);
    // `capabilities = []` in TOML arrives as "".
    assert_eq!(configure(&[("capabilities", " ")]).unwrap().capabilities, Capabilities::empty());
}

#[test]
fn privacy_settings() {
    let policy = |p: &str| configure(&[("privacy", p)]).map(|i| i.privacy);
    assert_eq!(policy("no-training").unwrap().policy, PrivacyPolicy::NoTraining);
    let configurable = policy("Configurable").unwrap();
    assert_eq!(configurable.policy, PrivacyPolicy::Configurable);
    assert!(configurable.note.contains("account settings"));
    assert_eq!(policy("free-tier-trains").unwrap().policy, PrivacyPolicy::FreeTierTrains);
    assert_eq!(policy("free_tier_trains").unwrap().policy, PrivacyPolicy::FreeTierTrains);
    assert_eq!(policy("local").unwrap().policy, PrivacyPolicy::Local);
    let e = error(&[("privacy", "private")], "privacy");
    assert!(e.contains("no-training, configurable, free-tier-trains, local"));

    error(&[("privacy_source", "openrouter.ai/privacy")], "privacy_source");
    for bad in ["2026-4-9", "2026-02-30", "2023-02-29", "2026-13-01", "09/04/2026", "1969-12-31"] {
        error(&[("privacy_verified", bad)], "privacy_verified");
    }
    assert_eq!(configure(&[("privacy_verified", "Unverified")]).unwrap().privacy.last_verified, "unverified");
    error(&[("privacy_note", "a\nb")], "privacy_note");
}

#[test]
fn limits_are_positive_numbers() {
    for key in ["rpm", "rpd", "tpm", "tpd"] {
        for bad in ["0", "-1", "1.5", "+3", "ten", "4294967296", "1e3"] {
            error(&[(key, bad)], key);
        }
    }
    error(&[("shared_per_project", "yes")], "shared_per_project");
    assert!(!configure(&[("shared_per_project", "false")]).unwrap().limits.shared_per_project);
}

#[test]
fn drop_fields_are_checked() {
    for field in ["model", "messages", "stream"] {
        error(&[("drop_fields", field)], "drop_fields");
    }
}

#[test]
fn extra_headers_are_checked() {
    for bad in [
        "X-Title",
        "X Title: a",
        ": a",
        "X-Title:",
        "Authorization: Bearer x",
        "host: evil",
        "Content-Length: 3",
        "content-type: text/plain",
        "Connection: close",
        "X-Api-Key: k",
        "Cookie: a=b",
        "X-Title: a\r\nX-Evil: b",
        "X-Title: a\nb",
        "X-Title: caf\u{e9}",
        "X-Title: a; x-title: b",
    ] {
        error(&[("extra_headers", bad)], "extra_headers");
    }
    let e = error(&[("auth", "header:X-Key"), ("extra_headers", "x-key: leaked")], "extra_headers");
    assert!(e.contains("use `auth` and `key_env`"), "{e}");
}

#[test]
fn extra_headers_accept_a_toml_array() {
    let headers =
        |list: &str| RequestConfig::from_settings(&settings(&[("extra_headers", list)])).unwrap().extra_headers;
    let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
    // `extra_headers = ["HTTP-Referer: https://a.com", "X-Title: FreeLLM"]`
    assert_eq!(
        headers("HTTP-Referer: https://a.com,X-Title: FreeLLM"),
        [pair("HTTP-Referer", "https://a.com"), pair("X-Title", "FreeLLM")]
    );
    assert_eq!(
        headers("Accept: a, b; X-Sites: https://a.com,https://b.com"),
        [pair("Accept", "a, b"), pair("X-Sites", "https://a.com,https://b.com")]
    );
    assert_eq!(headers(" ; ,"), []);
}

#[test]
fn maps_with_path_drops_and_headers() {
    let extra =
        [("drop_fields", "logit_bias,user"), ("extra_headers", "HTTP-Referer: https://example.com; X-Title: FreeLLM")];
    let body =
        br#"{"model":"openrouter/x","messages":[{"role":"user","content":"hi"}],"logit_bias":{"1":1},"user":"u","top_k":5}"#;
    let up = OpenAiCompatible::map_request_body(&ctx(&extra, true), body).unwrap();
    assert_eq!(up.method, HttpMethod::Post);
    assert_eq!(up.path, "/chat/completions");
    assert_eq!(
        up.headers,
        [
            ("content-type".to_owned(), "application/json".to_owned()),
            ("HTTP-Referer".to_owned(), "https://example.com".to_owned()),
            ("X-Title".to_owned(), "FreeLLM".to_owned()),
        ]
    );
    assert_eq!(
        String::from_utf8(up.body.as_bytes().expect("a whole body").to_vec()).unwrap(),
        r#"{"model":"meta-llama/llama-3.3-70b-instruct:free","messages":[{"role":"user","content":"hi"}],"top_k":5,"stream":true}"#
    );
}

#[test]
fn unsupported_requests_are_skipped() {
    let unsupported = |extra: &[(&str, &str)], body: Value| {
        let f = map(extra, body).unwrap_err();
        assert_eq!(f.kind, FailureKind::Unsupported, "{}", f.message);
        f.message
    };
    let none = [("capabilities", "none")];
    let tools = json!({"model": "x", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]});
    let message = unsupported(&none, tools.clone());
    assert!(message.contains("openrouter does not support tools"), "{message}");
    assert!(map(&[], tools).is_ok());
    unsupported(&none, json!({"model": "x", "messages": [], "functions": [{"name": "f"}]}));
    // Empty or null tool lists ask for nothing.
    assert!(map(&none, json!({"model": "x", "messages": [], "tools": []})).is_ok());
    assert!(map(&none, json!({"model": "x", "messages": [], "tools": null})).is_ok());

    let schema = json!({"model": "x", "messages": [], "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}}});
    unsupported(&[], schema.clone());
    assert!(map(&[("capabilities", "json_schema")], schema).is_ok());
    let object = json!({"model": "x", "messages": [], "response_format": {"type": "json_object"}});
    unsupported(&none, object.clone());
    assert!(map(&[], object).is_ok());
    assert!(map(&none, json!({"model": "x", "messages": [], "response_format": {"type": "text"}})).is_ok());

    let image = json!({"model": "x", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]}]});
    let message = unsupported(&[], image.clone());
    assert!(message.contains("`vision`"), "{message}");
    assert!(map(&[("capabilities", "vision")], image).is_ok());
    assert!(
        map(&[], json!({"model": "x", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}))
            .is_ok()
    );
}

/// An instance maps with the settings it was configured with, parsed once;
/// configured again, with the new ones.
#[test]
fn an_instance_maps_with_the_settings_it_was_configured_with() {
    let body = br#"{"model":"x","messages":[]}"#;
    let c = ctx(&[("path", "/v2/chat"), ("extra_headers", "X-Title: one")], false);
    let up = OpenAiCompatible::map_request_body(&c, body).unwrap();
    assert_eq!(up.path, "/v2/chat");
    assert!(up.headers.contains(&("X-Title".into(), "one".into())), "{:?}", up.headers);
    let c = ctx(&[], false);
    let up = OpenAiCompatible::map_request_body(&c, body).unwrap();
    assert_eq!(up.path, DEFAULT_PATH);
    assert!(!up.headers.iter().any(|(k, _)| k == "X-Title"), "{:?}", up.headers);
}

/// An instance the host never configured refuses as transient, not with a
/// guess at settings.
#[test]
fn an_unconfigured_instance_refuses_as_transient() {
    // A thread of its own: the test threads' instances are their own.
    let f = std::thread::spawn(|| {
        let c = CallContext { request_id: "r".into(), upstream_model: "m".into(), is_stream: false };
        OpenAiCompatible::map_request_body(&c, br#"{"model":"x","messages":[]}"#).unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(f.kind, FailureKind::Transient);
    assert!(f.message.contains("not configured"), "{}", f.message);
}

const RPM: &str = r#"{"error":{"message":"Rate limit exceeded: free-models-per-min","code":429}}"#;

#[test]
fn reset_headers_stand_in_for_retry_after() {
    let c = ctx(&[], false);
    let f = OpenAiCompatible::classify_failure(
        &c,
        &head(429, &[("x-ratelimit-reset-requests", "2m59.56s"), ("x-ratelimit-reset-tokens", "7.66s")]),
        RPM.as_bytes(),
    );
    assert_eq!(
        (f.kind, f.retry_after_ms, f.upstream_code.as_deref()),
        (FailureKind::RateLimited, Some(179_560), Some("429"))
    );
    let f = OpenAiCompatible::classify_failure(
        &c,
        &head(429, &[("retry-after", "3"), ("x-ratelimit-reset-requests", "1m")]),
        RPM.as_bytes(),
    );
    assert_eq!(f.retry_after_ms, Some(3_000), "retry-after wins");
    let f =
        OpenAiCompatible::classify_failure(&c, &head(429, &[("x-ratelimit-reset-tokens", "never")]), RPM.as_bytes());
    assert_eq!(f.retry_after_ms, None);
    let f = OpenAiCompatible::classify_failure(
        &c,
        &head(401, &[("x-ratelimit-reset-requests", "5s")]),
        br#"{"error":{"message":"No auth credentials found","code":401}}"#,
    );
    assert_eq!((f.kind, f.retry_after_ms), (FailureKind::KeyInvalid, None));
    let f = OpenAiCompatible::classify_failure(&c, &head(500, &[("x-ratelimit-reset-requests", "5s")]), b"");
    assert_eq!((f.kind, f.retry_after_ms), (FailureKind::Transient, None));
}

#[test]
fn responses_and_streams_use_the_sdk_defaults() {
    let c = ctx(&[], true);
    let body = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    let n = OpenAiCompatible::normalize_response(&c, &head(200, &[]), body).unwrap();
    assert_eq!(n.body, body);
    let mut s = OpenAiCompatible::stream_normalizer(&c, &head(200, &[]));
    let out = s.push(vec![freellm_sdk::StreamEvent { event: None, data: "[DONE]".into() }]).unwrap();
    assert!(out.done);
}

#[test]
fn doc_example_settings_configure() {
    // The two slots of the crate documentation, as the host would pass them.
    let openrouter: Settings = [
        ("id", "openrouter"),
        ("display_name", "OpenRouter"),
        ("base_url", "https://openrouter.ai/api/v1"),
        ("key_env", "OPENROUTER_API_KEY"),
        (
            "models",
            "meta-llama/llama-3.3-70b-instruct:free|131072|smart+tools,deepseek/deepseek-r1:free|163840|reasoning,qwen/qwen-2.5-72b-instruct:free",
        ),
        ("default_model", "meta-llama/llama-3.3-70b-instruct:free"),
        ("capabilities", "tools,json_mode,stream_usage"),
        ("privacy", "configurable"),
        ("privacy_source", "https://openrouter.ai/privacy"),
        ("privacy_verified", "2026-04-09"),
        ("rpm", "20"),
        ("rpd", "50"),
        ("shared_per_project", "true"),
        (
            "extra_headers",
            "HTTP-Referer: https://example.com; X-Title: FreeLLM",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let info = OpenAiCompatible::configure(&openrouter).unwrap();
    assert_eq!(info.models.len(), 3);
    let lmstudio: Settings = [
        ("id", "lmstudio"),
        ("display_name", "LM Studio"),
        ("base_url", "http://localhost:1234/v1"),
        ("auth", "none"),
        ("models", "qwen2.5-7b-instruct|32768|fast+tools"),
        ("capabilities", "tools,json_mode,json_schema"),
        ("privacy", "local"),
        ("drop_fields", "logit_bias"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let info = OpenAiCompatible::configure(&lmstudio).unwrap();
    assert_eq!((info.auth, info.key_env), (AuthPlacement::None, None));
}

#[test]
fn fixtures_pass_natively() {
    freellm_sdk::fixtures::assert_dir::<OpenAiCompatible>(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
}

#[test]
fn conformance() {
    freellm_sdk::fixtures::assert_conformance::<OpenAiCompatible>(BASE);
    freellm_sdk::fixtures::assert_conformance::<OpenAiCompatible>(&[
        ("id", "lmstudio"),
        ("base_url", "http://localhost:1234/v1"),
        ("auth", "none"),
        ("models", "qwen2.5-7b-instruct"),
        ("capabilities", "none"),
    ]);
}
