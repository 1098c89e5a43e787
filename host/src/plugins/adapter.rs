//! One loaded version of a provider adapter and the calls into it.
//!
//! Each call instantiates the pre-linked component in a fresh sandboxed
//! store, calls one export and drops the store, so nothing is held across the
//! upstream network wait. A stream keeps one instance (and its
//! `stream-normalizer` resource) for its lifetime. A trap, a CPU-deadline hit
//! or a memory-cap hit becomes an [`AdapterFault`]: a failure of that
//! provider, never of the host.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::bindings::types::{
    AdapterInfo, CallContext, Failure, NormalizedResponse, ResponseHead, StreamEvent, StreamOutput, UpstreamRequest,
};
use super::bindings::{Provider, ProviderPre};
use super::engine::PluginEngine;
use super::loader::{Compiled, LoadError};
use super::sandbox::{CallState, SandboxLimits, new_store};

/// A call into an adapter failed inside the sandbox (trap, CPU deadline,
/// memory cap). Rendered as `from adapter "<id>" version <v>: <what>`.
#[derive(Debug, thiserror::Error)]
#[error("from adapter \"{adapter}\" version {version}: {detail}")]
pub struct AdapterFault {
    /// Provider id.
    pub adapter: Arc<str>,
    /// Adapter version.
    pub version: String,
    /// What happened, with the guest's stderr when it wrote any.
    pub detail: String,
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
    limits: SandboxLimits,
    pre: ProviderPre<CallState>,
    engine: Arc<PluginEngine>,
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
        let mut store = new_store(&engine, &label, limits);
        let configure = async {
            let provider = compiled.pre.instantiate_async(&mut store).await?;
            provider.freellm_provider_adapter().call_configure(&mut store, &settings).await
        };
        let info = match configure.await {
            Ok(Ok(info)) => info,
            Ok(Err(message)) => return Err(LoadError::Configure(message)),
            Err(e) => return Err(LoadError::Configure(describe_fault(&e, store.data()))),
        };
        validate_info(&info, slot_id.unwrap_or(&info.id)).map_err(LoadError::Configure)?;
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
        })
    }

    /// The compiled component behind this version (to configure it again,
    /// e.g. for the conformance self-check).
    pub fn compiled(&self) -> Compiled {
        Compiled { pre: self.pre.clone(), hash: self.hash.clone() }
    }

    /// The settings it was configured with (slot id included).
    pub fn settings(&self) -> &[(String, String)] {
        &self.settings
    }

    /// The per-call context for a request.
    pub fn context(&self, request_id: &str, upstream_model: &str, is_stream: bool) -> CallContext {
        CallContext {
            request_id: request_id.to_owned(),
            upstream_model: upstream_model.to_owned(),
            is_stream,
            settings: self.settings.clone(),
        }
    }

    /// `map-request`: OpenAI body → upstream request (or a classified refusal).
    pub async fn map_request(
        &self,
        ctx: &CallContext,
        body: &[u8],
    ) -> Result<Result<UpstreamRequest, Failure>, AdapterFault> {
        let started = Instant::now();
        let mut store = new_store(&self.engine, &self.id, self.limits);
        let result = async {
            let p = self.pre.instantiate_async(&mut store).await?;
            p.freellm_provider_adapter().call_map_request(&mut store, ctx, body).await
        }
        .await;
        self.finish_call(started, result, &store)
    }

    /// `normalize-response`: a 2xx upstream body → OpenAI `chat.completion`.
    pub async fn normalize_response(
        &self,
        ctx: &CallContext,
        head: &ResponseHead,
        body: &[u8],
    ) -> Result<Result<NormalizedResponse, Failure>, AdapterFault> {
        let started = Instant::now();
        let mut store = new_store(&self.engine, &self.id, self.limits);
        let result = async {
            let p = self.pre.instantiate_async(&mut store).await?;
            p.freellm_provider_adapter().call_normalize_response(&mut store, ctx, head, body).await
        }
        .await;
        self.finish_call(started, result, &store)
    }

    /// `classify-failure`: a non-2xx upstream answer → a typed failure.
    pub async fn classify_failure(
        &self,
        ctx: &CallContext,
        head: &ResponseHead,
        body: &[u8],
    ) -> Result<Failure, AdapterFault> {
        let started = Instant::now();
        let mut store = new_store(&self.engine, &self.id, self.limits);
        let result = async {
            let p = self.pre.instantiate_async(&mut store).await?;
            p.freellm_provider_adapter().call_classify_failure(&mut store, ctx, head, body).await
        }
        .await;
        self.finish_call(started, result, &store)
    }

    /// Starts a stream normalizer for a 2xx streaming answer. The returned
    /// session owns its instance until it is dropped.
    pub async fn open_stream(
        self: &Arc<Self>,
        ctx: &CallContext,
        head: &ResponseHead,
    ) -> Result<StreamSession, AdapterFault> {
        let started = Instant::now();
        let mut store = new_store(&self.engine, &self.id, self.limits);
        let result = async {
            let p = self.pre.instantiate_async(&mut store).await?;
            let handle =
                p.freellm_provider_adapter().stream_normalizer().call_constructor(&mut store, ctx, head).await?;
            Ok((p, handle))
        }
        .await;
        let (provider, handle) = self.finish_call(started, result, &store)?;
        Ok(StreamSession { adapter: self.clone(), store, provider, handle })
    }

    /// One instance for a whole upstream attempt: `map-request`, then
    /// `normalize-response` or `classify-failure` (or the stream normalizer)
    /// run in the same instance, so an attempt pays for one instantiation
    /// and one slot reset instead of two. The instance is dropped with the
    /// session; after a fault it is not entered again.
    pub async fn session(self: &Arc<Self>) -> Result<CallSession, AdapterFault> {
        let started = Instant::now();
        let mut store = new_store(&self.engine, &self.id, self.limits);
        let result = self.pre.instantiate_async(&mut store).await;
        self.stats.busy_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let provider = result.map_err(|e| {
            self.stats.faults.fetch_add(1, Ordering::Relaxed);
            AdapterFault {
                adapter: self.id.clone(),
                version: self.info.adapter_version.clone(),
                detail: describe_fault(&e, store.data()),
            }
        })?;
        Ok(CallSession { adapter: self.clone(), store, provider, fault: None })
    }

    fn finish_call<R>(
        &self,
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
            let fault = AdapterFault {
                adapter: self.id.clone(),
                version: self.info.adapter_version.clone(),
                detail: describe_fault(&e, store.data()),
            };
            tracing::warn!(error = %fault, "adapter call failed");
            fault
        })
    }
}

