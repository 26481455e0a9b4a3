//! Each script's arguments, built by their named positions ([`crate::layout::script_args`]),
//! and each script's reply, decoded by the named codes ([`crate::layout::replies`]): one
//! function per script and direction, so a call site in `redis/` says what it sends and gets,
//! never a position or a number. (`write.lua`'s are [`WriteArgs`](super::WriteArgs) and
//! [`parse_write`](super::parse_write); the deadline, first of every write script's arguments,
//! is added by the caller.)
//!
//! The call sites (`session_scripts.rs`, `index_scripts.rs`, `event_scripts.rs`,
//! `takeover_keys.rs`) build and decode through these only; the tests pin the exact values
//! each builder sends.

use super::super::super::events::{EventBatch, Probe};
use super::super::super::{EndIf, Freeze, IndexJoin, Release, SetIfAbsent, Timing};
use super::{code, flat_fields, unexpected, value_bytes};
use crate::error::Result;
use crate::layout::script_args as a;
use fred::prelude::*;

fn int(n: u64) -> Value {
    Value::from(n.min(i64::MAX as u64) as i64)
}

/// `load.lua`.
pub(in crate::store::redis) fn load_args(t: Timing) -> Vec<Value> {
    let mut v = a::load::argv::<Value>(0);
    v.set(a::load::IDLE_MS, t.idle_ms as i64)
        .set(a::load::TOUCH_MS, t.touch_ms as i64)
        .set(a::load::ABSOLUTE_MS, t.absolute_ms as i64)
        .set(a::load::LONGEST_MS, int(t.longest_ms));
    v.finish()
}

/// `create.lua`: the session's fields but its creation and refresh times (the script sets
/// those), after the trail entries and the lifetimes.
#[allow(clippy::too_many_arguments)]
pub(in crate::store::redis) fn create_args(
    set: &[(&str, &str)],
    created_ms: u64,
    expire: &[(&str, u64)],
    records: &[&str],
    index: Option<&IndexJoin<'_>>,
    native: bool,
    t: Timing,
) -> Vec<Value> {
    use a::create as c;
    let mut v = c::argv::<Value>(records.len() + 2 * (set.len() + expire.len()));
    v.set(c::IDLE_MS, t.idle_ms as i64)
        .set(c::ABSOLUTE_MS, t.absolute_ms as i64)
        .set(c::CREATED_MS, created_ms as i64)
        .set(c::NATIVE, if native { "1" } else { "0" })
        .set(c::NEXP, expire.len() as i64)
        .set(c::NREC, records.len() as i64)
        .set(c::TRAIL_MAX, t.trail_max as i64)
        .set(c::MEMBER, index.map_or("", |ix| ix.member))
        .set(c::BOUND_MS, index.map_or(0, |ix| ix.bound_ms as i64))
        .set(c::MAX_SESSIONS, index.map_or(0, |ix| ix.max as i64))
        .set(c::LEAVING, index.and_then(|ix| ix.leaving).unwrap_or(""));
    for r in records {
        v.push(*r);
    }
    for (f, ms) in expire {
        v.push(*f).push(*ms as i64);
    }
    for (k, val) in set {
        if *k != crate::layout::fields::CREATED && *k != crate::layout::fields::TOUCHED {
            v.push(*k).push(*val);
        }
    }
    v.finish()
}

/// `freeze.lua`.
pub(in crate::store::redis) fn freeze_args(
    new_member: &str,
    freeze_ms: u64,
    t: Timing,
) -> Vec<Value> {
    use a::freeze as f;
    let mut v = f::argv::<Value>(0);
    v.set(f::NEW_MEMBER, new_member)
        .set(f::FREEZE_MS, freeze_ms as i64)
        .set(f::IDLE_MS, t.idle_ms as i64)
        .set(f::ABSOLUTE_MS, t.absolute_ms as i64);
    v.finish()
}

/// `freeze.lua`'s reply: `{GONE}`, `{MOVED}` or `{DONE, token, hash}`.
pub(in crate::store::redis) fn parse_freeze(reply: Value) -> Result<Freeze> {
    let Value::Array(mut parts) = reply else {
        return Err(unexpected("freeze script replied with a non-array".into()));
    };
    match parts.first().and_then(Value::as_i64) {
        Some(code::GONE) => Ok(Freeze::Gone),
        Some(code::MOVED) => Ok(Freeze::Moved),
        Some(code::DONE) if parts.len() == 3 => {
            let fields = flat_fields(parts.pop().expect("len checked"))?;
            let token = parts
                .pop()
                .and_then(Value::into_string)
                .ok_or_else(|| unexpected("freeze script replied without a token".into()))?;
            Ok(Freeze::Frozen { token, fields })
        }
        _ => Err(unexpected(format!("freeze script replied {parts:?}"))),
    }
}

