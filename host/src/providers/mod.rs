//! The provider table: every configured provider slot with its adapter
//! version, keys, breakers and stats, as one immutable snapshot.
//!
//! - [`registry`]: the snapshot, how a slot is assembled and its canary.
//! - [`keys`]: a provider's API keys, their windows and cooldowns.
//! - [`health`]: a provider's circuit breakers, one per model.
//! - [`keys_file`]: provider keys from a watched file, besides the environment.

pub mod health;
pub mod keys;
pub mod keys_file;
pub mod registry;

pub use registry::{ProviderEntry, Registry};
