-- tessera script prelude (prepended to every script): shared names and helpers, no commands.

-- The generated header before this prelude (src/layout/lua_header.rs) defines every name the
-- scripts share: the reserved fields (F_CREATED, F_MOVING, ... and RESERVED_PREFIX), the
-- marker values (MARK_RETIRED, MARK_ENDED), the reply codes (GONE, DONE, MOVED, EXPIRED, ...)
-- and the script's argument positions (A_DEADLINE, A_<NAME>, A_REST). No script types them.

-- Whether a field name is reserved (tessera's own, never a user field). Mirrors
-- layout::fields::is_reserved.
local function is_reserved(name)
  return string.sub(name, 1, #RESERVED_PREFIX) == RESERVED_PREFIX
end

-- The F_MOVING marker (layout/marker.rs): '<ms> <member>' while a login moves the session
-- (the rotation's token), MARK_RETIRED .. token on the old key once retired, MARK_ENDED where
-- an action ended the session.
local function moving_mark(now, member)
  return now .. ' ' .. member
end
local function retired_mark(token)
  return MARK_RETIRED .. token
end
local function is_retired(moving)
  return moving ~= nil and moving ~= false and string.sub(moving, 1, #MARK_RETIRED) == MARK_RETIRED
end
local function is_ended(moving)
  return moving == MARK_ENDED
end
-- The member a moving or retired marker names (its last word).
local function mark_successor(moving)
  return string.match(moving, '(%S+)$')
end

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

-- The idle timeout of a session with its own persistent expiry (F_OWN_EXPIRY = 'p <ms>'),
-- at most `longest` (the configuration's now); else the configured one (`default`), also for
-- a browser session ('b'). Mirrors store::own_idle_ms.
local function own_idle(v, default, longest)
  if v then
    local n = tonumber(string.match(v, '^p (%d+)$'))
    if n and n > 0 then
      if longest and longest > 0 and n > longest then return longest end
      return n
    end
  end
  return default
end

-- A retired key (see release.lua): no session fields, only F_MOVING = 'retired <token>', for a
-- few seconds. Requests still carrying the old cookie see "moved", not "gone", so they neither
-- clear the browser's cookie (its new one has the same name) nor start a session over it.
-- `not created_field`: HGETALL's caller passes nil for a missing field, HMGET's gives false.
local function is_tombstone(created_field, moving)
  return not created_field and is_retired(moving)
end

-- Scripts that write take ARGV[A_DEADLINE] = a deadline in server ms (0 = none): the app's bound on
-- when the write may still happen. A script that runs later (the server was paused with the
-- command in its socket, or slow) changes nothing and replies {EXPIRED, now}, so a write
-- answered "not confirmed" by the app is never applied afterwards.
local function past_deadline(now)
  if not A_DEADLINE then return false end
  local deadline = tonumber(ARGV[A_DEADLINE]) or 0
  return deadline > 0 and now > deadline
end

-- Whether the TTL refresh is due: never refreshed, refreshed at least `touch` ms ago, or a
-- refresh time in the future (corrupt, or the server's clock stepped back).
local function refresh_due(now, touched, touch)
  return touched == nil or now - touched >= touch or touched > now
end

-- A rotation in progress ("<ms> <new member>" in __m) younger than freeze_ms freezes the key.
local function frozen(moving, now, freeze_ms)
  if not moving or is_retired(moving) then return false end
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

-- Field lifetimes. Each field with a lifetime has a stamp beside it, F_EXPIRES .. field =
-- its expiry (server ms), which readers use without asking the server (the near-cache, the
-- remaining lifetime, an id rotation's copy). Where the server has hash-field expiry
-- (`native`), the field and its stamp also get HPEXPIRE, so the server removes both on time;
-- elsewhere a load removes expired fields and their stamps (`drop_expired`).
local function set_lifetimes(key, now, native, pairs_from, n)
  for i = 0, n - 1 do
    local f, ttl = ARGV[pairs_from + 2 * i], tonumber(ARGV[pairs_from + 1 + 2 * i])
    redis.call('HSET', key, F_EXPIRES .. f, now + ttl)
    if native then redis.call('HPEXPIRE', key, ttl, 'FIELDS', 2, f, F_EXPIRES .. f) end
  end
end
-- A flat HGETALL reply without the fields whose stamp has passed (and those stamps), which are
-- removed from the hash too. Returns the reply unchanged when nothing expired.
local function drop_expired(key, h, now)
  local gone = {}
  for i = 1, #h, 2 do
    if string.sub(h[i], 1, #F_EXPIRES) == F_EXPIRES and tonumber(h[i + 1]) and tonumber(h[i + 1]) <= now then
      gone[h[i]] = true
      gone[string.sub(h[i], #F_EXPIRES + 1)] = true
    end
  end
  if next(gone) == nil then return h end
  local kept, names = {}, {}
  for i = 1, #h, 2 do
    if gone[h[i]] then names[#names + 1] = h[i]
    else kept[#kept + 1] = h[i]; kept[#kept + 1] = h[i + 1] end
  end
  redis.pcall('HDEL', key, unpack(names))
  return kept
end

-- The activity trail (session/activity.rs): F_TRAIL holds '<ms> <action>' lines, oldest first,
-- at most `max` of them. Appends ARGV[from .. from + n - 1], stamped `now`.
local function append_trail(key, now, max, from, n)
  if n <= 0 then return end
  local lines = {}
  local cur = redis.call('HGET', key, F_TRAIL)
  if cur then
    for line in string.gmatch(cur, '[^\n]+') do lines[#lines + 1] = line end
  end
  for i = 0, n - 1 do lines[#lines + 1] = now .. ' ' .. ARGV[from + i] end
  local first = #lines - math.max(max, 1) + 1
  if first < 1 then first = 1 end
  redis.call('HSET', key, F_TRAIL, table.concat(lines, '\n', first, #lines))
end

-- A field-index key after a change (field_add.lua, index_prune.lua): members scored before
-- `now` (their deadline passed) go, and the key lives exactly until its latest deadline (a
-- key left empty is gone). Mirrors the memory store's index_trim.
local function index_trim(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIRE', key, math.max(1, math.ceil(tonumber(top[2]) - now))) end
end

-- The user index (index_add.lua, and create.lua for a login's new session): adds or refreshes
-- `member` of the sorted set `key` with the score now + bound (ms), keeps the key's TTL and
-- answers the members over `max` (0 = no limit), least recently refreshed first, never
-- `member` nor `leaving` (the member a rotation replaces: not counted either; '' = none).
-- The common cases cost ZADD and one expiry command, plus ZCARD when a member joins or with a
-- limit (a login: TIME ZADD ZCARD PEXPIRE; a touch's refresh: TIME ZADD PEXPIRE):
-- * The key's TTL. Invariant: the key lives at least until its highest score. Every score is
--   set here as now + bound and only grows (ZADD GT); ZREM and pruning only remove. So if
--   the TTL covered every member before this call, max(TTL, bound) covers them after it:
--   the highest score need not be read. PEXPIRE GT (Redis 7, Valkey) sets that max in one
--   command; Redis 6.2 reads PTTL first. A key this ZADD created (one member, just added) has
--   no TTL yet: it gets bound. A key found without a TTL otherwise (not made here) gets
--   the full computation from its highest score (cover_all).
-- * Pruning (dropping members whose bound has passed: certainly expired) only when the count
--   can matter: past the limit (then prune and count again before choosing victims, so
--   expired members are never counted and never chosen) or, without a limit, past 64
--   members (a soft cap, this helper's alone: the set stays bounded, never over 64 members
--   unless all of them are live, and one prune drops every expired member at once).
--   Nothing else needs them gone: readers (the device list, logout-all) read live bounds only
--   (ZRANGEBYSCORE above now), and the key expires after its highest bound anyway.
local function index_join(key, now, member, bound, max, leaving)
  bound = math.max(1, math.floor(bound))
  -- GT: an existing member's bound only ever grows; a new member is added (and counted in the reply).
  local added = redis.call('ZADD', key, 'GT', now + bound, member)
  -- The count, only where it can matter: a member joined (the set grew), or a limit to check
  -- (a limit lowered since, or a failed eviction, may have left the user over it).
  local n = 0
  if added == 1 or max > 0 then n = redis.call('ZCARD', key) end

  -- The TTL from the highest score, for a key whose TTL may not cover its members.
  local function cover_all()
    local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    local ttl = tonumber(top[2]) - now
    -- A corrupt score (inf, centuries away) must not break every login of the user.
    if ttl ~= ttl or ttl > 315360000000 or ttl < bound then ttl = bound end
    redis.call('PEXPIRE', key, math.floor(ttl))
  end
  if added == 1 and n == 1 then
    -- This ZADD created the key (a sorted set is never empty): our member is all it holds.
    redis.call('PEXPIRE', key, bound)
  elseif (tonumber(redis.REDIS_VERSION_NUM) or 0) >= 0x070000 then
    -- 0: the TTL already reaches as far, or the key has none (treated as infinite by GT).
    if redis.call('PEXPIRE', key, bound, 'GT') == 0 and redis.call('PTTL', key) == -1 then cover_all() end
  else
    local cur = redis.call('PTTL', key)
    if cur == -1 then cover_all() elseif cur < bound then redis.call('PEXPIRE', key, bound) end
  end

  if n > ((max > 0) and max or 64) then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
    n = redis.call('ZCARD', key)
  end
  local victims = {}
  if max > 0 and n > max then
    if leaving ~= '' and redis.call('ZSCORE', key, leaving) then n = n - 1 end
    if n > max then
      for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        if #victims >= n - max then break end
        if m ~= member and m ~= leaving then victims[#victims + 1] = m end
      end
    end
  end
  return victims
end
