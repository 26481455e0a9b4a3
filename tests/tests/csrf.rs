//! CSRF protection (issue #16): the session's token, masked afresh for every response, checked
//! for form posts (the demos' `/ui/*` forms, `CsrfForm`) and for a header (`CsrfHeader`),
//! through both adapters on every backend. A request without a valid token is refused and
//! changes nothing.

use reqwest::Method;
use serde_json::json;
use tessera_tests::{token_in, Browser, Fixture, Setup};

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] =>
    forms_need_the_sessions_token,
    the_header_check,
    a_token_is_replaced_at_login,
    no_login_csrf_and_no_cross_site_bodies,
    the_page_escapes_what_users_write,
    json_routes_refuse_cross_origin_requests,
    two_pages_loaded_at_once_both_work,
);

/// On Redis 7 only (the assertions count the server's keys), through both adapters.
mod redis7_only {
    use super::cases;
    tessera_tests::per_backend!([axum, actix] x [redis7] => a_visitor_without_a_session_costs_no_write);
    tessera_tests::per_backend!(axum: [redis7] => a_malformed_secret_is_replaced);
}

async fn counter(b: &Browser) -> serde_json::Value {
    b.get("/me").await.json()["counter"].clone()
}

mod cases {
    use super::*;

    pub async fn forms_need_the_sessions_token(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        let page = b.get("/").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("action=\"/ui/login\""), "the login form");
        let t = token_in(&page.body);
        let r = b
            .post_form("/ui/login", &[("csrf_token", &t), ("user_id", "ada")])
            .await;
        assert_eq!(r.status, 303, "{r:?}");
        let page = b.get("/").await.body;
        assert!(page.contains("Devices of ada"), "{page}");
        let t = token_in(&page);
        let again = token_in(&b.get("/").await.body);
        assert_ne!(
            t, again,
            "masked afresh for every response (no BREACH oracle)"
        );

        let ok = b.post_form("/ui/counter", &[("csrf_token", &again)]).await;
        assert_eq!(ok.status, 303, "{ok:?}");
        assert_eq!(
            b.post_form("/ui/counter", &[("csrf_token", &t)])
                .await
                .status,
            303,
            "an older token of the same session"
        );
        assert_eq!(counter(&b).await, json!(2));

