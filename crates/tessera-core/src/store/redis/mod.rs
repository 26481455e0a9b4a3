//! The Redis / Valkey backend on fred: one pool, single-key Lua scripts, bounded timeouts.
//!
//! `connect.rs` opens the pool; `protocol.rs` holds the scripts, their reply codes and reply
//! decoding; this file runs each store operation. The server check (`INFO`) is in
//! `../check.rs`.

mod connect;
mod events;
mod near_cache;
mod notices;
mod protocol;
mod search;

pub use self::connect::{NearCacheCoherence, RedisOptions};
pub use self::near_cache::NearCacheStats;
pub(crate) use self::notices::ExpiryWatch;
pub(crate) use self::search::QueryEngine;

use self::protocol::{
    code, expired, flat_fields, parse_load, unexpected, value_bytes, ServerClock, CREATE, END_IF,
    FIELD_ADD, FREEZE, INDEX_ADD, INDEX_PRUNE, LOAD, RELEASE, RETIRE_LEGACY, SET_IF_ABSENT, TAKE,
    WRITE,
};
use super::{EndIf, Freeze, Load, Release, SetIfAbsent, Timing, WriteOp, WriteResult};
use crate::error::{Error, Result};
use fred::prelude::*;
use fred::types::config::Options;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, FromValue};
use std::collections::HashMap;
use std::time::Duration;

// Every fred command future is awaited boxed: each is 6-7 KB, and a future is copied each time
// it is moved (into a timeout, a span, a join, a box), so an unboxed one made every store
// future ~15 KB and `memmove` a tenth of login's CPU (BENCHMARKS.md, "Profile").
/// What the near-cache answered for one load.
pub(crate) enum Cached {
    Hit(HashMap<String, Vec<u8>>),
    Miss,
    /// The barrier did not complete: read from the main pool without filling the cache.
    BarrierFailed,
}

pub(crate) struct RedisBackend {
    pool: Pool,
    /// For reads: fail fast while disconnected (a read abandoned by the outer timer must not
    /// pile up in the client's queue and be sent on reconnect).
    read_opts: Options,
    /// For every command that changes data: fred's own timeout (a command still queued when
    /// it fires is dropped, never sent later) and fail-fast (no queueing while disconnected).
    write_opts: Options,
    url_redacted: String,
    command_timeout: Duration,
    /// How long a rotation's freeze holds: the rotation's few steps, each bounded by the
    /// command timeout, fit in it many times over; a rotation that died frees the key then.
    freeze_ms: u64,
    clock: ServerClock,
    /// The near-cache and its tracking connections, when on.
    tracking: Option<near_cache::Tracking>,
    /// Whether the server offers `FT.*` (found at connect).
    query_engine: QueryEngine,
    /// Whether the server has hash-field expiry (`HPEXPIRE`, found at connect).
    native_field_expiry: bool,
    /// What the pool was built from, for the keyspace-notification subscribers.
    config: fred::types::config::Config,
    options: RedisOptions,
}

pub(super) fn freeze_ms(command_timeout: Duration) -> u64 {
    (command_timeout.as_millis() as u64)
        .saturating_mul(8)
        .max(2_000)
}

pub(super) fn redact(url: &str) -> String {
    // Drop credentials: scheme://user:pass@host -> scheme://***@host
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://***{}", &url[..s], &url[a..]),
        _ => url.to_string(),
    }
}

