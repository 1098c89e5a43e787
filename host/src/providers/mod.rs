//! The provider table: every configured provider slot with its adapter
//! version, keys, breaker and stats, as one immutable snapshot.
//!
//! - [`registry`]: the snapshot, how a slot is assembled and its canary.
//! - [`keys`]: a provider's API keys, their windows and cooldowns.
//! - [`keys_file`]: provider keys from a watched file, besides the environment.

pub mod keys;
pub mod keys_file;
pub mod registry;

pub use registry::{ProviderEntry, Registry};
