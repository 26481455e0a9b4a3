-- tessera create: a new session key under a fresh id, and, for a login on one server, its
-- user-index entry in the same step.
-- KEYS[1] session key (a fresh 128-bit id: no session can be there; what can be there is an
-- 'ended' tombstone left by an admin action that ended this id's session before it was created,
-- see end_if.lua: then nothing is written)
-- KEYS[2] (optional) the user's index, user:<id>:sessions: given only where both keys are on
--         one server (never on a cluster, where they are two slots and the caller sends
--         index_add.lua beside this script)
-- ARGV: deadline (see the prelude), idle_ms, absolute_ms (0 = none), created_ms (0 = now; a
--       rotation keeps the old session's), native ('1': hash-field expiry), nexp, nrec,
--       trail_max, member, bound_ms, max_sessions, leaving (the index entry, as index_add.lua's
--       arguments; ignored without KEYS[2]), then nrec activity trail entries (see
--       append_trail), then nexp field/lifetime_ms pairs, then field/value pairs (a rotation's
--       copy includes the old session's lifetime stamps: with native expiry they are applied
--       with HPEXPIREAT)
-- Returns {DONE, 0, 0, '', now} ({DONE, 0, 0, '', now, victims} with KEYS[2]: the members
-- over the device limit, see index_join), {GONE} (created_ms is past the absolute lifetime, or
-- the id was ended before its create arrived: nothing written, the index entry included),
-- {EXISTS} (an id collision: the caller draws again), or {EXPIRED, now}.
-- A script rather than MULTI/HSET/PEXPIRE/EXEC: the deadline is a decision only the server can
-- take, and one EVALSHA is one write for the client where a MULTI block is four (measured in
-- BENCHMARKS.md). The EXISTS inside the script costs no round trip. It stays a command of its
-- own: folding it into the write (HSETNX, or HSET's count of new fields) would write into an
-- 'ended' tombstone before finding it there, and nothing else this script runs reads the key.
local native, nexp, nrec = ARGV[A_NATIVE] == '1', tonumber(ARGV[A_NEXP]), tonumber(ARGV[A_NREC])
-- The variable part: nrec trail entries, nexp lifetime pairs, then the field/value pairs.
local trail_from, lifetimes_from = A_REST, A_REST + nrec
local pairs_from = lifetimes_from + 2 * nexp
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local idle, abs = tonumber(ARGV[A_IDLE_MS]), tonumber(ARGV[A_ABSOLUTE_MS])
local created = tonumber(ARGV[A_CREATED_MS])
if created == 0 then created = now end
local ttl = session_ttl(now, created, idle, abs)
if not ttl then return {GONE} end
if redis.call('EXISTS', key) == 1 then
  if is_ended(redis.call('HGET', key, F_MOVING)) then return {GONE} end
  return {EXISTS}
end
-- The index entry before the session's key: every check above has passed, and should the index
-- key hold another type, this errors before anything is written.
local victims = nil
if KEYS[2] then
  victims = index_join(KEYS[2], now, ARGV[A_MEMBER], tonumber(ARGV[A_BOUND_MS]), tonumber(ARGV[A_MAX_SESSIONS]), ARGV[A_LEAVING])
end
local args = {F_CREATED, created, F_TOUCHED, now}
for i = pairs_from, #ARGV, 2 do
  args[#args + 1] = ARGV[i]
  args[#args + 1] = ARGV[i + 1]
end
hset_all(key, args)
-- The key's TTL first: should a field-expiry command fail below, the key still expires.
redis.call('PEXPIRE', key, ttl)
if native then
  for i = pairs_from, #ARGV, 2 do
    local at = tonumber(ARGV[i + 1])
    if string.sub(ARGV[i], 1, #F_EXPIRES) == F_EXPIRES and at and at > 0 then
      -- pcall: a corrupt stamp must not make every login of the session fail; the stamp
      -- itself still ends the field on the next read.
      redis.pcall('HPEXPIREAT', key, math.floor(at), 'FIELDS', 2, string.sub(ARGV[i], #F_EXPIRES + 1), ARGV[i])
    end
  end
end
if nexp > 0 then set_lifetimes(key, now, native, lifetimes_from, nexp) end
append_trail(key, now, tonumber(ARGV[A_TRAIL_MAX]), trail_from, nrec)
if victims then return {DONE, 0, 0, '', now, victims} end
return {DONE, 0, 0, '', now}
