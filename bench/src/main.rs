//! tessera's benchmark against the peer crates, side by side in one run on one Redis.
//!
//! `tessera-bench run [--rounds 3] [--secs 4] [--sessions 10000] [--conns 32] [--out DIR]`
//! starts one Redis, serves each implementation from its own process
//! (`tessera-bench serve NAME PORT REDIS_URL TOUCH_SECS`), loads it over keep-alive HTTP/1.1
//! connections, and writes `DIR/results.md` and `DIR/plot.svg`.

mod servers;

use fred::prelude::*;
use fred::types::InfoKind;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ROUTES: [(&str, &str, &str); 4] = [
    ("login", "POST", "/login"),
    ("read", "GET", "/read"),
    ("incr", "POST", "/incr"),
    // 90% read, 8% increment, 2% login (a new session), drawn per request.
    ("mix", "MIX", "/"),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", args[3].parse::<u16>().unwrap())).unwrap();
        servers::serve(
            &args[2],
            listener,
            args[4].clone(),
            args[5].parse().unwrap(),
        );
        return;
    }
    let opt = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().unwrap())
            .unwrap_or(default)
    };
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "bench/results".into());
    let list = |name: &str| -> Option<Vec<String>> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').map(str::to_string).collect())
    };
    let cfg = Cfg {
        impls: list("--impls")
            .unwrap_or_else(|| servers::IMPLS.iter().map(|s| s.to_string()).collect()),
        routes: list("--routes")
            .unwrap_or_else(|| ROUTES.iter().map(|r| r.0.to_string()).collect()),
        rounds: opt("--rounds", 3) as usize,
        secs: opt("--secs", 4),
        sessions: opt("--sessions", 10_000) as usize,
        conns: opt("--conns", 32) as usize,
        out,
        pin: args.iter().any(|a| a == "--pin"),
        instances: opt("--instances", 1) as usize,
    };
    if cfg.pin {
        // The load generator shares CPU 0 with the apps; Redis gets CPU 1 to itself.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(cfg));
}

struct Cfg {
    /// Which implementations and routes to run (all by default; filters are for profiling).
    impls: Vec<String>,
    routes: Vec<String>,
    rounds: usize,
    secs: u64,
    sessions: usize,
    conns: usize,
    out: String,
    /// Redis alone on CPU 1; the apps and the load generator on CPU 0.
    pin: bool,
    /// App processes per implementation (2: each connection alternates between them, as a
    /// round-robin load balancer would).
    instances: usize,
}

/// Kills the child on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_bin() -> String {
    if let Ok(b) = std::env::var("REDIS_SERVER_BIN") {
        return b;
    }
    std::fs::read_to_string(".servers/env.sh")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("export REDIS_SERVER_BIN=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "redis-server".into())
}

async fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_server(name: &str, port: u16, url: &str, touch: u64, pin: bool) -> Proc {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    Proc(
        cmd.args(["serve", name, &port.to_string(), url, &touch.to_string()])
            .stdout(Stdio::null())
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap(),
    )
}

#[derive(Default, Clone)]
struct Sample {
    rps: f64,
    /// Process CPU time (user + system) of the app processes per request, µs.
    app_us: f64,
    /// Redis CPU time (INFO cpu, user + system) per request, µs.
    redis_us: f64,
    p50_us: f64,
    p99_us: f64,
    cmds: f64,
    breakdown: String,
    errors: u64,
}

