//! Cluster routing, owned by tessera: one plain (centralized) fred pool per primary, the slot
//! table from `CLUSTER SLOTS`, `MOVED` and `ASK` followed, and a watcher that follows
//! failovers.
//!
//! Why not fred's cluster client: it runs every node's traffic through one routing task, and
//! while that task reconnects to one node it writes nothing to any node (fred 10.1: its
//! cluster sync needs every primary of the map, and the reconnect loop runs inside the task
//! that reads the command queue). A primary's failover answered 503 for sessions on primaries
//! that never failed (issue #26: 27.7% of all requests over the window). Here each primary has
//! its own pool, router task and fail-fast state: when one dies, only its slots are refused,
//! and the watcher moves them to the promoted replica as soon as the cluster reports it.
//!
//! The fred cluster pool still exists (one client) for the startup and check paths that ask
//! every node (`INFO`, the query-engine probe); no request goes through it. The near-cache's
//! tracking connections are still a fred cluster client: while it reconnects the cache is off
//! and reads go to their primary's pool here (`session_scripts.rs`, `load_plain`).

use super::connect::{builder, preload, RedisOptions};
use crate::error::{Error, Result, StoreError};
use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::*;
use fred::types::cluster::ClusterRouting;
use fred::types::config::ServerConfig;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;

/// How often the watcher asks for the slot table while something is wrong (a shard not
/// connected, a redirect, a timeout): the delay between a failover and its slots served again.
const ALERT_POLL: Duration = Duration::from_millis(200);
/// How often it asks otherwise (a resharding is also found by its first `MOVED`).
const CALM_POLL: Duration = Duration::from_secs(10);
/// How long the watcher stays alert after the last sign of trouble.
const ALERT_FOR: Duration = Duration::from_secs(30);

/// The shard pools and the table that routes a key to one; see the module's text.
pub(super) struct Shards {
    inner: Arc<Inner>,
    watcher: tokio::task::JoinHandle<()>,
}

struct Inner {
    table: RwLock<Arc<Table>>,
    /// The cluster's configuration: credentials, TLS and the seed nodes.
    config: Config,
    options: RedisOptions,
    /// Until when the watcher polls at `ALERT_POLL` (`Instant` as ms since `born`).
    alert_until_ms: AtomicU64,
    born: Instant,
    wake: tokio::sync::Notify,
    /// One refresh at a time; callers that saw a redirect wait for the one under way.
    refreshing: tokio::sync::Mutex<()>,
    /// Table reads so far: which primary is asked first.
    asked: AtomicUsize,
    /// The connections reserved for `ASKING`, per node (opened on the first `ASK` it sends:
    /// the importing node may be a new primary that owns no slot yet, so not in the table).
    asking: tokio::sync::Mutex<HashMap<Server, (Pool, Vec<AbortHandle>)>>,
}

struct Table {
    routing: ClusterRouting,
    shards: HashMap<Server, Arc<Shard>>,
    /// Bumped on each change: a caller whose redirect predates the change just retries.
    generation: u64,
}

/// One primary's pool, and the connection reserved for `ASKING` (opened on the first `ASK`).
struct Shard {
    server: Server,
    pool: Pool,
    tasks: Vec<AbortHandle>,
    /// The connections reserved for writes that wait for replicas (`WAIT` holds its
    /// connection), when they do.
    writes: Option<(Pool, Vec<AbortHandle>)>,
}

/// Where the cluster sent a command that did not run.
enum Redirect {
    /// The slot has moved for good: refresh the table, try again.
    Moved,
    /// The slot is migrating and this key already left: ask this node, after `ASKING`.
    Ask(Server),
}

fn redirect(e: &FredError) -> Option<Redirect> {
    if *e.kind() != ErrorKind::Cluster {
        return None;
    }
    let d = e.details();
    let mut words = d.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("MOVED"), _, _) => Some(Redirect::Moved),
        (Some("ASK"), _, Some(addr)) => {
            let (host, port) = addr.rsplit_once(':')?;
            Some(Redirect::Ask(Server::new(host, port.parse().ok()?)))
        }
        _ => None,
    }
}

