//! The backend contract: every operation a session store offers, each signature written once.
//!
//! One trait per job. [`RedisBackend`](super::redis::RedisBackend) runs each operation as the
//! script or command its file names; [`MemoryBackend`](super::memory::MemoryBackend) mirrors
//! that script in one process, and each of its operations says which ("mirrors write.lua").
//! `conformance.rs` runs every operation on both and asserts the same answers.
//!
//! `contract!` declares each trait and, from the same signatures, the [`Store`] method that
//! runs the operation on whichever backend the store holds: the only `match` over the two
//! backends for the operations. The call awaits the backend's own future (no box, no dynamic
//! call per operation: the per-request cost is the backend's). While a store is still
//! connecting, an operation answers `Error::Unavailable`, or the value written after its `=`.
//!
//! What answers at once without a round trip (the server's clock estimate, the near-cache's
//! counters, ...) is [`Facts`], a plain trait the handle reaches through `&dyn Facts`.
//!
//! The Redis-only operations are part of the contract, with a documented memory behaviour:
//! the query engine ([`QueryOps`]: the memory store has none and says so), the plain keys of
//! other stores taken over ([`TakeoverOps`]: the memory store holds none), the server check
//! ([`SettingsCheck`]: the memory store has no settings to warn about).

use super::event_keys::{Due, EventBatch, EventKeys, ExpiryWatch, Probe, StoredEvent};
use super::{
    Backend, EndIf, Freeze, IndexJoin, Load, NewSession, Picked, Release, ServerReport,
    SetIfAbsent, Store, Timing, WriteOp, WriteResult,
};
use crate::error::Result;
use crate::store::NearCacheStats;
use std::collections::HashMap;

