//! tessera-tower-sessions (issue #15): an app on tower-sessions + axum-login + axum-messages,
//! unchanged, over tessera's layout, through real HTTP against real servers: login, a
//! protected route, flash messages, the device list, logout-all and revoke from another
//! device, no session brought back by a late save, 503 while the store is down, and the
//! take-over of sessions written by tower-sessions-redis-store.

use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tessera_core::{Key, RedisOptions, SessionConfig, SessionManager, Store};
use tessera_tests::{spawn_app, Backend, Browser, ServerKind, TestApp, Topology};
use tessera_tower_sessions::TesseraStore;
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;

/// tower-sessions' default cookie name.
const COOKIE: &str = "id";

struct Env {
    server: Option<Topology>,
    store: TesseraStore,
    app: TestApp,
}

async fn store_on(server: Option<&Topology>) -> Store {
    match server {
        None => Store::memory(),
        Some(t) => Store::redis_with(&t.url(), RedisOptions::default())
            .await
            .unwrap_or_else(|e| panic!("connect to the test {}: {e}", t.name())),
    }
}

fn tessera(store: Store) -> TesseraStore {
    let config = SessionConfig::builder(Key::generate()).build().unwrap();
    TesseraStore::new(SessionManager::new(store, config)).user_id_at("axum-login.data", "/user_id")
}

async fn env(backend: Backend) -> Env {
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(move || backend.topology())
        .await
        .unwrap();
    let store = tessera(store_on(server.as_ref()).await);
    let app = spawn_app(axum_login_app::app(store.clone())).await;
    Env { server, store, app }
}

async fn login(b: &Browser, user: &str, password: &str) -> u16 {
    b.post(
        "/login",
        Some(json!({"username": user, "password": password})),
    )
    .await
    .status
}

fn id_of(b: &Browser) -> Id {
    b.cookie(COOKIE).expect("a session cookie").parse().unwrap()
}

tessera_tests::per_backend!(
    [memory, redis7, valkey, cluster] =>
    login_protected_route_flash_and_logout,
    logout_all_from_another_device,
    revoke_another_device,
    a_late_save_does_not_bring_back_an_ended_session,
    devices_show_the_agent_the_address_and_a_moving_last_seen,
);

mod cases {
    use super::*;

    /// Issue #27: with `DeviceInfoLayer` (the example app has it), a device list of
    /// `TesseraStore` sessions shows the user agent and address of the login, marks the
    /// caller's own session, and its last-seen time moves with use (once per touch interval).
    pub async fn devices_show_the_agent_the_address_and_a_moving_last_seen(backend: Backend) {
        tessera_tests::init_tracing();
        let server = tokio::task::spawn_blocking(move || backend.topology())
            .await
            .unwrap();
        let config = SessionConfig::builder(Key::generate())
            .touch_interval(Duration::from_secs(1))
            .build()
            .unwrap();
        let store = TesseraStore::new(SessionManager::new(store_on(server.as_ref()).await, config))
            .user_id_at("axum-login.data", "/user_id");
        let app = spawn_app(axum_login_app::app(store.clone())).await;
        let laptop = app.browser().with_agent("Laptop/1.0");
        let phone = app.browser().with_agent("Phone/2.0");
        assert_eq!(login(&laptop, "ada", "lovelace").await, 204);
        assert_eq!(login(&phone, "ada", "lovelace").await, 204);
        let list = laptop.get("/devices").await.json();
        let list = list.as_array().unwrap().clone();
        assert_eq!(list.len(), 2, "{list:?}");
        let by_agent = |list: &[serde_json::Value], agent: &str| {
            list.iter()
                .find(|d| d["user_agent"] == json!(agent))
                .unwrap_or_else(|| panic!("{agent} in {list:?}"))
                .clone()
        };
        let mine = by_agent(&list, "Laptop/1.0");
        let other = by_agent(&list, "Phone/2.0");
        assert_eq!(mine["current"], json!(true), "{list:?}");
        assert_eq!(other["current"], json!(false), "{list:?}");
        assert_eq!(mine["client_addr"], json!("127.0.0.1"), "{list:?}");
        assert_eq!(mine["handle"], json!(store.handle(&id_of(&laptop))));

        // The laptop is used a touch interval later: its last-seen moves, the phone's does not.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert_eq!(laptop.get("/me").await.status, 200);
        let again = phone.get("/devices").await.json();
        let again = again.as_array().unwrap().clone();
        let seen = |d: &serde_json::Value| d["last_seen"].as_str().unwrap().to_string();
        assert!(
            seen(&by_agent(&again, "Laptop/1.0")) > seen(&mine),
            "the laptop's last-seen moved: {mine:?} -> {again:?}"
        );
        assert_eq!(
            by_agent(&again, "Phone/2.0")["current"],
            json!(true),
            "the phone asked this time"
        );
        // The touch kept tower-sessions' expiry (8 hours of inactivity, set by its save).
        if let Some(t) = &server {
            for key in t.session_keys() {
                let ttl = t.cmd(&["PTTL", &key]).int();
                assert!(ttl > 7 * 3_600_000 && ttl <= 8 * 3_600_000, "{key}: {ttl}");
            }
        }
    }

