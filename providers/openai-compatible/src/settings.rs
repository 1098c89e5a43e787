//! Parsing and validation of the adapter's settings (see the crate docs for
//! the contract). Every error message names the offending setting.

use freellm_sdk::settings::SettingsReader;
use freellm_sdk::{
    AdapterInfo, AuthPlacement, Capabilities, ModelInfo, ModelTags, PrivacyInfo, PrivacyPolicy, RateLimits, Settings,
    StreamFraming, WireFormat,
};

/// Every setting the adapter understands, in documentation order.
pub const KEYS: &[&str] = &[
    "id",
    "display_name",
    "base_url",
    "path",
    "key_env",
    "auth",
    "models",
    "default_model",
    "capabilities",
    "privacy",
    "privacy_source",
    "privacy_verified",
    "privacy_note",
    "rpm",
    "rpd",
    "tpm",
    "tpd",
    "shared_per_project",
    "drop_fields",
    "extra_headers",
];

/// Default request path, relative to `base_url`.
pub const DEFAULT_PATH: &str = "/chat/completions";

/// Capabilities assumed when the `capabilities` setting is absent.
pub const DEFAULT_CAPABILITIES: &str = "tools,json_mode,stream_usage";

/// `privacy_verified` when the operator gives no date.
pub const UNVERIFIED: &str = "unverified";

/// Capability names of the `capabilities` setting.
pub const CAPABILITY_NAMES: &[(&str, Capabilities)] = &[
    ("tools", Capabilities::TOOLS),
    ("json_mode", Capabilities::JSON_MODE),
    ("json_schema", Capabilities::JSON_SCHEMA),
    ("vision", Capabilities::VISION),
    ("stream_usage", Capabilities::STREAM_USAGE),
    ("reasoning", Capabilities::REASONING),
    ("assistant_prefill", Capabilities::ASSISTANT_PREFILL),
];

/// Tag names of a `models` entry (`name|context_window|fast+tools`).
pub const TAG_NAMES: &[(&str, ModelTags)] = &[
    ("fast", ModelTags::FAST),
    ("smart", ModelTags::SMART),
    ("reasoning", ModelTags::REASONING),
    ("vision", ModelTags::VISION),
    ("tools", ModelTags::TOOLS),
];

/// Request fields `drop_fields` may not remove: without them the request
/// is not a chat request (or not the stream the host expects).
const UNDROPPABLE: &[&str] = &["model", "messages", "stream"];

/// Headers the host owns (framing, routing, hop-by-hop); neither an auth
/// header nor an extra header may use these names.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// Credential headers: the host drops them from adapter requests, so an
/// extra header with one of these names would silently vanish.
const CREDENTIAL_HEADERS: &[&str] =
    &["authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-goog-api-key"];

/// The settings a call needs (everything but the catalog, privacy and
/// limits); cheap enough to parse on every call.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestConfig {
    /// Provider id, for messages (`this provider` when absent: the call
    /// context's settings are trusted, `configure` checked them).
    pub id: String,
    /// Request path relative to the base URL.
    pub path: String,
    /// What the provider supports.
    pub capabilities: Capabilities,
    /// Top-level request fields removed before sending.
    pub drop_fields: Vec<String>,
    /// Static headers sent with every request, after `content-type`.
    pub extra_headers: Vec<(String, String)>,
}

impl RequestConfig {
    /// Parses the per-call settings (no unknown-key check: `configure`
    /// already did it).
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let auth = parse_auth(get(settings, "auth"))?;
        Ok(Self {
            id: get(settings, "id").unwrap_or("this provider").to_owned(),
            path: parse_path(get(settings, "path"))?,
            capabilities: parse_capabilities(freellm_sdk::setting(settings, "capabilities").map(str::trim))?,
            drop_fields: parse_drop_fields(get(settings, "drop_fields"))?,
            extra_headers: parse_extra_headers(get(settings, "extra_headers"), &auth)?,
        })
    }
}

/// Validates every setting and describes the provider.
pub fn describe(settings: &Settings) -> Result<AdapterInfo, String> {
    describe_with_request(settings).map(|(info, _)| info)
}

