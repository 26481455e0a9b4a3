-- tessera load: HGETALL plus the throttled TTL refresh, in one round trip. Single key.
-- KEYS[1] session key; ARGV: idle_ms, touch_ms, absolute_ms (0 = none)
-- Returns {0} when there is no live session, else {touched (1/0), {field, value, ...}}.
local key = KEYS[1]
local h = redis.call('HGETALL', key)
if #h == 0 then return {0} end
local created, touched
for i = 1, #h, 2 do
  if h[i] == '__c' then created = tonumber(h[i + 1])
  elseif h[i] == '__t' then touched = tonumber(h[i + 1]) end
end
local idle, touch, abs = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local ttl = session_ttl(now, created or now, idle, abs)
if not ttl then
  redis.call('DEL', key)
  return {0}
end
if touched == nil or now - touched >= touch then
  redis.call('HSET', key, '__t', now)
  redis.call('PEXPIRE', key, ttl)
  return {1, h}
end
return {2, h}
