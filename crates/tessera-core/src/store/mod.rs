//! Where sessions live: Redis/Valkey (standalone, Sentinel, Cluster) or process memory.
//!
//! Both backends implement the same few operations with the same semantics, so everything
//! above them (the [`Session`](crate::Session) logic) is written once.

use crate::error::Result;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod check;
pub(crate) mod events;
pub(crate) mod memory;
pub(crate) mod redis;

pub use self::check::{ServerReport, ServerWarning};
pub use self::redis::{NearCacheCoherence, NearCacheStats, RedisOptions};

/// Reserved hash fields (user fields may not start with `__`): named in
/// [`crate::layout::fields`], re-exported here for the store's and the session's imports.
pub(crate) use crate::layout::fields;

/// The session store: a handle that is cheap to clone and shared by all requests.
///
/// ```
/// # async fn demo() -> Result<(), tessera_core::Error> {
/// use tessera_core::Store;
/// let in_memory = Store::memory();
/// let redis = Store::redis("redis://127.0.0.1:6379").await?;
/// let cluster = Store::redis("redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    backend: Arc<Slot>,
}

enum Slot {
    Ready(Backend),
    /// Started before the server could be reached: connecting in the background (see
    /// [`RedisOptions::strict_start`]).
    Lazy(Arc<Lazy>),
}

enum Backend {
    Memory(memory::MemoryBackend),
    Redis(Box<redis::RedisBackend>),
}

/// A Redis store still connecting: the backend once it is there.
struct Lazy {
    ready: std::sync::OnceLock<Backend>,
    url_redacted: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.backend {
            Slot::Ready(Backend::Memory(_)) => f.write_str("Store(memory)"),
            Slot::Ready(Backend::Redis(r)) => write!(f, "Store(redis: {})", r.describe()),
            Slot::Lazy(l) => match l.ready.get() {
                Some(Backend::Redis(r)) => write!(f, "Store(redis: {})", r.describe()),
                _ => write!(f, "Store(redis: {}, connecting)", l.url_redacted),
            },
        }
    }
}

/// How long a key retired by a login's id rotation stays as a tombstone ("moved"): long enough
/// for the requests the browser sent with the old cookie before the login's answer arrived.
pub(crate) const TOMBSTONE: Duration = Duration::from_secs(2);

/// Timeouts in milliseconds, as the backends take them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) idle_ms: u64,
    pub(crate) touch_ms: u64,
    /// 0 = no absolute lifetime.
    pub(crate) absolute_ms: u64,
    /// The most activity trail entries a session keeps.
    pub(crate) trail_max: usize,
    /// The longest idle timeout a session's own expiry may give (the configuration's
    /// `longest_expiry` now: a stored expiry above it, from before the configuration was
    /// lowered, is cut to it).
    pub(crate) longest_ms: u64,
}

/// A loaded session hash (reserved fields included).
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) fields: HashMap<String, Vec<u8>>,
    pub(crate) refresh: Refresh,
    /// Served by the near-cache (no store command).
    pub(crate) cached: bool,
}

/// What a load did about the TTL refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// The load slid the TTL (the last refresh was at least a touch interval old).
    Done,
    /// Not due. `age_ms`: how long ago the last refresh was, by the store's own clock (so app
    /// clocks never enter the decision); `None` when the load did not measure it.
    NotDue { age_ms: Option<u64> },
    /// Due, but the store refused the write (over `maxmemory` with `noeviction`): the session
    /// is served anyway and the refresh is tried again on the next request.
    Refused(String),
}

/// Step 1 of an id rotation: the old key, frozen against writes, and its current contents.
#[derive(Debug)]
pub(crate) enum Freeze {
    /// No live session at the old key.
    Gone,
    /// Another rotation of this session is under way.
    Moved,
    /// Frozen: `token` releases it; `fields` is what the copy must hold.
    Frozen {
        token: String,
        fields: HashMap<String, Vec<u8>>,
    },
}

