//! A [tower-sessions](https://docs.rs/tower-sessions) [`SessionStore`] on tessera's
//! Redis/Valkey layout, so apps built on tower-sessions, [axum-login] and [axum-messages] keep
//! their code and get tessera's store: one hash per session (`redis-cli HGETALL` shows each
//! value), the id only as a hash in key names, writes of the changed fields only, no session
//! brought back by a late save after a logout, timeouts instead of hangs, Sentinel and Cluster
//! from one URL, and the user's `user:<id>:sessions` index, so logout-all and device lists
//! work for axum-login apps.
//!
//! Switching is one line: the store given to `SessionManagerLayer::new`.
//!
//! ```no_run
//! use tessera_tower_sessions::{tessera_core, StoreUnavailableLayer, TesseraStore};
//! use tessera_core::{Key, SessionConfig, SessionManager, Store};
//! use tower_sessions::SessionManagerLayer;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::redis("redis://127.0.0.1:6379").await?;
//! let config = SessionConfig::builder(Key::generate()).build()?;
//! let sessions = TesseraStore::new(SessionManager::new(store, config))
//!     .user_id_at("axum-login.data", "/user_id"); // where axum-login keeps the user id
//! // Before: SessionManagerLayer::new(RedisStore::new(pool))
//! let layer = SessionManagerLayer::new(sessions.clone());
//! // Store outages: 503, not tower-sessions' bare 500 (Retry-After if nothing changed).
//! let outer = StoreUnavailableLayer;
//! # let _ = (layer, outer); Ok(()) }
//! ```
//!
//! The session's cookie stays tower-sessions' own (its name, its id format, its `Expiry`);
//! the [`SessionConfig`](tessera_core::SessionConfig) gives the store's namespace, limits and
//! device limit. Sessions written by `tower-sessions-redis-store` can be taken over on first
//! use, so switching logs nobody out: see [`TesseraStore::migrate_redis_store`].
//!
//! [axum-login]: https://docs.rs/axum-login
//! [axum-messages]: https://docs.rs/axum-messages
#![deny(missing_docs)]

mod status;

pub use crate::status::{StoreUnavailable, StoreUnavailableLayer};
pub use tessera_core;

use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tessera_core::adapter::{Loaded, ManagerExt as _, Records, StoredRecord, TakeOver, Wrote};
use tessera_core::SessionManager;
use time::OffsetDateTime;
use tower_sessions_core::session::{self, Id, Record, Session};
use tower_sessions_core::session_store::{self, SessionStore};

/// A tower-sessions [`SessionStore`] that keeps sessions in tessera's layout; see the crate
/// documentation. Cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct TesseraStore {
    manager: SessionManager,
    records: Records,
    user_id: Option<(String, String)>,
    migrate: bool,
}

impl TesseraStore {
    /// A store that keeps sessions with `manager`'s store and configuration.
    pub fn new(manager: SessionManager) -> Self {
        TesseraStore {
            records: manager.records(),
            manager,
            user_id: None,
            migrate: false,
        }
    }

    /// Where the user id lives in a session record: under the value of `key`, at the JSON
    /// pointer `pointer` (`""` for the value itself). A string or number found there is the
    /// session's user: the session joins that user's `user:<id>:sessions` index, so
    /// [`SessionManager::logout_all`], [`list_sessions`](SessionManager::list_sessions) and
    /// [`revoke`](SessionManager::revoke) see it. For axum-login:
    /// `.user_id_at("axum-login.data", "/user_id")`.
    ///
    /// ```
    /// # use tessera_tower_sessions::{tessera_core::*, TesseraStore};
    /// # fn demo(manager: SessionManager) {
    /// let store = TesseraStore::new(manager).user_id_at("axum-login.data", "/user_id");
    /// # }
    /// ```
    pub fn user_id_at(mut self, key: impl Into<String>, pointer: impl Into<String>) -> Self {
        self.user_id = Some((key.into(), pointer.into()));
        self
    }

