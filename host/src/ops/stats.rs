//! Observability counters: per-provider request counts, rolling 24 h token
//! usage, and the log of recent chat requests shown by `/v1/status`.
//!
//! Counters are atomics; the usage buckets and the request log sit behind
//! short mutexes (one push or one 24-bucket sum per request).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// An ISO-8601 UTC timestamp with milliseconds, e.g. `2026-11-30T09:15:02.123Z`.
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60, ms % 1000)
}

/// Serializes milliseconds since the epoch as [`iso8601`].
fn serialize_iso8601<S: serde::Serializer>(ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&iso8601(*ms))
}

/// Token usage summed over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt + completion.
    pub total_tokens: u64,
    /// Answers counted.
    pub request_count: u64,
}

impl UsageTotals {
    /// Adds another total.
    pub fn add(&mut self, other: &UsageTotals) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.request_count += other.request_count;
    }
}

const HOUR_MS: u64 = 3_600_000;
const HOURS: usize = 24;

/// Rolling 24 h token usage in hourly buckets (the window is 23-24 h).
#[derive(Debug, Default)]
pub struct UsageTracker {
    buckets: Mutex<[(u64, UsageTotals); HOURS]>,
}

impl UsageTracker {
    /// Records one answer's usage at `now_ms`.
    pub fn record(&self, now_ms: u64, prompt: u64, completion: u64) {
        let hour = now_ms / HOUR_MS;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut buckets[(hour % HOURS as u64) as usize];
        if slot.0 != hour {
            *slot = (hour, UsageTotals::default());
        }
        slot.1.add(&UsageTotals {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            request_count: 1,
        });
    }

    /// The non-empty buckets `(hour since epoch, totals)`, for the store.
    pub fn export(&self) -> Vec<(u64, UsageTotals)> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.iter().filter(|(_, t)| t.request_count > 0).copied().collect()
    }

    /// Restores buckets saved by [`export`](Self::export) (later ones win).
    pub fn import(&self, saved: &[(u64, UsageTotals)]) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for (hour, totals) in saved {
            let slot = &mut buckets[(hour % HOURS as u64) as usize];
            if slot.0 <= *hour {
                *slot = (*hour, *totals);
            }
        }
    }

    /// The sum over the last 24 hourly buckets.
    pub fn totals(&self, now_ms: u64) -> UsageTotals {
        let hour = now_ms / HOUR_MS;
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut sum = UsageTotals::default();
        for (h, totals) in buckets.iter() {
            if *h + (HOURS as u64) > hour && *h <= hour {
                sum.add(totals);
            }
        }
        sum
    }
}

/// Per-provider counters since boot.
#[derive(Debug, Default)]
pub struct ProviderStats {
    /// Attempts sent upstream.
    pub total: AtomicU64,
    /// Attempts that answered.
    pub success: AtomicU64,
    /// Attempts that failed (rate limits included).
    pub failed: AtomicU64,
    /// Attempts the upstream rate-limited.
    pub rate_limited: AtomicU64,
    /// Unix ms of the last failure (0 = none).
    pub last_error_ms: AtomicU64,
    /// The last failure's message.
    pub last_error: Mutex<Option<String>>,
    /// Unix ms of the last attempt (0 = never).
    pub last_used_ms: AtomicU64,
    /// Rolling 24 h token usage.
    pub usage: UsageTracker,
}

impl ProviderStats {
    /// An attempt is about to be sent.
    pub fn attempt(&self, now_ms: u64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.last_used_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The attempt answered.
    pub fn success(&self) {
        self.success.fetch_add(1, Ordering::Relaxed);
    }

    /// The attempt failed.
    pub fn failure(&self, now_ms: u64, rate_limited: bool, message: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if rate_limited {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        self.last_error_ms.store(now_ms, Ordering::Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(crate::redact::redact(message).into_owned());
    }
}

/// How a chat request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// A provider (or the cache) answered.
    Success,
    /// Refused or failed before or outside routing.
    Error,
    /// Every candidate provider failed.
    AllProvidersFailed,
}

impl RequestStatus {
    /// The name in `recentRequests` and the `status` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::AllProvidersFailed => "all_providers_failed",
        }
    }
}

