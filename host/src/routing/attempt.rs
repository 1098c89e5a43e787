//! One attempt: the phases a request's call to one candidate goes through,
//! shared by the failover loop ([`crate::routing::failover`]) and a cut
//! stream's continuation ([`crate::routing::stream`]).
//!
//! *acquire* ([`acquire_target`]: the breaker's permit and the adapter
//! version; [`acquire_key`]: a key with room, its use reserved) → *send*
//! ([`send`]: the adapter maps, the host sends) → *classify* ([`classify`]:
//! the adapter names a non-2xx) → the caller asks
//! [`crate::routing::decide::decide`] what follows → *report*
//! ([`report_sent`], [`report_failure`]; the breaker hears the outcome
//! through the [`AttemptVerdict`]). Neither caller's loop lives here, so
//! this module imports neither of them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::clock;
use crate::fleet::Fleet;
use crate::fleet::caps::{KeyHealthItems, KeyVerdict};
use crate::fleet::deltas::{Counter, Delta};
use crate::fleet::health::{self, HealthChange};
use crate::ops::metrics::UpstreamTime;
use crate::ops::stats::unix_ms;
use crate::providers::ProviderEntry;
use crate::providers::keys::KeyRing;
use crate::routing::decide::{AttemptFailure, Decision, KeyEffect};
use crate::routing::error::RoutingError;
use crate::routing::upstream::{UpstreamError, UpstreamResponse, response_head};
use crate::state::SharedGateway;
use freellm_limits::breaker::{Breaker, Outcome as BreakerOutcome, Permit};
use freellm_limits::quota::{Limits, Reservation};
use freellm_runtime::Adapter;
use freellm_runtime::types::{CallContext, Failure, FailureKind};

/// One attempt's fixed parts: who is called, with which adapter and call
/// context.
pub(crate) struct Call<'a> {
    /// The gateway (upstream client, events, metrics).
    pub gw: &'a SharedGateway,
    /// For log lines.
    pub request_id: &'a str,
    /// The provider tried.
    pub provider: &'a Arc<ProviderEntry>,
    /// The adapter version that maps and classifies.
    pub adapter: &'a Arc<Adapter>,
    /// The adapter's call context.
    pub ctx: &'a CallContext,
    /// The key ring the attempt's model is counted in (a model with limits
    /// of its own has its own ring).
    pub keys: &'a Arc<KeyRing>,
    /// Where upstream waits are added up (the gateway-overhead figure).
    pub upstream_time: Option<&'a UpstreamTime>,
}

/// A key reserved for one attempt.
pub(crate) struct KeyGrant {
    /// The key's index in the provider's ring.
    pub index: usize,
    secret: Option<String>,
    /// The request counted in the key's windows, until it is settled,
    /// released or handed to a stream.
    reservation: Option<Reservation>,
    /// The ring the key and its reservation belong to.
    keys: Arc<KeyRing>,
    /// The same request counted in the fleet's windows (with Redis).
    shared: Option<FleetReservation>,
}

/// A key's reservation handed on to whoever settles it with the real usage
/// (a committed stream, when it ends).
pub struct KeyHold {
    keys: Arc<KeyRing>,
    index: usize,
    reservation: Reservation,
    shared: Option<FleetReservation>,
}

impl KeyHold {
    /// Counts the request's real token use in the key's windows.
    pub fn settle(self, tokens: Option<u32>) {
        let estimate = self.reservation.estimated_tokens();
        self.keys.settle(self.index, self.reservation, tokens);
        if let Some(shared) = self.shared {
            shared.settle(estimate, tokens);
        }
    }
}

impl KeyGrant {
    /// Undoes the reservation: the request never reached the upstream.
    pub(crate) fn release(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            let estimate = reservation.estimated_tokens();
            self.keys.release(self.index, reservation);
            if let Some(shared) = self.shared.take() {
                shared.release(estimate);
            }
        }
    }

    /// Hands the reservation on (to a stream, which settles it when it ends).
    pub(crate) fn take_hold(&mut self) -> Option<KeyHold> {
        let reservation = self.reservation.take()?;
        Some(KeyHold { keys: self.keys.clone(), index: self.index, reservation, shared: self.shared.take() })
    }
}

