//! Configuration: `plugins.toml` plus the environment, validated once into
//! typed structs. Nothing else in the gateway reads environment variables.
//!
//! The environment wins over the file: `PORT`, `HOST`, `FREELLM_*`, the
//! per-attempt timeouts, `<ID>_BASE_URL` per provider and each provider's key
//! variable (`GROQ_API_KEY=k1,k2`, ...). A provider without keys is disabled,
//! not an error. Every setting but the secrets (master, admin and
//! browser-token keys, provider keys) has a file key; `docs/configuration.md`
//! lists them with their variables, defaults and whether a reload applies
//! them. A bad value is refused naming where it was set: the variable, or
//! the file key (`[cache] ttl_ms`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::http::hosts::AllowedHosts;
use crate::providers::keys_file::ProviderKeysFile;
use crate::routing::cache::{CacheConfig, CacheScope};
use crate::routing::decide::Retries;
use crate::routing::meta::{self, MetaOrder};
use crate::routing::strategy::Strategy;
use freellm_limits::breaker::BreakerConfig;
use freellm_limits::identifier::IdentifierLimit;
use freellm_runtime::SandboxLimits;

mod state;
pub use state::{CacheBackend, OnRedisError, RedisUrl, StateConfig, is_instance_id};

/// Largest component accepted by upload unless `FREELLM_MAX_UPLOAD_BYTES` says otherwise.
pub const MAX_UPLOAD_BYTES: usize = 32 << 20;

/// A configuration problem, reported at start-up (or on reload).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The file is not valid TOML or has unknown/mistyped keys.
    #[error("invalid {path}: {message}")]
    Parse { path: String, message: String },
    /// A value is out of range or malformed.
    #[error("invalid setting {name}: {message}")]
    Invalid { name: String, message: String },
}

/// The validated configuration of a gateway process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`HOST`, default 127.0.0.1).
    pub host: IpAddr,
    /// Port (`PORT`, default 3000).
    pub port: u16,
    /// Largest accepted request body (`FREELLM_MAX_BODY_BYTES`, 2 MiB).
    pub max_body_bytes: usize,
    /// Persistent state (`FREELLM_DATA_DIR`, default `./data`).
    pub data_dir: PathBuf,
    /// Compiled components (`FREELLM_CACHE_DIR`, default `<data>/components`).
    pub cache_dir: PathBuf,
    /// Log format (`FREELLM_LOG_FORMAT`: `text` or `json`).
    pub log_json: bool,
    /// Upstream timeouts.
    pub upstream: UpstreamConfig,
    /// Extra trusted root certificates for HTTPS upstreams, a PEM file
    /// (`UPSTREAM_CA_FILE`): for providers behind a private CA or a
    /// TLS-inspecting proxy. The bundled public roots are always trusted.
    pub upstream_ca_file: Option<PathBuf>,
    /// Providers in registry order (the order of the file).
    pub providers: Vec<ProviderConfig>,
    /// The strategy at start (`[routing] strategy`, `ROUTING_STRATEGY`:
    /// `quota_aware`, `round_robin`, `random`); switchable at runtime with
    /// `PATCH /v1/status/routing`.
    pub strategy: Strategy,
    /// Routing policy: retries, waits, breakers, canaries (applied live).
    pub routing: RoutingConfig,
    /// User-defined routes (`[routes.<name>]`), in file order; a route named
    /// like a built-in meta-model replaces it.
    pub routes: Vec<RouteConfig>,
    /// Provider priority of the meta-models (`[routing] order`,
    /// `[routing.order_by_meta]`); applied live, like the routes.
    pub meta_order: MetaOrder,
    /// Response cache (`[cache]`; `CACHE_ENABLED`, `CACHE_TTL_MS`,
    /// `CACHE_MAX_ENTRIES`, `CACHE_SCOPE`).
    pub cache: CacheConfig,
    /// Credentials (environment only).
    pub security: SecurityConfig,
    /// What the edge applies to each client: CORS origins, per-IP and
    /// per-identifier limits, trusting `X-Forwarded-For` (applied live).
    pub clients: ClientsConfig,
    /// `Host` headers the gateway answers (`[server] allowed_hosts`,
    /// `FREELLM_ALLOWED_HOSTS`): a page on another name that resolves to
    /// this gateway (DNS rebinding) is refused. Default: the loopback names
    /// and the bound address when bound to loopback, any host otherwise.
    pub allowed_hosts: AllowedHosts,
    /// Concurrent `/v1/events` feeds one principal may hold (one client IP
    /// in open mode) (`[server] max_event_feeds_per_principal`,
    /// `FREELLM_MAX_EVENT_FEEDS`, 8).
    pub max_event_feeds_per_principal: usize,
    /// The file this configuration was read from (watched for changes).
    pub path: Option<PathBuf>,
    /// Client-connection limits: body sizes, read timeouts, connection cap, drain.
    pub edge: EdgeConfig,
    /// The provider keys file (`[keys] file`, `FREELLM_PROVIDER_KEYS_FILE`)
    /// and what its last good read held: watched and re-read while the
    /// gateway runs ([`Config::provider_keys`]). Clones share it.
    pub keys_file: Arc<ProviderKeysFile>,
    /// Shared state of a fleet of instances (`[state]`, `FREELLM_REDIS_URL`).
    pub state: StateConfig,
    env: HashMap<String, String>,
}

