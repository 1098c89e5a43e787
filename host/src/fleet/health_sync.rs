//! Publishing routing health to the fleet and applying what the others
//! publish: the I/O around [`crate::fleet::health`].
//!
//! A change is written and announced in one script (one round trip): the
//! item `<prefix>health:<item id>` is set with `PX` = what is left of it, so
//! Redis forgets it by itself (a longer one already there is kept), and the
//! message goes out on the channel `<prefix>health`. The report phase
//! awaits the key changes, so a rest seen by one instance is in Redis and
//! on every subscriber's socket before that instance tries its next key or
//! answers its client.
//!
//! Every instance runs one subscriber task: it applies each message that
//! is not its own ([`crate::fleet::health::decide`]); after each
//! (re)connection, once the link is up, it reads every item under the
//! prefix and applies it (what happened while it was away), then writes
//! back what it learned alone and is still in force (its own rests, invalid
//! keys, open breakers), so a link that comes back loses nothing.
//!
//! A breaker's half-open probe is one across the fleet: the instance whose
//! breaker grants the probe also claims `<prefix>probe:<provider>:<model>`
//! (`SET NX PX`); only the holder probes, the others treat the breaker as
//! still open until the outcome arrives or the claim lapses.
//!
//! Redis down: nothing here fails a request. Publishing is skipped, a probe
//! claim is granted locally; each instance decides from its own health, as
//! a single instance does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use redis::Script;

use crate::config::{RedisUrl, StateConfig};
use crate::fleet::Fleet;
use crate::fleet::health::{self, Envelope, HealthChange};
use crate::live::LiveCell;
use crate::ops::stats::unix_ms;

/// How long a probe claim holds when its holder never reports (it died
/// mid-probe): then another instance may probe.
pub const PROBE_HOLD: Duration = Duration::from_secs(15);
/// First wait before reconnecting the subscriber; doubles up to [`MAX_RECONNECT`].
const FIRST_RECONNECT: Duration = Duration::from_millis(100);
/// Longest wait between reconnections of the subscriber.
const MAX_RECONNECT: Duration = Duration::from_secs(5);
/// How often the subscriber looks at the link (to resynchronise once it is up).
const LINK_CHECK: Duration = Duration::from_millis(100);
/// Items read or deleted per page of a scan.
const SCAN_PAGE: u32 = 500;

/// Sets (keeping a longer one) or deletes the item, then publishes.
/// `KEYS[1]`: the item; ARGV: message, ms to keep (0: delete), channel.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local ms = tonumber(ARGV[2])
if ms > 0 then
  if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], ARGV[1], 'PX', ms) end
else
  redis.call('DEL', KEYS[1])
end
return redis.call('PUBLISH', ARGV[3], ARGV[1])",
    )
});

/// One page of a scan: returns the next cursor, then the values read
/// (`get`) or nothing (`del`, deleting each key). ARGV: cursor, pattern,
/// mode, count.
static SCAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[4])
local out = {r[1]}
for _, k in ipairs(r[2]) do
  if ARGV[3] == 'del' then redis.call('DEL', k)
  else
    local v = redis.call('GET', k)
    if v then table.insert(out, v) end
  end
end
return out",
    )
});

/// Claims the probe: -1 when this instance holds it now, else the claim's
/// time left in ms. `KEYS[1]`: the claim; ARGV: instance id, ms.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
return redis.call('PTTL', KEYS[1])",
    )
});

/// Drops the claim if this instance holds it. `KEYS[1]`: the claim; ARGV: instance id.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
});

/// Routing health shared with the fleet. With the local backend every
/// method returns at once and nothing is spawned.
pub struct HealthSync {
    fleet: Arc<Fleet>,
    /// For the subscriber's own connection (pub/sub needs one).
    url: Option<RedisUrl>,
    /// `<prefix>health`.
    channel: String,
    /// Probes other instances hold: (provider, model, until).
    probes_elsewhere: Mutex<Vec<(String, String, Instant)>>,
    /// Messages applied from other instances.
    applied: AtomicU64,
    /// Messages ignored as malformed.
    ignored: AtomicU64,
    /// When the last malformed message was warned about (unix ms).
    last_warning_ms: AtomicU64,
}

impl std::fmt::Debug for HealthSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthSync").field("channel", &self.channel).finish_non_exhaustive()
    }
}

impl HealthSync {
    /// Health sharing for `fleet` (`config` names the Redis and the prefix).
    pub fn new(fleet: Arc<Fleet>, config: &StateConfig) -> Arc<Self> {
        Arc::new(Self {
            fleet,
            url: config.redis_url.clone(),
            channel: format!("{}health", config.prefix),
            probes_elsewhere: Mutex::new(Vec::new()),
            applied: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            last_warning_ms: AtomicU64::new(0),
        })
    }

