-- tessera script prelude (prepended to every script): shared names and helpers, no commands.

-- The reserved fields' names (F_CREATED, F_TOUCHED, F_USER, F_USER_AGENT, F_CLIENT_ADDR,
-- F_MOVING) are defined on the line before this prelude, from store::fields in Rust.

-- Server time in ms since the epoch (one clock for every app instance).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The TTL a session gets now: the idle timeout, capped by its absolute deadline (abs > 0).
-- nil when the deadline has passed (the caller deletes the key). Mirrors store::ttl_ms.
local function session_ttl(now, created, idle, abs)
  if abs <= 0 then return idle end
  local left = math.floor(created + abs - now)
  if left <= 0 then return nil end
  if left < idle then return left end
  return idle
end

-- A retired key (see release.lua): no session fields, only F_MOVING = 'retired <token>', for a
-- few seconds. Requests still carrying the old cookie see "moved", not "gone", so they neither
-- clear the browser's cookie (its new one has the same name) nor start a session over it.
local function is_tombstone(created_field, moving)
  return created_field == nil and moving ~= nil and string.sub(moving, 1, 8) == 'retired '
end

-- Scripts that write take ARGV[1] = a deadline in server ms (0 = none): the app's bound on
-- when the write may still happen. A script that runs later (the server was paused with the
-- command in its socket, or slow) changes nothing and replies {EXPIRED, now}, so a write
-- answered "not confirmed" by the app is never applied afterwards.
local EXPIRED = -4
local function past_deadline(now)
  local deadline = tonumber(ARGV[1]) or 0
  return deadline > 0 and now > deadline
end

-- Whether the TTL refresh is due: never refreshed, refreshed at least `touch` ms ago, or a
-- refresh time in the future (corrupt, or the server's clock stepped back).
local function refresh_due(now, touched, touch)
  return touched == nil or now - touched >= touch or touched > now
end

-- A rotation in progress ("<ms> <new member>" in __m) younger than freeze_ms freezes the key.
local function frozen(moving, now, freeze_ms)
  if not moving or string.sub(moving, 1, 8) == 'retired ' then return false end
  local at = tonumber(string.match(moving, '^(%d+) '))
  return at ~= nil and now - at < freeze_ms and now >= at
end

-- HSET / HDEL of many fields in chunks: Lua's unpack is limited to a few thousand values.
local function hset_all(key, args)
  for i = 1, #args, 1000 do
    redis.call('HSET', key, unpack(args, i, math.min(i + 999, #args)))
  end
end
local function hdel_range(key, from, to)
  for i = from, to, 1000 do
    redis.call('HDEL', key, unpack(ARGV, i, math.min(i + 999, to)))
  end
end