/// A provider key's request as the fleet counted it.
struct FleetReservation {
    fleet: Arc<Fleet>,
    /// The key's store id (hashed, never the secret).
    store_id: String,
    /// The buckets Redis counted it in; `None`: counted locally while
    /// degraded, so the whole request is merged later.
    buckets: Option<(i64, i64)>,
}

impl FleetReservation {
    fn settle(self, estimate: u32, tokens: Option<u32>) {
        let tokens = i64::from(tokens.unwrap_or(estimate));
        match self.buckets {
            Some(buckets) => {
                let delta = Delta { requests: 0, tokens: tokens - i64::from(estimate) };
                if delta.tokens != 0 {
                    self.fleet.adjust_provider_key(self.store_id, buckets, delta);
                }
            }
            None => self.fleet.keep_delta(Counter::ProviderKey(self.store_id), Delta { requests: 1, tokens }),
        }
    }

    fn release(self, estimate: u32) {
        if let Some(buckets) = self.buckets {
            let delta = Delta { requests: -1, tokens: -i64::from(estimate) };
            self.fleet.adjust_provider_key(self.store_id, buckets, delta);
        }
    }
}

/// A failed attempt, classified.
pub(crate) struct Failed {
    /// What went wrong, for [`decide`](crate::routing::decide::decide).
    pub failure: AttemptFailure,
    /// What the client learns if routing ends here.
    pub error: RoutingError,
    /// The provider's last error for its status; `None` when the provider
    /// is not to blame (its adapter declined to map the request).
    pub detail: Option<String>,
}

/// Acquire, target part: the adapter version (a canary takes its share)
/// and a permit of the breaker of the target's model, wrapped in the
/// verdict that will record the outcome.
pub(crate) async fn acquire_target(
    gw: &SharedGateway,
    provider: &Arc<ProviderEntry>,
    model: &str,
    request_id: &str,
) -> Option<(Arc<Adapter>, AttemptVerdict)> {
    let (adapter, on_canary) = provider.select_adapter()?;
    let breaker = provider.breakers.for_model(model);
    match breaker.try_acquire(clock::now()) {
        // In a fleet, one probe across the instances: only the claim's
        // holder sends it; for the others the breaker is still open.
        Ok(permit) if permit.is_probe() && !gw.fleet_health.claim_probe(&provider.id, model).await => {
            drop(permit);
            tracing::debug!(request_id, provider = %provider.id, model, "another instance probes this model; skipping");
            None
        }
        Ok(permit) => Some((
            adapter,
            AttemptVerdict {
                gw: gw.clone(),
                provider: provider.clone(),
                model: model.to_owned(),
                breaker,
                permit,
                on_canary,
            },
        )),
        Err(open) => {
            tracing::debug!(request_id, provider = %provider.id, model, retry_in_ms = open.retry_in.as_millis() as u64,
                "circuit open for this model; skipping");
            None
        }
    }
}

