//! The response body of a committed stream, driven by the relay itself.
//!
//! The client connection's task polls the body; the body polls the relay
//! future, which reads the upstream, normalizes and hands over one batch of
//! bytes at a time through an [`Outbox`] of one slot. A chunk thus goes from
//! the upstream read to the client write with no task of its own and no
//! channel between them.
//!
//! * **Back-pressure.** A relay that hands over bytes waits until the body
//!   gives them to the connection, which asks for more only when it has
//!   written what it had: a client that reads slowly slows the upstream
//!   read, as the TCP window would. A client that stops reading altogether
//!   is bounded by the server's write-stall timeout
//!   (`FREELLM_WRITE_STALL_TIMEOUT_MS`), which closes its connection.
//! * **A client that goes away.** When the connection drops the body with
//!   the relay unfinished, the relay is moved to a task of its own and its
//!   next hand-over fails, so it ends as it always did for a departed
//!   client: the provider's verdict, the usage, the caller's reservation
//!   and the log line. A relay is never dropped half-way through an adapter
//!   call (which would lose the instance the call runs on, and the other
//!   streams sharing it).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::{Body, Frame};

/// The relay's half: hands bytes to the body.
pub struct Outbox {
    shared: Arc<Slot>,
}

/// One batch of bytes between the relay and the body, and whether the body
/// is gone.
#[derive(Default)]
struct Slot {
    bytes: Mutex<Option<Bytes>>,
    closed: AtomicBool,
}

impl Slot {
    fn take(&self) -> Option<Bytes> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The client is gone: nothing more can reach it.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientGone;

impl Outbox {
    /// Hands `bytes` to the client's connection; resolves once the
    /// connection has taken them, or with [`ClientGone`].
    pub fn send(&self, bytes: Bytes) -> Handover<'_> {
        Handover { shared: &self.shared, bytes: Some(bytes) }
    }
}

/// The future of [`Outbox::send`].
pub struct Handover<'a> {
    shared: &'a Slot,
    bytes: Option<Bytes>,
}

impl Future for Handover<'_> {
    type Output = Result<(), ClientGone>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shared = self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(ClientGone));
        }
        let mut slot = shared.bytes.lock().unwrap_or_else(|e| e.into_inner());
        match self.bytes.take() {
            // Placed; the body returns them as soon as this poll ends and
            // polls the relay again when the connection wants more, so no
            // waker is needed.
            Some(bytes) if slot.is_none() => {
                *slot = Some(bytes);
                Poll::Pending
            }
            // Cannot happen (one relay, one send at a time); keep the bytes
            // and wait rather than overwrite.
            Some(bytes) => {
                drop(slot);
                self.bytes = Some(bytes);
                Poll::Pending
            }
            None if slot.is_none() => Poll::Ready(Ok(())),
            None => Poll::Pending,
        }
    }
}

type Relay = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A stream's response body: polls the relay future for the next bytes.
pub struct RelayBody {
    relay: Option<Relay>,
    shared: Arc<Slot>,
}

impl RelayBody {
    /// The body that drives the relay `make` builds around the outbox it
    /// is given.
    pub fn new<F>(make: impl FnOnce(Outbox) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shared = Arc::new(Slot::default());
        let relay = make(Outbox { shared: shared.clone() });
        Self { relay: Some(Box::pin(relay)), shared }
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(bytes) = self.shared.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(relay) = self.relay.as_mut() else { return Poll::Ready(None) };
        let finished = relay.as_mut().poll(cx).is_ready();
        if finished {
            self.relay = None;
        }
        match self.shared.take() {
            Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            None if finished => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.relay.is_none() && self.shared.bytes.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // The client left mid-stream: the relay finishes on its own (its
        // next hand-over fails), so its bookkeeping runs and an adapter call
        // in progress completes.
        if let Some(relay) = self.relay.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(relay);
        }
    }
}

#[cfg(test)]
mod tests;
