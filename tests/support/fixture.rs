//! One app under test: a store (memory or a real server), a manager, the demo routes plus a few
//! test routes, served over real HTTP.

use crate::http::{spawn_app, Browser, TestApp};
use crate::server::{Server, ServerKind};
use crate::topology::Topology;
use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::time::Duration;
use tessera_axum::{Session, SessionError, SessionLayer};
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

pub struct Fx {
    pub server: Option<Topology>,
    pub store: Store,
    pub manager: SessionManager,
    pub app: TestApp,
}

/// A fixed test key, so several apps can share cookies.
pub fn key(n: u8) -> Key {
    Key::from_bytes(&[n; 32]).unwrap()
}

pub fn config(f: impl FnOnce(SessionConfigBuilder) -> SessionConfigBuilder) -> SessionConfig {
    f(SessionConfig::builder(key(1))).build().unwrap()
}

/// The demo's routes plus test routes, behind the layer.
pub fn router(manager: SessionManager) -> Router {
    axum_demo::routes()
        .route("/noop", get(|| async { "ok" }))
        .route(
            "/typed/{field}",
            get(|s: Session, Path(f): Path<String>| async move {
                Ok::<_, SessionError>(Json(s.get::<i64>(&f).await?))
            }),
        )
        .route(
            "/slow-write",
            post(|s: Session| async move {
                s.load().await?;
                tokio::time::sleep(Duration::from_millis(400)).await;
                s.insert("slow", &true).await?;
                Ok::<_, SessionError>("saved")
            }),
        )
        .route(
            "/logout-others",
            post(|s: Session| async move { Ok::<_, SessionError>(Json(s.logout_others().await?)) }),
        )
        .route(
            "/cycle",
            post(|s: Session| async move {
                s.cycle_id().await?;
                Ok::<_, SessionError>("cycled")
            }),
        )
        .layer(SessionLayer::from_manager(manager))
}

impl Fx {
    pub async fn new(backend: Backend) -> Fx {
        Self::with(backend, |b| b).await
    }

    pub async fn with(
        backend: Backend,
        f: impl FnOnce(SessionConfigBuilder) -> SessionConfigBuilder,
    ) -> Fx {
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
        Self::on(server, store, config(f)).await
    }

    pub async fn on(server: Option<Topology>, store: Store, config: SessionConfig) -> Fx {
        let manager = SessionManager::new(store.clone(), config);
        let app = spawn_app(router(manager.clone())).await;
        Fx {
            server,
            store,
            manager,
            app,
        }
    }

    /// A second app instance on the same store with another config (a deploy, a key rotation).
    pub async fn sibling(&self, config: SessionConfig) -> TestApp {
        spawn_app(router(SessionManager::new(self.store.clone(), config))).await
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
        let keys = self.server().keys("session:*");
        assert_eq!(keys.len(), 1, "expected one session key, found {keys:?}");
        keys[0].clone()
    }
}
