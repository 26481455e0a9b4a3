//! Defect 4: with the app's wall clock 2 h behind the server's, or stepping back 1 h (VM
//! resume, NTP step), read-only traffic never slid the TTL and active users were logged out
//! at the idle timeout. The demo runs as its own process under an `LD_PRELOAD` shim that
//! shifts its `CLOCK_REALTIME`; Redis keeps the true time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tessera_tests::{Browser, Server, ServerKind};

/// Builds the shim with the system C compiler.
fn shim(dir: &Path) -> PathBuf {
    let src = tessera_tests::server::workspace_root().join("tests/support/shim/clock_offset.c");
    let out = dir.join("clock_offset.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-ldl")
        .status()
        .unwrap_or_else(|e| panic!("cannot run cc ({e}): install a C compiler (apt-get install gcc), as scripts/test.sh does"));
    assert!(status.success(), "cc failed to build the clock shim");
    out
}

struct Demo {
    child: Child,
    port: u16,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn demo(adapter: &str, redis: &Server, shim: &Path, offset_file: &Path) -> Demo {
    let port = tessera_tests::server::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera-demo-server"))
        .arg(adapter)
        .env("LD_PRELOAD", shim)
        .env("TESSERA_CLOCK_OFFSET_FILE", offset_file)
        .env("PORT", port.to_string())
        .env("REDIS_URL", redis.url())
        .env("TESSERA_SECRET", "ab".repeat(32))
        .env("COOKIE_SECURE", "0")
        .env("SESSION_IDLE_SECS", "2")
        .env("SESSION_TOUCH_SECS", "1")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start the demo server");
    let d = Demo { child, port };
    let client = reqwest::Client::new();
    let start = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{port}/me"))
        .send()
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "demo did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d
}

/// Read-only requests every 700 ms for 5 s (idle timeout 2 s): each must find the session.
async fn reads_keep_the_session(br: &Browser, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = br.get("/me").await;
        assert_eq!(r.status, 200, "{what}: logged out at {:?}", start.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_slides_whatever_the_app_clock_says() {
    let redis = Server::start(ServerKind::Redis7);
    let dir = tempfile::tempdir().unwrap();
    let so = shim(dir.path());
    let offset = dir.path().join("offset");
    for adapter in ["axum", "actix"] {
        // The app 2 h behind the server.
        std::fs::write(&offset, "-7200").unwrap();
        let d = demo(adapter, &redis, &so, &offset).await;
        let br = Browser::new(([127, 0, 0, 1], d.port).into());
        let r = br
            .post("/login", Some(serde_json::json!({"user_id": "late"})))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        reads_keep_the_session(&br, &format!("{adapter}, app 2 h behind")).await;

        // The app's clock steps back 1 h while it runs.
        std::fs::write(&offset, "0").unwrap();
        let br = Browser::new(([127, 0, 0, 1], d.port).into());
        br.post("/login", Some(serde_json::json!({"user_id": "step"})))
            .await;
        assert_eq!(br.get("/me").await.status, 200);
        std::fs::write(&offset, "-3600").unwrap();
        reads_keep_the_session(&br, &format!("{adapter}, clock stepped back 1 h")).await;

        // And it still expires when idle.
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert_eq!(
            br.get("/me").await.status,
            401,
            "{adapter}: idle past the timeout"
        );
    }
}
