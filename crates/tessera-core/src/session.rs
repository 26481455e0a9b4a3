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
    touches: TouchLog,
}

/// What this process has seen of each session's last TTL refresh (server ms), keyed by a
/// 64-bit hash of the storage key. Refresh times only move forward, so "seen refreshed less
/// than a touch interval ago" is never wrong in the dangerous direction: such a load needs no
/// refresh and can be a plain `HGETALL` instead of the refresh script.
///
/// Bounded with two generations: when the current map reaches `TOUCH_LOG_CAP` entries it
/// becomes the previous one (the older previous one is dropped), so recently seen sessions
/// stay known; at most 2 x `TOUCH_LOG_CAP` entries, about 5 MB. Forgetting costs only a script
/// load, never correctness.
struct TouchLog {
    maps: std::sync::Mutex<[HashMap<u64, u64>; 2]>,
}

const TOUCH_LOG_CAP: usize = 100_000;

impl TouchLog {
    fn new() -> Self {
        TouchLog {
            maps: std::sync::Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }

    fn slot(key: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    fn note(&self, key: &str, at_ms: u64) {
        let slot = Self::slot(key);
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let known = m[1].get(&slot).copied().unwrap_or(0);
        if m[0].len() >= TOUCH_LOG_CAP && !m[0].contains_key(&slot) {
            m[1] = std::mem::take(&mut m[0]);
        }
        let e = m[0].entry(slot).or_insert(at_ms);
        *e = (*e).max(at_ms).max(known);
    }

    /// Refreshed less than `touch_ms` ago, with a margin for clock skew between app and server.
    fn fresh(&self, key: &str, touch_ms: u64) -> bool {
        let margin = (touch_ms / 10).min(1000);
        let slot = Self::slot(key);
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let seen = m[0].get(&slot).or_else(|| m[1].get(&slot));
        seen.is_some_and(|&t| crate::store::now_ms().saturating_sub(t) + margin < touch_ms)
    }
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .finish()
    }
}

#[cfg(test)]
mod touch_log_tests {
    use super::*;

    #[test]
    fn recent_knowledge_survives_a_full_generation() {
        let log = TouchLog::new();
        let now = crate::store::now_ms();
        log.note("hot", now);
        for i in 0..TOUCH_LOG_CAP + 10 {
            log.note(&format!("k{i}"), now);
        }
        assert!(
            log.fresh("hot", 60_000),
            "one generation back is still known"
        );
        assert!(!log.fresh("never-seen", 60_000));
        log.note("old", now - 120_000);
        assert!(!log.fresh("old", 60_000), "seen refreshed too long ago");
        let sizes = {
            let m = log.maps.lock().unwrap();
            m[0].len() + m[1].len()
        };
        assert!(sizes <= 2 * TOUCH_LOG_CAP, "bounded: {sizes}");
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
                touches: TouchLog::new(),
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
        self.start_with(cookie_headers, ClientInfo::default())
    }

