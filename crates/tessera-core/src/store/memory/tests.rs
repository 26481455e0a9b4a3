//! The memory backend on its own: eviction, expiry cost, the freeze and the index rules.
use super::*;
use crate::store::contract::{IndexOps, SessionOps};
use crate::store::fields;
use crate::store::{now_ms, Freeze, Load, Mode, Release, Timing, WriteOp, WriteResult};
use futures_util::FutureExt;

/// A memory operation's answer: it never waits and never fails.
fn now<T>(op: impl std::future::Future<Output = Result<T>>) -> T {
    op.now_or_never()
        .expect("a memory operation never waits")
        .expect("a memory operation never fails")
}

const T: Timing = Timing {
    idle_ms: 100,
    touch_ms: 10,
    absolute_ms: 0,
    trail_max: 50,
    longest_ms: 100,
};

fn create(m: &MemoryBackend, k: &str, set: Vec<(&str, &str)>, t: Timing) -> WriteResult {
    let op = WriteOp {
        mode: Mode::Create { created_ms: 0 },
        set,
        del: vec![],
        incr: None,
        max_fields: 0,
        not_after_ms: 0,
        expire: vec![],
        records: vec![],
    };
    now(m.write(k, &op, t))
}

#[test]
fn a_users_index_and_sessions_all_disappear_after_expiry() {
    let m = MemoryBackend::new(usize::MAX);
    for k in ["s1", "s2"] {
        assert!(matches!(
            create(&m, k, vec![(fields::USER, "ann")], T),
            WriteResult::Written { incr: 0, .. }
        ));
        assert!(now(m.index_add("user:ann:sessions", k, 200, 0, None)).is_empty());
    }
    assert_eq!(m.key_count(), 3);
    assert_eq!(now(m.index_members("user:ann:sessions")).len(), 2);
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(
        m.key_count(),
        1,
        "sessions expired, the index outlives them by its bound"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(m.key_count(), 0, "nothing of the user is left");
    assert_eq!(m.usage().1, 0, "every byte accounted back");
}

#[test]
fn device_limit_picks_the_lowest_bounds_but_never_the_new_member() {
    let m = MemoryBackend::new(usize::MAX);
    assert!(now(m.index_add("i", "a", 1000, 2, None)).is_empty());
    std::thread::sleep(Duration::from_millis(5));
    assert!(now(m.index_add("i", "b", 1000, 2, None)).is_empty());
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        now(m.index_add("i", "c", 1000, 2, None)),
        vec!["a".to_string()]
    );
    assert_eq!(
        now(m.index_add("i", "c", 1000, 1, None)),
        vec!["a".to_string(), "b".to_string()]
    );
    // A rotation of "b" to "d": "b" is leaving, so it neither counts nor goes.
    let m = MemoryBackend::new(usize::MAX);
    now(m.index_add("j", "a", 1000, 2, None));
    std::thread::sleep(Duration::from_millis(5));
    now(m.index_add("j", "b", 1000, 2, None));
    assert!(
        now(m.index_add("j", "d", 1000, 2, Some("b"))).is_empty(),
        "still two devices"
    );
}

#[test]
fn memory_is_bounded_and_the_least_recently_used_sessions_go_first() {
    let max = 200 * 1024;
    let m = MemoryBackend::new(max);
    let t = Timing {
        idle_ms: 60_000,
        touch_ms: 1_000,
        absolute_ms: 0,
        trail_max: 50,
        longest_ms: 60_000,
    };
    let value = "x".repeat(16 * 1024);
    create(&m, "hot", vec![("v", &value)], t);
    for i in 0..200 {
        create(&m, &format!("s{i}"), vec![("v", &value)], t);
        // "hot" is used all the time: never the least recently used.
        assert!(
            matches!(now(m.load("hot", t, false, false)), Load::Found(_)),
            "hot evicted at {i}"
        );
        assert!(m.usage().1 <= max, "over the bound at {i}: {:?}", m.usage());
    }
    assert!(
        matches!(now(m.load("s199", t, false, false)), Load::Found(_)),
        "the newest stays"
    );
    assert!(
        matches!(now(m.load("s0", t, false, false)), Load::Gone),
        "the oldest went"
    );
    let (keys, bytes) = m.usage();
    assert!(keys < 20 && bytes <= max, "{keys} keys, {bytes} bytes");
}

