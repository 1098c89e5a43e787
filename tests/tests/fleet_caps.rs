//! End-to-end: several gateway processes on one real `redis-server` behave
//! as one gateway for their caps. Exact caps under concurrency (virtual
//! key, identifier limit, a provider key's rpm), Redis killed mid-load and
//! restarted (no request hangs, failures only as `on_redis_error` says,
//! degraded in `/v1/status` and `/metrics`, counts merged after recovery),
//! and virtual-key usage that survives a restart of every instance.
//! (`fleet_state.rs` has the instance header and hostile settings.)

use std::time::{Duration, Instant};

use crate::fleet_setup::*;
use freellm_e2e::*;
use serde_json::{Value, json};

/// Sends `n` requests at once, spread over `gateways` in turn; returns each
/// answer's status and error code.
async fn burst(
    gateways: &[Gateway],
    n: usize,
    request: impl Fn(&Gateway) -> reqwest::RequestBuilder,
) -> Vec<(u16, String)> {
    let sends = (0..n).map(|i| {
        let r = request(&gateways[i % gateways.len()]);
        async move {
            let r = r.send().await.expect("answer");
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
    });
    futures_util::future::join_all(sends).await
}

fn count(results: &[(u16, String)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

async fn vk_usage(gw: &Gateway) -> u64 {
    let keys = admin_get(gw, "/v1/status/virtual-keys").await;
    keys["keys"][0]["requestsInWindow"].as_u64().expect("usage")
}

#[tokio::test]
async fn three_instances_let_exactly_a_virtual_keys_cap_through() {
    let setup = Setup::new(RedisServer::start().await).await;
    let keys = setup.keys_file(json!({"dailyRequestCap": 30}));
    let fleet = setup.fleet(3, &config_with_groq_rpm(ROOMY), &[("FREELLM_VIRTUAL_KEYS_PATH", &keys)]).await;

    let results = burst(&fleet, 90, |gw| chat(gw, VK)).await;
    assert_eq!(count(&results, 200), 30, "{results:?}");
    assert!(
        results.iter().all(|(s, code)| *s == 200 || (*s == 429 && code == "virtual_key_cap_reached")),
        "{results:?}"
    );
    assert_eq!(setup.mock.requests().len(), 30);
    // Every instance reads the fleet's usage.
    for gw in &fleet {
        assert_eq!(vk_usage(gw).await, 30);
    }
}

#[tokio::test]
async fn three_instances_share_one_identifier_limit() {
    let setup = Setup::new(RedisServer::start().await).await;
    let fleet = setup.fleet(3, &config_with_groq_rpm(ROOMY), &[("FREELLM_IDENTIFIER_LIMIT", "30/60000")]).await;
    let results = burst(&fleet, 90, |gw| chat(gw, ADMIN).header("x-freellm-identifier", "user-42")).await;
    assert_eq!(count(&results, 200), 30, "{results:?}");
    assert_eq!(results.iter().filter(|(s, c)| *s == 429 && c == "identifier_rate_limited").count(), 60);
    assert_eq!(setup.mock.requests().len(), 30, "no refused request reached the upstream");
    // Another identifier has its own window.
    let other = chat(&fleet[1], ADMIN).header("x-freellm-identifier", "user-7").send().await.expect("answer");
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn three_instances_share_one_per_ip_limit_before_the_identifiers() {
    let setup = Setup::new(RedisServer::start().await).await;
    let env = [("RATE_LIMIT_RPM", "30"), ("FREELLM_IDENTIFIER_LIMIT", "20/60000")];
    let fleet = setup.fleet(3, &config_with_groq_rpm(ROOMY), &env).await;
    // Every client here is 127.0.0.1: 30 requests pass its IP's limit,
    // 20 of those the identifier's; the 60 the IP refused are not counted
    // against the identifier.
    let results = burst(&fleet, 90, |gw| chat(gw, ADMIN).header("x-freellm-identifier", "user-42")).await;
    assert_eq!(count(&results, 200), 20, "{results:?}");
    assert_eq!(results.iter().filter(|(s, c)| *s == 429 && c == "identifier_rate_limited").count(), 10);
    assert_eq!(results.iter().filter(|(s, c)| *s == 429 && c == "client_rate_limited").count(), 60);
    assert_eq!(setup.mock.requests().len(), 20, "no refused request reached the upstream");
}

/// In a fleet a chat request's limits are decided while it is routed
/// (`access::admission`): a refusal still reaches no upstream, outranks a
/// cache hit, and carries the same headers as when the guard waited.
#[tokio::test]
async fn limits_decided_while_routing_refuse_before_any_upstream_or_cached_answer() {
    let setup = Setup::new(RedisServer::start().await).await;
    let fleet = setup
        .fleet(
            2,
            &config_with_groq_rpm(ROOMY),
            &[("FREELLM_IDENTIFIER_LIMIT", "2/60000"), ("CACHE_ENABLED", "true"), ("CACHE_TTL_MS", "600000")],
        )
        .await;
    let ask = |gw: &Gateway| chat(gw, ADMIN).header("x-freellm-identifier", "user-9");
    let first = ask(&fleet[0]).send().await.expect("answer");
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-freellm-identifier"], "user-9");
    assert_eq!(first.headers()["x-freellm-identifier-remaining"], "1");
    let second = ask(&fleet[0]).send().await.expect("answer");
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-freellm-cached"], "true", "the same prompt is a cache hit");
    assert_eq!(second.headers()["x-freellm-identifier-remaining"], "0");
    // The limit is spent: a cache hit is refused too, on either instance.
    for gw in &fleet {
        let refused = ask(gw).send().await.expect("answer");
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["x-freellm-identifier"], "user-9");
        assert_eq!(refused.headers()["x-freellm-identifier-remaining"], "0");
        assert!(refused.headers().contains_key("retry-after"), "{:?}", refused.headers());
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["error"]["code"], "identifier_rate_limited", "{body}");
        assert!(body["error"]["request_id"].is_string(), "{body}");
    }
    // A refused request that is no cache hit reaches no upstream either.
    let mut other = chat_body(MODEL);
    other["messages"][0]["content"] = "a prompt nobody cached".into();
    let refused = fleet[1]
        .http
        .post(format!("{}/v1/chat/completions", fleet[1].url))
        .bearer_auth(ADMIN)
        .header("x-freellm-identifier", "user-9")
        .json(&other)
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 429);
    assert_eq!(setup.mock.requests().len(), 1, "only the first request reached the upstream");
    // Nor is a refused request in the request log.
    let status = admin_get(&fleet[1], "/v1/status").await;
    let log = status["recentRequests"].to_string();
    assert!(!log.contains("rate limit") && !log.contains("user-9"), "{log}");
}

#[tokio::test]
async fn three_instances_share_a_provider_keys_rpm() {
    let setup = Setup::new(RedisServer::start().await).await;
    let fleet = setup.fleet(3, &config_with_groq_rpm(30), &[]).await;
    let results = burst(&fleet, 90, |gw| chat(gw, ADMIN)).await;
    assert_eq!(setup.mock.requests().len(), 30, "the upstream saw exactly the key's rpm");
    assert_eq!(count(&results, 200), 30, "{results:?}");
    assert!(results.iter().all(|(s, code)| *s == 200 || code == "all_providers_exhausted"), "{results:?}");
    // Status shows the fleet's window, whichever instance answers.
    let status = admin_get(&fleet[2], "/v1/status").await;
    let groq = status["providers"].as_array().and_then(|p| p.iter().find(|p| p["id"] == "groq")).expect("groq");
    assert_eq!(groq["keys"][0]["windows"]["requestsMinute"], 30, "{} {}", groq["keys"], status["sharedState"]);
    // So does the event feed's opening snapshot (what the dashboard starts from).
    let snapshot = events_snapshot(&fleet[1]).await;
    let groq = snapshot["providers"].as_array().and_then(|p| p.iter().find(|p| p["id"] == "groq")).expect("groq");
    assert_eq!(groq["keys"][0]["windows"]["requestsMinute"], 30, "{}", groq["keys"]);
    assert_eq!(snapshot["sharedState"]["fleetKeyWindows"], 1, "{}", snapshot["sharedState"]);
}

/// The `snapshot` event a `/v1/events` feed opens with.
async fn events_snapshot(gw: &Gateway) -> Value {
    use futures_util::StreamExt;
    let r = reqwest::Client::new().get(format!("{}/v1/events", gw.url)).bearer_auth(ADMIN).send().await.expect("feed");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.next()).await.expect("a snapshot within 10 s");
        text.push_str(std::str::from_utf8(&chunk.expect("open").expect("bytes")).expect("UTF-8"));
    }
    let frame = &text[..text.find("\n\n").unwrap_or(text.len())];
    assert!(frame.lines().any(|l| l == "event: snapshot"), "{frame}");
    let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).expect("data line");
    serde_json::from_str(data).expect("snapshot JSON")
}