fn unroutable(slot: u16) -> FredError {
    FredError::new(
        ErrorKind::Routing,
        format!("Failed to route: no connected primary serves slot {slot} now"),
    )
}

impl Shards {
    /// Opens a pool on every primary of the table `cluster` (fred's cluster pool, connected)
    /// found, and starts the watcher. A primary that does not answer is left out: its slots are
    /// refused (`Unavailable`) until the watcher opens it.
    pub(super) async fn open(cluster: &Pool, config: &Config, o: &RedisOptions) -> Result<Self> {
        let routing = cluster.next().cached_cluster_state().ok_or_else(|| {
            Error::Unavailable(StoreError::new("the cluster's slot table is not known yet"))
        })?;
        let inner = Arc::new(Inner {
            table: RwLock::new(Arc::new(Table {
                routing: ClusterRouting::new(),
                shards: HashMap::new(),
                generation: 0,
            })),
            config: config.clone(),
            options: o.clone(),
            alert_until_ms: AtomicU64::new(0),
            born: Instant::now(),
            wake: tokio::sync::Notify::new(),
            refreshing: tokio::sync::Mutex::new(()),
            asked: AtomicUsize::new(0),
            asking: tokio::sync::Mutex::new(HashMap::new()),
        });
        inner.install(routing).await;
        let watcher = tokio::spawn(watch(Arc::downgrade(&inner)));
        Ok(Shards { inner, watcher })
    }

    fn table(&self) -> Arc<Table> {
        self.inner.table()
    }

    /// A connected client of the pool that serves `key`'s slot now (of its write connections,
    /// for a `write` when there are).
    fn client(&self, key: &[u8], write: bool) -> std::result::Result<(Client, u64), FredError> {
        let table = self.table();
        let slot = fred::util::redis_keyslot(key);
        let shard = table
            .routing
            .get_server(slot)
            .and_then(|s| table.shards.get(s))
            .ok_or_else(|| {
                self.inner.alert();
                unroutable(slot)
            })?;
        let pool = match (&shard.writes, write) {
            (Some((writes, _)), true) => writes,
            _ => &shard.pool,
        };
        Ok((pool.next_connected().clone(), table.generation))
    }

    /// Runs `f` on the client that serves `key`, following the cluster's redirects: after a
    /// `MOVED` the table is read again and `f` runs on the slot's new owner; after an `ASK`,
    /// on the named node, right after `ASKING` on a connection no other command uses
    /// meanwhile. Either way the command did not run where it was first sent, so running it
    /// again is safe for a write too. At most three tries.
    pub(super) async fn on_key<T, F, Fut>(
        &self,
        key: &[u8],
        write: bool,
        f: F,
    ) -> std::result::Result<T, FredError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, FredError>>,
    {
        let mut tries = 0;
        loop {
            let (client, generation) = self.client(key, write)?;
            let reply = f(client).await;
            let Err(e) = &reply else { return reply };
            tries += 1;
            match redirect(e) {
                Some(Redirect::Moved) if tries < 3 => {
                    Box::pin(self.inner.clone().refresh_after(generation)).await
                }
                Some(Redirect::Ask(server)) if tries < 3 => {
                    return Box::pin(self.inner.clone().asking(server, &f)).await;
                }
                _ => {
                    if matches!(
                        e.kind(),
                        ErrorKind::IO
                            | ErrorKind::Timeout
                            | ErrorKind::Canceled
                            | ErrorKind::Cluster
                    ) {
                        self.inner.alert();
                    }
                    return reply;
                }
            }
        }
    }

    /// Indices of `keys`, grouped by the pool that serves them, with a client of each.
    pub(super) fn group(
        &self,
        keys: &[String],
    ) -> std::result::Result<Vec<(Client, Vec<usize>)>, FredError> {
        let table = self.table();
        let mut groups: HashMap<&Server, (Client, Vec<usize>)> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let slot = fred::util::redis_keyslot(k.as_bytes());
            let Some((server, shard)) = table
                .routing
                .get_server(slot)
                .and_then(|s| table.shards.get_key_value(s))
            else {
                self.inner.alert();
                return Err(unroutable(slot));
            };
            groups
                .entry(server)
                .or_insert_with(|| (shard.pool.next_connected().clone(), Vec::new()))
                .1
                .push(i);
        }
        Ok(groups.into_values().collect())
    }

    /// Tells the watcher something went wrong (a command timed out): poll the table often.
    pub(super) fn alert(&self) {
        self.inner.alert();
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        // The pools close with `Inner`, once no task holds it any more.
        self.watcher.abort();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let table = match self.table.get_mut() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        for shard in table.shards.values() {
            shard.close();
        }
        for (_, (pool, tasks)) in self.asking.get_mut().drain() {
            close(pool, tasks);
        }
    }
}