/// What one client may hold of the gateway (`[server]`, env wins): every
/// body has a limit checked while it is read, every connection a deadline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeConfig {
    /// Largest body of a JSON control endpoint (token issue, routing switch,
    /// reload, canary): `FREELLM_MAX_CONTROL_BODY_BYTES`, 64 KiB.
    pub max_control_body_bytes: usize,
    /// Largest adapter upload (`FREELLM_MAX_UPLOAD_BYTES`, 32 MiB).
    pub max_upload_bytes: usize,
    /// A request head must be complete this long after the connection is
    /// ready for it (`FREELLM_HEADER_READ_TIMEOUT_MS`, 10 s).
    pub header_read_timeout: Duration,
    /// A request body must be complete this long after its head
    /// (`FREELLM_BODY_READ_TIMEOUT_MS`, 30 s); past it: 408.
    pub body_read_timeout: Duration,
    /// A connection with no request in progress is closed after this long
    /// (`FREELLM_IDLE_TIMEOUT_MS`, 5 s).
    pub idle_timeout: Duration,
    /// A connection whose client has not taken a byte of the answer for
    /// this long (a write to it waiting all that time) is closed, and a
    /// stream to it ends as for a departed client
    /// (`FREELLM_WRITE_STALL_TIMEOUT_MS`, 30 s).
    pub write_stall_timeout: Duration,
    /// Open client connections at most (`FREELLM_MAX_CONNECTIONS`, 4096);
    /// past it a connection gets one short 503 and is closed.
    pub max_connections: usize,
    /// Streams open at once (`FREELLM_MAX_STREAMS`, 10,000; at most
    /// 111,616, what the adapter instance pool can hold, 64 streams to an
    /// instance); past it a new stream is refused with 503
    /// `gateway_at_capacity`, and plain requests keep their own instances.
    pub max_streams: usize,
    /// After SIGTERM, in-flight requests get this long before open streams
    /// end with a `shutdown` error event and the process exits
    /// (`FREELLM_SHUTDOWN_GRACE_MS`, 30 s).
    pub shutdown_grace: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            max_control_body_bytes: 64 << 10,
            max_upload_bytes: MAX_UPLOAD_BYTES,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(5),
            write_stall_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_streams: freellm_runtime::DEFAULT_OPEN_STREAMS as usize,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Credentials (environment only: secrets never live in `plugins.toml`).
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// `FREELLM_API_KEY`: the master key.
    pub api_key: Option<String>,
    /// `FREELLM_ADMIN_KEY`: admin endpoints.
    pub admin_key: Option<String>,
    /// `FREELLM_VIRTUAL_KEYS_PATH`: the virtual keys file.
    pub virtual_keys_path: Option<PathBuf>,
    /// `FREELLM_TOKEN_SECRET`: enables browser tokens (≥ 32 bytes).
    pub token_secret: Option<String>,
}

/// Per-client settings of the edge (`[limits]`, `[cors]`; env wins). A
/// reload applies them: see [`crate::http::clients`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClientsConfig {
    /// Requests per sliding window per `X-FreeLLM-Identifier` (else per
    /// client IP) (`[limits] identifier_limit`, `FREELLM_IDENTIFIER_LIMIT`,
    /// `60/60000`); none = no per-identifier limit.
    pub identifier_limit: Option<IdentifierLimit>,
    /// Buckets each limiter holds at most (`[limits] identifier_max_buckets`,
    /// `FREELLM_IDENTIFIER_MAX_BUCKETS`, 10000).
    pub identifier_max_buckets: usize,
    /// Requests per minute per client IP (`[limits] per_ip_rpm`,
    /// `RATE_LIMIT_RPM`; none or 0 = no limit).
    pub per_ip_rpm: Option<u32>,
    /// Take the client IP from the last `X-Forwarded-For` hop
    /// (`[limits] trust_proxy`, `TRUST_PROXY`, false).
    pub trust_proxy: bool,
    /// CORS allowlist (`[cors] allowed_origins`, `ALLOWED_ORIGINS` as a comma
    /// list); `*` = any; unset = any only when no credential is configured.
    pub allowed_origins: Option<Vec<String>>,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            identifier_limit: None,
            identifier_max_buckets: 10_000,
            per_ip_rpm: None,
            trust_proxy: false,
            allowed_origins: None,
        }
    }
}

impl ClientsConfig {
    /// The settings that differ in `other`, by file key.
    pub fn changes(&self, other: &Self) -> Vec<&'static str> {
        let mut names = Vec::new();
        let mut note = |name, changed: bool| {
            if changed {
                names.push(name);
            }
        };
        note("[limits] identifier_limit", self.identifier_limit != other.identifier_limit);
        note("[limits] identifier_max_buckets", self.identifier_max_buckets != other.identifier_max_buckets);
        note("[limits] per_ip_rpm", self.per_ip_rpm != other.per_ip_rpm);
        note("[limits] trust_proxy", self.trust_proxy != other.trust_proxy);
        note("[cors] allowed_origins", self.allowed_origins != other.allowed_origins);
        names
    }
}

/// How requests are retried, waited for and judged (`[routing]`,
/// `[routing.retries]`, `[breaker]`; env wins). A reload applies every
/// field: a request uses the values of the live configuration it loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    /// Same-target retries per failure kind (`[routing.retries]`;
    /// `transient_retries`, `ROUTE_TRANSIENT_RETRIES`, 1, is the shorthand
    /// for the fast failures; timeouts 0).
    pub retries: Retries,
    /// Base of the jittered exponential backoff between retries on one
    /// target (`ROUTE_RETRY_BACKOFF_MS`, 200).
    pub retry_backoff: Duration,
    /// A `Retry-After` up to this long on a route's primary target is waited
    /// out and retried once (`ROUTE_MAX_RETRY_AFTER_WAIT_MS`, 3000; 0 = never).
    pub max_retry_after_wait: Duration,
    /// A stream whose first token takes longer fails over before anything
    /// was sent (`STREAM_FIRST_TOKEN_TIMEOUT_MS`, 15000).
    pub first_token_timeout: Duration,
    /// Circuit breaker thresholds and periods (`[breaker]`; `CB_FAILURE_THRESHOLD`,
    /// `CB_SUCCESS_THRESHOLD`, `CB_TIMEOUT_MS`, `CB_MAX_TIMEOUT_MS`).
    pub breaker: BreakerConfig,
    /// Calls a canary version must serve before its verdict (`CANARY_MIN_CALLS`, 20).
    pub canary_min_calls: u64,
    /// How much higher (0..1, as a failure-rate difference) a canary's
    /// failure rate may be than the current version's before it is rolled
    /// back (`CANARY_MARGIN`, 0.2).
    pub canary_margin: f64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            retries: Retries::default(),
            retry_backoff: Duration::from_millis(200),
            max_retry_after_wait: Duration::from_secs(3),
            first_token_timeout: Duration::from_secs(15),
            breaker: BreakerConfig::default(),
            canary_min_calls: 20,
            canary_margin: 0.2,
        }
    }
}