/// `release.lua`: retire (a tombstone for [`TOMBSTONE`](super::super::super::TOMBSTONE)) or
/// thaw.
pub(in crate::store::redis) fn release_args(token: &str, retire: bool) -> Vec<Value> {
    use a::release as r;
    let mut v = r::argv::<Value>(0);
    v.set(r::TOKEN, token)
        .set(r::ACTION, if retire { "retire" } else { "thaw" })
        .set(
            r::TOMBSTONE_MS,
            super::super::super::TOMBSTONE.as_millis() as i64,
        );
    v.finish()
}

/// `release.lua`'s reply: `{DONE}`, `{RETIRED}`, `{GONE}` or `{TAKEN}`.
pub(in crate::store::redis) fn parse_release(reply: &[i64]) -> Release {
    match reply.first() {
        Some(&code::DONE) => Release::Done,
        Some(&code::RETIRED) => Release::Retired,
        Some(&code::GONE) => Release::Gone,
        _ => Release::Taken,
    }
}

/// `retire_legacy.lua`.
pub(in crate::store::redis) fn retire_legacy_args(expected: &[u8], grace_ms: u64) -> Vec<Value> {
    use a::retire_legacy as r;
    let mut v = r::argv::<Value>(0);
    v.set(r::EXPECTED, Value::Bytes(expected.to_vec().into()))
        .set(r::GRACE_MS, grace_ms.to_string());
    v.finish()
}

/// `retire_legacy.lua`'s reply: `{DONE}` (deleted) or `{GONE}` (not there, or another value).
pub(in crate::store::redis) fn parse_retire_legacy(reply: Value) -> Result<bool> {
    let Value::Array(parts) = reply else {
        return Err(unexpected(
            "take-over script replied with a non-array".into(),
        ));
    };
    match (parts.first().and_then(Value::as_i64), parts.len()) {
        (Some(code::GONE), 1) => Ok(false),
        (Some(code::DONE), 1) => Ok(true),
        _ => Err(unexpected(format!("take-over script replied {parts:?}"))),
    }
}

/// `index_add.lua`.
pub(in crate::store::redis) fn index_add_args(
    member: &str,
    bound_ms: u64,
    max: usize,
    leaving: Option<&str>,
) -> Vec<Value> {
    use a::index_add as i;
    let mut v = i::argv::<Value>(0);
    v.set(i::MEMBER, member)
        .set(i::BOUND_MS, bound_ms as i64)
        .set(i::MAX_SESSIONS, max as i64)
        .set(i::LEAVING, leaving.unwrap_or(""));
    v.finish()
}

/// `index_prune.lua`.
pub(in crate::store::redis) fn index_prune_args(max_score: u64, members: &[String]) -> Vec<Value> {
    use a::index_prune as p;
    let mut v = p::argv::<Value>(members.len());
    v.set(p::MAX_SCORE, int(max_score));
    for m in members {
        v.push(m.as_str());
    }
    v.finish()
}

/// `field_add.lua`.
pub(in crate::store::redis) fn field_add_args(member: &str, bound_ms: u64) -> Vec<Value> {
    use a::field_add as f;
    let mut v = f::argv::<Value>(0);
    v.set(f::MEMBER, member).set(f::BOUND_MS, bound_ms as i64);
    v.finish()
}

/// `field_add.lua`'s reply `{DONE, now}`: the server's time.
pub(in crate::store::redis) fn parse_field_add(reply: &[i64]) -> i64 {
    reply.get(1).copied().unwrap_or(0)
}

/// `set_if_absent.lua`.
pub(in crate::store::redis) fn set_if_absent_args(
    field: &str,
    value: &str,
    freeze_ms: u64,
) -> Vec<Value> {
    use a::set_if_absent as s;
    let mut v = s::argv::<Value>(0);
    v.set(s::FIELD, field)
        .set(s::VALUE, value)
        .set(s::FREEZE_MS, freeze_ms as i64);
    v.finish()
}

/// `set_if_absent.lua`'s reply: `{DONE, value}`, `{GONE}` or `{MOVED}`.
pub(in crate::store::redis) fn parse_set_if_absent(reply: Vec<Value>) -> Result<SetIfAbsent> {
    Ok(match reply.first().and_then(|v| v.as_i64()) {
        Some(code::DONE) => match reply.get(1).cloned().and_then(Value::into_string) {
            Some(now) => SetIfAbsent::Holds(now),
            None => return Err(unexpected(format!("set_if_absent replied {reply:?}"))),
        },
        Some(code::GONE) => SetIfAbsent::Gone,
        Some(code::MOVED) => SetIfAbsent::Moved,
        _ => return Err(unexpected(format!("set_if_absent replied {reply:?}"))),
    })
}

