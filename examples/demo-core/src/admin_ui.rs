//! `GET /admin` and its forms under `/admin/ui/`: the page for operators (issue #29), beside
//! the bearer-token JSON routes (`/admin/sessions`, `/admin/counts`, `/admin/events`), which it
//! leaves as they are. Server-rendered HTML that works without JavaScript and has no script at
//! all, under the same headers and content policy as the page for people ([`crate::ui`]).
//!
//! Signing in: a form posts the admin token (compared in constant time); the answer is a cookie
//! of its own, [`ADMIN_COOKIE`], holding an expiry and an HMAC-SHA256 of it keyed by the admin
//! token (so it is never a session field: any client can write its session's fields with
//! `PUT /session`). It is `HttpOnly`, `SameSite=Strict`, `Path=/admin` and `Secure` (unless
//! `COOKIE_SECURE=0`), and lasts [`SIGN_IN_LASTS`]; a new admin token ends every sign-in.
//!
//! Every form carries the browser's CSRF token (the session's, or, for a browser without a
//! session, the pre-session token: the page writes nothing to the store) and is checked by the
//! adapters' `CsrfForm` extractor before any of these runs; the adapters also refuse a
//! cross-origin post. A refused form is `403` ([`refused`]) and changes nothing.

use crate::ui::{esc, nonce, page_headers, time_text, STYLE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tessera_core::{csrf_input, DeviceSession, Error, Event, FoundSessions, Session};

/// The operator's sign-in cookie.
pub const ADMIN_COOKIE: &str = "tessera_admin";

/// How long a sign-in lasts (then the sign-in form again).
pub const SIGN_IN_LASTS: Duration = Duration::from_secs(8 * 60 * 60);

/// What the cookie's HMAC is computed over, before the expiry: no other value keyed by the
/// admin token can stand for a sign-in.
const COOKIE_LABEL: &str = "tessera-demo admin page sign-in v1";

/// Rows of the latest events.
const EVENTS_SHOWN: usize = 20;

/// Bars of the tenant chart (the smallest values beyond are summed in one "others" bar).
const BARS: usize = 12;

/// Rows of the sessions an end-by-query would end, shown on its confirmation page.
const PREVIEW_ROWS: usize = 10;

/// The operator's page's settings: the admin token and whether its cookie is `Secure`.
/// Built once, at start-up ([`AdminUi::from_env`]).
#[derive(Clone)]
pub struct AdminUi {
    token: String,
    key: ring::hmac::Key,
    secure: bool,
}

/// `TESSERA_SECRET` as bytes, or 32 random bytes for this process (then a sign-in lasts as
/// long as the process, as the sessions do with a random signing key).
fn server_secret() -> Vec<u8> {
    static RANDOM: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    match std::env::var("TESSERA_SECRET") {
        Ok(s) if !s.is_empty() => s.into_bytes(),
        _ => RANDOM
            .get_or_init(|| {
                let mut b = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                    .expect("the operating system's random number generator");
                b
            })
            .to_vec(),
    }
}

impl std::fmt::Debug for AdminUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUi")
            .field("token", &"<redacted>")
            .field("secure", &self.secure)
            .finish()
    }
}

