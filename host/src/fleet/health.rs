//! Health that travels: the changes of routing health one instance of a
//! fleet tells the others about, their wire format, and how a received
//! change lands on this instance's key rings and breakers.
//!
//! A change is one of: a key rests until a time (a 429 with `Retry-After`,
//! a spent daily quota), a key is invalid, a model's breaker opened until a
//! time, a model's breaker closed, an operator reset a provider. Keys are
//! named by their store id (`<scope>#<16 hex of SHA-256>`), never by the
//! secret; times are wall-clock milliseconds since the Unix epoch, so every
//! instance rests a key until the same moment.
//!
//! The wire format is versioned JSON (`{"v":1,"from","atUs","change"}`),
//! parsed strictly: unknown fields, another version, an oversized or
//! malformed message, ids that no provider or key could have, are refused
//! with a [`WireError`] (the subscriber ignores the message with one
//! warning). What to do with a parsed change is decided by [`decide`], a
//! pure function of the message, this instance's id and the time; applying
//! it ([`apply`]) touches only the in-memory key rings and breakers. The I/O
//! (publishing, the subscriber, resynchronisation) is in
//! [`crate::fleet::health_sync`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::providers::keys::{KeyRing, MAX_QUOTA_REST};
use crate::providers::{ProviderEntry, Registry};
use freellm_limits::breaker::BreakerState;

/// The version of the wire format this build writes and reads.
pub const WIRE_VERSION: u32 = 1;
/// The largest message accepted.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// How long Redis keeps an invalid-key mark: a key the upstream rejected
/// stays out of rotation for the fleet for a day, or until an admin reset.
pub const INVALID_KEEP: Duration = Duration::from_secs(24 * 3600);
/// The longest a received breaker opening is honoured.
pub const MAX_BREAKER_OPEN: Duration = Duration::from_secs(3600);
/// The longest invalid-key reason carried.
const MAX_REASON_CHARS: usize = 300;

/// One change of routing health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthChange {
    /// A key rests until `until` (unix ms): rate limited, or its daily
    /// quota is spent.
    KeyCooled {
        /// The provider.
        provider: String,
        /// The ring the key rests in: the provider id, or `<id>/<model>`
        /// for a model with limits of its own.
        ring: String,
        /// The key's store id in that ring.
        key: String,
        /// End of the rest, unix ms.
        until: u64,
    },
    /// The upstream rejected a key: out of rotation in every ring.
    KeyInvalid {
        /// The provider.
        provider: String,
        /// The key's store id in the provider's own ring.
        key: String,
        /// Why (redacted).
        reason: String,
    },
    /// A model's breaker opened.
    BreakerOpened {
        /// The provider.
        provider: String,
        /// The upstream model the breaker judges.
        model: String,
        /// End of the open period, unix ms.
        until: u64,
        /// The trip's open period (a failed probe doubles it).
        period_ms: u64,
    },
    /// A model's breaker closed (its probes answered).
    BreakerClosed {
        /// The provider.
        provider: String,
        /// The upstream model.
        model: String,
    },
    /// An operator reset the provider: breakers closed, keys usable.
    ProviderReset {
        /// The provider.
        provider: String,
    },
}

/// A change as it travels: who sent it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    /// [`WIRE_VERSION`].
    pub v: u32,
    /// The instance that saw the change.
    pub from: String,
    /// When it was sent, unix µs (to measure propagation).
    pub at_us: u64,
    /// The change.
    pub change: HealthChange,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not the JSON of an envelope.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Another version of the format.
    #[error("wire version {0} is not {WIRE_VERSION}")]
    Version(u32),
    /// A field no real change could hold.
    #[error("invalid field {0}")]
    Field(&'static str),
}

impl HealthChange {
    /// The provider the change is about.
    pub fn provider(&self) -> &str {
        match self {
            Self::KeyCooled { provider, .. }
            | Self::KeyInvalid { provider, .. }
            | Self::BreakerOpened { provider, .. }
            | Self::BreakerClosed { provider, .. }
            | Self::ProviderReset { provider } => provider,
        }
    }

