-- tessera expiry sweep, step 2: what is at a tracked session's key now. Single key, read only.
-- KEYS[1] session key
-- Returns {GONE} nothing there (it expired), {DONE, pttl_ms} a live session, {ENDED_MARK} an
-- 'ended' mark (a request ended it and publishes its end), {NOT_A_SESSION} a key retired by a
-- login's id rotation (the session lives on under its new id) or anything else that is not a
-- session.
local key = KEYS[1]
local kind = redis.call('TYPE', key)
if type(kind) == 'table' then kind = kind.ok end
if kind == 'none' then return {GONE} end
if kind ~= 'hash' then return {NOT_A_SESSION} end
local meta = redis.call('HMGET', key, F_CREATED, F_MOVING)
if meta[1] then return {DONE, redis.call('PTTL', key)} end
if is_ended(meta[2]) then return {ENDED_MARK} end
if redis.call('EXISTS', key) == 1 then return {NOT_A_SESSION} end
return {GONE}