    pub async fn login_protected_route_flash_and_logout(backend: Backend) {
        let e = env(backend).await;
        let b = e.app.browser();
        assert_eq!(b.get("/me").await.status, 401, "protected before login");
        assert_eq!(login(&b, "ada", "wrong").await, 401);
        assert_eq!(login(&b, "ada", "lovelace").await, 204);
        let me = b.get("/me").await;
        assert_eq!(me.status, 200, "{me:?}");
        assert_eq!(
            me.json(),
            json!({"user": "ada", "messages": ["Welcome, ada"]}),
            "the flash message of the login"
        );
        assert_eq!(
            b.get("/me").await.json(),
            json!({"user": "ada", "messages": []}),
            "a flash message is shown once"
        );

        if let Some(t) = &e.server {
            // tessera's layout: one hash, one field per value, the user bound and indexed.
            let keys = t.session_keys();
            assert_eq!(keys.len(), 1, "{keys:?}");
            let id = b.cookie(COOKIE).unwrap();
            assert!(
                !keys[0].contains(&id),
                "the key names a hash of the id, not the id"
            );
            assert_eq!(t.text(&["HGET", &keys[0], "__u"]).as_deref(), Some("ada"));
            let data = t.text(&["HGET", &keys[0], "axum-login.data"]).unwrap();
            assert!(data.contains("\"user_id\":\"ada\""), "{data}");
            let ttl = t.cmd(&["PTTL", &keys[0]]).int();
            assert!(
                ttl > 7 * 3_600_000 && ttl <= 8 * 3_600_000,
                "expiry of tower-sessions' OnInactivity(8h): {ttl}"
            );
            assert_eq!(t.cmd(&["ZCARD", "user:ada:sessions"]).int(), 1);
        }
        let listed = e.store.manager().list_sessions("ada").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].handle, e.store.handle(&id_of(&b)));

        assert_eq!(b.post("/logout", None).await.status, 204);
        assert_eq!(b.get("/me").await.status, 401, "protected after logout");
        if let Some(t) = &e.server {
            assert_eq!(
                t.session_keys(),
                Vec::<String>::new(),
                "logout deleted the hash"
            );
            assert_eq!(
                t.cmd(&["ZCARD", "user:ada:sessions"]).int(),
                0,
                "and its index entry"
            );
        }
        assert!(e
            .store
            .manager()
            .list_sessions("ada")
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn logout_all_from_another_device(backend: Backend) {
        let e = env(backend).await;
        let laptop = e.app.browser();
        let phone = e.app.browser();
        let other_user = e.app.browser();
        assert_eq!(login(&laptop, "ada", "lovelace").await, 204);
        assert_eq!(login(&phone, "ada", "lovelace").await, 204);
        assert_eq!(login(&other_user, "alan", "turing").await, 204);
        let devices = phone.get("/devices").await.json();
        let devices = devices.as_array().unwrap();
        assert_eq!(devices.len(), 2, "{devices:?}");
        assert_eq!(
            devices
                .iter()
                .filter(|d| d["current"] == json!(true))
                .count(),
            1,
            "this device marked: {devices:?}"
        );

        let r = phone.post("/logout-all", None).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json(), json!({"ended": 2}));
        assert_eq!(
            laptop.get("/me").await.status,
            401,
            "the other device is logged out"
        );
        assert_eq!(phone.get("/me").await.status, 401, "and this one");
        assert_eq!(
            other_user.get("/me").await.status,
            200,
            "another user is not touched"
        );
        if let Some(t) = &e.server {
            assert_eq!(t.session_keys().len(), 1, "only alan's session is left");
        }
        // The laptop logs in again: a fresh session, counted once.
        assert_eq!(login(&laptop, "ada", "lovelace").await, 204);
        assert_eq!(
            laptop
                .get("/devices")
                .await
                .json()
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    pub async fn revoke_another_device(backend: Backend) {
        let e = env(backend).await;
        let laptop = e.app.browser();
        let phone = e.app.browser();
        assert_eq!(login(&laptop, "ada", "lovelace").await, 204);
        assert_eq!(login(&phone, "ada", "lovelace").await, 204);
        let devices = laptop.get("/devices").await.json();
        let other = devices
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["current"] == json!(false))
            .expect("the phone")["handle"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            laptop.delete(&format!("/devices/{other}")).await.status,
            204
        );
        assert_eq!(
            phone.get("/me").await.status,
            401,
            "the revoked device is logged out"
        );
        assert_eq!(
            laptop.get("/me").await.status,
            200,
            "the revoking one is not"
        );
        assert_eq!(
            laptop.delete(&format!("/devices/{other}")).await.status,
            404,
            "a handle that is no longer a session of the user"
        );
        let alan = e.app.browser();
        assert_eq!(login(&alan, "alan", "turing").await, 204);
        let own = laptop.get("/devices").await.json()[0]["handle"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            alan.delete(&format!("/devices/{own}")).await.status,
            404,
            "a user cannot end another user's session"
        );
        assert_eq!(laptop.get("/me").await.status, 200);
    }

    pub async fn a_late_save_does_not_bring_back_an_ended_session(backend: Backend) {
        let e = env(backend).await;
        let b = e.app.browser();
        assert_eq!(login(&b, "ada", "lovelace").await, 204);
        let id = id_of(&b);
        // A request of this session loaded it...
        let mut record = e.store.load(&id).await.unwrap().expect("the session");
        // ...while another device logged the user out everywhere...
        assert_eq!(e.store.manager().logout_all("ada").await.unwrap(), 1);
        // ...and then it saves.
        record.data.insert("cart".into(), json!(["a late item"]));
        assert!(
            e.store.save(&record).await.is_err(),
            "refused, never dropped in silence"
        );
        assert!(e.store.load(&id).await.unwrap().is_none(), "still ended");
        if let Some(t) = &e.server {
            assert_eq!(t.session_keys(), Vec::<String>::new());
            assert_eq!(
                t.cmd(&["ZCARD", "user:ada:sessions"]).int(),
                0,
                "no index entry came back"
            );
        }
        assert_eq!(b.get("/me").await.status, 401);
        assert!(e
            .store
            .manager()
            .list_sessions("ada")
            .await
            .unwrap()
            .is_empty());
    }
}

