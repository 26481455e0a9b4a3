//! The backend contract's conformance suite: every operation of `contract.rs`, with the same
//! inputs, on the memory store and on a real Redis 7 (started here on a free loopback port),
//! asserting the same observable answers. Where the contract documents a difference (the
//! memory store holds no other store's keys, counts its own memory), each backend's documented
//! answer is asserted.
//!
//! Redis comes from `$REDIS_SERVER_BIN` (or `.servers/env.sh`); without it the test fails and
//! names the command that installs it: nothing is skipped.

use super::event_keys::{EventBatch, EventKeys, NewEvent, Probe};
use super::fields;
use super::{
    EndIf, Freeze, Load, Mode, NewSession, Refresh, Release, SetIfAbsent, Store, Timing, WriteOp,
    WriteResult,
};
use crate::Error;
use std::time::Duration;

pub(in crate::store) mod redis_server;
use redis_server::RedisServer;

const T: Timing = Timing {
    idle_ms: 60_000,
    touch_ms: 30_000,
    absolute_ms: 0,
    trail_max: 10,
    longest_ms: 60_000,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Redis,
}

#[tokio::test]
async fn every_operation_on_the_memory_store() {
    every_operation(&Store::memory(), Kind::Memory).await;
}

#[tokio::test]
async fn every_operation_on_redis_7() {
    let server = RedisServer::start();
    let store = Store::redis_with(
        &server.url(),
        super::RedisOptions::default().strict_start(true),
    )
    .await
    .expect("connect to the test server");
    every_operation(&store, Kind::Redis).await;
}

async fn every_operation(store: &Store, kind: Kind) {
    facts(store, kind).await;
    session_hashes(store).await;
    rotation(store).await;
    compare_and_sets(store).await;
    many_keys(store).await;
    indexes(store).await;
    events(store).await;
    server_only(store, kind).await;
}

fn update<'a>(set: Vec<(&'a str, &'a str)>) -> WriteOp<'a> {
    WriteOp {
        mode: Mode::Update,
        set,
        del: Vec::new(),
        incr: None,
        max_fields: 0,
        not_after_ms: 0,
        expire: Vec::new(),
        records: Vec::new(),
    }
}

fn text(v: &Option<Vec<u8>>) -> Option<&str> {
    v.as_deref().map(|b| std::str::from_utf8(b).expect("UTF-8"))
}

async fn facts(store: &Store, kind: Kind) {
    assert!(store.is_connected());
    assert!(
        store.server_now().is_some(),
        "a clock reading from the start"
    );
    assert!(!store.native_field_expiry(), "Redis 7 has no HPEXPIRE");
    assert!(!store.has_query_engine());
    assert_eq!(store.near_cache_stats(), None, "no near-cache asked for");
    assert_eq!(store.memory_usage().is_some(), kind == Kind::Memory);
    let report = store.check_server().await.expect("check");
    assert_eq!(report.servers.len(), 1, "{report:?}");
}

