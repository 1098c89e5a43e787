//! Stream sessions: one streaming answer's normalizer, on a stream host
//! shared with other streams of the same adapter version
//! ([`super::stream_hosts`] says where it goes).
//!
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

use std::sync::{Arc, PoisonError};
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::ResourceAny;

use super::adapter::{Adapter, AdapterFault, FaultKind};
use super::bindings::types::{CallContext, Failure, ResponseHead, StreamEvent, StreamOutput};
use super::sandbox::Instance;
use super::stream_hosts::{LoseOnDrop, StreamHost};

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
        let Some(host) = self.stream_hosts.place(&self.engine.stream_hosts) else {
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
        let settings = self.settings();
        let mut instance = host.instance.lock().await;
        if instance.is_none() {
            if host.is_lost() {
                return Err(session.lost());
            }
            // Boxed, as in `Adapter::checkout`: a rare path with a large future.
            match Box::pin(self.instantiate(&ctx.request_id)).await {
                Ok(fresh) => *instance = Some(fresh),
                Err(fault) => {
                    host.lose();
                    return Err(fault);
                }
            }
        }
        let handle = session
            .call(&mut instance, async |i| i.provider.open_stream(&mut i.store, ctx, settings, head).await)
            .await?;
        session.handle = Some(handle);
        Ok(session)
    }

    /// Stream hosts alive for this version (for status and tests).
    pub fn stream_hosts(&self) -> usize {
        self.stream_hosts.count()
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
        self.adapter.stream_hosts.leave(&self.host);
    }
}
