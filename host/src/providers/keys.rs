//! API keys of one provider: rotation, per-key windows, cooldowns and
//! invalid keys.
//!
//! Keys are tried in rotation so concurrent requests spread across them.
//! Each key has its own sliding windows ([`freellm_limits::quota`]) sized by the
//! limits its adapter declares: a key whose window is full is not picked,
//! so the gateway avoids sending what the upstream would rate-limit. A key
//! the upstream rate-limits anyway cools down for the clamped `Retry-After`
//! (1 s..10 min, 60 s default); a key whose daily quota is spent rests
//! until the quota resets; a key the upstream rejects as invalid is taken
//! out and reported. Cooldown checks are atomic loads; only the window
//! check takes a short lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::ops::stats::unix_ms;
use freellm_limits::quota::{Headroom, KeyWindows, Limits, Reservation, WindowState, WindowUse};

/// Cooldown applied on a 429 that names no `Retry-After`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);
/// Lower bound of a cooldown taken from an upstream `Retry-After`.
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);
/// Upper bound of a rate-limit cooldown.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(600);
/// Upper bound of a quota-exhausted rest (a daily quota resets within a day).
pub const MAX_QUOTA_REST: Duration = Duration::from_secs(24 * 3600);

/// Clamps a rate-limit cooldown to [`MIN_COOLDOWN`]..[`MAX_COOLDOWN`].
pub fn clamp_cooldown(d: Duration) -> Duration {
    d.clamp(MIN_COOLDOWN, MAX_COOLDOWN)
}

/// One key and its state.
#[derive(Debug)]
pub struct Key {
    /// The secret; `None` for a provider that takes no key (one sentinel slot).
    pub secret: Option<String>,
    /// Milliseconds since the ring's epoch until which the key rests (0 = ready).
    cooled_until_ms: AtomicU64,
    /// Taken out of rotation (the upstream rejected it).
    invalid: AtomicBool,
    invalid_reason: Mutex<Option<String>>,
    windows: KeyWindows,
}

/// What the persistent store keeps of one key: its windows and, while it
/// rests (rate limit or spent daily quota), when the rest ends. Stored as
/// JSON; `cooledUntilUnixMs` sits next to the window fields, so state saved
/// before it existed still loads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyState {
    /// The request and token windows.
    #[serde(flatten)]
    pub windows: WindowState,
    /// End of the key's rest, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooled_until_unix_ms: Option<u64>,
}

/// The keys of one provider.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<Key>,
    next: AtomicUsize,
    epoch: Instant,
    limits: Limits,
}

/// A picked key: its index, its secret, and its counted request.
#[derive(Debug)]
pub struct Picked<'a> {
    /// Index in the ring (stable for the ring's life).
    pub index: usize,
    /// The secret, if the provider takes one.
    pub secret: Option<&'a str>,
    /// The request counted in the key's windows.
    pub reservation: Reservation,
}

/// One key as `/v1/status` shows it (never the secret).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// Position in the ring.
    pub index: usize,
    /// Cooling down, out of quota or with a full window.
    pub rate_limited: bool,
    /// Requests in the sliding minute.
    pub requests_in_window: u64,
    /// The per-minute limit the adapter declares (null = none).
    pub max_requests: Option<u32>,
    /// Time until the key is usable again.
    pub retry_after_ms: Option<u64>,
    /// Taken out because the upstream rejected it.
    pub invalid: bool,
    /// Why, when invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Use of every window.
    pub windows: WindowUse,
}

impl KeyRing {
    /// A ring of real keys with the adapter's declared limits.
    pub fn new(secrets: Vec<String>, limits: Limits) -> Self {
        Self::from_keys(secrets.into_iter().map(Some).collect(), limits)
    }

    /// A ring with the single keyless slot (e.g. a local Ollama).
    pub fn keyless(limits: Limits) -> Self {
        Self::from_keys(vec![None], limits)
    }

    fn from_keys(secrets: Vec<Option<String>>, limits: Limits) -> Self {
        let epoch = crate::clock::now();
        Self {
            keys: secrets
                .into_iter()
                .map(|secret| Key {
                    secret,
                    cooled_until_ms: AtomicU64::new(0),
                    invalid: AtomicBool::new(false),
                    invalid_reason: Mutex::new(None),
                    windows: KeyWindows::new(epoch),
                })
                .collect(),
            next: AtomicUsize::new(0),
            epoch,
            limits,
        }
    }