    /// Like [`start`](SessionManager::start), with what the adapter knows about the client
    /// (recorded at login for device lists).
    pub fn start_with<'a>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'a str>,
        client: ClientInfo,
    ) -> Session {
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
                state: Mutex::new(State::new(verified, client)),
            }),
        }
    }

    fn key_of(&self, id: &SessionId) -> String {
        self.inner.config.session_key(&id.storage_key())
    }

    /// How far past now a user-index member's bound reaches: twice the idle timeout (capped
    /// by the absolute lifetime). A session's TTL only moves in the load's throttled touch,
    /// which then refreshes its member, so the bound always covers the session's expiry.
    fn index_bound_ms(&self) -> u64 {
        let t = self.inner.timing;
        let b = t.idle_ms.saturating_mul(2);
        if t.absolute_ms > 0 {
            b.min(t.absolute_ms)
        } else {
            b
        }
    }

    /// Ends the given sessions of a user: deletes each session key, then removes from the
    /// index the members whose key existed. A member whose key did not exist is left to
    /// expire by its bound: it may be a login still in flight, which must not be orphaned.
    async fn end_members(&self, user_id: &str, members: &[String]) -> Result<usize> {
        if members.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.inner.config.session_key(m))
            .collect();
        let existed = self.inner.store.delete_many(&keys).await?;
        let ended: Vec<String> = members
            .iter()
            .zip(existed)
            .filter(|(_, e)| *e)
            .map(|(m, _)| m.clone())
            .collect();
        self.inner
            .store
            .index_remove(&self.inner.config.index_key(user_id), &ended)
            .await?;
        Ok(ended.len())
    }

    /// The members of `user_id`'s index whose bound has not passed.
    async fn members_of(&self, user_id: &str) -> Result<Vec<String>> {
        if user_id.is_empty() {
            return Err(Error::InvalidUserId);
        }
        self.inner
            .store
            .index_members(&self.inner.config.index_key(user_id))
            .await
    }

    /// Ends every session of `user_id` that exists when it starts (logout everywhere).
    /// Costs O(sessions of that user): one index read, one pipelined round trip of `DEL`s, one
    /// `ZREM`; no key scan. Returns how many sessions it ended.
    pub async fn logout_all(&self, user_id: &str) -> Result<usize> {
        self.logout_all_except(user_id, None).await
    }

    async fn logout_all_except(&self, user_id: &str, keep: Option<&str>) -> Result<usize> {
        let span = tracing::debug_span!("tessera.logout_all");
        async {
            let mut members = self.members_of(user_id).await?;
            members.retain(|m| Some(m.as_str()) != keep);
            self.end_members(user_id, &members).await
        }
        .instrument(span)
        .await
    }

    /// The live sessions of `user_id`, most recently used first. Costs one index read and one
    /// pipelined round trip of `HMGET`s.
    pub async fn list_sessions(&self, user_id: &str) -> Result<Vec<DeviceSession>> {
        self.list_sessions_marking(user_id, None).await
    }

    async fn list_sessions_marking(
        &self,
        user_id: &str,
        current: Option<&str>,
    ) -> Result<Vec<DeviceSession>> {
        let members = self.members_of(user_id).await?;
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.inner.config.session_key(m))
            .collect();
        let names = [
            fields::TOUCHED,
            fields::USER,
            fields::USER_AGENT,
            fields::CLIENT_ADDR,
            fields::CREATED,
        ];
        let rows = self.inner.store.peek_many(&keys, &names).await?;
        let mut out: Vec<DeviceSession> = members
            .iter()
            .zip(rows)
            .filter_map(|(m, row)| {
                let row = row?;
                let text = |i: usize| {
                    row[i]
                        .as_ref()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                if text(1).as_deref() != Some(user_id) {
                    return None; // not (or no longer) this user's session
                }
                let ms = |i: usize| text(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
                Some(DeviceSession {
                    handle: handle_of(m),
                    created_at: std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms(4)),
                    last_seen: std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms(0)),
                    user_agent: text(2),
                    client_addr: text(3),
                    current: Some(m.as_str()) == current,
                })
            })
            .collect();
        out.sort_by_key(|d| std::cmp::Reverse(d.last_seen));
        Ok(out)
    }

    /// Ends one session of `user_id`, named by its [`DeviceSession::handle`]. Returns `false`
    /// when the handle is not one of that user's live sessions (so a user can never end
    /// another user's session).
    pub async fn revoke(&self, user_id: &str, handle: &str) -> Result<bool> {
        let members = self.members_of(user_id).await?;
        let Some(m) = members.into_iter().find(|m| handle_of(m) == handle) else {
            return Ok(false);
        };
        Ok(self.end_members(user_id, std::slice::from_ref(&m)).await? == 1)
    }
}

/// The opaque handle shown to clients for a session: derived one way from the storage key,
/// which is itself derived one way from the id, so a device list hands out nothing usable.
fn handle_of(member: &str) -> String {
    use base64::Engine as _;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tessera.handle\0");
    ctx.update(member.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ctx.finish().as_ref()[..12])
}

