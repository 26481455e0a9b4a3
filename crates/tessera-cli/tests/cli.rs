//! The `tessera` binary end to end, on Redis 7 and Cluster: sessions made by the axum demo
//! over HTTP, then the tool run as an operator runs it (its own process, `--url`), its output
//! (tables and `--json`) and exit codes checked, and what it changed checked over HTTP.

use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tessera_tests::fixture::{indexed, protected};
use tessera_tests::{Browser, Fixture, Setup};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

tessera_tests::per_backend!(
    [redis7, cluster] => self::{
        doctor_names_every_server_and_what_to_change,
        sessions_inspect_and_count,
        end_asks_then_ends,
        events_page_and_follow,
        exit_codes_scripts_can_use,
    }
);

/// What one run printed and exited with.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// `events --json`: one object per line.
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// Runs `tessera args...` against `url`, with `stdin` as its input (closed when `None`).
async fn tessera(url: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args)
        .env("REDIS_URL", url)
        .env_remove("TESSERA_NAMESPACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the tessera binary runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("tessera finishes")
        .unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn events_on(c: tessera_core::SessionConfigBuilder) -> tessera_core::SessionConfigBuilder {
    indexed(protected(c))
        .lifecycle_events(true)
        .expiry_sweep_interval(Duration::from_millis(500))
}

async fn fixture(setup: Setup) -> (Fixture, String) {
    let fx = Fixture::with(setup, events_on).await;
    let url = fx.server().url();
    (fx, url)
}

async fn login(b: &Browser, body: Value) {
    let r = b.post("/login", Some(body)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn logged_in(b: &Browser) -> bool {
    b.get("/me").await.status == 200
}

async fn doctor_names_every_server_and_what_to_change(setup: Setup) {
    let (fx, url) = fixture(setup).await;
    let primaries = fx.server().primaries();
    let run = tessera(&url, &["doctor", "--json"], None).await;
    let report = run.json();
    let servers = report["servers"].as_array().unwrap();
    assert_eq!(servers.len(), primaries.len(), "{run:?}");
    assert!(servers
        .iter()
        .all(|s| s.as_str().unwrap().starts_with("redis 7.")));
    let clean = report["warnings"].as_array().unwrap().is_empty();
    assert_eq!(run.code, if clean { 0 } else { 1 }, "{run:?}");

    // A policy that evicts live sessions: named, with what to set instead; exit 1.
    for p in &primaries {
        p.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    }
    let run = tessera(&url, &["doctor"], None).await;
    for p in &primaries {
        p.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    }
    assert_eq!(run.code, 1, "{run:?}");
    let changes = run
        .stdout
        .lines()
        .filter(|l| {
            l.starts_with("change") && l.contains("allkeys-lru") && l.contains("volatile-lru")
        })
        .count();
    assert_eq!(changes, primaries.len(), "{run:?}");
    assert!(run.stdout.contains("server      redis 7."), "{run:?}");
}

async fn sessions_inspect_and_count(setup: Setup) {
    let (fx, url) = fixture(setup).await;
    let b = fx.browser();
    let (laptop, phone, bob) = (
        b.with_agent("Laptop/1"),
        b.fork().with_agent("Phone/2"),
        b.fork(),
    );
    let ann = json!({ "user_id": "ann", "tenant": "acme", "cart": ["p1", "p2"], "api_token": "s3cret-token" });
    login(&laptop, ann.clone()).await;
    login(
        &phone,
        json!({ "user_id": "ann", "tenant": "acme", "cart": ["p1"] }),
    )
    .await;
    login(&bob, json!({ "user_id": "bob", "tenant": "globex" })).await;

    let run = tessera(&url, &["sessions", "ann", "--json"], None).await;
    assert_eq!(run.code, 0, "{run:?}");
    let devices = run.json();
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len(), 2);
    let agents: Vec<&str> = devices
        .iter()
        .map(|d| d["user_agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["Phone/2", "Laptop/1"], "most recently used first");
    let handle = devices[1]["handle"].as_str().unwrap().to_string();
    let table = tessera(&url, &["sessions", "ann"], None).await;
    assert!(table.stdout.starts_with("HANDLE"), "{table:?}");
    assert!(table.stdout.contains(&handle) && table.stdout.contains("Laptop/1"));

    // By handle alone (a key scan) and with the user (one index read): the same session.
    for args in [
        vec!["inspect", &handle, "--json"],
        vec!["inspect", &handle, "--user", "ann", "--json"],
    ] {
        let run = tessera(&url, &args, None).await;
        assert_eq!(run.code, 0, "{run:?}");
        let d = run.json();
        assert_eq!(d["user_id"], "ann");
        assert_eq!(d["user_agent"], "Laptop/1");
        assert_eq!(d["fields"]["tenant"], "acme");
        assert_eq!(d["fields"]["cart"], json!(["p1", "p2"]));
        assert_eq!(d["protected"], json!(["api_token"]));
        assert!(d["fields"].get("api_token").is_none());
        assert!(
            !run.stdout.contains("s3cret") && !run.stdout.contains("enc:v1"),
            "{run:?}"
        );
    }
    // Fields the apps protect but which hold no sealed value (written before they were
    // protected): named with --protected, never printed.
    let run = tessera(
        &url,
        &["inspect", &handle, "--protected", "tenant,other", "--json"],
        None,
    )
    .await;
    let d = run.json();
    assert_eq!(d["protected"], json!(["api_token", "tenant"]), "{run:?}");
    assert!(d["fields"].get("tenant").is_none() && !run.stdout.contains("acme"));
    let people = tessera(&url, &["inspect", &handle], None).await;
    assert!(
        people.stdout.contains("field api_token  (protected)"),
        "{people:?}"
    );
    assert!(!people.stdout.contains("s3cret"));
    // Another user's name does not reach it.
    let run = tessera(&url, &["inspect", &handle, "--user", "bob"], None).await;
    assert_eq!(run.code, 4, "{run:?}");

    let run = tessera(&url, &["count", "tenant", "--json"], None).await;
    assert_eq!(run.json(), json!({ "acme": 2, "globex": 1 }), "{run:?}");
    let run = tessera(&url, &["count", "cart", "--list", "--json"], None).await;
    assert_eq!(run.json(), json!({ "p1": 2, "p2": 1 }), "{run:?}");
    let table = tessera(&url, &["count", "tenant"], None).await;
    let rows: Vec<Vec<&str>> = table
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["SESSIONS", "TENANT"],
            vec!["2", "acme"],
            vec!["1", "globex"]
        ]
    );
}

async fn end_asks_then_ends(setup: Setup) {
    let (fx, url) = fixture(setup).await;
    let b = fx.browser();
    let (ann1, ann2, ann3, bob, cat) = (b.fork(), b.fork(), b.fork(), b.fork(), b.fork());
    for (br, user, tenant) in [
        (&ann1, "ann", "acme"),
        (&ann2, "ann", "acme"),
        (&ann3, "ann", "acme"),
        (&bob, "bob", "globex"),
        (&cat, "cat", "globex"),
    ] {
        login(br, json!({ "user_id": user, "tenant": tenant })).await;
    }

    // Asked, answered no (or not at all): nothing ends, exit 5.
    for answer in [Some("n\n"), None] {
        let run = tessera(&url, &["end", "--where", "tenant=globex"], answer).await;
        assert_eq!(run.code, 5, "{run:?}");
        assert!(
            run.stderr
                .contains("End 2 live session(s) whose tenant holds globex?"),
            "{run:?}"
        );
        assert!(logged_in(&bob).await && logged_in(&cat).await);
    }
    // A session that comes while the question waits: the answer was for 2, nothing ends.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["end", "--where", "tenant=globex"])
        .env("REDIS_URL", &url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut asked = Vec::new();
    while !String::from_utf8_lossy(&asked).contains("[y/N]") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read(&mut err, &mut buf),
        )
        .await
        .expect("the question within 30 s")
        .unwrap();
        assert!(n > 0, "stderr closed before the question: {asked:?}");
        asked.extend_from_slice(&buf[..n]);
    }
    let dan = b.fork();
    login(&dan, json!({ "user_id": "dan", "tenant": "globex" })).await;
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"y\n").await.unwrap();
    drop(input);
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut err, &mut rest)
        .await
        .unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(5), "{rest}");
    assert!(rest.contains("2 matched when asked, 3 match now"), "{rest}");
    assert!(logged_in(&bob).await && logged_in(&cat).await && logged_in(&dan).await);
    assert_eq!(dan.post("/logout", None).await.status, 204);

    // Answered yes.
    let run = tessera(
        &url,
        &["end", "--where", "tenant=globex", "--json"],
        Some("y\n"),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json(), json!({ "matched": 2, "ended": 2 }));
    assert!(!logged_in(&bob).await && !logged_in(&cat).await);

    // One session by its handle (a key scan), for scripts.
    let h = ann2.own_handle().await;
    let h = h.as_str();
    let run = tessera(&url, &["end", "--handle", h, "--yes"], None).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), "ended 1 of 1 matching session(s)");
    assert!(!logged_in(&ann2).await && logged_in(&ann1).await);
    let run = tessera(&url, &["end", "--handle", h, "--yes"], None).await;
    assert_eq!(run.code, 4, "gone: {run:?}");

    // A session whose entry in its user's index is gone (lapsed): found by the scan, ended
    // all the same.
    let h1 = ann1.own_handle().await;
    let index = "user:ann:sessions";
    let before: Vec<String> = fx
        .server()
        .cmd(&["ZRANGE", index, "0", "-1"])
        .array()
        .iter()
        .map(|m| m.text().unwrap())
        .collect();
    assert_eq!(before.len(), 2, "ann1's and ann3's entries");
    // Which entry is ann1's: the one whose removal takes h1 off the device list.
    for m in &before {
        let score = fx.server().cmd(&["ZSCORE", index, m]).text().unwrap();
        fx.server().cmd(&["ZREM", index, m]);
        let listed = tessera(&url, &["sessions", "ann", "--json"], None)
            .await
            .json();
        let still: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["handle"].as_str().unwrap())
            .collect();
        if still.contains(&h1.as_str()) {
            fx.server().cmd(&["ZADD", index, &score, m]); // not this one: back
        } else {
            break;
        }
    }
    let run = tessera(&url, &["end", "--handle", &h1, "--yes"], None).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!logged_in(&ann1).await && logged_in(&ann3).await);

    // A user everywhere.
    let run = tessera(&url, &["end", "ann", "--yes", "--json"], None).await;
    assert_eq!(run.json(), json!({ "matched": 1, "ended": 1 }), "{run:?}");
    assert!(!logged_in(&ann1).await && !logged_in(&ann3).await);
    // Nothing left to end is not an error.
    let run = tessera(&url, &["end", "ann", "--json"], None).await;
    assert_eq!(
        (run.code, run.json()),
        (0, json!({ "matched": 0, "ended": 0 }))
    );

    // The apps see the ends as theirs: revoked and logout_all events, by this tool.
    let events = tessera(&url, &["events", "--json", "--limit", "1000"], None)
        .await
        .lines();
    let ends: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.get("type").is_some() && e["instance"] == "tessera-cli")
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["user_id"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    let count = |kind: &str| ends.iter().filter(|(k, _)| *k == kind).count();
    assert_eq!((count("revoked"), count("logout_all")), (4, 1), "{ends:?}");
}