    /// The limits each key is held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the ring has no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Picks the next key in rotation that is valid, not cooling down and
    /// has room in its windows for a request of `estimated_tokens`, skipping
    /// `exclude` (keys this request already tried), and counts the request
    /// in that key's windows. `Err` holds how long until some key frees up
    /// (`Duration::MAX` when none ever will: all excluded or invalid).
    pub fn pick(&self, exclude: &[usize], now: Instant, estimated_tokens: u32) -> Result<Picked<'_>, Duration> {
        let n = self.keys.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now_ms = self.ms(now);
        let mut wait = Duration::MAX;
        for index in (0..n).map(|i| (start + i) % n) {
            let key = &self.keys[index];
            if exclude.contains(&index) || key.invalid.load(Ordering::Relaxed) {
                continue;
            }
            let until = key.cooled_until_ms.load(Ordering::Relaxed);
            if until > now_ms {
                wait = wait.min(Duration::from_millis(until - now_ms));
                continue;
            }
            match key.windows.try_reserve(&self.limits, now, estimated_tokens) {
                Ok(reservation) => return Ok(Picked { index, secret: key.secret.as_deref(), reservation }),
                Err(w) => wait = wait.min(w),
            }
        }
        Err(wait)
    }

    /// `None` when some key could take a request of `estimated_tokens` now,
    /// else how long until one can (`Duration::MAX`: never).
    pub fn wait_for_headroom(&self, now: Instant, estimated_tokens: u32) -> Option<Duration> {
        let now_ms = self.ms(now);
        let mut wait = Duration::MAX;
        for key in &self.keys {
            if key.invalid.load(Ordering::Relaxed) {
                continue;
            }
            let until = key.cooled_until_ms.load(Ordering::Relaxed);
            if until > now_ms {
                wait = wait.min(Duration::from_millis(until - now_ms));
                continue;
            }
            match key.windows.headroom(&self.limits, now, estimated_tokens) {
                Headroom::Ok { .. } => return None,
                Headroom::Exhausted { wait: w } => wait = wait.min(w),
            }
        }
        Some(wait)
    }

    /// Number of keys usable right now.
    pub fn available(&self, now: Instant) -> usize {
        let now_ms = self.ms(now);
        self.keys
            .iter()
            .filter(|k| {
                !k.invalid.load(Ordering::Relaxed)
                    && k.cooled_until_ms.load(Ordering::Relaxed) <= now_ms
                    && matches!(k.windows.headroom(&self.limits, now, 0), Headroom::Ok { .. })
            })
            .count()
    }

    /// Rests a key for `wait` (callers clamp it; see [`clamp_cooldown`]).
    pub fn cool_down(&self, index: usize, wait: Duration) {
        if let Some(key) = self.keys.get(index) {
            let until = self.ms(crate::clock::now()) + wait.as_millis() as u64;
            key.cooled_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Rests a key whose daily quota is spent: for `retry_after` when the
    /// upstream said, else until the next midnight UTC (when daily quotas
    /// commonly reset), at most a day.
    pub fn exhaust_quota(&self, index: usize, retry_after: Option<Duration>, now: SystemTime) {
        let wait = retry_after.unwrap_or_else(|| until_utc_midnight(now)).clamp(MIN_COOLDOWN, MAX_QUOTA_REST);
        self.cool_down(index, wait);
    }

    /// Takes a key out of rotation (the upstream says it is invalid).
    pub fn disable(&self, index: usize, reason: &str) {
        if let Some(key) = self.keys.get(index) {
            key.invalid.store(true, Ordering::Relaxed);
            let mut r = key.invalid_reason.lock().unwrap_or_else(|e| e.into_inner());
            *r = Some(crate::redact::redact(reason).into_owned());
        }
    }

    /// Makes a key usable again (after it answered successfully, or an
    /// admin reset).
    pub fn clear(&self, index: usize) {
        if let Some(key) = self.keys.get(index) {
            key.cooled_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Clears every cooldown and invalid mark (admin reset).
    pub fn reset(&self) {
        for (i, key) in self.keys.iter().enumerate() {
            self.clear(i);
            key.invalid.store(false, Ordering::Relaxed);
            *key.invalid_reason.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Corrects a reservation to the real token use (`None`: keep the estimate).
    pub fn settle(&self, index: usize, reservation: Reservation, actual_tokens: Option<u32>) {
        if let (Some(key), Some(tokens)) = (self.keys.get(index), actual_tokens) {
            key.windows.settle(reservation, tokens, crate::clock::now());
        }
    }

    /// Undoes a reservation (the request never reached the upstream).
    pub fn release(&self, index: usize, reservation: Reservation) {
        if let Some(key) = self.keys.get(index) {
            key.windows.release(reservation, crate::clock::now());
        }
    }

    /// Time until the key is usable, or `None` when it already is.
    pub fn cooldown_left(&self, index: usize) -> Option<Duration> {
        let until = self.keys.get(index)?.cooled_until_ms.load(Ordering::Relaxed);
        let now = self.ms(crate::clock::now());
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Whether the ring holds exactly `secrets`, in that order.
    pub fn holds(&self, secrets: &[String]) -> bool {
        self.keys.len() == secrets.len() && self.keys.iter().zip(secrets).all(|(k, s)| k.secret.as_ref() == Some(s))
    }

    /// A stable, non-secret name for key `index` of provider `provider`, used
    /// by the persistent store: `<provider>#<first 16 hex of SHA-256(key)>`.
    pub fn store_id(&self, provider: &str, index: usize) -> Option<String> {
        use sha2::{Digest, Sha256};
        let key = self.keys.get(index)?;
        Some(match &key.secret {
            Some(secret) => format!("{provider}#{}", &hex::encode(Sha256::digest(secret.as_bytes()))[..16]),
            None => format!("{provider}#keyless"),
        })
    }

    /// Every key's windows and cooldown, for the persistent store.
    pub fn export_state(&self, provider: &str) -> Vec<(String, KeyState)> {
        self.export_state_at(provider, crate::clock::now(), SystemTime::now())
    }

    fn export_state_at(&self, provider: &str, now: Instant, wall_now: SystemTime) -> Vec<(String, KeyState)> {
        let now_ms = self.ms(now);
        (0..self.keys.len())
            .filter_map(|i| {
                let key = &self.keys[i];
                let left = key.cooled_until_ms.load(Ordering::Relaxed).saturating_sub(now_ms);
                let state = KeyState {
                    windows: key.windows.export_at(now, wall_now),
                    cooled_until_unix_ms: (left > 0).then(|| unix_ms(wall_now) + left),
                };
                Some((self.store_id(provider, i)?, state))
            })
            .collect()
    }

    /// Restores windows and cooldowns saved under the same store ids (keys
    /// whose secret changed start fresh). A saved rest continues for what was
    /// left of it, at most a day (a clock jump cannot bench a key for longer).
    pub fn restore_state(&mut self, provider: &str, saved: &dyn Fn(&str) -> Option<KeyState>) {
        self.restore_state_at(provider, saved, crate::clock::now(), SystemTime::now());
    }

    fn restore_state_at(
        &mut self,
        provider: &str,
        saved: &dyn Fn(&str) -> Option<KeyState>,
        now: Instant,
        wall_now: SystemTime,
    ) {
        let now_ms = self.ms(now);
        for i in 0..self.keys.len() {
            let Some(state) = self.store_id(provider, i).and_then(|id| saved(&id)) else { continue };
            self.keys[i].windows = KeyWindows::import_at(&state.windows, now, wall_now);
            let left = state.cooled_until_unix_ms.map_or(0, |until| until.saturating_sub(unix_ms(wall_now)));
            let left = left.min(MAX_QUOTA_REST.as_millis() as u64);
            self.keys[i].cooled_until_ms.store(if left > 0 { now_ms + left } else { 0 }, Ordering::Relaxed);
        }
    }

    /// Every key's state, for `/v1/status`.
    pub fn status(&self, now: Instant) -> Vec<KeyStatus> {
        self.keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let invalid = key.invalid.load(Ordering::Relaxed);
                let cooldown = self.cooldown_left(index);
                let full = match key.windows.headroom(&self.limits, now, 0) {
                    Headroom::Ok { .. } => None,
                    Headroom::Exhausted { wait } => Some(wait),
                };
                let windows = key.windows.usage(now);
                KeyStatus {
                    index,
                    rate_limited: invalid || cooldown.is_some() || full.is_some(),
                    requests_in_window: windows.requests_minute,
                    max_requests: self.limits.requests_per_minute,
                    retry_after_ms: cooldown.max(full).map(|d| d.as_millis() as u64),
                    invalid,
                    invalid_reason: key.invalid_reason.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                    windows,
                }
            })
            .collect()
    }
}

/// Time from `now` to the next 00:00 UTC.
fn until_utc_midnight(now: SystemTime) -> Duration {
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Duration::from_secs(86_400 - secs % 86_400)
}

#[cfg(test)]
mod tests;
