//! Fields with their own lifetime, and protected (encrypted) fields. Written once, run on
//! memory, Redis 7 (expiry stamps), Redis 8.2 (hash-field expiry), Valkey 8.1 (stamps),
//! Sentinel and Cluster, through both adapters, with the same timings everywhere.

use serde_json::{json, Value};
use std::time::Duration;
use tessera_core::adapter::SessionExt as _;
use tessera_core::{Error, SessionManager};
use tessera_tests::fixture::{config, field_key, indexed, protected};
use tessera_tests::{token_in, Backend, Browser, Fixture, ServerKind, Setup};

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] =>
    a_field_with_a_lifetime_disappears_while_the_session_lives,
    writing_again_without_ttl_makes_it_permanent,
    login_and_rotation_keep_remaining_lifetimes,
    a_lifetime_never_outlives_the_session,
    an_indexed_field_leaves_its_index_when_it_expires,
    protected_fields_are_encrypted_at_rest,
    a_protected_value_moved_elsewhere_does_not_decrypt,
    protected_keys_rotate_on_the_next_write,
    a_protected_field_cannot_be_incremented,
    a_field_written_again_after_it_expired_is_permanent,
    an_increment_after_the_lifetime_starts_from_zero,
    a_huge_ttl_is_capped_not_an_error,
    listings_leave_out_expired_fields,
);

/// On Redis 7, through both demos.
mod redis7_only {
    use super::cases;
    tessera_tests::per_backend!([axum, actix] x [redis7] =>
        a_field_that_does_not_decrypt_leaves_the_page_working,
        a_login_that_cannot_carry_a_protected_value_changes_nothing,
    );
}

