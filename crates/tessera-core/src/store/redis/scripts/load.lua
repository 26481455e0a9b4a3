-- tessera load: HGETALL plus the throttled TTL refresh, in one round trip. Single key.
-- KEYS[1] session key; ARGV: idle_ms (a session's own expiry, F_OWN_EXPIRY, takes its place),
-- touch_ms, absolute_ms (0 = none), longest_ms (the longest own expiry the configuration allows)
-- Returns {GONE} when there is no live session, {MOVED} for a key retired by a login's id
-- rotation moments ago (see release.lua), else {DONE, hash} (refreshed), {FRESH, hash, age_ms}
-- (age_ms: how long ago, by the server clock, the last refresh was), or {TOUCH_REFUSED, hash,
-- reason} when the refresh was due but the server refused the write (over maxmemory with
-- noeviction): the read is still served.
local key = KEYS[1]
local h = redis.call('HGETALL', key)
if #h == 0 then return {GONE} end
local created_field, created, touched, moving, own
for i = 1, #h, 2 do
  if h[i] == F_CREATED then created_field = h[i + 1]; created = tonumber(h[i + 1])
  elseif h[i] == F_TOUCHED then touched = tonumber(h[i + 1])
  elseif h[i] == F_MOVING then moving = h[i + 1]
  elseif h[i] == F_OWN_EXPIRY then own = h[i + 1] end
end
if is_tombstone(created_field, moving) then return {MOVED} end
if created_field == nil then return {GONE} end -- not a session hash
local idle = own_idle(own, tonumber(ARGV[A_IDLE_MS]), tonumber(ARGV[A_LONGEST_MS]))
local touch, abs = tonumber(ARGV[A_TOUCH_MS]), tonumber(ARGV[A_ABSOLUTE_MS])
local now = now_ms()
h = drop_expired(key, h, now)
local ttl = session_ttl(now, created or now, idle, abs)
if not ttl then
  redis.call('DEL', key)
  return {GONE}
end
if refresh_due(now, touched, touch) then
  local r = redis.pcall('HSET', key, F_TOUCHED, now)
  if type(r) == 'table' and r.err then return {TOUCH_REFUSED, h, r.err} end
  redis.call('PEXPIRE', key, ttl)
  return {DONE, h}
end
return {FRESH, h, now - touched}
