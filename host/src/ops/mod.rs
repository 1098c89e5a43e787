//! Running the gateway: what it counts, tells and keeps.
//!
//! - [`stats`]: per-provider counters, token usage and the recent-request log.
//! - [`metrics`]: the Prometheus exposition.
//! - [`events`]: the live event bus behind `GET /v1/events`.
//! - [`store`]: the embedded database file.
//! - [`persist`]: which counters survive a restart, and the snapshot task.
//! - [`reload`]: hot swap of adapters and routes.

pub mod events;
pub mod metrics;
pub mod persist;
pub mod reload;
pub mod stats;
pub mod store;
