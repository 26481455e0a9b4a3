//! The calls users of the peer crates reach for (issue #27), against real servers and
//! through the real axum and actix stacks: `insert` by value, `is_empty`, the session's
//! expiry (age and date) against the TTL Redis holds, actix's `SessionExt`
//! (`req.get_session()` in handlers, middleware and guards), the error-rendering hook of both
//! adapters, and CSRF rejections answered as JSON like every other error.

use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tessera_core::adapter::{ClientInfo, ManagerExt as _, SessionExt as _};
use tessera_core::{Expiry, RedisOptions, SessionConfig, SessionManager, Store};
use tessera_tests::fixture::key;
use tessera_tests::{spawn_app, Browser, Server, ServerKind, TestApp};

async fn redis_manager(server: &Server, idle: Duration) -> SessionManager {
    let store = Store::redis_with(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let config = SessionConfig::builder(key(1))
        .idle_timeout(idle)
        .touch_interval(Duration::from_secs(60))
        .longest_expiry(Duration::from_secs(86_400))
        .build()
        .unwrap();
    SessionManager::new(store, config)
}

/// `name=value` of a `Set-Cookie` line, as a browser sends it back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

fn start(m: &SessionManager, cookie: Option<&str>) -> tessera_core::Session {
    m.start_with(cookie.map(str::as_bytes), ClientInfo::default())
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct User {
    name: String,
    admin: bool,
}

#[tokio::test]
async fn insert_takes_values_and_references_and_is_empty_sees_user_fields_only() {
    let server = Server::start(ServerKind::Redis7);
    let m = redis_manager(&server, Duration::from_secs(600)).await;
    let s = start(&m, None);
    assert!(s.is_empty().await.unwrap(), "a new session");
    let user = User {
        name: "ada".into(),
        admin: true,
    };
    s.insert("n", 1).await.unwrap(); // by value
    s.insert("user", &user).await.unwrap(); // by reference
    s.insert("name", String::from("Ada")).await.unwrap(); // an owned String
    s.insert_for("step_up", true, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!s.is_empty().await.unwrap());
    let out = s.finish(200).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let cookie = cookie_pair(&out.set_cookie.unwrap());

    let s = start(&m, Some(&cookie));
    assert_eq!(s.get::<i64>("n").await.unwrap(), Some(1));
    assert_eq!(s.get::<User>("user").await.unwrap(), Some(user));
    assert_eq!(
        s.get::<String>("name").await.unwrap().as_deref(),
        Some("Ada")
    );
    // A logged-in session whose user fields are all gone is empty: the user binding and the
    // other reserved fields are not user fields.
    s.login("ada").await.unwrap();
    s.clear().await.unwrap();
    assert!(s.is_empty().await.unwrap());
    let out = s.finish(200).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let cookie = cookie_pair(&out.set_cookie.unwrap());
    let s = start(&m, Some(&cookie));
    assert!(s.is_empty().await.unwrap(), "as stored");
    assert_eq!(s.user_id().await.unwrap().as_deref(), Some("ada"));
    assert!(
        server
            .keys("session:*")
            .iter()
            .any(|k| server.text(&["HGET", k, "__u"]).as_deref() == Some("ada")),
        "stored with its user"
    );
}

#[tokio::test]
async fn the_expiry_age_and_date_follow_the_ttl_redis_holds() {
    let server = Server::start(ServerKind::Redis7);
    let idle = Duration::from_secs(600);
    let m = redis_manager(&server, idle).await;
    let s = start(&m, None);
    assert_eq!(
        s.expiry_age().await.unwrap(),
        idle,
        "not stored yet: the idle timeout, from its save"
    );
    s.insert("n", 1).await.unwrap();
    let out = s.finish(200).await;
    let cookie = cookie_pair(&out.set_cookie.unwrap());
    let key = server.keys("session:*").into_iter().next().unwrap();

    // Used again within the touch interval: the TTL did not slide, and the age says so.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let s = start(&m, Some(&cookie));
    let age = s.expiry_age().await.unwrap();
    let pttl = Duration::from_millis(server.cmd(&["PTTL", &key]).int() as u64);
    let gap = age.abs_diff(pttl);
    assert!(
        gap < Duration::from_millis(300),
        "age {age:?} vs the server's PTTL {pttl:?}"
    );
    assert!(age <= idle - Duration::from_millis(1_400), "{age:?}");
    let date = s.expiry_date().await.unwrap();
    let from_now = date.duration_since(SystemTime::now()).unwrap();
    assert!(
        from_now <= age && age - from_now < Duration::from_millis(300),
        "{from_now:?} vs {age:?}"
    );

    // Remember me: the session's own expiry, from the save that slides it.
    s.set_expiry(Expiry::Persistent(Duration::from_secs(7_200)))
        .await
        .unwrap();
    let out = s.finish(200).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let s = start(&m, Some(&cookie));
    let age = s.expiry_age().await.unwrap();
    let pttl = Duration::from_millis(server.cmd(&["PTTL", &key]).int() as u64);
    assert!(pttl > Duration::from_secs(7_100), "{pttl:?}");
    let gap = age.abs_diff(pttl);
    assert!(gap < Duration::from_millis(300), "{age:?} vs {pttl:?}");
}

/// The hook both apps below use: pages for browsers, the JSON answer for API calls.
fn page(refusal: &tessera_core::adapter::Refusal, wants_html: bool) -> Option<(u16, String)> {
    wants_html.then(|| {
        (
            refusal.status,
            format!(
                "<h1>refused</h1><p>{:?}</p><p>{}</p>",
                refusal.kind, refusal.message
            ),
        )
    })
}

fn axum_app(m: SessionManager) -> axum::Router {
    use axum::response::{Html, IntoResponse};
    use axum::routing::post;
    use tessera_axum::{CsrfForm, Session, SessionError, SessionLayer};
    let layer = SessionLayer::from_manager(m).render_errors(|r, req| {
        let (status, html) = page(r, req.wants_html())?;
        Some(
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                Html(html),
            )
                .into_response(),
        )
    });
    axum::Router::new()
        .route(
            "/form",
            post(|CsrfForm(_): CsrfForm<HashMap<String, String>>| async { "ok" }),
        )
        .route(
            "/need-login",
            post(|s: Session| async move {
                s.logout_all().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/visit",
            post(|s: Session| async move {
                // A read first: with the store down it fails before anything is sent.
                s.get::<i64>("n").await?;
                Ok::<_, SessionError>(s.increment("n", 1).await?.to_string())
            }),
        )
        .layer(layer)
}

fn actix_app(m: SessionManager) -> TestApp {
    use actix_web::{guard, middleware::from_fn, web, HttpRequest, HttpResponse};
    use tessera_actix::{CsrfForm, Session, SessionError, SessionExt as _, SessionMiddleware};
    tessera_tests::http::spawn_actix(move || {
        let mw = SessionMiddleware::from_manager(m.clone()).render_errors(|r, req| {
            let (status, html) = page(r, req.wants_html())?;
            Some(
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .content_type("text/html; charset=utf-8")
                    .body(html),
            )
        });
        actix_web::App::new()
            // The app's own middleware, inside the session middleware: reads the session.
            .wrap(from_fn(
                |req: actix_web::dev::ServiceRequest,
                 next: actix_web::middleware::Next<actix_web::body::BoxBody>| async move {
                    let theme = match req.get_session() {
                        Ok(s) => s.get::<String>("theme").await.ok().flatten(),
                        Err(_) => None,
                    };
                    let mut res = next.call(req).await?;
                    if let Some(t) = theme {
                        res.headers_mut().insert(
                            actix_web::http::header::HeaderName::from_static("x-theme"),
                            t.parse().unwrap(),
                        );
                    }
                    Ok::<_, actix_web::Error>(res)
                },
            ))
            .wrap(mw)
            .route(
                "/form",
                web::post().to(|_: CsrfForm<HashMap<String, String>>| async { "ok" }),
            )
            .route(
                "/need-login",
                web::post().to(|s: Session| async move {
                    s.logout_all().await?;
                    Ok::<_, SessionError>("ok")
                }),
            )
            .route(
                "/visit",
                web::post().to(|s: Session| async move {
                    s.get::<i64>("n").await?;
                    Ok::<_, SessionError>(s.increment("n", 1).await?.to_string())
                }),
            )
            // A handler with only the request, as actix-session's users write them.
            .route(
                "/theme",
                web::post().to(|req: HttpRequest| async move {
                    let s = req.get_session()?;
                    s.insert("theme", "dark").await.map_err(SessionError)?;
                    Ok::<_, actix_web::Error>("ok")
                }),
            )
            // A guard that sees the session (the handle: a guard cannot await).
            .route(
                "/guarded",
                web::get()
                    .guard(guard::fn_guard(|ctx| ctx.get_session().is_ok()))
                    .to(|| async { "guarded" }),
            )
    })
}

fn header<'a>(r: &'a tessera_tests::http::Answer, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Both adapters: CSRF rejections are JSON like every error; with the hook, a browser gets the
/// app's page for a CSRF rejection, a session error and a store failure, and an API call keeps
/// the JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_render_as_the_apps_pages_and_csrf_rejections_as_json() {
    for adapter in ["axum", "actix"] {
        let mut server = Server::start(ServerKind::Redis7);
        let m = redis_manager(&server, Duration::from_secs(600)).await;
        let app = match adapter {
            "axum" => spawn_app(axum_app(m)).await,
            _ => actix_app(m),
        };
        let api = Browser::new(app.addr).with_headers(&[("accept", "application/json")]);
        let browser = api.with_headers(&[("accept", "text/html,application/xhtml+xml")]);

        let r = api.post_form("/form", &[("x", "1")]).await;
        assert_eq!(r.status, 403, "{adapter}: {r:?}");
        assert!(
            header(&r, "content-type").is_some_and(|c| c.starts_with("application/json")),
            "{adapter}: {r:?}"
        );
        assert_eq!(
            r.json(),
            json!({"error": "no live session for this request"}),
            "{adapter}"
        );
        let r = browser.post_form("/form", &[("x", "1")]).await;
        assert_eq!(r.status, 403, "{adapter}: {r:?}");
        assert!(
            header(&r, "content-type").is_some_and(|c| c.starts_with("text/html")),
            "{adapter}: {r:?}"
        );
        assert!(r.body.contains("<p>Csrf</p>"), "{adapter}: {}", r.body);

        let r = browser.post("/need-login", None).await;
        assert_eq!(r.status, 401, "{adapter}: {r:?}");
        assert!(
            r.body.contains("Error(NotLoggedIn)") && r.body.contains("not logged in"),
            "{adapter}: {}",
            r.body
        );
        let r = api.post("/need-login", None).await;
        assert_eq!(r.json(), json!({"error": "not logged in"}), "{adapter}");

        assert_eq!(browser.post("/visit", None).await.body, "1", "{adapter}");
        server.kill();
        let r = browser.post("/visit", None).await;
        assert_eq!(r.status, 503, "{adapter}: {r:?}");
        assert!(
            r.body.contains("Error(Unavailable)"),
            "{adapter}: {}",
            r.body
        );
        let r = api.post("/visit", None).await;
        assert_eq!(r.status, 503, "{adapter}: {r:?}");
        assert_eq!(
            r.retry_after.as_deref(),
            Some("1"),
            "{adapter}: the JSON answer keeps Retry-After"
        );
    }
}

/// actix: `req.get_session()` in a handler, in the app's own middleware and in a guard; and
/// the named 500 without the middleware.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_session_ext_reaches_the_session_outside_extractors() {
    let server = Server::start(ServerKind::Redis7);
    let m = redis_manager(&server, Duration::from_secs(600)).await;
    let app = actix_app(m);
    let b = Browser::new(app.addr);
    assert_eq!(b.get("/guarded").await.body, "guarded");
    assert_eq!(b.post("/theme", None).await.status, 200);
    let r = b.get("/guarded").await;
    assert_eq!(
        header(&r, "x-theme"),
        Some("dark"),
        "the middleware read the session: {r:?}"
    );

    use actix_web::{web, HttpRequest};
    use tessera_actix::SessionExt as _;
    let bare = tessera_tests::http::spawn_actix(|| {
        actix_web::App::new().route(
            "/theme",
            web::get().to(|req: HttpRequest| async move {
                req.get_session()?;
                Ok::<_, actix_web::Error>("unreachable")
            }),
        )
    });
    let r = Browser::new(bare.addr).get("/theme").await;
    assert_eq!(r.status, 500);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("tessera_actix::SessionMiddleware"),
        "{r:?}"
    );
}
