-- tessera write: changed fields only, never bringing back a session that is gone. Single key.
-- KEYS[1] session key
-- ARGV: deadline (see the prelude), mode ('c' create | 'u' update), idle_ms (on update, the
--       session's own expiry F_OWN_EXPIRY takes its place unless this write changes it), absolute_ms,
--       created_ms (create: 0 = now), nset, ndel, incr_field ('' = none), incr_by, touch_ms,
--       freeze_ms, max_fields (0 = not checked here), native ('1': hash-field expiry), nexp,
--       nrec, trail_max, longest_ms (the longest own expiry now), then nset field/value pairs, then ndel fields, then nexp
--       field/lifetime_ms pairs (see set_lifetimes in the prelude), then nrec activity trail
--       entries (see append_trail)
-- Returns {DONE, incr_result (as text), touched (0/1), user id or '', now}, {GONE}, {EXISTS} (create),
-- {NOT_AN_INTEGER}, {MOVED} (a login is moving the session to a new id: nothing written), or
-- {EXPIRED, now} (past its deadline: nothing written), or {TOO_MANY_FIELDS} (the increment would
-- add a field beyond max_fields: nothing written).
-- A create sets __c, __t and the TTL. An update also does the load's throttled touch (when the
-- last refresh is at least touch_ms old): a write without a load still slides the TTL, and
-- reports it so the caller moves the session's bound in its user's index.
-- Over maxmemory (noeviction) the first write command fails with OOM before anything is
-- written; the script then fails with that error, and the caller reports the store unavailable.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local mode = ARGV[A_MODE]
local idle, abs = tonumber(ARGV[A_IDLE_MS]), tonumber(ARGV[A_ABSOLUTE_MS])
local nset, ndel = tonumber(ARGV[A_NSET]), tonumber(ARGV[A_NDEL])
local touch, freeze_ms = tonumber(ARGV[A_TOUCH_MS]), tonumber(ARGV[A_FREEZE_MS])
local incr_field, incr_by = ARGV[A_INCR_FIELD], ARGV[A_INCR_BY]
-- The variable part: nset field/value pairs, ndel fields, nexp lifetime pairs, trail entries.
local set_from = A_REST
local del_from = set_from + 2 * nset
local lifetimes_from = del_from + ndel
local created, touched_at, user, moving
-- The increment's field: whether the hash holds it, and its lifetime stamp (update only: a
-- create's hash is new, it holds neither).
local incr_present, incr_stamp = false, false
-- Whether this write sets or removes the session's own expiry: then the TTL is set now.
local changes_own = false
local keeps_ttl = false
if mode == 'c' then
  if redis.call('EXISTS', key) == 1 then return {EXISTS} end
  created = tonumber(ARGV[A_CREATED_MS])
  if created == 0 then created = now end
else
  -- With an increment, its field and lifetime stamp too (meta[6], meta[7]): no second read.
  local meta
  if incr_field ~= '' then
    meta = redis.call('HMGET', key, F_CREATED, F_TOUCHED, F_USER, F_MOVING, F_OWN_EXPIRY,
      F_EXPIRES_AT, incr_field, F_EXPIRES .. incr_field)
    incr_present, incr_stamp = meta[7] ~= false, meta[8]
  else
    meta = redis.call('HMGET', key, F_CREATED, F_TOUCHED, F_USER, F_MOVING, F_OWN_EXPIRY,
      F_EXPIRES_AT)
  end
  if is_tombstone(meta[1], meta[4]) then return {MOVED} end
  if not meta[1] then return {GONE} end
  created, touched_at, user, moving = tonumber(meta[1]) or now, tonumber(meta[2]), meta[3], meta[4]
  if frozen(moving, now, freeze_ms) then return {MOVED} end
  -- The session's own expiry, unless this write sets or removes it (then idle_ms is the new
  -- one: the caller knows it).
  -- A session another framework manages keeps the expiry it set last: only a write that
  -- sets it moves the TTL (a stamp of its last-seen time must not put back an older one).
  keeps_ttl = meta[6] ~= false
  for i = 0, nset - 1 do
    if ARGV[set_from + 2 * i] == F_OWN_EXPIRY then changes_own = true end
    if ARGV[set_from + 2 * i] == F_EXPIRES_AT then keeps_ttl = false end
  end
  for i = 0, ndel - 1 do
    if ARGV[del_from + i] == F_OWN_EXPIRY then changes_own = true end
  end
  if not changes_own then idle = own_idle(meta[5], idle, tonumber(ARGV[A_LONGEST_MS])) end
end
local ttl = session_ttl(now, created, idle, abs)
if not ttl then
  redis.call('DEL', key)
  return {GONE}
end
local incr = 0
local max_fields = tonumber(ARGV[A_MAX_FIELDS])
-- The field-count check, for an increment the app could not check (it did not load): only
-- when the field is not in the hash (an existing field adds nothing; a create's hash is
-- empty), then one HLEN; the exact count only when the hash is near the limit. A field past
-- its lifetime but still in the hash counts as present: it is replaced, not added.
if incr_field ~= '' and mode ~= 'c' and not incr_present and max_fields > 0
    and redis.call('HLEN', key) >= max_fields then
  local n = 0
  for _, k in ipairs(redis.call('HKEYS', key)) do
    if not is_reserved(k) then n = n + 1 end
  end
  if n >= max_fields then return {TOO_MANY_FIELDS} end
end
if incr_field ~= '' then
  -- A field past its lifetime (where the server has no hash-field expiry, it may still be in
  -- the hash) is counted from zero: it is gone.
  if incr_stamp and tonumber(incr_stamp) and tonumber(incr_stamp) <= now then
    redis.call('HDEL', key, incr_field, F_EXPIRES .. incr_field)
  end
  local r = redis.pcall('HINCRBY', key, incr_field, incr_by)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'OOM', 1, true) then return r end
    return {NOT_AN_INTEGER}
  end
  incr = r
  -- A Lua number is a double: past 2^53 return the exact value as text.
  if r >= 9007199254740992 or r <= -9007199254740992 then incr = redis.call('HGET', key, incr_field) end
end
local touched = mode == 'c' or changes_own or refresh_due(now, touched_at, touch)
local args = {}
if mode == 'c' then args = {F_CREATED, created} end
if touched then
  args[#args + 1] = F_TOUCHED
  args[#args + 1] = now
end
for i = 0, nset - 1 do
  args[#args + 1] = ARGV[set_from + 2 * i]
  args[#args + 1] = ARGV[set_from + 1 + 2 * i]
end
if #args > 0 then hset_all(key, args) end
if ndel > 0 then hdel_range(key, del_from, del_from + ndel - 1) end
local nexp = tonumber(ARGV[A_NEXP])
if nexp > 0 then set_lifetimes(key, now, ARGV[A_NATIVE] == '1', lifetimes_from, nexp) end
append_trail(key, now, tonumber(ARGV[A_TRAIL_MAX]), lifetimes_from + 2 * nexp, tonumber(ARGV[A_NREC]))
-- A stale freeze (its rotation died): this write wins, and that rotation will not delete the key.
if moving then redis.call('HDEL', key, F_MOVING) end
if touched and not keeps_ttl then redis.call('PEXPIRE', key, ttl) end
return {DONE, incr, (touched and mode ~= 'c') and 1 or 0, user or '', now}
