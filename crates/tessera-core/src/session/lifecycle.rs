//! Lifecycle events: what each way a session starts, moves or ends publishes, and how every
//! instance reads them (a page with a cursor, a stream, a callback). The expiry sweeper, which
//! turns expiries nobody caused into `expired` events, exactly once: `expiry_sweeper.rs`.
//!
//! Exactly one end per session: every session with events on is tracked in the expiry set
//! (`{[ns]events}:expiry`). A request that ends a session deletes it leaving a short 'ended'
//! mark, then publishes its end event only if it removes the member from the set (one script
//! over the set and the stream, atomic); the sweeper publishes `expired` for a member whose key
//! is gone (no mark) only if it removes the member. Whoever removes it publishes; the other
//! publishes nothing.

use super::devices::{handle_of, time_of_ms};
use super::manager::ManagerInner;
use super::SessionManager;
use crate::config::EventsConfig;
use crate::error::{Error, Result};
use crate::store::events::{parse_cursor, EventBatch, EventKeys, NewEvent, StoredEvent};
use crate::store::Timing;

use std::time::{Duration, SystemTime};

/// How long an ended session's 'ended' mark stays (the request that ended it publishes its end
/// well within this).
pub(super) const ENDED_MARK_MS: u64 = 10_000;

/// What happened to a session. Serializes as its [`as_str`](EventKind::as_str) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A new session was saved for the first time.
    Created,
    /// A user logged in (the session moved to a new id, this event's handle).
    Login,
    /// The session moved to a new id without a login (`cycle_id`).
    Rotated,
    /// The session was ended by its own request (logout, or a login as another user).
    Logout,
    /// Ended by a logout everywhere (one event per ended session).
    LogoutAll,
    /// Ended by a revoke (from a device list, or an admin ending sessions by a field).
    Revoked,
    /// Ended by the user's device limit, at another login.
    Evicted,
    /// It expired (idle timeout, absolute lifetime, or evicted by the server's memory policy).
    Expired,
}

impl EventKind {
    /// The name in the stream and in JSON: `created`, `login`, `rotated`, `logout`,
    /// `logout_all`, `revoked`, `evicted`, `expired`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Login => "login",
            EventKind::Rotated => "rotated",
            EventKind::Logout => "logout",
            EventKind::LogoutAll => "logout_all",
            EventKind::Revoked => "revoked",
            EventKind::Evicted => "evicted",
            EventKind::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => EventKind::Created,
            "login" => EventKind::Login,
            "rotated" => EventKind::Rotated,
            "logout" => EventKind::Logout,
            "logout_all" => EventKind::LogoutAll,
            "revoked" => EventKind::Revoked,
            "evicted" => EventKind::Evicted,
            "expired" => EventKind::Expired,
            _ => return None,
        })
    }

    /// Whether this event ends the session (each session has at most one).
    pub fn ends_session(&self) -> bool {
        !matches!(
            self,
            EventKind::Created | EventKind::Login | EventKind::Rotated
        )
    }
}

/// One lifecycle event. Serializes as `{"cursor", "type", "handle", "user_id", "at" (RFC
/// 3339), "instance", "previous_handle"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// Its position in the stream: pass it as `after` to read what follows.
    pub cursor: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The session's handle (as device lists show it; never the session id). After a login
    /// or rotation, the new one.
    pub handle: String,
    /// The session's user, if one is bound.
    pub user_id: Option<String>,
    /// When, by the store's clock.
    #[serde(serialize_with = "super::devices::rfc3339_ser")]
    pub at: SystemTime,
    /// Which instance caused it (see `SessionConfigBuilder::instance_name`); for `expired`,
    /// the one whose sweeper found it.
    pub instance: String,
    /// For a login or rotation: the handle before (none when the session was created by it).
    pub previous_handle: Option<String>,
}

impl Event {
    fn from_stored((cursor, f): StoredEvent) -> Option<Event> {
        let text = |k: &str| f.get(k).filter(|v| !v.is_empty()).cloned();
        Some(Event {
            kind: EventKind::parse(f.get("type")?)?,
            handle: f.get("handle")?.clone(),
            user_id: text("user"),
            at: time_of_ms(f.get("at")?)?,
            instance: f.get("instance").cloned().unwrap_or_default(),
            previous_handle: text("previous"),
            cursor,
        })
    }
}