/// [`describe`], with the request settings it parsed on the way (what
/// `configure` keeps for the instance's calls).
pub fn describe_with_request(settings: &Settings) -> Result<(AdapterInfo, RequestConfig), String> {
    SettingsReader::new(settings).only(KEYS)?;
    let id = parse_id(required(settings, "id")?)?;
    let request = RequestConfig::from_settings(settings)?;
    let display_name = match get(settings, "display_name") {
        Some(name) if name.chars().any(char::is_control) => {
            return Err(bad("display_name", "must not contain control characters"));
        }
        Some(name) => name.to_owned(),
        None => id.clone(),
    };
    required(settings, "base_url")?;
    let base_url = SettingsReader::new(settings).url("base_url")?.unwrap_or_default();
    let auth = parse_auth(get(settings, "auth"))?;
    let key_env = parse_key_env(get(settings, "key_env"), &auth, &id)?;
    let models = parse_models(required(settings, "models")?)?;
    let default_model = match get(settings, "default_model") {
        Some(model) if models.iter().any(|m| m.id == model) => model.to_owned(),
        Some(model) => {
            let names: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
            return Err(bad("default_model", &format!("\"{model}\" is not in `models` ({})", names.join(", "))));
        }
        None => models[0].id.clone(),
    };
    let privacy = parse_privacy(settings, &base_url)?;
    let limits = RateLimits {
        requests_per_minute: parse_limit(settings, "rpm")?,
        requests_per_day: parse_limit(settings, "rpd")?,
        tokens_per_minute: parse_limit(settings, "tpm")?,
        tokens_per_day: parse_limit(settings, "tpd")?,
        shared_per_project: parse_bool(settings, "shared_per_project")?,
    };
    let info = AdapterInfo {
        id,
        display_name,
        adapter_version: env!("CARGO_PKG_VERSION").into(),
        default_base_url: base_url,
        key_env,
        auth,
        stream_framing: StreamFraming::Sse,
        wire_format: WireFormat::OpenaiChat,
        capabilities: request.capabilities,
        models,
        default_model,
        privacy,
        limits,
    };
    Ok((info, request))
}

/// A setting's value, trimmed; `None` when absent or blank (a blank value
/// means "use the default", as an unset environment override would).
fn get<'a>(settings: &'a Settings, key: &str) -> Option<&'a str> {
    SettingsReader::new(settings).string(key)
}

fn required<'a>(settings: &'a Settings, key: &str) -> Result<&'a str, String> {
    SettingsReader::new(settings).required(key).map_err(|e| {
        let hint = if key == "id" { " (the host passes the provider's slot name)" } else { "" };
        format!("{e}{hint}")
    })
}

fn bad(key: &str, why: &str) -> String {
    format!("setting `{key}`: {why}")
}

fn parse_id(id: &str) -> Result<String, String> {
    let ok = id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(id.to_owned())
    } else {
        Err(bad("id", &format!("\"{id}\" must use only lowercase a-z, 0-9, '-' and '_'")))
    }
}

fn parse_path(path: Option<&str>) -> Result<String, String> {
    let Some(path) = path else {
        return Ok(DEFAULT_PATH.to_owned());
    };
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(bad("path", &format!("must start with a single '/', got \"{path}\"")));
    }
    let route = path.split('?').next().unwrap_or(path);
    if route.split('/').any(|segment| segment == "..")
        || path.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err(bad("path", &format!("\"{path}\" must not contain '..', spaces or a fragment")));
    }
    Ok(path.to_owned())
}

/// A token as RFC 9110 defines it (header names).
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_auth(auth: Option<&str>) -> Result<AuthPlacement, String> {
    let Some(auth) = auth else {
        return Ok(AuthPlacement::Bearer);
    };
    let (kind, name) = match auth.split_once(':') {
        Some((kind, name)) => (kind.trim().to_ascii_lowercase(), Some(name.trim())),
        None => (auth.to_ascii_lowercase(), None),
    };
    match (kind.as_str(), name) {
        ("bearer", None) => Ok(AuthPlacement::Bearer),
        ("none", None) => Ok(AuthPlacement::None),
        ("header", Some(name)) if is_token(name) => {
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(bad("auth", &format!("`{name}` cannot carry the key (the host owns that header)")));
            }
            Ok(AuthPlacement::Header(name.to_owned()))
        }
        ("query", Some(name))
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) =>
        {
            Ok(AuthPlacement::Query(name.to_owned()))
        }
        ("header" | "query", _) => Err(bad(
            "auth",
            &format!("\"{auth}\" needs a valid name after the colon, e.g. header:x-api-key or query:key"),
        )),
        _ => Err(bad("auth", &format!("\"{auth}\" is not one of bearer, none, header:<Name>, query:<name>"))),
    }
}

