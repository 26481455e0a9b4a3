//! [`Session::ended`]: a future that resolves when the session ends anywhere, for the
//! connections a session keeps open (WebSockets, server-sent events). One follower per
//! process wakes every waiting connection: the lifecycle events when they are on (no command
//! per connection), else one batched existence check of the watched sessions every
//! [`POLL`].

use super::devices::handle_of;
use super::lifecycle::EventKind;
use super::state::Status;
use super::{Session, SessionManager};
use crate::error::Result;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How often the watched sessions are checked when lifecycle events are off.
const POLL: Duration = Duration::from_millis(500);

/// How often the follower reads the events when there were none.
const READ_EVERY: Duration = Duration::from_millis(200);

/// How often, with lifecycle events on, the watched sessions are checked all the same.
const SWEEP: Duration = Duration::from_secs(5);

/// How far back the follower starts reading events: an end published moments before it
/// started (by a clock a little off from this one) is still seen.
const REPLAY: Duration = Duration::from_secs(10);

/// Why a session ended: what [`Session::ended`] resolves with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndCause {
    /// Its own logout (or a login as another user).
    Logout,
    /// A logout everywhere.
    LogoutAll,
    /// A revoke from a device list, or an operator ending sessions by a field.
    Revoked,
    /// The user's device limit, at a login elsewhere.
    Evicted,
    /// The idle timeout or absolute lifetime (or the server's memory policy).
    Expired,
    /// Moved to a new id that cannot be known (a rotated-away key whose tombstone names no
    /// successor). A login's rotation is otherwise followed, with lifecycle events on or off.
    Rotated,
    /// Gone for a reason not known here: there was no session, or it was found gone without
    /// its event (events off, or missed past their retention).
    Gone,
}

impl EndCause {
    /// The name for clients: `logout`, `logout_all`, `revoked`, `evicted`, `expired`,
    /// `rotated`, `gone` (the first five as lifecycle events name them).
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::Logout => "logout",
            EndCause::LogoutAll => "logout_all",
            EndCause::Revoked => "revoked",
            EndCause::Evicted => "evicted",
            EndCause::Expired => "expired",
            EndCause::Rotated => "rotated",
            EndCause::Gone => "gone",
        }
    }

    fn of(kind: EventKind) -> Option<Self> {
        Some(match kind {
            EventKind::Logout => EndCause::Logout,
            EventKind::LogoutAll => EndCause::LogoutAll,
            EventKind::Revoked => EndCause::Revoked,
            EventKind::Evicted => EndCause::Evicted,
            EventKind::Expired => EndCause::Expired,
            EventKind::Created | EventKind::Login | EventKind::Rotated => return None,
        })
    }
}

/// One watched session: its waiters (one channel per id it was watched under: a login's
/// rotation can bring two together), its storage key for the existence checks (`None` while a
/// rotation's new key is not known yet: only events end it then), and whether the last sweep
/// found it gone (with events on, its end event is given one more sweep to come with its cause).
struct Watched {
    txs: Vec<watch::Sender<Option<EndCause>>>,
    key: Option<String>,
    suspect: bool,
}

impl Watched {
    fn new() -> Self {
        Watched {
            txs: Vec::new(),
            key: None,
            suspect: false,
        }
    }
}

/// How long an end that woke no connection is remembered: a login's event can come after the
/// end of its new id (a logout-all between the rotation's move and its publication), and the
/// connections it moves onto that id end at once.
const RECENT_END: Duration = Duration::from_secs(30);

/// The sessions this process's open connections wait on, by handle, the ends that woke none
/// lately, and the one follower.
#[derive(Default)]
pub(super) struct Watchers {
    map: Mutex<HashMap<String, Watched>>,
    recent_ends: Mutex<HashMap<String, (EndCause, tokio::time::Instant)>>,
    follower: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        if let Some(t) = self.follower.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
    }
}