/// The last step of an id rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// Retired (replaced by a short-lived tombstone) or thawed, as asked.
    Done,
    /// Already retired with this token: a retire whose answer was lost did complete.
    Retired,
    /// The old key was ended meanwhile (logout-all, revoke, expiry).
    Gone,
    /// The freeze was broken (it went stale and a write landed, or another rotation took over).
    Taken,
}

/// What [`Store::set_if_absent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetIfAbsent {
    /// The field holds this value now: the one given, or the one that was there first.
    Holds(String),
    /// No session at the key: nothing written.
    Gone,
    /// A login is moving the session to a new id: nothing written.
    Moved,
}

/// What ending a session found by a field query did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndIf {
    /// It still held the value: deleted.
    Ended,
    /// It no longer holds the value: left alone.
    Changed,
    /// No session there: an 'ended' tombstone was left, so a create still on its way fails.
    Absent,
    /// A login moved the session to a new id moments ago: its storage key (member).
    Moved(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A new key; fails if it exists. `created_ms` keeps the creation time across id rotation
    /// (0 = now).
    Create { created_ms: u64 },
    /// An existing key; writes nothing if it is gone.
    Update,
}

#[derive(Debug)]
pub(crate) struct WriteOp<'a> {
    pub(crate) mode: Mode,
    pub(crate) set: Vec<(&'a str, &'a str)>,
    pub(crate) del: Vec<&'a str>,
    pub(crate) incr: Option<(&'a str, i64)>,
    /// With `incr` on a field that does not exist yet: refuse if the session already holds
    /// this many user fields (0 = not checked by the store: the caller checked).
    pub(crate) max_fields: usize,
    /// Refuse the write if it would land after this server time, ms (0 = no cap): a write
    /// behind a field-index add must land within half the prune guard of it.
    pub(crate) not_after_ms: u64,
    /// Set fields that get a lifetime, ms (see `set_lifetimes` in the scripts' prelude).
    pub(crate) expire: Vec<(&'a str, u64)>,
    /// Activity trail entries to append, oldest first (stamped with the store's time).
    pub(crate) records: Vec<&'a str>,
}

/// What a load found.
#[derive(Debug)]
pub(crate) enum Load {
    /// No live session.
    Gone,
    /// The key was retired by a login's id rotation moments ago (a tombstone): the session
    /// lives on under a new id, which the browser may already hold.
    Moved,
    Found(Loaded),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteResult {
    /// Written. `refreshed`: an update also slid the TTL (its last refresh was at least a touch
    /// interval old); `user`: the session's user, for the index refresh that must follow.
    Written {
        incr: i64,
        refreshed: bool,
        user: Option<String>,
    },
    /// Update of a key that no longer exists (or passed its absolute lifetime): nothing written.
    Gone,
    /// The increment's field does not hold an integer: nothing written.
    NotAnInteger,
    /// Create of a key that exists (an id collision): nothing written.
    Exists,
    /// The session is being moved to a new id by a login in another request: nothing written.
    Moved,
    /// The increment would add a field beyond `max_fields`: nothing written.
    TooManyFields,
    /// It would have landed after `not_after_ms` (memory store; Redis answers an error):
    /// nothing written.
    TooLate,
}

impl Store {
    /// A store in this process's memory, with the same semantics as Redis (TTL, dirty writes,
    /// atomic increments). For tests, demos and single-instance apps: sessions are lost on
    /// restart and not shared between instances.
    ///
    /// Bounded to 64 MiB of session data; see [`Store::memory_with_limit`].
    pub fn memory() -> Store {
        Self::memory_with_limit(Self::DEFAULT_MEMORY_LIMIT)
    }

    /// The bound of [`Store::memory`]: 64 MiB.
    pub const DEFAULT_MEMORY_LIMIT: usize = 64 * 1024 * 1024;

    /// A memory store holding at most about `max_bytes` of session data (names, values and a
    /// small per-key overhead). Past it, the least recently used sessions are evicted, as a
    /// Redis with `maxmemory-policy volatile-lru` does; user indexes are never evicted.
    ///
    /// ```
    /// let store = tessera_core::Store::memory_with_limit(16 * 1024 * 1024);
    /// # let _ = store;
    /// ```
    pub fn memory_with_limit(max_bytes: usize) -> Store {
        Store {
            backend: Arc::new(Slot::Ready(Backend::Memory(memory::MemoryBackend::new(
                max_bytes,
            )))),
        }
    }

    /// For a memory store: how many keys it holds and how many bytes they are counted for.
    /// `None` for Redis (ask the server: `INFO memory`).
    pub fn memory_usage(&self) -> Option<(usize, usize)> {
        match self.ready().ok()? {
            Backend::Memory(m) => Some(m.usage()),
            Backend::Redis(_) => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn memory_backend(&self) -> Option<&memory::MemoryBackend> {
        match self.ready().ok()? {
            Backend::Memory(m) => Some(m),
            Backend::Redis(_) => None,
        }
    }

    /// Connects to Redis or Valkey with default [`RedisOptions`] (500 ms command timeout).
    ///
    /// `url` is any URL fred accepts: `redis://host:port/db`, `rediss://…` (TLS via rustls),
    /// `redis-sentinel://host:port/db?sentinelServiceName=mymaster`,
    /// `redis-cluster://host:port?node=host2:port2`.
    ///
    /// A URL that cannot work (wrong scheme, unreadable) is an error. A server that cannot be
    /// reached yet is not: the store connects in the background, and until it has, every
    /// operation is [`Error::Unavailable`](crate::Error::Unavailable) (HTTP 503), so an app
    /// may start before Redis does. [`RedisOptions::strict_start`] makes it an error instead.
    pub async fn redis(url: &str) -> Result<Store> {
        Self::redis_with(url, RedisOptions::default()).await
    }

    /// Connects to Redis or Valkey with the given options.
    pub async fn redis_with(url: &str, options: RedisOptions) -> Result<Store> {
        let strict = options.is_strict_start();
        match redis::RedisBackend::connect(url, options.clone()).await {
            Ok(r) => {
                let store = Store {
                    backend: Arc::new(Slot::Ready(Backend::Redis(Box::new(r)))),
                };
                store.check_logged().await;
                Ok(store)
            }
            // Only a server that could not be reached: a refusal (a wrong password, missing
            // permissions, a TLS mismatch) is the configuration, and retrying will not help.
            Err(e) if strict || !matches!(e, crate::Error::Unavailable(_)) => Err(e),
            Err(e) => {
                let url_redacted = redis::redact(url);
                tracing::warn!(url = %url_redacted, error = %e, cause = ?std::error::Error::source(&e), "session store not reachable at start: answering 503 until it is, connecting in the background");
                let lazy = Arc::new(Lazy {
                    ready: std::sync::OnceLock::new(),
                    url_redacted,
                });
                tokio::spawn(connect_later(
                    url.to_string(),
                    options,
                    Arc::downgrade(&lazy),
                ));
                Ok(Store {
                    backend: Arc::new(Slot::Lazy(lazy)),
                })
            }
        }
    }

    /// Whether the store has connected (always, for a memory store): `false` while a store
    /// that started before its server could be reached is still connecting. It says nothing of
    /// the server now (a connected store whose server went down answers 503 and reconnects by
    /// itself): not a health check.
    pub fn is_connected(&self) -> bool {
        self.ready().is_ok()
    }

    /// The backend, or [`Error::Unavailable`](crate::Error::Unavailable) while still
    /// connecting.
    fn ready(&self) -> Result<&Backend> {
        match &*self.backend {
            Slot::Ready(b) => Ok(b),
            Slot::Lazy(l) => l.ready.get().ok_or_else(|| {
                crate::Error::Unavailable(crate::error::StoreError::new(
                    "the session store has not been reached since the app started; connecting in the background",
                ))
            }),
        }
    }

    async fn check_logged(&self) {
        if let Err(e) = self.check_server().await {
            tracing::warn!(target: "tessera::check", error = %e, "could not check the session store's settings");
        }
    }

    /// Checks the server's settings for session safety: AOF off without a replica, an
    /// `allkeys-*` eviction policy, a server too old for tessera (every primary of a cluster
    /// is checked). Each warning is also logged with `tracing::warn!`. [`Store::redis`] runs
    /// it once at connect; a memory store reports nothing.
    pub async fn check_server(&self) -> Result<ServerReport> {
        let report = match self.ready()? {
            Backend::Memory(_) => ServerReport {
                servers: vec!["memory".into()],
                warnings: Vec::new(),
            },
            // Several INFOs (on every primary of a cluster): a startup check with its own bound.
            Backend::Redis(r) => {
                tokio::time::timeout(Duration::from_secs(10), check::check_redis(r))
                    .await
                    .map_err(|_| {
                        crate::Error::Unavailable(crate::error::StoreError::timeout(
                            "the server check did not finish within 10 s",
                        ))
                    })??
            }
        };
        for w in &report.warnings {
            tracing::warn!(target: "tessera::check", "{w}");
        }
        tracing::info!(target: "tessera::check", servers = ?report.servers, warnings = report.warnings.len(), "session store checked");
        Ok(report)
    }

    /// What the near-cache did so far (see [`RedisOptions::near_cache`]); `None` when it is
    /// off or the store is in memory.
    pub fn near_cache_stats(&self) -> Option<NearCacheStats> {
        match self.ready().ok()? {
            Backend::Redis(r) => r.near_cache_stats(),
            Backend::Memory(_) => None,
        }
    }

    /// Whether the server offers the Redis query engine (`FT.*`), as found at connect: for
    /// [`SessionManager::search`](crate::SessionManager::search). `false` for the memory store,
    /// for servers without it, and on Redis Cluster (where it would need a coordinator).
    pub fn has_query_engine(&self) -> bool {
        let Ok(b) = self.ready() else {
            return false;
        };
        match b {
            Backend::Redis(r) => r.query_engine() == redis::QueryEngine::Available,
            Backend::Memory(_) => false,
        }
    }

    fn query_engine(&self) -> Result<&redis::RedisBackend> {
        match self.ready()? {
            Backend::Redis(r) => {
                r.query_engine().require()?;
                Ok(r)
            }
            Backend::Memory(_) => Err(crate::Error::Unsupported(
                "the memory store has no query engine: query the declared field indexes",
            )),
        }
    }

    pub(crate) async fn ft_create(
        &self,
        index: &str,
        prefix: &str,
        schema: &[String],
    ) -> Result<()> {
        let r = self.query_engine()?;
        r.bounded_write(r.ft_create(index, prefix, schema)).await
    }

    pub(crate) async fn ft_search(
        &self,
        index: &str,
        query: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<(String, HashMap<String, Vec<u8>>)>)> {
        let r = self.query_engine()?;
        r.bounded(r.ft_search(index, query, offset, limit)).await
    }

    pub(crate) async fn ft_count_by(
        &self,
        index: &str,
        query: &str,
        field: &str,
    ) -> Result<Vec<(Option<String>, usize)>> {
        let r = self.query_engine()?;
        r.bounded(r.ft_count_by(index, query, field)).await
    }

    /// The underlying client pool, for tessera's own tests only: the client library is not
    /// part of the API (a new major version of it must not break users).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn redis_pool(&self) -> Option<&fred::clients::Pool> {
        match self.ready().ok()? {
            Backend::Redis(r) => Some(r.pool()),
            Backend::Memory(_) => None,
        }
    }

    /// Loads a session. `known_fresh`: this process saw it refreshed less than a touch
    /// interval ago, so no refresh is due and a plain read suffices (one cheap command, or
    /// none when the near-cache holds it and `use_cache`); otherwise the load also does the
    /// throttled refresh, in the same round trip.
    pub(crate) async fn load(
        &self,
        key: &str,
        t: Timing,
        known_fresh: bool,
        use_cache: bool,
    ) -> Result<Load> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.load(key, t)),
            Backend::Redis(r) if known_fresh => {
                let mut fill = use_cache;
                if use_cache && r.near_cache_on() {
                    match r.cached(key, t).await {
                        redis::Cached::Hit(fields) => {
                            let mut load = Load::of_plain(fields);
                            if let Load::Found(l) = &mut load {
                                l.cached = true;
                            }
                            return Ok(load);
                        }
                        redis::Cached::Miss => {}
                        redis::Cached::BarrierFailed => fill = false,
                    }
                }
                // No clock comparison here: the absolute deadline also caps the key's TTL, so
                // the server removes the key by then.
                let fields = r.bounded(r.load_plain(key, fill)).await?;
                Ok(Load::of_plain(fields))
            }
            Backend::Redis(r) => r.bounded(r.load(key, t)).await,
        }
    }

    pub(crate) async fn write(
        &self,
        key: &str,
        op: &WriteOp<'_>,
        t: Timing,
    ) -> Result<WriteResult> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.write(key, op, t)),
            Backend::Redis(r) => r.write_to(key, r.write(key, op, t)).await,
        }
    }

    /// Creates a new session key under a fresh id (which cannot exist yet): the fields, the
    /// creation time (`created_ms`, 0 = now), the last-refresh time and the TTL, all or
    /// nothing. `Gone` when `created_ms` is past the absolute lifetime.
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
        match self.ready()? {
            Backend::Memory(m) => {
                let op = WriteOp {
                    mode: Mode::Create { created_ms },
                    set: set.to_vec(),
                    del: Vec::new(),
                    incr: None,
                    max_fields: 0,
                    not_after_ms,
                    expire: expire.to_vec(),
                    records: records.to_vec(),
                };
                Ok(m.write(key, &op, t))
            }
            Backend::Redis(r) => {
                r.write_to(
                    key,
                    r.create(key, set, created_ms, expire, records, not_after_ms, t),
                )
                .await
            }
        }
    }

    /// Whether field lifetimes use the server's hash-field expiry (`HPEXPIRE`, found at
    /// connect: Redis 7.4 and later, Valkey 9); otherwise a stamp beside each field is checked
    /// when the session is read. The behaviour is the same; see
    /// [`Session::insert_for`](crate::Session::insert_for).
    pub fn native_field_expiry(&self) -> bool {
        let Ok(b) = self.ready() else {
            return false;
        };
        match b {
            Backend::Redis(r) => r.native_field_expiry(),
            Backend::Memory(_) => false,
        }
    }

    /// Rotation step 1: freezes `key` against writes (for a while) and returns its contents.
    pub(crate) async fn freeze(&self, key: &str, new_member: &str, t: Timing) -> Result<Freeze> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.freeze(key, new_member, t)),
            Backend::Redis(r) => r.write_to(key, r.freeze(key, new_member, t)).await,
        }
    }

    /// Rotation's last step: deletes the frozen old key (`retire`), or thaws it after a failed
    /// rotation; only if the freeze `token` still holds.
    pub(crate) async fn release(&self, key: &str, token: &str, retire: bool) -> Result<Release> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.release(key, token, retire)),
            Backend::Redis(r) => r.write_to(key, r.release(key, token, retire)).await,
        }
    }

    /// A plain string key's value, as bytes (`None` when there is none, or on the memory
    /// store, which holds no such keys): for taking over sessions another store wrote.
    pub(crate) async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.ready()? {
            Backend::Memory(_) => Ok(None),
            Backend::Redis(r) => r.bounded(r.get_bytes(key)).await,
        }
    }

    /// Sets a plain string key, expiring after `ttl_ms` (nothing on the memory store, which
    /// takes over nothing: the only reader of such keys is a take-over).
    pub(crate) async fn set_bytes(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<()> {
        match self.ready()? {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.write_to(key, r.set_bytes(key, value, ttl_ms)).await,
        }
    }

    /// Deletes a plain string key (or, with a `grace_ms`, makes it expire within that) only
    /// if it still holds `expected`; whether it did.
    pub(crate) async fn retire_bytes(
        &self,
        key: &str,
        expected: &[u8],
        grace_ms: u64,
    ) -> Result<bool> {
        match self.ready()? {
            Backend::Memory(_) => Ok(false),
            Backend::Redis(r) => {
                r.write_to(key, r.retire_bytes(key, expected, grace_ms))
                    .await
            }
        }
    }

    /// Deletes a key; whether it existed.
    pub(crate) async fn delete(&self, key: &str) -> Result<bool> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.delete(key)),
            Backend::Redis(r) => r.write_to(key, r.delete(key)).await,
        }
    }

    /// Deletes several keys (one pipelined round trip on Redis, each command single-key);
    /// whether each existed.
    pub(crate) async fn delete_many(&self, keys: &[String]) -> Result<Vec<bool>> {
        match self.ready()? {
            Backend::Memory(m) => Ok(keys.iter().map(|k| m.delete(k)).collect()),
            Backend::Redis(r) => {
                let res = r.bounded_write(r.delete_many(keys)).await;
                for k in keys {
                    r.changed(k);
                }
                res
            }
        }
    }

    /// Deletes several session keys like [`delete_many`](Self::delete_many), returning what
    /// each held in `names` (`None`: no session was there).
    /// With `mark_ms` > 0, each ended session leaves an 'ended' mark for that long (see
    /// take.lua).
    pub(crate) async fn take_many(
        &self,
        keys: &[String],
        names: &[&str],
        mark_ms: u64,
    ) -> Result<Vec<Option<Vec<Option<Vec<u8>>>>>> {
        match self.ready()? {
            Backend::Memory(m) => Ok(keys.iter().map(|k| m.take(k, names, mark_ms)).collect()),
            Backend::Redis(r) => {
                let res = r.bounded_write(r.take_many(keys, names, mark_ms)).await;
                for k in keys {
                    r.changed(k);
                }
                res
            }
        }
    }

    /// Reads some fields of several session hashes without touching them (one pipelined
    /// round trip on Redis); `None` for a key that holds no session.
    pub(crate) async fn peek_many(
        &self,
        keys: &[String],
        names: &[&str],
    ) -> Result<Vec<Option<Vec<Option<Vec<u8>>>>>> {
        match self.ready()? {
            Backend::Memory(m) => Ok(keys.iter().map(|k| m.peek(k, names)).collect()),
            Backend::Redis(r) => r.bounded(r.peek_many(keys, names)).await,
        }
    }

    /// Reads `names` of each key, whatever the key holds (a session, a retired id's tombstone);
    /// `None` where it holds none of them. One pipelined round trip.
    pub(crate) async fn peek_raw(
        &self,
        keys: &[String],
        names: &[&str],
    ) -> Result<Vec<Option<Vec<Option<Vec<u8>>>>>> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.peek_raw(keys, names)),
            Backend::Redis(r) => r.bounded(r.hmget_many(keys, names)).await,
        }
    }

    /// Adds or refreshes `member` in a user index with score now + `bound_ms`, prunes members
    /// whose bound passed, keeps the index TTL at its highest bound, and returns the members
    /// beyond `max` (0 = no limit), least recently refreshed first. `leaving` (the member a
    /// rotation replaces) is neither counted nor chosen.
    pub(crate) async fn index_add(
        &self,
        key: &str,
        member: &str,
        bound_ms: u64,
        max: usize,
        leaving: Option<&str>,
    ) -> Result<Vec<String>> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.index_add(key, member, bound_ms, max, leaving)),
            Backend::Redis(r) => {
                r.bounded_write(r.index_add(key, member, bound_ms, max, leaving))
                    .await
            }
        }
    }

    /// The members of a user index whose bound has not passed, least recently refreshed first.
    pub(crate) async fn index_members(&self, key: &str) -> Result<Vec<String>> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.index_members(key, None)),
            Backend::Redis(r) => r.bounded(r.index_members(key, None)).await,
        }
    }

    /// The members of a field index whose deadline is at or after `since_ms` (store time),
    /// earliest deadline first.
    pub(crate) async fn field_members(&self, key: &str, since_ms: u64) -> Result<Vec<String>> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.index_members(key, Some(since_ms))),
            Backend::Redis(r) => r.bounded(r.index_members(key, Some(since_ms))).await,
        }
    }

    /// Removes `members` from each field-index key in `keys` where their score (deadline) is
    /// at most `max_score`, and the members whose deadline has passed; how many went. One
    /// script per hash slot.
    pub(crate) async fn index_prune(
        &self,
        keys: &[String],
        members: &[String],
        max_score: u64,
    ) -> Result<i64> {
        if keys.is_empty() {
            return Ok(0);
        }
        match self.ready()? {
            Backend::Memory(m) => Ok(m.index_prune(keys, members, max_score)),
            Backend::Redis(r) => {
                r.bounded_write(r.index_prune(keys, members, max_score))
                    .await
            }
        }
    }

    /// Adds or refreshes `member` in each field-index key (score = its deadline, the store's
    /// time now + `bound_ms`; members whose deadline has passed dropped; each key living until
    /// its latest deadline), one script per hash slot; the store's earliest time of the adds,
    /// ms (0: no keys).
    pub(crate) async fn field_add(
        &self,
        keys: &[String],
        member: &str,
        bound_ms: u64,
    ) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        match self.ready()? {
            Backend::Memory(m) => {
                m.field_add(keys, member, bound_ms);
                Ok(now_ms())
            }
            Backend::Redis(r) => r.bounded_write(r.field_add(keys, member, bound_ms)).await,
        }
    }

    /// The store's clock now, ms (for Redis an estimate that errs early; `None` before the
    /// first observation).
    pub(crate) fn server_now(&self) -> Option<u64> {
        match self.ready().ok()? {
            Backend::Memory(_) => Some(now_ms()),
            Backend::Redis(r) => r.server_now(),
        }
    }

    /// Sets `field` of the live session at `key` unless it holds a value already, and answers
    /// the value it holds now: a compare-and-set in one step (the CSRF secret).
    pub(crate) async fn set_if_absent(
        &self,
        key: &str,
        field: &str,
        value: &str,
    ) -> Result<SetIfAbsent> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.set_if_absent(key, field, value)),
            Backend::Redis(r) => r.write_to(key, r.set_if_absent(key, field, value)).await,
        }
    }

    /// Ends the session at `key` if `field` still holds exactly `expected` (`None`: whatever it
    /// holds); atomic, one key. Where no session is, leaves an 'ended' tombstone for
    /// `tombstone_ms`.
    pub(crate) async fn end_if(
        &self,
        key: &str,
        field: &str,
        expected: Option<&[u8]>,
        tombstone_ms: u64,
    ) -> Result<EndIf> {
        match self.ready()? {
            Backend::Memory(m) => Ok(m.end_if(key, field, expected, tombstone_ms)),
            Backend::Redis(r) => {
                r.write_to(key, r.end_if(key, field, expected, tombstone_ms))
                    .await
            }
        }
    }

    /// Whole hashes of several keys without touching them (one pipelined round trip on
    /// Redis); an empty map where nothing is.
    pub(crate) async fn read_many(&self, keys: &[String]) -> Result<Vec<HashMap<String, Vec<u8>>>> {
        match self.ready()? {
            Backend::Memory(m) => Ok(keys.iter().map(|k| m.read(k)).collect()),
            Backend::Redis(r) => r.bounded(r.read_many(keys)).await,
        }
    }

    /// Removes members from a user index.
    pub(crate) async fn index_remove(&self, key: &str, members: &[String]) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        match self.ready()? {
            Backend::Memory(m) => {
                m.index_remove(key, members);
                Ok(())
            }
            Backend::Redis(r) => r.bounded_write(r.index_remove(key, members)).await,
        }
    }
}

