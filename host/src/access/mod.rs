//! Who may call: the master and admin keys, virtual keys, browser tokens.
//!
//! - [`auth`]: credentials and the principal a request carries.
//! - [`tokens`]: short-lived browser tokens minted for one origin.
//! - [`virtual_keys`]: operator-issued sub-keys with caps and usage.

pub mod auth;
pub mod tokens;
pub mod virtual_keys;