/// `key_env` as given, else `<ID>_API_KEY` when the auth placement needs a
/// key (the host reads keys only from the variable the adapter or the
/// provider table names), else none.
fn parse_key_env(key_env: Option<&str>, auth: &AuthPlacement, id: &str) -> Result<Option<String>, String> {
    let keyless = matches!(auth, AuthPlacement::None);
    match key_env {
        Some(_) if keyless => {
            Err(bad("key_env", "is set but `auth` is none, so no key would be sent; remove one of them"))
        }
        Some(var) => {
            let valid = var
                .bytes()
                .enumerate()
                .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
            if valid {
                Ok(Some(var.to_owned()))
            } else {
                Err(bad("key_env", &format!("\"{var}\" is not an environment variable name (A-Z, 0-9, '_')")))
            }
        }
        None if keyless => Ok(None),
        None => Ok(Some(format!("{}_API_KEY", id.to_ascii_uppercase().replace('-', "_")))),
    }
}

fn parse_models(list: &str) -> Result<Vec<ModelInfo>, String> {
    let mut models: Vec<ModelInfo> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.split('|').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let window = parts.next().unwrap_or_default();
        let tags = parts.next().unwrap_or_default();
        if parts.next().is_some() {
            return Err(bad("models", &format!("\"{entry}\" has too many '|' parts (use name|context_window|tags)")));
        }
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("models", &format!("\"{entry}\" needs a model name without spaces")));
        }
        let context_window = if window.is_empty() {
            0
        } else if window.bytes().all(|b| b.is_ascii_digit()) {
            window
                .parse::<u32>()
                .map_err(|_| bad("models", &format!("context window \"{window}\" of {name} is too large")))?
        } else {
            return Err(bad(
                "models",
                &format!("context window \"{window}\" of {name} is not a whole number of tokens"),
            ));
        };
        let mut model_tags = ModelTags::empty();
        for tag in tags.split('+').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((_, flag)) = TAG_NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(tag)) else {
                let valid: Vec<&str> = TAG_NAMES.iter().map(|(n, _)| *n).collect();
                return Err(bad(
                    "models",
                    &format!("unknown tag \"{tag}\" on {name}; valid tags: {}", valid.join(", ")),
                ));
            };
            model_tags |= *flag;
        }
        if models.iter().any(|m| m.id == name) {
            return Err(bad("models", &format!("{name} is listed twice")));
        }
        models.push(ModelInfo::new(name, context_window, model_tags));
    }
    if models.is_empty() {
        return Err(bad("models", "lists no model"));
    }
    Ok(models)
}

/// Unlike other settings, a blank list means no capability (`capabilities
/// = []` in TOML arrives as ""); only an absent setting takes the default.
fn parse_capabilities(list: Option<&str>) -> Result<Capabilities, String> {
    let list = list.unwrap_or(DEFAULT_CAPABILITIES);
    let mut capabilities = Capabilities::empty();
    if list.eq_ignore_ascii_case("none") {
        return Ok(capabilities);
    }
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let normalized = name.to_ascii_lowercase().replace('-', "_");
        let Some((_, flag)) = CAPABILITY_NAMES.iter().find(|(n, _)| *n == normalized) else {
            let valid: Vec<&str> = CAPABILITY_NAMES.iter().map(|(n, _)| *n).collect();
            return Err(bad(
                "capabilities",
                &format!("unknown capability \"{name}\"; valid: {} (or none)", valid.join(", ")),
            ));
        };
        capabilities |= *flag;
    }
    Ok(capabilities)
}

fn parse_privacy(settings: &Settings, base_url: &str) -> Result<PrivacyInfo, String> {
    let given = get(settings, "privacy");
    let policy = match given.map(|p| p.to_ascii_lowercase().replace('_', "-")) {
        None => PrivacyPolicy::Configurable,
        Some(p) => match p.as_str() {
            "no-training" => PrivacyPolicy::NoTraining,
            "configurable" => PrivacyPolicy::Configurable,
            "free-tier-trains" => PrivacyPolicy::FreeTierTrains,
            "local" => PrivacyPolicy::Local,
            _ => {
                return Err(bad(
                    "privacy",
                    &format!(
                        "\"{}\" is not one of no-training, configurable, free-tier-trains, local",
                        given.unwrap_or_default()
                    ),
                ));
            }
        },
    };
    let source_url = SettingsReader::new(settings).url("privacy_source")?.unwrap_or_else(|| base_url.to_owned());
    let last_verified = match get(settings, "privacy_verified") {
        None => UNVERIFIED.to_owned(),
        Some(v) if v.eq_ignore_ascii_case(UNVERIFIED) => UNVERIFIED.to_owned(),
        Some(date) if is_date(date) => date.to_owned(),
        Some(other) => {
            return Err(bad("privacy_verified", &format!("\"{other}\" is not a YYYY-MM-DD date")));
        }
    };
    let note = match get(settings, "privacy_note") {
        Some(note) if note.chars().any(char::is_control) => {
            return Err(bad("privacy_note", "must not contain control characters"));
        }
        Some(note) => note.to_owned(),
        None => default_note(policy, given.is_some()).to_owned(),
    };
    Ok(PrivacyInfo { policy, source_url, last_verified, note })
}

