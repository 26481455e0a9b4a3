//! One app under test: a store (memory or a real server), a manager, the demo routes plus a few
//! test routes, served over real HTTP.

use crate::http::{spawn_app, Browser, TestApp};
use crate::server::{Server, ServerKind};
use crate::topology::Topology;
use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use tessera_axum::{Session, SessionLayer};
use tessera_core::{Key, RedisOptions, SessionConfig, SessionConfigBuilder, SessionManager, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis(ServerKind),
    /// Redis 7 primary + replica + three Sentinels.
    Sentinel,
    /// Redis 7 Cluster: three primaries, one replica each.
    Cluster,
}

impl Backend {
    pub fn topology(self) -> Option<Topology> {
        match self {
            Backend::Memory => None,
            Backend::Redis(kind) => Some(Topology::standalone(kind)),
            Backend::Sentinel => Some(Topology::sentinel()),
            Backend::Cluster => Some(Topology::cluster()),
        }
    }
}

/// Which web framework serves the app under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    Axum,
    Actix,
}

/// A backend served through an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub backend: Backend,
    pub adapter: Adapter,
}

/// For a per-backend case that takes the backend alone (see `per_backend!`).
impl From<Setup> for Backend {
    fn from(setup: Setup) -> Backend {
        setup.backend
    }
}

/// For a per-backend case that takes a standalone server's kind (see `per_backend!`).
impl From<Setup> for ServerKind {
    fn from(setup: Setup) -> ServerKind {
        match setup.backend {
            Backend::Redis(kind) => kind,
            other => panic!("{other:?} is not a standalone server"),
        }
    }
}

impl From<Backend> for Setup {
    fn from(backend: Backend) -> Setup {
        Setup {
            backend,
            adapter: Adapter::Axum,
        }
    }
}

pub struct Fixture {
    pub server: Option<Topology>,
    pub store: Store,
    pub manager: SessionManager,
    pub app: TestApp,
    pub adapter: Adapter,
}

/// The test-only routes' logic, written once for both adapters.
pub mod test_routes {
    use serde_json::json;
    use std::time::Duration;
    use tessera_core::adapter::endpoints::Reply;
    use tessera_core::Session;

    fn done(r: Result<Reply, tessera_core::Error>) -> Reply {
        r.unwrap_or_else(|e| Reply::error(&e))
    }

    /// `GET /typed/{field}`: the field as an i64 (a decode error is a 500).
    pub async fn typed(s: &Session, field: &str) -> Reply {
        done(s.get::<i64>(field).await.map(|v| Reply::json(json!(v))))
    }

    /// `POST /slow-write`: load, wait 400 ms, write.
    pub async fn slow_write(s: &Session) -> Reply {
        done(
            async {
                s.load().await?;
                tokio::time::sleep(Duration::from_millis(400)).await;
                s.insert("slow", &true).await?;
                Ok(Reply::json(json!("saved")))
            }
            .await,
        )
    }

    /// `POST /cycle`: a new id.
    pub async fn cycle(s: &Session) -> Reply {
        done(s.cycle_id().await.map(|_| Reply::json(json!("cycled"))))
    }

    /// `POST /insert-then-increment` `{"value": v}`: inserts `counter` = v, then increments
    /// it by 1 in the same request; answers what the increment returned.
    pub async fn insert_then_increment(s: &Session, body: serde_json::Value) -> Reply {
        done(
            async {
                s.insert("counter", &body["value"]).await?;
                let n = s.increment("counter", 1).await?;
                Ok(Reply::json(json!(n)))
            }
            .await,
        )
    }

    /// `GET /csrf-token`: `{"token"}`, a CSRF token of the session (made on first use).
    pub async fn csrf_token(s: &Session) -> Reply {
        done(
            s.csrf_token()
                .await
                .map(|t| Reply::json(json!({ "token": t }))),
        )
    }

    /// `POST /csrf-increment` behind the `X-CSRF-Token` check: `counter` + 1.
    pub async fn csrf_increment(s: &Session) -> Reply {
        done(
            s.increment("counter", 1)
                .await
                .map(|n| Reply::json(json!(n))),
        )
    }

