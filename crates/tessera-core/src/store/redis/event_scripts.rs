//! Lifecycle events on Redis: the scripts `events.lua`, `events_due.lua`, `events_read.lua`
//! (one hash tag, one slot) and `probe.lua` (on session keys); keyspace notifications of
//! expired keys are in `notices.rs`.

use super::protocol::{self, unexpected, EVENTS, EVENTS_DUE, EVENTS_READ, PROBE};
use super::RedisBackend;
use crate::error::Result;
use crate::store::contract::EventOps;
use crate::store::event_keys::{EventBatch, EventKeys, ExpiryWatch, Probe, StoredEvent};
use fred::prelude::*;
use std::collections::HashMap;

impl EventOps for RedisBackend {
    /// events.lua on the events' keys (one slot).
    async fn events_apply(
        &self,
        keys: &EventKeys,
        retention: usize,
        instance: &str,
        batch: &EventBatch,
    ) -> Result<Vec<Option<String>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded_write(async {
            let args = protocol::events_args(retention, instance, batch);
            let k = [
                keys.stream.as_str(),
                keys.expiry.as_str(),
                keys.users.as_str(),
                keys.pending.as_str(),
            ];
            let reply: Vec<Value> = self.eval_write_keys(&EVENTS, &k, args, 0).await?;
            Ok(reply.into_iter().skip(1).map(Value::into_string).collect())
        })
        .await
    }

    /// events_read.lua.
    async fn events_read(
        &self,
        keys: &EventKeys,
        after: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, bool)> {
        self.bounded(async {
            let start = match after {
                Some((ms, seq)) => format!("({ms}-{seq}"),
                None => "-".into(),
            };
            let reply = self
                .eval_read(
                    &EVENTS_READ,
                    &keys.stream,
                    protocol::events_read_args(start, limit),
                )
                .await?;
            let Value::Array(mut parts) = reply else {
                return Err(unexpected("events_read replied with a non-array".into()));
            };
            if parts.len() != 3 {
                return Err(unexpected(format!("events_read replied {parts:?}")));
            }
            let entries = parts.pop().expect("len checked");
            let id = |v: Option<Value>| {
                v.and_then(Value::into_string)
                    .and_then(|d| crate::store::event_keys::parse_id(&d))
            };
            let first_prev = id(parts.pop());
            let first = id(parts.pop());
            let missed = match (after, first, first_prev) {
                (Some(a), Some(f), Some(p)) => f > a && p > a,
                _ => false,
            };
            let Value::Array(entries) = entries else {
                return Ok((Vec::new(), missed));
            };
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                let Value::Array(mut pair) = e else { continue };
                if pair.len() != 2 {
                    continue;
                }
                let flat = pair.pop().expect("len checked");
                let Some(id) = pair.pop().and_then(Value::into_string) else {
                    continue;
                };
                let mut fields = HashMap::new();
                if let Value::Array(kv) = flat {
                    let mut it = kv.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        if let (Some(k), Some(v)) = (k.into_string(), v.into_string()) {
                            fields.insert(k, v);
                        }
                    }
                }
                out.push((id, fields));
            }
            Ok((out, missed))
        })
        .await
    }

    /// events_due.lua (with the sweep lease).
    async fn expiry_due(
        &self,
        keys: &EventKeys,
        instance: &str,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Option<Vec<String>>> {
        self.bounded_write(async {
            let args = protocol::events_due_args(instance, lease_ms, limit);
            let k = [keys.expiry.as_str(), keys.lease.as_str()];
            let reply: Vec<Value> = self.eval_write_keys(&EVENTS_DUE, &k, args, 0).await?;
            if lease_ms > 0 && reply.len() == 1 {
                // Answered only the time: another instance holds the lease (or nothing is due,
                // which the caller treats the same way: nothing to do now).
                return Ok(None);
            }
            Ok(Some(
                reply
                    .into_iter()
                    .skip(1)
                    .filter_map(Value::into_string)
                    .collect(),
            ))
        })
        .await
    }

    /// `probe.lua` on each key, sent together (one round trip; each its own slot).
    async fn probe_many(&self, keys: &[String]) -> Result<Vec<Probe>> {
        self.bounded(async {
            let probes = keys.iter().map(|k| async move {
                // A key that is not a hash answers {3} (probe.lua checks its type): one odd key
                // cannot stop every later sweep.
                protocol::parse_probe(self.eval_read(&PROBE, k, Vec::new()).await?)
            });
            futures_util::future::join_all(probes)
                .await
                .into_iter()
                .collect()
        })
        .await
    }

    /// Subscribes where the server sends expired-key events (see `notices.rs`).
    async fn watch_expiries(
        &self,
        prefix: String,
        expired: tokio::sync::mpsc::Sender<String>,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Option<ExpiryWatch> {
        self.subscribe_expiries(prefix, expired, wake).await
    }
}
