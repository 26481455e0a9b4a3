//! The session of one request, and the manager that starts and finishes it.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Session`]: the field API (get, insert, remove, increment, save) and `finish` |
//! | `state.rs` | the per-request state machine and the cookie decision |
//! | `load.rs` | loading (cookie candidates, TTL refresh, index refresh) |
//! | `rotation.rs` | login and id rotation (the freeze protocol) |
//! | `account.rs` | logout, logout everywhere, device list, revoke |
//! | `manager.rs` | [`SessionManager`]: starts sessions; per-user operations |
//! | `devices.rs` | [`DeviceSession`], [`ClientInfo`], handles |
//! | `touch_log.rs` | what this process saw of TTL refreshes |

mod account;
mod activity;
mod csrf;
mod devices;
mod events;
mod expiry;
mod index;
mod load;
mod manager;
mod protected;
mod query;
mod records;
mod rotation;
mod search;
mod state;
mod touch_log;

pub use self::activity::Activity;
pub use self::csrf::{
    csrf_input, is_cross_origin, is_form_content_type, CsrfCheck, RequestOrigin, CSRF_FIELD,
    CSRF_HEADER,
};
pub(crate) use self::devices::time_of_ms;
pub use self::devices::{ClientInfo, DeviceSession, ForwardedHeader};
pub use self::events::{Event, EventKind, EventPage, EventStream, EventSubscription};
pub use self::expiry::Expiry;
pub use self::manager::SessionManager;
pub use self::query::{FoundSession, FoundSessions};
pub use self::records::{Loaded, Records, StoredRecord, TakeOver, Wrote, LEGACY_REFUSAL};
pub use self::search::escape_tag;

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

