//! Per-key sliding-window usage, so the router can steer away from keys that
//! would be rate-limited upstream (the `quota_aware` strategy).
//!
//! [`KeyWindows`] counts requests and tokens over a sliding minute and a
//! sliding day. A request is counted when it is *reserved*, before the
//! upstream call, so concurrent requests see each other; the token estimate
//! is corrected to real usage once the answer is in ([`KeyWindows::settle`]),
//! or the whole reservation is undone if the request never reached the
//! provider ([`KeyWindows::release`]).
//!
//! # Approximation
//!
//! Memory is fixed per key (about 12 KiB) whatever the traffic: each window
//! is a ring of buckets, the minute as 60 one-second buckets and the day as
//! 1440 one-minute buckets, each holding a request and a token count.
//! Buckets are aligned to the epoch `Instant` given at construction. An
//! event leaves its window when its whole bucket does, so it is forgotten
//! between `window - bucket` and `window` after it happened: up to one
//! second early for the minute window, up to one minute early for the day.
//! Waits reported by [`Headroom::Exhausted`] have the same granularity.
//!
//! Time is always passed in (`now: Instant`). A `now` older than one already
//! seen counts in the newest bucket: the windows never move backwards.
//! Every method takes `&self`; each is one short critical section.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Minute window: bucket width in milliseconds.
const MINUTE_BUCKET_MS: u64 = 1_000;
/// Minute window: number of buckets.
const MINUTE_BUCKETS: usize = 60;
/// Day window: bucket width in milliseconds.
const DAY_BUCKET_MS: u64 = 60_000;
/// Day window: number of buckets.
const DAY_BUCKETS: usize = 1_440;

/// Tokens added to every estimate by [`estimate_tokens`] for the chat
/// framing (roles, separators, reply priming).
pub const REQUEST_OVERHEAD_TOKENS: u32 = 8;

/// A rough prompt-size estimate: `ceil(chars / 4)` plus
/// [`REQUEST_OVERHEAD_TOKENS`]. Four characters per token holds for English
/// text on common tokenizers and is off by 2× or more for code, CJK or
/// unusual text: use it to pre-count, then [`KeyWindows::settle`] with the
/// real usage. Callers that know the completion budget (`max_tokens`) may
/// add it, since some providers count it against token limits.
pub fn estimate_tokens(body_text_len_chars: usize) -> u32 {
    u32::try_from(body_text_len_chars.div_ceil(4)).unwrap_or(u32::MAX).saturating_add(REQUEST_OVERHEAD_TOKENS)
}

/// A key's upstream limits; `None` means unlimited.
///
/// `Some(0)` admits nothing: such a window always reports
/// [`Headroom::Exhausted`] with the whole window as the wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per sliding minute.
    pub requests_per_minute: Option<u32>,
    /// Requests per sliding day.
    pub requests_per_day: Option<u32>,
    /// Tokens per sliding minute.
    pub tokens_per_minute: Option<u32>,
    /// Tokens per sliding day.
    pub tokens_per_day: Option<u32>,
}

/// Whether a key can take one more request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Headroom {
    /// The request fits every limited window.
    Ok {
        /// The smallest fraction of any limited window left *after* this
        /// request, in `0.0..=1.0`; `1.0` when nothing is limited. Prefer
        /// higher.
        score: f64,
    },
    /// Some window is full.
    Exhausted {
        /// Approximate time until enough of the binding window ages out for
        /// the request to fit (the longest such wait across full windows).
        wait: Duration,
    },
}

/// A counted request, to hand back to [`KeyWindows::settle`] or
/// [`KeyWindows::release`]. Dropping it keeps the estimate counted.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "settle or release the reservation once the request is done"]
pub struct Reservation {
    minute_bucket: u64,
    day_bucket: u64,
    tokens: u32,
}

impl Reservation {
    /// The tokens counted for this reservation (the estimate).
    pub fn estimated_tokens(&self) -> u32 {
        self.tokens
    }
}

/// Current use of one key's windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowUse {
    /// Requests in the sliding minute.
    pub requests_minute: u64,
    /// Requests in the sliding day.
    pub requests_day: u64,
    /// Tokens in the sliding minute.
    pub tokens_minute: u64,
    /// Tokens in the sliding day.
    pub tokens_day: u64,
}

