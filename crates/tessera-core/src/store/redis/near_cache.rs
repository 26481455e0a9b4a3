//! The near-cache: session hashes this instance read recently, kept coherent by the server
//! (RESP3 client tracking), so a read inside the touch interval costs no Redis command. This
//! file is the cache itself; `tracking.rs` keeps it coherent (the tracking connections, their
//! tasks, the barrier a hit waits for, the database's marker).
//!
//! How it stays coherent (the guarantee is stated in the README, "Near-cache"):
//! - Only a plain `HGETALL` sent on a tracking connection fills the cache. The server then
//!   remembers that this connection read the key and pushes `invalidate [key]` on it when
//!   the key changes, is deleted or expires, no later than it acknowledges the change to the
//!   writer.
//! - A read that races its own invalidation must not leave a stale entry: a reservation is
//!   taken before the `HGETALL` is sent, any invalidation of the key meanwhile cancels it,
//!   and the reply fills the cache only if its reservation still stands.
//! - A lost tracking connection loses invalidations: on any connection error, reconnect or
//!   cluster change the whole cache is emptied and no read fills it until tracking is on
//!   again on every connection (an epoch counter refuses replies to reads sent before).
//! - This instance's own writes remove the key at once, before their response is sent.
//! - A lagging invalidation channel (more pushes than it holds) empties the cache.
//! - An emptied or swapped database (`FLUSHALL`, `FLUSHDB`, `SWAPDB`): the server's
//!   `invalidate` push for a flush has no key list, and fred 10.1 drops it (it forwards only
//!   arrays), while `SWAPDB` sends nothing. So the database carries a marker, [`MARKER`], a
//!   random value that every instance reads when its tracking comes on. The barrier reads it
//!   instead of a bare `PING` (one server: a changed or missing marker fails the barrier and
//!   empties the cache before the hit is served; a cluster's `EXISTS key` finding no key the
//!   cache holds empties it), and so does the once-a-second liveness check (the bound in
//!   `Push` coherence).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The key of the database's marker ([`keys::NEAR_CACHE_MARKER`](crate::layout::keys::NEAR_CACHE_MARKER)):
/// a random value, created (`SET NX`) by the first instance that finds none and read by every
/// other. A flush deletes it, a swap brings the other database's (another value, or none); an
/// instance that reads anything but the value it saw when its tracking came on empties its
/// cache. One small string key per database, shared by every app and namespace, never
/// expiring (a `volatile-*` eviction policy never takes it; an `allkeys-*` one that does costs
/// one emptied cache).
pub(crate) const MARKER: &str = crate::layout::keys::NEAR_CACHE_MARKER;

/// A session hash, shared between the cache and the requests that hit it.
pub(crate) type Fields = Arc<HashMap<String, Vec<u8>>>;

/// Counters of what the near-cache did, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearCacheStats {
    /// Reads answered from the cache (no Redis command).
    pub hits: u64,
    /// Reads that went to Redis while the cache was on.
    pub misses: u64,
    /// Keys removed because the server (or this instance's own write) said they changed.
    pub invalidations: u64,
    /// Times the whole cache was emptied (a lost connection, a lagging channel, a flush).
    pub flushes: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (names and values, plus a small per-entry overhead).
    pub bytes: u64,
    /// Tracking is on for every connection, so the cache serves reads (it is off, and empty,
    /// from a lost connection until tracking is on again).
    pub active: bool,
}

/// A reservation in use: fills the cache at most once, and is withdrawn when dropped unused.
pub(crate) struct Pending<'a> {
    cache: &'a NearCache,
    key: &'a str,
    r: Reservation,
}

impl<'a> Pending<'a> {
    pub(crate) fn new(cache: &'a NearCache, key: &'a str, r: Reservation) -> Self {
        Pending { cache, key, r }
    }

    pub(crate) fn fill(self, fields: &Fields) {
        self.cache.fill(self.key, self.r, fields);
        // `fill` removed the reservation if it was still ours; dropping `self` is a no-op.
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.cache.withdraw(self.key, self.r);
    }
}

