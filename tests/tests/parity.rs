//! Everyday calls the peer crates have (issue #15, API parity): `remove` returning the old
//! value, `clear`, user ids of any `Display` type, serializable device lists and events.
//! Written once, run on every backend through both adapters.

use serde_json::json;
use tessera_core::adapter::SessionExt as _;
use tessera_core::SessionManager;
use tessera_tests::{Browser, Fixture, Setup};

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] =>
    remove_returns_the_old_value,
    clear_empties_the_data_and_keeps_the_session,
    user_ids_of_any_display_type,
    client_address_behind_trusted_proxies,
);

fn cookie(b: &Browser) -> String {
    format!("__Host-tessera={}", b.cookie("__Host-tessera").unwrap())
}

async fn open(m: &SessionManager, b: &Browser) -> tessera_core::Session {
    m.start([cookie(b).as_str()])
}

mod cases {
    use super::*;

    pub async fn remove_returns_the_old_value(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        b.put("/session", json!({"cart": ["p-17"], "n": 5})).await;
        let s = open(&fx.manager, &b).await;
        let cart: Option<Vec<String>> = s.remove("cart").await.unwrap();
        assert_eq!(cart, Some(vec!["p-17".to_string()]));
        assert_eq!(s.remove::<Vec<String>>("cart").await.unwrap(), None);
        assert!(
            matches!(
                s.remove::<bool>("n").await,
                Err(tessera_core::Error::Decode { .. })
            ),
            "a value of another type is a decode error"
        );
        assert_eq!(
            s.remove_value("n").await.unwrap(),
            Some(json!(5)),
            "and was not removed"
        );
        assert!(s.finish(200).await.error.is_none());
        assert_eq!(b.get("/me").await.json(), json!({}));
    }

    pub async fn clear_empties_the_data_and_keeps_the_session(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        let r = b
            .post("/login", Some(json!({"user_id": "ann", "a": 1, "b": "x"})))
            .await;
        assert_eq!(r.status, 200);
        let before = b.cookie("__Host-tessera");
        let s = open(&fx.manager, &b).await;
        s.clear().await.unwrap();
        let out = s.finish(200).await;
        assert!(out.error.is_none());
        assert!(out.set_cookie.is_none(), "same session, same cookie");
        assert_eq!(b.cookie("__Host-tessera"), before);
        // The demo's login also stored `user_id` as a field: gone with the rest.
        assert_eq!(b.get("/me").await.json(), json!({}));
        let r = b.get("/sessions").await;
        assert_eq!(r.status, 200, "still logged in: {r:?}");
        assert_eq!(r.json().as_array().unwrap().len(), 1);
        let s = open(&fx.manager, &b).await;
        assert_eq!(s.user_id().await.unwrap().as_deref(), Some("ann"));
    }

    pub async fn user_ids_of_any_display_type(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        let s = fx.manager.start(None::<&str>);
        s.login(42u64).await.unwrap();
        let out = s.finish(200).await;
        let pair = out.set_cookie.unwrap();
        b.set_cookie(
            "__Host-tessera",
            pair.split(';').next().unwrap().split_once('=').unwrap().1,
        );
        assert_eq!(
            open(&fx.manager, &b)
                .await
                .user_id()
                .await
                .unwrap()
                .as_deref(),
            Some("42")
        );
        let devices = fx.manager.list_sessions(42).await.unwrap();
        assert_eq!(devices.len(), 1);
        let json = serde_json::to_value(&devices[0]).unwrap();
        assert!(
            json["created_at"].as_str().unwrap().ends_with('Z'),
            "{json}"
        );
        assert!(json.get("last_action").is_none());
        assert_eq!(
            fx.manager.list_sessions("42").await.unwrap().len(),
            1,
            "the same user"
        );
        assert!(fx.manager.revoke(42, &devices[0].handle).await.unwrap());
        assert_eq!(fx.manager.logout_all(42i32).await.unwrap(), 0);
        assert_eq!(b.get("/me").await.status, 401);
    }

    pub async fn client_address_behind_trusted_proxies(setup: Setup) {
        let fx = Fixture::with(setup, |c| c.trusted_proxies(1)).await;
        let addr_of = |list: serde_json::Value, agent: &str| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|d| d["user_agent"] == json!(agent))
                .unwrap_or_else(|| panic!("{agent} in {list}"))["client_addr"]
                .clone()
        };
        // The client wrote 6.6.6.6 itself; the one proxy (the test client's peer) added the
        // address it saw.
        let xff = fx.browser().with_headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("user-agent", "xff"),
        ]);
        assert_eq!(
            xff.post("/login", Some(json!({"user_id": "pat"})))
                .await
                .status,
            200
        );
        let fwd = fx.browser().with_headers(&[
            (
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::7]:443";proto=https"#,
            ),
            ("x-forwarded-for", "9.9.9.9"),
            ("user-agent", "fwd"),
        ]);
        assert_eq!(
            fwd.post("/login", Some(json!({"user_id": "pat"})))
                .await
                .status,
            200
        );
        let list = xff.get("/sessions").await.json();
        assert_eq!(addr_of(list.clone(), "xff"), json!("203.0.113.7"));
        assert_eq!(
            addr_of(list, "fwd"),
            json!("9.9.9.9"),
            "behind proxies that write X-Forwarded-For, a Forwarded header is the client's own"
        );
        // Proxies that write Forwarded (RFC 7239).
        let rfc = fx
            .sibling(tessera_tests::fixture::config(|c| {
                c.trusted_proxies(1)
                    .forwarded_header(tessera_core::ForwardedHeader::Forwarded)
            }))
            .await;
        let fwd2 = rfc.browser().with_headers(&[
            (
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::7]:443";proto=https"#,
            ),
            ("x-forwarded-for", "9.9.9.9"),
            ("user-agent", "rfc"),
        ]);
        assert_eq!(
            fwd2.post("/login", Some(json!({"user_id": "pat"})))
                .await
                .status,
            200
        );
        assert_eq!(
            addr_of(fwd2.get("/sessions").await.json(), "rfc"),
            json!("2001:db8::7")
        );

        // Without trusted proxies the headers are the client's words: the peer is shown.
        let direct = fx.sibling(tessera_tests::fixture::config(|c| c)).await;
        let spoof = direct.browser().with_headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("user-agent", "spoof"),
        ]);
        assert_eq!(
            spoof
                .post("/login", Some(json!({"user_id": "pat"})))
                .await
                .status,
            200
        );
        assert_eq!(
            addr_of(spoof.get("/sessions").await.json(), "spoof"),
            json!("127.0.0.1")
        );
    }
}
