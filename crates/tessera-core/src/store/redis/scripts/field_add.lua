-- tessera field index: add or refresh a session's member in field-index keys, before the write
-- that gives the session the values (and, lazily, as the session lives on). Keys of one hash
-- slot: the caller groups them (one script per slot, one for all keys on a single server).
-- KEYS: [ns]index:<field>:<value> and the holders [ns]index:<field> (sorted sets: member = a
--       session's storage key, score = its last add here, ms since the epoch)
-- ARGV: deadline (see the prelude), member, bound_ms (the key lives at least this long: the
--       session's own bound, twice its idle timeout), max_bound_ms (the longest any session's
--       entries live: members last added before now - max_bound_ms are dropped)
-- Returns {1, now}: the caller's write must reach its server by now + half the prune guard
-- (its deadline says so), which is what lets a prune trust any add older than the guard; or
-- {EXPIRED, now}.
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local member, bound = ARGV[2], tonumber(ARGV[3])
local oldest = now - tonumber(ARGV[4])
for _, key in ipairs(KEYS) do
  -- Score = this add's time (a member's score is the time of its last add).
  redis.call('ZADD', key, now, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. oldest)
  if redis.call('PTTL', key) < bound then redis.call('PEXPIRE', key, bound) end
end
return {1, now}