/// Declares one trait of the contract and the [`Store`] methods that dispatch to it.
macro_rules! contract {
    (
        $(#[$doc:meta])*
        pub(crate) trait $trait:ident {
            $(
                $(#[$op_doc:meta])*
                async fn $op:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty $(= $connecting:expr)?;
            )*
        }
    ) => {
        $(#[$doc])*
        pub(crate) trait $trait {
            $(
                $(#[$op_doc])*
                async fn $op(&self $(, $arg: $ty)*) -> $ret;
            )*
        }

        impl Store {
            $(
                $(#[$op_doc])*
                pub(crate) async fn $op(&self $(, $arg: $ty)*) -> $ret {
                    let backend = match self.backend() {
                        Ok(b) => b,
                        Err(e) => {
                            let out = contract!(@connecting e $($connecting)?);
                            if !contract!(@ok out) {
                                crate::metrics::store_unreached(stringify!($op));
                            }
                            return out;
                        }
                    };
                    let started = std::time::Instant::now();
                    let out = match backend {
                        Backend::Memory(m) => $trait::$op(m $(, $arg)*).await,
                        Backend::Redis(r) => $trait::$op(&**r $(, $arg)*).await,
                    };
                    crate::metrics::store_op(contract!(@label $op out), started, contract!(@ok out));
                    out
                }
            )*
        }
    };
    (@ok $out:ident) => { crate::metrics::Succeeded::succeeded(&$out) };
    // A load the near-cache answered sent no command: its own label, apart from the loads
    // that did (whose latency and count are the store's).
    (@label load $out:ident) => {
        if matches!(&$out, Ok(super::Load::Found(l)) if l.cached) { "load_cached" } else { "load" }
    };
    (@label $op:ident $out:ident) => { stringify!($op) };
    (@connecting $e:ident) => { Err($e) };
    (@connecting $e:ident $connecting:expr) => {{
        drop($e);
        $connecting
    }};
}

contract! {
    /// The session hashes: load, write, create, a login's rotation (freeze, release), the
    /// compare-and-sets, and the reads and deletes of several sessions at once.
    pub(crate) trait SessionOps {
        /// Loads a session. `known_fresh`: this process saw it refreshed less than a touch
        /// interval ago, so no refresh is due and a plain read suffices (one cheap command, or
        /// none when the near-cache holds it and `use_cache`); otherwise the load also does the
        /// throttled refresh, in the same round trip.
        async fn load(&self, key: &str, t: Timing, known_fresh: bool, use_cache: bool) -> Result<Load>;

        /// Writes the changed fields of a session (or creates it: `op.mode`), sliding its TTL
        /// when a refresh is due.
        async fn write(&self, key: &str, op: &WriteOp<'_>, t: Timing) -> Result<WriteResult>;

        /// Creates a new session key under a fresh id (which cannot exist yet): the fields, the
        /// creation time, the last-refresh time and the TTL, all or nothing. `Gone` when the
        /// creation time is past the absolute lifetime (or an 'ended' mark holds the id).
        async fn create(&self, key: &str, op: &NewSession<'_>, t: Timing) -> Result<WriteResult>;

        /// Rotation step 1: freezes `key` against writes (for a while) and returns its contents.
        async fn freeze(&self, key: &str, new_member: &str, t: Timing) -> Result<Freeze>;

        /// Rotation's last step: deletes the frozen old key (`retire`), or thaws it after a
        /// failed rotation; only if the freeze `token` still holds.
        async fn release(&self, key: &str, token: &str, retire: bool) -> Result<Release>;

        /// Sets `field` of the live session at `key` unless it holds a value already, and
        /// answers the value it holds now: a compare-and-set in one step (the CSRF secret).
        async fn set_if_absent(&self, key: &str, field: &str, value: &str) -> Result<SetIfAbsent>;

        /// Ends the session at `key` if `field` still holds exactly `expected` (`None`:
        /// whatever it holds); atomic, one key. Where no session is, leaves an 'ended'
        /// tombstone for `tombstone_ms`.
        async fn end_if(&self, key: &str, field: &str, expected: Option<&[u8]>, tombstone_ms: u64) -> Result<EndIf>;

        /// Deletes a key; whether it existed.
        async fn delete(&self, key: &str) -> Result<bool>;

        /// Deletes several keys (one pipelined round trip on Redis, each command single-key);
        /// whether each existed.
        async fn delete_many(&self, keys: &[String]) -> Result<Vec<bool>>;

        /// Deletes several session keys like `delete_many`, returning what each held in `names`
        /// (`None`: no session was there). With `mark_ms` > 0, each ended session leaves an
        /// 'ended' mark for that long (see take.lua).
        async fn take_many(&self, keys: &[String], names: &[&str], mark_ms: u64) -> Result<Vec<Picked>>;

        /// Reads some fields of several session hashes without touching them (one pipelined
        /// round trip on Redis); `None` for a key that holds no session.
        async fn peek_many(&self, keys: &[String], names: &[&str]) -> Result<Vec<Picked>>;

        /// Reads `names` of each key, whatever the key holds (a session, a retired id's
        /// tombstone, a session being moved: its `__m`); `None` where it holds none of them.
        /// One pipelined round trip; on the memory store, one moment's view.
        async fn peek_raw(&self, keys: &[String], names: &[&str]) -> Result<Vec<Picked>>;

        /// Whole hashes of several keys without touching them (one pipelined round trip on
        /// Redis); an empty map where nothing is.
        async fn read_many(&self, keys: &[String]) -> Result<Vec<HashMap<String, Vec<u8>>>>;
    }
}

contract! {
    /// The sorted sets: a user's index of sessions (score: the member's bound) and the field
    /// indexes (score: the member's deadline).
    pub(crate) trait IndexOps {
        /// Adds or refreshes `member` in a user index with score now + `bound_ms`, prunes
        /// members whose bound passed, keeps the index TTL at its highest bound, and returns
        /// the members beyond `max` (0 = no limit), least recently refreshed first. `leaving`
        /// (the member a rotation replaces) is neither counted nor chosen.
        async fn index_add(&self, key: &str, member: &str, bound_ms: u64, max: usize, leaving: Option<&str>) -> Result<Vec<String>>;

        /// The members of a user index whose bound has not passed, least recently refreshed
        /// first.
        async fn index_members(&self, key: &str) -> Result<Vec<String>>;

        /// The members of a field index whose deadline is at or after `since_ms` (store time),
        /// earliest deadline first.
        async fn field_members(&self, key: &str, since_ms: u64) -> Result<Vec<String>>;

        /// Removes `members` from each field-index key in `keys` where their score (deadline)
        /// is at most `max_score`, and the members whose deadline has passed; how many went.
        /// One script per hash slot; no keys: 0, no command.
        async fn index_prune(&self, keys: &[String], members: &[String], max_score: u64) -> Result<i64>;

        /// Adds or refreshes `member` in each field-index key (score = its deadline, the
        /// store's time now + `bound_ms`; members whose deadline has passed dropped; each key
        /// living until its latest deadline), one script per hash slot; the store's earliest
        /// time of the adds, ms (no keys: 0, no command).
        async fn field_add(&self, keys: &[String], member: &str, bound_ms: u64) -> Result<u64>;

        /// Removes members from a user index (none: no command).
        async fn index_remove(&self, key: &str, members: &[String]) -> Result<()>;
    }
}

contract! {
    /// Lifecycle events: the capped stream, the expiry set and the sweeper's probes (the
    /// keys in `event_keys.rs`, the rules in events.lua).
    pub(crate) trait EventOps {
        /// Runs one batch atomically; the stream id of each event, `None` when not published.
        /// An empty batch: nothing, no command.
        async fn events_apply(&self, keys: &EventKeys, retention: usize, instance: &str, batch: &EventBatch) -> Result<Vec<Option<String>>>;

        /// Events after `after` (from the first retained one when `None`), at most `limit`;
        /// and whether some event after `after` was already dropped by the retention.
        async fn events_read(&self, keys: &EventKeys, after: Option<(u64, u64)>, limit: usize) -> Result<(Vec<StoredEvent>, bool)>;

        /// The tracked sessions whose expiry may have passed (at most `limit`), if this
        /// instance holds (or takes) the sweep lease for `lease_ms` (0: without the lease).
        /// `None`: another instance sweeps now. The memory store has no lease (one process).
        async fn expiry_due(&self, keys: &EventKeys, instance: &str, lease_ms: u64, limit: usize) -> Result<Option<Due>>;

        /// The newest `limit` events, newest first (`XREVRANGE`, one key).
        async fn events_latest(&self, keys: &EventKeys, limit: usize) -> Result<Vec<StoredEvent>>;

        /// How many sessions the expiry set tracks (`ZCARD`, one key): with events on, every
        /// stored session, until the sweep after its expiry.
        async fn tracked_count(&self, keys: &EventKeys) -> Result<usize>;

        /// What is at each session key now (one pipelined round trip on Redis).
        async fn probe_many(&self, keys: &[String]) -> Result<Vec<Probe>>;

        /// Sends each expired key under `prefix` (without it) to `expired` where the server
        /// sends keyspace notifications of expired keys; `None` where it does not, for the
        /// memory store (its sweeper's interval is the bound) and while connecting.
        async fn watch_expiries(&self, prefix: String, expired: tokio::sync::mpsc::Sender<String>, wake: std::sync::Arc<tokio::sync::Notify>) -> Option<ExpiryWatch> = None;
    }
}

contract! {
    /// The Redis query engine (`FT.*`) over the session hashes. The memory store has none:
    /// each operation is `Error::Unsupported` there (query the declared field indexes).
    pub(crate) trait QueryOps {
        /// `FT.CREATE <index> ON HASH PREFIX 1 <prefix> SCHEMA ...`; an index that exists
        /// already is left as it is.
        async fn ft_create(&self, index: &str, prefix: &str, schema: &[String]) -> Result<()>;

        /// `FT.SEARCH <index> <query> LIMIT offset limit`: the total, and each document's key
        /// and fields.
        async fn ft_search(&self, index: &str, query: &str, offset: usize, limit: usize) -> Result<(usize, Vec<(String, HashMap<String, Vec<u8>>)>)>;

        /// `FT.AGGREGATE ... GROUPBY`: each value of `field` (`None` for documents without
        /// it) and how many documents hold it.
        async fn ft_count_by(&self, index: &str, query: &str, field: &str) -> Result<Vec<(Option<String>, usize)>>;
    }
}

contract! {
    /// Plain string keys another session store wrote, read and retired by a take-over. The
    /// memory store takes over nothing: it holds no such keys (`get_bytes` is `None`,
    /// `set_bytes` does nothing, `retire_bytes` is `false`).
    pub(crate) trait TakeoverOps {
        /// A plain string key's value, as bytes (`None` when there is none, or a key of
        /// another type).
        async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>>;

        /// Sets a plain string key, expiring after `ttl_ms`.
        async fn set_bytes(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<()>;

        /// Deletes a plain string key (or, with a `grace_ms`, makes it expire within that)
        /// only if it still holds `expected`; whether it did.
        async fn retire_bytes(&self, key: &str, expected: &[u8], grace_ms: u64) -> Result<bool>;
    }
}

contract! {
    /// The server's settings, checked for session safety (see `check.rs`). The memory store
    /// reports itself, with no warning.
    pub(crate) trait SettingsCheck {
        /// `INFO` of every primary and the warnings it calls for, bounded by 10 s.
        async fn check_settings(&self) -> Result<ServerReport>;
    }
}

contract! {
    /// What an operator's tool asks and no request does: a key scan, O(keys), for finding a
    /// session by its handle alone (`SessionManager::find_handle`). The memory store lists its
    /// own keys.
    pub(crate) trait OperatorOps {
        /// The suffix of the first key under `prefix` that `matches` accepts (`SCAN MATCH
        /// <prefix>* COUNT 1000` on every primary, stopped at the first match), within 60 s.
        async fn scan_find(&self, prefix: &str, matches: &(dyn Fn(&str) -> bool + Send + Sync)) -> Result<Option<String>>;
    }
}

/// What a backend answers at once, without a round trip (and so also while a store is still
/// connecting: [`Store`] answers its own default then).
pub(crate) trait Facts: Send + Sync {
    /// `memory`, or `redis: <the URL without credentials>` (for `Debug`).
    fn describe(&self) -> String;

    /// The store's clock now, ms (for Redis an estimate that errs early; `None` before the
    /// first observation).
    fn server_now(&self) -> Option<u64>;

    /// Whether field lifetimes use the server's hash-field expiry (`HPEXPIRE`); the memory
    /// store checks the stamps, as a server without it.
    fn native_field_expiry(&self) -> bool;

    /// Whether the server offers the query engine (`FT.*`); never the memory store.
    fn has_query_engine(&self) -> bool;

    /// What the near-cache did so far; `None` when it is off or the store is in memory.
    fn near_cache_stats(&self) -> Option<NearCacheStats>;

    /// For a memory store: how many keys it holds and how many bytes they are counted for.
    fn memory_usage(&self) -> Option<(usize, usize)>;

    /// The client pool (Redis), for tessera's own tests.
    #[cfg(feature = "test-hooks")]
    fn redis_pool(&self) -> Option<&fred::clients::Pool>;

    /// The memory backend itself, for unit tests that store raw data.
    #[cfg(test)]
    fn as_memory(&self) -> Option<&super::memory::MemoryBackend>;
}

/// A create with its index join ([`NewSession::index`]) as two operations, where one script
/// cannot hold both keys (a cluster: two hash slots) and in the memory store: sent at once,
/// the one undone if the other fails, so that either both are made or neither stays (nothing
/// is handed out meanwhile: the cookie is sent only once both answered). Undone means the
/// member removed or the key deleted; what the index add did besides (a prune of expired
/// members, a longer TTL for the index key) stays, harmless.
pub(crate) async fn create_and_join<B: SessionOps + IndexOps + Sync>(
    backend: &B,
    key: &str,
    op: &NewSession<'_>,
    ix: &IndexJoin<'_>,
    t: Timing,
) -> Result<WriteResult> {
    let plain = NewSession { index: None, ..*op };
    let (created, added) = tokio::join!(
        backend.create(key, &plain, t),
        backend.index_add(ix.key, ix.member, ix.bound_ms, ix.max, ix.leaving)
    );
    match (created, added) {
        (
            Ok(WriteResult::Written {
                incr,
                refreshed,
                user,
                ..
            }),
            Ok(victims),
        ) => Ok(WriteResult::Written {
            incr,
            refreshed,
            user,
            victims,
        }),
        (Ok(WriteResult::Written { .. }), Err(e)) => {
            if let Err(d) = backend.delete(key).await {
                tracing::debug!(error = %d, "could not delete a new session whose index entry failed; it expires by its TTL");
            }
            Err(e)
        }
        (created, added) => {
            if added.is_ok() {
                if let Err(d) = backend.index_remove(ix.key, &[ix.member.to_string()]).await {
                    tracing::debug!(error = %d, "could not remove the index entry of a session not created; it lapses with its bound");
                }
            }
            created
        }
    }
}