    /// `POST /logout-others`: how many sessions ended.
    pub async fn logout_others(s: &Session) -> Reply {
        done(s.logout_others().await.map(|n| Reply::json(json!(n))))
    }

    /// `POST /logout-all-then-flash`: logs the user out everywhere, then writes `flash` in
    /// the same request; how many sessions ended.
    pub async fn logout_all_then_flash(s: &Session) -> Reply {
        done(
            async {
                let n = s.logout_all().await?;
                s.insert("flash", &"logged out everywhere").await?;
                Ok(Reply::json(json!(n)))
            }
            .await,
        )
    }
}

/// The demo's routes plus the test routes, served by actix.
pub fn spawn_actix_app(manager: SessionManager) -> TestApp {
    use actix_web::web;
    use tessera_actix::{reply, Session as S};
    crate::http::spawn_actix(move || {
        actix_web::App::new()
            .wrap(tessera_actix::SessionMiddleware::from_manager(
                manager.clone(),
            ))
            .configure(actix_demo::routes_with_admin(Some(ADMIN_TOKEN.into())))
            .route("/noop", web::get().to(|| async { "ok" }))
            .route(
                "/typed/{field}",
                web::get().to(|s: S, f: web::Path<String>| async move {
                    reply(test_routes::typed(&s, &f).await)
                }),
            )
            .route(
                "/slow-write",
                web::post().to(|s: S| async move { reply(test_routes::slow_write(&s).await) }),
            )
            .route(
                "/cycle",
                web::post().to(|s: S| async move { reply(test_routes::cycle(&s).await) }),
            )
            .route(
                "/logout-others",
                web::post().to(|s: S| async move { reply(test_routes::logout_others(&s).await) }),
            )
            .route(
                "/logout-all-then-flash",
                web::post()
                    .to(|s: S| async move { reply(test_routes::logout_all_then_flash(&s).await) }),
            )
            .route(
                "/insert-then-increment",
                web::post().to(|s: S, b: web::Json<serde_json::Value>| async move {
                    reply(test_routes::insert_then_increment(&s, b.into_inner()).await)
                }),
            )
            .route(
                "/csrf-token",
                web::get().to(|s: S| async move { reply(test_routes::csrf_token(&s).await) }),
            )
            .route(
                "/csrf-increment",
                web::post().to(|_: tessera_actix::CsrfHeader, s: S| async move {
                    reply(test_routes::csrf_increment(&s).await)
                }),
            )
    })
}

/// Serves `manager` through `adapter`.
pub async fn serve(adapter: Adapter, manager: SessionManager) -> TestApp {
    match adapter {
        Adapter::Axum => spawn_app(router(manager)).await,
        Adapter::Actix => spawn_actix_app(manager),
    }
}

/// A fixed test key, so several apps can share cookies.
pub fn key(n: u8) -> Key {
    Key::from_bytes(&[n; 32]).unwrap()
}

/// The admin token the test apps' `/admin/*` routes accept.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn config(f: impl FnOnce(SessionConfigBuilder) -> SessionConfigBuilder) -> SessionConfig {
    f(SessionConfig::builder(key(1))).build().unwrap()
}

/// A fixed field key (`n` repeated), so several apps read each other's protected fields.
pub fn field_key(n: u8) -> tessera_core::FieldKey {
    tessera_core::FieldKey::from_bytes(&[n; 32]).unwrap()
}

/// The demo's protected field `api_token` (and a second one, `refresh_token`), under field
/// key 1.
pub fn protected(c: SessionConfigBuilder) -> SessionConfigBuilder {
    c.protected_field("api_token")
        .protected_field("refresh_token")
        .field_key(field_key(1))
}

/// The demo's indexed fields: `tenant`, and the list `cart` (for `Fixture::with(setup, indexed)`).
pub fn indexed(c: SessionConfigBuilder) -> SessionConfigBuilder {
    c.index_field("tenant").index_list_field("cart")
}