/// What an existence check does with a session it finds gone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnGone {
    /// Nothing: only follow a retired key to its successor (right after a login's event).
    Follow,
    /// End it now (lifecycle events off: no event will say more).
    End,
    /// End it at the next check that still finds it gone (events on: its event may be on the
    /// way, with the cause).
    Grace,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, handle: String, key: String) -> watch::Receiver<Option<EndCause>> {
        let mut map = self.lock();
        let w = map.entry(handle).or_insert_with(Watched::new);
        w.key.get_or_insert(key);
        if w.txs.is_empty() {
            w.txs.push(watch::channel(None).0);
        }
        w.txs[0].subscribe()
    }

    /// Wakes the waiters of `handle` with `cause`; with none, remembers the end for a while
    /// (see [`RECENT_END`]).
    fn end(&self, handle: &str, cause: EndCause) {
        let found = self.lock().remove(handle);
        match found {
            Some(w) => {
                for tx in w.txs {
                    let _ = tx.send(Some(cause));
                }
            }
            None => {
                let now = tokio::time::Instant::now();
                let mut recent = self.recent_ends.lock().unwrap_or_else(|p| p.into_inner());
                recent.retain(|_, (_, at)| now.duration_since(*at) < RECENT_END);
                recent.insert(handle.to_string(), (cause, now));
            }
        }
    }

    /// A login or rotation moved `from` to `to`: its waiters follow (joining those already
    /// waiting on `to`), or end at once if `to` has ended already. The old key, which names
    /// the new one while its tombstone lasts (the entry's key is unknown until
    /// [`SessionManager::check_gone`] reads it there).
    fn moved(&self, from: &str, to: &str) -> Option<String> {
        let old_key = {
            let mut map = self.lock();
            let old = map.remove(from)?;
            let w = map.entry(to.to_string()).or_insert_with(Watched::new);
            w.txs.extend(old.txs);
            old.key
        };
        let ended = {
            let recent = self.recent_ends.lock().unwrap_or_else(|p| p.into_inner());
            recent.get(to).map(|(cause, _)| *cause)
        };
        match ended {
            Some(cause) => {
                self.end(to, cause);
                None
            }
            None => old_key,
        }
    }

    /// `handle`'s storage key is `key` now.
    fn rekey(&self, handle: &str, key: String) {
        if let Some(w) = self.lock().get_mut(handle) {
            w.key = Some(key);
            w.suspect = false;
        }
    }

    /// A check found `handle`'s session gone: ends it, or with [`OnGone::Grace`] marks it
    /// and ends it when the next check finds it gone again.
    fn gone(&self, handle: &str, on_gone: OnGone) {
        match on_gone {
            OnGone::Follow => {}
            OnGone::End => self.end(handle, EndCause::Gone),
            OnGone::Grace => {
                let end = match self.lock().get_mut(handle) {
                    Some(w) if w.suspect => true,
                    Some(w) => {
                        w.suspect = true;
                        false
                    }
                    None => false,
                };
                if end {
                    self.end(handle, EndCause::Gone);
                }
            }
        }
    }

    /// A check found `handle`'s session live.
    fn alive(&self, handle: &str) {
        if let Some(w) = self.lock().get_mut(handle) {
            w.suspect = false;
        }
    }

    /// Drops the sessions no connection waits on any more; the watched (handle, key) pairs
    /// whose key is known.
    fn live(&self) -> Vec<(String, String)> {
        let mut map = self.lock();
        map.retain(|_, w| {
            w.txs.retain(|tx| tx.receiver_count() > 0);
            !w.txs.is_empty()
        });
        map.iter()
            .filter_map(|(h, w)| Some((h.clone(), w.key.clone()?)))
            .collect()
    }
}

impl SessionManager {
    fn watchers(&self) -> &Arc<Watchers> {
        &self.inner.watchers
    }

    /// Starts the follower, or again if it stopped (the runtime that ran it went away).
    fn follow_ends(&self) {
        let w = self.watchers();
        let mut follower = w.follower.lock().unwrap_or_else(|p| p.into_inner());
        if follower.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let manager = Arc::downgrade(&self.inner);
        let watchers = Arc::downgrade(w);
        let events = self.events_on();
        *follower = Some(tokio::spawn(follow(manager, watchers, events)).abort_handle());
    }

