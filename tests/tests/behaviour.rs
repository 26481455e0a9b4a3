//! The behaviour suite: written once, run against the in-memory store and against real
//! Redis 7, Redis 8.2 and Valkey 8.1 servers, through real HTTP requests.
//!
//! Over 500 lines on purpose: one self-contained case per behaviour, read one at a time; the
//! list at the top is the index.

use serde_json::json;
use std::time::{Duration, Instant};
use tessera_core::SameSite;
use tessera_tests::fixture::{config, key};
use tessera_tests::{Browser, Fixture, Setup};

/// The default name: `__Host-` is added whenever the cookie is `Secure` with `Path=/`, no `Domain`.
const COOKIE: &str = "__Host-tessera";

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] =>
    login_me_put_counter_logout,
    cookie_attributes_default_and_configured,
    key_rotation_accepts_old_key_and_reissues,
    tampered_cookies_are_anonymous,
    login_rotates_the_id,
    cycle_id_keeps_data_and_retires_old_id,
    concurrent_writers_of_different_fields_both_survive,
    logout_racing_writers_never_resurrects,
    increments_are_atomic,
    sliding_idle_timeout_keeps_active_readers,
    absolute_lifetime_ends_session_whatever_the_activity,
    reserved_and_undecodable_fields_are_typed_errors,
    destroy_then_write_starts_a_fresh_session,
    persistent_cookie_slides_with_the_ttl,
);

fn cookie_value(b: &Browser) -> String {
    b.cookie(COOKIE).expect("browser holds a session cookie")
}

mod cases {
    use super::*;

