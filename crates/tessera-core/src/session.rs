//! The session of one request, and the manager that starts and finishes it.
//!
//! Each file's job, and the way a field write takes from the handler to Redis: the map in
//! CONTRIBUTING.md (kept complete by a test).

// Rustdoc lists the inherent impl blocks of `Session` and `SessionManager` module by module,
// in the order declared here (then this file's own): the order a handler uses them, so their
// pages read top-down. A comment before each declaration keeps rustfmt from sorting them;
// `tests/tests/rustdoc.rs` keeps the everyday calls first.
// Session: fields (get, insert, remove, ...)
mod values;
// Session: increment
mod increment;
// Session: login, cycle_id
mod login;
// Session: logout (destroy), logout_all, the device list, revoke, logout_others
mod account;
// Session: per-session expiry
mod expiry;
// Session: CSRF tokens
mod csrf;
// Session: the activity trail
mod activity;
// Session: ended (what open connections wait on)
mod ended;
// Session: save
mod save;
// SessionManager: new, start, logout_all, the device list, revoke
mod manager;
// SessionManager: queries by indexed field
mod query;
// SessionManager: the query engine
mod query_engine;
// SessionManager: lifecycle events
mod lifecycle;
// SessionManager: sweep_expired
mod expiry_sweeper;

// No public method of `Session` or `SessionManager` in these.
mod devices;
mod index;
mod load;
mod operator;
mod record_view;
mod records;
mod rotation;
mod sealed_fields;
mod state;
mod takeover;
mod touch_log;

pub use self::activity::Activity;
pub use self::csrf::{
    csrf_input, is_cross_origin, is_form_content_type, CsrfCheck, RequestOrigin, CSRF_FIELD,
    CSRF_HEADER,
};
pub(crate) use self::devices::time_of_ms;
pub use self::devices::{ClientInfo, DeviceSession, ForwardedHeader};
pub use self::ended::EndCause;
pub use self::expiry::Expiry;
pub use self::lifecycle::{Event, EventKind, EventPage, EventStream, EventSubscription};
pub use self::manager::SessionManager;
pub use self::operator::SessionDetails;
pub use self::query::{FoundSession, FoundSessions};
pub use self::query_engine::escape_tag;
pub use self::record_view::Loaded;
pub use self::records::{Records, StoredRecord};
pub use self::takeover::{TakeOver, Wrote, LEGACY_REFUSAL};

#[cfg(feature = "test-hooks")]
pub(crate) async fn track_for_tests(
    manager: &SessionManager,
    member: &str,
    pending: bool,
) -> Result<()> {
    let entry = vec![(member.to_string(), 0, String::new())];
    let mut batch = crate::store::events::EventBatch::default();
    if pending {
        batch.track_pending = entry;
    } else {
        batch.track = entry;
    }
    manager.publish(&batch).await.map(|_| ())
}

#[cfg(feature = "test-hooks")]
pub(crate) async fn index_add_for_tests(
    manager: &SessionManager,
    member: &str,
    field: &str,
    value: &str,
) -> Result<()> {
    let entries = [(field.to_string(), value.to_string())];
    index::add_all(manager, member, &entries, manager.field_floor_ms())
        .await
        .map(|_| ())
}

use self::state::{is_user_field, CookieAction, State, Status};
use self::touch_log::TouchLog;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::store::{Store, Timing, WriteResult};
use std::fmt;
use std::sync::Arc;
use tokio::sync::Mutex;

/// What [`finish`](crate::adapter::SessionExt::finish) decided: the `Set-Cookie` value to send, if any, and the error
/// that must replace the handler's response, if any (see [`Error::status_code`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// A full `Set-Cookie` header value.
    pub set_cookie: Option<String>,
    /// A second `Set-Cookie` header value, sent beside `set_cookie`: the pre-session cookie of
    /// a page without a session (its CSRF token's nonce; see
    /// [`Session::csrf_token`]), or its removal once the browser has a session.
    pub csrf_cookie: Option<String>,
    /// A failure to report instead of the handler's response: store unavailable (503), store
    /// error (500), or the session ended meanwhile so the changes were not saved (409).
    pub error: Option<Error>,
}

