use super::*;

const ALL_KINDS: [FailureKind; 8] = [
    FailureKind::RateLimited,
    FailureKind::QuotaExhausted,
    FailureKind::KeyInvalid,
    FailureKind::Transient,
    FailureKind::Unsupported,
    FailureKind::ContextLength,
    FailureKind::RequestInvalid,
    FailureKind::ContentFilter,
];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A plain request: not strict, today's retries (one per fast failure,
/// none after a timeout) with none made yet, a 100 ms backoff, 10 s to
/// the deadline, on the primary target's first try, fallbacks available.
fn ctx() -> Context {
    Context {
        strict: false,
        retries: Retries::default(),
        retried: 0,
        backoff: ms(100),
        remaining: ms(10_000),
        may_wait_retry_after: true,
        max_retry_after_wait: ms(2_000),
        context_fallbacks: true,
    }
}

fn strict() -> Context {
    Context { strict: true, ..ctx() }
}

fn refused(kind: FailureKind, status: u16, retry_after: Option<u64>) -> AttemptFailure {
    AttemptFailure::Refused { kind, status, retry_after: retry_after.map(ms) }
}

/// Every failure the classify phase can produce, for the table-wide checks.
fn every_failure() -> Vec<AttemptFailure> {
    let mut all = vec![
        AttemptFailure::AdapterFault,
        AttemptFailure::Unreachable,
        AttemptFailure::Silent,
        AttemptFailure::BrokenAnswer,
    ];
    for kind in ALL_KINDS {
        all.push(AttemptFailure::MapRefused(kind));
        for status in [400, 404, 408, 429, 500, 503] {
            for retry_after in [None, Some(50), Some(1_500), Some(90_000)] {
                all.push(refused(kind, status, retry_after));
            }
        }
    }
    all
}

/// Two same-target retries for every kind, timeouts included.
const EVERY_KIND_TWICE: Retries = Retries { server_error: 2, connection: 2, broken_answer: 2, timeout: 2 };

/// The retries `c` allows the kind of `failure` (none for kinds never retried).
fn allowed(failure: AttemptFailure, c: &Context) -> u32 {
    match failure {
        AttemptFailure::Unreachable => c.retries.connection,
        AttemptFailure::BrokenAnswer => c.retries.broken_answer,
        AttemptFailure::Silent => c.retries.timeout,
        AttemptFailure::Refused { kind: FailureKind::Transient, .. } => c.retries.server_error,
        _ => 0,
    }
}

/// Every context worth distinguishing: strict or not, retries left or
/// not, backoff inside or past the deadline, short wait allowed or not,
/// fallbacks or not.
fn every_context() -> Vec<Context> {
    let mut all = Vec::new();
    for strict in [false, true] {
        for (retries, retried) in [
            (Retries::NONE, 0),
            (Retries::default(), 0),
            (Retries::default(), 1),
            (EVERY_KIND_TWICE, 1),
            (EVERY_KIND_TWICE, 2),
        ] {
            for (backoff, remaining) in [(ms(100), ms(10_000)), (ms(100), ms(50)), (ms(100), ms(0))] {
                for may_wait_retry_after in [false, true] {
                    for context_fallbacks in [false, true] {
                        all.push(Context {
                            strict,
                            retries,
                            retried,
                            backoff,
                            remaining,
                            may_wait_retry_after,
                            max_retry_after_wait: ms(2_000),
                            context_fallbacks,
                        });
                    }
                }
            }
        }
    }
    all
}

#[test]
fn a_rate_limit_cools_the_key_for_the_clamped_retry_after_and_tries_the_next_key() {
    let c = Context { may_wait_retry_after: false, ..ctx() };
    let d = decide(refused(FailureKind::RateLimited, 429, Some(30_000)), &c);
    assert_eq!(d, Decision::new(Action::NextKey, Health::Neutral, KeyEffect::CoolDown(ms(30_000)), Blame::RateLimited));
    let tiny = decide(refused(FailureKind::RateLimited, 429, Some(10)), &c);
    assert_eq!(tiny.key, KeyEffect::CoolDown(crate::providers::keys::MIN_COOLDOWN), "clamped up");
    let huge = decide(refused(FailureKind::RateLimited, 429, Some(86_400_000)), &c);
    assert_eq!(huge.key, KeyEffect::CoolDown(crate::providers::keys::MAX_COOLDOWN), "clamped down");
}

