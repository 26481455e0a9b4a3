//! Lifecycle events: what each way a session starts, moves and ends publishes, read by every
//! instance (a page with a cursor through `GET /admin/events`, a stream, a callback), and the
//! expiry sweeper's `expired`, exactly once per session however many instances sweep. Written
//! once, run on memory (events stay in the process), Redis 7, Redis 8.2, Valkey 8.1, Sentinel
//! and Cluster, through both adapters.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tessera_core::adapter::SessionExt as _;
use tessera_core::{Error, EventKind, SessionManager};
use tessera_tests::fixture::{config, ADMIN_TOKEN};
use tessera_tests::{Browser, Fixture, Setup};

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] =>
    a_sessions_life_in_order,
    logout_all_revoke_and_eviction_each_end_once,
    two_instances_see_each_others_events_and_one_expired_each,
    an_expiry_is_published_by_the_sweeper_alone,
    a_logout_racing_expiry_publishes_one_end,
    a_cursor_resumes_without_loss,
    a_reader_behind_the_retention_is_told,
    the_stream_and_the_callback_deliver_in_order,
    admin_events_need_the_token,
    ending_by_query_publishes_revoked,
    logins_racing_logout_all_each_end_once,
    a_login_undone_after_its_tracking_is_never_expired,
    an_extreme_cursor_is_a_400,
);

fn events_on(c: tessera_core::SessionConfigBuilder) -> tessera_core::SessionConfigBuilder {
    c.lifecycle_events(true)
        .instance_name("app-1")
        .expiry_sweep_interval(Duration::from_millis(200))
}

