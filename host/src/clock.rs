//! The routing path's clock.
//!
//! Breakers, key rings and quota windows take `now` as a parameter; the
//! routing path reads it here. In production this is the monotonic clock;
//! under `tokio::time::pause` (the in-process tests) it is the runtime's
//! paused clock, so cooldowns, open periods and deadlines pass in
//! milliseconds of test time.

use std::time::Instant;

/// The current instant, as the Tokio runtime's clock sees it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