impl RedisBackend {
    /// Runs one store operation that only reads (one round trip, or a few on a NOSCRIPT
    /// reload) within the command timeout: a down, paused or slow server is
    /// `Error::Unavailable`, never a hang. (A load may slide the TTL; sliding it late is
    /// harmless, so reads keep the one cheap timer.)
    pub(crate) async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.command_timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(crate::error::StoreError::timeout(
                "session store did not answer within the command timeout",
            ))),
        }
    }

    /// Runs one store operation that changes data. Its commands carry fred's own timeout and
    /// fail fast, so a command whose deadline passed is never sent afterwards. The result
    /// says whether the change may have been applied: a failure before anything was sent is
    /// `Error::Unavailable` (safe to retry), one after is `Error::OutcomeUnknown`. The outer
    /// timer is only a backstop (a NOSCRIPT reload takes a few round trips).
    pub(crate) async fn bounded_write<T>(
        &self,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let backstop = self.command_timeout * 2 + Duration::from_millis(100);
        match tokio::time::timeout(backstop, op).await {
            Ok(Err(e)) => Err(e.after_write()),
            Ok(ok) => ok,
            Err(_) => Err(Error::OutcomeUnknown(crate::error::StoreError::timeout(
                "session store did not answer a write within the command timeout",
            ))),
        }
    }

    /// A store operation that changes the session at `key` (`bounded_write`), after which the
    /// near-cache forgets the key, whatever the outcome (the server's invalidation follows).
    pub(crate) async fn write_to<T>(
        &self,
        key: &str,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let res = self.bounded_write(op).await;
        self.changed(key);
        res
    }

    /// `EVALSHA` of a script that writes, with `write_opts` (see `bounded_write`) and a deadline
    /// in server time as its first argument, loading the script on `NOSCRIPT`. A reply
    /// `{EXPIRED, now}` (nothing written: the server's clock was ahead of our estimate, or the
    /// script ran too late) corrects the estimate and the write is tried once more.
    async fn eval_write<R: FromValue>(
        &self,
        script: &Script,
        key: &str,
        args: Vec<Value>,
    ) -> Result<R> {
        self.eval_write_until(script, key, args, 0).await
    }

    /// [`eval_write`](Self::eval_write) with the deadline capped at `not_after` (server ms, 0 =
    /// no cap): past it, the write is refused, not retried.
    async fn eval_write_until<R: FromValue>(
        &self,
        script: &Script,
        key: &str,
        args: Vec<Value>,
        not_after: i64,
    ) -> Result<R> {
        // Boxed: every write's future holds this one.
        Box::pin(self.eval_write_keys(script, &[key], args, not_after)).await
    }

    /// [`eval_write_until`](Self::eval_write_until) of a script over several keys, which must
    /// share one hash slot (the events' keys do, by their hash tag).
    async fn eval_write_keys<R: FromValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: Vec<Value>,
        not_after: i64,
    ) -> Result<R> {
        let key = keys[0];
        // A connected client: fail-fast on one still reconnecting (after a failover) would
        // refuse a write that another client of the pool can send now.
        let client = self.pool.next_connected();
        let cmd = || CustomCommand::new_static("EVALSHA", ClusterHash::from(key), false);
        let mut reloaded = false;
        let mut retried = false;
        loop {
            let mut full: Vec<Value> = Vec::with_capacity(args.len() + 4);
            full.push(script.sha1().clone().into());
            full.push((keys.len() as i64).into());
            full.extend(keys.iter().map(|k| Value::from(*k)));
            let deadline = match (self.clock.deadline(self.command_timeout), not_after) {
                (d, 0) => d,
                (0, cap) => cap,
                (d, cap) => d.min(cap),
            };
            full.push(deadline.into());
            full.extend(args.iter().cloned());
            let reply = Box::pin(
                client
                    .with_options(&self.write_opts)
                    .custom::<Value, Value>(cmd(), full),
            )
            .await;
            let received = std::time::Instant::now();
            match reply {
                Err(e) if e.details().starts_with("NOSCRIPT") && !reloaded => {
                    Box::pin(script.load(client))
                        .await
                        .map_err(Error::from_fred)?;
                    reloaded = true;
                }
                Err(e) => return Err(Error::from_fred(e)),
                Ok(v) => match expired(&v) {
                    Some(now) => {
                        self.clock.observe(now, received);
                        if retried || (not_after > 0 && now >= not_after) {
                            return Err(Error::Unavailable(crate::error::StoreError::new("the write reached the server after its deadline; nothing was written")));
                        }
                        retried = true;
                    }
                    None => {
                        if let Value::Array(parts) = &v {
                            // A write's reply ends with the server's time: keep the estimate fresh.
                            if parts.len() == 5 && parts[0].as_i64() == Some(code::WRITTEN) {
                                if let Some(now) = parts[4].as_i64() {
                                    self.clock.observe(now, received);
                                }
                            }
                        }
                        return R::from_value(v).map_err(Error::from_fred);
                    }
                },
            }
        }
    }

    pub(crate) fn describe(&self) -> &str {
        &self.url_redacted
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The near-cache's answer for `key`: a copy that can be served (tracking on, confirmed
    /// by the barrier in `Barrier` coherence, the absolute lifetime not about to pass by the
    /// server's clock), a miss, or a failed barrier (then the tracking connection is not
    /// trusted for this read either).
    pub(crate) async fn cached(&self, key: &str, t: Timing) -> Cached {
        let Some(tracking) = self.tracking.as_ref() else {
            return Cached::Miss;
        };
        if !tracking.cache.holds(key) {
            return Cached::Miss;
        }
        if let (true, Some(shared)) = (tracking.barrier, &tracking.shared) {
            // One server, one tracking connection: a shared read of the database's marker
            // (see `SharedPing`; it also fails, emptying the cache, after a flush). Replies
            // and pushes on one connection arrive in the order the server sent them, and fred
            // hands a push over before it completes any later reply: once a barrier sent after
            // this request arrived is answered, every invalidation the server sent before is
            // received, and `get` below applies it first.
            let confirmed = self.bounded(async { Ok(shared.confirm().await) }).await;
            if !matches!(confirmed, Ok(true)) {
                return Cached::BarrierFailed;
            }
        } else if tracking.barrier {
            // A cluster: the barrier is a keyed read-only command (`EXISTS`) on the tracking
            // client, so fred routes it to the connection of the node that owns the key
            // (following MOVED and ASK like the read that filled the cache; a MOVED resyncs
            // fred's routing, which empties the cache); the same ordering argument holds.
            let exists = CustomCommand::new_static("EXISTS", ClusterHash::from(key), false);
            let client = tracking.pool.next().with_options(&self.read_opts);
            let reply = Box::pin(client.custom::<i64, Value>(exists, vec![Value::from(key)]));
            match self
                .bounded(async { reply.await.map_err(Error::from_fred) })
                .await
            {
                Ok(1) => {}
                Ok(_) => {
                    // Gone on the server, and still held once every push received before
                    // this reply was applied: its invalidation was never delivered, which is
                    // a flush of the node (fred drops the `invalidate` push with no key
                    // list). Whatever else the cache holds from that node is as stale.
                    if tracking.cache.holds(key) {
                        tracking.cache.flush();
                    }
                    return Cached::Miss;
                }
                Err(_) => return Cached::BarrierFailed,
            }
        } else {
            // Let the runtime poll its sockets first (tokio runs a yielded task again only
            // after polling the I/O driver): narrows the window, cannot close it.
            tokio::task::yield_now().await;
        }
        let Some(fields) = tracking.cache.get(key) else {
            return Cached::Miss;
        };
        if t.absolute_ms > 0 {
            let Some(created) = super::fields::ms(&fields, super::fields::CREATED) else {
                return Cached::Miss;
            };
            let margin = 1_000;
            if created.saturating_add(t.absolute_ms) <= (self.clock.now_ms().max(0) as u64) + margin
            {
                return Cached::Miss;
            }
        }
        Cached::Hit((*fields).clone())
    }

    /// This instance changed `key`: the near-cache forgets it at once (the server's
    /// invalidation follows).
    pub(crate) fn changed(&self, key: &str) {
        if let Some(t) = &self.tracking {
            t.cache.invalidate(key.as_bytes());
        }
    }

    pub(crate) fn near_cache_on(&self) -> bool {
        self.tracking.is_some()
    }

    pub(crate) fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.tracking.as_ref().map(|t| t.cache.stats())
    }

    /// A load known to need no TTL refresh: plain `HGETALL`, the cheapest read there is. With
    /// the near-cache on (and `fill`), it goes on a tracking connection and fills the cache.
    pub(crate) async fn load_plain(
        &self,
        key: &str,
        fill: bool,
    ) -> Result<HashMap<String, Vec<u8>>> {
        if let (Some(tracking), true) = (&self.tracking, fill) {
            if let Some(r) = tracking.cache.reserve(key) {
                // Released on every way out (an error, a reply that is no session, a dropped
                // future), so reservations never pile up.
                let guard = near_cache::Pending::new(&tracking.cache, key, r);
                let client = tracking.pool.next_connected().with_options(&self.read_opts);
                let flat: Value = Box::pin(client.hgetall(key))
                    .await
                    .map_err(Error::from_fred)?;
                let fields = flat_fields(flat)?;
                if fields.contains_key(super::fields::CREATED) {
                    guard.fill(&fields);
                }
                return Ok(fields);
            }
        }
        // As a custom command: the reply stays a flat array (fred's `hgetall` builds a map of
        // it first, which `flat_fields` then copies again: 6% of a read's CPU).
        let hgetall = CustomCommand::new_static("HGETALL", ClusterHash::from(key), false);
        let flat: Value = Box::pin(
            self.pool
                .next_connected()
                .with_options(&self.read_opts)
                .custom(hgetall, vec![Value::from(key)]),
        )
        .await
        .map_err(Error::from_fred)?;
        flat_fields(flat)
    }

    pub(crate) async fn load(&self, key: &str, t: Timing) -> Result<Load> {
        let args: Vec<Value> = vec![
            (t.idle_ms as i64).into(),
            (t.touch_ms as i64).into(),
            (t.absolute_ms as i64).into(),
            (t.longest_ms.min(i64::MAX as u64) as i64).into(),
        ];
        parse_load(self.eval_read(&LOAD, key, args).await?)
    }

    pub(crate) async fn write(
        &self,
        key: &str,
        op: &WriteOp<'_>,
        t: Timing,
    ) -> Result<WriteResult> {
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
    }

    pub(crate) async fn freeze(&self, key: &str, new_member: &str, t: Timing) -> Result<Freeze> {
        let args: Vec<Value> = vec![
            new_member.into(),
            (self.freeze_ms as i64).into(),
            (t.idle_ms as i64).into(),
            (t.absolute_ms as i64).into(),
        ];
        let reply: Value = self.eval_write(&FREEZE, key, args).await?;
        let Value::Array(mut parts) = reply else {
            return Err(unexpected("freeze script replied with a non-array".into()));
        };
        match parts.first().and_then(Value::as_i64) {
            Some(code::GONE) => Ok(Freeze::Gone),
            Some(code::MOVED) => Ok(Freeze::Moved),
            Some(code::FROZEN) if parts.len() == 3 => {
                let fields = flat_fields(parts.pop().expect("len checked"))?;
                let token = parts
                    .pop()
                    .and_then(Value::into_string)
                    .ok_or_else(|| unexpected("freeze script replied without a token".into()))?;
                Ok(Freeze::Frozen { token, fields })
            }
            _ => Err(unexpected(format!("freeze script replied {parts:?}"))),
        }
    }

    pub(crate) async fn release(&self, key: &str, token: &str, retire: bool) -> Result<Release> {
        let action = if retire { "retire" } else { "thaw" };
        let args: Vec<Value> = vec![
            token.into(),
            action.into(),
            (super::TOMBSTONE.as_millis() as i64).into(),
        ];
        let reply: Vec<i64> = self.eval_write(&RELEASE, key, args).await?;
        Ok(match reply.first() {
            Some(&code::DONE) => Release::Done,
            Some(&code::RETIRED) => Release::Retired,
            Some(&code::GONE) => Release::Gone,
            _ => Release::Taken,
        })
    }

    /// A plain string key's value (`None`: no key, or a key of another type): what another
    /// session store wrote, read for a take-over. Deletes nothing.
    pub(crate) async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let get = CustomCommand::new_static("GET", ClusterHash::from(key), false);
        let reply: std::result::Result<Value, _> = Box::pin(
            self.pool
                .next_connected()
                .with_options(&self.read_opts)
                .custom(get, vec![Value::from(key)]),
        )
        .await;
        match reply {
            Ok(v) => Ok(value_bytes(v)),
            // A hash, list...: not another store's session record.
            Err(e) if e.details().starts_with("WRONGTYPE") => Ok(None),
            Err(e) => Err(Error::from_fred(e)),
        }
    }

    /// Sets a plain string key to `value`, expiring after `ttl_ms`.
    pub(crate) async fn set_bytes(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<()> {
        use fred::types::Expiration;
        let _: Value = Box::pin(
            self.pool
                .next_connected()
                .with_options(&self.write_opts)
                .set(
                    key,
                    value,
                    Some(Expiration::PX(ttl_ms.clamp(1, i64::MAX as u64) as i64)),
                    None,
                    false,
                ),
        )
        .await
        .map_err(Error::from_fred)?;
        Ok(())
    }

    /// Deletes a plain string key (or, with a `grace_ms`, makes it expire within that) only
    /// if it still holds `expected` (retire_legacy.lua, refused past its deadline); whether it
    /// did.
    pub(crate) async fn retire_bytes(
        &self,
        key: &str,
        expected: &[u8],
        grace_ms: u64,
    ) -> Result<bool> {
        let args = vec![
            Value::Bytes(expected.to_vec().into()),
            Value::from(grace_ms.to_string()),
        ];
        let reply: Value = self.eval_write(&RETIRE_LEGACY, key, args).await?;
        let Value::Array(parts) = reply else {
            return Err(unexpected(
                "take-over script replied with a non-array".into(),
            ));
        };
        match (parts.first().and_then(Value::as_i64), parts.len()) {
            (Some(0), 1) => Ok(false),
            (Some(1), 1) => Ok(true),
            _ => Err(unexpected(format!("take-over script replied {parts:?}"))),
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool> {
        let n: i64 = Box::pin(
            self.pool
                .next_connected()
                .with_options(&self.write_opts)
                .del(key),
        )
        .await
        .map_err(Error::from_fred)?;
        Ok(n > 0)
    }

    /// One `DEL` per key, sent together on one connection (fred writes concurrent commands
    /// back to back: one round trip), each with `write_opts`: unlike a fred pipeline, a `DEL`
    /// whose deadline passed is never sent later.
    pub(crate) async fn delete_many(&self, keys: &[String]) -> Result<Vec<bool>> {
        let client = self.pool.next_connected().with_options(&self.write_opts);
        let dels = keys.iter().map(|k| {
            let client = &client;
            async move { client.del::<i64, _>(k.as_str()).await }
        });
        futures_util::future::join_all(dels)
            .await
            .into_iter()
            .map(|r| r.map(|n| n > 0).map_err(Error::from_fred))
            .collect()
    }

    pub(crate) async fn peek_many(
        &self,
        keys: &[String],
        names: &[&str],
    ) -> Result<Vec<Option<Vec<Option<Vec<u8>>>>>> {
        let mut all: Vec<&str> = vec![super::fields::CREATED];
        all.extend_from_slice(names);
        let rows = self.hmget_many(keys, &all).await?;
        Ok(rows
            .into_iter()
            .map(|r| match r {
                Some(vals) if vals[0].is_some() => Some(vals.into_iter().skip(1).collect()),
                _ => None, // no __c: no session
            })
            .collect())
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
        let all = all.to_vec();
        let pipe = self.pool.next().pipeline();
        for k in keys {
            let _: () = Box::pin(pipe.hmget(k.as_str(), all.clone()))
                .await
                .map_err(Error::from_fred)?;
        }
        let replies = Box::pin(pipe.try_all::<Vec<Value>>()).await;
        let mut out = Vec::with_capacity(keys.len());
        for r in replies {
            let vals: Vec<Option<Vec<u8>>> = r
                .map_err(Error::from_fred)?
                .into_iter()
                .map(value_bytes)
                .collect();
            out.push(vals.iter().any(Option::is_some).then_some(vals));
        }
        Ok(out)
    }

    pub(crate) async fn index_add(
        &self,
        key: &str,
        member: &str,
        bound_ms: u64,
        max: usize,
        leaving: Option<&str>,
    ) -> Result<Vec<String>> {
        let args: Vec<Value> = vec![
            member.into(),
            (bound_ms as i64).into(),
            (max as i64).into(),
            leaving.unwrap_or("").into(),
        ];
        self.eval_write(&INDEX_ADD, key, args).await
    }

    /// A new session key: a fresh 128-bit id cannot exist already, so no existence check.
    /// `created_ms` keeps the creation time across an id rotation (0 = now).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create(
        &self,
        key: &str,
        set: &[(&str, &str)],
        created_ms: u64,
        expire: &[(&str, u64)],
        records: &[&str],
        not_after_ms: u64,
        t: Timing,
    ) -> Result<WriteResult> {
        let mut args: Vec<Value> =
            Vec::with_capacity(7 + records.len() + 2 * (set.len() + expire.len()));
        args.push((t.idle_ms as i64).into());
        args.push((t.absolute_ms as i64).into());
        args.push((created_ms as i64).into());
        args.push(if self.native_field_expiry { "1" } else { "0" }.into());
        args.push((expire.len() as i64).into());
        args.push((records.len() as i64).into());
        args.push((t.trail_max as i64).into());
        args.extend(records.iter().map(|a| Value::from(*a)));
        for (f, ms) in expire {
            args.push((*f).into());
            args.push((*ms as i64).into());
        }
        for (k, v) in set {
            if *k != super::fields::CREATED && *k != super::fields::TOUCHED {
                args.push((*k).into());
                args.push((*v).into());
            }
        }
        let reply: Vec<Value> = self
            .eval_write_until(&CREATE, key, args, not_after_ms as i64)
            .await?;
        protocol::parse_write(reply)
    }

    /// The members of an index scored above `min` (`None`: now, by the server-clock estimate:
    /// a user index's live bounds), lowest score first.
    pub(crate) async fn index_members(&self, key: &str, min: Option<u64>) -> Result<Vec<String>> {
        let (kind, min) = match min {
            None => (
                fred::types::sorted_sets::ZRangeKind::Exclusive,
                self.clock.now_ms() as f64,
            ),
            Some(m) => (fred::types::sorted_sets::ZRangeKind::Inclusive, m as f64),
        };
        Box::pin(
            self.pool
                .next_connected()
                .with_options(&self.read_opts)
                .zrangebyscore(
                    key,
                    fred::types::sorted_sets::ZRange {
                        kind,
                        range: fred::types::sorted_sets::ZRangeBound::Score(min),
                    },
                    "+inf",
                    false,
                    None,
                ),
        )
        .await
        .map_err(Error::from_fred)
    }

    /// `keys` grouped so that each group is one hash slot (a cluster) or all of them (one
    /// server): one script per group.
    fn slot_groups<'k>(&self, keys: &'k [String]) -> Vec<Vec<&'k str>> {
        if !self.pool.is_clustered() {
            return if keys.is_empty() {
                Vec::new()
            } else {
                vec![keys.iter().map(String::as_str).collect()]
            };
        }
        let mut by_slot: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
        for k in keys {
            by_slot
                .entry(fred::util::redis_keyslot(k.as_bytes()))
                .or_default()
                .push(k);
        }
        by_slot.into_values().collect()
    }

    pub(crate) async fn index_remove(&self, key: &str, members: &[String]) -> Result<()> {
        let _: i64 = Box::pin(
            self.pool
                .next_connected()
                .with_options(&self.write_opts)
                .zrem(key, members.to_vec()),
        )
        .await
        .map_err(Error::from_fred)?;
        Ok(())
    }

    /// Removes `members` from each of `keys` where scored at most `max_score` (see
    /// index_prune.lua), one script per hash slot, sent together; how many went.
    pub(crate) async fn index_prune(
        &self,
        keys: &[String],
        members: &[String],
        max_score: u64,
    ) -> Result<i64> {
        let mut args: Vec<Value> = Vec::with_capacity(1 + members.len());
        args.push((max_score.min(i64::MAX as u64) as i64).into());
        args.extend(members.iter().map(|m| Value::from(m.as_str())));
        let groups = self.slot_groups(keys);
        let prunes = groups.iter().map(|g| {
            let args = args.clone();
            async move { self.eval_write_keys::<i64>(&INDEX_PRUNE, g, args, 0).await }
        });
        let mut n = 0;
        for r in futures_util::future::join_all(prunes).await {
            n += r?;
        }
        Ok(n)
    }

    /// Sets `field` of the live session at `key` unless it holds a value, and answers the
    /// value it holds now (see set_if_absent.lua).
    pub(crate) async fn set_if_absent(
        &self,
        key: &str,
        field: &str,
        value: &str,
    ) -> Result<SetIfAbsent> {
        let args: Vec<Value> = vec![field.into(), value.into(), (self.freeze_ms as i64).into()];
        let reply: Vec<Value> = self.eval_write(&SET_IF_ABSENT, key, args).await?;
        Ok(match reply.first().and_then(|v| v.as_i64()) {
            Some(1) => match reply.get(1).cloned().and_then(Value::into_string) {
                Some(now) => SetIfAbsent::Holds(now),
                None => return Err(unexpected(format!("set_if_absent replied {reply:?}"))),
            },
            Some(0) => SetIfAbsent::Gone,
            Some(-3) => SetIfAbsent::Moved,
            _ => return Err(unexpected(format!("set_if_absent replied {reply:?}"))),
        })
    }

    /// Ends the session at `key` if `field` still holds `expected` (see end_if.lua).
    pub(crate) async fn end_if(
        &self,
        key: &str,
        field: &str,
        expected: Option<&[u8]>,
        tombstone_ms: u64,
    ) -> Result<EndIf> {
        let args: Vec<Value> = vec![
            field.into(),
            Value::Bytes(expected.unwrap_or_default().to_vec().into()),
            (tombstone_ms as i64).into(),
            if expected.is_some() { "0" } else { "1" }.into(),
        ];
        let reply: Vec<Value> = self.eval_write(&END_IF, key, args).await?;
        Ok(match reply.first().and_then(|v| v.as_i64()) {
            Some(code::DONE) => EndIf::Ended,
            Some(code::CHANGED) => EndIf::Changed,
            Some(code::GONE) => EndIf::Absent,
            Some(code::MOVED) => match reply.get(1).cloned().and_then(Value::into_string) {
                Some(successor) => EndIf::Moved(successor),
                None => return Err(unexpected(format!("end_if replied {reply:?}"))),
            },
            _ => return Err(unexpected(format!("end_if replied {reply:?}"))),
        })
    }

    /// Whole session hashes, one `HGETALL` per key sent together (one round trip); an empty
    /// map for a key that holds nothing.
    pub(crate) async fn read_many(&self, keys: &[String]) -> Result<Vec<HashMap<String, Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.pool.next().pipeline();
        for k in keys {
            let _: () = Box::pin(pipe.hgetall(k.as_str()))
                .await
                .map_err(Error::from_fred)?;
        }
        let replies = Box::pin(pipe.try_all::<Value>()).await;
        replies
            .into_iter()
            .map(|r| r.map_err(Error::from_fred).and_then(flat_fields))
            .collect()
    }

    /// Deletes each key (one script per key, sent together), returning what its `names` held
    /// (`None`: no session was there).
    pub(crate) async fn take_many(
        &self,
        keys: &[String],
        names: &[&str],
        mark_ms: u64,
    ) -> Result<Vec<Option<Vec<Option<Vec<u8>>>>>> {
        let takes = keys.iter().map(|k| {
            let mut args: Vec<Value> = vec![(mark_ms as i64).into()];
            args.extend(names.iter().map(|n| Value::from(*n)));
            async move {
                let reply: Vec<Value> = self.eval_write(&TAKE, k, args).await?;
                let mut it = reply.into_iter();
                Ok(match it.next().and_then(|v| v.as_i64()) {
                    Some(1) => Some(it.map(value_bytes).collect()),
                    _ => None,
                })
            }
        });
        futures_util::future::join_all(takes)
            .await
            .into_iter()
            .collect()
    }

    /// Adds or refreshes `member` in field-index keys (see field_add.lua): one script per hash
    /// slot (one in all on a single server), sent together; the earliest server time of them.
    pub(crate) async fn field_add(
        &self,
        keys: &[String],
        member: &str,
        bound_ms: u64,
    ) -> Result<u64> {
        let args: Vec<Value> = vec![member.into(), (bound_ms as i64).into()];
        let groups = self.slot_groups(keys);
        let adds = groups.iter().map(|g| {
            let args = args.clone();
            async move {
                let reply: Vec<i64> = self.eval_write_keys(&FIELD_ADD, g, args, 0).await?;
                let now = reply.get(1).copied().unwrap_or(0);
                self.clock.observe(now, std::time::Instant::now());
                Ok::<u64, Error>(now.max(0) as u64)
            }
        });
        let mut earliest = 0;
        for r in futures_util::future::join_all(adds).await {
            let at = r?;
            earliest = if earliest == 0 { at } else { earliest.min(at) };
        }
        Ok(earliest)
    }

    /// The server's clock now, as estimated (errs early); `None` before the first observation.
    pub(crate) fn server_now(&self) -> Option<u64> {
        (self.clock.deadline(Duration::ZERO) != 0).then(|| self.clock.now_ms().max(0) as u64)
    }

    /// Whether field lifetimes use the server's hash-field expiry.
    pub(crate) fn native_field_expiry(&self) -> bool {
        self.native_field_expiry
    }
}
