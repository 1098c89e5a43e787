//! API keys of one provider: rotation and per-key cooldowns.
//!
//! Keys are tried in rotation so concurrent requests spread across them. A
//! key that the upstream rate-limits is cooled down until its `Retry-After`
//! passes; the next key (or provider) answers meanwhile. Everything here is
//! lock-free: a pick is two atomic loads per key.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Cooldown applied on a 429 that names no `Retry-After`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);
/// Bounds of any cooldown taken from an upstream `Retry-After`.
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);
/// Upper bound of a rate-limit cooldown.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(600);

/// One key and its cooldown.
#[derive(Debug)]
pub struct Key {
    /// The secret; `None` for a provider that takes no key (one sentinel slot).
    pub secret: Option<String>,
    /// Milliseconds since the ring's epoch until which the key rests (0 = ready).
    cooled_until_ms: AtomicU64,
}

/// The keys of one provider.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<Key>,
    next: AtomicUsize,
    epoch: Instant,
}

/// A picked key: its index in the ring and its secret.
#[derive(Debug, Clone, Copy)]
pub struct Picked<'a> {
    /// Index in the ring (stable for the ring's life).
    pub index: usize,
    /// The secret, if the provider takes one.
    pub secret: Option<&'a str>,
}

impl KeyRing {
    /// A ring of real keys.
    pub fn new(secrets: Vec<String>) -> Self {
        Self::from_keys(secrets.into_iter().map(Some).collect())
    }

    /// A ring with the single keyless slot (e.g. a local Ollama).
    pub fn keyless() -> Self {
        Self::from_keys(vec![None])
    }

    fn from_keys(secrets: Vec<Option<String>>) -> Self {
        Self {
            keys: secrets.into_iter().map(|secret| Key { secret, cooled_until_ms: AtomicU64::new(0) }).collect(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the ring has no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Picks the next key in rotation that is not cooling down, skipping the
    /// indices in `exclude` (keys already tried by this request).
    pub fn pick(&self, exclude: &[usize]) -> Option<Picked<'_>> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| (start + i) % n).find_map(|index| {
            let key = &self.keys[index];
            let ready = key.cooled_until_ms.load(Ordering::Relaxed) <= now;
            (ready && !exclude.contains(&index)).then(|| Picked { index, secret: key.secret.as_deref() })
        })
    }

    /// Rests a key for `retry_after` (clamped to 1 s..10 min), or the default
    /// 60 s when the upstream gave none.
    pub fn cool_down(&self, index: usize, retry_after: Option<Duration>) {
        let wait = retry_after.map_or(DEFAULT_COOLDOWN, |d| d.clamp(MIN_COOLDOWN, MAX_COOLDOWN));
        if let Some(key) = self.keys.get(index) {
            key.cooled_until_ms.fetch_max(self.now_ms() + wait.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Makes a key usable again (after it answered successfully).
    pub fn clear(&self, index: usize) {
        if let Some(key) = self.keys.get(index) {
            key.cooled_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Time until the key is usable, or `None` when it already is.
    pub fn cooldown_left(&self, index: usize) -> Option<Duration> {
        let until = self.keys.get(index)?.cooled_until_ms.load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Time until the first key becomes usable; zero when one already is.
    pub fn earliest_ready(&self) -> Duration {
        (0..self.keys.len()).map(|i| self.cooldown_left(i).unwrap_or_default()).min().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_rotate_across_keys() {
        let ring = KeyRing::new(vec!["a".into(), "b".into(), "c".into()]);
        let picked: Vec<_> = (0..4).map(|_| ring.pick(&[]).unwrap().secret.unwrap()).collect();
        assert_eq!(picked, ["a", "b", "c", "a"]);
    }

    #[test]
    fn cooled_key_is_skipped_until_retry_after() {
        let ring = KeyRing::new(vec!["a".into(), "b".into()]);
        ring.cool_down(0, Some(Duration::from_secs(5)));
        for _ in 0..3 {
            assert_eq!(ring.pick(&[]).unwrap().index, 1);
        }
        let left = ring.cooldown_left(0).unwrap();
        assert!(left > Duration::from_secs(4) && left <= Duration::from_secs(5), "{left:?}");
        ring.clear(0);
        assert!(ring.cooldown_left(0).is_none());
    }

    #[test]
    fn cooldowns_are_clamped_and_default_to_sixty_seconds() {
        let ring = KeyRing::new(vec!["a".into(), "b".into(), "c".into()]);
        ring.cool_down(0, Some(Duration::from_millis(10)));
        ring.cool_down(1, Some(Duration::from_secs(99_999)));
        ring.cool_down(2, None);
        assert!(ring.cooldown_left(0).unwrap() > Duration::from_millis(900));
        assert!(ring.cooldown_left(1).unwrap() <= MAX_COOLDOWN);
        assert!(ring.cooldown_left(2).unwrap() > Duration::from_secs(59));
        assert!(ring.pick(&[]).is_none());
        assert!(ring.earliest_ready() > Duration::from_millis(900));
    }

    #[test]
    fn excluded_keys_are_not_picked_again() {
        let ring = KeyRing::new(vec!["a".into(), "b".into()]);
        assert_eq!(ring.pick(&[0]).unwrap().index, 1);
        assert!(ring.pick(&[0, 1]).is_none());
        assert!(KeyRing::keyless().pick(&[]).unwrap().secret.is_none());
    }
}
