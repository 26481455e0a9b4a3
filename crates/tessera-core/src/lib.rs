//! Server-side web sessions kept as Redis/Valkey hashes: the framework-neutral core.
//!
//! One session is one hash at `[namespace]session:<key>`, where `<key>` is a one-way hash of
//! the random session id carried in a signed cookie. User fields are hash fields (a string is
//! stored as its plain text); tessera's metadata lives in reserved fields starting with `__`.
//! A request loads the hash lazily (one round trip that also slides the TTL when the touch
//! interval has passed), and at the end writes only the fields that changed, in one round trip
//! that never brings back a session deleted meanwhile.
//!
//! Adapters: `tessera-axum` (a tower layer) and `tessera-actix`.
//!
//! # Two rooms
//!
//! The crate root holds what apps call: [`Session`] in handlers; [`SessionManager`],
//! [`SessionConfig`] and [`Store`] at start-up and in tools that act across sessions (logout
//! everywhere, device lists, queries, lifecycle events); the errors ([`Error`], its
//! [`ErrorKind`], [`ConfigError`]; [`error::StoreError`] in [`error`]). What adapters and
//! integrations call (starting and finishing a request, the CSRF checks and the refusals they
//! answer with, the account endpoints' logic, sessions another framework manages) is in
//! [`adapter`]: an app author never needs it.
//!
//! # Example
//! What an adapter does around every request, by hand: start the session from the `Cookie`
//! headers, let the handler use it, finish it after the handler.
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
//! use tessera_core::adapter::{ManagerExt as _, SessionExt as _};
//! use tessera_core::{Key, SessionConfig, SessionManager, Store};
//!
//! let manager = SessionManager::new(
//!     Store::memory(), // or Store::redis("redis://127.0.0.1:6379").await?
//!     SessionConfig::builder(Key::generate()).build().unwrap(),
//! );
//! // Request 1: no cookie.
//! let session = manager.start(None::<&str>);
//! session.insert("tenant", "acme").await?;
//! assert_eq!(session.increment("visits", 1).await?, 1);
//! let cookie = session.finish(200).await.set_cookie.unwrap();
//! let pair = cookie.split(';').next().unwrap();
//!
//! // Request 2: the browser sends the cookie back.
//! let session = manager.start([pair]);
//! assert_eq!(session.get::<String>("tenant").await?.as_deref(), Some("acme"));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod adapter;
mod codec;
mod config;
mod cookie;
pub mod error;
mod field_crypto;
mod id;
mod layout;
pub mod metrics;
mod session;
mod store;

pub use crate::config::{SessionConfig, SessionConfigBuilder};

/// Hooks for tessera's own integration tests: the half-way states of a request that no
/// public call can stop in. Not part of the API.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks {
    use crate::{Result, SessionManager};

    /// The tracking a login sends before its new id's key exists (`pending`), or the tracking
    /// of a created session, on its own: `member` joins the events' expiry set, due at once.
    pub async fn track(manager: &SessionManager, member: &str, pending: bool) -> Result<()> {
        crate::session::track_for_tests(manager, member, pending).await
    }

    /// The first step of a first save or a login of a new session, on its own: the field
    /// index entry of `member` for `field = value`.
    pub async fn add_entry(
        manager: &SessionManager,
        member: &str,
        field: &str,
        value: &str,
    ) -> Result<()> {
        crate::session::index_add_for_tests(manager, member, field, value).await
    }

    /// The second step of a first save or a login of a new session, on its own: creates a
    /// session with `field = value` at the storage key `member` (the first step, the field
    /// index add, is for the test to do). Whether it was written.
    pub async fn create_at(
        manager: &SessionManager,
        member: &str,
        field: &str,
        value: &str,
    ) -> Result<bool> {
        let store = manager.store();
        let key = manager.config().session_key(member);
        let t = crate::store::Timing {
            idle_ms: manager.config().idle_timeout().as_millis() as u64,
            touch_ms: manager.config().touch_interval().as_millis() as u64,
            absolute_ms: 0,
            trail_max: 1,
            longest_ms: manager.config().longest_expiry().as_millis() as u64,
        };
        Ok(matches!(
            store
                .create(
                    &key,
                    &crate::store::NewSession::fields(&[(field, value)]),
                    t
                )
                .await?,
            crate::store::WriteResult::Written { .. }
        ))
    }
}
// The app's room: what a handler, an app's start-up or an app's own tool calls. The adapters'
// room is `adapter`.
pub use crate::cookie::{Key, SameSite};
pub use crate::error::{ConfigError, Error, ErrorKind, Result};
pub use crate::field_crypto::FieldKey;
pub use crate::session::{
    csrf_input, escape_tag, Activity, DeviceSession, EndCause, Event, EventKind, EventPage,
    EventStream, EventSubscription, Expiry, ForwardedHeader, FoundSession, FoundSessions, Session,
    SessionDetails, SessionManager, CSRF_FIELD, CSRF_HEADER,
};
pub use crate::store::{
    NearCacheCoherence, NearCacheStats, RedisOptions, ServerReport, ServerWarning, Store,
};

/// The crate README's examples, compiled as doc tests (so the README cannot drift).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
