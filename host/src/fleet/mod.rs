//! The fleet: the gateway instances that share one Redis (`[state]
//! redis_url`, `FREELLM_REDIS_URL`), so that several instances behind a
//! load balancer behave as one gateway.
//!
//! [`Fleet`] is the handle the rest of the host uses: this instance's id,
//! the backend ([`Backend::Local`], the embedded store, the default; or
//! [`Backend::Redis`]) and whether the shared state is reachable. With the
//! local backend nothing here runs on the request path. With Redis, every
//! shared call goes through [`Fleet::call`]: bounded by the timeout, and
//! skipped at once while the link is down ([`link`]), so no request ever
//! waits on a Redis that just failed; a background probe brings the link
//! back.
//!
//! - [`redis`]: the client, the timeout, key naming.
//! - [`link`]: the link's state machine (pure, injected time).
//! - [`caps`]: exact caps across instances (virtual keys, provider key
//!   windows, identifier and per-IP limits), one script per decision
//!   ([`scripts`]); [`settlements`]: corrections of those counts, summed
//!   and written together; [`deltas`]: counts made while degraded, merged
//!   when the link is back.
//! - [`cache`]: the fleet's level of the response cache.
//! - [`health`], [`health_sync`]: routing health that travels (key rests,
//!   invalid keys, breakers, resets) and its publishing and subscriber.

pub mod cache;
pub mod caps;
pub mod deltas;
pub mod health;
pub mod health_sync;
pub mod link;
pub mod redis;
pub mod scripts;
pub mod settlements;

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::{OnRedisError, StateConfig};
use crate::ops::stats::{iso8601, unix_ms};
pub use link::{DEGRADED_TEXT, Link, LinkState, Transition};
pub use redis::{FleetError, RedisClient};

/// Where shared state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// This instance's own embedded store (one instance).
    Local,
    /// The fleet's Redis.
    Redis,
}

/// This instance, and its link to the fleet's shared state.
#[derive(Debug)]
pub struct Fleet {
    instance_id: Arc<str>,
    shared: Option<Shared>,
}

/// The Redis side of a fleet.
#[derive(Debug)]
pub struct Shared {
    client: RedisClient,
    link: Mutex<Link>,
    on_error: OnRedisError,
    /// Wakes the probe task when the link goes down.
    wake_probe: tokio::sync::Notify,
    /// Counts made while degraded, merged when the link is back.
    deltas: Mutex<deltas::Deltas>,
    /// Corrections of counts already made, waiting for their write.
    settlements: Mutex<settlements::Pending>,
    /// Makes identifier-window members unique within this instance.
    seq: std::sync::atomic::AtomicU64,
}

/// `/v1/status`'s `sharedState`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedStateStatus {
    /// `local` or `redis`.
    pub backend: Backend,
    /// This instance's id (the one that answered).
    pub instance_id: String,
    /// The shared state cannot be reached: caps follow `onRedisError`.
    pub degraded: bool,
    /// Since when (ISO 8601), while degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Why (redacted), while degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `degraded: shared state unavailable`, while degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
    /// What caps do while degraded (`closed` or `open`), with Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_redis_error: Option<&'static str>,
    /// Counters made while degraded, waiting to be merged, with Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_counts: Option<usize>,
}

impl Fleet {
    /// A single instance on the embedded store.
    pub fn local(instance_id: impl Into<Arc<str>>) -> Self {
        Self { instance_id: instance_id.into(), shared: None }
    }

