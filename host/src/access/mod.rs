//! Who may call: the master and admin keys, virtual keys, browser tokens.
//!
//! - [`admission`]: the client's limits as decided, and the gate a request
//!   waits at when they are decided while it is routed (a fleet).
//! - [`auth`]: credentials and the principal a request carries.
//! - [`tokens`]: short-lived browser tokens minted for one origin.
//! - [`virtual_keys`]: operator-issued sub-keys with caps and usage.

pub mod admission;
pub mod auth;
pub mod tokens;
pub mod virtual_keys;
