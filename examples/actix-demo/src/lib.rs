//! The tessera actix demo: the same routes as `axum-demo`, over the same `demo-core` logic.

use actix_web::web::{self, Bytes, ServiceConfig};
use actix_web::HttpResponse;
use serde_json::Value;
use tessera_actix::{reply, Session};

pub use demo_core::{config_from_env, port_from_env, store_from_env};

/// The demo's routes: `POST /login`, `GET /me`, `PUT /session`, `POST /counter`, plus
/// tessera's account endpoints. Mount inside an `App` wrapped in `SessionMiddleware`.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.route("/login", web::post().to(login))
        .route(
            "/me",
            web::get().to(|s: Session| async move { reply(demo_core::me(&s).await) }),
        )
        .route("/session", web::put().to(put_session))
        .route(
            "/counter",
            web::post().to(|s: Session| async move { reply(demo_core::counter(&s).await) }),
        )
        .configure(tessera_actix::endpoints);
}

fn body(b: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(b).map_err(|e| format!("body is not JSON: {e}"))
}

async fn login(s: Session, b: Bytes) -> HttpResponse {
    reply(demo_core::login(&s, body(&b)).await)
}

async fn put_session(s: Session, b: Bytes) -> HttpResponse {
    reply(demo_core::put_session(&s, body(&b)).await)
}
