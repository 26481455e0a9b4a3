//! The six implementations, each serving the same three routes:
//! `POST /login` (4 fields), `GET /read` (one field), `POST /incr` (a counter field).

use std::net::TcpListener;
use std::time::Duration;

pub const IMPLS: [&str; 11] = [
    "bare-axum",
    "bare-actix",
    "fred-floor",
    "tessera-axum",
    "tessera-axum-observed",
    "tessera-axum-cache",
    "tessera-axum-cache-push",
    "tower-sessions",
    "tessera-actix",
    "tessera-actix-cache-push",
    "actix-session",
];

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The four fields every implementation stores at login.
fn login_fields(user: &str) -> [(&'static str, &str); 4] {
    [
        ("user_id", user),
        ("tenant", "acme"),
        ("plan", "pro"),
        ("locale", "en"),
    ]
}

fn user() -> String {
    format!(
        "u{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Serves `name` on `listener` until killed.
pub fn serve(name: &str, listener: TcpListener, redis_url: String, touch_secs: u64) {
    listener.set_nonblocking(true).unwrap();
    match name {
        "tessera-actix" | "tessera-actix-cache-push" | "actix-session" | "bare-actix" => {
            actix(name, listener, redis_url, touch_secs)
        }
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(axum_impl(name, listener, redis_url, touch_secs)),
    }
}

/// tessera's store with its defaults; `BENCH_TESSERA_TIMEOUT_MS` and `BENCH_TESSERA_POOL`
/// override them for profiling experiments.
async fn tessera_store(url: &str, name: &str) -> tessera_core::Store {
    let mut o = tessera_core::RedisOptions::default();
    match name {
        "tessera-axum-cache" => o = o.near_cache(64 << 20),
        "tessera-axum-cache-push" | "tessera-actix-cache-push" => {
            o = o
                .near_cache(64 << 20)
                .near_cache_coherence(tessera_core::NearCacheCoherence::Push)
        }
        _ => {}
    }
    if let Some(ms) = std::env::var("BENCH_TESSERA_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o = o.command_timeout(Duration::from_millis(ms));
    }
    if let Some(n) = std::env::var("BENCH_TESSERA_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o = o.pool_size(n);
    }
    tessera_core::Store::redis_with(url, o).await.unwrap()
}

fn tessera_config(touch_secs: u64) -> tessera_core::SessionConfig {
    tessera_config_with(touch_secs, false)
}

/// `observed`: lifecycle events on (tessera-axum-observed).
fn tessera_config_with(touch_secs: u64, observed: bool) -> tessera_core::SessionConfig {
    tessera_core::SessionConfig::builder(tessera_core::Key::from_bytes(&[7; 32]).unwrap())
        .secure(false)
        .idle_timeout(Duration::from_secs(30 * 60))
        .touch_interval(Duration::from_secs(touch_secs))
        .lifecycle_events(observed)
        .build()
        .unwrap()
}

async fn axum_impl(name: &str, listener: TcpListener, redis_url: String, touch_secs: u64) {
    use axum::routing::{get, post};
    use axum::Router;
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let app: Router = match name {
        "bare-axum" => Router::new()
            .route(
                "/login",
                post(|| async { ([("set-cookie", "id=bare; Path=/")], "ok") }),
            )
            .route("/read", get(|| async { "acme" }))
            .route("/incr", post(|| async { "1" })),
        "fred-floor" => floor::router(&redis_url, false).await,
        "fred-floor-hash" => floor::router(&redis_url, true).await,
        "tessera-axum"
        | "tessera-axum-cache"
        | "tessera-axum-cache-push"
        | "tessera-axum-observed" => {
            use tessera_axum::{Session, SessionLayer};
            let store = tessera_store(&redis_url, name).await;
            // Observed: lifecycle events on, and every login and increment records an action.
            let observed = name == "tessera-axum-observed";
            Router::new()
                .route(
                    "/login",
                    post(move |s: Session| async move {
                        let u = user();
                        for (k, v) in login_fields(&u) {
                            s.insert(k, v).await.unwrap();
                        }
                        if observed {
                            s.record("login").await.unwrap();
                        }
                        s.login(&u).await.unwrap();
                        "ok"
                    }),
                )
                .route(
                    "/read",
                    get(|s: Session| async move {
                        s.get::<String>("tenant").await.unwrap().unwrap_or_default()
                    }),
                )
                .route(
                    "/incr",
                    post(move |s: Session| async move {
                        if observed {
                            s.record("incr").await.unwrap();
                        }
                        s.increment("counter", 1).await.unwrap().to_string()
                    }),
                )
                .layer(SessionLayer::new(
                    store,
                    tessera_config_with(touch_secs, observed),
                ))
        }
        "tower-sessions" => {
            use tower_sessions::{cookie::time, Expiry, Session, SessionManagerLayer};
            use tower_sessions_redis_store::{fred::prelude::*, RedisStore};
            let pool =
                Pool::new(Config::from_url(&redis_url).unwrap(), None, None, None, 4).unwrap();
            pool.init().await.unwrap();
            let layer = SessionManagerLayer::new(RedisStore::new(pool))
                .with_secure(false)
                .with_expiry(Expiry::OnInactivity(time::Duration::minutes(30)));
            Router::new()
                .route(
                    "/login",
                    post(|s: Session| async move {
                        s.cycle_id().await.unwrap();
                        let u = user();
                        for (k, v) in login_fields(&u) {
                            s.insert(k, v).await.unwrap();
                        }
                        "ok"
                    }),
                )
                .route(
                    "/read",
                    get(|s: Session| async move {
                        s.get::<String>("tenant").await.unwrap().unwrap_or_default()
                    }),
                )
                .route(
                    "/incr",
                    post(|s: Session| async move {
                        let n = s.get::<i64>("counter").await.unwrap().unwrap_or(0) + 1;
                        s.insert("counter", n).await.unwrap();
                        n.to_string()
                    }),
                )
                .layer(layer)
        }
        other => panic!("unknown implementation {other}"),
    };
    axum::serve(listener, app).await.unwrap();
}

/// The floor for this design: a hand-written handler doing one pipelined round trip per
/// request on a hash per session (HGETALL + PEXPIRE to read, HINCRBY + PEXPIRE to count).
mod floor {
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use axum::Router;
    use fred::prelude::*;

    const TTL_MS: i64 = 30 * 60 * 1000;

    fn id(h: &HeaderMap) -> String {
        h.get("cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split("; ").find_map(|p| p.strip_prefix("fid=")))
            .unwrap_or("none")
            .to_string()
    }

    /// `hash` (`fred-floor-hash`, serve only): the floor of tessera's own design, on one
    /// connection as tessera's default. The login writes a hash the size of tessera's (its
    /// four reserved fields added) and the user's index of sessions (`ZADD`, its TTL), four
    /// commands in one pipeline, with none of the checks (no id collision or tombstone, no
    /// device limit, no atomicity); the read is one `HGETALL`, as tessera's plain read.
    pub async fn router(url: &str, hash: bool) -> Router {
        let pool = Builder::from_config(Config::from_url(url).unwrap())
            .build_pool(if hash { 1 } else { 4 })
            .unwrap();
        pool.init().await.unwrap();
        let (p1, p2, p3) = (pool.clone(), pool.clone(), pool);
        Router::new()
            .route(
                "/login",
                post(move || {
                    let pool = p1.clone();
                    async move {
                        let id = format!("{:032x}", rand_u128());
                        let key = format!("floor:{id}");
                        let pipe = pool.next().pipeline();
                        let u = super::user();
                        if hash {
                            // tessera's reserved fields beside the four, so the hash read is
                            // the same size, and the user's index of sessions with its TTL.
                            let [a, b, c, d] = super::login_fields(&u);
                            let r = [
                                a,
                                b,
                                c,
                                d,
                                ("__c", "1796617834232"),
                                ("__t", "1796617834232"),
                                ("__u", u.as_str()),
                                ("__ua", "wrk"),
                            ];
                            let _: () = pipe.hset(&key, r).await.unwrap();
                            let _: () = pipe.pexpire(&key, TTL_MS, None).await.unwrap();
                            let index = format!("user:{u}:sessions");
                            let _: () = pipe
                                .zadd(
                                    &index,
                                    None,
                                    None,
                                    false,
                                    false,
                                    (1796617834232.0, id.as_str()),
                                )
                                .await
                                .unwrap();
                            let _: () = pipe.pexpire(&index, TTL_MS, None).await.unwrap();
                            let _: (i64, bool, i64, bool) = pipe.all().await.unwrap();
                            return (
                                [("set-cookie", format!("fid={id}; Path=/; HttpOnly"))],
                                "ok",
                            );
                        }
                        let _: () = pipe.hset(&key, super::login_fields(&u)).await.unwrap();
                        let _: () = pipe.pexpire(&key, TTL_MS, None).await.unwrap();
                        let _: (i64, bool) = pipe.all().await.unwrap();
                        (
                            [("set-cookie", format!("fid={id}; Path=/; HttpOnly"))],
                            "ok",
                        )
                    }
                }),
            )
            .route(
                "/read",
                get(move |h: HeaderMap| {
                    let pool = p2.clone();
                    async move {
                        let key = format!("floor:{}", id(&h));
                        if hash {
                            let m: std::collections::HashMap<String, String> =
                                pool.next().hgetall(&key).await.unwrap();
                            return m.get("tenant").cloned().unwrap_or_default();
                        }
                        let pipe = pool.next().pipeline();
                        let _: () = pipe.hgetall(&key).await.unwrap();
                        let _: () = pipe.pexpire(&key, TTL_MS, None).await.unwrap();
                        let (m, _): (std::collections::HashMap<String, String>, bool) =
                            pipe.all().await.unwrap();
                        m.get("tenant").cloned().unwrap_or_default()
                    }
                }),
            )
            .route(
                "/incr",
                post(move |h: HeaderMap| {
                    let pool = p3.clone();
                    async move {
                        let key = format!("floor:{}", id(&h));
                        let pipe = pool.next().pipeline();
                        let _: () = pipe.hincrby(&key, "counter", 1).await.unwrap();
                        let _: () = pipe.pexpire(&key, TTL_MS, None).await.unwrap();
                        let (n, _): (i64, bool) = pipe.all().await.unwrap();
                        n.to_string()
                    }
                }),
            )
    }

    fn rand_u128() -> u128 {
        use std::hash::{BuildHasher, Hasher};
        let a = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as u128;
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(a ^ super::COUNTER.load(std::sync::atomic::Ordering::Relaxed) as u128);
        (a << 64) | h.finish() as u128
    }
}

fn actix(name: &str, listener: TcpListener, redis_url: String, touch_secs: u64) {
    use actix_web::{web, App, HttpServer};
    let name = name.to_string();
    actix_web::rt::System::new().block_on(async move {
        match name.as_str() {
            "bare-actix" => HttpServer::new(|| {
                App::new()
                    .route(
                        "/login",
                        web::post().to(|| async {
                            actix_web::HttpResponse::Ok()
                                .insert_header(("set-cookie", "id=bare; Path=/"))
                                .body("ok")
                        }),
                    )
                    .route("/read", web::get().to(|| async { "acme" }))
                    .route("/incr", web::post().to(|| async { "1" }))
            })
            .workers(2)
            .listen(listener)
            .unwrap()
            .run()
            .await
            .unwrap(),
            "tessera-actix" | "tessera-actix-cache-push" => {
                use tessera_actix::{Session, SessionMiddleware};
                let store = tessera_store(&redis_url, &name).await;
                let mw = SessionMiddleware::new(store, tessera_config(touch_secs));
                HttpServer::new(move || {
                    App::new()
                        .wrap(mw.clone())
                        .route(
                            "/login",
                            web::post().to(|s: Session| async move {
                                let u = user();
                                for (k, v) in login_fields(&u) {
                                    s.insert(k, v).await.unwrap();
                                }
                                s.login(&u).await.unwrap();
                                "ok"
                            }),
                        )
                        .route(
                            "/read",
                            web::get().to(|s: Session| async move {
                                s.get::<String>("tenant").await.unwrap().unwrap_or_default()
                            }),
                        )
                        .route(
                            "/incr",
                            web::post().to(|s: Session| async move {
                                s.increment("counter", 1).await.unwrap().to_string()
                            }),
                        )
                })
                .workers(2)
                .listen(listener)
                .unwrap()
                .run()
                .await
                .unwrap()
            }
            "actix-session" => {
                use actix_session::config::PersistentSession;
                use actix_session::storage::RedisSessionStore;
                use actix_session::{Session, SessionMiddleware};
                use actix_web::cookie::{time, Key};
                let store = RedisSessionStore::new(redis_url).await.unwrap();
                let key = Key::from(&[7u8; 64]);
                HttpServer::new(move || {
                    App::new()
                        .wrap(
                            SessionMiddleware::builder(store.clone(), key.clone())
                                .cookie_secure(false)
                                .session_lifecycle(
                                    PersistentSession::default()
                                        .session_ttl(time::Duration::minutes(30)),
                                )
                                .build(),
                        )
                        .route(
                            "/login",
                            web::post().to(|s: Session| async move {
                                s.renew();
                                let u = user();
                                for (k, v) in login_fields(&u) {
                                    s.insert(k, v).unwrap();
                                }
                                "ok"
                            }),
                        )
                        .route(
                            "/read",
                            web::get().to(|s: Session| async move {
                                s.get::<String>("tenant").unwrap().unwrap_or_default()
                            }),
                        )
                        .route(
                            "/incr",
                            web::post().to(|s: Session| async move {
                                let n = s.get::<i64>("counter").unwrap().unwrap_or(0) + 1;
                                s.insert("counter", n).unwrap();
                                n.to_string()
                            }),
                        )
                })
                .workers(2)
                .listen(listener)
                .unwrap()
                .run()
                .await
                .unwrap()
            }
            other => panic!("unknown implementation {other}"),
        }
    });
}
