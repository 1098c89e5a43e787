//! The one wasmtime engine of the process and everything configured once with it.
//!
//! The engine owns the compiler, the pooling allocator and the epoch counter
//! that bounds CPU time. A background thread advances the epoch every
//! [`EPOCH_TICK`]; each call sets its deadline in ticks
//! ([`super::sandbox::ticks_for`]). The linker offers
//! WASI p2 (deny-all contexts are built per call in [`super::sandbox`]) and the
//! contract's tiny `host` interface, once per supported contract version.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{v0_1, v0_2, v0_3};
use super::sandbox::{CallState, EPOCH_TICK};

/// Hard cap on one component instance's linear memory, whatever an adapter's
/// own limit says.
pub const MAX_MEMORY_BYTES: usize = 256 << 20;

/// Concurrent component instances the pool holds (calls plus open streams).
const POOL_INSTANCES: u32 = 2000;

/// Core instances per component instance the pool allows for: a Rust
/// adapter is three (its module and the WASI shims), a JavaScript one more.
/// With two, 1,333 open streams of a Rust adapter used every core slot.
const CORE_INSTANCES_PER_COMPONENT: u32 = 4;

/// Instances of the pool never given to streams: calls (mapping a request,
/// normalizing an answer) and warm instances always find a slot, however
/// many streams are open.
const CALL_RESERVE: u32 = 256;

/// Open streams one instance (a stream host, [`crate::stream_hosts`])
/// serves at once. Each instance maps its memory image again, which RSS
/// counts once per instance: 64 rather than 32 a host saved ~1.4 KiB of
/// RSS per held stream (docs/benchmarks.md), for twice the streams a
/// faulting instance ends.
pub const STREAMS_PER_HOST: u32 = 64;

/// Instances that hold open streams at most ([`crate::stream_hosts`]: each holds
/// up to [`STREAMS_PER_HOST`] of them).
pub const MAX_STREAM_HOSTS: u32 = POOL_INSTANCES - CALL_RESERVE;

/// Open streams the gateway can serve at once: every stream host full.
/// Past the configured budget (at most this) a new stream is refused as
/// busy.
pub const MAX_OPEN_STREAMS: u32 = MAX_STREAM_HOSTS * STREAMS_PER_HOST;

/// Open streams served at once unless configured otherwise.
pub const DEFAULT_OPEN_STREAMS: u32 = 10_000;

/// The next [`PluginEngine::id`].
static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(0);

/// The process-wide plugin engine: compiler, allocator, epoch ticker, linker.
pub struct PluginEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    /// Idle instances kept warm per adapter version: one per core, since a
    /// call never waits on I/O and so at most one runs per worker thread.
    pub(crate) warm_per_adapter: usize,
    /// This engine among the process's engines: compiled code belongs to
    /// one engine, so the loader's table of compilations under way is
    /// keyed by it.
    pub(crate) id: u64,
    /// Slots for open streams (the configured budget): a stream holds one
    /// for its lifetime.
    pub(crate) stream_slots: Arc<tokio::sync::Semaphore>,
    /// Slots for stream hosts ([`MAX_STREAM_HOSTS`]): a host holds one for
    /// its lifetime.
    pub(crate) stream_hosts: Arc<tokio::sync::Semaphore>,
}

/// Where each adapter instance's linear memory sits in the address space,
/// which decides whether compiled adapter code checks its memory accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryLayout {
    /// Each memory reserves the whole 32-bit index space, plus a 32 MiB
    /// guard region: no access can reach past its reservation, so compiled
    /// adapter code needs no bounds checks (guard pages catch what is out
    /// of bounds) and runs ~20 % faster (docs/benchmarks.md).
    /// The pool reserves ~8 TiB of address space, never backed by memory.
    GuardPages,
    /// Each memory reserves [`MAX_MEMORY_BYTES`], plus a 64 KiB guard
    /// region: every access is checked against the memory's size. The pool
    /// reserves ~0.5 TiB. Used where the address space is too small for
    /// [`Self::GuardPages`] (a `ulimit -v`, a 39-bit address space, many
    /// engines in one process); the gateway logs a warning.
    BoundsChecked,
}

impl MemoryLayout {
    /// Every layout, preferred first.
    pub const PREFERRED_FIRST: [MemoryLayout; 2] = [MemoryLayout::GuardPages, MemoryLayout::BoundsChecked];

    /// Bytes reserved per linear memory, its trailing guard excluded.
    fn reservation(self) -> u64 {
        match self {
            MemoryLayout::GuardPages => 1 << 32,
            MemoryLayout::BoundsChecked => MAX_MEMORY_BYTES as u64,
        }
    }

