//! Describing a provider without writing every field of the contract's
//! records: [`AdapterInfoBuilder`] (everything optional has a default, and
//! `build` checks what the host would refuse), [`RateLimits`] with a
//! `Default` and chainable setters, and [`PrivacyInfo::new`].
//!
//! ```
//! use freellm_sdk::*;
//!
//! let info = AdapterInfo::builder("example", "Example")
//!     .version(env!("CARGO_PKG_VERSION"))
//!     .base_url("https://api.example.com/v1")
//!     .bearer_key("EXAMPLE_API_KEY")
//!     .model(ModelInfo::new("example-large", 32_768, ModelTags::SMART))
//!     .privacy(PrivacyInfo::new(PrivacyPolicy::NoTraining, "https://example.com/terms", "2026-04-09", "No training."))
//!     .limits(RateLimits::default().rpm(60))
//!     .build()
//!     .unwrap();
//! assert_eq!(info.default_model, "example-large");
//! ```

use crate::{
    AdapterInfo, AuthPlacement, Capabilities, ModelInfo, PrivacyInfo, PrivacyPolicy, RateLimits, StreamFraming,
    WireFormat,
};

impl Default for RateLimits {
    /// No published limit, quota per key.
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            requests_per_day: None,
            tokens_per_minute: None,
            tokens_per_day: None,
            shared_per_project: false,
        }
    }
}

impl RateLimits {
    /// With `n` requests per minute.
    pub fn rpm(mut self, n: u32) -> Self {
        self.requests_per_minute = Some(n);
        self
    }

    /// With `n` requests per day.
    pub fn rpd(mut self, n: u32) -> Self {
        self.requests_per_day = Some(n);
        self
    }

    /// With `n` tokens per minute.
    pub fn tpm(mut self, n: u32) -> Self {
        self.tokens_per_minute = Some(n);
        self
    }

    /// With `n` tokens per day.
    pub fn tpd(mut self, n: u32) -> Self {
        self.tokens_per_day = Some(n);
        self
    }

    /// Every key of one account shares the quota.
    pub fn shared_per_project(mut self) -> Self {
        self.shared_per_project = true;
        self
    }
}

impl PrivacyInfo {
    /// A privacy posture: the policy, the https page stating it, the date
    /// it was last checked (`YYYY-MM-DD`) and one sentence for operators.
    pub fn new(
        policy: PrivacyPolicy,
        source_url: impl Into<String>,
        last_verified: impl Into<String>,
        note: impl Into<String>,
    ) -> Self {
        Self { policy, source_url: source_url.into(), last_verified: last_verified.into(), note: note.into() }
    }
}

impl AdapterInfo {
    /// A builder for the description of provider `id` (its `<id>/` model
    /// prefix) named `display_name`.
    pub fn builder(id: impl Into<String>, display_name: impl Into<String>) -> AdapterInfoBuilder {
        // A field added to the contract gets its default here, in one line.
        let info = AdapterInfo {
            id: id.into(),
            display_name: display_name.into(),
            adapter_version: String::new(),
            default_base_url: String::new(),
            key_env: None,
            auth: AuthPlacement::None,
            stream_framing: StreamFraming::Sse,
            capabilities: Capabilities::empty(),
            models: Vec::new(),
            default_model: String::new(),
            privacy: PrivacyInfo::new(PrivacyPolicy::Configurable, "", "", ""),
            limits: RateLimits::default(),
            wire_format: WireFormat::OpenaiChat,
        };
        AdapterInfoBuilder { info, privacy_set: false }
    }
}

/// Builds an [`AdapterInfo`]. Required: the version, the base URL, at least
/// one model and the privacy posture. Defaults: no key (auth `none`), SSE
/// framing, `openai-chat` wire format, no capabilities, the first model as default, no published
/// limits. Any field without a setter of its own is set with
/// [`with`](Self::with).
#[derive(Debug, Clone)]
pub struct AdapterInfoBuilder {
    info: AdapterInfo,
    privacy_set: bool,
}