impl Inner {
    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn alert(&self) {
        let until = self.now_ms() + ALERT_FOR.as_millis() as u64;
        if self.alert_until_ms.swap(until, Ordering::Relaxed) <= self.now_ms() {
            self.wake.notify_one();
        }
    }

    fn alerted(&self) -> bool {
        self.alert_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Whether a primary of the table has no pool, or a pool with a client not connected.
    fn degraded(&self) -> bool {
        let table = self.table();
        table.routing.unique_primary_nodes().iter().any(|s| {
            table
                .shards
                .get(s)
                .is_none_or(|shard| shard.pool.clients().iter().any(|c| !c.is_connected()))
        })
    }

    /// Reads the table again unless it changed since `generation` (another caller did). In a
    /// task of its own: a request that gives up meanwhile (its timer) does not cut a pool's
    /// opening short, which would leave it connected and unused.
    async fn refresh_after(self: Arc<Self>, generation: u64) {
        self.alert();
        let _ = tokio::spawn(async move {
            let _one = self.refreshing.lock().await;
            if self.table().generation == generation {
                if let Some(routing) = self.cluster_slots().await {
                    self.swap(routing).await;
                }
            }
        })
        .await;
    }

    /// Reads the table and applies it if it changed (the watcher's step).
    async fn refresh(&self) {
        let _one = self.refreshing.lock().await;
        if let Some(routing) = self.cluster_slots().await {
            self.swap(routing).await;
        }
    }

    /// The first table at start (no lock needed: nothing else runs yet).
    async fn install(&self, routing: ClusterRouting) {
        self.swap(routing).await;
    }

    /// `CLUSTER SLOTS` from a connected primary (the served ones first, then the URL's seed
    /// nodes), within the command timeout each.
    async fn cluster_slots(&self) -> Option<ClusterRouting> {
        let timeout = self.options.command_timeout_value();
        let table = self.table();
        let mut served: Vec<&Arc<Shard>> = table.shards.values().collect();
        // Nodes may disagree for a moment after a failover: ask the connected ones, starting
        // from another each time, so that one stale node does not pin the answer.
        if !served.is_empty() {
            let first = self.asked.fetch_add(1, Ordering::Relaxed) % served.len();
            served.rotate_left(first);
        }
        for shard in served {
            let client = shard.pool.next_connected();
            if !client.is_connected() {
                continue;
            }
            let ask = client.cluster_slots::<Value>();
            if let Ok(Ok(v)) = tokio::time::timeout(timeout, ask).await {
                if let Ok(r) = ClusterRouting::from_cluster_slots(v, shard.server.host.clone()) {
                    if !r.slots().is_empty() {
                        return Some(r);
                    }
                }
            }
        }
        // None of ours answered (the whole cluster restarted, say): the URL's nodes.
        let seeds = match &self.config.server {
            ServerConfig::Clustered { hosts, .. } => hosts.clone(),
            _ => Vec::new(),
        };
        for seed in seeds {
            let Ok((pool, tasks)) = self.open_pool(&seed, 1).await else {
                continue;
            };
            let ask = pool.next().cluster_slots::<Value>();
            let got = tokio::time::timeout(timeout, ask).await;
            close(pool, tasks);
            if let Ok(Ok(v)) = got {
                if let Ok(r) = ClusterRouting::from_cluster_slots(v, seed.host.clone()) {
                    if !r.slots().is_empty() {
                        return Some(r);
                    }
                }
            }
        }
        None
    }

    /// Applies `routing`: opens a pool on each new primary (scripts loaded), swaps the table,
    /// then closes the pools of nodes that are no longer primaries.
    async fn swap(&self, routing: ClusterRouting) {
        let old = self.table();
        let primaries = routing.unique_primary_nodes();
        let same_slots = same(&routing, &old.routing);
        if same_slots && primaries.iter().all(|p| old.shards.contains_key(p)) {
            return;
        }
        let mut shards = HashMap::with_capacity(primaries.len());
        for server in primaries {
            if let Some(s) = old.shards.get(&server) {
                shards.insert(server, s.clone());
                continue;
            }
            match self.open_shard(&server).await {
                Ok(s) => {
                    shards.insert(server, Arc::new(s));
                }
                Err(e) => {
                    // A node that has not yet heard of a failover names the failed primary:
                    // keep the table while a slot it gives that node is served by a connected
                    // pool now, or the promoted primary's pool would close.
                    let served_now = routing.slots().iter().any(|r| {
                        r.primary == server
                            && old.routing.get_server(r.start).is_some_and(|owner| {
                                old.shards.get(owner).is_some_and(|s| {
                                    s.pool.clients().iter().any(|c| c.is_connected())
                                })
                            })
                    });
                    tracing::warn!(target: "tessera::cluster", node = %server, error = %e, served_now, "could not open a pool on a primary; its slots answer 503 until it does");
                    if served_now {
                        for s in shards
                            .into_iter()
                            .filter(|(s, _)| !old.shards.contains_key(s))
                        {
                            s.1.close();
                        }
                        return;
                    }
                }
            }
        }
        let retired: Vec<Arc<Shard>> = old
            .shards
            .iter()
            .filter(|(s, _)| !shards.contains_key(*s))
            .map(|(_, shard)| shard.clone())
            .collect();
        if !same_slots {
            tracing::info!(target: "tessera::cluster", primaries = shards.len(), generation = old.generation + 1, "cluster slot table changed");
        }
        let table = Arc::new(Table {
            routing,
            shards,
            generation: old.generation + 1,
        });
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
        // Closed once the requests that took a client of it before the swap are done.
        let grace = self.options.command_timeout_value() * 2 + Duration::from_secs(1);
        for shard in retired {
            tracing::info!(target: "tessera::cluster", node = %shard.server, "closing the pool of a node that is no longer a primary");
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                shard.close();
            });
        }
    }

    async fn open_shard(&self, server: &Server) -> Result<Shard> {
        let (pool, tasks) = self
            .open_pool(server, self.options.pool_size_value())
            .await?;
        // A node named primary by a table that is behind (a demoted primary that came back,
        // still listed by a node that has not heard) is refused here, before any request
        // goes to it.
        if let Err(e) = is_primary(&pool, &self.options).await {
            close(pool, tasks);
            return Err(e);
        }
        if let Err(e) = preload(&pool, &self.options).await {
            close(pool, tasks);
            return Err(e);
        }
        let writes = match self.options.write_clients() {
            None => None,
            Some(n) => match self.open_pool(server, n).await {
                Ok(w) => Some(w),
                Err(e) => {
                    close(pool, tasks);
                    return Err(e);
                }
            },
        };
        Ok(Shard {
            server: server.clone(),
            pool,
            tasks,
            writes,
        })
    }

    /// A plain pool on one node, connected within the connect timeout, its tasks supervised.
    async fn open_pool(&self, server: &Server, size: usize) -> Result<(Pool, Vec<AbortHandle>)> {
        let mut config = self.config.clone();
        config.server = ServerConfig::Centralized {
            server: server.clone(),
        };
        let pool = builder(config, &self.options)
            .build_pool(size.max(1))
            .map_err(|e| Error::Store(StoreError::client(e)))?;
        let limit = self.options.connect_timeout_value();
        match super::supervise::start(&pool, limit, "timed out connecting to a cluster primary")
            .await
        {
            Ok(tasks) => {
                let mut aborts: Vec<AbortHandle> = tasks.iter().map(|t| t.abort_handle()).collect();
                aborts.extend(
                    super::supervise::supervise(&pool, tasks, |_| {})
                        .iter()
                        .map(|w| w.abort_handle()),
                );
                Ok((pool, aborts))
            }
            Err(e) => {
                close(pool, Vec::new());
                Err(e)
            }
        }
    }

    /// `f` on `server`, right after `ASKING` on the node's reserved connection, which is held
    /// for the two commands (the flag applies to the connection's next command only). Few
    /// commands take this path: only keys already moved by a migration under way.
    async fn asking<T, F, Fut>(
        self: Arc<Self>,
        server: Server,
        f: &F,
    ) -> std::result::Result<T, FredError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, FredError>>,
    {
        let refused = |e: String| FredError::new(ErrorKind::Routing, e);
        if !self.asking.lock().await.contains_key(&server) {
            // Opened in a task of its own (see `refresh_after`), which keeps what it opened.
            let (inner, node) = (self.clone(), server.clone());
            let opened = tokio::spawn(async move {
                let mut reserved = inner.asking.lock().await;
                if let std::collections::hash_map::Entry::Vacant(slot) = reserved.entry(node) {
                    let (pool, tasks) = inner.open_pool(slot.key(), 1).await?;
                    if let Err(e) = preload(&pool, &inner.options).await {
                        close(pool, tasks);
                        return Err(e);
                    }
                    slot.insert((pool, tasks));
                }
                Ok(())
            })
            .await;
            match opened {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(refused(e.to_string())),
                Err(e) => return Err(refused(e.to_string())),
            }
        }
        let reserved = self.asking.lock().await;
        let Some((pool, _)) = reserved.get(&server) else {
            return Err(refused(format!("no connection to {server}")));
        };
        let client = pool.next().clone();
        let asking = fred::types::CustomCommand::new_static(
            "ASKING",
            fred::types::ClusterHash::Random,
            false,
        );
        client
            .custom::<Value, Value>(asking, vec![])
            .await
            .map_err(|e| FredError::new(ErrorKind::Routing, e.details().to_string()))?;
        f(client).await
    }
}