    /// The id of the Redis item that holds the change while it is in force
    /// (under `<prefix>health:`); `None` for a reset, which deletes the
    /// provider's items instead. Starts with `<provider>:` so a reset can
    /// find them.
    pub fn item_id(&self) -> Option<String> {
        match self {
            Self::KeyCooled { provider, ring, key, .. } => Some(cool_item(provider, ring, key)),
            Self::KeyInvalid { provider, key, .. } => Some(invalid_item(provider, key)),
            Self::BreakerOpened { provider, model, .. } | Self::BreakerClosed { provider, model } => {
                Some(format!("{provider}:breaker:{model}"))
            }
            Self::ProviderReset { .. } => None,
        }
    }

    /// How long Redis keeps the item (0: delete it): what is left of the
    /// rest or the open period at `now_unix_ms`.
    pub fn keep_ms(&self, now_unix_ms: u64) -> u64 {
        match self {
            Self::KeyCooled { until, .. } | Self::BreakerOpened { until, .. } => until.saturating_sub(now_unix_ms),
            Self::KeyInvalid { .. } => INVALID_KEEP.as_millis() as u64,
            Self::BreakerClosed { .. } | Self::ProviderReset { .. } => 0,
        }
    }
}

impl Envelope {
    /// The envelope of `change` sent by `from` at `at_us`.
    pub fn new(from: &str, at_us: u64, change: HealthChange) -> Self {
        Self { v: WIRE_VERSION, from: from.to_owned(), at_us, change }
    }

    /// The message text.
    pub fn encode(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a message strictly (see the module documentation).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        // The version first, so a newer format is named as such.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
        let v = value.get("v").and_then(serde_json::Value::as_u64).ok_or(WireError::Field("v"))?;
        if v != u64::from(WIRE_VERSION) {
            return Err(WireError::Version(u32::try_from(v).unwrap_or(u32::MAX)));
        }
        let envelope: Self = serde_json::from_value(value).map_err(|e| WireError::Malformed(e.to_string()))?;
        envelope.check()?;
        Ok(envelope)
    }

    fn check(&self) -> Result<(), WireError> {
        if !crate::config::is_instance_id(&self.from) {
            return Err(WireError::Field("from"));
        }
        if !is_provider_id(self.change.provider()) {
            return Err(WireError::Field("provider"));
        }
        match &self.change {
            HealthChange::KeyCooled { provider, ring, key, .. } => {
                let own_ring =
                    ring == provider || ring.strip_prefix(provider.as_str()).is_some_and(|m| m.starts_with('/'));
                if !own_ring || !is_name(ring, 300) {
                    return Err(WireError::Field("ring"));
                }
                if !is_store_id(key) {
                    return Err(WireError::Field("key"));
                }
            }
            HealthChange::KeyInvalid { key, reason, .. } => {
                if !is_store_id(key) {
                    return Err(WireError::Field("key"));
                }
                if reason.chars().count() > MAX_REASON_CHARS {
                    return Err(WireError::Field("reason"));
                }
            }
            HealthChange::BreakerOpened { model, .. } | HealthChange::BreakerClosed { model, .. } => {
                if !is_name(model, 256) {
                    return Err(WireError::Field("model"));
                }
            }
            HealthChange::ProviderReset { .. } => {}
        }
        Ok(())
    }
}

/// `[a-z0-9_-]{1,64}`, as `plugins.toml` allows.
fn is_provider_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
}

/// A model or ring name: printable, no spaces, bounded.
fn is_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len()) && name.chars().all(|c| !c.is_control() && !c.is_whitespace())
}

/// `<scope>#<16 hex>` or `<scope>#keyless`.
fn is_store_id(id: &str) -> bool {
    let Some((scope, hash)) = id.rsplit_once('#') else { return false };
    is_name(scope, 300)
        && (hash == "keyless"
            || (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())))
}

/// A redacted, bounded reason for an invalid key.
pub fn reason_text(reason: &str) -> String {
    crate::redact::redact(reason).chars().take(MAX_REASON_CHARS).collect()
}

