-- tessera field index: add or refresh a member before the write that gives its session the
-- value. Single key.
-- KEYS[1] [ns]index:<field>:<value> or the field's value list [ns]index:<field> (sorted sets:
--         score = an upper bound of the member's expiry, ms since the epoch)
-- ARGV: deadline (see the prelude), member, bound_ms (score = now + bound_ms)
-- Returns {1, now}: the caller's write must reach its server by now + half the prune guard
-- (its deadline says so), which is what lets a prune trust any add older than the guard; or
-- {EXPIRED, now}.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local bound = tonumber(ARGV[3])
-- GT: a bound only ever grows.
redis.call('ZADD', key, 'GT', now + bound, ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
local ttl = math.floor(tonumber(top[2]) - now)
if ttl ~= ttl or ttl > 315360000000 or ttl < bound then ttl = bound end
if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
return {1, now}
