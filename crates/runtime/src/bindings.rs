//! Host bindings generated from the contract in `wit/` (`freellm:provider@0.1.0`).
//!
//! Exports are called through wasmtime's async API: wasmtime-wasi's sync
//! bindings block on an internal runtime and must not run inside tokio tasks.

wasmtime::component::bindgen!({
    world: "provider",
    path: "../../wit",
    exports: { default: async },
});

pub use self::exports::freellm::provider::adapter as guest;
pub use self::freellm::provider::types;