impl RoutingConfig {
    /// The settings that differ in `other`, by file key.
    pub fn changes(&self, other: &Self) -> Vec<&'static str> {
        let (a, b) = (&self.retries, &other.retries);
        let (x, y) = (&self.breaker, &other.breaker);
        [
            ("[routing.retries] server_error", a.server_error != b.server_error),
            ("[routing.retries] connection", a.connection != b.connection),
            ("[routing.retries] broken_answer", a.broken_answer != b.broken_answer),
            ("[routing.retries] timeout", a.timeout != b.timeout),
            ("[routing] retry_backoff_ms", self.retry_backoff != other.retry_backoff),
            ("[routing] max_retry_after_wait_ms", self.max_retry_after_wait != other.max_retry_after_wait),
            ("[routing] first_token_timeout_ms", self.first_token_timeout != other.first_token_timeout),
            ("[routing] canary_min_calls", self.canary_min_calls != other.canary_min_calls),
            ("[routing] canary_margin", self.canary_margin != other.canary_margin),
            ("[breaker] failure_threshold", x.failure_threshold != y.failure_threshold),
            ("[breaker] success_threshold", x.success_threshold != y.success_threshold),
            ("[breaker] open_timeout_ms", x.open_timeout != y.open_timeout),
            ("[breaker] max_open_timeout_ms", x.max_open_timeout != y.max_open_timeout),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// One `[routes.<name>]` table: a model name clients may send and the
/// ordered targets behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// The model name (e.g. `my-chat`, or `free` to redefine it).
    pub name: String,
    /// Targets in priority order: `<provider>` (its default model) or
    /// `<provider>/<model>`.
    pub targets: Vec<String>,
    /// Strategy for this route; the global one when absent.
    pub strategy: Option<Strategy>,
    /// Retries of the fast failures (server error, connection, broken
    /// answer) per target on this route; the global numbers when absent.
    pub retries: Option<u32>,
    /// Targets tried only when a target reports the prompt is too long for
    /// its context window (larger-context models).
    pub context_fallbacks: Vec<String>,
}

/// Upstream timeouts, per attempt unless noted: one per way an upstream
/// can stay silent (connect, first byte, first token in `[routing]`, a
/// stall inside a stream), plus the route's whole budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamConfig {
    /// TCP (and TLS) connect (`UPSTREAM_CONNECT_TIMEOUT_MS`, 5 s).
    pub connect_timeout: Duration,
    /// Request sent → response head received (`UPSTREAM_FIRST_BYTE_TIMEOUT_MS`, 30 s).
    pub first_byte_timeout: Duration,
    /// Longest silence inside a streaming body (`STREAM_STALL_TIMEOUT_MS`, 30 s).
    pub stream_stall_timeout: Duration,
    /// Heartbeat after this much idle time (`STREAM_IDLE_TIMEOUT_MS`, 15 s; 0 = none).
    pub stream_idle_timeout: Option<Duration>,
    /// Whole routing budget of one request (`ROUTE_TIMEOUT_MS`, 60 s).
    pub route_timeout: Duration,
    // Stream bounds: what one upstream stream may cost in memory and time.
    /// Largest single stream event, or unfinished line
    /// (`STREAM_MAX_EVENT_BYTES`, 1 MiB).
    pub stream_max_event_bytes: usize,
    /// Most bytes read from one upstream stream (`STREAM_MAX_BYTES`, 64 MiB).
    pub stream_max_bytes: u64,
    /// Longest a client stream may last (`STREAM_MAX_DURATION_MS`, 30 min).
    pub stream_max_duration: Duration,
    /// Most answer text kept to resume a cut stream elsewhere
    /// (`STREAM_CONTINUATION_MAX_BYTES`, 256 KiB; 0 = never resume).
    pub stream_continuation_max_bytes: usize,
}

/// One `[providers.<id>]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    /// Provider id, the model prefix.
    pub id: String,
    /// Path of the `.wasm` component (relative paths are from the config file).
    pub component: PathBuf,
    /// `enabled = false` turns a provider off even with keys.
    pub enabled: bool,
    /// Base URL override (file `base_url`, env `<ID>_BASE_URL` wins).
    pub base_url: Option<String>,
    /// Key variable override (default: what the adapter declares).
    pub key_env: Option<String>,
    /// Non-secret settings passed to the adapter's `configure`.
    pub settings: Vec<(String, String)>,
    /// Sandbox limits.
    pub sandbox: SandboxLimits,
    /// Per-key limits overriding what the adapter declares (`[providers.<id>.limits]`).
    pub limits: Option<LimitsOverride>,
    /// Percent of this provider's traffic a new adapter version gets before
    /// it is promoted or rolled back (`canary = 10`); none = swap at once.
    pub canary: Option<u8>,
}

/// Operator overrides of a provider's per-key limits; `Some(0)` means
/// unlimited, `None` keeps the adapter's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsOverride {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Requests per day.
    pub rpd: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u32>,
    /// Tokens per day.
    pub tpd: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    upstream: FileUpstream,
    #[serde(default)]
    providers: toml::Table,
    #[serde(default)]
    routing: FileRouting,
    #[serde(default)]
    routes: toml::Table,
    #[serde(default)]
    cache: FileCache,
    #[serde(default)]
    keys: FileKeys,
    #[serde(default)]
    breaker: FileBreaker,
    #[serde(default)]
    limits: FileClientLimits,
    #[serde(default)]
    cors: FileCors,
    #[serde(default)]
    state: state::FileState,
}

/// `[breaker]`: the circuit breaker of every provider's models.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileBreaker {
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
    open_timeout_ms: Option<u64>,
    max_open_timeout_ms: Option<u64>,
}

/// `[limits]`: per-client request limits.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileClientLimits {
    identifier_limit: Option<FileIdentifierLimit>,
    identifier_max_buckets: Option<usize>,
    per_ip_rpm: Option<u32>,
    trust_proxy: Option<bool>,
}

/// `identifier_limit = "60/60000"` or `{ max = 60, window_ms = 60000 }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileIdentifierLimit {
    Text(String),
    Table { max: u32, window_ms: u64 },
}

/// `[cors]`: browser origins allowed to call.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileCors {
    allowed_origins: Option<Vec<String>>,
}

/// `[routing.retries]`: same-target retries per failure kind.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileRetries {
    server_error: Option<u32>,
    connection: Option<u32>,
    broken_answer: Option<u32>,
    timeout: Option<u32>,
}