    /// The fleet `config` describes. With a Redis URL: registers the URL's
    /// secrets with the redactor, tries Redis once (bounded by the timeout)
    /// and starts degraded when it does not answer — a gateway whose Redis
    /// is down still starts and serves. Must run inside the tokio runtime.
    pub async fn start(config: &StateConfig) -> Result<Arc<Self>, FleetError> {
        let instance_id: Arc<str> = config.instance_id.clone().unwrap_or_else(default_instance_id).into();
        let Some(url) = &config.redis_url else { return Ok(Arc::new(Self::local(instance_id))) };
        crate::redact::set_secrets("redis", [Some(url.expose()), url.password()].into_iter().flatten());
        let client = RedisClient::lazy(url, &config.prefix, config.timeout)?;
        let fleet = Arc::new(Self {
            instance_id,
            shared: Some(Shared {
                client,
                link: Mutex::new(Link::up()),
                on_error: config.on_redis_error,
                wake_probe: tokio::sync::Notify::new(),
                deltas: Mutex::new(deltas::Deltas::default()),
                settlements: Mutex::new(settlements::Pending::default()),
                seq: std::sync::atomic::AtomicU64::new(0),
            }),
        });
        match fleet.call(|c| async move { c.ping().await }).await {
            Ok(()) => tracing::info!(
                redis = %url.masked(),
                prefix = %config.prefix,
                instance = %fleet.instance_id,
                "shared state on Redis"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "Redis does not answer at start: serving from local state");
                if let Some(shared) = fleet.shared() {
                    shared.went_down(shared.link().down(
                        crate::clock::now(),
                        unix_ms(SystemTime::now()),
                        &e.to_string(),
                    ));
                }
            }
        }
        spawn_probe(Arc::downgrade(&fleet));
        Ok(fleet)
    }

    /// This instance's id (`FREELLM_INSTANCE_ID`, default `<hostname>-<pid>`).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Where shared state lives.
    pub fn backend(&self) -> Backend {
        if self.shared.is_some() { Backend::Redis } else { Backend::Local }
    }

    /// The Redis side, when the fleet shares state.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// The shared state cannot be reached right now (always false locally).
    pub fn is_degraded(&self) -> bool {
        self.shared.as_ref().is_some_and(Shared::is_degraded)
    }

    /// What caps do while degraded (`Closed` locally: never asked).
    pub fn on_redis_error(&self) -> OnRedisError {
        self.shared.as_ref().map_or(OnRedisError::Closed, |s| s.on_error)
    }

    /// Runs one shared call: skipped at once (`Degraded`) while the link is
    /// down, else bounded by the timeout; a failure takes the link down.
    /// Locally there is nothing to call: `Degraded` as well, which callers
    /// never see since they ask [`Fleet::shared`] first.
    ///
    /// The Redis call's future (over a kilobyte) is boxed, so the futures of
    /// the request path that may make a shared call (key reservations,
    /// probes, health changes, the shared cache) stay small, and a gateway
    /// without Redis moves none of those bytes on every request.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, FleetError>
    where
        F: FnOnce(RedisClient) -> Fut,
        Fut: Future<Output = Result<T, FleetError>>,
    {
        let Some(shared) = &self.shared else { return Err(FleetError::Degraded) };
        Box::pin(shared.call(f)).await
    }

    /// `/v1/status`'s `sharedState`.
    pub fn status(&self) -> SharedStateStatus {
        let mut status = SharedStateStatus {
            backend: self.backend(),
            instance_id: self.instance_id.to_string(),
            degraded: false,
            since: None,
            reason: None,
            message: None,
            on_redis_error: None,
            pending_counts: None,
        };
        if let Some(shared) = &self.shared {
            status.on_redis_error = Some(shared.on_error.as_str());
            status.pending_counts = Some(shared.deltas.lock().unwrap_or_else(|e| e.into_inner()).len());
            if let LinkState::Degraded { since_unix_ms, reason, .. } = shared.link().state().clone() {
                status.degraded = true;
                status.since = Some(iso8601(since_unix_ms));
                status.reason = Some(reason);
                status.message = Some(DEGRADED_TEXT);
            }
        }
        status
    }
}

impl Shared {
    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settlements(&self) -> std::sync::MutexGuard<'_, settlements::Pending> {
        self.settlements.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The link is down.
    pub fn is_degraded(&self) -> bool {
        self.link().is_degraded()
    }

    /// The client (key naming, the timeout).
    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    /// See [`Fleet::call`].
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, FleetError>
    where
        F: FnOnce(RedisClient) -> Fut,
        Fut: Future<Output = Result<T, FleetError>>,
    {
        if self.is_degraded() {
            return Err(FleetError::Degraded);
        }
        let result = f(self.client.clone()).await;
        match &result {
            Ok(_) => {
                self.link().succeeded(crate::clock::now());
            }
            Err(e) => self.failed(e),
        }
        result
    }