#[test]
fn a_rate_limit_without_retry_after_cools_the_key_for_the_default() {
    let d = decide(refused(FailureKind::RateLimited, 429, None), &ctx());
    assert_eq!(d.key, KeyEffect::CoolDown(DEFAULT_COOLDOWN));
    assert_eq!(d.action, Action::NextKey, "no wait to wait out");
}

#[test]
fn the_primary_target_waits_out_a_short_retry_after_once() {
    let d = decide(refused(FailureKind::RateLimited, 429, Some(1_500)), &ctx());
    assert_eq!(d.action, Action::WaitOutKey { after: ms(1_500) });
    assert_eq!(d.health, Health::Neutral);
    let used = Context { may_wait_retry_after: false, ..ctx() };
    assert_eq!(decide(refused(FailureKind::RateLimited, 429, Some(1_500)), &used).action, Action::NextKey);
}

#[test]
fn a_retry_after_longer_than_the_wait_limit_or_the_deadline_is_not_waited_out() {
    let long = decide(refused(FailureKind::RateLimited, 429, Some(2_001)), &ctx());
    assert_eq!(long.action, Action::NextKey);
    let late = Context { remaining: ms(1_500), ..ctx() };
    assert_eq!(decide(refused(FailureKind::RateLimited, 429, Some(1_500)), &late).action, Action::NextKey);
    let fits = Context { remaining: ms(1_501), ..ctx() };
    assert_eq!(
        decide(refused(FailureKind::RateLimited, 429, Some(1_500)), &fits).action,
        Action::WaitOutKey { after: ms(1_500) }
    );
}

#[test]
fn a_spent_quota_rests_the_key_until_it_resets_and_tries_the_next_key() {
    let d = decide(refused(FailureKind::QuotaExhausted, 429, None), &ctx());
    assert_eq!(d, Decision::new(Action::NextKey, Health::Neutral, KeyEffect::ExhaustQuota(None), Blame::RateLimited));
    let told = decide(refused(FailureKind::QuotaExhausted, 429, Some(5_000)), &ctx());
    assert_eq!(told.key, KeyEffect::ExhaustQuota(Some(ms(5_000))));
}

#[test]
fn an_invalid_key_is_taken_out_and_the_next_key_tried() {
    let d = decide(refused(FailureKind::KeyInvalid, 401, None), &ctx());
    assert_eq!(d, Decision::new(Action::NextKey, Health::Neutral, KeyEffect::Disable, Blame::Failure));
}

#[test]
fn a_transient_5xx_is_retried_on_the_target_after_the_backoff() {
    let d = decide(refused(FailureKind::Transient, 503, None), &ctx());
    assert_eq!(
        d,
        Decision::new(Action::RetryTarget { after: ms(100) }, Health::Failure, KeyEffect::Keep, Blame::Failure)
    );
}

#[test]
fn a_transient_failure_with_retry_after_also_cools_the_key() {
    let d = decide(refused(FailureKind::Transient, 503, Some(5_000)), &ctx());
    assert_eq!(d.key, KeyEffect::CoolDown(ms(5_000)));
    assert_eq!(d.action, Action::RetryTarget { after: ms(100) });
}

#[test]
fn a_transient_failure_fails_over_once_retries_are_spent_or_the_backoff_passes_the_deadline() {
    let spent = Context { retried: 1, ..ctx() };
    let d = decide(refused(FailureKind::Transient, 500, None), &spent);
    assert_eq!((d.action, d.health), (Action::NextTarget, Health::Failure));
    let late = Context { remaining: ms(100), ..ctx() };
    assert_eq!(decide(refused(FailureKind::Transient, 500, None), &late).action, Action::NextTarget);
}