/// `end_if.lua`: `expected` `None` = the query saw no session there (end whatever is there).
pub(in crate::store::redis) fn end_if_args(
    field: &str,
    expected: Option<&[u8]>,
    tombstone_ms: u64,
) -> Vec<Value> {
    use a::end_if as e;
    let mut v = e::argv::<Value>(0);
    v.set(e::FIELD, field)
        .set(
            e::EXPECTED,
            Value::Bytes(expected.unwrap_or_default().to_vec().into()),
        )
        .set(e::TOMBSTONE_MS, tombstone_ms as i64)
        .set(e::ANY, if expected.is_some() { "0" } else { "1" });
    v.finish()
}

/// `end_if.lua`'s reply: `{DONE}`, `{CHANGED}`, `{GONE}`, `{ENDED_MARK}` or
/// `{MOVED, successor}`.
pub(in crate::store::redis) fn parse_end_if(reply: Vec<Value>) -> Result<EndIf> {
    Ok(match reply.first().and_then(|v| v.as_i64()) {
        Some(code::DONE) => EndIf::Ended,
        Some(code::CHANGED) => EndIf::Changed,
        Some(code::GONE) => EndIf::Absent,
        Some(code::ENDED_MARK) => EndIf::Marked,
        Some(code::MOVED) => match reply.get(1).cloned().and_then(Value::into_string) {
            Some(successor) => EndIf::Moved(successor),
            None => return Err(unexpected(format!("end_if replied {reply:?}"))),
        },
        _ => return Err(unexpected(format!("end_if replied {reply:?}"))),
    })
}

/// `take.lua`.
pub(in crate::store::redis) fn take_args(mark_ms: u64, names: &[&str]) -> Vec<Value> {
    use a::take as t;
    let mut v = t::argv::<Value>(names.len());
    v.set(t::MARK_MS, mark_ms as i64);
    for n in names {
        v.push(*n);
    }
    v.finish()
}

/// `take.lua`'s reply: `{DONE, values...}` (what `names` held), anything else no session.
pub(in crate::store::redis) fn parse_take(reply: Vec<Value>) -> Option<Vec<Option<Vec<u8>>>> {
    let mut it = reply.into_iter();
    match it.next().and_then(|v| v.as_i64()) {
        Some(code::DONE) => Some(it.map(value_bytes).collect()),
        _ => None,
    }
}

/// `events.lua`: the batch's groups in the script's order (track, confirm, untrack, rescore,
/// events), each counted.
pub(in crate::store::redis) fn events_args(
    retention: usize,
    instance: &str,
    batch: &EventBatch,
) -> Vec<Value> {
    use a::events as e;
    let mut v = e::argv::<Value>(0);
    v.set(e::MAXLEN, int(retention as u64))
        .set(e::INSTANCE, instance);
    v.push(int((batch.track.len() + batch.track_pending.len()) as u64));
    let tracks = batch.track.iter().map(|t| (t, "0"));
    for ((m, ttl, user), pending) in tracks.chain(batch.track_pending.iter().map(|t| (t, "1"))) {
        v.push(m.as_str())
            .push(int(*ttl))
            .push(user.as_str())
            .push(pending);
    }
    v.push(int(batch.confirm.len() as u64));
    for m in &batch.confirm {
        v.push(m.as_str());
    }
    v.push(int(batch.untrack.len() as u64));
    for m in &batch.untrack {
        v.push(m.as_str());
    }
    v.push(int(batch.rescore.len() as u64));
    for (m, ttl) in &batch.rescore {
        v.push(m.as_str()).push(int(*ttl));
    }
    v.push(int(batch.events.len() as u64));
    for ev in &batch.events {
        v.push(ev.kind)
            .push(ev.member.as_str())
            .push(ev.handle.as_str())
            .push(ev.user.as_str())
            .push(ev.previous.as_str())
            .push(if ev.claim { "1" } else { "0" });
    }
    v.finish()
}

/// `events_due.lua`.
pub(in crate::store::redis) fn events_due_args(
    instance: &str,
    lease_ms: u64,
    limit: usize,
) -> Vec<Value> {
    use a::events_due as d;
    let mut v = d::argv::<Value>(0);
    v.set(d::INSTANCE, instance)
        .set(d::LEASE_MS, int(lease_ms))
        .set(d::LIMIT, int(limit as u64));
    v.finish()
}

