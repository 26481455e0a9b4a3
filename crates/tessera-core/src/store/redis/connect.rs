//! Connecting: the options, the URL checks (scheme, TLS), the pool and its reconnect policy,
//! script preloading and the first reading of the server's clock.

use super::protocol::{
    ServerClock, CREATE, END_IF, EVENTS, EVENTS_DUE, EVENTS_READ, FIELD_ADD, FREEZE, INDEX_ADD,
    INDEX_PRUNE, LOAD, PROBE, RELEASE, RETIRE_LEGACY, SET_IF_ABSENT, TAKE, WRITE,
};
use super::{freeze_ms, redact, QueryEngine, RedisBackend};
use crate::error::{Error, Result, StoreError};
use fred::prelude::*;
use fred::types::config::Options;
use fred::types::{ClusterHash, CustomCommand};
use std::time::Duration;

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
    near_cache_bytes: usize,
    near_cache_coherence: NearCacheCoherence,
    strict_start: bool,
    replica_acks: u32,
}

/// How the near-cache makes sure a hit is not stale (see [`RedisOptions::near_cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NearCacheCoherence {
    /// The default: a hit is served only after one round trip on the tracking connection
    /// (to the key's node; one server: a read of the database's small marker key, shared by
    /// concurrent hits; a cluster: `EXISTS key`), so every invalidation the server sent
    /// before the request arrived has been read and applied, and a flushed or swapped
    /// database is noticed. A write acknowledged to any client before this request reached
    /// the instance is never hidden by the cache, however busy the instance is. Costs one
    /// small command per hit (no session data is read or parsed).
    #[default]
    Barrier,
    /// A hit costs no command at all; invalidations are applied as soon as the instance's
    /// runtime reads them from the socket. A request that reaches this instance sooner than
    /// that after another instance's acknowledged write can see the old value: the README's
    /// "Near-cache" has the measured window. A flushed or swapped database is noticed by
    /// the tracking connection's once-a-second check.
    Push,
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
    /// Clients in the pool (default 1: one multiplexed connection per server, which batches
    /// concurrent requests best; measured in BENCHMARKS.md, "Profile").
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }
    /// Turns on the near-cache, holding at most about `max_bytes` of session data (0, the
    /// default, is off): a read inside the touch interval of a session this instance read
    /// before costs no Redis command. The server keeps it coherent (RESP3 client tracking,
    /// on one extra connection per node); see the README's "Near-cache"
    /// for the guarantee, and [`Session::load_fresh`](crate::Session::load_fresh) for a
    /// handler that must read the store itself.
    ///
    /// ```
    /// let opts = tessera_core::RedisOptions::default().near_cache(64 * 1024 * 1024);
    /// # let _ = opts;
    /// ```
    pub fn near_cache(mut self, max_bytes: usize) -> Self {
        self.near_cache_bytes = max_bytes;
        self
    }
    /// Whether [`Store::redis`](crate::Store::redis) fails when the server cannot be reached
    /// at start (default `false`: the store connects in the background and answers
    /// [`Error::Unavailable`](crate::Error::Unavailable), 503, until then). Turn it on for a
    /// process that should not start without its store (a migration job; a deploy whose
    /// health check is the start itself).
    ///
    /// ```
    /// # async fn demo() {
    /// use tessera_core::{RedisOptions, Store};
    /// let strict = RedisOptions::default().strict_start(true);
    /// assert!(Store::redis_with("redis://127.0.0.1:1", strict).await.is_err());
    /// let lazy = Store::redis("redis://127.0.0.1:1").await.unwrap();
    /// assert!(!lazy.is_connected());
    /// # }
    /// ```
    pub fn strict_start(mut self, on: bool) -> Self {
        self.strict_start = on;
        self
    }

    pub(crate) fn is_strict_start(&self) -> bool {
        self.strict_start
    }

    pub(super) fn command_timeout_value(&self) -> Duration {
        self.command_timeout
    }

    pub(super) fn connect_timeout_value(&self) -> Duration {
        self.connect_timeout
    }

    pub(super) fn pool_size_value(&self) -> usize {
        self.pool_size
    }

    /// The clients of a pool reserved for writes when they wait for replicas: `WAIT` holds
    /// its connection until the replicas answer, so writes get their own, several of them
    /// (`None`: writes share the pool).
    pub(super) fn write_clients(&self) -> Option<usize> {
        (self.replica_acks > 0).then_some(WRITE_CLIENTS_WITH_ACKS)
    }

    /// Acknowledges a write only once `n` replicas have it (default 0: once the primary has
    /// it). Redis replicates asynchronously, so a write the primary answered can be lost when
    /// a replica that did not have it yet takes over: after a crash, or when a primary that
    /// was paused (a stalled host, a long fork) wakes up and keeps taking writes for a moment
    /// after its replica was promoted. With `n` of 1 on a primary with one replica, each
    /// write is followed by `WAIT 1 <command timeout>` on the connection that sent it, and
    /// a write the replica did not confirm in time is answered 503 without `Retry-After`
    /// (it may be on the primary): every write answered 200 is on the replica that a
    /// failover promotes (with `n` equal to the replica count: `WAIT` is not consensus, and
    /// with fewer a replica without the write can still be promoted). Writes then go through
    /// four connections per primary of their own, as fred sends nothing else on a connection
    /// while its `WAIT` is out: the writes of one app instance to one primary are at most four
    /// replication round trips in flight. While a primary has fewer than `n` replicas up,
    /// every write to it is such a `503`: run more replicas than `n` where that matters.
    ///
    /// ```
    /// let opts = tessera_core::RedisOptions::default().replica_acks(1);
    /// # let _ = opts;
    /// ```
    pub fn replica_acks(mut self, n: u32) -> Self {
        self.replica_acks = n;
        self
    }

    /// How a near-cache hit is confirmed (default [`NearCacheCoherence::Barrier`]).
    ///
    /// ```
    /// use tessera_core::{NearCacheCoherence, RedisOptions};
    /// let opts = RedisOptions::default()
    ///     .near_cache(64 * 1024 * 1024)
    ///     .near_cache_coherence(NearCacheCoherence::Push);
    /// # let _ = opts;
    /// ```
    pub fn near_cache_coherence(mut self, c: NearCacheCoherence) -> Self {
        self.near_cache_coherence = c;
        self
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            pool_size: 1,
            near_cache_bytes: 0,
            near_cache_coherence: NearCacheCoherence::Barrier,
            strict_start: false,
            replica_acks: 0,
        }
    }
}

