//! FreeLLM: an OpenAI-compatible gateway that routes chat requests across
//! free LLM tiers, with every provider adapter a sandboxed WebAssembly
//! component.
//!
//! Follow a request: [`server`] (middleware, routes) → [`api::chat`]
//! (validate with [`validate`], plan with [`router`], pick a key from
//! [`keys`], call the adapter in [`plugins`], send with [`upstream`], relay
//! streams with [`stream`] and [`sse`]) → errors rendered by [`error`].

pub mod api;
pub mod breaker;
pub mod config;
pub mod error;
pub mod failover;
pub mod keys;
pub mod plugins;
pub mod quota;
pub mod redact;
pub mod router;
pub mod server;
pub mod sse;
pub mod state;
pub mod stats;
pub mod stream;
pub mod upstream;
pub mod validate;
