//! Issue #29: tessera's metrics, read the way an operator reads them: the demo's
//! `GET /metrics` (Prometheus text, behind the admin token) after known traffic, through both
//! adapters, on Redis 7 and Cluster (and the 503 causes, the near-cache and the sweeper on Redis
//! 7). The process has one recorder: the tests of this binary take turns, and each asserts
//! what its own traffic added.

use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_core::metrics as m;
use tessera_tests::fixture::{config, ADMIN_TOKEN};
use tessera_tests::{Browser, Fixture, Setup};

tessera_tests::per_backend!(
    [axum, actix] x [redis7, cluster] => self::{known_traffic_is_counted}
);

tessera_tests::per_backend!(
    [redis7] => self::{
        metrics_need_the_admin_token,
        unavailable_answers_are_counted_by_cause,
        near_cache_and_sweeper_are_measured,
    }
);

/// One test at a time: they share the process's recorder.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `name{labels}` → value, for every sample line.
type Samples = BTreeMap<String, f64>;

async fn scrape(b: &Browser) -> Samples {
    let r = b.admin(ADMIN_TOKEN).get("/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(ct, Some("text/plain; version=0.0.4; charset=utf-8"));
    parse(&r.body)
}

fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("`name value`");
            (name.to_string(), value.parse::<f64>().expect("a number"))
        })
        .collect()
}

/// What `key` grew by between two scrapes (absent: 0).
fn grew(before: &Samples, after: &Samples, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

async fn login(b: &Browser, user: &str) {
    let r = b.post("/login", Some(json!({ "user_id": user }))).await;
    assert_eq!(r.status, 200, "{r:?}");
}

fn events_on(c: tessera_core::SessionConfigBuilder) -> tessera_core::SessionConfigBuilder {
    c.lifecycle_events(true)
        .expiry_sweep_interval(Duration::from_millis(200))
}

pub async fn known_traffic_is_counted(setup: Setup) {
    let _turn = TURN.lock().await;
    let fx = Fixture::with(setup, events_on).await;
    let b = fx.browser();
    let before = scrape(&b).await;

    // Four logins (each on a browser without a session: four sessions created), one write,
    // one counter, then one logout, one logout-all (one session) and one revoke.
    let (ann1, ann2, ann3, bob) = (b.fork(), b.fork(), b.fork(), b.fork());
    for (br, user) in [
        (&ann1, "m-ann"),
        (&ann2, "m-ann"),
        (&ann3, "m-ann"),
        (&bob, "m-bob"),
    ] {
        login(br, user).await;
    }
    assert_eq!(
        ann1.put("/session", json!({ "theme": "dark" }))
            .await
            .status,
        200
    );
    assert_eq!(ann1.post("/counter", None).await.status, 200);
    assert_eq!(ann2.post("/logout", None).await.status, 204);
    assert_eq!(bob.post("/logout-all", None).await.status, 204);
    let devices = ann1.get("/sessions").await.json();
    let other = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["current"] == false)
        .expect("ann3's session")["handle"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ann1.delete(&format!("/sessions/{other}")).await.status, 204);

    let after = scrape(&b).await;
    let g = |k: &str| grew(&before, &after, k);
    assert_eq!(g(m::LOGINS), 4.0, "logins");
    assert_eq!(g(m::SESSIONS_CREATED), 4.0, "created");
    assert_eq!(
        g(&format!("{}{{cause=\"logout\"}}", m::SESSIONS_ENDED)),
        1.0
    );
    assert_eq!(
        g(&format!("{}{{cause=\"logout_all\"}}", m::SESSIONS_ENDED)),
        1.0
    );
    assert_eq!(
        g(&format!("{}{{cause=\"revoked\"}}", m::SESSIONS_ENDED)),
        1.0
    );
    for (kind, n) in [
        ("created", 4.0),
        ("login", 4.0),
        ("logout", 1.0),
        ("revoked", 1.0),
    ] {
        let key = format!("{}{{type=\"{kind}\"}}", m::EVENTS_PUBLISHED);
        assert_eq!(g(&key), n, "{key}");
    }
    // Each operation's latency: a histogram per `op`, its count the number of operations.
    for op in ["load", "write", "index_members", "events_apply"] {
        let count = format!("{}_count{{op=\"{op}\"}}", m::STORE_COMMAND_SECONDS);
        assert!(g(&count) >= 1.0, "{count}: {}", g(&count));
        let bucket = format!(
            "{}_bucket{{op=\"{op}\",le=\"+Inf\"}}",
            m::STORE_COMMAND_SECONDS
        );
        assert_eq!(after.get(&bucket), after.get(&count), "{bucket}");
    }
    // Two device-list reads of Ann's index and the reads of the logouts.
    assert!(g(&format!("{}_count", m::USER_SESSIONS)) >= 2.0);
    // Nothing failed, nothing was refused.
    assert!(after
        .keys()
        .all(|k| !k.starts_with(m::UNAVAILABLE) || grew(&before, &after, k) == 0.0));
    // The help texts (`describe`).
    let text = b.admin(ADMIN_TOKEN).get("/metrics").await.body;
    assert!(
        text.contains(&format!("# HELP {} Logins", m::LOGINS)),
        "{text}"
    );
    // Labels never carry a session, a user or a key.
    assert!(
        !text.contains("m-ann") && !text.contains("session:"),
        "{text}"
    );
}

