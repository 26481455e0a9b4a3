//! The manager: store plus configuration, shared by every request; the per-user operations
//! (logout everywhere, device list, revoke) that need no request.

use super::devices::{check_user_id, handle_of, time_of_ms, DeviceSession};
use super::lifecycle::{event, ENDED_MARK_MS};
use super::state::State;
use super::touch_log::TouchLog;
use super::{ClientInfo, Session, SessionInner};
use crate::config::SessionConfig;
use crate::error::Result;
use crate::id::SessionId;
use crate::store::events::EventBatch;
use crate::store::{fields, EndIf, Store, Timing};
use std::fmt;
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::Instrument as _;

/// Store plus configuration: what an adapter (axum layer, actix middleware) holds.
///
/// It turns a request's `Cookie` headers into a [`Session`] (no store command) and, once the
/// handler is done, [`finish`](crate::adapter::SessionExt::finish) saves what changed and says which `Set-Cookie` to send.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # use tessera_core::adapter::SessionExt as _;
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
    pub(super) inner: Arc<ManagerInner>,
}

pub(super) struct ManagerInner {
    pub(super) store: Store,
    pub(super) config: SessionConfig,
    pub(super) timing: Timing,
    pub(super) touches: TouchLog,
    /// The query engine's index over the session hashes, created once (see `query_engine.rs`).
    pub(super) search_index: tokio::sync::OnceCell<()>,
    /// The lifecycle events' keys (see `EventKeys`).
    pub(super) event_keys: crate::store::events::EventKeys,
    /// The background expiry sweeper, once started (events on).
    pub(super) sweeper: std::sync::OnceLock<tokio::task::AbortHandle>,
    /// This app takes over sessions of another store (`Records::takes_over_sessions`): a
    /// logout-all marks its user so that they are refused.
    pub(super) takes_over: std::sync::atomic::AtomicBool,
    /// What open connections wait on ([`Session::ended`](super::Session::ended)).
    pub(super) watchers: std::sync::Arc<super::ended::Watchers>,
}

