//! Stream normalizers and the instances they share.
//!
//! A streaming answer keeps its `stream-normalizer` resource for its whole
//! life: seconds to minutes, almost all of it waiting on the network. One
//! instance per stream cost ~166 KiB of resident memory each and capped
//! the open streams at the pool's size. A normalizer is a resource, so one
//! instance holds many: an instance that serves streams (a *stream host*)
//! takes up to [`STREAMS_PER_HOST`] open streams of one adapter version at
//! once, and their calls take turns on it (a push is a few microseconds).
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
//! * **Ending.** `finish` drops the stream's resource in the guest; a
//!   session dropped without it (the client left, the stream was cut)
//!   leaves its resource to be dropped before the host's next call.
//! * **Faults.** A trap, a CPU-deadline or a memory-cap hit in any call
//!   loses the host: its instance is never entered again, and the other
//!   streams on it end with a fault at their next call (at most
//!   `STREAMS_PER_HOST - 1` streams of the same provider). New streams go
//!   to a fresh host. So does a call abandoned half-way (its future
//!   dropped: the instance is in no known state). With `reuse_instances`
//!   off, every stream has a host of its own: no guest memory is shared
//!   between requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::ResourceAny;

use super::adapter::{Adapter, AdapterFault, FaultKind, Instance};
use super::bindings::types::{CallContext, Failure, ResponseHead, StreamEvent, StreamOutput};

/// Open streams one instance serves at once.
pub const STREAMS_PER_HOST: u32 = 32;

/// Streams a host serves over its life before it takes no more.
const STREAMS_PER_HOST_LIFE: u32 = 10_000;

/// Streams one host of `adapter` takes: one each without instance reuse.
fn seats_per_host(adapter: &Adapter) -> u32 {
    if adapter.limits.reuse_instances { STREAMS_PER_HOST } else { 1 }
}

/// Hosts streams are spread over before any host takes a second stream,
/// and kept ready when idle: four per core, so concurrent pushes seldom
/// wait for one another.
fn hosts_to_spread(adapter: &Adapter) -> usize {
    adapter.engine.warm_per_adapter * 4
}

/// The stream hosts of one adapter version.
#[derive(Default)]
pub(crate) struct StreamHosts {
    seats: Mutex<Vec<Seats>>,
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
        .filter(|(_, s)| s.open < per_host && s.placed < STREAMS_PER_HOST_LIFE && !s.host.lost.load(Ordering::Acquire))
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
    s.open == 0 && (retired || s.host.lost.load(Ordering::Acquire) || hosts > spread)
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
    instance: tokio::sync::Mutex<Option<Instance>>,
    /// A fault lost the instance: no stream is placed here any more.
    lost: AtomicBool,
    /// Resources of streams that ended without `finish`, dropped in the
    /// guest before the next call.
    orphans: Mutex<Vec<ResourceAny>>,
    /// This host's slot in the stream-host budget.
    _slot: OwnedSemaphorePermit,
}

