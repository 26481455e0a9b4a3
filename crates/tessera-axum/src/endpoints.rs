//! Ready-made account endpoints: logout, logout everywhere, list my sessions, revoke one.
//!
//! They work with the app's own login: the user is the one bound by
//! [`Session::login`](tessera_core::Session::login), never a parameter, so a user can only
//! ever see or end their own sessions.
//!
//! | route | answer |
//! |---|---|
//! | `POST /logout` | `204`, session ended, cookie cleared |
//! | `POST /logout-all` | `204`, every session of the user ended; `401` when not logged in |
//! | `GET /sessions` | `200`, JSON array of `{"handle", "created_at", "last_seen", "user_agent", "client_addr", "current"}`, most recent first; `401` when not logged in |
//! | `DELETE /sessions/{handle}` | `204`; `404` when the handle is not one of the user's sessions; `401` when not logged in |
//!
//! ```
//! use axum::Router;
//! use tessera_axum::{endpoints, SessionLayer};
//! use tessera_core::{Key, SessionConfig, Store};
//!
//! let layer = SessionLayer::new(Store::memory(), SessionConfig::builder(Key::generate()).build().unwrap());
//! let app: Router = Router::new()
//!     .nest("/account", endpoints())   // or .merge(endpoints()) at the root
//!     .layer(layer);
//! # let _ = app;
//! ```

use crate::{Session, SessionError};
use axum::extract::Path;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::StatusCode;

/// The account endpoints as a router to merge or nest under a [`SessionLayer`](crate::SessionLayer).
pub fn endpoints<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/logout", post(logout))
        .route("/logout-all", post(logout_all))
        .route("/sessions", get(list))
        .route("/sessions/{handle}", delete(revoke))
}

async fn logout(session: Session) -> Result<StatusCode, SessionError> {
    session.destroy().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_all(session: Session) -> Result<StatusCode, SessionError> {
    session.logout_all().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(session: Session) -> Result<Json<Vec<serde_json::Value>>, SessionError> {
    let list = session.list_sessions().await?;
    Ok(Json(list.iter().map(|d| d.to_json()).collect()))
}

async fn revoke(session: Session, Path(handle): Path<String>) -> Result<StatusCode, SessionError> {
    Ok(if session.revoke(&handle).await? {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    })
}
