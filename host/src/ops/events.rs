//! The live event bus behind `GET /v1/events`: every finished request and
//! every state change (a breaker moving, a key cooling down, an adapter
//! swapped or rejected, cache counters, the routing strategy) is published
//! here and fanned out to the connected dashboards.
//!
//! The bus is a bounded [`tokio::sync::broadcast`] channel. Publishing never
//! waits: with no subscriber it is one atomic load (callers check
//! [`EventBus::has_subscribers`] before building an event), and a subscriber
//! that falls behind by more than [`CAPACITY`] events loses the oldest ones
//! and is told so with an [`Event::Lagged`] marker instead of slowing the
//! request path down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::ops::stats::RequestLogEntry;
use crate::routing::cache::CacheStats;
use freellm_limits::breaker::BreakerState;

/// Events a subscriber may fall behind by before it starts losing them
/// (a feed gathers events for 100 ms before writing: room for 40 000
/// requests a second).
pub const CAPACITY: usize = 4096;

/// One thing that happened in the gateway, as the event feed sends it
/// (`{"type": "<kind>", ...}`).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A chat request finished (the `recentRequests` entry).
    Request(RequestLogEntry),
    /// A circuit breaker of a provider's model changed state (or the
    /// provider's breakers were reset).
    Breaker {
        /// Provider id.
        provider: String,
        /// The provider's summary state now (the worst of its models).
        state: BreakerState,
        /// The upstream model whose breaker moved; absent for a reset of
        /// the whole provider.
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// That model's state now.
        #[serde(skip_serializing_if = "Option::is_none")]
        model_state: Option<BreakerState>,
    },
    /// A provider key was rested after a rate limit or a spent quota.
    KeyCooldown {
        /// Provider id.
        provider: String,
        /// The key's index in the provider's ring.
        key: usize,
        /// How long it rests, in milliseconds.
        retry_after_ms: u64,
    },
    /// An adapter version was loaded, rejected, rolled back or promoted.
    Adapter {
        /// Provider slot id.
        id: String,
        /// The adapter's version.
        version: String,
        /// Hex SHA-256 of the component.
        hash: String,
        /// `loaded`, `rejected`, `rolled_back`, `promoted`, ...
        state: String,
        /// Why it was rejected or rolled back.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The response cache's counters changed.
    Cache(CacheStats),
    /// The global routing strategy was switched.
    Routing {
        /// The new strategy (`quota_aware`, `round_robin`, `random`).
        strategy: String,
    },
    /// Not published: what a subscriber receives in place of the events it
    /// was too slow to take.
    Lagged {
        /// Events lost.
        missed: u64,
    },
}

impl Event {
    /// Redacts the free-text fields, which quote upstreams and adapters.
    fn redact(&mut self) {
        match self {
            Self::Request(entry) => entry.redact(),
            Self::Adapter { error: Some(error), .. } => {
                if let std::borrow::Cow::Owned(clean) = crate::redact::redact(error) {
                    *error = clean;
                }
            }
            _ => {}
        }
    }

    /// The SSE `event:` name (the same as the `type` field).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Request(_) => "request",
            Self::Breaker { .. } => "breaker",
            Self::KeyCooldown { .. } => "key_cooldown",
            Self::Adapter { .. } => "adapter",
            Self::Cache(_) => "cache",
            Self::Routing { .. } => "routing",
            Self::Lagged { .. } => "lagged",
        }
    }
}

/// The publish side, shared by the whole gateway.
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
    closed: watch::Sender<bool>,
    lagged: AtomicU64,
    /// Live subscriptions, kept apart from the channel's own count (which
    /// takes a lock) so the request path only does an atomic load.
    subscribers: Arc<AtomicUsize>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self {
            sender,
            closed: watch::Sender::new(false),
            lagged: AtomicU64::new(0),
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").field("subscribers", &self.subscribers()).finish()
    }
}

