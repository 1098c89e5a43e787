//! In-process tests of the routing core: the real gateway and the real
//! openai-compatible component, an in-memory upstream, paused time. Key
//! cooldowns, breaker probes, route deadlines and stream timeouts play out
//! in milliseconds of test time (in the spirit of linkerd2-proxy's
//! `failure_accrual` tests).

use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, sleep};

use crate::clock;
use crate::testing::{Bench, Reply, provider};
use freellm_limits::breaker::BreakerState;

const TOOLS_AND_PREFILL: &str = "tools,assistant_prefill";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn pair() -> String {
    format!(
        "{}{}[routes.pair]\ntargets = [\"first\", \"second\"]\n",
        provider("first", TOOLS_AND_PREFILL),
        provider("second", TOOLS_AND_PREFILL)
    )
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_key_rests_until_its_retry_after_then_answers_again() {
    let toml = provider("first", TOOLS_AND_PREFILL);
    let bench = Bench::start(&toml, &[("FIRST_API_KEY", "k1"), ("ROUTE_MAX_RETRY_AFTER_WAIT_MS", "0")]).await;
    bench.upstream.push("first.test", Reply::error(429, "slow down").header("retry-after", "2"));
    bench.upstream.always("first.test", Reply::completion("hello"));

    let limited = bench.chat("first/m", false).await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.json()["error"]["code"], "all_providers_exhausted");
    let left = bench.provider("first").keys.cooldown_left(0).expect("the key rests");
    assert!(left > secs(1) && left <= secs(2), "{left:?}");

    let resting = bench.chat("first/m", false).await;
    assert_eq!(resting.status, 429, "a resting key is not tried");
    assert_eq!(bench.upstream.count("first.test"), 1);

    sleep(Duration::from_millis(2_100)).await;
    let again = bench.chat("first/m", false).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(bench.upstream.count("first.test"), 2, "the rested key is used again");
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_key_hands_over_to_the_next_key_at_once() {
    let toml = provider("first", TOOLS_AND_PREFILL);
    let bench = Bench::start(&toml, &[("FIRST_API_KEY", "k1,k2"), ("ROUTE_MAX_RETRY_AFTER_WAIT_MS", "0")]).await;
    bench.upstream.push("first.test", Reply::error(429, "slow down").header("retry-after", "30"));
    bench.upstream.always("first.test", Reply::completion("hello"));
    let started = Instant::now();
    let answer = bench.chat("first/m", false).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-freellm-route-reason"), "failover");
    assert!(started.elapsed() < secs(1), "no wait for the second key");
    let keys: Vec<_> = bench.upstream.received().into_iter().filter_map(|r| r.authorization).collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1], "the second attempt used the other key");
}

#[tokio::test(start_paused = true)]
async fn the_breaker_admits_one_probe_after_its_open_period_and_a_failed_probe_doubles_it() {
    let toml = provider("first", TOOLS_AND_PREFILL);
    let env = [
        ("FIRST_API_KEY", "k1"),
        ("CB_FAILURE_THRESHOLD", "1"),
        ("CB_SUCCESS_THRESHOLD", "1"),
        ("CB_TIMEOUT_MS", "5000"),
        ("CB_MAX_TIMEOUT_MS", "60000"),
        ("ROUTE_TRANSIENT_RETRIES", "0"),
    ];
    let bench = Bench::start(&toml, &env).await;
    let first = bench.provider("first");
    bench.upstream.always("first.test", Reply::error(503, "down"));

    let failed = bench.chat("first/m", false).await;
    assert_eq!(failed.status, 429, "{}", failed.text());
    assert_eq!(failed.json()["error"]["code"], "all_providers_exhausted");
    assert_eq!(first.breakers.summary(clock::now()).state, BreakerState::Open);
    bench.chat("first/m", false).await;
    assert_eq!(bench.upstream.count("first.test"), 1, "an open breaker sends nothing");

    // Half-open after 5 s: two concurrent requests, one probe.
    sleep(secs(5)).await;
    bench.upstream.push("first.test", Reply::error(503, "still down").after(Duration::from_millis(500)));
    let (a, b) = tokio::join!(bench.chat("first/m", false), bench.chat("first/m", false));
    assert_eq!(bench.upstream.count("first.test"), 2, "exactly one probe went out");
    assert!(a.status != 200 && b.status != 200);
    let reopened = first.breakers.summary(clock::now());
    assert_eq!(reopened.state, BreakerState::Open, "a failed probe reopens");
    let remaining = reopened.opened_for_ms_remaining.unwrap_or_default();
    assert!(remaining > 9_000 && remaining <= 10_000, "the open period doubled: {remaining} ms left");

    sleep(secs(6)).await;
    bench.chat("first/m", false).await;
    assert_eq!(bench.upstream.count("first.test"), 2, "still open 6 s into a 10 s period");

    sleep(Duration::from_millis(4_100)).await;
    bench.upstream.push("first.test", Reply::completion("back"));
    let probe = bench.chat("first/m", false).await;
    assert_eq!(probe.status, 200, "{}", probe.text());
    assert_eq!(first.breakers.summary(clock::now()).state, BreakerState::Closed, "a successful probe closes");
}

