//! The operator's page, `GET /admin` (issue #29), over real HTTP through both demos: what it
//! refuses. Without `ADMIN_TOKEN` it is `404` like the admin JSON routes; not signed in, it is
//! the sign-in form and no data; a wrong token is `401` and sets nothing; a forged, expired or
//! other token's sign-in cookie is not a sign-in; a form without or with a wrong CSRF token,
//! or sent cross-site, is `403` and changes nothing; an end-by-query takes the indexed fields
//! only; what users wrote is escaped. The page itself, in a browser: `browser.rs`.

use reqwest::Method;
use serde_json::json;
use std::time::{Duration, SystemTime};
use tessera_tests::fixture::{indexed, ADMIN_TOKEN};
use tessera_tests::http::Answer;
use tessera_tests::{token_in, Adapter, Browser, Fixture, Setup, TestApp};

tessera_tests::per_backend!(
    [axum, actix] x [memory, redis7] =>
    without_an_admin_token_it_is_404,
    signed_out_it_is_the_sign_in_form_and_no_data,
    the_token_signs_in_a_wrong_one_is_401,
    a_forged_cookie_is_not_a_sign_in,
    forms_without_the_csrf_token_are_403_and_change_nothing,
    cross_site_posts_are_refused,
    end_by_query_takes_indexed_fields_after_a_confirmation,
    what_users_wrote_is_escaped,
);

const FORM: &str = "application/x-www-form-urlencoded";

