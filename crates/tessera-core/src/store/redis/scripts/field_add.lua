-- tessera field index: add or refresh a session's member in field-index keys, before the write
-- that gives the session the values (and, lazily, as the session lives on). Keys of one hash
-- slot: the caller groups them (one script per slot, one for all keys on a single server).
-- KEYS: [ns]index:<field>:<value> and the holders [ns]index:<field> (sorted sets: member = a
--       session's storage key, score = its deadline: the time of its last add here plus its
--       own session's bound, ms since the epoch)
-- ARGV: deadline (see the prelude), member, bound_ms (the member's bound: twice its session's
--       own idle timeout, at least twice the configured one)
-- Members whose deadline has passed are dropped, and each key lives until its latest deadline
-- (index_trim in the prelude).
-- Returns {DONE, now}: the caller's write must reach its server by now + half the prune guard
-- (its deadline says so), which is what lets a prune trust any add older than the guard; or
-- {EXPIRED, now}.
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local member, bound = ARGV[A_MEMBER], tonumber(ARGV[A_BOUND_MS])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + bound, member)
  index_trim(key, now)
end
return {DONE, now}