/// A permission to fill the cache with the reply of one read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    id: u64,
    epoch: u64,
}

struct Entry {
    fields: Fields,
    bytes: usize,
}

struct State {
    /// Bumped on every flush: a reservation from an older epoch fills nothing.
    epoch: u64,
    /// One bit per tracking connection whose tracking is not (yet, or any more) confirmed on.
    down: u64,
    next_id: u64,
    /// Reads in flight: key -> reservation id.
    pending: HashMap<Box<str>, u64>,
    /// Two generations, for a cheap approximation of least-recently-used eviction: a hit in
    /// the old one moves the entry to the new one; when the new one is full, the old one goes.
    new: HashMap<Box<str>, Entry>,
    old: HashMap<Box<str>, Entry>,
    new_bytes: usize,
    old_bytes: usize,
}

pub(crate) struct NearCache {
    state: Mutex<State>,
    /// What the tracking connections reported and nobody applied yet. Drained before every
    /// lookup (so an invalidation fred has received is applied before the cache answers,
    /// whatever task got to run first) and by a task woken by each arrival.
    pub(super) feeds: Mutex<Vec<Feed>>,
    /// Per connection: how many times it was disturbed (lost, reconnected, cluster change).
    disturbed: Vec<AtomicU64>,
    /// Per connection: wakes its tracking task after a disturbance.
    pub(super) wake: Vec<tokio::sync::Notify>,
    /// The database's marker as read when tracking came on (`None` until then).
    pub(super) marker: Mutex<Option<String>>,
    /// Bound of each generation (half the configured bound).
    gen_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
}

const ENTRY_OVERHEAD: usize = 96;

fn size_of(key: &str, fields: &HashMap<String, Vec<u8>>) -> usize {
    ENTRY_OVERHEAD
        + key.len()
        + fields
            .iter()
            .map(|(k, v)| k.len() + v.len() + 48)
            .sum::<usize>()
}

