-- tessera user index: the members whose bound has not passed, least recently refreshed first.
-- KEYS[1] user:<id>:sessions. Read-only, single key.
local now = now_ms()
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
