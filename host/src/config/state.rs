//! `[state]`: where the state several gateway instances share lives.
//!
//! With no Redis URL the embedded store keeps everything (one instance, the
//! default). `redis_url` (`FREELLM_REDIS_URL`) makes the instances of a
//! fleet share their counts through one Redis; `prefix`
//! (`FREELLM_REDIS_PREFIX`) namespaces every key so several fleets can share
//! one server; `instance_id` (`FREELLM_INSTANCE_ID`) names this instance in
//! status and in the `X-FreeLLM-Instance` header; `timeout_ms` bounds every
//! Redis call; `on_redis_error` says what caps do while Redis is out of
//! reach. The environment wins over the file.
//!
//! `[cache] backend` (`CACHE_BACKEND`) is read here too: `redis` puts the
//! response cache in the fleet's Redis, so it depends on `redis_url`.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, env_get, parse_num};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "freellm:";
/// Default bound of one Redis call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// The longest `timeout_ms` accepted: a request must never wait on Redis
/// for long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);

/// The `[state]` section of `plugins.toml`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileState {
    redis_url: Option<String>,
    prefix: Option<String>,
    instance_id: Option<String>,
    timeout_ms: Option<u64>,
    on_redis_error: Option<String>,
}

/// Where shared state lives and how this instance treats it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// The Redis server the fleet shares (`None`: embedded store only).
    pub redis_url: Option<RedisUrl>,
    /// Prefix of every Redis key (`freellm:`).
    pub prefix: String,
    /// This instance's name; `None`: `<hostname>-<pid>`, decided at start.
    pub instance_id: Option<String>,
    /// Bound of one Redis call (50 ms).
    pub timeout: Duration,
    /// What caps do while Redis cannot be reached.
    pub on_redis_error: OnRedisError,
    /// Where the response cache lives (`[cache] backend`, `CACHE_BACKEND`).
    pub cache_backend: CacheBackend,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            instance_id: None,
            timeout: DEFAULT_TIMEOUT,
            on_redis_error: OnRedisError::Closed,
            cache_backend: CacheBackend::Local,
        }
    }
}

/// Where the response cache lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheBackend {
    /// In this instance's memory only (the default).
    #[default]
    Local,
    /// In the fleet's Redis, behind a local first level: an answer cached
    /// by one instance is served by every other.
    Redis,
}

impl CacheBackend {
    /// `local` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Redis => "redis",
        }
    }
}

/// `[cache] backend` (`file`) with `CACHE_BACKEND` overlaid; `redis` needs
/// the fleet's Redis (`[state] redis_url`).
pub(super) fn cache_backend(
    file: Option<&str>,
    env: &HashMap<String, String>,
    state: &StateConfig,
) -> Result<CacheBackend, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { name: "CACHE_BACKEND".into(), message };
    let backend = match env_get(env, "CACHE_BACKEND").or(file).map(|t| t.trim().to_ascii_lowercase()) {
        None => CacheBackend::Local,
        Some(text) => match text.as_str() {
            "local" => CacheBackend::Local,
            "redis" => CacheBackend::Redis,
            _ => return Err(invalid(format!("\"local\" or \"redis\", got {text:?}"))),
        },
    };
    if backend == CacheBackend::Redis && state.redis_url.is_none() {
        return Err(invalid("\"redis\" needs the fleet's Redis: set FREELLM_REDIS_URL or [state] redis_url".into()));
    }
    Ok(backend)
}

/// What a cap (virtual-key caps, provider key windows, identifier and
/// per-IP limits) does while the shared state is unavailable. Routing
/// health always fails open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Refuse with 503 `shared_state_unavailable` (the default: a cap is
    /// never overshot).
    Closed,
    /// Decide from this instance's own counts; they are merged into the
    /// shared ones when Redis is back.
    Open,
}

impl OnRedisError {
    /// `closed` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
        }
    }
}