/// `[keys]`: where provider keys come from besides the environment.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    /// The provider keys file (relative to `plugins.toml`).
    file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileCache {
    enabled: Option<bool>,
    ttl_ms: Option<u64>,
    max_entries: Option<u64>,
    scope: Option<String>,
    /// `local` or `redis` (parsed with `[state]`, in `config/state.rs`).
    backend: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileRouting {
    strategy: Option<String>,
    transient_retries: Option<u32>,
    retry_backoff_ms: Option<u64>,
    max_retry_after_wait_ms: Option<u64>,
    first_token_timeout_ms: Option<u64>,
    canary_min_calls: Option<u64>,
    canary_margin: Option<f64>,
    #[serde(default)]
    retries: FileRetries,
    #[serde(default)]
    order: Vec<String>,
    #[serde(default)]
    order_by_meta: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    targets: Vec<String>,
    strategy: Option<String>,
    retries: Option<u32>,
    #[serde(default)]
    context_fallbacks: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileServer {
    host: Option<String>,
    port: Option<u16>,
    max_body_bytes: Option<usize>,
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    allowed_hosts: Option<Vec<String>>,
    max_event_feeds_per_principal: Option<usize>,
    max_control_body_bytes: Option<usize>,
    max_upload_bytes: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    write_stall_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_streams: Option<usize>,
    shutdown_grace_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    connect_timeout_ms: Option<u64>,
    first_byte_timeout_ms: Option<u64>,
    ca_file: Option<PathBuf>,
    stream_stall_timeout_ms: Option<u64>,
    stream_idle_timeout_ms: Option<u64>,
    route_timeout_ms: Option<u64>,
    stream_max_event_bytes: Option<usize>,
    stream_max_bytes: Option<u64>,
    stream_max_duration_ms: Option<u64>,
    stream_continuation_max_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    component: PathBuf,
    #[serde(default = "yes")]
    enabled: bool,
    base_url: Option<String>,
    key_env: Option<String>,
    #[serde(default)]
    settings: BTreeMap<String, toml::Value>,
    /// Setting name → environment variable that overrides it.
    #[serde(default)]
    settings_env: BTreeMap<String, String>,
    #[serde(default)]
    sandbox: FileSandbox,
    #[serde(default)]
    limits: Option<FileLimits>,
    canary: Option<u8>,
}

/// Per-key limits overriding the adapter's declared free tier (paid keys,
/// self-hosted endpoints). 0 means unlimited.
#[derive(Deserialize, Default, Debug, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    rpm: Option<u32>,
    rpd: Option<u32>,
    tpm: Option<u32>,
    tpd: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSandbox {
    memory_mb: Option<usize>,
    cpu_ms: Option<u64>,
    reuse_instances: Option<bool>,
}

fn yes() -> bool {
    true
}

impl Config {
    /// Loads `path` and overlays the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars().collect())
    }

    /// Loads `path` and overlays the given environment (tests pass their own).
    pub fn load_with_env(path: &Path, env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let file: FileConfig = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut config = Self::build(file, &base_dir, env)?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses a `plugins.toml` text (relative paths against `base_dir`) and
    /// overlays the given environment. No file is watched or re-read: a
    /// configuration built this way has no path (the in-process tests).
    pub fn from_toml_str(text: &str, base_dir: &Path, env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: "<string>".into(), message: e.to_string() })?;
        Self::build(file, base_dir, env)
    }

    /// Re-reads the providers and routes of `plugins.toml` (for a hot
    /// reload), with the environment this process started with. Only
    /// `[providers.*]` and `[routes.*]` take effect at runtime; other
    /// sections need a restart.
    pub fn reload_live_sections(&self) -> Result<(Vec<ProviderConfig>, Vec<RouteConfig>), ConfigError> {
        let Some(path) = &self.path else { return Ok((self.providers.clone(), self.routes.clone())) };
        let fresh = Self::load_with_env(path, self.env.clone())?;
        Ok((fresh.providers, fresh.routes))
    }

    /// The configuration as its file says now (same environment), for a
    /// reload; without a file, this one.
    pub fn reread(&self) -> Result<Self, ConfigError> {
        match &self.path {
            Some(path) => Self::load_with_env(path, self.env.clone()),
            None => Ok(self.clone()),
        }
    }

    /// The start-up settings that differ in `fresh`, each by its file key:
    /// a reload applies only the live sections (providers, routes, the
    /// meta-model order, [`RoutingConfig`], [`ClientsConfig`], `[cache]
    /// enabled`), so each of these is named in a warning ("restart
    /// needed") instead of being silently ignored.
    pub fn startup_changes(&self, fresh: &Self) -> Vec<&'static str> {
        let (u, v) = (&self.upstream, &fresh.upstream);
        let (e, f) = (&self.edge, &fresh.edge);
        let (c, d) = (&self.cache, &fresh.cache);
        let sections = [
            ("[server] host", self.host != fresh.host),
            ("[server] port", self.port != fresh.port),
            ("[server] max_body_bytes", self.max_body_bytes != fresh.max_body_bytes),
            ("[server] data_dir", self.data_dir != fresh.data_dir),
            ("[server] cache_dir", self.cache_dir != fresh.cache_dir),
            ("[server] allowed_hosts", self.allowed_hosts != fresh.allowed_hosts),
            (
                "[server] max_event_feeds_per_principal",
                self.max_event_feeds_per_principal != fresh.max_event_feeds_per_principal,
            ),
            ("[server] max_control_body_bytes", e.max_control_body_bytes != f.max_control_body_bytes),
            ("[server] max_upload_bytes", e.max_upload_bytes != f.max_upload_bytes),
            ("[server] header_read_timeout_ms", e.header_read_timeout != f.header_read_timeout),
            ("[server] body_read_timeout_ms", e.body_read_timeout != f.body_read_timeout),
            ("[server] idle_timeout_ms", e.idle_timeout != f.idle_timeout),
            ("[server] write_stall_timeout_ms", e.write_stall_timeout != f.write_stall_timeout),
            ("[server] max_connections", e.max_connections != f.max_connections),
            ("[server] max_streams", e.max_streams != f.max_streams),
            ("[server] shutdown_grace_ms", e.shutdown_grace != f.shutdown_grace),
            ("[upstream] connect_timeout_ms", u.connect_timeout != v.connect_timeout),
            ("[upstream] first_byte_timeout_ms", u.first_byte_timeout != v.first_byte_timeout),
            ("[upstream] stream_stall_timeout_ms", u.stream_stall_timeout != v.stream_stall_timeout),
            ("[upstream] stream_idle_timeout_ms", u.stream_idle_timeout != v.stream_idle_timeout),
            ("[upstream] route_timeout_ms", u.route_timeout != v.route_timeout),
            ("[upstream] stream_max_event_bytes", u.stream_max_event_bytes != v.stream_max_event_bytes),
            ("[upstream] stream_max_bytes", u.stream_max_bytes != v.stream_max_bytes),
            ("[upstream] stream_max_duration_ms", u.stream_max_duration != v.stream_max_duration),
            (
                "[upstream] stream_continuation_max_bytes",
                u.stream_continuation_max_bytes != v.stream_continuation_max_bytes,
            ),
            ("[upstream] ca_file", self.upstream_ca_file != fresh.upstream_ca_file),
            ("[routing] strategy", self.strategy != fresh.strategy),
            ("[cache] ttl_ms", c.ttl != d.ttl),
            ("[cache] max_entries", c.max_entries != d.max_entries),
            ("[cache] scope", c.scope != d.scope),
            ("[keys] file", self.keys_file.path() != fresh.keys_file.path()),
            // Compared through `Debug` (the URL's shows no password).
            ("[state]", format!("{:?}", self.state) != format!("{:?}", fresh.state)),
        ];
        sections.into_iter().filter(|(_, changed)| *changed).map(|(name, _)| name).collect()
    }

    fn build(file: FileConfig, base_dir: &Path, env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| env_get(&env, name);
        let edge = edge_config(&file.server, &env)?;
        let mut state = state::state_config(file.state, &env)?;
        state.cache_backend = state::cache_backend(file.cache.backend.as_deref(), &env, &state)?;
        let host_text = get("HOST").map(str::to_owned).or(file.server.host).unwrap_or_else(|| "127.0.0.1".into());
        let host = host_text.parse().map_err(|_| ConfigError::Invalid {
            name: "HOST".into(),
            message: format!("not an IP address: {host_text}"),
        })?;
        let port = setting_or(&env, "PORT", "[server] port", file.server.port, 3000)?;
        let max_body_bytes = positive_setting(
            &env,
            "FREELLM_MAX_BODY_BYTES",
            "[server] max_body_bytes",
            file.server.max_body_bytes,
            2 << 20,
        )?;
        let data_dir =
            get("FREELLM_DATA_DIR").map(PathBuf::from).or(file.server.data_dir).unwrap_or_else(|| "data".into());
        let data_dir = resolve(base_dir, &data_dir);
        let cache_dir = get("FREELLM_CACHE_DIR")
            .map(PathBuf::from)
            .or(file.server.cache_dir)
            .map(|p| resolve(base_dir, &p))
            .unwrap_or_else(|| data_dir.join("components"));
        let log_json = matches!(get("FREELLM_LOG_FORMAT"), Some(f) if f.eq_ignore_ascii_case("json"));
        let allowed_hosts_list = match get("FREELLM_ALLOWED_HOSTS") {
            Some(v) => Some(v.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect()),
            None => file.server.allowed_hosts.clone(),
        };
        let allowed_hosts = AllowedHosts::new(allowed_hosts_list.as_deref(), host)
            .map_err(|message| ConfigError::Invalid { name: "FREELLM_ALLOWED_HOSTS".into(), message })?;
        let max_event_feeds_per_principal = positive_setting(
            &env,
            "FREELLM_MAX_EVENT_FEEDS",
            "[server] max_event_feeds_per_principal",
            file.server.max_event_feeds_per_principal,
            8,
        )?;

        let u = &file.upstream;
        let upstream = UpstreamConfig {
            connect_timeout: positive_ms(
                &env,
                "UPSTREAM_CONNECT_TIMEOUT_MS",
                "[upstream] connect_timeout_ms",
                u.connect_timeout_ms,
                Duration::from_millis(5_000),
            )?,
            first_byte_timeout: positive_ms(
                &env,
                "UPSTREAM_FIRST_BYTE_TIMEOUT_MS",
                "[upstream] first_byte_timeout_ms",
                u.first_byte_timeout_ms,
                Duration::from_secs(30),
            )?,
            stream_stall_timeout: positive_ms(
                &env,
                "STREAM_STALL_TIMEOUT_MS",
                "[upstream] stream_stall_timeout_ms",
                u.stream_stall_timeout_ms,
                Duration::from_secs(30),
            )?,
            // Zero turns the idle heartbeat off.
            stream_idle_timeout: match setting_or(
                &env,
                "STREAM_IDLE_TIMEOUT_MS",
                "[upstream] stream_idle_timeout_ms",
                u.stream_idle_timeout_ms,
                15_000,
            )? {
                0 => None,
                v => Some(Duration::from_millis(v)),
            },
            route_timeout: positive_ms(
                &env,
                "ROUTE_TIMEOUT_MS",
                "[upstream] route_timeout_ms",
                u.route_timeout_ms,
                Duration::from_secs(60),
            )?,
            // A zero bound would refuse every stream.
            stream_max_event_bytes: positive_setting(
                &env,
                "STREAM_MAX_EVENT_BYTES",
                "[upstream] stream_max_event_bytes",
                u.stream_max_event_bytes,
                freellm_runtime::framing::DEFAULT_MAX_EVENT_BYTES,
            )?,
            stream_max_bytes: positive_setting(
                &env,
                "STREAM_MAX_BYTES",
                "[upstream] stream_max_bytes",
                u.stream_max_bytes,
                64 << 20,
            )?,
            stream_max_duration: positive_ms(
                &env,
                "STREAM_MAX_DURATION_MS",
                "[upstream] stream_max_duration_ms",
                u.stream_max_duration_ms,
                Duration::from_secs(30 * 60),
            )?,
            // Zero: no continuation is offered.
            stream_continuation_max_bytes: setting_or(
                &env,
                "STREAM_CONTINUATION_MAX_BYTES",
                "[upstream] stream_continuation_max_bytes",
                u.stream_continuation_max_bytes,
                256 << 10,
            )?,
        };

        let mut providers = Vec::with_capacity(file.providers.len());
        for (id, value) in file.providers {
            providers.push(provider_config(&id, value, base_dir, &env)?);
        }

        let r = &file.routing;
        let strategy_text = get("ROUTING_STRATEGY").map(str::to_owned).or(r.strategy.clone());
        let strategy = match strategy_text {
            Some(text) => text
                .parse::<Strategy>()
                .map_err(|message| ConfigError::Invalid { name: "ROUTING_STRATEGY".into(), message })?,
            None => Strategy::QuotaAware,
        };
        let routing = routing_config(r, &file.breaker, &env)?;

        let mut routes = Vec::with_capacity(file.routes.len());
        for (name, value) in file.routes {
            routes.push(route_config(&name, value)?);
        }
        let meta_order = meta_order(&file.routing)?;

        let cache = cache_config(&file.cache, &env)?;
        let security = SecurityConfig {
            api_key: get("FREELLM_API_KEY").map(str::to_owned),
            admin_key: get("FREELLM_ADMIN_KEY").map(str::to_owned),
            virtual_keys_path: get("FREELLM_VIRTUAL_KEYS_PATH").map(|p| resolve(base_dir, Path::new(p))),
            token_secret: env.get("FREELLM_TOKEN_SECRET").filter(|v| !v.is_empty()).cloned(),
        };
        let clients = clients_config(&file.limits, &file.cors, &env)?;

        Ok(Self {
            host,
            port,
            max_body_bytes,
            data_dir,
            cache_dir,
            log_json,
            upstream,
            upstream_ca_file: get("UPSTREAM_CA_FILE")
                .map(PathBuf::from)
                .or_else(|| u.ca_file.clone())
                .map(|p| resolve(base_dir, &p)),
            providers,
            strategy,
            routing,
            routes,
            meta_order,
            cache,
            security,
            clients,
            allowed_hosts,
            max_event_feeds_per_principal,
            path: None,
            edge,
            keys_file: Arc::new(ProviderKeysFile::new(
                get("FREELLM_PROVIDER_KEYS_FILE").map(PathBuf::from).or(file.keys.file).map(|p| resolve(base_dir, &p)),
            )),
            state,
            env,
        })
    }

    /// Keys for a provider from its key variable: comma-separated, trimmed,
    /// empty entries dropped.
    pub fn keys_from(&self, key_env: &str) -> Vec<String> {
        self.env
            .get(key_env)
            .map(|v| v.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The keys of provider `id` whose key variable is `key_env`: the
    /// environment's when the variable is set there, else the keys file's
    /// entry for the variable, else its entry for the provider id.
    pub fn provider_keys(&self, id: &str, key_env: &str) -> Vec<String> {
        let from_env = self.keys_from(key_env);
        if !from_env.is_empty() {
            return from_env;
        }
        let file = self.keys_file.current();
        file.get(key_env).or_else(|| file.get(id)).map(<[String]>::to_vec).unwrap_or_default()
    }
}

fn provider_config(
    id: &str,
    value: toml::Value,
    base_dir: &Path,
    env: &HashMap<String, String>,
) -> Result<ProviderConfig, ConfigError> {
    let get = |name: &str| env_get(env, name);
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return Err(ConfigError::Invalid {
            name: format!("providers.{id}"),
            message: "a provider id uses only a-z, 0-9, '-' and '_'".into(),
        });
    }
    let p: FileProvider = value.try_into().map_err(|e: toml::de::Error| ConfigError::Invalid {
        name: format!("providers.{id}"),
        message: e.message().to_owned(),
    })?;
    let env_prefix = id.to_ascii_uppercase().replace('-', "_");
    let base_url = get(&format!("{env_prefix}_BASE_URL")).map(str::to_owned).or(p.base_url);
    if let Some(url) = &base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ConfigError::Invalid {
            name: format!("{env_prefix}_BASE_URL"),
            message: format!("must be an http(s) URL, got {url}"),
        });
    }
    let mut settings: BTreeMap<String, String> = p
        .settings
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|i| match i {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            (k, text)
        })
        .collect();
    for (setting, var) in p.settings_env {
        if let Some(v) = get(&var) {
            settings.insert(setting, v.to_owned());
        }
    }
    let defaults = SandboxLimits::default();
    let sandbox = SandboxLimits {
        memory_bytes: p.sandbox.memory_mb.map(|mb| mb << 20).unwrap_or(defaults.memory_bytes),
        cpu_time: p.sandbox.cpu_ms.map(Duration::from_millis).unwrap_or(defaults.cpu_time),
        reuse_instances: p.sandbox.reuse_instances.unwrap_or(defaults.reuse_instances),
    };
    if sandbox.memory_bytes == 0 || sandbox.memory_bytes > freellm_runtime::MAX_MEMORY_BYTES {
        return Err(ConfigError::Invalid {
            name: format!("providers.{id}.sandbox.memory_mb"),
            message: format!("must be between 1 and {}", freellm_runtime::MAX_MEMORY_BYTES >> 20),
        });
    }
    Ok(ProviderConfig {
        id: id.to_owned(),
        component: resolve(base_dir, &p.component),
        enabled: p.enabled,
        base_url: base_url.map(|u| u.trim_end_matches('/').to_owned()),
        key_env: p.key_env,
        settings: settings.into_iter().collect(),
        sandbox,
        limits: p.limits.map(|l| LimitsOverride { rpm: l.rpm, rpd: l.rpd, tpm: l.tpm, tpd: l.tpd }),
        canary: match p.canary {
            None | Some(0) => None,
            Some(pct) if pct < 100 => Some(pct),
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: format!("providers.{id}.canary"),
                    message: "a percentage between 1 and 99".into(),
                });
            }
        },
    })
}

