//! The HTTP edge: the server and its middleware, the endpoint handlers, the
//! guard every request passes, CORS, and the error envelope clients see.
//!
//! - [`server`]: listener, connection limits, middleware stack, graceful shutdown.
//! - [`shutdown`]: the drain signal open streams watch.
//! - [`guard`]: authentication, admin-only endpoints, per-IP and per-identifier limits.
//! - [`hosts`]: the `Host` allowlist (DNS rebinding).
//! - [`cors`]: the origin allowlist.
//! - [`clients`]: the per-client policy (CORS origins, per-IP and per-identifier limiters), swapped live.
//! - [`api`]: one handler module per endpoint family.
//! - [`error`]: [`error::ApiError`], rendered as `{"error":{…}}` in one place.

pub mod api;
pub mod clients;
pub mod cors;
pub mod error;
pub mod guard;
pub mod hosts;
pub mod server;
pub mod shutdown;
