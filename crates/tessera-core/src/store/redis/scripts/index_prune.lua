-- tessera field index: remove members that no longer belong, unless recently added. Keys of
-- one hash slot (the caller groups them).
-- KEYS: [ns]index:<field>:<value> and/or holders [ns]index:<field>
-- ARGV: deadline (see the prelude), max_score, then members
-- A member is removed only if its score (its deadline) is at most max_score: the caller's
-- limit on the last add (older than the guard at its check: a writer adds the member before it
-- writes the value, so a member added moments ago may belong to a write still on its way) plus
-- the shortest bound any member has. Members whose deadline has passed go too (index_trim).
-- Returns how many were removed, or {EXPIRED, now}.
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local limit = tonumber(ARGV[A_MAX_SCORE])
local n = 0
for _, key in ipairs(KEYS) do
  for i = A_REST, #ARGV do
    local s = redis.call('ZSCORE', key, ARGV[i])
    if s and tonumber(s) <= limit then n = n + redis.call('ZREM', key, ARGV[i]) end
  end
  index_trim(key, now)
end
return n
