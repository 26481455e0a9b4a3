//! The demos in a real browser (issue #16): headless Chromium driven through WebDriver
//! (chromedriver, fantoccini), against both demos on Redis 7. Two browser profiles log in as
//! the same user, see two devices, one revokes the other, the counter counts, logout-all ends
//! both, a form with a forged CSRF token is refused and changes nothing, and the cookie is
//! checked as the browser stored it. The run also takes the README's screenshots. Issue #28:
//! the page follows its session over `GET /live`, so "log out everywhere" in one browser puts
//! the other on the sign-in form within 2 s, with no click and no reload (measured).
//! Issue #29: the operators' page (`GET /admin`): signed in through its form, the live count,
//! the tenant chart, the latest events, a device revoked and a tenant ended (checked in the
//! store), signed out; the axum run takes its screenshot.
//!
//! Needs `chromium` and `chromedriver` (`scripts/install-servers.sh` installs them): a missing
//! one fails the test with that command, never a skip.

use fantoccini::{Client, ClientBuilder, Locator};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tessera_core::{RedisOptions, SessionManager, Store};
use tessera_tests::{Server, ServerKind, TestApp};

const SETUP: &str = "scripts/install-servers.sh (installs chromium and chromium-driver)";

fn find(env: &str, names: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let p = PathBuf::from(dir).join(n);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("{} not found (set {env}): run {SETUP}", names[0]);
}

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole process group: chromedriver and the Chromium processes it started (a test
        // that panics before closing its browsers leaves none behind).
        let _ = Command::new("kill")
            .args(["-KILL", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver() -> Driver {
    let bin = find("CHROMEDRIVER", &["chromedriver"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start ({e}): run {SETUP}", bin.display()));
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, url }
}

/// A new browser (its own profile: its own cookies).
async fn browser(d: &Driver) -> Client {
    // The WebDriver connection is plain http, but the client is built with rustls: it needs a
    // crypto provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chromium = find(
        "CHROME_BIN",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=900,1250", "--no-first-run", "--password-store=basic"],
        }),
    );
    ClientBuilder::rustls()
        .expect("a TLS config for the WebDriver client")
        .capabilities(caps)
        .connect(&d.url)
        .await
        .unwrap_or_else(|e| {
            panic!("chromium does not start through chromedriver ({e}): run {SETUP}")
        })
}

async fn text(c: &Client, css: &str) -> String {
    let found = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await;
    match found {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!(
            "no {css:?} ({e}) in {}",
            c.source().await.unwrap_or_default()
        ),
    }
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css:?}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The text of `css` once it is `want` (a click's navigation may still be under way), or
/// what it is after 10 s.
async fn text_becomes(c: &Client, css: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let t = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if t == want || start.elapsed() > Duration::from_secs(10) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `css` is on the page within 10 s (a click's navigation may still be under way).
async fn has(c: &Client, css: &str) -> bool {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .is_ok()
}

async fn login(c: &Client, base: &str, user: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    let input = c
        .wait()
        .for_element(Locator::Css("form[action='/ui/login'] input[name=user_id]"))
        .await
        .unwrap();
    input.send_keys(user).await.unwrap();
    click(c, "form[action='/ui/login'] button").await;
    assert!(text(c, "h2 + table").await.contains(user));
}

/// The rows of the device list, once the page shows `want` of them (or after 10 s).
async fn device_rows(c: &Client, want: usize) -> usize {
    let start = Instant::now();
    loop {
        let n = c
            .find_all(Locator::Css("#devices tr.device"))
            .await
            .map(|v| v.len())
            .unwrap_or(0);
        if n == want || start.elapsed() > Duration::from_secs(10) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The page's content as the browser rendered it (PNG).
async fn page_shot(c: &Client) -> Vec<u8> {
    c.find(Locator::Css("main"))
        .await
        .unwrap()
        .screenshot()
        .await
        .unwrap()
}

fn screenshot(name: &str, png: &[u8]) {
    let root = tessera_tests::server::workspace_root();
    let dir = root.join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
    // `UPDATE_SCREENSHOTS=1 scripts/test.sh -p tessera-tests --test browser` refreshes the
    // README's copies from this run.
    if std::env::var("UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = root.join("docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(name), png).unwrap();
    }
}

/// The browser tests run one at a time: each starts two Chromium instances.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn flows(app: TestApp, shots: bool) {
    let d = tokio::task::spawn_blocking(driver).await.unwrap();
    // `localhost` is a secure context: the demo's default cookie (`Secure`, `__Host-`) is kept.
    let base = format!("http://localhost:{}", app.addr.port());
    let laptop = browser(&d).await;
    let phone = browser(&d).await;

    // The login form, without a session yet.
    phone.goto(&format!("{base}/")).await.unwrap();
    assert!(has(&phone, "form[action='/ui/login']").await);
    if shots {
        screenshot("login.png", &page_shot(&phone).await);
    }

    login(&laptop, &base, "ada").await;
    // The cookie as the browser stored it.
    let cookies = laptop.get_all_cookies().await.unwrap();
    let c = cookies
        .iter()
        .find(|c| c.name() == "__Host-tessera")
        .unwrap_or_else(|| panic!("the __Host- cookie: {cookies:?}"));
    assert_eq!(c.http_only(), Some(true), "HttpOnly");
    assert_eq!(c.secure(), Some(true), "Secure");
    assert_eq!(c.same_site(), Some(cookie::SameSite::Lax), "SameSite");
    assert_eq!(c.path(), Some("/"));
    assert!(
        c.domain().is_none_or(|d| !d.starts_with('.')),
        "host-only (no Domain): {c:?}"
    );
    assert!(
        c.expires().is_none_or(|e| e.datetime().is_none()),
        "a browser-session cookie: {c:?}"
    );
    assert_eq!(cookies.len(), 1, "only the session cookie: {cookies:?}");
    let script_sees: serde_json::Value = laptop
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert_eq!(
        script_sees,
        serde_json::json!(""),
        "HttpOnly: scripts do not see it"
    );

    login(&phone, &base, "ada").await;
    laptop.refresh().await.unwrap();
    assert_eq!(device_rows(&laptop, 2).await, 2, "two devices");
    assert_eq!(
        laptop
            .find_all(Locator::Css("#devices tr.device.current"))
            .await
            .unwrap()
            .len(),
        1,
        "this device marked"
    );

    click(&laptop, "form[action='/ui/counter'] button").await;
    assert_eq!(text_becomes(&laptop, "#counter", "1").await, "1");
    click(&laptop, "form[action='/ui/counter'] button").await;
    assert_eq!(text_becomes(&laptop, "#counter", "2").await, "2");
    if shots {
        screenshot("session.png", &page_shot(&laptop).await);
    }

    // A form post with a forged token: refused, nothing changed.
    laptop
        .execute(
            "document.querySelector(\"form[action='/ui/counter'] input[name=csrf_token]\").value = arguments[0]",
            vec![serde_json::json!("forged-token")],
        )
        .await
        .unwrap();
    click(&laptop, "form[action='/ui/counter'] button").await;
    assert!(
        has(&laptop, "#csrf-refused").await,
        "refused: {}",
        laptop.source().await.unwrap()
    );
    laptop.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(
        text(&laptop, "#counter").await,
        "2",
        "the forged post changed nothing"
    );

    // The laptop revokes the phone; the phone's page shows the login form by itself (it
    // follows its session over `GET /live`), with no click.
    click(&laptop, "#devices tr.device:not(.current) form button").await;
    assert_eq!(device_rows(&laptop, 1).await, 1);
    assert_eq!(text(&phone, "#signed-out").await, "Signed out elsewhere");
    assert!(
        has(&phone, "form[action='/ui/login']").await,
        "the revoked device is on the login form: {}",
        phone.source().await.unwrap()
    );

    // Logout everywhere, from the laptop: both are logged out.
    login(&phone, &base, "ada").await;
    laptop.refresh().await.unwrap();
    assert_eq!(device_rows(&laptop, 2).await, 2);
    click(&laptop, "form[action='/ui/logout-all'] button").await;
    assert!(has(&laptop, "form[action='/ui/login']").await);
    phone.refresh().await.unwrap();
    assert!(
        has(&phone, "form[action='/ui/login']").await,
        "the other device too"
    );

    laptop.close().await.unwrap();
    phone.close().await.unwrap();
}

/// What a page shows, read in one WebDriver call: whether it has the "signed out" notice and
/// the sign-in form, and whether the marker a test set on it is still there (no navigation).
async fn signed_out_state(c: &Client) -> serde_json::Value {
    c.execute(
        "return [!!document.querySelector('#signed-out'), \
                 !!document.querySelector(\"main form[action='/ui/login']\"), \
                 window.__marker === 1]",
        vec![],
    )
    .await
    .unwrap()
}

/// Issue #28: two browsers signed in as one user; "log out everywhere" in one, and the other
/// shows "Signed out elsewhere" and the sign-in form within 2 s, with no click and no reload
/// (its page follows the session over `GET /live`). The time is measured from the click in
/// one browser to the notice in the other, the other polled every 20 ms meanwhile. The
/// sign-in form put in place works (its pre-session token is good).
async fn signed_out_elsewhere(app: TestApp, demo: &str, shots: bool) {
    let d = tokio::task::spawn_blocking(driver).await.unwrap();
    let base = format!("http://localhost:{}", app.addr.port());
    let a = browser(&d).await;
    let b = browser(&d).await;
    login(&a, &base, "grace").await;
    login(&b, &base, "grace").await;
    a.refresh().await.unwrap();
    assert_eq!(device_rows(&a, 2).await, 2, "two devices");
    // B's page follows its session: the stream's first heartbeat is in.
    assert!(
        has(&b, "body[data-live=open]").await,
        "the page opened GET /live: {}",
        b.source().await.unwrap()
    );
    b.execute("window.__marker = 1", vec![]).await.unwrap();
    let url = b.current_url().await.unwrap();
    assert_eq!(
        signed_out_state(&b).await,
        serde_json::json!([false, false, true])
    );

    let start = Instant::now();
    let watch = async {
        loop {
            let state = signed_out_state(&b).await;
            if state[0] == true && state[1] == true {
                return (start.elapsed(), state);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "not signed out after 10 s: {state} {}",
                b.source().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let click_all = async {
        click(&a, "form[action='/ui/logout-all'] button").await;
        start.elapsed()
    };
    let ((shown, state), clicked) = tokio::join!(watch, click_all);
    eprintln!(
        "{demo}: the other browser showed \"signed out\" {} ms after the click on \"log out \
         everywhere\" (the click's own page load: {} ms)",
        shown.as_millis(),
        clicked.as_millis()
    );
    assert!(
        shown < Duration::from_secs(2),
        "{demo}: signed out shown after {shown:?}"
    );
    assert_eq!(
        state[2], true,
        "no navigation: the page's marker is still there"
    );
    assert_eq!(b.current_url().await.unwrap(), url, "no navigation");
    assert_eq!(text(&b, "#signed-out").await, "Signed out elsewhere");
    assert!(
        b.find(Locator::Css("#devices")).await.is_err(),
        "nothing of the ended session is left: {}",
        b.source().await.unwrap()
    );
    assert_eq!(
        b.find(Locator::Css("body"))
            .await
            .unwrap()
            .attr("data-live")
            .await
            .unwrap()
            .as_deref(),
        Some("ended")
    );
    assert!(has(&a, "form[action='/ui/login']").await, "A too");
    if shots {
        screenshot("signed-out.png", &page_shot(&b).await);
    }

    // The sign-in form put in place works, still without a reload until its own post.
    b.find(Locator::Css("form[action='/ui/login'] input[name=user_id]"))
        .await
        .unwrap()
        .send_keys("grace")
        .await
        .unwrap();
    click(&b, "form[action='/ui/login'] button").await;
    assert!(text(&b, "h2 + table").await.contains("grace"));
    assert!(
        has(&b, "body[data-live=open]").await,
        "following the new session"
    );

    a.close().await.unwrap();
    b.close().await.unwrap();
}

async fn manager(server: &Server) -> SessionManager {
    let store = Store::redis_with(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    // The demo's own configuration: Secure, the __Host- prefix, SameSite=Lax, its indexes
    // and events (COOKIE_SECURE is not set in the test environment).
    SessionManager::new(store, demo_core::config_from_env().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_demo_in_a_browser() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let m = manager(&server).await;
    let app = tessera_tests::spawn_app(axum_demo::app(m)).await;
    flows(app, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_demo_in_a_browser() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let m = manager(&server).await;
    let app = tessera_tests::spawn_actix(move || {
        actix_web::App::new()
            .wrap(tessera_actix::SessionMiddleware::from_manager(m.clone()))
            .configure(actix_demo::routes_with_admin(None))
    });
    flows(app, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_demo_signed_out_elsewhere() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let m = manager(&server).await;
    let app = tessera_tests::spawn_app(axum_demo::app(m)).await;
    signed_out_elsewhere(app, "axum", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_demo_signed_out_elsewhere() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let m = manager(&server).await;
    let app = tessera_tests::spawn_actix(move || {
        actix_web::App::new()
            .wrap(tessera_actix::SessionMiddleware::from_manager(m.clone()))
            .configure(actix_demo::routes_with_admin(None))
    });
    signed_out_elsewhere(app, "actix", false).await;
}

/// Issue #29: the operator's page in a browser. Four sessions made over HTTP (`ada` twice and
/// `bob` in tenant `acme`, `cy` in `globex`); the operator signs in with the admin token
/// through the form (a wrong one first: refused), sees the live count, one bar per tenant with
/// its count, the latest events; looks up `ada`'s devices and revokes one (gone from the store,
/// its client now without a session); ends the tenant `acme` after the confirmation page (its
/// sessions gone); signs out. The sign-in cookie is checked as the browser stored it.
async fn admin_flow(app: TestApp, m: SessionManager, shots: bool) {
    let d = tokio::task::spawn_blocking(driver).await.unwrap();
    let base = format!("http://localhost:{}", app.addr.port());
    let mut clients = Vec::new();
    for (user, tenant, agent) in [
        (
            "ada",
            "acme",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        ),
        ("ada", "acme", "Mozilla/5.0 (iPhone) Safari/604.1"),
        ("bob", "acme", "curl/8.5.0"),
        ("cy", "globex", "curl/8.5.0"),
    ] {
        let c = app.browser().with_agent(agent);
        let r = c
            .post(
                "/login",
                Some(serde_json::json!({ "user_id": user, "tenant": tenant })),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        clients.push(c);
    }
    let op = browser(&d).await;

    // Signing in: a wrong token is refused, the right one opens the page.
    op.goto(&format!("{base}/admin")).await.unwrap();
    let token_input = "form[action='/admin/ui/sign-in'] input[name=token]";
    op.wait()
        .for_element(Locator::Css(token_input))
        .await
        .unwrap()
        .send_keys("not-the-token")
        .await
        .unwrap();
    click(&op, "form[action='/admin/ui/sign-in'] button").await;
    assert_eq!(
        text(&op, "#sign-in-refused").await,
        "That is not the admin token."
    );
    assert!(op.find(Locator::Css("#live-count")).await.is_err());
    op.find(Locator::Css(token_input))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    click(&op, "form[action='/admin/ui/sign-in'] button").await;
    assert_eq!(text_becomes(&op, "#live-count", "4").await, "4");
    let cookies = op.get_all_cookies().await.unwrap();
    let c = cookies
        .iter()
        .find(|c| c.name() == "tessera_admin")
        .unwrap_or_else(|| panic!("the sign-in cookie: {cookies:?}"));
    assert_eq!(c.http_only(), Some(true), "HttpOnly");
    assert_eq!(c.secure(), Some(true), "Secure");
    assert_eq!(c.same_site(), Some(cookie::SameSite::Strict), "SameSite");
    assert_eq!(c.path(), Some("/admin"));
    assert!(
        !cookies.iter().any(|c| c.name() == "__Host-tessera"),
        "the page made no session: {cookies:?}"
    );

    // The chart: one bar per tenant, largest first, with its count.
    let bars = op
        .find_all(Locator::Css("#tenant-chart g.bar"))
        .await
        .unwrap();
    let mut shown = Vec::new();
    for b in &bars {
        shown.push((
            b.attr("data-label").await.unwrap().unwrap_or_default(),
            b.attr("data-count").await.unwrap().unwrap_or_default(),
        ));
    }
    let want = [("acme", "3"), ("globex", "1")].map(|(l, n)| (l.to_string(), n.to_string()));
    assert_eq!(shown, want, "largest first");
    // The numbers are drawn beside the bars.
    let drawn: Vec<String> = op
        .execute(
            "return [...document.querySelectorAll('#tenant-chart g.bar text.n')].map(t => t.textContent)",
            vec![],
        )
        .await
        .map(|v| serde_json::from_value(v).unwrap())
        .unwrap();
    assert_eq!(drawn, ["3", "1"]);
    let label = op
        .find(Locator::Css("#tenant-chart"))
        .await
        .unwrap()
        .attr("aria-labelledby")
        .await
        .unwrap();
    assert!(label.is_some_and(|l| l.contains("tenant-chart-title")));

    // The latest events: the four logins among them, newest first.
    let events = op.find_all(Locator::Css("#events tr.event")).await.unwrap();
    assert!(events.len() >= 4, "{}", op.source().await.unwrap());
    let first = events[0].text().await.unwrap();
    assert!(first.contains("login") && first.contains("cy"), "{first}");

    // A user's devices: ada's two, one revoked.
    op.find(Locator::Css("#user-devices input[name=user]"))
        .await
        .unwrap()
        .send_keys("ada")
        .await
        .unwrap();
    click(&op, "#user-devices form button").await;
    if device_rows(&op, 2).await != 2 {
        panic!("{}", op.source().await.unwrap());
    }
    if shots {
        screenshot("admin.png", &page_shot(&op).await);
    }
    let row = op.find(Locator::Css("#devices tr.device")).await.unwrap();
    let revoked = row.attr("data-handle").await.unwrap().unwrap();
    click(&op, "#devices tr.device form button").await;
    if device_rows(&op, 1).await != 1 {
        panic!("{}", op.source().await.unwrap());
    }
    let left = m.list_sessions("ada").await.unwrap();
    assert_eq!(
        left.len(),
        1,
        "one of ada's sessions is gone from the store"
    );
    assert_ne!(left[0].handle, revoked);
    let mut ada_live = 0;
    for c in &clients[..2] {
        if c.get("/me").await.status == 200 {
            ada_live += 1;
        }
    }
    assert_eq!(ada_live, 1, "the revoked client has no session");

    // End by query, after the confirmation: the tenant acme (ada's last session and bob's).
    op.goto(&format!("{base}/admin")).await.unwrap();
    click(&op, "#end-by-query select[name=field] option[value=tenant]").await;
    op.find(Locator::Css("#end-by-query input[name=value]"))
        .await
        .unwrap()
        .send_keys("acme")
        .await
        .unwrap();
    click(&op, "#end-by-query form button").await;
    assert!(
        text(&op, "#end-count").await.starts_with("2 live sessions"),
        "{}",
        op.source().await.unwrap()
    );
    assert_eq!(
        m.count_sessions("tenant", "acme").await.unwrap(),
        2,
        "nothing ended before the confirmation"
    );
    click(&op, "form[action='/admin/ui/end'] button").await;
    assert!(
        text(&op, "#ended-count")
            .await
            .starts_with("Ended 2 sessions"),
        "{}",
        op.source().await.unwrap()
    );
    assert_eq!(m.count_sessions("tenant", "acme").await.unwrap(), 0);
    for c in &clients[..3] {
        assert_eq!(c.get("/me").await.status, 401, "acme's sessions are gone");
    }
    assert_eq!(clients[3].get("/me").await.status, 200, "globex's lives");
    op.goto(&format!("{base}/admin")).await.unwrap();
    assert_eq!(text_becomes(&op, "#live-count", "1").await, "1");
    assert_eq!(
        op.find_all(Locator::Css("#tenant-chart g.bar"))
            .await
            .unwrap()
            .len(),
        1
    );

    // Signing out: the sign-in form, and the cookie gone.
    click(&op, "form[action='/admin/ui/sign-out'] button").await;
    assert!(has(&op, "form[action='/admin/ui/sign-in']").await);
    op.goto(&format!("{base}/admin")).await.unwrap();
    assert!(has(&op, "form[action='/admin/ui/sign-in']").await);
    assert!(op.find(Locator::Css("#live-count")).await.is_err());
    assert!(!op
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .any(|c| c.name() == "tessera_admin"));
    op.close().await.unwrap();
}

/// The admin token of the operator's page tests.
const ADMIN: &str = "browser-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_demo_admin_page() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let m = manager(&server).await;
    let app = tessera_tests::spawn_app(
        axum_demo::routes_with_admin(Some(ADMIN.into()))
            .layer(tessera_axum::SessionLayer::from_manager(m.clone())),
    )
    .await;
    admin_flow(app, m, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_demo_admin_page() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = tokio::task::spawn_blocking(|| Server::start(ServerKind::Redis7))
        .await
        .unwrap();
    let m = manager(&server).await;
    let served = m.clone();
    let app = tessera_tests::spawn_actix(move || {
        actix_web::App::new()
            .wrap(tessera_actix::SessionMiddleware::from_manager(
                served.clone(),
            ))
            .configure(actix_demo::routes_with_admin(Some(ADMIN.into())))
    });
    admin_flow(app, m, false).await;
}
