//! The failover policy: what one failed attempt leads to, as a pure
//! function of data ([`decide`]). The attempt loop in [`crate::routing::failover`]
//! (and a stream's continuation in [`crate::routing::stream`]) classify what went
//! wrong into an [`AttemptFailure`], describe where the request stands in a
//! [`Context`] (strict mode, the same-target retries allowed per failure
//! kind ([`Retries`]) and made so far, the jittered backoff, the time
//! left before the route deadline, whether a short `Retry-After` may be
//! waited out, whether context fallbacks remain) and act on the
//! [`Decision`]. No clock is read and nothing is sent here, so the whole
//! table is unit-tested without I/O (`decide_tests.rs`).
//!
//! | Failure | Key | Breaker | Action |
//! |---|---|---|---|
//! | rate-limited (upstream) | cools for the clamped `Retry-After` (60 s default) | neutral | the primary target's first try waits out a short `Retry-After` that fits the deadline, once; else next key; strict: stop |
//! | quota-exhausted (upstream) | rests until the quota resets | neutral | next key; strict: stop |
//! | key-invalid (upstream) | taken out | neutral | next key; strict: stop |
//! | transient (upstream 5xx, 408, 429 called transient) | cools when `Retry-After` is given | failure | retry the target after the backoff while `retries.server_error` allows and it fits the deadline, else next target; strict: stop |
//! | transient (upstream 4xx client error) | as above | neutral | next target, never retried; strict: stop |
//! | connection refused or reset | — | failure | as transient, under `retries.connection` |
//! | connect, first-byte or first-token timeout | — | failure | next target at once by default (`retries.timeout` = 0: a retry would cost another full timeout); strict: stop, neutral |
//! | a 2xx that could not be used | — | failure | as transient, under `retries.broken_answer` (strict: stop, neutral) |
//!
//! A kind's number bounds the retries made on the target so far, whatever
//! their kinds: with every kind at 1, a target gets at most one retry.
//! | adapter fault (trap, refused request) | — | failure | next target (it would trap again) |
//! | map-request refusal (rate-limited, quota, key, transient) | — | neutral | next target |
//! | unsupported | — | neutral | next target, not counted as a failure |
//! | context-length | — | neutral | the route's context fallbacks (once, not strict), else stop |
//! | request-invalid, content-filter | — | neutral | stop with the provider's reason |

use std::time::Duration;

use crate::providers::keys::{DEFAULT_COOLDOWN, clamp_cooldown};
use crate::routing::error::RoutingError;
use freellm_limits::breaker::Outcome as Health;
use freellm_runtime::types::FailureKind;

/// Where in the attempt a failure happened and what it was, as the
/// classify phase saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The adapter refused to map the request (`map-request` returned a
    /// failure); nothing reached the upstream.
    MapRefused(FailureKind),
    /// The adapter trapped, hit a sandbox limit, or asked for a request the
    /// host refuses.
    AdapterFault,
    /// The connection was refused or reset before an answer.
    Unreachable,
    /// The upstream stayed silent: no connection, no response head, or (for a
    /// stream) no first token within its timeout.
    Silent,
    /// The upstream answered non-2xx and the adapter classified it.
    Refused {
        /// The adapter's classification.
        kind: FailureKind,
        /// The upstream's HTTP status.
        status: u16,
        /// The upstream's `Retry-After` (or the adapter's reading of it).
        retry_after: Option<Duration>,
    },
    /// A 2xx whose body or stream could not be used (unreadable, not
    /// normalizable, ended or failed before a first chunk).
    BrokenAnswer,
    /// The gateway had no free adapter instance: its own capacity, the same
    /// for every target.
    AtCapacity,
}

impl AttemptFailure {
    /// The failure's name in an exhaustion error's `attempts[]`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::MapRefused(FailureKind::Unsupported) | Self::Refused { kind: FailureKind::Unsupported, .. } => {
                "unsupported"
            }
            Self::MapRefused(_) => "refused_by_adapter",
            Self::AdapterFault => "adapter_fault",
            Self::Unreachable => "unreachable",
            Self::Silent => "timeout",
            Self::BrokenAnswer => "broken_answer",
            Self::AtCapacity => "gateway_at_capacity",
            Self::Refused { kind, status, .. } => match kind {
                FailureKind::RateLimited => "rate_limited",
                FailureKind::QuotaExhausted => "quota_exhausted",
                FailureKind::KeyInvalid => "key_invalid",
                FailureKind::ContextLength => "context_length",
                FailureKind::ContentFilter => "content_filter",
                FailureKind::RequestInvalid => "request_invalid",
                FailureKind::Transient if is_client_error(*status) => "client_error",
                FailureKind::Transient | FailureKind::Unsupported => "server_error",
            },
        }
    }

    /// The failure an adapter call's fault is, from the error it became
    /// ([`RoutingError::from_fault`]): the gateway at capacity, or the
    /// adapter's fault.
    pub fn of_fault_error(error: &RoutingError) -> Self {
        match error {
            RoutingError::AtCapacity => Self::AtCapacity,
            _ => Self::AdapterFault,
        }
    }

    /// The upstream's HTTP status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Same-target retries allowed per failure kind (`[routing.retries]`). A
