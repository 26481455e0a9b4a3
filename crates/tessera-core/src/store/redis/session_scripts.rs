//! The session hashes on Redis: each operation of the contract's `SessionOps` as the script
//! or command it sends (load.lua or a plain `HGETALL` through the near-cache, write.lua,
//! create.lua, freeze.lua, release.lua, set_if_absent.lua, end_if.lua, take.lua, `DEL`,
//! `HMGET`, `HGETALL`), each within its timeout (`send.rs`).

use super::near_cache::{Fields, Pending};
use super::protocol::{
    self, flat_fields, parse_load, value_bytes, CREATE, END_IF, FREEZE, LOAD, RELEASE,
    SET_IF_ABSENT, TAKE, WRITE,
};
use super::tracking::Cached;
use super::RedisBackend;
use crate::error::{Error, Result};
use crate::store::contract::SessionOps;
use crate::store::{
    fields, EndIf, Freeze, Load, NewSession, Picked, Release, SetIfAbsent, Timing, WriteOp,
    WriteResult,
};
use fred::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

impl SessionOps for RedisBackend {
    /// load.lua (the throttled refresh in the same round trip), or, when `known_fresh`, a
    /// plain `HGETALL` (none at all on a near-cache hit).
    async fn load(&self, key: &str, t: Timing, known_fresh: bool, use_cache: bool) -> Result<Load> {
        if !known_fresh {
            return self
                .bounded(async {
                    parse_load(self.eval_read(&LOAD, key, protocol::load_args(t)).await?)
                })
                .await;
        }
        let mut fill = use_cache;
        if use_cache && self.near_cache_on() {
            match self.cached(key, t).await {
                Cached::Hit(fields) => {
                    let mut load = Load::of_plain(fields);
                    if let Load::Found(l) = &mut load {
                        l.cached = true;
                    }
                    return Ok(load);
                }
                Cached::Miss => {}
                Cached::BarrierFailed => fill = false,
            }
        }
        // No clock comparison here: the absolute deadline also caps the key's TTL, so
        // the server removes the key by then.
        let fields = self.bounded(self.load_plain(key, fill)).await?;
        Ok(Load::of_plain(fields))
    }

    /// write.lua.
    async fn write(&self, key: &str, op: &WriteOp<'_>, t: Timing) -> Result<WriteResult> {
        self.write_to(key, async {
            let args = protocol::WriteArgs {
                op,
                timing: t,
                freeze_ms: self.freeze_ms,
                native_expiry: self.native_field_expiry,
            }
            .to_values();
            let reply: Vec<Value> = self
                .eval_write_until(&WRITE, key, args, op.not_after_ms as i64)
                .await?;
            protocol::parse_write(reply)
        })
        .await
    }

    /// create.lua: a fresh 128-bit id; its `EXISTS` (inside the script) finds only an 'ended'
    /// tombstone left for a create in flight, or an id collision.
    async fn create(&self, key: &str, op: &NewSession<'_>, t: Timing) -> Result<WriteResult> {
        // With the user's index: on one server, in the same script (one `EVALSHA`, both or
        // neither); on a cluster the two keys are two slots, so two scripts at once.
        if let (Some(ix), true) = (&op.index, self.is_cluster()) {
            return Box::pin(crate::store::contract::create_and_join(
                self, key, op, ix, t,
            ))
            .await;
        }
        let one = self
            .write_to(key, async {
                let NewSession {
                    set,
                    created_ms,
                    expire,
                    records,
                    not_after_ms,
                    index,
                } = *op;
                let args = protocol::create_args(
                    set,
                    created_ms,
                    expire,
                    records,
                    index.as_ref(),
                    self.native_field_expiry,
                    t,
                );
                let mut keys = vec![key];
                keys.extend(index.map(|ix| ix.key));
                let reply: Vec<Value> =
                    Box::pin(self.eval_write_keys(&CREATE, &keys, args, not_after_ms as i64))
                        .await?;
                protocol::parse_write(reply)
            })
            .await;
        match (one, &op.index) {
            // A server with cluster mode on reached as one server (a one-shard cluster that
            // owns every slot, behind a plain URL) refuses the two keys before running
            // anything: two scripts then, as on a cluster.
            (Err(crate::error::Error::Store(e)), Some(ix))
                if e.to_string().starts_with("CROSSSLOT") =>
            {
                tracing::debug!(error = %e, "the server refused a login's two keys in one script (cluster mode on): two scripts");
                Box::pin(crate::store::contract::create_and_join(
                    self, key, op, ix, t,
                ))
                .await
            }
            (one, _) => one,
        }
    }