/// One request's session: a cheap handle (clone it freely) over lazily loaded state.
///
/// Fields are typed: any serde value goes in with [`insert`](Session::insert) and comes back
/// with [`get`](Session::get). Only the fields that changed are written, at the end of the
/// request, in one round trip, and only when the response is not an error (see
/// [`finish`](crate::adapter::SessionExt::finish)).
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    manager: SessionManager,
    state: Mutex<State>,
    /// The request's pre-session cookie (see csrf.rs): apart from `state`, as it never touches
    /// the store.
    pre: std::sync::Mutex<csrf::PreSession>,
    /// `tessera.request`: the adapters run the request in it; `handle` is recorded once the
    /// session is known (see [`metrics`](crate::metrics)).
    span: tracing::Span,
}

impl Session {
    /// The request's span (`tessera.request`, field `handle`), for adapters to run the
    /// request in.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// Records the session's handle (never its id) in the request's span; nothing to compute
    /// when no subscriber wants the span.
    fn note_handle(&self, id: &crate::id::SessionId) {
        if !self.inner.span.is_disabled() {
            self.inner
                .span
                .record("handle", devices::handle_of(id.storage_str()));
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Session { .. }")
    }
}

fn check_field(field: &str) -> Result<()> {
    if field.is_empty() || !is_user_field(field) {
        Err(Error::ReservedField(field.to_string()))
    } else {
        Ok(())
    }
}

fn check_field_name_len(field: &str) -> Result<()> {
    if field.len() > crate::config::MAX_FIELD_NAME_BYTES {
        return Err(Error::TooLarge {
            what: "bytes in one field name",
            limit: crate::config::MAX_FIELD_NAME_BYTES,
        });
    }
    Ok(())
}

/// The longest field lifetime `insert_for` gives (longer ones are this): ten years.
const MAX_FIELD_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);

/// A write that would have landed too long after its field-index add: nothing was written.
pub(super) fn too_late() -> Error {
    Error::Unavailable(crate::error::StoreError::new(
        "the write came too late after its index update; nothing was written",
    ))
}

fn tag(id: Option<&SessionId>) -> &str {
    id.map_or("-", SessionId::log_tag)
}

impl Session {
    fn mgr(&self) -> &SessionManager {
        &self.inner.manager
    }

    fn timing(&self) -> Timing {
        self.mgr().inner.timing
    }

    fn store(&self) -> &Store {
        &self.mgr().inner.store
    }

    fn touches(&self) -> &TouchLog {
        &self.mgr().inner.touches
    }

    /// Records a store failure so the adapter reports it (503/500) whatever the handler does.
    fn failed<T>(st: &mut State, e: Error) -> Result<T> {
        if e.is_store_failure() || matches!(e, Error::SessionEnded) {
            if e.is_out_of_memory() {
                tracing::warn!(sid = %tag(st.id.as_ref()), "session store is over maxmemory (policy noeviction): write refused, answered 503");
            }
            tracing::warn!(sid = %tag(st.id.as_ref()), error = %e, cause = ?std::error::Error::source(&e), "session store operation failed");
            st.failure.get_or_insert_with(|| e.clone());
        }
        if matches!(e, Error::OutcomeUnknown(_)) {
            // A write that may have run may have appended them: never send them twice.
            st.records.clear();
        }
        Err(e)
    }

    /// Refuses a change that would take the session over its size limits (the same on every
    /// store), before anything is written.
    fn check_size(&self, st: &State, field: &str, value_len: usize) -> Result<()> {
        let limits = self.mgr().inner.config.limits;
        check_field_name_len(field)?;
        if value_len > limits.max_value_bytes {
            return Err(Error::TooLarge {
                what: "bytes in one value",
                limit: limits.max_value_bytes,
            });
        }
        if !st.data.contains_key(field) && st.user_field_count() >= limits.max_fields {
            return Err(self.too_many_fields());
        }
        Ok(())
    }

