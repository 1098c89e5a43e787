//! The scripts against a real `redis-server`: windows written as they
//! would be some buckets ago, then read, reserved and adjusted.

use std::time::Duration;

use freellm_e2e::RedisServer;
use redis::Script;

use super::*;
use crate::config::RedisUrl;
use crate::fleet::redis::RedisClient;

async fn client(server: &RedisServer) -> RedisClient {
    let url = RedisUrl::parse(&server.url()).expect("url");
    RedisClient::lazy(&url, "t:", Duration::from_secs(2)).expect("client")
}

/// Writes window KEYS[1] (buckets of ARGV[1] ms) as it would be with
/// `o` and counts at the given offsets from the current bucket, and
/// returns that bucket. ARGV[2]: `o`'s offset; then `offset, r, t`
/// triples; then the totals `R`, `T` last.
static SEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local w = tonumber(ARGV[1])
local b = math.floor((tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) / w)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'o', b + tonumber(ARGV[2]))
local i = 3
while i + 2 <= #ARGV - 2 do
  local x = b + tonumber(ARGV[i])
  redis.call('HSET', KEYS[1], 'r' .. x, ARGV[i + 1], 't' .. x, ARGV[i + 2])
  i = i + 3
end
redis.call('HSET', KEYS[1], 'R', ARGV[#ARGV - 1], 'T', ARGV[#ARGV])
return b
"#,
    )
});

/// Runs `check` after seeding, again if the bucket turned meanwhile (the
/// window moved under the test, not under the script).
async fn seeded<T>(c: &RedisClient, key: &str, width_ms: i64, seed: &[i64], check: impl AsyncFn() -> T) -> (i64, T) {
    loop {
        let mut args = vec![width_ms];
        args.extend_from_slice(seed);
        let b: i64 = c.run(&SEED, &[key.to_owned()], &args).await.expect("seed");
        let out = check().await;
        let after: i64 = c.run(&SEED_NOW, &[], &[width_ms]).await.expect("time");
        if after == b {
            return (b, out);
        }
    }
}

/// The current bucket of width ARGV[1] ms.
static SEED_NOW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local t = redis.call('TIME') return math.floor((tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) / tonumber(ARGV[1]))",
    )
});

async fn fields(c: &RedisClient, key: &str, names: &[String]) -> Vec<Option<i64>> {
    let get = Script::new(
        "local out = {} for i, f in ipairs(ARGV) do out[i] = redis.call('HGET', KEYS[1], f) or '-' end return out",
    );
    let raw: Vec<String> = c.run(&get, &[key.to_owned()], names).await.expect("fields");
    raw.iter().map(|v| v.parse().ok()).collect()
}

async fn pttl(c: &RedisClient, key: &str) -> i64 {
    c.run(&Script::new("return redis.call('PTTL', KEYS[1])"), &[key.to_owned()], &[0i64]).await.expect("pttl")
}

#[tokio::test]
async fn aging_subtracts_the_buckets_that_left_the_window_and_forgets_them() {
    let server = RedisServer::start().await;
    let c = client(&server).await;
    let k = "t:w";
    // 60 buckets of one minute: the window is b-59 ..= b. Buckets b-61 and
    // b-60 have left it; b-59 and b are in.
    let seed = [-61, -61, 3, 30, -60, 2, 20, -59, 4, 40, 0, 1, 10, 10, 100];
    let (b, totals) =
        seeded(&c, k, 60_000, &seed, async || c.run::<Vec<i64>, _>(&WINDOW_USAGE, &[k.into()], &[60_000i64, 60]).await)
            .await;
    assert_eq!(totals.expect("usage"), vec![5, 50]);
    let names: Vec<String> =
        ["o".into(), format!("r{}", b - 61), format!("t{}", b - 60), format!("r{}", b - 59), "R".into(), "T".into()]
            .into();
    assert_eq!(fields(&c, k, &names).await, vec![Some(b - 59), None, None, Some(4), Some(5), Some(50)]);
    assert!(pttl(&c, k).await > 60 * 60_000, "the aged window expires one window after its write");
}

#[tokio::test]
async fn a_window_idle_for_longer_than_itself_starts_empty() {
    let server = RedisServer::start().await;
    let c = client(&server).await;
    let k = "t:idle";
    let seed = [-200, -200, 7, 70, 7, 70];
    let (b, totals) =
        seeded(&c, k, 60_000, &seed, async || c.run::<Vec<i64>, _>(&WINDOW_USAGE, &[k.into()], &[60_000i64, 60]).await)
            .await;
    assert_eq!(totals.expect("usage"), vec![0, 0]);
    assert_eq!(fields(&c, k, &["o".into(), format!("r{}", b - 200)]).await, vec![Some(b - 59), None]);
}