async fn run(cfg: Cfg) {
    // One Redis for everyone: no persistence (this measures the crates, not the disk).
    let dir = std::env::temp_dir().join(format!("tessera-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rport = free_port();
    let mut redis_cmd = if cfg.pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(redis_bin());
        c
    } else {
        Command::new(redis_bin())
    };
    let _redis = Proc(
        redis_cmd
            .args([
                "--port",
                &rport.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--databases",
                "32",
                "--dir",
                dir.to_str().unwrap(),
                "--logfile",
                "redis.log",
            ])
            .spawn()
            .expect("redis-server (run scripts/install-servers.sh)"),
    );
    wait_port(rport).await;
    let admin =
        Builder::from_config(Config::from_url(&format!("redis://127.0.0.1:{rport}")).unwrap())
            .build()
            .unwrap();
    admin.init().await.unwrap();
    let version: String = admin.info::<String>(Some(InfoKind::Server)).await.unwrap();
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    eprintln!(
        "redis {version} on port {rport}; {} rounds x {} s, {} sessions, {} connections",
        cfg.rounds, cfg.secs, cfg.sessions, cfg.conns
    );

    let mut procs = Vec::new();
    let mut ports: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
    let mut pids: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    let mut ttl_ports = BTreeMap::new();
    let impls: Vec<&'static str> = servers::IMPLS
        .iter()
        .copied()
        .filter(|n| cfg.impls.iter().any(|i| i == n))
        .collect();
    let routes: Vec<(&str, &str, &str)> = ROUTES
        .iter()
        .copied()
        .filter(|r| cfg.routes.iter().any(|x| x == r.0))
        .collect();
    for (i, name) in servers::IMPLS
        .iter()
        .enumerate()
        .filter(|(_, n)| impls.contains(n))
    {
        for _ in 0..cfg.instances.max(1) {
            let p = free_port();
            let proc = spawn_server(
                name,
                p,
                &format!("redis://127.0.0.1:{rport}/{i}"),
                60,
                cfg.pin,
            );
            pids.entry(*name).or_default().push(proc.0.id());
            procs.push(proc);
            ports.entry(*name).or_default().push(p);
        }
        let tp = free_port();
        procs.push(spawn_server(
            name,
            tp,
            &format!("redis://127.0.0.1:{rport}/{}", 16 + i),
            1,
            cfg.pin,
        ));
        ttl_ports.insert(*name, tp);
    }
    for p in ports.values().flatten().chain(ttl_ports.values()) {
        wait_port(*p).await;
    }

    // Live sessions, and the memory they take.
    let mut cookies = BTreeMap::new();
    let mut memory = BTreeMap::new();
    for (i, name) in servers::IMPLS
        .iter()
        .enumerate()
        .filter(|(_, n)| impls.contains(n))
    {
        let before = used_memory(&admin).await;
        let list = create_sessions(ports[name][0], cfg.sessions, cfg.conns).await;
        let after = used_memory(&admin).await;
        let per = (after as f64 - before as f64) / cfg.sessions as f64;
        let key_bytes = sample_key_bytes(rport, i).await;
        eprintln!(
            "{name}: {} sessions, {:.0} B/session (used_memory delta), sample key {key_bytes:?}",
            list.len(),
            per
        );
        memory.insert(*name, (per, key_bytes));
        cookies.insert(*name, Arc::new(list));
    }

    // Rounds, interleaved so drift hits everyone alike.
    let mut samples: BTreeMap<(&str, &str), Vec<Sample>> = BTreeMap::new();
    for round in 0..cfg.rounds {
        for name in impls.iter().copied() {
            for (route, method, path) in routes.iter().copied() {
                let cookies = if route == "login" {
                    Arc::new(Vec::new())
                } else {
                    cookies[name].clone()
                };
                load(
                    &ports[name],
                    method,
                    path,
                    cookies.clone(),
                    cfg.conns,
                    Duration::from_millis(500),
                )
                .await; // warm-up
                let _: () = admin.config_resetstat().await.unwrap();
                let (app0, redis0) = (cpu_secs(&pids[name]), redis_cpu(&admin).await);
                let (n, errors, mut lat) = load(
                    &ports[name],
                    method,
                    path,
                    cookies,
                    cfg.conns,
                    Duration::from_secs(cfg.secs),
                )
                .await;
                let (app1, redis1) = (cpu_secs(&pids[name]), redis_cpu(&admin).await);
                let stats = commandstats(&admin).await;
                lat.sort_unstable();
                let total: u64 = stats.values().sum();
                let breakdown = stats
                    .iter()
                    .map(|(k, v)| format!("{k} {:.2}", *v as f64 / n.max(1) as f64))
                    .collect::<Vec<_>>()
                    .join(", ");
                let s = Sample {
                    rps: n as f64 / cfg.secs as f64,
                    app_us: (app1 - app0) * 1e6 / n.max(1) as f64,
                    redis_us: (redis1 - redis0) * 1e6 / n.max(1) as f64,
                    p50_us: pct(&lat, 0.50),
                    p99_us: pct(&lat, 0.99),
                    cmds: total as f64 / n.max(1) as f64,
                    breakdown,
                    errors,
                };
                eprintln!("round {round} {name:24} {route:6} {:>9.0} req/s p50 {:>6.0} us p99 {:>6.0} us app {:>5.1} us/req redis {:>5.1} us/req cmds/req {:.2} errors {}", s.rps, s.p50_us, s.p99_us, s.app_us, s.redis_us, s.cmds, s.errors);
                samples.entry((name, route)).or_default().push(s);
            }
        }
    }

    // Does the Redis TTL slide on a read-only request?
    let mut slides = BTreeMap::new();
    for (i, name) in servers::IMPLS
        .iter()
        .enumerate()
        .filter(|(_, n)| impls.contains(n))
    {
        slides.insert(*name, ttl_slides(ttl_ports[name], rport, 16 + i).await);
    }

    let report = report(&cfg, &version, &samples, &memory, &slides, &impls, &routes);
    std::fs::create_dir_all(&cfg.out).unwrap();
    std::fs::write(format!("{}/results.md", cfg.out), &report).unwrap();
    std::fs::write(format!("{}/plot.svg", cfg.out), plot(&samples)).unwrap();
    println!("{report}");
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// User + system CPU seconds of these processes so far (all their threads), from /proc.
fn cpu_secs(pids: &[u32]) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the ")" that closes the command name: utime is the 12th, stime the 13th.
            let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / tick
        })
        .sum()
}