impl RedisBackend {
    pub(crate) async fn connect(url: &str, o: RedisOptions) -> Result<Self> {
        check_scheme(url)?;
        check_tls(url)?;
        #[cfg(feature = "tls")]
        if url.starts_with("rediss") {
            // fred builds its rustls config with the process's default crypto provider. In an
            // app where another crate brings rustls' other provider (aws-lc-rs, e.g. through
            // an HTTP client), rustls cannot choose one and panics: name ring, the one fred is
            // built with here, unless the app chose a default itself.
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = ring_provider().install_default();
            }
        }
        // A URL fred cannot read is a configuration error, not a store failure.
        let config = check_url(url)?;
        #[cfg(feature = "tls")]
        if url.starts_with("rediss") && config.tls.is_none() {
            return Err(Error::Config(crate::ConfigError::Store(StoreError::new(
                "a rediss:// URL gave no TLS configuration",
            ))));
        }
        let freeze_ms = freeze_ms(o.command_timeout);
        let tracking_config = (o.near_cache_bytes > 0).then(|| {
            let mut c = config.clone();
            c.version = fred::types::RespVersion::RESP3;
            c
        });
        let kept_config = config.clone();
        // On a cluster, requests go through one pool per primary (`shards.rs`); fred's
        // cluster pool serves the startup and check paths only, so one client is enough.
        let size = if config.server.is_clustered() {
            1
        } else {
            o.pool_size.max(1)
        };
        let pool = builder(config, &o)
            .build_pool(size)
            .map_err(|e| Error::Store(crate::error::StoreError::client(e)))?;
        let tasks = match init(&pool, &o, "timed out connecting to the session store").await {
            Ok(tasks) => tasks,
            Err(e) => {
                discard(&pool).await;
                return Err(e);
            }
        };
        // Every way out below that is an error closes the pool: a pool dropped while its
        // clients are connected keeps reconnecting in the background.
        let configs = (kept_config, tracking_config);
        match Self::finish_connect(url, o, configs, pool.clone(), freeze_ms).await {
            Ok(b) => {
                // For the store's life: nothing closes this pool.
                drop(super::supervise::supervise(&pool, tasks, |_| {}));
                Ok(b)
            }
            Err(e) => {
                discard(&pool).await;
                Err(e)
            }
        }
    }

    async fn finish_connect(
        url: &str,
        o: RedisOptions,
        (kept_config, tracking_config): (Config, Option<Config>),
        pool: Pool,
        freeze_ms: u64,
    ) -> Result<Self> {
        preload(&pool, &o).await?;
        let shards = match kept_config.server.is_clustered() {
            true => Some(super::shards::Shards::open(&pool, &kept_config, &o).await?),
            false => None,
        };
        let clock = first_clock(&pool, &o).await;
        let query_engine =
            tokio::time::timeout(o.command_timeout, super::ft_commands::detect(&pool))
                .await
                .unwrap_or(QueryEngine::Missing);
        tracing::info!(target: "tessera::search", ?query_engine, "query engine (FT.*) on the session store");
        let native_field_expiry = tokio::time::timeout(
            o.command_timeout,
            super::ft_commands::has_command(&pool, "HPEXPIRE"),
        )
        .await
        .unwrap_or(false);
        tracing::info!(
            target: "tessera::check",
            native_field_expiry,
            "field lifetimes: {}",
            if native_field_expiry {
                "the server's hash-field expiry (HPEXPIRE), with a stamp beside each field"
            } else {
                "expiry stamps beside the fields, removed when a load finds them past (no HPEXPIRE on this server)"
            }
        );
        // Last: a failure before this point has no tracking pool to close.
        let tracking = match tracking_config {
            None => None,
            Some(config) => Some(start_tracking(config, &o).await?),
        };
        // After the tracking pool, which closes itself when dropped on an error here.
        let writes = match (o.write_clients(), shards.is_some()) {
            (Some(n), false) => Some(open_writes(kept_config.clone(), &o, n).await?),
            _ => None,
        };
        Ok(RedisBackend {
            config: kept_config,
            options: o.clone(),
            native_field_expiry,
            query_engine,
            pool,
            writes,
            replica_acks: o.replica_acks,
            shards,
            url_redacted: redact(url),
            command_timeout: o.command_timeout,
            read_opts: Options {
                fail_fast: true,
                // Two: a read may be written again. fred counts a Cluster redirect as an
                // attempt, so with one a read that meets a slot's `MOVED` fails, and one that
                // meets `ASK` (a slot migrating) ends the client's connection task
                // (`supervise.rs`). Every read is safe to repeat (a load's TTL refresh
                // included); a write is not (an increment), so writes keep one.
                max_attempts: Some(2),
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
            tracking,
        })
    }
}

