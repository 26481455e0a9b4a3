//! Deployments of real servers: standalone, primary + replica + three Sentinels, and a
//! Cluster of three primaries each with a replica. Inspection helpers work on all of them.

use crate::resp::{command, RedisReply};
use crate::server::{cluster_conf, redis_cli, Server, ServerKind};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

pub enum Topology {
    Standalone(Server),
    Sentinel {
        /// The data nodes; which one is the primary changes on failover.
        nodes: Vec<Server>,
        sentinels: Vec<Server>,
    },
    Cluster {
        nodes: Vec<Server>,
    },
}

/// Sentinel `down-after-milliseconds` and cluster `cluster-node-timeout` in tests.
pub const FAILOVER_DETECT_MS: u64 = 1000;

fn wait_until(
    what: &str,
    deadline: Duration,
    mut ok: impl FnMut() -> bool,
    logs: impl Fn() -> String,
) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} not reached within {deadline:?}\n{}", logs());
}

fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let text = command(port, &["INFO", section]).ok()?.text()?;
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}

impl Topology {
    pub fn standalone(kind: ServerKind) -> Topology {
        Topology::Standalone(Server::start(kind))
    }

    /// Primary, one replica, three Sentinels (quorum 2); ready when the replica is in sync and
    /// the Sentinels know the replica and each other.
    pub fn sentinel() -> Topology {
        let primary = Server::start_with(ServerKind::Redis7, &["--repl-diskless-sync-delay", "0"]);
        let pp = primary.port().to_string();
        let replica = Server::start_with(
            ServerKind::Redis7,
            &[
                "--replicaof",
                "127.0.0.1",
                &pp,
                "--repl-diskless-sync-delay",
                "0",
            ],
        );
        let sentinels: Vec<Server> = (0..3)
            .map(|_| Server::start_sentinel(primary.port(), FAILOVER_DETECT_MS))
            .collect();
        let t = Topology::Sentinel {
            nodes: vec![primary, replica],
            sentinels,
        };
        let Topology::Sentinel { nodes, sentinels } = &t else {
            unreachable!()
        };
        wait_until(
            "replica in sync, sentinels aware of the replica and of each other",
            Duration::from_secs(30),
            || {
                info_field(nodes[1].port(), "replication", "master_link_status").as_deref()
                    == Some("up")
                    && sentinels.iter().all(|s| {
                        let reps = command(s.port(), &["SENTINEL", "REPLICAS", "mymaster"]);
                        let sens = command(s.port(), &["SENTINEL", "SENTINELS", "mymaster"]);
                        matches!(reps, Ok(RedisReply::Array(Some(ref v))) if v.len() == 1)
                            && matches!(sens, Ok(RedisReply::Array(Some(ref v))) if v.len() == 2)
                    })
            },
            || {
                sentinels
                    .iter()
                    .map(|s| s.log_tail())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            },
        );
        t
    }

