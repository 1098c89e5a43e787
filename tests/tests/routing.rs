//! End-to-end routing against mock upstreams that inject faults: what the
//! client gets, and what the upstreams saw (how many attempts, how far
//! apart).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::{Value, json};

/// groq (one or more keys) and ollama, each on its own mock.
async fn two_providers(groq: &MockUpstream, ollama: &MockUpstream, groq_keys: &str, extra: &[(&str, &str)]) -> Gateway {
    let mut env: Vec<(String, String)> = vec![
        ("GROQ_API_KEY".into(), groq_keys.into()),
        ("GROQ_BASE_URL".into(), format!("{}/v1", groq.url)),
        ("OLLAMA_BASE_URL".into(), ollama.url.clone()),
        ("OLLAMA_MODELS".into(), "llama3".into()),
        // Routing is under test: identical requests must reach the upstreams.
        ("CACHE_ENABLED".into(), "false".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Gateway::start_with(GatewayOptions { config: default_config(), env }).await
}

fn stream_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}], "stream": true})
}

fn content_of(data: &[String]) -> String {
    data.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_short_retry_after_on_the_primary_target_is_waited_out_once() {
    let groq = MockUpstream::completing().await;
    groq.enqueue(
        [Reply::error(429, "Rate limit reached on requests per minute (RPM)").with_header("retry-after", "1")],
    );
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    let r = gw.chat(chat_body("free-fast")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "groq");
    let seen = groq.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(950), "{:?}", seen[1].at - seen[0].at);
    assert!(ollama.requests().is_empty());
}

#[tokio::test]
async fn a_429_without_retry_after_cools_the_key_and_the_next_provider_answers() {
    let groq = MockUpstream::start(|_| Reply::error(429, "Rate limit reached on requests per minute (RPM)")).await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    for _ in 0..3 {
        let r = gw.chat(chat_body("free-fast")).await;
        assert_eq!(r.status(), 200, "{}", gw.log());
        assert_eq!(r.headers()["x-freellm-provider"], "ollama");
    }
    // The key rests for the default 60 s: groq is not asked again.
    assert_eq!(groq.requests().len(), 1);
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let groq_status = &status["providers"][0];
    assert_eq!(groq_status["id"], "groq");
    assert_eq!(groq_status["rateLimitedRequests"], 1);
    assert_eq!(groq_status["keys"][0]["rateLimited"], true);
    assert!(groq_status["keys"][0]["retryAfterMs"].as_u64().unwrap() > 55_000);
    assert_eq!(status["recentRequests"][0]["routeReason"], "meta");
    assert_eq!(status["recentRequests"][2]["routeReason"], "failover");
}

#[tokio::test]
async fn a_500_once_is_retried_on_the_same_target_after_a_backoff() {
    let groq = MockUpstream::completing().await;
    groq.enqueue([Reply::error(500, "internal error")]);
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    let r = gw.chat(chat_body("groq/llama-3.3-70b-versatile")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let seen = groq.requests();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(90) && gap < Duration::from_secs(2), "{gap:?}");
}

#[tokio::test]
async fn a_provider_failing_for_a_while_opens_its_breaker_then_one_probe_closes_it() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let groq = MockUpstream::start(move |r| {
        if h.load(Ordering::SeqCst) {
            // A slow answer keeps the probe in flight while the others arrive.
            let ok = Reply::ok(completion(r.json()["model"].as_str().unwrap_or("m"), "back"));
            Reply::Delayed(Duration::from_millis(400), Box::new(ok))
        } else {
            Reply::error(503, "over capacity")
        }
    })
    .await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(
        &groq,
        &ollama,
        "k1",
        &[
            ("ROUTE_TRANSIENT_RETRIES", "0"),
            ("CB_FAILURE_THRESHOLD", "2"),
            ("CB_SUCCESS_THRESHOLD", "1"),
            ("CB_TIMEOUT_MS", "700"),
        ],
    )
    .await;
    let model = "groq/llama-3.3-70b-versatile";
    for _ in 0..2 {
        assert_eq!(gw.chat(chat_body(model)).await.status(), 429, "a failed concrete model is exhausted");
    }
    // Open: refused without an upstream call.
    let r = gw.chat(chat_body(model)).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["providers"][0]["circuit_state"], "open", "{body}");
    assert_eq!(groq.requests().len(), 2);
    // Meanwhile meta-models go elsewhere.
    let r = gw.chat(chat_body("free-fast")).await;
    assert_eq!(r.headers()["x-freellm-provider"], "ollama");
    assert_eq!(groq.requests().len(), 2);

    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Half-open: of several simultaneous requests exactly one probes.
    let results = futures_util::future::join_all((0..4).map(|_| gw.chat(chat_body(model)))).await;
    let ok = results.iter().filter(|r| r.status() == 200).count();
    assert_eq!(groq.requests().len(), 3, "exactly one probe reached the upstream");
    assert_eq!(ok, 1);
    // The probe closed it.
    assert_eq!(gw.chat(chat_body(model)).await.status(), 200);
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["providers"][0]["circuitBreakerState"], "closed");
}