/// The store's own contract, as tower-sessions uses it: create picks another id on a
/// collision, save replaces the values (a removed value goes), a user change moves the
/// session between user indexes, an expiry in the past deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_on_redis() {
    let e = env(Backend::Redis(ServerKind::Redis7)).await;
    let t = e.server.as_ref().unwrap();
    let s = &e.store;
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let mut a = Record {
        id: Id::default(),
        data: HashMap::from([
            ("n".to_string(), json!(1)),
            ("tenant".to_string(), json!("acme")),
        ]),
        expiry_date: expiry,
    };
    s.create(&mut a).await.unwrap();
    let mut b = Record {
        id: a.id,
        data: HashMap::from([("other".to_string(), json!(true))]),
        expiry_date: expiry,
    };
    s.create(&mut b).await.unwrap();
    assert_ne!(b.id, a.id, "a taken id is replaced");
    let mut loaded = s.load(&a.id).await.unwrap().unwrap();
    assert!(
        loaded.data.remove(tessera_tower_sessions::LOADED).is_some(),
        "what was loaded, for the save of the same request"
    );
    assert_eq!(loaded.data, a.data);
    assert_eq!(
        loaded.expiry_date.unix_timestamp(),
        expiry.unix_timestamp(),
        "the expiry it was given"
    );
    let key = t
        .session_keys()
        .into_iter()
        .find(|k| t.text(&["HGET", k, "tenant"]).is_some())
        .unwrap();
    assert_eq!(
        t.text(&["HGET", &key, "tenant"]).as_deref(),
        Some("acme"),
        "plain text, readable with redis-cli"
    );

    // A save writes what changed and removes what went.
    a.data.remove("tenant");
    a.data.insert("n".into(), json!(2));
    a.data.insert(
        "axum-login.data".into(),
        json!({"user_id": "ada", "auth_hash": [1, 2]}),
    );
    t.reset_stats();
    s.save(&a).await.unwrap();
    assert_eq!(t.cmd(&["HEXISTS", &key, "tenant"]).int(), 0);
    assert_eq!(t.text(&["HGET", &key, "n"]).as_deref(), Some("2"));
    assert_eq!(t.cmd(&["ZCARD", "user:ada:sessions"]).int(), 1);
    let stats = t.command_stats();
    assert!(!stats.contains_key("set"), "no whole-record SET: {stats:?}");

    // The user changes: the session moves between indexes.
    a.data.insert(
        "axum-login.data".into(),
        json!({"user_id": 7, "auth_hash": [3]}),
    );
    s.save(&a).await.unwrap();
    assert_eq!(t.cmd(&["ZCARD", "user:ada:sessions"]).int(), 0);
    assert_eq!(
        t.cmd(&["ZCARD", "user:7:sessions"]).int(),
        1,
        "a numeric user id"
    );
    assert_eq!(e.store.manager().list_sessions(7).await.unwrap().len(), 1);

    // Values tessera refuses are an encode error, nothing written.
    let mut bad = a.clone();
    bad.data.insert("__u".into(), json!("mallory"));
    assert!(matches!(
        s.save(&bad).await,
        Err(tower_sessions::session_store::Error::Encode(_))
    ));
    assert_eq!(t.text(&["HGET", &key, "__u"]).as_deref(), Some("7"));

    // An expiry in the past ends it.
    a.expiry_date = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    s.save(&a).await.unwrap();
    assert!(s.load(&a.id).await.unwrap().is_none());
    assert_eq!(t.cmd(&["EXISTS", &key]).int(), 0);
    s.delete(&b.id).await.unwrap();
    s.delete(&b.id).await.unwrap();
    assert!(t.session_keys().is_empty());
}

/// A store that does not answer: the request is a fast 503 with Retry-After (not
/// tower-sessions' bare 500, not a hang), and it is served again when the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_is_a_fast_503_and_recovers() {
    let e = env(Backend::Redis(ServerKind::Redis7)).await;
    let b = e.app.browser();
    assert_eq!(login(&b, "ada", "lovelace").await, 204);
    let t = e.server.as_ref().unwrap();
    t.pause();
    let r = b.get("/me").await;
    let r2 = b
        .post(
            "/login",
            Some(json!({"username": "alan", "password": "turing"})),
        )
        .await;
    t.resume();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert!(r.elapsed < Duration::from_secs(5), "fast: {:?}", r.elapsed);
    assert_eq!(r2.status, 503, "{r2:?}");
    let back = b.get_until_ok("/me", Duration::from_secs(20)).await;
    assert_eq!(back.json()["user"], json!("ada"), "the session survived");
}