/// The demo's configuration as it matters here: its indexes and lifecycle events.
async fn fixture(setup: Setup) -> Fixture {
    Fixture::with(setup, |b| demo_core::observed(indexed(b))).await
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn admin_cookie(a: &Answer) -> Option<&str> {
    a.set_cookies
        .iter()
        .map(String::as_str)
        .find(|c| c.starts_with("tessera_admin="))
}

/// A form body, percent-encoded.
fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let enc = tessera_tests::http::urlencode;
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// A user signed in through `POST /login` (a client of its own), with these fields.
async fn user(app: &TestApp, user_id: &str, tenant: &str) -> Browser {
    let b = app.browser();
    let r = b
        .post(
            "/login",
            Some(json!({ "user_id": user_id, "tenant": tenant })),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    b
}

/// A browser signed in on the operator's page with the admin token, through its form.
async fn operator(app: &TestApp) -> Browser {
    let b = app.browser();
    let page = b.get("/admin").await;
    assert_eq!(page.status, 200, "{page:?}");
    let r = b
        .post_form(
            "/admin/ui/sign-in",
            &[
                ("csrf_token", &token_in(&page.body)),
                ("token", ADMIN_TOKEN),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(header(&r, "location"), Some("/admin"));
    assert!(b.cookie("tessera_admin").is_some(), "{r:?}");
    b
}

fn is_sign_in_form(body: &str) -> bool {
    body.contains("action=\"/admin/ui/sign-in\"") && !body.contains("id=\"live-count\"")
}

/// The page's own view of the store: shown to a signed-in operator.
fn is_dashboard(body: &str) -> bool {
    body.contains("id=\"live-count\"") && !body.contains("action=\"/admin/ui/sign-in\"")
}

mod cases {
    use super::*;

    /// Without `ADMIN_TOKEN`, the page and its forms answer `404`, as the JSON routes do (which
    /// still answer as before).
    pub async fn without_an_admin_token_it_is_404(setup: Setup) {
        let Setup { backend, adapter } = setup;
        let fx = fixture(setup).await;
        let m = fx.manager.clone();
        let app = match adapter {
            Adapter::Axum => {
                tessera_tests::spawn_app(
                    axum_demo::routes_with_admin(None)
                        .layer(tessera_axum::SessionLayer::from_manager(m)),
                )
                .await
            }
            Adapter::Actix => tessera_tests::spawn_actix(move || {
                ::actix_web::App::new()
                    .wrap(tessera_actix::SessionMiddleware::from_manager(m.clone()))
                    .configure(actix_demo::routes_with_admin(None))
            }),
        };
        let b = app.browser();
        // A sign-in cookie made with the token the fixture's own app accepts: nothing here.
        b.set_cookie(
            "tessera_admin",
            &demo_core::admin_ui::AdminUi::new(ADMIN_TOKEN, true).cookie_value(SystemTime::now()),
        );
        for path in [
            "/admin",
            "/admin?user=ada",
            "/admin/ui/end?field=tenant&value=acme",
        ] {
            let r = b.get(path).await;
            assert_eq!(r.status, 404, "{path} {backend:?}: {r:?}");
            assert!(!r.body.contains("live-count"), "{r:?}");
        }
        let t = token_in(&b.get("/").await.body);
        for path in [
            "/admin/ui/sign-in",
            "/admin/ui/sign-out",
            "/admin/ui/revoke",
            "/admin/ui/end",
        ] {
            let r = b
                .post_form(
                    path,
                    &[
                        ("csrf_token", &t),
                        ("token", ADMIN_TOKEN),
                        ("field", "tenant"),
                        ("value", "acme"),
                    ],
                )
                .await;
            assert_eq!(r.status, 404, "{path}: {r:?}");
            assert!(admin_cookie(&r).is_none(), "{r:?}");
        }
        // The JSON routes as before.
        let admin = b.admin(ADMIN_TOKEN);
        assert_eq!(admin.get("/admin/counts?field=tenant").await.status, 404);
        // And the fixture's app (with the token) has the page.
        assert_eq!(fx.browser().get("/admin").await.status, 200);
    }

    /// Not signed in: the sign-in form (with a CSRF token), nothing of the store, under the
    /// page for people's headers; the page writes no session.
    pub async fn signed_out_it_is_the_sign_in_form_and_no_data(setup: Setup) {
        let fx = fixture(setup).await;
        user(&fx.app, "ada-lovelace", "acme-tenant").await;
        let b = fx.browser();
        for path in [
            "/admin",
            "/admin?user=ada-lovelace",
            "/admin/ui/end?field=tenant&value=acme-tenant",
        ] {
            let r = b.get(path).await;
            assert_eq!(r.status, 200, "{path}: {r:?}");
            assert!(is_sign_in_form(&r.body), "{path}: {}", r.body);
            assert!(r.body.contains("name=\"csrf_token\""), "{}", r.body);
            for secret in [
                "ada-lovelace",
                "acme-tenant",
                "id=\"tenant-chart\"",
                "id=\"end-count\"",
            ] {
                assert!(
                    !r.body.contains(secret),
                    "{path} shows {secret}: {}",
                    r.body
                );
            }
            assert_eq!(header(&r, "cache-control"), Some("no-store"));
            assert_eq!(header(&r, "x-frame-options"), Some("DENY"));
            let csp = header(&r, "content-security-policy").unwrap();
            assert!(
                csp.starts_with("default-src 'none'; script-src 'nonce-"),
                "{csp}"
            );
            assert!(csp.contains("form-action 'self'"), "{csp}");
            assert!(!r.body.contains("<script"), "no script at all");
            assert!(admin_cookie(&r).is_none());
        }
        assert!(
            b.get("/me").await.status == 401,
            "viewing the page made no session"
        );
        // The JSON routes do not take the page's sign-in, nor the page the bearer token.
        let op = operator(&fx.app).await;
        assert_eq!(op.get("/admin/counts?field=tenant").await.status, 401);
        let bearer = b.admin(ADMIN_TOKEN);
        assert!(is_sign_in_form(&bearer.get("/admin").await.body));
        assert_eq!(
            bearer.get("/admin/counts?field=tenant").await.json(),
            json!({ "acme-tenant": 1 })
        );
    }

    /// The admin token, typed in the form, signs in: a cookie of its own (`HttpOnly`,
    /// `SameSite=Strict`, `Path=/admin`, `Secure`, 8 hours), and the page shows the store.
    /// A wrong (or empty, or the token's prefix) token is `401` with the form again, and
    /// nothing is set. Signing out clears the cookie.
    pub async fn the_token_signs_in_a_wrong_one_is_401(setup: Setup) {
        let fx = fixture(setup).await;
        user(&fx.app, "ada", "acme").await;
        let b = fx.browser();
        let t = token_in(&b.get("/admin").await.body);
        let prefix = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
        let longer = format!("{ADMIN_TOKEN}x");
        for wrong in [
            "",
            "wrong",
            prefix,
            longer.as_str(),
            "Bearer test-admin-token",
        ] {
            let r = b
                .post_form("/admin/ui/sign-in", &[("csrf_token", &t), ("token", wrong)])
                .await;
            assert_eq!(r.status, 401, "{wrong:?}: {r:?}");
            assert!(r.body.contains("id=\"sign-in-refused\""), "{}", r.body);
            assert!(is_sign_in_form(&r.body));
            assert!(admin_cookie(&r).is_none(), "{r:?}");
            assert!(b.cookie("tessera_admin").is_none());
        }
        assert!(is_sign_in_form(&b.get("/admin").await.body));

        let r = b
            .post_form(
                "/admin/ui/sign-in",
                &[("csrf_token", &t), ("token", ADMIN_TOKEN)],
            )
            .await;
        assert_eq!(r.status, 303, "{r:?}");
        let set = admin_cookie(&r).unwrap_or_else(|| panic!("the cookie: {r:?}"));
        for attribute in [
            "; Max-Age=28800",
            "; Path=/admin",
            "; HttpOnly",
            "; SameSite=Strict",
            "; Secure",
        ] {
            assert!(set.contains(attribute), "{attribute} in {set}");
        }
        let page = b.get("/admin").await;
        assert_eq!(page.status, 200);
        assert!(is_dashboard(&page.body), "{}", page.body);
        assert!(
            page.body.contains("data-label=\"acme\" data-count=\"1\""),
            "{}",
            page.body
        );

        let out = b
            .post_form(
                "/admin/ui/sign-out",
                &[("csrf_token", &token_in(&page.body))],
            )
            .await;
        assert_eq!(out.status, 303, "{out:?}");
        assert!(
            admin_cookie(&out).is_some_and(|c| c.starts_with("tessera_admin=; Max-Age=0;")),
            "{out:?}"
        );
        assert!(b.cookie("tessera_admin").is_none());
        assert!(is_sign_in_form(&b.get("/admin").await.body));
    }

    /// A sign-in cookie the server did not make for this token and this time is no sign-in:
    /// junk, a real expiry with a forged MAC, another token's, an expired one, one moved later.
    /// With it, the page is the sign-in form and a form (with a good CSRF token) is `401` and
    /// changes nothing. A session field is no sign-in either.
    pub async fn a_forged_cookie_is_not_a_sign_in(setup: Setup) {
        let fx = fixture(setup).await;
        let _phone = user(&fx.app, "ada", "acme").await;
        let b = fx.browser();
        // A session field named like the cookie, written by the client itself.
        let own = demo_core::admin_ui::AdminUi::new(ADMIN_TOKEN, true);
        let good = own.cookie_value(SystemTime::now());
        assert_eq!(
            b.post(
                "/login",
                Some(json!({ "user_id": "mallory", "tessera_admin": good, "admin": true }))
            )
            .await
            .status,
            200
        );
        assert!(is_sign_in_form(&b.get("/admin").await.body));

        let (expires, mac) = good.split_once('.').unwrap();
        let later = format!("{}.{mac}", expires.parse::<u64>().unwrap() + 3600);
        let forged_mac = format!("{expires}.{}", "A".repeat(mac.len()));
        let other = demo_core::admin_ui::AdminUi::new("another-token", true)
            .cookie_value(SystemTime::now());
        let expired = own.cookie_value(SystemTime::now() - Duration::from_secs(9 * 3600));
        let handle = fx.manager.list_sessions("ada").await.unwrap()[0]
            .handle
            .clone();
        for forged in ["1", "junk", "", &later, &forged_mac, &other, &expired] {
            b.set_cookie("tessera_admin", forged);
            let page = b.get("/admin").await;
            assert!(is_sign_in_form(&page.body), "{forged:?}: {}", page.body);
            let t = token_in(&page.body);
            let r = b
                .post_form(
                    "/admin/ui/revoke",
                    &[("csrf_token", &t), ("user", "ada"), ("handle", &handle)],
                )
                .await;
            assert_eq!(r.status, 401, "{forged:?}: {r:?}");
            assert!(is_sign_in_form(&r.body));
            let r = b
                .post_form(
                    "/admin/ui/end",
                    &[("csrf_token", &t), ("field", "tenant"), ("value", "acme")],
                )
                .await;
            assert_eq!(r.status, 401, "{forged:?}: {r:?}");
        }
        assert_eq!(fx.manager.list_sessions("ada").await.unwrap().len(), 1);
        assert_eq!(
            fx.manager.count_sessions("tenant", "acme").await.unwrap(),
            1
        );
        // The real one, as a control.
        b.set_cookie("tessera_admin", &good);
        assert!(is_dashboard(&b.get("/admin").await.body));
    }

    /// Every state-changing form without the CSRF token, or with a forged one, or another
    /// browser's: `403` (the page says so) and nothing changed: no device revoked, no session
    /// ended, not signed out, not signed in.
    pub async fn forms_without_the_csrf_token_are_403_and_change_nothing(setup: Setup) {
        let fx = fixture(setup).await;
        let _laptop = user(&fx.app, "ada", "acme").await;
        let _phone = user(&fx.app, "ada", "acme").await;
        let op = operator(&fx.app).await;
        let page = op.get("/admin?user=ada").await;
        assert_eq!(
            page.body.matches("<tr class=\"device\"").count(),
            2,
            "{}",
            page.body
        );
        let handle = fx.manager.list_sessions("ada").await.unwrap()[0]
            .handle
            .clone();
        let stranger = fx.browser();
        let theirs = token_in(&stranger.get("/admin").await.body);
        for token in [None, Some("forged-token"), Some(theirs.as_str())] {
            let with = |rest: &[(&'static str, &str)]| {
                let mut pairs: Vec<(&str, String)> =
                    rest.iter().map(|(k, v)| (*k, v.to_string())).collect();
                if let Some(t) = token {
                    pairs.push(("csrf_token", t.to_string()));
                }
                pairs
            };
            for (path, fields) in [
                (
                    "/admin/ui/revoke",
                    with(&[("user", "ada"), ("handle", &handle)]),
                ),
                (
                    "/admin/ui/end",
                    with(&[("field", "tenant"), ("value", "acme")]),
                ),
                ("/admin/ui/sign-out", with(&[])),
                ("/admin/ui/sign-in", with(&[("token", ADMIN_TOKEN)])),
            ] {
                let pairs: Vec<(&str, &str)> =
                    fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = op.post_form(path, &pairs).await;
                assert_eq!(r.status, 403, "{path} {token:?}: {r:?}");
                assert!(r.body.contains("id=\"csrf-refused\""), "{}", r.body);
                assert!(admin_cookie(&r).is_none(), "{r:?}");
            }
            // A browser that is not signed in, with a wrong token: not signed in by it.
            let r = stranger
                .post_form(
                    "/admin/ui/sign-in",
                    &with(&[("token", ADMIN_TOKEN)])
                        .iter()
                        .map(|(k, v)| (*k, v.as_str()))
                        .collect::<Vec<_>>(),
                )
                .await;
            if token != Some(theirs.as_str()) {
                assert_eq!(r.status, 403, "{token:?}: {r:?}");
                assert!(stranger.cookie("tessera_admin").is_none());
            }
        }
        assert_eq!(fx.manager.list_sessions("ada").await.unwrap().len(), 2);
        assert_eq!(
            fx.manager.count_sessions("tenant", "acme").await.unwrap(),
            2
        );
        assert!(
            is_dashboard(&op.get("/admin").await.body),
            "still signed in"
        );

        // The same forms with the page's token work: a revoke of a handle that is not the
        // user's is 404 and ends nothing; of one that is, 303 back to the user's devices.
        let t = token_in(&op.get("/admin?user=ada").await.body);
        let r = op
            .post_form(
                "/admin/ui/revoke",
                &[("csrf_token", &t), ("user", "bob"), ("handle", &handle)],
            )
            .await;
        assert_eq!(r.status, 404, "{r:?}");
        assert_eq!(fx.manager.list_sessions("ada").await.unwrap().len(), 2);
        let r = op
            .post_form(
                "/admin/ui/revoke",
                &[("csrf_token", &t), ("user", "ada"), ("handle", &handle)],
            )
            .await;
        assert_eq!(r.status, 303, "{r:?}");
        assert_eq!(header(&r, "location"), Some("/admin?user=ada#user-devices"));
        let left = fx.manager.list_sessions("ada").await.unwrap();
        assert_eq!(left.len(), 1);
        assert_ne!(left[0].handle, handle);
    }

    /// A post another site's page makes (`Sec-Fetch-Site: cross-site`, or an `Origin` of
    /// another host), even carrying the page's good token: `403`, nothing changed.
    pub async fn cross_site_posts_are_refused(setup: Setup) {
        let fx = fixture(setup).await;
        let _ada = user(&fx.app, "ada", "acme").await;
        let op = operator(&fx.app).await;
        let t = token_in(&op.get("/admin").await.body);
        let handle = fx.manager.list_sessions("ada").await.unwrap()[0]
            .handle
            .clone();
        for headers in [
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ][..],
            &[("sec-fetch-site", "same-site")][..],
            &[("origin", "https://evil.example")][..],
        ] {
            for (path, body) in [
                (
                    "/admin/ui/end",
                    form(&[("csrf_token", &t), ("field", "tenant"), ("value", "acme")]),
                ),
                (
                    "/admin/ui/revoke",
                    form(&[("csrf_token", &t), ("user", "ada"), ("handle", &handle)]),
                ),
                ("/admin/ui/sign-out", form(&[("csrf_token", &t)])),
            ] {
                let r = op
                    .request(Method::POST, path, Some((FORM, body)), headers)
                    .await;
                assert_eq!(r.status, 403, "{path} {headers:?}: {r:?}");
                assert!(r.body.contains("id=\"csrf-refused\""), "{}", r.body);
            }
        }
        assert_eq!(
            fx.manager.count_sessions("tenant", "acme").await.unwrap(),
            1
        );
        assert_eq!(fx.manager.list_sessions("ada").await.unwrap().len(), 1);
        assert!(
            is_dashboard(&op.get("/admin").await.body),
            "still signed in"
        );
        // The same post from the page's own origin is served.
        let r = op
            .request(
                Method::POST,
                "/admin/ui/end",
                Some((
                    FORM,
                    form(&[("csrf_token", &t), ("field", "tenant"), ("value", "acme")]),
                )),
                &[("sec-fetch-site", "same-origin"), ("origin", op.origin())],
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            fx.manager.count_sessions("tenant", "acme").await.unwrap(),
            0
        );
    }

    /// End by query: a confirmation first (how many match, nothing ended), then the confirm
    /// form ends them and says how many. A field that is not indexed is `400` with a message
    /// naming the indexed ones, on both steps, and ends nothing.
    pub async fn end_by_query_takes_indexed_fields_after_a_confirmation(setup: Setup) {
        let fx = fixture(setup).await;
        let _a = user(&fx.app, "ada", "acme").await;
        let _b = user(&fx.app, "bob", "acme").await;
        let _c = user(&fx.app, "cy", "globex").await;
        let op = operator(&fx.app).await;
        for path in [
            "/admin/ui/end?field=user_id&value=ada",
            "/admin/ui/end?field=counter&value=1",
            "/admin/ui/end?field=tenant&value=",
            "/admin/ui/end",
        ] {
            let r = op.get(path).await;
            assert_eq!(r.status, 400, "{path}: {r:?}");
            assert!(r.body.contains("id=\"admin-error\""), "{}", r.body);
        }
        let r = op.get("/admin/ui/end?field=user_id&value=ada").await;
        assert!(r.body.contains("(tenant, cart)"), "{}", r.body);
        let t = token_in(&op.get("/admin").await.body);
        let r = op
            .post_form(
                "/admin/ui/end",
                &[("csrf_token", &t), ("field", "user_id"), ("value", "ada")],
            )
            .await;
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(fx.manager.list_sessions("ada").await.unwrap().len(), 1);

        let confirm = op.get("/admin/ui/end?field=tenant&value=acme").await;
        assert_eq!(confirm.status, 200, "{confirm:?}");
        assert!(
            confirm.body.contains("id=\"end-count\" data-count=\"2\""),
            "{}",
            confirm.body
        );
        assert_eq!(confirm.body.matches("<tr class=\"match\"").count(), 2);
        assert_eq!(
            fx.manager.count_sessions("tenant", "acme").await.unwrap(),
            2,
            "the confirmation ends nothing"
        );
        let none = op.get("/admin/ui/end?field=tenant&value=initech").await;
        assert!(none.body.contains("data-count=\"0\""), "{}", none.body);
        assert!(
            !none.body.contains("action=\"/admin/ui/end\""),
            "nothing to confirm"
        );

        // Confirmed for 2; a third session with the value came since: nothing ends, the
        // confirmation again with the new count.
        assert!(
            confirm.body.contains("name=\"expected\" value=\"2\""),
            "{}",
            confirm.body
        );
        let token = token_in(&confirm.body);
        let fields = [
            ("csrf_token", token.as_str()),
            ("field", "tenant"),
            ("value", "acme"),
            ("expected", "2"),
        ];
        let confirmed = || op.post_form("/admin/ui/end", &fields);
        let late = user(&fx.app, "dee", "acme").await;
        let r = confirmed().await;
        assert_eq!(r.status, 409, "{r:?}");
        assert!(
            r.body.contains("id=\"end-changed\"") && r.body.contains("data-count=\"3\""),
            "{}",
            r.body
        );
        assert_eq!(
            fx.manager.count_sessions("tenant", "acme").await.unwrap(),
            3
        );
        assert_eq!(late.post("/logout", None).await.status, 204);

        let r = confirmed().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.body.contains("id=\"ended-count\" data-count=\"2\""),
            "{}",
            r.body
        );
        assert_eq!(
            fx.manager.count_sessions("tenant", "acme").await.unwrap(),
            0
        );
        assert_eq!(
            fx.manager.count_sessions("tenant", "globex").await.unwrap(),
            1
        );
    }

    /// User ids, tenants, agents and field values are HTML-escaped wherever the page shows
    /// them (the chart, the devices, the events, the confirmation).
    pub async fn what_users_wrote_is_escaped(setup: Setup) {
        let fx = fixture(setup).await;
        let evil = "<img src=x onerror=alert(1)>";
        let b = fx.browser().with_agent("<script>alert('agent')</script>");
        assert_eq!(
            b.post(
                "/login",
                Some(json!({ "user_id": evil, "tenant": "<svg onload=alert(2)>" }))
            )
            .await
            .status,
            200
        );
        let op = operator(&fx.app).await;
        let user = form(&[("user", evil)]);
        let page = op
            .get(&format!("/admin?{}", String::from_utf8(user).unwrap()))
            .await;
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.body.contains("<tr class=\"device\""), "{}", page.body);
        assert!(
            page.body.contains("&lt;svg onload=alert(2)&gt;"),
            "{}",
            page.body
        );
        assert!(page.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page
            .body
            .contains("&lt;script&gt;alert(&#39;agent&#39;)&lt;/script&gt;"));
        for raw in ["<img", "<svg onload", "<script"] {
            assert!(!page.body.contains(raw), "{raw} unescaped: {}", page.body);
        }
        let confirm = op
            .get(&format!(
                "/admin/ui/end?{}",
                String::from_utf8(form(&[
                    ("field", "tenant"),
                    ("value", "<svg onload=alert(2)>")
                ]))
                .unwrap()
            ))
            .await;
        assert!(
            confirm.body.contains("data-count=\"1\""),
            "{}",
            confirm.body
        );
        assert!(!confirm.body.contains("<svg onload") && !confirm.body.contains("<img"));
    }
}