/// Every event from the start, through the admin route: (type, handle, user_id, previous).
async fn all_events(b: &Browser) -> Vec<Value> {
    let admin = b.admin(ADMIN_TOKEN);
    let mut out = Vec::new();
    let mut cursor = String::from("0");
    loop {
        let r = admin.get(&format!("/admin/events?after={cursor}")).await;
        assert_eq!(r.status, 200, "{r:?}");
        let page = r.json();
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        cursor = page["cursor"].as_str().unwrap().to_string();
        out.extend(events);
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The ends per handle: each handle must have at most one.
fn ends_by_handle(events: &[Value]) -> HashMap<String, Vec<String>> {
    let mut ends: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        let kind = e["type"].as_str().unwrap();
        if !["created", "login", "rotated"].contains(&kind) {
            ends.entry(e["handle"].as_str().unwrap().to_string())
                .or_default()
                .push(kind.to_string());
        }
    }
    ends
}

async fn login(b: &Browser, user: &str) {
    let r = b.post("/login", Some(json!({ "user_id": user }))).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Polls until `f` holds for the events, within `limit`.
async fn events_until(b: &Browser, limit: Duration, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let events = all_events(b).await;
        if f(&events) {
            return events;
        }
        assert!(
            start.elapsed() < limit,
            "not within {limit:?}: {:#?}",
            kinds(&events)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

mod cases {
    use super::*;

    pub async fn a_sessions_life_in_order(setup: Setup) {
        let fx = Fixture::with(setup, events_on).await;
        let b = fx.browser().with_agent("phone");
        b.put("/session", json!({"cart": ["p-1"]})).await;
        login(&b, "ann").await;
        assert_eq!(b.post("/cycle", None).await.status, 200);
        let handle_now = b.get("/sessions").await.json()[0]["handle"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(b.post("/logout", None).await.status, 204);
        let events = all_events(&b).await;
        assert_eq!(kinds(&events), ["created", "login", "rotated", "logout"]);
        let (created, logged_in, rotated, logout) =
            (&events[0], &events[1], &events[2], &events[3]);
        assert_eq!(created["user_id"], Value::Null, "anonymous when created");
        assert_eq!(logged_in["previous_handle"], created["handle"]);
        assert_eq!(logged_in["user_id"], "ann");
        assert_eq!(rotated["previous_handle"], logged_in["handle"]);
        assert_eq!(
            rotated["handle"],
            handle_now.as_str(),
            "the handle the device list shows"
        );
        assert_eq!(logout["handle"], handle_now.as_str());
        assert_eq!(logout["user_id"], "ann");
        for e in &events {
            assert_eq!(e["instance"], "app-1");
            assert!(e["at"].as_str().unwrap().contains('T'), "RFC 3339: {e}");
            let id = e["handle"].as_str().unwrap();
            assert!(
                !b.cookie("__Host-tessera").unwrap_or_default().contains(id),
                "a handle is not the id"
            );
        }
        // A first visit that logs in at once: created, then login (no previous handle).
        let c = fx.browser();
        login(&c, "bob").await;
        let events = all_events(&b).await;
        assert_eq!(kinds(&events[4..]), ["created", "login"]);
        assert_eq!(events[4]["user_id"], "bob");
        assert_eq!(events[5]["previous_handle"], Value::Null);
        assert_eq!(events[4]["handle"], events[5]["handle"]);
        // Login as another user: the previous user's session is logged out first.
        login(&c, "cy").await;
        let events = all_events(&b).await;
        assert_eq!(kinds(&events[6..]), ["logout", "created", "login"]);
        assert_eq!(events[6]["user_id"], "bob");
        assert_eq!(events[8]["user_id"], "cy");
    }

    pub async fn logout_all_revoke_and_eviction_each_end_once(setup: Setup) {
        let fx = Fixture::with(setup, |c| events_on(c).max_sessions_per_user(Some(2))).await;
        let tabs: Vec<Browser> = (0..2).map(|_| fx.browser()).collect();
        for t in &tabs {
            login(t, "ann").await;
        }
        // A third login over the limit of 2 evicts the least recently used.
        let third = fx.browser();
        login(&third, "ann").await;
        let list = third.get("/sessions").await.json();
        assert_eq!(list.as_array().unwrap().len(), 2);
        let other = list
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["current"] == json!(false))
            .unwrap()["handle"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            third.delete(&format!("/sessions/{other}")).await.status,
            204
        );
        let fourth = fx.browser();
        login(&fourth, "ann").await;
        assert_eq!(third.post("/logout-all", None).await.status, 204);
        let events = all_events(&third).await;
        let ends = ends_by_handle(&events);
        let count = |k: &str| ends.values().flatten().filter(|e| *e == k).count();
        // The demo reports an eviction as a revoke with its cause (the contract's types).
        assert_eq!(count("revoked"), 2, "{events:#?}");
        let evicted: Vec<&Value> = events
            .iter()
            .filter(|e| e["cause"] == "device_limit")
            .collect();
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0]["type"], "revoked");
        let core = fx.manager.read_events(None, 100).await.unwrap();
        assert_eq!(
            core.events
                .iter()
                .filter(|e| e.kind == EventKind::Evicted)
                .count(),
            1,
            "the API names it"
        );
        assert_eq!(count("logout_all"), 2, "one per ended session");
        assert!(
            ends.values().all(|v| v.len() == 1),
            "one end per session: {ends:?}"
        );
        for e in &events {
            assert_eq!(e["user_id"], "ann", "{e}");
        }
        assert_eq!(
            ends.get(&other).map(Vec::as_slice),
            Some(&["revoked".to_string()][..])
        );
    }

    /// Two instances behind one store: each reads the other's events, and an expiry yields
    /// exactly one `expired` whoever sweeps.
    pub async fn two_instances_see_each_others_events_and_one_expired_each(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            events_on(c)
                .idle_timeout(Duration::from_secs(2))
                .touch_interval(Duration::from_secs(1))
        })
        .await;
        let second_config = config(|c| {
            c.lifecycle_events(true)
                .instance_name("app-2")
                .expiry_sweep_interval(Duration::from_millis(200))
                .idle_timeout(Duration::from_secs(2))
                .touch_interval(Duration::from_secs(1))
        });
        let second = fx.sibling(second_config).await;
        let mut handles = Vec::new();
        for i in 0..6 {
            let b = if i % 2 == 0 {
                fx.browser()
            } else {
                fx.browser().pointed_at(&second)
            };
            if i < 3 {
                login(&b, &format!("u{i}")).await;
            } else {
                b.put("/session", json!({"n": i})).await;
            }
            handles.push(b);
        }
        let on_second = fx.browser().pointed_at(&second);
        let events = events_until(&on_second, Duration::from_secs(20), |ev| {
            kinds(ev).iter().filter(|k| **k == "expired").count() == 6
        })
        .await;
        let instances: std::collections::HashSet<&str> = events
            .iter()
            .filter(|e| e["type"] == "created")
            .map(|e| e["instance"].as_str().unwrap())
            .collect();
        assert_eq!(
            instances.len(),
            2,
            "both instances' events, read on one: {events:#?}"
        );
        // Both read the same stream.
        assert_eq!(all_events(&fx.browser()).await, events);
        let ends = ends_by_handle(&events);
        assert_eq!(ends.len(), 6);
        assert!(
            ends.values().all(|v| v == &["expired".to_string()]),
            "{ends:?}"
        );
        let expired_users: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "expired")
            .map(|e| &e["user_id"])
            .collect();
        assert_eq!(
            expired_users.iter().filter(|u| u.is_string()).count(),
            3,
            "a logged-in session's expiry names its user: {events:#?}"
        );
        // Nothing more comes: the sweepers keep running and publish no second expiry.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(all_events(&on_second).await.len(), events.len());
        if let Some(server) = &fx.server {
            assert_eq!(
                server.cmd(&["ZCARD", "{events}:expiry"]).int(),
                0,
                "nothing tracked is left"
            );
        }
    }

    /// A session that stays in use is not reported expired when its first expected expiry
    /// passes (the sweeper finds it alive and looks again later); once left alone, it is.
    pub async fn an_expiry_is_published_by_the_sweeper_alone(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            events_on(c)
                .idle_timeout(Duration::from_secs(2))
                .touch_interval(Duration::from_secs(1))
        })
        .await;
        let b = fx.browser();
        login(&b, "ann").await;
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(b.get("/me").await.status, 200, "kept alive");
        }
        assert!(
            !kinds(&all_events(&b).await).contains(&"expired"),
            "alive past its first expected expiry"
        );
        let events = events_until(&b, Duration::from_secs(10), |ev| {
            kinds(ev).contains(&"expired")
        })
        .await;
        assert_eq!(kinds(&events), ["created", "login", "expired"]);
        assert_eq!(events[2]["handle"], events[1]["handle"]);
        assert_eq!(events[2]["user_id"], "ann");
        // A logout-all after the expiry ends nothing and publishes nothing more.
        let again = fx.browser();
        login(&again, "ann").await;
        assert_eq!(again.post("/logout-all", None).await.status, 204);
        let events = all_events(&b).await;
        assert_eq!(kinds(&events[3..]), ["created", "login", "logout_all"]);
        assert!(ends_by_handle(&events).values().all(|v| v.len() == 1));
    }

    /// Many sessions ended right when they expire while sweeps run on two instances: each has
    /// exactly one end, `logout` or `expired`.
    pub async fn a_logout_racing_expiry_publishes_one_end(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            events_on(c)
                .idle_timeout(Duration::from_secs(1))
                .touch_interval(Duration::from_millis(500))
                .expiry_sweep_interval(Duration::from_millis(100))
        })
        .await;
        let other = SessionManager::new(
            fx.store.clone(),
            config(|c| {
                c.lifecycle_events(true)
                    .instance_name("app-2")
                    .idle_timeout(Duration::from_secs(1))
                    .touch_interval(Duration::from_millis(500))
            }),
        );
        let mut browsers = Vec::new();
        for _ in 0..20 {
            let b = fx.browser();
            b.put("/session", json!({"x": 1})).await;
            browsers.push(b);
        }
        tokio::time::sleep(Duration::from_millis(950)).await;
        let sweeping = tokio::spawn({
            let other = other.clone();
            async move {
                for _ in 0..20 {
                    other.sweep_expired().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        let logouts: Vec<_> = browsers
            .iter()
            .map(|b| {
                let b = b.fork();
                tokio::spawn(async move { b.post("/logout", None).await.status })
            })
            .collect();
        for l in logouts {
            assert_eq!(l.await.unwrap(), 204);
        }
        sweeping.await.unwrap();
        let events = events_until(&browsers[0], Duration::from_secs(10), |ev| {
            ends_by_handle(ev).len() == 20
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let events = {
            let later = all_events(&browsers[0]).await;
            assert_eq!(later.len(), events.len(), "no second end later");
            later
        };
        let ends = ends_by_handle(&events);
        assert!(
            ends.values().all(|v| v.len() == 1),
            "exactly one end per session: {ends:?}"
        );
    }

    pub async fn a_cursor_resumes_without_loss(setup: Setup) {
        let fx = Fixture::with(setup, events_on).await;
        for i in 0..7 {
            login(&fx.browser(), &format!("u{i}")).await;
        }
        let first = fx.manager.read_events(None, 5).await.unwrap();
        assert_eq!(first.events.len(), 5);
        assert!(!first.missed);
        // A consumer restarts (another manager, as after a deploy) with the cursor it kept.
        let restarted = SessionManager::new(fx.store.clone(), config(events_on));
        let rest = restarted
            .read_events(Some(&first.cursor), 100)
            .await
            .unwrap();
        assert_eq!(rest.events.len(), 9, "14 events in all");
        let mut all: Vec<_> = first.events.iter().chain(&rest.events).cloned().collect();
        let cursors: Vec<&str> = all.iter().map(|e| e.cursor.as_str()).collect();
        let mut sorted = cursors.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 14, "no duplicate");
        assert_eq!(all.iter().filter(|e| e.kind == EventKind::Login).count(), 7);
        let empty = restarted
            .read_events(Some(&rest.cursor), 100)
            .await
            .unwrap();
        assert!(empty.events.is_empty());
        assert_eq!(empty.cursor, rest.cursor, "an empty page keeps the cursor");
        all.clear();
        assert!(matches!(
            fx.manager.read_events(Some("not-a-cursor"), 10).await,
            Err(Error::InvalidCursor(_))
        ));
        let r = fx
            .browser()
            .admin(ADMIN_TOKEN)
            .get("/admin/events?after=zzz")
            .await;
        assert_eq!(r.status, 400);
        // Events off: a clear error, never an empty answer.
        let off = SessionManager::new(fx.store.clone(), config(|c| c));
        assert!(matches!(
            off.read_events(None, 10).await,
            Err(Error::EventsOff)
        ));
        assert!(matches!(off.sweep_expired().await, Err(Error::EventsOff)));
    }

    /// Issue #23 (14): the largest stream id as a cursor was a 500 (Redis refuses it as an
    /// exclusive start); it is a malformed cursor like any other. Its neighbours still read.
    pub async fn an_extreme_cursor_is_a_400(setup: Setup) {
        let fx = Fixture::with(setup, events_on).await;
        let b = fx.browser();
        login(&b, "alice").await;
        let admin = b.admin(ADMIN_TOKEN);
        const MAX: u64 = u64::MAX;
        for bad in [
            format!("{MAX}-{MAX}"),
            format!("{MAX}-18446744073709551616"),
            "18446744073709551616-0".into(),
            "-1".into(),
            "1-".into(),
            "1--1".into(),
        ] {
            let r = admin.get(&format!("/admin/events?after={bad}")).await;
            assert_eq!(r.status, 400, "{bad}: {r:?}");
        }
        for fine in [
            format!("{MAX}-{}", MAX - 1),
            format!("{MAX}"),
            format!("{}-{MAX}", MAX - 1),
        ] {
            let r = admin.get(&format!("/admin/events?after={fine}")).await;
            assert_eq!(r.status, 200, "{fine}: {r:?}");
            assert_eq!(r.json()["events"], json!([]), "{fine}");
        }
        assert!(matches!(
            fx.manager
                .read_events(Some(&format!("{MAX}-{MAX}")), 10)
                .await,
            Err(Error::InvalidCursor(_))
        ));
    }

    pub async fn a_reader_behind_the_retention_is_told(setup: Setup) {
        let fx = Fixture::with(setup, |c| events_on(c).events_retention(10)).await;
        let m = &fx.manager;
        let s = m.start(None::<&str>);
        s.login("first").await.unwrap();
        assert!(s.finish(200).await.error.is_none());
        let first = m.read_events(None, 1).await.unwrap();
        // `MAXLEN ~` trims whole stream nodes (100 entries by default): past a few hundred
        // events, the first ones are gone.
        for i in 0..160 {
            let s = m.start(None::<&str>);
            s.login(&format!("u{i}")).await.unwrap();
            assert!(s.finish(200).await.error.is_none());
        }
        let behind = m.read_events(Some(&first.cursor), 10).await.unwrap();
        assert!(behind.missed, "the reader is told it missed events");
        let page = m.read_events(None, 1000).await.unwrap();
        assert!(
            !page.missed,
            "reading from the oldest retained misses nothing it can see"
        );
        assert!(page.events.len() < 322, "trimmed: {}", page.events.len());
        let tail = m
            .read_events(Some(&page.events[0].cursor), 10)
            .await
            .unwrap();
        assert!(!tail.missed, "a reader inside the retention is not");
        // The stream says so once, then goes on with the oldest retained.
        use futures_util::StreamExt as _;
        let mut stream = m.events(Some(first.cursor.clone()));
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(item, Err(Error::EventsMissed)), "{item:?}");
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next.cursor, page.events[0].cursor);
    }

    pub async fn the_stream_and_the_callback_deliver_in_order(setup: Setup) {
        use futures_util::StreamExt as _;
        let fx = Fixture::with(setup, events_on).await;
        let reader = SessionManager::new(fx.store.clone(), config(events_on));
        let mut stream = reader.events(None);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sub = reader.on_event(None, {
            let seen = seen.clone();
            move |e| seen.lock().unwrap().push(e.kind)
        });
        let b = fx.browser();
        login(&b, "ann").await;
        assert_eq!(b.post("/logout", None).await.status, 204);
        let mut got = Vec::new();
        while got.len() < 3 {
            let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .unwrap();
            got.push(e.kind);
        }
        assert_eq!(
            got,
            [EventKind::Created, EventKind::Login, EventKind::Logout]
        );
        let start = std::time::Instant::now();
        while seen.lock().unwrap().len() < 3 {
            assert!(start.elapsed() < Duration::from_secs(10), "callback");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(*seen.lock().unwrap(), got);
        drop(sub);
        assert!(EventKind::Logout.ends_session() && !EventKind::Login.ends_session());
    }

    pub async fn admin_events_need_the_token(setup: Setup) {
        let fx = Fixture::with(setup, events_on).await;
        let b = fx.browser();
        login(&b, "ann").await;
        assert_eq!(b.get("/admin/events").await.status, 401);
        assert_eq!(b.admin("wrong").get("/admin/events").await.status, 401);
        let r = b.admin(ADMIN_TOKEN).get("/admin/events").await;
        assert_eq!(r.status, 200);
        let page = r.json();
        assert_eq!(
            kinds(page["events"].as_array().unwrap()),
            ["created", "login"]
        );
        let cursor = page["cursor"].as_str().unwrap();
        let next = b
            .admin(ADMIN_TOKEN)
            .get(&format!("/admin/events?after={cursor}"))
            .await
            .json();
        assert_eq!(next["events"], json!([]));
        assert_eq!(next["cursor"], cursor);
    }

    /// Logins of one user while logout-everywhere runs from another device: every session a
    /// login made has exactly one end (the logout-all that ended it, or the final one), never
    /// none and never two.
    pub async fn logins_racing_logout_all_each_end_once(setup: Setup) {
        let fx = Fixture::with(setup, events_on).await;
        for _ in 0..3 {
            let mut tasks = Vec::new();
            for _ in 0..6 {
                let b = fx.browser();
                tasks.push(tokio::spawn(async move {
                    let r = b.post("/login", Some(json!({ "user_id": "ann" }))).await;
                    assert!([200, 409].contains(&r.status), "{r:?}");
                }));
            }
            let ender = fx.browser();
            login(&ender, "ann").await;
            tasks.push(tokio::spawn(async move {
                assert_eq!(ender.post("/logout-all", None).await.status, 204);
            }));
            for t in tasks {
                t.await.unwrap();
            }
        }
        let last = fx.browser();
        login(&last, "ann").await;
        assert_eq!(last.post("/logout-all", None).await.status, 204);
        let events = all_events(&last).await;
        let ends = ends_by_handle(&events);
        for e in events.iter().filter(|e| e["type"] == "login") {
            let h = e["handle"].as_str().unwrap();
            assert_eq!(
                ends.get(h).map(Vec::len),
                Some(1),
                "session {h} has exactly one end: {:?}",
                ends.get(h)
            );
        }
        assert!(ends.values().all(|v| v.len() == 1), "{ends:?}");
    }

    /// A login tracks its new id before the key exists; if the login is undone and even the
    /// untrack fails, the sweeper finds the id gone and publishes nothing for it (it never
    /// existed), while an id tracked after its creation that is gone is an expiry.
    pub async fn a_login_undone_after_its_tracking_is_never_expired(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            events_on(c).expiry_sweep_interval(Duration::from_secs(600))
        })
        .await;
        tessera_core::test_hooks::track(&fx.manager, "never-created-login", true)
            .await
            .unwrap();
        tessera_core::test_hooks::track(&fx.manager, "created-then-gone", false)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(fx.manager.sweep_expired().await.unwrap(), 1);
        let page = fx.manager.read_events(None, 10).await.unwrap();
        assert_eq!(page.events.len(), 1, "{:?}", page.events);
        assert_eq!(page.events[0].kind, EventKind::Expired);
        assert_ne!(page.events[0].handle, "", "the created one's");
        assert_eq!(fx.manager.sweep_expired().await.unwrap(), 0, "both settled");
        if let Some(server) = &fx.server {
            assert_eq!(server.cmd(&["ZCARD", "{events}:expiry"]).int(), 0);
            assert_eq!(server.cmd(&["HLEN", "{events}:pending"]).int(), 0);
        }
    }

    pub async fn ending_by_query_publishes_revoked(setup: Setup) {
        let fx = Fixture::with(setup, |c| tessera_tests::fixture::indexed(events_on(c))).await;
        for i in 0..3 {
            let b = fx.browser();
            b.put(
                "/session",
                json!({"tenant": if i < 2 { "acme" } else { "globex" }}),
            )
            .await;
        }
        let r = fx
            .browser()
            .admin(ADMIN_TOKEN)
            .delete("/admin/sessions?tenant=acme")
            .await;
        assert_eq!(r.json(), json!({"ended": 2}));
        let events = all_events(&fx.browser()).await;
        assert_eq!(
            kinds(&events),
            ["created", "created", "created", "revoked", "revoked"]
        );
        assert!(ends_by_handle(&events).values().all(|v| v.len() == 1));
    }
}

