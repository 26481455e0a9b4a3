-- tessera user index: add or refresh a member, keep the key's TTL, find victims. Single key.
-- KEYS[1] user:<id>:sessions (sorted set: member = session key suffix, score = an upper bound
--         of that session's expiry, ms since the epoch)
-- ARGV: deadline (see the prelude), member, bound_ms (score = now + bound_ms), max_sessions
-- (0 = no limit), leaving (the member a rotation replaces: neither counted nor chosen; '' = none)
-- Returns the members over the limit, least recently refreshed first (the caller ends them),
-- or {EXPIRED, now}.
--
-- The work is the prelude's index_join (create.lua runs the same for a login's new session on
-- one server, where the session key and the index share the server).
local now = now_ms()
if past_deadline(now) then return {EXPIRED, now} end
return index_join(KEYS[1], now, ARGV[A_MEMBER], tonumber(ARGV[A_BOUND_MS]), tonumber(ARGV[A_MAX_SESSIONS]), ARGV[A_LEAVING])