/// A Redis URL. It may carry a password, so it is a secret: `Debug` and
/// [`RedisUrl::masked`] never show the password, and the gateway registers
/// it with the redactor.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the scheme and the shape (`redis://[[user]:password@]host[:port][/db]`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text.strip_prefix("redis://").ok_or_else(|| {
            "must start with redis:// (TLS, rediss://, is not built in: reach Redis over a private network \
             or a local TLS tunnel)"
                .to_owned()
        })?;
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        if host.is_empty() {
            return Err("names no host".to_owned());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace".to_owned());
        }
        Ok(Self(text.to_owned()))
    }

    /// The whole URL, password included: only for the Redis client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The password (or the whole user-info), if the URL carries one: a
    /// secret for the redactor.
    pub fn password(&self) -> Option<&str> {
        let rest = self.0.strip_prefix("redis://")?;
        let authority = rest.split('/').next()?;
        let (userinfo, _) = authority.rsplit_once('@')?;
        let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
        (!password.is_empty()).then_some(password)
    }

    /// The URL with its user-info replaced: `redis://***@host:6379/0`.
    pub fn masked(&self) -> String {
        let rest = self.0.strip_prefix("redis://").unwrap_or_default();
        match rest.split_once('/') {
            Some((authority, path)) => format!("redis://{}/{path}", mask_authority(authority)),
            None => format!("redis://{}", mask_authority(rest)),
        }
    }
}

fn mask_authority(authority: &str) -> String {
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Two URLs differing only in their password must still compare
        // different in `Config::startup_changes` (which compares `Debug`
        // text), without the password showing: a short digest of it.
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(self.0.as_bytes()));
        write!(f, "RedisUrl({} #{})", self.masked(), &digest[..8])
    }
}

/// `[state]` with the environment overlaid.
pub(super) fn state_config(file: FileState, env: &HashMap<String, String>) -> Result<StateConfig, ConfigError> {
    let invalid = |name: &str, message: String| ConfigError::Invalid { name: name.into(), message };
    let redis_url = match env_get(env, "FREELLM_REDIS_URL").map(str::to_owned).or(file.redis_url) {
        // The message never quotes the URL: it may hold a password.
        Some(text) => Some(RedisUrl::parse(text.trim()).map_err(|m| invalid("FREELLM_REDIS_URL", m))?),
        None => None,
    };
    let prefix = env_get(env, "FREELLM_REDIS_PREFIX")
        .map(str::to_owned)
        .or(file.prefix)
        .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid("FREELLM_REDIS_PREFIX", "1-64 printable characters without spaces".into()));
    }
    let instance_id = env_get(env, "FREELLM_INSTANCE_ID").map(str::to_owned).or(file.instance_id);
    if let Some(id) = &instance_id
        && !is_instance_id(id)
    {
        return Err(invalid("FREELLM_INSTANCE_ID", "must match ^[A-Za-z0-9_.:-]{1,64}$".into()));
    }
    let timeout_ms = match env_get(env, "FREELLM_REDIS_TIMEOUT_MS") {
        Some(v) => parse_num("FREELLM_REDIS_TIMEOUT_MS", v)?,
        None => file.timeout_ms.unwrap_or(DEFAULT_TIMEOUT.as_millis() as u64),
    };
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT.as_millis() as u64 {
        return Err(invalid("[state] timeout_ms", format!("between 1 and {}", MAX_TIMEOUT.as_millis())));
    }
    let on_redis_error = match env_get(env, "FREELLM_ON_REDIS_ERROR").map(str::to_owned).or(file.on_redis_error) {
        None => OnRedisError::Closed,
        Some(text) => match text.trim().to_ascii_lowercase().as_str() {
            "closed" => OnRedisError::Closed,
            "open" => OnRedisError::Open,
            _ => return Err(invalid("[state] on_redis_error", format!("\"open\" or \"closed\", got {text:?}"))),
        },
    };
    Ok(StateConfig {
        redis_url,
        prefix,
        instance_id,
        timeout: Duration::from_millis(timeout_ms),
        on_redis_error,
        cache_backend: CacheBackend::Local,
    })
}