#[test]
fn a_transient_client_error_fails_over_without_retry_or_breaker_failure() {
    for status in [400, 404, 422] {
        let d = decide(refused(FailureKind::Transient, status, None), &ctx());
        assert_eq!((d.action, d.health), (Action::NextTarget, Health::Neutral), "{status}");
    }
    for status in [408, 429] {
        let d = decide(refused(FailureKind::Transient, status, None), &ctx());
        assert_eq!(d.health, Health::Failure, "{status} is about the provider");
    }
}

#[test]
fn connection_failures_and_broken_answers_are_retried_then_fail_over() {
    for failure in [AttemptFailure::Unreachable, AttemptFailure::BrokenAnswer] {
        let d = decide(failure, &ctx());
        assert_eq!((d.action, d.health), (Action::RetryTarget { after: ms(100) }, Health::Failure), "{failure:?}");
        let spent = decide(failure, &Context { retried: 1, ..ctx() });
        assert_eq!((spent.action, spent.health), (Action::NextTarget, Health::Failure), "{failure:?}");
    }
}

#[test]
fn a_silent_upstream_fails_over_at_once_by_default() {
    let d = decide(AttemptFailure::Silent, &Context { retries: Retries::transient(5), ..ctx() });
    assert_eq!(d, Decision::new(Action::NextTarget, Health::Failure, KeyEffect::Keep, Blame::Failure));
}

#[test]
fn an_adapter_fault_fails_over_without_retry() {
    let d = decide(AttemptFailure::AdapterFault, &Context { retries: EVERY_KIND_TWICE, ..ctx() });
    assert_eq!(d, Decision::new(Action::NextTarget, Health::Failure, KeyEffect::Keep, Blame::Failure));
}

#[test]
fn the_gateway_at_capacity_stops_without_blaming_the_provider() {
    // Every target needs an instance from the same pool.
    for strict in [false, true] {
        let d = decide(AttemptFailure::AtCapacity, &Context { strict, retries: EVERY_KIND_TWICE, ..ctx() });
        assert_eq!(d, Decision::new(Action::Stop, Health::Neutral, KeyEffect::Keep, Blame::None));
    }
}

#[test]
fn unsupported_moves_on_without_counting_as_a_failure() {
    for failure in [AttemptFailure::MapRefused(FailureKind::Unsupported), refused(FailureKind::Unsupported, 400, None)]
    {
        assert_eq!(
            decide(failure, &ctx()),
            Decision::new(Action::NextTarget, Health::Neutral, KeyEffect::Keep, Blame::None)
        );
    }
}

#[test]
fn context_length_tries_the_fallbacks_once_and_otherwise_stops() {
    for failure in
        [AttemptFailure::MapRefused(FailureKind::ContextLength), refused(FailureKind::ContextLength, 400, None)]
    {
        assert_eq!(decide(failure, &ctx()).action, Action::ContextFallbacks);
        let none = Context { context_fallbacks: false, ..ctx() };
        assert_eq!(decide(failure, &none).action, Action::Stop);
        assert_eq!(decide(failure, &strict()).action, Action::Stop, "strict takes no fallback");
    }
}

#[test]
fn invalid_requests_and_content_filters_stop_at_once() {
    for kind in [FailureKind::RequestInvalid, FailureKind::ContentFilter] {
        for failure in [AttemptFailure::MapRefused(kind), refused(kind, 400, None)] {
            assert_eq!(
                decide(failure, &ctx()),
                Decision::new(Action::Stop, Health::Neutral, KeyEffect::Keep, Blame::Failure)
            );
        }
    }
}

#[test]
fn a_map_request_refusal_moves_to_the_next_target_and_leaves_key_and_breaker_alone() {
    for kind in [FailureKind::RateLimited, FailureKind::QuotaExhausted, FailureKind::KeyInvalid, FailureKind::Transient]
    {
        assert_eq!(
            decide(AttemptFailure::MapRefused(kind), &ctx()),
            Decision::new(Action::NextTarget, Health::Neutral, KeyEffect::Keep, Blame::Failure),
            "{kind:?}"
        );
    }
}

