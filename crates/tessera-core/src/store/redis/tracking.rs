//! Keeping the near-cache coherent (see `near_cache.rs` for the rules): the tracking
//! connections and their tasks, the barrier a hit waits for before it is served, and the
//! database's marker that reveals a flush or a swap.

use super::near_cache::{Feed, Fields, NearCache, MARKER};
use super::RedisBackend;
use crate::error::Error;
use crate::store::{fields, Timing};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use std::sync::{Arc, Mutex};

/// What the near-cache answered for one load.
pub(crate) enum Cached {
    Hit(Fields),
    Miss,
    /// The barrier did not complete: read from the main pool without filling the cache.
    BarrierFailed,
}

/// The tracking connections and the tasks that keep the cache coherent with them.
pub(crate) struct Tracking {
    pub(crate) pool: fred::clients::Pool,
    pub(crate) cache: Arc<NearCache>,
    /// Confirm each hit before serving it (`NearCacheCoherence::Barrier`).
    pub(crate) barrier: bool,
    /// Not clustered: one connection, so one barrier in flight serves every hit that arrived
    /// before it was sent (see [`SharedPing`]).
    pub(crate) shared: Option<Arc<SharedPing>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A coalesced barrier for a single tracking connection. A hit needs a barrier (a `GET` of
/// the marker) *sent after it arrived* to be answered (then every push the server sent before
/// has been received); hits that arrive while one is in flight all wait for the next one, so
/// under load one round trip confirms many hits, and at most two are ever outstanding per
/// instance.
pub(crate) struct SharedPing {
    state: Mutex<PingState>,
    /// (sequence number of the last barrier answered, whether it succeeded)
    done: tokio::sync::watch::Sender<(u64, bool)>,
    wake: tokio::sync::Notify,
}

struct PingState {
    /// Sequence number of the last barrier sent.
    sent: u64,
    /// A hit is waiting for a barrier that has not been sent yet.
    wanted: bool,
}

impl SharedPing {
    fn new() -> Self {
        SharedPing {
            state: Mutex::new(PingState {
                sent: 0,
                wanted: false,
            }),
            done: tokio::sync::watch::channel((0, true)).0,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Waits until a barrier sent after this call was answered; whether it succeeded.
    pub(crate) async fn confirm(&self) -> bool {
        let need = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.wanted = true;
            st.sent + 1
        };
        self.wake.notify_one();
        let mut rx = self.done.subscribe();
        let ok = rx
            .wait_for(|(seq, _)| *seq >= need)
            .await
            .map(|v| v.1)
            .unwrap_or(false);
        ok
    }

    /// The sender: one barrier at a time, for as long as hits want one. The barrier reads the
    /// database's marker (a `GET`, as cheap as a `PING`): it fails, and the cache is emptied,
    /// when the database was emptied or swapped since the cache was filled.
    async fn run(self: Arc<Self>, client: fred::clients::Client, cache: Arc<NearCache>) {
        loop {
            self.wake.notified().await;
            loop {
                let seq = {
                    let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    if !st.wanted {
                        break;
                    }
                    st.wanted = false;
                    st.sent += 1;
                    st.sent
                };
                let ok = match read_marker(&client).await {
                    Ok(read) => cache.same_database(0, read.as_deref()),
                    Err(_) => false,
                };
                self.done.send_replace((seq, ok));
            }
        }
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let pool = self.pool.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = fred::interfaces::ClientLike::quit(&pool).await;
            });
        }
    }
}

impl Tracking {
    /// Starts tracking on every connection of `pool` (a RESP3 pool, already connected, whose
    /// connection tasks are `connections`) and the tasks that apply what the connections
    /// report.
    pub(crate) fn start(
        pool: fred::clients::Pool,
        connections: Vec<fred::types::ConnectHandle>,
        max_bytes: usize,
        barrier: bool,
    ) -> Tracking {
        use fred::interfaces::ClientLike;
        let cache = Arc::new(NearCache::new(max_bytes, pool.clients().len()));
        let mut tasks = Vec::new();
        let shared = match pool.clients() {
            [client] if barrier && !client.is_clustered() => {
                let s = Arc::new(SharedPing::new());
                tasks.push(tokio::spawn(s.clone().run(client.clone(), cache.clone())));
                Some(s)
            }
            _ => None,
        };
        for (i, client) in pool.clients().iter().enumerate() {
            cache
                .feeds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Feed::of(client));
            tasks.push(tokio::spawn(pump_on_arrival(
                Feed::of(client),
                cache.clone(),
            )));
            tasks.push(tokio::spawn(keep_tracking(
                client.clone(),
                i,
                cache.clone(),
            )));
        }
        // A connection task that ended and is started again has no tracking on: the cache
        // empties that client's copies, and `keep_tracking` turns it on again.
        let disturbed = cache.clone();
        tasks.extend(super::supervise::supervise(&pool, connections, move |i| {
            disturbed.disturb(i)
        }));
        Tracking {
            pool,
            cache,
            barrier,
            shared,
            tasks,
        }
    }
}