/// create, load, write (update, create, increments, deletes, lifetimes, trail), delete.
async fn session_hashes(store: &Store) {
    let key = "conf:session:a";
    assert!(matches!(
        store.load(key, T, false, false).await,
        Ok(Load::Gone)
    ));
    let set = [("n", "1"), (fields::USER, "ann")];
    let new = NewSession {
        records: &["login"],
        expire: &[("n", 60_000)],
        ..NewSession::fields(&set)
    };
    let created = store.create(key, &new, T).await.expect("create");
    assert_eq!(
        created,
        WriteResult::Written {
            incr: 0,
            refreshed: false,
            user: None,
            victims: Vec::new()
        }
    );
    assert_eq!(
        store.create(key, &new, T).await.unwrap(),
        WriteResult::Exists
    );
    let Ok(Load::Found(l)) = store.load(key, T, false, false).await else {
        panic!("created, not found")
    };
    assert!(matches!(l.refresh, Refresh::NotDue { age_ms: Some(_) }));
    assert!(!l.cached);
    assert_eq!(l.fields["n"], b"1");
    assert!(l.fields.contains_key(fields::CREATED) && l.fields.contains_key(fields::TOUCHED));
    assert!(
        l.fields.contains_key(&fields::stamp_of("n")),
        "a lifetime stamp"
    );
    assert!(String::from_utf8_lossy(&l.fields[fields::TRAIL]).ends_with(" login"));
    let Ok(Load::Found(plain)) = store.load(key, T, true, true).await else {
        panic!("a plain read finds it")
    };
    // Memory measures the age on every load; Redis's plain read does not.
    assert!(matches!(plain.refresh, Refresh::NotDue { .. }));
    assert_eq!(plain.fields["n"], b"1");

    let mut op = update(vec![("m", "x")]);
    op.incr = Some(("n", 41));
    op.del = vec!["gone"];
    op.records = vec!["saved"];
    let written = store.write(key, &op, T).await.unwrap();
    assert_eq!(
        written,
        WriteResult::Written {
            incr: 42,
            refreshed: false,
            user: Some("ann".into()),
            victims: Vec::new()
        }
    );
    let mut not_int = update(Vec::new());
    not_int.incr = Some(("m", 1));
    assert_eq!(
        store.write(key, &not_int, T).await.unwrap(),
        WriteResult::NotAnInteger
    );
    let mut too_many = update(Vec::new());
    too_many.incr = Some(("fresh", 1));
    too_many.max_fields = 2;
    assert_eq!(
        store.write(key, &too_many, T).await.unwrap(),
        WriteResult::TooManyFields
    );
    let missing = "conf:session:missing";
    assert_eq!(
        store
            .write(missing, &update(vec![("a", "1")]), T)
            .await
            .unwrap(),
        WriteResult::Gone
    );
    let mut as_create = update(vec![("a", "1")]);
    as_create.mode = Mode::Create { created_ms: 0 };
    assert!(matches!(
        store.write(missing, &as_create, T).await.unwrap(),
        WriteResult::Written { incr: 0, .. }
    ));
    let past = Timing {
        absolute_ms: 1_000,
        ..T
    };
    let old = NewSession {
        created_ms: 1,
        ..NewSession::fields(&set)
    };
    assert_eq!(
        store.create("conf:session:old", &old, past).await.unwrap(),
        WriteResult::Gone,
        "created past its absolute lifetime"
    );
    assert!(store.delete(missing).await.unwrap());
    assert!(!store.delete(missing).await.unwrap());
}

/// freeze, release (thaw, retire, a lost answer), and what a retired key answers.
async fn rotation(store: &Store) {
    let key = "conf:session:r";
    store
        .create(key, &NewSession::fields(&[("a", "1")]), T)
        .await
        .unwrap();
    assert!(matches!(
        store.freeze("conf:session:none", "m", T).await,
        Ok(Freeze::Gone)
    ));
    let Ok(Freeze::Frozen { token, fields }) = store.freeze(key, "new-1", T).await else {
        panic!("not frozen")
    };
    assert_eq!(fields["a"], b"1");
    assert!(matches!(
        store.freeze(key, "new-2", T).await,
        Ok(Freeze::Moved)
    ));
    let write = update(vec![("a", "2")]);
    assert_eq!(
        store.write(key, &write, T).await.unwrap(),
        WriteResult::Moved
    );
    assert_eq!(
        store.set_if_absent(key, "k", "v").await.unwrap(),
        SetIfAbsent::Moved
    );
    let peek = store
        .peek_raw(&[key.to_string()], &[fields::MOVING])
        .await
        .unwrap();
    assert!(
        peek[0].as_ref().is_some_and(|v| v[0].is_some()),
        "a freeze shows as __m"
    );
    assert_eq!(
        store.release(key, "wrong", true).await.unwrap(),
        Release::Taken
    );
    assert_eq!(
        store.release(key, &token, false).await.unwrap(),
        Release::Done
    );
    assert!(matches!(
        store.write(key, &write, T).await,
        Ok(WriteResult::Written { .. })
    ));
    let Ok(Freeze::Frozen { token, .. }) = store.freeze(key, "new-3", T).await else {
        panic!("not frozen again")
    };
    assert_eq!(
        store.release(key, &token, true).await.unwrap(),
        Release::Done
    );
    assert_eq!(
        store.release(key, &token, true).await.unwrap(),
        Release::Retired
    );
    assert!(matches!(
        store.load(key, T, false, false).await,
        Ok(Load::Moved)
    ));
    assert!(matches!(
        store.load(key, T, true, false).await,
        Ok(Load::Moved)
    ));
    // A write or a compare-and-set to a retired id answers MOVED, as a load does: the
    // session lives on under its new id. (This suite found Redis answering GONE here:
    // write.lua and set_if_absent.lua read the marker with HMGET, whose missing field is
    // `false` in Lua, and the tombstone test compared with `nil`; a request that loaded before
    // a login's retire and saved after it then cleared the browser's new cookie.)
    assert_eq!(
        store.write(key, &write, T).await.unwrap(),
        WriteResult::Moved
    );
    assert_eq!(
        store.set_if_absent(key, "k", "v").await.unwrap(),
        SetIfAbsent::Moved
    );
    assert_eq!(
        store.end_if(key, "a", None, 1_000).await.unwrap(),
        EndIf::Moved("new-3".into()),
        "an end follows the move"
    );
    assert_eq!(
        store.probe_many(&[key.to_string()]).await.unwrap(),
        [Probe::Moved]
    );
    // A take (a logout-all) finds no session and leaves the tombstone: its session lives on.
    assert_eq!(
        store
            .take_many(&[key.to_string()], &[], 1_000)
            .await
            .unwrap(),
        [None]
    );
    assert_eq!(
        store.end_if(key, "a", None, 1_000).await.unwrap(),
        EndIf::Moved("new-3".into()),
        "still a tombstone after the take"
    );
    assert_eq!(
        store
            .release("conf:session:none", &token, true)
            .await
            .unwrap(),
        Release::Gone
    );
}