impl EventBus {
    /// True when someone listens: build an event only then.
    pub fn has_subscribers(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Connected subscribers.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Events lost by slow subscribers since start.
    pub fn lagged_total(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// Sends an event to every subscriber; never waits. Dropped when nobody
    /// listens.
    pub fn publish(&self, mut event: Event) {
        if self.has_subscribers() {
            event.redact();
            let _ = self.sender.send(Arc::new(event));
        }
    }

    /// Publishes a finished request (cloned only when someone listens).
    pub fn publish_request(&self, entry: &RequestLogEntry) {
        if self.has_subscribers() {
            self.publish(Event::Request(entry.clone()));
        }
    }

    /// Publishes a breaker state change of `provider`: its summary state
    /// and, when one model's breaker moved, that model and its state.
    pub fn publish_breaker(&self, provider: &str, state: BreakerState, model: Option<(&str, BreakerState)>) {
        if self.has_subscribers() {
            self.publish(Event::Breaker {
                provider: provider.to_owned(),
                state,
                model: model.map(|(m, _)| m.to_owned()),
                model_state: model.map(|(_, s)| s),
            });
        }
    }

    /// Publishes that key `key` of `provider` rests for `retry_after` (nothing
    /// when it does not rest).
    pub fn publish_key_cooldown(&self, provider: &str, key: usize, retry_after: Option<Duration>) {
        if let Some(wait) = retry_after
            && self.has_subscribers()
        {
            let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            self.publish(Event::KeyCooldown { provider: provider.to_owned(), key, retry_after_ms });
        }
    }

    /// A new subscription; it sees events published from now on.
    pub fn subscribe(&self) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            receiver: self.sender.subscribe(),
            closed: self.closed.subscribe(),
            bus_lagged: None,
            count: self.subscribers.clone(),
        }
    }

    /// Ends every subscription (graceful shutdown: an open feed would
    /// otherwise keep the server from draining).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn note_lagged(&self, missed: u64) {
        self.lagged.fetch_add(missed, Ordering::Relaxed);
    }
}

/// Caps the feeds one principal holds at once
/// (`max_event_feeds_per_principal`): each feed costs the request path a
/// share of every publish, so one credential opening a thousand feeds cut
/// everyone's throughput. Owners with no feed leave no entry behind.
#[derive(Debug)]
pub struct FeedSlots {
    max: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl FeedSlots {
    /// At most `max` feeds per owner.
    pub fn new(max: usize) -> Self {
        Self { max, held: Arc::default() }
    }

    /// The most feeds one owner may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `owner`, or `None` when it holds `max` already. The slot
    /// is given back when dropped (the feed ended).
    pub fn try_acquire(&self, owner: String) -> Option<FeedSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(owner.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(FeedSlot { owner, held: self.held.clone() })
    }

    /// Feeds `owner` holds now.
    pub fn held_by(&self, owner: &str) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).get(owner).copied().unwrap_or(0)
    }

    /// Owners holding at least one feed.
    pub fn owners(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One held feed slot; dropping it frees the slot.
#[derive(Debug)]
pub struct FeedSlot {
    owner: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.owner);
            }
        }
    }
}