/// Acquire, key part: the next key in rotation with room for the request,
/// its use reserved. `Err` holds how long until one frees up.
///
/// In a fleet (Redis), a key whose adapter declares limits is confirmed in
/// the fleet's windows and health too (one script): a key the fleet finds
/// full, resting or invalid rests here until then and the next key is tried,
/// even before this instance has applied the change that rested it. While Redis is
/// unreachable the local windows decide (routing fails open) and the
/// request is merged into the fleet's counts later.
pub(crate) async fn acquire_key(
    call: &Call<'_>,
    model: &str,
    exclude: &[usize],
    now: Instant,
    estimated_tokens: u32,
) -> Result<KeyGrant, Duration> {
    let keys = call.keys;
    let fleet = &call.gw.fleet;
    let shares = fleet.shared().is_some() && *keys.limits() != Limits::default();
    // Each refusal rests one key, which the next pick skips: at most one
    // turn per key.
    for _ in 0..=keys.len() {
        let picked = keys.pick(exclude, now, estimated_tokens)?;
        let mut grant = KeyGrant {
            index: picked.index,
            secret: picked.secret.map(str::to_owned),
            reservation: Some(picked.reservation),
            keys: keys.clone(),
            shared: None,
        };
        if !shares {
            return Ok(grant);
        }
        let scope = if Arc::ptr_eq(keys, &call.provider.keys) {
            call.provider.id.to_string()
        } else {
            format!("{}/{model}", call.provider.id)
        };
        let provider_id = &*call.provider.id;
        // The key's id in this ring (its windows, its rest) and in the
        // provider's own ring (where an invalid key is marked).
        let (Some(store_id), Some(own_id)) =
            (keys.store_id(&scope, grant.index), keys.store_id(provider_id, grant.index))
        else {
            return Ok(grant);
        };
        let health = KeyHealthItems {
            cool: health::cool_item(provider_id, &scope, &store_id),
            invalid: health::invalid_item(provider_id, &own_id),
        };
        match fleet.reserve_provider_key(&store_id, &health, keys.limits(), estimated_tokens).await {
            Ok(KeyVerdict::Reserved { minute_bucket, day_bucket }) => {
                grant.shared = Some(FleetReservation {
                    fleet: fleet.clone(),
                    store_id,
                    buckets: Some((minute_bucket, day_bucket)),
                });
                return Ok(grant);
            }
            Ok(KeyVerdict::Full { wait_ms }) => {
                tracing::debug!(request_id = call.request_id, provider = %call.provider.id, key = grant.index, wait_ms,
                    "the fleet rests this key or its windows are full");
                // Only the local count: the fleet counted nothing.
                if let Some(reservation) = grant.reservation.take() {
                    keys.release(grant.index, reservation);
                }
                keys.cool_down(grant.index, Duration::from_millis(wait_ms));
            }
            Err(_) => {
                grant.shared = Some(FleetReservation { fleet: fleet.clone(), store_id, buckets: None });
                return Ok(grant);
            }
        }
    }
    keys.pick(exclude, now, estimated_tokens).map(|picked| KeyGrant {
        index: picked.index,
        secret: picked.secret.map(str::to_owned),
        reservation: Some(picked.reservation),
        keys: keys.clone(),
        shared: None,
    })
}

/// Send: the adapter maps the request and the host sends it, waiting for
/// the response head. A request that never reached the upstream releases
/// its key reservation.
pub(crate) async fn send(call: &Call<'_>, body: &Bytes, key: &mut KeyGrant) -> Result<UpstreamResponse, Failed> {
    let provider = call.provider;
    let upstream_request = match call.adapter.map_request(call.ctx, body).await {
        Ok(Ok(r)) => r,
        Ok(Err(failure)) => {
            key.release();
            let error = provider_error(provider, &failure);
            return Err(Failed { failure: AttemptFailure::MapRefused(failure.kind), error, detail: None });
        }
        Err(fault) => {
            key.release();
            let error = RoutingError::from_fault(&provider.id, &fault);
            return Err(Failed {
                failure: AttemptFailure::of_fault_error(&error),
                detail: Some(fault.to_string()),
                error,
            });
        }
    };
    let sent_at = clock::now();
    let auth = &call.adapter.info.auth;
    let sent = call.gw.upstream.send(&provider.base_url, upstream_request, body, auth, key.secret.as_deref()).await;
    report_sent(call, clock::now().saturating_duration_since(sent_at));
    sent.map_err(|e| {
        tracing::warn!(request_id = %call.request_id, provider = %provider.id, error = %e, "upstream attempt failed");
        let detail = Some(e.to_string());
        match e {
            UpstreamError::BadAdapterRequest(message) => {
                key.release();
                let message = format!("adapter \"{}\" failed: its request cannot be sent: {message}", provider.id);
                let error = RoutingError::AdapterFault { provider: provider.id.to_string(), message };
                Failed { failure: AttemptFailure::AdapterFault, error, detail }
            }
            e => {
                let failure = if e.is_timeout() { AttemptFailure::Silent } else { AttemptFailure::Unreachable };
                let error = RoutingError::provider(&provider.id, format!("Provider {} failed: {e}", provider.id), None);
                Failed { failure, error, detail }
            }
        }
    })
}