impl AdminUi {
    /// The page signed in with `token`; its cookie `Secure` when `secure`. The cookie's MAC
    /// key is derived from the token and the server's secret (`TESSERA_SECRET`, or a random
    /// one for this process): a captured cookie is no offline oracle for guessing the token.
    pub fn new(token: impl Into<String>, secure: bool) -> AdminUi {
        let token = token.into();
        let derive = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &server_secret());
        let material = ring::hmac::sign(
            &derive,
            format!("tessera-demo admin cookie key\n{token}").as_bytes(),
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, material.as_ref());
        AdminUi { token, key, secure }
    }

    /// The page for the configured admin token (`None`: no page, `/admin` answers 404), its
    /// cookie `Secure` unless `COOKIE_SECURE=0`.
    pub fn from_env(admin_token: Option<String>) -> Option<AdminUi> {
        admin_token.map(|t| AdminUi::new(t, crate::cookie_secure_from_env()))
    }

    fn tag(&self, expires: u64) -> ring::hmac::Tag {
        ring::hmac::sign(&self.key, format!("{COOKIE_LABEL}\n{expires}").as_bytes())
    }

    /// A sign-in cookie's value for a sign-in at `now`: `<expiry, Unix seconds>.<HMAC,
    /// base64url>`.
    pub fn cookie_value(&self, now: SystemTime) -> String {
        use base64::Engine as _;
        let expires = unix(now) + SIGN_IN_LASTS.as_secs();
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.tag(expires));
        format!("{expires}.{tag}")
    }

    /// Whether `value` is a sign-in cookie of this admin token that has not expired at `now`
    /// (the HMAC compared in constant time).
    pub fn accepts(&self, value: &str, now: SystemTime) -> bool {
        use base64::Engine as _;
        let Some((expires, tag)) = value.split_once('.') else {
            return false;
        };
        let (Ok(expires), Ok(tag)) = (
            expires.parse::<u64>(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag),
        ) else {
            return false;
        };
        let now = unix(now);
        // Expired, or later than a sign-in now could make (not one of ours).
        if expires <= now || expires > now + SIGN_IN_LASTS.as_secs() + 60 {
            return false;
        }
        ring::hmac::verify(
            &self.key,
            format!("{COOKIE_LABEL}\n{expires}").as_bytes(),
            &tag,
        )
        .is_ok()
    }

    fn attributes(&self) -> &'static str {
        if self.secure {
            "Path=/admin; HttpOnly; SameSite=Strict; Secure"
        } else {
            "Path=/admin; HttpOnly; SameSite=Strict"
        }
    }

    fn set_cookie(&self, now: SystemTime) -> String {
        format!(
            "{ADMIN_COOKIE}={}; Max-Age={}; {}",
            self.cookie_value(now),
            SIGN_IN_LASTS.as_secs(),
            self.attributes()
        )
    }

    fn clear_cookie(&self) -> String {
        format!("{ADMIN_COOKIE}=; Max-Age=0; {}", self.attributes())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Who asks: whether the page exists (an admin token is configured) and whether the request
/// carries a good sign-in cookie. The adapters make one per request from its `Cookie`
/// headers.
#[derive(Debug, Clone, Copy)]
pub struct Operator<'a> {
    ui: Option<&'a AdminUi>,
    signed_in: bool,
}

impl<'a> Operator<'a> {
    /// The operator of a request whose `Cookie` headers are `cookie_headers` (raw values).
    pub fn new<H: AsRef<[u8]>>(
        ui: Option<&'a AdminUi>,
        cookie_headers: impl IntoIterator<Item = H>,
    ) -> Operator<'a> {
        let now = SystemTime::now();
        let signed_in = ui.is_some_and(|ui| {
            cookie_headers.into_iter().any(|h| {
                std::str::from_utf8(h.as_ref()).is_ok_and(|h| {
                    h.split(';').any(|pair| {
                        pair.trim()
                            .split_once('=')
                            .is_some_and(|(k, v)| k == ADMIN_COOKIE && ui.accepts(v, now))
                    })
                })
            })
        });
        Operator { ui, signed_in }
    }

    /// Whether the request carries a good sign-in cookie.
    pub fn signed_in(&self) -> bool {
        self.signed_in
    }

    /// Whether the page exists (an admin token is configured).
    pub fn enabled(&self) -> bool {
        self.ui.is_some()
    }
}

/// What an admin UI route answers: a page, or a redirect (303 See Other, after a form),
/// perhaps with the sign-in cookie set or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminPage {
    /// The HTTP status.
    pub status: u16,
    /// The HTML (empty for a redirect).
    pub html: String,
    /// Where a redirect goes.
    pub location: Option<String>,
    /// A `Set-Cookie` header value: the sign-in cookie, or its removal.
    pub set_cookie: Option<String>,
    /// For a store failure: its refusal, which the adapters put in the response's extensions
    /// (where the session layer counts a `503` in tessera's metrics).
    pub refusal: Option<Box<tessera_core::adapter::Refusal>>,
    /// This response's script nonce (the page has no script; the content policy is the user
    /// page's).
    pub nonce: String,
}