async fn events_page_and_follow(setup: Setup) {
    let (fx, url) = fixture(setup).await;
    let b = fx.browser();
    login(&b, json!({ "user_id": "dan" })).await;
    let run = tessera(&url, &["events", "--json"], None).await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines = run.lines();
    let kinds: Vec<&str> = lines.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["created", "login"]);
    let cursor = lines.last().unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        cursor,
        lines[1]["cursor"].as_str().unwrap(),
        "the last line says where to go on"
    );
    let people = tessera(&url, &["events"], None).await;
    assert_eq!(people.stdout.lines().count(), 2, "{people:?}");
    assert!(people.stderr.contains(&format!("--after {cursor}")));

    // Following: what happens after the cursor, as it happens.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["events", "--follow", "--json", "--after", &cursor])
        .env("REDIS_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(b.post("/logout", None).await.status, 204);
    let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    let e: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (e["type"].as_str(), e["user_id"].as_str()),
        (Some("logout"), Some("dan"))
    );
    child.kill().await.unwrap();
}

async fn exit_codes_scripts_can_use(setup: Setup) {
    let (_fx, url) = fixture(setup).await;
    let run = tessera("", &["sessions", "ann"], None).await;
    assert_eq!(run.code, 2, "no URL: {run:?}");
    assert!(run.stderr.contains("REDIS_URL"));
    let dead = format!("redis://127.0.0.1:{}", tessera_tests::server::free_port());
    let run = tessera(&dead, &["sessions", "ann"], None).await;
    assert_eq!(run.code, 3, "no server: {run:?}");
    let run = tessera(&url, &["end", "--where", "tenant"], None).await;
    assert_eq!(run.code, 2, "{run:?}");
    let run = tessera(&url, &["events", "--after", "not-a-cursor"], None).await;
    assert_eq!(run.code, 2, "{run:?}");
    let run = tessera(&url, &["inspect", "no-such-handle"], None).await;
    assert_eq!(run.code, 4, "{run:?}");
    let run = tessera(&url, &["end"], None).await;
    assert_eq!(run.code, 2, "clap's usage error: {run:?}");
    let run = tessera(&url, &["events", "--limit", "0"], None).await;
    assert_eq!(run.code, 2, "{run:?}");
    let run = tessera(&url, &["sessions", "ann", "--json"], None).await;
    assert_eq!((run.code, run.json()), (0, json!([])));
}
