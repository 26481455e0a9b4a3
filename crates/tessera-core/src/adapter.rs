//! The adapters' room: what a framework adapter or an integration calls, apart from what apps
//! call (the crate root).
//!
//! An app author never needs this module: `tessera-axum`, `tessera-actix` and
//! `tessera-tower-sessions` call it for them. It is for writing an adapter to another
//! framework, a session store for another session library, or a tool that drives requests by
//! hand (tests, benchmarks).
//!
//! | what | items |
//! |---|---|
//! | one request's life | [`ManagerExt::start_with`], the handler, [`SessionExt::finish`] → [`Outcome`]; [`ClientInfo`] (user agent and address, [`ForwardedHeader`](crate::ForwardedHeader) rules) |
//! | CSRF and cross-origin checks | [`require_csrf`], [`require_same_origin`] (→ [`CsrfRejection`]); the inputs [`RequestOrigin`], [`is_form_content_type`], [`is_cross_origin`]; the raw answer [`CsrfCheck`] ([`SessionExt::check_csrf`], [`SessionExt::check_origin`]) |
//! | answering | [`Refusal`] (the one shape of every refusal: status, text or JSON body, `Retry-After`), [`SessionMissing`]; [`endpoints`] (the account endpoints' logic as [`endpoints::Reply`]) |
//! | sessions another framework manages | [`ManagerExt::records`] → [`Records`], [`StoredRecord`], [`Loaded`]; take-overs: [`TakeOver`], [`Wrote`], [`LEGACY_REFUSAL`] |
//!
//! The methods on [`Session`] and [`SessionManager`] live in two extension traits,
//! [`SessionExt`] and [`ManagerExt`] (sealed: implemented for those two types only), so the
//! app-facing pages of `Session` and `SessionManager` list only what a handler calls. Bring
//! them in scope with `use tessera_core::adapter::{ManagerExt as _, SessionExt as _};`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
//! use tessera_core::adapter::{ClientInfo, ManagerExt as _, SessionExt as _};
//! use tessera_core::{Key, SessionConfig, SessionManager, Store};
//!
//! let manager = SessionManager::new(Store::memory(), SessionConfig::builder(Key::generate()).build().unwrap());
//! // Before the handler: the request's `Cookie` headers (as bytes) and what is known of the client.
//! let session = manager.start_with([b"theme=dark".as_slice()], ClientInfo::new(Some(b"curl/8".as_slice()), None));
//! // The handler:
//! session.insert("visits", &1).await?;
//! // After it, with the status of its response: the cookie to send, or the error that replaces it.
//! let outcome = session.finish(200).await;
//! assert!(outcome.error.is_none());
//! assert!(outcome.set_cookie.unwrap().starts_with("__Host-tessera="));
//! # Ok(()) }
//! ```

pub mod endpoints;
mod live;
mod rejection;

pub use self::live::{end_of, ended_data, sse_frame, until_ended, ENDED_CLOSE_CODE, ENDED_EVENT};
pub use self::rejection::{
    require_csrf, require_same_origin, Body, CsrfRejection, Refusal, Refused, RefusedRequest,
    SessionMissing,
};
pub use crate::session::{
    is_cross_origin, is_form_content_type, ClientInfo, CsrfCheck, Loaded, Outcome, Records,
    RequestOrigin, StoredRecord, TakeOver, Wrote, LEGACY_REFUSAL,
};

use crate::error::Result;
use crate::session::{Session, SessionManager};
use std::future::Future;

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Session {}
    impl Sealed for crate::SessionManager {}
}

/// What an adapter calls on a request's [`Session`]: the end of the request and the raw CSRF
/// checks. Sealed (implemented for [`Session`] only).
pub trait SessionExt: sealed::Sealed {
    /// Ends the request: writes what changed (in one round trip) and says what cookie to send.
    /// Adapters call this once, after the handler, with the status of the handler's response.
    ///
    /// All or nothing per request: when `response_status` is an error (400 or more), the
    /// pending changes are discarded, so an error response never commits half of what its
    /// request did. What was saved explicitly stays: [`save`](Session::save),
    /// [`increment`](Session::increment) (with the changes pending before it), `login`,
    /// `cycle_id`, `destroy` and the logout calls write at once.
    fn finish(&self, response_status: u16) -> impl Future<Output = Outcome> + Send;

