-- tessera write: changed fields only, never bringing back a session that is gone. Single key.
-- KEYS[1] session key
-- ARGV: mode ('c' create | 'u' update), idle_ms, absolute_ms, created_ms (create: 0 = now),
--       nset, ndel, incr_field ('' = none), incr_by, touch_ms,
--       then nset field/value pairs, then ndel fields
-- Returns {1, incr_result, touched (0/1), user id or ''} written, {0} gone,
--         {-1} exists (create), {-2} not an integer.
-- A create sets __c, __t and the TTL. An update also does the load's throttled touch (when the
-- last refresh is at least touch_ms old): a write without a load still slides the TTL, and
-- reports it so the caller moves the session's bound in its user's index.
local key = KEYS[1]
local mode = ARGV[1]
local idle, abs = tonumber(ARGV[2]), tonumber(ARGV[3])
local nset, ndel = tonumber(ARGV[5]), tonumber(ARGV[6])
local touch = tonumber(ARGV[9])
local now = now_ms()
local created, touched_at, user
if mode == 'c' then
  if redis.call('EXISTS', key) == 1 then return {-1} end
  created = tonumber(ARGV[4])
  if created == 0 then created = now end
else
  local meta = redis.call('HMGET', key, '__c', '__t', '__u')
  if not meta[1] then return {0} end
  created, touched_at, user = tonumber(meta[1]), tonumber(meta[2]), meta[3]
end
local ttl = session_ttl(now, created, idle, abs)
if not ttl then
  redis.call('DEL', key)
  return {0}
end
local incr = 0
if ARGV[7] ~= '' then
  local r = redis.pcall('HINCRBY', key, ARGV[7], ARGV[8])
  if type(r) == 'table' and r.err then return {-2} end
  incr = r
end
local touched = mode == 'c' or touched_at == nil or now - touched_at >= touch
local args = {}
if mode == 'c' then args = {'__c', created} end
if touched then
  args[#args + 1] = '__t'
  args[#args + 1] = now
end
for i = 0, nset - 1 do
  args[#args + 1] = ARGV[10 + 2 * i]
  args[#args + 1] = ARGV[11 + 2 * i]
end
if #args > 0 then redis.call('HSET', key, unpack(args)) end
if ndel > 0 then
  redis.call('HDEL', key, unpack(ARGV, 10 + 2 * nset, 9 + 2 * nset + ndel))
end
if touched then redis.call('PEXPIRE', key, ttl) end
return {1, incr, (touched and mode ~= 'c') and 1 or 0, user or ''}
