-- tessera lifecycle events: read a page. Single key, read only.
-- KEYS[1] the events stream; ARGV: start ('-' from the first, or '(<id>' after a cursor), count
-- Returns {max deleted id or '', entries}: an id at or after the cursor that was deleted
-- (trimmed by the retention) means the reader missed events.
local stream = KEYS[1]
if redis.call('EXISTS', stream) == 0 then return {'', {}} end
local info = redis.call('XINFO', 'STREAM', stream)
local deleted = ''
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
return {deleted, redis.call('XRANGE', stream, ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))}
