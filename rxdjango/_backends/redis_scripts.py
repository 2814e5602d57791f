"""The Lua scripts of the Redis backend: each runs atomically on the Redis server.

Every script touches keys of one anchor, one channel or one user only (all named in
``KEYS``), so each runs on one node of a Redis Cluster too.
"""

__all__ = [
    "ADMIT_SCRIPT",
    "BEGIN_SCRIPT",
    "CLOCK_SCRIPT",
    "EPOCH_SCRIPT",
    "HISTORY_SCRIPT",
    "IDLENESS_SCRIPT",
    "LEASE_SCRIPT",
    "RELEASE_SCRIPT",
]

#: Strictly increasing server time shared by every process. KEYS: clock.
CLOCK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if now <= last then now = last + 0.000001 end
local text = string.format('%.6f', now)
redis.call('SET', KEYS[1], text)
return text
"""

#: The epoch of this Redis run. KEYS: epoch. ARGV: run id, candidate, known epoch
#: to replace ('' to keep any epoch minted for this run). Returns {epoch, minted}.
EPOCH_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local prefix = ARGV[1] .. ':'
if current and string.sub(current, 1, string.len(prefix)) == prefix then
  if ARGV[3] == '' or current ~= ARGV[3] then return {current, 0} end
end
local fresh = prefix .. ARGV[2]
redis.call('SET', KEYS[1], fresh)
return {fresh, 1}
"""

#: Decide who loads a cold anchor. KEYS: meta. ARGV: epoch, token, lease ms, root, layout.
#: Returns {'hot'}, {'wait', ms}, {'stale'} (hot in an old epoch, or written by a
#: version of the library with another key layout) or {'load'}.
BEGIN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('HMGET', KEYS[1], 'status', 'epoch', 'lease_until', 'layout')
if m[2] == ARGV[1] then
  if m[1] == 'hot' and m[4] == ARGV[5] then return {'hot'} end
  if m[1] == 'hot' then return {'stale'} end
  if m[1] == 'heating' and tonumber(m[3]) > now then return {'wait', tonumber(m[3]) - now} end
elseif m[1] == 'hot' then
  return {'stale'}
end
redis.call('HSET', KEYS[1], 'status', 'heating', 'epoch', ARGV[1], 'token', ARGV[2],
  'lease_until', now + tonumber(ARGV[3]), 'root', ARGV[4])
return {'load'}
"""

#: Count a connection of a user unless the user has the limit. KEYS: conns. ARGV: member
#: (``<process>:<connection>``), limit ('' for none), key ttl ms, then the ids of the
#: live processes: connections of any other process (one that died) stop counting here.
#: Returns 1 if counted.
ADMIT_SCRIPT = """
local live = {}
for i = 4, #ARGV do live[ARGV[i]] = true end
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not live[string.match(member, '^[^:]*')] then redis.call('SREM', KEYS[1], member) end
end
if ARGV[2] ~= '' and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

#: Note when the last watcher of this process left. KEYS: meta, watch. ARGV: process, now ms.
RELEASE_SCRIPT = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'last_seen', ARGV[2]) end
return redis.call('ZCOUNT', KEYS[2], ARGV[2], '+inf')
"""

#: Appends history entries and trims them, remembering the newest forgotten tstamp
#: (catch-up is proven complete only after it). KEYS: hist, meta. ARGV: limit,
#: applied tstamp, entries...
HISTORY_SCRIPT = """
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
local n = redis.call('LLEN', KEYS[1])
local limit = tonumber(ARGV[1])
if n > limit then
  local cut = redis.call('LINDEX', KEYS[1], n - limit - 1)
  redis.call('LTRIM', KEYS[1], n - limit, -1)
  redis.call('HSET', KEYS[2], 'complete_after', string.match(cut, '^([^|]+)'))
end
redis.call('HSET', KEYS[2], 'applied', ARGV[2])
return n
"""

#: Take or renew a lease. KEYS: lease. ARGV: holder, ttl ms. Returns 1 if held.
LEASE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: Whether an anchor may be dropped: 'keep', 'expired' (idle past its TTL, or cached in
#: an older epoch) or 'debris' (no data, or a load whose lease ran out). KEYS: meta,
#: watch. ARGV: epoch, now ms, ttl ms (0: droppable as soon as no lease is live, whatever
#: another process's clock wrote as ``last_seen``), claim ('1': mark a droppable anchor 'expiring'
#: in the same step, so a client served meanwhile, whose lease lands first, keeps it,
#: and one served after finds it no longer hot).
IDLENESS_SCRIPT = """
local m = redis.call('HMGET', KEYS[1], 'status', 'epoch', 'last_seen', 'lease_until')
local now = tonumber(ARGV[2])
local verdict
if not m[1] then
  return 'debris'
elseif m[1] == 'heating' then
  if tonumber(m[4] or '0') > now then return 'keep' end
  verdict = 'debris'
elseif m[2] ~= ARGV[1] then
  verdict = 'expired'
else
  local last = tonumber(m[3] or '0')
  local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if newest[2] then
    if tonumber(newest[2]) > now then return 'keep' end
    last = math.max(last, tonumber(newest[2]))
  end
  local ttl = tonumber(ARGV[3])
  if ttl > 0 and now - last < ttl then return 'keep' end
  verdict = 'expired'
end
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'status', 'expiring') end
return verdict
"""
