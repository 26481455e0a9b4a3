//! Taking over sessions written by actix-session's Redis store (issue #15): the real
//! actix-session 0.11 writes them, tessera-actix takes them over on first use, the user stays
//! logged in, and nothing of the old session can come back.

use actix_session::config::CookieContentSecurity;
use actix_session::storage::RedisSessionStore;
use actix_web::cookie::Key as ActixKey;
use actix_web::{web, HttpResponse};
use serde_json::json;
use tessera_actix::{ActixSessionImport, SessionMiddleware};
use tessera_core::{RedisOptions, SessionManager, Store};
use tessera_tests::{spawn_actix, Browser, Server, ServerKind, TestApp};

const ACTIX_KEY: [u8; 64] = [9; 64];

/// A short grace for the tests that replay an old cookie after it.
const GRACE: std::time::Duration = std::time::Duration::from_millis(400);

/// The app before the switch: actix-session over Redis.
async fn old_app(url: &str, security: CookieContentSecurity) -> TestApp {
    let store = RedisSessionStore::new(url).await.unwrap();
    spawn_actix(move || {
        actix_web::App::new()
            .wrap(
                actix_session::SessionMiddleware::builder(
                    store.clone(),
                    ActixKey::from(&ACTIX_KEY),
                )
                .cookie_secure(false)
                .cookie_content_security(security)
                .build(),
            )
            .route(
                "/old/login",
                web::post().to(|s: actix_session::Session| async move {
                    s.insert("user_id", "ada").unwrap();
                    s.insert("cart", vec![1, 2]).unwrap();
                    s.insert("n", 5).unwrap();
                    s.insert("note", "plain text").unwrap();
                    HttpResponse::NoContent().finish()
                }),
            )
            .route(
                "/old/login-padded",
                web::post().to(|s: actix_session::Session| async move {
                    // A user id tessera refuses: white space at its start.
                    s.insert("user_id", " ada").unwrap();
                    HttpResponse::NoContent().finish()
                }),
            )
    })
}

/// The app after: tessera-actix (the demo's routes), taking over actix-session's sessions.
fn new_app(manager: SessionManager, import: Option<ActixSessionImport>) -> TestApp {
    spawn_actix(move || {
        let mut mw = SessionMiddleware::from_manager(manager.clone());
        if let Some(i) = &import {
            mw = mw.import_actix_session(i.clone());
        }
        actix_web::App::new()
            .wrap(mw)
            .configure(actix_demo::routes_with_admin(None))
    })
}

