//! The Redis / Valkey backend on fred: one pool, single-key Lua scripts, bounded timeouts.

use super::{Freeze, Load, Loaded, Mode, Refresh, Release, Timing, WriteOp, WriteResult};
use crate::error::{Error, Result};
use fred::prelude::*;
use fred::types::config::Options;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, FromValue};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

/// A script: the shared prelude (helpers only) followed by the script's own file.
macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::from_lua(concat!(include_str!("prelude.lua"), include_str!($file)))
        })
    };
}

static LOAD: LazyLock<Script> = script!("load.lua");
static WRITE: LazyLock<Script> = script!("write.lua");
static INDEX_ADD: LazyLock<Script> = script!("index_add.lua");
static INDEX_MEMBERS: LazyLock<Script> = script!("index_members.lua");
static FREEZE: LazyLock<Script> = script!("freeze.lua");
static RELEASE: LazyLock<Script> = script!("release.lua");

/// The scripts' reply codes (the constants at the top of each `.lua` file).
mod code {
    pub(super) const GONE: i64 = 0;
    pub(super) const WRITTEN: i64 = 1;
    pub(super) const EXISTS: i64 = -1;
    pub(super) const NOT_AN_INTEGER: i64 = -2;
    pub(super) const MOVED: i64 = -3;
    pub(super) const TOO_MANY_FIELDS: i64 = -5;
    // load.lua
    pub(super) const TOUCHED: i64 = 1;
    pub(super) const FRESH: i64 = 2;
    pub(super) const TOUCH_REFUSED: i64 = 3;
    // freeze.lua / release.lua
    pub(super) const FROZEN: i64 = 1;
    pub(super) const DONE: i64 = 1;
    pub(super) const RETIRED: i64 = 2;
    // every script that writes (the prelude)
    pub(super) const EXPIRED: i64 = -4;
}

/// An upper bound of the server's clock, kept on this process's monotonic clock, so each
/// write can carry a deadline in server time (see `past_deadline` in prelude.lua).
///
/// An observation "the server said `S` ms in a reply received at monotonic `t1`" puts the
/// server's clock at any later monotonic `t` at `S + (t - t1)` or a little more (the server
/// read its clock before `t1`): estimates err early, by at most the round trip, so a deadline
/// is never later than meant. An early one can only refuse a write, which the reply corrects
/// (it carries the server's time) before one retry. The latest observation is kept, so a
/// server clock that steps is followed.
#[derive(Debug)]
struct ServerClock {
    base: std::time::Instant,
    /// `S - t0` in ms; `i64::MIN` until the first observation.
    offset_ms: std::sync::atomic::AtomicI64,
}

/// Slack added to every deadline: the clocks of a cluster's nodes (or of a Sentinel's primary
/// after a failover) may differ a little; a larger difference costs one retry, never a write.
const DEADLINE_SLACK_MS: u64 = 250;

impl ServerClock {
    fn new() -> Self {
        ServerClock {
            base: std::time::Instant::now(),
            offset_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    fn mono_ms(&self, at: std::time::Instant) -> i64 {
        at.saturating_duration_since(self.base).as_millis() as i64
    }

    fn observe(&self, server_ms: i64, received: std::time::Instant) {
        self.offset_ms.store(
            server_ms - self.mono_ms(received),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The deadline (server ms) for a write sent now that may take `budget`; 0 = unknown yet.
    fn deadline(&self, budget: Duration) -> i64 {
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::Relaxed);
        if offset == i64::MIN {
            return 0;
        }
        offset
            + self.mono_ms(std::time::Instant::now())
            + budget.as_millis() as i64
            + DEADLINE_SLACK_MS as i64
    }
}

/// `{EXPIRED, now}`: the server's time, if this reply is one.
fn expired(reply: &Value) -> Option<i64> {
    match reply {
        Value::Array(v) if v.len() == 2 && v[0].as_i64() == Some(code::EXPIRED) => v[1].as_i64(),
        _ => None,
    }
}

/// Connection settings for a Redis / Valkey store.
///
/// Every command is bounded by `command_timeout`: when the server is down, paused or slow,
/// a request fails fast (HTTP 503) instead of hanging, and the pool reconnects by itself
/// (forever, with backoff up to 2 s) so service resumes when the server returns.
///
/// ```
/// use std::time::Duration;
/// use tessera_core::RedisOptions;
/// let opts = RedisOptions::default()
///     .command_timeout(Duration::from_millis(300))
///     .pool_size(8);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisOptions {
    command_timeout: Duration,
    connect_timeout: Duration,
    pool_size: usize,
}

impl RedisOptions {
    /// Upper bound for any one command, scripts included (default 500 ms).
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }
    /// Upper bound for opening a connection (default 2 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// Connections in the pool (default 4).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            pool_size: 4,
        }
    }
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
}