/// failure of a kind is retried while the target has had fewer retries,
/// of any kind, than the kind's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retries {
    /// An upstream 5xx, 408, or a 429 the adapter calls transient.
    pub server_error: u32,
    /// A connection refused or reset before an answer.
    pub connection: u32,
    /// A 2xx whose body or stream could not be used.
    pub broken_answer: u32,
    /// A connect, first-byte or first-token timeout (0 by default: a retry
    /// would cost the caller another full timeout).
    pub timeout: u32,
}

impl Retries {
    /// No same-target retry (a half-open probe, a stream's continuation).
    pub const NONE: Self = Self { server_error: 0, connection: 0, broken_answer: 0, timeout: 0 };

    /// The most retries one kind may have (attempts on one target are bounded).
    pub const MAX: u32 = 5;

    /// `transient` retries for every fast failure, none after a timeout:
    /// what `transient_retries` (and a route's `retries`) stands for.
    pub const fn transient(transient: u32) -> Self {
        Self { server_error: transient, connection: transient, broken_answer: transient, timeout: 0 }
    }

    /// The same with the fast failures' numbers replaced by `transient` (a
    /// route's `retries`); the timeout's number is kept.
    pub const fn with_transient(self, transient: u32) -> Self {
        Self { timeout: self.timeout, ..Self::transient(transient) }
    }
}

impl Default for Retries {
    fn default() -> Self {
        Self::transient(1)
    }
}

/// Where the request stands when a failure is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// `X-FreeLLM-Strict`: exactly one attempt with one key.
    pub strict: bool,
    /// Same-target retries allowed per kind ([`Retries::NONE`] for a
    /// half-open probe, whose outcome alone decides the breaker).
    pub retries: Retries,
    /// Same-target retries made so far, of any kind.
    pub retried: u32,
    /// What the next same-target retry would wait (already jittered).
    pub backoff: Duration,
    /// Time left before the route deadline.
    pub remaining: Duration,
    /// This is the route's primary target on its first try and its one
    /// short `Retry-After` wait is not used yet.
    pub may_wait_retry_after: bool,
    /// The longest `Retry-After` worth waiting out on the primary target.
    pub max_retry_after_wait: Duration,
    /// The route still has context fallbacks to offer.
    pub context_fallbacks: bool,
}

/// What the attempt loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Wait, then try the same target again with any key (keys tried so far
    /// are forgotten).
    RetryTarget {
        /// The backoff to sleep first.
        after: Duration,
    },
    /// Wait out the key's short `Retry-After`, then try the same key again.
    WaitOutKey {
        /// The wait.
        after: Duration,
    },
    /// Try this target with another key.
    NextKey,
    /// Give up on this target; the next candidate answers.
    NextTarget,
    /// The prompt is too long here: try the route's context fallbacks.
    ContextFallbacks,
    /// Stop routing and return this failure.
    Stop,
}

/// What happens to the key the attempt used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEffect {
    /// Nothing to note.
    Keep,
    /// Rests for a rate-limit cooldown (already clamped).
    CoolDown(Duration),
    /// Rests until its quota resets (`None`: the next midnight UTC).
    ExhaustQuota(Option<Duration>),
    /// Taken out of rotation.
    Disable,
}

/// How the failure counts for the request's route reason and final error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// Not a failure of the request (unsupported here, nothing tried).
    None,
    /// A rate limit or spent quota: the route may end `all_providers_exhausted`
    /// with when to retry.
    RateLimited,
    /// A failure: kept as the error to report if nothing answers.
    Failure,
}

/// The verdict on one failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do next.
    pub action: Action,
    /// What the attempt says about the provider's health.
    pub health: Health,
    /// What happens to the key.
    pub key: KeyEffect,
    /// How the failure counts for the request.
    pub blame: Blame,
}

impl Decision {
    const fn new(action: Action, health: Health, key: KeyEffect, blame: Blame) -> Self {
        Self { action, health, key, blame }
    }
}