/// Issue #23 (15): `StoreUnavailableLayer` added `Retry-After: 1` to every 503, including a
/// save whose outcome is unknown. The adapters' rule: `Retry-After` only when nothing was
/// changed. A handler writes a value and pauses Redis (SIGSTOP) before tower-sessions saves:
/// the save is sent and never confirmed (it may have been applied: no `Retry-After`); a load
/// while Redis is paused changed nothing (`Retry-After: 1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_only_when_nothing_was_changed() {
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use tower_sessions::{Session, SessionManagerLayer};
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(|| Backend::Redis(ServerKind::Redis7).topology())
        .await
        .unwrap()
        .unwrap();
    let pid = server.nodes()[0].pid().to_string();
    let store = tessera(store_on(Some(&server)).await);
    let app = axum::Router::new()
        .route(
            "/write-then-pause",
            post(move |session: Session| async move {
                session.insert("flash", "saved").await.unwrap();
                let stop = std::process::Command::new("kill")
                    .args(["-STOP", &pid])
                    .status();
                assert!(stop.unwrap().success());
                "written; the save follows"
            }),
        )
        .route(
            "/write",
            post(|session: Session| async move {
                session.insert("flash", "saved").await.unwrap();
                "written"
            }),
        )
        .route(
            "/read",
            get(|session: Session| async move {
                match session.get::<String>("flash").await {
                    Ok(v) => format!("{v:?}").into_response(),
                    Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }),
        )
        .layer(SessionManagerLayer::new(store).with_secure(false))
        .layer(tessera_tower_sessions::StoreUnavailableLayer);
    let app = spawn_app(app).await;
    let known = app.browser();
    assert_eq!(known.post("/write", None).await.status, 200);
    let saved = app.browser();
    let save = saved.post("/write-then-pause", None).await;
    // Still paused: a load that fails changed nothing.
    let load = known.get("/read").await;
    server.resume();
    assert_eq!(save.status, 503, "{save:?}");
    assert_eq!(
        save.retry_after, None,
        "a save whose outcome is unknown may have been applied: {save:?}"
    );
    assert_eq!(load.status, 503, "{load:?}");
    assert_eq!(load.retry_after.as_deref(), Some("1"), "{load:?}");
}

/// Issue #23 (16): a value written after a logout-all in the same request (a flash message)
/// was dropped in silence, and the browser got a cookie for the dead id. With
/// `TesseraStore::logout_all` it goes to a fresh anonymous session under a new id (tower-
/// sessions' flush then insert); after `manager().logout_all` alone, the save is refused (an
/// error, no cookie), never dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_logout_all_goes_to_a_fresh_session_or_fails() {
    use axum::routing::{get, post};
    use tower_sessions::{Session, SessionManagerLayer};
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(|| Backend::Redis(ServerKind::Redis7).topology())
        .await
        .unwrap()
        .unwrap();
    let store = tessera(store_on(Some(&server)).await);
    let (helper, bare) = (store.clone(), store.clone());
    let app = axum::Router::new()
        .route(
            "/login/{user}",
            post(|session: Session, axum::extract::Path(user): axum::extract::Path<String>| async move {
                session.cycle_id().await.unwrap();
                let data = json!({"user_id": user});
                session.insert("axum-login.data", data).await.unwrap();
                "in"
            }),
        )
        .route(
            "/logout-all",
            post(move |session: Session| async move {
                let n = helper.logout_all(&session, "ada").await.unwrap();
                session.insert("flash", "logged out everywhere").await.unwrap();
                n.to_string()
            }),
        )
        .route(
            "/logout-all-bare",
            post(move |session: Session| async move {
                // Loaded first, as axum-login does for every request.
                let user: Option<serde_json::Value> = session.get("axum-login.data").await.unwrap();
                assert!(user.is_some());
                let n = bare.manager().logout_all("ada").await.unwrap();
                session.insert("flash", "logged out everywhere").await.unwrap();
                n.to_string()
            }),
        )
        .route(
            "/flash",
            get(|session: Session| async move {
                let flash: Option<String> = session.get("flash").await.unwrap();
                let user: Option<serde_json::Value> = session.get("axum-login.data").await.unwrap();
                json!({"flash": flash, "user": user}).to_string()
            }),
        )
        .layer(SessionManagerLayer::new(store).with_secure(false));
    let app = spawn_app(app).await;

    // The helper: the flash lands in a new, anonymous session; the old id is gone.
    let phone = app.browser();
    let laptop = app.browser();
    for b in [&phone, &laptop] {
        assert_eq!(b.post("/login/ada", None).await.status, 200);
    }
    let old = phone.cookie(COOKIE).unwrap();
    let r = phone.post("/logout-all", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "2"), "{r:?}");
    let new = phone
        .cookie(COOKIE)
        .expect("a cookie for the fresh session");
    assert_ne!(new, old, "never a cookie for the ended id: {r:?}");
    let seen: serde_json::Value = serde_json::from_str(&phone.get("/flash").await.body).unwrap();
    assert_eq!(
        seen,
        json!({"flash": "logged out everywhere", "user": null})
    );
    let seen: serde_json::Value = serde_json::from_str(&laptop.get("/flash").await.body).unwrap();
    assert_eq!(
        seen,
        json!({"flash": null, "user": null}),
        "the laptop is logged out"
    );
    assert_eq!(
        server.session_keys().len(),
        1,
        "only the fresh anonymous session"
    );

    // Without it: the session the request holds was ended under it; the write is refused.
    let tablet = app.browser();
    assert_eq!(tablet.post("/login/ada", None).await.status, 200);
    let dead = tablet.cookie(COOKIE).unwrap();
    let r = tablet.post("/logout-all-bare", None).await;
    assert_eq!(r.status, 500, "refused, not dropped: {r:?}");
    assert!(r.set_cookies.is_empty(), "no cookie for the dead id: {r:?}");
    assert_eq!(tablet.cookie(COOKIE).unwrap(), dead);
    let seen: serde_json::Value = serde_json::from_str(&tablet.get("/flash").await.body).unwrap();
    assert_eq!(seen, json!({"flash": null, "user": null}), "still ended");
}