impl AdminPage {
    fn html(status: u16, html: String) -> AdminPage {
        AdminPage {
            status,
            html,
            location: None,
            set_cookie: None,
            refusal: None,
            nonce: nonce(),
        }
    }

    fn see(location: String) -> AdminPage {
        AdminPage {
            status: 303,
            html: String::new(),
            location: Some(location),
            set_cookie: None,
            refusal: None,
            nonce: nonce(),
        }
    }

    /// The headers of the page for people ([`crate::ui::Page::headers`]): not cached, not
    /// framed, and the same content policy.
    pub fn headers(&self) -> [(&'static str, String); 5] {
        page_headers(&self.nonce)
    }
}

const ADMIN_STYLE: &str = r#"
main.admin { max-width: 960px; }
.top { display: flex; justify-content: space-between; align-items: flex-start; gap: 12px; }
table.list th { width: auto; }
td.when { white-space: nowrap; }
td.mono, td code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
#tenant-chart { display: block; width: 100%; height: auto; }
#tenant-chart text { font-size: 13px; fill: var(--ink); }
#tenant-chart .bar rect { fill: var(--accent); }
#tenant-chart .bar.others rect { fill: #98a2b3; }
#tenant-chart .bar.others text.label { font-style: italic; }
select { font: inherit; padding: 7px 8px; border: 1px solid var(--line); border-radius: 6px; }
p.notice { margin: 0 0 12px; color: var(--bad); font-weight: 500; }
.note { color: var(--muted); font-size: 13px; }
"#;

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · tessera operators</title><style>{STYLE}{ADMIN_STYLE}</style></head><body><main class=\"admin\">\
         <h1>tessera demo · operators</h1><p class=\"sub\">Live sessions in the store, by tenant, by user; the latest lifecycle events.</p>\
         {body}</main></body></html>\n",
        esc(title)
    )
}

/// `404`, as the admin JSON routes answer without an admin token.
fn not_found() -> AdminPage {
    AdminPage::html(
        404,
        layout(
            "not found",
            "<section><h2>Not found</h2><p>There is no such page.</p></section>",
        ),
    )
}

/// A page for a store failure: the status and message the page for people shows.
fn failed(e: &Error) -> AdminPage {
    let page = AdminPage::html(
        e.status_code(),
        layout(
            "error",
            &format!(
                "<section><h2>Something went wrong</h2><p id=\"admin-error\">{}</p>\
                 <p><a href=\"/admin\">Back to the operator's page</a></p></section>",
                esc(&e.public_message())
            ),
        ),
    );
    AdminPage {
        refusal: Some(Box::new(tessera_core::adapter::Refusal::error(e))),
        ..page
    }
}

fn bad_request(message: &str) -> AdminPage {
    AdminPage::html(
        400,
        layout(
            "bad request",
            &format!(
                "<section><h2>Not a query this page runs</h2><p id=\"admin-error\">{}</p>\
                 <p><a href=\"/admin\">Back to the operator's page</a></p></section>",
                esc(message)
            ),
        ),
    )
}

