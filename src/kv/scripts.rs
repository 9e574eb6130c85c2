//! Lua scripts run atomically inside Redis, hashed once (`redis::Script` computes the SHA1
//! the EVALSHA calls use when it is built).

use std::sync::LazyLock;

/// The admission script, ready to invoke.
pub static ADMIT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADMIT));
/// The lease renewal script, ready to invoke.
pub static RENEW_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RENEW));
/// The usage recording script, ready to invoke.
pub static RECORD_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RECORD));
/// The common case of `RECORD`, ready to invoke.
pub static RECORD_NEW_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(RECORD_NEW));
/// The ledger announcement script, ready to invoke.
pub static ANNOUNCE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(ANNOUNCE));
/// The lock renewal script, ready to invoke.
pub static RENEW_LOCK_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(RENEW_LOCK));
/// The lock release script, ready to invoke.
pub static RELEASE_LOCK_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(RELEASE_LOCK));

/// The fenced rebuild writes, ready to invoke.
pub static FENCED_COUNTERS_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(FENCED_COUNTERS));
/// The fenced epoch installation, ready to invoke.
pub static FENCED_EPOCH_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(FENCED_EPOCH));

/// Admission: drop expired leases, check the concurrency cap and the rate window, count the
/// request and take the lease, all or nothing. A request without a concurrency cap takes no
/// lease (nothing would count it).
/// KEYS[1] lease set, KEYS[2] window hash (unused when ARGV[5] ~= '1'), KEYS[3] a sticky
/// session entry to read in the same round trip, KEYS[4] the ledger epoch, KEYS[5..] the
/// counter sets of the cost limits.
/// ARGV: now_ms, lease_id, lease_ttl_ms, cap, has_window, max_requests, max_tokens,
/// max_cost, window_ttl_s, resets_in_s, sticky (-1: none to read, 0: read it, n > 0: read
/// it and let it live n ms more), then one max cost (micro-dollars) per KEYS[5..].
/// The last ARGV is the epoch the caller has caught up with ('' when it checks no limit
/// counters).
/// Returns {code, retry_after, sticky value or false}: 0 granted, 1 concurrency,
/// 2 requests, 3 tokens, 4 window cost, 5 + i the i-th cost limit (0-based), -1 when the
/// ledger epoch is missing (the counters are gone: nothing is taken or counted), -2 when
/// another epoch is in force (the caller's events may be missing from its counters).
pub const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
local renew = tonumber(ARGV[11])
local sticky = false
if renew > 0 then
  sticky = redis.call('GETEX', KEYS[3], 'PX', renew)
elseif renew == 0 then
  sticky = redis.call('GET', KEYS[3])
end
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  return {-1, 0, sticky}
end
if ARGV[#ARGV] ~= '' and epoch ~= ARGV[#ARGV] then
  return {-2, 0, sticky}
end
local cap = tonumber(ARGV[4])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= cap then
    return {1, 0, sticky}
  end
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
for i = 5, #KEYS do
  local max = tonumber(ARGV[7 + i])
  if max > 0 and (tonumber(redis.call('HGET', KEYS[i], 'cost')) or 0) >= max then
    return {5 + i - 5, 0, sticky}
  end
end
if ARGV[5] == '1' then
  redis.call('HINCRBY', KEYS[2], 'requests', 1)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[9]))
end
if cap > 0 then
  local ttl = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
end
return {0, 0, sticky}
"#;

/// One batch of rebuilt counter sets, written only while the caller's token holds the
/// rebuild lock and no epoch exists yet: a rebuilder that stalled past its lock (and was
/// replaced) cannot overwrite the counters of the epoch that replaced it.
/// KEYS[1] lock, KEYS[2] ledger epoch, KEYS[3..] counter sets.
/// ARGV: token, then per counter set: ttl ms (-1 = none), field count, field/value pairs.
/// Returns 1 written, 0 fenced out (nothing written).
pub const FENCED_COUNTERS: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local a = 2
for i = 3, #KEYS do
  local ttl = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 1])
  redis.call('DEL', KEYS[i])
  for f = 0, n - 1 do
    redis.call('HSET', KEYS[i], ARGV[a + 2 + 2 * f], ARGV[a + 3 + 2 * f])
  end
  if ttl > 0 and n > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  a = a + 2 + 2 * n
end
return 1
"#;

/// Installs a rebuilt epoch under the same fence as its counters.
/// KEYS[1] lock, KEYS[2] ledger epoch, KEYS[3] the epoch's boundaries hash.
/// ARGV: token, epoch id, then instance/boundary pairs.
/// Returns 1 installed, 0 fenced out.
pub const FENCED_EPOCH: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('DEL', KEYS[3])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"#;

