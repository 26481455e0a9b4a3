//! The tessera axum demo: routes over `demo-core`'s logic, as a library so the integration
//! suite serves exactly these routes over real HTTP.

use axum::extract::rejection::JsonRejection;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::Value;
use tessera_axum::endpoints::reply;
use tessera_axum::{Session, SessionLayer};
use tessera_core::SessionManager;

pub use demo_core::{config_from_env, port_from_env, store_from_env};

/// The demo's routes behind a session layer.
pub fn app(manager: SessionManager) -> Router {
    routes().layer(SessionLayer::from_manager(manager))
}

/// The demo's routes without the layer (tests add their own routes before layering):
/// `POST /login`, `GET /me`, `PUT /session`, `POST /counter`, plus tessera's account
/// endpoints (`POST /logout`, `POST /logout-all`, `GET /sessions`, `DELETE /sessions/{handle}`).
pub fn routes() -> Router {
    Router::new()
        .route("/login", post(login))
        .route(
            "/me",
            get(|s: Session| async move { reply(demo_core::me(&s).await) }),
        )
        .route("/session", put(put_session))
        .route(
            "/counter",
            post(|s: Session| async move { reply(demo_core::counter(&s).await) }),
        )
        .merge(tessera_axum::endpoints())
}

fn body(b: Result<Json<Value>, JsonRejection>) -> Result<Value, String> {
    b.map(|Json(v)| v).map_err(|e| e.body_text())
}

async fn login(s: Session, b: Result<Json<Value>, JsonRejection>) -> Response {
    reply(demo_core::login(&s, body(b)).await)
}

async fn put_session(s: Session, b: Result<Json<Value>, JsonRejection>) -> Response {
    reply(demo_core::put_session(&s, body(b)).await)
}
