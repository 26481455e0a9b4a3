-- tessera: end a session found by a field query, only if it still matches. Single key.
-- KEYS[1] session key; ARGV: deadline (see the prelude), field, expected value (the stored
-- bytes the query saw), tombstone_ms, any ('1': the query saw no session here; end whatever
-- session is here now, a create that was on its way)
-- Returns {DONE} (deleted), {CHANGED} (the field no longer holds that value: left alone, as a
-- write that landed after the query), {GONE} (nothing at the key: a short 'ended' tombstone
-- is left there, so a create still on its way for this id (a login or a first save whose index
-- add the caller saw) finds it and fails instead of bringing the session back after the
-- action), {ENDED_MARK} (no session, but a key already there, such as an 'ended' mark: left as
-- it is), {MOVED, successor} (a login moved the session to a new id: the caller follows it),
-- or {EXPIRED, now}.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local meta = redis.call('HMGET', key, F_CREATED, ARGV[A_FIELD], F_MOVING)
if not meta[1] then
  if is_retired(meta[3]) then return {MOVED, mark_successor(meta[3])} end
  if redis.call('EXISTS', key) == 1 then return {ENDED_MARK} end
  redis.call('HSET', key, F_MOVING, MARK_ENDED)
  redis.call('PEXPIRE', key, tonumber(ARGV[A_TOMBSTONE_MS]))
  return {GONE}
end
if ARGV[A_ANY] ~= '1' and meta[2] ~= ARGV[A_EXPECTED] then return {CHANGED} end
redis.call('DEL', key)
-- The 'ended' mark also tells the expiry sweeper this session was ended, not expired.
redis.call('HSET', key, F_MOVING, MARK_ENDED)
redis.call('PEXPIRE', key, tonumber(ARGV[A_TOMBSTONE_MS]))
return {DONE}