fn freeze_ms(command_timeout: Duration) -> u64 {
    (command_timeout.as_millis() as u64)
        .saturating_mul(8)
        .max(2_000)
}

fn redact(url: &str) -> String {
    // Drop credentials: scheme://user:pass@host -> scheme://***@host
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://***{}", &url[..s], &url[a..]),
        _ => url.to_string(),
    }
}

impl RedisBackend {
    pub(crate) async fn connect(url: &str, o: RedisOptions) -> Result<Self> {
        check_scheme(url)?;
        check_tls(url)?;
        let config = Config::from_url(url).map_err(Error::Store)?;
        #[cfg(feature = "tls")]
        if url.starts_with("rediss") && config.tls.is_none() {
            return Err(Error::Store(fred::error::Error::new(
                fred::error::ErrorKind::Tls,
                "a rediss:// URL gave no TLS configuration",
            )));
        }
        let freeze_ms = freeze_ms(o.command_timeout);
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = o.connect_timeout;
                c.internal_command_timeout = o.command_timeout.max(Duration::from_secs(1));
                // Replaying an in-flight command after a reconnect could apply HINCRBY twice.
                c.max_command_attempts = 1;
                c.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..Default::default()
                };
            })
            // The timeout is enforced per store operation by `bounded` (one timer per
            // operation); fred's per-command timer cost about 25% of read throughput.
            .with_performance_config(|p| p.default_command_timeout = Duration::ZERO)
            // Reconnect forever; the delay stays short (<= 500 ms + jitter) so service resumes
            // within about half a second of the server coming back.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 500, 2))
            .build_pool(o.pool_size.max(1))
            .map_err(Error::Store)?;
        tokio::time::timeout(o.connect_timeout + o.command_timeout, pool.init())
            .await
            .map_err(|_| {
                Error::Unavailable(fred::error::Error::new(
                    fred::error::ErrorKind::Timeout,
                    "timed out connecting to the session store",
                ))
            })?
            .map_err(Error::from_fred)?;
        // Load the scripts now (on every primary in a cluster), so the first request does not
        // pay for NOSCRIPT + SCRIPT LOAD. After a server restart the first call reloads them.
        let preload = async {
            for script in [
                &*LOAD,
                &*WRITE,
                &*INDEX_ADD,
                &*INDEX_MEMBERS,
                &*FREEZE,
                &*RELEASE,
            ] {
                script.load(pool.next()).await.map_err(Error::from_fred)?;
            }
            Ok::<_, Error>(())
        };
        tokio::time::timeout(o.connect_timeout + o.command_timeout, preload)
            .await
            .map_err(|_| {
                Error::Unavailable(fred::error::Error::new(
                    fred::error::ErrorKind::Timeout,
                    "timed out loading scripts into the session store",
                ))
            })??;
        // A first reading of the server's clock, for write deadlines.
        let clock = ServerClock::new();
        if let Ok(Ok(t)) = tokio::time::timeout(
            o.command_timeout,
            pool.next().custom::<Vec<i64>, Value>(
                CustomCommand::new_static("TIME", ClusterHash::Random, false),
                vec![],
            ),
        )
        .await
        {
            if let [secs, micros] = t[..] {
                clock.observe(secs * 1000 + micros / 1000, std::time::Instant::now());
            }
        }
        Ok(RedisBackend {
            pool,
            url_redacted: redact(url),
            command_timeout: o.command_timeout,
            read_opts: Options {
                fail_fast: true,
                max_attempts: Some(1),
                ..Default::default()
            },
            write_opts: Options {
                timeout: Some(o.command_timeout),
                fail_fast: true,
                max_attempts: Some(1),
                ..Default::default()
            },
            freeze_ms,
            clock,
        })
    }

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
            Err(_) => Err(Error::Unavailable(fred::error::Error::new(
                fred::error::ErrorKind::Timeout,
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
            Err(_) => Err(Error::OutcomeUnknown(fred::error::Error::new(
                fred::error::ErrorKind::Timeout,
                "session store did not answer a write within the command timeout",
            ))),
        }
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
        // A connected client: fail-fast on one still reconnecting (after a failover) would
        // refuse a write that another client of the pool can send now.
        let client = self.pool.next_connected();
        let cmd = || CustomCommand::new_static("EVALSHA", ClusterHash::from(key), false);
        let mut reloaded = false;
        let mut retried = false;
        loop {
            let mut full: Vec<Value> = Vec::with_capacity(args.len() + 4);
            full.push(script.sha1().clone().into());
            full.push(1i64.into());
            full.push(key.into());
            full.push(self.clock.deadline(self.command_timeout).into());
            full.extend(args.iter().cloned());
            let reply = client
                .with_options(&self.write_opts)
                .custom::<Value, Value>(cmd(), full)
                .await;
            let received = std::time::Instant::now();
            match reply {
                Err(e) if e.details().starts_with("NOSCRIPT") && !reloaded => {
                    script.load(client).await.map_err(Error::from_fred)?;
                    reloaded = true;
                }
                Err(e) => return Err(Error::from_fred(e)),
                Ok(v) => match expired(&v) {
                    Some(now) => {
                        self.clock.observe(now, received);
                        if retried {
                            return Err(Error::Unavailable(fred::error::Error::new(
                                fred::error::ErrorKind::Unknown,
                                "the write reached the server after its deadline; nothing was written",
                            )));
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

    pub(crate) async fn check_server(&self) -> Result<super::ServerReport> {
        let client = self.pool.next();
        let mut servers = Vec::new();
        let mut warnings = Vec::new();
        if client.is_clustered() {
            for node in client.split_cluster().map_err(Error::from_fred)? {
                let addr = node
                    .client_config()
                    .server
                    .hosts()
                    .first()
                    .map(|s| format!("{}:{}", s.host, s.port))
                    .unwrap_or_default();
                node.init().await.map_err(Error::from_fred)?;
                let info = info_all(&node).await;
                let _ = node.quit().await;
                let (s, w) = super::check::check_node(&addr, &info?);
                servers.push(s);
                warnings.extend(w);
            }
        } else {
            let (s, w) = super::check::check_node(self.describe(), &info_all(client).await?);
            servers.push(s);
            warnings.extend(w);
        }
        Ok(super::ServerReport { servers, warnings })
    }

    /// A load known to need no TTL refresh: plain `HGETALL`, the cheapest read there is.
    pub(crate) async fn load_plain(&self, key: &str) -> Result<HashMap<String, Vec<u8>>> {
        let flat: Value = self
            .pool
            .next_connected()
            .with_options(&self.read_opts)
            .hgetall(key)
            .await
            .map_err(Error::from_fred)?;
        flat_fields(flat)
    }

    pub(crate) async fn load(&self, key: &str, t: Timing) -> Result<Load> {
        let args: Vec<Value> = vec![
            (t.idle_ms as i64).into(),
            (t.touch_ms as i64).into(),
            (t.absolute_ms as i64).into(),
        ];
        let client = self.pool.next_connected();
        let mut full: Vec<Value> = Vec::with_capacity(6);
        full.push(LOAD.sha1().clone().into());
        full.push(1i64.into());
        full.push(key.into());
        full.extend(args);
        let cmd = || CustomCommand::new_static("EVALSHA", ClusterHash::from(key), false);
        let reply = match client
            .with_options(&self.read_opts)
            .custom::<Value, Value>(cmd(), full.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                LOAD.load(client).await.map_err(Error::from_fred)?;
                client
                    .with_options(&self.read_opts)
                    .custom::<Value, Value>(cmd(), full)
                    .await
            }
            other => other,
        }
        .map_err(Error::from_fred)?;
        parse_load(reply)
    }

    pub(crate) async fn write(
        &self,
        key: &str,
        op: &WriteOp<'_>,
        t: Timing,
    ) -> Result<WriteResult> {
        let (mode, created) = match op.mode {
            Mode::Create { created_ms } => ("c", created_ms),
            Mode::Update => ("u", 0),
        };
        let (incr_field, incr_by) = op.incr.unwrap_or(("", 0));
        let mut args: Vec<Value> = Vec::with_capacity(10 + op.set.len() * 2 + op.del.len());
        args.push(mode.into());
        args.push((t.idle_ms as i64).into());
        args.push((t.absolute_ms as i64).into());
        args.push((created.min(i64::MAX as u64) as i64).into());
        args.push((op.set.len() as i64).into());
        args.push((op.del.len() as i64).into());
        args.push(incr_field.into());
        args.push(incr_by.into());
        args.push((t.touch_ms as i64).into());
        args.push((self.freeze_ms as i64).into());
        args.push((op.max_fields as i64).into());
        for (f, v) in &op.set {
            args.push((*f).into());
            args.push((*v).into());
        }
        for f in &op.del {
            args.push((*f).into());
        }
        let reply: Vec<Value> = self.eval_write(&WRITE, key, args).await?;
        let int = |i: usize| reply.get(i).and_then(Value::as_i64);
        Ok(match int(0) {
            Some(code::WRITTEN) => WriteResult::Written {
                incr: match reply.get(1) {
                    Some(Value::Integer(i)) => *i,
                    Some(v) => v
                        .as_string()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| unexpected(format!("write script replied {reply:?}")))?,
                    None => 0,
                },
                touched: int(2) == Some(1),
                user: reply
                    .get(3)
                    .and_then(|v| v.as_string())
                    .filter(|u| !u.is_empty()),
            },
            Some(code::GONE) => WriteResult::Gone,
            Some(code::EXISTS) => WriteResult::Exists,
            Some(code::NOT_AN_INTEGER) => WriteResult::NotAnInteger,
            Some(code::MOVED) => WriteResult::Moved,
            Some(code::TOO_MANY_FIELDS) => WriteResult::TooManyFields,
            _ => return Err(unexpected(format!("write script replied {reply:?}"))),
        })
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

    pub(crate) async fn delete(&self, key: &str) -> Result<bool> {
        let n: i64 = self
            .pool
            .next_connected()
            .with_options(&self.write_opts)
            .del(key)
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
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut all: Vec<&str> = vec![super::fields::CREATED];
        all.extend_from_slice(names);
        let pipe = self.pool.next().pipeline();
        for k in keys {
            let _: () = pipe
                .hmget(k.as_str(), all.clone())
                .await
                .map_err(Error::from_fred)?;
        }
        let replies = pipe.try_all::<Vec<Value>>().await;
        let mut out = Vec::with_capacity(keys.len());
        for r in replies {
            let vals: Vec<Option<Vec<u8>>> = r
                .map_err(Error::from_fred)?
                .into_iter()
                .map(value_bytes)
                .collect();
            out.push(match vals.first() {
                Some(Some(_)) => Some(vals.into_iter().skip(1).collect()),
                _ => None, // no __c: no session
            });
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

    pub(crate) async fn index_members(&self, key: &str) -> Result<Vec<String>> {
        INDEX_MEMBERS
            .evalsha_with_reload(self.pool.next(), key, Vec::<Value>::new())
            .await
            .map_err(Error::from_fred)
    }

    pub(crate) async fn index_remove(&self, key: &str, members: &[String]) -> Result<()> {
        let _: i64 = self
            .pool
            .next_connected()
            .with_options(&self.write_opts)
            .zrem(key, members.to_vec())
            .await
            .map_err(Error::from_fred)?;
        Ok(())
    }
}

async fn info_all(client: &Client) -> Result<String> {
    let mut all = String::new();
    for section in ["server", "persistence", "replication", "memory"] {
        // A managed service may refuse a section: report it as unknown, do not fail.
        if let Ok(text) = client.info::<String>(Some(info_kind(section))).await {
            all.push_str(&text);
            all.push_str("\r\n");
        }
    }
    if all.is_empty() {
        return Err(unexpected("INFO answered nothing".into()));
    }
    Ok(all)
}

fn info_kind(section: &str) -> fred::types::InfoKind {
    use fred::types::InfoKind as K;
    match section {
        "server" => K::Server,
        "persistence" => K::Persistence,
        "replication" => K::Replication,
        _ => K::Memory,
    }
}

/// Only the Redis schemes: fred would read `http://host` as a Redis address and connect.
fn check_scheme(url: &str) -> Result<()> {
    const SCHEMES: [&str; 6] = [
        "redis://",
        "rediss://",
        "redis-cluster://",
        "rediss-cluster://",
        "redis-sentinel://",
        "rediss-sentinel://",
    ];
    if SCHEMES.iter().any(|s| url.starts_with(s)) {
        Ok(())
    } else {
        Err(Error::Config(crate::ConfigError::Store(format!(
            "unsupported URL scheme in {:?}: use one of {}",
            redact(url),
            SCHEMES.join(", ")
        ))))
    }
}

/// A `rediss://` URL (also `rediss-sentinel://`, `rediss-cluster://`) needs TLS compiled in:
/// without it fred would connect in plaintext, so refuse at startup.
fn check_tls(url: &str) -> Result<()> {
    if url.starts_with("rediss") && !cfg!(feature = "tls") {
        return Err(Error::Store(fred::error::Error::new(
            fred::error::ErrorKind::Config,
            "rediss:// needs TLS: build tessera-core with its `tls` feature (on by default)",
        )));
    }
    Ok(())
}

/// A reply value as raw bytes (`None` for nil).
fn value_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::Bytes(b) => Some(b.to_vec()),
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Integer(i) => Some(i.to_string().into_bytes()),
        other => other.into_string().map(String::into_bytes),
    }
}

fn unexpected(msg: String) -> Error {
    Error::Store(fred::error::Error::new(
        fred::error::ErrorKind::Protocol,
        msg,
    ))
}

fn parse_load(reply: Value) -> Result<Load> {
    let Value::Array(mut parts) = reply else {
        return Err(unexpected("load script replied with a non-array".into()));
    };
    let status = parts.first().and_then(|v| v.as_i64()).unwrap_or(-99);
    if status == code::GONE {
        return Ok(Load::Gone);
    }
    if status == code::MOVED {
        return Ok(Load::Moved);
    }
    let refresh = match (status, parts.len()) {
        (code::TOUCHED, 2) => Refresh::Done,
        (code::FRESH, 3) => Refresh::NotDue {
            age_ms: parts
                .pop()
                .and_then(|v| v.as_i64())
                .map(|a| a.max(0) as u64),
        },
        (code::TOUCH_REFUSED, 3) => {
            Refresh::Refused(parts.pop().and_then(Value::into_string).unwrap_or_default())
        }
        _ => return Err(unexpected(format!("load script replied {parts:?}"))),
    };
    Ok(Load::Found(Loaded {
        fields: flat_fields(parts.pop().expect("len checked"))?,
        refresh,
    }))
}

/// A hash reply (a flat array of field, value, ... or a map) as fields.
fn flat_fields(v: Value) -> Result<HashMap<String, Vec<u8>>> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            let mut out = Vec::with_capacity(it.len() / 2);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        Value::Map(m) => m
            .inner()
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
        Value::Null => Vec::new(),
        other => return Err(unexpected(format!("expected a hash, got {other:?}"))),
    };
    let mut fields = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        // A field name that is not UTF-8 (written by another program) is kept, lossily, so
        // the session still loads; it can never be one of tessera's names.
        let k = match value_bytes(k) {
            Some(b) => String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            None => continue,
        };
        fields.insert(k, value_bytes(v).unwrap_or_default());
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_with_another_scheme_is_a_config_error_not_a_connection() {
        for url in [
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
            "unix:///tmp/r.sock",
        ] {
            let r = RedisBackend::connect(url, RedisOptions::default()).await;
            assert!(
                matches!(r, Err(Error::Config(crate::ConfigError::Store(_)))),
                "{url}"
            );
        }
        assert!(check_scheme("redis-sentinel://h:26379/0?sentinelServiceName=m").is_ok());
    }

    #[test]
    fn tls_urls_need_the_tls_feature() {
        assert!(check_tls("redis://127.0.0.1:6379").is_ok());
        let r = check_tls("rediss://127.0.0.1:6379");
        let c = check_tls("rediss-cluster://127.0.0.1:6379");
        if cfg!(feature = "tls") {
            assert!(r.is_ok() && c.is_ok());
        } else {
            assert!(
                matches!(r, Err(Error::Store(ref e)) if *e.kind() == fred::error::ErrorKind::Config),
                "{r:?}"
            );
            assert!(c.is_err());
        }
    }
}
