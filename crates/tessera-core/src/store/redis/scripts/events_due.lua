-- tessera expiry sweep, step 1: the tracked sessions whose expiry may have passed. Two keys with
-- the events' hash tag: KEYS[1] the expiry set (see events.lua), KEYS[2] the sweep lease.
-- ARGV: deadline (see the prelude), instance, lease_ms (0 = sweep without the lease), limit
-- Returns {now, member, score, member, score...} (scores at most now, oldest first), or {now}
-- alone when another instance holds the lease (one instance sweeps at a time; its lease lapses
-- if it dies). A member's score is when it became due: the sweeper's lag is now minus the first.
local expiry, lease = KEYS[1], KEYS[2]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local lease_ms, instance = tonumber(ARGV[A_LEASE_MS]), ARGV[A_INSTANCE]
if lease_ms > 0 then
  local holder = redis.call('GET', lease)
  if holder and holder ~= instance then return {now} end
  redis.call('SET', lease, instance, 'PX', lease_ms)
end
local out = {now}
for _, v in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[A_LIMIT]))) do
  out[#out + 1] = v
end
return out