/// A session's own expiry ("remember me") shorter than the idle timeout: its `expired` is due
/// at its own expiry, whatever gave it that expiry. The soak found such sessions published up
/// to an idle timeout late (README, *The soak*): their tracking took the configured idle
/// timeout, not the session's.
mod own_expiry {
    use super::*;
    use tessera_core::Expiry;

    const COOKIE: &str = "__Host-tessera";
    const OWN: Duration = Duration::from_secs(2);

    /// Four sessions given a 2-second expiry under a one-minute idle timeout, each a way the
    /// expiry is set: a login that creates the session, a login that moves a stored one, a
    /// first save (no login), and `set_expiry` on a session stored without one. Each one's
    /// `expired` comes within the sweep bound of its own expiry, not a minute later.
    async fn a_short_own_expiry_is_published_on_time(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            events_on(c)
                .idle_timeout(Duration::from_secs(60))
                .touch_interval(Duration::from_millis(500))
        })
        .await;
        let remember = format!("/login?remember={}", OWN.as_secs());
        let created = fx.browser();
        let r = created
            .post(&remember, Some(json!({"user_id": "ann"})))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let moved = fx.browser();
        assert_eq!(moved.put("/session", json!({"cart": 1})).await.status, 200);
        let r = moved.post(&remember, Some(json!({"user_id": "bob"}))).await;
        assert_eq!(r.status, 200, "{r:?}");
        let first_save = fx.manager.start(None::<&str>);
        first_save
            .set_expiry(Expiry::Persistent(OWN))
            .await
            .unwrap();
        first_save.insert("x", &1).await.unwrap();
        first_save.save().await.unwrap();
        let later = fx.browser();
        login(&later, "cy").await;
        let cookie = format!("{COOKIE}={}", later.cookie(COOKIE).unwrap());
        let stored = fx.manager.start([cookie.as_str()]);
        stored.set_expiry(Expiry::Persistent(OWN)).await.unwrap();
        stored.save().await.unwrap();
        let set_up = std::time::Instant::now();
        // The last of them expires 2 s from now; the sweep runs every 200 ms.
        let limit = OWN + Duration::from_secs(3);
        let events = events_until(&created, limit, |ev| {
            kinds(ev).iter().filter(|k| **k == "expired").count() == 4
        })
        .await;
        assert!(set_up.elapsed() < limit, "{:?}", set_up.elapsed());
        // One end per session, and it is `expired`: each handle the sessions last had.
        let previous: Vec<&Value> = events.iter().map(|e| &e["previous_handle"]).collect();
        let last_handles: Vec<&str> = events
            .iter()
            .filter(|e| ["created", "login"].contains(&e["type"].as_str().unwrap()))
            .map(|e| e["handle"].as_str().unwrap())
            .filter(|h| !previous.iter().any(|p| p.as_str() == Some(*h)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(last_handles.len(), 4, "{events:#?}");
        let ends = ends_by_handle(&events);
        for h in last_handles {
            assert_eq!(
                ends.get(h).map(Vec::as_slice),
                Some(&["expired".to_string()][..])
            );
        }
    }

    tessera_tests::per_backend!(by_case [memory, redis7, cluster] => self::{a_short_own_expiry_is_published_on_time});
}

