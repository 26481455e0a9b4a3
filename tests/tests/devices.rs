//! Users and their devices: the `user:<id>:sessions` index, logout-all, device list, revoke,
//! device limit. Written once, run against memory, Redis 7, Redis 8.2 and Valkey 8.1.

use serde_json::{json, Value};
use std::time::Duration;
use tessera_tests::{Browser, Fixture, Setup};

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] =>
    device_list_follows_login_rotation_and_logout,
    logout_all_ends_every_session_of_the_user_only,
    logout_others_keeps_the_current_session,
    revoke_ends_only_own_sessions,
    device_limit_ends_the_least_recently_used,
    logins_racing_logout_all_are_never_orphaned,
    nothing_of_a_user_is_left_after_their_sessions_expire,
    account_endpoints_need_a_login,
    a_write_after_logout_all_goes_to_a_fresh_session,
);

/// The index's own rules, seen in the server's sorted set (expired members are planted there
/// with ZADD, as sessions that expired without a logout leave them).
mod on_a_server {
    use super::cases;
    tessera_tests::per_backend!([redis7, redis8, valkey] =>
        the_index_is_pruned_only_past_its_threshold,
        the_device_limit_never_counts_expired_members,
        the_index_key_lives_until_its_longest_bound,
    );
}

/// A logout-all that finds some of its user's sessions already gone (one expired, one deleted
/// behind tessera's back as an eviction does) removes their index entries too, so nothing of
/// the user is left; they used to stay until their bound (twice the longest remember-me). A
/// login in flight is still never orphaned: `logins_racing_logout_all_are_never_orphaned`.
mod gone_members {
    use super::*;
    use tessera_core::EventKind;

    async fn logout_all_removes_the_entries_of_sessions_already_gone(setup: Setup) {
        // Without events (plain DELs) and with them (take.lua, and each gone one's `expired`
        // published by the logout-all, once: the sweep runs once a minute here).
        for events in [false, true] {
            let fx = Fixture::with(setup, |c| {
                c.lifecycle_events(events)
                    .expiry_sweep_interval(Duration::from_secs(60))
                    .touch_interval(Duration::from_millis(200))
            })
            .await;
            let s = fx.server();
            let (a, expiring, evicted) = (fx.browser(), fx.browser(), fx.browser());
            login(&a, "ann").await;
            let r = expiring
                .post("/login?remember=1", Some(json!({"user_id": "ann"})))
                .await;
            assert_eq!(r.status, 200, "{r:?}");
            let before = s.session_keys();
            login(&evicted, "ann").await;
            let key = s
                .session_keys()
                .into_iter()
                .find(|k| !before.contains(k))
                .unwrap();
            assert_eq!(s.cmd(&["DEL", &key]).int(), 1);
            tokio::time::sleep(Duration::from_millis(1300)).await; // `expiring` expires
            assert_eq!(expiring.get("/me").await.status, 401);
            assert_eq!(zcard(s, "ann"), 3, "the index still holds all three");
            let own = devices(&a).await;
            assert_eq!(own.len(), 1, "{own:?}");
            assert_eq!(a.post("/logout-all", None).await.status, 204);
            assert_eq!(
                s.cmd(&["EXISTS", "user:ann:sessions"]).int(),
                0,
                "[events {events}] nothing of ann is left in the index: {:?}",
                s.cmd(&["ZRANGE", "user:ann:sessions", "0", "-1"])
            );
            assert!(s.session_keys().is_empty());
            if events {
                let page = fx.manager.read_events(None, 100).await.unwrap();
                let mut ends: Vec<(String, EventKind)> = page
                    .events
                    .iter()
                    .filter(|e| e.kind.ends_session())
                    .map(|e| (e.handle.clone(), e.kind))
                    .collect();
                ends.sort_by(|x, y| x.0.cmp(&y.0));
                let own = own[0]["handle"].as_str().unwrap();
                assert_eq!(ends.len(), 3, "one end each: {ends:?}");
                for (handle, kind) in &ends {
                    let want = if handle == own {
                        EventKind::LogoutAll
                    } else {
                        EventKind::Expired
                    };
                    assert_eq!(*kind, want, "{ends:?}");
                }
            }
        }
    }

    tessera_tests::per_backend!(by_case [redis7, cluster] => self::{
        logout_all_removes_the_entries_of_sessions_already_gone
    });
}

/// A login's new session and its index entry are made together: one script on one server
/// (standalone, Sentinel), two on a cluster (the two keys are two slots).
mod together {
    use super::cases;
    tessera_tests::per_backend!([redis7, valkey, sentinel, cluster] =>
        a_login_whose_index_entry_fails_leaves_no_session,
    );
}