    /// Takes over sessions written by `tower-sessions-redis-store` (a MessagePack record under
    /// the bare id): a session id not found in tessera's layout is looked up there, and if a
    /// live session is found it is written in tessera's layout, then the old key deleted, in
    /// the same request. Users stay logged in across the switch. Off by default: it costs
    /// one `GET` per unknown id (and, when there is no old key either, one more read of
    /// tessera's layout: another instance may have just taken it over).
    ///
    /// Only a well-formed record of that store naming the same id is ever deleted; one whose
    /// user logged out everywhere since the switch is refused (and deleted); a take-over
    /// whose write fails leaves the old key as it was. See
    /// [`Records::take_over`](tessera_core::adapter::Records::take_over) for the steps.
    ///
    /// ```
    /// # use tessera_tower_sessions::{tessera_core::*, TesseraStore};
    /// # fn demo(manager: SessionManager) {
    /// let store = TesseraStore::new(manager).migrate_redis_store(true);
    /// # }
    /// ```
    pub fn migrate_redis_store(mut self, on: bool) -> Self {
        if on {
            self.records.takes_over_sessions();
        }
        self.migrate = on;
        self
    }

    /// The session manager: for [`logout_all`](SessionManager::logout_all),
    /// [`list_sessions`](SessionManager::list_sessions) and
    /// [`revoke`](SessionManager::revoke) of a user's sessions.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }

    /// Logs `user_id` out everywhere ([`SessionManager::logout_all`]) and ends the request's
    /// own `session` with it: its values are cleared and its id dropped (tower-sessions'
    /// `Session::flush`), so a value written later in the same request (a flash message,
    /// "you are logged out everywhere") goes to a fresh anonymous session under a new id, and
    /// the browser gets a cookie for that id (or, if nothing is written, its cookie removed).
    /// The number of sessions ended.
    ///
    /// Use it rather than `manager().logout_all(..)` in a request of that user: then the
    /// request's session is ended under it, and writing to it afterwards fails its save (a
    /// session that ended is never written again, see [`SessionStore::save`]).
    ///
    /// ```
    /// # use tessera_tower_sessions::TesseraStore;
    /// # async fn demo(store: TesseraStore, session: tower_sessions::Session) -> Result<(), tower_sessions::session::Error> {
    /// store.logout_all(&session, "ada").await?;
    /// session.insert("flash", "You are logged out on every device").await?;
    /// # Ok(()) }
    /// ```
    pub async fn logout_all(
        &self,
        session: &Session,
        user_id: impl std::fmt::Display,
    ) -> Result<usize, session::Error> {
        let ended = self
            .manager
            .logout_all(user_id)
            .await
            .map_err(|e| session::Error::Store(store_error(e)))?;
        session.flush().await?;
        Ok(ended)
    }

    /// The [`DeviceSession::handle`](tessera_core::DeviceSession::handle) of the session with
    /// this id (from `tower_sessions::Session::id`), to mark "this device" in a device list.
    pub fn handle(&self, id: &Id) -> String {
        self.records.handle(&id.to_string())
    }

