//! The expiry sweeper: turns expiries nobody caused into `expired` events, exactly once. It
//! takes the tracked members whose expected expiry has passed (under a lease, one instance at
//! a time), probes their keys and settles them in one script; keyspace notifications of
//! expired keys, where the server sends them, wake it at once.

use super::lifecycle::{event, ENDED_MARK_MS};
use super::manager::ManagerInner;
use super::{EventKind, SessionManager};
use crate::error::Result;
use crate::store::events::{EventBatch, Probe};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How many tracked sessions one sweep step handles.
const SWEEP_BATCH: usize = 500;

impl SessionManager {
    /// Runs one expiry sweep now, on this instance, whether or not another holds the sweep
    /// lease: publishes `expired` for every tracked session whose key is gone and whose end no
    /// one published. Returns how many it published. The background sweeper (started with the
    /// first request when events are on) does this every `expiry_sweep_interval`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .lifecycle_events(true)
    ///     .build()
    ///     .unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// manager.start(None::<&str>).login("ada").await?;
    /// // A test or a maintenance task, without waiting for the background sweeper:
    /// let published = manager.sweep_expired().await?;
    /// assert_eq!(published, 0); // Ada's session has not expired
    /// # Ok(()) }
    /// ```
    pub async fn sweep_expired(&self) -> Result<usize> {
        self.require_events()?;
        sweep(&self.inner, false).await
    }

    /// Starts the background sweeper once (needs a Tokio runtime; called by `start`).
    pub(super) fn ensure_sweeper(&self) {
        let Some(cfg) = self.inner.events_config() else {
            return;
        };
        if self.inner.sweeper.get().is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let every = cfg.sweep_interval;
        let weak: Weak<ManagerInner> = Arc::downgrade(&self.inner);
        let store = self.inner.store.clone();
        let prefix = crate::layout::keys::session_prefix(self.inner.config.namespace());
        let _ = self.inner.sweeper.get_or_init(|| {
            tokio::spawn(async move {
                // Where the server reports expired keys, each report wakes the sweep at once.
                let wake = Arc::new(tokio::sync::Notify::new());
                let (tx, mut expired) = tokio::sync::mpsc::channel::<String>(10_000);
                // A store that started before its server: nothing to sweep, and nothing to
                // watch, until it is connected.
                while !store.is_connected() {
                    if weak.strong_count() == 0 {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                let watch = store.watch_expiries(prefix, tx, wake.clone()).await;
                drop(store);
                if watch.is_none() {
                    tracing::info!(target: "tessera::events", every = ?every, "no keyspace notifications of expired keys: expiries are swept on the interval");
                }
                let _watch = watch;
                // One interval for the whole life of the sweeper: reported expiries are settled
                // as they come and never push the periodic sweep back (it also finds what no
                // notification reports: evictions, nodes added later, reports lost in a
                // reconnect).
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    let mut reported = Vec::new();
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = wake.notified() => {}
                        Some(member) = expired.recv() => {
                            // Expiries come in bursts: settle those of the next moment together.
                            reported.push(member);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            while reported.len() < SWEEP_BATCH {
                                match expired.try_recv() {
                                    Ok(m) => reported.push(m),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    let Some(inner) = weak.upgrade() else { return };
                    if !reported.is_empty() {
                        if let Err(e) = settle_members(&inner, &reported).await {
                            tracing::warn!(target: "tessera::events", error = %e, "settling reported expiries failed; the sweep finds them");
                        }
                        continue;
                    }
                    if let Err(e) = sweep(&inner, true).await {
                        tracing::warn!(target: "tessera::events", error = %e, "expiry sweep failed; trying again next round");
                    }
                }
            })
            .abort_handle()
        });
    }
}

/// One sweep: the due members in batches, each probed and then settled in one script.
async fn sweep(inner: &ManagerInner, lease: bool) -> Result<usize> {
    let Some(cfg) = inner.events_config() else {
        return Ok(0);
    };
    let lease_ms = if lease {
        (cfg.sweep_interval.as_millis() as u64).saturating_mul(2)
    } else {
        0
    };
    let mut published = 0;
    let mut first = true;
    loop {
        let due = inner
            .store
            .expiry_due(inner.event_keys(), &cfg.instance, lease_ms, SWEEP_BATCH)
            .await?;
        if let (true, Some(d)) = (first, &due) {
            // This instance sweeps (another's lease answers `None`): the oldest due member
            // comes first, how late this sweep is.
            crate::metrics::sweeper_lag(d.lag_ms());
        }
        first = false;
        let Some(due) = due.filter(|d| !d.members.is_empty()) else {
            return Ok(published);
        };
        let members: Vec<String> = due.members.into_iter().map(|(m, _)| m).collect();
        published += settle_members(inner, &members).await?;
        if members.len() < SWEEP_BATCH {
            return Ok(published);
        }
    }
}

/// Probes each member's session key and settles it in one script: alive ones move to their
/// expiry, retired ones stop being tracked, gone ones are published `expired` (by whoever
/// removes them from the expiry set; a member no longer tracked publishes nothing). How many
/// `expired` were published.
async fn settle_members(inner: &ManagerInner, members: &[String]) -> Result<usize> {
    let Some(cfg) = inner.events_config() else {
        return Ok(0);
    };
    let keys: Vec<String> = members
        .iter()
        .map(|m| inner.config.session_key(m))
        .collect();
    let probes = inner.store.probe_many(&keys).await?;
    let mut batch = EventBatch::default();
    for (m, p) in members.iter().zip(probes) {
        match p {
            // Rescored only if still tracked (ZADD XX).
            Probe::Live(ms) => batch.rescore.push((m.clone(), ms.max(1_000))),
            // The request that ended it publishes its end within moments: look again after
            // the mark would have gone (if that request died, this is then an expiry).
            Probe::Ended => batch.rescore.push((m.clone(), ENDED_MARK_MS)),
            Probe::Moved => batch.untrack.push(m.clone()),
            Probe::Gone => batch.events.push(event(EventKind::Expired, m, None, true)),
        }
    }
    let ids = inner.publish(cfg, &batch).await?;
    Ok(ids.iter().filter(|i| i.is_some()).count())
}
