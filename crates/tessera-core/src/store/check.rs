//! The durability check: what an operator should know about the server holding sessions.

use super::contract::SettingsCheck;
use super::redis::RedisBackend;
use crate::error::{Error, Result};
use fred::prelude::*;
use std::fmt;
use std::time::Duration;

/// Minimum server version: scripts use `ZADD GT` (Redis 6.2, any Valkey).
pub(crate) const MIN_VERSION: (u32, u32) = (6, 2);

/// What [`Store::check_server`](crate::Store::check_server) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// Each checked node (every primary in a cluster), as `name version at address`.
    pub servers: Vec<String>,
    /// Settings that put sessions at risk; empty when all is well.
    pub warnings: Vec<ServerWarning>,
}

/// A setting that puts sessions at risk.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerWarning {
    /// AOF is off and no replica exists: a restart or crash loses every session since the
    /// last snapshot, if any.
    NoDurability {
        /// The node.
        server: String,
    },
    /// An `allkeys-*` eviction policy: under memory pressure live sessions are evicted.
    EvictsSessions {
        /// The node.
        server: String,
        /// The policy in force.
        policy: String,
    },
    /// The server is older than what tessera needs.
    TooOld {
        /// The node.
        server: String,
        /// Its version.
        version: String,
    },
    /// A setting could not be read (for example a managed service hiding a section).
    Unknown {
        /// The node.
        server: String,
        /// What could not be read.
        what: &'static str,
    },
}

impl fmt::Display for ServerWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerWarning::NoDurability { server } => write!(
                f,
                "{server}: appendonly is off and there is no replica: a restart loses sessions (set appendonly yes, appendfsync everysec)"
            ),
            ServerWarning::EvictsSessions { server, policy } => write!(
                f,
                "{server}: maxmemory-policy {policy} evicts live sessions under memory pressure (use volatile-lru or noeviction)"
            ),
            ServerWarning::TooOld { server, version } => write!(
                f,
                "{server}: version {version} is older than {}.{}, which tessera needs (ZADD GT)",
                MIN_VERSION.0, MIN_VERSION.1
            ),
            ServerWarning::Unknown { server, what } => {
                write!(f, "{server}: could not read {what}; durability not checked")
            }
        }
    }
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn version_tuple(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Checks one node from its `INFO` text (sections server, persistence, replication, memory).
pub(crate) fn check_node(addr: &str, info: &str) -> (String, Vec<ServerWarning>) {
    let (name, version) = match field(info, "valkey_version") {
        Some(v) => ("valkey", v),
        None => ("redis", field(info, "redis_version").unwrap_or("?")),
    };
    // Valkey reports a Redis-compatible redis_version too; its own version decides support.
    let server = format!("{name} {version} at {addr}");
    let mut warnings = Vec::new();
    if name == "redis" && version_tuple(version).is_some_and(|v| v < MIN_VERSION) {
        warnings.push(ServerWarning::TooOld {
            server: server.clone(),
            version: version.to_string(),
        });
    }
    match (field(info, "aof_enabled"), field(info, "connected_slaves")) {
        (Some(aof), Some(replicas)) => {
            if aof == "0" && replicas == "0" {
                warnings.push(ServerWarning::NoDurability {
                    server: server.clone(),
                });
            }
        }
        _ => warnings.push(ServerWarning::Unknown {
            server: server.clone(),
            what: "persistence and replication (INFO persistence/replication)",
        }),
    }
    match field(info, "maxmemory_policy") {
        Some(p) if p.starts_with("allkeys-") => warnings.push(ServerWarning::EvictsSessions {
            server: server.clone(),
            policy: p.to_string(),
        }),
        Some(_) => {}
        None => warnings.push(ServerWarning::Unknown {
            server: server.clone(),
            what: "maxmemory-policy (INFO memory)",
        }),
    }
    (server, warnings)
}

impl SettingsCheck for RedisBackend {
    /// Several `INFO`s (on every primary of a cluster): a startup check with its own bound.
    async fn check_settings(&self) -> Result<ServerReport> {
        tokio::time::timeout(Duration::from_secs(10), check_redis(self))
            .await
            .map_err(|_| {
                Error::Unavailable(crate::error::StoreError::timeout(
                    "the server check did not finish within 10 s",
                ))
            })?
    }
}

/// Collects `INFO` from the server (every primary of a cluster) and checks each node.
async fn check_redis(backend: &RedisBackend) -> Result<ServerReport> {
    let client = backend.pool().next();
    let mut servers = Vec::new();
    let mut warnings = Vec::new();
    if client.is_clustered() {
        for node in client.split_cluster().map_err(Error::from_fred)? {
            let addr = node
                .client_config()
                .server
                .hosts()
                .first()
                .map(|s| format!("{}:{}", s.host, s.port))
                .unwrap_or_default();
            node.init().await.map_err(Error::from_fred)?;
            let info = info_all(&node).await;
            let _ = node.quit().await;
            let (s, w) = check_node(&addr, &info?);
            servers.push(s);
            warnings.extend(w);
        }
    } else {
        let (s, w) = check_node(backend.url_redacted(), &info_all(client).await?);
        servers.push(s);
        warnings.extend(w);
    }
    Ok(ServerReport { servers, warnings })
}

async fn info_all(client: &Client) -> Result<String> {
    let mut all = String::new();
    for section in ["server", "persistence", "replication", "memory"] {
        // A managed service may refuse a section: report it as unknown, do not fail.
        if let Ok(text) = client.info::<String>(Some(info_kind(section))).await {
            all.push_str(&text);
            all.push_str("\r\n");
        }
    }
    if all.is_empty() {
        return Err(Error::Store(crate::error::StoreError::new(
            "INFO answered nothing",
        )));
    }
    Ok(all)
}

fn info_kind(section: &str) -> fred::types::InfoKind {
    use fred::types::InfoKind as K;
    match section {
        "server" => K::Server,
        "persistence" => K::Persistence,
        "replication" => K::Replication,
        _ => K::Memory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# Server\r\nredis_version:7.0.15\r\n# Persistence\r\naof_enabled:1\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n# Memory\r\nmaxmemory_policy:volatile-lru\r\n";

    #[test]
    fn good_config_has_no_warnings() {
        let (server, w) = check_node("127.0.0.1:6379", GOOD);
        assert_eq!(server, "redis 7.0.15 at 127.0.0.1:6379");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn old_servers_and_valkey_versions() {
        let old = GOOD.replace("7.0.15", "6.0.9");
        let (_, w) = check_node("x", &old);
        assert!(
            matches!(&w[..], [ServerWarning::TooOld { version, .. }] if version == "6.0.9"),
            "{w:?}"
        );
        let valkey = GOOD.replace(
            "redis_version:7.0.15",
            "redis_version:7.2.4\r\nvalkey_version:8.1.8",
        );
        let (server, w) = check_node("x", &valkey);
        assert!(server.starts_with("valkey 8.1.8"), "{server}");
        assert!(w.is_empty());
    }

    #[test]
    fn hidden_sections_are_reported_not_guessed() {
        let (_, w) = check_node("x", "redis_version:7.2.0\r\n");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().all(|w| matches!(w, ServerWarning::Unknown { .. })));
    }
}