async fn manager(server: &Server) -> SessionManager {
    let store = Store::redis_with(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    SessionManager::new(store, tessera_tests::fixture::config(|c| c))
}

/// actix-session's keys: the 64-character session keys (everything that is not tessera's).
fn old_keys(server: &Server) -> Vec<String> {
    server
        .keys("*")
        .into_iter()
        .filter(|k| k.len() == 64 && !k.contains(':'))
        .collect()
}

/// actix-session's keys that live on: not taken over, or kept longer than the grace a
/// taken-over one is left for the browser's requests sent with the old cookie.
fn old_keys_beyond(server: &Server, grace: std::time::Duration) -> Vec<String> {
    old_keys(server)
        .into_iter()
        .filter(|k| {
            let ttl = server.cmd(&["PTTL", k]).int();
            ttl < 0 || ttl > grace.as_millis() as i64
        })
        .collect()
}

async fn takes_over(security: CookieContentSecurity, signed: bool) {
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let old = old_app(&server.url(), security).await;
    let b: Browser = old.browser();
    assert_eq!(b.post("/old/login", None).await.status, 204);
    let old_cookie = b.cookie("id").expect("actix-session's cookie");
    assert_eq!(old_keys(&server).len(), 1);

    let m = manager(&server).await;
    // Without the import: an unknown cookie, and the old session is left alone.
    let plain = new_app(m.clone(), None);
    assert_eq!(b.pointed_at(&plain).get("/me").await.status, 401);
    assert_eq!(old_keys(&server).len(), 1);

    let import = ActixSessionImport::new(&ACTIX_KEY)
        .unwrap()
        .signed(signed)
        .user_id_field("user_id")
        .grace(GRACE);
    let app = new_app(m.clone(), Some(import));
    // A forged actix-session cookie names nothing and costs no store command.
    let forged = app.browser();
    forged.set_cookie("id", "forged-value");
    server.reset_stats();
    assert_eq!(forged.get("/me").await.status, 401);
    let stats = server.command_stats();
    assert!(
        !stats.contains_key("getdel") && !stats.contains_key("get"),
        "{stats:?}"
    );

    let b = b.pointed_at(&app);
    let r = b.get("/me").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"user_id": "ada", "cart": [1, 2], "n": 5, "note": "plain text"}),
        "every value, as the JSON value actix-session held"
    );
    assert!(
        r.set_cookies
            .iter()
            .any(|c| c.starts_with("id=;") && c.contains("Max-Age=0")),
        "the old cookie is removed: {:?}",
        r.set_cookies
    );
    assert!(b.cookie("id").is_none());
    assert!(b.cookie("__Host-tessera").is_some());
    assert!(
        old_keys_beyond(&server, GRACE).is_empty(),
        "the old session goes from Redis within the grace"
    );
    let devices = b.get("/sessions").await.json();
    assert_eq!(
        devices.as_array().unwrap().len(),
        1,
        "ada's device list: {devices}"
    );
    assert_eq!(devices[0]["current"], json!(true));
    assert_eq!(b.post("/counter", None).await.json()["counter"], json!(1));

    // The old cookie, replayed after the grace (an attacker with a copy), brings nothing
    // back: the old session was taken over, and is gone.
    tokio::time::sleep(GRACE + std::time::Duration::from_millis(100)).await;
    assert!(old_keys(&server).is_empty(), "gone after the grace");
    let replay = app.browser();
    replay.set_cookie("id", &old_cookie);
    assert_eq!(replay.get("/me").await.status, 401);
    b.post("/logout-all", None).await;
    assert_eq!(b.get("/me").await.status, 401);
    assert_eq!(replay.get("/me").await.status, 401);
    assert!(m.list_sessions("ada").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_over_encrypted_actix_session_cookies() {
    takes_over(CookieContentSecurity::Private, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_over_signed_actix_session_cookies() {
    takes_over(CookieContentSecurity::Signed, true).await
}

/// The store failing during a take-over: the old cookie stays, the old session is still there
/// (the take-over waiting in the paused server's socket is refused past its deadline), and it
/// is taken over once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_keeps_the_old_cookie() {
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let old = old_app(&server.url(), CookieContentSecurity::Private).await;
    let b = old.browser();
    assert_eq!(b.post("/old/login", None).await.status, 204);
    let import = ActixSessionImport::new(&ACTIX_KEY)
        .unwrap()
        .user_id_field("user_id");
    let app = new_app(manager(&server).await, Some(import));
    let b = b.pointed_at(&app);
    server.pause();
    let r = b.get("/me").await;
    // Resumed after the take-over's deadline: the script that waited in the socket refuses to
    // run (a bare GETDEL would run now and lose the session).
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    server.resume();
    assert!(
        !r.set_cookies.iter().any(|c| c.starts_with("id=")),
        "the old cookie stays: {r:?}"
    );
    assert!(b.cookie("id").is_some());
    assert_eq!(
        old_keys(&server).len(),
        1,
        "the old session is still there: {r:?}"
    );
    let r = b.get("/me").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["user_id"], json!("ada"));
    assert!(b.cookie("id").is_none());
}

/// Issue #23 item 6: after the switch, a logout-all also ends the actix-session sessions of
/// that user not taken over yet (a stolen cookie, a device idle since the switch): their
/// take-over is refused and their old key deleted. Another user's are taken over as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_refuses_the_take_over_of_older_sessions() {
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let old = old_app(&server.url(), CookieContentSecurity::Private).await;
    let laptop = old.browser();
    let thief = old.browser();
    assert_eq!(laptop.post("/old/login", None).await.status, 204);
    assert_eq!(thief.post("/old/login", None).await.status, 204);
    assert_eq!(old_keys(&server).len(), 2);
    let m = manager(&server).await;
    let import = ActixSessionImport::new(&ACTIX_KEY)
        .unwrap()
        .user_id_field("user_id");
    let app = new_app(m.clone(), Some(import));
    let laptop = laptop.pointed_at(&app);
    assert_eq!(laptop.get("/me").await.json()["user_id"], json!("ada"));
    assert_eq!(
        m.logout_all("ada").await.unwrap(),
        1,
        "the taken-over session"
    );
    assert_eq!(laptop.get("/me").await.status, 401);
    let thief = thief.pointed_at(&app);
    let r = thief.get("/me").await;
    assert_eq!(
        r.status, 401,
        "a pre-switch cookie is not taken over: {r:?}"
    );
    assert!(
        old_keys_beyond(&server, std::time::Duration::ZERO).len() <= 1
            && old_keys_beyond(&server, ActixSessionImport::DEFAULT_GRACE).is_empty(),
        "its old key is gone (the laptop's, taken over, within the grace)"
    );
    assert!(m.list_sessions("ada").await.unwrap().is_empty());
    assert!(thief.cookie("id").is_none(), "its old cookie is removed");
}

