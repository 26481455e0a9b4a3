//! Queries across sessions by indexed fields (`tenant`, and each element of the list `cart`):
//! find, count, count per value, end, over the demo's `/admin/*` routes. Written once, run on
//! memory, Redis 7, Redis 8.2, Valkey 8.1, Sentinel and Cluster, through both adapters.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_core::adapter::SessionExt as _;
use tessera_tests::fixture::{indexed, ADMIN_TOKEN};
use tessera_tests::{Browser, Fixture, Setup};

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] =>
    find_count_and_count_per_value,
    admin_routes_need_the_token,
    the_index_follows_every_write_path,
    expired_sessions_are_never_counted,
    ending_the_sessions_of_a_tenant,
    concurrent_moves_leave_every_index_exact,
    logins_racing_an_end_are_ended_or_not_indexed,
    an_increment_of_an_indexed_field_moves_it,
    index_terms_are_bounded_before_anything_is_written,
    an_indexed_value_with_the_tag_separator_is_refused,
    counts_stay_exact_while_logins_rotate_the_id,
);

// Redis 8.2 with the query engine loaded: the same suite (the field indexes do not depend
// on it).
mod axum_search {
    use super::cases;
    tessera_tests::per_backend!(axum: [redis8_search] =>
        find_count_and_count_per_value,
        admin_routes_need_the_token,
        the_index_follows_every_write_path,
        expired_sessions_are_never_counted,
        ending_the_sessions_of_a_tenant,
        concurrent_moves_leave_every_index_exact,
        logins_racing_an_end_are_ended_or_not_indexed,
        an_increment_of_an_indexed_field_moves_it,
        index_terms_are_bounded_before_anything_is_written,
        an_indexed_value_with_the_tag_separator_is_refused,
        counts_stay_exact_while_logins_rotate_the_id
    );
}
mod actix_search {
    use super::cases;
    tessera_tests::per_backend!(actix: [redis8_search] =>
        find_count_and_count_per_value,
        admin_routes_need_the_token,
        the_index_follows_every_write_path,
        expired_sessions_are_never_counted,
        ending_the_sessions_of_a_tenant,
        concurrent_moves_leave_every_index_exact,
        logins_racing_an_end_are_ended_or_not_indexed,
        an_increment_of_an_indexed_field_moves_it,
        index_terms_are_bounded_before_anything_is_written,
        an_indexed_value_with_the_tag_separator_is_refused,
        counts_stay_exact_while_logins_rotate_the_id
    );
}