#[tokio::test]
async fn redis_killed_mid_load_fails_caps_closed_then_recovers() {
    let mut setup = Setup::new(RedisServer::start().await).await;
    let keys = setup.keys_file(json!({"dailyRequestCap": 10_000}));
    let fleet = setup.fleet(3, &config_with_groq_rpm(ROOMY), &[("FREELLM_VIRTUAL_KEYS_PATH", &keys)]).await;

    // Load on all three while Redis dies.
    let load = async {
        let mut results = Vec::new();
        for round in 0..30 {
            let started = Instant::now();
            results.extend(burst(&fleet, 6, |gw| chat(gw, VK)).await);
            assert!(started.elapsed() < Duration::from_secs(5), "round {round} hung: {:?}", started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        results
    };
    let kill = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        setup.redis.kill();
    };
    let (results, ()) = tokio::join!(load, kill);
    assert!(count(&results, 200) > 0, "answered before the kill");
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(!refused.is_empty(), "the outage was seen");
    assert!(refused.iter().all(|(s, code)| *s == 503 && code == "shared_state_unavailable"), "{refused:?}");

    // Degraded, said in status and metrics; operators still read them.
    let status = wait_degraded(&fleet[0], true, Duration::from_secs(5)).await;
    assert_eq!(status["sharedState"]["message"], "degraded: shared state unavailable");
    let metrics = fleet[1].http.get(format!("{}/metrics", fleet[1].url)).bearer_auth(ADMIN).send().await.expect("m");
    let metrics = metrics.text().await.expect("text");
    assert!(metrics.contains("freellm_shared_state_up{backend=\"redis\",instance_id=\"gw-1\"} 0"), "{metrics}");
    // Requests without a virtual key go on from local state.
    assert_eq!(chat(&fleet[2], ADMIN).send().await.expect("answer").status(), 200);
    assert_eq!(fleet[0].log().matches("degraded: shared state unavailable").count(), 1, "one line per transition");

    setup.redis.restart().await;
    for gw in &fleet {
        wait_degraded(gw, false, Duration::from_secs(15)).await;
    }
    assert!(fleet[0].log().contains("shared state available again"));
    assert_eq!(chat(&fleet[1], VK).send().await.expect("answer").status(), 200);
}

/// With Redis down and caps failing closed, a tenant's identifier limit
/// (decided while the request is routed) refuses with 503 before any
/// upstream is called; an operator is decided locally and served.
#[tokio::test]
async fn an_identifier_limit_fails_closed_for_tenants_while_redis_is_down() {
    client_limits_fail_closed_for_tenants_while_redis_is_down(&[]).await;
}

/// The same with a per-IP limit too (both limits are one script then).
#[tokio::test]
async fn both_client_limits_fail_closed_for_tenants_while_redis_is_down() {
    client_limits_fail_closed_for_tenants_while_redis_is_down(&[("RATE_LIMIT_RPM", "1000")]).await;
}

async fn client_limits_fail_closed_for_tenants_while_redis_is_down(more: &[(&str, &str)]) {
    let mut setup = Setup::new(RedisServer::start().await).await;
    let keys = setup.keys_file(json!({}));
    let mut extra = vec![("FREELLM_VIRTUAL_KEYS_PATH", keys.as_str()), ("FREELLM_IDENTIFIER_LIMIT", "100/60000")];
    extra.extend_from_slice(more);
    let fleet = setup.fleet(1, &config_with_groq_rpm(ROOMY), &extra).await;
    let ok = chat(&fleet[0], VK).send().await.expect("answer");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-freellm-identifier-remaining"], "99");
    setup.redis.kill();
    wait_degraded(&fleet[0], true, Duration::from_secs(5)).await;
    let upstream_calls = setup.mock.requests().len();

    let refused = chat(&fleet[0], VK).send().await.expect("answer");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"), "{:?}", refused.headers());
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "shared_state_unavailable", "{body}");
    assert_eq!(setup.mock.requests().len(), upstream_calls, "a refused request reaches no upstream");
    // Operators are decided from this instance's own limiter meanwhile.
    let operator = chat(&fleet[0], ADMIN).send().await.expect("answer");
    assert_eq!(operator.status(), 200);
    assert!(operator.headers().contains_key("x-freellm-identifier-remaining"), "{:?}", operator.headers());
}

