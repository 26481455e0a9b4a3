-- tessera id rotation, last step: retire the old key, or thaw it if the rotation failed.
-- Single key. KEYS[1] the old session key; ARGV: deadline (see the prelude), token (from
-- freeze), action ('retire' | 'thaw'), tombstone_ms
-- Retiring replaces the old hash with a tombstone (F_MOVING = 'retired <token>', expiring after
-- tombstone_ms): requests still carrying the old cookie then see "moved" rather than "gone".
-- Returns {DONE}; {RETIRED} when the key was already retired with this token (a retire whose
-- answer was lost: the rotation did complete); {GONE} when the key no longer exists (a logout-all or revoke won the race: the
-- caller deletes its copy); {TAKEN} when the freeze was broken (it went stale and a write landed,
-- or another rotation took over): retiring now would lose that write, so the caller undoes;
-- {EXPIRED, now}.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local moving = redis.call('HGET', key, F_MOVING)
if not moving then
  if redis.call('EXISTS', key) == 0 then return {GONE} end
  return {TAKEN}
end
local token = ARGV[A_TOKEN]
if moving == retired_mark(token) then return {RETIRED} end
if moving ~= token then return {TAKEN} end
if ARGV[A_ACTION] == 'retire' then
  redis.call('DEL', key)
  redis.call('HSET', key, F_MOVING, retired_mark(token))
  redis.call('PEXPIRE', key, tonumber(ARGV[A_TOMBSTONE_MS]))
else
  redis.call('HDEL', key, F_MOVING)
end
return {DONE}