/// Members of `user:<user>:sessions` whose bound passed long ago.
fn plant_expired(s: &tessera_tests::Topology, user: &str, from: usize, n: usize) {
    let key = format!("user:{user}:sessions");
    let mut args = vec!["ZADD".to_string(), key];
    for i in from..from + n {
        args.push((1_000 + i).to_string());
        args.push(format!("expired{i}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(s.cmd(&args).int(), n as i64);
}

fn zcard(s: &tessera_tests::Topology, user: &str) -> i64 {
    s.cmd(&["ZCARD", &format!("user:{user}:sessions")]).int()
}

fn pttl(s: &tessera_tests::Topology, user: &str) -> i64 {
    s.cmd(&["PTTL", &format!("user:{user}:sessions")]).int()
}

async fn login(b: &Browser, user: &str) {
    let r = b.post("/login", Some(json!({ "user_id": user }))).await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn devices(b: &Browser) -> Vec<Value> {
    let r = b.get("/sessions").await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json().as_array().unwrap().clone()
}

mod cases {
    use super::*;

    /// Issue #23 (16): a value written after `logout_all` in the same request (a flash
    /// message) goes to a fresh anonymous session under a new id, with a cookie for it; the
    /// ended sessions stay ended. (The adapters already did this; the tower-sessions store did
    /// not, see `tower_sessions::a_write_after_logout_all_goes_to_a_fresh_session_or_fails`.)
    pub async fn a_write_after_logout_all_goes_to_a_fresh_session(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let (phone, laptop) = (fx.browser(), fx.browser());
        login(&phone, "ada").await;
        login(&laptop, "ada").await;
        let old = phone.cookie("__Host-tessera").unwrap();
        let r = phone.post("/logout-all-then-flash", None).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json(), json!(2));
        let new = phone
            .cookie("__Host-tessera")
            .expect("a cookie for the fresh session");
        assert_ne!(new, old, "never a cookie for the ended id");
        let me = phone.get("/me").await;
        assert_eq!(me.status, 200, "{me:?}");
        assert_eq!(me.json()["flash"], "logged out everywhere");
        assert!(me.json().get("user_id").is_none(), "anonymous: {me:?}");
        assert_eq!(
            laptop.get("/me").await.status,
            401,
            "the other device ended"
        );
        if let Some(t) = &fx.server {
            assert_eq!(t.session_keys().len(), 1, "only the fresh session");
        }
    }

    pub async fn device_list_follows_login_rotation_and_logout(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let phone = fx.browser().with_agent("phone/1.0");
        let laptop = fx.browser().with_agent("laptop/2.0");
        login(&phone, "ann").await;
        login(&laptop, "ann").await;
        let list = devices(&phone).await;
        assert_eq!(list.len(), 2, "{list:?}");
        let mine: Vec<&Value> = list.iter().filter(|d| d["current"] == true).collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0]["user_agent"], "phone/1.0");
        let agents: Vec<&str> = list
            .iter()
            .map(|d| d["user_agent"].as_str().unwrap())
            .collect();
        assert!(agents.contains(&"laptop/2.0"));
        for d in &list {
            let h = d["handle"].as_str().unwrap();
            assert_eq!(h.len(), 16);
            for c in [
                phone.cookie("__Host-tessera").unwrap(),
                laptop.cookie("__Host-tessera").unwrap(),
            ] {
                assert!(
                    !c.contains(h) && !h.contains(&c[..8]),
                    "a handle is not (part of) a session id"
                );
            }
            for field in ["created_at", "last_seen"] {
                let t = d[field].as_str().unwrap();
                assert!(
                    t.starts_with("20") && t.contains('T'),
                    "RFC 3339 {field}: {t}"
                );
            }
        }
        // Rotation keeps one entry per device; logout removes it.
        assert_eq!(phone.post("/cycle", None).await.status, 200);
        assert_eq!(devices(&laptop).await.len(), 2);
        assert_eq!(phone.post("/logout", None).await.status, 204);
        let list = devices(&laptop).await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["current"], true);
        if let Some(s) = &fx.server {
            assert_eq!(
                s.cmd(&["ZCARD", "user:ann:sessions"]).int(),
                1,
                "the index holds live sessions only"
            );
        }
    }

    pub async fn logout_all_ends_every_session_of_the_user_only(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let ann: Vec<Browser> = (0..3).map(|_| fx.browser()).collect();
        for br in &ann {
            login(br, "ann").await;
        }
        let bob = fx.browser();
        login(&bob, "bob").await;
        let r = ann[1].post("/logout-all", None).await;
        assert_eq!(r.status, 204, "{r:?}");
        assert!(
            r.set_cookies.iter().any(|c| c.contains("Max-Age=0")),
            "own cookie cleared"
        );
        for br in &ann {
            assert_eq!(br.get("/me").await.status, 401);
        }
        assert_eq!(
            bob.get("/me").await.status,
            200,
            "other users are untouched"
        );
        if let Some(s) = &fx.server {
            assert_eq!(s.cmd(&["EXISTS", "user:ann:sessions"]).int(), 0);
            assert_eq!(s.session_keys().len(), 1, "only bob's session is left");
        }
    }

    pub async fn logout_others_keeps_the_current_session(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let ann: Vec<Browser> = (0..3).map(|_| fx.browser()).collect();
        for br in &ann {
            login(br, "ann").await;
        }
        let r = ann[0].post("/logout-others", None).await;
        assert_eq!(r.json(), json!(2));
        assert_eq!(ann[0].get("/me").await.status, 200);
        assert_eq!(ann[1].get("/me").await.status, 401);
        assert_eq!(ann[2].get("/me").await.status, 401);
        assert_eq!(devices(&ann[0]).await.len(), 1);
    }

    pub async fn revoke_ends_only_own_sessions(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let (a1, a2, bob) = (fx.browser(), fx.browser(), fx.browser());
        login(&a1, "ann").await;
        login(&a2, "ann").await;
        login(&bob, "bob").await;
        let other = devices(&a1)
            .await
            .into_iter()
            .find(|d| d["current"] == false)
            .unwrap();
        let handle = other["handle"].as_str().unwrap().to_string();
        // Bob cannot revoke Ann's session, even knowing its handle.
        assert_eq!(bob.delete(&format!("/sessions/{handle}")).await.status, 404);
        assert_eq!(a2.get("/me").await.status, 200);
        assert_eq!(a1.delete("/sessions/not-a-handle").await.status, 404);
        assert_eq!(a1.delete(&format!("/sessions/{handle}")).await.status, 204);
        assert_eq!(a2.get("/me").await.status, 401);
        assert_eq!(a1.get("/me").await.status, 200);
        assert_eq!(
            a1.delete(&format!("/sessions/{handle}")).await.status,
            404,
            "already gone"
        );
        // Revoking one's own session is a logout.
        let own = devices(&a1).await[0]["handle"]
            .as_str()
            .unwrap()
            .to_string();
        let r = a1.delete(&format!("/sessions/{own}")).await;
        assert_eq!(r.status, 204);
        assert!(r.set_cookies.iter().any(|c| c.contains("Max-Age=0")));
        assert_eq!(a1.get("/me").await.status, 401);
    }

    pub async fn device_limit_ends_the_least_recently_used(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            c.max_sessions_per_user(Some(2))
                .touch_interval(Duration::from_millis(100))
        })
        .await;
        let (a, bb, c) = (fx.browser(), fx.browser(), fx.browser());
        login(&a, "ann").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        login(&bb, "ann").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            a.get("/me").await.status,
            200,
            "a is used again: b is now the least recent"
        );
        login(&c, "ann").await;
        assert_eq!(
            bb.get("/me").await.status,
            401,
            "the least recently used session ended"
        );
        assert_eq!(a.get("/me").await.status, 200);
        assert_eq!(c.get("/me").await.status, 200);
        assert_eq!(devices(&c).await.len(), 2);
    }

    pub async fn logins_racing_logout_all_are_never_orphaned(setup: Setup) {
        let fx = Fixture::new(setup).await;
        for round in 0..4 {
            let user = format!("racer{round}");
            let anchor = fx.browser();
            login(&anchor, &user).await;
            let browsers: Vec<Browser> = (0..30).map(|_| fx.browser()).collect();
            let mut tasks = Vec::new();
            for br in browsers.clone() {
                let user = user.clone();
                tasks.push(tokio::spawn(async move {
                    br.put("/session", json!({"pre": 1})).await;
                    br.post("/login", Some(json!({ "user_id": user })))
                        .await
                        .status
                }));
            }
            tokio::time::sleep(Duration::from_millis(5 + round * 5)).await;
            assert_eq!(anchor.post("/logout-all", None).await.status, 204);
            for t in tasks {
                let st = t.await.unwrap();
                assert!(st == 200 || st == 409, "login answered {st}");
            }
            // Every session still alive must be in the index: a second logout-all ends them all.
            let mut live = Vec::new();
            for br in &browsers {
                if br.get("/me").await.status == 200 {
                    live.push(br.clone());
                }
            }
            if let Some(first) = live.first() {
                assert_eq!(
                    devices(first).await.len(),
                    live.len(),
                    "every live session is listed (round {round})"
                );
                assert_eq!(first.post("/logout-all", None).await.status, 204);
            }
            for br in &live {
                assert_eq!(
                    br.get("/me").await.status,
                    401,
                    "an orphaned session survived logout-all (round {round})"
                );
            }
            if let Some(s) = &fx.server {
                for k in s.session_keys() {
                    assert_ne!(
                        s.text(&["HGET", &k, "__u"]),
                        Some(user.clone()),
                        "{k} of {user} outlived logout-all"
                    );
                }
            }
        }
    }

    pub async fn nothing_of_a_user_is_left_after_their_sessions_expire(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            c.idle_timeout(Duration::from_secs(1))
                .touch_interval(Duration::from_millis(200))
        })
        .await;
        let (a, bb) = (fx.browser(), fx.browser());
        login(&a, "ann").await;
        login(&bb, "ann").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(a.get("/me").await.status, 200); // a touch moves the bound too
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(a.get("/me").await.status, 401);
        assert_eq!(bb.get("/me").await.status, 401);
        if let Some(s) = &fx.server {
            assert_eq!(
                s.cmd(&["EXISTS", "user:ann:sessions"]).int(),
                1,
                "the index outlives its sessions by at most one idle timeout"
            );
            tokio::time::sleep(Duration::from_millis(1300)).await;
            assert_eq!(
                s.keys("*"),
                Vec::<String>::new(),
                "no key of the user is left"
            );
        }
    }

    pub async fn account_endpoints_need_a_login(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let anon = fx.browser();
        anon.put("/session", json!({"cart": 1})).await;
        assert_eq!(anon.get("/sessions").await.status, 401);
        assert_eq!(anon.post("/logout-all", None).await.status, 401);
        assert_eq!(anon.delete("/sessions/abc").await.status, 401);
        assert_eq!(
            anon.get("/me").await.status,
            200,
            "the anonymous session is unharmed"
        );
        assert_eq!(
            fx.browser().get("/sessions").await.status,
            401,
            "no session at all"
        );
    }

    /// Where the index entry cannot be made (the user's index key holds another type), the
    /// login fails and leaves no session: on one server every check of the create runs
    /// before the index and the session are written, in one script; on a cluster the create
    /// made beside the failed index add is deleted again. Another user's login is unaffected.
    pub async fn a_login_whose_index_entry_fails_leaves_no_session(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let s = fx.server.as_ref().unwrap();
        assert_eq!(
            s.text(&["SET", "user:broken:sessions", "not a set"])
                .as_deref(),
            Some("OK")
        );
        let b = fx.browser();
        let r = b.post("/login", Some(json!({ "user_id": "broken" }))).await;
        assert!(r.status >= 500, "the login failed: {r:?}");
        assert_eq!(s.session_keys(), Vec::<String>::new(), "no session left");
        assert_eq!(
            s.text(&["GET", "user:broken:sessions"]).as_deref(),
            Some("not a set"),
            "the index key untouched"
        );
        assert_ne!(b.get("/me").await.status, 200, "not logged in");
        let other = fx.browser();
        login(&other, "fine").await;
        assert_eq!(s.session_keys().len(), 1);
        assert_eq!(devices(&other).await.len(), 1);
    }

    /// Without a device limit, expired members are dropped only once the set holds more than
    /// index_add.lua's soft cap (64) members: the set stays bounded, and the device list never
    /// shows them meanwhile.
    pub async fn the_index_is_pruned_only_past_its_threshold(setup: Setup) {
        let fx = Fixture::with(setup, |c| c.max_sessions_per_user(None)).await;
        let s = fx.server.as_ref().unwrap();
        let (a, b, c) = (fx.browser(), fx.browser(), fx.browser());
        login(&a, "ann").await;
        plant_expired(s, "ann", 0, 10);
        login(&b, "ann").await;
        assert_eq!(zcard(s, "ann"), 12, "under the cap: no prune");
        assert_eq!(
            devices(&b).await.len(),
            2,
            "the list shows live sessions only"
        );
        plant_expired(s, "ann", 10, 60);
        assert_eq!(zcard(s, "ann"), 72);
        login(&c, "ann").await;
        assert_eq!(
            zcard(s, "ann"),
            3,
            "past the cap: every expired member went"
        );
        assert_eq!(devices(&c).await.len(), 3);
        for br in [&a, &b, &c] {
            assert_eq!(br.get("/me").await.status, 200);
        }
    }

    /// With a limit, expired members are pruned before anything is counted against it: they
    /// never push a live session out, and they stay only while the set is within the limit.
    pub async fn the_device_limit_never_counts_expired_members(setup: Setup) {
        let fx = Fixture::with(setup, |c| c.max_sessions_per_user(Some(3))).await;
        let s = fx.server.as_ref().unwrap();
        let (a, b, c, d) = (fx.browser(), fx.browser(), fx.browser(), fx.browser());
        login(&a, "ann").await;
        plant_expired(s, "ann", 0, 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        login(&b, "ann").await;
        assert_eq!(
            zcard(s, "ann"),
            3,
            "within the limit, counting it: left as is"
        );
        plant_expired(s, "ann", 1, 4);
        tokio::time::sleep(Duration::from_millis(5)).await;
        login(&c, "ann").await;
        assert_eq!(zcard(s, "ann"), 3, "past the limit: pruned, then counted");
        for br in [&a, &b, &c] {
            assert_eq!(
                br.get("/me").await.status,
                200,
                "three live sessions: none ended"
            );
        }
        plant_expired(s, "ann", 5, 2);
        tokio::time::sleep(Duration::from_millis(5)).await;
        login(&d, "ann").await;
        assert_eq!(
            a.get("/me").await.status,
            401,
            "the fourth live session ends the least recent one, and only it"
        );
        for br in [&b, &c, &d] {
            assert_eq!(br.get("/me").await.status, 200);
        }
        assert_eq!(devices(&d).await.len(), 3);
    }

    /// The index key lives at least until its highest bound: a login never shortens a longer
    /// TTL, and a key found without one (not made by tessera) gets it from its highest score,
    /// not from the new member's bound.
    pub async fn the_index_key_lives_until_its_longest_bound(setup: Setup) {
        let fx = Fixture::with(setup, |c| c.idle_timeout(Duration::from_secs(100))).await;
        let s = fx.server.as_ref().unwrap();
        let bound: i64 = 200_000; // a login's bound: twice the idle timeout
        login(&fx.browser(), "ann").await;
        let t = pttl(s, "ann");
        assert!(
            t > bound - 5_000 && t <= bound,
            "a new key: the bound ({t})"
        );
        let key = "user:ann:sessions";
        s.cmd(&["PEXPIRE", key, &(10 * bound).to_string()]);
        login(&fx.browser(), "ann").await;
        let t = pttl(s, "ann");
        assert!(t > 9 * bound, "a longer TTL is kept ({t})");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let far = now + 5 * bound;
        s.cmd(&["ZADD", key, &far.to_string(), "far"]);
        s.cmd(&["PERSIST", key]);
        assert_eq!(pttl(s, "ann"), -1);
        login(&fx.browser(), "ann").await;
        let t = pttl(s, "ann");
        assert!(
            t > 4 * bound && t <= 5 * bound,
            "no TTL: set from the highest score ({t})"
        );
        login(&fx.browser(), "ann").await;
        assert!(pttl(s, "ann") > 4 * bound, "and kept");
    }
}

