//! Prometheus metrics for `GET /metrics` (text exposition format 0.0.4).
//!
//! Two kinds of figures:
//!
//! * recorded on the request path, each a few relaxed atomic increments:
//!   requests by provider, model, status and route reason; request duration
//!   by route reason; gateway overhead (a request's time minus the time
//!   spent waiting on upstreams); upstream latency per provider; tokens per
//!   provider. Labelled series live in copy-on-write maps read through an
//!   [`ArcSwap`]: a request takes no lock unless it creates a new series.
//! * read at scrape time from the state that already exists: breaker
//!   states, key cooldowns, time inside each adapter component, cache
//!   counters, upstream attempts and rate limits, event-feed subscribers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::ops::events::EventBus;
use crate::ops::stats::{RequestLogEntry, RequestStatus};
use crate::providers::Registry;
use crate::routing::cache::CacheStats;
use freellm_limits::breaker::BreakerState;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds (seconds) of request and upstream latency.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Bucket bounds (seconds) of the gateway's own time.
const OVERHEAD_BUCKETS: &[f64] =
    &[0.000_05, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Route reasons a request can end with (`none`: it failed).
const ROUTE_REASONS: [&str; 6] = ["direct", "meta", "route", "failover", "cache", "none"];

/// Distinct label sets one metric may hold; later ones are counted under
/// `other` (the model label is bounded by the catalogs, this is a backstop).
const MAX_SERIES: usize = 4096;

/// A histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_nanos: AtomicU64::new(0) }
    }

    /// Counts one observation (two atomic adds).
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.iter().position(|b| secs <= *b).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = self.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| format_float(*b));
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {}", format_float(sum));
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Time one request spent waiting on upstreams, summed over its attempts.
#[derive(Debug, Default)]
pub struct UpstreamTime(AtomicU64);

impl UpstreamTime {
    /// Adds a wait.
    pub fn add(&self, d: Duration) {
        self.0.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The total so far.
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// One labelled series.
struct Labeled<V> {
    values: Box<[Box<str>]>,
    value: V,
}

type SeriesTable<V> = HashMap<u64, Arc<Labeled<V>>, BuildHasherDefault<IdentityHasher>>;

/// Series of one metric by label values: lock-free reads, copy-on-write
/// inserts.
struct LabelMap<V> {
    series: ArcSwap<SeriesTable<V>>,
    writer: Mutex<()>,
    make: fn() -> V,
}

impl<V> LabelMap<V> {
    fn new(make: fn() -> V) -> Self {
        Self { series: ArcSwap::from_pointee(HashMap::default()), writer: Mutex::new(()), make }
    }

    /// Runs `f` on the series with these label values, creating it first if
    /// needed.
    fn with<R>(&self, values: &[&str], f: impl FnOnce(&V) -> R) -> R {
        let hash = hash_values(values);
        {
            let table = self.series.load();
            if let Some(s) = table.get(&hash)
                && same_values(&s.values, values)
            {
                return f(&s.value);
            }
        }
        let series = self.insert(hash, values);
        f(&series.value)
    }

    #[cold]
    fn insert(&self, hash: u64, values: &[&str]) -> Arc<Labeled<V>> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let table = self.series.load_full();
        if let Some(s) = table.get(&hash)
            && same_values(&s.values, values)
        {
            return s.clone();
        }
        // Over the limit (or, astronomically unlikely, a hash collision):
        // everything goes to one `other` series.
        let (hash, values): (u64, Vec<&str>) = if table.len() >= MAX_SERIES || table.contains_key(&hash) {
            let other = vec!["other"; values.len()];
            (hash_values(&other), other)
        } else {
            (hash, values.to_vec())
        };
        if let Some(s) = table.get(&hash) {
            return s.clone();
        }
        let series = Arc::new(Labeled { values: values.iter().map(|v| Box::from(*v)).collect(), value: (self.make)() });
        let mut next = (*table).clone();
        next.insert(hash, series.clone());
        self.series.store(Arc::new(next));
        series
    }

    /// Every series, sorted by label values.
    fn snapshot(&self) -> Vec<Arc<Labeled<V>>> {
        let mut all: Vec<_> = self.series.load().values().cloned().collect();
        all.sort_by(|a, b| a.values.cmp(&b.values));
        all
    }
}

fn hash_values(values: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    for v in values {
        v.hash(&mut h);
    }
    h.finish()
}

fn same_values(stored: &[Box<str>], values: &[&str]) -> bool {
    stored.len() == values.len() && stored.iter().zip(values).all(|(a, b)| &**a == *b)
}

/// The keys are already hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What is recorded per provider.
struct ProviderSeries {
    upstream: Histogram,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

impl ProviderSeries {
    fn new() -> Self {
        Self {
            upstream: Histogram::new(LATENCY_BUCKETS),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
        }
    }
}

/// The request-path metrics.
pub struct Metrics {
    requests: LabelMap<AtomicU64>,
    durations: [Histogram; ROUTE_REASONS.len()],
    overhead: Histogram,
    providers: LabelMap<ProviderSeries>,
    quota_skips: AtomicU64,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: LabelMap::new(|| AtomicU64::new(0)),
            durations: std::array::from_fn(|_| Histogram::new(LATENCY_BUCKETS)),
            overhead: Histogram::new(OVERHEAD_BUCKETS),
            providers: LabelMap::new(ProviderSeries::new),
            quota_skips: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Counts a finished chat request: `total` is its latency, `upstream` the
    /// part of it spent waiting on upstreams.
    pub fn record_request(&self, entry: &RequestLogEntry, total: Duration, upstream: Duration) {
        let reason = entry.route_reason.unwrap_or("none");
        let model = entry.resolved_model.as_deref().unwrap_or(&entry.requested_model);
        let provider = entry.provider.as_deref().unwrap_or("none");
        self.requests.with(&[provider, model, entry.status.as_str(), reason], |c| c.fetch_add(1, Ordering::Relaxed));
        let i = ROUTE_REASONS.iter().position(|r| *r == reason).unwrap_or(ROUTE_REASONS.len() - 1);
        self.durations[i].observe(total);
        // A stream's latency ends at its first chunk; only whole answers say
        // how much of the time was the gateway's own.
        if entry.status == RequestStatus::Success && !entry.streaming {
            self.overhead.observe(total.saturating_sub(upstream));
        }
    }

