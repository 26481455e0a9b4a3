//! Lifecycle events on Redis: the scripts `events.lua`, `events_due.lua`, `events_read.lua`
//! (one hash tag, one slot) and `probe.lua` (on session keys); keyspace notifications of
//! expired keys are in `notices.rs`.

use super::protocol::{code, unexpected, EVENTS, EVENTS_DUE, EVENTS_READ, PROBE};
use super::RedisBackend;
use crate::error::Result;
use crate::store::contract::EventOps;
use crate::store::event_keys::{EventBatch, EventKeys, ExpiryWatch, Probe, StoredEvent};
use fred::prelude::*;
use std::collections::HashMap;

fn int(n: u64) -> Value {
    Value::from(n.min(i64::MAX as u64) as i64)
}

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
            let mut args: Vec<Value> = vec![int(retention as u64), instance.into()];
            args.push(int((batch.track.len() + batch.track_pending.len()) as u64));
            let tracks = batch.track.iter().map(|t| (t, "0"));
            for ((m, ttl, user), pending) in
                tracks.chain(batch.track_pending.iter().map(|t| (t, "1")))
            {
                args.extend([
                    m.as_str().into(),
                    int(*ttl),
                    user.as_str().into(),
                    pending.into(),
                ]);
            }
            args.push(int(batch.confirm.len() as u64));
            args.extend(batch.confirm.iter().map(|m| Value::from(m.as_str())));
            args.push(int(batch.untrack.len() as u64));
            args.extend(batch.untrack.iter().map(|m| Value::from(m.as_str())));
            args.push(int(batch.rescore.len() as u64));
            for (m, ttl) in &batch.rescore {
                args.extend([m.as_str().into(), int(*ttl)]);
            }
            args.push(int(batch.events.len() as u64));
            for e in &batch.events {
                args.extend([
                    e.kind.into(),
                    e.member.as_str().into(),
                    e.handle.as_str().into(),
                    e.user.as_str().into(),
                    e.previous.as_str().into(),
                    if e.claim { "1" } else { "0" }.into(),
                ]);
            }
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
                    vec![start.into(), int(limit as u64)],
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
            let args: Vec<Value> = vec![instance.into(), int(lease_ms), int(limit as u64)];
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
                let reply = self.eval_read(&PROBE, k, Vec::new()).await?;
                let parts = match reply {
                    Value::Array(p) => p,
                    other => return Err(unexpected(format!("probe replied {other:?}"))),
                };
                Ok(match parts.first().and_then(Value::as_i64) {
                    Some(code::GONE) => Probe::Gone,
                    Some(code::DONE) => {
                        Probe::Live(parts.get(1).and_then(Value::as_i64).unwrap_or(0).max(0) as u64)
                    }
                    Some(code::ENDED_MARK) => Probe::Ended,
                    Some(code::NOT_A_SESSION) => Probe::Moved,
                    _ => return Err(unexpected(format!("probe replied {parts:?}"))),
                })
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
