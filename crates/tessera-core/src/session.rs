//! The session of one request, and the manager that starts and finishes it.

use crate::codec;
use crate::config::SessionConfig;
use crate::cookie::Verified;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::store::{
    fields, Freeze, Load, Mode, Refresh, Release, Store, Timing, WriteOp, WriteResult,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
/// let outcome = session.finish(200).await;
/// assert!(outcome.error.is_none());
/// assert!(outcome.set_cookie.unwrap().starts_with("__Host-tessera="));
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

/// When this process last saw each session's TTL refreshed, on its own monotonic clock, keyed
/// by a 64-bit hash of the storage key. Each instant is an estimate that errs towards "older"
/// (taken before the command that observed the refresh was sent, minus the age the store
/// reported), so "seen refreshed less than a touch interval ago" is never wrong in the
/// dangerous direction; such a load needs no refresh and can be a plain `HGETALL` instead of
/// the refresh script. No wall clock enters the decision: an app clock that is off from the
/// server's, or steps (VM resume, NTP), cannot stop the TTL from sliding.
///
/// Bounded with two generations: when the current map reaches `TOUCH_LOG_CAP` entries it
/// becomes the previous one (the older previous one is dropped), so recently seen sessions
/// stay known; at most 2 x `TOUCH_LOG_CAP` entries, about 6 MB. Forgetting costs only a script
/// load, never correctness.
struct TouchLog {
    maps: std::sync::Mutex<[HashMap<u64, Instant>; 2]>,
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

    /// The session at `key` was refreshed at `at` (or later).
    fn note(&self, key: &str, at: Instant) {
        let slot = Self::slot(key);
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let known = m[1].get(&slot).copied();
        if m[0].len() >= TOUCH_LOG_CAP && !m[0].contains_key(&slot) {
            m[1] = std::mem::take(&mut m[0]);
        }
        let e = m[0].entry(slot).or_insert(at);
        *e = (*e).max(at).max(known.unwrap_or(at));
    }

    /// Forgets `key` (its session ended or moved).
    fn forget(&self, key: &str) {
        let slot = Self::slot(key);
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        m[0].remove(&slot);
        m[1].remove(&slot);
    }

    /// Refreshed less than `touch` ago (with a small margin).
    fn fresh(&self, key: &str, touch: Duration) -> bool {
        let margin = (touch / 10).min(Duration::from_secs(1));
        let slot = Self::slot(key);
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let seen = m[0].get(&slot).or_else(|| m[1].get(&slot));
        seen.is_some_and(|&t| t.elapsed() + margin < touch)
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
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        log.note("hot", now);
        for i in 0..TOUCH_LOG_CAP + 10 {
            log.note(&format!("k{i}"), now);
        }
        assert!(
            log.fresh("hot", minute),
            "one generation back is still known"
        );
        assert!(!log.fresh("never-seen", minute));
        if let Some(long_ago) = now.checked_sub(2 * minute) {
            log.note("old", long_ago);
            assert!(!log.fresh("old", minute), "seen refreshed too long ago");
        }
        log.forget("hot");
        assert!(!log.fresh("hot", minute), "forgotten");
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
    ///
    /// Headers are taken as bytes (`&str`, `&[u8]`, `HeaderValue::as_bytes()`): a cookie with
    /// non-ASCII bytes (browsers send UTF-8 raw) does not hide the session cookie beside it.
    /// When several cookies carry the session cookie's name (set for different paths or by a
    /// sibling subdomain), each validly signed one is tried in turn, up to four.
    pub fn start<H: AsRef<[u8]>>(&self, cookie_headers: impl IntoIterator<Item = H>) -> Session {
        self.start_with(cookie_headers, ClientInfo::default())
    }

    /// Like [`start`](SessionManager::start), with what the adapter knows about the client
    /// (recorded at login for device lists).
    pub fn start_with<H: AsRef<[u8]>>(
        &self,
        cookie_headers: impl IntoIterator<Item = H>,
        client: ClientInfo,
    ) -> Session {
        let config = &self.inner.config;
        let headers: Vec<H> = cookie_headers.into_iter().collect();
        let (mut candidates, mut truncated) =
            crate::cookie::candidates(&headers, config.cookie_name(), &config.signer);
        if let Some(legacy) = config.cookie.legacy_name() {
            // Cookies from before `__Host-` became the default name: accepted and re-issued
            // under the new name, so a deploy logs nobody out.
            if candidates.len() < crate::cookie::MAX_CANDIDATES {
                let (old, more) = crate::cookie::candidates(&headers, legacy, &config.signer);
                truncated |= more;
                for mut c in old {
                    if candidates.len() == crate::cookie::MAX_CANDIDATES {
                        truncated = true;
                        break;
                    }
                    c.stale_key = true;
                    candidates.push(c);
                }
            }
        }
        Session {
            inner: Arc::new(SessionInner {
                manager: self.clone(),
                state: Mutex::new(State::new(candidates, truncated, client)),
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
        check_user_id(user_id)?;
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
                // Stored data is untrusted input: a time that is not a plausible one is a
                // logged error for this row, never a panic.
                let time = |i: usize| {
                    let t = text(i).as_deref().and_then(time_of_ms);
                    if t.is_none() {
                        tracing::error!(handle = %handle_of(m), field = i, "session metadata is not a valid time; left out of the device list");
                    }
                    t
                };
                Some(DeviceSession {
                    handle: handle_of(m),
                    created_at: time(4)?,
                    last_seen: time(0)?,
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

/// A stored time (ms since the Unix epoch, as text) as a `SystemTime`, if it is one that can be
/// shown: from the epoch to the end of year 9999.
pub(crate) fn time_of_ms(text: &str) -> Option<std::time::SystemTime> {
    const MAX_MS: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms: u64 = text.trim().parse().ok()?;
    (ms <= MAX_MS).then(|| std::time::UNIX_EPOCH + Duration::from_millis(ms))
}

/// The longest user id accepted: ids are names of keys and index entries, not documents.
const MAX_USER_ID_BYTES: usize = 512;

fn check_user_id(user_id: &str) -> Result<()> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        return Err(Error::InvalidUserId);
    }
    Ok(())
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
            let nanos = t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0);
            time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
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
    /// Ended by someone else while this request ran, or moved to a new id by a concurrent
    /// login: nothing more is written.
    Ended,
}

struct State {
    /// The validly signed session cookies of the request, in the order sent (tried in turn
    /// on the first load).
    candidates: Vec<Verified>,
    /// More signed candidates were sent than are tried: none of them is proven dead.
    truncated: bool,
    /// The request carried at least one validly signed session cookie.
    had_cookie: bool,
    /// A candidate named a key retired by a concurrent login's rotation (a tombstone).
    moved_away: bool,
    id: Option<SessionId>,
    status: Status,
    data: HashMap<String, Vec<u8>>,
    dirty: BTreeMap<String, Option<String>>,
    /// Send the cookie again (new id, stale signing key, sliding persistent cookie).
    reissue: bool,
    /// The browser's cookie is proven dead: tell it to drop the cookie.
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

fn is_user_field(name: &str) -> bool {
    !name.starts_with("__")
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
        self.clear = self.had_cookie;
    }

    /// Someone else ended the session while this request ran: nothing more is written. The
    /// cookie is left alone: "gone" is also what a concurrent login's rotation looks like,
    /// whose response may already have given the browser a new cookie of the same name; the
    /// next request clears the cookie if it is still dead.
    fn ended(&mut self) {
        self.status = Status::Ended;
        self.dirty.clear();
        self.clear = false;
        self.reissue = false;
    }

    /// A concurrent login is moving the session to a new id: as [`State::ended`].
    fn moved(&mut self) {
        self.ended();
    }

    /// No cookie named a live session. Never adopt a client-supplied id: a new session gets
    /// a new one. The browser is told to drop the cookie only when every candidate was tried
    /// and found dead (a cookie the request did not prove dead may be someone's live one).
    fn no_such_session(&mut self) {
        self.status = Status::New;
        self.id = None;
        self.clear = self.had_cookie && !self.truncated;
        self.reissue = false;
    }

    fn new(candidates: Vec<Verified>, truncated: bool, client: ClientInfo) -> Self {
        State {
            client,
            index_refresh: Vec::new(),
            reissue: candidates.first().is_some_and(|c| c.stale_key),
            id: candidates.first().map(|c| c.id.clone()),
            had_cookie: !candidates.is_empty(),
            moved_away: false,
            candidates,
            truncated,
            status: Status::Unloaded,
            data: HashMap::new(),
            dirty: BTreeMap::new(),
            clear: false,
            failure: None,
        }
    }

    fn user_field_count(&self) -> usize {
        self.data.keys().filter(|k| is_user_field(k)).count()
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
/// request, in one round trip, and only when the response is not an error (see
/// [`finish`](Session::finish)).
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
                Err(_) => Err(Error::Store(fred::error::Error::new(
                    fred::error::ErrorKind::Canceled,
                    "user index refresh task failed",
                ))),
            };
            if let Err(e) = res {
                let _ = Self::failed::<()>(st, e);
            }
        }
    }

    async fn ensure_loaded(&self, st: &mut State) -> Result<()> {
        if st.status != Status::Unloaded {
            return Ok(());
        }
        // Each validly signed cookie of our name, in turn, until one names a live session. On
        // a store failure the candidates stay (nothing is proven, the cookie is not cleared).
        for i in 0..st.candidates.len() {
            let (id, stale) = (st.candidates[i].id.clone(), st.candidates[i].stale_key);
            st.id = Some(id.clone());
            if self.load_one(st, &id).await? {
                st.reissue = stale || st.reissue;
                st.candidates.clear();
                return Ok(());
            }
        }
        st.candidates.clear();
        if st.moved_away {
            // A login moved this session to a new id moments ago (another request of this
            // browser): nothing to serve or write here, and the cookie is left alone.
            st.moved();
        } else {
            st.no_such_session();
        }
        Ok(())
    }

    /// Loads the session under `id`; whether it exists.
    async fn load_one(&self, st: &mut State, id: &SessionId) -> Result<bool> {
        let key = self.mgr().key_of(id);
        let timing = self.timing();
        let touch = Duration::from_millis(timing.touch_ms);
        let known_fresh = self.touches().fresh(&key, touch);
        let span = tracing::debug_span!("tessera.load", sid = %id.log_tag(), commands = 1, plain = known_fresh, found = tracing::field::Empty, touched = tracing::field::Empty);
        let sent = Instant::now();
        let res = self
            .store()
            .load(&key, timing, known_fresh)
            .instrument(span.clone())
            .await;
        let loaded = match res {
            Err(e) => return Self::failed(st, e),
            Ok(Load::Gone) => {
                span.record("found", false);
                return Ok(false);
            }
            Ok(Load::Moved) => {
                span.record("found", false);
                st.moved_away = true;
                return Ok(false);
            }
            Ok(Load::Found(loaded)) => loaded,
        };
        span.record("found", true);
        span.record("touched", loaded.refresh == Refresh::Done);
        st.status = Status::Stored;
        st.data = loaded.fields;
        match loaded.refresh {
            Refresh::Done => {
                self.touches().note(&key, sent);
                if self.mgr().inner.config.cookie.persistent {
                    st.reissue = true;
                }
                let user = user_of(&st.data);
                self.refresh_index(st, id, user);
            }
            // The store measured the age on its own clock; `sent` is no later than the moment
            // it did, so the estimate errs towards "older".
            Refresh::NotDue { age_ms: Some(age) } => {
                if let Some(at) = sent.checked_sub(Duration::from_millis(age)) {
                    self.touches().note(&key, at);
                }
            }
            Refresh::NotDue { age_ms: None } => {}
            Refresh::Refused(reason) => {
                tracing::warn!(sid = %id.log_tag(), %reason, "session TTL refresh refused by the store (over maxmemory?): served without sliding the TTL");
            }
        }
        Ok(true)
    }

    /// Bookkeeping after a write that may have slid the TTL.
    fn after_write(
        &self,
        st: &mut State,
        id: &SessionId,
        key: &str,
        sent: Instant,
        touched: bool,
        user: Option<String>,
    ) {
        if touched {
            self.touches().note(key, sent);
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
            store.index_add(&index, &member, bound, 0, None).await
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
    ///
    /// A value over `max_value_bytes`, or a new field beyond `max_fields`, is
    /// [`Error::TooLarge`] and changes nothing.
    pub async fn insert<T: Serialize + ?Sized>(&self, field: &str, value: &T) -> Result<()> {
        check_field(field)?;
        let encoded = codec::encode(value)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        self.check_size(&st, field, encoded.len())?;
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
        let mut names: Vec<&String> = st.data.keys().filter(|k| is_user_field(k)).collect();
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
        let mut st = self.inner.state.lock().await;
        if let (Status::Unloaded, Some(id), 1) = (st.status, st.id.clone(), st.candidates.len()) {
            // Not loaded yet (so nothing pending): one write script does the existence check,
            // the increment and the throttled TTL refresh, in one round trip, without reading
            // the session.
            let key = self.mgr().key_of(&id);
            let op = WriteOp {
                mode: Mode::Update,
                set: Vec::new(),
                del: Vec::new(),
                incr: Some((field, by)),
                // Not loaded, so the store checks the field count for a new field.
                max_fields: self.mgr().inner.config.limits.max_fields,
            };
            let span = tracing::debug_span!("tessera.increment", sid = %id.log_tag(), commands = 1);
            let sent = Instant::now();
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
                    self.after_write(&mut st, &id, &key, sent, touched, user);
                    return Ok(incr);
                }
                Ok(WriteResult::NotAnInteger) => return Err(Error::NotAnInteger(field.into())),
                Ok(WriteResult::TooManyFields) => return Err(self.too_many_fields()),
                Ok(WriteResult::Moved) => {
                    st.moved();
                    return Self::failed(&mut st, Error::SessionEnded);
                }
                Ok(_) => {
                    // No such session (expired or ended before this request): start a new one.
                    st.candidates.clear();
                    st.no_such_session();
                }
            }
        }
        self.ensure_loaded(&mut st).await?;
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
        }
        let res = self.write_now(&mut st, Some((field, by))).await?;
        st.data
            .insert(field.to_string(), res.to_string().into_bytes());
        Ok(res)
    }

    /// Writes the pending changes now instead of at the end of the request, so that they are
    /// kept even if the response turns out to be an error (by default an error response
    /// commits nothing of its request: see [`finish`](Session::finish)). A no-op when nothing
    /// changed.
    pub async fn save(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        if st.dirty.is_empty() {
            return Ok(());
        }
        self.write_now(&mut st, None).await.map(|_| ())
    }

    /// Writes the pending changes (and an optional increment) now, creating the record if the
    /// session is new. Returns the increment's result.
    async fn write_now(&self, st: &mut State, incr: Option<(&str, i64)>) -> Result<i64> {
        if st.status == Status::Ended {
            return Self::failed(st, Error::SessionEnded);
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
                max_fields: 0,
            };
            let span = tracing::debug_span!("tessera.save", sid = %id.log_tag(), commands = 1, fields = op.set.len() + op.del.len(), create = creating);
            let sent = Instant::now();
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
                        self.touches().note(&key, sent);
                    }
                    self.after_write(st, &id, &key, sent, touched, user);
                    return Ok(incr);
                }
                Ok(WriteResult::Gone) => {
                    st.ended();
                    return Self::failed(st, Error::SessionEnded);
                }
                Ok(WriteResult::Moved) => {
                    st.moved();
                    return Self::failed(st, Error::SessionEnded);
                }
                Ok(WriteResult::NotAnInteger) => {
                    return Err(Error::NotAnInteger(incr.map(|i| i.0).unwrap_or("").into()))
                }
                Ok(WriteResult::TooManyFields) => return Err(self.too_many_fields()),
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
    /// fixation). The session is saved at once (an error response later in the request does
    /// not undo a login); the new cookie is sent with the response.
    ///
    /// - Anonymous -> user, or the same user again: the session keeps its data (a cart
    ///   survives login).
    /// - Another user than the one bound: the session starts anew, as Django's `login`
    ///   flushes: the previous user's session ends (its key and its index entry go), none of
    ///   its fields are carried over, only what this request set is kept, and the new
    ///   session's creation time (and so its absolute lifetime) starts now.
    ///
    /// The session joins the user's index (`user:<id>:sessions`); with
    /// `max_sessions_per_user`, the user's least recently used sessions beyond the limit end.
    /// The client's `User-Agent` and address (from the adapter) are recorded for device lists.
    pub async fn login(&self, user_id: &str) -> Result<()> {
        check_user_id(user_id)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if st.status == Status::Ended {
            return Self::failed(&mut st, Error::SessionEnded);
        }
        let mut previous_user = user_of(&st.data);
        let switching = previous_user.as_deref().is_some_and(|p| p != user_id);
        if switching {
            self.end_for_another_user(&mut st).await?;
            previous_user = None;
        }
        let meta = [
            (fields::USER, Some(user_id.to_string())),
            (fields::USER_AGENT, st.client.user_agent.clone()),
            (fields::CLIENT_ADDR, st.client.client_addr.clone()),
        ];
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
        // Boxed: the rotation's future is large, and this keeps callers' futures small.
        let res = Box::pin(self.cycle_locked(&mut st, previous_user)).await;
        if switching {
            // The previous user's session is already gone: a later failure has changed
            // something, so it must not be answered as "nothing was changed".
            if let Some(Error::Unavailable(e)) = st.failure.take() {
                st.failure = Some(Error::OutcomeUnknown(e));
            }
            if let Err(Error::Unavailable(e)) = res {
                return Err(Error::OutcomeUnknown(e));
            }
        }
        res
    }

    /// Login as another user: ends the stored session of the previous user (key and index
    /// member) and keeps only what this request set, for a fresh session.
    async fn end_for_another_user(&self, st: &mut State) -> Result<()> {
        Self::settle_index_refresh(st).await;
        if let (Status::Stored, Some(id)) = (st.status, st.id.clone()) {
            let key = self.mgr().key_of(&id);
            if let Err(e) = self.store().delete(&key).await {
                return Self::failed(st, e);
            }
            self.touches().forget(&key);
            if let Some(u) = user_of(&st.data) {
                let index = self.mgr().inner.config.index_key(&u);
                if let Err(e) = self.store().index_remove(&index, &[id.storage_key()]).await {
                    // Harmless: the member points at a deleted key and its bound removes it.
                    tracing::debug!(error = %e, "could not remove the old member from the user index");
                }
            }
        }
        let pending: BTreeMap<String, Option<String>> = std::mem::take(&mut st.dirty)
            .into_iter()
            .filter(|(k, v)| v.is_some() && is_user_field(k))
            .collect();
        st.data = pending
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?.into_bytes())))
            .collect();
        st.dirty = pending;
        st.status = Status::New;
        st.id = None;
        st.clear = st.had_cookie;
        st.reissue = false;
        Ok(())
    }

    /// Moves the session to a new id: the current contents are copied to a new key, then the
    /// old key is deleted (single-key steps, no RENAME, so it works on Redis Cluster). A write
    /// racing the move is either in the copy or refused (never acknowledged and lost). If the
    /// old session was ended meanwhile, the copy is removed again and [`Error::SessionEnded`]
    /// returned.
    pub async fn cycle_id(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let user = user_of(&st.data);
        Box::pin(self.cycle_locked(&mut st, user)).await
    }

    /// Moves the session to a fresh id. Order, so that a crash or a race between any two
    /// steps leaves nothing unsafe (each step is one single-key command, fine on Redis
    /// Cluster):
    /// 1. at once: add the new member to the user's index (a crash after it leaves a member
    ///    pointing at nothing, which its bound removes later), and freeze the old key while
    ///    reading it (writes to it now answer "moved" instead of landing behind the copy);
    /// 2. write the new session key: what step 1 read plus this request's changes;
    /// 3. retire the old key, only if the freeze still holds: if the key is gone, a
    ///    logout-all or revoke won the race, so the copy is deleted again and the request gets
    ///    `SessionEnded`; if the freeze was broken, the copy is deleted and the old key lives;
    /// 4. remove the old member from the previous user's index; end sessions over the limit.
    ///
    /// Any failure after step 1 removes the new member again and thaws the old key.
    async fn cycle_locked(&self, st: &mut State, previous_user: Option<String>) -> Result<()> {
        if st.status == Status::Ended {
            return Err(Error::SessionEnded);
        }
        let mgr = self.mgr().clone();
        let config = &mgr.inner.config;
        let store = self.store();
        let timing = self.timing();
        let user = user_of(&st.data);
        let new_id = SessionId::generate();
        let new_member = new_id.storage_key();
        let new_key = mgr.key_of(&new_id);
        let index = user.as_deref().map(|u| config.index_key(u));
        let old = match (st.status, &st.id) {
            (Status::Stored, Some(id)) => Some((id.clone(), mgr.key_of(id))),
            _ => None,
        };
        Self::settle_index_refresh(st).await;
        // The old member leaves the same index: it must not count toward the device limit.
        let leaving = match (&old, &previous_user) {
            (Some((id, _)), Some(pu)) if Some(pu) == user.as_ref() => Some(id.storage_key()),
            _ => None,
        };
        let span = tracing::debug_span!("tessera.cycle", sid = %tag(st.id.as_ref()), new_sid = %new_id.log_tag());
        let add = async {
            match &index {
                Some(ix) => store
                    .index_add(
                        ix,
                        &new_member,
                        mgr.index_bound_ms(),
                        config.max_sessions_per_user,
                        leaving.as_deref(),
                    )
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let freeze = async {
            match &old {
                Some((_, key)) => store.freeze(key, &new_member, timing).await.map(Some),
                None => Ok(None),
            }
        };
        let (added, frozen) = async { tokio::join!(add, freeze) }.instrument(span).await;
        let undo_member = || async {
            if let Some(ix) = &index {
                if let Err(e) = store
                    .index_remove(ix, std::slice::from_ref(&new_member))
                    .await
                {
                    tracing::debug!(error = %e, "could not remove a failed login's index member; its bound removes it");
                }
            }
        };
        let thaw = |key: String, token: String| async move {
            if let Err(e) = store.release(&key, &token, false).await {
                tracing::debug!(error = %e, "could not thaw the old key; its freeze lapses by itself");
            }
        };
        let victims = match added {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => {
                if let (Some((_, key)), Ok(Some(Freeze::Frozen { token, .. }))) = (&old, frozen) {
                    thaw(key.clone(), token).await;
                }
                return Self::failed(st, e);
            }
        };
        if let Some((old_id, old_key)) = old {
            let (token, mut data) = match frozen {
                Ok(Some(Freeze::Frozen { token, fields })) => (token, fields),
                Ok(Some(Freeze::Gone)) | Ok(None) => {
                    undo_member().await;
                    st.ended();
                    return Self::failed(st, Error::SessionEnded);
                }
                Ok(Some(Freeze::Moved)) => {
                    undo_member().await;
                    st.moved();
                    return Self::failed(st, Error::SessionEnded);
                }
                Err(e) => {
                    undo_member().await;
                    return Self::failed(st, e);
                }
            };
            // The copy: the store's current contents plus this request's changes.
            data.remove(fields::MOVING);
            for (k, v) in &st.dirty {
                match v {
                    Some(v) => data.insert(k.clone(), v.clone().into_bytes()),
                    None => data.remove(k),
                };
            }
            let created: u64 = data
                .get(fields::CREATED)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            let copy: Vec<(String, String)> = data
                .iter()
                .filter(|(k, _)| k.as_str() != fields::CREATED && k.as_str() != fields::TOUCHED)
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            let op = WriteOp {
                mode: Mode::Create {
                    created_ms: created,
                },
                set: copy.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                del: Vec::new(),
                incr: None,
                max_fields: 0,
            };
            let sent = Instant::now();
            let written = store.write(&new_key, &op, timing).await;
            let failure = match written {
                Ok(WriteResult::Written { .. }) => None,
                Err(e) => Some(e),
                Ok(other) => Some(Error::Store(fred::error::Error::new(
                    fred::error::ErrorKind::Unknown,
                    format!("id rotation: writing the new key gave {other:?}"),
                ))),
            };
            if let Some(e) = failure {
                let _ = store.delete(&new_key).await;
                thaw(old_key, token).await;
                undo_member().await;
                return Self::failed(st, e);
            }
            let mut released = store.release(&old_key, &token, true).await;
            if released.is_err() {
                // The retire's answer was lost: ask again by thawing, which says which it was.
                released = match store.release(&old_key, &token, false).await {
                    Ok(Release::Retired) => Ok(Release::Done), // it did happen: keep the copy
                    Ok(Release::Done) => released,             // thawed: the old one lives
                    _ => released,
                };
            }
            if !matches!(released, Ok(Release::Done | Release::Retired)) {
                // Do not let the copy live on beside the old session (or after it ended).
                let _ = store.delete(&new_key).await;
                undo_member().await;
                return match released {
                    Ok(Release::Gone) => {
                        st.ended();
                        Self::failed(st, Error::SessionEnded)
                    }
                    Ok(_) => {
                        st.moved();
                        Self::failed(st, Error::SessionEnded)
                    }
                    Err(e) => Self::failed(st, e),
                };
            }
            self.touches().forget(&old_key);
            self.touches().note(&new_key, sent);
            if let Some(pu) = &previous_user {
                if let Err(e) = store
                    .index_remove(&config.index_key(pu), &[old_id.storage_key()])
                    .await
                {
                    // Harmless: the member points at a deleted key and its bound removes it.
                    tracing::debug!(error = %e, "could not remove the old member from the user index");
                }
            }
            st.data = data;
            st.dirty.clear();
            st.reissue = true;
            st.clear = false;
            st.id = Some(new_id);
        } else {
            // Not stored yet: create it now under the new id (a login is saved at once).
            st.id = Some(new_id);
            if user.is_some() {
                if let Err(e) = Box::pin(self.write_now(st, None)).await {
                    undo_member().await;
                    return Err(e);
                }
            }
        }
        if let (Some(u), false) = (&user, victims.is_empty()) {
            if let Err(e) = Box::pin(mgr.end_members(u, &victims)).await {
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
        Self::settle_index_refresh(&mut st).await;
        if let (Status::Stored, Some(id)) = (st.status, st.id.clone()) {
            let key = self.mgr().key_of(&id);
            let span = tracing::debug_span!("tessera.destroy", sid = %id.log_tag(), commands = 1);
            let deleted = self.store().delete(&key).instrument(span).await;
            match deleted {
                Err(e) => return Self::failed(&mut st, e),
                Ok(_) => {
                    self.touches().forget(&key);
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
    /// Adapters call this once, after the handler, with the status of the handler's response.
    ///
    /// All or nothing per request: when `response_status` is an error (400 or more), the
    /// pending changes are discarded, so an error response never commits half of what its
    /// request did. What was saved explicitly stays: [`save`](Session::save),
    /// [`increment`](Session::increment) (with the changes pending before it), `login`,
    /// `cycle_id`, `destroy` and the logout calls write at once.
    pub async fn finish(&self, response_status: u16) -> Outcome {
        let mut st = self.inner.state.lock().await;
        let config = &self.mgr().inner.config;
        Self::settle_index_refresh(&mut st).await;
        if response_status >= 400 && !st.dirty.is_empty() {
            tracing::debug!(sid = %tag(st.id.as_ref()), status = response_status, discarded = st.dirty.len(), "error response: the request's pending session changes are not saved");
            st.dirty.clear();
        }
        if st.failure.is_none() && !st.dirty.is_empty() {
            // Errors are recorded in st.failure by write_now.
            let _ = self.write_now(&mut st, None).await;
        }
        let set_cookie = match (&st.id, st.status) {
            (Some(id), Status::Stored | Status::Unloaded) if st.reissue => {
                Some(config.cookie.set_header(
                    config.signer.sign(config.cookie_name(), id),
                    config.idle_timeout,
                ))
            }
            (_, Status::New | Status::Destroyed | Status::Ended) if st.clear => {
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

#[cfg(test)]
mod stored_data_fuzz {
    //! Anything read back from the store is untrusted input: corrupt metadata (a `__t` past
    //! year 9999, `__c` that is not a number, bytes that are not UTF-8) is an error or a
    //! dropped row, never a panic.
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"99999999999999999999".to_vec()),
            Just(u64::MAX.to_string().into_bytes()),
            Just(b"253402300800000".to_vec()), // year 10000
            Just(b"-1".to_vec()),
            Just(b"1e30".to_vec()),
            Just(b"".to_vec()),
            Just(vec![0xff, 0xfe, 0x00]),
            Just(b"{\"a\":".to_vec()),
            any::<u64>().prop_map(|n| n.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..24),
        ]
    }

    fn hash() -> impl Strategy<Value = HashMap<String, Vec<u8>>> {
        let name = prop_oneof![
            Just("__c".to_string()),
            Just("__t".to_string()),
            Just("__u".to_string()),
            Just("__ua".to_string()),
            Just("__ip".to_string()),
            Just("__m".to_string()),
            Just("n".to_string()),
            "[a-z]{1,6}",
        ];
        proptest::collection::hash_map(name, value(), 0..10)
    }

    async fn exercise(stored: HashMap<String, Vec<u8>>) {
        let store = Store::memory();
        let config = SessionConfig::builder(crate::Key::generate())
            .build()
            .unwrap();
        let manager = SessionManager::new(store.clone(), config);
        let id = SessionId::generate();
        let member = id.storage_key();
        let key = manager.key_of(&id);
        let user = stored
            .get("__u")
            .map(|u| String::from_utf8_lossy(u).into_owned());
        store.memory_backend().unwrap().put_raw(&key, stored);
        if let Some(u) = user.as_deref().filter(|u| check_user_id(u).is_ok()) {
            let index = manager.config().index_key(u);
            store
                .index_add(&index, &member, 60_000, 0, None)
                .await
                .unwrap();
            let _ = manager
                .list_sessions(u)
                .await
                .map(|l| l.iter().map(DeviceSession::to_json).count());
        }
        let cookie = format!(
            "{}={}",
            manager.config().cookie_name(),
            manager
                .config()
                .signer
                .sign(manager.config().cookie_name(), &id)
        );
        let s = manager.start([cookie.as_str()]);
        let _ = s.entries().await;
        let _ = s.get::<i64>("n").await;
        let _ = s.user_id().await;
        let _ = s.created_at().await;
        if let Ok(list) = s.list_sessions().await {
            let _: Vec<_> = list.iter().map(DeviceSession::to_json).collect();
        }
        let _ = s.increment("n", 1).await;
        let _ = s.insert("x", &1).await;
        let _ = s.login("someone").await;
        let _ = s.finish(200).await;
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn corrupt_stored_hashes_never_panic(stored in hash()) {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(exercise(stored));
        }
    }

    #[test]
    fn times_past_year_9999_are_refused_not_panicked_on() {
        assert!(time_of_ms("253402300799999").is_some());
        assert!(time_of_ms("253402300800000").is_none());
        assert!(time_of_ms("99999999999999999999").is_none());
        assert!(time_of_ms("-5").is_none());
        let far = DeviceSession {
            handle: "h".into(),
            created_at: std::time::UNIX_EPOCH + Duration::from_secs(400_000_000_000),
            last_seen: std::time::UNIX_EPOCH,
            user_agent: None,
            client_addr: None,
            current: false,
        };
        assert_eq!(
            far.to_json()["created_at"],
            "",
            "unrepresentable: empty, no panic"
        );
    }
}