/// Classify: a non-2xx answer, read and classified by the adapter. An
/// adapter that traps while classifying leaves a transient failure.
pub(crate) async fn classify(call: &Call<'_>, response: UpstreamResponse) -> Failed {
    let head = response_head(&response);
    let status = head.status;
    let error_body = call.gw.upstream.read_body(response).await.unwrap_or_default();
    let failure = match call.adapter.classify_failure(call.ctx, &head, &error_body).await {
        Ok(f) => f,
        Err(fault) => Failure {
            kind: FailureKind::Transient,
            message: format!("{status} from upstream; {fault}"),
            retry_after_ms: None,
            upstream_code: None,
        },
    };
    tracing::warn!(
        request_id = %call.request_id, provider = %call.provider.id, status, kind = ?failure.kind,
        retry_after_ms = failure.retry_after_ms, "upstream refused"
    );
    Failed {
        failure: AttemptFailure::Refused {
            kind: failure.kind,
            status,
            retry_after: failure.retry_after_ms.map(Duration::from_millis),
        },
        error: provider_error(call.provider, &failure),
        detail: Some(failure.message),
    }
}

/// Report, send part: the provider's attempt count and last use, and the
/// wait for its `/metrics` latency and the request's gateway-overhead
/// figure.
pub(crate) fn report_sent(call: &Call<'_>, waited: Duration) {
    call.provider.stats.attempt(unix_ms(SystemTime::now()));
    if let Some(time) = call.upstream_time {
        time.add(waited);
    }
    call.gw.metrics.observe_upstream(&call.provider.id, waited);
}

/// Report, failure part: the provider's status, the key's cooldown (and
/// its event), a key taken out; in a fleet, the key's new state is shared
/// before the attempt goes on. The breaker hears the decision's health
/// through the attempt's verdict.
pub(crate) async fn report_failure(call: &Call<'_>, key_index: usize, failed: &Failed, decision: &Decision) {
    let provider = call.provider;
    if let Some(detail) = &failed.detail {
        let limited = matches!(
            failed.failure,
            AttemptFailure::Refused { kind: FailureKind::RateLimited | FailureKind::QuotaExhausted, .. }
        );
        provider.stats.failure(unix_ms(SystemTime::now()), limited, detail);
    }
    let events = &call.gw.events;
    let shared = call.gw.fleet_health.is_shared();
    let change = match decision.key {
        KeyEffect::Keep => None,
        KeyEffect::CoolDown(wait) => {
            call.keys.cool_down(key_index, wait);
            events.publish_key_cooldown(&provider.id, key_index, call.keys.cooldown_left(key_index));
            shared.then(|| health::key_cooled(provider, call.keys, key_index, unix_ms(SystemTime::now()))).flatten()
        }
        KeyEffect::ExhaustQuota(retry_after) => {
            call.keys.exhaust_quota(key_index, retry_after, SystemTime::now());
            events.publish_key_cooldown(&provider.id, key_index, call.keys.cooldown_left(key_index));
            shared.then(|| health::key_cooled(provider, call.keys, key_index, unix_ms(SystemTime::now()))).flatten()
        }
        KeyEffect::Disable => {
            tracing::error!(provider = %provider.id, key_index, "upstream rejected the key; taking it out of rotation");
            let reason = failed.detail.as_deref().unwrap_or_default();
            provider.disable_key(key_index, reason);
            shared.then(|| health::key_invalid(provider, key_index, reason)).flatten()
        }
    };
    if let Some(change) = change {
        call.gw.fleet_health.publish(change).await;
    }
}

/// The breaker permit of one attempt and what its verdict feeds (breaker,
/// events, canary). Recorded once the attempt is decided: at once for an
/// answer or a refusal, at its end for a committed stream, which can still
/// fail after its first chunk.
pub struct AttemptVerdict {
    gw: SharedGateway,
    provider: Arc<ProviderEntry>,
    /// The upstream model the breaker judges.
    model: String,
    breaker: Arc<Breaker>,
    permit: Permit,
    on_canary: bool,
}

impl AttemptVerdict {
    /// True when the permit is the breaker's half-open probe.
    pub fn is_probe(&self) -> bool {
        self.permit.is_probe()
    }

    /// Feeds the outcome to the breaker of the attempt's model (publishing
    /// a state change) and, for a provider with a canary, to the canary's
    /// judgement. In a fleet, a breaker that opened or closed is shared in
    /// the background (see [`AttemptVerdict::record_shared`]).
    pub fn record(self, outcome: BreakerOutcome) {
        let gw = self.gw.clone();
        if let Some(change) = self.record_here(outcome) {
            gw.fleet_health.publish_soon(change);
        }
    }

