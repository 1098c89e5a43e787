//! The end-to-end suite, one test binary: the real gateway binary with real
//! components against local mock upstreams. Each module is one concern
//! (`cargo test -p freellm-e2e --test e2e fleet_health::` runs one). One
//! binary rather than one per file: the shared harness and its dependencies
//! are compiled and linked once, not 28 times.

mod chat;
mod cohere;
mod contract_versions;
mod errors;
mod failover_contract;
mod fleet_cache;
mod fleet_caps;
mod fleet_health;
mod fleet_setup;
mod fleet_state;
mod hotswap;
mod meta_models;
mod observability;
mod other_language;
mod plugin_bench;
mod plugin_cache;
mod plugin_check;
mod provider_keys;
mod providers;
mod routing;
mod sandbox;
mod scaffold;
mod security_access;
mod security_edge;
mod security_redaction;
mod security_streams;
mod settings_file;
mod swap_correctness;
mod tenancy;
mod upstream_tls;
