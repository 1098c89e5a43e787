//! One loaded version of a provider adapter and the calls into it.
//!
//! Each call takes an instance, calls one export and gives the instance back,
//! so no instance is held across the upstream network wait. With
//! `reuse_instances` (the default) a healthy instance goes back to a small
//! per-version set of warm instances and serves later calls, as proxy-wasm
//! hosts do: instantiating and resetting a pool slot costs more than the
//! call itself. Without it every call gets a fresh instance. Streams keep
//! their `stream-normalizer` resources on instances of their own, shared
//! by several streams ([`super::stream_hosts`]). A trap, a CPU-deadline
//! hit or a memory-cap hit becomes an [`AdapterFault`] (a failure of that provider, never of the
//! host) and the instance that faulted is never entered again.
//!
//! A fault's details (trap text, wasm backtrace, the guest's stderr with its
//! panic message and source location) are for operators: they go to the
//! log, tagged with the request id. Clients, status and events only see
//! the fault's `Display`: which adapter failed, what kind of limit or trap,
//! and the request id to look up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use wasmtime::Store;

use super::bindings::types::{
    AdapterInfo, CallContext, Failure, FixtureFile, NormalizedResponse, ResponseHead, UpstreamRequest,
};
use super::bindings::{Bindings, ContractVersion, ProviderPre};
use super::engine::PluginEngine;
use super::loader::{Compiled, LoadError};
use super::sandbox::{CallState, Instance, SandboxLimits, new_store};
use super::stream_hosts::StreamHosts;

/// A call into an adapter failed inside the sandbox (trap, CPU deadline,
/// memory cap). Displayed as the plain message clients may see; the
/// details are in [`AdapterFault::detailed`].
#[derive(Debug, thiserror::Error)]
#[error("adapter \"{adapter}\" failed ({kind}); see the gateway log, request id {request_id}")]
pub struct AdapterFault {
    /// Provider id.
    pub adapter: Arc<str>,
    /// Adapter version.
    pub version: String,
    /// The kind of fault (safe to show).
    pub kind: FaultKind,
    /// The request the call served (empty outside a request).
    pub request_id: String,
    /// What happened, with the guest's stderr when it wrote any (log only:
    /// it may hold backtraces and panic locations).
    pub detail: String,
}

impl AdapterFault {
    /// The full description for operators (log, `freellm plugin check`).
    pub fn detailed(&self) -> String {
        format!("from adapter \"{}\" version {}: {}", self.adapter, self.version, self.detail)
    }
}

/// What kind of fault ended an adapter call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The call ran past its CPU deadline.
    CpuTime,
    /// The instance hit its memory cap.
    Memory,
    /// The guest trapped (a panic, `unreachable`, a bad memory access).
    Trap,
    /// Instantiation or the host side of the call failed.
    Other,
    /// No instance was free: the gateway is at capacity (every pool slot
    /// in use, or the open-stream budget spent). Not the adapter's fault:
    /// never counted against it, never a reason to distrust the provider.
    Busy,
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CpuTime => "exceeded its CPU time limit",
            Self::Memory => "hit its memory limit",
            Self::Trap => "trapped",
            Self::Other => "call failed",
            Self::Busy => "has no free instance: the gateway is at capacity",
        })
    }
}

/// Counters of one adapter version, for `/v1/plugins` and metrics.
#[derive(Debug, Default)]
pub struct AdapterStats {
    /// Calls made (stream pushes included).
    pub calls: AtomicU64,
    /// Calls that trapped or hit a limit.
    pub faults: AtomicU64,
    /// Nanoseconds spent inside the component, instantiation included.
    pub busy_nanos: AtomicU64,
    /// Time per call, for percentiles.
    pub latency: LatencyHistogram,
}

/// Buckets of the call-time histogram: bucket `i` holds calls that took
/// less than `2^i` µs (the last one everything longer).
const LATENCY_BUCKETS: usize = 32;

/// A lock-free histogram of call times in power-of-two microsecond buckets
/// (percentiles are accurate to a factor of two, plenty to see a slow
/// adapter).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl LatencyHistogram {
    /// Counts one call of `micros`.
    pub fn record(&self, micros: u64) {
        let i = (u64::BITS - micros.leading_zeros()) as usize;
        self.buckets[i.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bound (µs) of the bucket holding quantile `q` (0..=1), or
    /// `None` with no calls yet.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(1u64 << i);
            }
        }
        Some(1u64 << (LATENCY_BUCKETS - 1))
    }
}