/// A flapping provider: the breaker's open period starts short and grows
/// on a failed probe (one upstream attempt per probe, never retried), and
/// the provider is back in use within one period of recovering.
#[tokio::test]
async fn a_flapping_provider_is_probed_once_per_period_and_back_within_a_period_of_recovering() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let groq = MockUpstream::start(move |r| {
        if h.load(Ordering::SeqCst) {
            Reply::ok(completion(r.json()["model"].as_str().unwrap_or("m"), "back"))
        } else {
            Reply::error(503, "over capacity")
        }
    })
    .await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(
        &groq,
        &ollama,
        "k1",
        &[
            ("ROUTE_TRANSIENT_RETRIES", "1"),
            ("ROUTE_RETRY_BACKOFF_MS", "1"),
            ("CB_FAILURE_THRESHOLD", "2"),
            ("CB_SUCCESS_THRESHOLD", "1"),
            ("CB_TIMEOUT_MS", "300"),
            ("CB_MAX_TIMEOUT_MS", "5000"),
        ],
    )
    .await;
    let model = "groq/llama-3.3-70b-versatile";
    let breaker = |status: &Value| status["providers"][0]["circuitBreaker"].clone();
    // Two requests, each retried once on the target: two breaker failures
    // open it for 300 ms.
    for _ in 0..2 {
        assert_eq!(gw.chat(chat_body(model)).await.status(), 429, "a failed concrete model is exhausted");
    }
    assert_eq!(groq.requests().len(), 4);
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let remaining = breaker(&status)["opened_for_ms_remaining"].as_u64().expect("open");
    assert!(remaining <= 300, "{status}");

    // The probe fails: a single upstream attempt, and the next period is longer.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(gw.chat(chat_body(model)).await.status(), 429);
    assert_eq!(groq.requests().len(), 5, "a half-open probe is one attempt, never retried");
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let remaining = breaker(&status)["opened_for_ms_remaining"].as_u64().expect("open again");
    assert!(remaining > 300 && remaining <= 600, "the second period doubles: {status}");

    // Recovered: back in use within that period.
    healthy.store(true, Ordering::SeqCst);
    let recovered = Instant::now();
    loop {
        let r = gw.chat(chat_body(model)).await;
        if r.status() == 200 {
            break;
        }
        assert!(recovered.elapsed() < Duration::from_millis(1500), "not back in use: {}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered.elapsed() < Duration::from_millis(900), "took {:?}", recovered.elapsed());
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["providers"][0]["circuitBreakerState"], "closed", "{status}");
}

/// A 404 is about the request (here: a model Ollama has not pulled), not
/// the provider's health: it fails over but is not retried on the target
/// and never opens the breaker, however often it comes.
#[tokio::test]
async fn client_errors_from_an_upstream_do_not_open_its_breaker_and_are_not_retried() {
    let groq = MockUpstream::completing().await;
    let ollama = MockUpstream::start(|_| Reply::error(404, "model \"llama3\" not found, try pulling it first")).await;
    let gw = two_providers(
        &groq,
        &ollama,
        "k1",
        &[("CB_FAILURE_THRESHOLD", "2"), ("ROUTE_TRANSIENT_RETRIES", "2"), ("ROUTE_RETRY_BACKOFF_MS", "1")],
    )
    .await;
    for _ in 0..4 {
        let r = gw.chat(chat_body("ollama/llama3")).await;
        assert!(r.status().is_client_error() || r.status().is_server_error(), "{}", r.status());
    }
    assert_eq!(ollama.requests().len(), 4, "one attempt per request, no retries");
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let entry = status["providers"].as_array().unwrap().iter().find(|p| p["id"] == "ollama").unwrap().clone();
    assert_eq!(entry["circuitBreakerState"], "closed", "{entry}");
    // The gateway keeps answering other models.
    let r = gw.chat(chat_body("free")).await;
    assert_eq!(r.status(), 200);
}