/// One instance serving the calls of one upstream attempt (see
/// [`Adapter::session`]).
pub struct CallSession {
    adapter: Arc<Adapter>,
    store: Store<CallState>,
    provider: Provider,
    /// Set by the first fault: the instance cannot be entered again.
    fault: Option<String>,
}

impl CallSession {
    /// The adapter version behind this session.
    pub fn adapter(&self) -> &Arc<Adapter> {
        &self.adapter
    }

    fn begin(&mut self) -> Result<Instant, AdapterFault> {
        if let Some(detail) = &self.fault {
            return Err(AdapterFault {
                adapter: self.adapter.id.clone(),
                version: self.adapter.info.adapter_version.clone(),
                detail: format!("instance unusable after an earlier fault: {detail}"),
            });
        }
        self.store.set_epoch_deadline(PluginEngine::ticks_for(self.adapter.limits.cpu_time));
        Ok(Instant::now())
    }

    fn end<R>(&mut self, started: Instant, result: wasmtime::Result<R>) -> Result<R, AdapterFault> {
        let out = self.adapter.finish_call(started, result, &self.store);
        if let Err(fault) = &out {
            self.fault = Some(fault.detail.clone());
        }
        out
    }

    /// `map-request` in this instance.
    pub async fn map_request(
        &mut self,
        ctx: &CallContext,
        body: &[u8],
    ) -> Result<Result<UpstreamRequest, Failure>, AdapterFault> {
        let started = self.begin()?;
        let result = self.provider.freellm_provider_adapter().call_map_request(&mut self.store, ctx, body).await;
        self.end(started, result)
    }

    /// `normalize-response` in this instance.
    pub async fn normalize_response(
        &mut self,
        ctx: &CallContext,
        head: &ResponseHead,
        body: &[u8],
    ) -> Result<Result<NormalizedResponse, Failure>, AdapterFault> {
        let started = self.begin()?;
        let result =
            self.provider.freellm_provider_adapter().call_normalize_response(&mut self.store, ctx, head, body).await;
        self.end(started, result)
    }

    /// `classify-failure` in this instance.
    pub async fn classify_failure(
        &mut self,
        ctx: &CallContext,
        head: &ResponseHead,
        body: &[u8],
    ) -> Result<Failure, AdapterFault> {
        let started = self.begin()?;
        let result =
            self.provider.freellm_provider_adapter().call_classify_failure(&mut self.store, ctx, head, body).await;
        self.end(started, result)
    }

    /// Turns the session into the stream's normalizer (same instance).
    pub async fn into_stream(mut self, ctx: &CallContext, head: &ResponseHead) -> Result<StreamSession, AdapterFault> {
        let started = self.begin()?;
        let result = self
            .provider
            .freellm_provider_adapter()
            .stream_normalizer()
            .call_constructor(&mut self.store, ctx, head)
            .await;
        let handle = self.end(started, result)?;
        Ok(StreamSession { adapter: self.adapter, store: self.store, provider: self.provider, handle })
    }
}

/// One streaming answer's normalizer: an instance kept alive for the stream.
pub struct StreamSession {
    adapter: Arc<Adapter>,
    store: Store<CallState>,
    provider: Provider,
    handle: ResourceAny,
}

impl StreamSession {
    /// Normalizes the events of one network read.
    pub async fn push(&mut self, events: &[StreamEvent]) -> Result<Result<StreamOutput, Failure>, AdapterFault> {
        let started = Instant::now();
        self.store.set_epoch_deadline(PluginEngine::ticks_for(self.adapter.limits.cpu_time));
        let result = self
            .provider
            .freellm_provider_adapter()
            .stream_normalizer()
            .call_push(&mut self.store, self.handle, events)
            .await;
        self.adapter.finish_call(started, result, &self.store)
    }

    /// Flushes the normalizer at upstream EOF.
    pub async fn finish(&mut self) -> Result<Result<StreamOutput, Failure>, AdapterFault> {
        let started = Instant::now();
        self.store.set_epoch_deadline(PluginEngine::ticks_for(self.adapter.limits.cpu_time));
        let result = self
            .provider
            .freellm_provider_adapter()
            .stream_normalizer()
            .call_finish(&mut self.store, self.handle)
            .await;
        self.adapter.finish_call(started, result, &self.store)
    }
}

/// Names what went wrong inside the guest: trap code, limit, and stderr.
fn describe_fault(error: &wasmtime::Error, state: &CallState) -> String {
    let what = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "exceeded its CPU time limit".to_owned(),
        Some(trap) => format!("trapped: {trap}"),
        None => {
            let text = format!("{error:#}");
            if text.contains("memory") { format!("hit its memory limit: {text}") } else { text }
        }
    };
    let stderr = state.stderr();
    if stderr.is_empty() { what } else { format!("{what} (stderr: {stderr})") }
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
