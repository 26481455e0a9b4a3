-- tessera script prelude (prepended to every script): shared helpers, no commands.

-- Server time in ms since the epoch (one clock for every app instance).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The TTL a session gets now: the idle timeout, capped by its absolute deadline (abs > 0).
-- nil when the deadline has passed (the caller deletes the key). Mirrors store::ttl_ms.
local function session_ttl(now, created, idle, abs)
  if abs <= 0 then return idle end
  local left = created + abs - now
  if left <= 0 then return nil end
  if left < idle then return left end
  return idle
end