/// Persistable form of a key's windows, with wall-clock bucket times so it
/// survives a restart (see [`KeyWindows::export`], [`KeyWindows::import`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowState {
    /// Non-empty buckets of the minute window, oldest first.
    #[serde(default)]
    pub minute: Vec<BucketState>,
    /// Non-empty buckets of the day window, oldest first.
    #[serde(default)]
    pub day: Vec<BucketState>,
}

/// One persisted bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketState {
    /// Wall-clock start of the bucket, milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// Requests counted in the bucket.
    pub requests: u32,
    /// Tokens counted in the bucket.
    pub tokens: u32,
}

/// Sliding minute and day windows of one API key.
pub struct KeyWindows {
    epoch: Instant,
    inner: Mutex<Windows>,
}

impl std::fmt::Debug for KeyWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = self.lock();
        f.debug_struct("KeyWindows")
            .field("requests_minute", &w.minute.requests)
            .field("requests_day", &w.day.requests)
            .field("tokens_minute", &w.minute.tokens)
            .field("tokens_day", &w.day.tokens)
            .finish_non_exhaustive()
    }
}

struct Windows {
    minute: Ring,
    day: Ring,
}

impl KeyWindows {
    /// Empty windows; buckets are aligned to `epoch` (e.g. `Instant::now()`
    /// at startup).
    pub fn new(epoch: Instant) -> Self {
        let windows =
            Windows { minute: Ring::new(MINUTE_BUCKET_MS, MINUTE_BUCKETS), day: Ring::new(DAY_BUCKET_MS, DAY_BUCKETS) };
        Self { epoch, inner: Mutex::new(windows) }
    }

    fn lock(&self) -> MutexGuard<'_, Windows> {
        // No critical section can panic midway, so a poisoned lock still
        // guards consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds from the epoch to `now` (0 before the epoch).
    fn offset_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Locks and ages both windows out to `now`; returns the guard and the
    /// offset of `now`.
    fn at(&self, now: Instant) -> (MutexGuard<'_, Windows>, u64) {
        let offset = self.offset_ms(now);
        let mut w = self.lock();
        w.minute.advance_to(offset);
        w.day.advance_to(offset);
        (w, offset)
    }

    /// Counts one request and `estimated_tokens` now, before the upstream
    /// call.
    pub fn reserve(&self, now: Instant, estimated_tokens: u32) -> Reservation {
        let (mut w, _) = self.at(now);
        w.reserve(estimated_tokens)
    }

    /// Atomically checks [`KeyWindows::headroom`] and reserves if the request
    /// fits.
    ///
    /// # Errors
    ///
    /// The [`Headroom::Exhausted`] wait when the request does not fit;
    /// nothing is counted then.
    pub fn try_reserve(&self, limits: &Limits, now: Instant, estimated_tokens: u32) -> Result<Reservation, Duration> {
        let (mut w, offset) = self.at(now);
        match w.headroom(limits, offset, estimated_tokens) {
            Headroom::Ok { .. } => Ok(w.reserve(estimated_tokens)),
            Headroom::Exhausted { wait } => Err(wait),
        }
    }

    /// Replaces the reservation's token estimate with the real usage, in the
    /// buckets it was counted in (nothing for a window it already left).
    pub fn settle(&self, reservation: Reservation, actual_tokens: u32, now: Instant) {
        let (mut guard, _) = self.at(now);
        let w = &mut *guard;
        for (ring, bucket) in [(&mut w.minute, reservation.minute_bucket), (&mut w.day, reservation.day_bucket)] {
            ring.update(bucket, |b| {
                b.tokens = b.tokens.saturating_sub(reservation.tokens).saturating_add(actual_tokens);
            });
        }
    }

    /// Undoes a reservation entirely (the request never reached the
    /// provider).
    pub fn release(&self, reservation: Reservation, now: Instant) {
        let (mut guard, _) = self.at(now);
        let w = &mut *guard;
        for (ring, bucket) in [(&mut w.minute, reservation.minute_bucket), (&mut w.day, reservation.day_bucket)] {
            ring.update(bucket, |b| {
                b.requests = b.requests.saturating_sub(1);
                b.tokens = b.tokens.saturating_sub(reservation.tokens);
            });
        }
    }

    /// Whether one more request of `estimated_tokens` fits `limits` now.
    ///
    /// An estimate larger than a whole token limit is treated as needing
    /// that window empty (the estimate is rough; the upstream decides).
    pub fn headroom(&self, limits: &Limits, now: Instant, estimated_tokens: u32) -> Headroom {
        let (w, offset) = self.at(now);
        w.headroom(limits, offset, estimated_tokens)
    }

