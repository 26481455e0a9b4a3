-- tessera expiry sweep, step 2: what is at a tracked session's key now. Single key, read only.
-- KEYS[1] session key
-- Returns {0} nothing there (it expired), {1, pttl_ms} a live session, {2} an 'ended' mark (a
-- request ended it and publishes its end), {3} a key retired by a login's id rotation (the
-- session lives on under its new id) or anything else that is not a session.
local key = KEYS[1]
local kind = redis.call('TYPE', key)
if type(kind) == 'table' then kind = kind.ok end
if kind == 'none' then return {0} end
if kind ~= 'hash' then return {3} end
local meta = redis.call('HMGET', key, F_CREATED, F_MOVING)
if meta[1] then return {1, redis.call('PTTL', key)} end
if meta[2] == 'ended' then return {2} end
if redis.call('EXISTS', key) == 1 then return {3} end
return {0}