    /// Whether health is shared (a Redis backend).
    pub fn is_shared(&self) -> bool {
        self.fleet.shared().is_some()
    }

    /// Messages applied from other instances, and messages ignored as malformed.
    pub fn counts(&self) -> (u64, u64) {
        (self.applied.load(Ordering::Relaxed), self.ignored.load(Ordering::Relaxed))
    }

    /// Writes `change` to Redis and announces it (one round trip, bounded
    /// by the timeout; skipped while the link is down). A reset first
    /// deletes every item of its provider.
    pub async fn publish(&self, change: HealthChange) {
        let Some(shared) = self.fleet.shared() else { return };
        let now_ms = unix_ms(SystemTime::now());
        if let HealthChange::ProviderReset { provider } = &change {
            let pattern = format!("{}{}:*", glob_escape(&shared.client().key("health", "")), glob_escape(provider));
            if let Err(e) = self.scan(&pattern, "del").await {
                tracing::debug!(error = %e, "cannot delete the provider's shared health");
            }
        }
        let item =
            shared.client().key("health", &change.item_id().unwrap_or_else(|| format!("{}:reset", change.provider())));
        let keep = change.keep_ms(now_ms);
        let message = Envelope::new(self.fleet.instance_id(), unix_us(), change).encode();
        let args = [message, keep.to_string(), self.channel.clone()];
        let sent = self.fleet.call(|c| async move { c.run::<i64, _>(&PUBLISH, &[item], &args).await }).await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "health change not shared");
        }
    }

    /// [`HealthSync::publish`] in the background (from code that cannot wait).
    pub fn publish_soon(self: &Arc<Self>, change: HealthChange) {
        if !self.is_shared() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move { this.publish(change).await });
    }

    /// Whether this instance may send the half-open probe of `provider`'s
    /// `model` (its own breaker granted it): true when it holds the fleet's
    /// claim, or when health is not shared or Redis does not answer.
    pub async fn claim_probe(&self, provider: &str, model: &str) -> bool {
        let Some(shared) = self.fleet.shared() else { return true };
        let now = crate::clock::now();
        {
            let mut elsewhere = self.probes_elsewhere.lock().unwrap_or_else(|e| e.into_inner());
            elsewhere.retain(|(_, _, until)| *until > now);
            if elsewhere.iter().any(|(p, m, _)| p == provider && m == model) {
                return false;
            }
        }
        let claim = shared.client().key("probe", &format!("{provider}:{model}"));
        let args = [self.fleet.instance_id().to_owned(), (PROBE_HOLD.as_millis() as u64).to_string()];
        match self.fleet.call(|c| async move { c.run::<i64, _>(&CLAIM, &[claim], &args).await }).await {
            Ok(-1) | Err(_) => true,
            Ok(left) => {
                if left > 0 {
                    let until = now + Duration::from_millis(left as u64);
                    let mut elsewhere = self.probes_elsewhere.lock().unwrap_or_else(|e| e.into_inner());
                    elsewhere.push((provider.to_owned(), model.to_owned(), until));
                }
                false
            }
        }
    }

    /// Drops this instance's probe claim (its probe has an outcome), in the
    /// background.
    pub fn release_probe(self: &Arc<Self>, provider: &str, model: &str) {
        let Some(shared) = self.fleet.shared() else { return };
        let claim = shared.client().key("probe", &format!("{provider}:{model}"));
        let this = self.clone();
        tokio::spawn(async move {
            let args = [this.fleet.instance_id().to_owned()];
            let _ = this.fleet.call(|c| async move { c.run::<i64, _>(&RELEASE, &[claim], &args).await }).await;
        });
    }

    /// Starts the subscriber (with Redis only). It ends when the gateway's
    /// live configuration or this handle is dropped.
    pub fn spawn_subscriber(self: &Arc<Self>, live: Weak<LiveCell>) {
        let Some(url) = self.url.clone() else { return };
        let this = Arc::downgrade(self);
        tokio::spawn(async move { subscribe(this, live, url).await });
    }

    /// Runs one scan over `pattern` to its end: values read (`get`) or
    /// keys deleted (`del`).
    async fn scan(&self, pattern: &str, mode: &str) -> Result<Vec<Vec<u8>>, crate::fleet::FleetError> {
        let mut cursor = "0".to_owned();
        let mut values = Vec::new();
        loop {
            let args = [cursor.clone(), pattern.to_owned(), mode.to_owned(), SCAN_PAGE.to_string()];
            let page: Vec<Vec<u8>> = self.fleet.call(|c| async move { c.run(&SCAN, &[], &args).await }).await?;
            let mut page = page.into_iter();
            cursor = page.next().map(|c| String::from_utf8_lossy(&c).into_owned()).unwrap_or_default();
            values.extend(page);
            if cursor == "0" || cursor.is_empty() {
                return Ok(values);
            }
        }
    }

    /// Applies one received message (`own`: this instance's id, whose
    /// messages are skipped; `None` in a resynchronisation).
    fn receive(&self, live: &LiveCell, payload: &[u8], own: Option<&str>) {
        let envelope = match Envelope::parse(payload) {
            Ok(e) => e,
            Err(e) => {
                self.ignored.fetch_add(1, Ordering::Relaxed);
                // One line per malformed message, at most one a second.
                let now_ms = unix_ms(SystemTime::now());
                let last = self.last_warning_ms.load(Ordering::Relaxed);
                if now_ms.saturating_sub(last) >= 1000
                    && self.last_warning_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                {
                    tracing::warn!(error = %e, channel = %self.channel, "ignored a malformed fleet health message");
                }
                return;
            }
        };
        let Some(change) = health::decide(&envelope, own, unix_ms(SystemTime::now())) else { return };
        if matches!(envelope.change, HealthChange::BreakerOpened { .. } | HealthChange::BreakerClosed { .. }) {
            let (provider, model) = match &envelope.change {
                HealthChange::BreakerOpened { provider, model, .. }
                | HealthChange::BreakerClosed { provider, model } => (provider, model),
                _ => return,
            };
            let mut elsewhere = self.probes_elsewhere.lock().unwrap_or_else(|e| e.into_inner());
            elsewhere.retain(|(p, m, _)| !(p == provider && m == model));
        }
        let changed = health::apply(&live.load().registry, &change, crate::clock::now());
        if changed {
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(
            from = %envelope.from,
            provider = %envelope.change.provider(),
            change = ?change,
            changed,
            lag_us = unix_us().saturating_sub(envelope.at_us),
            "fleet health change applied"
        );
    }

    /// Reads every item (what the fleet knows) and applies it, then writes
    /// back what this instance knows and is still in force.
    async fn resync(&self, live: &LiveCell) -> Result<(), crate::fleet::FleetError> {
        let Some(shared) = self.fleet.shared() else { return Ok(()) };
        let pattern = format!("{}*", glob_escape(&shared.client().key("health", "")));
        let values = self.scan(&pattern, "get").await?;
        let read = values.len();
        for value in values {
            self.receive(live, &value, None);
        }
        let registry = live.load().registry.clone();
        let mine = health::in_force(&registry, crate::clock::now(), unix_ms(SystemTime::now()));
        let written = mine.len();
        for change in mine {
            self.publish(change).await;
        }
        tracing::info!(read, written, "fleet health resynchronised");
        Ok(())
    }
}

