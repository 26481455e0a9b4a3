-- tessera field index: remove members that no longer belong, unless recently added. Keys of
-- one hash slot (the caller groups them).
-- KEYS: [ns]index:<field>:<value> and/or holders [ns]index:<field>
-- ARGV: deadline (see the prelude), max_score, max_bound_ms, then members
-- A member is removed only if its score (its last add) is at most max_score, i.e. older than
-- the guard at the caller's check: a writer adds the member before it writes the value, so a
-- member added moments ago may belong to a write still on its way, which the caller's check of
-- the session could not have seen yet. Members last added before now - max_bound_ms go too.
-- Returns how many were removed, or {EXPIRED, now}.
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local limit = tonumber(ARGV[2])
local oldest = now - tonumber(ARGV[3])
local n = 0
for _, key in ipairs(KEYS) do
  for i = 4, #ARGV do
    local s = redis.call('ZSCORE', key, ARGV[i])
    if s and tonumber(s) <= limit then n = n + redis.call('ZREM', key, ARGV[i]) end
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. oldest)
end
return n
