//! The Lua scripts that make the fleet's caps exact: each decision is one
//! script, so the check and the reservation happen atomically inside Redis
//! (never a read in one round trip and a write in another). Scripts take
//! the time from Redis (`TIME`), so every instance counts in the same
//! buckets whatever its own clock says. Every key they write expires
//! (`PEXPIRE`) one window after its last write.
//!
//! A sliding window is a hash of buckets: `r<b>` and `t<b>` (requests and
//! tokens of bucket `b = floor(ms / width)`), the totals `R` and `T`, and
//! `o`, the oldest bucket that may still hold counts. Aging it subtracts
//! the buckets that left the window from the totals, so a decision reads
//! two fields instead of summing the window.

use std::sync::LazyLock;

use redis::Script;

/// Helpers every windowed script starts with.
const WINDOW_LIB: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Ages the window in hash k (n buckets of w ms) to `now`; returns the
-- current bucket and the totals.
local function age(k, w, n, now)
  local b = math.floor(now / w)
  local lo = b - n + 1
  local o = tonumber(redis.call('HGET', k, 'o') or lo)
  if o < lo then
    if lo - o >= n then
      redis.call('DEL', k)
    else
      local R = tonumber(redis.call('HGET', k, 'R') or 0)
      local T = tonumber(redis.call('HGET', k, 'T') or 0)
      for x = o, lo - 1 do
        local r = redis.call('HGET', k, 'r' .. x)
        if r then R = R - tonumber(r) end
        local t = redis.call('HGET', k, 't' .. x)
        if t then T = T - tonumber(t) end
        redis.call('HDEL', k, 'r' .. x, 't' .. x)
      end
      if R < 0 then R = 0 end
      if T < 0 then T = 0 end
      redis.call('HSET', k, 'R', R, 'T', T)
    end
    redis.call('HSET', k, 'o', lo)
  elseif redis.call('HEXISTS', k, 'o') == 0 then
    redis.call('HSET', k, 'o', lo)
  end
  redis.call('PEXPIRE', k, w * (n + 1))
  local R = tonumber(redis.call('HGET', k, 'R') or 0)
  local T = tonumber(redis.call('HGET', k, 'T') or 0)
  return b, R, T
end

-- Adds d to counter f ('r' or 't') of bucket b of window k and to its
-- total ('R' or 'T'), neither going below zero.
local function add_to(k, b, f, total, d)
  if d == 0 then return end
  local v = redis.call('HINCRBY', k, f .. b, d)
  local t = redis.call('HINCRBY', k, total, d)
  if v < 0 then redis.call('HINCRBY', k, f .. b, -v); t = redis.call('HINCRBY', k, total, -v) end
  if t < 0 then redis.call('HSET', k, total, 0) end
end

-- Adds dr requests and dt tokens to bucket b of window k (while it is in
-- the window; a bucket that left is forgotten), never below zero.
local function add(k, w, n, b, dr, dt)
  local o = tonumber(redis.call('HGET', k, 'o') or b)
  if b < o then return end
  add_to(k, b, 'r', 'R', dr)
  add_to(k, b, 't', 'T', dt)
  redis.call('PEXPIRE', k, w * (n + 1))
end

-- Milliseconds until `need` of field f ('r' or 't') has left window k.
local function wait_for(k, w, n, now, f, need)
  local b = math.floor(now / w)
  local freed = 0
  for x = b - n + 1, b do
    freed = freed + tonumber(redis.call('HGET', k, f .. x) or 0)
    if freed >= need then return (x + n) * w - now end
  end
  return n * w
end
"#;

fn windowed(body: &str) -> Script {
    Script::new(&format!("{WINDOW_LIB}\n{body}"))
}

/// A virtual key's rolling 24 h (1440 one-minute buckets). KEYS[1]: its
/// window. ARGV: request cap, token cap (-1: none). Admits while requests
/// (finished and in flight) are under the request cap and tokens under the
/// token cap, counting the request in the current bucket.
/// Returns `{admitted, requests, tokens, bucket, refusal}` with refusal 1
/// (request cap) or 2 (token cap).
pub static VIRTUAL_KEY_ADMIT: LazyLock<Script> = LazyLock::new(|| {
    windowed(
        r#"
local k, w, n = KEYS[1], 60000, 1440
local req_cap, tok_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local b, R, T = age(k, w, n, now_ms())
if req_cap >= 0 and R >= req_cap then return {0, R, T, b, 1} end
if tok_cap >= 0 and T >= tok_cap then return {0, R, T, b, 2} end
add(k, w, n, b, 1, 0)
return {1, R + 1, T, b, 0}
"#,
    )
});

