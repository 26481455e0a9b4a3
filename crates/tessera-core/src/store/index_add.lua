-- tessera user index: add or refresh a member, prune, keep the key's TTL, find victims. Single key.
-- KEYS[1] user:<id>:sessions (sorted set: member = session key suffix, score = an upper bound
--         of that session's expiry, ms since the epoch)
-- ARGV: member, bound_ms (score = now + bound_ms), max_sessions (0 = no limit)
-- Returns the members over the limit, least recently refreshed first (the caller ends them).
local key = KEYS[1]
local now = now_ms()
local score = now + tonumber(ARGV[2])
-- GT: an existing member's bound only ever grows; a new member is added.
redis.call('ZADD', key, 'GT', score, ARGV[1])
-- A member whose bound has passed is certainly expired: safe to drop, atomically, here.
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
local ttl = tonumber(top[2]) - now
local cur = redis.call('PTTL', key)
if cur < ttl then redis.call('PEXPIRE', key, ttl) end
local max = tonumber(ARGV[3])
local victims = {}
if max > 0 then
  local n = redis.call('ZCARD', key)
  if n > max then
    local oldest = redis.call('ZRANGE', key, 0, n - max)
    for _, m in ipairs(oldest) do
      if m ~= ARGV[1] and #victims < n - max then victims[#victims + 1] = m end
    end
  end
end
return victims