/// Applies reports as they arrive when no request does it first (its own receivers only
/// signal an arrival; the cache's feeds are what is applied, once, in order).
async fn pump_on_arrival(mut f: Feed, cache: Arc<NearCache>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let closed = tokio::select! {
            r = f.invalidations.recv() => matches!(r, Err(RecvError::Closed)),
            r = f.errors.recv() => matches!(r, Err(RecvError::Closed)),
            r = f.reconnects.recv() => matches!(r, Err(RecvError::Closed)),
            r = f.changes.recv() => matches!(r, Err(RecvError::Closed)),
        };
        cache.pump();
        if closed {
            return;
        }
    }
}

/// Keeps tracking on for one pooled client (all its connections, one per node in a cluster):
/// on at start and again after every disturbance; the cache is empty and unfilled in between.
async fn keep_tracking(client: fred::clients::Client, i: usize, cache: Arc<NearCache>) {
    use fred::interfaces::TrackingInterface;
    loop {
        let generation = cache.generation(i);
        let mut delay = std::time::Duration::from_millis(20);
        loop {
            // Bounded: the tracking pool has no default command timeout, and a command caught
            // by a dying connection must not stall this loop.
            let on = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                client.start_tracking(Vec::<String>::new(), false, false, false, false),
            );
            let on = async {
                on.await.unwrap_or_else(|_| {
                    Err(fred::error::Error::new(
                        fred::error::ErrorKind::Timeout,
                        "CLIENT TRACKING did not answer",
                    ))
                })?;
                establish_marker(&client).await
            };
            match on.await {
                Ok(marker) => {
                    *cache.marker.lock().unwrap_or_else(|p| p.into_inner()) = Some(marker);
                    break;
                }
                Err(e) => {
                    tracing::debug!(target: "tessera::near_cache", error = %e, "near-cache: could not turn tracking on yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_millis(500));
                }
            }
        }
        if cache.up_if(i, generation) {
            tracing::debug!(target: "tessera::near_cache", connection = i, "near-cache: tracking on");
            // Wait for a disturbance; meanwhile a read of the marker every second proves the
            // connection alive (a half-open one, a NAT dropping an idle connection, reports
            // nothing, and would stop invalidations without a word) and the database the one
            // the cache was filled from.
            loop {
                tokio::select! {
                    _ = cache.wake[i].notified() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                        match read_marker(&client).await {
                            Ok(read) => {
                                if !cache.same_database(i, read.as_deref()) {
                                    break;
                                }
                            }
                            Err(_) => {
                                tracing::warn!(target: "tessera::near_cache", connection = i, "near-cache: tracking connection did not answer; cache emptied until it does");
                                cache.disturb(i);
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The database's marker, on the tracking connection, within 2 s (the tracking pool has no
/// default command timeout).
async fn read_marker(client: &fred::clients::Client) -> Result<Option<String>, fred::error::Error> {
    use fred::interfaces::KeysInterface;
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        client.get::<Option<String>, _>(MARKER),
    )
    .await
    .unwrap_or_else(|_| {
        Err(fred::error::Error::new(
            fred::error::ErrorKind::Timeout,
            "the marker read did not answer",
        ))
    })
}

/// The database's marker: the one there, or a new random one if there is none (`SET NX`, so
/// instances starting together agree on one).
async fn establish_marker(client: &fred::clients::Client) -> Result<String, fred::error::Error> {
    use fred::interfaces::KeysInterface;
    // Read first: an existing marker needs no write (a server over `maxmemory` refuses one).
    if let Some(m) = read_marker(client).await? {
        return Ok(m);
    }
    let fresh: String = crate::id::random_bytes::<16>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let set = client.set::<Option<String>, _, _>(
        MARKER,
        fresh,
        None,
        Some(fred::types::SetOptions::NX),
        false,
    );
    tokio::time::timeout(std::time::Duration::from_secs(2), set)
        .await
        .unwrap_or_else(|_| {
            Err(fred::error::Error::new(
                fred::error::ErrorKind::Timeout,
                "the marker write did not answer",
            ))
        })?;
    read_marker(client).await?.ok_or_else(|| {
        fred::error::Error::new(fred::error::ErrorKind::Unknown, "the marker vanished")
    })
}

impl RedisBackend {
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
                    tracking.cache.pump();
                    if tracking.cache.holds(key) {
                        tracking.cache.flush();
                    }
                    return Cached::Miss;
                }
                Err(_) => return Cached::BarrierFailed,
            }
        }
        // Push coherence: no barrier and no yield. What has arrived is applied by `get` below
        // and, as it arrives, by the feed's own task (`pump_on_arrival`): the measured window
        // is that task's. A yield here (to let the runtime read the sockets first) narrowed
        // only the case of a push arriving in the same scheduler tick, and cost 2.8 µs of CPU
        // per hit, a third of the whole machinery (BENCHMARKS.md, issue #25).
        let Some(fields) = tracking.cache.get(key) else {
            return Cached::Miss;
        };
        if t.absolute_ms > 0 {
            let Some(created) = fields::ms(&fields, fields::CREATED) else {
                return Cached::Miss;
            };
            let margin = 1_000;
            if created.saturating_add(t.absolute_ms) <= (self.clock.now_ms().max(0) as u64) + margin
            {
                return Cached::Miss;
            }
        }
        // Shared, not copied: the request copies it only if it changes it.
        Cached::Hit(fields)
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
}