/// What an adapter knows about the client of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The client's address, as the app sees it.
    pub client_addr: Option<String>,
}

impl ClientInfo {
    /// From a raw `User-Agent` header (kept to 256 characters) and the peer address.
    pub fn new(user_agent: Option<&[u8]>, client_addr: Option<std::net::IpAddr>) -> Self {
        ClientInfo {
            user_agent: user_agent
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(|s| s.chars().take(256).collect()),
            client_addr: client_addr.map(|a| a.to_string()),
        }
    }
}

/// One of a user's sessions, as shown in a device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSession {
    /// Opaque handle for [`SessionManager::revoke`] (not the session id).
    pub handle: String,
    /// When the session was created.
    pub created_at: std::time::SystemTime,
    /// Its last TTL refresh (at touch-interval granularity).
    pub last_seen: std::time::SystemTime,
    /// The `User-Agent` recorded at login.
    pub user_agent: Option<String>,
    /// The client address recorded at login.
    pub client_addr: Option<String>,
    /// Whether this is the session of the request that asked.
    pub current: bool,
}

impl DeviceSession {
    /// As JSON: `{"handle", "created_at", "last_seen" (RFC 3339), "user_agent", "client_addr", "current"}`.
    pub fn to_json(&self) -> serde_json::Value {
        let rfc3339 = |t: std::time::SystemTime| {
            time::OffsetDateTime::from(t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        serde_json::json!({
            "handle": self.handle,
            "created_at": rfc3339(self.created_at),
            "last_seen": rfc3339(self.last_seen),
            "user_agent": self.user_agent,
            "client_addr": self.client_addr,
            "current": self.current,
        })
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
    client: ClientInfo,
    /// The user-index refresh started by a load that slid the TTL; awaited in `finish`.
    index_refresh: Vec<tokio::task::JoinHandle<Result<Vec<String>>>>,
}

fn user_of(data: &HashMap<String, Vec<u8>>) -> Option<String> {
    data.get(fields::USER)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl State {
    /// This request ended the session: forget it and clear the cookie; a later write in the
    /// same request starts a new session under a new id.
    fn destroyed(&mut self) {
        self.status = Status::Destroyed;
        self.id = None;
        self.data.clear();
        self.dirty.clear();
        self.reissue = false;
        self.clear = self.cookie.is_some();
    }

    /// Someone else ended the session while this request ran: nothing more is written.
    fn ended(&mut self) {
        self.status = Status::Ended;
        self.dirty.clear();
        self.clear = true;
    }

    /// The cookie named no live session. Never adopt a client-supplied id: a new session gets
    /// a new one; the browser is told to drop the dead cookie unless a new one replaces it.
    fn no_such_session(&mut self) {
        self.status = Status::New;
        self.id = None;
        self.clear = true;
        self.reissue = false;
    }

    fn new(cookie: Option<Verified>, client: ClientInfo) -> Self {
        State {
            client,
            index_refresh: Vec::new(),
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
        let touches = &self.mgr().inner.touches;
        let known_fresh = touches.fresh(&key, self.timing().touch_ms);
        let span = tracing::debug_span!("tessera.load", sid = %id.log_tag(), commands = 1, plain = known_fresh, found = tracing::field::Empty, touched = tracing::field::Empty);
        let res = self
            .store()
            .load(&key, self.timing(), known_fresh)
            .instrument(span.clone())
            .await;
        match res {
            Err(e) => Self::failed(st, e),
            Ok(None) => {
                span.record("found", false);
                st.no_such_session();
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
                let seen = if loaded.touched {
                    crate::store::now_ms()
                } else {
                    st.data
                        .get(fields::TOUCHED)
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                        .unwrap_or(0)
                };
                touches.note(&key, seen);
                if loaded.touched {
                    let user = user_of(&st.data);
                    self.refresh_index(st, &id, user);
                }
                Ok(())
            }
        }
    }

    /// Bookkeeping after a write that may have slid the TTL.
    fn after_write(
        &self,
        st: &mut State,
        id: &SessionId,
        key: &str,
        touched: bool,
        user: Option<String>,
    ) {
        if touched {
            self.mgr().inner.touches.note(key, crate::store::now_ms());
            if self.mgr().inner.config.cookie.persistent {
                st.reissue = true;
            }
            self.refresh_index(st, id, user);
        }
    }

    /// After a TTL refresh of a logged-in session, moves its bound in the user's index too.
    /// It runs while the handler works and is awaited (errors included) before the response.
    fn refresh_index(&self, st: &mut State, id: &SessionId, user: Option<String>) {
        let Some(user) = user else { return };
        let store = self.store().clone();
        let index = self.mgr().inner.config.index_key(&user);
        let member = id.storage_key();
        let bound = self.mgr().index_bound_ms();
        st.index_refresh.push(tokio::spawn(async move {
            store.index_add(&index, &member, bound, 0).await
        }));
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
        if let (Status::Unloaded, Some(id)) = (st.status, st.id.clone()) {
            // Not loaded yet: one write script does the existence check, the increment and the
            // throttled TTL refresh, in one round trip, without reading the session.
            let key = self.mgr().key_of(&id);
            let op = WriteOp {
                mode: Mode::Update,
                set: Vec::new(),
                del: Vec::new(),
                incr: Some((field, by)),
            };
            let span = tracing::debug_span!("tessera.increment", sid = %id.log_tag(), commands = 1);
            match self
                .store()
                .write(&key, &op, self.timing())
                .instrument(span)
                .await
            {
                Err(e) => return Self::failed(&mut st, e),
                Ok(WriteResult::Written {
                    incr,
                    touched,
                    user,
                }) => {
                    self.after_write(&mut st, &id, &key, touched, user);
                    return Ok(incr);
                }
                Ok(WriteResult::NotAnInteger) => return Err(Error::NotAnInteger(field.into())),
                Ok(_) => {
                    // No such session (expired or ended before this request): start a new one.
                    st.no_such_session();
                }
            }
        }
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
                Ok(WriteResult::Written {
                    incr,
                    touched,
                    user,
                }) => {
                    st.dirty.clear();
                    if creating {
                        st.status = Status::Stored;
                        st.reissue = true;
                        st.clear = false;
                        self.mgr().inner.touches.note(&key, crate::store::now_ms());
                    }
                    self.after_write(st, &id, &key, touched, user);
                    return Ok(incr);
                }
                Ok(WriteResult::Gone) => {
                    st.ended();
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
    ///
    /// The session joins the user's index (`user:<id>:sessions`); with
    /// `max_sessions_per_user`, the user's least recently used sessions beyond the limit end.
    /// The client's `User-Agent` and address (from the adapter) are recorded for device lists.
    pub async fn login(&self, user_id: &str) -> Result<()> {
        if user_id.is_empty() {
            return Err(Error::InvalidUserId);
        }
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let previous_user = user_of(&st.data);
        let mut meta = vec![(fields::USER, Some(user_id.to_string()))];
        meta.push((fields::USER_AGENT, st.client.user_agent.clone()));
        meta.push((fields::CLIENT_ADDR, st.client.client_addr.clone()));
        for (f, v) in meta {
            match v {
                Some(v) => {
                    st.data.insert(f.into(), v.clone().into_bytes());
                    st.dirty.insert(f.into(), Some(v));
                }
                None if st.data.remove(f).is_some() => {
                    st.dirty.insert(f.into(), None);
                }
                None => {}
            }
        }
        self.cycle_locked(&mut st, previous_user).await
    }

    /// Moves the session to a new id: the data is copied to the new key, then the old key is
    /// deleted (two single-key steps, no RENAME, so it works on Redis Cluster). If the old
    /// session was ended meanwhile, the copy is removed again and [`Error::SessionEnded`] returned.
    pub async fn cycle_id(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let user = user_of(&st.data);
        self.cycle_locked(&mut st, user).await
    }

    /// Moves the session to a fresh id. Order, so that a crash between any two steps leaves
    /// nothing unsafe (each step is one single-key command, fine on Redis Cluster):
    /// 1. add the new member to the user's index (a crash here leaves a member pointing at
    ///    nothing, which its bound removes later);
    /// 2. write the new session key (a copy of everything);
    /// 3. delete the old key: if it was already gone, a logout-all or revoke won the race, so
    ///    the copy is deleted again and the request gets `SessionEnded`;
    /// 4. remove the old member from the previous user's index; end sessions over the limit.
    async fn cycle_locked(&self, st: &mut State, previous_user: Option<String>) -> Result<()> {
        if st.status == Status::Ended {
            return Err(Error::SessionEnded);
        }
        let mgr = self.mgr().clone();
        let config = &mgr.inner.config;
        let user = user_of(&st.data);
        let new_id = SessionId::generate();
        let new_member = new_id.storage_key();
        let victims = match &user {
            Some(u) => {
                let res = self
                    .store()
                    .index_add(
                        &config.index_key(u),
                        &new_member,
                        mgr.index_bound_ms(),
                        config.max_sessions_per_user,
                    )
                    .await;
                match res {
                    Ok(v) => v,
                    Err(e) => return Self::failed(st, e),
                }
            }
            None => Vec::new(),
        };
        if st.status == Status::Stored {
            let old_id = st.id.clone().expect("stored sessions have an id");
            let created: u64 = st
                .data
                .get(fields::CREATED)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            let all: Vec<(String, String)> = st
                .data
                .iter()
                .filter(|(k, _)| k.as_str() != fields::CREATED && k.as_str() != fields::TOUCHED)
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            let op = WriteOp {
                mode: Mode::Create {
                    created_ms: created,
                },
                set: all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                del: Vec::new(),
                incr: None,
            };
            let new_key = mgr.key_of(&new_id);
            let span = tracing::debug_span!("tessera.cycle", sid = %old_id.log_tag(), new_sid = %new_id.log_tag(), commands = 2);
            let written = self
                .store()
                .write(&new_key, &op, self.timing())
                .instrument(span)
                .await;
            match written {
                Err(e) => return Self::failed(st, e),
                Ok(WriteResult::Written { .. }) => {
                    mgr.inner.touches.note(&new_key, crate::store::now_ms())
                }
                Ok(WriteResult::Gone) => {
                    st.ended();
                    return Self::failed(st, Error::SessionEnded);
                }
                Ok(other) => {
                    let e = Error::Store(fred::error::Error::new(
                        fred::error::ErrorKind::Unknown,
                        format!("id rotation failed: {other:?}"),
                    ));
                    return Self::failed(st, e);
                }
            }
            match self.store().delete(&mgr.key_of(&old_id)).await {
                Ok(true) => {}
                Ok(false) => {
                    // Ended meanwhile (logout-all, revoke, expiry): do not let the copy live on.
                    let _ = self.store().delete(&new_key).await;
                    if let Some(u) = &user {
                        let _ = self
                            .store()
                            .index_remove(&config.index_key(u), &[new_member])
                            .await;
                    }
                    st.ended();
                    return Self::failed(st, Error::SessionEnded);
                }
                Err(e) => {
                    // The old key lives on until its TTL: remove the copy so no second live
                    // session exists (the old one is still in the index).
                    let _ = self.store().delete(&new_key).await;
                    return Self::failed(st, e);
                }
            }
            if let Some(pu) = &previous_user {
                if let Err(e) = self
                    .store()
                    .index_remove(&config.index_key(pu), &[old_id.storage_key()])
                    .await
                {
                    // Harmless: the member points at a deleted key and its bound removes it.
                    tracing::debug!(error = %e, "could not remove the old member from the user index");
                }
            }
            st.dirty.clear();
            st.reissue = true;
            st.clear = false;
        }
        // Not stored yet: the record is created under this id when the request finishes.
        st.id = Some(new_id);
        if let (Some(u), false) = (&user, victims.is_empty()) {
            if let Err(e) = mgr.end_members(u, &victims).await {
                return Self::failed(st, e);
            }
        }
        Ok(())
    }

    /// Ends every session of this session's user, this one included (logout everywhere).
    pub async fn logout_all(&self) -> Result<usize> {
        let user = self.user_id().await?.ok_or(Error::NotLoggedIn)?;
        let n = match self.mgr().logout_all(&user).await {
            Ok(n) => n,
            Err(e) => {
                let mut st = self.inner.state.lock().await;
                return Self::failed(&mut st, e);
            }
        };
        let mut st = self.inner.state.lock().await;
        st.destroyed();
        Ok(n)
    }

    /// Ends every other session of this session's user.
    pub async fn logout_others(&self) -> Result<usize> {
        let (user, member) = self.user_and_member().await?;
        let res = self.mgr().logout_all_except(&user, Some(&member)).await;
        self.record(res).await
    }

    /// This session's user's live sessions, most recently used first, this one marked `current`.
    pub async fn list_sessions(&self) -> Result<Vec<DeviceSession>> {
        let (user, member) = self.user_and_member().await?;
        let res = self.mgr().list_sessions_marking(&user, Some(&member)).await;
        self.record(res).await
    }

    /// Ends one of this session's user's sessions by handle; `false` if it is not one of them.
    /// Revoking the current session ends it like [`destroy`](Session::destroy).
    pub async fn revoke(&self, handle: &str) -> Result<bool> {
        let (user, member) = self.user_and_member().await?;
        let res = self.mgr().revoke(&user, handle).await;
        let ok = self.record(res).await?;
        if ok && handle_of(&member) == handle {
            let mut st = self.inner.state.lock().await;
            st.destroyed();
        }
        Ok(ok)
    }

    async fn user_and_member(&self) -> Result<(String, String)> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        match (user_of(&st.data), st.status, &st.id) {
            (Some(u), Status::Stored, Some(id)) => Ok((u, id.storage_key())),
            _ => Err(Error::NotLoggedIn),
        }
    }

    async fn record<T>(&self, res: Result<T>) -> Result<T> {
        match res {
            Ok(v) => Ok(v),
            Err(e) => {
                let mut st = self.inner.state.lock().await;
                Self::failed(&mut st, e)
            }
        }
    }

    /// Ends the session: deletes its record at once and clears the cookie. A later write in
    /// the same request starts a new session under a new id.
    pub async fn destroy(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        // Load first (one command) when a cookie named a session, so its user's index entry
        // goes too and device limits count only live sessions.
        self.ensure_loaded(&mut st).await?;
        if let (Status::Stored, Some(id)) = (st.status, st.id.clone()) {
            let key = self.mgr().key_of(&id);
            let span = tracing::debug_span!("tessera.destroy", sid = %id.log_tag(), commands = 1);
            let deleted = self.store().delete(&key).instrument(span).await;
            match deleted {
                Err(e) => return Self::failed(&mut st, e),
                Ok(_) => {
                    if let Some(u) = user_of(&st.data) {
                        let index = self.mgr().inner.config.index_key(&u);
                        if let Err(e) = self.store().index_remove(&index, &[id.storage_key()]).await
                        {
                            return Self::failed(&mut st, e);
                        }
                    }
                }
            }
        }
        st.destroyed();
        Ok(())
    }

    /// Ends the request: writes what changed (in one round trip) and says what cookie to send.
    /// Adapters call this once, after the handler.
    pub async fn finish(&self) -> Outcome {
        let mut st = self.inner.state.lock().await;
        let config = &self.mgr().inner.config;
        for task in std::mem::take(&mut st.index_refresh) {
            let res = match task.await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(Error::Store(fred::error::Error::new(
                    fred::error::ErrorKind::Canceled,
                    "user index refresh task failed",
                ))),
            };
            if let Err(e) = res {
                let _ = Self::failed::<()>(&mut st, e);
            }
        }
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