/// Adjusts a virtual key's window. KEYS[1]: its window. ARGV: bucket (-1:
/// the current one), requests, tokens (signed). Returns `{requests, tokens}`.
pub static VIRTUAL_KEY_ADJUST: LazyLock<Script> = LazyLock::new(|| {
    windowed(
        r#"
local k, w, n = KEYS[1], 60000, 1440
local b, R, T = age(k, w, n, now_ms())
local at = tonumber(ARGV[1])
if at < 0 then at = b end
add(k, w, n, at, tonumber(ARGV[2]), tonumber(ARGV[3]))
return {tonumber(redis.call('HGET', k, 'R') or 0), tonumber(redis.call('HGET', k, 'T') or 0)}
"#,
    )
});

/// A window's totals now. KEYS[1]: the window. ARGV: bucket width (ms),
/// buckets. Returns `{requests, tokens}`.
pub static WINDOW_USAGE: LazyLock<Script> = LazyLock::new(|| {
    windowed(
        r#"
local _, R, T = age(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now_ms())
return {R, T}
"#,
    )
});

/// A provider key's minute (60 × 1 s) and day (1440 × 1 min) windows,
/// after its health: a key the fleet rests or found invalid is refused even
/// when this instance has not yet applied that change (its message may
/// still be on the way), so no instance acts on a key the fleet knows bad.
/// KEYS: minute window, day window, the key's rest item, its invalid item
/// (`<prefix>health:…`, [`crate::fleet::health::cool_item`]).
/// ARGV: rpm, rpd, tpm, tpd (-1: none), estimated tokens. An estimate
/// larger than a token limit needs that window empty (as the local windows
/// do). Returns `{1, minute bucket, day bucket}` when reserved, `{0, wait
/// ms}` when the key rests or a window is full.
pub static PROVIDER_KEY_RESERVE: LazyLock<Script> = LazyLock::new(|| {
    windowed(
        r#"
local rest = redis.call('PTTL', KEYS[3])
if rest > 0 then return {0, rest} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {0, 60000} end
local km, kd = KEYS[1], KEYS[2]
local rpm, rpd, tpm, tpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local est = tonumber(ARGV[5])
local now = now_ms()
local bm, Rm, Tm = age(km, 1000, 60, now)
local bd, Rd, Td = age(kd, 60000, 1440, now)
local wait = -1
local function need(limit, used, amount, k, w, n, f)
  if limit < 0 then return end
  if limit == 0 then wait = math.max(wait, n * w); return end
  if amount > limit then amount = limit end
  if used + amount > limit then
    wait = math.max(wait, wait_for(k, w, n, now, f, used + amount - limit))
  end
end
need(rpm, Rm, 1, km, 1000, 60, 'r')
need(rpd, Rd, 1, kd, 60000, 1440, 'r')
need(tpm, Tm, est, km, 1000, 60, 't')
need(tpd, Td, est, kd, 60000, 1440, 't')
if wait >= 0 then return {0, wait} end
add(km, 1000, 60, bm, 1, est)
add(kd, 60000, 1440, bd, 1, est)
return {1, bm, bd}
"#,
    )
});

/// Adjusts a provider key's windows. KEYS: minute window, day window.
/// ARGV: minute bucket, day bucket (-1: the current ones), requests,
/// tokens (signed).
pub static PROVIDER_KEY_ADJUST: LazyLock<Script> = LazyLock::new(|| {
    windowed(
        r#"
local km, kd = KEYS[1], KEYS[2]
local now = now_ms()
local bm = age(km, 1000, 60, now)
local bd = age(kd, 60000, 1440, now)
local am, ad = tonumber(ARGV[1]), tonumber(ARGV[2])
if am < 0 then am = bm end
if ad < 0 then ad = bd end
local dr, dt = tonumber(ARGV[3]), tonumber(ARGV[4])
add(km, 1000, 60, am, dr, dt)
add(kd, 60000, 1440, ad, dr, dt)
return 1
"#,
    )
});

/// An identifier's (or client IP's) sliding window, a sorted set of
/// request times. KEYS[1]: the set. ARGV: max, window ms, a member unique
/// to this request, requests to add without a decision (the merge of
/// counts made while degraded; 0 for a decision).
/// Returns `{admitted, remaining, reset ms}` as the local limiter does.
pub static IDENTIFIER_CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = KEYS[1]
local max, window, member, merge = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window)
if merge > 0 then
  for i = 1, merge do redis.call('ZADD', k, now, member .. ':' .. i) end
  redis.call('PEXPIRE', k, window)
  return {1, 0, window}
end
local count = redis.call('ZCARD', k)
if count >= max then
  local oldest = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  local reset = window
  if oldest[2] then reset = tonumber(oldest[2]) + window - now end
  if reset < 1 then reset = 1 end
  if reset > window then reset = window end
  return {0, 0, reset}
end
redis.call('ZADD', k, now, member)
redis.call('PEXPIRE', k, window)
return {1, max - count - 1, window}
"#,
    )
});
