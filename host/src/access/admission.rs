//! A client's limits (the per-IP limit and the identifier limit) as the
//! guard decides them, and the [`LimitGate`] a chat request carries when
//! they are decided while it is read and routed.
//!
//! On one instance a limit is decided in memory, before the handler runs.
//! In a fleet each decision is a Redis round trip; a chat request would
//! pay it before its own round trips (a virtual key's admission, a
//! provider key's reservation) one after the other. So the guard starts
//! the decision in a task and hands the request a [`LimitGate`]: the
//! request goes on meanwhile, and waits at the gate before anything leaves
//! for an upstream and before any answer leaves for the client. A refused
//! request therefore reaches no upstream and answers what it answered when
//! the guard waited: the refusal outranks whatever else the request came to.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use freellm_limits::identifier::Decision;

/// Why a client's limits refuse a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    /// The per-IP limit (`RATE_LIMIT_RPM`) is spent.
    #[error("client rate limit exceeded: max {rpm} requests per 60s")]
    Client {
        /// The limit, requests per minute.
        rpm: u32,
        /// The limiter's decision (when a slot frees).
        decision: Decision,
    },
    /// The identifier's limit is spent.
    #[error("identifier \"{identifier}\" exceeded its rate limit")]
    Identifier {
        /// The bucket counted against.
        identifier: String,
        /// The limiter's decision (the headers the refusal carries).
        decision: Decision,
    },
    /// The limits are the fleet's, Redis is unreachable, and
    /// `on_redis_error = "closed"` refuses rather than guess.
    #[error("the shared state that decides this request's limits is unavailable")]
    SharedStateUnavailable,
}

/// What the limits came to: admitted, with the identifier limit's decision
/// when one applies (for the `X-FreeLLM-Identifier-*` headers), or refused.
pub type LimitOutcome = Result<Option<Decision>, LimitRefusal>;

/// A limit decision under way, shared by whoever waits for it (the request
/// before it sends, the guard adding the headers). Cloning is cheap.
#[derive(Clone)]
pub struct LimitGate {
    outcome: Shared<BoxFuture<'static, LimitOutcome>>,
}

impl LimitGate {
    /// Starts deciding now: the decision is polled once here, so its first
    /// Redis call is on the wire before the request reads its body or
    /// reserves a provider key (a spawned task would run only when the
    /// request next yields, queueing its script behind the reservation's);
    /// a task of its own then carries it to the end, so it completes (and
    /// keeps its counts) even if the request goes away first.
    pub fn start(decide: impl Future<Output = LimitOutcome> + Send + 'static) -> Self {
        let mut decide = Box::pin(decide);
        // The task polls it again at once with its own waker; a wake meant
        // for this first poll has nothing to do.
        let mut first = Context::from_waker(Waker::noop());
        match std::panic::catch_unwind(AssertUnwindSafe(|| decide.as_mut().poll(&mut first))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(outcome)) => return Self::decided(outcome),
            // A decision that panicked decided nothing: refuse rather than admit.
            Err(_) => return Self::decided(Err(LimitRefusal::SharedStateUnavailable)),
        }
        let task = tokio::spawn(decide);
        // A task that panicked decided nothing: refuse rather than admit.
        let outcome = async move { task.await.unwrap_or(Err(LimitRefusal::SharedStateUnavailable)) };
        Self { outcome: outcome.boxed().shared() }
    }

    fn decided(outcome: LimitOutcome) -> Self {
        Self { outcome: std::future::ready(outcome).boxed().shared() }
    }

    /// Waits for the decision.
    pub async fn outcome(&self) -> LimitOutcome {
        self.outcome.clone().await
    }

    /// Waits for the decision: `Ok` when the request may go on.
    pub async fn passed(&self) -> Result<(), LimitRefusal> {
        self.outcome().await.map(drop)
    }
}

impl std::fmt::Debug for LimitGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitGate").field("decided", &self.outcome.peek().is_some()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ADMITTED: Decision = Decision { allowed: true, remaining: 4, reset_ms: 60_000 };

    #[tokio::test(start_paused = true)]
    async fn the_decision_runs_while_the_request_does_and_every_waiter_sees_it() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let gate = LimitGate::start(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = tx.send(());
            Ok(Some(ADMITTED))
        });
        // Nobody waits on the gate yet, and the decision still completes.
        rx.await.expect("the decision ran before anyone waited");
        let other = gate.clone();
        assert_eq!(gate.outcome().await, Ok(Some(ADMITTED)));
        assert_eq!(other.passed().await, Ok(()));
    }

    #[tokio::test]
    async fn the_first_step_of_the_decision_is_taken_before_start_returns() {
        // What the decision sends first (a Redis script) must not wait for
        // the request to yield: it is sent inside `start`.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&str>();
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel::<LimitOutcome>();
        let gate = LimitGate::start(async move {
            let _ = tx.send("sent");
            reply_rx.await.unwrap_or(Err(LimitRefusal::SharedStateUnavailable))
        });
        assert_eq!(rx.try_recv(), Ok("sent"), "sent before the caller yielded");
        // The reply comes later, to a task: nobody has to wait for it to land.
        let _ = reply_tx.send(Ok(Some(ADMITTED)));
        assert_eq!(gate.outcome().await, Ok(Some(ADMITTED)));
    }

    #[tokio::test]
    async fn a_refusal_is_what_every_waiter_gets() {
        let refused = LimitRefusal::Identifier {
            identifier: "team-a".into(),
            decision: Decision { allowed: false, remaining: 0, reset_ms: 1_500 },
        };
        let gate = LimitGate::start(std::future::ready(Err(refused.clone())));
        assert_eq!(gate.passed().await, Err(refused.clone()));
        assert_eq!(gate.clone().outcome().await, Err(refused));
    }

    #[tokio::test]
    async fn a_decision_that_panicked_refuses() {
        // At its first step (inside `start`) or later (in its task).
        let gate = LimitGate::start(async { panic!("the limiter broke") });
        assert_eq!(gate.passed().await, Err(LimitRefusal::SharedStateUnavailable));
        let gate = LimitGate::start(async {
            tokio::task::yield_now().await;
            panic!("the limiter broke later")
        });
        assert_eq!(gate.passed().await, Err(LimitRefusal::SharedStateUnavailable));
    }
}