    /// A write the store refused without writing anything: the error for the handler, with
    /// what it means for the request recorded (a concurrent login moving the session is
    /// reported as [`Error::SessionEnded`] whatever the handler does).
    fn refusal(&self, st: &mut State, r: WriteResult, field: &str) -> Error {
        match r {
            WriteResult::NotAnInteger => Error::NotAnInteger(field.into()),
            WriteResult::TooManyFields => self.too_many_fields(),
            _ => {
                st.mark_moved();
                let _ = Self::failed::<()>(st, Error::SessionEnded);
                Error::SessionEnded
            }
        }
    }

    fn too_many_fields(&self) -> Error {
        Error::TooLarge {
            what: "fields in one session",
            limit: self.mgr().inner.config.limits.max_fields,
        }
    }

    /// Waits for the user-index refreshes started by this request, so that none lands after
    /// a step that removes the member (a rotation, a logout) and brings it back.
    ///
    /// A refresh that was not sent or not confirmed (`Unavailable`, `OutcomeUnknown`: the
    /// index's server is down or paused, on a Cluster often another primary than the
    /// session's) is logged and does not fail the request; any other error does. Such a
    /// refresh only moves bounds forward after a TTL slide that already happened, so whether
    /// it landed or not changes nothing the request read or wrote, and the bounds are set with
    /// a margin for one lost refresh (twice the idle timeout: ARCHITECTURE.md, *The user
    /// index*, *Field indexes*); the next slide's refresh moves them on. Failing the request
    /// would protect nothing: a retry finds the TTL just slid and refreshes nothing. And the
    /// request is often a read whose data is in hand: its `503` without `Retry-After` ("may or
    /// may not have been applied") broke the promise that reads never answer so (the soak
    /// found `GET /me` answering it while a Cluster primary was stopped), and a `503` with it
    /// would turn away a read that can be served.
    async fn settle_index_refresh(st: &mut State) {
        for task in std::mem::take(&mut st.index_refresh) {
            let res = match task.await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(Error::Store(crate::error::StoreError::new(
                    "user index refresh task failed",
                ))),
            };
            match res {
                Ok(()) => {}
                Err(e @ (Error::Unavailable(_) | Error::OutcomeUnknown(_))) => {
                    tracing::warn!(sid = %tag(st.id.as_ref()), error = %e, cause = ?std::error::Error::source(&e), "index refresh after a TTL slide not confirmed; the request stands (the index bounds cover one lost refresh)");
                }
                Err(e) => {
                    let _ = Self::failed::<()>(st, e);
                }
            }
        }
    }

    /// The manager this session belongs to (its store and configuration), for handlers that
    /// act across sessions, such as [`SessionManager::find_sessions`]. Costs nothing: the
    /// session itself is not loaded.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// // Across sessions, from a handler: every session of this user.
    /// let user = session.user_id().await?.unwrap();
    /// let devices = session.manager().list_sessions(&user).await?;
    /// assert_eq!(devices.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn manager(&self) -> &SessionManager {
        self.mgr()
    }

    /// Loads the session now if it was not yet (otherwise a no-op). Handlers rarely need this:
    /// every accessor loads on first use.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// // Fail early (a 503 while the store is down) before a side effect such as sending a mail:
    /// session.load().await?;
    /// assert!(!session.is_stored().await?);
    /// # Ok(()) }
    /// ```
    pub async fn load(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await
    }

    /// Loads the session from the store itself, never from the near-cache (see
    /// [`RedisOptions::near_cache`](crate::RedisOptions::near_cache)): for a handler that must
    /// act on the latest data whatever instance wrote it, such as a payment step. Call it
    /// before reading; if the session was already served from the near-cache in this request,
    /// it is read again (changes made in this request stay pending on top). Without the
    /// near-cache this is [`load`](Session::load).
    ///
    /// ```
    /// # async fn pay(session: tessera_core::Session) -> Result<(), tessera_core::Error> {
    /// session.load_fresh().await?;
    /// let cart: Option<Vec<String>> = session.get("cart").await?;
    /// # let _ = cart; Ok(()) }
    /// ```
    pub async fn load_fresh(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        st.fresh_only = true;
        if !(st.status == Status::Stored && st.from_cache) {
            return self.ensure_loaded(&mut st).await;
        }
        let id = st.id.clone().expect("a stored session has an id");
        let found = Box::pin(self.load_one(&mut st, &id)).await?;
        if !found {
            // Ended since the cached copy was read: as if the request had found no session.
            st.data = Default::default();
            if st.moved_away {
                st.mark_moved();
            } else {
                st.mark_no_session();
            }
        }
        let pending: Vec<(String, Option<String>)> = st
            .dirty
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in pending {
            match v {
                Some(v) => st.data_mut().insert(k, v.into_bytes()),
                None => st.remove_data(&k),
            };
        }
        Ok(())
    }

    /// Ends the request: writes what changed (in one round trip) and says what cookie to send.
    /// Adapters call this once, after the handler, with the status of the handler's response.
    ///
    /// All or nothing per request: when `response_status` is an error (400 or more), the
    /// pending changes are discarded, so an error response never commits half of what its
    /// request did. What was saved explicitly stays: [`save`](Session::save),
    /// [`increment`](Session::increment) (with the changes pending before it), `login`,
    /// `cycle_id`, `destroy` and the logout calls write at once.
    pub(crate) async fn finish(&self, response_status: u16) -> Outcome {
        let mut st = self.inner.state.lock().await;
        let config = &self.mgr().inner.config;
        Self::settle_index_refresh(&mut st).await;
        if response_status >= 400 && st.has_changes() {
            tracing::debug!(sid = %tag(st.id.as_ref()), status = response_status, discarded = st.dirty.len() + st.records.len(), "error response: the request's pending session changes are not saved");
            st.dirty.clear();
            st.records.clear();
        }
        if st.failure.is_none() && st.has_changes() {
            // Errors are recorded in st.failure by write_now.
            let _ = self.write_now(&mut st, None).await;
            // A load or write just now may have started an index refresh: it completes (and
            // reports an error the server answered) before the response.
            Self::settle_index_refresh(&mut st).await;
        }
        if st.cookie == CookieAction::Send && st.status == Status::Unloaded {
            // The cookie goes again (a stale signing key, a sliding refresh by a write that did
            // not read): its kind and Max-Age depend on the session's own expiry, so read it.
            // On a failure the configured kind is sent, and the response stands: this read is
            // only for the cookie's attributes.
            let failure = st.failure.take();
            if let Err(e) = self.ensure_loaded(&mut st).await {
                tracing::debug!(sid = %tag(st.id.as_ref()), error = %e, "could not read the session's expiry for its cookie");
            }
            // The read may have started an index refresh: it completes before the response.
            Self::settle_index_refresh(&mut st).await;
            if let Some(e) = std::mem::replace(&mut st.failure, failure) {
                tracing::debug!(sid = %tag(st.id.as_ref()), error = %e, "the read for the cookie's attributes failed; the configured kind is sent");
            }
        }
        if let (Some(id), Status::Stored) = (&st.id, st.status) {
            // A new session or a login: the request ends under this one.
            self.note_handle(id);
        }
        let set_cookie = match (&st.id, st.status, st.cookie) {
            (Some(id), Status::Stored | Status::Unloaded, CookieAction::Send) => {
                Some(config.cookie.set_header(
                    config.signer.sign(config.cookie_name(), id),
                    self.cookie_max_age(&st),
                ))
            }
            (_, Status::New | Status::Destroyed | Status::Ended, CookieAction::Clear) => {
                Some(config.cookie.removal_header())
            }
            _ => None,
        };
        let csrf_cookie = self.pre_session_cookie(st.status == Status::Stored);
        Outcome {
            set_cookie,
            csrf_cookie,
            error: st.failure.take(),
        }
    }
}

#[cfg(test)]
mod stored_data_fuzz;