/// A page of events ([`SessionManager::read_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<Event>,
    /// Where the next read starts: the last event's cursor, or the one passed in when there
    /// was none.
    pub cursor: String,
    /// Events after the cursor passed in were already dropped by the retention
    /// (`SessionConfigBuilder::events_retention`): this reader missed some.
    pub missed: bool,
}

/// A stream of events ([`SessionManager::events`]): `futures::Stream<Item = Result<Event>>`.
pub type EventStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Event>> + Send + 'static>>;

/// A running callback ([`SessionManager::on_event`]); dropping it stops it.
#[derive(Debug)]
pub struct EventSubscription {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds the batches the lifecycle publishes.
pub(super) fn event(kind: EventKind, member: &str, user: Option<&str>, claim: bool) -> NewEvent {
    NewEvent {
        kind: kind.as_str(),
        member: member.to_string(),
        handle: handle_of(member),
        user: user.unwrap_or_default().to_string(),
        previous: String::new(),
        claim,
    }
}

impl ManagerInner {
    pub(super) fn events_config(&self) -> Option<&EventsConfig> {
        self.config.events.as_ref()
    }

    pub(super) fn event_keys(&self) -> &EventKeys {
        &self.event_keys
    }

    /// Runs one batch of the events script: what every publish goes through (counted in
    /// [`metrics`](crate::metrics)).
    pub(super) async fn publish(
        &self,
        cfg: &EventsConfig,
        batch: &EventBatch,
    ) -> Result<Vec<Option<String>>> {
        let ids = self
            .store
            .events_apply(self.event_keys(), cfg.retention, &cfg.instance, batch)
            .await?;
        crate::metrics::published(&batch.events, &ids);
        Ok(ids)
    }

    /// How long from now the expiry set may wait before it looks at a session: the TTL the
    /// session has under `t`, *its own* timing (`Session::timing_for`: a "remember me" expiry
    /// shorter than the idle timeout included), since its creation at `created_ms` (`None`:
    /// created now), capped by its absolute deadline (0 once that has passed). A tracking must
    /// never be due after the session's expiry: the sweeper moves an early one on when it
    /// finds the session alive, but a late one is a late `expired` event. (The configured
    /// idle timeout here published short remember-me sessions up to an idle timeout late.)
    pub(super) fn tracked_ttl_ms(&self, t: Timing, created_ms: Option<u64>) -> u64 {
        let (now, created) = match created_ms {
            Some(c) => (
                self.store.server_now().unwrap_or_else(crate::store::now_ms),
                c,
            ),
            None => (0, 0),
        };
        crate::store::ttl_ms(now, created, t).unwrap_or(0)
    }
}

impl super::Session {
    /// A new session was written with timing `t`: track it in the expiry set until its own
    /// expiry and publish `created`.
    pub(super) async fn publish_created(
        &self,
        st: &super::state::State,
        member: &str,
        t: Timing,
    ) -> Result<()> {
        let mgr = self.mgr();
        let user = super::state::user_of(&st.data);
        let batch = EventBatch {
            track: vec![(
                member.to_string(),
                mgr.inner.tracked_ttl_ms(t, None),
                user.clone().unwrap_or_default(),
            )],
            events: vec![event(EventKind::Created, member, user.as_deref(), false)],
            ..EventBatch::default()
        };
        mgr.publish(&batch).await.map(|_| ())
    }

    /// A stored session's write changed its own expiry (`set_expiry`), which sets its TTL
    /// anew (write.lua), possibly shorter than its tracking: the tracking moves to the new
    /// expiry (ZADD XX: not if the session was ended meanwhile).
    pub(super) async fn retrack_expiry(&self, st: &super::state::State, member: &str, t: Timing) {
        let mgr = self.mgr();
        let created = crate::store::fields::ms(&st.data, crate::store::fields::CREATED);
        let batch = EventBatch {
            rescore: vec![(member.to_string(), mgr.inner.tracked_ttl_ms(t, created))],
            ..EventBatch::default()
        };
        mgr.publish_after(batch).await
    }
}

impl SessionManager {
    /// Whether lifecycle events are on.
    pub(super) fn events_on(&self) -> bool {
        self.inner.config.events.is_some()
    }