/// Sessions written by tower-sessions-redis-store (the real crate, through the same app):
/// after the switch with `migrate_redis_store(true)` the user is still logged in, the session
/// now lives in tessera's layout and the old key is gone. Without it, they are unknown ids.
async fn migration(kind: Backend) {
    tessera_tests::init_tracing();
    let server = tokio::task::spawn_blocking(move || kind.topology())
        .await
        .unwrap()
        .unwrap();
    let t = &server;
    // Before: the app on tower-sessions-redis-store, with its own fred pool.
    let before = {
        use tower_sessions_redis_store::fred::prelude::*;
        let config = Config::from_url(&t.url()).unwrap();
        let pool = Pool::new(config, None, None, None, 2).unwrap();
        pool.init().await.unwrap();
        let store = tower_sessions_redis_store::RedisStore::new(pool);
        spawn_app(axum_login_app::app_on(store, axum::Router::new())).await
    };
    let ada = before.browser();
    let alan = before.browser();
    assert_eq!(login(&ada, "ada", "lovelace").await, 204);
    assert_eq!(login(&alan, "alan", "turing").await, 204);
    assert_eq!(ada.get("/me").await.json()["user"], json!("ada"));
    let old_key = ada.cookie(COOKIE).unwrap();
    assert_eq!(
        t.text(&["TYPE", &old_key]).as_deref(),
        Some("string"),
        "the peer's own format"
    );

    // After, without migration: unknown id, logged out, and the old key is left alone.
    let plain = tessera(store_on(Some(t)).await);
    let no_migration = spawn_app(axum_login_app::app(plain)).await;
    assert_eq!(alan.pointed_at(&no_migration).get("/me").await.status, 401);
    assert_eq!(t.cmd(&["EXISTS", &old_key]).int(), 1);

    // After, with migration: the same cookies, still logged in.
    let store = tessera(store_on(Some(t)).await).migrate_redis_store(true);
    let after = spawn_app(axum_login_app::app(store.clone())).await;
    let ada2 = ada.pointed_at(&after);
    let me = ada2.get("/me").await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(
        me.json()["user"],
        json!("ada"),
        "still logged in after the switch"
    );
    assert_eq!(t.cmd(&["EXISTS", &old_key]).int(), 0, "the old key is gone");
    let devices = ada2.get("/devices").await.json();
    assert_eq!(
        devices.as_array().unwrap().len(),
        1,
        "in ada's index now: {devices:?}"
    );
    assert_eq!(devices[0]["current"], json!(true));
    let alan2 = alan.pointed_at(&after);
    assert_eq!(alan2.get("/me").await.json()["user"], json!("alan"));
    // And it behaves as any tessera session from then on.
    assert_eq!(
        ada2.post("/logout-all", None).await.json(),
        json!({"ended": 1})
    );
    assert_eq!(ada2.get("/me").await.status, 401);
    assert_eq!(
        ada.get("/me").await.status,
        401,
        "the old app does not find it either"
    );
    assert_eq!(alan2.get("/me").await.status, 200);

    // A record that is expired, or holds another id than its key says, is not taken over.
    use tower_sessions_redis_store::fred::prelude::*;
    let raw = Record {
        id: Id::default(),
        data: HashMap::from([("x".to_string(), json!(1))]),
        expiry_date: time::OffsetDateTime::now_utc() - time::Duration::seconds(5),
    };
    let forged_key = Id::default().to_string();
    let bytes = rmp_serde::to_vec(&raw).unwrap();
    let cfg = Config::from_url(&t.url()).unwrap();
    let client = Client::new(cfg, None, None, None);
    client.init().await.unwrap();
    let _: () = client
        .set(raw.id.to_string(), bytes.as_slice(), None, None, false)
        .await
        .unwrap();
    let _: () = client
        .set(forged_key.as_str(), bytes.as_slice(), None, None, false)
        .await
        .unwrap();
    assert!(store.load(&raw.id).await.unwrap().is_none(), "expired");
    assert!(
        store
            .load(&forged_key.parse().unwrap())
            .await
            .unwrap()
            .is_none(),
        "another id"
    );
    // Garbage under an id is not an error for the request: an unknown id.
    let junk = Id::default();
    let _: () = client
        .set(junk.to_string(), "not msgpack", None, None, false)
        .await
        .unwrap();
    assert!(store.load(&junk).await.unwrap().is_none());
    // So is a record holding a value tessera refuses (a reserved name).
    let refused = Record {
        id: Id::default(),
        data: HashMap::from([("__u".to_string(), json!("mallory"))]),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
    };
    let bytes = rmp_serde::to_vec(&refused).unwrap();
    let _: () = client
        .set(refused.id.to_string(), bytes.as_slice(), None, None, false)
        .await
        .unwrap();
    assert!(store.load(&refused.id).await.unwrap().is_none());

    // A session not taken over yet, deleted without a load (a flush from a handler that never
    // read it): its old key goes too, so the next request cannot take it over and undo it.
    let carol = before.browser();
    assert_eq!(login(&carol, "alan", "turing").await, 204);
    let carol_id = id_of(&carol);
    assert_eq!(t.cmd(&["EXISTS", &carol_id.to_string()]).int(), 1);
    store.delete(&carol_id).await.unwrap();
    assert_eq!(t.cmd(&["EXISTS", &carol_id.to_string()]).int(), 0);
    assert!(store.load(&carol_id).await.unwrap().is_none());

    // Two instances taking over the same session at once: one takes it, once; its index entry
    // stays; a logout-all then ends it for good (no late copy brings it back).
    let dave = before.browser();
    assert_eq!(login(&dave, "alan", "turing").await, 204);
    let dave_id = id_of(&dave);
    let other = tessera(store_on(Some(t)).await).migrate_redis_store(true);
    let before_count = store.manager().list_sessions("alan").await.unwrap().len();
    let (a, b) = tokio::join!(store.load(&dave_id), other.load(&dave_id));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_some() || b.is_some(), "taken over by one of them");
    assert_eq!(t.cmd(&["EXISTS", &dave_id.to_string()]).int(), 0);
    let listed = store.manager().list_sessions("alan").await.unwrap();
    assert_eq!(listed.len(), before_count + 1, "in the index once");
    assert_eq!(
        t.cmd(&["ZCARD", "user:alan:sessions"]).int() as usize,
        listed.len(),
        "no stale entry"
    );
    assert_eq!(
        dave.pointed_at(&after).get("/me").await.json()["user"],
        json!("alan")
    );
    store.manager().logout_all("alan").await.unwrap();
    assert!(store.load(&dave_id).await.unwrap().is_none());
    assert!(other.load(&dave_id).await.unwrap().is_none());
    assert_eq!(dave.pointed_at(&after).get("/me").await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_from_tower_sessions_redis_store_on_redis() {
    migration(Backend::Redis(ServerKind::Redis7)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_from_tower_sessions_redis_store_on_cluster() {
    migration(Backend::Cluster).await
}

/// Issue #23, items 5-9: the tower-sessions store keeps every promise of tessera's own path.
mod issue23 {
    use super::*;
    use tower_sessions_redis_store::fred::clients::Client;
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, KeysInterface, Pool};

    async fn redis7() -> Topology {
        on(Backend::Redis(ServerKind::Redis7)).await
    }

    async fn on(backend: Backend) -> Topology {
        tessera_tests::init_tracing();
        tokio::task::spawn_blocking(move || backend.topology())
            .await
            .unwrap()
            .unwrap()
    }

    /// The app before the switch, on tower-sessions-redis-store.
    async fn before(t: &Topology) -> TestApp {
        let config = Config::from_url(&t.url()).unwrap();
        let pool = Pool::new(config, None, None, None, 2).unwrap();
        pool.init().await.unwrap();
        let store = tower_sessions_redis_store::RedisStore::new(pool);
        spawn_app(axum_login_app::app_on(store, axum::Router::new())).await
    }

    /// The app after the switch, taking over the old sessions.
    async fn after(t: &Topology) -> (TesseraStore, TestApp) {
        let store = tessera(store_on(Some(t)).await).migrate_redis_store(true);
        let app = spawn_app(axum_login_app::app(store.clone())).await;
        (store, app)
    }

    /// Item 5: a protected field written through the tower-sessions store is stored
    /// encrypted (redis-cli shows no plaintext), as the Session path stores it, and reads
    /// back; a tampered value is a decode error, not a value.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn protected_fields_are_encrypted_through_the_tower_sessions_store() {
        let t = redis7().await;
        let config = SessionConfig::builder(Key::generate())
            .protected_field("axum-login.data")
            .field_key(tessera_core::FieldKey::generate())
            .build()
            .unwrap();
        let store = TesseraStore::new(SessionManager::new(store_on(Some(&t)).await, config))
            .user_id_at("axum-login.data", "/user_id");
        let app = spawn_app(axum_login_app::app(store.clone())).await;
        let b = app.browser();
        assert_eq!(login(&b, "ada", "lovelace").await, 204);
        let keys = t.session_keys();
        assert_eq!(keys.len(), 1, "{keys:?}");
        let stored = t.text(&["HGET", &keys[0], "axum-login.data"]).unwrap();
        assert!(stored.starts_with("enc:v1:"), "encrypted: {stored}");
        assert!(!stored.contains("user_id"), "no plaintext: {stored}");
        let all = t.cmd(&["HGETALL", &keys[0]]);
        assert!(!format!("{all:?}").contains("\"user_id\""), "{all:?}");
        // It reads back: the user is logged in, on this and on another instance.
        let me = b.get("/me").await;
        assert_eq!(me.status, 200, "{me:?}");
        assert_eq!(me.json()["user"], json!("ada"));
        let loaded = store.load(&id_of(&b)).await.unwrap().unwrap();
        assert_eq!(loaded.data["axum-login.data"]["user_id"], json!("ada"));
        // Still a session of ada's for logout-all and device lists.
        assert_eq!(store.manager().list_sessions("ada").await.unwrap().len(), 1);
        // A ciphertext copied into another session's field does not decrypt there.
        let alan = app.browser();
        assert_eq!(login(&alan, "alan", "turing").await, 204);
        let other = t
            .session_keys()
            .into_iter()
            .find(|k| *k != keys[0])
            .unwrap();
        t.cmd(&["HSET", &other, "axum-login.data", &stored]);
        assert!(
            store.load(&id_of(&alan)).await.is_err(),
            "a value moved from another session is refused"
        );
    }

    /// Item 6: after the switch, a logout-all also ends the sessions of that user not taken
    /// over yet (a stolen cookie, a device idle since the switch): their take-over is refused,
    /// their old key deleted. Another user's are taken over as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logout_all_refuses_the_take_over_of_older_sessions() {
        logout_all_refuses(Backend::Redis(ServerKind::Redis7)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logout_all_refuses_the_take_over_of_older_sessions_on_cluster() {
        logout_all_refuses(Backend::Cluster).await
    }

    async fn logout_all_refuses(backend: Backend) {
        let t = on(backend).await;
        let old = before(&t).await;
        let laptop = old.browser();
        let thief = old.browser();
        let alan = old.browser();
        assert_eq!(login(&laptop, "ada", "lovelace").await, 204);
        assert_eq!(login(&thief, "ada", "lovelace").await, 204);
        assert_eq!(login(&alan, "alan", "turing").await, 204);
        let thief_key = thief.cookie(COOKIE).unwrap();

        let (store, app) = after(&t).await;
        let laptop = laptop.pointed_at(&app);
        assert_eq!(laptop.get("/me").await.json()["user"], json!("ada"));
        assert_eq!(
            store.manager().logout_all("ada").await.unwrap(),
            1,
            "the taken-over session"
        );
        assert_eq!(laptop.get("/me").await.status, 401);
        let mark = t.cmd(&["PTTL", "user:ada:ended_before"]).int();
        assert!(
            mark > 399 * 86_400_000,
            "the user's mark, kept 400 days: {mark}"
        );
        let thief = thief.pointed_at(&app);
        let r = thief.get("/me").await;
        assert_eq!(
            r.status, 401,
            "a pre-switch cookie is not taken over: {r:?}"
        );
        assert_eq!(
            t.cmd(&["EXISTS", &thief_key]).int(),
            0,
            "its old key is gone"
        );
        assert!(store
            .manager()
            .list_sessions("ada")
            .await
            .unwrap()
            .is_empty());
        let alan = alan.pointed_at(&app);
        assert_eq!(
            alan.get("/me").await.json()["user"],
            json!("alan"),
            "another user's session is taken over"
        );
        // Logging in again works as usual.
        assert_eq!(login(&thief, "ada", "lovelace").await, 204);
        assert_eq!(thief.get("/me").await.json()["user"], json!("ada"));
        // A store that takes nothing over leaves no mark.
        let plain = tessera(store_on(Some(&t)).await);
        plain.manager().logout_all("alan").await.unwrap();
        assert_eq!(t.cmd(&["EXISTS", "user:alan:ended_before"]).int(), 0);
    }

    /// Item 7: a take-over whose write fails (Redis over maxmemory, noeviction) leaves the old
    /// session as it was: the answer is 503, and once memory is back the user is still
    /// logged in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_take_over_leaves_the_old_session() {
        let t = redis7().await;
        let old = before(&t).await;
        let ada = old.browser();
        assert_eq!(login(&ada, "ada", "lovelace").await, 204);
        let old_key = ada.cookie(COOKIE).unwrap();
        let (_store, app) = after(&t).await;
        let ada = ada.pointed_at(&app);
        t.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
        t.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
        let r = ada.get("/me").await;
        assert_eq!(
            t.cmd(&["EXISTS", &old_key]).int(),
            1,
            "the old session is still there"
        );
        t.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.retry_after.as_deref(), Some("1"), "nothing was changed");
        let r = ada.get("/me").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["user"], json!("ada"), "still logged in");
        assert_eq!(t.cmd(&["EXISTS", &old_key]).int(), 0, "taken over now");
    }

    /// Item 8: a forged tower-sessions cookie naming a foreign key deletes nothing: neither
    /// the take-over nor a delete touches a value that is not a record of that store under
    /// that id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forged_cookie_deletes_no_foreign_key() {
        forged_cookie(Backend::Redis(ServerKind::Redis7)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forged_cookie_deletes_no_foreign_key_on_cluster() {
        forged_cookie(Backend::Cluster).await
    }

    async fn forged_cookie(backend: Backend) {
        let t = on(backend).await;
        let (store, app) = after(&t).await;
        let name = "AAAAAAAAAAAAAAAAAAAABw";
        t.cmd(&["SET", name, "someone else's data"]);
        let b = app.browser();
        b.set_cookie(COOKIE, name);
        assert_eq!(b.get("/me").await.status, 401);
        assert_eq!(
            t.text(&["GET", name]).as_deref(),
            Some("someone else's data"),
            "not deleted by the take-over"
        );
        let id: Id = name.parse().unwrap();
        store.delete(&id).await.unwrap();
        assert_eq!(
            t.text(&["GET", name]).as_deref(),
            Some("someone else's data"),
            "not deleted by a delete"
        );
        // A record of the legacy store, but for another id: not deleted either.
        let record = Record {
            id: Id::default(),
            data: HashMap::from([("x".to_string(), json!(1))]),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
        };
        let bytes = rmp_serde::to_vec(&record).unwrap();
        let cfg = Config::from_url(&t.url()).unwrap();
        let client = Client::new(cfg, None, None, None);
        client.init().await.unwrap();
        let _: () = client
            .set(name, bytes.as_slice(), None, None, false)
            .await
            .unwrap();
        assert!(store.load(&id).await.unwrap().is_none());
        store.delete(&id).await.unwrap();
        assert_eq!(
            t.cmd(&["EXISTS", name]).int(),
            1,
            "another id's record stays"
        );
    }

    /// Item 9: two concurrent requests of one session setting different fields, one slow:
    /// both fields survive (the slow save writes what it changed, not its whole stale view).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_saves_of_different_fields_both_survive() {
        use axum::extract::Path;
        use axum::routing::{get, post};
        use tower_sessions::{Session, SessionManagerLayer};
        let t = redis7().await;
        let store = tessera(store_on(Some(&t)).await);
        let router = axum::Router::new()
            .route(
                "/set/{field}/{delay_ms}",
                post(
                    |s: Session, Path((f, ms)): Path<(String, u64)>| async move {
                        // Loaded now, written after the other request.
                        let _ = s.get_value("start").await.unwrap();
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        s.insert(&f, true).await.unwrap();
                        axum::http::StatusCode::NO_CONTENT
                    },
                ),
            )
            .route(
                "/all",
                get(|s: Session| async move {
                    let mut out = serde_json::Map::new();
                    for f in ["start", "a", "b"] {
                        if let Some(v) = s.get_value(f).await.unwrap() {
                            out.insert(f.to_string(), v);
                        }
                    }
                    axum::Json(serde_json::Value::Object(out))
                }),
            )
            .layer(SessionManagerLayer::new(store).with_secure(false));
        let app = spawn_app(router).await;
        let b = app.browser();
        assert_eq!(b.post("/set/start/0", None).await.status, 204);
        let slow = b.post("/set/a/600", None);
        let fast = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            b.post("/set/b/0", None).await
        };
        let (s, f) = tokio::join!(slow, fast);
        assert_eq!((s.status, f.status), (204, 204));
        assert_eq!(
            b.get("/all").await.json(),
            json!({"start": true, "a": true, "b": true}),
            "both requests' fields survive"
        );
    }

    /// A process-local cache in front of the store, as tower-sessions' `CachingSessionStore`
    /// with `MokaStore` keeps one: every later request of the session gets the record the
    /// first load returned (with what that load returned under `LOADED`), saved back after.
    #[derive(Debug, Clone, Default)]
    struct MapCache(std::sync::Arc<std::sync::Mutex<HashMap<Id, Record>>>);

    #[async_trait::async_trait]
    impl SessionStore for MapCache {
        async fn create(&self, r: &mut Record) -> tower_sessions::session_store::Result<()> {
            self.0.lock().unwrap().insert(r.id, r.clone());
            Ok(())
        }
        async fn save(&self, r: &Record) -> tower_sessions::session_store::Result<()> {
            self.0.lock().unwrap().insert(r.id, r.clone());
            Ok(())
        }
        async fn load(&self, id: &Id) -> tower_sessions::session_store::Result<Option<Record>> {
            Ok(self.0.lock().unwrap().get(id).cloned())
        }
        async fn delete(&self, id: &Id) -> tower_sessions::session_store::Result<()> {
            self.0.lock().unwrap().remove(id);
            Ok(())
        }
    }

    /// Item 9's difference writes behind a `CachingSessionStore`: the cached record carries
    /// the digest of its first load to every later save, so a value added by one request
    /// and removed by a later one (a flash message shown, a hand-rolled logout) was never
    /// deleted in Redis, and came back (logged in again) on another instance, or on this one
    /// once the cache let the record go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_removed_behind_a_caching_store_stays_removed() {
        use tower_sessions::CachingSessionStore;
        let t = redis7().await;
        let store = tessera(store_on(Some(&t)).await);
        let mut r = Record {
            id: Id::default(),
            data: HashMap::from([("cart".to_string(), json!([1]))]),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(10),
        };
        store.create(&mut r).await.unwrap();
        let cached = CachingSessionStore::new(MapCache::default(), store.clone());
        // Request 1 (its load fills the cache from Redis) logs in and leaves a flash message.
        let mut r1 = cached.load(&r.id).await.unwrap().unwrap();
        r1.data
            .insert("axum-login.data".into(), json!({"user_id": "ada"}));
        r1.data.insert("flash".into(), json!("welcome"));
        cached.save(&r1).await.unwrap();
        assert_eq!(store.manager().list_sessions("ada").await.unwrap().len(), 1);
        // Request 2 (served from the cache) shows the message and logs out by removing both.
        let mut r2 = cached.load(&r.id).await.unwrap().unwrap();
        assert!(r2.data.remove("flash").is_some());
        assert!(r2.data.remove("axum-login.data").is_some());
        cached.save(&r2).await.unwrap();
        // Another instance reads Redis.
        let mut fresh = store.load(&r.id).await.unwrap().unwrap();
        fresh.data.remove(tessera_tower_sessions::LOADED);
        assert_eq!(
            fresh.data,
            HashMap::from([("cart".to_string(), json!([1]))]),
            "what the last save left, nothing removed back"
        );
        assert!(store
            .manager()
            .list_sessions("ada")
            .await
            .unwrap()
            .is_empty());
        // A third request through the cache changes one value: still what it saved.
        let mut r3 = cached.load(&r.id).await.unwrap().unwrap();
        r3.data.insert("cart".into(), json!([1, 2]));
        cached.save(&r3).await.unwrap();
        let mut fresh = store.load(&r.id).await.unwrap().unwrap();
        fresh.data.remove(tessera_tower_sessions::LOADED);
        assert_eq!(
            fresh.data,
            HashMap::from([("cart".to_string(), json!([1, 2]))])
        );
    }

    /// Item 7's take-over order with two instances loading the same old session at once (a
    /// page's parallel requests just after the switch): each finds the session, whichever of
    /// them wrote tessera's copy. A request that found nothing would start an empty session,
    /// and its first write would replace the browser's cookie: logged out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_taking_over_one_session_both_find_it() {
        let t = redis7().await;
        let a = tessera(store_on(Some(&t)).await).migrate_redis_store(true);
        let b = tessera(store_on(Some(&t)).await).migrate_redis_store(true);
        let cfg = Config::from_url(&t.url()).unwrap();
        let client = Client::new(cfg, None, None, None);
        client.init().await.unwrap();
        let mut lost = 0;
        let rounds = 300;
        for _ in 0..rounds {
            let record = Record {
                id: Id::default(),
                data: HashMap::from([("axum-login.data".to_string(), json!({"user_id": "ada"}))]),
                expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
            };
            let bytes = rmp_serde::to_vec(&record).unwrap();
            let _: () = client
                .set(record.id.to_string(), bytes.as_slice(), None, None, false)
                .await
                .unwrap();
            let id = record.id;
            let (x, y) = tokio::join!(
                tokio::spawn({
                    let a = a.clone();
                    async move { a.load(&id).await.unwrap() }
                }),
                tokio::spawn({
                    let b = b.clone();
                    async move { b.load(&id).await.unwrap() }
                })
            );
            lost += usize::from(x.unwrap().is_none()) + usize::from(y.unwrap().is_none());
        }
        assert_eq!(lost, 0, "requests that found no session, of {}", 2 * rounds);
    }
}
