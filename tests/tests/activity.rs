//! The activity trail: recorded through the demo's `POST /activity`, read back with
//! `GET /activity`, bounded, carried through id rotation, and gone with its session however the
//! session ends (a record racing a logout included). Written once, run on memory, Redis 7,
//! Redis 8.2, Valkey 8.1, Sentinel and Cluster, through both adapters.

use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use tessera_core::adapter::SessionExt as _;
use tessera_core::{Error, SessionManager};
use tessera_tests::{Browser, Fixture, Setup};

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] =>
    a_trail_is_newest_first_with_store_times,
    the_trail_is_bounded_and_checks_actions,
    the_trail_follows_the_session_through_login,
    a_record_is_saved_with_the_requests_own_write,
    an_error_response_saves_no_record,
    the_trail_dies_with_the_session_however_it_ends,
    a_record_racing_a_logout_never_outlives_it,
    device_lists_show_the_last_action,
    the_trail_is_not_a_user_field,
);

async fn trail(b: &Browser) -> Vec<(String, String)> {
    let r = b.get("/activity").await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["at"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn actions(t: &[(String, String)]) -> Vec<&str> {
    t.iter().map(|(_, a)| a.as_str()).collect()
}

async fn record(b: &Browser, action: &str) -> u16 {
    b.post("/activity", Some(json!({ "action": action })))
        .await
        .status
}

fn cookie(b: &Browser) -> String {
    format!("__Host-tessera={}", b.cookie("__Host-tessera").unwrap())
}

/// What a session's key holds in the store (`None`: no session), seen from the manager.
async fn stored_trail(m: &SessionManager, cookie: &str) -> Vec<String> {
    let s = m.start([cookie]);
    let out = s
        .activity()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert!(s.finish(200).await.error.is_none());
    out
}

mod cases {
    use super::*;

    pub async fn a_trail_is_newest_first_with_store_times(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        let before = SystemTime::now() - Duration::from_secs(2);
        for a in ["opened cart", "added p-17", "paid"] {
            assert_eq!(record(&b, a).await, 204);
        }
        let t = trail(&b).await;
        assert_eq!(actions(&t), ["paid", "added p-17", "opened cart"]);
        let times: Vec<SystemTime> = t
            .iter()
            .map(|(at, _)| {
                let odt =
                    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                        .unwrap_or_else(|e| panic!("{at:?} is not RFC 3339: {e}"));
                SystemTime::UNIX_EPOCH + Duration::from_nanos(odt.unix_timestamp_nanos() as u64)
            })
            .collect();
        let after = SystemTime::now() + Duration::from_secs(2);
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "{t:?}");
        assert!(
            times.iter().all(|at| *at >= before && *at <= after),
            "{t:?}"
        );
        if let Some(server) = &fx.server {
            let stored = server
                .text(&["HGET", &fx.only_session_key(), "__a"])
                .unwrap();
            assert_eq!(
                stored.lines().count(),
                3,
                "one field, a line per entry: {stored:?}"
            );
            assert!(
                stored.ends_with(" paid"),
                "oldest first in the store: {stored:?}"
            );
        }
    }

    pub async fn the_trail_is_bounded_and_checks_actions(setup: Setup) {
        let fx = Fixture::with(setup, |c| c.activity_trail(3, 10)).await;
        let b = fx.browser();
        for i in 0..5 {
            assert_eq!(record(&b, &format!("a{i}")).await, 204);
        }
        assert_eq!(
            actions(&trail(&b).await),
            ["a4", "a3", "a2"],
            "the oldest drop"
        );
        assert_eq!(
            record(&b, "0123456789x").await,
            400,
            "over the length bound"
        );
        assert_eq!(record(&b, "two\nlines").await, 400, "a control character");
        assert_eq!(record(&b, "").await, 400);
        let r = b.post("/activity", Some(json!({"action": 5}))).await;
        assert_eq!(r.status, 400);
        assert_eq!(
            actions(&trail(&b).await),
            ["a4", "a3", "a2"],
            "nothing lost"
        );
        // Several records in one request still keep the bound, in order.
        let s = fx.manager.start([cookie(&b).as_str()]);
        for a in ["x", "y", "z", "w"] {
            s.record(a).await.unwrap();
        }
        assert_eq!(
            s.activity()
                .await
                .unwrap()
                .iter()
                .map(|a| a.action.as_str())
                .collect::<Vec<_>>(),
            ["w", "z", "y"]
        );
        assert!(s.finish(200).await.error.is_none());
        assert_eq!(actions(&trail(&b).await), ["w", "z", "y"]);
        assert!(matches!(
            fx.manager.start(None::<&str>).record("a\u{7}").await,
            Err(Error::InvalidAction)
        ));
    }

    pub async fn the_trail_follows_the_session_through_login(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        assert_eq!(record(&b, "browsed").await, 204);
        let before = b.cookie("__Host-tessera").unwrap();
        let r = b.post("/login", Some(json!({"user_id": "ann"}))).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_ne!(b.cookie("__Host-tessera").unwrap(), before, "a new id");
        assert_eq!(record(&b, "logged in").await, 204);
        assert_eq!(actions(&trail(&b).await), ["logged in", "browsed"]);
        // Recorded in the login's own request: saved with the rotation's copy.
        let s = fx.manager.start([cookie(&b).as_str()]);
        s.record("switched tenant").await.unwrap();
        s.cycle_id().await.unwrap();
        let out = s.finish(200).await;
        assert!(out.error.is_none());
        let pair = out.set_cookie.unwrap();
        let pair = pair.split(';').next().unwrap();
        assert_eq!(
            stored_trail(&fx.manager, pair).await,
            ["switched tenant", "logged in", "browsed"]
        );
        if let Some(server) = &fx.server {
            assert_eq!(server.session_keys().len(), 1, "the old id is retired");
        }
    }

    /// No extra round trip: a request that writes carries its records in the same script.
    pub async fn a_record_is_saved_with_the_requests_own_write(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        b.put("/session", json!({"tenant": "acme"})).await;
        let Some(server) = &fx.server else {
            // Memory: the same write carries it (no store to count commands on).
            let s = fx.manager.start([cookie(&b).as_str()]);
            s.insert("a", &1).await.unwrap();
            s.record("set a").await.unwrap();
            assert!(s.finish(200).await.error.is_none());
            assert_eq!(stored_trail(&fx.manager, &cookie(&b)).await, ["set a"]);
            return;
        };
        let s = fx.manager.start([cookie(&b).as_str()]);
        s.load().await.unwrap();
        server.reset_stats();
        s.insert("a", &1).await.unwrap();
        s.record("set a").await.unwrap();
        assert!(s.finish(200).await.error.is_none());
        let stats = server.command_stats();
        assert_eq!(
            stats.get("evalsha"),
            Some(&1),
            "one write, no extra command: {stats:?}"
        );
        assert_eq!(stored_trail(&fx.manager, &cookie(&b)).await, ["set a"]);
    }

    pub async fn an_error_response_saves_no_record(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        assert_eq!(record(&b, "kept").await, 204);
        let s = fx.manager.start([cookie(&b).as_str()]);
        s.record("discarded").await.unwrap();
        assert!(s.finish(500).await.error.is_none());
        let s = fx.manager.start([cookie(&b).as_str()]);
        s.record("saved explicitly").await.unwrap();
        s.save().await.unwrap();
        assert!(s.finish(500).await.error.is_none());
        assert_eq!(actions(&trail(&b).await), ["saved explicitly", "kept"]);
    }

    /// Logout, logout everywhere, revoke and the device limit's eviction each take the trail
    /// with the session: nothing of it is left in the store, and the old cookie reads none.
    pub async fn the_trail_dies_with_the_session_however_it_ends(setup: Setup) {
        let fx = Fixture::with(setup, |c| c.max_sessions_per_user(Some(2))).await;
        let login = |who: &str| {
            let b = fx.browser();
            let who = who.to_string();
            async move {
                assert_eq!(
                    b.post("/login", Some(json!({"user_id": who}))).await.status,
                    200
                );
                assert_eq!(record(&b, "did things").await, 204);
                b
            }
        };
        // logout
        let a = login("ann").await;
        let a_cookie = cookie(&a);
        assert_eq!(a.post("/logout", None).await.status, 204);
        assert_eq!(
            stored_trail(&fx.manager, &a_cookie).await,
            Vec::<String>::new()
        );
        // logout everywhere
        let b1 = login("bob").await;
        let b2 = login("bob").await;
        let (c1, c2) = (cookie(&b1), cookie(&b2));
        assert_eq!(b1.post("/logout-all", None).await.status, 204);
        assert_eq!(stored_trail(&fx.manager, &c1).await, Vec::<String>::new());
        assert_eq!(stored_trail(&fx.manager, &c2).await, Vec::<String>::new());
        // revoke
        let c1 = login("cy").await;
        let c2 = login("cy").await;
        let devices = c1.get("/sessions").await.json();
        let other = devices
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["current"] == json!(false))
            .unwrap()["handle"]
            .as_str()
            .unwrap()
            .to_string();
        let c2_cookie = cookie(&c2);
        assert_eq!(c1.delete(&format!("/sessions/{other}")).await.status, 204);
        assert_eq!(
            stored_trail(&fx.manager, &c2_cookie).await,
            Vec::<String>::new()
        );
        // eviction by the device limit (2): a third login ends the least recently used
        let d1 = login("di").await;
        let d1_cookie = cookie(&d1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _d2 = login("di").await;
        let _d3 = login("di").await;
        assert_eq!(
            stored_trail(&fx.manager, &d1_cookie).await,
            Vec::<String>::new()
        );
        if let Some(server) = &fx.server {
            let with_trail: Vec<String> = server
                .session_keys()
                .into_iter()
                .filter(|k| server.cmd(&["HEXISTS", k, "__a"]).int() == 1)
                .collect();
            assert_eq!(
                with_trail.len(),
                server.session_keys().len(),
                "every live session has its trail"
            );
            for k in server.keys("session:*") {
                if server.cmd(&["HEXISTS", &k, "__c"]).int() == 0 {
                    assert_eq!(
                        server.cmd(&["HEXISTS", &k, "__a"]).int(),
                        0,
                        "no trail outside a live session ({k})"
                    );
                }
            }
        }
    }

    /// Records sent while the session is logged out from another tab: whichever lands first,
    /// nothing of the session (trail included) is left afterwards.
    pub async fn a_record_racing_a_logout_never_outlives_it(setup: Setup) {
        let fx = Fixture::new(setup).await;
        for round in 0..5 {
            let b = fx.browser();
            assert_eq!(record(&b, "first").await, 204);
            let old = cookie(&b);
            let mut tasks = Vec::new();
            for i in 0..12 {
                let tab = b.fork();
                tasks.push(tokio::spawn(async move {
                    if i == 6 {
                        tab.post("/logout", None).await.status
                    } else {
                        record(&tab, &format!("r{round}-{i}")).await
                    }
                }));
            }
            for t in tasks {
                let status = t.await.unwrap();
                assert!(
                    [204, 409].contains(&status),
                    "a record either lands before the logout or is refused: {status}"
                );
            }
            assert_eq!(stored_trail(&fx.manager, &old).await, Vec::<String>::new());
        }
        // A record whose request loaded after the logout started a new anonymous session of
        // its own (one entry); none carries the ended session's entries.
        if let Some(server) = &fx.server {
            for k in server.keys("session:*") {
                if let Some(t) = server.text(&["HGET", &k, "__a"]) {
                    assert!(
                        !t.contains("first"),
                        "the ended session's trail survived: {t:?}"
                    );
                    assert_eq!(t.lines().count(), 1, "{t:?}");
                }
            }
        }
    }

    pub async fn device_lists_show_the_last_action(setup: Setup) {
        let fx = Fixture::with(setup, |c| c.device_last_action(true)).await;
        let phone = fx.browser();
        let laptop = fx.browser();
        for b in [&phone, &laptop] {
            assert_eq!(
                b.post("/login", Some(json!({"user_id": "ann"})))
                    .await
                    .status,
                200
            );
        }
        assert_eq!(record(&phone, "viewed invoice").await, 204);
        assert_eq!(record(&phone, "paid invoice").await, 204);
        let list = laptop.get("/sessions").await.json();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 2);
        let other = list.iter().find(|d| d["current"] == json!(false)).unwrap();
        let me = list.iter().find(|d| d["current"] == json!(true)).unwrap();
        assert_eq!(other["last_action"]["action"], "paid invoice");
        assert!(other["last_action"]["at"].as_str().unwrap().contains('T'));
        assert!(me.get("last_action").is_none(), "nothing recorded: {me}");
        // Off by default: the list does not read the trail.
        let plain = fx.sibling(tessera_tests::fixture::config(|c| c)).await;
        let list = laptop.pointed_at(&plain).get("/sessions").await.json();
        assert!(list
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d.get("last_action").is_none()));
    }

    pub async fn the_trail_is_not_a_user_field(setup: Setup) {
        let fx = Fixture::with(setup, tessera_tests::fixture::indexed).await;
        let b = fx.browser();
        b.put("/session", json!({"tenant": "acme"})).await;
        assert_eq!(record(&b, "x").await, 204);
        assert_eq!(b.get("/me").await.json(), json!({"tenant": "acme"}));
        let found = fx
            .manager
            .find_sessions("tenant", "acme", 0, 10)
            .await
            .unwrap();
        assert_eq!(
            Value::Object(found.sessions[0].fields.clone()),
            json!({"tenant": "acme"})
        );
    }
}