/// A 4xx answer about the request (not 408 Request Timeout, not 429 Too
/// Many Requests): never a breaker failure, never retried on the target.
pub fn is_client_error(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// Decides what a failed attempt leads to. Pure: everything it depends on
/// is in its arguments.
pub fn decide(failure: AttemptFailure, ctx: &Context) -> Decision {
    use Action::*;
    use Health::{Failure as Failing, Neutral};
    let retry_or_next = |health: Health, allowed: u32| {
        if health == Failing && allowed > ctx.retried && ctx.backoff < ctx.remaining {
            RetryTarget { after: ctx.backoff }
        } else {
            NextTarget
        }
    };
    let context_length = || {
        let action = if ctx.context_fallbacks && !ctx.strict { ContextFallbacks } else { Stop };
        Decision::new(action, Neutral, KeyEffect::Keep, Blame::Failure)
    };
    match failure {
        AttemptFailure::MapRefused(kind) => match kind {
            FailureKind::Unsupported => Decision::new(NextTarget, Neutral, KeyEffect::Keep, Blame::None),
            FailureKind::ContextLength => context_length(),
            FailureKind::RequestInvalid | FailureKind::ContentFilter => {
                Decision::new(Stop, Neutral, KeyEffect::Keep, Blame::Failure)
            }
            FailureKind::RateLimited
            | FailureKind::QuotaExhausted
            | FailureKind::KeyInvalid
            | FailureKind::Transient => Decision::new(NextTarget, Neutral, KeyEffect::Keep, Blame::Failure),
        },
        AttemptFailure::AdapterFault => Decision::new(NextTarget, Failing, KeyEffect::Keep, Blame::Failure),
        // Every target needs an instance from the same pool: stop, and say
        // nothing about the provider (a flood of streams must not open its
        // breaker for everyone).
        AttemptFailure::AtCapacity => Decision::new(Stop, Neutral, KeyEffect::Keep, Blame::None),
        // A strict request makes one attempt; a failure without an answer
        // then says too little about the provider to count against it.
        AttemptFailure::Unreachable | AttemptFailure::BrokenAnswer if ctx.strict => {
            Decision::new(Stop, Neutral, KeyEffect::Keep, Blame::Failure)
        }
        AttemptFailure::Unreachable => {
            Decision::new(retry_or_next(Failing, ctx.retries.connection), Failing, KeyEffect::Keep, Blame::Failure)
        }
        AttemptFailure::BrokenAnswer => {
            Decision::new(retry_or_next(Failing, ctx.retries.broken_answer), Failing, KeyEffect::Keep, Blame::Failure)
        }
        AttemptFailure::Silent if ctx.strict => Decision::new(Stop, Neutral, KeyEffect::Keep, Blame::Failure),
        // A silent upstream moves on at once unless the operator allows
        // timeout retries: each would cost the caller another full timeout.
        AttemptFailure::Silent => {
            Decision::new(retry_or_next(Failing, ctx.retries.timeout), Failing, KeyEffect::Keep, Blame::Failure)
        }
        AttemptFailure::Refused { kind, status, retry_after } => match kind {
            FailureKind::RateLimited => {
                let key = KeyEffect::CoolDown(clamp_cooldown(retry_after.unwrap_or(DEFAULT_COOLDOWN)));
                let action = match retry_after {
                    _ if ctx.strict => Stop,
                    Some(wait)
                        if ctx.may_wait_retry_after && wait <= ctx.max_retry_after_wait && wait < ctx.remaining =>
                    {
                        WaitOutKey { after: wait }
                    }
                    _ => NextKey,
                };
                Decision::new(action, Neutral, key, Blame::RateLimited)
            }
            FailureKind::QuotaExhausted => {
                let action = if ctx.strict { Stop } else { NextKey };
                Decision::new(action, Neutral, KeyEffect::ExhaustQuota(retry_after), Blame::RateLimited)
            }
            FailureKind::KeyInvalid => {
                let action = if ctx.strict { Stop } else { NextKey };
                Decision::new(action, Neutral, KeyEffect::Disable, Blame::Failure)
            }
            FailureKind::Transient => {
                let key = retry_after.map_or(KeyEffect::Keep, |d| KeyEffect::CoolDown(clamp_cooldown(d)));
                // A client error (an adapter may still call it transient, as
                // Ollama's 404 for a model it has not pulled) says nothing
                // about the provider's health, and the same request would get
                // the same answer: fail over, but neither retry it nor count
                // it against the breaker.
                let health = if is_client_error(status) { Neutral } else { Failing };
                let action = if ctx.strict { Stop } else { retry_or_next(health, ctx.retries.server_error) };
                Decision::new(action, health, key, Blame::Failure)
            }
            FailureKind::Unsupported => Decision::new(NextTarget, Neutral, KeyEffect::Keep, Blame::None),
            FailureKind::ContextLength => context_length(),
            FailureKind::RequestInvalid | FailureKind::ContentFilter => {
                Decision::new(Stop, Neutral, KeyEffect::Keep, Blame::Failure)
            }
        },
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