    /// Three primaries with one replica each, created with `redis-cli --cluster create`.
    pub fn cluster() -> Topology {
        let inc = cluster_conf();
        let inc = inc.to_str().unwrap();
        let timeout = FAILOVER_DETECT_MS.to_string();
        let nodes: Vec<Server> = (0..6)
            .map(|_| {
                Server::start_with(
                    ServerKind::Redis7,
                    &[
                        "--include",
                        inc,
                        "--cluster-node-timeout",
                        &timeout,
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new(redis_cli())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): run {}", crate::server::SETUP));
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let t = Topology::Cluster { nodes };
        let Topology::Cluster { nodes } = &t else {
            unreachable!()
        };
        wait_until(
            "cluster_state:ok on every node with three replicas in sync",
            Duration::from_secs(30),
            || {
                nodes.iter().all(|n| {
                    command(n.port(), &["CLUSTER", "INFO"])
                        .ok()
                        .and_then(|r| r.text())
                        .is_some_and(|t| t.contains("cluster_state:ok"))
                }) && nodes
                    .iter()
                    .filter(|n| {
                        info_field(n.port(), "replication", "role").as_deref() == Some("slave")
                    })
                    .filter(|n| {
                        info_field(n.port(), "replication", "master_link_status").as_deref()
                            == Some("up")
                    })
                    .count()
                    == 3
            },
            || {
                nodes
                    .iter()
                    .map(|n| n.log_tail())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            },
        );
        t
    }

    pub fn name(&self) -> &'static str {
        match self {
            Topology::Standalone(_) => "standalone",
            Topology::Sentinel { .. } => "sentinel",
            Topology::Cluster { .. } => "cluster",
        }
    }

    /// The URL the app connects with.
    pub fn url(&self) -> String {
        match self {
            Topology::Standalone(s) => s.url(),
            Topology::Sentinel { sentinels, .. } => {
                let others: Vec<String> = sentinels[1..]
                    .iter()
                    .map(|s| format!("node=127.0.0.1:{}", s.port()))
                    .collect();
                format!(
                    "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster&{}",
                    sentinels[0].port(),
                    others.join("&")
                )
            }
            Topology::Cluster { nodes } => {
                let others: Vec<String> = nodes[1..]
                    .iter()
                    .map(|n| format!("node=127.0.0.1:{}", n.port()))
                    .collect();
                format!(
                    "redis-cluster://127.0.0.1:{}?{}",
                    nodes[0].port(),
                    others.join("&")
                )
            }
        }
    }

    /// The data nodes that are running.
    pub fn nodes(&self) -> Vec<&Server> {
        match self {
            Topology::Standalone(s) => vec![s],
            Topology::Sentinel { nodes, .. } | Topology::Cluster { nodes } => {
                nodes.iter().filter(|n| n.is_running()).collect()
            }
        }
    }

    pub fn nodes_mut(&mut self) -> Vec<&mut Server> {
        match self {
            Topology::Standalone(s) => vec![s],
            Topology::Sentinel { nodes, .. } | Topology::Cluster { nodes } => {
                nodes.iter_mut().collect()
            }
        }
    }

    pub fn sentinels(&self) -> &[Server] {
        match self {
            Topology::Sentinel { sentinels, .. } => sentinels,
            _ => &[],
        }
    }

    /// The running primaries.
    pub fn primaries(&self) -> Vec<&Server> {
        match self {
            Topology::Standalone(s) => vec![s],
            _ => self
                .nodes()
                .into_iter()
                .filter(|n| {
                    info_field(n.port(), "replication", "role").as_deref() == Some("master")
                })
                .collect(),
        }
    }

    fn node_by_port(&self, port: u16) -> &Server {
        self.nodes()
            .into_iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no running node on port {port}"))
    }

    /// One command, sent to a primary (following MOVED in a cluster).
    pub fn cmd(&self, args: &[&str]) -> RedisReply {
        let first = self
            .primaries()
            .first()
            .copied()
            .expect("a running primary");
        let mut reply = first.cmd(args);
        for _ in 0..3 {
            match &reply {
                RedisReply::Error(e) if e.starts_with("MOVED") => {
                    let port: u16 = e.rsplit(':').next().unwrap().parse().unwrap();
                    reply = self.node_by_port(port).cmd(args);
                }
                _ => break,
            }
        }
        reply
    }

    pub fn text(&self, args: &[&str]) -> Option<String> {
        self.cmd(args).text()
    }

    /// Keys matching a pattern on every primary (test-only SCAN).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all: Vec<String> = self
            .primaries()
            .iter()
            .flat_map(|p| p.keys(pattern))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The live session keys (`session:*` hashes with `__c`), leaving out the tombstones a
    /// login's id rotation leaves for a moment at the old key.
    pub fn session_keys(&self) -> Vec<String> {
        self.keys("session:*")
            .into_iter()
            .filter(|k| self.cmd(&["HEXISTS", k, "__c"]).int() == 1)
            .collect()
    }

    pub fn reset_stats(&self) {
        for n in self.nodes() {
            n.reset_stats();
        }
    }

    /// Calls per command on the primaries since the last reset (replicas re-run writes; those
    /// are not requests).
    pub fn command_stats(&self) -> BTreeMap<String, u64> {
        let mut sum = BTreeMap::new();
        for p in self.primaries() {
            for (k, v) in p.command_stats() {
                *sum.entry(k).or_insert(0) += v;
            }
        }
        sum
    }

    /// SIGSTOP every data node.
    pub fn pause(&self) {
        for n in self.nodes() {
            n.pause();
        }
    }

    /// SIGCONT every data node.
    pub fn resume(&self) {
        for n in self.nodes() {
            n.resume();
        }
    }

    /// The standalone server (for tests that kill, pause or restart it).
    pub fn standalone_mut(&mut self) -> &mut Server {
        match self {
            Topology::Standalone(s) => s,
            _ => panic!("this test needs a standalone server"),
        }
    }
}