/// The demo's routes plus the test routes, behind the axum layer.
pub fn router(manager: SessionManager) -> Router {
    use tessera_axum::endpoints::reply;
    axum_demo::routes_with_admin(Some(ADMIN_TOKEN.into()))
        .route("/noop", get(|| async { "ok" }))
        .route(
            "/typed/{field}",
            get(|s: Session, Path(f): Path<String>| async move {
                reply(test_routes::typed(&s, &f).await)
            }),
        )
        .route(
            "/slow-write",
            post(|s: Session| async move { reply(test_routes::slow_write(&s).await) }),
        )
        .route(
            "/cycle",
            post(|s: Session| async move { reply(test_routes::cycle(&s).await) }),
        )
        .route(
            "/logout-others",
            post(|s: Session| async move { reply(test_routes::logout_others(&s).await) }),
        )
        .route(
            "/logout-all-then-flash",
            post(|s: Session| async move { reply(test_routes::logout_all_then_flash(&s).await) }),
        )
        .route(
            "/insert-then-increment",
            post(
                |s: Session, axum::Json(b): axum::Json<serde_json::Value>| async move {
                    reply(test_routes::insert_then_increment(&s, b).await)
                },
            ),
        )
        .route(
            "/csrf-token",
            get(|s: Session| async move { reply(test_routes::csrf_token(&s).await) }),
        )
        .route(
            "/csrf-increment",
            post(|_: tessera_axum::CsrfHeader, s: Session| async move {
                reply(test_routes::csrf_increment(&s).await)
            }),
        )
        .layer(SessionLayer::from_manager(manager))
}

impl Fixture {
    pub async fn new(setup: impl Into<Setup>) -> Fixture {
        Self::with(setup, |b| b).await
    }

    pub async fn with(
        setup: impl Into<Setup>,
        f: impl FnOnce(SessionConfigBuilder) -> SessionConfigBuilder,
    ) -> Fixture {
        let Setup { backend, adapter } = setup.into();
        crate::init_tracing();
        let topology = tokio::task::spawn_blocking(move || backend.topology())
            .await
            .unwrap();
        let (server, store) = match topology {
            None => (None, Store::memory()),
            Some(t) => {
                let store = Store::redis_with(&t.url(), RedisOptions::default())
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "connect to the test {}: {e} ({:?})",
                            t.name(),
                            std::error::Error::source(&e)
                        )
                    });
                (Some(t), store)
            }
        };
        Self::on_with(adapter, server, store, config(f)).await
    }

    pub async fn on(server: Option<Topology>, store: Store, config: SessionConfig) -> Fixture {
        Self::on_with(Adapter::Axum, server, store, config).await
    }

    pub async fn on_with(
        adapter: Adapter,
        server: Option<Topology>,
        store: Store,
        config: SessionConfig,
    ) -> Fixture {
        let manager = SessionManager::new(store.clone(), config);
        let app = serve(adapter, manager.clone()).await;
        Fixture {
            server,
            store,
            manager,
            app,
            adapter,
        }
    }

    /// A second app instance on the same store with another config (a deploy, a key rotation).
    pub async fn sibling(&self, config: SessionConfig) -> TestApp {
        serve(
            self.adapter,
            SessionManager::new(self.store.clone(), config),
        )
        .await
    }

    pub fn browser(&self) -> Browser {
        self.app.browser()
    }

    pub fn server(&self) -> &Topology {
        self.server.as_ref().expect("this test needs a real server")
    }

    pub fn server_mut(&mut self) -> &mut Topology {
        self.server.as_mut().expect("this test needs a real server")
    }

    pub fn standalone(&mut self) -> &mut Server {
        self.server_mut().standalone_mut()
    }

    /// The one session key in the server (asserts there is exactly one).
    pub fn only_session_key(&self) -> String {
        let keys = self.server().session_keys();
        assert_eq!(keys.len(), 1, "expected one session key, found {keys:?}");
        keys[0].clone()
    }
}
