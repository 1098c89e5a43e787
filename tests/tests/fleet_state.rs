//! End-to-end: gateway processes on a real `redis-server` (the fleet's
//! foundation): each names itself in every answer and in `/v1/status`;
//! hostile settings: a bad URL refuses the start without showing it, an
//! unreachable Redis at start serves degraded and recovers, a password in
//! the URL never shows in status or logs.

use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::Value;

const ADMIN: &str = "admin-secret-key-9876543210";
const GROQ_KEY: &str = "gsk_fleet_secret_abcdefghijklmnop";
const MODEL: &str = "groq/llama-3.3-70b-versatile";

/// Room for every test's traffic.
const ROOMY: u32 = 100_000;

struct Setup {
    redis: RedisServer,
    mock: MockUpstream,
}

impl Setup {
    async fn new(redis: RedisServer) -> Self {
        Self { redis, mock: MockUpstream::completing().await }
    }

    fn options(&self, config: &str, extra: &[(&str, &str)]) -> GatewayOptions {
        let mut env = vec![
            ("GROQ_API_KEY".to_owned(), GROQ_KEY.to_owned()),
            ("GROQ_BASE_URL".to_owned(), format!("{}/v1", self.mock.url)),
            ("FREELLM_ADMIN_KEY".to_owned(), ADMIN.to_owned()),
            ("CACHE_ENABLED".to_owned(), "false".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        GatewayOptions { config: config.to_owned(), env }
    }

    async fn fleet(&self, n: usize, config: &str, extra: &[(&str, &str)]) -> Vec<Gateway> {
        Gateway::start_fleet(n, &self.redis.url(), |_| self.options(config, extra)).await
    }
}

fn chat(gw: &Gateway, bearer: &str) -> reqwest::RequestBuilder {
    gw.http.post(format!("{}/v1/chat/completions", gw.url)).bearer_auth(bearer).json(&chat_body(MODEL))
}

async fn admin_get(gw: &Gateway, path: &str) -> Value {
    let r = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ADMIN).send().await.expect("get");
    r.json().await.expect("json")
}

/// Polls `/v1/status` until `sharedState.degraded` is `degraded`.
async fn wait_degraded(gw: &Gateway, degraded: bool, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status = admin_get(gw, "/v1/status").await;
        if status["sharedState"]["degraded"] == degraded {
            return status;
        }
        assert!(Instant::now() < deadline, "sharedState never became degraded={degraded}: {}", status["sharedState"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_answer_names_the_instance() {
    let setup = Setup::new(RedisServer::start().await).await;
    let fleet = setup.fleet(2, &config_with_groq_rpm(ROOMY), &[]).await;
    for (i, gw) in fleet.iter().enumerate() {
        let r = chat(gw, ADMIN).send().await.expect("answer");
        assert_eq!(r.headers()["x-freellm-instance"], format!("gw-{i}").as_str());
        let status = admin_get(gw, "/v1/status").await;
        assert_eq!(status["instanceId"], format!("gw-{i}"));
        assert_eq!(status["sharedState"]["backend"], "redis");
        assert_eq!(status["sharedState"]["degraded"], false);
    }
}

#[tokio::test]
async fn a_bad_redis_url_refuses_to_start_without_showing_it() {
    let (code, log) = Gateway::start_failing(GatewayOptions {
        config: String::new(),
        env: vec![("FREELLM_REDIS_URL".into(), "http://:hunter2-password@127.0.0.1:6379".into())],
    })
    .await;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("FREELLM_REDIS_URL") && !log.contains("hunter2"), "{log}");
}

#[tokio::test]
async fn an_unreachable_redis_at_start_serves_degraded() {
    let mut setup = Setup::new(RedisServer::start().await).await;
    let url = setup.redis.url();
    setup.redis.kill();
    let gw = Gateway::start_with(GatewayOptions {
        env: [setup.options(&config_with_groq_rpm(ROOMY), &[]).env, vec![("FREELLM_REDIS_URL".into(), url)]].concat(),
        config: config_with_groq_rpm(ROOMY),
    })
    .await;
    let status = wait_degraded(&gw, true, Duration::from_secs(5)).await;
    assert_eq!(status["sharedState"]["backend"], "redis");
    assert_eq!(chat(&gw, ADMIN).send().await.expect("answer").status(), 200, "routing fails open");
    // Back when Redis is.
    setup.redis.restart().await;
    wait_degraded(&gw, false, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn a_redis_password_never_shows_in_status_or_logs() {
    const PASSWORD: &str = "redis-pass-7f3a9c2e51";
    let setup = Setup::new(RedisServer::start_with_password(PASSWORD).await).await;
    let fleet = setup.fleet(1, &config_with_groq_rpm(ROOMY), &[]).await;
    assert_eq!(chat(&fleet[0], ADMIN).send().await.expect("answer").status(), 200);
    let status = admin_get(&fleet[0], "/v1/status").await;
    assert_eq!(status["sharedState"]["degraded"], false, "{}", status["sharedState"]);

    // A wrong password: degraded, and neither password shows.
    let wrong = format!("redis://:wrong-{PASSWORD}@127.0.0.1:{}", setup.redis.port);
    let gw = Gateway::start_with(GatewayOptions {
        env: [setup.options(&config_with_groq_rpm(ROOMY), &[]).env, vec![("FREELLM_REDIS_URL".into(), wrong)]].concat(),
        config: config_with_groq_rpm(ROOMY),
    })
    .await;
    let degraded = wait_degraded(&gw, true, Duration::from_secs(5)).await;
    for text in [status.to_string(), degraded.to_string(), fleet[0].log(), gw.log()] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
}