/// set_if_absent and end_if.
async fn compare_and_sets(store: &Store) {
    let key = "conf:session:c";
    assert_eq!(
        store.set_if_absent(key, "k", "v").await.unwrap(),
        SetIfAbsent::Gone
    );
    store
        .create(key, &NewSession::fields(&[("t", "a")]), T)
        .await
        .unwrap();
    assert_eq!(
        store.set_if_absent(key, "k", "first").await.unwrap(),
        SetIfAbsent::Holds("first".into())
    );
    assert_eq!(
        store.set_if_absent(key, "k", "second").await.unwrap(),
        SetIfAbsent::Holds("first".into())
    );
    assert_eq!(
        store.end_if(key, "t", Some(b"b"), 1_000).await.unwrap(),
        EndIf::Changed
    );
    assert_eq!(
        store.end_if(key, "t", Some(b"a"), 1_000).await.unwrap(),
        EndIf::Ended
    );
    assert_eq!(
        store.end_if(key, "t", Some(b"a"), 1_000).await.unwrap(),
        EndIf::Marked,
        "the mark its end left, left as it is"
    );
    assert_eq!(
        store.probe_many(&[key.to_string()]).await.unwrap(),
        [Probe::Ended],
        "an 'ended' mark"
    );
    assert_eq!(
        store
            .create(key, &NewSession::fields(&[("t", "a")]), T)
            .await
            .unwrap(),
        WriteResult::Gone,
        "a create on its way finds the mark"
    );
    // Nothing at the key (a session that expired, or one whose create is still on its way): a
    // tombstone is left, which that create finds.
    let fresh = "conf:session:c2";
    assert_eq!(
        store.end_if(fresh, "t", None, 1_000).await.unwrap(),
        EndIf::Absent
    );
    assert_eq!(
        store
            .create(fresh, &NewSession::fields(&[("t", "a")]), T)
            .await
            .unwrap(),
        WriteResult::Gone,
        "a create on its way finds the tombstone"
    );
}