#[test]
fn strict_mode_stops_on_every_upstream_refusal_but_keeps_the_key_bookkeeping() {
    let s = strict();
    let d = decide(refused(FailureKind::RateLimited, 429, Some(1_500)), &s);
    assert_eq!(d, Decision::new(Action::Stop, Health::Neutral, KeyEffect::CoolDown(ms(1_500)), Blame::RateLimited));
    let d = decide(refused(FailureKind::QuotaExhausted, 429, None), &s);
    assert_eq!((d.action, d.key), (Action::Stop, KeyEffect::ExhaustQuota(None)));
    let d = decide(refused(FailureKind::KeyInvalid, 401, None), &s);
    assert_eq!((d.action, d.key), (Action::Stop, KeyEffect::Disable));
    let d = decide(refused(FailureKind::Transient, 503, None), &s);
    assert_eq!((d.action, d.health), (Action::Stop, Health::Failure), "a strict 5xx still counts");
    let d = decide(refused(FailureKind::Transient, 404, None), &s);
    assert_eq!((d.action, d.health), (Action::Stop, Health::Neutral));
}

#[test]
fn strict_mode_stops_on_failures_without_an_answer_and_holds_them_neutral() {
    for failure in [AttemptFailure::Unreachable, AttemptFailure::Silent, AttemptFailure::BrokenAnswer] {
        assert_eq!(
            decide(failure, &strict()),
            Decision::new(Action::Stop, Health::Neutral, KeyEffect::Keep, Blame::Failure),
            "{failure:?}"
        );
    }
}

#[test]
fn strict_mode_never_retries_waits_or_changes_key() {
    for failure in every_failure() {
        for c in every_context().into_iter().filter(|c| c.strict) {
            let action = decide(failure, &c).action;
            assert!(matches!(action, Action::Stop | Action::NextTarget), "{failure:?} in {c:?} led to {action:?}");
        }
    }
}

#[test]
fn no_retry_is_decided_without_retries_left_or_past_the_deadline() {
    for failure in every_failure() {
        for c in every_context() {
            if let Action::RetryTarget { after } = decide(failure, &c).action {
                assert!(allowed(failure, &c) > c.retried, "{failure:?} retried without budget in {c:?}");
                assert!(after < c.remaining, "{failure:?} retried past the deadline in {c:?}");
                assert_eq!(after, c.backoff);
            }
        }
    }
}

#[test]
fn only_a_failure_that_counts_against_the_breaker_is_retried() {
    for failure in every_failure() {
        for c in every_context() {
            let d = decide(failure, &c);
            if matches!(d.action, Action::RetryTarget { .. }) {
                assert_eq!(d.health, Health::Failure, "{failure:?} in {c:?}");
            }
        }
    }
}

#[test]
fn a_short_wait_happens_only_for_a_rate_limit_on_an_allowed_primary_try_within_the_deadline() {
    for failure in every_failure() {
        for c in every_context() {
            if let Action::WaitOutKey { after } = decide(failure, &c).action {
                assert!(matches!(failure, AttemptFailure::Refused { kind: FailureKind::RateLimited, .. }));
                assert!(c.may_wait_retry_after && !c.strict);
                assert!(after <= c.max_retry_after_wait && after < c.remaining);
            }
        }
    }
}

#[test]
fn context_fallbacks_are_chosen_only_for_context_length_outside_strict_mode() {
    for failure in every_failure() {
        for c in every_context() {
            if decide(failure, &c).action == Action::ContextFallbacks {
                assert!(matches!(
                    failure,
                    AttemptFailure::MapRefused(FailureKind::ContextLength)
                        | AttemptFailure::Refused { kind: FailureKind::ContextLength, .. }
                ));
                assert!(c.context_fallbacks && !c.strict);
            }
        }
    }
}

#[test]
fn the_next_key_is_tried_only_after_an_upstream_said_something_about_the_key() {
    for failure in every_failure() {
        for c in every_context() {
            let d = decide(failure, &c);
            if d.action == Action::NextKey {
                assert!(
                    matches!(
                        failure,
                        AttemptFailure::Refused {
                            kind: FailureKind::RateLimited | FailureKind::QuotaExhausted | FailureKind::KeyInvalid,
                            ..
                        }
                    ),
                    "{failure:?}"
                );
                assert_ne!(d.key, KeyEffect::Keep, "the key that failed is marked before another is picked");
            }
        }
    }
}

