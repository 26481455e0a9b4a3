//! actix-web adapter for tessera: server-side sessions kept as Redis or Valkey hashes.
//!
//! Wrap the app in [`SessionMiddleware`] and take [`Session`] in handlers. Same engine, same
//! Redis layout and same guarantees as `tessera-axum` (both are thin over `tessera-core`), so
//! an axum service and an actix service can share sessions.
//!
//! # Example
//! ```no_run
//! use actix_web::{web, App, HttpServer};
//! use tessera_actix::{Key, Session, SessionConfig, SessionError, SessionMiddleware, Store};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n = session.increment("visits", 1).await?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! # #[actix_web::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::redis("redis://127.0.0.1:6379").await?;
//! let config = SessionConfig::builder(Key::from_hex(&std::env::var("TESSERA_SECRET")?)?).build()?;
//! let sessions = SessionMiddleware::new(store, config);
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(sessions.clone())
//!         .route("/", web::post().to(visits))
//!         .configure(tessera_actix::endpoints)
//! })
//! .bind(("127.0.0.1", 3000))?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod csrf;
mod extract;
mod import;
pub mod live;
mod middleware;

pub use csrf::{CsrfForm, CsrfHeader, CsrfRejection, OriginChecked};
pub use extract::{reply, Session, SessionError, SessionExt, SessionMissing};
pub use import::{ActixSessionImport, ImportKeyError};
pub use middleware::{SessionMiddleware, SessionMiddlewareService};
pub use tessera_core;
pub use tessera_core::adapter::{Refusal, Refused, RefusedRequest};

// What apps need besides the adapter's own types, so `tessera-actix` is their only dependency.
pub use tessera_core::{
    csrf_input, escape_tag, Activity, ConfigError, DeviceSession, EndCause, Error, ErrorKind,
    Event, EventKind, EventPage, EventStream, EventSubscription, Expiry, FieldKey, ForwardedHeader,
    FoundSession, FoundSessions, Key, NearCacheCoherence, NearCacheStats, RedisOptions, SameSite,
    ServerReport, ServerWarning, SessionConfig, SessionConfigBuilder, SessionManager, Store,
    CSRF_FIELD, CSRF_HEADER,
};

use actix_web::web;
use tessera_core::adapter::endpoints as core;

/// Mounts the account endpoints (`POST /logout`, `POST /logout-all`, `GET /sessions`,
/// `DELETE /sessions/{handle}`; see [`tessera_core::adapter::endpoints`]) in one line:
/// `App::new().configure(tessera_actix::endpoints)`, or inside a `web::scope`.
///
/// The state-changing ones (`POST`, `DELETE`) refuse a request that a page of another origin
/// made (`Sec-Fetch-Site`, or `Origin` against `Host`) unless it carries the session's CSRF
/// token in `X-CSRF-Token`: `403`, nothing changed ([`OriginChecked`]). Scripts and curl,
/// which send neither header, are not affected.
pub fn endpoints(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/logout",
        web::post().to(|_: OriginChecked, s: Session| async move { reply(core::logout(&s).await) }),
    )
    .route(
        "/logout-all",
        web::post()
            .to(|_: OriginChecked, s: Session| async move { reply(core::logout_all(&s).await) }),
    )
    .route(
        "/sessions",
        web::get().to(|s: Session| async move { reply(core::list_sessions(&s).await) }),
    )
    .route(
        "/sessions/{handle}",
        web::delete().to(
            |_: OriginChecked, s: Session, h: web::Path<String>| async move {
                reply(core::revoke(&s, &h).await)
            },
        ),
    );
}

/// The crate README's examples, compiled as doc tests (so the README cannot drift).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The project README's examples (the repository's `README.md`, not packaged), compiled as
/// doc tests with this crate as the app's only tessera dependency (the axum ones too).
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ProjectReadmeDoctests;