    /// The unmapped region after each linear memory. With guard pages, an
    /// access whose constant offset and size fit in it needs no check
    /// (wasmtime's default guard on 64-bit hosts); with bounds checks, a
    /// guard larger than an access's offset makes its check one compare.
    fn guard(self) -> u64 {
        match self {
            MemoryLayout::GuardPages => 32 << 20,
            MemoryLayout::BoundsChecked => 64 << 10,
        }
    }

    /// Bytes of address space the pool's memories reserve (an estimate:
    /// the guard before each memory and alignment are left out).
    pub fn pool_reservation(self) -> u64 {
        u64::from(POOL_INSTANCES) * (self.reservation() + self.guard())
    }
}

impl PluginEngine {
    /// Builds the engine with the pooling allocator and epoch interruption,
    /// starts the epoch ticker and links WASI p2 plus the `host` interface.
    /// At most `max_streams` streams (capped at [`MAX_OPEN_STREAMS`]) are
    /// open at once. The memory layout is the first of
    /// [`MemoryLayout::PREFERRED_FIRST`] whose address space the process
    /// can reserve.
    pub fn new(max_streams: usize) -> anyhow::Result<Arc<Self>> {
        let (engine, _) = build_engine(&MemoryLayout::PREFERRED_FIRST)?;
        spawn_epoch_ticker(&engine);

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Every supported contract version's `host` interface: components
        // of each version load side by side.
        v0_1::freellm::provider::host::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
        v0_2::freellm::provider::host::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
        v0_3::freellm::provider::host::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
        let warm_per_adapter = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 16);
        Ok(Arc::new(Self {
            engine,
            linker,
            warm_per_adapter,
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
            stream_slots: Arc::new(tokio::sync::Semaphore::new(max_streams.min(MAX_OPEN_STREAMS as usize))),
            stream_hosts: Arc::new(tokio::sync::Semaphore::new(MAX_STREAM_HOSTS as usize)),
        }))
    }
}

/// The engine with the first of `layouts` whose pool the process can
/// reserve; the last one's error if none.
fn build_engine(layouts: &[MemoryLayout]) -> anyhow::Result<(Engine, MemoryLayout)> {
    let mut last = None;
    for &layout in layouts {
        match Engine::new(&engine_config(layout)) {
            Ok(engine) => {
                match layout {
                    MemoryLayout::GuardPages => tracing::debug!(?layout, "adapter memories guarded by unmapped pages"),
                    MemoryLayout::BoundsChecked => tracing::warn!(
                        ?layout,
                        "adapter memories are bounds-checked: the address space for guard pages \
                         could not be reserved, so adapter code runs slower"
                    ),
                }
                return Ok((engine, layout));
            }
            Err(e) => {
                tracing::debug!(?layout, reserve_bytes = layout.pool_reservation(), error = %e, "memory layout unavailable");
                last = Some(anyhow::Error::from(e));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no memory layout to build the engine with")))
}

/// The engine's configuration for `layout`.
fn engine_config(layout: MemoryLayout) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES * CORE_INSTANCES_PER_COMPONENT)
        .total_stacks(POOL_INSTANCES)
        // Whatever the layout, a memory grows no larger than this.
        .max_memory_size(MAX_MEMORY_BYTES)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        // Reset only the pages a call dirtied (Linux >= 6.7), and batch
        // the madvise calls for the rest: a slot's reset is most of an
        // adapter call's cost.
        .pagemap_scan(Enabled::Auto)
        .decommit_batch_size(32);

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .memory_reservation(layout.reservation())
        .memory_guard_size(layout.guard())
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advances the epoch until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the wasm epoch ticker; adapter CPU limits are off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layout_builds_an_engine() {
        // (Falling back when the address space is short is tested end to
        // end, under `RLIMIT_AS`: a limit here would bind every test.)
        for layout in MemoryLayout::PREFERRED_FIRST {
            let (_, built) = build_engine(&[layout]).expect("engine");
            assert_eq!(built, layout);
        }
        assert!(build_engine(&[]).is_err());
    }

    #[test]
    fn only_the_guard_page_layout_covers_the_whole_32_bit_index_space() {
        let covers = |l: MemoryLayout| l.reservation() + l.guard() >= 1 << 32;
        assert!(covers(MemoryLayout::GuardPages));
        assert!(!covers(MemoryLayout::BoundsChecked));
        // Both reserve at least what a memory may grow to.
        for layout in MemoryLayout::PREFERRED_FIRST {
            assert!(layout.reservation() >= MAX_MEMORY_BYTES as u64);
        }
        assert!(MemoryLayout::BoundsChecked.pool_reservation() < 1 << 40);
    }
}