impl NearCache {
    /// A cache of at most about `max_bytes`, for `connections` tracking connections (all down
    /// until each is confirmed tracking).
    pub(crate) fn new(max_bytes: usize, connections: usize) -> Self {
        let connections = connections.clamp(1, 64);
        NearCache {
            feeds: Mutex::new(Vec::new()),
            disturbed: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            wake: (0..connections)
                .map(|_| tokio::sync::Notify::new())
                .collect(),
            marker: Mutex::new(None),
            state: Mutex::new(State {
                epoch: 0,
                down: if connections == 64 {
                    u64::MAX
                } else {
                    (1u64 << connections) - 1
                },
                next_id: 0,
                pending: HashMap::new(),
                new: HashMap::new(),
                old: HashMap::new(),
                new_bytes: 0,
                old_bytes: 0,
            }),
            gen_bytes: (max_bytes / 2).max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached hash of `key`, if held and tracking is on everywhere.
    pub(crate) fn get(&self, key: &str) -> Option<Fields> {
        self.pump();
        let mut st = self.lock();
        if st.down != 0 {
            return None;
        }
        if let Some(e) = st.new.get(key) {
            let f = e.fields.clone();
            drop(st);
            self.hits.fetch_add(1, Ordering::Relaxed);
            crate::metrics::near_cache(crate::metrics::NEAR_CACHE_HITS);
            return Some(f);
        }
        let (k, e) = st.old.remove_entry(key)?;
        st.old_bytes -= e.bytes;
        let f = e.fields.clone();
        self.insert_new(&mut st, k, e);
        drop(st);
        self.hits.fetch_add(1, Ordering::Relaxed);
        crate::metrics::near_cache(crate::metrics::NEAR_CACHE_HITS);
        Some(f)
    }

    /// Whether the cache holds `key`, without counting a hit and without applying what
    /// arrived meanwhile (a read calls [`get`](Self::get) next, which applies it first; a
    /// caller that needs the answer after the pushes calls [`pump`](Self::pump) before).
    pub(crate) fn holds(&self, key: &str) -> bool {
        let st = self.lock();
        st.down == 0 && (st.new.contains_key(key) || st.old.contains_key(key))
    }

    /// Before sending a read whose reply may fill the cache; `None` while tracking is not on.
    pub(crate) fn reserve(&self, key: &str) -> Option<Reservation> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        crate::metrics::near_cache(crate::metrics::NEAR_CACHE_MISSES);
        self.pump();
        let mut st = self.lock();
        if st.down != 0 {
            return None;
        }
        st.next_id += 1;
        let id = st.next_id;
        st.pending.insert(key.into(), id);
        Some(Reservation {
            id,
            epoch: st.epoch,
        })
    }

    /// The read's reply: kept only if nothing invalidated the key (or flushed the cache) since
    /// the reservation, and only for a session hash (a missing key is not cached).
    pub(crate) fn fill(&self, key: &str, r: Reservation, fields: &Fields) {
        self.pump();
        let mut st = self.lock();
        let ours = st.pending.get(key) == Some(&r.id);
        if ours {
            st.pending.remove(key);
        }
        if !ours || st.epoch != r.epoch || st.down != 0 || fields.is_empty() {
            return;
        }
        let bytes = size_of(key, fields);
        if bytes > self.gen_bytes {
            return;
        }
        if let Some(e) = st.old.remove(key) {
            st.old_bytes -= e.bytes;
        }
        let k: Box<str> = key.into();
        let e = Entry {
            // Shared with the request that read it: its first change copies (`Arc::make_mut`).
            fields: Arc::clone(fields),
            bytes,
        };
        self.insert_new(&mut st, k, e);
    }

    fn insert_new(&self, st: &mut State, k: Box<str>, e: Entry) {
        if st.new_bytes + e.bytes > self.gen_bytes && !st.new.contains_key(&k) {
            st.old = std::mem::take(&mut st.new);
            st.old_bytes = std::mem::replace(&mut st.new_bytes, 0);
        }
        st.new_bytes += e.bytes;
        if let Some(prev) = st.new.insert(k, e) {
            st.new_bytes -= prev.bytes;
        }
    }

    /// A reservation that will not fill: removed if it is still the key's latest.
    pub(crate) fn withdraw(&self, key: &str, r: Reservation) {
        let mut st = self.lock();
        if st.pending.get(key) == Some(&r.id) {
            st.pending.remove(key);
        }
    }

    /// The key changed (an invalidation push, or this instance's own write).
    pub(crate) fn invalidate(&self, key: &[u8]) {
        let Ok(key) = std::str::from_utf8(key) else {
            return; // not one of ours: session keys are UTF-8
        };
        let mut st = self.lock();
        let mut hit = st.pending.remove(key).is_some();
        if let Some(e) = st.new.remove(key) {
            st.new_bytes -= e.bytes;
            hit = true;
        }
        if let Some(e) = st.old.remove(key) {
            st.old_bytes -= e.bytes;
            hit = true;
        }
        drop(st);
        if hit {
            self.invalidations.fetch_add(1, Ordering::Relaxed);
            crate::metrics::near_cache(crate::metrics::NEAR_CACHE_INVALIDATIONS);
        }
    }

    fn clear(&self, st: &mut State) {
        st.epoch += 1;
        st.pending.clear();
        st.new.clear();
        st.old.clear();
        st.new_bytes = 0;
        st.old_bytes = 0;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        crate::metrics::near_cache(crate::metrics::NEAR_CACHE_FLUSHES);
    }

    /// Empties the cache (tracking stays as it is): a flush push, a lagging channel.
    pub(crate) fn flush(&self) {
        let mut st = self.lock();
        self.clear(&mut st);
    }

    /// Connection `i` lost (or may have lost) its tracking: empty the cache and fill nothing
    /// until it is confirmed on again.
    pub(crate) fn down(&self, i: usize) {
        let mut st = self.lock();
        st.down |= 1u64 << (i % 64);
        self.clear(&mut st);
    }

    /// Tracking is confirmed on for connection `i` (tests; the tracking task uses `up_if`).
    #[cfg(test)]
    pub(crate) fn up(&self, i: usize) {
        let mut st = self.lock();
        st.down &= !(1u64 << (i % 64));
        // Reads sent before this point may have gone out untracked.
        st.epoch += 1;
    }

    /// How many disturbances connection `i` has had (see [`NearCache::up_if`]).
    pub(super) fn generation(&self, i: usize) -> u64 {
        self.disturbed[i].load(Ordering::SeqCst)
    }

    /// Tracking was turned on for connection `i` after its `generation`-th disturbance: it is
    /// up, unless it was disturbed again meanwhile (then `false`: turn it on again).
    pub(super) fn up_if(&self, i: usize, generation: u64) -> bool {
        self.pump();
        let mut st = self.lock();
        if self.disturbed[i].load(Ordering::SeqCst) != generation {
            return false;
        }
        st.down &= !(1u64 << (i % 64));
        st.epoch += 1;
        true
    }

    /// Whether `read` (the marker just read on the tracking connection) is the one this cache
    /// was filled under; if not, the database was emptied or swapped since: the cache is
    /// emptied, and serves nothing until tracking (and the marker) is set up again.
    pub(super) fn same_database(&self, i: usize, read: Option<&str>) -> bool {
        let same = {
            let m = self.marker.lock().unwrap_or_else(|p| p.into_inner());
            m.is_some() && m.as_deref() == read
        };
        if !same {
            tracing::warn!(target: "tessera::near_cache", connection = i, "near-cache: the database was emptied or swapped (FLUSHALL, FLUSHDB, SWAPDB); cache emptied");
            self.disturb(i);
        }
        same
    }

    pub(super) fn disturb(&self, i: usize) {
        self.disturbed[i].fetch_add(1, Ordering::SeqCst);
        self.down(i);
        self.wake[i].notify_one();
    }

    /// Applies whatever the tracking connections reported and nobody applied yet.
    pub(super) fn pump(&self) {
        use tokio::sync::broadcast::error::TryRecvError;
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        for (i, f) in feeds.iter_mut().enumerate() {
            loop {
                match f.invalidations.try_recv() {
                    // An empty key list is a flush (FLUSHALL, FLUSHDB).
                    Ok(inv) if inv.keys.is_empty() => self.flush(),
                    Ok(inv) => {
                        for k in &inv.keys {
                            tracing::trace!(target: "tessera::near_cache", connection = i, key = %String::from_utf8_lossy(k.as_bytes()), "invalidation");
                            self.invalidate(k.as_bytes());
                        }
                    }
                    Err(TryRecvError::Lagged(n)) => {
                        tracing::warn!(target: "tessera::near_cache", missed = n, "near-cache: invalidations arrived faster than applied; cache emptied");
                        self.flush();
                    }
                    Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => break,
                }
            }
            if drain(&mut f.errors) | drain(&mut f.reconnects) | drain(&mut f.changes) {
                tracing::debug!(target: "tessera::near_cache", connection = i, "near-cache: connection disturbed; cache emptied");
                self.disturb(i);
            }
        }
    }

    pub(crate) fn stats(&self) -> NearCacheStats {
        let st = self.lock();
        NearCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            entries: (st.new.len() + st.old.len()) as u64,
            bytes: (st.new_bytes + st.old_bytes) as u64,
            active: st.down == 0,
        }
    }
}