fn route_config(name: &str, value: toml::Value) -> Result<RouteConfig, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { name: format!("routes.{name}"), message };
    if name.is_empty() || name.contains('/') || name.len() > 128 {
        return Err(invalid("a route name is 1-128 characters without '/'".into()));
    }
    let r: FileRoute = value.try_into().map_err(|e: toml::de::Error| invalid(e.message().to_owned()))?;
    if r.targets.is_empty() {
        return Err(invalid("needs at least one target".into()));
    }
    for t in r.targets.iter().chain(&r.context_fallbacks) {
        if t.trim().is_empty() || t.starts_with('/') || t.ends_with('/') {
            return Err(invalid(format!("target {t:?} is not `<provider>` or `<provider>/<model>`")));
        }
    }
    // A glob name (`team-*`) and placeholders in targets (`lab/{model}`,
    // `lab/{1}`) are checked here, so a bad one is refused at load.
    let all: Vec<String> = r.targets.iter().chain(&r.context_fallbacks).cloned().collect();
    crate::routing::pattern::validate_route(name, &all).map_err(invalid)?;
    let strategy = r.strategy.map(|s| s.parse::<Strategy>()).transpose().map_err(invalid)?;
    if r.retries.is_some_and(|n| n > 5) {
        return Err(invalid("retries: at most 5".into()));
    }
    Ok(RouteConfig {
        name: name.to_owned(),
        targets: r.targets,
        strategy,
        retries: r.retries,
        context_fallbacks: r.context_fallbacks,
    })
}

