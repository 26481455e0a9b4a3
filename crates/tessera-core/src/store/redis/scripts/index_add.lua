-- tessera user index: add or refresh a member, prune, keep the key's TTL, find victims. Single key.
-- KEYS[1] user:<id>:sessions (sorted set: member = session key suffix, score = an upper bound
--         of that session's expiry, ms since the epoch)
-- ARGV: deadline (see the prelude), member, bound_ms (score = now + bound_ms), max_sessions
-- (0 = no limit), leaving (the member a rotation replaces: neither counted nor chosen; '' = none)
-- Returns the members over the limit, least recently refreshed first (the caller ends them),
-- or {EXPIRED, now}.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local member, bound = ARGV[A_MEMBER], tonumber(ARGV[A_BOUND_MS])
local score = now + bound
-- GT: an existing member's bound only ever grows; a new member is added.
redis.call('ZADD', key, 'GT', score, member)
-- A member whose bound has passed is certainly expired: safe to drop, atomically, here.
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
local ttl = tonumber(top[2]) - now
-- A corrupt score (inf, nan, centuries away) must not break every login of the user.
if ttl ~= ttl or ttl > 315360000000 then ttl = bound end
ttl = math.floor(ttl)
local cur = redis.call('PTTL', key)
if cur < ttl then redis.call('PEXPIRE', key, ttl) end
local max = tonumber(ARGV[A_MAX_SESSIONS])
local leaving = ARGV[A_LEAVING]
local victims = {}
if max > 0 then
  local n = redis.call('ZCARD', key)
  if leaving ~= '' and redis.call('ZSCORE', key, leaving) then n = n - 1 end
  if n > max then
    for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      if #victims >= n - max then break end
      if m ~= member and m ~= leaving then victims[#victims + 1] = m end
    end
  end
end
return victims
