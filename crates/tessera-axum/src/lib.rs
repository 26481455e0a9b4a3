//! axum / tower adapter for tessera: server-side sessions kept as Redis or Valkey hashes.
//!
//! Add [`SessionLayer`] to a router and take [`Session`] in handlers. The layer reads the
//! signed cookie (no store command for a missing or bad one), lets the handler load the
//! session lazily, and after the handler writes only the changed fields and sets the cookie.
//! Store failures become `503 Service Unavailable` (or `500`), never a hang or a silent
//! success; a write to a session ended meanwhile becomes `409 Conflict`.
//!
//! # Example
//! ```no_run
//! use axum::{routing::get, Router};
//! use tessera_axum::{Key, Session, SessionConfig, SessionError, SessionLayer, Store};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n = session.increment("visits", 1).await?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::redis("redis://127.0.0.1:6379").await?;
//! let config = SessionConfig::builder(Key::from_hex(&std::env::var("TESSERA_SECRET")?)?).build()?;
//! let app = Router::new().route("/", get(visits)).layer(SessionLayer::new(store, config));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod csrf;
pub mod endpoints;
mod extract;
pub mod guide;
mod layer;
pub mod live;

pub use csrf::{CsrfForm, CsrfHeader, CsrfRejection, OriginChecked};
pub use endpoints::endpoints;
pub use extract::{Session, SessionError, SessionMissing};
pub use layer::{ResponseFuture, SessionLayer, SessionService};
pub use tessera_core;
pub use tessera_core::adapter::{Refusal, Refused, RefusedRequest};

// What apps need besides the adapter's own types, so `tessera-axum` is their only dependency.
pub use tessera_core::{
    csrf_input, escape_tag, Activity, ConfigError, DeviceSession, EndCause, Error, ErrorKind,
    Event, EventKind, EventPage, EventStream, EventSubscription, Expiry, FieldKey, ForwardedHeader,
    FoundSession, FoundSessions, Key, NearCacheCoherence, NearCacheStats, RedisOptions, SameSite,
    ServerReport, ServerWarning, SessionConfig, SessionConfigBuilder, SessionManager, Store,
    CSRF_FIELD, CSRF_HEADER,
};

/// The crate README's examples, compiled as doc tests (so the README cannot drift).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The project README's examples (the repository's `README.md`, not packaged), compiled as
/// doc tests with this crate as the app's only tessera dependency.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ProjectReadmeDoctests;
