//! The session of one request, and the manager that starts and finishes it.

use crate::codec;
use crate::config::SessionConfig;
use crate::cookie::Verified;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::store::{fields, Mode, Store, Timing, WriteOp, WriteResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::Instrument as _;

/// Store plus configuration: what an adapter (axum layer, actix middleware) holds.
///
/// It turns a request's `Cookie` headers into a [`Session`] (no store command) and, once the
/// handler is done, [`Session::finish`] saves what changed and says which `Set-Cookie` to send.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tessera_core::{Key, SessionConfig, SessionManager, Store};
/// let manager = SessionManager::new(Store::memory(), SessionConfig::builder(Key::generate()).build().unwrap());
/// let session = manager.start(["theme=dark"]); // no session cookie: a new, empty session
/// session.insert("tenant", "acme").await.unwrap();
/// let outcome = session.finish().await;
/// assert!(outcome.error.is_none());
/// assert!(outcome.set_cookie.unwrap().starts_with("tessera="));
/// # }
/// ```
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    store: Store,
    config: SessionConfig,
    timing: Timing,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl SessionManager {
    /// A manager for `store` with `config`.
    pub fn new(store: Store, config: SessionConfig) -> Self {
        let ms = |d: std::time::Duration| d.as_millis().min(i64::MAX as u128) as u64;
        let timing = Timing {
            idle_ms: ms(config.idle_timeout),
            touch_ms: ms(config.touch_interval),
            absolute_ms: config.absolute_lifetime.map(ms).unwrap_or(0),
        };
        SessionManager {
            inner: Arc::new(ManagerInner {
                store,
                config,
                timing,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// Starts a request's session from the values of its `Cookie` headers.
    ///
    /// Only the signature is checked here: a missing, malformed, tampered or unknown-key cookie
    /// gives a new anonymous session and costs no store command. The store is read lazily, the
    /// first time the handler uses the session.
    pub fn start<'a>(&self, cookie_headers: impl IntoIterator<Item = &'a str>) -> Session {
        let name = self.inner.config.cookie_name();
        let verified = cookie_headers
            .into_iter()
            .flat_map(cookie::Cookie::split_parse)
            .filter_map(|c| c.ok())
            .filter(|c| c.name() == name)
            .find_map(|c| self.inner.config.signer.verify(name, c.value()));
        Session {
            inner: Arc::new(SessionInner {
                manager: self.clone(),
                state: Mutex::new(State::new(verified)),
            }),
        }
    }

    fn key_of(&self, id: &SessionId) -> String {
        self.inner.config.session_key(&id.storage_key())
    }
}

/// Where a request's session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not read yet (the handler has not used it).
    Unloaded,
    /// No record in the store: a new session (or one whose cookie pointed at nothing).
    New,
    /// A record exists in the store under `id`.
    Stored,
    /// Ended by this request (`destroy`); a later write starts a new session.
    Destroyed,
    /// Ended by someone else while this request ran.
    Ended,
}

struct State {
    cookie: Option<Verified>,
    id: Option<SessionId>,
    status: Status,
    data: HashMap<String, Vec<u8>>,
    dirty: BTreeMap<String, Option<String>>,
    /// Send the cookie again (new id, stale signing key, sliding persistent cookie).
    reissue: bool,
    /// The browser's cookie points at nothing: tell it to drop the cookie.
    clear: bool,
    failure: Option<Error>,
}

impl State {
    fn new(cookie: Option<Verified>) -> Self {
        State {
            reissue: cookie.as_ref().is_some_and(|c| c.stale_key),
            id: cookie.as_ref().map(|c| c.id.clone()),
            cookie,
            status: Status::Unloaded,
            data: HashMap::new(),
            dirty: BTreeMap::new(),
            clear: false,
            failure: None,
        }
    }
}

/// What [`Session::finish`] decided: the `Set-Cookie` value to send, if any, and the error
/// that must replace the handler's response, if any (see [`Error::status_code`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// A full `Set-Cookie` header value.
    pub set_cookie: Option<String>,
    /// A failure to report instead of the handler's response: store unavailable (503), store
    /// error (500), or the session ended meanwhile so the changes were not saved (409).
    pub error: Option<Error>,
}

/// One request's session: a cheap handle (clone it freely) over lazily loaded state.
///
/// Fields are typed: any serde value goes in with [`insert`](Session::insert) and comes back
/// with [`get`](Session::get). Only the fields that changed are written, at the end of the
/// request, in one round trip.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    manager: SessionManager,
    state: Mutex<State>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Session { .. }")
    }
}