pub async fn metrics_need_the_admin_token(setup: Setup) {
    let _turn = TURN.lock().await;
    let fx = Fixture::new(setup).await;
    let b = fx.browser();
    assert_eq!(b.get("/metrics").await.status, 401);
    assert_eq!(b.admin("wrong").get("/metrics").await.status, 401);
    assert_eq!(b.admin(ADMIN_TOKEN).get("/metrics").await.status, 200);
    // Without ADMIN_TOKEN the route is not there, as the other admin routes.
    let app = tessera_tests::spawn_app(
        axum_demo::routes_with_admin(None)
            .layer(tessera_axum::SessionLayer::from_manager(fx.manager.clone())),
    )
    .await;
    assert_eq!(
        app.browser()
            .admin(ADMIN_TOKEN)
            .get("/metrics")
            .await
            .status,
        404
    );
}

pub async fn unavailable_answers_are_counted_by_cause(setup: Setup) {
    let _turn = TURN.lock().await;
    let mut fx = Fixture::new(setup).await;
    let b = fx.browser();
    login(&b, "m-cat").await;
    // An operator signed in on the admin page (its failures are HTML pages).
    let op = b.fork();
    let form = op.get("/admin").await;
    let token = tessera_tests::token_in(&form.body);
    let r = op
        .post_form(
            "/admin/ui/sign-in",
            &[("csrf_token", &token), ("token", ADMIN_TOKEN)],
        )
        .await;
    assert_eq!(r.status, 303, "{r:?}");
    let before = scrape(&b).await;
    let key = |cause: &str| format!("{}{{cause=\"{cause}\"}}", m::UNAVAILABLE);

    // Over maxmemory with noeviction: the write is refused, 503.
    let server = fx.standalone();
    server.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let r = b.put("/session", json!({ "big": "x".repeat(1000) })).await;
    assert_eq!(r.status, 503, "{r:?}");
    server.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    let mid = scrape(&b).await;
    assert_eq!(grew(&before, &mid, &key("over_memory")), 1.0);

    // The server gone: a read is a 503, nothing changed.
    fx.standalone().kill();
    let r = b.get("/me").await;
    assert_eq!(r.status, 503, "{r:?}");
    // The operator's page: its request fails too (its session's read first, so the layer
    // answers), counted once.
    let page = op.get("/admin").await;
    assert_eq!(page.status, 503, "{page:?}");
    let after = scrape(&b).await;
    assert_eq!(grew(&mid, &after, &key("unavailable")), 2.0);
    let failed = format!("{}{{op=\"load\"}}", m::STORE_COMMAND_ERRORS);
    assert!(grew(&mid, &after, &failed) >= 1.0, "{failed}");
}

pub async fn near_cache_and_sweeper_are_measured(setup: Setup) {
    let _turn = TURN.lock().await;
    let plain = Fixture::new(setup).await;
    let url = plain.server().url();
    let store = tessera_core::Store::redis_with(
        &url,
        tessera_core::RedisOptions::default().near_cache(1 << 20),
    )
    .await
    .unwrap();
    let cfg = config(|c| {
        events_on(c)
            .idle_timeout(Duration::from_secs(1))
            .touch_interval(Duration::from_millis(500))
    });
    let fx = Fixture::on(None, store, cfg).await;
    let b = fx.browser();
    let before = scrape(&b).await;
    login(&b, "m-dan").await;
    // Reads of a session this process just refreshed: served by the near-cache.
    for _ in 0..5 {
        assert_eq!(b.get("/me").await.status, 200);
    }
    // Left alone, the session expires and the sweeper publishes it.
    let start = std::time::Instant::now();
    let expired = format!("{}{{cause=\"expired\"}}", m::SESSIONS_ENDED);
    let after = loop {
        let now = scrape(&b).await;
        if grew(&before, &now, &expired) >= 1.0 {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no expiry counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        grew(&before, &after, m::NEAR_CACHE_HITS) >= 1.0,
        "near-cache hits"
    );
    assert!(
        grew(&before, &after, m::NEAR_CACHE_MISSES) >= 1.0,
        "near-cache misses"
    );
    let lag = after
        .get(m::EXPIRY_SWEEPER_LAG)
        .copied()
        .expect("the sweeper's lag");
    assert!((0.0..20.0).contains(&lag), "lag {lag}");
    assert_eq!(
        grew(
            &before,
            &after,
            &format!("{}{{type=\"expired\"}}", m::EVENTS_PUBLISHED)
        ),
        1.0
    );
    drop(plain);
}