/// A loaded, configured adapter version.
pub struct Adapter {
    /// Provider id (the slot name in `plugins.toml`).
    pub id: Arc<str>,
    /// What the adapter said about itself in `configure`.
    pub info: AdapterInfo,
    /// Hex SHA-256 of the component bytes.
    pub hash: String,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// Call counters.
    pub stats: AdapterStats,
    settings: Vec<(String, String)>,
    pub(crate) limits: SandboxLimits,
    pre: ProviderPre<CallState>,
    pub(crate) engine: Arc<PluginEngine>,
    /// Idle instances ready for the next call (empty unless reuse is on).
    warm: Mutex<Vec<Instance>>,
    /// The instances open streams share.
    pub(crate) stream_hosts: StreamHosts,
}

impl Adapter {
    /// Configures a compiled component for a slot: calls `configure` with the
    /// slot's settings (plus `id` = the slot name, unless the settings give
    /// one) and checks that the adapter answers for that id.
    pub async fn configure(
        engine: Arc<PluginEngine>,
        compiled: Compiled,
        slot_id: &str,
        mut settings: Vec<(String, String)>,
        limits: SandboxLimits,
    ) -> Result<Self, LoadError> {
        if !settings.iter().any(|(k, _)| k == "id") {
            settings.insert(0, ("id".to_owned(), slot_id.to_owned()));
        }
        Self::configure_as(engine, compiled, Some(slot_id), settings, limits).await
    }

    /// Configures a compiled component with exactly `settings`. With a
    /// `slot_id`, the adapter must describe itself under that id; without
    /// one (`freellm plugin check`), its own id is taken.
    pub async fn configure_as(
        engine: Arc<PluginEngine>,
        compiled: Compiled,
        slot_id: Option<&str>,
        settings: Vec<(String, String)>,
        limits: SandboxLimits,
    ) -> Result<Self, LoadError> {
        let label: Arc<str> = Arc::from(slot_id.unwrap_or("(unconfigured)"));
        let mut store = new_store(&engine.engine, &label, limits);
        let configure = async {
            let provider = compiled.pre.instantiate_async(&mut store).await?;
            provider.configure(&mut store, &settings).await
        };
        let info = match configure.await {
            Ok(Ok(info)) => info,
            Ok(Err(message)) => return Err(LoadError::Configure(message)),
            Err(e) => return Err(LoadError::Configure(describe_fault(&e, store.data()).1)),
        };
        validate_info(&info, slot_id.unwrap_or(&info.id)).map_err(LoadError::Configure)?;
        let stream_hosts = StreamHosts::new(limits.reuse_instances, engine.warm_per_adapter);
        Ok(Self {
            id: slot_id.map_or_else(|| Arc::from(info.id.as_str()), Arc::from),
            info,
            hash: compiled.hash,
            loaded_at: SystemTime::now(),
            stats: AdapterStats::default(),
            settings,
            limits,
            pre: compiled.pre,
            engine,
            warm: Mutex::new(Vec::new()),
            stream_hosts,
        })
    }

    /// The compiled component behind this version (to configure it again,
    /// e.g. for the conformance self-check).
    pub fn compiled(&self) -> Compiled {
        Compiled { pre: self.pre.clone(), hash: self.hash.clone() }
    }

    /// The contract version the component targets.
    pub fn contract(&self) -> ContractVersion {
        self.pre.version()
    }

    /// The settings it was configured with (slot id included).
    pub fn settings(&self) -> &[(String, String)] {
        &self.settings
    }

    /// The per-call context for a request (the settings are not in it: a
    /// 0.3 instance was configured with them, an older one gets them from
    /// [`Bindings`] with each call).
    pub fn context(&self, request_id: &str, upstream_model: &str, is_stream: bool) -> CallContext {
        CallContext { request_id: request_id.to_owned(), upstream_model: upstream_model.to_owned(), is_stream }
    }

    /// `map-request`: OpenAI body → upstream request (or a classified refusal).
    pub async fn map_request(
        &self,
        ctx: &CallContext,
        body: &[u8],
    ) -> Result<Result<UpstreamRequest, Failure>, AdapterFault> {
        let settings = &self.settings;
        self.call(&ctx.request_id, async |p, store| p.map_request(store, ctx, settings, body).await).await
    }

    /// `normalize-response`: a 2xx upstream body → OpenAI `chat.completion`.
    pub async fn normalize_response(
        &self,
        ctx: &CallContext,
        head: &ResponseHead,
        body: &[u8],
    ) -> Result<Result<NormalizedResponse, Failure>, AdapterFault> {
        let settings = &self.settings;
        self.call(&ctx.request_id, async |p, store| p.normalize_response(store, ctx, settings, head, body).await).await
    }

