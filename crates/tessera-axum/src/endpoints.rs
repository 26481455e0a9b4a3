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
//! The state-changing ones (`POST`, `DELETE`) refuse a request that a page of another origin
//! made (`Sec-Fetch-Site`, or `Origin` against `Host`) unless it carries the session's CSRF
//! token in `X-CSRF-Token`: `403`, nothing changed ([`OriginChecked`]). Scripts and curl,
//! which send neither header, are not affected.
//!
//! ```
//! use axum::Router;
//! use tessera_axum::{endpoints, Key, SessionConfig, SessionLayer, Store};
//!
//! let layer = SessionLayer::new(Store::memory(), SessionConfig::builder(Key::generate()).build().unwrap());
//! let app: Router = Router::new()
//!     .nest("/account", endpoints())   // or .merge(endpoints()) at the root
//!     .layer(layer);
//! # let _ = app;
//! ```

use crate::{OriginChecked, Session};
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tessera_core::adapter::endpoints::{self as core, Reply};

/// The account endpoints as a router to merge or nest under a [`SessionLayer`](crate::SessionLayer).
pub fn endpoints<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/logout",
            post(|_: OriginChecked, s: Session| async move { reply(core::logout(&s).await) }),
        )
        .route(
            "/logout-all",
            post(|_: OriginChecked, s: Session| async move { reply(core::logout_all(&s).await) }),
        )
        .route(
            "/sessions",
            get(|s: Session| async move { reply(core::list_sessions(&s).await) }),
        )
        .route(
            "/sessions/{handle}",
            delete(
                |_: OriginChecked, s: Session, Path(h): Path<String>| async move {
                    reply(core::revoke(&s, &h).await)
                },
            ),
        )
}

/// A core [`Reply`] as an axum response.
pub fn reply(r: Reply) -> Response {
    if let Some(r) = r.refusal {
        return crate::extract::refusal(r);
    }
    let status = crate::extract::status(r.status);
    match r.body {
        Some(body) => (status, Json(body)).into_response(),
        None => status.into_response(),
    }
}