/// Expiries under keyspace notifications, and on a server that refuses `CONFIG`.
mod notifications {
    use super::*;
    use fred::interfaces::ClientLike as _;
    use tessera_tests::{Backend, ServerKind};

    /// A session idle for 1 s, with a sweep interval of a minute: where the server reports
    /// expired keys, its `expired` event comes within seconds anyway.
    async fn expired_soon_after(backend: Backend) {
        let fx = Fixture::with(backend, |c| {
            c.lifecycle_events(true)
                .expiry_sweep_interval(Duration::from_secs(60))
                .idle_timeout(Duration::from_secs(1))
                .touch_interval(Duration::from_millis(500))
        })
        .await;
        for node in fx.server().nodes() {
            assert_eq!(
                node.cmd(&["CONFIG", "SET", "notify-keyspace-events", "Ex"])
                    .text()
                    .as_deref(),
                Some("OK")
            );
        }
        let b = fx.browser();
        login(&b, "ann").await;
        let start = std::time::Instant::now();
        let events = events_until(&b, Duration::from_secs(8), |ev| {
            kinds(ev).contains(&"expired")
        })
        .await;
        assert_eq!(kinds(&events), ["created", "login", "expired"]);
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "well inside the one-minute sweep interval"
        );
    }

    tessera_tests::per_backend!(by_case [redis7, valkey] => self::{expired_soon_after});

    /// Notifications never hold back the periodic sweep, which alone finds what they do not
    /// report (here a key deleted behind tessera's back, as an eviction does).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_of_notifications_does_not_starve_the_sweep() {
        let fx = Fixture::with(Backend::Redis(ServerKind::Redis7), |c| {
            c.lifecycle_events(true)
                .expiry_sweep_interval(Duration::from_millis(500))
                .idle_timeout(Duration::from_secs(1))
                .touch_interval(Duration::from_millis(500))
        })
        .await;
        fx.server()
            .cmd(&["CONFIG", "SET", "notify-keyspace-events", "Ex"]);
        // Expiries come every 100 ms from about 1 s on (each reported).
        let churn = {
            let b = fx.browser();
            tokio::spawn(async move {
                loop {
                    let fresh = b.fork();
                    fresh.put("/session", json!({"y": 1})).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Then a session whose key goes without a notification (deleted behind tessera's
        // back, as an eviction does): only the periodic sweep can find it, after about 1 s.
        let victim = fx.browser();
        let r = victim.put("/session", json!({"victim": true})).await;
        let sk = fx
            .server()
            .session_keys()
            .into_iter()
            .find(|k| fx.server().cmd(&["HEXISTS", k, "victim"]).int() == 1)
            .unwrap_or_else(|| panic!("the victim's key: {r:?}"));
        assert_eq!(fx.server().cmd(&["DEL", &sk]).int(), 1);
        let handle = {
            let events = all_events(&victim).await;
            let created: Vec<&Value> = events.iter().filter(|e| e["type"] == "created").collect();
            created.last().unwrap()["handle"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let start = std::time::Instant::now();
        loop {
            let events = all_events(&victim).await;
            if events
                .iter()
                .any(|e| e["type"] == "expired" && e["handle"] == handle.as_str())
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(6),
                "the periodic sweep must still run under a stream of notifications"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        churn.abort();
    }

    /// A key that is not a hash at a session's name does not stop the sweep.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_odd_key_does_not_stop_the_sweep() {
        let fx = Fixture::with(Backend::Redis(ServerKind::Redis7), |c| {
            c.lifecycle_events(true)
                .expiry_sweep_interval(Duration::from_secs(600))
                .idle_timeout(Duration::from_secs(1))
                .touch_interval(Duration::from_millis(500))
        })
        .await;
        let odd = fx.browser();
        odd.put("/session", json!({"x": 1})).await;
        let key = fx.only_session_key();
        fx.server().cmd(&["SET", &key, "not a hash"]);
        let other = fx.browser();
        other.put("/session", json!({"x": 2})).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let published = fx.manager.sweep_expired().await.unwrap();
        assert_eq!(published, 1, "the other session's expiry");
        let events = all_events(&other).await;
        assert_eq!(kinds(&events), ["created", "created", "expired"]);
        assert_eq!(fx.server().cmd(&["ZCARD", "{events}:expiry"]).int(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_reports_expiries_at_once_on_every_primary() {
        let fx = Fixture::with(Backend::Cluster, |c| {
            c.lifecycle_events(true)
                .expiry_sweep_interval(Duration::from_secs(60))
                .idle_timeout(Duration::from_secs(1))
                .touch_interval(Duration::from_millis(500))
        })
        .await;
        for node in fx.server().nodes() {
            node.cmd(&["CONFIG", "SET", "notify-keyspace-events", "Ex"]);
        }
        // Enough sessions that every primary holds some.
        let browsers: Vec<Browser> = (0..12).map(|_| fx.browser()).collect();
        for b in &browsers {
            b.put("/session", json!({"x": 1})).await;
        }
        let events = events_until(&browsers[0], Duration::from_secs(10), |ev| {
            kinds(ev).iter().filter(|k| **k == "expired").count() == 12
        })
        .await;
        assert!(ends_by_handle(&events).values().all(|v| v.len() == 1));
    }

    /// A managed-Redis-like user that may not run `CONFIG`: no notifications, and the sweep
    /// alone still publishes every expiry within its interval.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_config_the_sweep_alone_reports_expiries() {
        let server = tessera_tests::Server::start(ServerKind::Redis7);
        let acl = server.cmd(&[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">app-pass",
            "~*",
            "&*",
            "+@all",
            "-@admin",
            "-config",
        ]);
        assert_eq!(acl.text().as_deref(), Some("OK"));
        let url = format!("redis://app:app-pass@127.0.0.1:{}", server.port());
        let store = tessera_core::Store::redis(&url).await.unwrap();
        let denied = store
            .redis_pool()
            .unwrap()
            .next()
            .custom::<fred::types::Value, _>(
                fred::types::CustomCommand::new_static(
                    "CONFIG",
                    fred::types::ClusterHash::Random,
                    false,
                ),
                vec!["SET", "notify-keyspace-events", "Ex"],
            )
            .await;
        assert!(denied.is_err(), "the app may not turn notifications on");
        let manager = SessionManager::new(
            store,
            config(|c| {
                c.lifecycle_events(true)
                    .expiry_sweep_interval(Duration::from_millis(500))
                    .idle_timeout(Duration::from_secs(1))
                    .touch_interval(Duration::from_millis(500))
            }),
        );
        let s = manager.start(None::<&str>);
        s.login("ann").await.unwrap();
        assert!(s.finish(200).await.error.is_none());
        let start = std::time::Instant::now();
        loop {
            let page = manager.read_events(None, 100).await.unwrap();
            let got: Vec<EventKind> = page.events.iter().map(|e| e.kind).collect();
            if got.contains(&EventKind::Expired) {
                assert_eq!(
                    got,
                    [EventKind::Created, EventKind::Login, EventKind::Expired]
                );
                break;
            }
            // Expiry after 1 s, then within two sweep intervals (1 s), with slack for CI.
            assert!(start.elapsed() < Duration::from_secs(6), "{got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What events and the trail cost per request, in commands the server ran (`INFO
/// commandstats`), with events off and on, on Redis 7. Printed for BENCHMARKS.md:
/// `scripts/test.sh -p tessera-tests --test events costs -- --nocapture`.
mod costs {
    use super::*;
    use std::collections::BTreeMap;
    use tessera_tests::{Backend, ServerKind};

    async fn run(events: bool) -> BTreeMap<&'static str, BTreeMap<String, u64>> {
        let fx = Fixture::with(Backend::Redis(ServerKind::Redis7), |c| {
            c.lifecycle_events(events)
                .expiry_sweep_interval(Duration::from_secs(600))
        })
        .await;
        let s = fx.server();
        let b = fx.browser();
        // The first request starts the sweeper, which asks the server once whether it sends
        // keyspace notifications (`CONFIG GET`): not a per-request cost.
        assert_eq!(b.get("/noop").await.status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut out = BTreeMap::new();
        let mut step = |name: &'static str, stats: BTreeMap<String, u64>| {
            out.insert(name, stats);
        };
        s.reset_stats();
        b.put("/session", json!({"tenant": "acme"})).await;
        step("1 new session (first write)", s.command_stats());
        s.reset_stats();
        assert_eq!(b.get("/me").await.status, 200);
        step("2 read", s.command_stats());
        s.reset_stats();
        b.put("/session", json!({"a": 1})).await;
        step("3 write", s.command_stats());
        s.reset_stats();
        assert_eq!(
            b.post("/activity", Some(json!({"action": "x"})))
                .await
                .status,
            204
        );
        step("4 record only", s.command_stats());
        s.reset_stats();
        login(&b, "ann").await;
        step("5 login (rotation)", s.command_stats());
        s.reset_stats();
        assert_eq!(b.post("/logout", None).await.status, 204);
        step("6 logout", s.command_stats());
        out
    }

    fn total(m: &BTreeMap<String, u64>) -> u64 {
        // Commands the client sent: scripts and plain commands (what runs inside a script is
        // counted by the server too, but costs no round trip).
        m.get("evalsha").copied().unwrap_or(0)
            + m.iter()
                .filter(|(k, _)| {
                    ["hgetall", "del", "zadd", "zrem", "zrangebyscore", "hmget"]
                        .contains(&k.as_str())
                })
                .map(|(_, v)| *v)
                .sum::<u64>()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_request() {
        let off = run(false).await;
        let on = run(true).await;
        println!("| request | events off: evalsha / all | events on: evalsha / all | extra |");
        println!("|---|---|---|---|");
        for (name, o) in &off {
            let n = &on[name];
            let sum = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
            println!(
                "| {name} | {} / {} | {} / {} | {:+} scripts |",
                o.get("evalsha").unwrap_or(&0),
                sum(o),
                n.get("evalsha").unwrap_or(&0),
                sum(n),
                *n.get("evalsha").unwrap_or(&0) as i64 - *o.get("evalsha").unwrap_or(&0) as i64
            );
        }
        let extra = |name: &str| {
            on[name].get("evalsha").copied().unwrap_or(0) as i64
                - off[name].get("evalsha").copied().unwrap_or(0) as i64
        };
        assert_eq!(
            extra("1 new session (first write)"),
            1,
            "created: one events script"
        );
        assert_eq!(extra("2 read"), 0, "a read costs nothing more");
        assert_eq!(extra("3 write"), 0, "a write costs nothing more");
        assert_eq!(extra("4 record only"), 0);
        assert_eq!(
            extra("5 login (rotation)"),
            2,
            "login: the new id's tracking (alongside the index add) and its event"
        );
        assert_eq!(
            off["6 logout"].get("del").copied().unwrap_or(0) + off["6 logout"].get("evalsha").copied().unwrap_or(0) + 1,
            on["6 logout"].get("evalsha").copied().unwrap_or(0),
            "logout: the delete becomes a script that leaves the mark, plus one events script: {:?} vs {:?}",
            off["6 logout"],
            on["6 logout"]
        );
        assert_eq!(total(&on["2 read"]), total(&off["2 read"]));
        assert_eq!(on["2 read"], off["2 read"], "a read is exactly the same");
        // The trail: a record rides the request's one write script.
        assert_eq!(on["4 record only"].get("evalsha"), Some(&1));
    }
}
