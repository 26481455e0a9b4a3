//! Where sessions live: Redis/Valkey (standalone, Sentinel, Cluster) or process memory.
//!
//! Both backends implement one contract (`contract.rs`: the operations, their signatures
//! written once) with the same semantics, so everything above them (the
//! [`Session`](crate::Session) logic) is written once. This file is the handle: [`Store`],
//! its construction, the lazy connect of a server not reachable yet, and the public queries.

use crate::error::Result;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod check;
#[cfg(test)]
mod conformance;
pub(crate) mod contract;
pub(crate) mod event_keys;
pub(crate) mod memory;
mod ops;
pub(crate) mod redis;
mod ttl;

pub use self::check::{ServerReport, ServerWarning};
pub use self::redis::{NearCacheCoherence, NearCacheStats, RedisOptions};

/// The events' keys and types under the name the session logic uses for them.
pub(crate) use self::event_keys as events;
pub(crate) use self::ops::{
    EndIf, Freeze, IndexJoin, Load, Loaded, Mode, NewSession, Picked, Refresh, Release,
    SetIfAbsent, Timing, WriteOp, WriteResult, TOMBSTONE,
};
pub(crate) use self::ttl::{now_ms, own_idle_ms, ttl_ms};
use contract::Facts;

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

/// The backend a ready store holds (the contract's one dispatch is over this).
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
        match (self.facts(), &*self.backend) {
            (Some(b), _) => write!(f, "Store({})", b.describe()),
            (None, Slot::Lazy(l)) => write!(f, "Store(redis: {}, connecting)", l.url_redacted),
            (None, Slot::Ready(_)) => unreachable!("a ready slot has its facts"),
        }
    }
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
        self.backend().is_ok()
    }

    /// The backend, or [`Error::Unavailable`](crate::Error::Unavailable) while still
    /// connecting.
    fn backend(&self) -> Result<&Backend> {
        match &*self.backend {
            Slot::Ready(b) => Ok(b),
            Slot::Lazy(l) => l.ready.get().ok_or_else(|| {
                crate::Error::Unavailable(crate::error::StoreError::new(
                    "the session store has not been reached since the app started; connecting in the background",
                ))
            }),
        }
    }

    /// The backend's [`Facts`]; `None` while still connecting.
    fn facts(&self) -> Option<&dyn Facts> {
        match self.backend().ok()? {
            Backend::Memory(m) => Some(m),
            Backend::Redis(r) => Some(&**r),
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
        let report = self.check_settings().await?;
        for w in &report.warnings {
            tracing::warn!(target: "tessera::check", "{w}");
        }
        tracing::info!(target: "tessera::check", servers = ?report.servers, warnings = report.warnings.len(), "session store checked");
        Ok(report)
    }

    /// For a memory store: how many keys it holds and how many bytes they are counted for.
    /// `None` for Redis (ask the server: `INFO memory`).
    pub fn memory_usage(&self) -> Option<(usize, usize)> {
        self.facts()?.memory_usage()
    }

    #[cfg(test)]
    pub(crate) fn memory_backend(&self) -> Option<&memory::MemoryBackend> {
        self.facts()?.as_memory()
    }

    /// What the near-cache did so far (see [`RedisOptions::near_cache`]); `None` when it is
    /// off or the store is in memory.
    pub fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.facts()?.near_cache_stats()
    }

    /// Whether the server offers the Redis query engine (`FT.*`), as found at connect: for
    /// [`SessionManager::search`](crate::SessionManager::search). `false` for the memory store,
    /// for servers without it, and on Redis Cluster (where it would need a coordinator).
    pub fn has_query_engine(&self) -> bool {
        self.facts().is_some_and(|b| b.has_query_engine())
    }

    /// Whether field lifetimes use the server's hash-field expiry (`HPEXPIRE`, found at
    /// connect: Redis 7.4 and later, Valkey 9); otherwise a stamp beside each field is checked
    /// when the session is read. The behaviour is the same; see
    /// [`Session::insert_for`](crate::Session::insert_for).
    pub fn native_field_expiry(&self) -> bool {
        self.facts().is_some_and(|b| b.native_field_expiry())
    }

    /// The store's clock now, ms (for Redis an estimate that errs early; `None` before the
    /// first observation).
    pub(crate) fn server_now(&self) -> Option<u64> {
        self.facts()?.server_now()
    }

    /// The underlying client pool, for tessera's own tests only: the client library is not
    /// part of the API (a new major version of it must not break users).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn redis_pool(&self) -> Option<&fred::clients::Pool> {
        self.facts()?.redis_pool()
    }
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
                std::mem::size_of_val(&store.create("k", &super::NewSession::fields(&[]), t)),
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