#[tokio::test(start_paused = true)]
async fn the_route_deadline_stops_failover_between_targets() {
    let toml = format!(
        "{}{}{}[routes.trio]\ntargets = [\"first\", \"second\", \"third\"]\n",
        provider("first", TOOLS_AND_PREFILL),
        provider("second", TOOLS_AND_PREFILL),
        provider("third", TOOLS_AND_PREFILL)
    );
    let env = [
        ("FIRST_API_KEY", "k"),
        ("SECOND_API_KEY", "k"),
        ("THIRD_API_KEY", "k"),
        ("UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "2000"),
        ("ROUTE_TIMEOUT_MS", "3000"),
    ];
    let bench = Bench::start(&toml, &env).await;
    for host in ["first.test", "second.test", "third.test"] {
        bench.upstream.always(host, Reply::completion("late").after(secs(60)));
    }
    let started = Instant::now();
    let answer = bench.chat("trio", false).await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    let message = answer.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.starts_with("Routing timeout (3000ms) exceeded"), "{message}");
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "all_providers_exhausted");
    assert!(error["retry_after_ms"].is_u64() && error["suggestions"].is_array(), "the advice fields: {error}");
    let outcomes: Vec<&str> =
        error["attempts"].as_array().into_iter().flatten().filter_map(|a| a["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["timeout", "timeout"], "{error}");
    assert_eq!(bench.upstream.count("first.test"), 1, "a silent upstream is not retried");
    assert_eq!(bench.upstream.count("second.test"), 1);
    assert_eq!(bench.upstream.count("third.test"), 0, "past the deadline nothing more is tried");
    let took = started.elapsed();
    assert!(took >= secs(4) && took < secs(5), "two first-byte timeouts: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_a_first_token_in_time_fails_over_at_once() {
    let env = [
        ("FIRST_API_KEY", "k"),
        ("SECOND_API_KEY", "k"),
        ("STREAM_FIRST_TOKEN_TIMEOUT_MS", "1000"),
        ("ROUTE_TRANSIENT_RETRIES", "2"),
    ];
    let bench = Bench::start(&pair(), &env).await;
    bench.upstream.always("first.test", Reply::stream(&[(secs(5), "late")], true));
    bench.upstream.always("second.test", Reply::stream(&[(Duration::ZERO, "on time")], true));
    let started = Instant::now();
    let answer = bench.chat("pair", true).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-freellm-provider"), "second");
    assert_eq!(answer.header("x-freellm-route-reason"), "failover");
    assert!(answer.text().contains("on time") && answer.text().ends_with("data: [DONE]\n\n"), "{}", answer.text());
    assert_eq!(bench.upstream.count("first.test"), 1, "no retry on the silent target");
    assert!(started.elapsed() < Duration::from_millis(1_500), "{:?}", started.elapsed());
    assert_eq!(bench.provider("first").breakers.summary(clock::now()).consecutive_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stalls_after_content_is_continued_on_another_provider() {
    let env = [("FIRST_API_KEY", "k"), ("SECOND_API_KEY", "k"), ("STREAM_STALL_TIMEOUT_MS", "3000")];
    let bench = Bench::start(&pair(), &env).await;
    bench.upstream.push("first.test", Reply::stream(&[(Duration::ZERO, "Hello")], false).then_silent(secs(600)));
    bench.upstream.push("second.test", Reply::stream(&[(Duration::ZERO, ", world")], true));
    let started = Instant::now();
    let answer = bench.chat("pair", true).await;
    let text = answer.text();
    assert!(text.contains("Hello") && text.contains(", world"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let took = started.elapsed();
    assert!(took >= secs(3) && took < secs(4), "resumed after the stall timeout: {took:?}");
    let resumed = bench.upstream.received().into_iter().find(|r| r.host == "second.test").expect("a continuation");
    let body: serde_json::Value = serde_json::from_slice(&resumed.body).unwrap_or_default();
    assert_eq!(body["messages"][1], json!({"role": "assistant", "content": "Hello"}));
}

#[tokio::test(start_paused = true)]
async fn a_cut_stream_of_an_explicit_model_fails_with_its_reason_and_is_not_continued() {
    // `second` could continue, but the request names `first`'s model: the
    // route has no other target, so the stream keeps no continuation
    // state, and a cut after content ends it with an error event.
    let env = [("FIRST_API_KEY", "k"), ("SECOND_API_KEY", "k"), ("STREAM_STALL_TIMEOUT_MS", "3000")];
    let bench = Bench::start(&pair(), &env).await;
    bench.upstream.push("first.test", Reply::stream(&[(Duration::ZERO, "Hello")], false).then_silent(secs(600)));
    bench.upstream.always("second.test", Reply::stream(&[(Duration::ZERO, ", world")], true));
    let answer = bench.chat("first/m", true).await;
    let text = answer.text();
    assert_eq!(answer.status, 200, "{text}");
    assert!(text.contains("Hello") && !text.contains("world"), "{text}");
    let error = text.lines().filter_map(|l| l.strip_prefix("data: ")).find(|d| d.contains("\"error\"")).expect(&text);
    let error: serde_json::Value = serde_json::from_str(error).expect("an error event");
    assert_eq!(error["error"]["code"], "stream_stalled", "{error}");
    assert!(!text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(bench.upstream.count("second.test"), 0, "no continuation");
}

/// A stream from `first` that breaks off after "Hello", to be continued.
async fn cut_stream_bench() -> Bench {
    let env = [("FIRST_API_KEY", "k"), ("SECOND_API_KEY", "k"), ("CB_FAILURE_THRESHOLD", "5")];
    let bench = Bench::start(&pair(), &env).await;
    bench.upstream.push("first.test", Reply::stream(&[(Duration::ZERO, "Hello")], false));
    bench
}

#[tokio::test(start_paused = true)]
async fn a_continuation_refused_with_a_rate_limit_is_classified_and_cools_the_key() {
    let bench = cut_stream_bench().await;
    bench.upstream.push("second.test", Reply::error(429, "slow down").header("retry-after", "30"));
    let answer = bench.chat("pair", true).await;
    let text = answer.text();
    assert!(text.contains("Hello") && text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"), "a cut answer never looks complete: {text}");
    let second = bench.provider("second");
    let left = second.keys.cooldown_left(0).expect("the adapter's classification cooled the key");
    assert!(left > secs(29) && left <= secs(30), "{left:?}");
    assert_eq!(second.stats.rate_limited.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_continuation_refused_with_a_server_error_counts_against_the_breaker() {
    let bench = cut_stream_bench().await;
    bench.upstream.push("second.test", Reply::error(503, "down"));
    let answer = bench.chat("pair", true).await;
    assert!(answer.text().contains("\"error\""), "{}", answer.text());
    let second = bench.provider("second");
    assert_eq!(second.breakers.summary(clock::now()).consecutive_failures, 1, "the breaker heard the failure");
    assert_eq!(second.stats.failed.load(std::sync::atomic::Ordering::Relaxed), 1);
    let last = second.stats.last_error.lock().map(|l| l.clone()).unwrap_or_default().unwrap_or_default();
    assert!(last.contains("down"), "the adapter's message, not a generic one: {last}");
}

#[tokio::test(start_paused = true)]
async fn a_continuation_the_adapter_refuses_to_map_releases_its_key_reservation() {
    // `second` lacks tools: its adapter refuses the (legacy `functions`)
    // request in map-request, after a key was reserved for it.
    let toml = format!(
        "{}{}[routes.pair]\ntargets = [\"first\", \"second\"]\n",
        provider("first", TOOLS_AND_PREFILL),
        provider("second", "assistant_prefill")
    );
    let bench = Bench::start(&toml, &[("FIRST_API_KEY", "k"), ("SECOND_API_KEY", "k")]).await;
    bench.upstream.push("first.test", Reply::stream(&[(Duration::ZERO, "Hello")], false));
    let answer = bench
        .chat_body(json!({
            "model": "pair", "stream": true,
            "messages": [{"role": "user", "content": "Hi"}],
            "functions": [{"name": "f", "parameters": {"type": "object"}}]
        }))
        .await;
    assert!(answer.text().contains("Hello"), "{}", answer.text());
    assert_eq!(bench.upstream.count("second.test"), 0, "nothing was sent to second");
    let second = bench.provider("second");
    let status = second.keys.status(clock::now());
    assert_eq!(status[0].requests_in_window, 0, "the reservation was released, not kept");
    assert_eq!(second.breakers.summary(clock::now()).consecutive_failures, 0, "a refusal is not ill health");
}

/// One openai-compatible slot `lab` serving models `a` and `b` from one
/// upstream, behind a route trying `a` then `b`.
fn two_models() -> String {
    format!(
        "[providers.lab]\ncomponent = {component:?}\n[providers.lab.settings]\n\
         base_url = \"http://lab.test/v1\"\nmodels = [\"a\", \"b\"]\nprivacy = \"local\"\n\
         capabilities = {caps:?}\nrpm = 1000\n\n[routes.both]\ntargets = [\"lab/a\", \"lab/b\"]\n",
        component = crate::testing::component("freellm-provider-openai-compatible").display().to_string(),
        caps = TOOLS_AND_PREFILL,
    )
}

fn sent_model(received: &crate::testing::Received) -> String {
    let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap_or_default();
    body["model"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(start_paused = true)]
async fn two_models_of_one_slot_keep_independent_breakers() {
    let env = [("LAB_API_KEY", "k"), ("CB_FAILURE_THRESHOLD", "1"), ("ROUTE_TRANSIENT_RETRIES", "0")];
    let bench = Bench::start(&two_models(), &env).await;
    let lab = bench.provider("lab");
    bench.upstream.push("lab.test", Reply::error(503, "model a is down"));
    let failed = bench.chat("lab/a", false).await;
    assert_eq!(failed.status, 429, "{}", failed.text());
    let a = lab.breakers.get("a").expect("a was judged");
    assert_eq!(a.snapshot(clock::now()).state, BreakerState::Open);

    bench.upstream.always("lab.test", Reply::completion("b answers"));
    let b = bench.chat("lab/b", false).await;
    assert_eq!(b.status, 200, "an open breaker of model a does not block model b: {}", b.text());
    assert_eq!(lab.breakers.get("b").map(|b| b.snapshot(clock::now()).state), Some(BreakerState::Closed));

    let blocked = bench.chat("lab/a", false).await;
    assert_eq!(blocked.status, 429, "{}", blocked.text());
    assert_eq!(bench.upstream.count("lab.test"), 2, "model a's open breaker sent nothing");
    assert_eq!(blocked.json()["error"]["attempts"][0]["outcome"], "circuit_open", "{}", blocked.text());
    assert_eq!(lab.breakers.summary(clock::now()).state, BreakerState::Open, "the summary shows the worst model");

    // A route over both models skips a's open breaker and answers from b.
    let routed = bench.chat("both", false).await;
    assert_eq!(routed.status, 200, "{}", routed.text());
    let last = bench.upstream.received().pop().expect("a request");
    assert_eq!(sent_model(&last), "b");
}

#[tokio::test(start_paused = true)]
async fn a_cut_stream_is_continued_on_another_model_of_the_same_provider() {
    let env = [("LAB_API_KEY", "k"), ("CB_FAILURE_THRESHOLD", "5")];
    let bench = Bench::start(&two_models(), &env).await;
    bench.upstream.push("lab.test", Reply::stream(&[(Duration::ZERO, "Hello")], false));
    bench.upstream.push("lab.test", Reply::stream(&[(Duration::ZERO, ", world")], true));
    let answer = bench.chat("both", true).await;
    let text = answer.text();
    assert!(text.contains("Hello") && text.contains(", world"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let received = bench.upstream.received();
    assert_eq!(received.len(), 2);
    assert_eq!((sent_model(&received[0]), sent_model(&received[1])), ("a".to_owned(), "b".to_owned()));
    let body: serde_json::Value = serde_json::from_slice(&received[1].body).unwrap_or_default();
    assert_eq!(body["messages"][1], json!({"role": "assistant", "content": "Hello"}));
    let lab = bench.provider("lab");
    assert_eq!(lab.breakers.get("a").map(|b| b.snapshot(clock::now()).consecutive_failures), Some(1));
    assert_eq!(lab.breakers.get("b").map(|b| b.snapshot(clock::now()).consecutive_failures), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_route_whose_targets_all_fail_with_server_errors_answers_429_with_advice_and_attempts() {
    let env = [("FIRST_API_KEY", "k"), ("SECOND_API_KEY", "k"), ("ROUTE_TRANSIENT_RETRIES", "1")];
    let bench = Bench::start(&pair(), &env).await;
    bench.upstream.always("first.test", Reply::error(503, "first is down"));
    bench.upstream.always("second.test", Reply::error(500, "second broke"));
    let answer = bench.chat("pair", false).await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "all_providers_exhausted");
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["message"], "All providers exhausted for model: pair");
    assert_eq!(error["retry_after_ms"], 0, "the keys are not resting: {error}");
    assert_eq!(answer.header("retry-after"), "1");
    let providers = error["providers"].as_array().expect("providers[]");
    let ids: Vec<&str> = providers.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["first", "second"]);
    assert_eq!(providers[0]["keys_total"], 1);
    assert!(error["suggestions"].is_array(), "{error}");
    let attempts: Vec<(String, String, u64)> = error["attempts"]
        .as_array()
        .expect("attempts[]")
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (s("provider"), s("outcome"), a["status"].as_u64().unwrap_or_default())
        })
        .collect();
    let expected = [("first", 503), ("first", 503), ("second", 500), ("second", 500)]
        .map(|(p, status)| (p.to_owned(), "server_error".to_owned(), status));
    assert_eq!(attempts, expected, "each attempt, a retry included");
    assert_eq!(error["attempts"][0]["model"], "m");
}

#[tokio::test(start_paused = true)]
async fn strict_mode_keeps_the_upstreams_own_error() {
    let toml = provider("first", TOOLS_AND_PREFILL);
    let bench = Bench::start(&toml, &[("FIRST_API_KEY", "k")]).await;
    bench.upstream.push("first.test", Reply::error(503, "first is down"));
    bench.upstream.push("first.test", Reply::error(429, "slow down").header("retry-after", "7"));
    let body = json!({"model": "first/m", "messages": [{"role": "user", "content": "Hi"}]});
    let strict = [("x-freellm-strict", "true")];
    let failed = bench.chat_body_with(body.clone(), &strict).await;
    assert_eq!(failed.status, 502, "{}", failed.text());
    assert_eq!(failed.json()["error"]["code"], "provider_upstream_error");
    assert_eq!(bench.upstream.count("first.test"), 1, "strict: one attempt");
    let limited = bench.chat_body_with(body, &strict).await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.json()["error"]["code"], "provider_rate_limited");
    assert_eq!(limited.json()["error"]["retry_after_ms"], 7000);
}
