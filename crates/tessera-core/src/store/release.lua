-- tessera id rotation, last step: retire the old key, or thaw it if the rotation failed.
-- Single key. KEYS[1] the old session key; ARGV: token (from freeze), action ('retire' | 'thaw')
-- Returns DONE; GONE when the key no longer exists (a logout-all or revoke won the race: the
-- caller deletes its copy); TAKEN when the freeze was broken (it went stale and a write landed,
-- or another rotation took over): retiring now would lose that write, so the caller undoes.
local DONE, GONE, TAKEN = 1, 0, -3
local key = KEYS[1]
local moving = redis.call('HGET', key, F_MOVING)
if not moving then
  if redis.call('EXISTS', key) == 0 then return GONE end
  return TAKEN
end
if moving ~= ARGV[1] then return TAKEN end
if ARGV[2] == 'retire' then
  redis.call('DEL', key)
else
  redis.call('HDEL', key, F_MOVING)
end
return DONE
