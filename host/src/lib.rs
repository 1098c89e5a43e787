//! FreeLLM: an OpenAI-compatible gateway that routes chat requests across
//! free LLM tiers, with every provider adapter a sandboxed WebAssembly
//! component.
//!
//! Follow a request: [`http::server`] (middleware: [`http::guard`] with
//! [`access`], [`http::cors`]) → [`http::api::chat`] (read the body as [`json`], validate with
//! [`validate`], plan with [`routing::router`], walk the plan in
//! [`routing::failover`]: a provider from [`providers`], a key from
//! [`providers::keys`], the adapter through `freellm_runtime`, the request
//! through [`routing::upstream`], a stream relayed by [`routing::stream`])
//! → the answer or an error rendered by [`http::error`]; [`ops`] counts,
//! publishes and persists what happened. [`state`] holds the gateway's
//! state in tiers; `docs/architecture.md` has the map.

// The host's docs are for the people working on it: module docs name the
// private functions a request goes through (read them with
// `cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

pub mod access;
pub mod clock;
pub mod config;
pub mod fleet;
pub mod http;
pub mod json;
pub mod live;
pub mod ops;
pub mod providers;
pub mod redact;
pub mod routing;
pub mod state;
pub mod validate;

#[cfg(test)]
mod core_tests;
#[cfg(test)]
mod testing;