use self::state::{is_user_field, user_of, CookieAction, State, Status};
use self::touch_log::TouchLog;
use crate::codec;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::store::{fields, Mode, Store, Timing, WriteOp, WriteResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;
use tracing::Instrument as _;

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

fn tag(id: Option<&SessionId>) -> String {
    id.map(SessionId::log_tag).unwrap_or_else(|| "-".into())
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
    async fn settle_index_refresh(st: &mut State) {
        for task in std::mem::take(&mut st.index_refresh) {
            let res = match task.await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(Error::Store(crate::error::StoreError::new(
                    "user index refresh task failed",
                ))),
            };
            if let Err(e) = res {
                let _ = Self::failed::<()>(st, e);
            }
        }
    }

    /// The manager this session belongs to (its store and configuration), for handlers that
    /// act across sessions, such as [`SessionManager::find_sessions`]. Costs nothing: the
    /// session itself is not loaded.
    pub fn manager(&self) -> &SessionManager {
        self.mgr()
    }

    /// Loads the session now if it was not yet (otherwise a no-op). Handlers rarely need this:
    /// every accessor loads on first use.
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
            st.data.clear();
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
                Some(v) => st.data.insert(k, v.into_bytes()),
                None => st.data.remove(&k),
            };
        }
        Ok(())
    }

    /// The value of a user field, decoded as `T`; `None` if absent.
    ///
    /// A field that does not decode as `T` (say, written by another application) is
    /// [`Error::Decode`], never a panic.
    pub async fn get<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>> {
        check_field(field)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Self::check_readable(&st, field)?;
        st.data
            .get(field)
            .map(|raw| codec::decode(field, raw))
            .transpose()
    }

    /// Sets a user field (written at the end of the request, with the other changes).
    ///
    /// A value over `max_value_bytes`, or a new field beyond `max_fields`, is
    /// [`Error::TooLarge`] and changes nothing.
    pub async fn insert<T: Serialize + ?Sized>(&self, field: &str, value: &T) -> Result<()> {
        self.insert_with(field, value, None).await
    }

    /// `insert`, with a lifetime in ms or none, under one lock.
    async fn insert_with<T: Serialize + ?Sized>(
        &self,
        field: &str,
        value: &T,
        lifetime_ms: Option<u64>,
    ) -> Result<()> {
        check_field(field)?;
        let encoded = codec::encode(value)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        self.check_size(&st, field, encoded.len())?;
        self.check_index_terms(&st, field, encoded.as_bytes())?;
        self.note_index_change(&mut st, field);
        st.unreadable.remove(field);
        Self::clear_lifetime(&mut st, field);
        if let Some(ms) = lifetime_ms {
            // The new stamp replaces whatever is there.
            st.dirty.remove(&format!("{}{field}", fields::EXPIRES));
            st.expire.insert(field.to_string(), ms);
        }
        st.data
            .insert(field.to_string(), encoded.clone().into_bytes());
        st.dirty.insert(field.to_string(), Some(encoded));
        Ok(())
    }

    /// Sets a user field that disappears after `ttl` while the session lives on (a cart, a
    /// step-up authentication flag). The lifetime never outlives the session; a login or an
    /// id rotation keeps what is left of it; writing the field again with
    /// [`insert`](Session::insert) makes it permanent again, with `insert_for` gives it a new
    /// lifetime; an [`increment`](Session::increment) keeps it. Where the server has hash-field
    /// expiry (Redis 7.4+, see [`Store::native_field_expiry`](crate::Store::native_field_expiry))
    /// the server removes the field on time; elsewhere the same happens through a stamp beside
    /// the field, checked whenever the session is read. A `ttl` under 1 ms is 1 ms; one over
    /// ten years is ten years (no session lives that long).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use std::time::Duration;
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert_for("mfa_ok", &true, Duration::from_secs(15 * 60)).await?;
    /// let left = session.field_ttl("mfa_ok").await?.unwrap();
    /// assert!(left <= Duration::from_secs(15 * 60));
    /// # Ok(()) }
    /// ```
    pub async fn insert_for<T: Serialize + ?Sized>(
        &self,
        field: &str,
        value: &T,
        ttl: std::time::Duration,
    ) -> Result<()> {
        let ms = (ttl.min(MAX_FIELD_LIFETIME).as_millis() as u64).max(1);
        self.insert_with(field, value, Some(ms)).await
    }

    /// The remaining lifetime of a field given one with [`insert_for`](Session::insert_for);
    /// `None` for a field without a lifetime or absent.
    pub async fn field_ttl(&self, field: &str) -> Result<Option<std::time::Duration>> {
        check_field(field)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if !st.data.contains_key(field) {
            return Ok(None);
        }
        if let Some(ms) = st.expire.get(field) {
            return Ok(Some(std::time::Duration::from_millis(*ms)));
        }
        let Some(at) = fields::ms(&st.data, &format!("{}{field}", fields::EXPIRES)) else {
            return Ok(None);
        };
        let now = self
            .store()
            .server_now()
            .unwrap_or_else(crate::store::now_ms);
        Ok(Some(std::time::Duration::from_millis(
            at.saturating_sub(now),
        )))
    }

    /// A field written without a lifetime (or removed) loses the one it had, including a stamp
    /// left in the store by a lifetime that has passed.
    fn clear_lifetime(st: &mut State, field: &str) {
        st.expire.remove(field);
        let stamp = format!("{}{field}", fields::EXPIRES);
        let stale = st.stale_stamps.remove(&stamp);
        if st.data.remove(&stamp).is_some() || stale {
            st.dirty.insert(stamp, None);
        }
    }

    /// Removes a user field and returns what it held, decoded as `T` (`None` if absent).
    /// A value that does not decode as `T` is [`Error::Decode`] and nothing is removed; a
    /// protected value that does not decrypt is removed and reads as `None`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert("cart", &vec!["p-17"]).await?;
    /// let cart: Option<Vec<String>> = session.remove("cart").await?;
    /// assert_eq!(cart, Some(vec!["p-17".to_string()]));
    /// assert_eq!(session.remove::<Vec<String>>("cart").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn remove<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>> {
        check_field(field)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let old = match st.data.get(field) {
            Some(raw) => Some(codec::decode::<T>(field, raw)?),
            None => None,
        };
        self.remove_locked(&mut st, field);
        Ok(old)
    }

    /// [`remove`](Session::remove), returning the old value as JSON (never a decode error).
    pub async fn remove_value(&self, field: &str) -> Result<Option<serde_json::Value>> {
        self.remove::<serde_json::Value>(field).await
    }

    /// Removes every user field and keeps the session: its id, cookie and login stay (to end
    /// it, [`destroy`](Session::destroy); to start anew for another user,
    /// [`login`](Session::login) does that). Saved with the request's other changes.
    pub async fn clear(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let fields: Vec<String> = st
            .data
            .keys()
            .chain(st.unreadable.keys())
            .chain(st.dirty.keys())
            .filter(|k| is_user_field(k))
            .cloned()
            .collect();
        for f in fields {
            self.remove_locked(&mut st, &f);
        }
        Ok(())
    }

    fn remove_locked(&self, st: &mut State, field: &str) {
        self.note_index_change(st, field);
        Self::clear_lifetime(st, field);
        st.data.remove(field);
        st.unreadable.remove(field);
        if st.status == Status::Stored {
            st.dirty.insert(field.to_string(), None);
        } else {
            st.dirty.remove(field);
        }
    }

    /// All user fields, each decoded as JSON (a plain-text field becomes a JSON string).
    ///
    /// A protected field whose stored value does not decrypt (a key change without the
    /// previous key, a copied or tampered value) is [`Error::Undecryptable`] naming it; to show
    /// the others and say which are unavailable, use
    /// [`readable_entries`](Session::readable_entries).
    pub async fn entries(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let (out, unreadable) = self.readable_entries_with_reasons().await?;
        match unreadable.into_iter().next() {
            Some((field, reason)) => Err(Error::Undecryptable { field, reason }),
            None => Ok(out),
        }
    }

    /// All user fields that can be read, each decoded as JSON, and the names (sorted) of the
    /// protected fields whose stored value does not decrypt, left out of the map: what a page
    /// shows when it must still render (the field as "unavailable", the logout forms working).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert("theme", "dark").await?;
    /// let (fields, unreadable) = session.readable_entries().await?;
    /// assert_eq!(fields["theme"], "dark");
    /// assert!(unreadable.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn readable_entries(
        &self,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, Vec<String>)> {
        let (out, unreadable) = self.readable_entries_with_reasons().await?;
        Ok((out, unreadable.into_iter().map(|(f, _)| f).collect()))
    }

    async fn readable_entries_with_reasons(
        &self,
    ) -> Result<(
        serde_json::Map<String, serde_json::Value>,
        Vec<(String, String)>,
    )> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let mut unreadable: Vec<(String, String)> = st
            .unreadable
            .iter()
            .map(|(f, r)| (f.clone(), r.to_string()))
            .collect();
        unreadable.sort();
        let mut out = serde_json::Map::new();
        let mut names: Vec<&String> = st.data.keys().filter(|k| is_user_field(k)).collect();
        names.sort();
        for k in names {
            let v = codec::decode_value(&st.data[k]).map_err(|e| Error::Decode {
                field: k.clone(),
                source: Arc::new(e),
            })?;
            out.insert(k.clone(), v);
        }
        Ok((out, unreadable))
    }

    /// Whether the session exists in the store (after loading it).
    pub async fn is_stored(&self) -> Result<bool> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st.status == Status::Stored)
    }

    /// The user bound by [`login`](Session::login), if any.
    pub async fn user_id(&self) -> Result<Option<String>> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(user_of(&st.data))
    }

    /// Creation time, for a stored session (`None` also when the stored value is not a
    /// valid time: stored data is never trusted to be well formed).
    pub async fn created_at(&self) -> Result<Option<std::time::SystemTime>> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st
            .data
            .get(fields::CREATED)
            .and_then(|v| time_of_ms(std::str::from_utf8(v).ok()?)))
    }

    /// Adds `by` to an integer field at once (HINCRBY) and returns the new value; concurrent
    /// increments never lose an update. Pending changes are written in the same round trip.
    ///
    /// Operations apply in the order the handler made them: after `insert("n", 10)` in the
    /// same request, `increment("n", 1)` stores and returns 11; after inserting a value that
    /// is not an integer, it is [`Error::NotAnInteger`] and nothing is written.
    pub async fn increment(&self, field: &str, by: i64) -> Result<i64> {
        check_field(field)?;
        check_field_name_len(field)?;
        if self.mgr().inner.config.is_protected(field) {
            return Err(Error::ProtectedField(field.to_string()));
        }
        let mut st = self.inner.state.lock().await;
        let indexed = self.indexed(field).is_some();
        // With field indexes, an increment loads first: a write that slides the TTL must also
        // move the bounds of the session's index entries, which needs its indexed values.
        let any_indexed = !self.mgr().inner.config.indexed.is_empty();
        if let (Status::Unloaded, Some(id), 1, false) =
            (st.status, st.id.clone(), st.candidates.len(), any_indexed)
        {
            // Not loaded yet (so nothing pending): one write script does the existence check,
            // the increment and the throttled TTL refresh, in one round trip, without reading
            // the session.
            let key = self.mgr().key_of(&id);
            let records: Vec<String> = st.records.clone();
            let op = WriteOp {
                mode: Mode::Update,
                set: Vec::new(),
                del: Vec::new(),
                incr: Some((field, by)),
                // Not loaded, so the store checks the field count for a new field.
                max_fields: self.mgr().inner.config.limits.max_fields,
                not_after_ms: 0,
                expire: Vec::new(),
                records: records.iter().map(String::as_str).collect(),
            };
            let span = tracing::debug_span!("tessera.increment", sid = %id.log_tag(), commands = 1);
            let sent = Instant::now();
            let write = self.store().write(&key, &op, self.timing_for(&st));
            match Box::pin(write.instrument(span)).await {
                Err(e) => return Self::failed(&mut st, e),
                Ok(WriteResult::Written {
                    incr,
                    refreshed,
                    user,
                }) => {
                    // The records went with it (the trail itself is read when next loaded).
                    st.records.clear();
                    self.after_write(&mut st, &id, &key, sent, refreshed, user);
                    return Ok(incr);
                }
                Ok(
                    r @ (WriteResult::NotAnInteger
                    | WriteResult::TooManyFields
                    | WriteResult::Moved),
                ) => return Err(self.refusal(&mut st, r, field)),
                Ok(WriteResult::TooLate) => return Self::failed(&mut st, too_late()),
                Ok(WriteResult::Gone | WriteResult::Exists) => {
                    // No such session (expired or ended before this request): start a new one.
                    st.candidates.clear();
                    st.mark_no_session();
                }
            }
        }
        self.ensure_loaded(&mut st).await?;
        if indexed {
            self.note_index_change(&mut st, field);
        }
        if let Some(pending) = st.dirty.get(field).cloned() {
            // Set or removed earlier in this request: the increment applies to that value.
            let current = match pending {
                Some(v) => v
                    .parse::<i64>()
                    .map_err(|_| Error::NotAnInteger(field.into()))?,
                None => 0,
            };
            let n = current
                .checked_add(by)
                .ok_or_else(|| Error::NotAnInteger(field.into()))?;
            st.data
                .insert(field.to_string(), n.to_string().into_bytes());
            st.dirty.insert(field.to_string(), Some(n.to_string()));
            self.write_now(&mut st, None).await?;
            return Ok(n);
        }
        if !st.data.contains_key(field) {
            self.check_size(&st, field, 20)?;
            self.check_index_terms(&st, field, i64::MIN.to_string().as_bytes())?;
        }
        let predicted = self.predicted_increment(&st, field, by);
        st.incr_entry = predicted.clone();
        let res = self.write_now(&mut st, Some((field, by))).await;
        st.incr_entry = None;
        let res = res?;
        st.data
            .insert(field.to_string(), res.to_string().into_bytes());
        if indexed {
            self.index_increment(&mut st, field, predicted).await?;
        }
        Ok(res)
    }

    /// Writes the pending changes now instead of at the end of the request, so that they are
    /// kept even if the response turns out to be an error (by default an error response
    /// commits nothing of its request: see [`finish`](crate::adapter::SessionExt::finish)). A no-op when nothing
    /// changed.
    pub async fn save(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        if !st.has_changes() {
            return Ok(());
        }
        self.write_now(&mut st, None).await.map(|_| ())
    }

    /// Writes the pending changes (and an optional increment) now, creating the record if the
    /// session is new. Returns the increment's result.
    async fn write_now(&self, st: &mut State, incr: Option<(&str, i64)>) -> Result<i64> {
        // Only records pending (they do not load): whether a session exists decides between
        // an update and a create.
        self.ensure_loaded(st).await?;
        if st.status == Status::Ended {
            return Self::failed(st, Error::SessionEnded);
        }
        let t = self.timing_for(st);
        let creating = st.status != Status::Stored;
        let incr_field = incr.map(|(f, _)| f);
        for _attempt in 0..3 {
            if creating && st.id.is_none() {
                st.id = Some(SessionId::generate());
            }
            let id = st.id.clone().expect("set above");
            let key = self.mgr().key_of(&id);
            let (mut index_add, index_remove) = self.index_delta(st, creating);
            index_add.extend(st.incr_entry.clone());
            if st.dirty.contains_key(fields::OWN_EXPIRY) {
                // A new own expiry: every entry is added again, for as long as it now lives.
                index_add = index::all_entries(&self.mgr().inner.config, &st.data);
                index_add.extend(st.incr_entry.clone());
            }
            let mut not_after_ms = 0;
            if !index_add.is_empty() {
                // Before the write: a session that holds a value is always in its index. The
                // write must then land within half the prune guard of the add.
                let mgr = self.mgr();
                let added = index::add_all(
                    mgr,
                    &id.storage_key(),
                    &index_add,
                    mgr.field_bound_ms(&st.data),
                )
                .await;
                match added {
                    Ok(at) => not_after_ms = index::write_cap(at),
                    Err(e) => return Self::failed(st, e),
                }
            }
            // No later than the write lands: what the old values' entries are pruned against.
            let before_write = if index_remove.is_empty() {
                None
            } else {
                self.store().server_now()
            };
            // Protected fields are encrypted for the key they are written to.
            let member = id.storage_key();
            let config = &self.mgr().inner.config;
            let stored: Vec<(&str, std::borrow::Cow<'_, str>)> = st
                .dirty
                .iter()
                .filter_map(|(k, v)| {
                    let v = v.as_deref()?;
                    let keys = config.field_keys.as_ref();
                    Some((k.as_str(), protected::seal(keys, config, &member, k, v)))
                })
                .collect();
            let expire = st.pending_lifetimes();
            let records: Vec<&str> = st.records.iter().map(String::as_str).collect();
            let sent = Instant::now();
            let res = if creating {
                // A new session: no existence check, no script (a fresh id cannot exist). An
                // increment here is of a field the new session does not hold yet.
                let by = incr.map(|(f, by)| (f, by.to_string()));
                let mut set: Vec<(&str, &str)> =
                    stored.iter().map(|(k, v)| (*k, v.as_ref())).collect();
                if let Some((f, by)) = &by {
                    set.push((f, by));
                }
                let span = tracing::debug_span!("tessera.save", sid = %id.log_tag(), commands = 1, fields = set.len(), create = true);
                Box::pin(
                    self.store()
                        .create(&key, &set, 0, &expire, &records, not_after_ms, t)
                        .instrument(span),
                )
                .await
                .map(|r| match (r, incr) {
                    (
                        WriteResult::Written {
                            refreshed, user, ..
                        },
                        Some((_, by)),
                    ) => WriteResult::Written {
                        incr: by,
                        refreshed,
                        user,
                    },
                    (r, _) => r,
                })
            } else {
                let op = WriteOp {
                    mode: Mode::Update,
                    set: stored.iter().map(|(k, v)| (*k, v.as_ref())).collect(),
                    del: st
                        .dirty
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(k, _)| k.as_str())
                        .collect(),
                    incr,
                    max_fields: 0,
                    not_after_ms,
                    expire,
                    records,
                };
                let span = tracing::debug_span!("tessera.save", sid = %id.log_tag(), commands = 1, fields = op.set.len() + op.del.len(), create = false);
                Box::pin(self.store().write(&key, &op, t).instrument(span)).await
            };
            match res {
                Err(e) => return Self::failed(st, e),
                Ok(WriteResult::Written {
                    incr,
                    refreshed,
                    user,
                }) => {
                    if creating && self.mgr().events_on() && !st.created_by_login {
                        // Tracked and announced before the cookie is handed out; if that
                        // fails, the new key goes again and nothing was created.
                        if let Err(e) = self.publish_created(st, &id.storage_key()).await {
                            if let Err(d) = self.store().delete(&key).await {
                                tracing::debug!(error = %d, "could not delete a new session whose event failed; it expires by its TTL");
                            }
                            return Self::failed(st, e);
                        }
                    }
                    st.dirty.clear();
                    self.saved_records(st);
                    if !st.expire.is_empty() {
                        // The stamps the script wrote, as this process estimates them.
                        let now = self
                            .store()
                            .server_now()
                            .unwrap_or_else(crate::store::now_ms);
                        for (f, ms) in std::mem::take(&mut st.expire) {
                            let stamp = format!("{}{f}", fields::EXPIRES);
                            let at = now.saturating_add(ms);
                            st.data.insert(stamp, at.to_string().into_bytes());
                        }
                    }
                    // Written: what the index entries were before no longer matters, except
                    // for an increment's field, whose entry `index_increment` moves next.
                    st.index_before
                        .retain(|k, _| incr_field == Some(k.as_str()));
                    if let Some(at) = before_write {
                        let max = index::prunable_below(at, self.mgr().field_floor_ms());
                        self.prune_in_background(st, id.storage_key(), index_remove, max);
                    }
                    if creating {
                        st.status = Status::Stored;
                        st.cookie = CookieAction::Send;
                        self.touches().note(&key, sent);
                    }
                    self.after_write(st, &id, &key, sent, refreshed, user);
                    return Ok(incr);
                }
                Ok(WriteResult::Gone) => {
                    st.mark_ended();
                    return Self::failed(st, Error::SessionEnded);
                }
                Ok(
                    r @ (WriteResult::NotAnInteger
                    | WriteResult::TooManyFields
                    | WriteResult::Moved),
                ) => return Err(self.refusal(st, r, incr.map(|i| i.0).unwrap_or(""))),
                Ok(WriteResult::TooLate) => return Self::failed(st, too_late()),
                Ok(WriteResult::Exists) => {
                    // 128-bit id collision: astronomically unlikely; draw again.
                    st.id = None;
                }
            }
        }
        Self::failed(
            st,
            Error::Store(crate::error::StoreError::new(
                "could not find a free session id",
            )),
        )
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
            // reports its error) before the response.
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
