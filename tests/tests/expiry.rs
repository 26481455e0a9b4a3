//! Per-session expiry, "remember me" (issue #15): one session persistent for a while, another
//! a browser session, on every backend through both adapters. The store's TTL slides by the
//! session's own expiry (on a read and on a write that did not read), the cookie says the
//! same, a login's id rotation keeps it, and logout-all still finds a long-lived session.

use serde_json::json;
use std::time::Duration;
use tessera_core::adapter::SessionExt as _;
use tessera_core::{Error, Expiry, SessionConfigBuilder, SessionManager};
use tessera_tests::{Browser, Fixture, Setup};

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] =>
    remember_me_outlives_the_idle_timeout,
    a_write_that_did_not_read_slides_by_the_own_expiry,
    expiry_survives_login_and_can_be_reset,
);

const COOKIE: &str = "__Host-tessera";

/// Idle 1 s (touch 200 ms); "remember me" up to 60 s.
fn short(c: SessionConfigBuilder) -> SessionConfigBuilder {
    c.idle_timeout(Duration::from_secs(1))
        .touch_interval(Duration::from_millis(200))
        .longest_expiry(Duration::from_secs(60))
}

fn max_age(set_cookies: &[String]) -> Option<String> {
    let c = set_cookies.iter().find(|c| c.starts_with(COOKIE))?;
    c.split(';')
        .map(str::trim)
        .find_map(|a| a.strip_prefix("Max-Age="))
        .map(str::to_string)
}

async fn open(m: &SessionManager, b: &Browser) -> tessera_core::Session {
    let c = format!("{COOKIE}={}", b.cookie(COOKIE).unwrap_or_default());
    m.start([c.as_str()])
}

mod cases {
    use super::*;

    pub async fn remember_me_outlives_the_idle_timeout(setup: Setup) {
        let fx = Fixture::with(setup, short).await;
        let remembered = fx.browser();
        let plain = fx.browser();
        let browser_only = fx.browser();
        let r = remembered
            .post("/login?remember=4", Some(json!({"user_id": "ann"})))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(max_age(&r.set_cookies).as_deref(), Some("4"), "{r:?}");
        let r = plain.post("/login", Some(json!({"user_id": "ann"}))).await;
        assert_eq!(
            max_age(&r.set_cookies),
            None,
            "the configured browser-session cookie"
        );
        let r = browser_only
            .post("/login?remember=0", Some(json!({"user_id": "ann"})))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(max_age(&r.set_cookies), None);
        assert_eq!(
            remembered
                .post("/login?remember=61", Some(json!({"user_id": "ann"})))
                .await
                .status,
            400,
            "longer than longest_expiry"
        );
        // Refused before the login is written (the attack pass after #23: the answer was 400
        // "over the limit" while the login had happened, cookie and all), naming the range.
        let fresh = fx.browser();
        let r = fresh
            .post("/login?remember=61", Some(json!({"user_id": "eve"})))
            .await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("expiry out of the allowed range"),
            "{r:?}"
        );
        assert_eq!(fresh.get("/me").await.status, 401, "not logged in");
        if let Some(t) = &fx.server {
            let own = t
                .session_keys()
                .into_iter()
                .find(|k| t.text(&["HGET", k, "__i"]).as_deref() == Some("p 4000"))
                .expect("the remembered session's hash says its expiry");
            let ttl = t.cmd(&["PTTL", &own]).int();
            assert!(ttl > 2_000 && ttl <= 4_000, "the store keeps it 4 s: {ttl}");
        }

        tokio::time::sleep(Duration::from_millis(1_600)).await;
        let r = remembered.get("/me").await;
        assert_eq!(r.status, 200, "alive past the 1 s idle timeout: {r:?}");
        assert_eq!(
            max_age(&r.set_cookies).as_deref(),
            Some("4"),
            "the refresh slides the cookie too"
        );
        assert_eq!(plain.get("/me").await.status, 401, "idle timeout");
        assert_eq!(browser_only.get("/me").await.status, 401, "idle timeout");
        let listed = fx.manager.list_sessions("ann").await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");

        // Sliding: used again within 4 s, again and again, past twice the idle timeout (the
        // user index's usual bound), and logout-all still finds it.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1_600)).await;
            assert_eq!(remembered.get("/me").await.status, 200);
        }
        assert_eq!(fx.manager.logout_all("ann").await.unwrap(), 1);
        assert_eq!(remembered.get("/me").await.status, 401);
    }

    pub async fn a_write_that_did_not_read_slides_by_the_own_expiry(setup: Setup) {
        let fx = Fixture::with(setup, short).await;
        let b = fx.browser();
        let r = b
            .post("/login?remember=3", Some(json!({"user_id": "ann"})))
            .await;
        assert_eq!(r.status, 200);
        for n in 1..=3 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            // An increment is one write script, without a read: it slides the TTL by the
            // session's own expiry, which it finds in the hash.
            let r = b.post("/counter", None).await;
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.json()["counter"], json!(n));
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            b.get("/me").await.status,
            200,
            "kept for 3 s since the last write"
        );
    }

    pub async fn expiry_survives_login_and_can_be_reset(setup: Setup) {
        let fx = Fixture::with(setup, |c| short(c).persistent(true)).await;
        let b = fx.browser();
        b.put("/session", json!({"step": 1})).await;
        // Set before the login: the rotation to a new id keeps it.
        let s = open(&fx.manager, &b).await;
        s.set_expiry(Expiry::Persistent(Duration::from_secs(5)))
            .await
            .unwrap();
        s.login("bob").await.unwrap();
        let out = s.finish(200).await;
        assert!(out.error.is_none());
        let cookie = out.set_cookie.expect("a new id after login");
        assert!(cookie.contains("Max-Age=5"), "{cookie}");
        let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
        b.set_cookie(COOKIE, value);
        let s = open(&fx.manager, &b).await;
        assert_eq!(
            s.expiry().await.unwrap(),
            Expiry::Persistent(Duration::from_secs(5))
        );
        // A browser session under a persistent configuration: no Max-Age.
        s.set_expiry(Expiry::BrowserSession).await.unwrap();
        let cookie = s.finish(200).await.set_cookie.expect("sent again");
        assert!(!cookie.contains("Max-Age"), "{cookie}");
        // Back to the configured expiry: the configured persistent cookie, idle 1 s.
        let s = open(&fx.manager, &b).await;
        assert_eq!(s.expiry().await.unwrap(), Expiry::BrowserSession);
        s.set_expiry(Expiry::Default).await.unwrap();
        let cookie = s.finish(200).await.set_cookie.expect("sent again");
        assert!(cookie.contains("Max-Age=1"), "{cookie}");
        let s = open(&fx.manager, &b).await;
        assert_eq!(s.expiry().await.unwrap(), Expiry::Default);
        assert!(matches!(
            s.set_expiry(Expiry::Persistent(Duration::from_secs(61)))
                .await,
            Err(Error::InvalidExpiry {
                shortest_secs: 1,
                longest_secs: 60
            })
        ));
        assert!(matches!(
            s.set_expiry(Expiry::Persistent(Duration::from_millis(10)))
                .await,
            Err(Error::InvalidExpiry { .. })
        ));
        s.finish(200).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(b.get("/me").await.status, 401, "the configured 1 s again");
    }
}
