//! Live connections end with their session (issue #28): `GET /live` (server-sent events) on
//! one instance closes with an `ended` event and its cause within 1 s of the answer to a
//! logout-all, a revoke or an expiry on another instance; a login's rotation keeps it open; a
//! Redis failover closes none and loses no end. Two app instances over real servers, both
//! adapters, streams read over raw TCP as a browser's `EventSource` reads them.

use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tessera_core::{RedisOptions, SessionConfigBuilder, SessionManager, Store};
use tessera_tests::fixture::{config, serve};
use tessera_tests::{Adapter, Backend, Browser, TestApp, Topology};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Two instances of the demo over one store (two processes in production), lifecycle events
/// on unless `tune` turns them off.
struct Pair {
    topology: Topology,
    a: TestApp,
    b: TestApp,
}

async fn pair(
    adapter: Adapter,
    backend: Backend,
    tune: fn(SessionConfigBuilder) -> SessionConfigBuilder,
) -> Pair {
    tessera_tests::init_tracing();
    let topology = tokio::task::spawn_blocking(move || backend.topology().unwrap())
        .await
        .unwrap();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let store = Store::redis_with(&topology.url(), RedisOptions::default())
            .await
            .unwrap();
        let c = config(|c| tune(c.lifecycle_events(true)));
        apps.push(serve(adapter, SessionManager::new(store, c)).await);
    }
    let b = apps.pop().unwrap();
    let a = apps.pop().unwrap();
    Pair { topology, a, b }
}

/// `name=value` of the session cookie a browser holds.
fn cookie_of(b: &Browser, login: &tessera_tests::http::Answer) -> String {
    let name = login
        .set_cookies
        .iter()
        .find_map(|c| c.split('=').next().filter(|n| n.contains("tessera")))
        .expect("a session cookie")
        .to_string();
    format!("{name}={}", b.cookie(&name).unwrap())
}

/// One open `GET /live` stream: resolves with when its `ended` event arrived and its cause,
/// or `None` if it closed without one.
struct Live {
    done: tokio::task::JoinHandle<Option<(Instant, String)>>,
}

impl Live {
    async fn open(addr: SocketAddr, cookie: &str) -> Live {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /live HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        // Open once the first heartbeat is in: the watch is registered by then.
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&buf).contains("event: heartbeat") {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk))
                .await
                .expect("the stream opened")
                .unwrap();
            assert!(
                n > 0,
                "closed before its first heartbeat: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
        assert!(
            String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        let done = tokio::spawn(async move {
            let mut text = String::new();
            loop {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
                text.push_str(&String::from_utf8_lossy(&chunk[..n]));
                if let Some(at) = text.find("event: ended\ndata: ") {
                    let rest = &text[at + "event: ended\ndata: ".len()..];
                    if let Some(end) = rest.find('\n') {
                        let data: serde_json::Value = serde_json::from_str(&rest[..end]).unwrap();
                        let cause = data["cause"].as_str().unwrap().to_string();
                        return Some((Instant::now(), cause));
                    }
                }
            }
        });
        Live { done }
    }

    /// The `ended` event's time and cause, waiting at most `limit`.
    async fn ended(self, limit: Duration) -> (Instant, String) {
        tokio::time::timeout(limit, self.done)
            .await
            .expect("the stream ended in time")
            .unwrap()
            .expect("an `ended` event before the close")
    }

    fn is_open(&self) -> bool {
        !self.done.is_finished()
    }
}