/// The sign-in form (with `notice` above it, if any).
async fn sign_in_page(session: &Session, status: u16, notice: Option<&str>) -> AdminPage {
    let token = match session.csrf_token().await {
        Ok(t) => t,
        Err(e) => return failed(&e),
    };
    let notice = notice
        .map(|n| {
            format!(
                "<p class=\"notice\" id=\"sign-in-refused\" role=\"alert\">{}</p>",
                esc(n)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<section><h2>Sign in</h2>{notice}\
         <form method=\"post\" action=\"/admin/ui/sign-in\" class=\"row\">{}\
         <input type=\"password\" name=\"token\" placeholder=\"the admin token (ADMIN_TOKEN)\" required autocomplete=\"off\" autofocus>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"note\">The demo's <code>ADMIN_TOKEN</code>. Signed in for 8 hours in this browser.</p></section>",
        csrf_input(&token)
    );
    AdminPage::html(status, layout("sign in", &body))
}

fn button_form(action: &str, token: &str, label: &str, class: &str, extra: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\">{}{extra}<button type=\"submit\" class=\"{class}\">{}</button></form>",
        csrf_input(token),
        esc(label)
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
        esc(value)
    )
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn param<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `GET /admin[?user=U]`: the sign-in form, or the operator's page: live sessions now, the
/// sessions per tenant as a bar chart, a user's devices with revoke (with `user`), end by
/// query, and the latest events.
pub async fn page(op: Operator<'_>, session: &Session, query: &[(String, String)]) -> AdminPage {
    if op.ui.is_none() {
        return not_found();
    }
    if !op.signed_in {
        return sign_in_page(session, 200, None).await;
    }
    match render(session, param(query, "user")).await {
        Ok(html) => AdminPage::html(200, html),
        Err(e) => failed(&e),
    }
}

async fn render(session: &Session, user: Option<&str>) -> Result<String, Error> {
    let manager = session.manager();
    let token = session.csrf_token().await?;
    let devices = async {
        match user {
            Some(u) => manager.list_sessions(u).await.map(Some),
            None => Ok(None),
        }
    };
    let (live, tenants, events, devices) = futures_util::try_join!(
        manager.count_live_sessions(),
        manager.count_by_value("tenant"),
        manager.latest_events(EVENTS_SHOWN),
        devices,
    )?;
    let fields: String = manager
        .config()
        .indexed_fields()
        .map(|(name, _)| format!("<option value=\"{0}\">{0}</option>", esc(name)))
        .collect();
    let body = format!(
        "<section id=\"live\" class=\"top\"><div><h2>Live sessions now</h2>\
         <span class=\"count\" id=\"live-count\">{live}</span><span class=\"muted\">in the store</span></div>\
         {}</section>\
         <section id=\"tenants\"><h2>Sessions per tenant</h2>{}</section>\
         <section id=\"user-devices\"><h2>A user's devices</h2>\
         <form method=\"get\" action=\"/admin\" class=\"row\">\
         <input type=\"text\" name=\"user\" placeholder=\"user id, e.g. ada\" required maxlength=\"512\" value=\"{}\">\
         <button type=\"submit\" class=\"quiet\">Look up</button></form>{}</section>\
         <section id=\"end-by-query\"><h2>End sessions by query</h2>\
         <form method=\"get\" action=\"/admin/ui/end\" class=\"row\">\
         <select name=\"field\" aria-label=\"indexed field\">{fields}</select>\
         <input type=\"text\" name=\"value\" placeholder=\"value, e.g. acme\" required maxlength=\"256\" aria-label=\"value\">\
         <button type=\"submit\" class=\"danger\">Review…</button></form>\
         <p class=\"note\">Shows how many live sessions match before anything ends.</p></section>\
         <section id=\"latest-events\"><h2>Latest events</h2>{}</section>",
        button_form("/admin/ui/sign-out", &token, "Sign out", "quiet", ""),
        tenant_chart(&tenants),
        esc(user.unwrap_or("")),
        devices
            .map(|d| device_table(user.unwrap_or(""), &d, &token))
            .unwrap_or_default(),
        event_table(&events),
    );
    Ok(layout("operators", &body))
}

/// The live sessions per tenant as an inline SVG bar chart: at most `BARS` (12) bars, largest
/// first (ties by name), the rest summed in one "others" bar; each bar names its tenant and
/// count, and the chart has a title and a text description for screen readers.
pub fn tenant_chart(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "<p class=\"muted\" id=\"no-tenants\">No live session has a tenant.</p>".into();
    }
    // (label, count, others)
    let mut bars: Vec<(String, usize, bool)> =
        counts.iter().map(|(k, n)| (k.clone(), *n, false)).collect();
    bars.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if bars.len() > BARS {
        let rest = bars.split_off(BARS - 1);
        let sum = rest.iter().map(|b| b.1).sum();
        bars.push((format!("{} others", rest.len()), sum, true));
    }
    const ROW: usize = 30;
    const LABEL_W: usize = 190;
    const BAR_W: usize = 380;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    let height = bars.len() * ROW + 8;
    let described: Vec<String> = bars
        .iter()
        .map(|(label, n, _)| format!("{label}: {n}"))
        .collect();
    let mut svg = format!(
        "<svg id=\"tenant-chart\" viewBox=\"0 0 640 {height}\" width=\"640\" height=\"{height}\" role=\"img\" \
         aria-labelledby=\"tenant-chart-title tenant-chart-desc\">\
         <title id=\"tenant-chart-title\">Live sessions per tenant</title>\
         <desc id=\"tenant-chart-desc\">{}</desc>",
        esc(&described.join(", "))
    );
    for (i, (label, n, others)) in bars.iter().enumerate() {
        let y = 4 + i * ROW;
        let w = (n * BAR_W / max).max(2);
        let shown: String = if label.chars().count() > 24 {
            label.chars().take(23).chain(['…']).collect()
        } else {
            label.clone()
        };
        svg.push_str(&format!(
            "<g class=\"bar{}\" data-label=\"{}\" data-count=\"{n}\">\
             <title>{}: {n} live session{}</title>\
             <text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LABEL_W}\" y=\"{}\" width=\"{w}\" height=\"20\" rx=\"3\"></rect>\
             <text class=\"n\" x=\"{}\" y=\"{}\">{n}</text></g>",
            if *others { " others" } else { "" },
            esc(label),
            esc(label),
            if *n == 1 { "" } else { "s" },
            LABEL_W - 8,
            y + 15,
            esc(&shown),
            y + 1,
            LABEL_W + w + 6,
            y + 15,
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn device_table(user: &str, devices: &[DeviceSession], token: &str) -> String {
    if devices.is_empty() {
        return format!(
            "<p class=\"muted\" id=\"no-devices\">No live session of <b>{}</b>.</p>",
            esc(user)
        );
    }
    let rows: String = devices
        .iter()
        .map(|d| {
            let agent = d.user_agent.as_deref().unwrap_or("unknown device");
            let revoke = button_form(
                "/admin/ui/revoke",
                token,
                "Revoke",
                "danger",
                &format!("{}{}", hidden("user", user), hidden("handle", &d.handle)),
            );
            format!(
                "<tr class=\"device\" data-handle=\"{0}\"><td class=\"mono\">{0}</td><td class=\"when\">{1}</td><td class=\"when\">{2}</td>\
                 <td title=\"{3}\">{4}</td><td class=\"muted\">{5}</td><td>{revoke}</td></tr>",
                esc(&d.handle),
                time_text(d.created_at),
                time_text(d.last_seen),
                esc(agent),
                esc(&crate::ui::device_name(agent)),
                esc(d.client_addr.as_deref().unwrap_or("")),
            )
        })
        .collect();
    format!(
        "<p>Live sessions of <b id=\"devices-user\">{}</b>: {}</p>\
         <table id=\"devices\" class=\"list\"><tr><th>handle</th><th>created</th><th>last seen</th><th>agent</th><th>address</th><th></th></tr>{rows}</table>",
        esc(user),
        devices.len()
    )
}

fn event_table(events: &[Event]) -> String {
    if events.is_empty() {
        return "<p class=\"muted\" id=\"no-events\">No events yet.</p>".into();
    }
    let rows: String = events
        .iter()
        .map(|e| {
            format!(
                "<tr class=\"event\" data-type=\"{0}\"><td>{0}</td><td class=\"mono\">{1}</td><td>{2}</td><td class=\"muted when\">{3}</td></tr>",
                esc(e.kind.as_str()),
                esc(&e.handle),
                esc(e.user_id.as_deref().unwrap_or("")),
                time_text(e.at),
            )
        })
        .collect();
    format!(
        "<table id=\"events\" class=\"list\"><tr><th>type</th><th>handle</th><th>user</th><th>at</th></tr>{rows}</table>\
         <p class=\"note\">Newest first, the latest {EVENTS_SHOWN}.</p>"
    )
}

/// `POST /admin/ui/sign-in` form.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    /// The admin token, as typed.
    #[serde(default)]
    pub token: String,
}

/// `POST /admin/ui/revoke` form.
#[derive(Debug, Deserialize)]
pub struct AdminRevokeForm {
    /// Whose device.
    pub user: String,
    /// The device (a handle of the user's device list).
    pub handle: String,
}

/// `GET /admin/ui/end` query and `POST /admin/ui/end` form: an indexed field and a value.
#[derive(Debug, Deserialize)]
pub struct EndForm {
    /// The indexed field (`tenant` or `cart`).
    #[serde(default)]
    pub field: String,
    /// The value the sessions to end hold in it.
    #[serde(default)]
    pub value: String,
    /// The confirmation's count: the post ends nothing, and shows the confirmation again,
    /// when that many no longer match (sessions came or went since the operator confirmed).
    #[serde(default)]
    pub expected: Option<usize>,
}

/// `POST /admin/ui/sign-in`: the right admin token signs this browser in (the cookie, then back
/// to `/admin`); a wrong one is `401` with the form again, and nothing is set.
pub async fn sign_in(op: Operator<'_>, session: &Session, form: SignInForm) -> AdminPage {
    let Some(ui) = op.ui else {
        return not_found();
    };
    // The bearer comparison of the JSON routes, in constant time.
    let presented = format!("Bearer {}", form.token);
    if form.token.is_empty() || !crate::token_matches(&ui.token, Some(presented.as_bytes())) {
        // For the operator's alerts: repeated wrong tokens are someone guessing.
        tracing::warn!(target: "demo::admin", "admin page: sign-in with a wrong token refused");
        return sign_in_page(session, 401, Some("That is not the admin token.")).await;
    }
    let mut p = AdminPage::see("/admin".into());
    p.set_cookie = Some(ui.set_cookie(SystemTime::now()));
    p
}

/// `POST /admin/ui/sign-out`: the cookie removed, back to the sign-in form.
pub async fn sign_out(op: Operator<'_>) -> AdminPage {
    let Some(ui) = op.ui else {
        return not_found();
    };
    let mut p = AdminPage::see("/admin".into());
    p.set_cookie = Some(ui.clear_cookie());
    p
}

/// `POST /admin/ui/revoke`: ends one device of a user, then back to that user's devices;
/// `404` when the handle is not one of the user's live sessions.
pub async fn revoke(op: Operator<'_>, session: &Session, form: AdminRevokeForm) -> AdminPage {
    if let Some(p) = gate(op, session).await {
        return p;
    }
    match session.manager().revoke(&form.user, &form.handle).await {
        Ok(true) => AdminPage::see(format!(
            "/admin?user={}#user-devices",
            query_value(&form.user)
        )),
        Ok(false) => AdminPage::html(
            404,
            layout(
                "not found",
                &format!(
                    "<section><h2>No such device</h2><p id=\"admin-error\">That is not a live session of {}; nothing was changed.</p>\
                     <p><a href=\"/admin?user={}#user-devices\">Back to the devices</a></p></section>",
                    esc(&form.user),
                    esc(&query_value(&form.user))
                ),
            ),
        ),
        Err(e) => failed(&e),
    }
}

/// The answer for a state-changing form without a sign-in: `404` without an admin token, the
/// sign-in form with `401` otherwise (nothing done).
async fn gate(op: Operator<'_>, session: &Session) -> Option<AdminPage> {
    if op.ui.is_none() {
        return Some(not_found());
    }
    if !op.signed_in {
        return Some(sign_in_page(session, 401, Some("Sign in first; nothing was changed.")).await);
    }
    None
}

/// The field and value of an end-by-query, if the field is one the demo indexes.
fn end_query<'f>(session: &Session, form: &'f EndForm) -> Result<(&'f str, &'f str), AdminPage> {
    let field = form.field.trim();
    let value = form.value.trim();
    let indexed: Vec<&str> = session
        .manager()
        .config()
        .indexed_fields()
        .map(|(name, _)| name)
        .collect();
    if !indexed.contains(&field) {
        return Err(bad_request(&format!(
            "Sessions can be ended by an indexed field only ({}), not by {field:?}.",
            indexed.join(", ")
        )));
    }
    if value.is_empty() {
        return Err(bad_request("A value is required."));
    }
    Ok((field, value))
}

/// `GET /admin/ui/end?field=F&value=V`: the confirmation page: how many live sessions hold
/// `V` in the indexed field `F`, the first of them, and the form that ends them. Only the
/// indexed fields are accepted (another: `400`).
pub async fn confirm_end(op: Operator<'_>, session: &Session, form: EndForm) -> AdminPage {
    if op.ui.is_none() {
        return not_found();
    }
    if !op.signed_in {
        return sign_in_page(session, 200, None).await;
    }
    let (field, value) = match end_query(session, &form) {
        Ok(q) => q,
        Err(p) => return p,
    };
    let found = async {
        let token = session.csrf_token().await?;
        let found = session
            .manager()
            .find_sessions(field, value, 0, PREVIEW_ROWS)
            .await?;
        Ok::<_, Error>((token, found))
    };
    match found.await {
        Ok((token, found)) => AdminPage::html(
            200,
            layout("confirm", &confirmation(field, value, &token, &found, "")),
        ),
        Err(e) => failed(&e),
    }
}

fn confirmation(
    field: &str,
    value: &str,
    token: &str,
    found: &FoundSessions,
    notice: &str,
) -> String {
    let query = format!("<code>{}</code> = <code>{}</code>", esc(field), esc(value));
    if found.count == 0 {
        return format!(
            "<section><h2>End sessions by query</h2><p id=\"end-count\" data-count=\"0\">No live session has {query}: nothing to end.</p>\
             <p><a href=\"/admin\">Back to the operator's page</a></p></section>"
        );
    }
    let rows: String = found
        .sessions
        .iter()
        .map(|s| {
            format!(
                "<tr class=\"match\"><td class=\"mono\">{}</td><td>{}</td></tr>",
                esc(&s.handle),
                esc(s.user_id.as_deref().unwrap_or("")),
            )
        })
        .collect();
    let more = if found.count > found.sessions.len() {
        format!(
            "<p class=\"note\">The first {} of {} shown.</p>",
            found.sessions.len(),
            found.count
        )
    } else {
        String::new()
    };
    let n = found.count;
    let (s, have) = if n == 1 { ("", "has") } else { ("s", "have") };
    let confirm = button_form(
        "/admin/ui/end",
        token,
        &format!("End {n} session{s}"),
        "danger",
        &format!(
            "{}{}{}",
            hidden("field", field),
            hidden("value", value),
            hidden("expected", &n.to_string())
        ),
    );
    format!(
        "<section><h2>End sessions by query</h2>{notice}\
         <p id=\"end-count\" data-count=\"{n}\"><b>{n}</b> live session{s} {have} {query}.</p>\
         <table id=\"matches\" class=\"list\"><tr><th>handle</th><th>user</th></tr>{rows}</table>{more}\
         <div class=\"row\">{confirm} <a href=\"/admin\">Cancel</a></div></section>"
    )
}

/// `POST /admin/ui/end` (the confirmation's form): ends every live session holding the value
/// in the indexed field, and says how many ended.
pub async fn end(op: Operator<'_>, session: &Session, form: EndForm) -> AdminPage {
    if let Some(p) = gate(op, session).await {
        return p;
    }
    let (field, value) = match end_query(session, &form) {
        Ok(q) => q,
        Err(p) => return p,
    };
    if let Some(expected) = form.expected {
        // Only what was confirmed: if the match changed since, the operator sees it again.
        let now = async {
            let found = session
                .manager()
                .find_sessions(field, value, 0, PREVIEW_ROWS)
                .await?;
            Ok::<_, Error>((session.csrf_token().await?, found))
        };
        match now.await {
            Ok((token, found)) if found.count != expected => {
                let notice = format!(
                    "<p id=\"end-changed\" class=\"note\">Nothing was ended: {expected} matched when you \
                     confirmed, {} match now. Confirm again.</p>",
                    found.count
                );
                return AdminPage::html(
                    409,
                    layout(
                        "confirm",
                        &confirmation(field, value, &token, &found, &notice),
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => return failed(&e),
        }
    }
    match session.manager().end_sessions(field, value).await {
        Ok(n) => AdminPage::html(
            200,
            layout(
                "ended",
                &format!(
                    "<section><h2>Sessions ended</h2><p id=\"ended-count\" data-count=\"{n}\">Ended <b>{n}</b> session{} with <code>{}</code> = <code>{}</code>.</p>\
                     <p><a href=\"/admin\">Back to the operator's page</a></p></section>",
                    if n == 1 { "" } else { "s" },
                    esc(field),
                    esc(value)
                ),
            ),
        ),
        Err(e) => failed(&e),
    }
}

/// A form refused by the CSRF or cross-origin check: `403` with a page that says so (`404`
/// without an admin token). Nothing was changed.
pub fn refused(op: Operator<'_>) -> AdminPage {
    if op.ui.is_none() {
        return not_found();
    }
    AdminPage::html(
        403,
        layout(
            "forbidden",
            "<section><h2>Forbidden</h2><p id=\"csrf-refused\">This form's security token is missing or not valid, \
             or it was sent from another site, so nothing was changed. \
             Go <a href=\"/admin\">back to the operator's page</a> and try again.</p></section>",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_accepted_until_it_expires_and_only_for_its_token() {
        let ui = AdminUi::new("secret", true);
        let now = SystemTime::now();
        let v = ui.cookie_value(now);
        assert!(ui.accepts(&v, now));
        assert!(ui.accepts(&v, now + SIGN_IN_LASTS - Duration::from_secs(1)));
        assert!(!ui.accepts(&v, now + SIGN_IN_LASTS), "expired");
        assert!(
            !AdminUi::new("other", true).accepts(&v, now),
            "another token"
        );
        let (expires, tag) = v.split_once('.').unwrap();
        let later: u64 = expires.parse::<u64>().unwrap() + 60;
        assert!(!ui.accepts(&format!("{later}.{tag}"), now), "expiry moved");
        for bad in [
            "",
            ".",
            "1.x",
            "x.y",
            &format!("{expires}."),
            &format!(".{tag}"),
        ] {
            assert!(!ui.accepts(bad, now), "{bad:?}");
        }
        let set = ui.set_cookie(now);
        assert!(set.starts_with("tessera_admin="));
        assert!(set.ends_with("; Max-Age=28800; Path=/admin; HttpOnly; SameSite=Strict; Secure"));
        assert_eq!(
            AdminUi::new("secret", false).clear_cookie(),
            "tessera_admin=; Max-Age=0; Path=/admin; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn operators_are_signed_in_by_a_good_cookie_only() {
        let ui = AdminUi::new("secret", true);
        let good = format!(
            "a=b; {ADMIN_COOKIE}={}; c=d",
            ui.cookie_value(SystemTime::now())
        );
        assert!(Operator::new(Some(&ui), [good.as_bytes()]).signed_in());
        assert!(!Operator::new(None, [good.as_bytes()]).signed_in());
        let forged = format!("{ADMIN_COOKIE}=9999999999.AAAA");
        assert!(!Operator::new(Some(&ui), [forged.as_bytes()]).signed_in());
        assert!(!Operator::new(Some(&ui), Vec::<&[u8]>::new()).signed_in());
    }

    #[test]
    fn the_chart_escapes_sorts_and_sums_the_rest() {
        let mut counts = BTreeMap::new();
        counts.insert("<b>evil</b>".to_string(), 3);
        counts.insert("acme".to_string(), 5);
        let svg = tenant_chart(&counts);
        assert!(svg.contains("&lt;b&gt;evil&lt;/b&gt;"));
        assert!(!svg.contains("<b>"));
        assert!(svg.find("data-label=\"acme\"") < svg.find("data-label=\"&lt;b&gt;"));
        assert!(svg.contains("<title id=\"tenant-chart-title\">Live sessions per tenant</title>"));
        for i in 0..20 {
            counts.insert(format!("t{i:02}"), 1);
        }
        let svg = tenant_chart(&counts);
        assert_eq!(svg.matches("<g class=\"bar").count(), BARS);
        assert!(
            svg.contains("data-label=\"11 others\" data-count=\"11\""),
            "{svg}"
        );
        assert!(tenant_chart(&BTreeMap::new()).contains("no-tenants"));
    }
}
