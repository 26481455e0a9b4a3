-- tessera take-over of a session another store wrote: GET and DEL in one step, refused past its
-- deadline (a bare GETDEL that waited in a paused server's socket would run on resuming and
-- delete a session whose value nobody receives). Single key.
-- KEYS[1] the other store's key; ARGV: deadline (see the prelude)
-- Returns {1, value}, {0} (nothing there), or {EXPIRED, now} (past its deadline: nothing done).
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local v = redis.call('GET', key)
if not v then return {0} end
redis.call('DEL', key)
return {1, v}