/// A silent upstream costs the caller one first-byte timeout, not one per
/// retry: a timeout moves to the next target at once.
#[tokio::test]
async fn a_silent_upstream_fails_over_after_one_first_byte_timeout() {
    let groq = MockUpstream::start(|_| Reply::Hang).await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(
        &groq,
        &ollama,
        "k1",
        &[("UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "600"), ("ROUTE_TRANSIENT_RETRIES", "2"), ("ROUTE_RETRY_BACKOFF_MS", "1")],
    )
    .await;
    let started = Instant::now();
    let r = gw.chat(chat_body("free-fast")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "ollama");
    assert_eq!(groq.requests().len(), 1, "no same-target retry after a timeout");
    assert!(started.elapsed() < Duration::from_millis(1150), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_slow_first_token_fails_over_before_anything_is_sent() {
    let groq = MockUpstream::start(|_| Reply::Stream {
        pieces: vec![(Duration::from_secs(3), format!("data: {}\n\n", chunk("late", Some("stop"))))],
        cut: false,
    })
    .await;
    let ollama =
        MockUpstream::start(|_| Reply::sse(&[&chunk("Hello", None), &chunk(" there", Some("stop")), "[DONE]"])).await;
    let gw = two_providers(&groq, &ollama, "k1", &[("STREAM_FIRST_TOKEN_TIMEOUT_MS", "300")]).await;
    let started = Instant::now();
    let r = gw.chat(stream_body("free-fast")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-freellm-provider"], "ollama");
    assert_eq!(r.headers()["x-freellm-route-reason"], "failover");
    let data = sse_data(r).await;
    assert_eq!(content_of(&data), "Hello there");
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_stream_cut_after_content_is_continued_on_another_provider() {
    let groq = MockUpstream::start(|_| Reply::Stream {
        pieces: vec![
            (Duration::ZERO, format!("data: {}\n\n", chunk("Hello", None))),
            (Duration::from_millis(50), format!("data: {}\n\n", chunk(", wor", None))),
            (Duration::from_millis(50), String::new()),
        ],
        cut: true,
    })
    .await;
    let ollama = MockUpstream::start(|_| Reply::sse(&[&chunk("ld!", None), &chunk("", Some("stop")), "[DONE]"])).await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    let r = gw.chat(stream_body("free-fast")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-freellm-provider"], "groq");
    let data = sse_data(r).await;
    assert_eq!(content_of(&data), "Hello, world!", "{data:?}");
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(!data.iter().any(|d| d.contains("\"error\"")), "{data:?}");
    // The continuation carried the partial answer as an assistant prefill.
    let sent = ollama.requests()[0].json();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap(), &json!({"role": "assistant", "content": "Hello, wor"}));
    assert_eq!(sent["stream"], true);
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["continuations"], 1);
}

#[tokio::test]
async fn a_continuation_that_echoes_the_prefill_is_not_duplicated() {
    let groq = MockUpstream::start(|_| Reply::Stream {
        pieces: vec![
            (Duration::ZERO, format!("data: {}\n\n", chunk("One, two", None))),
            (Duration::from_millis(50), String::new()),
        ],
        cut: true,
    })
    .await;
    // Some providers answer a prefill by repeating it first.
    let ollama =
        MockUpstream::start(|_| Reply::sse(&[&chunk("One, ", None), &chunk("two, three.", Some("stop")), "[DONE]"]))
            .await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    let data = sse_data(gw.chat(stream_body("free-fast")).await).await;
    assert_eq!(content_of(&data), "One, two, three.", "{data:?}");
}

#[tokio::test]
async fn a_stalled_stream_without_a_continuation_ends_with_an_error_event() {
    let groq = MockUpstream::start(|_| Reply::Stream {
        pieces: vec![
            (Duration::ZERO, format!("data: {}\n\n", chunk("Hel", None))),
            (Duration::from_secs(10), format!("data: {}\n\n", chunk("lo", Some("stop")))),
        ],
        cut: false,
    })
    .await;
    let ollama = MockUpstream::completing().await;
    let mut gw = two_providers(&groq, &ollama, "k1", &[("STREAM_STALL_TIMEOUT_MS", "400")]).await;
    // A concrete model has no other candidate to continue on.
    let started = Instant::now();
    let data = sse_data(gw.chat(stream_body("groq/llama-3.3-70b-versatile")).await).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(content_of(&data), "Hel");
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_stalled", "{last}");
    gw.assert_healthy().await;
}

#[tokio::test]
async fn a_malformed_event_mid_stream_is_skipped_and_a_stream_without_done_is_finalised() {
    let groq = MockUpstream::start(|_| Reply::Stream {
        pieces: vec![
            (Duration::ZERO, format!("data: {}\n\n", chunk("Hello", None))),
            (Duration::ZERO, "data: {not json\n\n".to_owned()),
            (Duration::ZERO, format!("data: {}\n\n", chunk(" world", Some("stop")))),
        ],
        cut: false,
    })
    .await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    let started = Instant::now();
    let data = sse_data(gw.chat(stream_body("groq/llama-3.3-70b-versatile")).await).await;
    assert_eq!(content_of(&data), "Hello world", "{data:?}");
    assert_eq!(data.last().unwrap(), "[DONE]", "finalised although the upstream sent no [DONE]");
    assert!(!data.iter().any(|d| d.contains("not json")));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The SSE rule: the `data:` lines of one event are joined with `\n`, so a
/// chunk an upstream splits over several lines arrives whole.
#[tokio::test]
async fn an_event_whose_data_spans_several_lines_is_joined() {
    let split = chunk("Hello", None);
    let at = split.find("\"choices\"").expect("a chunk has choices");
    let (head, tail) = (split[..at].to_owned(), split[at..].to_owned());
    let groq = MockUpstream::start(move |_| Reply::Stream {
        pieces: vec![
            (Duration::ZERO, format!("data: {head}\ndata: {tail}\n\n")),
            (Duration::ZERO, format!("data: {}\n\n", chunk(" world", Some("stop")))),
            (Duration::ZERO, "data: [DONE]\n\n".to_owned()),
        ],
        cut: false,
    })
    .await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    let data = sse_data(gw.chat(stream_body("groq/llama-3.3-70b-versatile")).await).await;
    assert_eq!(content_of(&data), "Hello world", "{data:?}");
}

#[tokio::test]
async fn context_length_and_content_filter_are_surfaced_not_retried() {
    let groq = MockUpstream::completing().await;
    groq.enqueue([
        Reply::Json {
            status: 400,
            headers: vec![],
            body: json!({"error": {"message": "Please reduce the length of the messages or completion: context_length_exceeded", "type": "invalid_request_error", "code": "context_length_exceeded"}}),
        },
        Reply::Json {
            status: 400,
            headers: vec![],
            body: json!({"error": {"message": "The response was filtered due to the prompt triggering content management policy", "type": "invalid_request_error", "code": "content_filter"}}),
        },
    ]);
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    for needle in ["reduce the length", "filtered"] {
        let r = gw.chat(chat_body("free-fast")).await;
        assert_eq!(r.status(), 502);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["provider"], "groq");
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{body}");
    }
    assert_eq!(groq.requests().len(), 2, "one attempt each");
    assert!(ollama.requests().is_empty(), "not failed over");
}

#[tokio::test]
async fn a_route_falls_back_to_a_larger_context_on_context_length() {
    let groq = MockUpstream::start(|_| Reply::Json {
        status: 400,
        headers: vec![],
        body: json!({"error": {"message": "context_length_exceeded: too many tokens", "code": "context_length_exceeded"}}),
    })
    .await;
    let ollama = MockUpstream::completing().await;
    let config = format!(
        "{}\n[routes.my-chat]\ntargets = [\"groq/llama-3.1-8b-instant\"]\ncontext_fallbacks = [\"ollama/llama3\"]\n",
        default_config()
    );
    let env = vec![
        ("GROQ_API_KEY".to_owned(), "k".to_owned()),
        ("GROQ_BASE_URL".to_owned(), format!("{}/v1", groq.url)),
        ("OLLAMA_BASE_URL".to_owned(), ollama.url.clone()),
        ("OLLAMA_MODELS".to_owned(), "llama3".to_owned()),
    ];
    let gw = Gateway::start_with(GatewayOptions { config, env }).await;
    let models: Value = gw.get("/v1/models").await.json().await.unwrap();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "my-chat"));
    let r = gw.chat(chat_body("my-chat")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(r.headers()["x-freellm-provider"], "ollama");
    assert_eq!(r.headers()["x-freellm-requested-model"], "my-chat");
    assert_eq!(groq.requests().len(), 1);
}

#[tokio::test]
async fn strict_mode_makes_exactly_one_attempt() {
    let groq = MockUpstream::start(|_| {
        Reply::error(429, "Rate limit reached on requests per minute (RPM)").with_header("retry-after", "7")
    })
    .await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, "k1,k2", &[]).await;
    let strict = |model: &str| {
        gw.http
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-freellm-strict", "true")
            .json(&chat_body(model))
            .send()
    };
    let r = strict("free").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "strict_mode_meta_model_forbidden");

    let r = strict("groq/llama-3.3-70b-versatile").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["x-freellm-provider"], "groq");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_rate_limited");
    assert_eq!(groq.requests().len(), 1, "no second key");
    assert!(ollama.requests().is_empty(), "no other provider");
}

#[tokio::test]
async fn privacy_no_training_routes_only_to_eligible_providers() {
    let mock = MockUpstream::completing().await;
    let config = "[providers.gemini]\ncomponent = \"{component:freellm-provider-gemini}\"\n\n\
                  [providers.groq]\ncomponent = \"{component:freellm-provider-groq}\"\n"
        .to_owned();
    let env = vec![
        ("GEMINI_API_KEY".to_owned(), "g".to_owned()),
        ("GEMINI_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
        ("GROQ_API_KEY".to_owned(), "k".to_owned()),
        ("GROQ_BASE_URL".to_owned(), format!("{}/v1", mock.url)),
    ];
    let gw = Gateway::start_with(GatewayOptions { config, env }).await;
    let private = |model: &str| {
        gw.http
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-freellm-privacy", "no-training")
            .json(&chat_body(model))
            .send()
    };
    // free-smart prefers gemini, which trains on free-tier prompts.
    let r = private("free-smart").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-freellm-provider"], "groq");
    let r = private("gemini/gemini-2.5-flash").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_supported", "{body}");
    assert_eq!(mock.requests().len(), 1);
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-freellm-privacy", "maybe")
        .json(&chat_body("free"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The message names the header, not the body.
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("header X-FreeLLM-Privacy: "), "{body}");
}

#[tokio::test]
async fn the_strategy_switches_at_runtime() {
    let groq = MockUpstream::completing().await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["routingStrategy"], "quota_aware");
    // quota_aware: the first target with headroom, every time.
    for _ in 0..4 {
        assert_eq!(gw.chat(chat_body("free-fast")).await.headers()["x-freellm-provider"], "groq");
    }
    let r = gw
        .http
        .patch(format!("{}/v1/status/routing", gw.url))
        .json(&json!({"strategy": "round_robin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // As the reference: the PATCH answers with the full status object.
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["routingStrategy"], "round_robin");
    assert!(answer["providers"].as_array().is_some_and(|p| !p.is_empty()), "{answer}");
    assert!(answer["recentRequests"].is_array() && answer["usage"].is_object(), "{answer}");
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(gw.chat(chat_body("free-fast")).await.headers()["x-freellm-provider"].to_str().unwrap().to_owned());
    }
    assert_eq!(seen.iter().filter(|p| *p == "groq").count(), 2, "{seen:?}");
    assert_eq!(seen.iter().filter(|p| *p == "ollama").count(), 2, "{seen:?}");
    let r = gw
        .http
        .patch(format!("{}/v1/status/routing", gw.url))
        .json(&json!({"strategy": "fastest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // As the reference: a reset answers with that provider's status object, without `privacy`.
    let r = gw.http.post(format!("{}/v1/status/providers/groq/reset", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["id"], "groq");
    assert_eq!(answer["circuitBreakerState"], "closed");
    assert!(answer["keys"].is_array() && answer["totalRequests"].is_u64(), "{answer}");
    assert!(answer.get("privacy").is_none(), "{answer}");
    let r = gw.http.post(format!("{}/v1/status/providers/nope/reset", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_not_found");
}

#[tokio::test]
async fn quota_aware_routing_avoids_a_key_whose_declared_window_is_full() {
    let limited = MockUpstream::completing().await;
    let other = MockUpstream::completing().await;
    let provider = |id: &str, url: &str, rpm: u32| {
        format!(
            "[providers.{id}]\ncomponent = \"{{component:freellm-provider-openai-compatible}}\"\n\
             [providers.{id}.settings]\nbase_url = \"{url}/v1\"\nauth = \"none\"\nmodels = [\"m\"]\nprivacy = \"local\"\nrpm = {rpm}\n\n"
        )
    };
    let config = format!(
        "{}{}[routes.pair]\ntargets = [\"first\", \"second\"]\n",
        provider("first", &limited.url, 2),
        provider("second", &other.url, 1000)
    );
    let env = vec![("CACHE_ENABLED".to_owned(), "false".to_owned())];
    let gw = Gateway::start_with(GatewayOptions { config, env }).await;
    let mut providers = Vec::new();
    for _ in 0..5 {
        let r = gw.chat(chat_body("pair")).await;
        assert_eq!(r.status(), 200, "{}", gw.log());
        providers.push(r.headers()["x-freellm-provider"].to_str().unwrap().to_owned());
        // A user-defined route answered by a target without a failure says `route`, not `meta`.
        assert_eq!(r.headers()["x-freellm-route-reason"], "route");
    }
    assert_eq!(providers, ["first", "first", "second", "second", "second"]);
    assert_eq!(limited.requests().len(), 2, "never sent what its declared limit would refuse");
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    let first = status["providers"].as_array().unwrap().iter().find(|p| p["id"] == "first").unwrap().clone();
    assert_eq!(first["keys"][0]["requestsInWindow"], 2);
    assert_eq!(first["keys"][0]["maxRequests"], 2);
}

#[tokio::test]
async fn stream_usage_is_requested_recorded_and_hidden_from_clients_that_did_not_ask() {
    let usage_chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}})
    .to_string();
    let u = usage_chunk.clone();
    let groq =
        MockUpstream::start(move |_| Reply::sse(&[&chunk("Hi", None), &chunk("", Some("stop")), &u, "[DONE]"])).await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, "k1", &[]).await;
    let data = sse_data(gw.chat(stream_body("groq/llama-3.3-70b-versatile")).await).await;
    assert_eq!(content_of(&data), "Hi");
    assert!(!data.iter().any(|d| d.contains("\"usage\"")), "{data:?}");
    assert_eq!(groq.requests()[0].json()["stream_options"], json!({"include_usage": true}));
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["providers"][0]["usage"]["totalTokens"], 15, "{}", status["providers"][0]);
    assert_eq!(status["providers"][0]["keys"][0]["windows"]["tokensMinute"], 15);

    // A client that asks for usage gets the chunk.
    let mut body = stream_body("groq/llama-3.3-70b-versatile");
    body["stream_options"] = json!({"include_usage": true});
    let data = sse_data(gw.chat(body).await).await;
    assert!(data.iter().any(|d| d.contains("\"total_tokens\":15")), "{data:?}");

    // Options of the client's own without `include_usage`: merged into
    // them, and the chunk hidden again.
    let mut body = stream_body("groq/llama-3.3-70b-versatile");
    body["stream_options"] = json!({});
    let data = sse_data(gw.chat(body).await).await;
    assert!(!data.iter().any(|d| d.contains("\"usage\"")), "{data:?}");
    assert_eq!(groq.requests()[2].json()["stream_options"], json!({"include_usage": true}));
}