async fn me(b: &Browser) -> Value {
    let r = b.get("/me").await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// The cookie pair of a browser, for a session opened on the manager directly.
fn cookie(b: &Browser) -> String {
    format!("__Host-tessera={}", b.cookie("__Host-tessera").unwrap())
}

async fn ttl_of(m: &SessionManager, b: &Browser, field: &str) -> Option<Duration> {
    let c = cookie(b);
    m.start([c.as_str()]).field_ttl(field).await.unwrap()
}

mod cases {
    use super::*;

    /// After the lifetime passed (where the server has no hash-field expiry the field and its
    /// stamp may still be in the hash), a write without `ttl`, or a login that sets it, makes
    /// it permanent: the old stamp goes with the write.
    pub async fn a_field_written_again_after_it_expired_is_permanent(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        b.put("/session?ttl=1", json!({"promo": "a", "tenant": "x"}))
            .await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(me(&b).await, json!({}));
        assert_eq!(
            b.put("/session", json!({"promo": "b"})).await.json(),
            json!({"promo": "b"})
        );
        assert_eq!(
            me(&b).await,
            json!({"promo": "b"}),
            "not dropped by the old stamp"
        );
        let r = b
            .post("/login", Some(json!({"user_id": "ann", "tenant": "y"})))
            .await;
        assert_eq!(r.json()["tenant"], "y", "{r:?}");
        assert_eq!(
            me(&b).await,
            json!({"promo": "b", "tenant": "y", "user_id": "ann"})
        );
        assert_eq!(ttl_of(&fx.manager, &b, "tenant").await, None);
    }

    pub async fn an_increment_after_the_lifetime_starts_from_zero(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        b.put("/session?ttl=1", json!({"counter": 5})).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(b.post("/counter", None).await.json(), json!({"counter": 1}));
        assert_eq!(
            me(&b).await,
            json!({"counter": 1}),
            "and it stays (no lifetime now)"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(me(&b).await, json!({"counter": 1}));
    }

    pub async fn a_huge_ttl_is_capped_not_an_error(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        for ttl in ["99999999999", "18446744073709551615"] {
            let r = b.put(&format!("/session?ttl={ttl}"), json!({"x": 1})).await;
            assert_eq!(r.status, 200, "{r:?}");
        }
        let left = ttl_of(&fx.manager, &b, "x").await.unwrap();
        assert!(left <= Duration::from_secs(10 * 365 * 86_400), "{left:?}");
        assert!(left > Duration::from_secs(9 * 365 * 86_400), "{left:?}");
        if let Some(s) = &fx.server {
            let pttl = s.cmd(&["PTTL", &fx.only_session_key()]).int();
            assert!(pttl > 0, "the session key still expires: {pttl}");
        }
    }

    pub async fn listings_leave_out_expired_fields(setup: Setup) {
        let fx = Fixture::with(setup, indexed).await;
        let b = fx.browser();
        b.put("/session", json!({"tenant": "acme"})).await;
        b.put("/session?ttl=1", json!({"promo": "x"})).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let found = fx
            .manager
            .find_sessions("tenant", "acme", 0, 10)
            .await
            .unwrap();
        assert_eq!(found.count, 1);
        assert_eq!(
            serde_json::Value::Object(found.sessions[0].fields.clone()),
            json!({"tenant": "acme"})
        );
    }

    pub async fn a_field_with_a_lifetime_disappears_while_the_session_lives(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        b.put("/session", json!({"plan": "pro"})).await;
        let t0 = std::time::Instant::now();
        let r = b.put("/session?ttl=2", json!({"cart": ["p-1"]})).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(me(&b).await, json!({"plan": "pro", "cart": ["p-1"]}));
        let left = ttl_of(&fx.manager, &b, "cart").await.unwrap();
        assert!(
            left <= Duration::from_secs(2) && left + t0.elapsed() >= Duration::from_millis(1990),
            "{left:?}"
        );
        assert_eq!(ttl_of(&fx.manager, &b, "plan").await, None, "no lifetime");
        tokio::time::sleep(Duration::from_millis(2300).saturating_sub(t0.elapsed())).await;
        assert_eq!(me(&b).await, json!({"plan": "pro"}), "the session lives on");
        assert_eq!(b.put("/session?ttl=0", json!({"x": 1})).await.status, 400);
        assert_eq!(b.put("/session?ttl=abc", json!({"x": 1})).await.status, 400);
        if let Some(s) = &fx.server {
            // Removed from the store: at once by the server where it has hash-field expiry,
            // else by the next load script (one runs at least every touch interval, and on
            // each instance's first read).
            let key = fx.only_session_key();
            if !fx.store.native_field_expiry() {
                // A load script: the first read on another instance.
                let other = fx.sibling(config(|c| c)).await;
                assert_eq!(me(&b.pointed_at(&other)).await, json!({"plan": "pro"}));
            }
            assert_eq!(
                s.cmd(&["HEXISTS", &key, "cart"]).int(),
                0,
                "gone from the store too"
            );
            assert_eq!(
                s.cmd(&["HEXISTS", &key, "__x:cart"]).int(),
                0,
                "and its stamp"
            );
        }
    }

    pub async fn writing_again_without_ttl_makes_it_permanent(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        b.put("/session?ttl=1", json!({"cart": 1, "flag": true}))
            .await;
        b.put("/session", json!({"cart": 2})).await;
        assert_eq!(ttl_of(&fx.manager, &b, "cart").await, None);
        // A new lifetime replaces the old one.
        b.put("/session?ttl=30", json!({"flag": true})).await;
        let left = ttl_of(&fx.manager, &b, "flag").await.unwrap();
        assert!(left > Duration::from_secs(25), "{left:?}");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(me(&b).await, json!({"cart": 2, "flag": true}));
        // An increment keeps a lifetime.
        let t0 = std::time::Instant::now();
        b.put("/session?ttl=2", json!({"counter": 5})).await;
        assert_eq!(b.post("/counter", None).await.json(), json!({"counter": 6}));
        tokio::time::sleep(Duration::from_millis(2300).saturating_sub(t0.elapsed())).await;
        assert!(
            me(&b).await.get("counter").is_none(),
            "the increment kept the lifetime"
        );
    }

    pub async fn login_and_rotation_keep_remaining_lifetimes(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        let set_at = std::time::Instant::now();
        b.put("/session?ttl=4", json!({"step_up": true})).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let r = b.post("/login", Some(json!({"user_id": "ann"}))).await;
        assert_eq!(r.status, 200);
        let left = ttl_of(&fx.manager, &b, "step_up").await.unwrap();
        assert!(
            left <= Duration::from_millis(3100),
            "what was left (at least 1 s had passed), not a new lifetime: {left:?}"
        );
        assert_eq!(b.post("/cycle", None).await.status, 200);
        let after_cycle = ttl_of(&fx.manager, &b, "step_up").await.unwrap();
        assert!(after_cycle <= left, "{after_cycle:?} after {left:?}");
        let until = Duration::from_millis(4300).saturating_sub(set_at.elapsed());
        tokio::time::sleep(until).await;
        assert_eq!(
            me(&b).await,
            json!({"user_id": "ann"}),
            "gone when the first lifetime ends"
        );
        // A lifetime given in the login's own request is kept too.
        let c = fx.browser();
        c.put("/session", json!({"a": 1})).await;
        let s = fx.manager.start([cookie(&c).as_str()]);
        let t0 = std::time::Instant::now();
        s.insert_for("fresh", &1, Duration::from_secs(2))
            .await
            .unwrap();
        s.login("cy").await.unwrap();
        let set = s.finish(200).await.set_cookie.unwrap();
        c.set_cookie(
            "__Host-tessera",
            set.split(';').next().unwrap().split_once('=').unwrap().1,
        );
        assert_eq!(me(&c).await["fresh"], 1);
        tokio::time::sleep(Duration::from_millis(2300).saturating_sub(t0.elapsed())).await;
        assert!(me(&c).await.get("fresh").is_none());
    }

    pub async fn a_lifetime_never_outlives_the_session(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            c.idle_timeout(Duration::from_secs(1))
                .touch_interval(Duration::from_millis(200))
        })
        .await;
        let b = fx.browser();
        b.put("/session?ttl=3600", json!({"long": true})).await;
        tokio::time::sleep(Duration::from_millis(1400)).await;
        assert_eq!(
            b.get("/me").await.status,
            401,
            "the session (and its field) expired"
        );
        if let Some(s) = &fx.server {
            assert!(s.session_keys().is_empty());
        }
    }

    pub async fn an_indexed_field_leaves_its_index_when_it_expires(setup: Setup) {
        let fx = Fixture::with(setup, indexed).await;
        let b = fx.browser();
        let t0 = std::time::Instant::now();
        b.put("/session?ttl=2", json!({"tenant": "acme"})).await;
        let m = &fx.manager;
        assert_eq!(m.count_sessions("tenant", "acme").await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(2300).saturating_sub(t0.elapsed())).await;
        assert_eq!(m.count_sessions("tenant", "acme").await.unwrap(), 0);
        assert_eq!(
            m.find_sessions("tenant", "acme", 0, 10)
                .await
                .unwrap()
                .count,
            0
        );
        assert!(m.count_by_value("tenant").await.unwrap().is_empty());
        assert_eq!(
            m.end_sessions("tenant", "acme").await.unwrap(),
            0,
            "nothing to end"
        );
        assert_eq!(b.get("/me").await.status, 200, "the session lives");
    }

    pub async fn protected_fields_are_encrypted_at_rest(setup: Setup) {
        let fx = Fixture::with(setup, |c| protected(indexed(c))).await;
        let b = fx.browser();
        let body = json!({"user_id": "ann", "api_token": "tok-3f9a", "tenant": "acme"});
        assert_eq!(b.post("/login", Some(body)).await.status, 200);
        let shown = me(&b).await;
        assert_eq!(
            shown["api_token"], "tok-3f9a",
            "the handler sees the plain value"
        );
        if let Some(s) = &fx.server {
            let key = fx.only_session_key();
            let stored = s.text(&["HGET", &key, "api_token"]).unwrap();
            assert!(stored.starts_with("enc:v1:"), "{stored}");
            assert!(!stored.contains("tok-3f9a"));
            let dump = s.cmd(&["HGETALL", &key]).array();
            assert!(dump
                .iter()
                .all(|v| !v.text().unwrap_or_default().contains("tok-3f9a")));
        }
        // After id rotations (login done above, cycle here) the value still decrypts.
        assert_eq!(b.post("/cycle", None).await.status, 200);
        assert_eq!(me(&b).await["api_token"], "tok-3f9a");
        // Admin listings never show protected fields.
        let found = fx
            .manager
            .find_sessions("tenant", "acme", 0, 10)
            .await
            .unwrap();
        assert_eq!(found.count, 1);
        assert!(found.sessions[0].fields.get("api_token").is_none());
        assert_eq!(found.sessions[0].fields["tenant"], "acme");
    }

    pub async fn a_protected_value_moved_elsewhere_does_not_decrypt(setup: Setup) {
        let fx = Fixture::with(setup, protected).await;
        let (a, b) = (fx.browser(), fx.browser());
        a.put("/session", json!({"api_token": "for-a"})).await;
        b.put("/session", json!({"api_token": "for-b", "note": 1}))
            .await;
        let Some(s) = &fx.server else {
            // In memory the value is sealed the same way; moving bytes needs a server.
            let m = &fx.manager;
            let sa = m.start([cookie(&a).as_str()]);
            assert_eq!(
                sa.get::<String>("api_token").await.unwrap().as_deref(),
                Some("for-a")
            );
            return;
        };
        let keys = s.session_keys();
        assert_eq!(keys.len(), 2);
        let value_of = |k: &str| s.text(&["HGET", k, "api_token"]).unwrap();
        // b's session is the one with `note`.
        let (ka, kb) = if s.cmd(&["HEXISTS", &keys[0], "note"]).int() == 1 {
            (keys[1].clone(), keys[0].clone())
        } else {
            (keys[0].clone(), keys[1].clone())
        };
        let (va, vb) = (value_of(&ka), value_of(&kb));
        // Another session's ciphertext, copied over: does not decrypt here.
        s.cmd(&["HSET", &ka, "api_token", &vb]);
        s.cmd(&["HSET", &kb, "api_token", &va]);
        let r = a.get("/me").await;
        assert_eq!(
            r.status, 500,
            "a typed error, never the other session's secret: {r:?}"
        );
        assert!(!r.body.contains("for-b") && !r.body.contains("for-a"));
        let e = fx
            .manager
            .start([cookie(&a).as_str()])
            .get::<String>("api_token")
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Undecryptable { ref field, .. } if field == "api_token"),
            "{e:?}"
        );
        // Another field's ciphertext (same session), copied over: does not decrypt either.
        s.cmd(&["HSET", &kb, "api_token", &vb]); // back in place for b
        let original_b = value_of(&kb);
        s.cmd(&["HSET", &kb, "refresh_token", &original_b]);
        let e = fx
            .manager
            .start([cookie(&b).as_str()])
            .get::<String>("refresh_token")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Undecryptable { .. }), "{e:?}");
        // Tampered bytes.
        let mut t = original_b.clone().into_bytes();
        let i = t.len() - 4;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        s.cmd(&["HSET", &kb, "api_token", std::str::from_utf8(&t).unwrap()]);
        assert_eq!(b.get("/me").await.status, 500);
        // An app that chose "absent" reads nothing instead, and the session still works.
        let lenient = fx
            .sibling(config(|c| protected(c).undecryptable_as_absent(true)))
            .await;
        let r = b.pointed_at(&lenient).get("/me").await;
        assert_eq!((r.status, r.json()), (200, json!({"note": 1})), "{r:?}");
    }

    pub async fn protected_keys_rotate_on_the_next_write(setup: Setup) {
        let fx = Fixture::with(setup, protected).await;
        let b = fx.browser();
        b.put(
            "/session",
            json!({"api_token": "t-1", "refresh_token": "r-1"}),
        )
        .await;
        // A deploy with a new current key, the old one as previous.
        let rotated = fx
            .sibling(config(|c| {
                c.protected_field("api_token")
                    .protected_field("refresh_token")
                    .field_key(field_key(2))
                    .previous_field_key(field_key(1))
            }))
            .await;
        let nb = b.pointed_at(&rotated);
        assert_eq!(
            me(&nb).await,
            json!({"api_token": "t-1", "refresh_token": "r-1"})
        );
        nb.put("/session", json!({"api_token": "t-2"})).await;
        if let Some(s) = &fx.server {
            let key = fx.only_session_key();
            let id = |f: &str| {
                s.text(&["HGET", &key, f])
                    .unwrap()
                    .split(':')
                    .nth(2)
                    .unwrap()
                    .to_string()
            };
            assert_eq!(
                id("api_token"),
                field_key(2).id(),
                "rewritten under the new key"
            );
            assert_eq!(
                id("refresh_token"),
                field_key(1).id(),
                "not written yet: the old key"
            );
        }
        // Only the new key: reads what was rewritten, and refuses the rest with a typed error.
        let only_new = fx
            .sibling(config(|c| {
                c.protected_field("api_token")
                    .protected_field("refresh_token")
                    .field_key(field_key(2))
            }))
            .await;
        // The first app (key 1 only) cannot read t-2 any more.
        let r = b.get("/me").await;
        assert_eq!(r.status, 500, "{r:?}");
        let on = b.pointed_at(&only_new);
        assert_eq!(
            on.get("/me").await.status,
            500,
            "refresh_token is still under key 1"
        );
        on.put("/session", json!({"refresh_token": "r-2"})).await;
        assert_eq!(
            me(&on).await,
            json!({"api_token": "t-2", "refresh_token": "r-2"})
        );
    }

    pub async fn a_protected_field_cannot_be_incremented(setup: Setup) {
        let fx = Fixture::with(setup, protected).await;
        let b = fx.browser();
        b.put("/session", json!({"api_token": "t"})).await;
        let s = fx.manager.start([cookie(&b).as_str()]);
        let e = s.increment("api_token", 1).await.unwrap_err();
        assert!(
            matches!(e, Error::ProtectedField(ref f) if f == "api_token"),
            "{e:?}"
        );
        assert_eq!(e.status_code(), 400);
        assert!(
            s.finish(200).await.error.is_none(),
            "nothing was written, nothing failed"
        );
        assert_eq!(me(&b).await["api_token"], "t");
    }

    /// Issue #23 item 13: after a field-key change without the previous key, the page still
    /// renders (the field shown as unavailable) with working logout forms, and `GET /me` says
    /// which field does not decrypt.
    pub async fn a_field_that_does_not_decrypt_leaves_the_page_working(setup: Setup) {
        let fx = Fixture::with(setup, protected).await;
        let b = fx.browser();
        let d = fx.browser();
        for browser in [&b, &d] {
            let r = browser
                .post(
                    "/login",
                    Some(json!({"user_id": "ada", "api_token": "tok-1", "note": "hi"})),
                )
                .await;
            assert_eq!(r.status, 200, "{r:?}");
        }
        // A deploy with a new field key, the previous one forgotten.
        let deployed = fx
            .sibling(config(|c| {
                c.protected_field("api_token")
                    .protected_field("refresh_token")
                    .field_key(field_key(2))
            }))
            .await;
        let (b, d) = (b.pointed_at(&deployed), d.pointed_at(&deployed));
        let page = b.get("/").await;
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.body.contains("unavailable"), "{}", page.body);
        assert!(page.body.contains("api_token") && page.body.contains("hi"));
        assert!(!page.body.contains("tok-1") && !page.body.contains("enc:v1"));
        for form in ["/ui/logout\"", "/ui/logout-all\"", "/ui/counter\""] {
            assert!(page.body.contains(form), "{form}");
        }
        let me = b.get("/me").await;
        assert_eq!(me.status, 500, "{me:?}");
        assert_eq!(me.json()["field"], json!("api_token"), "{me:?}");
        assert!(me.json()["error"].is_string());
        assert!(!me.body.contains("tok-1"));
        // Logging out needs no decryption: this device, then everywhere.
        let t = token_in(&d.get("/").await.body);
        let r = d.post_form("/ui/logout", &[("csrf_token", &t)]).await;
        assert_eq!(r.status, 303, "{r:?}");
        assert_eq!(d.get("/me").await.status, 401);
        assert_eq!(fx.manager.list_sessions("ada").await.unwrap().len(), 1);
        let t = token_in(&page.body);
        let r = b.post_form("/ui/logout-all", &[("csrf_token", &t)]).await;
        assert_eq!(r.status, 303, "{r:?}");
        assert_eq!(b.get("/me").await.status, 401);
        assert!(fx.manager.list_sessions("ada").await.unwrap().is_empty());
    }

    /// Attack pass after #23: a login through an instance without the key of a protected value
    /// copied the ciphertext to the new id, where it stayed bound to the old storage key: no
    /// instance could ever open it again, the right key or not. Now that login is refused there
    /// (500 naming the field) with nothing changed, and an instance with the key logs in with
    /// the value intact. A login as another user carries nothing, so it is not refused.
    pub async fn a_login_that_cannot_carry_a_protected_value_changes_nothing(setup: Setup) {
        let fx = Fixture::with(setup, protected).await;
        let b = fx.browser();
        let r = b
            .post(
                "/login",
                Some(json!({"user_id": "ada", "api_token": "tok-1"})),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let deployed = fx
            .sibling(config(|c| {
                c.protected_field("api_token")
                    .protected_field("refresh_token")
                    .field_key(field_key(2))
            }))
            .await;
        let r = b
            .pointed_at(&deployed)
            .post("/login", Some(json!({"user_id": "ada"})))
            .await;
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(r.json()["field"], json!("api_token"), "{r:?}");
        assert!(!r.body.contains("tok-1"));
        let me = b.get("/me").await;
        assert_eq!(me.status, 200, "the same session, untouched: {me:?}");
        assert_eq!(me.json()["api_token"], json!("tok-1"), "{me:?}");
        let r = b.post("/login", Some(json!({"user_id": "ada"}))).await;
        assert_eq!(r.status, 200, "{r:?}");
        let me = b.get("/me").await;
        assert_eq!(me.json()["api_token"], json!("tok-1"), "carried: {me:?}");
        // Another user: a fresh session, nothing carried, nothing refused.
        let r = b
            .pointed_at(&deployed)
            .post("/login", Some(json!({"user_id": "bob"})))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.json().get("api_token").is_none(), "{r:?}");
    }
}

