//! Where open streams keep their normalizers: the stream hosts.
//!
//! A streaming answer keeps its `stream-normalizer` resource for its whole
//! life: seconds to minutes, almost all of it waiting on the network. One
//! instance per stream cost ~166 KiB of resident memory each and capped
//! the open streams at the pool's size. A normalizer is a resource, so one
//! instance holds many: an instance that serves streams (a *stream host*)
//! takes up to [`STREAMS_PER_HOST`] open streams of one adapter version at
//! once, and their calls take turns on it (a push is a few microseconds).
//! This module decides where a stream goes and when a host goes
//! ([`choose`], [`drop_when_empty`]: pure); [`super::stream`] makes the
//! calls.
//!
//! * **Placing.** A new stream goes to the least busy host. Up to four
//!   hosts per core are made before any host takes a second stream (so
//!   concurrent pushes seldom wait for each other); past that, a new host
//!   (a fresh instance) is made only when every host is full, so the hosts
//!   never outnumber the open streams divided by the seats, plus the
//!   spread and the hosts being retired. Hosts come out of their own budget
//!   of pool slots ([`super::engine::MAX_STREAM_HOSTS`]): calls always find
//!   an instance, however many streams are open.
//! * **Retiring.** A host stops taking streams after
//!   [`STREAMS_PER_HOST_LIFE`] of them (what a guest's allocator fragments
//!   or leaks stays bounded) and is dropped, its pool slot reset, when its
//!   last stream ends. An empty host is kept ready for the next streams
//!   while no more hosts than the spread are alive.
//! * **Lost.** A host whose instance faulted, or whose call was abandoned
//!   half-way ([`LoseOnDrop`]), takes no more streams.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::ResourceAny;

pub use super::engine::STREAMS_PER_HOST;
use super::sandbox::Instance;

/// Streams a host serves over its life before it takes no more.
const STREAMS_PER_HOST_LIFE: u32 = 10_000;

/// The stream hosts of one adapter version.
pub(crate) struct StreamHosts {
    seats: Mutex<Vec<Seats>>,
    /// Streams one host takes at once.
    per_host: u32,
    /// Hosts streams are spread over before any host takes a second
    /// stream, and kept ready when idle.
    spread: usize,
}

/// Where a new stream goes.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// On this host.
    On(usize),
    /// On a new host; on `fallback` when the budget allows none.
    New { fallback: Option<usize> },
}

/// Places a new stream: on the least busy host that takes streams, unless
/// it already has one and fewer hosts than the spread are alive (then a new
/// host); on a new host when none has room.
fn choose(seats: &[Seats], per_host: u32, spread: usize) -> Choice {
    let best = seats
        .iter()
        .enumerate()
        .filter(|(_, s)| s.open < per_host && s.placed < STREAMS_PER_HOST_LIFE && !s.host.is_lost())
        .min_by_key(|(_, s)| s.open);
    match best {
        Some((i, s)) if s.open == 0 || seats.len() >= spread => Choice::On(i),
        best => Choice::New { fallback: best.map(|(i, _)| i) },
    }
}

/// Whether a host whose stream just ended is dropped: once it has none
/// left, when it is lost or retired (its life spent, or one stream each)
/// or more hosts than the spread are alive.
fn drop_when_empty(s: &Seats, hosts: usize, per_host: u32, spread: usize) -> bool {
    let retired = s.placed >= STREAMS_PER_HOST_LIFE || per_host == 1;
    s.open == 0 && (retired || s.host.is_lost() || hosts > spread)
}

/// One host and how many of its seats are taken.
struct Seats {
    host: Arc<StreamHost>,
    /// Streams open on it now.
    open: u32,
    /// Streams placed on it over its life.
    placed: u32,
}

/// One instance holding stream normalizers.
pub(crate) struct StreamHost {
    /// The instance; `None` until the first stream makes it, and again
    /// once a fault lost it.
    pub(crate) instance: tokio::sync::Mutex<Option<Instance>>,
    /// A fault lost the instance: no stream is placed here any more.
    lost: AtomicBool,
    /// Resources of streams that ended without `finish`, dropped in the
    /// guest before the next call.
    pub(crate) orphans: Mutex<Vec<ResourceAny>>,
    /// This host's slot in the stream-host budget.
    _slot: OwnedSemaphorePermit,
}

impl StreamHosts {
    /// The hosts of an adapter version: [`STREAMS_PER_HOST`] streams each,
    /// or one each without instance reuse (no guest memory shared between
    /// requests); spread over four hosts per core of `parallelism`, so
    /// concurrent pushes seldom wait for one another.
    pub(crate) fn new(reuse_instances: bool, parallelism: usize) -> Self {
        Self {
            seats: Mutex::new(Vec::new()),
            per_host: if reuse_instances { STREAMS_PER_HOST } else { 1 },
            spread: parallelism * 4,
        }
    }

