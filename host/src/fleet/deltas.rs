//! Counts made while the shared state was unavailable, kept to be merged
//! when it is back, so they are not lost: a request admitted from local
//! state while degraded (`on_redis_error = "open"`), the tokens of a
//! request settled while Redis did not answer, a release that could not be
//! written. Pure bookkeeping, no I/O: the fleet drains it after the link
//! comes back and puts back what it could not write.
//!
//! Memory is bounded: at most [`MAX_ENTRIES`] counters; past that, new
//! counters are dropped and counted in [`Deltas::dropped`].

use std::collections::HashMap;

/// Most counters kept while degraded.
pub const MAX_ENTRIES: usize = 10_000;

/// What a delta counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Counter {
    /// A virtual key's window, by its handle (hex SHA-256).
    VirtualKey(String),
    /// A provider key's windows, by its store id.
    ProviderKey(String),
    /// An identifier's (or client IP's) window: its hashed bucket name,
    /// the limit's size and window.
    Identifier {
        /// The hashed bucket name.
        bucket: String,
        /// Requests per window.
        max: u32,
        /// Window length, ms.
        window_ms: u64,
    },
}

/// Requests and tokens to add (or, negative, to take back).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Requests.
    pub requests: i64,
    /// Tokens.
    pub tokens: i64,
}

impl Delta {
    fn is_zero(self) -> bool {
        self.requests == 0 && self.tokens == 0
    }
}

/// The counters waiting to be merged.
#[derive(Debug, Default)]
pub struct Deltas {
    pending: HashMap<Counter, Delta>,
    dropped: u64,
}

impl Deltas {
    /// Adds `delta` to `counter`'s pending change.
    pub fn add(&mut self, counter: Counter, delta: Delta) {
        if delta.is_zero() {
            return;
        }
        if let Some(d) = self.pending.get_mut(&counter) {
            d.requests += delta.requests;
            d.tokens += delta.tokens;
            if d.is_zero() {
                self.pending.remove(&counter);
            }
            return;
        }
        if self.pending.len() >= MAX_ENTRIES {
            self.dropped += 1;
            return;
        }
        self.pending.insert(counter, delta);
    }

    /// Takes every pending change (to merge); what fails goes back with
    /// [`Deltas::add`].
    pub fn take(&mut self) -> Vec<(Counter, Delta)> {
        self.pending.drain().collect()
    }

    /// Counters waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Counters dropped because the table was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vk(id: &str) -> Counter {
        Counter::VirtualKey(id.to_owned())
    }

    #[test]
    fn deltas_of_one_counter_add_up() {
        let mut d = Deltas::default();
        d.add(vk("a"), Delta { requests: 1, tokens: 10 });
        d.add(vk("a"), Delta { requests: 1, tokens: 5 });
        d.add(vk("b"), Delta { requests: 1, tokens: 0 });
        let mut taken = d.take();
        taken.sort_by(|x, y| format!("{:?}", x.0).cmp(&format!("{:?}", y.0)));
        assert_eq!(
            taken,
            vec![(vk("a"), Delta { requests: 2, tokens: 15 }), (vk("b"), Delta { requests: 1, tokens: 0 })]
        );
        assert!(d.is_empty(), "taken means gone");
    }

    #[test]
    fn a_release_cancels_its_reservation() {
        let mut d = Deltas::default();
        d.add(vk("a"), Delta { requests: 1, tokens: 0 });
        d.add(vk("a"), Delta { requests: -1, tokens: 0 });
        assert!(d.is_empty());
        d.add(vk("a"), Delta::default());
        assert!(d.is_empty(), "a zero change is not kept");
    }

    #[test]
    fn what_failed_to_merge_goes_back() {
        let mut d = Deltas::default();
        d.add(vk("a"), Delta { requests: 3, tokens: 30 });
        let taken = d.take();
        d.add(vk("a"), Delta { requests: 1, tokens: 1 }); // counted meanwhile
        for (c, delta) in taken {
            d.add(c, delta);
        }
        assert_eq!(d.take(), vec![(vk("a"), Delta { requests: 4, tokens: 31 })]);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut d = Deltas::default();
        for i in 0..MAX_ENTRIES + 5 {
            d.add(vk(&i.to_string()), Delta { requests: 1, tokens: 0 });
        }
        assert_eq!((d.len(), d.dropped()), (MAX_ENTRIES, 5));
        d.add(vk("0"), Delta { requests: 1, tokens: 0 });
        assert_eq!(d.dropped(), 5, "an existing counter still adds up");
    }
}