    /// Requests and tokens currently in each window.
    pub fn usage(&self, now: Instant) -> WindowUse {
        let (w, _) = self.at(now);
        WindowUse {
            requests_minute: w.minute.requests,
            requests_day: w.day.requests,
            tokens_minute: w.minute.tokens,
            tokens_day: w.day.tokens,
        }
    }

    /// The live buckets, stamped with wall-clock times from
    /// `SystemTime::now()` taken as the wall time of `now`.
    pub fn export(&self, now: Instant) -> WindowState {
        self.export_at(now, SystemTime::now())
    }

    /// [`KeyWindows::export`] with an explicit wall clock: `wall_now` is the
    /// wall time corresponding to `now`.
    pub fn export_at(&self, now: Instant, wall_now: SystemTime) -> WindowState {
        let (w, offset) = self.at(now);
        let wall_ms = unix_ms(wall_now);
        WindowState { minute: w.minute.export(offset, wall_ms), day: w.day.export(offset, wall_ms) }
    }

    /// Rebuilds windows from [`KeyWindows::export`]ed state, with epoch
    /// `now` and `SystemTime::now()` as the wall time of `now`. Buckets that
    /// have left their window by now (older than a minute or a day) are
    /// dropped; buckets stamped in the future count as current.
    pub fn import(state: &WindowState, now: Instant) -> Self {
        Self::import_at(state, now, SystemTime::now())
    }

