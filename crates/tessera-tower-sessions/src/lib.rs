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
//! the [`SessionConfig`] gives the store's namespace, limits and
//! device limit. Sessions written by `tower-sessions-redis-store` can be taken over on first
//! use, so switching logs nobody out: see [`TesseraStore::migrate_redis_store`].
//!
//! [axum-login]: https://docs.rs/axum-login
//! [axum-messages]: https://docs.rs/axum-messages
#![deny(missing_docs)]

mod device;
mod status;

pub use crate::device::{DeviceInfo, DeviceInfoLayer};
pub use crate::status::{StoreUnavailable, StoreUnavailableLayer};
pub use tessera_core;
// What an app needs to build the store, so this crate is its only tessera dependency.
pub use tessera_core::{
    DeviceSession, Error, Key, RedisOptions, SessionConfig, SessionConfigBuilder, SessionManager,
    Store,
};

use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tessera_core::adapter::{Loaded, ManagerExt as _, Records, StoredRecord, TakeOver, Wrote};
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

    /// The records handle for the request being served: with its client when a
    /// [`DeviceInfoLayer`] wraps it.
    fn records(&self) -> std::borrow::Cow<'_, Records> {
        match device::client() {
            Some(c) => std::borrow::Cow::Owned(self.records.with_client(c)),
            None => std::borrow::Cow::Borrowed(&self.records),
        }
    }

    /// The sessions of `user_id` for a device list, the one of the request's `session`
    /// marked [`current`](tessera_core::DeviceSession::current) (tessera's own adapters mark
    /// it the same way).
    ///
    /// ```
    /// # use tessera_tower_sessions::TesseraStore;
    /// # async fn demo(store: TesseraStore, session: tower_sessions::Session) -> tessera_core::Result<()> {
    /// for device in store.list_sessions(&session, "ada").await? {
    ///     let this = if device.current { " (this device)" } else { "" };
    ///     println!("{}{this}", device.user_agent.as_deref().unwrap_or("unknown"));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_sessions(
        &self,
        session: &Session,
        user_id: impl std::fmt::Display,
    ) -> tessera_core::Result<Vec<tessera_core::DeviceSession>> {
        let mut list = self.manager.list_sessions(user_id).await.map_err(noted)?;
        if let Some(id) = session.id() {
            let own = self.handle(&id);
            for d in &mut list {
                d.current = d.handle == own;
            }
        }
        Ok(list)
    }

    /// Ends one of `user_id`'s sessions by its [`handle`](tessera_core::DeviceSession::handle)
    /// (from [`list_sessions`](Self::list_sessions)); `false` if it is not one of theirs. As
    /// [`SessionManager::revoke`], with a store failure noted for [`StoreUnavailableLayer`]
    /// (a `503`, not a bare `500`).
    ///
    /// ```
    /// # use tessera_tower_sessions::TesseraStore;
    /// # async fn demo(sessions: TesseraStore) -> Result<(), tessera_tower_sessions::Error> {
    /// let ended = sessions.revoke("ada", "the handle from the device list").await?;
    /// assert!(!ended, "not one of ada's sessions");
    /// # Ok(()) }
    /// ```
    pub async fn revoke(
        &self,
        user_id: impl std::fmt::Display,
        handle: &str,
    ) -> tessera_core::Result<bool> {
        self.manager.revoke(user_id, handle).await.map_err(noted)
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
    /// undecodable (nested deeper than [`MAX_RECORD_DEPTH`] included), expired, names another
    /// id or holds values tessera refuses is not taken over (and left alone): that user starts
    /// a new session.
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
                            .records()
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
        // For the log line only (a tracing field is computed when its event is logged).
        let session = || self.records.handle(&id.to_string());
        let record = match decode_record(raw) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(session = %session(), error = %e, "a tower-sessions-redis-store record could not be decoded: not taken over");
                return None;
            }
        };
        if record.id != *id || record.expiry_date <= OffsetDateTime::now_utc() {
            return None;
        }
        let user = self.user_of(&record.data);
        if let Err(e) = self.records.check(&record.data, user.as_deref()) {
            tracing::warn!(session = %session(), error = %e, "a tower-sessions-redis-store record holds values tessera refuses: not taken over");
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
    /// One nested too deep to take over is not: it is left to expire.
    fn is_legacy_record(id: &Id, raw: &[u8]) -> bool {
        decode_record(raw).is_ok_and(|r| r.id == *id)
    }
}