/// What a received change does here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// Rest a key for `wait` from now.
    CoolKey {
        /// The provider.
        provider: String,
        /// The ring.
        ring: String,
        /// The key's store id.
        key: String,
        /// How long.
        wait: Duration,
    },
    /// Take a key out of every ring.
    DisableKey {
        /// The provider.
        provider: String,
        /// The key's store id in the provider's ring.
        key: String,
        /// Why.
        reason: String,
    },
    /// Open a model's breaker for `remaining`, a trip of `period`.
    OpenBreaker {
        /// The provider.
        provider: String,
        /// The model.
        model: String,
        /// Time left open.
        remaining: Duration,
        /// The trip's period.
        period: Duration,
    },
    /// Close a model's breaker.
    CloseBreaker {
        /// The provider.
        provider: String,
        /// The model.
        model: String,
    },
    /// Close every breaker of a provider and make its keys usable.
    ResetProvider {
        /// The provider.
        provider: String,
    },
}

/// What a received envelope does here at `now_unix_ms`: nothing for this
/// instance's own messages (`own`; a resynchronisation passes `None`, since
/// a restarted instance keeps its id and must relearn what it published),
/// nothing for a change already over; a rest is at most
/// [`MAX_QUOTA_REST`], an open breaker at most [`MAX_BREAKER_OPEN`], so a
/// hostile message cannot bench a key or a model for longer.
pub fn decide(envelope: &Envelope, own: Option<&str>, now_unix_ms: u64) -> Option<Apply> {
    if own == Some(envelope.from.as_str()) {
        return None;
    }
    let left = |until: u64| Duration::from_millis(until.saturating_sub(now_unix_ms));
    Some(match envelope.change.clone() {
        HealthChange::KeyCooled { provider, ring, key, until } => {
            let wait = left(until).min(MAX_QUOTA_REST);
            if wait.is_zero() {
                return None;
            }
            Apply::CoolKey { provider, ring, key, wait }
        }
        HealthChange::KeyInvalid { provider, key, reason } => Apply::DisableKey { provider, key, reason },
        HealthChange::BreakerOpened { provider, model, until, period_ms } => {
            let remaining = left(until).min(MAX_BREAKER_OPEN);
            if remaining.is_zero() {
                return None;
            }
            let period = Duration::from_millis(period_ms).min(MAX_BREAKER_OPEN);
            Apply::OpenBreaker { provider, model, remaining, period }
        }
        HealthChange::BreakerClosed { provider, model } => Apply::CloseBreaker { provider, model },
        HealthChange::ProviderReset { provider } => Apply::ResetProvider { provider },
    })
}

/// Applies a decided change to this instance's provider table at `now`.
/// Returns whether anything changed (an unknown provider, ring, key or
/// model changes nothing: the instances may run different configurations
/// for a moment during a rollout).
pub fn apply(registry: &Registry, change: &Apply, now: Instant) -> bool {
    let Some(provider) = registry.get(apply_provider(change)) else { return false };
    match change {
        Apply::CoolKey { ring, key, wait, .. } => {
            let Some((scope, keys)) = provider.key_rings().find(|(scope, _)| scope == ring) else { return false };
            cool_key(keys, &scope, key, *wait)
        }
        Apply::DisableKey { key, reason, .. } => match index_of(&provider.keys, &provider.id, key) {
            Some(index) if !provider.keys.status(now).get(index).is_some_and(|k| k.invalid) => {
                provider.disable_key(index, reason);
                true
            }
            _ => false,
        },
        Apply::OpenBreaker { model, remaining, period, .. } => {
            // Only a model this instance judged or may route to: a message
            // cannot grow the breaker table past the catalog.
            let known = provider.breakers.get(model).is_some()
                || provider.adapter.as_ref().is_some_and(|a| a.info.models.iter().any(|m| m.id == *model));
            known && provider.breakers.for_model(model).open_until(now, *remaining, *period)
        }
        Apply::CloseBreaker { model, .. } => match provider.breakers.get(model) {
            Some(b) if b.snapshot(now).state != BreakerState::Closed => {
                b.reset();
                true
            }
            _ => false,
        },
        Apply::ResetProvider { .. } => {
            provider.breakers.reset();
            provider.reset_keys();
            true
        }
    }
}