impl AdapterInfoBuilder {
    /// The adapter build's semver, usually `env!("CARGO_PKG_VERSION")`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.info.adapter_version = version.into();
        self
    }

    /// The base URL used when the operator sets none.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.info.default_base_url = url.into();
        self
    }

    /// Keys come from environment variable `key_env` and are sent as
    /// `Authorization: Bearer <key>`.
    pub fn bearer_key(self, key_env: impl Into<String>) -> Self {
        self.key(key_env, AuthPlacement::Bearer)
    }

    /// Keys come from environment variable `key_env` and go where `auth`
    /// says.
    pub fn key(mut self, key_env: impl Into<String>, auth: AuthPlacement) -> Self {
        self.info.key_env = Some(key_env.into());
        self.info.auth = auth;
        self
    }

    /// How streaming answers are framed (default: SSE).
    pub fn stream_framing(mut self, framing: StreamFraming) -> Self {
        self.info.stream_framing = framing;
        self
    }

    /// The upstream API family (default: `openai-chat`); conformance runs
    /// the OpenAI-shaped cases only for `openai-chat`.
    pub fn wire_format(mut self, format: WireFormat) -> Self {
        self.info.wire_format = format;
        self
    }

    /// What the provider supports.
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.info.capabilities = capabilities;
        self
    }

    /// Adds a model to the catalog.
    pub fn model(mut self, model: ModelInfo) -> Self {
        self.info.models.push(model);
        self
    }

    /// Adds models to the catalog.
    pub fn models(mut self, models: impl IntoIterator<Item = ModelInfo>) -> Self {
        self.info.models.extend(models);
        self
    }

    /// The model meta-models use (default: the first of the catalog).
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.info.default_model = model.into();
        self
    }

    /// The privacy posture.
    pub fn privacy(mut self, privacy: PrivacyInfo) -> Self {
        self.info.privacy = privacy;
        self.privacy_set = true;
        self
    }

    /// Free-tier limits per key.
    pub fn limits(mut self, limits: RateLimits) -> Self {
        self.info.limits = limits;
        self
    }

    /// Sets anything else on the description, e.g. a field a newer
    /// contract adds: `.with(|info| info.display_name.push_str(" (beta)"))`.
    pub fn with(mut self, set: impl FnOnce(&mut AdapterInfo)) -> Self {
        set(&mut self.info);
        self
    }

    /// The description, or what is missing or inconsistent (in words fit
    /// for `configure`'s error).
    pub fn build(self) -> Result<AdapterInfo, String> {
        let mut info = self.info;
        let missing = |what: &str| format!("adapter {:?}: {what}", info.id);
        if info.id.is_empty() {
            return Err("adapter description: the id is empty".to_owned());
        }
        if info.adapter_version.is_empty() {
            return Err(missing("no version (set it to env!(\"CARGO_PKG_VERSION\"))"));
        }
        if !(info.default_base_url.starts_with("https://") || info.default_base_url.starts_with("http://")) {
            return Err(missing(&format!("the base URL {:?} is not http(s)", info.default_base_url)));
        }
        let Some(first) = info.models.first() else {
            return Err(missing("the catalog has no model"));
        };
        if info.default_model.is_empty() {
            info.default_model = first.id.clone();
        } else if !info.models.iter().any(|m| m.id == info.default_model) {
            return Err(missing(&format!("the default model {:?} is not in the catalog", info.default_model)));
        }
        if !self.privacy_set {
            return Err(missing("no privacy posture"));
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelTags;

    fn privacy() -> PrivacyInfo {
        PrivacyInfo::new(PrivacyPolicy::Configurable, "https://example.com/privacy", "2026-04-09", "Opt out.")
    }

    fn builder() -> AdapterInfoBuilder {
        AdapterInfo::builder("ex", "Example")
            .version("1.2.3")
            .base_url("https://api.example.com")
            .model(ModelInfo::new("small", 8_192, ModelTags::FAST))
            .privacy(privacy())
    }

    #[test]
    fn defaults_fill_everything_optional() {
        let info = builder().build().unwrap();
        assert_eq!(
            (info.id.as_str(), info.display_name.as_str(), info.adapter_version.as_str()),
            ("ex", "Example", "1.2.3")
        );
        assert_eq!((info.key_env, info.auth), (None, AuthPlacement::None));
        assert_eq!((info.stream_framing, info.capabilities), (StreamFraming::Sse, Capabilities::empty()));
        assert_eq!(info.default_model, "small");
        assert_eq!(info.limits, RateLimits::default());
        assert_eq!(info.privacy, privacy());
    }

    #[test]
    fn setters_land_in_their_fields() {
        let info = builder()
            .bearer_key("EX_API_KEY")
            .stream_framing(StreamFraming::Ndjson)
            .capabilities(Capabilities::TOOLS)
            .models([ModelInfo::new("large", 0, ModelTags::SMART)])
            .default_model("large")
            .limits(RateLimits::default().rpm(20).rpd(1_000).tpm(5).tpd(6).shared_per_project())
            .build()
            .unwrap();
        assert_eq!((info.key_env.as_deref(), info.auth), (Some("EX_API_KEY"), AuthPlacement::Bearer));
        assert_eq!((info.stream_framing, info.capabilities), (StreamFraming::Ndjson, Capabilities::TOOLS));
        assert_eq!((info.models.len(), info.default_model.as_str()), (2, "large"));
        assert_eq!(
            info.limits,
            RateLimits {
                requests_per_minute: Some(20),
                requests_per_day: Some(1_000),
                tokens_per_minute: Some(5),
                tokens_per_day: Some(6),
                shared_per_project: true
            }
        );
        let info = builder().key("EX_KEY", AuthPlacement::Header("x-api-key".into())).build().unwrap();
        assert_eq!(info.auth, AuthPlacement::Header("x-api-key".into()));
        let info = builder().with(|info| info.display_name.push_str(" (beta)")).build().unwrap();
        assert_eq!(info.display_name, "Example (beta)");
    }

    #[test]
    fn build_names_what_the_host_would_refuse() {
        let err = |b: AdapterInfoBuilder| b.build().unwrap_err();
        assert!(err(builder().version("")).contains("no version"));
        assert!(err(builder().base_url("api.example.com")).contains("not http(s)"));
        assert!(err(builder().default_model("huge")).contains("\"huge\" is not in the catalog"));
        assert!(err(AdapterInfo::builder("ex", "Ex").version("1").base_url("http://x")).contains("no model"));
        let no_privacy = AdapterInfo::builder("ex", "Ex").version("1").base_url("http://x").model(ModelInfo::new(
            "m",
            0,
            ModelTags::empty(),
        ));
        assert!(err(no_privacy).contains("no privacy posture"));
        assert!(err(AdapterInfo::builder("", "Ex")).contains("the id is empty"));
    }
}
