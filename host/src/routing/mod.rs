//! Where a chat request goes and how it gets an answer.
//!
//! - [`needs`]: what a request needs from a provider, read once from its body.
//! - [`router`]: a route (client-visible model name) to ordered targets, filtered and ordered into a plan.
//! - [`meta`]: the built-in meta-models, picked from what the adapters declare (tags, default model) in the operator's priority.
//! - [`pattern`]: glob route names and target placeholders (`{model}`, `{1}`).
//! - [`strategy`]: how a route orders its candidates.
//! - [`created`]: fills a `created` timestamp an adapter left 0.
//! - [`decide`]: the pure failover policy: what a failed attempt leads to.
//! - [`error`]: the routing error (what failed, from which source, whether retryable).
//! - [`failover`]: walks the plan's candidates until one answers.
//! - [`upstream`]: the pooled HTTP client and per-attempt timeouts.
//! - [`connector`]: how that client connects (TCP, or TLS with its session boxed).
//! - [`stream`]: relays a streaming answer (its bytes framed by
//!   `freellm_runtime::framing`) and resumes a cut one.
//! - [`relay_body`]: a stream's response body, which drives its relay (no task or channel per stream).
//! - [`attempt`]: one attempt's phases (acquire, send, classify, report), shared by failover and a stream's continuation.
//! - [`cache`]: answers identical non-streaming requests from memory.

pub mod attempt;
pub mod cache;
pub mod connector;
pub mod created;
pub mod decide;
pub mod error;
pub mod failover;
pub mod meta;
pub mod needs;
pub mod pattern;
pub mod relay_body;
pub mod router;
pub mod strategy;
pub mod stream;
pub mod upstream;