#[tokio::test]
async fn counts_made_while_degraded_are_merged_when_redis_returns() {
    let mut setup = Setup::new(RedisServer::start_persistent().await).await;
    let keys = setup.keys_file(json!({"dailyRequestCap": 1_000}));
    let extra = [("FREELLM_VIRTUAL_KEYS_PATH", keys.as_str()), ("FREELLM_ON_REDIS_ERROR", "open")];
    let fleet = setup.fleet(2, &config_with_groq_rpm(ROOMY), &extra).await;
    let ok = burst(&fleet, 4, |gw| chat(gw, VK)).await;
    assert_eq!(count(&ok, 200), 4);
    // Settles are written in a task: let them land before the kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vk_usage(&fleet[0]).await, 4);

    setup.redis.kill();
    // Open: the local windows decide, nothing is refused.
    let during = burst(&fleet, 6, |gw| chat(gw, VK)).await;
    assert_eq!(count(&during, 200), 6, "{during:?}");
    wait_degraded(&fleet[0], true, Duration::from_secs(5)).await;

    setup.redis.restart().await;
    for gw in &fleet {
        wait_degraded(gw, false, Duration::from_secs(15)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while vk_usage(&fleet[1]).await != 10 {
        assert!(Instant::now() < deadline, "merged usage: {}", vk_usage(&fleet[1]).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn virtual_key_usage_survives_restarting_every_instance() {
    let setup = Setup::new(RedisServer::start().await).await;
    let keys = setup.keys_file(json!({"dailyRequestCap": 7}));
    let extra = [("FREELLM_VIRTUAL_KEYS_PATH", keys.as_str())];
    let fleet = setup.fleet(3, &config_with_groq_rpm(ROOMY), &extra).await;
    assert_eq!(count(&burst(&fleet, 6, |gw| chat(gw, VK)).await, 200), 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for gw in fleet {
        gw.terminate().await;
    }
    // New processes, new data directories: only Redis remembers.
    let fleet = setup.fleet(3, &config_with_groq_rpm(ROOMY), &extra).await;
    let me: Value = fleet[2]
        .http
        .get(format!("{}/v1/me", fleet[2].url))
        .bearer_auth(VK)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["virtualKey"]["requestsInWindow"], 6, "{me}");
    let results = burst(&fleet, 3, |gw| chat(gw, VK)).await;
    assert_eq!(count(&results, 200), 1, "one left of the cap: {results:?}");
}