fn default_note(policy: PrivacyPolicy, stated: bool) -> &'static str {
    match policy {
        PrivacyPolicy::Configurable if !stated => {
            "Privacy policy not stated by the operator; prompts may be used for training."
        }
        PrivacyPolicy::Configurable => "Training on prompts depends on account settings; the default may train.",
        PrivacyPolicy::NoTraining => "The operator states that this provider does not train on prompts.",
        PrivacyPolicy::FreeTierTrains => "The free tier may use prompts for training.",
        PrivacyPolicy::Local => "Runs on the operator's own infrastructure.",
    }
}

/// `YYYY-MM-DD` naming a real calendar day.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return false;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1970 && (1..=days).contains(&day)
}

fn parse_limit(settings: &Settings, key: &str) -> Result<Option<u32>, String> {
    let Some(value) = get(settings, key) else {
        return Ok(None);
    };
    match value.parse::<u32>() {
        Ok(n) if n > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
        _ => Err(bad(key, &format!("\"{value}\" must be a positive whole number (up to {})", u32::MAX))),
    }
}

fn parse_bool(settings: &Settings, key: &str) -> Result<bool, String> {
    Ok(SettingsReader::new(settings).bool(key)?.unwrap_or(false))
}

fn parse_drop_fields(list: Option<&str>) -> Result<Vec<String>, String> {
    let mut fields: Vec<String> = Vec::new();
    for field in list.unwrap_or_default().split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if UNDROPPABLE.contains(&field) {
            return Err(bad("drop_fields", &format!("`{field}` cannot be dropped (the request needs it)")));
        }
        if !fields.iter().any(|f| f == field) {
            fields.push(field.to_owned());
        }
    }
    Ok(fields)
}

fn parse_extra_headers(list: Option<&str>, auth: &AuthPlacement) -> Result<Vec<(String, String)>, String> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let Some(list) = list else {
        return Ok(headers);
    };
    if list.contains(['\r', '\n']) {
        return Err(bad("extra_headers", "must not contain line breaks (CR or LF)"));
    }
    let auth_header = match auth {
        AuthPlacement::Header(name) => Some(name.to_ascii_lowercase()),
        _ => None,
    };
    for entry in split_headers(list) {
        let entry = entry.as_str();
        let Some((name, value)) = entry.split_once(':') else {
            return Err(bad("extra_headers", &format!("\"{entry}\" is not `Name: value`")));
        };
        let (name, value) = (name.trim(), value.trim());
        if !is_token(name) {
            return Err(bad("extra_headers", &format!("\"{name}\" is not a valid header name")));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(bad("extra_headers", &format!("`{name}` is set by the host or the adapter")));
        }
        if CREDENTIAL_HEADERS.contains(&lower.as_str()) || auth_header.as_deref() == Some(&lower) {
            return Err(bad(
                "extra_headers",
                &format!("`{name}` carries credentials, which the host injects: use `auth` and `key_env`"),
            ));
        }
        if value.is_empty() || !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(bad("extra_headers", &format!("the value of `{name}` must be non-empty printable ASCII")));
        }
        if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(bad("extra_headers", &format!("`{name}` is given twice")));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(headers)
}

/// Splits `extra_headers` into `Name: value` entries. The separator is `;`;
/// a `,` also separates when what follows starts like a header (`Name:`
/// not followed by `/`), because the host joins a TOML array with `,`.
/// Other commas stay in the value (`Accept: a, b`, `https://a,https://b`).
fn split_headers(list: &str) -> Vec<String> {
    let starts_header =
        |piece: &str| piece.split_once(':').is_some_and(|(name, rest)| is_token(name.trim()) && !rest.starts_with('/'));
    let mut entries: Vec<String> = Vec::new();
    for group in list.split(';') {
        let mut current: Option<String> = None;
        for piece in group.split(',') {
            match current.as_mut() {
                Some(entry) if !entry.trim().is_empty() && !starts_header(piece) => {
                    entry.push(',');
                    entry.push_str(piece);
                }
                _ => {
                    entries.extend(current.take());
                    current = Some(piece.to_owned());
                }
            }
        }
        entries.extend(current);
    }
    entries.into_iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect()
}