fn check_field(field: &str) -> Result<()> {
    if field.is_empty() || field.starts_with("__") {
        Err(Error::ReservedField(field.to_string()))
    } else {
        Ok(())
    }
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

    /// Records a store failure so the adapter reports it (503/500) whatever the handler does.
    fn failed<T>(st: &mut State, e: Error) -> Result<T> {
        if e.is_store_failure() || matches!(e, Error::SessionEnded) {
            tracing::warn!(sid = %tag(st.id.as_ref()), error = %e, cause = ?std::error::Error::source(&e), "session store operation failed");
            st.failure.get_or_insert_with(|| e.clone());
        }
        Err(e)
    }

    async fn ensure_loaded(&self, st: &mut State) -> Result<()> {
        if st.status != Status::Unloaded {
            return Ok(());
        }
        let Some(id) = st.id.clone() else {
            st.status = Status::New;
            return Ok(());
        };
        let key = self.mgr().key_of(&id);
        let span = tracing::debug_span!("tessera.load", sid = %id.log_tag(), commands = 1, found = tracing::field::Empty, touched = tracing::field::Empty);
        let res = self
            .store()
            .load(&key, self.timing())
            .instrument(span.clone())
            .await;
        match res {
            Err(e) => Self::failed(st, e),
            Ok(None) => {
                span.record("found", false);
                // The cookie points at an expired or ended session. Never adopt a
                // client-supplied id: a new session gets a new one.
                st.status = Status::New;
                st.id = None;
                st.clear = true;
                st.reissue = false;
                Ok(())
            }
            Ok(Some(loaded)) => {
                span.record("found", true);
                span.record("touched", loaded.touched);
                st.status = Status::Stored;
                st.data = loaded.fields;
                if loaded.touched && self.mgr().inner.config.cookie.persistent {
                    st.reissue = true;
                }
                Ok(())
            }
        }
    }

    /// Loads the session now if it was not yet (otherwise a no-op). Handlers rarely need this:
    /// every accessor loads on first use.
    pub async fn load(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await
    }

    /// The value of a user field, decoded as `T`; `None` if absent.
    ///
    /// A field that does not decode as `T` (say, written by another application) is
    /// [`Error::Decode`], never a panic.
    pub async fn get<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>> {
        check_field(field)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        st.data
            .get(field)
            .map(|raw| codec::decode(field, raw))
            .transpose()
    }

    /// Sets a user field (written at the end of the request, with the other changes).
    pub async fn insert<T: Serialize + ?Sized>(&self, field: &str, value: &T) -> Result<()> {
        check_field(field)?;
        let encoded = codec::encode(value)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        st.data
            .insert(field.to_string(), encoded.clone().into_bytes());
        st.dirty.insert(field.to_string(), Some(encoded));
        Ok(())
    }

    /// Removes a user field. Returns whether it was there.
    pub async fn remove(&self, field: &str) -> Result<bool> {
        check_field(field)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let was = st.data.remove(field).is_some();
        if st.status == Status::Stored {
            st.dirty.insert(field.to_string(), None);
        } else {
            st.dirty.remove(field);
        }
        Ok(was)
    }

    /// All user fields, each decoded as JSON (a plain-text field becomes a JSON string).
    pub async fn entries(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let mut out = serde_json::Map::new();
        let mut names: Vec<&String> = st.data.keys().filter(|k| !k.starts_with("__")).collect();
        names.sort();
        for k in names {
            let v = codec::decode_value(&st.data[k]).map_err(|e| Error::Decode {
                field: k.clone(),
                source: Arc::new(e),
            })?;
            out.insert(k.clone(), v);
        }
        Ok(out)
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
        Ok(st
            .data
            .get(fields::USER)
            .map(|v| String::from_utf8_lossy(v).into_owned()))
    }

    /// Creation time, for a stored session.
    pub async fn created_at(&self) -> Result<Option<std::time::SystemTime>> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st
            .data
            .get(fields::CREATED)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
            .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)))
    }

    /// Adds `by` to an integer field at once (HINCRBY) and returns the new value; concurrent
    /// increments never lose an update. Pending changes are written in the same round trip.
    pub async fn increment(&self, field: &str, by: i64) -> Result<i64> {
        check_field(field)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let res = self.write_now(&mut st, Some((field, by))).await?;
        st.data
            .insert(field.to_string(), res.to_string().into_bytes());
        Ok(res)
    }

    /// Writes the pending changes (and an optional increment) now, creating the record if the
    /// session is new. Returns the increment's result.
    async fn write_now(&self, st: &mut State, incr: Option<(&str, i64)>) -> Result<i64> {
        if st.status == Status::Ended {
            return Err(Error::SessionEnded);
        }
        let t = self.timing();
        let creating = st.status != Status::Stored;
        for _attempt in 0..3 {
            if creating && st.id.is_none() {
                st.id = Some(SessionId::generate());
            }
            let id = st.id.clone().expect("set above");
            let key = self.mgr().key_of(&id);
            let op = WriteOp {
                mode: if creating {
                    Mode::Create { created_ms: 0 }
                } else {
                    Mode::Update
                },
                set: st
                    .dirty
                    .iter()
                    .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v)))
                    .collect(),
                del: if creating {
                    Vec::new()
                } else {
                    st.dirty
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(k, _)| k.as_str())
                        .collect()
                },
                incr,
            };
            let span = tracing::debug_span!("tessera.save", sid = %id.log_tag(), commands = 1, fields = op.set.len() + op.del.len(), create = creating);
            let res = self.store().write(&key, &op, t).instrument(span).await;
            match res {
                Err(e) => return Self::failed(st, e),
                Ok(WriteResult::Written { incr }) => {
                    st.dirty.clear();
                    if creating {
                        st.status = Status::Stored;
                        st.reissue = true;
                        st.clear = false;
                    }
                    return Ok(incr);
                }
                Ok(WriteResult::Gone) => {
                    st.status = Status::Ended;
                    st.dirty.clear();
                    st.clear = true;
                    return Self::failed(st, Error::SessionEnded);
                }
                Ok(WriteResult::NotAnInteger) => {
                    return Err(Error::NotAnInteger(incr.map(|i| i.0).unwrap_or("").into()))
                }
                Ok(WriteResult::Exists) => {
                    // 128-bit id collision: astronomically unlikely; draw again.
                    st.id = None;
                }
            }
        }
        Self::failed(
            st,
            Error::Store(fred::error::Error::new(
                fred::error::ErrorKind::Unknown,
                "could not find a free session id",
            )),
        )
    }

    /// Binds the session to `user_id` and moves it to a new id (defence against session
    /// fixation). The new cookie is sent with the response.
    pub async fn login(&self, user_id: &str) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        st.data
            .insert(fields::USER.into(), user_id.as_bytes().to_vec());
        st.dirty
            .insert(fields::USER.into(), Some(user_id.to_string()));
        self.cycle_locked(&mut st).await
    }

    /// Moves the session to a new id: the data is copied to the new key, then the old key is
    /// deleted (two single-key steps, no RENAME, so it works on Redis Cluster). If the old
    /// session was ended meanwhile, the copy is removed again and [`Error::SessionEnded`] returned.
    pub async fn cycle_id(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        self.cycle_locked(&mut st).await
    }

    async fn cycle_locked(&self, st: &mut State) -> Result<()> {
        if st.status != Status::Stored {
            // Nothing stored yet: the record is created under a fresh id when it is saved.
            st.id = None;
            if st.status == Status::Ended {
                return Err(Error::SessionEnded);
            }
            return Ok(());
        }
        let old_id = st.id.clone().expect("stored sessions have an id");
        let created: u64 = st
            .data
            .get(fields::CREATED)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        // The new record gets everything (data already includes the pending changes).
        let all: Vec<(String, String)> = st
            .data
            .iter()
            .filter(|(k, _)| k.as_str() != fields::CREATED && k.as_str() != fields::TOUCHED)
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let t = self.timing();
        let mut new_id = SessionId::generate();
        let mut tries = 0;
        loop {
            let op = WriteOp {
                mode: Mode::Create {
                    created_ms: created,
                },
                set: all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                del: Vec::new(),
                incr: None,
            };
            let key = self.mgr().key_of(&new_id);
            let span = tracing::debug_span!("tessera.cycle", sid = %old_id.log_tag(), new_sid = %new_id.log_tag(), commands = 2);
            match self.store().write(&key, &op, t).instrument(span).await {
                Err(e) => return Self::failed(st, e),
                Ok(WriteResult::Written { .. }) => break,
                Ok(WriteResult::Exists) if tries < 3 => {
                    tries += 1;
                    new_id = SessionId::generate();
                }
                Ok(WriteResult::Gone) => {
                    // Absolute lifetime over.
                    st.status = Status::Ended;
                    st.clear = true;
                    return Self::failed(st, Error::SessionEnded);
                }
                Ok(other) => {
                    return Self::failed(
                        st,
                        Error::Store(fred::error::Error::new(
                            fred::error::ErrorKind::Unknown,
                            format!("id rotation failed: {other:?}"),
                        )),
                    )
                }
            }
        }
        let old_key = self.mgr().key_of(&old_id);
        let new_key = self.mgr().key_of(&new_id);
        if let Err(e) = self.store().delete(&old_key).await {
            // The old key stays until its TTL; remove the copy so no second live session exists.
            let _ = self.store().delete(&new_key).await;
            return Self::failed(st, e);
        }
        st.id = Some(new_id);
        st.dirty.clear();
        st.reissue = true;
        st.clear = false;
        Ok(())
    }

    /// Ends the session: deletes its record at once and clears the cookie. A later write in
    /// the same request starts a new session under a new id.
    pub async fn destroy(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        let id = st.id.take();
        if let (Some(id), true) = (&id, st.status != Status::New) {
            let key = self.mgr().key_of(id);
            let span = tracing::debug_span!("tessera.destroy", sid = %id.log_tag(), commands = 1);
            if let Err(e) = self.store().delete(&key).instrument(span).await {
                st.id = Some(id.clone());
                return Self::failed(&mut st, e);
            }
        }
        st.status = Status::Destroyed;
        st.data.clear();
        st.dirty.clear();
        st.reissue = false;
        st.clear = st.cookie.is_some();
        Ok(())
    }

    /// Ends the request: writes what changed (in one round trip) and says what cookie to send.
    /// Adapters call this once, after the handler.
    pub async fn finish(&self) -> Outcome {
        let mut st = self.inner.state.lock().await;
        let config = &self.mgr().inner.config;
        if st.failure.is_none() && !st.dirty.is_empty() {
            if st.status == Status::Ended {
                st.failure = Some(Error::SessionEnded);
            } else {
                // Errors are recorded in st.failure by write_now.
                let _ = self.write_now(&mut st, None).await;
            }
        }
        let set_cookie = match (&st.id, st.status) {
            (Some(id), Status::Stored | Status::Unloaded) if st.reissue => {
                Some(config.cookie.set_header(
                    config.signer.sign(config.cookie_name(), id),
                    config.idle_timeout,
                ))
            }
            (_, Status::Ended) => Some(config.cookie.removal_header()),
            (_, Status::New | Status::Destroyed) if st.clear => {
                Some(config.cookie.removal_header())
            }
            _ => None,
        };
        Outcome {
            set_cookie,
            error: st.failure.take(),
        }
    }
}