    /// Checks the watched sessions (handle, key): follows a key a rotation retired to the new
    /// one its tombstone names (with lifecycle events off that is how a connection follows a
    /// login; a tombstone that names none: [`EndCause::Rotated`]), and treats one found gone
    /// (no key, or the `ended` mark) as `on_gone` says. A chunk the store does not answer
    /// proves nothing (one failing Cluster shard stops no other chunk's check).
    async fn check_gone(&self, watched: &[(String, String)], on_gone: OnGone) {
        use crate::layout::marker;
        use crate::store::fields::{CREATED, MOVING};
        for chunk in watched.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|(_, k)| k.clone()).collect();
            let Ok(rows) = self.inner.store.peek_raw(&keys, &[CREATED, MOVING]).await else {
                continue;
            };
            for ((handle, _), row) in chunk.iter().zip(rows) {
                let w = self.watchers();
                // A retired key: the member its tombstone names, if any.
                let retired = match row.as_deref() {
                    Some([None, Some(m)]) if marker::is_retired(m) => Some(marker::successor(m)),
                    _ => None,
                };
                // A live session has its creation time.
                let live = matches!(row.as_deref(), Some([Some(_), _]));
                match retired {
                    Some(Some(member)) => {
                        let to = handle_of(&member);
                        w.moved(handle, &to);
                        w.rekey(&to, self.inner.config.session_key(&member));
                    }
                    _ if live => w.alive(handle),
                    _ if on_gone == OnGone::Follow => {}
                    Some(None) => w.end(handle, EndCause::Rotated),
                    None => w.gone(handle, on_gone),
                }
            }
        }
    }
}

/// The follower: lifecycle events when on, else existence checks every [`POLL`]. Holds the
/// manager weakly: it stops when the app drops it.
async fn follow(
    manager: Weak<super::manager::ManagerInner>,
    watchers: Weak<Watchers>,
    events: bool,
) {
    let upgrade = || manager.upgrade().map(|inner| SessionManager { inner });
    if !events {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (Some(m), Some(w)) = (upgrade(), watchers.upgrade()) else {
                return;
            };
            let watched = w.live();
            if !watched.is_empty() {
                m.check_gone(&watched, OnGone::End).await;
            }
        }
    }
    // Stream ids are the store's clock: start from it where known.
    let Some(m) = upgrade() else { return };
    let now_ms = m.inner.store.server_now().unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64
    });
    drop(m);
    let mut cursor = format!("{}-0", now_ms.saturating_sub(REPLAY.as_millis() as u64));
    // The sweep behind the events: an end whose event was lost (the store failed between the
    // change and its publication) is found within two sweeps.
    let mut swept = tokio::time::Instant::now();
    let mut failures = 0u64;
    loop {
        // The manager is held only while it works, never across the wait: the follower stops
        // when the app drops it.
        let (Some(m), Some(w)) = (upgrade(), watchers.upgrade()) else {
            return;
        };
        if swept.elapsed() >= SWEEP {
            swept = tokio::time::Instant::now();
            let watched = w.live();
            if !watched.is_empty() {
                m.check_gone(&watched, OnGone::Grace).await;
            }
        }
        let mut progressed = false;
        match m.read_events(Some(&cursor), 1000).await {
            Ok(page) => {
                failures = 0;
                progressed = page.cursor != cursor;
                cursor = page.cursor;
                let mut follow = Vec::new();
                for e in page.events {
                    if let Some(cause) = EndCause::of(e.kind) {
                        w.end(&e.handle, cause);
                    } else if let Some(prev) = &e.previous_handle {
                        // The new key, for the sweep: the old one's tombstone names it.
                        if let Some(old_key) = w.moved(prev, &e.handle) {
                            follow.push((e.handle.clone(), old_key));
                        }
                    }
                }
                if !follow.is_empty() {
                    m.check_gone(&follow, OnGone::Follow).await;
                }
                if page.missed {
                    // Ends may have been lost: whatever is gone now ended.
                    m.check_gone(&w.live(), OnGone::End).await;
                }
            }
            // Read again from the same cursor; ends still come from the sweep meanwhile.
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(300) {
                    tracing::warn!(error = %e, failures, "session ends: lifecycle events not readable; open connections close by the 5-second sweep meanwhile");
                }
            }
        }
        drop((m, w));
        if !progressed {
            tokio::time::sleep(READ_EVERY).await;
        }
    }
}

