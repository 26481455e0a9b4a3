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
            Err(_) => Err(
                self.timed_out(Error::Unavailable(crate::error::StoreError::timeout(
                    "session store did not answer within the command timeout",
                ))),
            ),
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
            Err(_) => Err(self.timed_out(Error::OutcomeUnknown(
                crate::error::StoreError::timeout(
                    "session store did not answer a write within the command timeout",
                ),
            ))),
        }
    }

    /// `e`, after telling a cluster's watcher (a paused primary shows only as timeouts).
    fn timed_out(&self, e: Error) -> Error {
        if let Some(shards) = &self.shards {
            shards.alert();
        }
        e
    }

    /// Runs `f` on a connected client of the pool that serves `key`: the one pool on one
    /// server; on a cluster, the key's primary's, following `MOVED` and `ASK` (`shards.rs`).
    pub(super) async fn on_key<T, F, Fut>(
        &self,
        key: &str,
        f: F,
    ) -> std::result::Result<T, fred::error::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, fred::error::Error>>,
    {
        match &self.shards {
            None => f(self.pool.next_connected().clone()).await,
            // Boxed: the cluster's cold paths (a table refresh, `ASKING`) would otherwise make
            // every command's future, one server's included, as large as they are.
            Some(shards) => Box::pin(shards.on_key(key.as_bytes(), false, f)).await,
        }
    }

    /// [`on_key`](Self::on_key) for a command that changes data: with
    /// [`replica_acks`](super::RedisOptions::replica_acks), on a connection reserved for
    /// writes, and followed there by `WAIT`. A write the replicas did not confirm within the
    /// command timeout is a timeout (its outcome unknown: it is on the primary).
    pub(super) async fn on_key_write<T, F, Fut>(
        &self,
        key: &str,
        f: F,
    ) -> std::result::Result<T, fred::error::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, fred::error::Error>>,
    {
        if self.replica_acks == 0 {
            return self.on_key(key, f).await;
        }
        let f = &f;
        let acked = |c: Client| async move {
            // Sent together, in this order, on the one connection of `c`: `WAIT` counts the
            // replicas that have this connection's writes, so it must not go out on a
            // connection opened after the write's (a reconnect in between would make it
            // count nothing and answer at once). Polled in order, each command is queued on
            // its first poll; a write refused (`MOVED`) makes its `WAIT` harmless.
            let n = i64::from(self.replica_acks);
            // With the writes' options: refused at once while disconnected (as the write is),
            // dropped if still queued at the timeout; the server's own wait ends first.
            let budget = (self.command_timeout.as_millis() as i64 * 3 / 4).max(1);
            let waiting = c.with_options(&self.write_opts);
            let wait = waiting.wait::<i64>(n, budget);
            let (done, got) = futures_util::future::join(f(c.clone()), Box::pin(wait)).await;
            let done = done?;
            // The write ran: whatever became of its `WAIT` (a timeout, a connection lost, a
            // failover unblocking it), the outcome is unknown to the client, never "nothing
            // was changed".
            let unconfirmed = |why: String| {
                fred::error::Error::new(
                    fred::error::ErrorKind::Timeout,
                    format!("the write is on the primary, its replicas did not confirm it: {why}"),
                )
            };
            let got = got.map_err(|e| unconfirmed(e.details().to_string()))?;
            if got < n {
                return Err(unconfirmed(format!(
                    "{got} of {n} replicas acknowledged it within the command timeout"
                )));
            }
            Ok(done)
        };
        match &self.shards {
            None => {
                let writes = self.writes.as_ref().unwrap_or(&self.pool);
                acked(writes.next_connected().clone()).await
            }
            Some(shards) => Box::pin(shards.on_key(key.as_bytes(), true, acked)).await,
        }
    }

    /// `keys`' positions grouped by the pool that serves them, with a client of each: one
    /// group on one server.
    pub(super) fn by_pool(
        &self,
        keys: &[String],
    ) -> std::result::Result<Vec<(Client, Vec<usize>)>, fred::error::Error> {
        match &self.shards {
            None => Ok(vec![(
                self.pool.next_connected().clone(),
                (0..keys.len()).collect(),
            )]),
            Some(shards) => shards.group(keys),
        }
    }

    /// `name key args...` for each of `keys`, pipelined on each pool that serves some (one
    /// round trip per pool, the pools at once); the replies in `keys`' order. A reply that is
    /// a cluster redirect (a resharding under way) is sent again on its own, where it says.
    pub(super) async fn each_key(
        &self,
        keys: &[String],
        name: &'static str,
        args: &[&str],
    ) -> Result<Vec<std::result::Result<Value, fred::error::Error>>> {
        let cmd = |k: &str| CustomCommand::new_static(name, ClusterHash::from(k), false);
        let line = |k: &str| {
            let mut v: Vec<Value> = Vec::with_capacity(args.len() + 1);
            v.push(k.into());
            v.extend(args.iter().map(|a| Value::from(*a)));
            v
        };
        let groups = self.by_pool(keys).map_err(Error::from_fred)?;
        let sent = groups.into_iter().map(|(client, idx)| async move {
            let pipe = client.pipeline();
            for &i in &idx {
                let _: () = Box::pin(pipe.custom(cmd(&keys[i]), line(&keys[i]))).await?;
            }
            let replies = Box::pin(pipe.try_all::<Value>()).await;
            Ok::<_, fred::error::Error>((idx, replies))
        });
        let mut out: Vec<Option<std::result::Result<Value, fred::error::Error>>> =
            (0..keys.len()).map(|_| None).collect();
        for group in futures_util::future::join_all(sent).await {
            let (idx, replies) = group.map_err(Error::from_fred)?;
            for (i, reply) in idx.into_iter().zip(replies) {
                out[i] = Some(reply);
            }
        }
        for (k, reply) in keys.iter().zip(out.iter_mut()) {
            let redirected = matches!(reply, Some(Err(e)) if *e.kind() == fred::error::ErrorKind::Cluster
                && (e.details().starts_with("MOVED") || e.details().starts_with("ASK")));
            if redirected {
                let (cmd, line) = (&cmd, &line);
                *reply = Some(
                    Box::pin(self.on_key(k, |c| async move {
                        c.with_options(&self.read_opts)
                            .custom(cmd(k), line(k))
                            .await
                    }))
                    .await,
                );
            }
        }
        Ok(out
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(fred::error::Error::new(
                        fred::error::ErrorKind::Unknown,
                        "the pipeline gave no reply",
                    ))
                })
            })
            .collect())
    }

    /// Whether the store is a cluster (keys of different slots go to different nodes).
    pub(super) fn is_cluster(&self) -> bool {
        self.shards.is_some()
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
            // A connected client: fail-fast on one still reconnecting (after a failover) would
            // refuse a write that another client of the pool can send now.
            let full = &full;
            let reply = Box::pin(self.on_key_write(key, |client| async move {
                client
                    .with_options(&self.write_opts)
                    .custom::<Value, Value>(cmd(), full.clone())
                    .await
            }))
            .await;
            let received = std::time::Instant::now();
            match reply {
                Err(e) if e.details().starts_with("NOSCRIPT") && !reloaded => {
                    Box::pin(self.on_key(key, |c| async move { script.load(&c).await }))
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
        let mut full: Vec<Value> = Vec::with_capacity(args.len() + 3);
        full.push(script.sha1().clone().into());
        full.push(1i64.into());
        full.push(key.into());
        full.extend(args);
        let full = &full;
        let cmd = || CustomCommand::new_static("EVALSHA", ClusterHash::from(key), false);
        Box::pin(self.on_key(key, |client| async move {
            match Box::pin(
                client
                    .with_options(&self.read_opts)
                    .custom::<Value, Value>(cmd(), full.clone()),
            )
            .await
            {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    Box::pin(script.load(&client)).await?;
                    Box::pin(
                        client
                            .with_options(&self.read_opts)
                            .custom::<Value, Value>(cmd(), full.clone()),
                    )
                    .await
                }
                other => other,
            }
        }))
        .await
        .map_err(Error::from_fred)
    }

    /// `keys` grouped so that each group is one hash slot (a cluster) or all of them (one
    /// server): one script per group.
    pub(super) fn slot_groups<'k>(&self, keys: &'k [String]) -> Vec<Vec<&'k str>> {
        if !self.is_cluster() {
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