/// peek_many, peek_raw, read_many, take_many, delete_many.
async fn many_keys(store: &Store) {
    let keys: Vec<String> = (0..3).map(|i| format!("conf:session:m{i}")).collect();
    for (i, k) in keys.iter().take(2).enumerate() {
        let v = i.to_string();
        store
            .create(k, &NewSession::fields(&[("v", &v)]), T)
            .await
            .unwrap();
    }
    let peeked = store.peek_many(&keys, &["v", "w"]).await.unwrap();
    assert_eq!(peeked.len(), 3);
    assert_eq!(text(&peeked[1].as_ref().unwrap()[0]), Some("1"));
    assert_eq!(peeked[1].as_ref().unwrap()[1], None);
    assert!(peeked[2].is_none());
    let raw = store.peek_raw(&keys, &["v"]).await.unwrap();
    assert_eq!(text(&raw[0].as_ref().unwrap()[0]), Some("0"));
    assert!(raw[2].is_none());
    let read = store.read_many(&keys).await.unwrap();
    assert_eq!(read[0]["v"], b"0");
    assert!(read[2].is_empty());
    let taken = store.take_many(&keys, &["v"], 1_000).await.unwrap();
    assert_eq!(text(&taken[0].as_ref().unwrap()[0]), Some("0"));
    assert!(taken[2].is_none());
    assert_eq!(
        store.probe_many(&keys).await.unwrap(),
        [Probe::Ended, Probe::Ended, Probe::Gone]
    );
    assert_eq!(store.delete_many(&keys).await.unwrap(), [true, true, false]);
    assert!(store.read_many(&[]).await.unwrap().is_empty());
}