/// Loads the scripts now (on every primary in a cluster), so the first request does not pay
/// for NOSCRIPT + SCRIPT LOAD. After a server restart the first call reloads them.
pub(super) async fn preload(pool: &Pool, o: &RedisOptions) -> Result<()> {
    let preload = async {
        for script in [
            &*LOAD,
            &*WRITE,
            &*CREATE,
            &*INDEX_ADD,
            &*FREEZE,
            &*RELEASE,
            &*FIELD_ADD,
            &*INDEX_PRUNE,
            &*END_IF,
            &*TAKE,
            &*EVENTS,
            &*EVENTS_DUE,
            &*EVENTS_READ,
            &*PROBE,
            &*RETIRE_LEGACY,
            &*SET_IF_ABSENT,
        ] {
            script.load(pool.next()).await.map_err(Error::from_fred)?;
        }
        Ok::<_, Error>(())
    };
    tokio::time::timeout(o.connect_timeout + o.command_timeout, preload)
        .await
        .map_err(|_| {
            Error::Unavailable(crate::error::StoreError::timeout(
                "timed out loading scripts into the session store",
            ))
        })?
}

/// A first reading of the server's clock, for write deadlines.
async fn first_clock(pool: &Pool, o: &RedisOptions) -> ServerClock {
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
    clock
}

