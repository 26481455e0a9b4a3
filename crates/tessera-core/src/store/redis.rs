//! The Redis / Valkey backend on fred: one pool, single-key Lua scripts, bounded timeouts.
//!
//! `connect.rs` opens the pool (on a cluster, `shards.rs` one per primary, and routes); `protocol.rs` holds the scripts, their reply codes and reply
//! decoding; `send.rs` sends every command within its timeout. The contract's operations, one
//! file per job: `session_scripts.rs`, `index_scripts.rs`, `event_scripts.rs`,
//! `ft_commands.rs`, `takeover_keys.rs`; the server check (`INFO`) is in `../check.rs`.
//! `near_cache.rs` and `tracking.rs` are the near-cache; `notices.rs` the keyspace
//! notifications of expired keys. This file holds the backend and its facts.

mod connect;
mod event_scripts;
mod ft_commands;
mod index_scripts;
mod near_cache;
mod notices;
mod protocol;
mod scan_keys;
mod send;
mod session_scripts;
mod shards;
mod supervise;
mod takeover_keys;
mod tracking;

pub use self::connect::{NearCacheCoherence, RedisOptions};
pub(crate) use self::ft_commands::QueryEngine;
pub use self::near_cache::NearCacheStats;
pub(crate) use self::notices::ExpiryWatch;

use self::protocol::ServerClock;
use crate::store::contract::Facts;
use fred::prelude::*;
use fred::types::config::Options;
use std::time::Duration;

pub(crate) struct RedisBackend {
    /// fred's pool: the server's on one server or Sentinel; on a cluster, fred's cluster pool
    /// (one client), for the paths that ask every node, while requests go through `shards`.
    pool: Pool,
    /// A cluster's pools, one per primary, and the slot table (`shards.rs`).
    shards: Option<shards::Shards>,
    /// The connections reserved for writes that wait for replicas (one server or Sentinel;
    /// a cluster's are in `shards`): `WAIT` holds its connection.
    writes: Option<Pool>,
    /// How many replicas must acknowledge a write before it is answered (`WAIT`; 0: none).
    replica_acks: u32,
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
    tracking: Option<tracking::Tracking>,
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
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The URL it connected to, without credentials.
    pub(crate) fn url_redacted(&self) -> &str {
        &self.url_redacted
    }
}

impl Facts for RedisBackend {
    fn describe(&self) -> String {
        format!("redis: {}", self.url_redacted)
    }

    /// The server's clock now, as estimated (errs early); `None` before the first
    /// observation.
    fn server_now(&self) -> Option<u64> {
        (self.clock.deadline(Duration::ZERO) != 0).then(|| self.clock.now_ms().max(0) as u64)
    }

    fn native_field_expiry(&self) -> bool {
        self.native_field_expiry
    }

    fn has_query_engine(&self) -> bool {
        self.query_engine == QueryEngine::Available
    }

    fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.tracking.as_ref().map(|t| t.cache.stats())
    }

    /// None: ask the server (`INFO memory`).
    fn memory_usage(&self) -> Option<(usize, usize)> {
        None
    }

    #[cfg(feature = "test-hooks")]
    fn redis_pool(&self) -> Option<&fred::clients::Pool> {
        Some(&self.pool)
    }

    #[cfg(test)]
    fn as_memory(&self) -> Option<&crate::store::memory::MemoryBackend> {
        None
    }
}
