//! Turning component bytes into something the host can instantiate: compile
//! (through an on-disk cache keyed by content hash), check the imports
//! against the sandbox allowlist, and type-check the exports against the
//! contract.
//!
//! Compiled code lives in `FREELLM_CACHE_DIR` as `<sha256>-<engine>.cwasm`.
//! The name says exactly which bytes and which engine configuration produced
//! it, so a file is never overwritten in place (deserialization mmaps it) and
//! a restart with unchanged components compiles nothing.
//!
//! Slots that share one component file (an OpenAI-compatible adapter serving
//! eighteen providers, say) load it in parallel at start-up: [`InFlight`]
//! makes the first compile it while the others wait for that result, so each
//! distinct component is compiled once.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::{ContractVersion, ProviderPre};
use super::engine::PluginEngine;
use super::sandbox::CallState;

/// Why a component could not be loaded. Each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Not a valid component, or compilation failed.
    #[error("compile: {0}")]
    Compile(String),
    /// The component imports something the sandbox does not grant.
    #[error("sandbox policy: component imports `{0}`, which adapters may not use")]
    ForbiddenImport(String),
    /// The component implements no supported `freellm:provider` world.
    #[error("contract: {0}")]
    Contract(String),
    /// `configure` failed or trapped.
    #[error("configure: {0}")]
    Configure(String),
}

impl LoadError {
    /// The same error for another waiter on one compilation (`io::Error` is
    /// not `Clone`; its kind and message are kept).
    fn duplicate(&self) -> Self {
        match self {
            Self::Read { path, source } => {
                Self::Read { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
            }
            Self::Compile(m) => Self::Compile(m.clone()),
            Self::ForbiddenImport(m) => Self::ForbiddenImport(m.clone()),
            Self::Contract(m) => Self::Contract(m.clone()),
            Self::Configure(m) => Self::Configure(m.clone()),
        }
    }
}

/// One compilation's result, shared by everyone who asked for it meanwhile.
type Slot<T> = Arc<Mutex<Option<Result<T, LoadError>>>>;

/// Compilations in progress, by engine and content hash (compiled code
/// belongs to the engine that compiled it). It holds only loads under way:
/// a later load of the same bytes (a reload, an upload) goes through the disk
/// cache again, so no compiled code is kept alive here.
pub struct InFlight<T = Compiled>(Mutex<HashMap<(u64, String), Slot<T>>>);

/// The process's compilations under way.
static COMPILING: LazyLock<InFlight> = LazyLock::new(InFlight::default);

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T: Clone> InFlight<T> {
    /// Runs `work` for `hash` on `engine` unless a load of the same hash on
    /// that engine is under way, in which case it waits for that one's result.
    fn run(&self, engine: u64, hash: &str, work: impl FnOnce() -> Result<T, LoadError>) -> Result<T, LoadError> {
        let key = (engine, hash.to_owned());
        let slot = self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(key.clone()).or_default().clone();
        let mut result = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let result = result.get_or_insert_with(|| {
            let outcome = work();
            // Waiters already hold the slot; newcomers start afresh.
            self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
            outcome
        });
        match result {
            Ok(value) => Ok(value.clone()),
            Err(e) => Err(e.duplicate()),
        }
    }
}

/// A compiled, policy-checked, type-checked component, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    /// Ready-to-instantiate form; imports resolved and exports checked once
    /// against the contract version the component targets.
    pub pre: ProviderPre<CallState>,
    /// Hex SHA-256 of the component bytes.
    pub hash: String,
}

/// The first 12 hex digits of a component's hash ([`Compiled::hash`]): how
/// reports, logs and stored uploads name a build.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Import namespaces a provider component may use. WASI p2 standard-library
/// plumbing is allowed (the context behind it grants nothing); filesystem,
/// sockets and HTTP are not.
const ALLOWED_IMPORTS: &[&str] = &[
    "wasi:io/",
    "wasi:cli/environment@",
    "wasi:cli/exit@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:cli/terminal-",
    "wasi:random/",
    "wasi:clocks/",
    "freellm:provider/types@0.1.",
    "freellm:provider/host@0.1.",
    "freellm:provider/types@0.2.",
    "freellm:provider/host@0.2.",
    "freellm:provider/types@0.3.",
    "freellm:provider/host@0.3.",
];

impl Compiled {
    /// The contract version the component targets.
    pub fn version(&self) -> ContractVersion {
        self.pre.version()
    }
}