    /// freeze.lua.
    async fn freeze(&self, key: &str, new_member: &str, t: Timing) -> Result<Freeze> {
        self.write_to(key, async {
            let args = protocol::freeze_args(new_member, self.freeze_ms, t);
            protocol::parse_freeze(self.eval_write(&FREEZE, key, args).await?)
        })
        .await
    }

    /// release.lua.
    async fn release(&self, key: &str, token: &str, retire: bool) -> Result<Release> {
        self.write_to(key, async {
            let args = protocol::release_args(token, retire);
            let reply: Vec<i64> = self.eval_write(&RELEASE, key, args).await?;
            Ok(protocol::parse_release(&reply))
        })
        .await
    }

    /// set_if_absent.lua.
    async fn set_if_absent(&self, key: &str, field: &str, value: &str) -> Result<SetIfAbsent> {
        self.write_to(key, async {
            let args = protocol::set_if_absent_args(field, value, self.freeze_ms);
            protocol::parse_set_if_absent(self.eval_write(&SET_IF_ABSENT, key, args).await?)
        })
        .await
    }

    /// end_if.lua.
    async fn end_if(
        &self,
        key: &str,
        field: &str,
        expected: Option<&[u8]>,
        tombstone_ms: u64,
    ) -> Result<EndIf> {
        self.write_to(key, async {
            let args = protocol::end_if_args(field, expected, tombstone_ms);
            protocol::parse_end_if(self.eval_write(&END_IF, key, args).await?)
        })
        .await
    }

    /// `DEL`.
    async fn delete(&self, key: &str) -> Result<bool> {
        self.write_to(key, async {
            let n: i64 = Box::pin(self.on_key_write(key, |c| async move {
                c.with_options(&self.write_opts).del(key).await
            }))
            .await
            .map_err(Error::from_fred)?;
            Ok(n > 0)
        })
        .await
    }

    /// One `DEL` per key, sent together on one connection (fred writes concurrent commands
    /// back to back: one round trip), each with `write_opts`: unlike a fred pipeline, a `DEL`
    /// whose deadline passed is never sent later.
    async fn delete_many(&self, keys: &[String]) -> Result<Vec<bool>> {
        let res = self
            .bounded_write(async {
                let dels = keys.iter().map(|k| {
                    self.on_key_write(k, move |c| async move {
                        c.with_options(&self.write_opts)
                            .del::<i64, _>(k.as_str())
                            .await
                    })
                });
                let all = futures_util::future::join_all(dels).await.into_iter();
                all_or_unknown(
                    all.map(|r| r.map(|n| n > 0).map_err(Error::from_fred)),
                    |deleted| *deleted,
                )
            })
            .await;
        for k in keys {
            self.changed(k);
        }
        res
    }

    /// take.lua on each key (one script per key, sent together).
    async fn take_many(
        &self,
        keys: &[String],
        names: &[&str],
        mark_ms: u64,
    ) -> Result<Vec<Picked>> {
        let res = self
            .bounded_write(async {
                let takes = keys.iter().map(|k| {
                    let args = protocol::take_args(mark_ms, names);
                    async move {
                        let reply: Vec<Value> = self.eval_write(&TAKE, k, args).await?;
                        Ok(protocol::parse_take(reply))
                    }
                });
                let all = futures_util::future::join_all(takes).await.into_iter();
                all_or_unknown(all, Option::is_some)
            })
            .await;
        for k in keys {
            self.changed(k);
        }
        res
    }

    /// `HMGET __c names...` of each key, pipelined (no `__c`: no session).
    async fn peek_many(&self, keys: &[String], names: &[&str]) -> Result<Vec<Picked>> {
        self.bounded(async {
            let mut all: Vec<&str> = vec![fields::CREATED];
            all.extend_from_slice(names);
            let rows = self.hmget_many(keys, &all).await?;
            Ok(rows
                .into_iter()
                .map(|r| match r {
                    Some(vals) if vals[0].is_some() => Some(vals.into_iter().skip(1).collect()),
                    _ => None, // no __c: no session
                })
                .collect())
        })
        .await
    }

    /// `HMGET names...` of each key, pipelined.
    async fn peek_raw(&self, keys: &[String], names: &[&str]) -> Result<Vec<Picked>> {
        self.bounded(self.hmget_many(keys, names)).await
    }

    /// One `HGETALL` per key, pipelined (one round trip).
    async fn read_many(&self, keys: &[String]) -> Result<Vec<HashMap<String, Vec<u8>>>> {
        self.bounded(async {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let replies = self.each_key(keys, "HGETALL", &[]).await?;
            replies
                .into_iter()
                .map(|r| r.map_err(Error::from_fred).and_then(flat_fields))
                .collect()
        })
        .await
    }
}

