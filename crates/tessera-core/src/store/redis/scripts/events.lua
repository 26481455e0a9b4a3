-- tessera lifecycle events: publish events and keep the expiry set, atomically. Four keys
-- with one hash tag (one slot on Cluster): KEYS[1] the events stream, KEYS[2] the expiry set
-- (member = session storage key, score = a server time no later than its expiry), KEYS[3] the
-- users of tracked sessions (member -> user id, for the `expired` event of a logged-in one),
-- KEYS[4] the pending members (tracked before their key exists, not yet confirmed).
-- ARGV: deadline (see the prelude), maxlen, instance,
--       ntrack, then ntrack (member, ttl_ms, user or '', pending '1'/'0') quadruples: start
--       tracking (pending: an id whose key does not exist yet);
--       nconfirm, then members: pending ids whose session now exists;
--       nuntrack, then members: stop tracking, no event (a rotation's old id, an id the sweeper
--       found ended by someone who published);
--       nrescore, then (member, ttl_ms) pairs: a tracked session found alive moves to its
--       expiry (ZADD XX: never brings back one that an ending removed meanwhile);
--       nev, then (type, member, handle, user, previous handle, claim) sextuples.
-- An event with claim = '1' ends a session: it is published only if its member leaves the
-- expiry set now (ZREM answers 1). Whoever removes it (the request that ended the session, or
-- the sweeper that found it expired) publishes the one event of its end; the other publishes
-- nothing. Its user, when not given, comes from the users hash.
-- Returns {now, id or false, ...}: each event's stream id, false when not published.
local stream, expiry, users, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
local maxlen, instance = ARGV[A_MAXLEN], ARGV[A_INSTANCE]
local i = A_REST
local n = tonumber(ARGV[i]); i = i + 1
local track_from, ntrack = i, n
i = i + 4 * n
n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do redis.call('HDEL', pending, ARGV[i + j]) end
i = i + n
n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do
  redis.call('ZREM', expiry, ARGV[i + j])
  redis.call('HDEL', users, ARGV[i + j])
  redis.call('HDEL', pending, ARGV[i + j])
end
i = i + n
n = tonumber(ARGV[i]); i = i + 1
for j = 0, n - 1 do
  redis.call('ZADD', expiry, 'XX', now + tonumber(ARGV[i + 2 * j + 1]), ARGV[i + 2 * j])
end
i = i + 2 * n
for j = 0, ntrack - 1 do
  local at = track_from + 4 * j
  redis.call('ZADD', expiry, now + tonumber(ARGV[at + 1]), ARGV[at])
  if ARGV[at + 2] ~= '' then redis.call('HSET', users, ARGV[at], ARGV[at + 2]) end
  if ARGV[at + 3] == '1' then redis.call('HSET', pending, ARGV[at], now) end
end
n = tonumber(ARGV[i]); i = i + 1
local out = {now}
-- Each entry names the one before it (`prev_id`): a reader whose cursor is older than the first
-- retained entry missed events exactly when that entry's predecessor is newer than its cursor.
local prev_id
for j = 0, n - 1 do
  local at = i + 6 * j
  local kind, member, handle, user, previous, claim =
    ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  local publish = true
  if claim == '1' then
    publish = redis.call('ZREM', expiry, member) == 1
    if publish then
      if user == '' then user = redis.call('HGET', users, member) or '' end
      redis.call('HDEL', users, member)
      -- A pending id found gone by the sweeper: its login never completed. No event.
      if redis.call('HDEL', pending, member) == 1 and kind == 'expired' then publish = false end
    end
  end
  if publish then
    if not prev_id then
      local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
      prev_id = (last[1] and last[1][1]) or '0-0'
    end
    prev_id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', kind,
      'handle', handle, 'user', user, 'at', now, 'instance', instance, 'previous', previous,
      'prev_id', prev_id)
    out[#out + 1] = prev_id
  else
    out[#out + 1] = false
  end
end
return out
