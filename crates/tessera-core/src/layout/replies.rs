//! The scripts' reply codes: one table for every script, so a number means one thing
//! wherever it appears. A reply is an array whose first element is a code (`{MOVED}`,
//! `{DONE, ...}`), except where a script's header comment says otherwise (index_add.lua
//! answers its victims, index_prune.lua a count, events.lua `{now, ids...}`, events_due.lua
//! `{now, members...}`, events_read.lua a page). The scripts get the names from the generated
//! header, and never type a number themselves.

/// No live session there (nothing done): load, write, freeze, release, set_if_absent,
/// end_if (nothing at the key: an `ended` tombstone is left), take, probe (nothing at the key:
/// it expired); for
/// retire_legacy.lua, the other store's key is not there any more or holds another value.
pub(crate) const GONE: i64 = 0;
/// Done as asked: written (write, create, set_if_absent: `{DONE, ...}` with the reply's
/// data), refreshed (load: `{DONE, hash}`), frozen (freeze: `{DONE, token, hash}`), retired
/// or thawed (release), ended (end_if), taken (take: `{DONE, values...}`), deleted
/// (retire_legacy), added (field_add: `{DONE, now}`), a live session found (probe: `{DONE,
/// pttl}`).
pub(crate) const DONE: i64 = 1;
/// load.lua: found, the TTL refresh not due: `{FRESH, hash, age_ms}`.
pub(crate) const FRESH: i64 = 2;
/// load.lua: found, the refresh due but refused by the server (over `maxmemory`):
/// `{TOUCH_REFUSED, hash, reason}`.
pub(crate) const TOUCH_REFUSED: i64 = 3;
/// release.lua: already retired with this token (a retire whose answer was lost did
/// complete).
pub(crate) const RETIRED: i64 = 4;
/// end_if.lua: the field no longer holds the value the query saw: left alone.
pub(crate) const CHANGED: i64 = 5;
/// probe.lua: an `ended` mark (a request ended the session and publishes its end); end_if.lua:
/// no session, but a key already there (an `ended` mark): left as it is, no tombstone added.
pub(crate) const ENDED_MARK: i64 = 6;
/// probe.lua: a key that is no session (retired by a login's rotation, or not tessera's).
pub(crate) const NOT_A_SESSION: i64 = 7;
/// A create found a key already there (an id collision: the caller draws again).
pub(crate) const EXISTS: i64 = -1;
/// write.lua: the increment's field does not hold an integer.
pub(crate) const NOT_AN_INTEGER: i64 = -2;
/// The key was retired by a login's id rotation, or a rotation is moving it now: the session
/// lives on (or will) under a new id. end_if.lua answers `{MOVED, successor}`.
pub(crate) const MOVED: i64 = -3;
/// A write script ran past its deadline: nothing written; `{EXPIRED, now}` (the server's
/// time, to correct the client's estimate).
pub(crate) const EXPIRED: i64 = -4;
/// write.lua: the increment would add a field beyond `max_fields`: nothing written.
pub(crate) const TOO_MANY_FIELDS: i64 = -5;
/// release.lua: the freeze was broken (it went stale and a write landed, or another
/// rotation took over): retiring now would lose that write, so the caller undoes.
pub(crate) const TAKEN: i64 = -6;

/// Every code as the scripts' header names it: `(name, value)`.
pub(crate) const LUA: &[(&str, i64)] = &[
    ("GONE", GONE),
    ("DONE", DONE),
    ("FRESH", FRESH),
    ("TOUCH_REFUSED", TOUCH_REFUSED),
    ("RETIRED", RETIRED),
    ("CHANGED", CHANGED),
    ("ENDED_MARK", ENDED_MARK),
    ("NOT_A_SESSION", NOT_A_SESSION),
    ("EXISTS", EXISTS),
    ("NOT_AN_INTEGER", NOT_AN_INTEGER),
    ("MOVED", MOVED),
    ("EXPIRED", EXPIRED),
    ("TOO_MANY_FIELDS", TOO_MANY_FIELDS),
    ("TAKEN", TAKEN),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_number_per_meaning() {
        let values: std::collections::HashSet<i64> = LUA.iter().map(|(_, v)| *v).collect();
        assert_eq!(values.len(), LUA.len(), "two codes share a number: {LUA:?}");
    }
}
