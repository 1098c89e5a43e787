//! The Redis client of a fleet: one multiplexed, self-reconnecting
//! connection ([`ConnectionManager`]: commands of concurrent requests are
//! pipelined on it), scripts run by `EVALSHA` (loaded once, reloaded on
//! `NOSCRIPT`), every call bounded by the `[state] timeout_ms`, and every
//! key named by [`RedisClient::key`] under the fleet's prefix.
//!
//! Key names carry hashed ids only (a virtual key's SHA-256 handle, a
//! provider key's store id), never a secret. The URL may carry a password:
//! it is registered with the redactor before the first connection, and an
//! error from the client is redacted before it is shown anywhere.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ToRedisArgs};

use crate::config::RedisUrl;

/// Why a shared-state call did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// The URL cannot be used (checked at start).
    #[error("FREELLM_REDIS_URL cannot be used: {0}")]
    BadUrl(String),
    /// Redis did not answer within the timeout.
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed (redacted).
    #[error("Redis: {0}")]
    Redis(String),
    /// The link is down: the call was not made (no request waits on a
    /// Redis that just failed).
    #[error("shared state unavailable (degraded)")]
    Degraded,
}

impl FleetError {
    fn from_redis(e: &redis::RedisError) -> Self {
        Self::Redis(crate::redact::redact(&e.to_string()).into_owned())
    }
}

/// A connection to the fleet's Redis.
#[derive(Clone)]
pub struct RedisClient {
    conn: ConnectionManager,
    prefix: std::sync::Arc<str>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient").field("prefix", &self.prefix).field("timeout", &self.timeout).finish()
    }
}

impl RedisClient {
    /// A client that connects on first use (so a gateway whose Redis is
    /// down still starts). Must be called inside the tokio runtime.
    pub fn lazy(url: &RedisUrl, prefix: &str, timeout: Duration) -> Result<Self, FleetError> {
        let client = redis::Client::open(url.expose()).map_err(|e| FleetError::BadUrl(without_url(&e, url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout))
            // Reconnects are few and quick; the link's probes pace the rest.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| FleetError::BadUrl(without_url(&e, url)))?;
        Ok(Self { conn, prefix: prefix.into(), timeout })
    }

    /// The one place a Redis key is named: `<prefix><kind>:<id>`, e.g.
    /// `freellm:vk:<sha-256 handle>`. `id` must be a hashed or public id.
    pub fn key(&self, kind: &str, id: &str) -> String {
        key_name(&self.prefix, kind, id)
    }

    /// The bound of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `PING`, bounded by the timeout.
    pub async fn ping(&self) -> Result<(), FleetError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { redis::cmd("PING").query_async::<String>(&mut conn).await }).await.map(drop)
    }

    /// Runs `script` (`EVALSHA`, loading it on `NOSCRIPT`) with `keys` and
    /// `args`, bounded by the timeout: one round trip in the usual case.
    pub async fn run<T, A>(&self, script: &Script, keys: &[String], args: &[A]) -> Result<T, FleetError>
    where
        T: FromRedisValue,
        A: ToRedisArgs,
    {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k.as_str());
        }
        for a in args {
            invocation.arg(a);
        }
        let mut conn = self.conn.clone();
        self.bounded(async move { invocation.invoke_async::<T>(&mut conn).await }).await
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(FleetError::from_redis(&e)),
            Err(_) => Err(FleetError::Timeout(self.timeout)),
        }
    }
}

/// `<prefix><kind>:<id>`.
pub fn key_name(prefix: &str, kind: &str, id: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + kind.len() + 1 + id.len());
    key.push_str(prefix);
    key.push_str(kind);
    key.push(':');
    key.push_str(id);
    key
}

/// A client error's text with the URL (and its password) taken out.
fn without_url(e: &redis::RedisError, url: &RedisUrl) -> String {
    let text = e.to_string().replace(url.expose(), &url.masked());
    let text = match url.password() {
        Some(p) => text.replace(p, crate::redact::MARKER),
        None => text,
    };
    crate::redact::redact(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_under_the_prefix() {
        assert_eq!(key_name("freellm:", "vk", "ab12"), "freellm:vk:ab12");
        assert_eq!(key_name("team-a:", "pk", "groq#0123"), "team-a:pk:groq#0123");
    }

    #[tokio::test]
    async fn an_unreachable_server_answers_within_the_timeout() {
        // A port nothing listens on: the call fails fast, never hangs.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let url = RedisUrl::parse(&format!("redis://127.0.0.1:{}", port.expect("port"))).expect("url");
        let client = RedisClient::lazy(&url, "t:", Duration::from_millis(50)).expect("client");
        let started = std::time::Instant::now();
        assert!(client.ping().await.is_err());
        assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    }
}
