-- tessera lifecycle events: read a page. Single key, read only.
-- KEYS[1] the events stream; ARGV: start ('-' from the first, or '(<id>' after a cursor), count
-- Returns {first retained id or '', that entry's prev_id or '', entries}: the caller tells a
-- reader it missed events when its cursor is older than the first retained entry's
-- predecessor (see events.lua).
local stream = KEYS[1]
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #first == 0 then return {'', '', {}} end
local first_id, prev = first[1][1], ''
local f = first[1][2]
for i = 1, #f, 2 do
  if f[i] == 'prev_id' then prev = f[i + 1] end
end
return {first_id, prev, redis.call('XRANGE', stream, ARGV[A_START], '+', 'COUNT', tonumber(ARGV[A_COUNT]))}