impl RedisBackend {
    /// A load known to need no TTL refresh: plain `HGETALL`, the cheapest read there is. With
    /// the near-cache on (and `fill`), it goes on a tracking connection and fills the cache.
    pub(crate) async fn load_plain(&self, key: &str, fill: bool) -> Result<Fields> {
        if let (Some(tracking), true) = (&self.tracking, fill) {
            if let Some(r) = tracking.cache.reserve(key) {
                // Released on every way out (an error, a reply that is no session, a dropped
                // future), so reservations never pile up.
                let guard = Pending::new(&tracking.cache, key, r);
                let client = tracking.pool.next_connected().with_options(&self.read_opts);
                match Box::pin(client.hgetall::<Value, _>(key)).await {
                    Ok(flat) => {
                        let fields = Arc::new(flat_fields(flat)?);
                        if fields.contains_key(fields::CREATED) {
                            guard.fill(&fields);
                        }
                        return Ok(fields);
                    }
                    // Refused at once (the tracking connection is down, or fred's cluster
                    // client met a redirect it does not follow: a slot migrating): the cache
                    // is only a shortcut, so read the key's own pool, without filling.
                    Err(e) if refused_at_once(&e) => drop(guard),
                    Err(e) => return Err(Error::from_fred(e)),
                }
            }
        }
        // fred's typed `hgetall`, not a custom command: fred flushes the socket after every
        // custom command (and every EVALSHA), but feeds a typed one and flushes once its queue
        // is empty, so concurrent reads share one write syscall. That was a fifth of a read's
        // CPU (BENCHMARKS.md, issue #25). Its reply is a map, which `flat_fields` moves over.
        let flat: Value = Box::pin(self.on_key(key, |c| async move {
            c.with_options(&self.read_opts).hgetall(key).await
        }))
        .await
        .map_err(Error::from_fred)?;
        flat_fields(flat).map(Arc::new)
    }

    /// `HMGET names` of each key, pipelined; `None` where the key holds none of them.
    pub(crate) async fn hmget_many(
        &self,
        keys: &[String],
        all: &[&str],
    ) -> Result<Vec<Option<Vec<Option<Vec<u8>>>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.each_key(keys, "HMGET", all).await?;
        let mut out = Vec::with_capacity(keys.len());
        for r in replies {
            let vals: Vec<Option<Vec<u8>>> = match r.map_err(Error::from_fred)? {
                Value::Array(vals) => vals.into_iter().map(value_bytes).collect(),
                Value::Null => vec![None; all.len()],
                other => {
                    return Err(Error::Store(crate::error::StoreError::new(format!(
                        "HMGET answered {other:?}"
                    ))))
                }
            };
            out.push(vals.iter().any(Option::is_some).then_some(vals));
        }
        Ok(out)
    }
}

/// An error that comes back before the command ran anywhere, or from a redirect: another
/// connection may still serve the read.
fn refused_at_once(e: &fred::error::Error) -> bool {
    use fred::error::ErrorKind as K;
    matches!(e.kind(), K::Cluster | K::Canceled | K::Routing)
}

/// The replies of several writes sent together, or the first failure: as
/// [`Error::OutcomeUnknown`] when another of them changed something (`changed`), since the
/// caller must not be told "nothing was changed" (a logout-all whose deletes landed on the
/// primaries that answered, while one was down).
fn all_or_unknown<T>(
    replies: impl Iterator<Item = Result<T>>,
    changed: impl Fn(&T) -> bool,
) -> Result<Vec<T>> {
    let (mut out, mut failed, mut any_changed) = (Vec::new(), None, false);
    for r in replies {
        match r {
            Ok(v) => {
                any_changed |= changed(&v);
                out.push(v);
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        None => Ok(out),
        Some(Error::Unavailable(cause)) if any_changed => Err(Error::OutcomeUnknown(cause)),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Error {
        Error::Unavailable(crate::error::StoreError::new("down"))
    }

    #[test]
    fn a_partial_failure_is_outcome_unknown_once_something_changed() {
        let ok = all_or_unknown([Ok(true), Ok(false)].into_iter(), |d| *d).unwrap();
        assert_eq!(ok, vec![true, false]);
        let none_changed = all_or_unknown([Ok(false), Err(down())].into_iter(), |d| *d);
        assert!(matches!(none_changed, Err(Error::Unavailable(_))));
        let some_changed = all_or_unknown([Err(down()), Ok(true)].into_iter(), |d| *d);
        assert!(matches!(some_changed, Err(Error::OutcomeUnknown(_))));
    }
}
