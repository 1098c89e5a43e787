//! `GET /v1/events`: the live feed the dashboard runs on, as server-sent
//! events.
//!
//! On connect the feed sends a `snapshot` event (the `/v1/status` object),
//! then every [`Event`] published on the gateway's bus as
//! `event: <type>\ndata: <json>\n\n`, a `cache` event when the response
//! cache's counters moved (checked every 2 s), and a `: keep-alive` comment
//! after 15 s of silence (which is also how a vanished client is noticed).
//! Events are gathered for [`BATCH_WINDOW`] after the first one and written
//! together, so a busy gateway costs a subscriber one wake-up and one write
//! per batch, not per request. The feed ends when the client disconnects or
//! the gateway shuts down.
//!
//! The feed is an operator view (the guard refuses tenants), and one
//! principal (one client IP in open mode) holds at most
//! `max_event_feeds_per_principal` feeds at once: more is refused with 429
//! and a closed feed frees its slot.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::access::auth::Principal;
use crate::http::error::ApiError;
use crate::http::guard::ClientAddr;
use crate::ops::events::{Event, FeedSlot, Subscription, report_lag};
use crate::routing::cache::CacheStats;
use crate::state::SharedGateway;

/// Silence after which a keep-alive comment is sent.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How often the cache counters are checked (a `cache` event is sent when
/// they moved).
pub const CACHE_CHECK: Duration = Duration::from_secs(2);

/// After an event arrives, how long the feed gathers more before writing:
/// a busy gateway then costs a subscriber one wake-up and one write per
/// window instead of per request (and publishers wake no one meanwhile).
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);

/// Events written in one batch at most.
const MAX_BATCH: usize = crate::ops::events::CAPACITY;

/// The event feed.
pub async fn events(
    State(gw): State<SharedGateway>,
    principal: Option<Extension<Principal>>,
    addr: Option<Extension<ClientAddr>>,
) -> Response {
    let ip = addr.and_then(|Extension(ClientAddr(ip))| ip);
    let owner = principal.map_or_else(|| Principal::Open.feed_owner(ip), |Extension(p)| p.feed_owner(ip));
    let Some(slot) = gw.event_feeds.try_acquire(owner) else {
        return ApiError::TooManyEventFeeds { max: gw.event_feeds.max() }.into_response();
    };
    // Subscribe before taking the snapshot: nothing falls between the two
    // (an event may appear in both; request events carry their id).
    let subscription = gw.events.subscribe();
    let mut first = String::new();
    frame(&mut first, "snapshot", &crate::http::api::status::status_snapshot(&gw).await);
    let mut tick = tokio::time::interval(CACHE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cache = cache_counters(&gw.cache.stats());
    let state = Feed {
        gw,
        subscription,
        pending: Some(Bytes::from(first)),
        tick,
        last_write: Instant::now(),
        cache,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(state, |mut feed| async move {
        let chunk = feed.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), feed))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

struct Feed {
    gw: SharedGateway,
    subscription: Subscription,
    pending: Option<Bytes>,
    tick: tokio::time::Interval,
    last_write: Instant,
    /// The cache counters last sent.
    cache: [u64; 5],
    /// Given back when the feed ends (the stream, and so this, is dropped).
    _slot: FeedSlot,
}

impl Feed {
    /// The next bytes to write: the snapshot, a batch of events or a
    /// keep-alive. `None` ends the feed.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.pending.take() {
            return Some(first);
        }
        let event = loop {
            tokio::select! {
                event = self.subscription.next() => break event?,
                _ = self.tick.tick() => {
                    if let Some(chunk) = self.cache_changes() {
                        return Some(chunk);
                    }
                    if self.last_write.elapsed() >= KEEP_ALIVE {
                        self.last_write = Instant::now();
                        return Some(Bytes::from_static(b": keep-alive\n\n"));
                    }
                }
            }
        };
        tokio::time::sleep(BATCH_WINDOW).await;
        self.last_write = Instant::now();
        let mut out = String::with_capacity(1024);
        write_event(&mut out, &event);
        for _ in 1..MAX_BATCH {
            match self.subscription.try_next() {
                Some(event) => write_event(&mut out, &event),
                None => break,
            }
        }
        report_lag(&self.gw.events, &mut self.subscription);
        Some(Bytes::from(out))
    }
}

impl Feed {
    /// A `cache` event when the cache's counters moved since the last one.
    fn cache_changes(&mut self) -> Option<Bytes> {
        let stats = self.gw.cache.stats();
        let counters = cache_counters(&stats);
        if counters == self.cache {
            return None;
        }
        self.cache = counters;
        self.last_write = Instant::now();
        let mut out = String::new();
        write_event(&mut out, &Event::Cache(stats));
        Some(Bytes::from(out))
    }
}

fn cache_counters(s: &CacheStats) -> [u64; 5] {
    [s.hits, s.misses, s.sets, s.evictions, s.current_size]
}

fn write_event(out: &mut String, event: &Event) {
    frame(out, event.kind(), event);
}

/// One SSE frame; JSON never holds a raw newline, so one `data:` line.
fn frame(out: &mut String, kind: &str, data: &impl serde::Serialize) {
    match serde_json::to_string(data) {
        Ok(json) => {
            let _ = write!(out, "event: {kind}\ndata: {json}\n\n");
        }
        Err(e) => tracing::warn!(error = %e, kind, "cannot serialize an event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_named_and_single_line() {
        let mut out = String::new();
        write_event(&mut out, &Event::Routing { strategy: "random".into() });
        assert_eq!(out, "event: routing\ndata: {\"type\":\"routing\",\"strategy\":\"random\"}\n\n");
    }
}
