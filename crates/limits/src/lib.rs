//! FreeLLM's limits: pure state machines with injected time, free of I/O and
//! of the gateway's types, so each is tested in isolation.
//!
//! - [`breaker`]: a provider's circuit breaker (closed, open, half-open probes).
//! - [`quota`]: a key's rate windows (requests and tokens per minute and day).
//! - [`identifier`]: sliding-window limits per client identifier or IP.

pub mod breaker;
pub mod identifier;
pub mod quota;
