//! End-to-end: the response cache shared by gateway processes on a real
//! `redis-server` (`CACHE_BACKEND=redis`, #17 item 4). An answer cached by
//! one instance is served by another without an upstream call; the key
//! rules are the same as locally: another tenant misses, an instance whose
//! adapter version differs misses; a corrupt value in Redis is a miss, not
//! an error; a Redis that is down is a miss too.

use std::path::Path;
use std::time::Duration;

use freellm_e2e::*;
use serde_json::Value;

const ADMIN: &str = "admin-secret-key-9876543210";
const MASTER: &str = "master-secret-key-0123456789";

/// A provider `swap` running the swap-test adapter `variant` against the mock.
fn config(component: &Path, mock: &MockUpstream) -> String {
    format!("[providers.swap]\ncomponent = \"{}\"\nbase_url = \"{}/v1\"\n", component.display(), mock.url)
}

fn options(component: &Path, mock: &MockUpstream) -> GatewayOptions {
    GatewayOptions {
        config: config(component, mock),
        env: vec![
            ("FREELLM_ADMIN_KEY".into(), ADMIN.into()),
            ("FREELLM_API_KEY".into(), MASTER.into()),
            ("CACHE_ENABLED".into(), "true".into()),
            ("CACHE_BACKEND".into(), "redis".into()),
        ],
    }
}

async fn ask(gw: &Gateway, bearer: &str, question: &str) -> reqwest::Response {
    let mut body = chat_body("swap/m");
    body["messages"][0]["content"] = question.into();
    gw.http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .expect("answer")
}

fn cached(r: &reqwest::Response) -> bool {
    r.headers().get("x-freellm-cached").is_some_and(|v| v == "true")
}

async fn cache_stats(gw: &Gateway) -> Value {
    let r = gw.http.get(format!("{}/v1/status", gw.url)).bearer_auth(ADMIN).send().await.expect("status");
    r.json::<Value>().await.expect("json")["cache"].clone()
}

#[tokio::test]
async fn an_answer_cached_by_one_instance_is_served_by_another_for_the_same_tenant_only() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let component = swap_variant("v1");
    let fleet = Gateway::start_fleet(2, &redis.url(), |_| options(&component, &mock)).await;
    let (a, b) = (&fleet[0], &fleet[1]);

    let first = ask(a, ADMIN, "what is shared?").await;
    assert_eq!((first.status(), cached(&first)), (reqwest::StatusCode::OK, false));
    let first_body: Value = first.json().await.expect("json");
    assert_eq!(mock.requests().len(), 1);

    let second = ask(b, ADMIN, "what is shared?").await;
    assert_eq!(second.status(), 200);
    assert!(cached(&second), "B served A's answer from the fleet's cache");
    assert_eq!(second.headers()["x-freellm-instance"], "gw-1");
    let second_body: Value = second.json().await.expect("json");
    assert_eq!(second_body["choices"], first_body["choices"]);
    assert_eq!(mock.requests().len(), 1, "the upstream saw one call");
    let stats = cache_stats(b).await;
    assert_eq!((stats["backend"].as_str(), stats["sharedHits"].as_u64()), (Some("redis"), Some(1)), "{stats}");

    // Again on B: now from its local first level.
    assert!(cached(&ask(b, ADMIN, "what is shared?").await));
    assert_eq!(cache_stats(b).await["sharedHits"], 1, "served from memory, not Redis");

    // Another tenant (the master key) asking the same misses, on any instance.
    let other = ask(b, MASTER, "what is shared?").await;
    assert_eq!((other.status(), cached(&other)), (reqwest::StatusCode::OK, false));
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn an_instance_running_another_adapter_version_misses() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let (v1, v2) = (swap_variant("v1"), swap_variant("v2"));
    let fleet = Gateway::start_fleet(2, &redis.url(), |i| options(if i == 0 { &v1 } else { &v2 }, &mock)).await;
    assert_eq!(ask(&fleet[0], ADMIN, "versioned?").await.status(), 200);
    let r = ask(&fleet[1], ADMIN, "versioned?").await;
    assert_eq!((r.status(), cached(&r)), (reqwest::StatusCode::OK, false), "answered by v1, B runs v2");
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(cache_stats(&fleet[1]).await["stale"], 1);
}

#[tokio::test]
async fn a_corrupt_or_foreign_value_in_redis_is_a_miss() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let component = swap_variant("v1");
    let fleet = Gateway::start_fleet(2, &redis.url(), |_| options(&component, &mock)).await;
    assert_eq!(ask(&fleet[0], ADMIN, "tamper").await.status(), 200);
    // Overwrite every cache entry with garbage.
    let reply = redis.command(&["KEYS", "freellm:cache:*"]).await.expect("keys");
    let keys: Vec<&str> = reply.lines().filter(|l| l.starts_with("freellm:cache:")).collect();
    assert_eq!(keys.len(), 1, "{reply}");
    redis
        .command(&["SET", keys[0], "{\"choices\":[{\"message\":{\"content\":\"forged\"}}]}", "PX", "60000"])
        .await
        .expect("set");

    let r = ask(&fleet[1], ADMIN, "tamper").await;
    assert_eq!((r.status(), cached(&r)), (reqwest::StatusCode::OK, false));
    let body: Value = r.json().await.expect("json");
    assert!(!body.to_string().contains("forged"));
    assert_eq!(cache_stats(&fleet[1]).await["sharedRejected"], 1);
}

#[tokio::test]
async fn a_redis_that_is_down_is_a_miss_and_answers_go_on() {
    let mut redis = RedisServer::start().await;
    let mock = MockUpstream::completing().await;
    let component = swap_variant("v1");
    let fleet = Gateway::start_fleet(1, &redis.url(), |_| options(&component, &mock)).await;
    redis.kill();
    for i in 0..3 {
        let started = std::time::Instant::now();
        let r = ask(&fleet[0], ADMIN, &format!("down {i}")).await;
        assert_eq!(r.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // The local level still works.
    assert!(cached(&ask(&fleet[0], ADMIN, "down 0").await));
}
