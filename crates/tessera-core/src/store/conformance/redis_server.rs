//! The conformance suite's own redis-server: a real server on a free loopback port, without
//! persistence, killed on drop; its binary from `$REDIS_SERVER_BIN` or `.servers/env.sh`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "bash scripts/install-servers.sh (then `. .servers/env.sh`)";

/// A redis-server on a free loopback port, without persistence, killed on drop.
pub(in crate::store) struct RedisServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisServer {
    pub(in crate::store) fn start() -> RedisServer {
        let bin = redis_binary();
        let dir = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; run {INSTALL}", bin.display()));
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub(in crate::store) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$REDIS_SERVER_BIN`, else the one `.servers/env.sh` names; a failure naming the installer
/// when neither has one.
fn redis_binary() -> PathBuf {
    let var = "REDIS_SERVER_BIN";
    let from_env = std::env::var(var).ok().filter(|s| !s.is_empty());
    let path = from_env.or_else(|| env_file_value(var)).unwrap_or_else(|| {
        panic!("{var} is not set and .servers/env.sh does not name it: run {INSTALL}")
    });
    let p = PathBuf::from(&path);
    assert!(p.is_file(), "{var}={path} does not exist: run {INSTALL}");
    p
}

fn env_file_value(var: &str) -> Option<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join(".servers/env.sh")).ok()?;
    text.lines().find_map(|l| {
        let v = l
            .strip_prefix("export ")?
            .strip_prefix(var)?
            .strip_prefix('=')?;
        Some(v.trim_matches('"').to_string())
    })
}

/// A directory of its own under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "tessera-conformance-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