/// A server with cluster mode on that owns every slot, reached with a plain `redis://` URL (a
/// one-shard "cluster mode enabled" managed Redis): the client sends a login's one script with
/// two keys, the server refuses it (`CROSSSLOT`) before running anything, and the store falls
/// back to two scripts. The login works, with its session and its index entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_a_one_shard_cluster_behind_a_plain_url() {
    use tessera_tests::fixture::{config, serve};
    use tessera_tests::{Adapter, Server, ServerKind};
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(|| {
        Server::start_with(ServerKind::Redis7, &["--cluster-enabled", "yes"])
    })
    .await
    .unwrap();
    assert_eq!(
        server
            .text(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
            .as_deref(),
        Some("OK")
    );
    let start = std::time::Instant::now();
    while !server
        .text(&["CLUSTER", "INFO"])
        .unwrap_or_default()
        .contains("cluster_state:ok")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "cluster not ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = tessera_core::Store::redis(&server.url()).await.unwrap();
    let app = serve(
        Adapter::Axum,
        tessera_core::SessionManager::new(store, config(|c| c)),
    )
    .await;
    let b = app.browser();
    login(&b, "ann").await;
    assert_eq!(b.get("/me").await.json()["user_id"], "ann");
    let live: Vec<String> = server
        .keys("session:*")
        .into_iter()
        .filter(|k| server.cmd(&["HEXISTS", k, "__c"]).int() == 1)
        .collect();
    assert_eq!(live.len(), 1, "one session");
    assert_eq!(
        server.cmd(&["ZCARD", "user:ann:sessions"]).int(),
        1,
        "and its index entry"
    );
    assert_eq!(devices(&b).await.len(), 1);
}