    /// `classify-failure`: a non-2xx upstream answer → a typed failure.
    pub async fn classify_failure(
        &self,
        ctx: &CallContext,
        head: &ResponseHead,
        body: &[u8],
    ) -> Result<Failure, AdapterFault> {
        let settings = &self.settings;
        self.call(&ctx.request_id, async |p, store| p.classify_failure(store, ctx, settings, head, body).await).await
    }

    /// `embedded-fixtures`: the golden fixtures the component carries
    /// (none for a 0.1 component).
    pub async fn embedded_fixtures(&self) -> Result<Vec<FixtureFile>, AdapterFault> {
        self.call("", async |p, store| p.embedded_fixtures(store).await).await
    }

    /// Instances kept warm for the next calls (for status and tests).
    pub fn warm_instances(&self) -> usize {
        self.warm.lock().map_or(0, |idle| idle.len())
    }

    /// One export call: an instance checked out, `call` run in it, the
    /// instance checked back in.
    async fn call<R>(
        &self,
        request_id: &str,
        call: impl AsyncFnOnce(&Bindings, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, AdapterFault> {
        let (mut instance, started) = self.checkout(request_id).await?;
        let result = call(&instance.provider, &mut instance.store).await;
        self.checkin(request_id, instance, started, result)
    }

    /// An instance for one call, warm when one is idle, else a new one; the
    /// call's CPU deadline is set and its clock started.
    async fn checkout(&self, request_id: &str) -> Result<(Instance, Instant), AdapterFault> {
        let started = Instant::now();
        let warm =
            if self.limits.reuse_instances { self.warm.lock().ok().and_then(|mut idle| idle.pop()) } else { None };
        let mut instance = match warm {
            Some(instance) => instance,
            // Boxed: instantiation's future is over a kilobyte, and every
            // adapter call's future (nested in the request's) would carry
            // it while a warm instance, the usual case, needs none.
            None => Box::pin(self.instantiate(request_id)).await?,
        };
        instance.begin(&self.limits);
        instance.calls += 1;
        Ok((instance, started))
    }

    /// A fresh instance, configured with the slot's settings when its
    /// contract asks for that (0.3: before any other call). A pool with no
    /// free slot is [`FaultKind::Busy`]; any other failure, a refused or
    /// trapped `configure` included, is counted as a failed call.
    pub(crate) async fn instantiate(&self, request_id: &str) -> Result<Instance, AdapterFault> {
        let started = Instant::now();
        let mut store = new_store(&self.engine.engine, &self.id, self.limits);
        let provider = match self.pre.instantiate_async(&mut store).await {
            Ok(provider) => provider,
            Err(e) if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => {
                return Err(self.busy(request_id, &e.to_string()));
            }
            Err(e) => return self.record(request_id, started, Err(e), &store),
        };
        let mut instance = Instance { store, provider, calls: 0 };
        if self.pre.version() < ContractVersion::V0_3 {
            return Ok(instance);
        }
        instance.begin(&self.limits);
        let failed = match instance.provider.configure(&mut instance.store, &self.settings).await {
            Ok(Ok(_)) => return Ok(instance),
            // It configured at load with these settings: a refusal now is
            // the adapter's fault, as a trap is.
            Ok(Err(message)) => wasmtime::Error::msg(format!("configure refused the slot's settings: {message}")),
            Err(trap) => trap,
        };
        self.record(request_id, started, Err(failed), &instance.store)
    }

    /// Records a finished call and keeps its instance warm when it may serve
    /// again: reuse on, the call succeeded, the guest wrote nothing to
    /// stderr, its memory stayed small and it has not served its share of
    /// calls. Any other instance is dropped here, which resets its slot.
    fn checkin<R>(
        &self,
        request_id: &str,
        instance: Instance,
        started: Instant,
        result: wasmtime::Result<R>,
    ) -> Result<R, AdapterFault> {
        let out = self.record(request_id, started, result, &instance.store);
        let state = instance.store.data();
        let keep = self.limits.reuse_instances
            && out.is_ok()
            && instance.calls < RECYCLE_AFTER_CALLS
            && state.memory_bytes() <= RECYCLE_ABOVE_MEMORY
            && !state.wrote_stderr();
        if keep
            && let Ok(mut idle) = self.warm.lock()
            && idle.len() < self.engine.warm_per_adapter
        {
            idle.push(instance);
        }
        out
    }

    /// A call that found no free instance: not counted as a call or a
    /// fault of the adapter, logged at debug (an overload would otherwise
    /// flood the log).
    pub(crate) fn busy(&self, request_id: &str, detail: &str) -> AdapterFault {
        tracing::debug!(request_id, adapter = %self.id, detail, "no free adapter instance");
        AdapterFault {
            adapter: self.id.clone(),
            version: self.info.adapter_version.clone(),
            kind: FaultKind::Busy,
            request_id: request_id.to_owned(),
            detail: detail.to_owned(),
        }
    }

    pub(crate) fn record<R>(
        &self,
        request_id: &str,
        started: Instant,
        result: wasmtime::Result<R>,
        store: &Store<CallState>,
    ) -> Result<R, AdapterFault> {
        let elapsed = started.elapsed();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.busy_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        self.stats.latency.record(elapsed.as_micros() as u64);
        result.map_err(|e| {
            self.stats.faults.fetch_add(1, Ordering::Relaxed);
            let (kind, detail) = describe_fault(&e, store.data());
            let fault = AdapterFault {
                adapter: self.id.clone(),
                version: self.info.adapter_version.clone(),
                kind,
                request_id: request_id.to_owned(),
                detail,
            };
            // The one place the details are kept (with the backtrace, when
            // wasmtime captured one).
            tracing::warn!(request_id, error = %fault.detailed(), backtrace = %format!("{e:?}"), "adapter call failed");
            fault
        })
    }
}

/// A warm instance is dropped (and a fresh one made) after this many calls,
/// so whatever a guest's allocator fragments or leaks is bounded.
const RECYCLE_AFTER_CALLS: u32 = 10_000;

/// A warm instance whose linear memory grew past this (a very large request
/// went through it) is dropped rather than kept resident.
const RECYCLE_ABOVE_MEMORY: usize = 8 << 20;

/// Names what went wrong inside the guest: its kind, and the trap code or
/// limit with the guest's stderr.
fn describe_fault(error: &wasmtime::Error, state: &CallState) -> (FaultKind, String) {
    let (kind, what) = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => (FaultKind::CpuTime, "exceeded its CPU time limit".to_owned()),
        Some(trap) => (FaultKind::Trap, format!("trapped: {trap}")),
        None => {
            let text = format!("{error:#}");
            if text.contains("memory") {
                (FaultKind::Memory, format!("hit its memory limit: {text}"))
            } else {
                (FaultKind::Other, text)
            }
        }
    };
    let stderr = state.stderr();
    (kind, if stderr.is_empty() { what } else { format!("{what} (stderr: {stderr})") })
}

/// Checks what `configure` returned before the adapter may go live.
fn validate_info(info: &AdapterInfo, slot_id: &str) -> Result<(), String> {
    if info.id != slot_id {
        return Err(format!("adapter describes itself as \"{}\" but is configured as \"{slot_id}\"", info.id));
    }
    if !info.models.is_empty() && !info.models.iter().any(|m| m.id == info.default_model) {
        return Err(format!("default model \"{}\" is not in the model list", info.default_model));
    }
    if let Some(dup) =
        info.models.iter().enumerate().find_map(|(i, m)| info.models[..i].iter().any(|o| o.id == m.id).then_some(&m.id))
    {
        return Err(format!("model \"{dup}\" is listed twice"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_shows_clients_only_its_kind_and_request_id() {
        let fault = AdapterFault {
            adapter: Arc::from("hostile"),
            version: "0.1.0".into(),
            kind: FaultKind::Trap,
            request_id: "req-1".into(),
            detail: "trapped: wasm `unreachable` instruction executed (stderr: thread panicked at src/lib.rs:7:9)"
                .into(),
        };
        let plain = fault.to_string();
        assert_eq!(plain, "adapter \"hostile\" failed (trapped); see the gateway log, request id req-1");
        assert!(fault.detailed().contains("src/lib.rs:7:9"), "operators keep the details");
    }

    #[test]
    fn latency_quantiles_are_bucket_bounds() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in [3, 5, 6, 7, 100] {
            h.record(us);
        }
        assert_eq!(h.quantile(0.5), Some(8), "5..7 µs are in the <8 µs bucket");
        assert_eq!(h.quantile(0.99), Some(128));
        h.record(u64::MAX);
        assert_eq!(h.quantile(1.0), Some(1 << 31));
    }
}
