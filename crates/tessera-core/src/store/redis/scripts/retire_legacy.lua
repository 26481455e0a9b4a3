-- tessera take-over of a session another store wrote, last step: its old key is deleted only if
-- it still holds the value the take-over read (and checked to be a record of that store), after
-- tessera's copy was written. Compare-and-delete in one step, refused past its deadline. Single
-- key.
-- KEYS[1] the other store's key; ARGV: deadline (see the prelude), the value read, grace (ms:
-- 0 deletes it now; more leaves it that long at most, for the requests of the same browser
-- sent before the first one's answer)
-- Returns {DONE} (deleted, or left for the grace), {GONE} (not there any more, or holding
-- another value: nothing done), or {EXPIRED, now} (past its deadline: nothing done).
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
-- pcall: a key of another type is not the value read (GET would raise WRONGTYPE).
if redis.pcall('GET', key) ~= ARGV[A_EXPECTED] then return {GONE} end
local grace = tonumber(ARGV[A_GRACE_MS]) or 0
if grace > 0 then
  -- Never longer than it had left.
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or ttl > grace then redis.call('PEXPIRE', key, grace) end
else
  redis.call('DEL', key)
end
return {DONE}