#[test]
fn expiry_work_is_proportional_to_what_expired() {
    let m = MemoryBackend::new(usize::MAX);
    let long = Timing {
        idle_ms: 60_000,
        ..T
    };
    for i in 0..10_000 {
        create(&m, &format!("long{i}"), vec![], long);
    }
    for i in 0..10 {
        create(&m, &format!("short{i}"), vec![], T);
    }
    std::thread::sleep(Duration::from_millis(120));
    let map = m.map.lock().unwrap();
    let due = map.expiry.range(..(Instant::now(), u64::MAX)).count();
    assert_eq!(
        due, 10,
        "only the expired keys are at the front of the queue"
    );
    drop(map);
    assert_eq!(m.key_count(), 10_000);
}

#[test]
fn a_frozen_session_refuses_writes_until_released() {
    let m = MemoryBackend::new(usize::MAX);
    create(&m, "old", vec![("a", "1")], T);
    let Freeze::Frozen { token, fields } = now(m.freeze("old", "new", T)) else {
        panic!("not frozen")
    };
    assert_eq!(fields.get("a").map(Vec::as_slice), Some(&b"1"[..]));
    assert!(matches!(now(m.freeze("old", "other", T)), Freeze::Moved));
    let op = WriteOp {
        mode: Mode::Update,
        set: vec![("a", "2")],
        del: vec![],
        incr: None,
        max_fields: 0,
        not_after_ms: 0,
        expire: vec![],
        records: vec![],
    };
    assert_eq!(now(m.write("old", &op, T)), WriteResult::Moved);
    assert_eq!(now(m.release("old", "wrong", true)), Release::Taken);
    assert_eq!(
        now(m.release("old", &token, false)),
        Release::Done,
        "thawed"
    );
    assert!(matches!(
        now(m.write("old", &op, T)),
        WriteResult::Written { .. }
    ));
    let Freeze::Frozen { token, .. } = now(m.freeze("old", "new", T)) else {
        panic!("not frozen")
    };
    assert_eq!(now(m.release("old", &token, true)), Release::Done);
    assert!(
        matches!(now(m.load("old", T, false, false)), Load::Moved),
        "a tombstone, for a moment"
    );
    assert_eq!(now(m.write("old", &op, T)), WriteResult::Moved);
    assert_eq!(
        now(m.release("old", &token, true)),
        Release::Retired,
        "a lost answer, asked again"
    );
    std::thread::sleep(FREEZE + Duration::from_millis(50));
    assert!(matches!(now(m.load("old", T, false, false)), Load::Gone));
}

/// Field-index keys: a member's score is its deadline (its add + its own bound), the key lives
/// until the latest deadline, a guarded prune removes only members scored at most its limit,
/// every add drops the members whose deadline passed, and a set's counted bytes follow its
/// members (kept as they change: no scan of the set per operation).
#[test]
fn field_index_sets_keep_order_bytes_and_ttl() {
    let m = MemoryBackend::new(usize::MAX);
    let keys = vec!["index:cart:p-1".to_string(), "index:cart".to_string()];
    for i in 0..1000 {
        now(m.field_add(&keys, &format!("s{i:04}"), 10_000));
    }
    let members = now(m.field_members("index:cart:p-1", 0));
    assert_eq!(members.len(), 1000);
    let (_, bytes_full) = m.usage();
    // Guarded: every deadline is later than now + 9 s.
    let all: Vec<String> = members.clone();
    assert_eq!(now(m.index_prune(&keys, &all, now_ms() + 9_000)), 0);
    // Ended for good: any deadline.
    assert_eq!(now(m.index_prune(&keys, &all[..500], u64::MAX)), 1000);
    assert_eq!(now(m.field_members("index:cart", 0)), all[500..].to_vec());
    let (_, bytes_half) = m.usage();
    assert!(bytes_half < bytes_full);
    now(m.index_prune(&keys, &all[500..], u64::MAX));
    assert_eq!(m.key_count(), 0, "empty sets are deleted");
    // Each member lives as long as its own bound: a short one is dropped by the next add,
    // and the key lives until the latest deadline, not the longest bound ever added.
    now(m.field_add(&keys, "short", 100));
    now(m.field_add(&keys, "long", 300));
    std::thread::sleep(Duration::from_millis(130));
    now(m.field_add(&keys, "later", 50));
    assert_eq!(
        now(m.field_members("index:cart", 0)),
        ["later", "long"],
        "the expired member is dropped by the add"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(m.key_count(), 0, "gone at the latest deadline");
}