/// The receive side of one subscriber.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Event>>,
    closed: watch::Receiver<bool>,
    bus_lagged: Option<u64>,
    count: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// The next event; a lag becomes an [`Event::Lagged`] marker. `None` once
    /// the bus is closed.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        if *self.closed.borrow() {
            return None;
        }
        let received = tokio::select! {
            received = self.receiver.recv() => received,
            _ = self.closed.wait_for(|closed| *closed) => return None,
        };
        self.map(received)
    }

    /// An event already waiting, without waiting for one.
    pub fn try_next(&mut self) -> Option<Arc<Event>> {
        match self.receiver.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                self.bus_lagged = Some(self.bus_lagged.unwrap_or(0) + missed);
                Some(Arc::new(Event::Lagged { missed }))
            }
            Err(_) => None,
        }
    }

    /// True once the bus was closed.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Events this subscriber lost (reported to the bus by the caller).
    pub fn take_lagged(&mut self) -> Option<u64> {
        self.bus_lagged.take()
    }

    fn map(&mut self, received: Result<Arc<Event>, broadcast::error::RecvError>) -> Option<Arc<Event>> {
        match received {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                self.bus_lagged = Some(self.bus_lagged.unwrap_or(0) + missed);
                Some(Arc::new(Event::Lagged { missed }))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Counts what a subscription lost on the bus (for `/metrics`).
pub fn report_lag(bus: &EventBus, subscription: &mut Subscription) {
    if let Some(missed) = subscription.take_lagged() {
        bus.note_lagged(missed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_slots_cap_each_owner_and_a_dropped_slot_frees_its_place() {
        let slots = FeedSlots::new(2);
        let a1 = slots.try_acquire("admin".into()).expect("first");
        let a2 = slots.try_acquire("admin".into()).expect("second");
        assert!(slots.try_acquire("admin".into()).is_none(), "third refused");
        let other = slots.try_acquire("ip:127.0.0.1".into()).expect("owners are counted apart");
        assert_eq!(slots.held_by("admin"), 2);
        drop(a1);
        assert_eq!(slots.held_by("admin"), 1);
        let a3 = slots.try_acquire("admin".into()).expect("a freed slot is reusable");
        drop((a2, a3, other));
        assert_eq!(slots.owners(), 0, "no entry outlives its feeds");
        for _ in 0..1000 {
            let _ = slots.try_acquire("admin".into());
        }
        assert_eq!(slots.owners(), 0);
    }

    fn routing(n: usize) -> Event {
        Event::Routing { strategy: format!("s{n}") }
    }

    #[tokio::test]
    async fn publishing_without_subscribers_is_a_no_op() {
        let bus = EventBus::default();
        assert!(!bus.has_subscribers());
        bus.publish(routing(0));
        let mut sub = bus.subscribe();
        assert!(bus.has_subscribers());
        assert!(sub.try_next().is_none());
        drop(sub);
        assert_eq!(bus.subscribers(), 0);
    }

    #[tokio::test]
    async fn subscribers_receive_events_in_order() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe();
        bus.publish(routing(1));
        bus.publish_breaker("groq", BreakerState::Open, Some(("llama", BreakerState::Open)));
        bus.publish_breaker("groq", BreakerState::Closed, None);
        let first = sub.next().await.expect("event");
        assert_eq!(first.kind(), "routing");
        let second = sub.next().await.expect("event");
        let json = serde_json::to_value(&*second).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type": "breaker", "provider": "groq", "state": "open", "model": "llama", "model_state": "open"})
        );
        let reset = serde_json::to_value(&*sub.next().await.expect("event")).expect("json");
        assert_eq!(reset, serde_json::json!({"type": "breaker", "provider": "groq", "state": "closed"}));
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_events_and_gets_a_lagged_marker() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe();
        for i in 0..CAPACITY + 10 {
            bus.publish(routing(i));
        }
        let marker = sub.next().await.expect("marker");
        assert!(matches!(*marker, Event::Lagged { missed: 10 }), "{marker:?}");
        report_lag(&bus, &mut sub);
        assert_eq!(bus.lagged_total(), 10);
        let next = sub.next().await.expect("event");
        assert!(matches!(&*next, Event::Routing { strategy } if strategy == "s10"));
    }

    #[tokio::test]
    async fn closing_the_bus_ends_subscriptions() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe();
        let waiter = tokio::spawn(async move { sub.next().await.is_none() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        bus.close();
        assert!(waiter.await.expect("join"));
        assert!(bus.subscribe().next().await.is_none());
    }

    #[test]
    fn cooldowns_without_a_wait_are_not_published() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe();
        bus.publish_key_cooldown("groq", 0, None);
        assert!(sub.try_next().is_none());
        bus.publish_key_cooldown("groq", 1, Some(Duration::from_millis(1500)));
        let event = sub.try_next().expect("event");
        let json = serde_json::to_value(&*event).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type": "key_cooldown", "provider": "groq", "key": 1, "retry_after_ms": 1500})
        );
    }
}