#[test]
fn client_errors_are_4xx_but_request_timeout_and_rate_limits() {
    for status in [400, 401, 403, 404, 409, 413, 422, 451] {
        assert!(is_client_error(status), "{status}");
    }
    for status in [200, 302, 408, 429, 500, 502, 503, 504] {
        assert!(!is_client_error(status), "{status}");
    }
}

#[test]
fn each_failure_names_its_outcome_and_upstream_status_for_the_attempts_list() {
    assert_eq!(refused(FailureKind::Transient, 503, None).outcome(), "server_error");
    assert_eq!(refused(FailureKind::Transient, 404, None).outcome(), "client_error");
    assert_eq!(refused(FailureKind::RateLimited, 429, Some(1_000)).outcome(), "rate_limited");
    assert_eq!(refused(FailureKind::Transient, 503, None).status(), Some(503));
    assert_eq!(AttemptFailure::Silent.outcome(), "timeout");
    assert_eq!(AttemptFailure::Silent.status(), None);
    assert_eq!(AttemptFailure::Unreachable.outcome(), "unreachable");
    assert_eq!(AttemptFailure::MapRefused(FailureKind::Unsupported).outcome(), "unsupported");
    for failure in every_failure() {
        assert!(!failure.outcome().is_empty(), "{failure:?}");
    }
}

#[test]
fn each_failure_kind_is_retried_under_its_own_number() {
    let only = |retries: Retries| Context { retries, ..ctx() };
    let server = refused(FailureKind::Transient, 503, None);
    let cases = [
        (server, Retries { server_error: 1, ..Retries::NONE }),
        (AttemptFailure::Unreachable, Retries { connection: 1, ..Retries::NONE }),
        (AttemptFailure::BrokenAnswer, Retries { broken_answer: 1, ..Retries::NONE }),
        (AttemptFailure::Silent, Retries { timeout: 1, ..Retries::NONE }),
    ];
    for (failure, retries) in cases {
        for (other, _) in cases.iter().filter(|(f, _)| *f != failure) {
            assert_eq!(decide(*other, &only(retries)).action, Action::NextTarget, "{other:?} under {retries:?}");
        }
        assert_eq!(decide(failure, &only(retries)).action, Action::RetryTarget { after: ms(100) }, "{failure:?}");
    }
}

#[test]
fn a_kinds_number_bounds_the_retries_of_every_kind_made_on_the_target() {
    let c = Context { retries: Retries { server_error: 3, connection: 1, ..Retries::NONE }, retried: 1, ..ctx() };
    assert_eq!(decide(AttemptFailure::Unreachable, &c).action, Action::NextTarget, "one retry made already");
    let d = decide(refused(FailureKind::Transient, 500, None), &c);
    assert_eq!(d.action, Action::RetryTarget { after: ms(100) }, "server errors allow three");
    let done = Context { retried: 3, ..c };
    assert_eq!(decide(refused(FailureKind::Transient, 500, None), &done).action, Action::NextTarget);
}

#[test]
fn timeout_retries_wait_the_backoff_and_never_apply_to_a_strict_request() {
    let c = Context { retries: Retries { timeout: 1, ..Retries::default() }, ..ctx() };
    assert_eq!(decide(AttemptFailure::Silent, &c).action, Action::RetryTarget { after: ms(100) });
    let s = Context { strict: true, ..c };
    assert_eq!(
        decide(AttemptFailure::Silent, &s),
        Decision::new(Action::Stop, Health::Neutral, KeyEffect::Keep, Blame::Failure)
    );
}

#[test]
fn a_routes_retries_replace_the_fast_failures_numbers_and_keep_the_timeouts() {
    let global = Retries { server_error: 2, connection: 3, broken_answer: 1, timeout: 1 };
    assert_eq!(global.with_transient(0), Retries { timeout: 1, ..Retries::NONE });
    assert_eq!(Retries::default(), Retries { server_error: 1, connection: 1, broken_answer: 1, timeout: 0 });
}
