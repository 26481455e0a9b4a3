-- tessera: end a session and say what its indexed fields held. Single key.
-- KEYS[1] session key; ARGV: deadline (see the prelude), mark_ms, then the indexed fields' names
-- With mark_ms > 0 (lifecycle events on), the ended session leaves an 'ended' mark for that
-- long: the expiry sweeper then knows it was ended by a request (which publishes its end), not
-- expired.
-- Returns {GONE} when no session was there, else {DONE, value or false, ...} in the order of the
-- names (the caller removes the session from those values' field indexes), or {EXPIRED, now}.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
if redis.call('HEXISTS', key, F_CREATED) == 0 then
  -- An 'ended' mark (see end_if.lua) stays: it stops a login still on its way. So does a
  -- retired id's tombstone (see release.lua): its session lives on under the new id, and the
  -- caller, seeing it with end_if.lua, must not take it for an expiry.
  local moving = redis.call('HGET', key, F_MOVING)
  if not is_ended(moving) and not is_retired(moving) then redis.call('DEL', key) end
  return {GONE}
end
local out = {DONE}
if #ARGV >= A_REST then
  local vals = redis.call('HMGET', key, unpack(ARGV, A_REST))
  for i = 1, #vals do out[#out + 1] = vals[i] end
end
redis.call('DEL', key)
local mark_ms = tonumber(ARGV[A_MARK_MS])
if mark_ms > 0 then
  redis.call('HSET', key, F_MOVING, MARK_ENDED)
  redis.call('PEXPIRE', key, mark_ms)
end
return out
