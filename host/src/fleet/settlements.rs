//! Settlements: corrections to counts the fleet already made — a provider
//! key's reserved token estimate replaced by the answer's usage, a virtual
//! key's tokens added after its answer, a failed request's reservation
//! taken back. None of them decides a request, so none needs a round trip
//! of its own the moment it is known: they are summed per window and
//! bucket and written together [`SETTLE_DELAY`] after the first of them,
//! one script per window and bucket. Under load that is one write for
//! dozens of requests instead of one each, and the Redis time and
//! wake-ups it saves are the request path's.
//!
//! A settlement only ever corrects a count that a decision already made in
//! Redis (the reservation counted the estimate): the windows are exact at
//! every decision, and a correction lands within [`SETTLE_DELAY`] plus one
//! round trip. One that cannot be written is kept as a delta
//! ([`super::deltas`]) and merged when Redis is back; graceful shutdown
//! writes what is pending ([`super::Fleet::flush_settlements`]).
//!
//! Pure bookkeeping here; the fleet does the writing.

use std::collections::HashMap;
use std::time::Duration;

use super::deltas::Delta;

/// How long the first settlement waits for others to share its write.
pub const SETTLE_DELAY: Duration = Duration::from_millis(20);

/// Most distinct windows pending at once; past that a settlement is
/// written on its own, as if none were pending.
pub const MAX_PENDING: usize = 10_000;

/// The window and bucket a settlement corrects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    /// A provider key's minute and day windows, by its store id, in the
    /// buckets its reservation was counted in.
    ProviderKey {
        /// The key's store id (hashed, never the secret).
        store_id: String,
        /// The minute and day buckets of the reservation.
        buckets: (i64, i64),
    },
    /// A virtual key's rolling 24 h, by its handle (hex SHA-256), in the
    /// bucket of its admission (`None`: the bucket current at the write).
    VirtualKey {
        /// The key's handle.
        handle: String,
        /// The admission's bucket.
        bucket: Option<i64>,
    },
}

/// What [`Pending::add`] asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Summed with what was pending (perhaps cancelling its window's sum,
    /// which then leaves the table): the write already scheduled takes it.
    Joined,
    /// The first one pending: schedule a write after [`SETTLE_DELAY`].
    First,
    /// A zero delta: nothing to write.
    Nothing,
    /// The table is full: write this one on its own now.
    Alone(Account),
}

/// The settlements waiting for their write.
#[derive(Debug, Default)]
pub struct Pending {
    sums: HashMap<Account, Delta>,
}

impl Pending {
    /// Sums `delta` into `account`'s pending settlement.
    pub fn add(&mut self, account: Account, delta: Delta) -> Added {
        if delta == Delta::default() {
            return Added::Nothing;
        }
        let was_empty = self.sums.is_empty();
        if let Some(sum) = self.sums.get_mut(&account) {
            sum.requests += delta.requests;
            sum.tokens += delta.tokens;
            if *sum == Delta::default() {
                self.sums.remove(&account);
            }
            return Added::Joined;
        }
        if self.sums.len() >= MAX_PENDING {
            return Added::Alone(account);
        }
        self.sums.insert(account, delta);
        if was_empty { Added::First } else { Added::Joined }
    }

    /// Takes everything pending, to write.
    pub fn take(&mut self) -> Vec<(Account, Delta)> {
        self.sums.drain().collect()
    }

    /// Windows waiting.
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(bucket: i64) -> Account {
        Account::ProviderKey { store_id: "groq#ab".into(), buckets: (bucket, 7) }
    }

    const MINUS_TWO: Delta = Delta { requests: 0, tokens: -2 };

    #[test]
    fn settlements_of_one_window_and_bucket_are_summed_into_one_write() {
        let mut p = Pending::default();
        assert_eq!(p.add(pk(1), MINUS_TWO), Added::First);
        assert_eq!(p.add(pk(1), MINUS_TWO), Added::Joined);
        assert_eq!(p.add(pk(1), Delta { requests: -1, tokens: -23 }), Added::Joined);
        // Another bucket of the same key is another write.
        assert_eq!(p.add(pk(2), MINUS_TWO), Added::Joined);
        let mut written = p.take();
        written.sort_by_key(|(a, _)| format!("{a:?}"));
        assert_eq!(written, vec![(pk(1), Delta { requests: -1, tokens: -27 }), (pk(2), MINUS_TWO)]);
        assert!(p.is_empty());
        // After a write, the next settlement schedules the next one.
        assert_eq!(p.add(pk(1), MINUS_TWO), Added::First);
    }

    #[test]
    fn nothing_is_written_for_settlements_that_cancel_out() {
        let mut p = Pending::default();
        assert_eq!(p.add(pk(1), Delta::default()), Added::Nothing);
        assert!(p.is_empty());
        p.add(pk(1), Delta { requests: 0, tokens: 5 });
        p.add(pk(1), Delta { requests: 0, tokens: -5 });
        assert!(p.take().is_empty());
    }

    #[test]
    fn a_full_table_sends_the_newcomer_on_its_own_and_keeps_summing_the_rest() {
        let mut p = Pending::default();
        for b in 0..MAX_PENDING as i64 {
            p.add(pk(b), MINUS_TWO);
        }
        assert_eq!(p.add(pk(-1), MINUS_TWO), Added::Alone(pk(-1)));
        assert_eq!(p.add(pk(0), MINUS_TWO), Added::Joined);
        assert_eq!(p.len(), MAX_PENDING);
    }
}