/// `[routing] order` and `[routing.order_by_meta]`: provider ids, and
/// built-in meta-model names.
fn meta_order(r: &FileRouting) -> Result<MetaOrder, ConfigError> {
    let check = |name: String, list: &[String]| -> Result<Vec<String>, ConfigError> {
        match list.iter().find(|id| !is_provider_id(id)) {
            Some(id) => Err(ConfigError::Invalid { name, message: format!("{id:?} is not a provider id") }),
            None => Ok(list.to_vec()),
        }
    };
    let mut by_meta = Vec::with_capacity(r.order_by_meta.len());
    for (name, list) in &r.order_by_meta {
        if !meta::is_meta_model(name) {
            return Err(ConfigError::Invalid {
                name: format!("routing.order_by_meta.{name}"),
                message: "not a built-in meta-model (free, free-fast, free-smart)".into(),
            });
        }
        by_meta.push((name.clone(), check(format!("routing.order_by_meta.{name}"), list)?));
    }
    Ok(MetaOrder { order: check("routing.order".into(), &r.order)?, by_meta })
}

fn is_provider_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A set, non-blank environment value, trimmed.
fn env_get<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// The `[server]` connection limits; every one must be positive (a zero
/// limit or timeout would refuse or cut everything).
fn edge_config(file: &FileServer, env: &HashMap<String, String>) -> Result<EdgeConfig, ConfigError> {
    let d = EdgeConfig::default();
    let max_streams = match setting(env, "FREELLM_MAX_STREAMS", "[server] max_streams", file.max_streams)? {
        Some(n) => n.check(
            |v| (1..=freellm_runtime::MAX_OPEN_STREAMS as usize).contains(v),
            &format!(
                "must be > 0 and at most {} (what the adapter instance pool holds)",
                freellm_runtime::MAX_OPEN_STREAMS
            ),
        )?,
        None => d.max_streams,
    };
    Ok(EdgeConfig {
        max_control_body_bytes: positive_setting(
            env,
            "FREELLM_MAX_CONTROL_BODY_BYTES",
            "[server] max_control_body_bytes",
            file.max_control_body_bytes,
            d.max_control_body_bytes,
        )?,
        max_upload_bytes: positive_setting(
            env,
            "FREELLM_MAX_UPLOAD_BYTES",
            "[server] max_upload_bytes",
            file.max_upload_bytes,
            d.max_upload_bytes,
        )?,
        header_read_timeout: positive_ms(
            env,
            "FREELLM_HEADER_READ_TIMEOUT_MS",
            "[server] header_read_timeout_ms",
            file.header_read_timeout_ms,
            d.header_read_timeout,
        )?,
        body_read_timeout: positive_ms(
            env,
            "FREELLM_BODY_READ_TIMEOUT_MS",
            "[server] body_read_timeout_ms",
            file.body_read_timeout_ms,
            d.body_read_timeout,
        )?,
        idle_timeout: positive_ms(
            env,
            "FREELLM_IDLE_TIMEOUT_MS",
            "[server] idle_timeout_ms",
            file.idle_timeout_ms,
            d.idle_timeout,
        )?,
        write_stall_timeout: positive_ms(
            env,
            "FREELLM_WRITE_STALL_TIMEOUT_MS",
            "[server] write_stall_timeout_ms",
            file.write_stall_timeout_ms,
            d.write_stall_timeout,
        )?,
        max_connections: positive_setting(
            env,
            "FREELLM_MAX_CONNECTIONS",
            "[server] max_connections",
            file.max_connections,
            d.max_connections,
        )?,
        max_streams,
        shutdown_grace: positive_ms(
            env,
            "FREELLM_SHUTDOWN_GRACE_MS",
            "[server] shutdown_grace_ms",
            file.shutdown_grace_ms,
            d.shutdown_grace,
        )?,
    })
}