        for bad in [
            vec![],
            vec![("csrf_token", "forged")],
            vec![("csrf_token", &t[..40])],
        ] {
            let r = b.post_form("/ui/counter", &bad).await;
            assert_eq!(r.status, 403, "{bad:?}: {r:?}");
            assert!(r.body.contains("csrf-refused"));
        }
        // Another session's token.
        let other = fx.browser();
        let other_token = token_in(&other.get("/").await.body);
        assert_eq!(
            b.post_form("/ui/counter", &[("csrf_token", &other_token)])
                .await
                .status,
            403
        );
        // Only a form is read for a token: JSON is 415, whatever it holds.
        assert_eq!(
            b.post("/ui/counter", Some(json!({"csrf_token": again})))
                .await
                .status,
            415
        );
        assert_eq!(
            counter(&b).await,
            json!(2),
            "nothing refused changed anything"
        );
        // Every form needs the token.
        let me_handle = fx.manager.list_sessions("ada").await.unwrap()[0]
            .handle
            .clone();
        for (path, extra) in [
            ("/ui/logout-all", None),
            ("/ui/logout", None),
            ("/ui/revoke", Some(("handle", me_handle.as_str()))),
            ("/ui/login", Some(("user_id", "mallory"))),
        ] {
            let mut form = vec![("csrf_token", "forged")];
            form.extend(extra);
            assert_eq!(b.post_form(path, &form).await.status, 403, "{path}");
            let mut form = vec![];
            form.extend(extra);
            assert_eq!(
                b.post_form(path, &form).await.status,
                403,
                "{path} without a token"
            );
        }
        assert_eq!(b.get("/me").await.status, 200, "still logged in");
        assert_eq!(
            fx.manager.list_sessions("ada").await.unwrap().len(),
            1,
            "as ada"
        );
        assert!(fx
            .manager
            .list_sessions("mallory")
            .await
            .unwrap()
            .is_empty());
        // A page whose session is gone: back to the login form, nothing changed.
        let t = token_in(&b.get("/").await.body);
        fx.manager.logout_all("ada").await.unwrap();
        let r = b.post_form("/ui/counter", &[("csrf_token", &t)]).await;
        assert_eq!(r.status, 303, "to the login form: {r:?}");
        assert!(b.get("/").await.body.contains("action=\"/ui/login\""));
    }

    pub async fn the_header_check(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        assert_eq!(
            b.post_with_headers("/csrf-increment", &[("x-csrf-token", "anything")])
                .await
                .status,
            403,
            "no session, no token"
        );
        let t = b.get("/csrf-token").await.json()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = b
            .post_with_headers("/csrf-increment", &[("x-csrf-token", &t)])
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json(), json!(1));
        assert_eq!(
            b.post_with_headers("/csrf-increment", &[]).await.status,
            403
        );
        assert_eq!(
            b.post_with_headers("/csrf-increment", &[("x-csrf-token", "forged")])
                .await
                .status,
            403
        );
        assert_eq!(counter(&b).await, json!(1));
    }

    pub async fn a_token_is_replaced_at_login(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        let before = b.get("/csrf-token").await.json()["token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            b.post("/login", Some(json!({"user_id": "ada"})))
                .await
                .status,
            200
        );
        assert_eq!(
            b.post_with_headers("/csrf-increment", &[("x-csrf-token", &before)])
                .await
                .status,
            403,
            "a token from before the login (a fixed or leaked page) is not good after it"
        );
        let after = b.get("/csrf-token").await.json()["token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            b.post_with_headers("/csrf-increment", &[("x-csrf-token", &after)])
                .await
                .status,
            200
        );
        // The secret is in the session's hash under a reserved name, not a user field.
        assert!(b.get("/me").await.json().get("__k").is_none());
    }

    pub async fn no_login_csrf_and_no_cross_site_bodies(setup: Setup) {
        let fx = Fixture::new(setup).await;
        // A cross-site form posting a login for a victim without a session: nobody is logged
        // in, no session is made.
        let victim = fx.browser();
        let r = victim
            .post_form("/ui/login", &[("user_id", "mallory")])
            .await;
        assert!(r.status == 303 || r.status == 403, "{r:?}");
        assert!(victim.cookie("__Host-tessera").is_none(), "no session made");
        assert!(fx
            .manager
            .list_sessions("mallory")
            .await
            .unwrap()
            .is_empty());
        // A victim with an anonymous session (it saw the page): refused.
        let page = victim.get("/").await.body;
        let _ = token_in(&page);
        let r = victim
            .post_form("/ui/login", &[("user_id", "mallory"), ("csrf_token", "x")])
            .await;
        assert_eq!(r.status, 403);
        assert!(fx
            .manager
            .list_sessions("mallory")
            .await
            .unwrap()
            .is_empty());
        // The JSON login refuses a body that is not declared JSON: a cross-site
        // `<form enctype="text/plain">` can shape one, but cannot declare it.
        let r = victim
            .post_with_body("/login", "text/plain", br#"{"user_id":"mallory","x":"="}"#)
            .await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(fx
            .manager
            .list_sessions("mallory")
            .await
            .unwrap()
            .is_empty());
        // A text/plain body shaped as a form is not read for a token either.
        let t = token_in(&victim.get("/").await.body);
        let body = format!("csrf_token={t}");
        let r = victim
            .post_with_body("/ui/counter", "text/plain", body.as_bytes())
            .await;
        assert_eq!(r.status, 415);
    }

    pub async fn the_page_escapes_what_users_write(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser().with_agent("<img src=x onerror=alert(2)>");
        let evil = "<script>alert(1)</script>";
        let r = b
            .post(
                "/login",
                Some(json!({"user_id": evil, "note\"><b>": "<i>x</i>"})),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let page = b.get("/").await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("<script>alert"), "{}", page.body);
        assert!(!page.body.contains("<img src=x"), "{}", page.body);
        assert!(!page.body.contains("<i>x</i>") && !page.body.contains("note\"><b>"));
        assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        // Headers of every page: not cached, not framed, no script but the page's own (the one
        // that carries this response's nonce: issue #28's `GET /live` follower).
        let get = |name: &str| {
            page.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("x-frame-options"), "DENY");
        assert_eq!(get("cache-control"), "no-store");
        let csp = get("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let nonce = csp
            .split("script-src 'nonce-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or_else(|| panic!("a script nonce: {csp}"));
        assert!(nonce.len() >= 22, "128 bits at least: {csp}");
        assert_eq!(page.body.matches("<script").count(), 1, "{}", page.body);
        assert!(
            page.body.contains(&format!("<script nonce=\"{nonce}\">")),
            "{}",
            page.body
        );
        let again = b.get("/").await;
        assert!(
            !again.body.contains(&format!("nonce=\"{nonce}\"")),
            "a fresh nonce for every page"
        );
    }

    /// Issue #23 item 3: the JSON twins of the page's forms (the library's account endpoints,
    /// the demo's own state-changing routes) refuse a request a page of another origin made,
    /// unless it carries the session's token; same-origin pages and scripts are not affected.
    pub async fn json_routes_refuse_cross_origin_requests(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        assert_eq!(
            b.post("/login", Some(json!({"user_id": "ada"})))
                .await
                .status,
            200
        );
        let other = fx.browser();
        assert_eq!(
            other
                .post("/login", Some(json!({"user_id": "ada"})))
                .await
                .status,
            200
        );
        let sessions = b.get("/sessions").await.json();
        let other_handle = sessions
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["current"] == json!(false))
            .unwrap()["handle"]
            .as_str()
            .unwrap()
            .to_string();
        let revoke = format!("/sessions/{other_handle}");
        let evil = "https://evil.example";
        let crossings: [&[(&str, &str)]; 3] = [
            &[("sec-fetch-site", "cross-site"), ("origin", evil)],
            // A sibling subdomain is same-site, not same-origin: SameSite=Lax lets its cookie go.
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "http://www.127.0.0.1"),
            ],
            // An older browser without Sec-Fetch-Site.
            &[("origin", evil)],
        ];
        let routes = [
            (Method::POST, "/logout-all"),
            (Method::POST, "/logout"),
            (Method::POST, "/counter"),
            (Method::PUT, "/session"),
            (Method::DELETE, revoke.as_str()),
            (Method::POST, "/activity"),
            (Method::POST, "/login"),
        ];
        let bodies = [
            (
                "application/x-www-form-urlencoded",
                b"user_id=mallory&action=x".to_vec(),
            ),
            (
                "application/json",
                json!({"user_id": "mallory", "action": "x", "role": "admin"})
                    .to_string()
                    .into_bytes(),
            ),
        ];
        for headers in crossings {
            for (method, path) in &routes {
                for body in &bodies {
                    let r = b
                        .request(
                            method.clone(),
                            path,
                            Some((body.0, body.1.clone())),
                            headers,
                        )
                        .await;
                    assert_eq!(
                        r.status, 403,
                        "{method} {path} {headers:?} {}: {r:?}",
                        body.0
                    );
                }
            }
        }
        // Nothing changed: both devices live, no field, no activity, nobody else logged in.
        assert_eq!(b.get("/me").await.json(), json!({"user_id": "ada"}));
        assert_eq!(other.get("/me").await.status, 200);
        assert_eq!(fx.manager.list_sessions("ada").await.unwrap().len(), 2);
        assert_eq!(b.get("/activity").await.json(), json!([]));
        assert!(fx
            .manager
            .list_sessions("mallory")
            .await
            .unwrap()
            .is_empty());

        // A page of this origin (new and older browsers) and a script pass.
        let origin = b.origin().to_string();
        for headers in [
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", origin.as_str()),
            ],
            vec![("origin", origin.as_str())],
            vec![("sec-fetch-site", "none")],
            vec![],
        ] {
            let r = b.request(Method::POST, "/counter", None, &headers).await;
            assert_eq!(r.status, 200, "{headers:?}: {r:?}");
        }
        assert_eq!(counter(&b).await, json!(4));
        // Another origin with the session's token in X-CSRF-Token passes (CORS-enabled
        // frontends); a wrong token does not.
        let t = token_in(&b.get("/").await.body);
        let with = |t: &str| {
            vec![
                ("sec-fetch-site", "cross-site".to_string()),
                ("origin", evil.to_string()),
                ("x-csrf-token", t.to_string()),
            ]
        };
        let h = with("forged");
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            b.request(Method::POST, "/counter", None, &h).await.status,
            403
        );
        let h = with(&t);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            b.request(Method::POST, "/counter", None, &h).await.status,
            200
        );
        assert_eq!(
            b.request(Method::POST, "/logout-all", None, &h)
                .await
                .status,
            204
        );
        assert!(fx.manager.list_sessions("ada").await.unwrap().is_empty());
    }

    /// Issue #23 item 11: two pages of one fresh session loaded at once (no CSRF secret yet)
    /// both carry working forms: the secret is created with a compare-and-set in the store.
    pub async fn two_pages_loaded_at_once_both_work(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let mut refused = Vec::new();
        for i in 0..20 {
            let b = fx.browser();
            let user = format!("u{i}");
            assert_eq!(
                b.post("/login", Some(json!({"user_id": user})))
                    .await
                    .status,
                200
            );
            let (p1, p2) = tokio::join!(b.get("/"), b.get("/"));
            assert_eq!((p1.status, p2.status), (200, 200));
            for t in [token_in(&p1.body), token_in(&p2.body)] {
                let r = b.post_form("/ui/counter", &[("csrf_token", &t)]).await;
                if r.status != 303 {
                    refused.push((i, r.status));
                }
            }
        }
        assert!(
            refused.is_empty(),
            "forms refused (trial, status): {refused:?}"
        );
    }

    /// Issue #23 item 12: a visitor who has written nothing (a crawler, the login form) costs
    /// no store write and no `created` event; the login form still works (its token is a
    /// pre-session one, bound to a cookie), and a forged or another visitor's token is refused.
    pub async fn a_visitor_without_a_session_costs_no_write(setup: Setup) {
        let fx = Fixture::with(setup, |c| c.lifecycle_events(true)).await;
        let keys_before = fx.server().keys("*");
        for _ in 0..100 {
            let page = fx.browser().get("/").await;
            assert_eq!(page.status, 200, "{page:?}");
            assert!(page.body.contains("action=\"/ui/login\""));
            let head = fx.browser().request(Method::HEAD, "/", None, &[]).await;
            assert_eq!(head.status, 200, "HEAD / answers as GET / does: {head:?}");
        }
        assert_eq!(fx.server().keys("*"), keys_before, "no key written");
        let created = |events: &tessera_core::EventPage| {
            events
                .events
                .iter()
                .filter(|e| e.kind == tessera_core::EventKind::Created)
                .count()
        };
        let events = fx.manager.read_events(None, 1000).await.unwrap();
        assert_eq!(created(&events), 0, "{events:?}");

        // The login form works, and only with this browser's token.
        let b = fx.browser();
        let t = token_in(&b.get("/").await.body);
        let pre = "__Host-tessera-csrf";
        assert!(b.cookie(pre).is_some(), "the pre-session cookie");
        let stranger = token_in(&fx.browser().get("/").await.body);
        for bad in ["forged", stranger.as_str(), ""] {
            let r = b
                .post_form("/ui/login", &[("csrf_token", bad), ("user_id", "mallory")])
                .await;
            assert_eq!(r.status, 403, "{bad}: {r:?}");
        }
        assert!(fx
            .manager
            .list_sessions("mallory")
            .await
            .unwrap()
            .is_empty());
        assert!(fx.server().session_keys().is_empty());
        let r = b
            .post_form("/ui/login", &[("csrf_token", &t), ("user_id", "ada")])
            .await;
        assert_eq!(r.status, 303, "{r:?}");
        assert!(b.cookie(pre).is_none(), "dropped once there is a session");
        let page = b.get("/").await.body;
        assert!(page.contains("Devices of ada"), "{page}");
        // The session's own tokens from now on; the pre-session one is not good any more.
        assert_eq!(
            b.post_form("/ui/counter", &[("csrf_token", &t)])
                .await
                .status,
            403
        );
        assert_eq!(
            b.post_form("/ui/counter", &[("csrf_token", &token_in(&page))])
                .await
                .status,
            303
        );
        let events = fx.manager.read_events(None, 1000).await.unwrap();
        assert_eq!(created(&events), 1, "{events:?}");
    }

    /// A stored CSRF secret that is not one (written by something else) is replaced: the page
    /// keeps its forms instead of failing on every load.
    pub async fn a_malformed_secret_is_replaced(setup: Setup) {
        let fx = Fixture::new(setup).await;
        let b = fx.browser();
        assert_eq!(
            b.post("/login", Some(json!({"user_id": "ada"})))
                .await
                .status,
            200
        );
        let key = fx.only_session_key();
        fx.server().cmd(&["HSET", &key, "__k", "not a secret"]);
        let page = b.get("/").await;
        assert_eq!(page.status, 200, "{page:?}");
        let r = b
            .post_form("/ui/counter", &[("csrf_token", &token_in(&page.body))])
            .await;
        assert_eq!(r.status, 303, "{r:?}");
        assert_ne!(
            fx.server().text(&["HGET", &key, "__k"]).unwrap(),
            "not a secret"
        );
    }
}