    /// [`AttemptVerdict::record`], waiting until a breaker change is shared
    /// with the fleet, so the next request anywhere sees it.
    pub async fn record_shared(self, outcome: BreakerOutcome) {
        let gw = self.gw.clone();
        if let Some(change) = self.record_here(outcome) {
            gw.fleet_health.publish(change).await;
        }
    }

    /// Records the outcome here; the change to share, if the breaker
    /// opened or closed and health is shared.
    fn record_here(self, outcome: BreakerOutcome) -> Option<HealthChange> {
        let Self { gw, provider, model, breaker, permit, on_canary } = self;
        let was_probe = permit.is_probe();
        // A canary's failures are judged by the canary (rolled back), not held
        // against the provider's breaker, which protects the current version.
        let health = if on_canary && outcome == BreakerOutcome::Failure { BreakerOutcome::Neutral } else { outcome };
        breaker.record(permit, health, clock::now());
        publish_breaker_change(&gw, &provider, &model, &breaker, was_probe, health);
        let change = if gw.fleet_health.is_shared() && (was_probe || health == BreakerOutcome::Failure) {
            if was_probe {
                gw.fleet_health.release_probe(&provider.id, &model);
            }
            breaker_change(&provider.id, &model, &breaker, was_probe)
        } else {
            None
        };
        if let Some(canary) = &provider.canary {
            let failed = matches!(outcome, BreakerOutcome::Failure);
            let counted = !matches!(outcome, BreakerOutcome::Neutral);
            if counted && let Some(verdict) = canary.record(on_canary, failed) {
                let (gw, id, canary) = (gw.clone(), provider.id.to_string(), canary.clone());
                tokio::spawn(async move { gw.plugins.conclude_canary(&id, &canary, verdict).await });
            }
        }
        change
    }
}

/// What a recorded outcome changed in a breaker, as the fleet hears it:
/// it opened (from closed, or a failed probe), or a probe closed it.
fn breaker_change(provider: &str, model: &str, breaker: &Breaker, was_probe: bool) -> Option<HealthChange> {
    use freellm_limits::breaker::BreakerState;
    let snapshot = breaker.snapshot(clock::now());
    match snapshot.state {
        BreakerState::Open => {
            let left = Duration::from_millis(snapshot.opened_for_ms_remaining.unwrap_or_default());
            Some(health::breaker_opened(provider, model, left, unix_ms(SystemTime::now())))
        }
        BreakerState::Closed if was_probe => {
            Some(HealthChange::BreakerClosed { provider: provider.to_owned(), model: model.to_owned() })
        }
        _ => None,
    }
}

/// Publishes the model breaker's new state when `record` moved it. A
/// permit is only issued closed (or half-open for the probe), so the state
/// before is known without a lock, and a success while closed never moves it.
pub(crate) fn publish_breaker_change(
    gw: &SharedGateway,
    provider: &ProviderEntry,
    model: &str,
    breaker: &Breaker,
    was_probe: bool,
    outcome: BreakerOutcome,
) {
    use freellm_limits::breaker::BreakerState;
    if !(was_probe || outcome == BreakerOutcome::Failure) || !gw.events.has_subscribers() {
        return;
    }
    let before = if was_probe { BreakerState::HalfOpen } else { BreakerState::Closed };
    let now = clock::now();
    let after = breaker.snapshot(now).state;
    if after != before {
        gw.events.publish_breaker(&provider.id, provider.breakers.summary(now).state, Some((model, after)));
    }
}

/// A provider's classified refusal as a routing error: retryable unless
/// the provider says the request itself is the problem.
pub(crate) fn provider_error(provider: &ProviderEntry, failure: &Failure) -> RoutingError {
    let (message, code) = (failure.message.clone(), failure.upstream_code.clone());
    match failure.kind {
        FailureKind::RequestInvalid | FailureKind::ContentFilter | FailureKind::ContextLength => {
            RoutingError::provider_final(&provider.id, message, code)
        }
        _ => RoutingError::provider(&provider.id, message, code),
    }
}
