//! Faults on real processes: restarts with AOF, Sentinel and Cluster failover (SIGKILL of a
//! primary), and the operator checks. Every wait is bounded; windows are printed for the docs.

use serde_json::json;
use std::time::{Duration, Instant};
use tessera_core::{ServerWarning, Store};
use tessera_tests::{Backend, Browser, Fixture, Server, ServerKind, Topology};

async fn logged_in_browsers(fx: &Fixture, n: usize) -> Vec<Browser> {
    let mut out = Vec::new();
    for i in 0..n {
        let b = fx.browser();
        let r = b
            .post("/login", Some(json!({"user_id": format!("u{i}"), "i": i})))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        out.push(b);
    }
    out
}

/// Polls every browser until all answer 200; every answer meanwhile must be 200 or 503 and
/// come back fast. Returns how long the sessions were unavailable.
async fn wait_until_served(browsers: &[Browser], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut all_ok = true;
        for (i, b) in browsers.iter().enumerate() {
            let r = b.get("/me").await;
            assert!(
                r.status == 200 || r.status == 503,
                "only 200 or 503 during a failover, got {r:?}"
            );
            assert!(
                r.elapsed < Duration::from_millis(2500),
                "a request hung for {:?}",
                r.elapsed
            );
            if r.status == 200 {
                assert_eq!(r.json()["i"], i, "session {i} kept its data");
            } else {
                all_ok = false;
                break;
            }
        }
        if all_ok {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not served again within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every replica has acknowledged what its primary has (WAIT on each primary).
fn replicated(t: &Topology) {
    for p in t.primaries() {
        let acked = p.cmd(&["WAIT", "1", "5000"]).int();
        assert!(acked >= 1, "replica did not acknowledge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_sigkill_and_restart_with_aof() {
    for kind in tessera_tests::KINDS {
        let mut fx = Fixture::new(Backend::Redis(kind)).await;
        let browsers = logged_in_browsers(&fx, 20).await;
        tokio::time::sleep(Duration::from_secs(2)).await; // appendfsync everysec
        fx.standalone().kill();
        // Down long enough for the client's reconnect backoff to reach its cap (500 ms).
        for b in &browsers[..2] {
            assert_eq!(b.get("/me").await.status, 503);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        fx.standalone().restart(); // same port, same data dir: AOF replayed
        let window = wait_until_served(&browsers, Duration::from_secs(15)).await;
        eprintln!("[{kind:?}] restart with AOF after 5 s down: all 20 sessions served again {window:?} after the restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_sessions_and_answers_503_meanwhile() {
    let mut fx = Fixture::new(Backend::Sentinel).await;
    let browsers = logged_in_browsers(&fx, 10).await;
    replicated(fx.server());
    let old_primary = fx.server().primaries()[0].port();
    let killed_at = Instant::now();
    for n in fx.server_mut().nodes_mut() {
        if n.port() == old_primary {
            n.kill();
        }
    }
    let window = wait_until_served(&browsers, Duration::from_secs(30)).await;
    eprintln!("sentinel failover: unavailable for {window:?} after SIGKILL of the primary (down-after 1000 ms)");
    let t = fx.server();
    let new_primary = t.primaries()[0].port();
    assert_ne!(new_primary, old_primary, "a replica was promoted");
    // Writes work on the new primary, and the app never restarted.
    assert_eq!(
        browsers[0]
            .put("/session", json!({"after": "failover"}))
            .await
            .status,
        200
    );
    assert_eq!(browsers[0].get("/me").await.json()["after"], "failover");
    assert!(killed_at.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_recovers_without_crossslot_or_moved_reaching_the_app() {
    let mut fx = Fixture::new(Backend::Cluster).await;
    let browsers = logged_in_browsers(&fx, 30).await;
    replicated(fx.server());
    let primaries: Vec<u16> = fx.server().primaries().iter().map(|p| p.port()).collect();
    let victim = primaries[0];
    for n in fx.server_mut().nodes_mut() {
        if n.port() == victim {
            n.kill();
        }
    }
    let window = wait_until_served(&browsers, Duration::from_secs(30)).await;
    eprintln!("cluster failover: all 30 sessions served again {window:?} after SIGKILL of one primary (node timeout 1000 ms)");
    assert_eq!(fx.server().primaries().len(), 3, "the replica took over");
    // Everything works across slots afterwards: logins, logout-all, device lists.
    let b = fx.browser();
    b.post("/login", Some(json!({"user_id": "u0"}))).await;
    assert_eq!(b.get("/sessions").await.json().as_array().unwrap().len(), 2);
    assert_eq!(b.post("/logout-all", None).await.status, 204);
    assert_eq!(browsers[0].get("/me").await.status, 401);
}

/// Issue #26, item 2, the failover's blast radius on a Cluster: while one primary is down and
/// until its replica takes over, a session on another primary is never refused (each primary
/// has its own pool, `shards.rs`), and the failed primary's sessions are served again within
/// the servers' own failover time plus 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_refuses_only_the_failed_primarys_sessions() {
    blast_radius(Fixture::new(Backend::Cluster).await, "no near-cache").await;
}

/// The same with the near-cache on (`Barrier`, the default): a hit's barrier or fill on the
/// failed primary's tracking connection falls back to the key's own pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_with_the_near_cache_refuses_only_the_failed_primarys_sessions() {
    use tessera_core::RedisOptions;
    let cluster = tokio::task::spawn_blocking(Topology::cluster)
        .await
        .unwrap();
    let store = Store::redis_with(
        &cluster.url(),
        RedisOptions::default().near_cache(8 * 1024 * 1024),
    )
    .await
    .unwrap();
    let fx = Fixture::on(Some(cluster), store, tessera_tests::fixture::config(|c| c)).await;
    blast_radius(fx, "near-cache").await;
}

async fn blast_radius(mut fx: Fixture, what: &str) {
    let browsers = logged_in_browsers(&fx, 30).await;
    replicated(fx.server());
    let ports: Vec<u16> = fx.server().primaries().iter().map(|p| p.port()).collect();
    let (victim, healthy) = (ports[0], ports[1]);
    let keys = fx.server().session_keys();
    let on_victim: Vec<bool> = (0..browsers.len())
        .map(|i| {
            let user = format!("u{i}");
            let key = keys
                .iter()
                .find(|k| fx.server().text(&["HGET", k, "__u"]).as_deref() == Some(&user))
                .unwrap_or_else(|| panic!("{user}'s session key"));
            let held = tessera_tests::resp::command(victim, &["EXISTS", key]).unwrap();
            matches!(held, tessera_tests::resp::RedisReply::Int(1))
        })
        .collect();
    let hit = on_victim.iter().filter(|v| **v).count();
    assert!(hit > 0 && hit < browsers.len(), "{hit} of 30 on the victim");
    for n in fx.server_mut().nodes_mut() {
        if n.port() == victim {
            n.kill();
        }
    }
    let killed = Instant::now();
    // The servers' own failover: the healthy primary lists no slot for the victim.
    let failed_over = || {
        let nodes = tessera_tests::resp::command(healthy, &["CLUSTER", "NODES"])
            .ok()
            .and_then(|r| r.text())
            .unwrap_or_default();
        nodes
            .lines()
            .filter(|l| l.contains(&format!(":{victim}@")))
            .all(|l| l.split_whitespace().count() <= 8)
    };
    let (mut failover, mut refused_elsewhere, mut refused_victim) = (None, 0, 0);
    let served = loop {
        if failover.is_none() && failed_over() {
            failover = Some(killed.elapsed());
        }
        let mut victim_ok = true;
        for (i, b) in browsers.iter().enumerate() {
            let r = b.get("/me").await;
            assert!(
                r.elapsed < Duration::from_millis(2500),
                "a request hung for {:?}",
                r.elapsed
            );
            match (r.status, on_victim[i]) {
                (200, _) => assert_eq!(r.json()["i"], i, "session {i} kept its data"),
                (503, true) => {
                    refused_victim += 1;
                    victim_ok = false;
                }
                (503, false) => {
                    if refused_elsewhere < 3 {
                        eprintln!("session {i} refused: {r:?}");
                    }
                    refused_elsewhere += 1;
                }
                _ => panic!("session {i}: {r:?}"),
            }
        }
        if let (true, Some(_)) = (victim_ok, failover) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "not served again within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failover = failover.unwrap();
    eprintln!(
        "cluster failover ({what}): servers failed over at {failover:?}, the victim's {hit} sessions served again at {served:?} ({refused_victim} refusals); {refused_elsewhere} refusals of the other {} sessions",
        30 - hit
    );
    assert_eq!(
        refused_elsewhere, 0,
        "sessions on healthy primaries were refused"
    );
    assert!(
        served <= failover + Duration::from_secs(1),
        "the failed primary's sessions came back {served:?} after the kill, the failover took {failover:?}"
    );
}

/// A slot migrating between Cluster primaries, as a resharding moves every slot it touches:
/// fred ended its client's connection task at the first `ASK` redirect, which used to leave
/// the app answering `503` to every session until it was restarted. tessera routes a cluster
/// itself now (`shards.rs`): a key that has left for the importing node is read and written
/// there after `ASKING`, the sessions of other slots are served throughout, and the migrated
/// one is served, with its data, before and after its slot has moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_leaves_the_store_up() {
    slot_migration(Fixture::new(Backend::Cluster).await, None).await;
}

/// The same with the near-cache (`Push`), whose tracking connection ends the same way when a
/// cache fill meets the `ASK`: its copies are dropped when the task ends, and tracking is on
/// again after the restart, so a write answered by another instance afterwards is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_leaves_the_near_cache_coherent() {
    use tessera_core::{NearCacheCoherence, RedisOptions, SessionManager};
    let cluster = tokio::task::spawn_blocking(Topology::cluster)
        .await
        .unwrap();
    let url = cluster.url();
    let options = || {
        RedisOptions::default()
            .near_cache(8 * 1024 * 1024)
            .near_cache_coherence(NearCacheCoherence::Push)
    };
    let store = Store::redis_with(&url, options()).await.unwrap();
    let config = || tessera_tests::fixture::config(|c| c);
    let fx = Fixture::on(Some(cluster), store, config()).await;
    let other = Store::redis_with(&url, options()).await.unwrap();
    let other = tessera_tests::fixture::serve(
        tessera_tests::Adapter::Axum,
        SessionManager::new(other, config()),
    )
    .await;
    slot_migration(fx, Some(other)).await;
}

/// Migrates the slot of the first of 8 logged-in sessions (see above); with `other` (a second
/// instance on the same servers), a write it answers afterwards must be read by the first.
async fn slot_migration(fx: Fixture, other: Option<tessera_tests::TestApp>) {
    let browsers = logged_in_browsers(&fx, 8).await;
    let cluster = fx.server();
    let key_of = |user: &str| {
        cluster
            .session_keys()
            .into_iter()
            .find(|k| cluster.text(&["HGET", k, "__u"]).as_deref() == Some(user))
            .unwrap_or_else(|| panic!("{user}'s session key"))
    };
    let key = key_of("u0");
    let slot = cluster.cmd(&["CLUSTER", "KEYSLOT", &key]).int().to_string();
    let primaries = cluster.primaries();
    let src = primaries
        .iter()
        // The others answer MOVED.
        .find(|p| {
            matches!(
                p.cmd(&["EXISTS", &key]),
                tessera_tests::resp::RedisReply::Int(1)
            )
        })
        .expect("the primary holding u0's session");
    let dst = primaries.iter().find(|p| p.port() != src.port()).unwrap();
    let id = |n: &Server| n.text(&["CLUSTER", "MYID"]).unwrap();
    let (src_id, dst_id) = (id(src), id(dst));
    // Sessions elsewhere: every other session whose key is in another slot.
    let others: Vec<usize> = (1..browsers.len())
        .filter(|i| {
            let k = key_of(&format!("u{i}"));
            cluster.cmd(&["CLUSTER", "KEYSLOT", &k]).int().to_string() != slot
        })
        .collect();
    assert!(!others.is_empty());

    // Half-way: the slot is migrating and u0's key has moved, so its owner answers ASK.
    dst.cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
    src.cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]);
    let dst_port = dst.port().to_string();
    let migrated = src.cmd(&["MIGRATE", "127.0.0.1", &dst_port, &key, "0", "5000"]);
    assert_eq!(migrated.text().as_deref(), Some("OK"), "{migrated:?}");
    for round in 0..3 {
        // tessera follows the ASK: the migrating session is served, with its data, and a
        // write to it lands where the key now lives.
        let r = browsers[0].get("/me").await;
        assert_eq!(r.status, 200, "round {round}, the migrating session: {r:?}");
        assert_eq!(r.json()["i"], 0);
        let w = browsers[0].put("/session", json!({"round": round})).await;
        assert_eq!(
            w.status, 200,
            "round {round}, a write to the migrating session: {w:?}"
        );
        assert_eq!(browsers[0].get("/me").await.json()["round"], round);
        let held = tessera_tests::resp::commands(dst.port(), &[&["ASKING"], &["EXISTS", &key]])
            .unwrap()
            .pop();
        assert!(
            matches!(held, Some(tessera_tests::resp::RedisReply::Int(1))),
            "the session is on the importing node: {held:?}"
        );
        // The near-cache's tracking connection, whose task an ASK ends, is up again well
        // within this.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for &i in &others {
            let r = browsers[i].get("/me").await;
            assert_eq!(
                r.status, 200,
                "round {round}, session {i} of another slot: {r:?}"
            );
            assert_eq!(r.json()["i"], i);
        }
    }

    // Done: the slot is the destination's on every primary; u0 is served again.
    for p in &primaries {
        p.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    }
    let start = Instant::now();
    loop {
        let r = browsers[0].get("/me").await;
        assert!(
            r.status == 200 || r.status == 503,
            "after the migration: {r:?}"
        );
        if r.status == 200 {
            assert_eq!(r.json()["user_id"], "u0");
            assert_eq!(r.json()["i"], 0);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "u0 not served again 10 s after its slot moved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "slot migration: u0 served again {:?} after its slot moved",
        start.elapsed()
    );
    for &i in &others {
        assert_eq!(browsers[i].get("/me").await.status, 200);
    }
    if let Some(other) = other {
        for i in [0, others[0]] {
            let via_other = browsers[i].pointed_at(&other);
            let w = via_other
                .put("/session", json!({"after": "migration"}))
                .await;
            assert_eq!(w.status, 200, "{w:?}");
            let start = Instant::now();
            while browsers[i].get("/me").await.json()["after"] != "migration" {
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "session {i}: a write answered by another instance is not seen"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn rediss_never_falls_back_to_plaintext() {
    let server = Server::start(ServerKind::Redis7);
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let start = Instant::now();
    let strict = tessera_core::RedisOptions::default().strict_start(true);
    let res = Store::redis_with(&url, strict).await;
    assert!(
        res.is_err(),
        "a TLS URL against a plaintext server must not connect"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    // Not strict: a refused handshake is a configuration error at start; a connection that
    // looked unreachable instead starts the store, which never connects in plaintext.
    match Store::redis(&url).await {
        Err(e) => assert!(
            !matches!(e, tessera_core::Error::Unavailable(_)),
            "a refusal, not 'unavailable': {e:?}"
        ),
        Ok(lazy) => {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            assert!(!lazy.is_connected(), "never connected in plaintext");
        }
    }
}

/// A server that answers but refuses the client (a wrong password) is a configuration error
/// at start, not a reason to start and retry forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_fails_at_start_even_when_not_strict() {
    let server = Server::start(ServerKind::Redis7);
    server.cmd(&["CONFIG", "SET", "requirepass", "right-password"]);
    let url = format!("redis://:wrong-password@127.0.0.1:{}", server.port());
    let start = Instant::now();
    let err = Store::redis(&url)
        .await
        .expect_err("a refused password is an error");
    assert!(
        !matches!(err, tessera_core::Error::Unavailable(_)),
        "not 'unavailable': {err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    let ok = format!("redis://:right-password@127.0.0.1:{}", server.port());
    assert!(Store::redis(&ok).await.unwrap().is_connected());
}

/// An app that starts before its Redis does: it starts (not strict), answers 503 with
/// Retry-After, fast, and serves sessions once the server is up, with no connection left
/// behind by the attempts before. With `strict_start` it does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_started_before_redis_answers_503_until_it_is_up() {
    let mut server = Server::start(ServerKind::Redis7);
    server.kill();
    let url = server.url();
    let start = Instant::now();
    let strict = tessera_core::RedisOptions::default().strict_start(true);
    let err = Store::redis_with(&url, strict).await.unwrap_err();
    assert_eq!(err.status_code(), 503, "{err}");
    for adapter in [tessera_tests::Adapter::Axum, tessera_tests::Adapter::Actix] {
        let store = Store::redis(&url).await.expect("starts without its server");
        assert!(!store.is_connected());
        assert!(start.elapsed() < Duration::from_secs(15));
        let fx = Fixture::on_with(
            adapter,
            None,
            store.clone(),
            tessera_tests::fixture::config(|c| c),
        )
        .await;
        let b = fx.browser();
        for _ in 0..3 {
            let r = b.post("/counter", None).await;
            assert_eq!(r.status, 503, "{adapter:?}: {r:?}");
            assert_eq!(r.retry_after.as_deref(), Some("1"));
            assert!(r.elapsed < Duration::from_secs(2), "fast: {:?}", r.elapsed);
        }
        let r = b.post("/login", Some(json!({"user_id": "early"}))).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            b.cookie("__Host-tessera").is_none(),
            "no cookie for a session not stored"
        );
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    let store = Store::redis(&url).await.unwrap();
    let fx = Fixture::on(None, store.clone(), tessera_tests::fixture::config(|c| c)).await;
    server.restart();
    let b = fx.browser();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = b.post("/counter", None).await;
        if r.status == 200 {
            assert_eq!(r.json()["counter"], json!(1));
            break;
        }
        assert_eq!(r.status, 503, "only 503 until it is up: {r:?}");
        assert!(
            Instant::now() < deadline,
            "not served within 10 s of the server starting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.is_connected());
    assert_eq!(b.post("/counter", None).await.json()["counter"], json!(2));
    assert_eq!(
        b.post("/login", Some(json!({"user_id": "late"})))
            .await
            .status,
        200
    );
    assert_eq!(b.get("/me").await.json()["user_id"], json!("late"));
    // The failed attempts left nothing connected: this store's pool, plus the two stores
    // above (still retrying until dropped with their apps) at most.
    let clients: usize = server
        .text(&["INFO", "clients"])
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(clients <= 4, "connections: {clients}");
}

#[tokio::test]
async fn durability_check_flags_risky_settings() {
    // The recommended config: nothing to say.
    let good = Server::start(ServerKind::Redis7);
    let report = Store::redis(&good.url())
        .await
        .unwrap()
        .check_server()
        .await
        .unwrap();
    assert_eq!(report.warnings, vec![], "{report:?}");
    assert!(report.servers[0].starts_with("redis 7.0"), "{report:?}");

    for kind in [ServerKind::Redis8, ServerKind::Valkey] {
        let risky = Server::start_with(
            kind,
            &["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"],
        );
        let report = Store::redis(&risky.url())
            .await
            .unwrap()
            .check_server()
            .await
            .unwrap();
        assert!(
            report
                .warnings
                .iter()
                .any(|w| matches!(w, ServerWarning::NoDurability { .. })),
            "{report:?}"
        );
        assert!(
            report.warnings.iter().any(|w| matches!(w, ServerWarning::EvictsSessions { policy, .. } if policy == "allkeys-lru")),
            "{report:?}"
        );
        assert_eq!(report.warnings.len(), 2, "{report:?}");
        let name = if kind == ServerKind::Valkey {
            "valkey 8.1"
        } else {
            "redis 8.2"
        };
        assert!(report.servers[0].starts_with(name), "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_check_covers_sentinel_and_every_cluster_primary() {
    let sentinel = tokio::task::spawn_blocking(Topology::sentinel)
        .await
        .unwrap();
    let report = Store::redis(&sentinel.url())
        .await
        .unwrap()
        .check_server()
        .await
        .unwrap();
    assert_eq!(report.warnings, vec![], "{report:?}");
    let cluster = tokio::task::spawn_blocking(Topology::cluster)
        .await
        .unwrap();
    let report = Store::redis(&cluster.url())
        .await
        .unwrap()
        .check_server()
        .await
        .unwrap();
    assert_eq!(report.servers.len(), 3, "every primary checked: {report:?}");
    assert_eq!(report.warnings, vec![], "{report:?}");
}

/// Issue #26, the soak's first finding: Redis replicates asynchronously, so a write the primary
/// answered could be lost when its replica took over (a paused primary that wakes up keeps
/// taking writes until it learns of the promotion). With `replica_acks(1)` a write is
/// answered 200 only once the replica has it; a replica that does not confirm in time makes
/// the write a 503 without `Retry-After` (it may be on the primary), and reads, on their own
/// connections, are not held up by the wait. On Sentinel and on a Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acks_a_write_is_answered_only_once_its_replica_has_it() {
    use tessera_core::RedisOptions;
    use tessera_tests::resp::command;
    for backend in [Backend::Sentinel, Backend::Cluster] {
        let topology = tokio::task::spawn_blocking(move || backend.topology())
            .await
            .unwrap()
            .unwrap();
        let store = Store::redis_with(&topology.url(), RedisOptions::default().replica_acks(1))
            .await
            .unwrap();
        let fx = Fixture::on(Some(topology), store, tessera_tests::fixture::config(|c| c)).await;
        let b = fx.browser();
        let r = b.post("/login", Some(json!({"user_id": "u0"}))).await;
        assert_eq!(r.status, 200, "{r:?}");
        let key = fx
            .server()
            .session_keys()
            .into_iter()
            .find(|k| fx.server().text(&["HGET", k, "__u"]).as_deref() == Some("u0"))
            .expect("u0's session key");
        let primary = fx
            .server()
            .primaries()
            .iter()
            .map(|p| p.port())
            .find(|p| {
                matches!(
                    command(*p, &["EXISTS", &key]),
                    Ok(tessera_tests::resp::RedisReply::Int(1))
                )
            })
            .expect("the primary holding the session");
        let replica = fx
            .server()
            .nodes()
            .into_iter()
            .find(|n| {
                let info = command(n.port(), &["INFO", "replication"])
                    .ok()
                    .and_then(|r| r.text())
                    .unwrap_or_default();
                info.contains("role:slave") && info.contains(&format!("master_port:{primary}\r"))
            })
            .expect("the primary's replica");
        // Every write answered 200 is on the replica at once.
        for n in 0..20 {
            let w = b.put("/session", json!({"n": n})).await;
            assert_eq!(w.status, 200, "{backend:?}: {w:?}");
            let on_primary = command(primary, &["HGET", &key, "n"]).unwrap().text();
            let on_replica = tessera_tests::resp::commands(
                replica.port(),
                &[&["READONLY"], &["HGET", &key, "n"]],
            )
            .unwrap()
            .pop()
            .and_then(|r| r.text());
            assert!(on_primary.is_some());
            assert_eq!(
                on_replica, on_primary,
                "{backend:?}: write {n} answered before its replica had it"
            );
        }
        // A replica that does not answer: the write is not acknowledged, reads go on.
        replica.pause();
        let w = b.put("/session", json!({"n": "unconfirmed"})).await;
        let r = b.get("/me").await;
        replica.resume();
        assert_eq!(w.status, 503, "{backend:?}: {w:?}");
        assert_eq!(
            w.retry_after, None,
            "{backend:?}: the write may be on the primary: {w:?}"
        );
        assert!(w.elapsed < Duration::from_millis(2500), "{w:?}");
        assert_eq!(
            r.status, 200,
            "{backend:?}: a read waits for no replica: {r:?}"
        );
        assert!(r.elapsed < Duration::from_millis(250), "{backend:?}: {r:?}");
        let w = b.put("/session", json!({"n": "after"})).await;
        assert_eq!(w.status, 200, "{backend:?}: {w:?}");
        assert_eq!(b.get("/me").await.json()["n"], "after");
    }
}

/// A read past the touch interval slides its session's TTL (in the load) and then moves the
/// session's bound in its user's index, a write sent while the handler runs; on a Cluster that
/// index is often on another primary than the session. The soak (README, *The soak*) found
/// `GET /me` answered `503` without `Retry-After` while that primary was stopped: the index
/// refresh's unconfirmed outcome failed the read, where the README promises that reads never
/// answer so. A read whose session was loaded is served. Here that primary refuses writes for
/// a while (`CLIENT PAUSE WRITE`: the load, on another primary, is answered at once), through
/// both adapters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_index_refresh_is_not_confirmed_is_served() {
    use tessera_tests::resp::RedisReply;
    let fx = Fixture::with(Backend::Cluster, |c| {
        c.touch_interval(Duration::from_millis(200))
    })
    .await;
    let cluster = fx.server();
    let owner = |key: &str| -> u16 {
        let owners: Vec<u16> = cluster
            .primaries()
            .iter()
            .filter(|p| p.cmd(&["EXISTS", key]) == RedisReply::Int(1))
            .map(|p| p.port())
            .collect();
        assert_eq!(owners.len(), 1, "{key} on one primary: {owners:?}");
        owners[0]
    };
    let actix =
        tessera_tests::fixture::serve(tessera_tests::Adapter::Actix, fx.manager.clone()).await;
    for (adapter, app) in [("axum", &fx.app), ("actix", &actix)] {
        // A user whose index is on another primary than their session.
        let mut found = None;
        for i in 0..32 {
            let user = format!("{adapter}-{i}");
            let b = app.browser();
            let r = b.post("/login", Some(json!({ "user_id": user }))).await;
            assert_eq!(r.status, 200, "{r:?}");
            let session = cluster
                .session_keys()
                .into_iter()
                .find(|k| cluster.text(&["HGET", k, "__u"]).as_deref() == Some(user.as_str()))
                .expect("the login's session");
            let index = owner(&format!("user:{user}:sessions"));
            if owner(&session) != index {
                found = Some((b, user, index));
                break;
            }
        }
        let (b, user, index) = found.expect("a user whose index is on another primary");
        let index_node = cluster
            .primaries()
            .into_iter()
            .find(|p| p.port() == index)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // the touch is due
        assert_eq!(
            index_node
                .cmd(&["CLIENT", "PAUSE", "5000", "WRITE"])
                .text()
                .as_deref(),
            Some("OK")
        );
        let r = b.get("/me").await;
        index_node.cmd(&["CLIENT", "UNPAUSE"]);
        assert!(
            r.status != 503 || r.retry_after.is_some(),
            "[{adapter}] a read answered 503 without Retry-After: {r:?}"
        );
        assert_eq!(r.status, 200, "[{adapter}] its session was loaded: {r:?}");
        assert_eq!(r.json()["user_id"], user.as_str());
        // The index key's primary takes writes again: the next refresh moves the bound.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(b.get("/me").await.status, 200);
    }
}

/// Found by the soak: a logout-all while one of the user's sessions sits on a primary that
/// just died deleted the others and answered `503` + `Retry-After`, "nothing was changed". It
/// now answers `503` without `Retry-After` (the outcome is unknown to the client), and once
/// the failover is over a retry ends the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_all_that_ended_some_sessions_is_not_answered_nothing_changed() {
    use tessera_tests::resp::{command, RedisReply};
    let mut fx = Fixture::new(Backend::Cluster).await;
    let holds =
        |port: u16, key: &str| matches!(command(port, &["EXISTS", key]), Ok(RedisReply::Int(1)));
    let ports: Vec<u16> = fx.server().primaries().iter().map(|p| p.port()).collect();
    let index = "user:u0:sessions";
    let index_at = *ports.iter().find(|p| holds(**p, index)).unwrap_or(&0);
    // Log u0 in until the sessions sit on at least two primaries other than the index's.
    let mut browsers = Vec::new();
    let victim = loop {
        let b = fx.browser();
        assert_eq!(
            b.post("/login", Some(json!({"user_id": "u0"})))
                .await
                .status,
            200
        );
        browsers.push(b);
        let index_at = if index_at == 0 {
            *ports.iter().find(|p| holds(**p, index)).expect("the index")
        } else {
            index_at
        };
        let keys = fx.server().session_keys();
        let used: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| *p != index_at && keys.iter().any(|k| holds(*p, k)))
            .collect();
        if used.len() >= 2 {
            break used[0];
        }
        assert!(
            browsers.len() < 40,
            "sessions never spread over the primaries"
        );
    };
    // Its `DEL` is refused before it is sent, while the others' land.
    down_for_good(&mut fx, victim).await;
    let (r, _) = first_run(&browsers, "/logout-all").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.retry_after, None,
        "some sessions were ended: not 'nothing was changed': {r:?}"
    );
}

/// Kills the primary at `port` with no failover after it (no replica may take over), and
/// waits until the app's pool for it has seen it go: its commands are refused before they
/// are sent.
async fn down_for_good(fx: &mut Fixture, port: u16) {
    for n in fx.server().nodes() {
        n.cmd(&["CONFIG", "SET", "cluster-replica-no-failover", "yes"]);
    }
    for n in fx.server_mut().nodes_mut() {
        if n.port() == port {
            n.kill();
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// `POST route` from each browser in turn until one is not refused before anything was done
/// (`503` + `Retry-After`: its own session is on a dead primary): that answer, and its browser.
async fn first_run<'b>(
    browsers: &'b [Browser],
    route: &str,
) -> (tessera_tests::http::Answer, &'b Browser) {
    let mut refused = 0;
    for b in browsers {
        let r = b.post(route, None).await;
        if r.status == 503 && r.retry_after.is_some() {
            refused += 1;
            continue;
        }
        return (r, b);
    }
    panic!("every {route} was refused before it ran ({refused})");
}

/// A scale-out: a new, empty primary joins and a slot is migrated to it. It owns no slot until
/// the migration ends, so no slot table names it; a session already moved to it is followed
/// there by its `ASK` all the same, read and written, and served after the slot has moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrating_to_a_new_primary_is_served_throughout() {
    use tessera_tests::resp::{command, commands, RedisReply};
    let fx = Fixture::new(Backend::Cluster).await;
    let browsers = logged_in_browsers(&fx, 1).await;
    let cluster = fx.server();
    let key = cluster.session_keys().pop().expect("u0's session key");
    let slot = cluster.cmd(&["CLUSTER", "KEYSLOT", &key]).int().to_string();
    let src = cluster
        .primaries()
        .into_iter()
        .find(|p| matches!(p.cmd(&["EXISTS", &key]), RedisReply::Int(1)))
        .expect("the primary holding u0's session");
    let conf = tessera_tests::server::cluster_conf();
    let new = Server::start_with(
        ServerKind::Redis7,
        &[
            "--include",
            conf.to_str().unwrap(),
            "--cluster-node-timeout",
            "1000",
        ],
    );
    let port = new.port().to_string();
    src.cmd(&["CLUSTER", "MEET", "127.0.0.1", &port]);
    let (new_id, src_id) = (
        new.text(&["CLUSTER", "MYID"]).unwrap(),
        src.text(&["CLUSTER", "MYID"]).unwrap(),
    );
    let start = Instant::now();
    // Every node knows the new one, and it knows every slot's owner.
    let joined = || {
        let known = cluster.nodes().iter().all(|n| {
            n.text(&["CLUSTER", "NODES"])
                .is_some_and(|t| t.contains(&new_id))
        });
        let slots = new.text(&["CLUSTER", "NODES"]).unwrap_or_default();
        known
            && slots.lines().filter(|l| l.contains("master")).count() >= 4
            && new
                .text(&["CLUSTER", "INFO"])
                .is_some_and(|t| t.contains("cluster_state:ok"))
    };
    while !joined() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the new node never joined"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    new.cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
    src.cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &new_id]);
    let migrated = src.cmd(&["MIGRATE", "127.0.0.1", &port, &key, "0", "5000"]);
    assert_eq!(migrated.text().as_deref(), Some("OK"), "{migrated:?}");

    let r = browsers[0].get("/me").await;
    assert_eq!(
        r.status, 200,
        "the session on the new node, mid-migration: {r:?}"
    );
    assert_eq!(r.json()["i"], 0);
    let w = browsers[0].put("/session", json!({"on": "new"})).await;
    assert_eq!(w.status, 200, "a write to it: {w:?}");
    let held = commands(new.port(), &[&["ASKING"], &["HEXISTS", &key, "on"]])
        .unwrap()
        .pop();
    assert!(
        matches!(held, Some(RedisReply::Int(1))),
        "written on the new node: {held:?}"
    );

    for p in cluster
        .primaries()
        .iter()
        .map(|p| p.port())
        .chain([new.port()])
    {
        command(p, &["CLUSTER", "SETSLOT", &slot, "NODE", &new_id]).unwrap();
    }
    let start = Instant::now();
    loop {
        let r = browsers[0].get("/me").await;
        if r.status == 200 {
            assert_eq!(r.json()["on"], "new");
            break;
        }
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not served after the slot moved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Found by the soak: a logout whose session was deleted, while its user's index sat on a
/// primary that just died, answered `503` + `Retry-After`, "nothing was changed", and the
/// session was gone. It now answers `503` without `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_that_deleted_its_session_is_not_answered_nothing_changed() {
    use tessera_tests::resp::{command, RedisReply};
    let mut fx = Fixture::new(Backend::Cluster).await;
    let holds =
        |port: u16, key: &str| matches!(command(port, &["EXISTS", key]), Ok(RedisReply::Int(1)));
    let ports: Vec<u16> = fx.server().primaries().iter().map(|p| p.port()).collect();
    let mut browsers = Vec::new();
    let index_at = loop {
        let b = fx.browser();
        assert_eq!(
            b.post("/login", Some(json!({"user_id": "u0"})))
                .await
                .status,
            200
        );
        browsers.push(b);
        let index_at = *ports
            .iter()
            .find(|p| holds(**p, "user:u0:sessions"))
            .expect("the index");
        let keys = fx.server().session_keys();
        if keys.iter().any(|k| !holds(index_at, k)) {
            break index_at;
        }
        assert!(browsers.len() < 20, "every session on the index's primary");
    };
    down_for_good(&mut fx, index_at).await;
    let (r, b) = first_run(&browsers, "/logout").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.retry_after, None, "its session was deleted: {r:?}");
    assert_eq!(b.get("/me").await.status, 401, "the session is gone");
}
