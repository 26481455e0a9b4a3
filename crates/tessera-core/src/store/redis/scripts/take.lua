-- tessera: end a session and say what its indexed fields held. Single key.
-- KEYS[1] session key; ARGV: deadline (see the prelude), then the indexed fields' names
-- Returns {0} when no session was there, else {1, value or false, ...} in the order of the
-- names (the caller removes the session from those values' field indexes), or {EXPIRED, now}.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
if redis.call('HEXISTS', key, F_CREATED) == 0 then
  -- An 'ended' mark (see end_if.lua) stays: it stops a login still on its way.
  if redis.call('HGET', key, F_MOVING) ~= 'ended' then redis.call('DEL', key) end
  return {0}
end
local out = {1}
if #ARGV > 1 then
  local vals = redis.call('HMGET', key, unpack(ARGV, 2))
  for i = 1, #vals do out[#out + 1] = vals[i] end
end
redis.call('DEL', key)
return out
