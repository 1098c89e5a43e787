//! Turning component bytes into something the host can instantiate: compile
//! (through an on-disk cache keyed by content hash), check the imports
//! against the sandbox allowlist, and type-check the exports against the
//! contract.
//!
//! Compiled code lives in `FREELLM_CACHE_DIR` as `<sha256>-<engine>.cwasm`.
//! The name says exactly which bytes and which engine configuration produced
//! it, so a file is never overwritten in place (deserialization mmaps it) and
//! a restart with unchanged components compiles nothing.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::ProviderPre;
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
    /// The component does not implement the `freellm:provider@0.1` world.
    #[error("contract: {0}")]
    Contract(String),
    /// `configure` failed or trapped.
    #[error("configure: {0}")]
    Configure(String),
}

/// A compiled, policy-checked, type-checked component, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    /// Ready-to-instantiate form; imports resolved and exports checked once.
    pub pre: ProviderPre<CallState>,
    /// Hex SHA-256 of the component bytes.
    pub hash: String,
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
];

/// Reads a component file, then [`compile`]s it.
pub fn load_file(engine: &PluginEngine, path: &Path, cache_dir: &Path) -> Result<Compiled, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
    compile(engine, &bytes, cache_dir)
}

/// Compiles (or loads from cache), checks and pre-instantiates a component.
pub fn compile(engine: &PluginEngine, bytes: &[u8], cache_dir: &Path) -> Result<Compiled, LoadError> {
    let hash = hex::encode(Sha256::digest(bytes));
    let component = cached_compile(engine, bytes, &hash, cache_dir)?;
    check_imports(engine, &component)?;
    let instance_pre = engine.linker.instantiate_pre(&component).map_err(|e| LoadError::Contract(format!("{e:#}")))?;
    let pre = ProviderPre::new(instance_pre).map_err(|e| LoadError::Contract(format!("{e:#}")))?;
    Ok(Compiled { pre, hash })
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
    let component = Component::from_binary(&engine.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
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
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
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