async fn login(b: &Browser, user: &str, fields: Value) {
    let mut body = fields;
    body["user_id"] = json!(user);
    let r = b.post("/login", Some(body)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// `GET /admin/sessions?query`: (count, sessions).
async fn find(fx: &Fixture, query: &str) -> (u64, Vec<Value>) {
    let r = fx
        .browser()
        .admin(ADMIN_TOKEN)
        .get(&format!("/admin/sessions?{query}"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    (
        v["count"].as_u64().unwrap(),
        v["sessions"].as_array().unwrap().clone(),
    )
}

async fn counts(fx: &Fixture, field: &str) -> BTreeMap<String, u64> {
    let r = fx
        .browser()
        .admin(ADMIN_TOKEN)
        .get(&format!("/admin/counts?field={field}"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_value(r.json()).unwrap()
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The handle `GET /sessions` shows for this browser's session.
async fn handle(b: &Browser) -> String {
    b.own_handle().await
}

/// How many keys the store holds (all nodes of a cluster; the memory store's own count).
fn key_count(fx: &Fixture) -> usize {
    match &fx.server {
        Some(s) => s.keys("*").len(),
        None => fx.store.memory_usage().unwrap().0,
    }
}

mod cases {
    use super::*;

    /// Issue 23 (1): a cookieless `PUT /session` whose indexed list holds 5,000 elements made
    /// ~5,000 index keys. Terms per field, per session and bytes per term are bounded, checked
    /// before anything is written: a 400 naming the limit, no key written, the session as it
    /// was.
    pub async fn index_terms_are_bounded_before_anything_is_written(setup: Setup) {
        let fx = Fixture::with(setup, |c| indexed(c).max_index_terms_per_session(40)).await;
        let b = fx.browser();
        let cart: Vec<String> = (0..5000).map(|i| format!("p-{i}")).collect();
        let r = b.put("/session", json!({ "cart": cart })).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(
            r.json()["error"],
            "index terms in one field over the limit of 64",
            "{r:?}"
        );
        assert_eq!(key_count(&fx), 0, "nothing written");
        assert_eq!(b.get("/me").await.status, 401, "no session");

        let long = "x".repeat(257);
        let r = b.put("/session", json!({ "tenant": long })).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(
            r.json()["error"],
            "bytes in one index term over the limit of 256"
        );
        assert_eq!(key_count(&fx), 0, "nothing written");

        // At the limits: written.
        let cart: Vec<String> = (0..40).map(|i| format!("p-{i}")).collect();
        let r = b
            .put(
                "/session",
                json!({ "cart": cart, "n": 1, "tenant": "x".repeat(256) }),
            )
            .await;
        assert_eq!(r.status, 400, "41 terms in the session: {r:?}");
        assert_eq!(
            r.json()["error"],
            "index terms in one session over the limit of 40"
        );
        assert_eq!(key_count(&fx), 0, "nothing written");
        let r = b.put("/session", json!({ "cart": cart, "n": 1 })).await;
        assert_eq!(r.status, 200, "{r:?}");
        let keys = key_count(&fx);
        let r = b.put("/session", json!({ "tenant": "acme" })).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(key_count(&fx), keys, "nothing more written");
        let me = b.get("/me").await.json();
        assert_eq!(me["cart"].as_array().unwrap().len(), 40);
        assert!(me.get("tenant").is_none(), "{me}");
        assert_eq!(counts(&fx, "cart").await.len(), 40);
        // Fewer terms in one field make room in another.
        let r = b
            .put("/session", json!({ "cart": ["p-1"], "tenant": "acme" }))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(find(&fx, "tenant=acme").await.0, 1);
    }

    /// Issue 23 (4): a tenant `"evil\u{1f}acme"` was two tags to the query engine and matched
    /// `@tenant:{acme}`. A scalar indexed value holding the separator is refused on write.
    pub async fn an_indexed_value_with_the_tag_separator_is_refused(setup: Setup) {
        let fx = Fixture::with(setup, indexed).await;
        let b = fx.browser();
        let r = b
            .put("/session", json!({ "tenant": "evil\u{1f}acme" }))
            .await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.json()["error"].as_str().unwrap().contains("U+001F"),
            "{r:?}"
        );
        assert_eq!(key_count(&fx), 0, "nothing written");
        // Not a TAG in the engine's schema (a list is JSON text there): an element may hold it.
        let r = b.put("/session", json!({ "cart": ["a\u{1f}b"] })).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(find(&fx, "cart=a%1Fb").await.0, 1);
    }

    /// Issue 23 (10): with one live session of a tenant that logs in again and again (each
    /// login moves it to a new id), `/admin/counts` answered 2 and `/admin/sessions` 0 in some
    /// polls. Both are exact at every poll.
    pub async fn counts_stay_exact_while_logins_rotate_the_id(setup: Setup) {
        let fx = Fixture::with(setup, indexed).await;
        let b = fx.browser();
        login(&b, "ann", json!({"tenant": "T"})).await;
        let done = std::sync::atomic::AtomicBool::new(false);
        let logins = async {
            for _ in 0..60 {
                login(&b, "ann", json!({"tenant": "T"})).await;
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let polls = async {
            let (mut wrong, mut polls) = (Vec::new(), 0);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let (c, f) = tokio::join!(counts(&fx, "tenant"), find(&fx, "tenant=T"));
                polls += 1;
                if c.get("T") != Some(&1) || f.0 != 1 {
                    wrong.push((c, f.0));
                }
            }
            (wrong, polls)
        };
        let ((), (wrong, polls)) = tokio::join!(logins, polls);
        assert!(
            wrong.is_empty(),
            "{} of {polls} polls wrong: {wrong:?}",
            wrong.len()
        );
        assert_eq!(counts(&fx, "tenant").await, map(&[("T", 1)]));
    }

    pub async fn find_count_and_count_per_value(setup: Setup) {
        let fx = Fixture::with(setup, indexed).await;
        let (a, b, c, d) = (fx.browser(), fx.browser(), fx.browser(), fx.browser());
        login(
            &a,
            "ann",
            json!({"tenant": "acme", "cart": ["p-17", "p-3"]}),
        )
        .await;
        login(&b, "bob", json!({"tenant": "acme", "cart": ["p-4"]})).await;
        login(&c, "cy", json!({"tenant": "globex", "cart": ["p-17"]})).await;
        // An anonymous session is indexed too.
        assert_eq!(
            d.put("/session", json!({"tenant": "initech"})).await.status,
            200
        );

        let (count, sessions) = find(&fx, "tenant=acme").await;
        assert_eq!(count, 2);
        let mut users: Vec<&str> = sessions
            .iter()
            .map(|s| s["user_id"].as_str().unwrap())
            .collect();
        users.sort();
        assert_eq!(users, ["ann", "bob"]);
        let ann = sessions.iter().find(|s| s["user_id"] == "ann").unwrap();
        assert_eq!(
            ann["fields"]["cart"],
            json!(["p-17", "p-3"]),
            "values come back as JSON"
        );
        assert_eq!(ann["fields"]["tenant"], "acme");
        assert_eq!(
            ann["handle"],
            json!(handle(&a).await),
            "the device list's handle"
        );
        assert!(ann["fields"].get("__c").is_none(), "no reserved fields");

        let (count, sessions) = find(&fx, "cart=p-17").await;
        assert_eq!(count, 2);
        let mut users: Vec<&str> = sessions
            .iter()
            .map(|s| s["user_id"].as_str().unwrap())
            .collect();
        users.sort();
        assert_eq!(users, ["ann", "cy"]);

        let (count, sessions) = find(&fx, "tenant=acme&limit=1").await;
        assert_eq!(
            (count, sessions.len()),
            (2, 1),
            "limit pages, count is the total"
        );
        let (count, sessions) = find(&fx, "tenant=initech").await;
        assert_eq!((count, sessions[0]["user_id"].clone()), (1, Value::Null));
        assert_eq!(find(&fx, "tenant=nobody").await.0, 0);

        assert_eq!(
            counts(&fx, "tenant").await,
            map(&[("acme", 2), ("globex", 1), ("initech", 1)])
        );
        assert_eq!(
            counts(&fx, "cart").await,
            map(&[("p-17", 2), ("p-3", 1), ("p-4", 1)])
        );
        let admin = fx.browser().admin(ADMIN_TOKEN);
        assert_eq!(
            admin.get("/admin/counts?field=user_agent").await.status,
            400,
            "a field that is not indexed is a clear error, not a scan"
        );
        assert_eq!(admin.get("/admin/sessions?counter=1").await.status, 400);
        if let Some(s) = &fx.server {
            assert_eq!(
                s.cmd(&["ZCARD", "index:tenant:acme"]).int(),
                2,
                "one sorted set per value, readable with redis-cli"
            );
            assert_eq!(
                s.cmd(&["ZCARD", "index:tenant"]).int(),
                4,
                "the holders: every session with a tenant"
            );
        }
    }

    pub async fn admin_routes_need_the_token(setup: Setup) {
        let fx = Fixture::with(setup, indexed).await;
        let a = fx.browser();
        login(&a, "ann", json!({"tenant": "acme"})).await;
        for (method, path) in [
            (reqwest::Method::GET, "/admin/sessions?tenant=acme"),
            (reqwest::Method::GET, "/admin/counts?field=tenant"),
            (reqwest::Method::DELETE, "/admin/sessions?tenant=acme"),
        ] {
            let none = fx.browser().send(method.clone(), path, None).await;
            assert_eq!(none.status, 401, "no token: {path}");
            let session_only = a.send(method.clone(), path, None).await;
            assert_eq!(session_only.status, 401, "a session is not a token: {path}");
            let wrong = fx
                .browser()
                .admin("test-admin-tokem")
                .send(method, path, None)
                .await;
            assert_eq!(wrong.status, 401, "wrong token: {path}");
        }
        assert_eq!(a.get("/me").await.status, 200, "nothing was ended");
        // Without ADMIN_TOKEN the routes do not exist.
        let app = match fx.adapter {
            tessera_tests::Adapter::Axum => {
                tessera_tests::spawn_app(
                    axum_demo::routes_with_admin(None)
                        .layer(tessera_axum::SessionLayer::from_manager(fx.manager.clone())),
                )
                .await
            }
            tessera_tests::Adapter::Actix => {
                let manager = fx.manager.clone();
                tessera_tests::spawn_actix(move || {
                    actix_web::App::new()
                        .wrap(tessera_actix::SessionMiddleware::from_manager(
                            manager.clone(),
                        ))
                        .configure(actix_demo::routes_with_admin(None))
                })
            }
        };
        let r = app
            .browser()
            .admin(ADMIN_TOKEN)
            .get("/admin/counts?field=tenant")
            .await;
        assert_eq!(r.status, 404, "{r:?}");
    }

    pub async fn the_index_follows_every_write_path(setup: Setup) {
        let fx = Fixture::with(setup, |c| indexed(c).max_sessions_per_user(Some(2))).await;
        let a = fx.browser();
        // First save, then a change of value, then a removal.
        a.put("/session", json!({"tenant": "acme", "cart": ["p-1"]}))
            .await;
        assert_eq!(counts(&fx, "tenant").await, map(&[("acme", 1)]));
        a.put(
            "/session",
            json!({"tenant": "globex", "cart": ["p-1", "p-2"]}),
        )
        .await;
        assert_eq!(counts(&fx, "tenant").await, map(&[("globex", 1)]));
        assert_eq!(counts(&fx, "cart").await, map(&[("p-1", 1), ("p-2", 1)]));
        a.put("/session", json!({"cart": null})).await;
        assert_eq!(counts(&fx, "cart").await, map(&[]));
        // Login rotates the id: the session is found under its new handle, once.
        login(&a, "ann", json!({"cart": ["p-9"]})).await;
        let (count, sessions) = find(&fx, "tenant=globex").await;
        assert_eq!(count, 1);
        assert_eq!(sessions[0]["handle"], json!(handle(&a).await));
        assert_eq!(sessions[0]["user_id"], "ann");
        assert_eq!(find(&fx, "cart=p-9").await.0, 1);
        // cycle_id too.
        assert_eq!(a.post("/cycle", None).await.status, 200);
        let (count, sessions) = find(&fx, "tenant=globex").await;
        assert_eq!(
            (count, sessions[0]["handle"].clone()),
            (1, json!(handle(&a).await))
        );
        // Login as another user starts anew: the old session leaves the index.
        login(&a, "bob", json!({})).await;
        assert_eq!(
            find(&fx, "tenant=globex").await.0,
            0,
            "bob's new session has no tenant"
        );
        // Logout.
        let b = fx.browser();
        login(&b, "cy", json!({"tenant": "acme"})).await;
        assert_eq!(b.post("/logout", None).await.status, 204);
        assert_eq!(find(&fx, "tenant=acme").await.0, 0);
        // Logout-all: one per device.
        let (p, q) = (fx.browser(), fx.browser());
        login(&p, "dee", json!({"tenant": "acme"})).await;
        login(&q, "dee", json!({"tenant": "acme"})).await;
        assert_eq!(find(&fx, "tenant=acme").await.0, 2);
        assert_eq!(p.post("/logout-all", None).await.status, 204);
        assert_eq!(find(&fx, "tenant=acme").await.0, 0);
        // Revoke.
        login(&p, "eve", json!({"tenant": "acme"})).await;
        login(&q, "eve", json!({"tenant": "acme"})).await;
        let h = handle(&q).await;
        assert_eq!(p.delete(&format!("/sessions/{h}")).await.status, 204);
        let (count, sessions) = find(&fx, "tenant=acme").await;
        assert_eq!(
            (count, sessions[0]["handle"].clone()),
            (1, json!(handle(&p).await))
        );
        // The device limit (2): a third login of eve ends her least recently used session.
        let r = fx.browser();
        login(&r, "eve", json!({"tenant": "acme"})).await;
        login(&q, "eve", json!({"tenant": "acme"})).await;
        assert_eq!(p.get("/me").await.status, 401, "evicted");
        assert_eq!(find(&fx, "tenant=acme").await.0, 2);
        assert_eq!(counts(&fx, "tenant").await, map(&[("acme", 2)]));
    }

    pub async fn expired_sessions_are_never_counted(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            indexed(c)
                .idle_timeout(Duration::from_secs(2))
                .touch_interval(Duration::from_millis(200))
        })
        .await;
        let (a, b) = (fx.browser(), fx.browser());
        login(&a, "ann", json!({"tenant": "acme", "cart": ["p-1"]})).await;
        b.put("/session", json!({"tenant": "acme"})).await;
        let b_at = std::time::Instant::now();
        assert_eq!(find(&fx, "tenant=acme").await.0, 2);
        // a stays alive by being used; b is left to expire.
        while b_at.elapsed() < Duration::from_millis(2400) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(a.get("/me").await.status, 200);
        }
        let (count, sessions) = find(&fx, "tenant=acme").await;
        assert_eq!(count, 1, "the expired session is not counted");
        assert_eq!(sessions.len(), 1);
        assert_eq!(counts(&fx, "tenant").await, map(&[("acme", 1)]));
        assert_eq!(counts(&fx, "cart").await, map(&[("p-1", 1)]));
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert_eq!(find(&fx, "tenant=acme").await, (0, vec![]));
        assert_eq!(counts(&fx, "tenant").await, map(&[]));
        if let Some(s) = &fx.server {
            // The members' bound is twice the idle timeout: after it, no index key is left.
            tokio::time::sleep(Duration::from_millis(2200)).await;
            assert_eq!(
                s.keys("index:*"),
                Vec::<String>::new(),
                "expired members leave on their own"
            );
        }
    }

    pub async fn ending_the_sessions_of_a_tenant(setup: Setup) {
        let fx = Fixture::with(setup, indexed).await;
        let acme: Vec<Browser> = (0..3).map(|_| fx.browser()).collect();
        for (i, b) in acme.iter().enumerate() {
            login(b, &format!("u{i}"), json!({"tenant": "acme"})).await;
        }
        let anon = fx.browser();
        anon.put("/session", json!({"tenant": "acme"})).await;
        let other = fx.browser();
        login(&other, "u0", json!({"tenant": "globex"})).await;
        let admin = fx.browser().admin(ADMIN_TOKEN);
        let r = admin.delete("/admin/sessions?tenant=acme").await;
        assert_eq!((r.status, r.json()), (200, json!({"ended": 4})), "{r:?}");
        for b in acme.iter().chain([&anon]) {
            assert_eq!(b.get("/me").await.status, 401);
        }
        assert_eq!(
            other.get("/me").await.status,
            200,
            "another tenant is untouched"
        );
        assert_eq!(counts(&fx, "tenant").await, map(&[("globex", 1)]));
        let devices = other.get("/sessions").await.json();
        assert_eq!(
            devices.as_array().unwrap().len(),
            1,
            "u0's ended session left her device list"
        );
        let r = admin.delete("/admin/sessions?tenant=acme").await;
        assert_eq!(r.json(), json!({"ended": 0}));
        // A login after the action is not affected.
        let late = fx.browser();
        login(&late, "u1", json!({"tenant": "acme"})).await;
        assert_eq!(late.get("/me").await.status, 200);
        assert_eq!(find(&fx, "tenant=acme").await.0, 1);
    }

    /// 4 sessions, 8 writers (2 per session), 100 rounds each, every write moving its session
    /// between `a` and `b` (and its cart between two lists): at the end every index is exact.
    pub async fn concurrent_moves_leave_every_index_exact(setup: Setup) {
        let fx = Fixture::with(setup, indexed).await;
        let sessions: Vec<Browser> = (0..4).map(|_| fx.browser()).collect();
        for s in &sessions {
            assert_eq!(s.put("/session", json!({"tenant": "a"})).await.status, 200);
        }
        let mut writers = Vec::new();
        for w in 0..8 {
            let b = sessions[w % 4].clone();
            writers.push(tokio::spawn(async move {
                for round in 0..100 {
                    let (t, cart) = if (round + w) % 2 == 0 {
                        ("b", json!(["x", "y"]))
                    } else {
                        ("a", json!(["y", "z"]))
                    };
                    let r = b.put("/session", json!({"tenant": t, "cart": cart})).await;
                    assert_eq!(r.status, 200, "{r:?}");
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        let mut want_tenant: BTreeMap<String, u64> = BTreeMap::new();
        let mut want_cart: BTreeMap<String, u64> = BTreeMap::new();
        for s in &sessions {
            let me = s.get("/me").await.json();
            *want_tenant
                .entry(me["tenant"].as_str().unwrap().into())
                .or_default() += 1;
            for item in me["cart"].as_array().unwrap() {
                *want_cart.entry(item.as_str().unwrap().into()).or_default() += 1;
            }
        }
        assert_eq!(counts(&fx, "tenant").await, want_tenant);
        assert_eq!(counts(&fx, "cart").await, want_cart);
        for (value, n) in &want_tenant {
            assert_eq!(find(&fx, &format!("tenant={value}")).await.0, *n);
        }
        let total: u64 = want_tenant.values().sum();
        assert_eq!(total, 4);
    }

    /// Logins with `tenant=acme` racing `DELETE /admin/sessions?tenant=acme`, sent again and
    /// again while 48 logins run: afterwards every live acme session is one the index finds
    /// (none was orphaned: a login is either ended or indexed), and a login that starts after
    /// the actions lives.
    pub async fn logins_racing_an_end_are_ended_or_not_indexed(setup: Setup) {
        let fx = Fixture::with(setup, indexed).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let admin = fx.browser().admin(ADMIN_TOKEN);
        let ender = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut ended = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = admin.delete("/admin/sessions?tenant=acme").await;
                    assert_eq!(r.status, 200, "{r:?}");
                    ended += r.json()["ended"].as_u64().unwrap();
                }
                ended
            })
        };
        let browsers: Vec<Browser> = (0..48).map(|_| fx.browser()).collect();
        let mut logins = Vec::new();
        for (i, b) in browsers.iter().enumerate() {
            let b = b.clone();
            logins.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i as u64 % 12)).await;
                let body = json!({"user_id": format!("u{i}"), "tenant": "acme"});
                b.post("/login", Some(body)).await.status
            }));
        }
        let mut statuses = BTreeMap::new();
        for l in logins {
            let status = l.await.unwrap();
            assert!(status == 200 || status == 409, "a racing login: {status}");
            *statuses.entry(status).or_insert(0) += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let ended = ender.await.unwrap();
        let mut live = 0;
        for b in &browsers {
            if b.get("/me").await.status == 200 {
                live += 1;
            }
        }
        eprintln!("racing logins: {statuses:?}, ended by the actions: {ended}, live after: {live}");
        assert_eq!(
            find(&fx, "tenant=acme").await.0,
            live,
            "every live acme session is indexed"
        );
        let after = fx.browser();
        login(&after, "late", json!({"tenant": "acme"})).await;
        assert_eq!(after.get("/me").await.status, 200);
        assert_eq!(find(&fx, "tenant=acme").await.0, live + 1);
    }

    /// `Session::increment` on an indexed field: the session is found under the new value.
    pub async fn an_increment_of_an_indexed_field_moves_it(setup: Setup) {
        let config = tessera_tests::fixture::config(|c| indexed(c).index_field("level"));
        let store = Fixture::with(setup, indexed).await;
        let manager = tessera_core::SessionManager::new(store.store.clone(), config);
        let s = manager.start(None::<&str>);
        s.insert("level", &1).await.unwrap();
        let cookie = s.finish(200).await.set_cookie.unwrap();
        let pair = cookie.split(';').next().unwrap().to_string();
        assert_eq!(manager.count_sessions("level", "1").await.unwrap(), 1);
        let s = manager.start([pair.as_str()]);
        assert_eq!(s.increment("level", 2).await.unwrap(), 3);
        assert!(s.finish(200).await.error.is_none());
        assert_eq!(manager.count_sessions("level", "3").await.unwrap(), 1);
        assert_eq!(manager.count_sessions("level", "1").await.unwrap(), 0);
        assert_eq!(
            manager.count_by_value("level").await.unwrap(),
            [("3".to_string(), 1)].into()
        );
    }
}

/// What a query costs on a real server, counted by the server: the commands grow with the
/// sessions that hold the value, not with the 10,000 unrelated sessions beside them.
mod cost {
    use super::*;

    tessera_tests::per_backend!(by_case [redis7, cluster] => self::{queries_cost_what_they_find_not_the_keyspace});

    fn calls(stats: &BTreeMap<String, u64>) -> u64 {
        stats.values().sum()
    }

    async fn queries_cost_what_they_find_not_the_keyspace(backend: tessera_tests::Backend) {
        let fx = Fixture::with(backend, indexed).await;
        let s = fx.server();
        let manager = fx.manager.clone();
        // 10,000 unrelated sessions: half with other tenants (50 of them), half without.
        let mut tasks = Vec::new();
        for chunk in 0..20 {
            let manager = manager.clone();
            tasks.push(tokio::spawn(async move {
                for i in chunk * 500..(chunk + 1) * 500 {
                    let session = manager.start(None::<&str>);
                    if i % 2 == 0 {
                        session
                            .insert("tenant", &format!("t-{}", i % 50))
                            .await
                            .unwrap();
                    } else {
                        session.insert("n", &i).await.unwrap();
                    }
                    assert!(session.finish(200).await.error.is_none());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let acme: Vec<Browser> = (0..3).map(|_| fx.browser()).collect();
        for (i, b) in acme.iter().enumerate() {
            login(
                b,
                &format!("a{i}"),
                json!({"tenant": "acme", "cart": ["p-17"]}),
            )
            .await;
        }

        // Warm-up: every script loaded once (a script's first use is NOSCRIPT, SCRIPT LOAD on
        // each node, EVALSHA again), so what follows counts only what a request sends.
        let warm = fx.browser();
        warm.put("/session", json!({"tenant": "warm"})).await;
        warm.put("/session", json!({"tenant": "warm-2"})).await;
        assert_eq!(manager.end_sessions("tenant", "warm-2").await.unwrap(), 1);

        // Latency of each query with the 10,000 others beside (printed for the docs, never
        // asserted: timing belongs to benchmarks), the median of 20.
        for (name, q) in [
            ("find_sessions", 0),
            ("count_sessions", 1),
            ("count_by_value", 2),
        ] {
            let mut times = Vec::new();
            for _ in 0..20 {
                let t = std::time::Instant::now();
                match q {
                    0 => drop(
                        manager
                            .find_sessions("tenant", "acme", 0, 100)
                            .await
                            .unwrap(),
                    ),
                    1 => drop(manager.count_sessions("cart", "p-17").await.unwrap()),
                    _ => drop(manager.count_by_value("cart").await.unwrap()),
                }
                times.push(t.elapsed());
            }
            times.sort();
            eprintln!(
                "{name} ({backend:?}, 3 matching of 10,003): median {:?}",
                times[10]
            );
        }

        s.reset_stats();
        let found = manager
            .find_sessions("tenant", "acme", 0, 100)
            .await
            .unwrap();
        assert_eq!(found.count, 3);
        let stats = s.command_stats();
        // One ZRANGEBYSCORE, one HMGET per candidate, one HGETALL per listed session.
        assert_eq!(stats.get("zrangebyscore"), Some(&1), "{stats:?}");
        assert_eq!(stats.get("hmget"), Some(&3), "{stats:?}");
        assert_eq!(stats.get("hgetall"), Some(&3), "{stats:?}");
        assert_eq!(calls(&stats), 7, "{stats:?}");
        eprintln!("find_sessions(tenant=acme), 3 of 10,003 sessions: {stats:?}");

        s.reset_stats();
        assert_eq!(manager.count_sessions("cart", "p-17").await.unwrap(), 3);
        let stats = s.command_stats();
        assert_eq!(
            calls(&stats),
            4,
            "count: the index and one HMGET per candidate: {stats:?}"
        );
        eprintln!("count_sessions(cart=p-17): {stats:?}");

        s.reset_stats();
        let counts = manager.count_by_value("cart").await.unwrap();
        assert_eq!(counts, [("p-17".to_string(), 3)].into());
        let stats = s.command_stats();
        assert_eq!(
            calls(&stats),
            1 + 3,
            "one read of the field's holders, three HMGETs (not one read per value): {stats:?}"
        );
        eprintln!("count_by_value(cart): {stats:?}");

        // A write that changes an indexed field: the new value's adds before the write (the
        // value's set and the holders: one script on one server, one per hash slot on a
        // cluster), the write, then the old value's guarded removal.
        let adds = if matches!(backend, tessera_tests::Backend::Cluster) {
            2
        } else {
            1
        };
        s.reset_stats();
        assert_eq!(
            acme[0]
                .put("/session", json!({"tenant": "globex"}))
                .await
                .status,
            200
        );
        // The old value's removal runs after the answer: wait for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut stats = s.command_stats();
        while stats.get("evalsha").copied().unwrap_or(0) < adds + 2
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stats = s.command_stats();
        }
        assert_eq!(stats.get("evalsha"), Some(&(adds + 2)), "{stats:?}");
        eprintln!("PUT /session tenant acme -> globex: {stats:?}");

        // acme[0]'s old entry is kept by the guard if its last add was under 4 s ago.
        let candidates = s.cmd(&["ZCARD", "index:tenant:acme"]).int() as u64;
        s.reset_stats();
        assert_eq!(manager.end_sessions("tenant", "acme").await.unwrap(), 2);
        let stats = s.command_stats();
        // One ZRANGEBYSCORE, HMGETs of the candidates (one moved to globex, its member kept by
        // the guard unless it is older), two end scripts (each: TIME, HMGET, DEL inside), a ZREM from the
        // tenant index and one per user index.
        assert_eq!(stats.get("zrangebyscore"), Some(&1), "{stats:?}");
        assert_eq!(stats.get("evalsha"), Some(&2), "{stats:?}");
        assert_eq!(stats.get("hmget"), Some(&(candidates + 2)), "{stats:?}");
        assert_eq!(stats.get("zrem"), Some(&3), "{stats:?}");
        eprintln!("end_sessions(tenant=acme): {stats:?}");
    }
}

/// The half-way state the racing test can rarely catch, made on purpose: a login whose index
/// add landed but whose session key is not created yet when an end-by-query runs. The action
/// leaves an `ended` mark at that key, and the create that follows is refused.
mod in_flight {
    use super::*;

    async fn a_create_after_an_end_of_its_index_entry_is_refused(backend: tessera_tests::Backend) {
        let fx = Fixture::with(backend, indexed).await;
        let m = &fx.manager;
        // Step 1 of a login, by hand: the index entry of a session id not created yet.
        let member = "AAAAAAAAAAAAAAAAAAAAAA";
        let browser = fx.browser();
        browser.put("/session", json!({"tenant": "acme"})).await; // a real acme session too
        tessera_core::test_hooks::add_entry(m, member, "tenant", "acme")
            .await
            .unwrap();
        assert_eq!(
            m.end_sessions("tenant", "acme").await.unwrap(),
            1,
            "the real one"
        );
        // Step 2 of that login arrives after the action: refused.
        assert!(
            !tessera_core::test_hooks::create_at(m, member, "tenant", "acme")
                .await
                .unwrap(),
            "a create whose index entry an end-by-query saw must not bring the session back"
        );
        assert_eq!(m.count_sessions("tenant", "acme").await.unwrap(), 0);
        if let Some(s) = &fx.server {
            let key = format!("session:{member}");
            assert_eq!(s.text(&["HGET", &key, "__m"]).as_deref(), Some("ended"));
            let ttl = s.cmd(&["PTTL", &key]).int();
            assert!(ttl > 0 && ttl <= 4000, "a short mark: {ttl} ms");
        }
        // A login after the action is not affected.
        let late = fx.browser();
        login(&late, "late", json!({"tenant": "acme"})).await;
        assert_eq!(m.count_sessions("tenant", "acme").await.unwrap(), 1);
    }

    tessera_tests::per_backend!(by_case [memory, redis7, valkey, cluster] => self::{a_create_after_an_end_of_its_index_entry_is_refused});
}

/// Cases found by a review, each failing without its fix.
mod review {
    use super::*;

    /// A request that read `acme` writes `acme` again after another request moved the session
    /// to `globex` and removed its old entry: the write adds the entry again (every term of
    /// the new value, not only the ones its stale view lacked).
    async fn a_stale_view_still_adds_its_entries(backend: tessera_tests::Backend) {
        let fx = Fixture::with(backend, indexed).await;
        let m = &fx.manager;
        let b = fx.browser();
        b.put("/session", json!({"tenant": "acme", "cart": ["p-1"]}))
            .await;
        let cookie = format!("__Host-tessera={}", b.cookie("__Host-tessera").unwrap());
        // Past the prune guard, so the other request's removal is allowed.
        tokio::time::sleep(Duration::from_millis(4300)).await;
        let stale = m.start([cookie.as_str()]);
        assert_eq!(
            stale.get::<String>("tenant").await.unwrap().as_deref(),
            Some("acme")
        );
        // Another tab moves the session away (and removes its acme and p-1 entries).
        b.put("/session", json!({"tenant": "globex", "cart": ["p-2"]}))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await; // the removal runs after the answer
        assert_eq!(m.count_sessions("tenant", "acme").await.unwrap(), 0);
        // The stale request writes what it had seen.
        stale.insert("tenant", "acme").await.unwrap();
        stale.insert("cart", &json!(["p-1"])).await.unwrap();
        assert!(stale.finish(200).await.error.is_none());
        assert_eq!(m.count_sessions("tenant", "acme").await.unwrap(), 1);
        assert_eq!(m.count_sessions("cart", "p-1").await.unwrap(), 1);
        assert_eq!(m.count_sessions("tenant", "globex").await.unwrap(), 0);
    }

    /// A session only ever incremented (`POST /counter`, no load) for longer than its entries'
    /// bound keeps being found: the increment loads when fields are indexed, so the touch moves
    /// the entries' bounds too.
    async fn increments_alone_keep_the_entries_alive(backend: tessera_tests::Backend) {
        let fx = Fixture::with(backend, |c| {
            indexed(c)
                .idle_timeout(Duration::from_secs(2))
                .touch_interval(Duration::from_millis(500))
        })
        .await;
        let b = fx.browser();
        login(&b, "ann", json!({"tenant": "acme"})).await;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(5500) {
            assert_eq!(b.post("/counter", None).await.status, 200);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(
            find(&fx, "tenant=acme").await.0,
            1,
            "the bound is 4 s, the session lives"
        );
    }

    /// `end_sessions` that read the index before a login moved the session to a new id (so it
    /// sees only the old id, a tombstone by the time it gets there) follows the move and ends
    /// the session under its new id.
    async fn ending_follows_a_login_that_moved_the_session(backend: tessera_tests::Backend) {
        let fx = Fixture::with(backend, indexed).await;
        let s = fx.server();
        let b = fx.browser();
        b.put("/session", json!({"tenant": "acme"})).await;
        let old: Vec<String> = s
            .cmd(&["ZRANGE", "index:tenant:acme", "0", "-1"])
            .array()
            .iter()
            .map(|m| m.text().unwrap())
            .collect();
        assert_eq!(old.len(), 1);
        login(&b, "ann", json!({})).await;
        // What the action would have read a moment earlier: only the old id.
        let far = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 3_600_000)
            .to_string();
        s.cmd(&["DEL", "index:tenant:acme"]);
        s.cmd(&["ZADD", "index:tenant:acme", &far, &old[0]]);
        assert_eq!(fx.manager.end_sessions("tenant", "acme").await.unwrap(), 1);
        assert_eq!(b.get("/me").await.status, 401, "ended under its new id");
    }

    tessera_tests::per_backend!(by_case [memory, redis7, cluster] => self::{
        a_stale_view_still_adds_its_entries,
        increments_alone_keep_the_entries_alive,
    });
    tessera_tests::per_backend!(by_case [redis7, cluster] => self::{ending_follows_a_login_that_moved_the_session});
}

/// Issue 23 (1, 10) on real servers: how long the index entries live, what a TTL refresh
/// costs, and the counts while a login moves a session.
mod bounds {
    use super::*;
    use tessera_tests::{Backend, ServerKind};

    const REDIS7: Backend = Backend::Redis(ServerKind::Redis7);

    fn now_ms() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    }

    /// The demo's configuration: a 30-minute idle timeout, remember-me up to 30 days. The
    /// entries of an anonymous session lived 60 days; they live as long as the session (twice
    /// its idle timeout past their last add, the margin of one lost refresh).
    async fn entries_live_as_long_as_their_session(backend: Backend) {
        let fx = Fixture::with(backend, |c| {
            indexed(c).longest_expiry(Duration::from_secs(30 * 86_400))
        })
        .await;
        let s = fx.server();
        let b = fx.browser();
        let r = b
            .put(
                "/session",
                json!({"tenant": "acme", "cart": ["p-1", "p-2"]}),
            )
            .await;
        assert_eq!(r.status, 200);
        let mut keys = s.keys("index:*");
        keys.sort();
        assert_eq!(
            keys,
            [
                "index:cart",
                "index:cart:p-1",
                "index:cart:p-2",
                "index:tenant",
                "index:tenant:acme"
            ]
        );
        let idle = 30 * 60 * 1000;
        for k in &keys {
            let ttl = s.cmd(&["PTTL", k]).int();
            assert!(ttl > idle && ttl <= 2 * idle, "{k}: PTTL {ttl}");
        }
    }

    tessera_tests::per_backend!(by_case [redis7, cluster] => self::{entries_live_as_long_as_their_session});

    /// Issue 23 (1), found again: with a 6 s idle timeout and remember-me up to 100 s, 130
    /// cookieless sessions of the same values left after 26 s 20 live sessions but 130 members
    /// in each shared key (`index:cart:p0`, `index:tenant:flood`, the holders), each key's TTL
    /// pushed on by every add: members were dropped only after twice the longest expiry. Each
    /// member now lives as long as its own session (its deadline is its score, dropped by the
    /// next add once passed), and a shared key lives until its latest live member's deadline.
    async fn shared_keys_hold_only_live_sessions_members(backend: Backend) {
        let fx = Fixture::with(backend, |c| {
            indexed(c)
                .idle_timeout(Duration::from_secs(1))
                .touch_interval(Duration::from_millis(200))
                .longest_expiry(Duration::from_secs(100))
        })
        .await;
        let s = fx.server();
        let cart: Vec<String> = (0..16).map(|i| format!("p{i}")).collect();
        let body = json!({"tenant": "flood", "cart": cart});
        for _ in 0..30 {
            let r = fx.browser().put("/session", body.clone()).await;
            assert_eq!(r.status, 200, "{r:?}");
        }
        let shared = [
            "index:cart:p0",
            "index:tenant:flood",
            "index:cart",
            "index:tenant",
        ];
        for k in shared {
            assert_eq!(s.cmd(&["ZCARD", k]).int(), 30, "{k}");
        }
        // Every one of them idles out (1 s), and its entries' bound (2 s) passes, while one
        // live session writes the same values every 300 ms (each write adds its entries).
        let live = fx.browser();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(2_500) {
            let r = live.put("/session", body.clone()).await;
            assert_eq!(r.status, 200, "{r:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let r = live.put("/session", body.clone()).await;
        assert_eq!(r.status, 200, "{r:?}");
        for k in shared {
            let members = s.cmd(&["ZCARD", k]).int();
            let ttl = s.cmd(&["PTTL", k]).int();
            eprintln!("{k}: {members} members, PTTL {ttl} ms");
            assert_eq!(members, 1, "{k}: only the live session's member");
            assert!(
                ttl > 0 && ttl <= 2_000,
                "{k}: PTTL {ttl}, beyond its only member's deadline"
            );
        }
        assert_eq!(find(&fx, "tenant=flood").await.0, 1);
        assert_eq!(counts(&fx, "cart").await["p15"], 1);
    }

    tessera_tests::per_backend!(by_case [redis7, cluster] => self::{shared_keys_hold_only_live_sessions_members});

    /// Every TTL refresh re-sent every entry (4,001 scripts for one `GET /me` of a
    /// 2,000-element cart). Now a refresh adds the entries again only at the first refresh of
    /// each half idle timeout, in one script on one server: a request costs at most the load
    /// and one script, whatever the number of terms; and the entries still outlive the idle
    /// timeout many times over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_costs_the_same_whatever_the_terms_redis7() {
        let fx = Fixture::with(REDIS7, |c| {
            indexed(c)
                .idle_timeout(Duration::from_secs(2))
                .touch_interval(Duration::from_millis(200))
        })
        .await;
        let s = fx.server();
        let b = fx.browser();
        let cart: Vec<String> = (0..60).map(|i| format!("p-{i}")).collect();
        s.reset_stats();
        let r = b
            .put("/session", json!({"tenant": "acme", "cart": cart}))
            .await;
        assert_eq!(r.status, 200);
        let stats = s.command_stats();
        eprintln!("PUT /session with 61 indexed terms: {stats:?}");
        assert_eq!(
            stats.get("evalsha"),
            Some(&2),
            "one add script for the 63 index keys, the create: {stats:?}"
        );
        let mut per_request = Vec::new();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.reset_stats();
            assert_eq!(b.get("/me").await.status, 200);
            let stats = s.command_stats();
            per_request.push(stats.get("evalsha").copied().unwrap_or(0));
        }
        eprintln!("EVALSHA per GET /me past the touch interval, 61 terms: {per_request:?}");
        assert!(
            per_request.iter().all(|n| (1..=2).contains(n)),
            "the load, at most one index refresh: {per_request:?}"
        );
        let refreshes = per_request.iter().filter(|n| **n == 2).count();
        assert!(
            (3..=8).contains(&refreshes),
            "one refresh per half idle timeout (1 s) over 6 s: {per_request:?}"
        );
        assert_eq!(find(&fx, "tenant=acme").await.0, 1, "3 idle timeouts later");
        assert_eq!(fx.manager.count_sessions("cart", "p-59").await.unwrap(), 1);
        let ttl = s.cmd(&["PTTL", "index:cart:p-59"]).int();
        assert!(ttl > 0 && ttl <= 4000, "PTTL {ttl}");
    }

    /// A count and a listing that read the index before a login moved the session (they see
    /// only the old id, retired by the time they read it) follow it to the new id; one that
    /// sees both the old id (still frozen) and the new one counts the session once.
    async fn a_count_follows_a_login_that_moved_the_session(backend: Backend) {
        let fx = Fixture::with(backend, indexed).await;
        let s = fx.server();
        let b = fx.browser();
        b.put("/session", json!({"tenant": "acme"})).await;
        let old = s.cmd(&["ZRANGE", "index:tenant:acme", "0", "-1"]).array()[0]
            .text()
            .unwrap();
        login(&b, "ann", json!({})).await;
        let new = s
            .cmd(&["ZRANGE", "index:tenant:acme", "0", "-1"])
            .array()
            .iter()
            .map(|m| m.text().unwrap())
            .find(|m| *m != old)
            .unwrap();
        let score = (now_ms() + 60_000).to_string();
        // What a query would have read a moment before the login's index add: only the old id.
        for k in ["index:tenant:acme", "index:tenant"] {
            s.cmd(&["DEL", k]);
            s.cmd(&["ZADD", k, &score, &old]);
        }
        assert_eq!(
            find(&fx, "tenant=acme").await.0,
            1,
            "followed to the new id"
        );
        assert_eq!(counts(&fx, "tenant").await, map(&[("acme", 1)]));
        // Mid-login: the old key still frozen (`__m` = "<ms> <new member>") beside the new one.
        let old_key = format!("session:{old}");
        let now = now_ms().to_string();
        s.cmd(&["DEL", &old_key]);
        s.cmd(&[
            "HSET",
            &old_key,
            "__c",
            &now,
            "__t",
            &now,
            "tenant",
            "acme",
            "__m",
            &format!("{now} {new}"),
        ]);
        s.cmd(&["PEXPIRE", &old_key, "60000"]);
        for k in ["index:tenant:acme", "index:tenant"] {
            s.cmd(&["ZADD", k, &score, &new]);
        }
        assert_eq!(
            find(&fx, "tenant=acme").await.0,
            1,
            "once, under the new id"
        );
        assert_eq!(counts(&fx, "tenant").await, map(&[("acme", 1)]));
    }

    tessera_tests::per_backend!(by_case [redis7, cluster] => self::{a_count_follows_a_login_that_moved_the_session});
}

mod two_instances {
    use super::*;
    use tessera_core::{RedisOptions, SessionManager, Store};
    use tessera_tests::fixture::{config, serve};
    use tessera_tests::{Adapter, Backend, ServerKind};

    /// Issue 23 (10), found again with two app instances on one Redis: a session logging in
    /// again 300 times on one instance while three pollers ask the other for its counts and
    /// listing, every answer should be 1; 22 of 320 were 0 (Redis 7), 37 of 69 on Cluster.
    /// The new id's key did not exist yet when the candidates were read, the old id was
    /// retired by the time its own read ran, and the new id, being a candidate, was never read
    /// again. Now exact at every poll.
    async fn counts_on_another_instance_stay_exact_while_logins_rotate_the_id(backend: Backend) {
        let fx = Fixture::with(Setup::from(backend), indexed).await;
        let store = Store::redis_with(&fx.server().url(), RedisOptions::default())
            .await
            .unwrap();
        let other = serve(Adapter::Axum, SessionManager::new(store, config(indexed))).await;
        let admin = fx.browser().pointed_at(&other).admin(ADMIN_TOKEN);
        let b = fx.browser();
        let fields = json!({"tenant": "T", "cart": ["x-T"]});
        login(&b, "ann", fields.clone()).await;
        let done = std::sync::atomic::AtomicBool::new(false);
        let logins = async {
            for _ in 0..300 {
                login(&b, "ann", fields.clone()).await;
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let poll = |path: &'static str| {
            let (admin, done) = (&admin, &done);
            async move {
                let (mut wrong, mut polls) = (Vec::new(), 0);
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = admin.get(path).await;
                    assert_eq!(r.status, 200, "{r:?}");
                    let v = r.json();
                    let n = match path {
                        "/admin/sessions?tenant=T" => v["count"].as_u64(),
                        "/admin/counts?field=tenant" => v["T"].as_u64(),
                        _ => v["x-T"].as_u64(),
                    };
                    polls += 1;
                    if n != Some(1) {
                        wrong.push(v);
                    }
                }
                (path, polls, wrong)
            }
        };
        let ((), a, c, d) = tokio::join!(
            logins,
            poll("/admin/counts?field=tenant"),
            poll("/admin/sessions?tenant=T"),
            poll("/admin/counts?field=cart")
        );
        let all = [a, c, d];
        for (path, polls, wrong) in &all {
            eprintln!("{path}: {} of {polls} polls wrong: {wrong:?}", wrong.len());
        }
        assert!(all.iter().all(|(_, _, wrong)| wrong.is_empty()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn counts_on_another_instance_stay_exact_while_logins_rotate_the_id_redis7() {
        counts_on_another_instance_stay_exact_while_logins_rotate_the_id(Backend::Redis(
            ServerKind::Redis7,
        ))
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn counts_on_another_instance_stay_exact_while_logins_rotate_the_id_cluster() {
        counts_on_another_instance_stay_exact_while_logins_rotate_the_id(Backend::Cluster).await
    }
}