/// A value and the name it was set under: the environment variable, or
/// the file key (`[cache] ttl_ms`), so an error names what to fix.
struct Named<T> {
    value: T,
    name: String,
}

impl<T> Named<T> {
    /// The value, or an error naming it when `ok` refuses it.
    fn check(self, ok: impl FnOnce(&T) -> bool, message: &str) -> Result<T, ConfigError> {
        if ok(&self.value) {
            Ok(self.value)
        } else {
            Err(ConfigError::Invalid { name: self.name, message: message.into() })
        }
    }
}

/// The environment's `var` when set (parsed as `T`), else the file's `key`.
fn setting<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    var: &str,
    key: &str,
    file: Option<T>,
) -> Result<Option<Named<T>>, ConfigError> {
    if let Some(text) = env_get(env, var) {
        return Ok(Some(Named { value: parse_num(var, text)?, name: var.into() }));
    }
    Ok(from_file(key, file))
}

/// [`setting`], else `default`.
fn setting_or<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    var: &str,
    key: &str,
    file: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    Ok(setting(env, var, key, file)?.map_or(default, |n| n.value))
}

/// [`setting_or`] for a value that must not be zero; a zero is refused under
/// the name it was set by (the variable, or the file's key).
fn positive_setting<T: std::str::FromStr + PartialEq + From<u8>>(
    env: &HashMap<String, String>,
    var: &str,
    key: &str,
    file: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match setting(env, var, key, file)? {
        Some(n) => n.check(|v| *v != T::from(0), "must be > 0"),
        None => Ok(default),
    }
}

/// [`positive_setting`] for a duration set in milliseconds.
fn positive_ms(
    env: &HashMap<String, String>,
    var: &str,
    key: &str,
    file: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    positive_setting(env, var, key, file, default.as_millis() as u64).map(Duration::from_millis)
}

/// A file value under its key (for settings whose variables are read elsewhere).
fn from_file<T>(key: &str, file: Option<T>) -> Option<Named<T>> {
    file.map(|value| Named { value, name: key.into() })
}

/// [`setting`] for a flag: the variable takes `1/true/yes/on` or `0/false/no/off`.
fn flag_setting(
    env: &HashMap<String, String>,
    var: &str,
    key: &str,
    file: Option<bool>,
) -> Result<Option<bool>, ConfigError> {
    match env_get(env, var).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(file),
        Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
        Some("0" | "false" | "no" | "off") => Ok(Some(false)),
        Some(other) => Err(ConfigError::Invalid {
            name: var.into(),
            message: format!("expected true or false, got {other} (for {key})"),
        }),
    }
}