/// Reads a component file, then [`compile`]s it.
pub fn load_file(engine: &PluginEngine, path: &Path, cache_dir: &Path) -> Result<Compiled, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
    compile(engine, &bytes, cache_dir)
}

/// Compiles (or loads from cache), checks and pre-instantiates a component;
/// concurrent loads of the same bytes share one compilation.
pub fn compile(engine: &PluginEngine, bytes: &[u8], cache_dir: &Path) -> Result<Compiled, LoadError> {
    let hash = hex::encode(Sha256::digest(bytes));
    COMPILING.run(engine.id, &hash, || {
        let component = cached_compile(engine, bytes, &hash, cache_dir)?;
        check_imports(engine, &component)?;
        let instance_pre =
            engine.linker.instantiate_pre(&component).map_err(|e| LoadError::Contract(format!("{e:#}")))?;
        let pre = ProviderPre::new(instance_pre).map_err(LoadError::Contract)?;
        Ok(Compiled { pre, hash: hash.clone() })
    })
}

fn cached_compile(engine: &PluginEngine, bytes: &[u8], hash: &str, cache_dir: &Path) -> Result<Component, LoadError> {
    let path = cache_path(engine, hash, cache_dir);
    if path.is_file() {
        // SAFETY: files in the cache directory are written only by
        // `store_in_cache` below, from `Component::serialize` of this engine
        // configuration (the name carries the engine's compatibility hash),
        // and are never modified after the atomic rename.
        match unsafe { Component::deserialize_file(&engine.engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled-component cache entry")
            }
        }
    }
    if wasmtime::Engine::detect_precompiled(bytes).is_some() {
        // Precompiled bytes from outside the cache are never trusted.
        return Err(LoadError::Compile("precompiled .cwasm files are not accepted; give the .wasm component".into()));
    }
    let started = Instant::now();
    let component = Component::from_binary(&engine.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    tracing::info!(hash = %hash, ms = started.elapsed().as_millis() as u64, "component compiled");
    store_in_cache(&component, &path);
    Ok(component)
}

fn cache_path(engine: &PluginEngine, hash: &str, cache_dir: &Path) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.engine.precompile_compatibility_hash().hash(&mut hasher);
    cache_dir.join(format!("{hash}-{:016x}.cwasm", hasher.finish()))
}

/// Best effort: a cache that cannot be written only costs a recompile later.
fn store_in_cache(component: &Component, path: &Path) {
    let write = || -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Unique per write: two processes sharing the cache directory, or
        // two loads in one, never write the same temporary file.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension(format!("tmp{}-{}", std::process::id(), WRITES.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled-component cache");
    }
}

fn check_imports(engine: &PluginEngine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(&engine.engine) {
        if !ALLOWED_IMPORTS.iter().any(|prefix| name.starts_with(prefix)) {
            return Err(LoadError::ForbiddenImport(name.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[test]
    fn concurrent_loads_of_one_hash_run_the_work_once_and_share_its_result() {
        let in_flight = InFlight::<u32>::default();
        let runs = AtomicUsize::new(0);
        let start = Barrier::new(8);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        in_flight.run(0, "h", || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                            Ok(7)
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("no panic")).collect()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| matches!(r, Ok(7))));
        assert!(in_flight.0.lock().unwrap().is_empty(), "nothing is kept after the load");
    }

    #[test]
    fn another_engine_compiles_the_same_bytes_itself() {
        let in_flight = InFlight::<u32>::default();
        // Sharing the slot with engine 0's load under way would wait on it
        // forever; another engine's load runs its own work.
        let nested = in_flight.run(0, "h", || in_flight.run(1, "h", || Ok(2)).map(|v| v + 1));
        assert!(matches!(nested, Ok(3)));
    }

    #[test]
    fn waiters_get_the_same_error_and_a_later_load_tries_again() {
        let in_flight = InFlight::<u32>::default();
        let err = in_flight.run(0, "h", || Err(LoadError::ForbiddenImport("wasi:sockets/tcp".into())));
        assert!(matches!(err, Err(LoadError::ForbiddenImport(name)) if name == "wasi:sockets/tcp"));
        assert!(matches!(in_flight.run(0, "h", || Ok(1)), Ok(1)));
        let read = LoadError::Read { path: "a.wasm".into(), source: std::io::ErrorKind::NotFound.into() };
        assert_eq!(read.duplicate().to_string(), read.to_string());
    }
}
