-- tessera user index: add or refresh a member, keep the key's TTL, find victims. Single key.
-- KEYS[1] user:<id>:sessions (sorted set: member = session key suffix, score = an upper bound
--         of that session's expiry, ms since the epoch)
-- ARGV: deadline (see the prelude), member, bound_ms (score = now + bound_ms), max_sessions
-- (0 = no limit), leaving (the member a rotation replaces: neither counted nor chosen; '' = none)
-- Returns the members over the limit, least recently refreshed first (the caller ends them),
-- or {EXPIRED, now}.
--
-- The common cases cost ZADD and one expiry command, plus ZCARD when a member joins or with a
-- limit (a login: TIME ZADD ZCARD PEXPIRE; a touch's refresh: TIME ZADD PEXPIRE):
-- * The key's TTL. Invariant: the key lives at least until its highest score. Every score is
--   set here as now + bound_ms and only grows (ZADD GT); ZREM and pruning only remove. So if
--   the TTL covered every member before this call, max(TTL, bound_ms) covers them after it:
--   the highest score need not be read. PEXPIRE GT (Redis 7, Valkey) sets that max in one
--   command; Redis 6.2 reads PTTL first. A key this ZADD created (one member, just added) has
--   no TTL yet: it gets bound_ms. A key found without a TTL otherwise (not made here) gets
--   the full computation from its highest score (cover_all).
-- * Pruning (dropping members whose bound has passed: certainly expired) only when the count
--   can matter: past the limit (then prune and count again before choosing victims, so
--   expired members are never counted and never chosen) or, without a limit, past 64
--   members (a soft cap, this script's alone: the set stays bounded, never over 64 members
--   unless all of them are live, and one prune drops every expired member at once).
--   Nothing else needs them gone: readers (the device list, logout-all) read live bounds only
--   (ZRANGEBYSCORE above now), and the key expires after its highest bound anyway.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local member = ARGV[A_MEMBER]
local bound = math.max(1, math.floor(tonumber(ARGV[A_BOUND_MS])))
local max = tonumber(ARGV[A_MAX_SESSIONS])
local leaving = ARGV[A_LEAVING]
-- GT: an existing member's bound only ever grows; a new member is added (and counted in the reply).
local added = redis.call('ZADD', key, 'GT', now + bound, member)
-- The count, only where it can matter: a member joined (the set grew), or a limit to check
-- (a limit lowered since, or a failed eviction, may have left the user over it).
local n = 0
if added == 1 or max > 0 then n = redis.call('ZCARD', key) end

-- The TTL from the highest score, for a key whose TTL may not cover its members.
local function cover_all()
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local ttl = tonumber(top[2]) - now
  -- A corrupt score (inf, centuries away) must not break every login of the user.
  if ttl ~= ttl or ttl > 315360000000 or ttl < bound then ttl = bound end
  redis.call('PEXPIRE', key, math.floor(ttl))
end
if added == 1 and n == 1 then
  -- This ZADD created the key (a sorted set is never empty): our member is all it holds.
  redis.call('PEXPIRE', key, bound)
elseif (tonumber(redis.REDIS_VERSION_NUM) or 0) >= 0x070000 then
  -- 0: the TTL already reaches as far, or the key has none (treated as infinite by GT).
  if redis.call('PEXPIRE', key, bound, 'GT') == 0 and redis.call('PTTL', key) == -1 then cover_all() end
else
  local cur = redis.call('PTTL', key)
  if cur == -1 then cover_all() elseif cur < bound then redis.call('PEXPIRE', key, bound) end
end

if n > ((max > 0) and max or 64) then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
  n = redis.call('ZCARD', key)
end
local victims = {}
if max > 0 and n > max then
  if leaving ~= '' and redis.call('ZSCORE', key, leaving) then n = n - 1 end
  if n > max then
    for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      if #victims >= n - max then break end
      if m ~= member and m ~= leaving then victims[#victims + 1] = m end
    end
  end
end
return victims
