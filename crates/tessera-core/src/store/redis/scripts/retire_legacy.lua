-- tessera take-over of a session another store wrote, last step: its old key is deleted only if
-- it still holds the value the take-over read (and checked to be a record of that store), after
-- tessera's copy was written. Compare-and-delete in one step, refused past its deadline. Single
-- key.
-- KEYS[1] the other store's key; ARGV: deadline (see the prelude), the value read
-- Returns {1} (deleted), {0} (not there any more, or holding another value: nothing done), or
-- {EXPIRED, now} (past its deadline: nothing done).
local key = KEYS[1]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
-- pcall: a key of another type is not the value read (GET would raise WRONGTYPE).
if redis.pcall('GET', key) ~= ARGV[2] then return {0} end
redis.call('DEL', key)
return {1}