/// `events_read.lua`: `start` is `-` or `(<id>`.
pub(in crate::store::redis) fn events_read_args(start: String, limit: usize) -> Vec<Value> {
    use a::events_read as r;
    let mut v = r::argv::<Value>(0);
    v.set(r::START, start).set(r::COUNT, int(limit as u64));
    v.finish()
}

/// `probe.lua`'s reply: `{GONE}`, `{DONE, pttl}`, `{ENDED_MARK}` or `{NOT_A_SESSION}`.
pub(in crate::store::redis) fn parse_probe(reply: Value) -> Result<Probe> {
    let parts = match reply {
        Value::Array(p) => p,
        other => return Err(unexpected(format!("probe replied {other:?}"))),
    };
    Ok(match parts.first().and_then(Value::as_i64) {
        Some(code::GONE) => Probe::Gone,
        Some(code::DONE) => {
            Probe::Live(parts.get(1).and_then(Value::as_i64).unwrap_or(0).max(0) as u64)
        }
        Some(code::ENDED_MARK) => Probe::Ended,
        Some(code::NOT_A_SESSION) => Probe::Moved,
        _ => return Err(unexpected(format!("probe replied {parts:?}"))),
    })
}

#[cfg(test)]
mod tests {
    //! Each builder against the arguments the call sites build by hand (copied from them), and
    //! each decoder against replies of the named codes.
    use super::*;
    use crate::layout::fields;
    use crate::store::events::NewEvent;

    const T: Timing = Timing {
        idle_ms: 1_800_000,
        touch_ms: 60_000,
        absolute_ms: 0,
        trail_max: 50,
        longest_ms: u64::MAX,
    };

    fn i(n: i64) -> Value {
        Value::from(n)
    }

    #[test]
    fn arguments_are_what_the_call_sites_send() {
        // T.longest_ms is u64::MAX: sent as i64::MAX, as load() in session_scripts.rs caps it.
        assert_eq!(
            load_args(T),
            vec![i(1_800_000), i(60_000), i(0), i(i64::MAX)]
        );
        assert_eq!(
            create_args(
                &[
                    (fields::CREATED, "1"),
                    ("a", "x"),
                    (fields::TOUCHED, "2"),
                    (fields::USER, "ann")
                ],
                7,
                &[("a", 500)],
                &["login"],
                None,
                true,
                T
            ),
            vec![
                i(1_800_000),
                i(0),
                i(7),
                "1".into(),
                i(1),
                i(1),
                i(50),
                "".into(),
                i(0),
                i(0),
                "".into(),
                "login".into(),
                "a".into(),
                i(500),
                "a".into(),
                "x".into(),
                fields::USER.into(),
                "ann".into(),
            ]
        );
        // A login's create with its user-index entry: index_add.lua's arguments in the middle.
        let ix = IndexJoin {
            key: "user:ann:sessions",
            member: "m1",
            bound_ms: 9_000,
            max: 3,
            leaving: Some("m0"),
        };
        assert_eq!(
            create_args(&[("a", "x")], 0, &[], &[], Some(&ix), false, T),
            vec![
                i(1_800_000),
                i(0),
                i(0),
                "0".into(),
                i(0),
                i(0),
                i(50),
                "m1".into(),
                i(9_000),
                i(3),
                "m0".into(),
                "a".into(),
                "x".into(),
            ]
        );
        assert_eq!(
            freeze_args("m", 2000, T),
            vec!["m".into(), i(2000), i(1_800_000), i(0)]
        );
        assert_eq!(
            release_args("tok", true),
            vec!["tok".into(), "retire".into(), i(2000)]
        );
        assert_eq!(release_args("tok", false)[1], "thaw".into());
        assert_eq!(
            retire_legacy_args(b"v", 30),
            vec![
                Value::Bytes(b"v".to_vec().into()),
                Value::from("30".to_string())
            ]
        );
        assert_eq!(
            index_add_args("m", 10, 3, None),
            vec!["m".into(), i(10), i(3), "".into()]
        );
        assert_eq!(
            index_prune_args(u64::MAX, &["a".into(), "b".into()]),
            vec![i(i64::MAX), "a".into(), "b".into()]
        );
        assert_eq!(field_add_args("m", 10), vec!["m".into(), i(10)]);
        assert_eq!(
            set_if_absent_args(fields::CSRF, "s", 2000),
            vec![fields::CSRF.into(), "s".into(), i(2000)]
        );
        assert_eq!(
            end_if_args("f", Some(b"v"), 5),
            vec![
                "f".into(),
                Value::Bytes(b"v".to_vec().into()),
                i(5),
                "0".into()
            ]
        );
        assert_eq!(end_if_args("f", None, 5)[3], "1".into());
        assert_eq!(take_args(0, &["tenant"]), vec![i(0), "tenant".into()]);
        assert_eq!(
            events_due_args("me", 10, 100),
            vec!["me".into(), i(10), i(100)]
        );
        assert_eq!(events_read_args("-".into(), 5), vec!["-".into(), i(5)]);
    }

