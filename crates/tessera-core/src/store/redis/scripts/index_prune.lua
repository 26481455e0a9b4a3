-- tessera field index: remove members that no longer belong, unless recently added. Single key.
-- KEYS[1] [ns]index:<field>:<value> (or the field's value list [ns]index:<field>)
-- ARGV: deadline (see the prelude), keep_after_ms, then members
-- A member is removed only if its score is at most now + keep_after_ms, i.e. its last add is
-- older than the guard (score = add time + bound): a writer adds the member before it writes
-- the value, so a member added moments ago may belong to a write still on its way, which the
-- caller's check of the session could not have seen yet. Members whose bound passed go too.
-- Returns how many were removed, or {EXPIRED, now}.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local limit = tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do
  local s = redis.call('ZSCORE', key, ARGV[i])
  if s and tonumber(s) <= limit then n = n + redis.call('ZREM', key, ARGV[i]) end
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
return n