/// The subscriber: connects, subscribes, resynchronises once the link is
/// up, applies messages; reconnects with backoff when the connection ends.
async fn subscribe(this: Weak<HealthSync>, live: Weak<LiveCell>, url: RedisUrl) {
    let Ok(client) = redis::Client::open(url.expose()) else { return };
    let mut wait = FIRST_RECONNECT;
    loop {
        let (Some(sync), Some(_)) = (this.upgrade(), live.upgrade()) else { return };
        let timeout = sync
            .fleet
            .shared()
            .map_or(Duration::from_secs(1), |s| s.client().timeout())
            .max(Duration::from_millis(500));
        let connected = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&sync.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let Ok(Ok(pubsub)) = connected else {
            drop(sync);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RECONNECT);
            continue;
        };
        wait = FIRST_RECONNECT;
        let own = sync.fleet.instance_id().to_owned();
        drop(sync);
        let mut messages = pubsub.into_on_message();
        let mut synced = false;
        let mut tick = tokio::time::interval(LINK_CHECK);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { break };
                    let (Some(sync), Some(live)) = (this.upgrade(), live.upgrade()) else { return };
                    sync.receive(&live, message.get_payload_bytes(), Some(&own));
                }
                _ = tick.tick() => {
                    let (Some(sync), Some(live)) = (this.upgrade(), live.upgrade()) else { return };
                    if sync.fleet.is_degraded() {
                        synced = false;
                    } else if !synced {
                        synced = sync.resync(&live).await.is_ok();
                    }
                }
            }
        }
        tracing::debug!("fleet health subscriber disconnected; reconnecting");
    }
}

/// Now in unix µs.
fn unix_us() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_patterns_match_the_prefix_literally() {
        assert_eq!(glob_escape("team[a]*:health:"), "team\\[a\\]\\*:health:");
        assert_eq!(glob_escape("freellm:health:"), "freellm:health:");
    }
}