impl StreamHosts {
    /// A seat for a new stream ([`choose`]). `None`: no host has room and
    /// the budget allows no new one.
    fn place(&self, adapter: &Adapter) -> Option<Arc<StreamHost>> {
        let mut seats = self.seats.lock().unwrap_or_else(PoisonError::into_inner);
        let choice = choose(&seats, seats_per_host(adapter), hosts_to_spread(adapter));
        let fallback = match choice {
            Choice::On(i) => Some(i),
            Choice::New { fallback } => match adapter.engine.stream_hosts.clone().try_acquire_owned() {
                Ok(slot) => {
                    let host = Arc::new(StreamHost {
                        instance: tokio::sync::Mutex::new(None),
                        lost: AtomicBool::new(false),
                        orphans: Mutex::new(Vec::new()),
                        _slot: slot,
                    });
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
    fn leave(&self, host: &Arc<StreamHost>, adapter: &Adapter) {
        let mut seats = self.seats.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(i) = seats.iter().position(|s| Arc::ptr_eq(&s.host, host)) else { return };
        seats[i].open = seats[i].open.saturating_sub(1);
        if drop_when_empty(&seats[i], seats.len(), seats_per_host(adapter), hosts_to_spread(adapter)) {
            seats.swap_remove(i);
        }
    }

    /// Hosts alive (for status and tests).
    pub(crate) fn count(&self) -> usize {
        self.seats.lock().map_or(0, |s| s.len())
    }
}

impl Adapter {
    /// Starts a stream normalizer for a 2xx streaming answer, on a host
    /// shared with other streams of this version (module docs).
    pub async fn open_stream(
        self: &Arc<Self>,
        ctx: &CallContext,
        head: &ResponseHead,
    ) -> Result<StreamSession, AdapterFault> {
        let Ok(slot) = self.engine.stream_slots.clone().try_acquire_owned() else {
            return Err(self.busy(&ctx.request_id, "every open-stream slot is in use"));
        };
        let Some(host) = self.stream_hosts.place(self) else {
            return Err(self.busy(&ctx.request_id, "every stream host slot is in use"));
        };
        // From here the seat is given back when the session drops.
        let mut session = StreamSession {
            adapter: self.clone(),
            host,
            handle: None,
            request_id: ctx.request_id.clone(),
            _slot: slot,
        };
        let host = session.host.clone();
        let mut instance = host.instance.lock().await;
        if instance.is_none() {
            if host.lost.load(Ordering::Acquire) {
                return Err(session.lost());
            }
            match self.instantiate(&ctx.request_id).await {
                Ok(fresh) => *instance = Some(fresh),
                Err(fault) => {
                    host.lose();
                    return Err(fault);
                }
            }
        }
        let handle =
            session.call(&mut instance, async |i| i.provider.open_stream(&mut i.store, ctx, head).await).await?;
        session.handle = Some(handle);
        Ok(session)
    }

    /// Stream hosts alive for this version (for status and tests).
    pub fn stream_hosts(&self) -> usize {
        self.stream_hosts.count()
    }
}

impl StreamHost {
    /// A fault lost the instance: no stream is placed here any more.
    fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }
}

/// Loses a host when dropped armed: a call on it did not finish.
struct LoseOnDrop<'h>(Option<&'h StreamHost>);

impl LoseOnDrop<'_> {
    fn disarm(mut self) {
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

/// One streaming answer's normalizer, on a shared host.
pub struct StreamSession {
    adapter: Arc<Adapter>,
    host: Arc<StreamHost>,
    /// The guest's `stream-normalizer`; `None` once dropped (after
    /// `finish`) or before the constructor returned.
    handle: Option<ResourceAny>,
    request_id: String,
    /// The open-stream slot, given back when the stream ends.
    _slot: OwnedSemaphorePermit,
}

impl StreamSession {
    /// Normalizes the events of one network read.
    pub async fn push(&mut self, events: &[StreamEvent]) -> Result<Result<StreamOutput, Failure>, AdapterFault> {
        let host = self.host.clone();
        let mut instance = host.instance.lock().await;
        let Some(handle) = self.handle else { return Err(self.lost()) };
        self.call(&mut instance, async |i| i.provider.push(&mut i.store, handle, events).await).await
    }

    /// Flushes the normalizer at upstream EOF and drops it in the guest.
    pub async fn finish(&mut self) -> Result<Result<StreamOutput, Failure>, AdapterFault> {
        let host = self.host.clone();
        let mut instance = host.instance.lock().await;
        let Some(handle) = self.handle else { return Err(self.lost()) };
        let out = self
            .call(&mut instance, async |i| {
                let out = i.provider.finish(&mut i.store, handle).await?;
                handle.resource_drop_async(&mut i.store).await?;
                Ok(out)
            })
            .await;
        self.handle = None;
        out
    }

    /// One call on the host's instance, after the resources of streams
    /// that ended without `finish` are dropped. A fault loses the host.
    async fn call<R>(
        &self,
        slot: &mut Option<Instance>,
        call: impl AsyncFnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, AdapterFault> {
        let Some(mut instance) = slot.take() else { return Err(self.lost()) };
        // A call abandoned half-way (its future dropped) leaves the
        // instance in no known state: the host is lost with it.
        let abandoned = LoseOnDrop(Some(&self.host));
        let orphans = std::mem::take(&mut *self.host.orphans.lock().unwrap_or_else(PoisonError::into_inner));
        let started = Instant::now();
        instance.begin(&self.adapter.limits);
        let mut result = Ok(());
        for orphan in orphans {
            result = orphan.resource_drop_async(&mut instance.store).await;
            if result.is_err() {
                break;
            }
        }
        let result = match result {
            Ok(()) => call(&mut instance).await,
            Err(e) => Err(e),
        };
        let out = self.adapter.record(&self.request_id, started, result, &instance.store);
        abandoned.disarm();
        if out.is_ok() {
            *slot = Some(instance);
        } else {
            // Never entered again: dropping the store resets its pool slot.
            self.host.lose();
        }
        out
    }

    /// The fault of a stream whose host a fault of another stream lost.
    fn lost(&self) -> AdapterFault {
        AdapterFault {
            adapter: self.adapter.id.clone(),
            version: self.adapter.info.adapter_version.clone(),
            kind: FaultKind::Other,
            request_id: self.request_id.clone(),
            detail: "the instance this stream shared was lost to the fault of another call on it (logged under that call's request id)"
                .into(),
        }
    }
}

impl Drop for StreamSession {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.host.orphans.lock().unwrap_or_else(PoisonError::into_inner).push(handle);
        }
        self.adapter.stream_hosts.leave(&self.host, &self.adapter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(open: u32, placed: u32) -> Seats {
        let slot = Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().expect("a permit");
        let host = Arc::new(StreamHost {
            instance: tokio::sync::Mutex::new(None),
            lost: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            _slot: slot,
        });
        Seats { host, open, placed }
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
        assert!(!finished.host.lost.load(Ordering::Acquire));
        let abandoned = seat(1, 1);
        drop(LoseOnDrop(Some(&abandoned.host)));
        assert!(abandoned.host.lost.load(Ordering::Acquire));
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