/// `[routing]`, `[routing.retries]` and `[breaker]`, env wins.
fn routing_config(
    r: &FileRouting,
    b: &FileBreaker,
    env: &HashMap<String, String>,
) -> Result<RoutingConfig, ConfigError> {
    let d = RoutingConfig::default();
    let at_most = |n: &u32| *n <= Retries::MAX;
    const AT_MOST: &str = "at most 5 (attempts on one target are bounded)";
    let transient = setting(env, "ROUTE_TRANSIENT_RETRIES", "[routing] transient_retries", r.transient_retries)?
        .map(|n| n.check(at_most, AT_MOST))
        .transpose()?;
    // Per kind: its own variable, else the shorthand's variable (the
    // environment wins over the file), else its file key, else the
    // shorthand's file key, else the default.
    let env_transient = env_get(env, "ROUTE_TRANSIENT_RETRIES").and(transient);
    let kind = |var: &str, key: &str, file: Option<u32>, shorthand: Option<u32>, default: u32| {
        let value = match setting(env, var, key, file.filter(|_| shorthand.is_none() || env_transient.is_none()))? {
            Some(n) => n.check(at_most, AT_MOST)?,
            None => shorthand.unwrap_or(default),
        };
        Ok::<u32, ConfigError>(value)
    };
    let f = &r.retries;
    let retries = Retries {
        server_error: kind(
            "ROUTE_RETRIES_SERVER_ERROR",
            "[routing.retries] server_error",
            f.server_error,
            transient,
            d.retries.server_error,
        )?,
        connection: kind(
            "ROUTE_RETRIES_CONNECTION",
            "[routing.retries] connection",
            f.connection,
            transient,
            d.retries.connection,
        )?,
        broken_answer: kind(
            "ROUTE_RETRIES_BROKEN_ANSWER",
            "[routing.retries] broken_answer",
            f.broken_answer,
            transient,
            d.retries.broken_answer,
        )?,
        // `transient_retries` never covered timeouts: they fail over at once.
        timeout: kind("ROUTE_RETRIES_TIMEOUT", "[routing.retries] timeout", f.timeout, None, d.retries.timeout)?,
    };
    let ms = |value: Option<Named<u64>>, default: Duration, positive: bool| match value {
        Some(n) => Ok(Duration::from_millis(n.check(|v| !positive || *v > 0, "must be > 0")?)),
        None => Ok::<Duration, ConfigError>(default),
    };
    let count = |value: Option<Named<u32>>, default: u32| match value {
        Some(n) => n.check(|v| *v > 0, "must be > 0"),
        None => Ok(default),
    };
    // The file's values first, then the `CB_*` variables laid over them.
    let breaker_file = BreakerConfig {
        failure_threshold: count(
            from_file("[breaker] failure_threshold", b.failure_threshold),
            d.breaker.failure_threshold,
        )?,
        success_threshold: count(
            from_file("[breaker] success_threshold", b.success_threshold),
            d.breaker.success_threshold,
        )?,
        open_timeout: ms(from_file("[breaker] open_timeout_ms", b.open_timeout_ms), d.breaker.open_timeout, true)?,
        max_open_timeout: ms(
            from_file("[breaker] max_open_timeout_ms", b.max_open_timeout_ms),
            d.breaker.max_open_timeout,
            true,
        )?,
    };
    let breaker = breaker_file
        .with_env(|name| env_get(env, name).map(str::to_owned))
        .map_err(|e| ConfigError::Invalid { name: e.var.into(), message: "must be a positive integer".into() })?;
    Ok(RoutingConfig {
        retries,
        retry_backoff: ms(
            setting(env, "ROUTE_RETRY_BACKOFF_MS", "[routing] retry_backoff_ms", r.retry_backoff_ms)?,
            d.retry_backoff,
            true,
        )?,
        max_retry_after_wait: ms(
            setting(
                env,
                "ROUTE_MAX_RETRY_AFTER_WAIT_MS",
                "[routing] max_retry_after_wait_ms",
                r.max_retry_after_wait_ms,
            )?,
            d.max_retry_after_wait,
            false,
        )?,
        first_token_timeout: ms(
            setting(
                env,
                "STREAM_FIRST_TOKEN_TIMEOUT_MS",
                "[routing] first_token_timeout_ms",
                r.first_token_timeout_ms,
            )?,
            d.first_token_timeout,
            true,
        )?,
        breaker,
        canary_min_calls: setting(env, "CANARY_MIN_CALLS", "[routing] canary_min_calls", r.canary_min_calls)?
            .map_or(d.canary_min_calls, |n| n.value.max(1)),
        canary_margin: match setting(env, "CANARY_MARGIN", "[routing] canary_margin", r.canary_margin)? {
            Some(n) => n.check(|m| (0.0..=1.0).contains(m), "between 0 and 1")?,
            None => d.canary_margin,
        },
    })
}

/// `[cache]`, env wins.
fn cache_config(c: &FileCache, env: &HashMap<String, String>) -> Result<CacheConfig, ConfigError> {
    let d = CacheConfig::default();
    Ok(CacheConfig {
        enabled: flag_setting(env, "CACHE_ENABLED", "[cache] enabled", c.enabled)?.unwrap_or(d.enabled),
        ttl: match setting(env, "CACHE_TTL_MS", "[cache] ttl_ms", c.ttl_ms)? {
            Some(n) => Duration::from_millis(n.check(|v| *v > 0, "must be > 0")?),
            None => d.ttl,
        },
        max_entries: setting(env, "CACHE_MAX_ENTRIES", "[cache] max_entries", c.max_entries)?
            .map_or(d.max_entries, |n| n.value),
        scope: match setting::<String>(env, "CACHE_SCOPE", "[cache] scope", c.scope.clone())? {
            Some(n) => {
                n.value.parse::<CacheScope>().map_err(|message| ConfigError::Invalid { name: n.name, message })?
            }
            None => d.scope,
        },
    })
}

/// `[limits]` and `[cors]`, env wins.
fn clients_config(
    l: &FileClientLimits,
    c: &FileCors,
    env: &HashMap<String, String>,
) -> Result<ClientsConfig, ConfigError> {
    let d = ClientsConfig::default();
    let invalid_limit = |name: &str, e: freellm_limits::identifier::InvalidLimit| ConfigError::Invalid {
        name: name.into(),
        message: format!("{}, got {:?}", e.reason, e.value),
    };
    const LIMIT_KEY: &str = "[limits] identifier_limit";
    let identifier_limit = match (env_get(env, "FREELLM_IDENTIFIER_LIMIT"), &l.identifier_limit) {
        (Some(text), _) => {
            Some(IdentifierLimit::parse(text).map_err(|e| invalid_limit("FREELLM_IDENTIFIER_LIMIT", e))?)
        }
        (None, Some(FileIdentifierLimit::Text(text))) => {
            Some(IdentifierLimit::parse(text).map_err(|e| invalid_limit(LIMIT_KEY, e))?)
        }
        (None, Some(FileIdentifierLimit::Table { max, window_ms })) => {
            Some(IdentifierLimit::parse(&format!("{max}/{window_ms}")).map_err(|e| invalid_limit(LIMIT_KEY, e))?)
        }
        (None, None) => None,
    };
    let per_ip_rpm = match setting(env, "RATE_LIMIT_RPM", "[limits] per_ip_rpm", l.per_ip_rpm)? {
        Some(Named { value: 0, .. }) | None => None,
        Some(n) => {
            let name = n.name.clone();
            let rpm = n.value;
            IdentifierLimit::per_minute(rpm).map_err(|e| invalid_limit(&name, e))?;
            Some(rpm)
        }
    };
    let allowed_origins = match env_get(env, "ALLOWED_ORIGINS") {
        Some(text) => Some(text.split(',').map(str::to_owned).collect::<Vec<_>>()),
        None => c.allowed_origins.clone(),
    }
    .map(|list| list.iter().map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect());
    Ok(ClientsConfig {
        identifier_limit,
        identifier_max_buckets: setting(
            env,
            "FREELLM_IDENTIFIER_MAX_BUCKETS",
            "[limits] identifier_max_buckets",
            l.identifier_max_buckets,
        )?
        .map_or(d.identifier_max_buckets, |n| n.value),
        per_ip_rpm,
        trust_proxy: flag_setting(env, "TRUST_PROXY", "[limits] trust_proxy", l.trust_proxy)?.unwrap_or(d.trust_proxy),
        allowed_origins,
    })
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError> {
    v.parse().map_err(|_| ConfigError::Invalid { name: name.into(), message: format!("not a valid number: {v}") })
}

#[cfg(test)]
mod tests;