impl Session {
    /// Resolves when this session ends, anywhere: a logout or logout-all on any instance, a
    /// revoke, an operator's end by query, the device limit, expiry. For what a session keeps
    /// open after its request (a WebSocket, a server-sent event stream): close it when this
    /// resolves, and the stolen laptop's stream stops with "log out everywhere".
    ///
    /// Cheap to hold by the thousand: one follower per process wakes every waiter. With
    /// [lifecycle events](crate::SessionConfigBuilder::lifecycle_events) on it reads them (no
    /// command per connection; a login's new id is followed, so a connection lives on across
    /// the login's rotation), and checks the watched sessions' existence every 5 s all the same
    /// (an end whose event was lost, see the events' "not promised", closes within two such
    /// checks, as [`EndCause::Gone`]); off, it checks every 500 ms (one pipelined read per 500
    /// watched sessions) and follows a login's rotation through the old key's tombstone. One read when called (the session may have
    /// ended already). Resolves at once with [`EndCause::Gone`] when there is no stored
    /// session. A store failure while waiting proves nothing: it waits on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::EndCause;
    /// # let config = tessera_core::SessionConfig::builder(tessera_core::Key::generate()).lifecycle_events(true).build().unwrap();
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), config);
    /// let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// let ended = tokio::spawn({
    ///     let session = session.clone();
    ///     async move { session.ended().await }
    /// });
    /// # tokio::task::yield_now().await;
    /// manager.logout_all("ada").await?; // from any instance
    /// assert_eq!(ended.await.unwrap()?, EndCause::LogoutAll);
    /// # Ok(()) }
    /// ```
    pub async fn ended(&self) -> Result<EndCause> {
        let (handle, key) = {
            let mut st = self.inner.state.lock().await;
            self.ensure_loaded(&mut st).await?;
            match (st.status, &st.id) {
                (Status::Stored, Some(id)) => (handle_of(id.storage_str()), self.mgr().key_of(id)),
                _ => return Ok(EndCause::Gone),
            }
        };
        let mgr = self.mgr();
        mgr.follow_ends();
        let mut rx = mgr.watchers().register(handle.clone(), key.clone());
        // Registered first: an end from now on wakes it; one before is found here.
        mgr.check_gone(&[(handle, key)], OnGone::End).await;
        loop {
            if let Some(cause) = *rx.borrow_and_update() {
                return Ok(cause);
            }
            if rx.changed().await.is_err() {
                return Ok(EndCause::Gone); // the manager is gone
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Key, SessionConfig, SessionManager, Store};
    use std::time::Duration;

    /// The follower holds the manager only while it reads: an app that drops its manager gets
    /// its store (and the follower) back, whatever connections waited.
    #[tokio::test]
    async fn the_follower_lets_the_manager_go() {
        let config = SessionConfig::builder(Key::generate())
            .lifecycle_events(true)
            .build()
            .unwrap();
        let manager = SessionManager::new(Store::memory(), config);
        let session = manager.start(None::<&str>);
        session.login("ada").await.unwrap();
        let waiting = tokio::spawn({
            let session = session.clone();
            async move { session.ended().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the session is live");
        let weak = std::sync::Arc::downgrade(&manager.inner);
        waiting.abort();
        let _ = waiting.await;
        drop((session, manager));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(weak.upgrade().is_none(), "the follower let the manager go");
    }
}