    /// The request's `tracing` span, `tessera.request`: adapters run the handler and
    /// [`finish`](SessionExt::finish) in it. Its field `handle` is the session's
    /// [handle](crate::DeviceSession::handle) (never the id or the cookie), recorded once the
    /// session is loaded and again at the end if the request ends under another one.
    ///
    /// ```
    /// use tessera_core::adapter::SessionExt as _;
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// let session = manager.start(None::<&str>);
    /// let span = session.request_span(); // a disabled span without a subscriber
    /// # let _ = span;
    /// ```
    fn request_span(&self) -> tracing::Span;

    /// [`verify_csrf`](Session::verify_csrf), telling a wrong token from a session that is
    /// gone: what the adapters' `CsrfForm` and `CsrfHeader` answer with ([`require_csrf`]
    /// turns it into their rejection).
    ///
    /// Without a session, a token of the request's pre-session cookie is valid (the login
    /// form); another token is `Invalid` when the request carries a pre-session cookie, and
    /// `NoSession` otherwise (or when the request's session cookie names a session that is
    /// gone: the page's session ended).
    fn check_csrf(&self, token: &str) -> impl Future<Output = Result<CsrfCheck>> + Send;

    /// The cross-origin rule for a state-changing request (see [`is_cross_origin`], with the
    /// configuration's [trusted origins](crate::SessionConfigBuilder::trusted_origin)): a
    /// request that is not cross-origin is [`CsrfCheck::Valid`]; a cross-origin one only with
    /// this session's CSRF token (`token`, the `X-CSRF-Token` header), as
    /// [`check_csrf`](SessionExt::check_csrf) says. The adapters' `OriginChecked` extractor,
    /// which guards their account endpoints, calls this (through [`require_same_origin`]).
    fn check_origin(
        &self,
        req: &RequestOrigin<'_>,
        token: Option<&str>,
    ) -> impl Future<Output = Result<CsrfCheck>> + Send;
}

impl SessionExt for Session {
    fn finish(&self, response_status: u16) -> impl Future<Output = Outcome> + Send {
        Session::finish(self, response_status)
    }

    fn check_csrf(&self, token: &str) -> impl Future<Output = Result<CsrfCheck>> + Send {
        Session::check_csrf(self, token)
    }

    fn request_span(&self) -> tracing::Span {
        Session::span(self).clone()
    }

    fn check_origin(
        &self,
        req: &RequestOrigin<'_>,
        token: Option<&str>,
    ) -> impl Future<Output = Result<CsrfCheck>> + Send {
        Session::check_origin(self, req, token)
    }
}

/// What an adapter or an integration calls on the [`SessionManager`]: starting a request's
/// session, and sessions another framework manages. Sealed (implemented for
/// [`SessionManager`] only).
pub trait ManagerExt: sealed::Sealed {
    /// Starts a request's session as [`SessionManager::start`] does, with what the adapter
    /// knows about the client (recorded at login for device lists).
    fn start_with<H: AsRef<[u8]>>(
        &self,
        cookie_headers: impl IntoIterator<Item = H>,
        client: ClientInfo,
    ) -> Session;

    /// Sessions whose id and cookie another framework manages: see [`Records`].
    fn records(&self) -> Records;
}

impl ManagerExt for SessionManager {
    fn start_with<H: AsRef<[u8]>>(
        &self,
        cookie_headers: impl IntoIterator<Item = H>,
        client: ClientInfo,
    ) -> Session {
        SessionManager::start_with(self, cookie_headers, client)
    }

    fn records(&self) -> Records {
        SessionManager::records(self)
    }
}