    /// Publishes a batch (a no-op with events off); the ids of the published events.
    pub(super) async fn publish(&self, batch: &EventBatch) -> Result<Vec<Option<String>>> {
        let Some(cfg) = self.inner.events_config() else {
            return Ok(Vec::new());
        };
        self.inner.publish(cfg, batch).await
    }

    /// Publishes what follows a change that is already made: tried again once if it was not
    /// sent; a failure is logged (the change stands; that event is lost).
    pub(super) async fn publish_after(&self, batch: EventBatch) {
        if !self.events_on() || batch.is_empty() {
            return;
        }
        let mut last = None;
        for _ in 0..2 {
            match self.publish(&batch).await {
                Ok(_) => return,
                // Not sent: safe to try again. One that may have run is not repeated (its
                // events would be published twice).
                Err(e @ Error::Unavailable(_)) => last = Some(e),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        if !batch.untrack.is_empty() || !batch.rescore.is_empty() || !batch.confirm.is_empty() {
            // Whatever happened to the events, the tracking must follow the change (an old id
            // left tracked would later be published `expired` while its session lives on):
            // untrack and rescore alone are safe to repeat.
            let tracking = EventBatch {
                untrack: batch.untrack.clone(),
                rescore: batch.rescore.clone(),
                confirm: batch.confirm.clone(),
                ..EventBatch::default()
            };
            for _ in 0..3 {
                if self.publish(&tracking).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if let Some(e) = last {
            let kinds: Vec<&str> = batch.events.iter().map(|e| e.kind).collect();
            tracing::warn!(target: "tessera::events", error = %e, ?kinds, "could not publish session events after the change was made; they are lost");
        }
    }

    /// Publishes the end of sessions that this instance ended (each only if no one else
    /// published its end: see the module's comment).
    pub(super) async fn publish_ends(&self, kind: EventKind, members: &[String]) {
        crate::metrics::ended(kind, members.len());
        let batch = EventBatch {
            events: members.iter().map(|m| event(kind, m, None, true)).collect(),
            ..EventBatch::default()
        };
        self.publish_after(batch).await
    }

    /// The 'ended' mark a request's delete leaves (0 with events off).
    pub(super) fn ended_mark_ms(&self) -> u64 {
        if self.events_on() {
            ENDED_MARK_MS
        } else {
            0
        }
    }

    pub(super) fn require_events(&self) -> Result<&EventsConfig> {
        self.inner.events_config().ok_or(Error::EventsOff)
    }

    /// Reads up to `limit` events after `after` (a cursor from an earlier [`Event`] or
    /// [`EventPage`]; `None`: from the oldest retained), oldest first. Every instance reads
    /// every instance's events; a consumer that stores its cursor resumes after a restart
    /// without losing any, as long as it is back within the retention.
    ///
    /// With the memory store, events stay in this process.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{EventKind, Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).lifecycle_events(true).build().unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// let session = manager.start(None::<&str>);
    /// session.login("ann").await?;
    /// let page = manager.read_events(None, 100).await?;
    /// let kinds: Vec<EventKind> = page.events.iter().map(|e| e.kind).collect();
    /// assert_eq!(kinds, [EventKind::Created, EventKind::Login]);
    /// let next = manager.read_events(Some(&page.cursor), 100).await?;
    /// assert!(next.events.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn read_events(&self, after: Option<&str>, limit: usize) -> Result<EventPage> {
        self.require_events()?;
        let from = match after.filter(|a| !a.is_empty() && *a != "0") {
            Some(a) => Some(parse_cursor(a).ok_or_else(|| Error::InvalidCursor(a.to_string()))?),
            None => None,
        };
        let limit = limit.clamp(1, 10_000);
        let (stored, missed) = self
            .inner
            .store
            .events_read(self.inner.event_keys(), from, limit)
            .await?;
        let last = stored.last().map(|(id, _)| id.clone());
        let events: Vec<Event> = stored.into_iter().filter_map(Event::from_stored).collect();
        Ok(EventPage {
            cursor: last.unwrap_or_else(|| after.unwrap_or("0").to_string()),
            events,
            missed,
        })
    }

    /// The newest `limit` events (at most 1,000), newest first: what an operator's page
    /// shows. One command (`XREVRANGE`). [`Error::EventsOff`] without lifecycle events.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{EventKind, Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).lifecycle_events(true).build().unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// manager.start(None::<&str>).login("ann").await?;
    /// let latest = manager.latest_events(1).await?;
    /// assert_eq!(latest[0].kind, EventKind::Login);
    /// # Ok(()) }
    /// ```
    pub async fn latest_events(&self, limit: usize) -> Result<Vec<Event>> {
        self.require_events()?;
        let stored = self
            .inner
            .store
            .events_latest(self.inner.event_keys(), limit.clamp(1, 1_000))
            .await?;
        Ok(stored.into_iter().filter_map(Event::from_stored).collect())
    }

    /// How many sessions are live now, across every instance: the size of the expiry set
    /// that lifecycle events keep (one command, `ZCARD`, on one key; no key scan). A session
    /// that expired is counted until the sweep that publishes its `expired` event (within
    /// the [sweep interval](crate::SessionConfigBuilder::expiry_sweep_interval)); a login
    /// in progress may count twice for a moment. [`Error::EventsOff`] without lifecycle
    /// events (nothing else counts sessions without a scan).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).lifecycle_events(true).build().unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// manager.start(None::<&str>).login("ann").await?;
    /// manager.start(None::<&str>).login("bob").await?;
    /// assert_eq!(manager.count_live_sessions().await?, 2);
    /// # Ok(()) }
    /// ```
    pub async fn count_live_sessions(&self) -> Result<usize> {
        self.require_events()?;
        self.inner
            .store
            .tracked_count(self.inner.event_keys())
            .await
    }

    /// Every event after `after`, as they come (polled every 200 ms while there are none): a
    /// `futures::Stream` that never ends by itself. A store error is yielded as an item and
    /// the stream goes on from the same cursor; events dropped by the retention before they
    /// were read are reported once as [`Error::EventsMissed`], then the stream goes on with
    /// the oldest retained.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use futures_util::StreamExt;
    /// # let config = tessera_core::SessionConfig::builder(tessera_core::Key::generate()).lifecycle_events(true).build().unwrap();
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), config);
    /// let mut events = manager.events(None);
    /// manager.start(None::<&str>).login("ann").await?;
    /// let first = events.next().await.unwrap()?;
    /// assert_eq!(first.kind, tessera_core::EventKind::Created);
    /// # Ok(()) }
    /// ```
    pub fn events(&self, after: Option<String>) -> EventStream {
        let manager = self.clone();
        let state = (manager, after, std::collections::VecDeque::<Event>::new());
        Box::pin(futures_util::stream::unfold(
            state,
            |(manager, mut cursor, mut buffered)| async move {
                loop {
                    if let Some(e) = buffered.pop_front() {
                        return Some((Ok(e), (manager, cursor, buffered)));
                    }
                    match manager.read_events(cursor.as_deref(), 100).await {
                        Ok(page) => {
                            let moved = cursor.as_deref() != Some(page.cursor.as_str());
                            cursor = Some(page.cursor);
                            buffered.extend(page.events);
                            if page.missed {
                                return Some((
                                    Err(Error::EventsMissed),
                                    (manager, cursor, buffered),
                                ));
                            }
                            if !moved {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                        Err(e) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            return Some((Err(e), (manager, cursor, buffered)));
                        }
                    }
                }
            },
        ))
    }

    /// Calls `f` with every event after `after`, in order, on a task of its own, until the
    /// returned subscription is dropped. Errors reading the store are logged and retried.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let config = tessera_core::SessionConfig::builder(tessera_core::Key::generate()).lifecycle_events(true).build().unwrap();
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), config);
    /// let subscription = manager.on_event(None, |e| println!("{} {}", e.kind.as_str(), e.handle));
    /// drop(subscription); // stops it
    /// # }
    /// ```
    pub fn on_event<F>(&self, after: Option<String>, mut f: F) -> EventSubscription
    where
        F: FnMut(Event) + Send + 'static,
    {
        use futures_util::StreamExt as _;
        let mut stream = self.events(after);
        EventSubscription {
            task: tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(e) => f(e),
                        Err(e) => {
                            tracing::warn!(target: "tessera::events", error = %e, "reading session events failed; retrying")
                        }
                    }
                }
            }),
        }
    }
}