    /// A call failed: after enough in a row the link goes down (logged
    /// once) and the probe wakes.
    fn failed(&self, e: &FleetError) {
        // A script's own error (a bug, a full server) is not an outage of
        // the link, but it is no answer either: treat both alike.
        let transition = self.link().failed(crate::clock::now(), unix_ms(SystemTime::now()), &e.to_string());
        self.went_down(transition);
    }

    /// Logs a transition down (once per outage) and wakes the probe.
    fn went_down(&self, transition: Option<Transition>) {
        if let Some(Transition::Down { reason }) = transition {
            tracing::warn!(reason = %reason, on_redis_error = self.on_error.as_str(), "{DEGRADED_TEXT}");
            self.wake_probe.notify_one();
        }
    }

    /// One probe: `PING`. True when the link is (back) up.
    async fn probe(&self) -> bool {
        match self.client.ping().await {
            Ok(()) => {
                if let Some(Transition::Up { outage }) = self.link().succeeded(crate::clock::now()) {
                    tracing::info!(outage_ms = outage.as_millis() as u64, "shared state available again");
                }
                true
            }
            Err(_) => {
                self.link().probe_failed(crate::clock::now());
                false
            }
        }
    }

    /// How long until the next probe is due (`None`: up).
    fn until_probe(&self, now: Instant) -> Option<Duration> {
        self.link().until_probe(now)
    }
}

/// The probe task: sleeps while the link is up, probes with backoff while
/// it is down. Ends with the fleet.
fn spawn_probe(fleet: Weak<Fleet>) {
    tokio::spawn(async move {
        // Each turn holds the fleet for at most a second or one probe wait,
        // so a dropped fleet ends the task soon after.
        while let Some(f) = fleet.upgrade() {
            let Some(shared) = f.shared() else { return };
            match shared.until_probe(crate::clock::now()) {
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), shared.wake_probe.notified()).await;
                }
                Some(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
                Some(_) => {
                    if shared.probe().await {
                        let merged = f.merge_deltas().await;
                        if merged > 0 {
                            tracing::info!(
                                counters = merged,
                                "counts made while degraded merged into the shared state"
                            );
                        }
                    }
                }
            }
        }
    });
}

/// `<hostname>-<pid>`.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "_.:-".contains(*c)).take(48).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "freellm".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_fleet_is_never_degraded() {
        let fleet = Fleet::local("gw-1");
        assert_eq!((fleet.backend(), fleet.is_degraded(), fleet.instance_id()), (Backend::Local, false, "gw-1"));
        let status = serde_json::to_value(fleet.status()).expect("json");
        assert_eq!(status, serde_json::json!({"backend": "local", "instanceId": "gw-1", "degraded": false}));
    }

    #[test]
    fn the_default_instance_id_names_the_host_and_process() {
        let id = default_instance_id();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        assert!(crate::config::is_instance_id(&id), "{id}");
    }

    #[tokio::test]
    async fn an_unreachable_redis_starts_degraded_and_says_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let config = StateConfig {
            redis_url: Some(
                crate::config::RedisUrl::parse(&format!("redis://:pw-not-shown-1234@127.0.0.1:{}", port.expect("p")))
                    .expect("url"),
            ),
            instance_id: Some("gw-a".into()),
            ..StateConfig::default()
        };
        let fleet = Fleet::start(&config).await.expect("starts");
        assert!(fleet.is_degraded());
        let status = fleet.status();
        assert_eq!(status.message, Some(DEGRADED_TEXT));
        assert_eq!(status.on_redis_error, Some("closed"));
        let text = serde_json::to_string(&status).expect("json");
        assert!(!text.contains("pw-not-shown"), "{text}");
        // While degraded, a call returns at once without touching Redis.
        let started = std::time::Instant::now();
        let r = fleet.call(|c| async move { c.ping().await }).await;
        assert!(matches!(r, Err(FleetError::Degraded)) && started.elapsed() < Duration::from_millis(20));
    }
}
