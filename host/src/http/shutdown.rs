//! The drain signal of a graceful shutdown, kept apart from the server so
//! the gateway's state can hold it without importing the server.

use tokio::sync::watch;

/// The drain deadline, as open streams see it.
pub struct Drain(watch::Sender<bool>);

impl Default for Drain {
    fn default() -> Self {
        Self(watch::channel(false).0)
    }
}

impl Drain {
    /// A receiver that turns `true` once open streams must end.
    pub fn streams_cutoff(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }

    /// Ends open streams (each sends a `shutdown` error event).
    pub fn cut_streams(&self) {
        self.0.send_replace(true);
    }
}
