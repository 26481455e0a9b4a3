-- tessera create: a new session key under a fresh id. Single key.
-- KEYS[1] session key (a fresh 128-bit id: no session can be there; what can be there is an
-- 'ended' tombstone left by an admin action that ended this id's session before it was created,
-- see end_if.lua: then nothing is written)
-- ARGV: deadline (see the prelude), idle_ms, absolute_ms (0 = none), created_ms (0 = now; a
--       rotation keeps the old session's), native ('1': hash-field expiry), nexp, nrec,
--       trail_max, then nrec activity trail entries (see append_trail), then nexp
--       field/lifetime_ms pairs, then field/value pairs (a rotation's copy includes the old
--       session's lifetime stamps: with native expiry they are applied with HPEXPIREAT)
-- Returns {WRITTEN, 0, 0, '', now}, {GONE} (created_ms is past the absolute lifetime, or the
-- id was ended before its create arrived), {EXISTS} (an id collision: the caller draws again),
-- or
-- {EXPIRED, now}.
-- A script rather than MULTI/HSET/PEXPIRE/EXEC: the deadline is a decision only the server can
-- take, and one EVALSHA is one write for the client where a MULTI block is four (measured in
-- BENCHMARKS.md). The EXISTS inside the script costs no round trip.
local WRITTEN, GONE, EXISTS = 1, 0, -1
local NATIVE, NEXP, NREC = ARGV[5] == '1', tonumber(ARGV[6]), tonumber(ARGV[7])
local FIRST = 9 + NREC + 2 * NEXP
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local idle, abs = tonumber(ARGV[2]), tonumber(ARGV[3])
local created = tonumber(ARGV[4])
if created == 0 then created = now end
local ttl = session_ttl(now, created, idle, abs)
if not ttl then return {GONE} end
if redis.call('EXISTS', key) == 1 then
  if redis.call('HGET', key, F_MOVING) == 'ended' then return {GONE} end
  return {EXISTS}
end
local args = {F_CREATED, created, F_TOUCHED, now}
for i = FIRST, #ARGV, 2 do
  args[#args + 1] = ARGV[i]
  args[#args + 1] = ARGV[i + 1]
end
hset_all(key, args)
-- The key's TTL first: should a field-expiry command fail below, the key still expires.
redis.call('PEXPIRE', key, ttl)
if NATIVE then
  for i = FIRST, #ARGV, 2 do
    local at = tonumber(ARGV[i + 1])
    if string.sub(ARGV[i], 1, 4) == F_EXPIRES and at and at > 0 then
      -- pcall: a corrupt stamp must not make every login of the session fail; the stamp
      -- itself still ends the field on the next read.
      redis.pcall('HPEXPIREAT', key, math.floor(at), 'FIELDS', 2, string.sub(ARGV[i], 5), ARGV[i])
    end
  end
end
if NEXP > 0 then set_lifetimes(key, now, NATIVE, 9 + NREC, NEXP) end
append_trail(key, now, tonumber(ARGV[8]), 9, NREC)
return {WRITTEN, 0, 0, '', now}
