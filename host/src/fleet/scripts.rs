//! The Lua scripts that make the fleet's caps exact: each decision is one
//! script, so the check and the reservation happen atomically inside Redis
//! (never a read in one round trip and a write in another). Scripts take
//! the time from Redis (`TIME`), so every instance counts in the same
//! buckets whatever its own clock says. Every window expires
//! (`PEXPIRE`) one window after its current bucket began: aging renews it
//! once per bucket, which outlives every count the bucket holds.
//!
//! A sliding window is a hash of buckets: `r<b>` and `t<b>` (requests and
//! tokens of bucket `b = floor(ms / width)`), the totals `R` and `T`, and
//! `o`, the oldest bucket that may still hold counts. Aging it subtracts
//! the buckets that left the window from the totals, so a decision reads
//! two fields instead of summing the window.

use std::sync::LazyLock;

use redis::Script;

/// What every script starts with: `now_ms()`, Redis's clock in ms.
const NOW_LIB: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// Helpers every windowed script starts with.
const WINDOW_LIB: &str = r#"
-- Window k (n buckets of w ms) as of `now`, aged first: a table with the
-- current bucket b, the oldest bucket o still in the window, the totals R
-- and T and the current bucket's counts r and t. One read when the window
-- already aged to this bucket; it writes (and renews the expiry) only when
-- buckets leave the window.
local function age(k, w, n, now)
  local b = math.floor(now / w)
  local lo = b - n + 1
  local h = redis.call('HMGET', k, 'o', 'R', 'T', 'r' .. b, 't' .. b)
  local win = {k = k, b = b, o = tonumber(h[1]), R = tonumber(h[2]) or 0, T = tonumber(h[3]) or 0,
    r = tonumber(h[4]) or 0, t = tonumber(h[5]) or 0}
  if win.o ~= nil and win.o >= lo then return win end
  if win.o == nil then
    redis.call('HSET', k, 'o', lo)
  elseif lo - win.o >= n then
    redis.call('DEL', k)
    win.R, win.T, win.r, win.t = 0, 0, 0, 0
    redis.call('HSET', k, 'o', lo)
  else
    for x = win.o, lo - 1 do
      local v = redis.call('HMGET', k, 'r' .. x, 't' .. x)
      if v[1] then win.R = win.R - tonumber(v[1]) end
      if v[2] then win.T = win.T - tonumber(v[2]) end
      redis.call('HDEL', k, 'r' .. x, 't' .. x)
    end
    win.R, win.T = math.max(win.R, 0), math.max(win.T, 0)
    redis.call('HSET', k, 'o', lo, 'R', win.R, 'T', win.T)
  end
  win.o = lo
  redis.call('PEXPIRE', k, w * (n + 1))
  return win
end

-- Adds dr requests and dt tokens to bucket b of the aged window `win` (a
-- bucket that left the window is forgotten), in one write: a bucket's
-- count never goes below zero, and its total moves with it. No expiry to
-- renew: `age` set it when the current bucket began, and it outlives
-- every count of that bucket.
local function add(win, b, dr, dt)
  if b < win.o or (dr == 0 and dt == 0) then return end
  local r, t = win.r, win.t
  if b ~= win.b then
    local v = redis.call('HMGET', win.k, 'r' .. b, 't' .. b)
    r, t = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  end
  local nr, nt = math.max(r + dr, 0), math.max(t + dt, 0)
  win.R, win.T = math.max(win.R + nr - r, 0), math.max(win.T + nt - t, 0)
  if b == win.b then win.r, win.t = nr, nt end
  redis.call('HSET', win.k, 'r' .. b, nr, 't' .. b, nt, 'R', win.R, 'T', win.T)
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
    Script::new(&format!("{NOW_LIB}{WINDOW_LIB}\n{body}"))
}

/// A virtual key's rolling 24 h (1440 one-minute buckets). `KEYS[1]`: its
/// window. ARGV: request cap, token cap (-1: none). Admits while requests
/// (finished and in flight) are under the request cap and tokens under the
/// token cap, counting the request in the current bucket.
/// Returns `{admitted, requests, tokens, bucket, refusal}` with refusal 1
/// (request cap) or 2 (token cap).
pub static VIRTUAL_KEY_ADMIT: LazyLock<Script> = LazyLock::new(|| {
    windowed(
        r#"
local req_cap, tok_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local win = age(KEYS[1], 60000, 1440, now_ms())
if req_cap >= 0 and win.R >= req_cap then return {0, win.R, win.T, win.b, 1} end
if tok_cap >= 0 and win.T >= tok_cap then return {0, win.R, win.T, win.b, 2} end
add(win, win.b, 1, 0)
return {1, win.R, win.T, win.b, 0}
"#,
    )
});