/// index_add (limit, leaving), index_members, index_remove, field_add, field_members,
/// index_prune.
async fn indexes(store: &Store) {
    let user = "conf:user:ann";
    assert!(store
        .index_add(user, "a", 60_000, 2, None)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert!(store
        .index_add(user, "b", 60_000, 2, None)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert!(
        store
            .index_add(user, "c", 60_000, 2, Some("b"))
            .await
            .unwrap()
            .is_empty(),
        "the leaving member is not counted"
    );
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert_eq!(
        store.index_add(user, "d", 60_000, 2, None).await.unwrap(),
        ["a", "b"]
    );
    assert_eq!(
        store.index_members(user).await.unwrap(),
        ["a", "b", "c", "d"]
    );
    store
        .index_remove(user, &["a".into(), "b".into()])
        .await
        .unwrap();
    store.index_remove(user, &[]).await.unwrap();
    assert_eq!(store.index_members(user).await.unwrap(), ["c", "d"]);

    let keys = vec!["conf:index:{t}:x".to_string(), "conf:index:{t}".to_string()];
    assert_eq!(store.field_add(&[], "s", 1).await.unwrap(), 0);
    let at = store.field_add(&keys, "s1", 60_000).await.unwrap();
    assert!(at > 0, "the store's time");
    store.field_add(&keys, "s2", 120_000).await.unwrap();
    assert_eq!(
        store.field_members(&keys[0], 0).await.unwrap(),
        ["s1", "s2"]
    );
    assert_eq!(
        store.field_members(&keys[0], at + 90_000).await.unwrap(),
        ["s2"],
        "deadlines at or after"
    );
    let both = vec!["s1".to_string(), "s2".to_string()];
    assert_eq!(
        store.index_prune(&keys, &both, at + 1_000).await.unwrap(),
        0,
        "guarded"
    );
    assert_eq!(store.index_prune(&keys, &both, u64::MAX).await.unwrap(), 4);
    assert_eq!(store.index_prune(&[], &both, u64::MAX).await.unwrap(), 0);
    assert!(store.field_members(&keys[1], 0).await.unwrap().is_empty());
}

/// events_apply, events_read, expiry_due, probe_many, watch_expiries.
async fn events(store: &Store) {
    let keys = EventKeys::new("conf:{events}".into());
    let none = store
        .events_apply(&keys, 10, "i1", &EventBatch::default())
        .await;
    assert!(none.unwrap().is_empty(), "an empty batch");
    let event = |kind, member: &str, claim| NewEvent {
        kind,
        member: member.into(),
        handle: format!("h-{member}"),
        user: String::new(),
        previous: String::new(),
        claim,
    };
    let batch = EventBatch {
        track: vec![
            ("m1".into(), 0, "ann".into()),
            ("m2".into(), 60_000, String::new()),
        ],
        events: vec![event("created", "m1", false)],
        ..Default::default()
    };
    let ids = store.events_apply(&keys, 10, "i1", &batch).await.unwrap();
    assert!(ids[0].is_some());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let due = store.expiry_due(&keys, "i1", 0, 10).await.unwrap().unwrap();
    let members: Vec<&str> = due.members.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(members, ["m1"]);
    assert!(due.lag_ms() < 60_000, "due just now: {due:?}");
    assert_eq!(store.tracked_count(&keys).await.unwrap(), 2, "m1 and m2");
    let claims = EventBatch {
        events: vec![event("expired", "m1", true), event("expired", "m1", true)],
        ..Default::default()
    };
    let ids = store.events_apply(&keys, 10, "i1", &claims).await.unwrap();
    assert!(
        ids[0].is_some() && ids[1].is_none(),
        "claimed once: {ids:?}"
    );
    let (read, missed) = store.events_read(&keys, None, 10).await.unwrap();
    assert!(!missed);
    let kinds: Vec<&str> = read.iter().map(|(_, f)| f["type"].as_str()).collect();
    assert_eq!(kinds, ["created", "expired"]);
    assert_eq!(
        read[1].1["user"], "ann",
        "the claim's user from the users hash"
    );
    assert_eq!(read[0].1["instance"], "i1");
    let after = super::event_keys::parse_id(&read[0].0);
    let (rest, _) = store.events_read(&keys, after, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    let (page, _) = store.events_read(&keys, None, 1).await.unwrap();
    assert_eq!(page.len(), 1, "at most the limit");
    let latest = store.events_latest(&keys, 10).await.unwrap();
    assert_eq!(
        latest,
        vec![read[1].clone(), read[0].clone()],
        "newest first"
    );
    assert_eq!(store.events_latest(&keys, 1).await.unwrap().len(), 1);
    assert_eq!(
        store.tracked_count(&keys).await.unwrap(),
        1,
        "m1 claimed: untracked"
    );
    // Not asserted: how much the retention keeps. The memory store keeps exactly `retention`
    // events; Redis trims with `MAXLEN ~`, whole stream nodes at a time.
    store
        .create("conf:session:p", &NewSession::fields(&[]), T)
        .await
        .unwrap();
    let probes = store
        .probe_many(&["conf:session:p".into(), "conf:session:nothing".into()])
        .await
        .unwrap();
    assert!(matches!(probes[0], Probe::Live(ms) if ms > 0 && ms <= T.idle_ms));
    assert_eq!(probes[1], Probe::Gone);
    // The operator's key scan: the first suffix its predicate accepts, none when none does.
    let found = store
        .scan_find("conf:session:", &|s| s == "p")
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some("p"));
    assert_eq!(
        store.scan_find("conf:session:", &|_| false).await.unwrap(),
        None
    );
    assert_eq!(
        store.scan_find("conf:nothing:", &|_| true).await.unwrap(),
        None
    );
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let watch = store.watch_expiries("conf:".into(), tx, wake).await;
    assert!(watch.is_none(), "no keyspace notifications configured");
}

/// The query engine (none on either), the take-over keys and the settings check.
async fn server_only(store: &Store, kind: Kind) {
    let unsupported =
        |r: Result<(), Error>| assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
    unsupported(store.ft_create("conf-idx", "conf:session:", &[]).await);
    unsupported(store.ft_search("conf-idx", "*", 0, 10).await.map(drop));
    unsupported(store.ft_count_by("conf-idx", "*", "t").await.map(drop));

    let key = "conf:legacy:1";
    assert_eq!(store.get_bytes(key).await.unwrap(), None);
    store.set_bytes(key, b"record", 60_000).await.unwrap();
    assert!(!store.retire_bytes(key, b"other", 0).await.unwrap());
    match kind {
        // Documented: the memory store holds no other store's keys.
        Kind::Memory => {
            assert_eq!(store.get_bytes(key).await.unwrap(), None);
            assert!(!store.retire_bytes(key, b"record", 0).await.unwrap());
        }
        Kind::Redis => {
            assert_eq!(
                store.get_bytes(key).await.unwrap().as_deref(),
                Some(&b"record"[..])
            );
            assert!(store.retire_bytes(key, b"record", 0).await.unwrap());
            assert_eq!(store.get_bytes(key).await.unwrap(), None);
            assert_eq!(
                store.get_bytes("conf:session:p").await.unwrap(),
                None,
                "a hash is not a record"
            );
        }
    }
}