    #[test]
    fn events_arguments_are_what_the_call_site_sends() {
        let batch = EventBatch {
            track: vec![("m".into(), 9, "u".into())],
            track_pending: vec![("p".into(), 8, "".into())],
            confirm: vec!["c".into()],
            untrack: vec![],
            rescore: vec![("r".into(), 7)],
            events: vec![NewEvent {
                kind: "login",
                member: "m".into(),
                handle: "h".into(),
                user: "u".into(),
                previous: "".into(),
                claim: true,
            }],
        };
        assert_eq!(
            events_args(100, "me", &batch),
            vec![
                i(100),
                "me".into(),
                i(2),
                "m".into(),
                i(9),
                "u".into(),
                "0".into(),
                "p".into(),
                i(8),
                "".into(),
                "1".into(),
                i(1),
                "c".into(),
                i(0),
                i(1),
                "r".into(),
                i(7),
                i(1),
                "login".into(),
                "m".into(),
                "h".into(),
                "u".into(),
                "".into(),
                "1".into(),
            ]
        );
    }

    #[test]
    fn replies_decode_by_name() {
        let arr = |v: Vec<Value>| Value::Array(v);
        assert!(matches!(
            parse_freeze(arr(vec![i(code::GONE)])),
            Ok(Freeze::Gone)
        ));
        assert!(matches!(
            parse_freeze(arr(vec![i(code::MOVED)])),
            Ok(Freeze::Moved)
        ));
        assert!(matches!(
            parse_freeze(arr(vec![i(code::DONE), "t".into(), arr(vec![])])),
            Ok(Freeze::Frozen { token, .. }) if token == "t"
        ));
        assert_eq!(parse_release(&[code::DONE]), Release::Done);
        assert_eq!(parse_release(&[code::RETIRED]), Release::Retired);
        assert_eq!(parse_release(&[code::GONE]), Release::Gone);
        assert_eq!(parse_release(&[code::TAKEN]), Release::Taken);
        assert!(matches!(
            parse_retire_legacy(arr(vec![i(code::DONE)])),
            Ok(true)
        ));
        assert!(matches!(
            parse_retire_legacy(arr(vec![i(code::GONE)])),
            Ok(false)
        ));
        assert!(matches!(
            parse_set_if_absent(vec![i(code::DONE), "v".into()]),
            Ok(SetIfAbsent::Holds(v)) if v == "v"
        ));
        assert!(matches!(
            parse_set_if_absent(vec![i(code::MOVED)]),
            Ok(SetIfAbsent::Moved)
        ));
        assert!(matches!(
            parse_end_if(vec![i(code::DONE)]),
            Ok(EndIf::Ended)
        ));
        assert!(matches!(
            parse_end_if(vec![i(code::CHANGED)]),
            Ok(EndIf::Changed)
        ));
        assert!(matches!(
            parse_end_if(vec![i(code::GONE)]),
            Ok(EndIf::Absent)
        ));
        assert!(matches!(
            parse_end_if(vec![i(code::ENDED_MARK)]),
            Ok(EndIf::Marked)
        ));
        assert!(matches!(
            parse_end_if(vec![i(code::MOVED), "s".into()]),
            Ok(EndIf::Moved(s)) if s == "s"
        ));
        assert_eq!(parse_take(vec![i(code::GONE)]), None);
        assert_eq!(
            parse_take(vec![i(code::DONE), "x".into(), Value::Null]),
            Some(vec![Some(b"x".to_vec()), None])
        );
        assert_eq!(parse_field_add(&[code::DONE, 42]), 42);
        assert_eq!(parse_probe(arr(vec![i(code::GONE)])).unwrap(), Probe::Gone);
        assert_eq!(
            parse_probe(arr(vec![i(code::DONE), i(5)])).unwrap(),
            Probe::Live(5)
        );
        assert_eq!(
            parse_probe(arr(vec![i(code::ENDED_MARK)])).unwrap(),
            Probe::Ended
        );
        assert_eq!(
            parse_probe(arr(vec![i(code::NOT_A_SESSION)])).unwrap(),
            Probe::Moved
        );
    }
}
