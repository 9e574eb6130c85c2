//! Lua scripts run atomically inside Redis, hashed once (`redis::Script` computes the SHA1
//! the EVALSHA calls use when it is built).

use std::sync::LazyLock;

/// The admission script, ready to invoke.
pub static ADMIT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADMIT));
/// The lease renewal script, ready to invoke.
pub static RENEW_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RENEW));
/// The lock release script, ready to invoke.
pub static RELEASE_LOCK_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(RELEASE_LOCK));

/// Admission: drop expired leases, check the concurrency cap and the rate window, count the
/// request and take the lease, all or nothing.
/// KEYS[1] lease set, KEYS[2] window hash (unused when ARGV[5] ~= '1'), KEYS[3] a sticky
/// session entry to read in the same round trip, KEYS[4..] the counter sets of the cost
/// limits.
/// ARGV: now_ms, lease_id, lease_ttl_ms, cap, has_window, max_requests, max_tokens,
/// max_cost, window_ttl_s, resets_in_s, then one max cost (micro-dollars) per KEYS[4..].
/// Returns {code, retry_after, sticky value or false}: 0 granted, 1 concurrency,
/// 2 requests, 3 tokens, 4 window cost, 5 + i the i-th cost limit (0-based).
pub const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
local sticky = redis.call('GET', KEYS[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[4])
if cap > 0 and redis.call('ZCARD', KEYS[1]) >= cap then
  return {1, 0, sticky}
end
if ARGV[5] == '1' then
  local v = redis.call('HMGET', KEYS[2], 'requests', 'input', 'output', 'cacheCreate', 'cacheRead', 'cost')
  local requests = tonumber(v[1]) or 0
  local tokens = (tonumber(v[2]) or 0) + (tonumber(v[3]) or 0) + (tonumber(v[4]) or 0) + (tonumber(v[5]) or 0)
  local cost = tonumber(v[6]) or 0
  local resets = tonumber(ARGV[10])
  if tonumber(ARGV[6]) > 0 and requests >= tonumber(ARGV[6]) then return {2, resets, sticky} end
  if tonumber(ARGV[7]) > 0 and tokens >= tonumber(ARGV[7]) then return {3, resets, sticky} end
  if tonumber(ARGV[8]) > 0 and cost >= tonumber(ARGV[8]) then return {4, resets, sticky} end
end
for i = 4, #KEYS do
  local max = tonumber(ARGV[7 + i])
  if max > 0 and (tonumber(redis.call('HGET', KEYS[i], 'cost')) or 0) >= max then
    return {5 + i - 4, 0, sticky}
  end
end
if ARGV[5] == '1' then
  redis.call('HINCRBY', KEYS[2], 'requests', 1)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[9]))
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return {0, 0, sticky}
"#;

/// Extends a lease only while it is still held. KEYS[1] lease set; ARGV: lease_id, now_ms, ttl_ms.
pub const RENEW: &str = r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"#;

/// Deletes a lock only if the caller's token still holds it. KEYS[1] lock; ARGV[1] token.
pub const RELEASE_LOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;