    /// The user id in `data`, where [`Self::user_id_at`] says it is.
    fn user_of(&self, data: &HashMap<String, Value>) -> Option<String> {
        let (key, pointer) = self.user_id.as_ref()?;
        match data.get(key)?.pointer(pointer)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Takes over the session `tower-sessions-redis-store` wrote under `id`, through
    /// [`Records::take_over`]: of several instances exactly one writes it (the others find its
    /// copy), and a failed write leaves the old key for the next request. A record that is
    /// undecodable, expired, names another id or holds values tessera refuses is not taken
    /// over (and left alone): that user starts a new session.
    async fn migrate(&self, id: &Id) -> tessera_core::Result<Option<Record>> {
        let key = id.to_string();
        let key = key.as_str();
        // Twice at most: a write that raced with the old key changing (rewritten by the old
        // app still running, or ended) is undone and the key read again.
        for _ in 0..2 {
            let found = std::sync::atomic::AtomicBool::new(false);
            let taken = self
                .records
                .take_over(
                    key,
                    // The copy is under the same id: every request finds it.
                    Duration::ZERO,
                    |raw| {
                        found.store(true, std::sync::atomic::Ordering::Relaxed);
                        self.legacy_record(id, raw)
                    },
                    |record: Record, user| async move {
                        let expires = system_time(record.expiry_date);
                        let created = self
                            .records
                            .create(key, &record.data, user.as_deref(), expires)
                            .await?;
                        // `false`: another instance wrote it first; its copy is the one to
                        // serve, and the old key is that instance's to delete.
                        Ok(if created {
                            Wrote::New(())
                        } else {
                            Wrote::Existing(Some(()))
                        })
                    },
                )
                .await?;
            let session = self.records.handle(key);
            match taken {
                // No old key (any more): another instance may have taken it over since this
                // request looked for tessera's copy (it writes the copy, then deletes the old
                // key); its copy is this session.
                TakeOver::Nothing if !found.load(std::sync::atomic::Ordering::Relaxed) => {
                    return Ok(self.records.load(key).await?.map(|s| self.record(*id, s)));
                }
                TakeOver::Nothing => return Ok(None),
                TakeOver::Refused => {
                    tracing::info!(%session, "a tower-sessions-redis-store session of a user who logged out everywhere since: not taken over");
                    return Ok(None);
                }
                TakeOver::Taken(()) => {
                    tracing::debug!(%session, "took over a tower-sessions-redis-store session");
                    // Read after the old key is retired: a failure here leaves the copy, which
                    // the next request finds.
                    return Ok(self.records.load(key).await?.map(|s| self.record(*id, s)));
                }
                TakeOver::EndedMeanwhile(()) => {
                    self.records.delete(key).await?;
                    return Ok(None);
                }
                TakeOver::Raced(()) => {
                    self.records.delete(key).await?;
                }
            }
        }
        Ok(None)
    }

    /// `raw` as a live record of `tower-sessions-redis-store` for `id` whose values tessera
    /// accepts, with its user.
    fn legacy_record(&self, id: &Id, raw: &[u8]) -> Option<(Record, Option<String>)> {
        let session = self.records.handle(&id.to_string());
        let record: Record = match rmp_serde::from_slice(raw) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%session, error = %e, "a tower-sessions-redis-store record could not be decoded: not taken over");
                return None;
            }
        };
        if record.id != *id || record.expiry_date <= OffsetDateTime::now_utc() {
            return None;
        }
        let user = self.user_of(&record.data);
        if let Err(e) = self.records.check(&record.data, user.as_deref()) {
            tracing::warn!(%session, error = %e, "a tower-sessions-redis-store record holds values tessera refuses: not taken over");
            return None;
        }
        Some((record, user))
    }

    /// A loaded session as tower-sessions' record, carrying what was loaded (under
    /// [`LOADED`]) for the save.
    fn record(&self, id: Id, s: StoredRecord) -> Record {
        let fallback = || OffsetDateTime::now_utc() + self.manager.config().idle_timeout();
        let mut data = s.data;
        data.insert(LOADED.to_string(), s.loaded.to_value());
        Record {
            id,
            data,
            expiry_date: s.expires_at.and_then(offset_time).unwrap_or_else(fallback),
        }
    }
}

/// The record value that carries what the load returned ([`Loaded`]) to the save of the same
/// request, so the save writes only what the request changed: tower-sessions gives the store
/// nothing but the record back. A reserved name (`__`), never stored; an app that
/// [`clear`](tower_sessions_core::Session::clear)s the session drops it, and that save replaces
/// every value. It holds for one save: the same view saved again (a `CachingSessionStore`'s
/// copy of the record, given to every later request) replaces every value too, and a record
/// given a new id (`create`) loses it.
pub const LOADED: &str = "__tessera.loaded";

/// `data` without [`LOADED`], and what it held.
fn split_loaded(
    data: &HashMap<String, Value>,
) -> (std::borrow::Cow<'_, HashMap<String, Value>>, Option<Loaded>) {
    match data.get(LOADED) {
        None => (std::borrow::Cow::Borrowed(data), None),
        Some(v) => {
            let loaded = Loaded::from_value(v);
            let mut rest = data.clone();
            rest.remove(LOADED);
            (std::borrow::Cow::Owned(rest), loaded)
        }
    }
}

