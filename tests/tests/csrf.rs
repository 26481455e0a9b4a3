//! CSRF protection (issue #16): the session's token, masked afresh for every response, checked
//! for form posts (the demos' `/ui/*` forms, `CsrfForm`) and for a header (`CsrfHeader`),
//! through both adapters on every backend. A request without a valid token is refused and
//! changes nothing.

use serde_json::json;
use tessera_tests::{Browser, Fixture, Setup};

tessera_tests::per_backend!(
    forms_need_the_sessions_token,
    the_header_check,
    a_token_is_replaced_at_login,
);

/// The CSRF token in the first form of an HTML page.
fn token_in(html: &str) -> String {
    let at = html
        .find("name=\"csrf_token\" value=\"")
        .unwrap_or_else(|| panic!("no token in {html}"));
    let rest = &html[at + "name=\"csrf_token\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
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
        // A JSON body is not a form.
        assert_eq!(
            b.post("/ui/counter", Some(json!({"csrf_token": again})))
                .await
                .status,
            403
        );
        assert_eq!(
            counter(&b).await,
            json!(2),
            "nothing refused changed anything"
        );
        // Logout-all and revoke need the token too.
        assert_eq!(
            b.post_form("/ui/logout-all", &[("csrf_token", "x")])
                .await
                .status,
            403
        );
        assert_eq!(b.get("/me").await.status, 200, "still logged in");
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
}
