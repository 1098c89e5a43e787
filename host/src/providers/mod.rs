//! The provider table: every configured provider slot with its adapter
//! version, keys, breaker and stats, as one immutable snapshot.
//!
//! - [`registry`]: the snapshot, how a slot is assembled and its canary.
//! - [`keys`]: a provider's API keys, their windows and cooldowns.

pub mod keys;
pub mod registry;

pub use registry::{ProviderEntry, Registry};