    /// Counts one upstream wait of `provider` (request sent → response head).
    pub fn observe_upstream(&self, provider: &str, elapsed: Duration) {
        self.providers.with(&[provider], |p| p.upstream.observe(elapsed));
    }

    /// Counts tokens an upstream reported.
    pub fn record_tokens(&self, provider: &str, prompt: u32, completion: u32) {
        self.providers.with(&[provider], |p| {
            p.prompt_tokens.fetch_add(u64::from(prompt), Ordering::Relaxed);
            p.completion_tokens.fetch_add(u64::from(completion), Ordering::Relaxed);
        });
    }

    /// Counts a request whose priority-first target had no quota headroom,
    /// so `quota_aware` routing sent it elsewhere before any 429.
    pub fn quota_skip(&self) {
        self.quota_skips.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests routed around a target without headroom (for `/v1/status`).
    pub fn quota_skips(&self) -> u64 {
        self.quota_skips.load(Ordering::Relaxed)
    }

    /// Total chat requests counted (all series).
    pub fn requests_total(&self) -> u64 {
        self.requests.snapshot().iter().map(|s| s.value.load(Ordering::Relaxed)).sum()
    }
}

/// The whole exposition: request-path metrics plus the state read now
/// (the provider table, the cache's counters, the event bus).
pub fn render(m: &Metrics, registry: &Registry, cache: CacheStats, events: &EventBus) -> String {
    let mut out = String::with_capacity(8192);

    header(&mut out, "freellm_build_info", "gauge", "Gateway version.");
    let _ = writeln!(out, "freellm_build_info{{version=\"{}\"}} 1", escape(env!("CARGO_PKG_VERSION")));
    header(&mut out, "freellm_uptime_seconds", "gauge", "Seconds since the gateway started.");
    let _ = writeln!(out, "freellm_uptime_seconds {}", format_float(m.started.elapsed().as_secs_f64()));

    header(&mut out, "freellm_requests_total", "counter", "Chat requests by provider, model, status and route reason.");
    for s in m.requests.snapshot() {
        let labels = labels(&["provider", "model", "status", "route_reason"], &s.values);
        let _ = writeln!(out, "freellm_requests_total{{{labels}}} {}", s.value.load(Ordering::Relaxed));
    }

    header(&mut out, "freellm_request_duration_seconds", "histogram", "Chat request latency by route reason.");
    for (reason, h) in ROUTE_REASONS.iter().zip(&m.durations) {
        h.render(&mut out, "freellm_request_duration_seconds", &labels(&["route_reason"], &[*reason]));
    }
    header(
        &mut out,
        "freellm_gateway_overhead_seconds",
        "histogram",
        "Time of a successful non-streaming request not spent waiting on upstreams (adapter calls included).",
    );
    m.overhead.render(&mut out, "freellm_gateway_overhead_seconds", "");

    let providers = m.providers.snapshot();
    header(
        &mut out,
        "freellm_upstream_latency_seconds",
        "histogram",
        "Upstream latency per provider: request sent to response head.",
    );
    for s in &providers {
        s.value.upstream.render(&mut out, "freellm_upstream_latency_seconds", &labels(&["provider"], &s.values));
    }
    header(&mut out, "freellm_tokens_total", "counter", "Tokens upstreams reported, per provider and kind.");
    for s in &providers {
        for (kind, n) in [("prompt", &s.value.prompt_tokens), ("completion", &s.value.completion_tokens)] {
            let provider = escape(&s.values[0]);
            let _ = writeln!(
                out,
                "freellm_tokens_total{{provider=\"{provider}\",kind=\"{kind}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }

    render_providers(&mut out, registry);

    header(&mut out, "freellm_cache_hits_total", "counter", "Response-cache lookups answered from the cache.");
    let _ = writeln!(out, "freellm_cache_hits_total {}", cache.hits);
    header(&mut out, "freellm_cache_misses_total", "counter", "Response-cache lookups that missed.");
    let _ = writeln!(out, "freellm_cache_misses_total {}", cache.misses);
    header(&mut out, "freellm_cache_entries", "gauge", "Entries in the response cache.");
    let _ = writeln!(out, "freellm_cache_entries {}", cache.current_size);

    header(
        &mut out,
        "freellm_routing_quota_skips_total",
        "counter",
        "Requests sent past a priority-first target without quota headroom (429s avoided).",
    );
    let _ = writeln!(out, "freellm_routing_quota_skips_total {}", m.quota_skips());
    header(&mut out, "freellm_event_subscribers", "gauge", "Connected /v1/events subscribers.");
    let _ = writeln!(out, "freellm_event_subscribers {}", events.subscribers());
    header(&mut out, "freellm_events_lagged_total", "counter", "Events slow subscribers lost.");
    let _ = writeln!(out, "freellm_events_lagged_total {}", events.lagged_total());
    out
}

/// Breakers, key cooldowns, adapter time and upstream attempts, read now.
fn render_providers(out: &mut String, registry: &Registry) {
    let now = Instant::now();
    let mut breakers = String::new();
    let mut model_breakers = String::new();
    let mut cooldowns = String::new();
    let mut attempts = String::new();
    let mut limited = String::new();
    let mut busy = String::new();
    let mut calls = String::new();
    let mut faults = String::new();
    for p in &registry.providers {
        let provider = escape(&p.id);
        let gauge = |state: BreakerState| match state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        let state = gauge(p.breakers.summary(now).state);
        let _ = writeln!(breakers, "freellm_breaker_state{{provider=\"{provider}\"}} {state}");
        for (model, b) in p.breakers.models() {
            let _ = writeln!(
                model_breakers,
                "freellm_model_breaker_state{{provider=\"{provider}\",model=\"{}\"}} {}",
                escape(&model),
                gauge(b.snapshot(now).state)
            );
        }
        for key in 0..p.keys.len() {
            let left = p.keys.cooldown_left(key).map_or(0.0, |d| d.as_secs_f64());
            let _ = writeln!(
                cooldowns,
                "freellm_key_cooldown_seconds{{provider=\"{provider}\",key=\"{key}\"}} {}",
                format_float(left)
            );
        }
        let stats = &p.stats;
        for (outcome, n) in [("success", &stats.success), ("failure", &stats.failed)] {
            let _ = writeln!(
                attempts,
                "freellm_upstream_attempts_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            limited,
            "freellm_upstream_rate_limited_total{{provider=\"{provider}\"}} {}",
            stats.rate_limited.load(Ordering::Relaxed)
        );
        if let Some(adapter) = &p.adapter {
            let s = &adapter.stats;
            let secs = s.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ =
                writeln!(busy, "freellm_adapter_busy_seconds_total{{provider=\"{provider}\"}} {}", format_float(secs));
            let _ = writeln!(
                calls,
                "freellm_adapter_calls_total{{provider=\"{provider}\"}} {}",
                s.calls.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                faults,
                "freellm_adapter_faults_total{{provider=\"{provider}\"}} {}",
                s.faults.load(Ordering::Relaxed)
            );
        }
    }
    let sections = [
        (
            "freellm_breaker_state",
            "gauge",
            "Circuit breaker per provider, the worst of its models: 0 closed, 1 half_open, 2 open.",
            breakers,
        ),
        (
            "freellm_model_breaker_state",
            "gauge",
            "Circuit breaker per provider and model: 0 closed, 1 half_open, 2 open.",
            model_breakers,
        ),
        (
            "freellm_key_cooldown_seconds",
            "gauge",
            "Seconds until a rate-limited key is used again (0: ready).",
            cooldowns,
        ),
        ("freellm_upstream_attempts_total", "counter", "Upstream attempts per provider and outcome.", attempts),
        ("freellm_upstream_rate_limited_total", "counter", "Upstream attempts refused with a rate limit.", limited),
        (
            "freellm_adapter_busy_seconds_total",
            "counter",
            "Time spent inside the provider's adapter component (current version).",
            busy,
        ),
        ("freellm_adapter_calls_total", "counter", "Calls into the provider's adapter component.", calls),
        ("freellm_adapter_faults_total", "counter", "Adapter calls that trapped or hit a sandbox limit.", faults),
    ];
    for (name, kind, help, body) in sections {
        header(out, name, kind, help);
        out.push_str(&body);
    }
}

/// `freellm_shared_state_up`: whether this instance reaches the fleet's
/// shared state (always 1 on the local backend).
pub fn render_shared_state(out: &mut String, status: &crate::fleet::SharedStateStatus) {
    header(
        out,
        "freellm_shared_state_up",
        "gauge",
        "1 when the shared state answers; 0 when degraded: shared state unavailable (caps follow on_redis_error).",
    );
    let backend = match status.backend {
        crate::fleet::Backend::Local => "local",
        crate::fleet::Backend::Redis => "redis",
    };
    let labels = labels(&["backend", "instance_id"], &[backend, status.instance_id.as_str()]);
    let _ = writeln!(out, "freellm_shared_state_up{{{labels}}} {}", u8::from(!status.degraded));
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(names: &[&str], values: &[impl AsRef<str>]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape(value.as_ref()));
    }
    out
}

/// A label value as the text format wants it: secrets redacted (a model
/// name is client text), then `\`, `"` and newlines escaped.
pub fn escape(value: &str) -> String {
    let value = crate::redact::redact(value);
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float as Go's `strconv` would print it for Prometheus (`0.5`, `1e-05`
/// is fine too; integers print without a fraction).
fn format_float(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(provider: Option<&str>, status: RequestStatus, reason: Option<&'static str>) -> RequestLogEntry {
        RequestLogEntry {
            id: "r".into(),
            at_ms: 0,
            requested_model: "free".into(),
            resolved_model: provider.map(|p| format!("{p}/m")),
            provider: provider.map(str::to_owned),
            latency_ms: 1,
            streaming: false,
            status,
            route_reason: reason,
            attempted: vec![],
            error: None,
            prompt_tokens: None,
            completion_tokens: None,
            finish_reason: None,
            cached: false,
        }
    }

    #[test]
    fn histograms_are_cumulative_with_an_inf_bucket() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"0.001\"} 1\nx_bucket{a=\"b\",le=\"0.01\"} 2\nx_bucket{a=\"b\",le=\"+Inf\"} 3\n\
             x_sum{a=\"b\"} 2.0055\nx_count{a=\"b\"} 3\n"
        );
    }

    #[test]
    fn requests_are_counted_by_label_set() {
        let m = Metrics::default();
        let ok = entry(Some("groq"), RequestStatus::Success, Some("meta"));
        m.record_request(&ok, Duration::from_millis(3), Duration::from_millis(2));
        m.record_request(&ok, Duration::from_millis(3), Duration::from_millis(2));
        m.record_request(
            &entry(None, RequestStatus::AllProvidersFailed, None),
            Duration::from_millis(3),
            Duration::ZERO,
        );
        let series = m.requests.snapshot();
        assert_eq!(series.len(), 2);
        assert_eq!(m.requests_total(), 3);
        assert_eq!(m.overhead.count(), 2);
        assert_eq!(m.durations[1].count(), 2);
        assert_eq!(m.durations[ROUTE_REASONS.len() - 1].count(), 1, "failed requests count under `none`");
    }

    #[test]
    fn label_sets_beyond_the_limit_fold_into_other() {
        let map: LabelMap<AtomicU64> = LabelMap::new(|| AtomicU64::new(0));
        for i in 0..MAX_SERIES + 10 {
            map.with(&[&i.to_string()], |c| c.fetch_add(1, Ordering::Relaxed));
        }
        let all = map.snapshot();
        assert_eq!(all.len(), MAX_SERIES + 1);
        let other = all.iter().find(|s| &*s.values[0] == "other").expect("other series");
        assert_eq!(other.value.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn label_values_are_redacted() {
        crate::redact::set_secrets("test:metrics", ["metric-label-secret"]);
        assert_eq!(labels(&["model"], &["x/metric-label-secret"]), "model=\"x/[REDACTED]\"");
        assert_eq!(labels(&["model"], &["Bearer abc"]), "model=\"Bearer [REDACTED]\"");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(labels(&["x", "y"], &["1", "q\""]), "x=\"1\",y=\"q\\\"\"");
    }
}