#[tokio::test]
async fn a_window_never_written_reads_empty_and_does_not_live_forever() {
    let server = RedisServer::start().await;
    let c = client(&server).await;
    let totals: Vec<i64> = c.run(&WINDOW_USAGE, &["t:new".into()], &[1_000i64, 60]).await.expect("usage");
    assert_eq!(totals, vec![0, 0]);
    let ttl = pttl(&c, "t:new").await;
    assert!(ttl > 0 && ttl <= 61_000, "{ttl}");
}

#[tokio::test]
async fn a_provider_key_is_reserved_until_its_rpm_is_spent_then_refused_with_a_wait() {
    let server = RedisServer::start().await;
    let c = client(&server).await;
    let keys: Vec<String> = ["t:pk:m", "t:pk:d", "t:rest", "t:invalid"].map(String::from).into();
    // rpm 3, no other limit, 10 tokens each.
    let args = [3i64, -1, -1, -1, 10];
    for _ in 0..3 {
        let reply: Vec<i64> = c.run(&PROVIDER_KEY_RESERVE, &keys, &args).await.expect("reserve");
        assert_eq!(reply[0], 1, "{reply:?}");
    }
    let refused: Vec<i64> = c.run(&PROVIDER_KEY_RESERVE, &keys, &args).await.expect("reserve");
    assert_eq!(refused[0], 0);
    assert!(refused[1] > 0 && refused[1] <= 60_000, "{refused:?}");
    let minute: Vec<i64> = c.run(&WINDOW_USAGE, &keys[..1], &[1_000i64, 60]).await.expect("usage");
    let day: Vec<i64> = c.run(&WINDOW_USAGE, &keys[1..2], &[60_000i64, 1440]).await.expect("usage");
    assert_eq!((minute, day), (vec![3, 30], vec![3, 30]));
    // Each window outlives its counts: about one window more.
    assert!(pttl(&c, "t:pk:m").await > 59_000, "{}", pttl(&c, "t:pk:m").await);
    assert!(pttl(&c, "t:pk:d").await > 1440 * 60_000);
}

#[tokio::test]
async fn a_rested_or_invalid_key_is_refused_before_any_window_is_touched() {
    let server = RedisServer::start().await;
    let c = client(&server).await;
    let keys: Vec<String> = ["t:pk:m", "t:pk:d", "t:rest", "t:invalid"].map(String::from).into();
    let set = Script::new("redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) return 1");
    let _: i64 = c.run(&set, &keys[2..3], &[5_000i64]).await.expect("rest");
    let reply: Vec<i64> = c.run(&PROVIDER_KEY_RESERVE, &keys, &[-1i64, -1, -1, -1, 1]).await.expect("reserve");
    assert_eq!(reply[0], 0);
    assert!(reply[1] > 0 && reply[1] <= 5_000, "{reply:?}");
    let _: i64 = c.run(&set, &keys[3..4], &[60_000i64]).await.expect("invalid");
    let del = Script::new("return redis.call('DEL', KEYS[1])");
    let _: i64 = c.run(&del, &keys[2..3], &[0i64]).await.expect("unrest");
    let reply: Vec<i64> = c.run(&PROVIDER_KEY_RESERVE, &keys, &[-1i64, -1, -1, -1, 1]).await.expect("reserve");
    assert_eq!(reply, vec![0, 60_000]);
    assert_eq!(pttl(&c, "t:pk:m").await, -2, "no window was written");
}

#[tokio::test]
async fn an_adjustment_settles_tokens_in_the_reserved_buckets_and_never_below_zero() {
    let server = RedisServer::start().await;
    let c = client(&server).await;
    let keys: Vec<String> = ["t:pk:m", "t:pk:d", "t:rest", "t:invalid"].map(String::from).into();
    let reply: Vec<i64> = c.run(&PROVIDER_KEY_RESERVE, &keys, &[-1i64, -1, 100, -1, 23]).await.expect("reserve");
    assert_eq!(reply[0], 1);
    let (bm, bd) = (reply[1], reply[2]);
    // The answer used 21 tokens: two back.
    let _: i64 = c.run(&PROVIDER_KEY_ADJUST, &keys[..2], &[bm, bd, 0, -2]).await.expect("adjust");
    let minute: Vec<i64> = c.run(&WINDOW_USAGE, &keys[..1], &[1_000i64, 60]).await.expect("usage");
    assert_eq!(minute[1], 21);
    // A release larger than what was counted stops at zero.
    let _: i64 = c.run(&PROVIDER_KEY_ADJUST, &keys[..2], &[bm, bd, -5, -500]).await.expect("adjust");
    let day: Vec<i64> = c.run(&WINDOW_USAGE, &keys[1..2], &[60_000i64, 1440]).await.expect("usage");
    assert_eq!(day, vec![0, 0]);
    assert_eq!(fields(&c, "t:pk:d", &[format!("r{bd}"), format!("t{bd}")]).await, vec![Some(0), Some(0)]);
}

