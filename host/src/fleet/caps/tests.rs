//! The fleet's caps and settlements against a real `redis-server`.

use std::time::Duration;

use freellm_e2e::RedisServer;
use freellm_limits::quota::Limits;

use super::*;
use crate::config::{RedisUrl, StateConfig};

async fn fleet(server: &RedisServer) -> Arc<Fleet> {
    let config = StateConfig {
        redis_url: Some(RedisUrl::parse(&server.url()).expect("url")),
        prefix: "t:".into(),
        instance_id: Some("test-1".into()),
        timeout: Duration::from_secs(2),
        ..StateConfig::default()
    };
    Fleet::start(&config).await.expect("fleet")
}

fn health(id: &str) -> KeyHealthItems {
    KeyHealthItems { cool: format!("{id}:cool"), invalid: format!("{id}:invalid") }
}

/// EVALSHA calls Redis has run so far.
async fn scripts_run(server: &RedisServer) -> u64 {
    let info = server.command(&["INFO", "commandstats"]).await.expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn settlements_of_many_requests_are_one_write_per_window_and_bucket() {
    let server = RedisServer::start().await;
    let fleet = fleet(&server).await;
    let limits = Limits { tokens_per_minute: Some(10_000), ..Limits::default() };
    let mut buckets = Vec::new();
    for _ in 0..20 {
        match fleet.reserve_provider_key("groq#k1", &health("groq#k1"), &limits, 23).await {
            Ok(KeyVerdict::Reserved { minute_bucket, day_bucket }) => buckets.push((minute_bucket, day_bucket)),
            other => panic!("not reserved: {other:?}"),
        }
    }
    // Every script loaded once (a first call answers NOSCRIPT, then loads).
    fleet.adjust_provider_key("groq#warm".into(), buckets[0], Delta { requests: 0, tokens: 1 });
    fleet.flush_settlements().await;
    fleet.provider_key_usage("groq#warm").await.expect("usage");
    let before = scripts_run(&server).await;
    // Each answer used 21 tokens, not the 23 estimated; one request failed.
    for b in &buckets[1..] {
        fleet.adjust_provider_key("groq#k1".into(), *b, Delta { requests: 0, tokens: -2 });
    }
    fleet.adjust_provider_key("groq#k1".into(), buckets[0], Delta { requests: -1, tokens: -23 });
    let mut polls = 0;
    let usage = loop {
        tokio::time::sleep(SETTLE_DELAY).await;
        polls += 1;
        let usage = fleet.provider_key_usage("groq#k1").await.expect("usage");
        if usage.requests_minute == 19 {
            break usage;
        }
        assert!(polls < 100, "never settled: {usage:?}");
    };
    assert_eq!((usage.requests_minute, usage.tokens_minute), (19, 19 * 21));
    assert_eq!((usage.requests_day, usage.tokens_day), (19, 19 * 21));
    let distinct = buckets.iter().collect::<std::collections::HashSet<_>>().len() as u64;
    // One write per bucket the twenty reservations fell in (one, unless a
    // second turned meanwhile), besides the two usage reads per poll.
    let writes = scripts_run(&server).await - before - 2 * polls;
    assert_eq!(writes, distinct, "one write per bucket, not one per settlement");
}

#[tokio::test]
async fn a_flush_writes_what_is_pending_at_once() {
    let server = RedisServer::start().await;
    let fleet = fleet(&server).await;
    let verdict = fleet.admit_virtual_key("vk1", None, None).await.expect("admit");
    let VirtualKeyVerdict::Admitted { bucket } = verdict else { panic!("{verdict:?}") };
    fleet.adjust_virtual_key("vk1".into(), Some(bucket), Delta { requests: 0, tokens: 40 });
    fleet.adjust_virtual_key("vk1".into(), Some(bucket), Delta { requests: 0, tokens: 2 });
    // What shutdown does: no waiting for the delay.
    fleet.flush_settlements().await;
    assert_eq!(fleet.virtual_key_usage("vk1").await.expect("usage"), (1, 42));
}

#[tokio::test]
async fn a_settlement_redis_does_not_take_is_kept_for_the_merge() {
    let mut server = RedisServer::start().await;
    let fleet = fleet(&server).await;
    fleet.admit_virtual_key("vk1", None, None).await.expect("admit");
    server.kill();
    fleet.adjust_virtual_key("vk1".into(), None, Delta { requests: 0, tokens: 7 });
    fleet.flush_settlements().await;
    let pending = fleet.status().pending_counts;
    assert_eq!(pending, Some(1), "kept as a delta while Redis is away");
}