/// The pool reserved for writes that wait for replicas (one server, or Sentinel), connected,
/// its tasks supervised for the store's life.
async fn open_writes(config: Config, o: &RedisOptions, n: usize) -> Result<Pool> {
    let pool = builder(config, o)
        .build_pool(n)
        .map_err(|e| Error::Store(crate::error::StoreError::client(e)))?;
    match init(
        &pool,
        o,
        "timed out connecting the session store's write connections",
    )
    .await
    {
        Ok(tasks) => {
            drop(super::supervise::supervise(&pool, tasks, |_| {}));
            Ok(pool)
        }
        Err(e) => {
            discard(&pool).await;
            Err(e)
        }
    }
}

/// The near-cache's tracking pool, connected, and its tasks started.
async fn start_tracking(config: Config, o: &RedisOptions) -> Result<super::tracking::Tracking> {
    let mut b = builder(config, o);
    b.with_performance_config(|p| {
        p.default_command_timeout = Duration::ZERO;
        // Invalidations wait here until applied; a lag empties the cache.
        p.broadcast_channel_capacity = 16 * 1024;
    });
    // One client: hits are confirmed on the connection that read the key.
    let tpool = b
        .build_pool(1)
        .map_err(|e| Error::Store(crate::error::StoreError::client(e)))?;
    let tasks = match init(
        &tpool,
        o,
        "timed out connecting the near-cache's tracking connections",
    )
    .await
    {
        Ok(tasks) => tasks,
        Err(e) => {
            discard(&tpool).await;
            return Err(e);
        }
    };
    tracing::info!(target: "tessera::near_cache", max_bytes = o.near_cache_bytes, "near-cache on (RESP3 client tracking)");
    Ok(super::tracking::Tracking::start(
        tpool,
        tasks,
        o.near_cache_bytes,
        o.near_cache_coherence == NearCacheCoherence::Barrier,
    ))
}

/// Connections reserved for writes per primary when writes wait for replicas.
const WRITE_CLIENTS_WITH_ACKS: usize = 4;

/// The pool builder both pools share: timeouts, no replay of in-flight commands, reconnect
/// forever.
pub(super) fn builder(config: Config, o: &RedisOptions) -> Builder {
    let mut b = Builder::from_config(config);
    b.with_connection_config(|c| {
        c.connection_timeout = o.connect_timeout;
        c.internal_command_timeout = o.command_timeout.max(Duration::from_secs(1));
        // Replaying an in-flight command after a reconnect could apply HINCRBY twice.
        c.max_command_attempts = 1;
        c.tcp = TcpConfig {
            nodelay: Some(true),
            ..Default::default()
        };
    })
    // The timeout is enforced per store operation by `bounded` (one timer per operation);
    // fred's per-command timer cost about 25% of read throughput.
    .with_performance_config(|p| p.default_command_timeout = Duration::ZERO)
    // Reconnect forever; the delay stays short (<= 500 ms + jitter) so service resumes within
    // about half a second of the server coming back.
    .set_policy(ReconnectPolicy::new_exponential(0, 50, 500, 2));
    b
}

/// Closes a pool that will not be used (a failed connect): without it, its clients would keep
/// reconnecting in the background.
async fn discard(pool: &Pool) {
    let _ = tokio::time::timeout(Duration::from_secs(1), pool.quit()).await;
}

/// Connects `pool`'s clients (see [`super::supervise`]): their connection tasks.
async fn init(
    pool: &Pool,
    o: &RedisOptions,
    what: &'static str,
) -> Result<Vec<fred::types::ConnectHandle>> {
    super::supervise::start(pool, o.connect_timeout + o.command_timeout, what).await
}