/// One chat request, as shown in `recentRequests`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestLogEntry {
    /// The request id.
    pub id: String,
    /// When it finished (ms since the epoch); shown as the ISO `timestamp`.
    #[serde(rename = "timestamp", serialize_with = "serialize_iso8601")]
    pub at_ms: u64,
    /// The model as sent.
    pub requested_model: String,
    /// The prefixed model that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_model: Option<String>,
    /// The provider that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Total latency.
    pub latency_ms: u64,
    /// A streaming request.
    pub streaming: bool,
    /// How the request ended.
    pub status: RequestStatus,
    /// Route reason on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_reason: Option<&'static str>,
    /// Providers tried, in order.
    pub attempted: Vec<String>,
    /// The error message on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Prompt tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    /// Completion tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
    /// Finish reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Answered from the cache.
    pub cached: bool,
}

impl RequestLogEntry {
    /// Redacts the free-text fields (the error quotes upstreams and adapters).
    pub fn redact(&mut self) {
        if let Some(error) = &mut self.error
            && let std::borrow::Cow::Owned(clean) = crate::redact::redact(error)
        {
            *error = clean;
        }
    }
}

/// Entries the log keeps.
pub const LOG_CAPACITY: usize = 500;

/// The recent-requests ring and the gateway-wide counters.
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Mutex<VecDeque<RequestLogEntry>>,
    /// Chat requests logged.
    pub total: AtomicU64,
    /// Logged as success.
    pub success: AtomicU64,
    /// Logged as anything else.
    pub failed: AtomicU64,
    /// Streams resumed on another provider after a cut.
    pub continuations: AtomicU64,
}

impl RequestLog {
    /// Appends an entry (dropping the oldest beyond [`LOG_CAPACITY`]).
    pub fn push(&self, mut entry: RequestLogEntry) {
        entry.redact();
        self.total.fetch_add(1, Ordering::Relaxed);
        if entry.status == RequestStatus::Success {
            self.success.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == LOG_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The newest `n` entries, newest first.
    pub fn recent(&self, n: usize) -> Vec<RequestLogEntry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().rev().take(n).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_timestamps() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_764_494_102_123), "2025-11-30T09:15:02.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn usage_rolls_over_24_hours() {
        let t = UsageTracker::default();
        let h0 = 1_000 * HOUR_MS;
        t.record(h0, 10, 5);
        t.record(h0 + 10, 1, 1);
        assert_eq!(t.totals(h0).total_tokens, 17);
        assert_eq!(t.totals(h0).request_count, 2);
        t.record(h0 + 5 * HOUR_MS, 100, 0);
        assert_eq!(t.totals(h0 + 5 * HOUR_MS).prompt_tokens, 111);
        // 24 hours later the first bucket has left the window.
        assert_eq!(t.totals(h0 + 24 * HOUR_MS).prompt_tokens, 100);
        // The same ring slot is reused for a later hour.
        t.record(h0 + 24 * HOUR_MS, 7, 0);
        assert_eq!(t.totals(h0 + 24 * HOUR_MS).prompt_tokens, 107);
        assert_eq!(t.totals(h0 + 48 * HOUR_MS), UsageTotals::default());
    }

    #[test]
    fn the_request_log_is_bounded_and_newest_first() {
        let log = RequestLog::default();
        for i in 0..(LOG_CAPACITY + 5) {
            log.push(RequestLogEntry {
                id: i.to_string(),
                at_ms: 1_764_494_102_123 + i as u64,
                requested_model: "free".into(),
                resolved_model: None,
                provider: None,
                latency_ms: 0,
                streaming: false,
                status: if i % 2 == 0 { RequestStatus::Success } else { RequestStatus::Error },
                route_reason: None,
                attempted: vec![],
                error: None,
                prompt_tokens: None,
                completion_tokens: None,
                finish_reason: None,
                cached: false,
            });
        }
        let recent = log.recent(50);
        assert_eq!(recent.len(), 50);
        assert_eq!(recent[0].id, (LOG_CAPACITY + 4).to_string());
        assert_eq!(log.recent(10_000).len(), LOG_CAPACITY);
        assert_eq!(log.total.load(Ordering::Relaxed), (LOG_CAPACITY + 5) as u64);
        // Kept as milliseconds, shown as an ISO timestamp.
        let json = serde_json::to_value(&recent[0]).unwrap();
        let expected = iso8601(1_764_494_102_123 + (LOG_CAPACITY + 4) as u64);
        assert_eq!(json["timestamp"], expected.as_str());
        assert!(json.get("atMs").is_none());
    }
}