    pub async fn login_me_put_counter_logout(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let br = fx.browser();
        assert_eq!(br.get("/me").await.status, 401, "no session yet");
        let r = br
            .post("/login", Some(json!({"user_id": "42", "tenant": "acme"})))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json(), json!({"user_id": "42", "tenant": "acme"}));
        let me = br.get("/me").await;
        assert_eq!(me.status, 200);
        assert_eq!(me.json(), json!({"user_id": "42", "tenant": "acme"}));
        let r = br
            .put("/session", json!({"tenant": null, "plan": {"tier": 2}}))
            .await;
        assert_eq!(r.json(), json!({"user_id": "42", "plan": {"tier": 2}}));
        assert_eq!(
            br.get("/me").await.json(),
            json!({"user_id": "42", "plan": {"tier": 2}})
        );
        assert_eq!(
            br.post("/counter", None).await.json(),
            json!({"counter": 1})
        );
        assert_eq!(
            br.post("/counter", None).await.json(),
            json!({"counter": 2})
        );
        let before_logout = br.fork();
        let r = br.post("/logout", None).await;
        assert_eq!(r.status, 204);
        assert!(
            r.set_cookies
                .iter()
                .any(|c| c.starts_with("__Host-tessera=;") && c.contains("Max-Age=0")),
            "{r:?}"
        );
        assert!(br.cookie(COOKIE).is_none());
        assert_eq!(br.get("/me").await.status, 401);
        // The old cookie is dead everywhere, and gets cleared.
        let replay = before_logout.get("/me").await;
        assert_eq!(replay.status, 401);
        assert!(
            replay.set_cookies.iter().any(|c| c.contains("Max-Age=0")),
            "{replay:?}"
        );
        if let Some(s) = &fx.server {
            assert!(s.session_keys().is_empty());
        }
    }

    pub async fn cookie_attributes_default_and_configured(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let r = fx.browser().put("/session", json!({"a": 1})).await;
        let sc = &r.set_cookies[0];
        let value = sc
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("__Host-tessera=")
            .unwrap();
        // 128-bit id (22 base64url chars) "." HMAC-SHA256 (43 chars); nothing else.
        assert_eq!(value.len(), 66, "{sc}");
        assert_eq!(&value[22..23], ".");
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(sc.split("; ").any(|a| a == attr), "{attr} missing in {sc}");
        }
        assert!(
            !sc.contains("Max-Age") && !sc.contains("Domain"),
            "browser-session cookie by default: {sc}"
        );

        let persistent = fx
            .sibling(config(|c| {
                c.persistent(true)
                    .host_prefix(true)
                    .idle_timeout(Duration::from_secs(900))
            }))
            .await;
        let r = persistent.browser().put("/session", json!({"a": 1})).await;
        let sc = &r.set_cookies[0];
        assert!(sc.starts_with("__Host-tessera="), "{sc}");
        assert!(
            sc.contains("Max-Age=900") && sc.contains("Secure") && sc.contains("Path=/"),
            "{sc}"
        );

        let custom = fx
            .sibling(config(|c| {
                c.cookie_name("sid")
                    .domain(Some("example.com".into()))
                    .same_site(SameSite::Strict)
                    .secure(false)
                    .path("/app")
            }))
            .await;
        let r = custom.browser().put("/session", json!({"a": 1})).await;
        let sc = &r.set_cookies[0];
        assert!(sc.starts_with("sid="), "{sc}");
        for attr in [
            "Domain=example.com",
            "SameSite=Strict",
            "Path=/app",
            "HttpOnly",
        ] {
            assert!(sc.split("; ").any(|a| a == attr), "{attr} missing in {sc}");
        }
        assert!(!sc.contains("Secure"), "{sc}");
    }

    pub async fn key_rotation_accepts_old_key_and_reissues(setup: Setup) {
        let fx = Fixture::new(setup).await; // signs with key(1)
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "7"}))).await;
        let old_value = cookie_value(&br);
        let rotated = fx
            .sibling(
                tessera_core::SessionConfig::builder(key(2))
                    .previous_key(key(1))
                    .build()
                    .unwrap(),
            )
            .await;
        let br2 = br.pointed_at(&rotated);
        let r = br2.get("/me").await;
        assert_eq!(r.status, 200, "old-key cookie accepted");
        assert_eq!(r.json()["user_id"], "7");
        let new_value = cookie_value(&br2);
        assert_ne!(new_value, old_value, "re-issued under the current key");
        assert_eq!(
            &new_value[..22],
            &old_value[..22],
            "same session id, new signature"
        );
        // Once the old key is retired, only the re-issued cookie works.
        let only_new = fx
            .sibling(
                tessera_core::SessionConfig::builder(key(2))
                    .build()
                    .unwrap(),
            )
            .await;
        assert_eq!(br2.pointed_at(&only_new).get("/me").await.status, 200);
        assert_eq!(br.pointed_at(&only_new).get("/me").await.status, 401);
        // A re-issued cookie is not re-issued again.
        assert!(br2.get("/me").await.set_cookies.is_empty());
    }

    pub async fn tampered_cookies_are_anonymous(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "1"}))).await;
        let good = cookie_value(&br);
        let mut flipped = good.clone().into_bytes();
        flipped[40] = if flipped[40] == b'A' { b'B' } else { b'A' };
        let other_key = {
            let other = fx
                .sibling(
                    tessera_core::SessionConfig::builder(key(9))
                        .build()
                        .unwrap(),
                )
                .await;
            let ob = other.browser();
            ob.put("/session", json!({"x": 1})).await;
            cookie_value(&ob)
        };
        let bad: Vec<String> = vec![
            String::from_utf8(flipped).unwrap(),        // bad signature
            format!("{}!{}", &good[..22], &good[23..]), // bad separator
            good[..65].to_string(),                     // wrong length
            format!("{good}A"),                         // wrong length
            "%%%%".repeat(16) + "%%",                   // bad encoding, right length
            "garbage".into(),
            String::new(),
            other_key, // unknown key
        ];
        if let Some(s) = &fx.server {
            s.reset_stats();
        }
        for v in &bad {
            let t = fx.browser();
            t.set_cookie(COOKIE, v);
            let r = t.get("/me").await;
            assert_eq!(r.status, 401, "cookie {v:?} must be treated as no cookie");
        }
        if let Some(s) = &fx.server {
            let stats = s.command_stats();
            assert!(
                stats.is_empty(),
                "bad cookies cost zero Redis commands, saw {stats:?}"
            );
        }
        assert_eq!(
            br.get("/me").await.status,
            200,
            "the real session is untouched"
        );
    }

    pub async fn login_rotates_the_id(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let br = fx.browser();
        br.put("/session", json!({"cart": [1, 2]})).await;
        let anonymous = br.fork();
        let before = cookie_value(&br);
        let r = br.post("/login", Some(json!({"user_id": "u1"}))).await;
        assert_eq!(r.status, 200);
        let after = cookie_value(&br);
        assert_ne!(
            &before[..22],
            &after[..22],
            "login must move the session to a new id"
        );
        assert_eq!(
            br.get("/me").await.json(),
            json!({"cart": [1, 2], "user_id": "u1"})
        );
        let old = anonymous.get("/me").await;
        assert_eq!(
            old.status, 401,
            "the pre-login id is dead (fixation defence)"
        );
        if let Some(s) = &fx.server {
            assert_eq!(s.session_keys().len(), 1, "old key removed");
        }
    }

    pub async fn cycle_id_keeps_data_and_retires_old_id(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            c.absolute_lifetime(Some(Duration::from_secs(3600)))
        })
        .await;
        let br = fx.browser();
        br.put("/session", json!({"k": "v"})).await;
        let old = br.fork();
        let key_before = fx.server.as_ref().map(|_| fx.only_session_key());
        let created_before = fx
            .server
            .as_ref()
            .and_then(|s| s.text(&["HGET", key_before.as_ref().unwrap(), "__c"]));
        assert_eq!(br.post("/cycle", None).await.status, 200);
        assert_ne!(cookie_value(&br), cookie_value(&old));
        assert_eq!(br.get("/me").await.json(), json!({"k": "v"}));
        assert_eq!(old.get("/me").await.status, 401);
        if let Some(s) = &fx.server {
            let k = fx.only_session_key();
            assert_ne!(Some(&k), key_before.as_ref());
            // Rotation must not restart the absolute lifetime.
            assert_eq!(s.text(&["HGET", &k, "__c"]), created_before);
        }
    }

    pub async fn concurrent_writers_of_different_fields_both_survive(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "c"}))).await;
        let mut tasks = Vec::new();
        for i in 0..200 {
            for side in ["a", "b"] {
                let t = br.fork();
                tasks.push(tokio::spawn(async move {
                    let r = t.put("/session", json!({ format!("{side}{i}"): i })).await;
                    assert_eq!(r.status, 200, "{r:?}");
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let me = br.get("/me").await.json();
        let obj = me.as_object().unwrap();
        let missing: Vec<String> = (0..200)
            .flat_map(|i| [format!("a{i}"), format!("b{i}")])
            .filter(|f| obj.get(f) != Some(&json!(f[1..].parse::<i64>().unwrap())))
            .collect();
        assert!(missing.is_empty(), "lost updates: {missing:?}");
    }

    pub async fn logout_racing_writers_never_resurrects(setup: Setup) {
        let fx = Fixture::new(setup).await;
        for round in 0..5 {
            let br = fx.browser();
            br.post("/login", Some(json!({"user_id": format!("r{round}")})))
                .await;
            let stale = br.fork();
            let original = fx.server.as_ref().map(|_| fx.only_session_key());
            let mut tasks = Vec::new();
            for i in 0..60 {
                let t = br.fork();
                tasks.push(tokio::spawn(async move {
                    if i % 2 == 0 {
                        t.put("/session", json!({ format!("f{i}"): i }))
                            .await
                            .status
                    } else {
                        t.post("/slow-write", None).await.status
                    }
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let logout = br.post("/logout", None).await;
            assert_eq!(logout.status, 204);
            let mut statuses = std::collections::BTreeMap::new();
            for t in tasks {
                *statuses.entry(t.await.unwrap()).or_insert(0) += 1;
            }
            assert!(
                statuses.keys().all(|s| *s == 200 || *s == 409),
                "only saved or 409: {statuses:?}"
            );
            assert!(
                statuses.get(&409).copied().unwrap_or(0) > 0,
                "slow writers finish after logout: {statuses:?}"
            );
            assert_eq!(stale.get("/me").await.status, 401, "the session stays gone");
            if let Some(s) = &fx.server {
                let original = original.unwrap();
                assert_eq!(
                    s.cmd(&["EXISTS", &original]).int(),
                    0,
                    "the logged-out key must not exist, round {round}"
                );
                // Writers that arrived after the logout carried a dead cookie: they may have
                // started new anonymous sessions under new ids, never one bound to the user.
                for k in s.session_keys() {
                    assert_eq!(
                        s.text(&["HGET", &k, "__u"]),
                        None,
                        "{k} resurrected the login"
                    );
                    s.cmd(&["DEL", &k]);
                }
            }
        }
    }

    pub async fn increments_are_atomic(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let br = fx.browser();
        br.put("/session", json!({"x": 1})).await;
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let t = br.fork();
                tokio::spawn(async move {
                    t.post("/counter", None).await.json()["counter"]
                        .as_i64()
                        .unwrap()
                })
            })
            .collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.sort();
        assert_eq!(
            seen,
            (1..=100).collect::<Vec<i64>>(),
            "each increment saw its own value"
        );
        assert_eq!(br.get("/me").await.json()["counter"], 100);
        // A first increment creates the session.
        let fresh = fx.browser();
        assert_eq!(
            fresh.post("/counter", None).await.json(),
            json!({"counter": 1})
        );
        assert_eq!(fresh.get("/me").await.json(), json!({"counter": 1}));
    }

    pub async fn sliding_idle_timeout_keeps_active_readers(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            c.idle_timeout(Duration::from_secs(2))
                .touch_interval(Duration::from_millis(500))
        })
        .await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "reader"}))).await;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(4500) {
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert_eq!(
                br.get("/me").await.status,
                200,
                "read-only requests keep the session alive at {:?}",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert_eq!(br.get("/me").await.status, 401, "idle past the timeout");
    }

    pub async fn absolute_lifetime_ends_session_whatever_the_activity(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            c.idle_timeout(Duration::from_secs(30))
                .touch_interval(Duration::from_millis(100))
                .absolute_lifetime(Some(Duration::from_secs(2)))
        })
        .await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "a"}))).await;
        let start = Instant::now();
        if let Some(s) = &fx.server {
            let pttl = s.cmd(&["PTTL", &fx.only_session_key()]).int();
            assert!(
                pttl <= 2000 && pttl > 1000,
                "TTL capped by the absolute lifetime: {pttl}"
            );
        }
        while start.elapsed() < Duration::from_millis(1600) {
            assert_eq!(
                br.put("/session", json!({"t": start.elapsed().as_millis() as u64}))
                    .await
                    .status,
                200
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            br.get("/me").await.status,
            401,
            "gone after its absolute lifetime"
        );
    }

    pub async fn reserved_and_undecodable_fields_are_typed_errors(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "z"}))).await;
        for name in ["__u", "__c", "__anything", ""] {
            let r = br.put("/session", json!({ name: "x" })).await;
            assert_eq!(r.status, 400, "reserved name {name:?}: {r:?}");
        }
        assert_eq!(
            br.get("/me").await.json(),
            json!({"user_id": "z"}),
            "nothing clobbered"
        );
        br.put("/session", json!({"count": "not a number", "n": 5}))
            .await;
        assert_eq!(br.get("/typed/n").await.json(), json!(5));
        let r = br.get("/typed/count").await;
        assert_eq!(r.status, 500, "decode error, not a panic: {r:?}");
        assert_eq!(br.get("/typed/n").await.status, 200, "still serving");
    }

    pub async fn destroy_then_write_starts_a_fresh_session(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "d"}))).await;
        let old = cookie_value(&br);
        br.post("/logout", None).await;
        br.put("/session", json!({"flash": "bye"})).await;
        let new = cookie_value(&br);
        assert_ne!(&old[..22], &new[..22]);
        assert_eq!(br.get("/me").await.json(), json!({"flash": "bye"}));
    }

    pub async fn persistent_cookie_slides_with_the_ttl(setup: Setup) {
        let fx = Fixture::with(setup, |c| {
            c.persistent(true)
                .idle_timeout(Duration::from_secs(60))
                .touch_interval(Duration::from_millis(300))
        })
        .await;
        let br = fx.browser();
        let r = br.post("/login", Some(json!({"user_id": "p"}))).await;
        assert!(r.set_cookies[0].contains("Max-Age=60"), "{r:?}");
        let r = br.get("/me").await;
        assert!(
            r.set_cookies.is_empty(),
            "inside the touch interval nothing is re-sent: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        let r = br.get("/me").await;
        assert_eq!(
            r.set_cookies.len(),
            1,
            "the TTL slid, so the browser's Max-Age slides too: {r:?}"
        );
        assert!(r.set_cookies[0].contains("Max-Age=60"));
        if let Some(s) = &fx.server {
            let pttl = s.cmd(&["PTTL", &fx.only_session_key()]).int();
            assert!(pttl > 59_000, "TTL refreshed to the idle timeout: {pttl}");
        }
    }
}