#[tokio::test]
async fn a_virtual_key_is_admitted_up_to_its_request_cap_then_its_token_cap_refuses() {
    let server = RedisServer::start().await;
    let c = client(&server).await;
    let k = vec!["t:vk".to_owned()];
    for _ in 0..2 {
        let reply: Vec<i64> = c.run(&VIRTUAL_KEY_ADMIT, &k, &[2i64, -1]).await.expect("admit");
        assert_eq!(reply[0], 1, "{reply:?}");
    }
    let refused: Vec<i64> = c.run(&VIRTUAL_KEY_ADMIT, &k, &[2i64, -1]).await.expect("admit");
    assert_eq!((refused[0], refused[4]), (0, 1));
    // 50 tokens settled: a token cap of 50 refuses the next request.
    let totals: Vec<i64> = c.run(&VIRTUAL_KEY_ADJUST, &k, &[-1i64, 0, 50]).await.expect("adjust");
    assert_eq!(totals, vec![2, 50]);
    let refused: Vec<i64> = c.run(&VIRTUAL_KEY_ADMIT, &k, &[-1i64, 50]).await.expect("admit");
    assert_eq!((refused[0], refused[4]), (0, 2));
}

#[tokio::test]
async fn an_adjustment_of_an_earlier_bucket_lands_there_and_stops_at_zero() {
    let server = RedisServer::start().await;
    let c = client(&server).await;
    let k = "t:vk2";
    // A virtual key's window (one-minute buckets): 2 requests and 50 tokens
    // three minutes ago, 1 and 10 in this minute.
    let seed = [-5, -3, 2, 50, 0, 1, 10, 3, 60];
    let (b, totals) = seeded(&c, k, 60_000, &seed, async || {
        let now: i64 = c.run(&SEED_NOW, &[], &[60_000i64]).await.expect("time");
        // One request of that minute taken back, with more tokens than it has.
        c.run::<Vec<i64>, _>(&VIRTUAL_KEY_ADJUST, &[k.into()], &[now - 3, -1, -60]).await
    })
    .await;
    assert_eq!(totals.expect("adjust"), vec![2, 10]);
    let names: Vec<String> = [format!("r{}", b - 3), format!("t{}", b - 3), format!("r{b}"), format!("t{b}")].into();
    assert_eq!(fields(&c, k, &names).await, vec![Some(1), Some(0), Some(1), Some(10)]);
}

#[tokio::test]
async fn a_clients_ip_limit_is_decided_first_and_what_it_refuses_is_not_counted_for_the_identifier() {
    let server = RedisServer::start().await;
    let c = client(&server).await;
    let keys: Vec<String> = ["t:ip:a", "t:id:b"].map(String::from).into();
    // The IP may send 2 a minute, the identifier 1.
    let ask = async |n: u32| -> Vec<i64> {
        let args = ["2".to_owned(), "60000".into(), "1".into(), "60000".into(), format!("test:{n}")];
        c.run(&CLIENT_LIMITS, &keys, &args).await.expect("limits")
    };
    assert_eq!(ask(1).await, vec![1, 1, 60_000, 1, 0, 60_000]);
    let second = ask(2).await;
    assert_eq!(second[..3], [1, 0, 60_000], "the IP counted it");
    assert_eq!(second[3..5], [0, 0], "the identifier refused it");
    let third = ask(3).await;
    assert_eq!((third[0], &third[3..]), (0, &[0i64, 0, 0][..]), "the IP refused it first");
    let counted: i64 =
        c.run(&Script::new("return redis.call('ZCARD', KEYS[1])"), &keys[1..], &[0i64]).await.expect("zcard");
    assert_eq!(counted, 1, "only the request the identifier admitted is in its window");
}