impl Load {
    /// A plain `HGETALL`: a hash without `__c` is no session, unless it is a tombstone.
    pub(crate) fn of_plain(fields: HashMap<String, Vec<u8>>) -> Load {
        if fields.contains_key(fields::CREATED) {
            Load::Found(Loaded {
                fields,
                refresh: Refresh::NotDue { age_ms: None },
                cached: false,
            })
        } else if fields
            .get(fields::MOVING)
            .is_some_and(|m| m.starts_with(b"retired "))
        {
            Load::Moved
        } else {
            Load::Gone
        }
    }
}

/// The idle timeout of a session with its own persistent expiry (`fields::OWN_EXPIRY` =
/// `p <ms>`), at most `longest_ms`; `None` for the configured one (no field, or `b`: a browser
/// session keeps the configured idle timeout). Mirrors `own_idle` in the scripts' prelude.
pub(crate) fn own_idle_ms(v: Option<&Vec<u8>>, longest_ms: u64) -> Option<u64> {
    let v = std::str::from_utf8(v?).ok()?;
    let ms = v.strip_prefix("p ")?;
    if !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n.min(longest_ms.max(1)))
}

/// Remaining lifetime of a session: the idle timeout, capped by its absolute deadline.
/// `None` when the absolute deadline has passed. Mirrors the Lua scripts.
pub(crate) fn ttl_ms(now: u64, created: u64, t: Timing) -> Option<u64> {
    if t.absolute_ms == 0 {
        return Some(t.idle_ms);
    }
    let deadline = created.saturating_add(t.absolute_ms);
    if now >= deadline {
        None
    } else {
        Some(t.idle_ms.min(deadline - now))
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Connects a store that started before its server could be reached: tries again every
/// 500 ms until it succeeds (or every clone of the store is gone), then serves from it.
async fn connect_later(url: String, options: RedisOptions, lazy: std::sync::Weak<Lazy>) {
    let mut attempts: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(slot) = lazy.upgrade() else { return };
        attempts += 1;
        match redis::RedisBackend::connect(&url, options.clone()).await {
            Ok(r) => {
                let _ = slot.ready.set(Backend::Redis(Box::new(r)));
                tracing::info!(url = %slot.url_redacted, attempts, "session store reached: serving sessions");
                let store = Store {
                    backend: Arc::new(Slot::Lazy(slot)),
                };
                store.check_logged().await;
                return;
            }
            Err(e) => {
                // Every attempt at debug level, a reminder at warn level every 30 s.
                if attempts.is_multiple_of(60) {
                    tracing::warn!(url = %slot.url_redacted, error = %e, "session store still not reachable: answering 503");
                } else {
                    tracing::debug!(url = %slot.url_redacted, error = %e, "session store not reachable yet");
                }
            }
        }
    }
}

#[cfg(test)]
mod future_sizes {
    /// A future is copied each time it is moved (into a timeout, a span, a join, a box): the
    /// store's futures must stay small, so fred's 6-7 KB command futures are boxed where they
    /// are awaited (they made every store future ~15 KB, and `memmove` a tenth of login's CPU).
    #[test]
    fn store_futures_stay_small() {
        let store = super::Store::memory();
        let t = super::Timing {
            idle_ms: 1,
            touch_ms: 1,
            absolute_ms: 0,
            trail_max: 1,
            longest_ms: 1,
        };
        let op = super::WriteOp {
            mode: super::Mode::Update,
            set: vec![],
            del: vec![],
            incr: None,
            max_fields: 0,
            not_after_ms: 0,
            expire: vec![],
            records: vec![],
        };
        let sizes = [
            (
                "load",
                std::mem::size_of_val(&store.load("k", t, false, true)),
            ),
            ("write", std::mem::size_of_val(&store.write("k", &op, t))),
            (
                "create",
                std::mem::size_of_val(&store.create("k", &[], 0, &[], &[], 0, t)),
            ),
            (
                "index_add",
                std::mem::size_of_val(&store.index_add("k", "m", 1, 0, None)),
            ),
            ("freeze", std::mem::size_of_val(&store.freeze("k", "m", t))),
        ];
        for (name, size) in sizes {
            assert!(size <= 2048, "Store::{name}'s future is {size} bytes");
        }
    }
}