/// `^[A-Za-z0-9_.:-]{1,64}$`: an instance id goes into a header and a key.
pub fn is_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn no_url_means_the_embedded_store() {
        let c = state_config(FileState::default(), &env(&[])).expect("valid");
        assert_eq!(c, StateConfig::default());
    }

    #[test]
    fn environment_wins_over_the_file() {
        let file = FileState {
            redis_url: Some("redis://file:6379".into()),
            prefix: Some("file:".into()),
            instance_id: Some("file-1".into()),
            timeout_ms: Some(20),
            on_redis_error: Some("open".into()),
        };
        let c = state_config(
            file,
            &env(&[
                ("FREELLM_REDIS_URL", "redis://env:6380/2"),
                ("FREELLM_REDIS_PREFIX", "team-a:"),
                ("FREELLM_INSTANCE_ID", "gw-2"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.redis_url.as_ref().map(RedisUrl::expose), Some("redis://env:6380/2"));
        assert_eq!((c.prefix.as_str(), c.instance_id.as_deref()), ("team-a:", Some("gw-2")));
        assert_eq!((c.timeout, c.on_redis_error), (Duration::from_millis(20), OnRedisError::Open));
    }

    #[test]
    fn a_bad_url_is_refused_without_quoting_it() {
        for bad in ["http://h:1", "redis://:hunter2secret@/0", "rediss://h", "redis://h :1"] {
            let e = state_config(FileState::default(), &env(&[("FREELLM_REDIS_URL", bad)])).expect_err(bad);
            let text = e.to_string();
            assert!(text.contains("FREELLM_REDIS_URL") && !text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn the_password_never_shows() {
        let url = RedisUrl::parse("redis://default:s3cret-pass@10.0.0.5:6379/1").expect("valid");
        assert_eq!(url.password(), Some("s3cret-pass"));
        assert_eq!(url.masked(), "redis://***@10.0.0.5:6379/1");
        let debug = format!("{url:?}");
        assert!(!debug.contains("s3cret") && debug.contains("10.0.0.5"), "{debug}");
        let other = RedisUrl::parse("redis://default:other-pass@10.0.0.5:6379/1").expect("valid");
        assert_ne!(format!("{other:?}"), debug, "a changed password is still a change");
        assert_eq!(RedisUrl::parse("redis://127.0.0.1:6379").expect("valid").password(), None);
    }

    #[test]
    fn a_redis_cache_needs_the_fleets_redis() {
        let local = StateConfig::default();
        assert_eq!(cache_backend(None, &env(&[]), &local).expect("default"), CacheBackend::Local);
        assert!(cache_backend(Some("redis"), &env(&[]), &local).is_err(), "no Redis to share");
        let fleet =
            state_config(FileState::default(), &env(&[("FREELLM_REDIS_URL", "redis://h:6379")])).expect("valid");
        assert_eq!(
            cache_backend(Some("local"), &env(&[("CACHE_BACKEND", "Redis")]), &fleet).expect("valid"),
            CacheBackend::Redis
        );
        assert!(cache_backend(Some("memcached"), &env(&[]), &fleet).is_err());
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let cases = [
            ("FREELLM_REDIS_PREFIX", "has space"),
            ("FREELLM_INSTANCE_ID", "a/b"),
            ("FREELLM_REDIS_TIMEOUT_MS", "0"),
            ("FREELLM_ON_REDIS_ERROR", "maybe"),
        ];
        for (name, value) in cases {
            let e = state_config(FileState::default(), &env(&[(name, value)])).expect_err(name);
            assert!(matches!(e, ConfigError::Invalid { .. }), "{name}: {e}");
        }
    }
}
