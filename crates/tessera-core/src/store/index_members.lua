-- tessera user index: the members whose bound has not passed, least recently refreshed first.
-- KEYS[1] user:<id>:sessions. Read-only, single key.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