/// Only the Redis schemes: fred would read `http://host` as a Redis address and connect.
pub(super) fn check_scheme(url: &str) -> Result<()> {
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
        Err(Error::Config(crate::ConfigError::Store(StoreError::new(
            format!(
                "unsupported URL scheme in {:?}: use one of {}",
                redact(url),
                SCHEMES.join(", ")
            ),
        ))))
    }
}

/// rustls' *ring* provider, the one fred is built with here. rustls 0.23.48 deprecates
/// `crypto::ring::default_provider` (no post-quantum key exchange) and 0.23 offers no other
/// way to build it: its random source and key loader are private, and 0.24 moves *ring* to
/// the `rustls-ring` crate. The one deliberate use, allowed here so that a `cargo update`
/// does not break `clippy -D warnings`; replace it with `rustls_ring` on rustls 0.24.
#[cfg(feature = "tls")]
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A store URL that cannot work, in words. Ports are checked first: fred's own message for
/// one is a bare "InvalidPort" (and port 0 it accepts, to fail at connect time).
fn check_url(url: &str) -> Result<Config> {
    let why = |why: &str| format!("cannot read the store URL {}: {why}", redact(url));
    let e = match bad_port(url) {
        Some(port) => StoreError::new(why(&format!("port {port:?} is not a number in 1..65535"))),
        None => match Config::from_url(url) {
            Ok(config) => return Ok(config),
            Err(e) => StoreError::client_with(why(e.details()), e),
        },
    };
    Err(Error::Config(crate::ConfigError::Store(e)))
}

/// The first port written in `url` (the host's, or a cluster `node=` parameter's) that is not
/// a number in 1..65535.
fn bad_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let (authority, query) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].split_once('?').map(|q| q.1)),
        None => (rest, None),
    };
    let host = authority.rsplit_once('@').map_or(authority, |a| a.1);
    let nodes = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("node="));
    std::iter::once(host)
        .chain(nodes)
        .filter_map(|h| match h.strip_prefix('[') {
            Some(v6) => v6.split_once(']')?.1.strip_prefix(':'),
            None => h.rsplit_once(':').map(|p| p.1),
        })
        .find(|p| !p.is_empty() && !matches!(p.parse::<u16>(), Ok(1..)))
}

/// A `rediss://` URL (also `rediss-sentinel://`, `rediss-cluster://`) needs TLS compiled in:
/// without it fred would connect in plaintext, so refuse at startup.
pub(super) fn check_tls(url: &str) -> Result<()> {
    if url.starts_with("rediss") && !cfg!(feature = "tls") {
        return Err(Error::Config(crate::ConfigError::Store(StoreError::new(
            "rediss:// needs TLS: build tessera-core with its `tls` feature (on by default)",
        ))));
    }
    Ok(())
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

    /// Issue #23 (16): `Error::Config` displayed only "invalid store configuration", and a bad
    /// port only fred's bare "InvalidPort".
    #[tokio::test]
    async fn a_config_error_says_what_is_wrong() {
        for (url, port) in [
            ("redis://:secret@127.0.0.1:99999/0", "99999"),
            ("redis://127.0.0.1:6x79", "6x79"),
            (
                "redis-cluster://127.0.0.1:7000?node=127.0.0.1:70000",
                "70000",
            ),
            ("redis://[::1]:0", "0"),
        ] {
            let Err(e) = RedisBackend::connect(url, RedisOptions::default()).await else {
                panic!("{url} was accepted");
            };
            let text = e.to_string();
            assert!(
                text.starts_with("invalid store configuration: ")
                    && text.contains(&format!("port \"{port}\" is not a number in 1..65535")),
                "{url}: {text}"
            );
            assert!(
                !text.contains("secret"),
                "credentials are not shown: {text}"
            );
        }
        let e = Error::from(crate::ConfigError::KeyTooShort(3));
        assert_eq!(
            e.to_string(),
            "signing keys must be at least 32 bytes, got 3"
        );
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
                matches!(r, Err(Error::Config(crate::ConfigError::Store(_)))),
                "{r:?}"
            );
            assert!(c.is_err());
        }
    }
}