/// Adjusts a virtual key's window. `KEYS[1]`: its window. ARGV: bucket (-1:
/// the current one), requests, tokens (signed). Returns `{requests, tokens}`.
pub static VIRTUAL_KEY_ADJUST: LazyLock<Script> = LazyLock::new(|| {
    windowed(
        r#"
local win = age(KEYS[1], 60000, 1440, now_ms())
local at = tonumber(ARGV[1])
if at < 0 then at = win.b end
add(win, at, tonumber(ARGV[2]), tonumber(ARGV[3]))
return {win.R, win.T}
"#,
    )
});

/// A window's totals now. `KEYS[1]`: the window. ARGV: bucket width (ms),
/// buckets. Returns `{requests, tokens}`.
pub static WINDOW_USAGE: LazyLock<Script> = LazyLock::new(|| {
    windowed(
        r#"
local win = age(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now_ms())
return {win.R, win.T}
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
local rpm, rpd, tpm, tpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local est = tonumber(ARGV[5])
local now = now_ms()
local m = age(KEYS[1], 1000, 60, now)
local d = age(KEYS[2], 60000, 1440, now)
local wait = -1
local function need(limit, used, amount, k, w, n, f)
  if limit < 0 then return end
  if limit == 0 then wait = math.max(wait, n * w); return end
  if amount > limit then amount = limit end
  if used + amount > limit then
    wait = math.max(wait, wait_for(k, w, n, now, f, used + amount - limit))
  end
end
need(rpm, m.R, 1, m.k, 1000, 60, 'r')
need(rpd, d.R, 1, d.k, 60000, 1440, 'r')
need(tpm, m.T, est, m.k, 1000, 60, 't')
need(tpd, d.T, est, d.k, 60000, 1440, 't')
if wait >= 0 then return {0, wait} end
add(m, m.b, 1, est)
add(d, d.b, 1, est)
return {1, m.b, d.b}
"#,
    )
});

/// Adjusts a provider key's windows. KEYS: minute window, day window.
/// ARGV: minute bucket, day bucket (-1: the current ones), requests,
/// tokens (signed).
pub static PROVIDER_KEY_ADJUST: LazyLock<Script> = LazyLock::new(|| {
    windowed(
        r#"
local now = now_ms()
local m = age(KEYS[1], 1000, 60, now)
local d = age(KEYS[2], 60000, 1440, now)
local am, ad = tonumber(ARGV[1]), tonumber(ARGV[2])
if am < 0 then am = m.b end
if ad < 0 then ad = d.b end
local dr, dt = tonumber(ARGV[3]), tonumber(ARGV[4])
add(m, am, dr, dt)
add(d, ad, dr, dt)
return 1
"#,
    )
});

/// The helper the sliding-window limit scripts start with: `check(k, max,
/// window, member, now)` decides one request against the sorted set of
/// request times `k` and counts it when admitted; returns `{admitted,
/// remaining, reset ms}` as the local limiter does.
const SLIDING_LIB: &str = r#"
local function check(k, max, window, member, now)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window)
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
end

local now = now_ms()
"#;

fn sliding(body: &str) -> Script {
    Script::new(&format!("{NOW_LIB}{SLIDING_LIB}\n{body}"))
}

/// An identifier's (or client IP's) sliding window, a sorted set of
/// request times. `KEYS[1]`: the set. ARGV: max, window ms, a member unique
/// to this request, requests to add without a decision (the merge of
/// counts made while degraded; 0 for a decision).
/// Returns `{admitted, remaining, reset ms}` as the local limiter does.
pub static IDENTIFIER_CHECK: LazyLock<Script> = LazyLock::new(|| {
    sliding(
        r#"
local k = KEYS[1]
local max, window, member, merge = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if merge > 0 then
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window)
  for i = 1, merge do redis.call('ZADD', k, now, member .. ':' .. i) end
  redis.call('PEXPIRE', k, window)
  return {1, 0, window}
end
return check(k, max, window, member, now)
"#,
    )
});

/// A client's two limits in one round trip, in the order the guard applies
/// them: its IP's window, then its identifier's, which does not count a
/// request the first refused. KEYS: the IP's set, the identifier's set.
/// ARGV: the IP limit's max and window ms, the identifier limit's, a member
/// unique to this request. Returns the IP's `{admitted, remaining, reset
/// ms}` followed by the identifier's (`{0, 0, 0}` when the IP refused).
pub static CLIENT_LIMITS: LazyLock<Script> = LazyLock::new(|| {
    sliding(
        r#"
local member = ARGV[5]
local ip = check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), member, now)
if ip[1] == 0 then return {ip[1], ip[2], ip[3], 0, 0, 0} end
local id = check(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), member, now)
return {ip[1], ip[2], ip[3], id[1], id[2], id[3]}
"#,
    )
});

#[cfg(test)]
mod tests;