impl TesseraStore {
    /// Whether `raw` is a record of `tower-sessions-redis-store` for `id` (what may be deleted).
    fn is_legacy_record(id: &Id, raw: &[u8]) -> bool {
        rmp_serde::from_slice::<Record>(raw).is_ok_and(|r| r.id == *id)
    }
}

fn system_time(t: OffsetDateTime) -> SystemTime {
    let ns = t.unix_timestamp_nanos();
    if ns <= 0 {
        return SystemTime::UNIX_EPOCH;
    }
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as i128) as u64)
}

/// `None` out of `OffsetDateTime`'s range (which `From` would panic on).
fn offset_time(t: SystemTime) -> Option<OffsetDateTime> {
    let ns = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(ns).ok()?).ok()
}

/// A tessera error as tower-sessions' store error (and, for an unreachable store, noted for
/// [`StoreUnavailableLayer`]).
fn store_error(e: tessera_core::Error) -> session_store::Error {
    if e.status_code() == 503 {
        status::note_unavailable(&e);
    }
    match e {
        tessera_core::Error::Encode(_)
        | tessera_core::Error::TooLarge { .. }
        | tessera_core::Error::ReservedField(_)
        | tessera_core::Error::InvalidUserId => session_store::Error::Encode(e.to_string()),
        tessera_core::Error::Decode { .. } => session_store::Error::Decode(e.to_string()),
        e => session_store::Error::Backend(e.to_string()),
    }
}

#[async_trait]
impl SessionStore for TesseraStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A record loaded then given a new id (`cycle_id`): all of it is new, and what the
        // old id's load returned goes (a cache's copy of this record, saved again later, must
        // not be taken for a view of what the new session holds: without it a save replaces
        // every value).
        record.data.remove(LOADED);
        let data = record.data.clone();
        let user = self.user_of(&data);
        let expires = system_time(record.expiry_date);
        // Never the id the record had: after tower-sessions' `flush` (axum-login's `logout`,
        // `TesseraStore::logout_all`) the record keeps its old id, and a write afterwards (a
        // flash message) would bring the ended id back to life for whoever holds its cookie.
        record.id = Id::default();
        // A 128-bit random id collides with a live one practically never; the loop is for
        // the contract, and bounded.
        for _ in 0..8 {
            let created = self
                .records
                .create(&record.id.to_string(), &data, user.as_deref(), expires)
                .await
                .map_err(store_error)?;
            if created {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(session_store::Error::Backend(
            "no free session id after 8 tries".into(),
        ))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let id = record.id.to_string();
        if record.expiry_date <= OffsetDateTime::now_utc() {
            self.records.delete(&id).await.map_err(store_error)?;
            return Ok(());
        }
        let (data, loaded) = split_loaded(&record.data);
        let user = self.user_of(&data);
        let written = self
            .records
            .save(
                &id,
                &data,
                loaded.as_ref(),
                user.as_deref(),
                system_time(record.expiry_date),
            )
            .await
            .map_err(store_error)?;
        if !written {
            // Ended meanwhile (logged out here or elsewhere, revoked, expired): it stays
            // ended, and the request's changes are refused, never dropped in silence (its
            // response would hand out a cookie for the dead id). After a logout-all in the
            // same request, `TesseraStore::logout_all` moves later writes to a fresh session.
            tracing::debug!(
                session = %self.records.handle(&id),
                "save of a session that ended meanwhile: nothing written"
            );
            return Err(store_error(tessera_core::Error::SessionEnded));
        }
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let id = session_id.to_string();
        match self.records.load(&id).await.map_err(store_error)? {
            Some(s) => Ok(Some(self.record(*session_id, s))),
            None if self.migrate => self.migrate(session_id).await.map_err(store_error),
            None => Ok(None),
        }
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let id = session_id.to_string();
        self.records.delete(&id).await.map_err(store_error)?;
        if self.migrate {
            // A session not taken over yet (deleted without being loaded): its old key goes
            // too, or the next request would take it over and undo the logout.
            // Only a record of that store under this id: a forged cookie deletes nothing.
            self.records
                .delete_legacy(&id, |raw| Self::is_legacy_record(session_id, raw))
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }
}

/// The crate README's examples, compiled as doc tests (so the README cannot drift).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