impl Drop for ManagerInner {
    fn drop(&mut self) {
        if let Some(task) = self.sweeper.get() {
            task.abort();
        }
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

impl SessionManager {
    /// A manager for `store` with `config`.
    ///
    /// ```
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// // In production: Key::from_hex(&std::env::var("TESSERA_SECRET")?) and Store::redis(url).
    /// let config = SessionConfig::builder(Key::generate()).build().unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// assert_eq!(manager.config().cookie_name(), "__Host-tessera");
    /// ```
    pub fn new(store: Store, config: SessionConfig) -> Self {
        let ms = |d: std::time::Duration| d.as_millis().min(i64::MAX as u128) as u64;
        let timing = Timing {
            idle_ms: ms(config.idle_timeout),
            touch_ms: ms(config.touch_interval),
            absolute_ms: config.absolute_lifetime.map(ms).unwrap_or(0),
            trail_max: config.trail.max_entries,
            longest_ms: ms(config.longest_expiry),
        };
        SessionManager {
            inner: Arc::new(ManagerInner {
                store,
                timing,
                touches: TouchLog::new(),
                search_index: tokio::sync::OnceCell::new(),
                event_keys: crate::store::events::EventKeys::new(config.events_key()),
                sweeper: std::sync::OnceLock::new(),
                watchers: Default::default(),
                takes_over: std::sync::atomic::AtomicBool::new(false),
                config,
            }),
        }
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
    ///
    /// Adapters call [`ManagerExt::start_with`](crate::adapter::ManagerExt::start_with) and
    /// finish the request; an app calls this where it reads a session outside its adapter (a
    /// WebSocket upgrade, a tool), and writes with [`Session::save`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// // A WebSocket upgrade, outside the adapter: the request's Cookie header.
    /// let session = manager.start(["theme=dark; __Host-tessera=not-a-signed-value"]);
    /// assert_eq!(session.user_id().await?, None); // not a valid cookie: a new, anonymous session
    /// # Ok(()) }
    /// ```
    pub fn start<H: AsRef<[u8]>>(&self, cookie_headers: impl IntoIterator<Item = H>) -> Session {
        self.start_with(cookie_headers, ClientInfo::default())
    }

    /// Like [`start`](SessionManager::start), with what the adapter knows about the client
    /// (recorded at login for device lists).
    pub(crate) fn start_with<H: AsRef<[u8]>>(
        &self,
        cookie_headers: impl IntoIterator<Item = H>,
        client: ClientInfo,
    ) -> Session {
        self.ensure_sweeper();
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
        let pre = super::csrf::pre_session(&headers, &config.pre_session_cookie_name);
        Session {
            inner: Arc::new(SessionInner {
                pre: std::sync::Mutex::new(pre),
                span: tracing::info_span!("tessera.request", handle = tracing::field::Empty),
                manager: self.clone(),
                state: Mutex::new(State::new(candidates, truncated, client)),
            }),
        }
    }

    /// The store.
    ///
    /// ```
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// // A readiness probe: false while a store started before its server is still connecting.
    /// let ready = manager.store().is_connected();
    /// assert!(ready);
    /// ```
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configuration.
    ///
    /// ```
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// let minutes = manager.config().idle_timeout().as_secs() / 60;
    /// let notice = format!("You are logged out after {minutes} minutes without activity.");
    /// assert_eq!(notice, "You are logged out after 30 minutes without activity.");
    /// ```
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    pub(super) fn key_of(&self, id: &SessionId) -> String {
        self.inner.config.session_key(id.storage_str())
    }

    /// How far past now a user-index member's bound reaches: twice the idle timeout (capped
    /// by the absolute lifetime). A session's TTL only moves in the load's throttled touch,
    /// which then refreshes its member, so the bound always covers the session's expiry.
    pub(super) fn index_bound_ms(&self) -> u64 {
        let t = self.inner.timing;
        // A session with its own expiry may slide by up to the longest one.
        let longest = self.inner.config.longest_expiry.as_millis() as u64;
        let b = t.idle_ms.max(longest).saturating_mul(2);
        if t.absolute_ms > 0 {
            b.min(t.absolute_ms)
        } else {
            b
        }
    }

    /// The idle timeout of the session whose hash is `data`: its own expiry's, or the
    /// configured one.
    pub(super) fn own_idle_ms(&self, data: &std::collections::HashMap<String, Vec<u8>>) -> u64 {
        let t = self.inner.timing;
        crate::store::own_idle_ms(data.get(crate::store::fields::OWN_EXPIRY), t.longest_ms)
            .unwrap_or(t.idle_ms)
    }

    /// How long past their last add the field-index entries of the session whose hash is
    /// `data` live (their score is this deadline): twice its own idle timeout (the margin
    /// covers one lost refresh, see `index::refresh_due`), never less than
    /// [`field_floor_ms`](Self::field_floor_ms), at most [`index_bound_ms`](Self::index_bound_ms).
    pub(super) fn field_bound_ms(&self, data: &std::collections::HashMap<String, Vec<u8>>) -> u64 {
        self.own_idle_ms(data)
            .saturating_mul(2)
            .min(self.index_bound_ms())
            .max(self.field_floor_ms())
    }

    /// The shortest bound of any field-index entry: twice the configured idle timeout (at most
    /// [`index_bound_ms`](Self::index_bound_ms)). A member's last add is then at most its
    /// deadline minus this, which is what a guarded prune compares (`index::prunable_below`).
    pub(super) fn field_floor_ms(&self) -> u64 {
        self.inner
            .timing
            .idle_ms
            .saturating_mul(2)
            .min(self.index_bound_ms())
            .max(1)
    }

    /// Ends the given sessions of a user: deletes each session key, then removes every
    /// member from the index, whether its key still held a session or not (one that expired
    /// meanwhile, or ended otherwise). A member whose key held nothing may be a login still in
    /// flight (its index entry made, its session not written yet): such a key gets a short
    /// 'ended' tombstone first (`end_if` with no expected value, as `end_sessions` does), so
    /// that login's create finds it and fails instead of leaving a live session missing from
    /// the index. With lifecycle events on, each ended session leaves an 'ended' mark and its
    /// end is published as `kind`; a tracked member whose key held nothing expired, and its
    /// `expired` is published here (claimed, so once), since the tombstone would hold the
    /// sweeper back.
    pub(super) async fn end_members(
        &self,
        user_id: &str,
        members: &[String],
        kind: super::EventKind,
    ) -> Result<usize> {
        // In chunks, each one `DEL` round trip and one `ZREM`: every chunk is small enough to
        // finish well within the command timeout, and a failure part way leaves the chunks
        // before it fully done (their members gone from the index), so a retry makes progress
        // instead of timing out on the same thousands of keys again.
        const CHUNK: usize = 500;
        let index = self.inner.config.index_key(user_id);
        let mut ended = 0;
        for chunk in members.chunks(CHUNK) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|m| self.inner.config.session_key(m))
                .collect();
            let config = &self.inner.config;
            let existed: Vec<bool> = if config.indexed.is_empty() && !self.events_on() {
                self.inner.store.delete_many(&keys).await?
            } else {
                // With field indexes: each key is deleted by a script that says what its
                // indexed fields held, so the ended sessions leave those indexes too.
                let names: Vec<&str> = config.indexed.iter().map(|f| f.name.as_str()).collect();
                let taken = self
                    .inner
                    .store
                    .take_many(&keys, &names, self.ended_mark_ms())
                    .await?;
                let prunes = chunk.iter().zip(&taken).filter_map(|(m, t)| {
                    let values = t.as_ref()?;
                    let data: std::collections::HashMap<String, Vec<u8>> = names
                        .iter()
                        .zip(values)
                        .filter_map(|(n, v)| Some((n.to_string(), v.clone()?)))
                        .collect();
                    Some(async move {
                        // Ended for good: the entries go whatever their age.
                        super::index::prune_ended(self, m, &data).await
                    })
                });
                futures_util::future::join_all(prunes).await;
                taken.iter().map(Option::is_some).collect()
            };
            let (mut gone, mut absent) = (Vec::new(), Vec::new());
            for (m, existed) in chunk.iter().zip(existed) {
                if existed { &mut gone } else { &mut absent }.push(m.clone());
            }
            let settled = self.settle_absent(&absent).await;
            gone.extend(settled.ended);
            crate::metrics::ended(kind, gone.len());
            let mut batch = EventBatch::default();
            batch
                .events
                .extend(gone.iter().map(|m| event(kind, m, None, true)));
            batch.events.extend(
                settled
                    .expired
                    .iter()
                    .map(|m| event(super::EventKind::Expired, m, None, true)),
            );
            self.publish_after(batch).await;
            let mut removed = gone.clone();
            removed.extend(settled.expired);
            removed.extend(settled.no_session);
            // After the sessions were taken (and absent ones marked): not "nothing was
            // changed" when this fails.
            self.inner
                .store
                .index_remove(&index, &removed)
                .await
                .map_err(crate::Error::after_a_change)?;
            ended += gone.len();
        }
        Ok(ended)
    }

    /// What the members whose key held no session are (`end_members`), each settled with
    /// `end_if` (no expected value): nothing there gets an 'ended' tombstone that stops a
    /// create still on its way; a session there now (such a create landed meanwhile) is ended.
    async fn settle_absent(&self, members: &[String]) -> Absent {
        let ends = members.iter().map(|m| async move {
            let key = self.inner.config.session_key(m);
            let r = self
                .inner
                .store
                .end_if(&key, fields::CREATED, None, ENDED_MARK_MS)
                .await;
            (m.clone(), r)
        });
        let mut out = Absent::default();
        for (m, r) in futures_util::future::join_all(ends).await {
            match r {
                Ok(EndIf::Ended) => out.ended.push(m),
                // Nothing was there: it expired (or was evicted), or its login never
                // completes now. A pending login's id publishes nothing (events.lua).
                Ok(EndIf::Absent) => out.expired.push(m),
                // An 'ended' mark (whoever ended it publishes), or a retired id (its session
                // lives on under the new id, which the index holds as its own member).
                Ok(EndIf::Marked | EndIf::Moved(_)) => out.no_session.push(m),
                // Not with no expected value; a failure leaves the member (a safe state: an
                // index member without a session is only skipped, and its bound removes it).
                Ok(EndIf::Changed) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "could not settle an index member without a session; it stays until its bound");
                }
            }
        }
        out
    }

    /// Ends the session at `key` (with events on, leaving an 'ended' mark); whether one was
    /// there.
    pub(super) async fn end_key(&self, key: &str) -> Result<bool> {
        if !self.events_on() {
            return self.inner.store.delete(key).await;
        }
        let taken = self
            .inner
            .store
            .take_many(&[key.to_string()], &[], self.ended_mark_ms())
            .await?;
        Ok(taken.first().is_some_and(Option::is_some))
    }

    /// The members of `user_id`'s index whose bound has not passed.
    pub(super) async fn members_of(&self, user_id: &str) -> Result<Vec<String>> {
        check_user_id(user_id)?;
        let members = self
            .inner
            .store
            .index_members(&self.inner.config.index_key(user_id))
            .await?;
        crate::metrics::user_sessions(members.len());
        Ok(members)
    }

    /// Ends every session of `user_id` that exists when it starts (logout everywhere), and
    /// leaves none of them in the user's index, also those that had expired meanwhile.
    /// Costs O(sessions of that user): one index read, one pipelined round trip of `DEL`s, one
    /// `ZREM` (and one more round trip when some had expired); no key scan. Returns how many
    /// sessions it ended.
    ///
    /// When this app takes over sessions of a store it switched from
    /// ([`Records::takes_over_sessions`](crate::adapter::Records::takes_over_sessions)), those not taken
    /// over yet are ended too: first a mark `user:<id>:ended_before` (one more `SET`, lasting
    /// [`LEGACY_REFUSAL`](crate::adapter::LEGACY_REFUSAL)) makes every later take-over of that user's
    /// sessions a refusal (see [`Records::take_over`](crate::adapter::Records::take_over)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// manager.start(None::<&str>).login("ada").await?;
    /// manager.start(None::<&str>).login("ada").await?;
    /// // An admin locks Ada's account:
    /// assert_eq!(manager.logout_all("ada").await?, 2);
    /// assert!(manager.list_sessions("ada").await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn logout_all(&self, user_id: impl std::fmt::Display) -> Result<usize> {
        self.logout_all_except(&user_id.to_string(), None).await
    }

    pub(super) async fn logout_all_except(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<usize> {
        let span = tracing::debug_span!("tessera.logout_all");
        async {
            check_user_id(user_id)?;
            if self
                .inner
                .takes_over
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                self.mark_ended_before(user_id).await?;
            }
            let mut members = self.members_of(user_id).await?;
            members.retain(|m| Some(m.as_str()) != keep);
            self.end_members(user_id, &members, super::EventKind::LogoutAll)
                .await
        }
        .instrument(span)
        .await
    }

    /// Sets `user_id`'s logout-all mark, before its index is read: a take-over that wrote its
    /// copy before the mark was set is in the index by then; one that did not sees the mark
    /// (takeover.rs).
    async fn mark_ended_before(&self, user_id: &str) -> Result<()> {
        let stamp = super::takeover::ended_key(&self.inner.config, user_id);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string();
        let ttl_ms = super::takeover::LEGACY_REFUSAL.as_millis() as u64;
        self.inner
            .store
            .set_bytes(&stamp, now_ms.as_bytes(), ttl_ms)
            .await
    }

    /// The live sessions of `user_id`, most recently used first. Costs one index read and one
    /// pipelined round trip of `HMGET`s.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// manager.start(None::<&str>).login("ada").await?;
    /// // An admin page:
    /// let devices = manager.list_sessions("ada").await?;
    /// assert_eq!(devices.len(), 1);
    /// assert!(!devices[0].current); // no request here, so none is the caller's
    /// # Ok(()) }
    /// ```
    pub async fn list_sessions(
        &self,
        user_id: impl std::fmt::Display,
    ) -> Result<Vec<DeviceSession>> {
        self.list_sessions_marking(&user_id.to_string(), None).await
    }

    pub(super) async fn list_sessions_marking(
        &self,
        user_id: &str,
        current: Option<&str>,
    ) -> Result<Vec<DeviceSession>> {
        let members = self.members_of(user_id).await?;
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.inner.config.session_key(m))
            .collect();
        let mut names = vec![
            fields::TOUCHED,
            fields::USER,
            fields::USER_AGENT,
            fields::CLIENT_ADDR,
            fields::CREATED,
        ];
        let last_action = self.inner.config.trail.in_device_list;
        if last_action {
            names.push(fields::TRAIL);
        }
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
                    last_action: row
                        .get(5)
                        .and_then(Option::as_ref)
                        .filter(|_| last_action)
                        .and_then(|t| super::activity::parse(t).into_iter().next()),
                })
            })
            .collect();
        out.sort_by_key(|d| std::cmp::Reverse(d.last_seen));
        Ok(out)
    }

    /// Ends one session of `user_id`, named by its [`DeviceSession::handle`]. Returns `false`
    /// when the handle is not one of that user's live sessions (so a user can never end
    /// another user's session).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// manager.start(None::<&str>).login("ada").await?;
    /// let handle = manager.list_sessions("ada").await?[0].handle.clone();
    /// assert!(!manager.revoke("bob", &handle).await?); // not one of Bob's sessions
    /// assert!(manager.revoke("ada", &handle).await?);
    /// assert!(manager.list_sessions("ada").await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn revoke(&self, user_id: impl std::fmt::Display, handle: &str) -> Result<bool> {
        let user_id = user_id.to_string();
        let user_id = user_id.as_str();
        let members = self.members_of(user_id).await?;
        let Some(m) = members.into_iter().find(|m| handle_of(m) == handle) else {
            return Ok(false);
        };
        Ok(self
            .end_members(user_id, std::slice::from_ref(&m), super::EventKind::Revoked)
            .await?
            == 1)
    }
}

/// The members whose key held no session when `end_members` deleted it, settled.
#[derive(Default)]
struct Absent {
    /// A session was there after all (a create that was on its way): ended now.
    ended: Vec<String>,
    /// Nothing was there: an 'ended' tombstone was left; if tracked, its session expired.
    expired: Vec<String>,
    /// An 'ended' mark or a retired id's tombstone: no session, nothing to publish here.
    no_session: Vec<String>,
}
