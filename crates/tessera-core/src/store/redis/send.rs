//! How every command goes out: the timeouts (a read within the command timeout, a write with
//! fred's own timeout and fail-fast, then the near-cache told), `EVALSHA` with a deadline in
//! server time and the `NOSCRIPT` reload, and the grouping of keys by hash slot.
//!
//! Every fred command future is awaited boxed: each is 6-7 KB, and a future is copied each
//! time it is moved (into a timeout, a span, a join, a box), so an unboxed one made every
//! store future ~15 KB and `memmove` a tenth of login's CPU (BENCHMARKS.md, "Profile").

use super::protocol::expired;
use super::RedisBackend;
use crate::error::{Error, Result};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, FromValue};
use std::time::Duration;

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
    pub(super) async fn eval_write<R: FromValue>(
        &self,
        script: &Script,
        key: &str,
        args: Vec<Value>,
    ) -> Result<R> {
        self.eval_write_until(script, key, args, 0).await
    }

    /// [`eval_write`](Self::eval_write) with the deadline capped at `not_after` (server ms, 0 =
    /// no cap): past it, the write is refused, not retried.
    pub(super) async fn eval_write_until<R: FromValue>(
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
    pub(super) async fn eval_write_keys<R: FromValue>(
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
                        // A write's reply carries the server's time: keep the estimate fresh.
                        if let Some(now) = super::protocol::reply_server_time(&v) {
                            self.clock.observe(now, received);
                        }
                        return R::from_value(v).map_err(Error::from_fred);
                    }
                },
            }
        }
    }

    /// `EVALSHA` of a script that reads (the session load, whose throttled TTL refresh may be
    /// sent late harmlessly, included), with `read_opts`, loading it on `NOSCRIPT`.
    pub(super) async fn eval_read(
        &self,
        script: &Script,
        key: &str,
        args: Vec<Value>,
    ) -> Result<Value> {
        let client = self.pool.next_connected();
        let mut full: Vec<Value> = Vec::with_capacity(args.len() + 3);
        full.push(script.sha1().clone().into());
        full.push(1i64.into());
        full.push(key.into());
        full.extend(args);
        let cmd = || CustomCommand::new_static("EVALSHA", ClusterHash::from(key), false);
        match Box::pin(
            client
                .with_options(&self.read_opts)
                .custom::<Value, Value>(cmd(), full.clone()),
        )
        .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                Box::pin(script.load(client))
                    .await
                    .map_err(Error::from_fred)?;
                Box::pin(
                    client
                        .with_options(&self.read_opts)
                        .custom::<Value, Value>(cmd(), full),
                )
                .await
            }
            other => other,
        }
        .map_err(Error::from_fred)
    }

    /// `keys` grouped so that each group is one hash slot (a cluster) or all of them (one
    /// server): one script per group.
    pub(super) fn slot_groups<'k>(&self, keys: &'k [String]) -> Vec<Vec<&'k str>> {
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
}
