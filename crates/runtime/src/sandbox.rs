//! The sandbox of an adapter instance: a deny-all WASI context, memory
//! limits, a CPU deadline and a small captured stderr.
//!
//! A trap poisons nothing but the instance that trapped: it is dropped and
//! its pool slot reset. Whether a healthy instance serves further calls is
//! [`SandboxLimits::reuse_instances`] (see [`super::adapter`]).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Bindings, v0_1, v0_2, v0_3};

/// How often the engine's epoch advances; the unit of every CPU deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of guest stderr kept for the log when a call fails.
const STDERR_CAPTURE: usize = 8 << 10;
/// Longest guest log line passed on.
const MAX_LOG_LINE: usize = 2048;
/// Guest log lines passed on per call; the rest are dropped.
const MAX_LOG_LINES: u32 = 32;

/// Per-adapter sandbox limits, from `plugins.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// CPU time one call may take.
    pub cpu_time: Duration,
    /// Whether a healthy instance may serve later calls (warm instances) or
    /// every call gets a fresh one (no guest memory outlives a call, at the
    /// price of an instantiation and a slot reset per call).
    pub reuse_instances: bool,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self { memory_bytes: 64 << 20, cpu_time: Duration::from_millis(250), reuse_instances: true }
    }
}

/// The store's resource limiter: the configured caps, plus the size the
/// instance's linear memory has grown to (an instance that grew large is not
/// kept warm).
struct Limiter {
    caps: StoreLimits,
    memory_bytes: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.caps.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes = self.memory_bytes.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.caps.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.caps.instances()
    }

    fn tables(&self) -> usize {
        self.caps.tables()
    }

    fn memories(&self) -> usize {
        self.caps.memories()
    }
}

/// What a store holds: the empty WASI context and the call's bookkeeping.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    stderr: MemoryOutputPipe,
    adapter_id: Arc<str>,
    log_lines: u32,
}

impl CallState {
    /// What the guest wrote to stderr (a panic message, usually).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim_end().to_owned()
    }

    /// Whether the guest wrote anything to stderr.
    pub fn wrote_stderr(&self) -> bool {
        !self.stderr.contents().is_empty()
    }

    /// The size the instance's linear memory has grown to, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.limits.memory_bytes
    }

    /// Starts the count of log lines of a new call.
    pub fn new_call(&mut self) {
        self.log_lines = 0;
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl v0_3::freellm::provider::host::Host for CallState {
    fn log(&mut self, level: v0_3::freellm::provider::host::LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        use v0_3::freellm::provider::host::LogLevel;
        let message = truncate(&message, MAX_LOG_LINE);
        let adapter = &*self.adapter_id;
        match level {
            LogLevel::Debug => tracing::debug!(adapter, "{message}"),
            LogLevel::Info => tracing::info!(adapter, "{message}"),
            LogLevel::Warn => tracing::warn!(adapter, "{message}"),
            LogLevel::Error => tracing::error!(adapter, "{message}"),
        }
    }
}

/// An older adapter's log line goes the same way as a 0.3 one's: `$version`
/// is its bindings module.
macro_rules! log_as_newest {
    ($version:ident) => {
        impl $version::freellm::provider::host::Host for CallState {
            fn log(&mut self, level: $version::freellm::provider::host::LogLevel, message: String) {
                use v0_3::freellm::provider::host::LogLevel as New;
                use $version::freellm::provider::host::LogLevel as Old;
                let level = match level {
                    Old::Debug => New::Debug,
                    Old::Info => New::Info,
                    Old::Warn => New::Warn,
                    Old::Error => New::Error,
                };
                v0_3::freellm::provider::host::Host::log(self, level, message);
            }
        }
    };
}

log_as_newest!(v0_1);
log_as_newest!(v0_2);

/// Makes a store with no capabilities: no environment, arguments, preopened
/// directories or network; stdin empty, stdout discarded, stderr captured.
pub fn new_store(engine: &Engine, adapter_id: &Arc<str>, limits: SandboxLimits) -> Store<CallState> {
    let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
    let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
    let state = CallState {
        wasi,
        table: ResourceTable::new(),
        limits: Limiter {
            caps: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(8)
                .tables(8)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            memory_bytes: 0,
        },
        stderr,
        adapter_id: adapter_id.clone(),
        log_lines: 0,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // A new store's deadline is 0, which would trap at once.
    store.set_epoch_deadline(ticks_for(limits.cpu_time));
    store
}

/// Converts a CPU budget to epoch ticks (at least two, so a deadline set
/// just before a tick still leaves one full tick).
pub fn ticks_for(cpu: Duration) -> u64 {
    (cpu.as_millis() as u64).div_ceil(EPOCH_TICK.as_millis() as u64) + 1
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One instantiated adapter: its store and bindings, and the calls it served.
pub(crate) struct Instance {
    pub(crate) store: Store<CallState>,
    pub(crate) provider: Bindings,
    pub(crate) calls: u32,
}

impl Instance {
    /// Before each call: the CPU deadline set, the per-call counters reset.
    pub(crate) fn begin(&mut self, limits: &SandboxLimits) {
        self.store.set_epoch_deadline(ticks_for(limits.cpu_time));
        self.store.data_mut().new_call();
    }
}