/// The p50, p99 and max of `d`.
fn spread(mut d: Vec<Duration>) -> String {
    d.sort();
    let at = |q: f64| d[((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1];
    format!(
        "n={} p50={:?} p99={:?} max={:?}",
        d.len(),
        at(0.5),
        at(0.99),
        d[d.len() - 1]
    )
}

async fn login(app: &TestApp, user: &str) -> (Browser, String) {
    let b = app.browser();
    let r = b.post("/login", Some(json!({ "user_id": user }))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let cookie = cookie_of(&b, &r);
    (b, cookie)
}

tessera_tests::per_backend!(
    [axum, actix] x [redis7, cluster] =>
    logout_all_closes_every_stream,
);

mod cases {
    use super::*;

    /// 100 streams of one user on instance B (4 devices, 25 each), a logout-all on instance A:
    /// every stream gets `ended` with `logout_all` within 1 s of A's answer.
    pub async fn logout_all_closes_every_stream(setup: tessera_tests::Setup) {
        let adapter = setup.adapter;
        let p = pair(adapter, setup.backend, |c| c).await;
        let mut devices = Vec::new();
        for _ in 0..4 {
            devices.push(login(&p.a, "u").await);
        }
        let (_other, other_cookie) = login(&p.a, "someone-else").await;
        let bystander = Live::open(p.b.addr, &other_cookie).await;
        let mut streams = Vec::new();
        for (_, cookie) in &devices {
            for _ in 0..25 {
                streams.push(Live::open(p.b.addr, cookie).await);
            }
        }
        let r = devices[0].0.post("/logout-all", None).await;
        assert_eq!(r.status, 204, "{r:?}");
        let answered = Instant::now();
        let mut after = Vec::new();
        for s in streams {
            let (at, cause) = s.ended(Duration::from_secs(5)).await;
            assert_eq!(cause, "logout_all");
            after.push(at.saturating_duration_since(answered));
        }
        eprintln!(
            "live ({adapter:?}, {}): 100 streams closed after the logout-all's answer: {}",
            p.topology.name(),
            spread(after.clone())
        );
        assert!(
            after.iter().all(|d| *d < Duration::from_secs(1)),
            "{}",
            spread(after)
        );
        assert!(bystander.is_open(), "another user's stream is left alone");
    }
}

/// A revoke closes the revoked device's streams only.
async fn a_revoke_closes_only_that_devices_streams(adapter: Adapter) {
    let p = pair(
        adapter,
        Backend::Redis(tessera_tests::ServerKind::Redis7),
        |c| c,
    )
    .await;
    let (laptop, laptop_cookie) = login(&p.a, "u").await;
    let (_phone, phone_cookie) = login(&p.a, "u").await;
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..3 {
        mine.push(Live::open(p.b.addr, &laptop_cookie).await);
        theirs.push(Live::open(p.b.addr, &phone_cookie).await);
    }
    let list = laptop.get("/sessions").await.json();
    let phone = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["current"] == json!(false))
        .unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        laptop.delete(&format!("/sessions/{phone}")).await.status,
        204
    );
    let answered = Instant::now();
    for s in theirs {
        let (at, cause) = s.ended(Duration::from_secs(5)).await;
        assert_eq!(cause, "revoked");
        assert!(at.saturating_duration_since(answered) < Duration::from_secs(1));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        mine.iter().all(Live::is_open),
        "the revoking device's streams stay open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_closes_only_that_devices_streams_axum() {
    a_revoke_closes_only_that_devices_streams(Adapter::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_closes_only_that_devices_streams_actix() {
    a_revoke_closes_only_that_devices_streams(Adapter::Actix).await;
}

/// A login's id rotation keeps the stream open: it follows the new id, and the next end
/// closes it.
async fn a_login_keeps_the_stream(adapter: Adapter) {
    let p = pair(
        adapter,
        Backend::Redis(tessera_tests::ServerKind::Redis7),
        |c| c,
    )
    .await;
    let b = p.a.browser();
    let r = b.post("/counter", None).await; // an anonymous session, stored
    assert_eq!(r.status, 200, "{r:?}");
    let cookie = cookie_of(&b, &r);
    let stream = Live::open(p.b.addr, &cookie).await;
    let r = b.post("/login", Some(json!({ "user_id": "u" }))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(cookie_of(&b, &r), cookie, "the login rotated the id");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(stream.is_open(), "the rotation did not close the stream");
    assert_eq!(b.post("/logout-all", None).await.status, 204);
    let (_, cause) = stream.ended(Duration::from_secs(2)).await;
    assert_eq!(cause, "logout_all", "it followed the new id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_keeps_the_stream_axum() {
    a_login_keeps_the_stream(Adapter::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_keeps_the_stream_actix() {
    a_login_keeps_the_stream(Adapter::Actix).await;
}

/// Expiry closes the stream, with its cause (the sweeper publishes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_closes_the_stream() {
    let p = pair(
        Adapter::Axum,
        Backend::Redis(tessera_tests::ServerKind::Redis7),
        |c| {
            c.idle_timeout(Duration::from_secs(2))
                .touch_interval(Duration::from_secs(1))
                .expiry_sweep_interval(Duration::from_secs(1))
        },
    )
    .await;
    let (_, cookie) = login(&p.a, "u").await;
    let stream = Live::open(p.b.addr, &cookie).await;
    let (_, cause) = stream.ended(Duration::from_secs(10)).await;
    assert_eq!(cause, "expired");
}

/// With lifecycle events off, the ends are found by the follower's existence checks (every
/// 500 ms): still within 1 s, the cause unknown (`gone`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_events_off_a_logout_all_still_closes_within_a_second() {
    let p = pair(
        Adapter::Axum,
        Backend::Redis(tessera_tests::ServerKind::Redis7),
        |c| c.lifecycle_events(false),
    )
    .await;
    let (b, cookie) = login(&p.a, "u").await;
    let streams = [
        Live::open(p.b.addr, &cookie).await,
        Live::open(p.b.addr, &cookie).await,
    ];
    assert_eq!(b.post("/logout-all", None).await.status, 204);
    let answered = Instant::now();
    for s in streams {
        let (at, cause) = s.ended(Duration::from_secs(5)).await;
        assert_eq!(cause, "gone");
        assert!(at.saturating_duration_since(answered) < Duration::from_secs(1));
    }
}

/// A Cluster failover (one primary SIGKILLed, its replica promoted) closes no live session's
/// stream, and a logout-all answered during or right after it still ends every stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_closes_no_stream_and_loses_no_end() {
    let mut p = pair(Adapter::Axum, Backend::Cluster, |c| c).await;
    let mut devices = Vec::new();
    for user in ["u", "u", "v", "v"] {
        devices.push(login(&p.a, user).await);
    }
    let mut streams = Vec::new();
    for (_, cookie) in &devices {
        for _ in 0..5 {
            streams.push(Live::open(p.b.addr, cookie).await);
        }
    }
    let victim = p.topology.primaries()[0].port();
    for n in p.topology.nodes_mut() {
        if n.port() == victim {
            n.kill();
        }
    }
    // u logs out everywhere as soon as the store takes it (a 503 changed nothing: retried).
    let deadline = Instant::now() + Duration::from_secs(40);
    let answered = loop {
        let r = devices[0].0.post("/logout-all", None).await;
        if r.status == 204 {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "logout-all never answered: {r:?}"
        );
        assert_eq!(r.status, 503, "{r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut v_open = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        if i < 10 {
            let (at, cause) = s.ended(Duration::from_secs(10)).await;
            assert_eq!(cause, "logout_all");
            eprintln!(
                "live failover: u's stream ended {:?} after the logout-all's answer",
                at.saturating_duration_since(answered)
            );
        } else {
            v_open.push(s);
        }
    }
    // Once the replica has taken over: v's streams are still open, and v's own logout-all
    // ends them.
    let deadline = Instant::now() + Duration::from_secs(40);
    while p.topology.primaries().len() < 3 || devices[2].0.get("/me").await.status != 200 {
        assert!(Instant::now() < deadline, "the cluster never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "live failover: recovered; v's streams open: {}",
        v_open.iter().filter(|s| s.is_open()).count()
    );
    assert!(
        v_open.iter().all(Live::is_open),
        "v's streams survived the failover"
    );
    assert_eq!(devices[2].0.post("/logout-all", None).await.status, 204);
    let answered = Instant::now();
    for s in v_open {
        let (at, cause) = s.ended(Duration::from_secs(5)).await;
        assert_eq!(cause, "logout_all");
        assert!(at.saturating_duration_since(answered) < Duration::from_secs(1));
    }
}

/// With lifecycle events off, a login's rotation is followed through the old key's tombstone
/// (it names the new one), and the next end still closes the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_events_off_a_login_keeps_the_stream() {
    let p = pair(
        Adapter::Axum,
        Backend::Redis(tessera_tests::ServerKind::Redis7),
        |c| c.lifecycle_events(false),
    )
    .await;
    let b = p.a.browser();
    let r = b.post("/counter", None).await;
    let cookie = cookie_of(&b, &r);
    let stream = Live::open(p.b.addr, &cookie).await;
    assert_eq!(
        b.post("/login", Some(json!({ "user_id": "u" })))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(stream.is_open(), "the rotation did not close the stream");
    assert_eq!(b.post("/logout-all", None).await.status, 204);
    let (_, cause) = stream.ended(Duration::from_secs(2)).await;
    assert_eq!(cause, "gone", "it followed the new id");
}

/// An end whose event never came (here: the key deleted behind tessera's back, as a lost
/// publication would leave it) still closes the stream, by the follower's sweep (every 5 s;
/// the second sweep that finds it gone ends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_without_its_event_closes_by_the_sweep() {
    let p = pair(
        Adapter::Axum,
        Backend::Redis(tessera_tests::ServerKind::Redis7),
        |c| c,
    )
    .await;
    let (_, cookie) = login(&p.a, "u").await;
    let stream = Live::open(p.b.addr, &cookie).await;
    for key in p.topology.session_keys() {
        p.topology.cmd(&["DEL", &key]);
    }
    let deleted = Instant::now();
    let (at, cause) = stream.ended(Duration::from_secs(15)).await;
    assert_eq!(cause, "gone");
    // Two sweeps: the first gives the end's event a chance to come with its cause.
    assert!(at.saturating_duration_since(deleted) < Duration::from_millis(10_500));
}

/// The WebSocket helpers (`tessera_axum::live::LiveSocket`, `tessera_actix::live::LiveSocket`
/// over actix-ws): an echo socket on instance B closes with code 4001 and the cause as its
/// reason within 1 s of a logout-all answered on instance A.
async fn a_websocket_closes_with_its_session(adapter: Adapter) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, Message};
    let p = pair(
        adapter,
        Backend::Redis(tessera_tests::ServerKind::Redis7),
        |c| c,
    )
    .await;
    let store = Store::redis_with(&p.topology.url(), RedisOptions::default())
        .await
        .unwrap();
    let manager = SessionManager::new(store, config(|c| c.lifecycle_events(true)));
    let ws_app = match adapter {
        Adapter::Axum => {
            use ::axum::extract::ws::{Message as M, WebSocketUpgrade};
            use tessera_axum::{live::LiveSocket, Session, SessionLayer};
            let router = ::axum::Router::new()
                .route(
                    "/ws",
                    ::axum::routing::get(|s: Session, ws: WebSocketUpgrade| async move {
                        ws.on_upgrade(|socket| async move {
                            let mut socket = LiveSocket::new(socket, s);
                            while let Some(Ok(M::Text(t))) = socket.recv().await {
                                let _ = socket.send(M::Text(t)).await;
                            }
                        })
                    }),
                )
                .layer(SessionLayer::from_manager(manager));
            tessera_tests::spawn_app(router).await
        }
        Adapter::Actix => {
            use tessera_actix::{live::LiveSocket, Session, SessionMiddleware};
            tessera_tests::spawn_actix(move || {
                actix_web::App::new()
                    .wrap(SessionMiddleware::from_manager(manager.clone()))
                    .route(
                        "/ws",
                        actix_web::web::get().to(
                            |req: actix_web::HttpRequest,
                             body: actix_web::web::Payload,
                             s: Session| async move {
                                let (res, ws, msgs) = actix_ws::handle(&req, body)?;
                                let mut socket = LiveSocket::new(ws, msgs, s);
                                actix_web::rt::spawn(async move {
                                    while let Some(Ok(actix_ws::Message::Text(t))) =
                                        socket.recv().await
                                    {
                                        let _ = socket.session().text(t).await;
                                    }
                                });
                                Ok::<_, actix_web::Error>(res)
                            },
                        ),
                    )
            })
        }
    };
    let (b, cookie) = login(&p.a, "u").await;
    let mut req = format!("ws://{}/ws", ws_app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // An echo: the socket waits in `recv`, so its end is watched.
    ws.send(Message::text("ping")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("ping"), "{adapter:?}");
    assert_eq!(b.post("/logout-all", None).await.status, 204);
    let answered = Instant::now();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("{adapter:?}: no close frame: {other:?}"),
        }
    };
    let closed = answered.elapsed();
    let frame = close.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), 4001, "{adapter:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(frame.reason.as_str()).unwrap(),
        json!({"type": "ended", "cause": "logout_all"}),
        "{adapter:?}"
    );
    eprintln!("live websocket ({adapter:?}): closed {closed:?} after the logout-all's answer");
    assert!(closed < Duration::from_secs(1), "{adapter:?}: {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_closes_with_its_session_axum() {
    a_websocket_closes_with_its_session(Adapter::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_closes_with_its_session_actix() {
    a_websocket_closes_with_its_session(Adapter::Actix).await;
}