/// Extends a lease only while it is still held. KEYS[1] lease set; ARGV: lease_id, now_ms, ttl_ms.
pub const RENEW: &str = r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"#;

/// Extends a lock only if the caller's token still holds it. KEYS[1] lock; ARGV: token, ttl_ms.
pub const RENEW_LOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 0
"#;

/// Deletes a lock only if the caller's token still holds it. KEYS[1] lock; ARGV[1] token.
pub const RELEASE_LOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Records journal records' usage exactly once, several in one call: for each, releases
/// the request's lease, then, if the ledger epoch is the record's and its bit is not set
/// yet, sets the bit, adds the counters and (redis mode) appends the event to the capped
/// archive lists. The counters of the records applied are summed per set and written
/// once, and their events pushed with one `LPUSH` per list (a script's Redis calls are its
/// cost).
/// KEYS[1] ledger epoch; then per record: its applied bitmap, its lease set, its n counter
/// sets, then (when archiving) the key's record list and the global list.
/// ARGV[1] the number of records; then per record: epoch id, bit, lease id ('' for none),
/// bitmap ttl s, n, archiving ('1' or '0'), then per counter set its ttl (-1 = none) and six
/// deltas (requests, input, output, cacheCreate, cacheRead, cost), then (when archiving)
/// the event JSON, per-key cap, global cap.
/// Returns one code per record: 0 applied, 1 already applied, -1 epoch missing, -2 another
/// epoch.
pub const RECORD: &str = r#"
local epoch = redis.call('GET', KEYS[1])
local fields = {'requests', 'input', 'output', 'cacheCreate', 'cacheRead', 'cost'}
local out = {}
local sums, order = {}, {}
local pushes, push_order, caps = {}, {}, {}
local k, a = 2, 2
for r = 1, tonumber(ARGV[1]) do
  local applied, leases = KEYS[k], KEYS[k + 1]
  local bit, lease, n = tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 4])
  local archiving = ARGV[a + 5] == '1'
  if lease ~= '' then
    redis.call('ZREM', leases, lease)
  end
  local code = 0
  if not epoch then
    code = -1
  elseif epoch ~= ARGV[a] then
    code = -2
  elseif redis.call('SETBIT', applied, bit, 1) == 1 then
    code = 1
  elseif bit % 1024 == 0 then
    -- The bitmap's lifetime is (re)set at every 1024th record, not on each.
    redis.call('EXPIRE', applied, tonumber(ARGV[a + 3]))
  end
  k, a = k + 2, a + 6
  for i = 1, n do
    if code == 0 then
      -- Summed over the batch first: one HINCRBY per set and field, not per record.
      local key = KEYS[k]
      local sum = sums[key]
      if not sum then
        sum = {0, 0, 0, 0, 0, 0}
        sums[key] = sum
        order[#order + 1] = key
      end
      sum.ttl = tonumber(ARGV[a])
      for f = 1, 6 do
        sum[f] = sum[f] + tonumber(ARGV[a + f])
      end
    end
    k, a = k + 1, a + 7
  end
  if archiving then
    if code == 0 then
      -- Pushed after the loop, one LPUSH and LTRIM per list (in record order, as one by one).
      for j, list in ipairs({KEYS[k], KEYS[k + 1]}) do
        local pending = pushes[list]
        if not pending then
          pending = {}
          pushes[list] = pending
          push_order[#push_order + 1] = list
        end
        pending[#pending + 1] = ARGV[a]
        caps[list] = tonumber(ARGV[a + j])
      end
    end
    k, a = k + 2, a + 3
  end
  out[r] = code
end
for _, key in ipairs(order) do
  local sum = sums[key]
  -- A field that held nothing before: the set may be new and needs its lifetime.
  local fresh = false
  for f = 1, 6 do
    local v = sum[f]
    if v ~= 0 and redis.call('HINCRBY', key, fields[f], v) == v then fresh = true end
  end
  if sum.ttl > 0 and fresh then redis.call('EXPIRE', key, sum.ttl) end
end
for _, list in ipairs(push_order) do
  redis.call('LPUSH', list, unpack(pushes[list]))
  redis.call('LTRIM', list, 0, caps[list] - 1)
end
return out
"#;

/// `RECORD` for its common case: records of one epoch, none applied before. What Redis
/// spends on a script call grows with its arguments (each is parsed, allocated and handed
/// to Lua: about 0.3 µs), and `RECORD` takes 24 per record of the hot path. Here every key
/// is named once and referred to by index, and the counter deltas come summed per set by
/// the caller, so a record costs three arguments. Nothing is written unless every record
/// is new: on finding one applied before, the script clears the bits it set and answers 1,
/// and the caller sends the batch through `RECORD`.
/// KEYS[1] ledger epoch, then every other key once (bitmaps, lease sets, counter sets,
/// archive lists).
/// ARGV: epoch id, bitmap ttl s, the number of records; per record: its bitmap's key index,
/// its bit, its lease set's key index (0: no lease) and, with one, the lease id; the number
/// of counter sets; per set: key index, ttl s (-1 = none), six summed deltas (requests,
/// input, output, cacheCreate, cacheRead, cost); the number of archive lists (redis mode);
/// per list: key index, cap, the number of events, the events oldest first.
/// Returns 0 applied, 1 a record was applied before (nothing changed), -1 epoch missing,
/// -2 another epoch (leases released, nothing counted).
pub const RECORD_NEW: &str = r#"
local epoch = redis.call('GET', KEYS[1])
local current = epoch and epoch == ARGV[1]
local records = tonumber(ARGV[3])
local function next_record(a)
  if tonumber(ARGV[a + 2]) > 0 then return a + 4 end
  return a + 3
end
local a = 4
if current then
  for r = 1, records do
    if redis.call('SETBIT', KEYS[tonumber(ARGV[a])], tonumber(ARGV[a + 1]), 1) == 1 then
      -- Each earlier record of this call set a bit that was clear: clear them again.
      local b = 4
      for _ = 1, r - 1 do
        redis.call('SETBIT', KEYS[tonumber(ARGV[b])], tonumber(ARGV[b + 1]), 0)
        b = next_record(b)
      end
      return 1
    end
    a = next_record(a)
  end
end
a = 4
for _ = 1, records do
  local lease = tonumber(ARGV[a + 2])
  if lease > 0 then redis.call('ZREM', KEYS[lease], ARGV[a + 3]) end
  -- The bitmap's lifetime is (re)set at every 1024th record, not on each.
  if current and tonumber(ARGV[a + 1]) % 1024 == 0 then
    redis.call('EXPIRE', KEYS[tonumber(ARGV[a])], tonumber(ARGV[2]))
  end
  a = next_record(a)
end
if not epoch then return -1 end
if not current then return -2 end
local fields = {'requests', 'input', 'output', 'cacheCreate', 'cacheRead', 'cost'}
local sets = tonumber(ARGV[a])
a = a + 1
for _ = 1, sets do
  local key, ttl = KEYS[tonumber(ARGV[a])], tonumber(ARGV[a + 1])
  -- A field that held nothing before: the set may be new and needs its lifetime.
  local fresh = false
  for f = 1, 6 do
    local v = tonumber(ARGV[a + 1 + f])
    if v ~= 0 and redis.call('HINCRBY', key, fields[f], v) == v then fresh = true end
  end
  if ttl > 0 and fresh then redis.call('EXPIRE', key, ttl) end
  a = a + 8
end
local lists = tonumber(ARGV[a])
a = a + 1
for _ = 1, lists do
  local key, cap, events = KEYS[tonumber(ARGV[a])], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  redis.call('LPUSH', key, unpack(ARGV, a + 3, a + 2 + events))
  redis.call('LTRIM', key, 0, cap - 1)
  a = a + 3 + events
end
return 0
"#;

/// An instance says which ledger epoch it has caught up with ('' for none) and learns the
/// epoch in force and which live instances have not caught up with it yet.
/// KEYS[1] ledger epoch, KEYS[2] the instances hash (instance -> "epoch|ms").
/// ARGV: instance id, its epoch, now_ms, live_ms (an entry newer than now - live_ms is a
/// live instance), forget_ms (older entries are deleted).
/// Returns {epoch in force or false, number of live instances whose epoch differs}.
pub const ANNOUNCE: &str = r#"
local now = tonumber(ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
local epoch = redis.call('GET', KEYS[1])
local behind = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local sep = string.find(all[i + 1], '|', 1, true)
  local theirs = string.sub(all[i + 1], 1, sep - 1)
  local at = tonumber(string.sub(all[i + 1], sep + 1)) or 0
  if at < now - tonumber(ARGV[5]) then
    redis.call('HDEL', KEYS[2], all[i])
  elseif at >= now - tonumber(ARGV[4]) and theirs ~= (epoch or '') then
    behind = behind + 1
  end
end
return {epoch or false, behind}
"#;