    /// [`KeyWindows::import`] with an explicit wall clock.
    pub fn import_at(state: &WindowState, now: Instant, wall_now: SystemTime) -> Self {
        let windows = Self::new(now);
        let wall_ms = unix_ms(wall_now);
        {
            let mut w = windows.lock();
            w.minute.import(&state.minute, wall_ms);
            w.day.import(&state.day, wall_ms);
        }
        windows
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Windows {
    fn reserve(&mut self, tokens: u32) -> Reservation {
        let add = |b: &mut Bucket| {
            b.requests = b.requests.saturating_add(1);
            b.tokens = b.tokens.saturating_add(tokens);
        };
        let (minute_bucket, day_bucket) = (self.minute.head, self.day.head);
        self.minute.update(minute_bucket, add);
        self.day.update(day_bucket, add);
        Reservation { minute_bucket, day_bucket, tokens }
    }

    fn headroom(&self, limits: &Limits, offset: u64, estimated_tokens: u32) -> Headroom {
        let checks = [
            (limits.requests_per_minute, &self.minute, Count::Requests, 1),
            (limits.requests_per_day, &self.day, Count::Requests, 1),
            (limits.tokens_per_minute, &self.minute, Count::Tokens, u64::from(estimated_tokens)),
            (limits.tokens_per_day, &self.day, Count::Tokens, u64::from(estimated_tokens)),
        ];
        let mut score = 1.0_f64;
        let mut wait: Option<Duration> = None;
        for (limit, ring, count, add) in checks {
            let Some(limit) = limit.map(u64::from) else { continue };
            let used = ring.total(count);
            let need = add.min(limit);
            if limit > 0 && used + need <= limit {
                score = score.min((limit - used - need) as f64 / limit as f64);
            } else {
                // Freeing everything always suffices since need <= limit,
                // except for a zero limit, which never frees.
                let until = (limit > 0).then(|| ring.wait_to_free(used + need - limit, count, offset)).flatten();
                let w = until.unwrap_or_else(|| ring.span());
                wait = Some(wait.map_or(w, |prev| prev.max(w)));
            }
        }
        match wait {
            Some(wait) => Headroom::Exhausted { wait },
            None => Headroom::Ok { score },
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy)]
enum Count {
    Requests,
    Tokens,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    requests: u32,
    tokens: u32,
}

impl Bucket {
    fn get(&self, count: Count) -> u64 {
        match count {
            Count::Requests => u64::from(self.requests),
            Count::Tokens => u64::from(self.tokens),
        }
    }
}

/// A ring of `slots.len()` buckets of `width_ms` each.
///
/// Buckets have absolute indices: the bucket holding epoch offset `t` ms is
/// `len + t / width_ms` (the `len` bias leaves room below the epoch for
/// imported history). Bucket `i` lives in slot `i % len` and is in the
/// window while `head - len < i <= head`; it leaves at offset `i * width_ms`.
struct Ring {
    width_ms: u64,
    slots: Box<[Bucket]>,
    /// Index of the newest bucket.
    head: u64,
    /// Sums over the live buckets.
    requests: u64,
    tokens: u64,
}

impl Ring {
    fn new(width_ms: u64, len: usize) -> Self {
        Self {
            width_ms,
            slots: vec![Bucket::default(); len].into_boxed_slice(),
            head: len as u64,
            requests: 0,
            tokens: 0,
        }
    }

    fn len(&self) -> u64 {
        self.slots.len() as u64
    }

    /// The window's length.
    fn span(&self) -> Duration {
        Duration::from_millis(self.width_ms.saturating_mul(self.len()))
    }

    fn slot(&self, index: u64) -> usize {
        // The remainder is below `slots.len()`, so it fits a usize.
        (index % self.len()) as usize
    }

    fn total(&self, count: Count) -> u64 {
        match count {
            Count::Requests => self.requests,
            Count::Tokens => self.tokens,
        }
    }

    fn is_live(&self, index: u64) -> bool {
        index <= self.head && self.head - index < self.len()
    }

    /// Makes the bucket of epoch offset `offset_ms` the head, emptying the
    /// buckets that leave the window. Never moves backwards.
    fn advance_to(&mut self, offset_ms: u64) {
        let target = self.len().saturating_add(offset_ms / self.width_ms);
        if target <= self.head {
            return;
        }
        if target - self.head >= self.len() {
            self.slots.fill(Bucket::default());
            (self.requests, self.tokens) = (0, 0);
        } else {
            for index in self.head + 1..=target {
                let slot = self.slot(index);
                let old = std::mem::take(&mut self.slots[slot]);
                self.requests -= u64::from(old.requests);
                self.tokens -= u64::from(old.tokens);
            }
        }
        self.head = target;
    }

    /// Applies `change` to live bucket `index`, keeping the sums in step; a
    /// bucket that has left the window is not touched.
    fn update(&mut self, index: u64, change: impl FnOnce(&mut Bucket)) {
        if !self.is_live(index) {
            return;
        }
        let slot = self.slot(index);
        let bucket = &mut self.slots[slot];
        let before = *bucket;
        change(bucket);
        let after = *bucket;
        // The sums include `before`, so they never underflow.
        self.requests = self.requests - u64::from(before.requests) + u64::from(after.requests);
        self.tokens = self.tokens - u64::from(before.tokens) + u64::from(after.tokens);
    }

    /// Time from offset `now_ms` until the oldest buckets holding at least
    /// `excess` of `count` have left the window; `None` if the whole window
    /// holds less.
    fn wait_to_free(&self, excess: u64, count: Count, now_ms: u64) -> Option<Duration> {
        let mut freed = 0;
        for index in self.head + 1 - self.len()..=self.head {
            freed += self.slots[self.slot(index)].get(count);
            if freed >= excess {
                let leaves_at = index.saturating_mul(self.width_ms);
                return Some(Duration::from_millis(leaves_at.saturating_sub(now_ms)));
            }
        }
        None
    }

    /// Non-empty live buckets, oldest first, with wall-clock start times;
    /// `now_ms` is the epoch offset whose wall time is `wall_ms`.
    fn export(&self, now_ms: u64, wall_ms: u64) -> Vec<BucketState> {
        // Bucket `i` starts at offset `(i - len) * width`, so its age is
        // `now + (len - i) * width`, computed without going negative.
        let base = now_ms.saturating_add(self.len().saturating_mul(self.width_ms));
        (self.head + 1 - self.len()..=self.head)
            .filter_map(|index| {
                let b = self.slots[self.slot(index)];
                (b.requests > 0 || b.tokens > 0).then(|| {
                    let age = base.saturating_sub(index.saturating_mul(self.width_ms));
                    BucketState { start_unix_ms: wall_ms.saturating_sub(age), requests: b.requests, tokens: b.tokens }
                })
            })
            .collect()
    }

    /// Adds persisted buckets to a fresh ring whose head is the bucket of
    /// wall time `wall_ms`. A bucket that started `k` widths ago (rounded
    /// down) lands `k` buckets before the head, so it leaves the window no
    /// earlier than it would have without the restart.
    fn import(&mut self, buckets: &[BucketState], wall_ms: u64) {
        for saved in buckets {
            let back = wall_ms.saturating_sub(saved.start_unix_ms) / self.width_ms;
            if back >= self.len() {
                continue;
            }
            self.update(self.head - back, |b| {
                b.requests = b.requests.saturating_add(saved.requests);
                b.tokens = b.tokens.saturating_add(saved.tokens);
            });
        }
    }
}

#[cfg(test)]
mod tests;