    /// A seat for a new stream ([`choose`]), a new host taking a slot of
    /// `budget`. `None`: no host has room and the budget allows no new one.
    pub(crate) fn place(&self, budget: &Arc<Semaphore>) -> Option<Arc<StreamHost>> {
        let mut seats = self.seats.lock().unwrap_or_else(PoisonError::into_inner);
        let choice = choose(&seats, self.per_host, self.spread);
        let fallback = match choice {
            Choice::On(i) => Some(i),
            Choice::New { fallback } => match budget.clone().try_acquire_owned() {
                Ok(slot) => {
                    let host = Arc::new(StreamHost::new(slot));
                    seats.push(Seats { host: host.clone(), open: 1, placed: 1 });
                    return Some(host);
                }
                Err(_) => fallback,
            },
        };
        let s = &mut seats[fallback?];
        s.open += 1;
        s.placed += 1;
        Some(s.host.clone())
    }

    /// A stream on `host` ended: its seat is free, and the host is dropped
    /// when [`drop_when_empty`] says so.
    pub(crate) fn leave(&self, host: &Arc<StreamHost>) {
        let mut seats = self.seats.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(i) = seats.iter().position(|s| Arc::ptr_eq(&s.host, host)) else { return };
        seats[i].open = seats[i].open.saturating_sub(1);
        if drop_when_empty(&seats[i], seats.len(), self.per_host, self.spread) {
            seats.swap_remove(i);
        }
    }

    /// Hosts alive (for status and tests).
    pub(crate) fn count(&self) -> usize {
        self.seats.lock().map_or(0, |s| s.len())
    }
}

impl StreamHost {
    /// A host with no instance yet, holding `slot` of the budget.
    fn new(slot: OwnedSemaphorePermit) -> Self {
        Self {
            instance: tokio::sync::Mutex::new(None),
            lost: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            _slot: slot,
        }
    }

    /// A fault lost the instance: no stream is placed here any more.
    pub(crate) fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Whether a fault (or an abandoned call) lost the instance.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

/// Loses a host when dropped armed: a call on it did not finish.
pub(crate) struct LoseOnDrop<'h>(pub(crate) Option<&'h StreamHost>);

impl LoseOnDrop<'_> {
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for LoseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(host) = self.0 {
            host.lose();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(open: u32, placed: u32) -> Seats {
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a permit");
        Seats { host: Arc::new(StreamHost::new(slot)), open, placed }
    }

    fn lost(open: u32) -> Seats {
        let s = seat(open, open);
        s.host.lose();
        s
    }

    #[test]
    fn streams_spread_over_new_hosts_first_then_share_the_least_busy() {
        assert_eq!(choose(&[], 32, 4), Choice::New { fallback: None });
        // Fewer hosts than the spread: a busy host gets no second stream
        // while a new host may be made; an idle one is used.
        assert_eq!(choose(&[seat(1, 1)], 32, 4), Choice::New { fallback: Some(0) });
        assert_eq!(choose(&[seat(1, 1), seat(0, 3)], 32, 4), Choice::On(1));
        // The spread reached: the least busy host.
        let four = [seat(2, 2), seat(1, 1), seat(3, 3), seat(1, 1)];
        assert_eq!(choose(&four, 32, 4), Choice::On(1));
        // Every host full: a new one, nothing to fall back on.
        let full = [seat(32, 32), seat(32, 40)];
        assert_eq!(choose(&full, 32, 2), Choice::New { fallback: None });
    }

    #[test]
    fn lost_and_retired_hosts_take_no_stream() {
        let seats = [lost(1), seat(0, STREAMS_PER_HOST_LIFE), seat(5, 5)];
        assert_eq!(choose(&seats, 32, 3), Choice::On(2));
        let none = [lost(0), seat(1, STREAMS_PER_HOST_LIFE)];
        assert_eq!(choose(&none, 32, 2), Choice::New { fallback: None });
    }

    #[test]
    fn without_reuse_every_stream_gets_its_own_host() {
        assert_eq!(choose(&[seat(1, 1), seat(1, 1)], 1, 2), Choice::New { fallback: None });
        assert!(drop_when_empty(&seat(0, 1), 1, 1, 8), "a one-stream host goes with its stream");
    }

    #[test]
    fn a_call_abandoned_half_way_loses_its_host() {
        let finished = seat(1, 1);
        LoseOnDrop(Some(&finished.host)).disarm();
        assert!(!finished.host.is_lost());
        let abandoned = seat(1, 1);
        drop(LoseOnDrop(Some(&abandoned.host)));
        assert!(abandoned.host.is_lost());
        assert_eq!(choose(&[abandoned], 32, 1), Choice::New { fallback: None }, "no stream goes there");
    }

    #[test]
    fn an_empty_host_is_kept_ready_up_to_the_spread() {
        assert!(!drop_when_empty(&seat(1, 2), 9, 32, 8), "a host with a stream stays");
        assert!(!drop_when_empty(&seat(0, 2), 8, 32, 8), "kept ready");
        assert!(drop_when_empty(&seat(0, 2), 9, 32, 8), "more hosts than the spread");
        assert!(drop_when_empty(&lost(0), 1, 32, 8), "lost");
        assert!(drop_when_empty(&seat(0, STREAMS_PER_HOST_LIFE), 1, 32, 8), "retired");
    }
}