fn apply_provider(change: &Apply) -> &str {
    match change {
        Apply::CoolKey { provider, .. }
        | Apply::DisableKey { provider, .. }
        | Apply::OpenBreaker { provider, .. }
        | Apply::CloseBreaker { provider, .. }
        | Apply::ResetProvider { provider } => provider,
    }
}

/// Rests key `key` (a store id under `scope`) of `keys` for `wait`; a
/// longer rest it already has is kept. Whether the key was found.
pub fn cool_key(keys: &KeyRing, scope: &str, key: &str, wait: Duration) -> bool {
    match index_of(keys, scope, key) {
        Some(index) => {
            keys.cool_down(index, wait);
            true
        }
        None => false,
    }
}

/// The item of a key's rest: key `key` (its store id in `ring`) of `provider`.
pub fn cool_item(provider: &str, ring: &str, key: &str) -> String {
    format!("{provider}:cool:{ring}:{key}")
}

/// The item of an invalid key: key `key` (its store id in the provider's
/// own ring) of `provider`.
pub fn invalid_item(provider: &str, key: &str) -> String {
    format!("{provider}:invalid:{key}")
}

/// The index of the key whose store id under `scope` is `key`.
fn index_of(keys: &KeyRing, scope: &str, key: &str) -> Option<usize> {
    (0..keys.len()).find(|&i| keys.store_id(scope, i).as_deref() == Some(key))
}

/// The change a key's rest makes: key `index` of `keys` (a ring of
/// `provider`) rests for what its cooldown has left.
pub fn key_cooled(
    provider: &ProviderEntry,
    keys: &Arc<KeyRing>,
    index: usize,
    now_unix_ms: u64,
) -> Option<HealthChange> {
    let left = keys.cooldown_left(index)?;
    let (ring, keys) = provider.key_rings().find(|(_, ring)| Arc::ptr_eq(ring, keys))?;
    Some(HealthChange::KeyCooled {
        provider: provider.id.to_string(),
        key: keys.store_id(&ring, index)?,
        ring,
        until: now_unix_ms + left.as_millis() as u64,
    })
}

/// The change an invalid key makes.
pub fn key_invalid(provider: &ProviderEntry, index: usize, reason: &str) -> Option<HealthChange> {
    Some(HealthChange::KeyInvalid {
        provider: provider.id.to_string(),
        key: provider.keys.store_id(&provider.id, index)?,
        reason: reason_text(reason),
    })
}

/// The change a breaker that just opened makes: open for `remaining`.
pub fn breaker_opened(provider: &str, model: &str, remaining: Duration, now_unix_ms: u64) -> HealthChange {
    let ms = remaining.as_millis() as u64;
    HealthChange::BreakerOpened {
        provider: provider.to_owned(),
        model: model.to_owned(),
        until: now_unix_ms + ms,
        period_ms: ms,
    }
}

/// Every change still in force in `registry` at `now` (rests, invalid
/// keys, open breakers): what an instance writes back when its link to the
/// fleet returns, so what it learned alone is not lost.
pub fn in_force(registry: &Registry, now: Instant, now_unix_ms: u64) -> Vec<HealthChange> {
    let mut changes = Vec::new();
    for provider in &registry.providers {
        for (ring, keys) in provider.key_rings() {
            for status in keys.status(now) {
                if status.invalid {
                    if ring == *provider.id
                        && let Some(key) = keys.store_id(&ring, status.index)
                    {
                        let reason = reason_text(status.invalid_reason.as_deref().unwrap_or_default());
                        changes.push(HealthChange::KeyInvalid { provider: provider.id.to_string(), key, reason });
                    }
                } else if let Some(change) = key_cooled(provider, keys, status.index, now_unix_ms) {
                    changes.push(change);
                }
            }
        }
        for (model, breaker) in provider.breakers.models() {
            if let Some(left) = breaker.snapshot(now).opened_for_ms_remaining {
                changes.push(breaker_opened(&provider.id, &model, Duration::from_millis(left), now_unix_ms));
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests;