/// How deep a record of `tower-sessions-redis-store` may nest: the record (1) and its data
/// map (2) around values of 127 levels, the most serde_json, and so tessera, reads back (a
/// deeper value would come back as its text). The decoder's own limit, 1,024 levels, lets a
/// record of 1 KiB overflow a debug build's 2 MiB thread stack (somewhere between 500 and 700
/// levels): an abort of the process.
const MAX_RECORD_DEPTH: usize = 130;

/// `raw` as a record of `tower-sessions-redis-store` (MessagePack, as its `rmp_serde::to_vec`
/// wrote it), nested no deeper than [`MAX_RECORD_DEPTH`].
fn decode_record(raw: &[u8]) -> Result<Record, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(raw);
    de.set_max_depth(MAX_RECORD_DEPTH);
    serde::Deserialize::deserialize(&mut de)
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

/// A tessera error of a call outside tower-sessions' store interface, noted for
/// [`StoreUnavailableLayer`] when the store was unreachable (a `503`).
fn noted(e: tessera_core::Error) -> tessera_core::Error {
    if e.status_code() == 503 {
        status::note_unavailable(&e);
    }
    e
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
                .records()
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
            .records()
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

/// Property tests of [`TesseraStore::legacy_record`] and [`TesseraStore::is_legacy_record`]:
/// the bytes under a `tower-sessions-redis-store` key are untrusted (written by another app,
/// or by anyone with access to the store). Structure-aware: records as that store writes
/// them, the same bytes mutated, and arbitrary bytes.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::collection::{hash_map, vec};
    use proptest::prelude::*;
    use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm};
    use std::ops::Range;
    use std::sync::OnceLock;
    use tessera_core::{Key, SessionConfig, Store};
    use time::{PrimitiveDateTime, UtcOffset};

    /// `PROPTEST_CASES` cases per property: 10,000 in the test command (`.cargo/config.toml`),
    /// 1,000,000 under `scripts/fuzz.sh`.
    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            // ChaCha, the default, is most of a case's time in a debug build.
            rng_algorithm: RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        }
    }

    /// What [`TesseraStore::legacy_record`] answers.
    type Taken = Option<(Record, Option<String>)>;

    /// Small limits, so that generated records cross them often.
    const MAX_FIELDS: usize = 8;
    const MAX_VALUE_BYTES: usize = 256;
    /// Where axum-login keeps the user id.
    const USER_KEY: &str = "axum-login.data";

    /// The store under test: in memory (the decoders read no store), with the user where
    /// axum-login keeps it.
    fn store() -> &'static TesseraStore {
        static STORE: OnceLock<TesseraStore> = OnceLock::new();
        STORE.get_or_init(|| {
            let config = SessionConfig::builder(Key::generate())
                .max_fields(MAX_FIELDS)
                .max_value_bytes(MAX_VALUE_BYTES)
                .build()
                .unwrap();
            TesseraStore::new(SessionManager::new(Store::memory(), config))
                .user_id_at(USER_KEY, "/user_id")
                .migrate_redis_store(true)
        })
    }

    fn chars(c: impl Strategy<Value = char>, n: Range<usize>) -> impl Strategy<Value = String> {
        vec(c, n).prop_map(String::from_iter)
    }

    /// Any text: empty, ASCII, any Unicode (controls, U+001F, characters JSON escapes),
    /// reserved names (`__`, [`LOADED`]), JSON look-alikes, long.
    fn text() -> impl Strategy<Value = String> {
        let special = prop_oneof![
            Just('\0'),
            Just('\n'),
            Just('"'),
            Just('\\'),
            Just('\u{1f}'),
            Just('\u{7f}'),
            Just('\u{2028}'),
            Just('é'),
            Just('\u{1F600}'),
            Just('\u{FFFF}'),
        ];
        let az = || proptest::char::range('a', 'z');
        prop_oneof![
            2 => Just(String::new()),
            1 => Just(LOADED.to_string()),
            4 => chars(az(), 1..8),
            2 => chars(az(), 0..6).prop_map(|s| format!("__{s}")),
            4 => chars(any::<char>(), 0..12),
            2 => chars(special.clone(), 1..6),
            1 => Just("null".to_string()),
            1 => Just("{\"a\":".to_string()),
            // Around the value limit, as itself or as JSON (escapes).
            1 => (250..270usize).prop_map(|n| "x".repeat(n)),
            1 => (special, 60..140usize).prop_map(|(c, n)| format!("a{}", c.to_string().repeat(n))),
        ]
    }

    /// A value's name: mostly one tessera accepts (any Unicode), sometimes any text.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => chars(proptest::char::range('a', 'z'), 1..8),
            4 => chars(any::<char>(), 0..12).prop_map(|s| format!("k{s}")),
            2 => text(),
        ]
    }

    /// Any JSON value: nested, huge and tiny numbers, Unicode, empty.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop_oneof![
                Just(u64::MAX as f64),
                Just(f64::MAX),
                Just(f64::MIN),
                Just(f64::MIN_POSITIVE),
                Just(5e-324),
                Just(-0.0),
                any::<f64>(),
            ]
            .prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
                .map(Value::Number)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                vec((text(), inner), 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The value at `/user_id` under [`USER_KEY`], with the user it names (valid for tessera
    /// or not: empty, too long, control characters, surrounding spaces, U+001F).
    fn user_value() -> impl Strategy<Value = (Value, Option<String>)> {
        let string = |s: String| (Value::String(s.clone()), Some(s));
        prop_oneof![
            4 => chars(proptest::char::range('a', 'z'), 1..10).prop_map(string),
            2 => text().prop_map(string),
            1 => prop_oneof![
                Just(String::new()),
                Just(" ada".to_string()),
                Just("ada\n".to_string()),
                Just("a\u{1f}b".to_string()),
                Just("a\u{7}b".to_string()),
                Just("a".repeat(512)),
                Just("a".repeat(513)),
            ]
            .prop_map(string),
            1 => any::<i64>().prop_map(|n| (Value::from(n), Some(n.to_string()))),
            1 => any::<u64>().prop_map(|n| (Value::from(n), Some(n.to_string()))),
            1 => any::<f64>().prop_filter_map("finite", |f| {
                let n = serde_json::Number::from_f64(f)?;
                Some((Value::Number(n.clone()), Some(n.to_string())))
            }),
            1 => prop_oneof![
                Just(Value::Null),
                Just(Value::Bool(true)),
                Just(serde_json::json!(["ada"])),
                Just(serde_json::json!({"id": 1})),
            ]
            .prop_map(|v| (v, None)),
        ]
    }

    /// A record's data (`entries` values besides the user's), with the user it names.
    fn data(
        entries: Range<usize>,
    ) -> impl Strategy<Value = (HashMap<String, Value>, Option<String>)> {
        (
            hash_map(name(), json(), entries),
            prop_oneof![
                // axum-login's shape, or a shape that names no user.
                3 => user_value().prop_map(|(v, u)| (Some(serde_json::json!({"user_id": v})), u)),
                1 => Just((None, None)),
                1 => Just((Some(serde_json::json!("user_id")), None)),
                1 => Just((Some(serde_json::json!({"id": "ada"})), None)),
            ],
        )
            .prop_map(|(mut data, (at, user))| {
                match at {
                    Some(v) => data.insert(USER_KEY.to_string(), v),
                    None => data.remove(USER_KEY),
                };
                (data, user)
            })
    }

    /// An expiry, and whether it is still ahead: minutes to a century away either side of
    /// now, the range's ends, the epoch; in any offset.
    fn expiry() -> impl Strategy<Value = (OffsetDateTime, bool)> {
        let offset = (-93_599..=93_599i32).prop_map(|s| UtcOffset::from_whole_seconds(s).unwrap());
        let century = 100 * 365 * 86_400i64;
        prop_oneof![
            5 => (60..century, 0..1_000_000_000i64, offset.clone()).prop_map(|(s, ns, o)| {
                let t = OffsetDateTime::now_utc()
                    + time::Duration::seconds(s)
                    + time::Duration::nanoseconds(ns);
                (t.to_offset(o), true)
            }),
            3 => (1..century, offset.clone()).prop_map(|(s, o)| {
                ((OffsetDateTime::now_utc() - time::Duration::seconds(s)).to_offset(o), false)
            }),
            1 => offset.clone().prop_map(|o| (PrimitiveDateTime::MAX.assume_offset(o), true)),
            1 => offset.prop_map(|o| (PrimitiveDateTime::MIN.assume_offset(o), false)),
            1 => Just((OffsetDateTime::UNIX_EPOCH, false)),
        ]
    }

    /// The id the request asks for, and the record's: the same, or another.
    fn ids() -> impl Strategy<Value = (Id, Id)> {
        (any::<i128>(), prop_oneof![3 => Just(0), 1 => any::<i128>()])
            .prop_map(|(a, x)| (Id(a), Id(a ^ x)))
    }

    /// A record as `tower-sessions-redis-store` writes it (`rmp_serde::to_vec`; or with field
    /// names, which the decoder reads too), the id asked for, the user it names, whether it is
    /// live, and its bytes.
    #[derive(Debug, Clone)]
    struct Written {
        asked: Id,
        record: Record,
        user: Option<String>,
        live: bool,
        raw: Vec<u8>,
    }

    fn written(entries: Range<usize>) -> impl Strategy<Value = Written> {
        (ids(), data(entries), expiry(), any::<bool>()).prop_map(
            |((asked, id), (data, user), (expiry_date, live), named)| {
                let record = Record {
                    id,
                    data,
                    expiry_date,
                };
                let raw = if named {
                    rmp_serde::to_vec_named(&record).unwrap()
                } else {
                    rmp_serde::to_vec(&record).unwrap()
                };
                Written {
                    asked,
                    record,
                    user,
                    live,
                    raw,
                }
            },
        )
    }

    /// One change to valid bytes.
    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Truncate(usize),
        Append(Vec<u8>),
        Insert(usize, Vec<u8>),
        Remove(usize, usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
            any::<usize>().prop_map(Mutation::Truncate),
            vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
            (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
            (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        ]
    }

    /// `raw` with the mutations applied in turn (positions taken modulo the length).
    fn mutate(mut raw: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
        for m in ms {
            let at = |i: usize, len: usize| i % (len + 1);
            match m {
                Mutation::Flip(i, x) if !raw.is_empty() => {
                    let n = raw.len();
                    raw[i % n] ^= x;
                }
                Mutation::Flip(..) => {}
                Mutation::Truncate(i) => raw.truncate(at(*i, raw.len())),
                Mutation::Append(b) => raw.extend_from_slice(b),
                Mutation::Insert(i, b) => {
                    let i = at(*i, raw.len());
                    raw.splice(i..i, b.iter().copied());
                }
                Mutation::Remove(i, n) => {
                    let i = at(*i, raw.len());
                    let end = (i + n).min(raw.len());
                    raw.drain(i..end);
                }
            }
        }
        raw
    }

    /// A record (as `rmp_serde::to_vec` lays it out: `[id, data, expiry]`) whose data map
    /// is `pairs`, repeated keys and all; `claimed`: the map's length as its header says.
    fn record_bytes(
        id: Id,
        pairs: &[(String, Value)],
        claimed: u32,
        expiry: OffsetDateTime,
    ) -> Vec<u8> {
        let mut raw = vec![0x93];
        raw.extend(rmp_serde::to_vec(&id).unwrap());
        raw.push(0xdf);
        raw.extend(claimed.to_be_bytes());
        for (k, v) in pairs {
            raw.extend(rmp_serde::to_vec(k).unwrap());
            raw.extend(rmp_serde::to_vec(v).unwrap());
        }
        raw.extend(rmp_serde::to_vec(&expiry).unwrap());
        raw
    }

    /// Bytes from anywhere: random, random after a record's header, lengths that claim
    /// gigabytes (map, array, string, binary), nesting past the decoder's depth limit.
    fn hostile() -> impl Strategy<Value = Vec<u8>> {
        let future = || OffsetDateTime::now_utc() + time::Duration::days(1);
        let huge = proptest::sample::select(vec![
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],
            vec![0xdf, 0xff, 0xff, 0xff, 0xff],
            vec![0xdb, 0xff, 0xff, 0xff, 0xff],
            vec![0xc6, 0xff, 0xff, 0xff, 0xff],
            vec![0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
        ]);
        prop_oneof![
            vec(any::<u8>(), 0..256),
            vec(any::<u8>(), 0..64).prop_map(|tail| [&[0x93][..], &tail].concat()),
            // A record whose data map claims 4 billion entries and holds a few.
            (any::<i128>(), vec((text(), json()), 0..4))
                .prop_map(move |(id, pairs)| { record_bytes(Id(id), &pairs, u32::MAX, future()) }),
            // A huge length anywhere in a valid record.
            (any::<usize>(), huge, vec(any::<u8>(), 0..8)).prop_map(move |(at, h, tail)| {
                let record = Record {
                    id: Id(1),
                    data: HashMap::from([("a".to_string(), Value::Null)]),
                    expiry_date: future(),
                };
                let mut raw = rmp_serde::to_vec(&record).unwrap();
                let at = at % (raw.len() + 1);
                raw.splice(at.., h.into_iter().chain(tail));
                raw
            }),
            // {"a": [[[…]]]}, within the decoder's depth limit or past it.
            (1..3_000usize).prop_map(move |depth| {
                let mut raw = vec![0x93];
                raw.extend(rmp_serde::to_vec(&Id(1)).unwrap());
                raw.extend([0x81, 0xa1, b'a']);
                raw.extend(std::iter::repeat_n(0x91, depth));
                raw.push(0xc0);
                raw.extend(rmp_serde::to_vec(&future()).unwrap());
                raw
            }),
        ]
    }

    /// What holds of every decode, whatever the bytes: no panic (the caller of this), a
    /// record only for the id asked, live, with values tessera accepts and the user they
    /// name, and no larger than the input encodes. The decode, and whether the bytes are a
    /// record for that id.
    fn check_any(asked: &Id, raw: &[u8]) -> Result<(Taken, bool), TestCaseError> {
        let store = store();
        let out = store.legacy_record(asked, raw);
        let is = TesseraStore::is_legacy_record(asked, raw);
        let Some((record, user)) = &out else {
            return Ok((out, is));
        };
        prop_assert!(is, "taken over, so deletable");
        prop_assert_eq!(record.id, *asked);
        prop_assert!(record.expiry_date > OffsetDateTime::now_utc());
        prop_assert_eq!(user, &store.user_of(&record.data));
        prop_assert!(store.records.check(&record.data, user.as_deref()).is_ok());
        // Each entry is 2 bytes at least (`a0 c0`: "" and nil); each input byte writes 6 of
        // JSON at most (a control character in a string: `\u0001`).
        prop_assert!(record.data.len() * 2 <= raw.len());
        let bytes: usize = record
            .data
            .iter()
            .map(|(k, v)| k.len() + v.to_string().len())
            .sum();
        prop_assert!(bytes <= 6 * raw.len(), "{bytes} bytes out of {}", raw.len());
        Ok((out, is))
    }

    /// Whether tessera refuses `data` with `user` for certain, by its documented limits:
    /// too many fields, a reserved (`__`), empty or too long name, a value too large, a user
    /// id that is empty, too long or holds control characters.
    fn surely_refused(data: &HashMap<String, Value>, user: Option<&str>) -> bool {
        let bad_user = user.is_some_and(|u| {
            u.is_empty() || u.len() > 512 || u.chars().any(|c| c == '\u{1f}' || c == '\u{7}')
        });
        data.len() > MAX_FIELDS
            || bad_user
            || data.iter().any(|(k, v)| {
                k.is_empty()
                    || k.starts_with("__")
                    || k.len() > 256
                    || stored_at_least(v) > MAX_VALUE_BYTES
            })
    }

    /// The fewest bytes tessera can store `v` in: a string as itself (when it is not JSON
    /// text), anything else as its JSON.
    fn stored_at_least(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            v => v.to_string().len(),
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn valid_records_decode_to_exactly_their_data_and_user(w in written(0..9)) {
            let (out, is) = check_any(&w.asked, &w.raw)?;
            let store = store();
            let ours = w.record.id == w.asked;
            prop_assert_eq!(is, ours);
            let accepted = store.records.check(&w.record.data, w.user.as_deref()).is_ok();
            if surely_refused(&w.record.data, w.user.as_deref()) {
                prop_assert!(!accepted);
            }
            let expected = (ours && w.live && accepted).then(|| (w.record.clone(), w.user.clone()));
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn mutated_records_never_panic_and_stay_sound(
            w in written(0..9),
            ms in vec(mutation(), 1..4),
        ) {
            check_any(&w.asked, &mutate(w.raw, &ms))?;
        }

        #[test]
        fn every_truncation_is_refused(w in written(0..2)) {
            for n in 0..w.raw.len() {
                let (out, is) = check_any(&w.asked, &w.raw[..n])?;
                prop_assert!(out.is_none() && !is, "a prefix of {} bytes: {n}", w.raw.len());
            }
        }

        #[test]
        fn duplicated_keys_keep_the_last_value(
            (asked, id) in ids(),
            pairs in vec((prop_oneof![Just("a"), Just("b")], json()), 1..6),
            (expiry_date, live) in expiry(),
        ) {
            let pairs: Vec<(String, Value)> =
                pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let raw = record_bytes(id, &pairs, pairs.len() as u32, expiry_date);
            let (out, _) = check_any(&asked, &raw)?;
            let data: HashMap<String, Value> = pairs.into_iter().collect();
            let store = store();
            let accepted = store.records.check(&data, None).is_ok();
            let record = Record { id, data, expiry_date };
            let expected = (id == asked && live && accepted).then_some((record, None));
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in hostile(), asked in any::<i128>()) {
            check_any(&Id(asked), &raw)?;
            check_any(&Id(1), &raw)?;
        }
    }

    /// A value nested as deep as tessera reads back (127 levels) is taken over, and loads
    /// back the same; one level more is refused, and so is a record far past the decoder's
    /// own limit, without overflowing the stack of a debug build's test thread.
    #[tokio::test]
    async fn nesting_past_what_tessera_reads_back_is_refused() {
        let config = SessionConfig::builder(Key::generate()).build().unwrap();
        let store = TesseraStore::new(SessionManager::new(Store::memory(), config));
        let nested = |depth: usize| {
            let mut v = Value::Null;
            for _ in 0..depth {
                v = Value::Array(vec![v]);
            }
            v
        };
        let id = Id(7);
        let record = |depth: usize| Record {
            id,
            data: HashMap::from([("a".to_string(), nested(depth))]),
            expiry_date: OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        let deepest = record(127);
        let (taken, _) = store
            .legacy_record(&id, &rmp_serde::to_vec(&deepest).unwrap())
            .unwrap();
        let key = id.to_string();
        let expires = system_time(taken.expiry_date);
        assert!(store
            .records
            .create(&key, &taken.data, None, expires)
            .await
            .unwrap());
        assert_eq!(
            store.records.load(&key).await.unwrap().unwrap().data,
            deepest.data
        );
        for depth in [128, 1_000, 1_100, 100_000] {
            // Written by hand past 128: the encoder nests on the stack as well.
            let mut raw = vec![0x93];
            raw.extend(rmp_serde::to_vec(&id).unwrap());
            raw.extend([0x81, 0xa1, b'a']);
            raw.extend(std::iter::repeat_n(0x91, depth));
            raw.push(0xc0);
            raw.extend(rmp_serde::to_vec(&deepest.expiry_date).unwrap());
            assert!(store.legacy_record(&id, &raw).is_none(), "{depth}");
            assert!(!TesseraStore::is_legacy_record(&id, &raw), "{depth}");
        }
    }

    /// A record tessera accepts but for one refused value: never taken over.
    #[test]
    fn refused_values_are_not_taken_over() {
        let store = store();
        let id = Id(7);
        let live = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let user = |u: Value| (USER_KEY.to_string(), serde_json::json!({ "user_id": u }));
        let ok = || {
            HashMap::from([
                ("cart".to_string(), serde_json::json!([1, 2])),
                user("ada".into()),
            ])
        };
        let take = |data: HashMap<String, Value>| {
            let record = Record {
                id,
                data,
                expiry_date: live,
            };
            store.legacy_record(&id, &rmp_serde::to_vec(&record).unwrap())
        };
        assert_eq!(take(ok()).unwrap().1.as_deref(), Some("ada"));
        let long = "x".repeat(257);
        let refused: Vec<(&str, Value)> = vec![
            ("", Value::Null),
            ("__c", Value::Null),
            (LOADED, serde_json::json!({})),
            (&long, Value::Null),
            ("big", Value::String("x".repeat(MAX_VALUE_BYTES + 1))),
        ];
        for (k, v) in refused {
            let mut data = ok();
            data.insert(k.to_string(), v);
            assert!(take(data).is_none(), "{k:.20}");
        }
        let mut many = ok();
        many.extend((0..MAX_FIELDS).map(|i| (i.to_string(), Value::Null)));
        assert!(take(many).is_none());
        for u in ["", " ada", "a\u{1f}b", "a\u{0}b", &"a".repeat(513)] {
            let data = HashMap::from([user(u.into())]);
            assert!(take(data).is_none(), "{u:.20}");
        }
        // Another id, or expired: not taken over, whatever the values.
        let raw = rmp_serde::to_vec(&Record {
            id,
            data: ok(),
            expiry_date: live,
        })
        .unwrap();
        assert!(store.legacy_record(&Id(8), &raw).is_none());
        assert!(!TesseraStore::is_legacy_record(&Id(8), &raw));
        let old = Record {
            id,
            data: ok(),
            expiry_date: OffsetDateTime::now_utc(),
        };
        let raw = rmp_serde::to_vec(&old).unwrap();
        assert!(store.legacy_record(&id, &raw).is_none());
        assert!(
            TesseraStore::is_legacy_record(&id, &raw),
            "expired, still deletable"
        );
    }
}

/// The crate README's examples, compiled as doc tests (so the README cannot drift).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