/// Which way each server keeps field lifetimes, found at connect.
mod detection {
    use super::*;

    async fn mode(backend: Backend, native: bool) {
        let fx = Fixture::new(backend).await;
        assert_eq!(fx.store.native_field_expiry(), native, "{backend:?}");
        let b = fx.browser();
        b.put("/session?ttl=5", json!({"cart": 1})).await;
        if let Some(s) = &fx.server {
            let key = fx.only_session_key();
            let ttl = s.cmd(&["HPTTL", &key, "FIELDS", "1", "cart"]);
            if native {
                let ms = ttl.array()[0].int();
                assert!(ms > 2500 && ms <= 5000, "the server's own field TTL: {ms}");
            }
            assert!(
                s.text(&["HGET", &key, "__x:cart"]).is_some(),
                "a stamp beside it"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis8_uses_hash_field_expiry() {
        mode(Backend::Redis(ServerKind::Redis8), true).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis7_uses_stamps() {
        mode(Backend::Redis(ServerKind::Redis7), false).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn valkey_uses_stamps() {
        mode(Backend::Redis(ServerKind::Valkey), false).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_uses_stamps() {
        mode(Backend::Memory, false).await
    }
}

/// What a protected field and a field lifetime cost in bytes per session, on each server
/// (`MEMORY USAGE` of the session hash). Printed for BENCHMARKS.md; asserted only as "costs
/// no less than the plain field".
mod costs {
    use super::*;

    async fn measure(kind: ServerKind) {
        let fx = Fixture::with(Backend::Redis(kind), protected).await;
        let s = fx.server();
        let value = "0123456789abcdef0123"; // 20 bytes
                                            // The median `MEMORY USAGE` of 5 sessions written one way (allocator rounding makes
                                            // single readings jump by a size class), and what the last one stored.
        let measure = |path: &'static str, body: Value| {
            let fx = &fx;
            async move {
                let mut sizes = Vec::new();
                let mut stored = Vec::new();
                for _ in 0..5 {
                    let b = fx.browser();
                    assert_eq!(b.put(path, body.clone()).await.status, 200);
                    let key = fx.only_session_key();
                    sizes.push(s.cmd(&["MEMORY", "USAGE", &key, "SAMPLES", "0"]).int());
                    stored = s.cmd(&["HGETALL", &key]).array();
                    s.cmd(&["DEL", &key]);
                }
                sizes.sort();
                let fields: Vec<String> = stored.iter().map(|v| v.text().unwrap()).collect();
                (sizes[2], fields)
            }
        };
        let (plain, _) = measure("/session", json!({"note": value})).await;
        let (sealed, fields) = measure("/session", json!({"api_token": value})).await;
        let token = fields
            .iter()
            .skip_while(|f| *f != "api_token")
            .nth(1)
            .unwrap()
            .clone();
        let (expiring, fields) = measure("/session?ttl=3600", json!({"note": value})).await;
        eprintln!(
            "{kind:?} (native field expiry: {}): session with one 20-byte field {plain} B; protected {sealed} B ({:+}); with a lifetime {expiring} B ({:+})",
            fx.store.native_field_expiry(),
            sealed - plain,
            expiring - plain
        );
        // What is stored, exactly: 80 bytes of text for 20, and a stamp beside a field with a
        // lifetime. (The byte counts are printed for BENCHMARKS.md, not asserted.)
        assert_eq!(token.len(), 7 + 8 + 1 + 64, "{token}");
        assert!(fields.iter().any(|f| f == "__x:note"), "{fields:?}");
    }

    tessera_tests::per_backend!(by_case [redis7, redis8, valkey] => self::{measure});
}