/// One tracking connection's reports (each receiver subscribed before tracking starts).
pub(super) struct Feed {
    pub(super) invalidations: tokio::sync::broadcast::Receiver<fred::types::client::Invalidation>,
    pub(super) errors:
        tokio::sync::broadcast::Receiver<(fred::error::Error, Option<fred::types::config::Server>)>,
    pub(super) reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    pub(super) changes: tokio::sync::broadcast::Receiver<Vec<fred::types::ClusterStateChange>>,
}

impl Feed {
    pub(super) fn of(client: &fred::clients::Client) -> Feed {
        use fred::interfaces::{EventInterface, TrackingInterface};
        Feed {
            invalidations: client.invalidation_rx(),
            errors: client.error_rx(),
            reconnects: client.reconnect_rx(),
            changes: client.cluster_change_rx(),
        }
    }
}

/// Whether anything arrived on `rx` (drained); a lag counts as something.
pub(super) fn drain<T: Clone>(rx: &mut tokio::sync::broadcast::Receiver<T>) -> bool {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut any = false;
    loop {
        match rx.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => any = true,
            Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return any,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fields;

    fn hash(v: &str) -> Fields {
        Arc::new(HashMap::from([
            (fields::CREATED.to_string(), b"1".to_vec()),
            ("v".into(), v.into()),
        ]))
    }

    fn up(c: &NearCache) {
        c.up(0);
    }

    #[test]
    fn nothing_is_cached_until_tracking_is_confirmed() {
        let c = NearCache::new(1 << 20, 1);
        assert!(c.reserve("k").is_none());
        up(&c);
        let r = c.reserve("k").unwrap();
        c.fill("k", r, &hash("a"));
        assert_eq!(c.get("k").unwrap()["v"], b"a");
    }

    #[test]
    fn an_invalidation_during_the_read_cancels_its_fill() {
        let c = NearCache::new(1 << 20, 1);
        up(&c);
        let r = c.reserve("k").unwrap();
        c.invalidate(b"k");
        c.fill("k", r, &hash("old"));
        assert!(c.get("k").is_none(), "the reply may predate the change");
    }

    #[test]
    fn a_lost_connection_empties_the_cache_and_refuses_older_reads() {
        let c = NearCache::new(1 << 20, 2);
        c.up(0);
        c.up(1);
        let r = c.reserve("k").unwrap();
        let r2 = c.reserve("j").unwrap();
        c.fill("j", r2, &hash("j"));
        c.down(1);
        assert!(c.get("j").is_none(), "emptied");
        c.fill("k", r, &hash("a"));
        c.up(1);
        assert!(
            c.get("k").is_none(),
            "a read sent before the loss fills nothing"
        );
        assert!(c.reserve("x").is_some(), "tracking on again");
    }

    #[test]
    fn a_reconnect_confirmation_refuses_reads_sent_before_it() {
        let c = NearCache::new(1 << 20, 1);
        up(&c);
        let r = c.reserve("k").unwrap();
        c.up(0); // tracking re-confirmed (after a reconnect): earlier reads may be untracked
        c.fill("k", r, &hash("a"));
        assert!(c.get("k").is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let c = NearCache::new(64 * 1024, 1);
        up(&c);
        for i in 0..10_000 {
            let k = format!("k{i}");
            let r = c.reserve(&k).unwrap();
            c.fill(&k, r, &hash(&"x".repeat(100)));
        }
        let s = c.stats();
        assert!(s.bytes <= 64 * 1024, "{s:?}");
        assert!(c.get("k9999").is_some(), "recent entries stay");
        assert!(c.get("k0").is_none(), "old entries go");
    }

    /// A read that fails, finds no session or is abandoned leaves no reservation behind
    /// (a deleted key is never invalidated again, so nothing else would remove it).
    #[test]
    fn an_unused_reservation_is_withdrawn() {
        let c = NearCache::new(1 << 20, 1);
        up(&c);
        for i in 0..100 {
            let key = format!("k{i}");
            let r = c.reserve(&key).unwrap();
            let _pending = Pending::new(&c, &key, r); // dropped unfilled
        }
        assert_eq!(c.lock().pending.len(), 0, "no reservation piles up");
        let r = c.reserve("k").unwrap();
        Pending::new(&c, "k", r).fill(&hash("a"));
        assert_eq!(c.lock().pending.len(), 0);
        assert!(c.get("k").is_some(), "a used reservation still fills");
    }

    #[test]
    fn a_missing_key_is_not_cached() {
        let c = NearCache::new(1 << 20, 1);
        up(&c);
        let r = c.reserve("k").unwrap();
        c.fill("k", r, &Arc::new(HashMap::new()));
        assert!(c.get("k").is_none());
    }
}
