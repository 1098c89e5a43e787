//! The adapter runtime: provider adapters as sandboxed WebAssembly components.
//! It knows nothing of HTTP, routing or keys: the host (`freellm`) holds the
//! provider table and calls adapters through [`Adapter`].
//!
//! - [`engine`]: the one wasmtime engine (pooling allocator, epoch ticker, linker).
//! - [`loader`]: compile with an on-disk cache, sandbox policy, contract check.
//! - [`sandbox`]: the deny-all store each call runs in.
//! - [`adapter`]: a configured adapter version and the calls into it.
//! - [`stream_hosts`]: where open streams keep their normalizers (instances shared by several streams).
//! - [`stream`]: a stream's session: its normalizer's calls on a stream host.
//! - [`framing`]: upstream stream bytes into events (SSE or NDJSON), for the
//!   host's relay and `plugin bench`.
//! - [`splice`]: an adapter's request body checked and assembled for sending
//!   (ranges of the client's body shared, not copied).
//! - [`check`]: `freellm plugin check`, conformance and fixtures against a component.

// Module docs name private items (how the stream hosts choose and end) for
// the people working on the runtime: `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod adapter;
pub mod bench;
pub mod bindings;
pub mod check;
pub mod engine;
pub mod framing;
pub mod loader;
pub mod sandbox;
pub mod scaffold;
pub mod splice;
pub mod stream;
pub mod stream_hosts;

pub use adapter::{Adapter, AdapterFault, FaultKind};
pub use bindings::{ContractVersion, types};
pub use engine::{DEFAULT_OPEN_STREAMS, MAX_MEMORY_BYTES, MAX_OPEN_STREAMS, PluginEngine};
pub use loader::LoadError;
pub use sandbox::SandboxLimits;
pub use splice::{SpliceError, UpstreamBody};
pub use stream::StreamSession;