/// Issue #23 item 7: a take-over whose write fails (Redis over maxmemory, noeviction) leaves
/// the old session as it was: a 503, the old cookie kept, and once memory is back the user is
/// still logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_take_over_leaves_the_old_session() {
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let old = old_app(&server.url(), CookieContentSecurity::Private).await;
    let b = old.browser();
    assert_eq!(b.post("/old/login", None).await.status, 204);
    let import = ActixSessionImport::new(&ACTIX_KEY)
        .unwrap()
        .user_id_field("user_id");
    let app = new_app(manager(&server).await, Some(import));
    let b = b.pointed_at(&app);
    server.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let r = b.get("/me").await;
    let left = old_keys(&server).len();
    server.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(left, 1, "the old session is still there: {r:?}");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(b.cookie("id").is_some(), "the old cookie stays");
    let r = b.get("/me").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["user_id"], json!("ada"), "still logged in");
    assert!(
        old_keys_beyond(&server, ActixSessionImport::DEFAULT_GRACE).is_empty(),
        "taken over now (the old key goes within the grace)"
    );
}

/// A session whose user id tessera refuses is not taken over (a warning names why): the old
/// cookie goes and the user logs in again, as for an undecodable session. Before, its login
/// failed at every request: answered without a session, the old cookie kept, the old session
/// read again each time (found by the decoder's property tests, issue #26).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_tessera_refuses_is_not_taken_over() {
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let old = old_app(&server.url(), CookieContentSecurity::Private).await;
    let b = old.browser();
    assert_eq!(b.post("/old/login-padded", None).await.status, 204);
    let import = ActixSessionImport::new(&ACTIX_KEY)
        .unwrap()
        .user_id_field("user_id");
    let app = new_app(manager(&server).await, Some(import));
    let b = b.pointed_at(&app);
    let r = b.get("/me").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.set_cookies
            .iter()
            .any(|c| c.starts_with("id=;") && c.contains("Max-Age=0")),
        "the old cookie is removed: {r:?}"
    );
    assert!(b.cookie("id").is_none());
    server.reset_stats();
    assert_eq!(b.get("/me").await.status, 401);
    assert!(
        !server.command_stats().contains_key("get"),
        "the old session is not read again"
    );
}

#[test]
fn a_short_key_is_a_typed_error() {
    assert!(ActixSessionImport::new(&[1; 32]).is_err());
}

/// A page's parallel requests just after the switch, both carrying only actix-session's
/// cookie, to two instances: each is served logged in (the one that did not write
/// tessera's copy must not answer as logged out, nor send a cookie that replaces it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_requests_of_one_browser_are_both_logged_in() {
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let old = old_app(&server.url(), CookieContentSecurity::Private).await;
    let import = ActixSessionImport::new(&ACTIX_KEY)
        .unwrap()
        .user_id_field("user_id");
    let a = new_app(manager(&server).await, Some(import.clone()));
    let b = new_app(manager(&server).await, Some(import));
    let mut logged_out = 0;
    let rounds = 100;
    for i in 0..rounds {
        let browser = old.browser();
        assert_eq!(browser.post("/old/login", None).await.status, 204);
        let (on_a, on_b) = (browser.pointed_at(&a), browser.pointed_at(&b));
        // The second request a little later (0 to 5 ms), as a page's requests go out.
        let later = async {
            tokio::time::sleep(std::time::Duration::from_micros(i % 10 * 500)).await;
            on_b.get("/me").await
        };
        let (x, y) = tokio::join!(on_a.get("/me"), later);
        logged_out += usize::from(x.status != 200) + usize::from(y.status != 200);
    }
    assert_eq!(
        logged_out,
        0,
        "requests answered as logged out, of {}",
        2 * rounds
    );
}