/// Redis's own CPU seconds (INFO cpu: used_cpu_user + used_cpu_sys).
async fn redis_cpu(c: &Client) -> f64 {
    let info: String = c.info(Some(InfoKind::Cpu)).await.unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_user:")
                .or_else(|| l.strip_prefix("used_cpu_sys:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
}

async fn used_memory(c: &Client) -> u64 {
    let info: String = c.info(Some(InfoKind::Memory)).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn db_client(rport: u16, db: usize) -> Client {
    let c =
        Builder::from_config(Config::from_url(&format!("redis://127.0.0.1:{rport}/{db}")).unwrap())
            .build()
            .unwrap();
    c.init().await.unwrap();
    c
}

/// `MEMORY USAGE` of one session key (and of one user-index key, where there is one).
async fn sample_key_bytes(rport: u16, db: usize) -> Option<(i64, Option<i64>)> {
    let c = db_client(rport, db).await;
    let (_, keys): (String, Vec<String>) = c.scan_page("0", "*", Some(200), None).await.ok()?;
    // tessera's session keys start with `session:` (with events on, the database also holds
    // the events' keys); the peers' keys are bare ids.
    let session = keys
        .iter()
        .find(|k| k.starts_with("session:"))
        .or_else(|| {
            keys.iter()
                .find(|k| !k.starts_with("user:") && !k.starts_with('{'))
        })?;
    let index = keys.iter().find(|k| k.starts_with("user:"));
    let s: i64 = c.memory_usage(session, Some(0)).await.ok()?;
    let i = match index {
        Some(k) => c.memory_usage(k, Some(0)).await.ok(),
        None => None,
    };
    Some((s, i))
}

async fn commandstats(c: &Client) -> BTreeMap<String, u64> {
    let info: String = c.info(Some(InfoKind::CommandStats)).await.unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(n, _)| n != "info" && n != "config|resetstat")
        .collect()
}

async fn create_sessions(port: u16, n: usize, conns: usize) -> Vec<String> {
    let per = n.div_ceil(conns);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(port).await;
            let mut out = Vec::new();
            for _ in 0..per {
                let (status, cookie) = c.request("POST", "/login", None).await;
                assert_eq!(status, 200);
                out.push(cookie.expect("login sets a cookie"));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.truncate(n);
    all
}

/// Keep-alive load for `dur`: requests, errors (non-200), latencies in µs.
async fn load(
    ports: &[u16],
    method: &'static str,
    path: &'static str,
    cookies: Arc<Vec<String>>,
    conns: usize,
    dur: Duration,
) -> (u64, u64, Vec<u32>) {
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for seed in 0..conns as u64 {
        let cookies = cookies.clone();
        let ports = ports.to_vec();
        tasks.push(tokio::spawn(async move {
            // One keep-alive connection per app process; requests alternate between them.
            let mut cs = Vec::new();
            for p in &ports {
                cs.push(Conn::open(*p).await);
            }
            let mut turn = 0usize;
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let (mut n, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(100_000));
            while Instant::now() < deadline {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let mut cookie = (!cookies.is_empty())
                    .then(|| cookies[(rng % cookies.len() as u64) as usize].as_str());
                let (method, path) = if method == "MIX" {
                    match (rng >> 32) % 100 {
                        0..=89 => ("GET", "/read"),
                        90..=97 => ("POST", "/incr"),
                        _ => {
                            cookie = None;
                            ("POST", "/login")
                        }
                    }
                } else {
                    (method, path)
                };
                let n_conns = cs.len();
                let c = &mut cs[turn % n_conns];
                turn += 1;
                let t = Instant::now();
                let (status, _) = c.request(method, path, cookie).await;
                lat.push(t.elapsed().as_micros() as u32);
                n += 1;
                if status != 200 {
                    errors += 1;
                }
            }
            (n, errors, lat)
        }));
    }
    let (mut n, mut e, mut lat) = (0, 0, Vec::new());
    for t in tasks {
        let (a, b, c) = t.await.unwrap();
        n += a;
        e += b;
        lat.extend(c);
    }
    (n, e, lat)
}

struct Conn {
    r: BufReader<TcpStream>,
    line: String,
}

impl Conn {
    async fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            r: BufReader::new(s),
            line: String::new(),
        }
    }

    /// One request; returns the status and the first Set-Cookie's `name=value`.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
    ) -> (u16, Option<String>) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: 0\r\n");
        if let Some(c) = cookie {
            req.push_str("cookie: ");
            req.push_str(c);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        self.r.get_mut().write_all(req.as_bytes()).await.unwrap();
        self.line.clear();
        self.r.read_line(&mut self.line).await.unwrap();
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (mut len, mut set_cookie) = (0usize, None);
        loop {
            self.line.clear();
            self.r.read_line(&mut self.line).await.unwrap();
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("set-cookie") && set_cookie.is_none() {
                set_cookie = v.trim().split(';').next().map(str::to_string);
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await.unwrap();
        (status, set_cookie)
    }
}

/// Logs in, lets 1.5 s pass, reads once, and checks whether the key's TTL went back up.
/// (The servers used here run tessera with a 1 s touch interval.)
async fn ttl_slides(port: u16, rport: u16, db: usize) -> String {
    let mut c = Conn::open(port).await;
    let (_, cookie) = c.request("POST", "/login", None).await;
    let cookie = cookie.unwrap();
    let redis = db_client(rport, db).await;
    let (_, keys): (String, Vec<String>) =
        redis.scan_page("0", "*", Some(100), None).await.unwrap();
    let pick = keys
        .iter()
        .find(|k| k.starts_with("session:"))
        .or_else(|| {
            keys.iter()
                .find(|k| !k.starts_with("user:") && !k.starts_with('{'))
        })
        .cloned();
    let Some(key) = pick else {
        return "no key".into();
    };
    let t0: i64 = redis.pttl(&key).await.unwrap();
    if t0 < 0 {
        return "key has no TTL".into();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before: i64 = redis.pttl(&key).await.unwrap();
    c.request("GET", "/read", Some(&cookie)).await;
    let after: i64 = redis.pttl(&key).await.unwrap();
    if after > before + 1000 {
        format!(
            "yes ({:.1} s -> {:.1} s)",
            before as f64 / 1000.0,
            after as f64 / 1000.0
        )
    } else {
        format!(
            "no ({:.1} s -> {:.1} s)",
            before as f64 / 1000.0,
            after as f64 / 1000.0
        )
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

type Samples<'a> = BTreeMap<(&'a str, &'a str), Vec<Sample>>;

/// The median of a cell; 0 for a cell this (filtered) run did not measure.
fn med(samples: &Samples, name: &str, route: &str, f: impl Fn(&Sample) -> f64) -> f64 {
    let Some(v) = samples.get(&(name, route)) else {
        return 0.0;
    };
    let mut v: Vec<f64> = v.iter().map(f).collect();
    median(&mut v)
}

/// Per implementation: Redis memory per session (the `used_memory` delta), and a sample key's bytes.
type MemoryFigures<'a> = BTreeMap<&'a str, (f64, Option<(i64, Option<i64>)>)>;

fn report(
    cfg: &Cfg,
    version: &str,
    samples: &Samples,
    memory: &MemoryFigures<'_>,
    slides: &BTreeMap<&str, String>,
    impls: &[&str],
    routes: &[(&str, &str, &str)],
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Redis {version}, loopback, {} live sessions per implementation, {} keep-alive connections, {} rounds x {} s per cell (median shown; spread = (max-min)/median){}{}.\n\n",
        cfg.sessions, cfg.conns, cfg.rounds, cfg.secs,
        if cfg.pin { "; Redis pinned alone to CPU 1, apps and load generator on CPU 0" } else { "" },
        if cfg.instances > 1 { format!("; {} app processes per implementation, each connection alternating between them", cfg.instances) } else { String::new() },
    ));
    out.push_str("| implementation | route | req/s | vs tower-sessions | p50 µs | p99 µs | app CPU µs/req | Redis CPU µs/req | Redis cmds/req (server) | spread req/s | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
    for (route, _, _) in routes.iter().copied() {
        let base = if impls.contains(&"tower-sessions") {
            med(samples, "tower-sessions", route, |s| s.rps)
        } else {
            f64::NAN
        };
        for name in impls.iter().copied() {
            let v = &samples[&(name, route)];
            let rps = med(samples, name, route, |s| s.rps);
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, 0f64), |(a, b), s| (a.min(s.rps), b.max(s.rps)));
            let errors: u64 = v.iter().map(|s| s.errors).sum();
            out.push_str(&format!(
                "| {name} | {route} | {rps:.0} | {:.2}x | {:.0} | {:.0} | {:.1} | {:.1} | {:.2} ({}) | {:.1}% | {errors} |\n",
                rps / base,
                med(samples, name, route, |s| s.p50_us),
                med(samples, name, route, |s| s.p99_us),
                med(samples, name, route, |s| s.app_us),
                med(samples, name, route, |s| s.redis_us),
                med(samples, name, route, |s| s.cmds),
                v[v.len() / 2].breakdown,
                (hi - lo) / rps * 100.0,
            ));
        }
    }
    out.push_str("\n| implementation | bytes/session (used_memory delta) | MEMORY USAGE session key | MEMORY USAGE user index | TTL slides on a read |\n|---|---:|---:|---:|---|\n");
    for name in impls.iter().copied() {
        let (per, keys) = &memory[name];
        let (k, i) = match keys {
            Some((k, i)) => (
                k.to_string(),
                i.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            ),
            None => ("-".into(), "-".into()),
        };
        out.push_str(&format!(
            "| {name} | {per:.0} | {k} | {i} | {} |\n",
            slides[name]
        ));
    }
    out
}

/// Bars of median req/s per implementation and route, with p99 written on each bar.
fn plot(samples: &Samples) -> String {
    let (w, h, left, top, bottom) = (980.0, 520.0, 70.0, 50.0, 110.0);
    let colors = [
        "#9e9e9e", "#bdbdbd", "#607d8b", "#1e88e5", "#0d47a1", "#64b5f6", "#90caf9", "#e53935",
        "#43a047", "#a5d6a7", "#fb8c00",
    ];
    let max = samples
        .values()
        .flat_map(|v| v.iter().map(|s| s.rps))
        .fold(1.0, f64::max)
        * 1.1;
    let group_w = (w - left - 20.0) / ROUTES.len() as f64;
    let bar_w = group_w / (servers::IMPLS.len() as f64 + 1.5);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='DejaVu Sans, sans-serif' font-size='12'>\
         <rect width='100%' height='100%' fill='white'/>\
         <text x='{left}' y='24' font-size='16'>Requests/s per route (median of rounds); p99 latency in ms on each bar</text>"
    );
    let plot_h = h - top - bottom;
    for i in 0..=5 {
        let v = max * i as f64 / 5.0;
        let y = top + plot_h - plot_h * i as f64 / 5.0;
        s.push_str(&format!(
            "<line x1='{left}' x2='{}' y1='{y}' y2='{y}' stroke='#ddd'/><text x='{}' y='{}' text-anchor='end'>{:.0}k</text>",
            w - 20.0,
            left - 6.0,
            y + 4.0,
            v / 1000.0
        ));
    }
    for (gi, (route, _, _)) in ROUTES.iter().enumerate() {
        let gx = left + gi as f64 * group_w + bar_w * 0.75;
        for (ii, name) in servers::IMPLS.iter().enumerate() {
            let rps = med(samples, name, route, |x| x.rps);
            let p99 = med(samples, name, route, |x| x.p99_us) / 1000.0;
            let bh = plot_h * rps / max;
            let x = gx + ii as f64 * bar_w;
            let y = top + plot_h - bh;
            s.push_str(&format!(
                "<rect x='{x}' y='{y}' width='{}' height='{bh}' fill='{}'/><text x='{}' y='{}' font-size='10' text-anchor='middle'>{p99:.1}</text>",
                bar_w * 0.9,
                colors[ii % colors.len()],
                x + bar_w * 0.45,
                y - 3.0
            ));
        }
        s.push_str(&format!(
            "<text x='{}' y='{}' font-size='14' text-anchor='middle'>{route}</text>",
            gx + bar_w * servers::IMPLS.len() as f64 / 2.0,
            top + plot_h + 20.0
        ));
    }
    for (ii, name) in servers::IMPLS.iter().enumerate() {
        let x = left + (ii % 3) as f64 * 280.0;
        let y = h - 55.0 + (ii / 3) as f64 * 22.0;
        s.push_str(&format!(
            "<rect x='{x}' y='{}' width='14' height='14' fill='{}'/><text x='{}' y='{}'>{name}</text>",
            y - 11.0,
            colors[ii % colors.len()],
            x + 20.0,
            y
        ));
    }
    s.push_str("</svg>");
    s
}
