-- tessera: sets a field of a live session unless it holds a value already, and answers the
-- value it holds now: a compare-and-set, so two requests creating the same value at once (the
-- session's CSRF secret) both end up using the one stored. Single key.
-- KEYS[1] session key; ARGV: deadline (see the prelude), field, value, freeze_ms
-- Returns {DONE, value now (this one, or the one that was there)}, {GONE} (no session:
-- nothing written, no key made), {MOVED} (a login is moving the session to a new id: nothing
-- written), or {EXPIRED, now}.
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local meta = redis.call('HMGET', key, F_CREATED, F_MOVING)
if is_tombstone(meta[1], meta[2]) then return {MOVED} end
if not meta[1] then return {GONE} end
if frozen(meta[2], now, tonumber(ARGV[A_FREEZE_MS])) then return {MOVED} end
redis.call('HSETNX', key, ARGV[A_FIELD], ARGV[A_VALUE])
return {DONE, redis.call('HGET', key, ARGV[A_FIELD])}