/// `ROLE` says `master`, within the command timeout.
async fn is_primary(pool: &Pool, o: &RedisOptions) -> Result<()> {
    let role =
        fred::types::CustomCommand::new_static("ROLE", fred::types::ClusterHash::Random, false);
    let ask = pool.next().custom::<Vec<Value>, Value>(role, vec![]);
    match tokio::time::timeout(o.command_timeout_value(), ask).await {
        Ok(Ok(reply)) if reply.first().and_then(Value::as_str).as_deref() == Some("master") => {
            Ok(())
        }
        Ok(Ok(reply)) => Err(Error::Unavailable(StoreError::new(format!(
            "a node the slot table names a primary is not one: ROLE {:?}",
            reply.first()
        )))),
        Ok(Err(e)) => Err(Error::from_fred(e)),
        Err(_) => Err(Error::Unavailable(StoreError::timeout(
            "ROLE did not answer in time",
        ))),
    }
}

/// The same slot ranges with the same primaries.
fn same(a: &ClusterRouting, b: &ClusterRouting) -> bool {
    a.slots().len() == b.slots().len()
        && a.slots()
            .iter()
            .zip(b.slots())
            .all(|(x, y)| x.start == y.start && x.end == y.end && x.primary == y.primary)
}

/// Closes a pool: `QUIT`, and its tasks aborted (a task in the middle of a reconnect attempt
/// does not see the `QUIT`).
fn close(pool: Pool, tasks: Vec<AbortHandle>) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), pool.quit()).await;
            for t in tasks {
                t.abort();
            }
        });
    } else {
        for t in tasks {
            t.abort();
        }
    }
}

impl Shard {
    fn close(&self) {
        close(self.pool.clone(), self.tasks.clone());
        if let Some((pool, tasks)) = &self.writes {
            close(pool.clone(), tasks.clone());
        }
    }
}

/// Polls the table: every `ALERT_POLL` while degraded or alerted, else every `CALM_POLL` or
/// when woken.
async fn watch(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let wait = if strong.alerted() || strong.degraded() {
            ALERT_POLL
        } else {
            CALM_POLL
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = strong.wake.notified() => {}
        }
        strong.refresh().await;
    }
}
