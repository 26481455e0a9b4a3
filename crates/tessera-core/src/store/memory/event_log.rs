//! Lifecycle events on the memory store: the stream, the expiry set and the users of tracked
//! sessions, with the rules of `events.lua`, in this process only (each process has its own).

use super::super::contract::EventOps;
use super::super::event_keys::{Due, EventBatch, EventKeys, ExpiryWatch, Probe, StoredEvent};
use super::super::{fields, now_ms};
use super::keyspace::{is_ended, is_tombstone, Value};
use super::MemoryBackend;
use crate::error::Result;
use std::collections::{BTreeSet, HashMap, VecDeque};

#[derive(Debug, Default)]
pub(super) struct MemEvents {
    stream: VecDeque<((u64, u64), HashMap<String, String>)>,
    last_id: (u64, u64),
    /// The newest id dropped by the retention.
    max_deleted: Option<(u64, u64)>,
    /// member -> score, and (score, member) in order.
    scores: HashMap<String, u64>,
    due: BTreeSet<(u64, String)>,
    users: HashMap<String, String>,
    pending: std::collections::HashSet<String>,
}

impl MemEvents {
    fn zadd(&mut self, member: &str, score: u64) {
        if let Some(old) = self.scores.insert(member.to_string(), score) {
            self.due.remove(&(old, member.to_string()));
        }
        self.due.insert((score, member.to_string()));
    }

    fn zrem(&mut self, member: &str) -> bool {
        match self.scores.remove(member) {
            Some(old) => {
                self.due.remove(&(old, member.to_string()));
                true
            }
            None => false,
        }
    }
}

impl MemoryBackend {
    fn events(&self) -> std::sync::MutexGuard<'_, MemEvents> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventOps for MemoryBackend {
    /// Mirrors events.lua: untrack, rescore, track, publish, in this order.
    async fn events_apply(
        &self,
        _keys: &EventKeys,
        retention: usize,
        instance: &str,
        batch: &EventBatch,
    ) -> Result<Vec<Option<String>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut ev = self.events();
        let now = now_ms();
        for m in &batch.confirm {
            ev.pending.remove(m);
        }
        for m in &batch.untrack {
            ev.zrem(m);
            ev.users.remove(m);
            ev.pending.remove(m);
        }
        for (m, ttl) in &batch.rescore {
            if ev.scores.contains_key(m) {
                ev.zadd(m, now.saturating_add(*ttl));
            }
        }
        let tracks = batch.track.iter().map(|t| (t, false));
        for ((m, ttl, user), pending) in tracks.chain(batch.track_pending.iter().map(|t| (t, true)))
        {
            ev.zadd(m, now.saturating_add(*ttl));
            if !user.is_empty() {
                ev.users.insert(m.clone(), user.clone());
            }
            if pending {
                ev.pending.insert(m.clone());
            }
        }
        let mut out = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            let mut user = e.user.clone();
            if e.claim {
                if !ev.zrem(&e.member) {
                    out.push(None);
                    continue;
                }
                let stored = ev.users.remove(&e.member);
                if user.is_empty() {
                    user = stored.unwrap_or_default();
                }
                // A pending id found gone by the sweeper: its login never completed.
                if ev.pending.remove(&e.member) && e.kind == "expired" {
                    out.push(None);
                    continue;
                }
            }
            let id = if now > ev.last_id.0 {
                (now, 0)
            } else {
                (ev.last_id.0, ev.last_id.1 + 1)
            };
            ev.last_id = id;
            let fields = HashMap::from([
                ("type".to_string(), e.kind.to_string()),
                ("handle".to_string(), e.handle.clone()),
                ("user".to_string(), user),
                ("at".to_string(), now.to_string()),
                ("instance".to_string(), instance.to_string()),
                ("previous".to_string(), e.previous.clone()),
            ]);
            ev.stream.push_back((id, fields));
            while ev.stream.len() > retention.max(1) {
                if let Some((gone, _)) = ev.stream.pop_front() {
                    ev.max_deleted = Some(gone);
                }
            }
            out.push(Some(format!("{}-{}", id.0, id.1)));
        }
        Ok(out)
    }

    /// Mirrors events_read.lua.
    async fn events_read(
        &self,
        _keys: &EventKeys,
        after: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, bool)> {
        let ev = self.events();
        let missed = match (after, ev.max_deleted) {
            (Some(a), Some(d)) => d > a,
            (None, Some(_)) => false,
            _ => false,
        };
        let page = ev
            .stream
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| *id > a))
            .take(limit)
            .map(|(id, f)| (format!("{}-{}", id.0, id.1), f.clone()))
            .collect();
        Ok((page, missed))
    }

    /// Mirrors events_due.lua without the lease (one process sweeps its own store).
    async fn expiry_due(
        &self,
        _keys: &EventKeys,
        _instance: &str,
        _lease_ms: u64,
        limit: usize,
    ) -> Result<Option<Due>> {
        let now = now_ms();
        let members = self
            .events()
            .due
            .iter()
            .take_while(|(score, _)| *score <= now)
            .take(limit)
            .map(|(score, m)| (m.clone(), *score))
            .collect();
        Ok(Some(Due { now, members }))
    }

    /// Mirrors `XREVRANGE`.
    async fn events_latest(&self, _keys: &EventKeys, limit: usize) -> Result<Vec<StoredEvent>> {
        Ok(self
            .events()
            .stream
            .iter()
            .rev()
            .take(limit)
            .map(|(id, f)| (format!("{}-{}", id.0, id.1), f.clone()))
            .collect())
    }

    /// Mirrors `ZCARD` of the expiry set.
    async fn tracked_count(&self, _keys: &EventKeys) -> Result<usize> {
        Ok(self.events().scores.len())
    }

    /// Mirrors probe.lua, key by key.
    async fn probe_many(&self, keys: &[String]) -> Result<Vec<Probe>> {
        Ok(keys.iter().map(|k| self.probe_one(k)).collect())
    }

    /// None: the memory store's sweeper runs on its interval.
    async fn watch_expiries(
        &self,
        _prefix: String,
        _expired: tokio::sync::mpsc::Sender<String>,
        _wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Option<ExpiryWatch> {
        None
    }
}

impl MemoryBackend {
    /// probe.lua on one key.
    fn probe_one(&self, key: &str) -> Probe {
        let (mut map, now) = self.lock();
        let Some(e) = map.get(key) else {
            return Probe::Gone;
        };
        let left = e
            .expires
            .map(|(at, _)| at.saturating_duration_since(now).as_millis() as u64);
        match &e.value {
            Value::Hash(h) if h.contains_key(fields::CREATED) => Probe::Live(left.unwrap_or(0)),
            Value::Hash(h) if is_ended(h) && !is_tombstone(h) => Probe::Ended,
            _ => Probe::Moved,
        }
    }
}
