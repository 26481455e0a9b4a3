-- tessera id rotation, step 1: freeze the old key and read it, atomically. Single key.
-- KEYS[1] the old session key; ARGV: deadline (see the prelude), new member, freeze_ms,
-- idle_ms, absolute_ms
-- Returns {GONE}, {MOVED} (another rotation of this session is under way), or
-- {DONE, token, hash} (frozen): from now until the rotation releases it (or freeze_ms pass), writes to
-- this key answer MOVED instead of landing where the copy would no longer see them, so no
-- write acknowledged here is lost by the rotation.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local freeze_ms, idle, abs = tonumber(ARGV[A_FREEZE_MS]), tonumber(ARGV[A_IDLE_MS]), tonumber(ARGV[A_ABSOLUTE_MS])
local h = redis.call('HGETALL', key)
if #h == 0 then return {GONE} end
local created_field, created, moving
for i = 1, #h, 2 do
  if h[i] == F_CREATED then created_field = h[i + 1]; created = tonumber(h[i + 1])
  elseif h[i] == F_MOVING then moving = h[i + 1] end
end
if is_tombstone(created_field, moving) then return {MOVED} end
-- Not a session (an 'ended' mark stays: see take.lua).
if created_field == nil then return {GONE} end
if not session_ttl(now, created or now, idle, abs) then
  redis.call('DEL', key)
  return {GONE}
end
if frozen(moving, now, freeze_ms) then return {MOVED} end
local token = moving_mark(now, ARGV[A_NEW_MEMBER])
redis.call('HSET', key, F_MOVING, token)
return {DONE, token, h}
