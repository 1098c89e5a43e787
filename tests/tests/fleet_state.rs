//! End-to-end: gateway processes on a real `redis-server` (the fleet's
//! foundation): each names itself in every answer and in `/v1/status`;
//! hostile settings: a bad URL refuses the start without showing it, an
//! unreachable Redis at start serves degraded and recovers, a password in
//! the URL never shows in status or logs.

use std::time::Duration;

use crate::fleet_setup::*;
use freellm_e2e::*;

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
