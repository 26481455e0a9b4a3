//! Lifecycle events on Redis: the scripts `events.lua`, `events_due.lua`, `events_read.lua`
//! (one hash tag, one slot) and `probe.lua` (on session keys); keyspace notifications of
//! expired keys are in `notices.rs`.

use super::protocol::{self, unexpected, EVENTS, EVENTS_DUE, EVENTS_READ, PROBE};
use super::RedisBackend;
use crate::error::Error;
use crate::error::Result;
use crate::store::contract::EventOps;
use crate::store::event_keys::{Due, EventBatch, EventKeys, ExpiryWatch, Probe, StoredEvent};
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
            Ok((stream_entries(entries), missed))
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
    ) -> Result<Option<Due>> {
        self.bounded_write(async {
            let args = protocol::events_due_args(instance, lease_ms, limit);
            let k = [keys.expiry.as_str(), keys.lease.as_str()];
            let reply: Vec<Value> = self.eval_write_keys(&EVENTS_DUE, &k, args, 0).await?;
            if lease_ms > 0 && reply.len() == 1 {
                // Answered only the time: another instance holds the lease (or nothing is due,
                // which the caller treats the same way: nothing to do now).
                return Ok(None);
            }
            let mut it = reply.into_iter();
            let now = it.next().and_then(|v| v.as_u64()).unwrap_or(0);
            let mut members = Vec::new();
            while let (Some(m), Some(s)) = (it.next(), it.next()) {
                let (Some(m), Some(s)) = (m.into_string(), s.as_string()) else {
                    return Err(unexpected(
                        "events_due replied a member without its score".into(),
                    ));
                };
                members.push((m, s.parse::<f64>().unwrap_or(0.0) as u64));
            }
            Ok(Some(Due { now, members }))
        })
        .await
    }

    /// `XREVRANGE stream + - COUNT limit`.
    async fn events_latest(&self, keys: &EventKeys, limit: usize) -> Result<Vec<StoredEvent>> {
        self.bounded(async {
            let key = keys.stream.as_str();
            let count = limit.to_string();
            let count = count.as_str();
            let reply: Value = Box::pin(self.on_key(key, |c| async move {
                let cmd = fred::types::CustomCommand::new_static(
                    "XREVRANGE",
                    fred::types::ClusterHash::from(key),
                    false,
                );
                c.with_options(&self.read_opts)
                    .custom(cmd, vec![key, "+", "-", "COUNT", count])
                    .await
            }))
            .await
            .map_err(Error::from_fred)?;
            Ok(stream_entries(reply))
        })
        .await
    }

    /// `ZCARD` of the expiry set.
    async fn tracked_count(&self, keys: &EventKeys) -> Result<usize> {
        self.bounded(async {
            let key = keys.expiry.as_str();
            Box::pin(self.on_key(key, |c| async move {
                c.with_options(&self.read_opts).zcard::<u64, _>(key).await
            }))
            .await
            .map(|n| n as usize)
            .map_err(Error::from_fred)
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

/// A stream range reply (`[[id, [field, value, ...]], ...]`) as stored events; what is not an
/// entry is skipped.
fn stream_entries(entries: Value) -> Vec<StoredEvent> {
    let Value::Array(entries) = entries else {
        return Vec::new();
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
    out
}
