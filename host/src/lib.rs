//! FreeLLM: an OpenAI-compatible gateway that routes chat requests across
//! free LLM tiers, with every provider adapter a sandboxed WebAssembly
//! component.
//!
//! Follow a request: [`server`] (middleware, routes) → [`api::chat`]
//! (validate with [`validate`], plan with [`router`], pick a key from
//! [`keys`], call the adapter in [`plugins`], send with [`upstream`], relay
//! streams with [`stream`] and [`sse`]) → errors rendered by [`error`].

pub mod api;
pub mod auth;
pub mod breaker;
pub mod cache;
pub mod clock;
pub mod config;
pub mod cors;
pub mod decide;
pub mod error;
pub mod events;
pub mod failover;
pub mod guard;
pub mod identifier;
pub mod keys;
pub mod metrics;
pub mod persist;
pub mod plugins;
pub mod quota;
pub mod redact;
pub mod reload;
pub mod router;
pub mod routing_error;
pub mod server;
pub mod sse;
pub mod state;
pub mod stats;
pub mod store;
pub mod stream;
pub mod tokens;
pub mod upstream;
pub mod validate;
pub mod virtual_keys;

#[cfg(test)]
mod core_tests;
#[cfg(test)]
mod testing;
