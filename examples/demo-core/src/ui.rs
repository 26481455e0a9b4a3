//! `GET /` and its forms: the demo for people, in a browser. Server-rendered HTML that works
//! without JavaScript; every form carries a CSRF token (checked by the adapters' `CsrfForm`
//! extractor before any of these runs): the session's, or, on the login form of a browser
//! without a session, a pre-session token (so a visitor costs no store write). The signed-in
//! page has one small inline script, allowed by the response's CSP nonce: it follows the
//! session over `GET /live` and puts the sign-in form in place when the session ends
//! elsewhere (issue #28); without it the page works as before.

use serde::Deserialize;
use std::time::Duration;
use tessera_core::{csrf_input, DeviceSession, Error, Expiry, Session};

/// What a UI route answers: a page, or a redirect to `/` (303 See Other, after a form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The HTTP status.
    pub status: u16,
    /// The HTML (empty for a redirect).
    pub html: String,
    /// Where a redirect goes.
    pub location: Option<&'static str>,
    /// This response's script nonce (128 random bits, base64url): the only script the
    /// content policy of [`Page::headers`] lets run is the one in `html` that carries it.
    pub nonce: String,
}

impl Page {
    fn see_home() -> Page {
        Page {
            status: 303,
            html: String::new(),
            location: Some("/"),
            nonce: nonce(),
        }
    }

    fn html(status: u16, html: String, nonce: String) -> Page {
        Page {
            status,
            html,
            location: None,
            nonce,
        }
    }

    /// Headers every UI response carries: not cached (it shows a session), not framed
    /// (clickjacking), and a content policy that allows only this page's own style, forms, the
    /// script with this response's nonce, and that script's requests to this origin (`/live`
    /// and `/`).
    pub fn headers(&self) -> [(&'static str, String); 5] {
        page_headers(&self.nonce)
    }
}

/// [`Page::headers`] for a page whose script nonce is `nonce` (the operator's page,
/// `admin_ui`, answers with the same headers).
pub(crate) fn page_headers(nonce: &str) -> [(&'static str, String); 5] {
    [
        ("cache-control", "no-store".into()),
        ("x-frame-options", "DENY".into()),
        ("x-content-type-options", "nosniff".into()),
        ("referrer-policy", "same-origin".into()),
        (
            "content-security-policy",
            format!(
                "default-src 'none'; script-src 'nonce-{nonce}'; connect-src 'self'; style-src 'unsafe-inline'; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            ),
        ),
    ]
}

/// A fresh script nonce: 16 bytes from the operating system's CSPRNG, base64url.
pub(crate) fn nonce() -> String {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the operating system's random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) const STYLE: &str = r#"
:root { color-scheme: light; --ink: #1d2330; --muted: #5c6577; --line: #dde2ea; --accent: #2f5bd3; --bad: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: #f5f7fb; }
main { max-width: 760px; margin: 32px auto; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 0 0 12px; }
p.sub { margin: 0 0 24px; color: var(--muted); }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px; margin-bottom: 16px; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 500; width: 30%; }
td code { font-size: 13px; }
form { display: inline; margin: 0; }
.row { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; }
input[type=text] { padding: 8px 10px; border: 1px solid var(--line); border-radius: 6px; font: inherit; min-width: 220px; }
button { font: inherit; padding: 7px 14px; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; }
button.quiet { background: #fff; color: var(--accent); }
button.danger { border-color: var(--bad); background: #fff; color: var(--bad); }
.count { font-size: 28px; font-weight: 600; margin-right: 12px; }
.tag { display: inline-block; font-size: 12px; padding: 1px 8px; border-radius: 999px; background: #e7efff; color: var(--accent); margin-left: 6px; }
.muted { color: var(--muted); }
label.check { color: var(--muted); }
#signed-out { margin: 0 0 16px; padding: 12px 16px; border: 1px solid #f0c58a; border-radius: 10px; background: #fff6e8; color: #7a4a00; font-weight: 500; }
"#;

fn layout(title: &str, body: &str) -> String {
    layout_with(title, body, "")
}

/// The page; `after` goes after `<main>` (so a `<main>` swapped in by the script leaves it).
fn layout_with(title: &str, body: &str, after: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>\
         <h1>tessera demo</h1><p class=\"sub\">Server-side sessions in Redis or Valkey, one hash per session.</p>\
         {body}</main>{after}</body></html>\n",
        esc(title)
    )
}

/// The signed-in page's one script (issue #28): it follows the session over `GET /live`, and
/// when the session ends anywhere (the `ended` event; or `/live` refusing a reconnect, an end
/// missed while the stream was down) it fetches `/` and, if that is the sign-in form, puts it
/// in place of `<main>` with a `#signed-out` notice: no reload, no click. If `/` shows a session
/// (this browser signed in again in another tab) after an `ended`, the page reloads for it;
/// after a stream refused without `ended` (the store away), it follows the same session again
/// 3 s later.
/// `body[data-live]` says `open` once the first heartbeat is in, `ended` after. A form sent
/// from this page closes the stream first (its own logout is not "elsewhere"). Without
/// JavaScript the page works as before: its forms lead to the sign-in form once the session
/// is gone.
const LIVE_SCRIPT: &str = r#"(function () {
  if (!window.EventSource || !window.fetch || !window.DOMParser) return;
  var body = document.body, es = null, done = false;
  function open() {
    es = new EventSource('/live');
    es.addEventListener('heartbeat', function () { if (!done) body.dataset.live = 'open'; });
    es.addEventListener('ended', function (e) {
      var cause = 'gone';
      try { cause = JSON.parse(e.data).cause || cause; } catch (_) {}
      end(cause);
    });
    // Closed without `ended` (a refused reconnect: a 503 while the store was away, or the
    // session ended while the stream was down): look at `/`.
    es.addEventListener('error', function () { if (es.readyState === EventSource.CLOSED) end(null); });
  }
  function retry() { done = false; setTimeout(function () { if (!done) open(); }, 3000); }
  function end(cause) {
    if (done) return;
    done = true; es.close(); body.dataset.live = 'ended';
    fetch('/', { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var main = doc.querySelector('main');
        if (!main || !main.querySelector('form[action="/ui/login"]')) {
          // Still signed in: after `ended`, a new session (reload for it); after a refused
          // reconnect, the same one (follow it again).
          if (cause) location.reload(); else retry();
          return;
        }
        var note = doc.createElement('p');
        note.id = 'signed-out';
        note.setAttribute('role', 'status');
        note.textContent = cause === 'expired' ? 'Your session expired' : 'Signed out elsewhere';
        main.insertBefore(note, main.querySelector('section'));
        document.querySelector('main').replaceWith(main);
        document.title = doc.title;
      }, retry);
  }
  open();
  document.addEventListener('submit', function () { done = true; es.close(); });
})();"#;

pub(crate) fn time_text(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn button_form(action: &str, token: &str, label: &str, class: &str, extra: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\">{}{extra}<button type=\"submit\" class=\"{class}\">{}</button></form>",
        csrf_input(token),
        esc(label)
    )
}

/// `GET /`: the login form, or the session, its counter and its user's devices.
pub async fn page(session: &Session) -> Page {
    let nonce = nonce();
    match render(session, &nonce).await {
        Ok(html) => Page::html(200, html, nonce),
        Err(e) => Page::html(
            e.status_code(),
            layout(
                "error",
                &format!(
                    "<section><h2>Something went wrong</h2><p>{}</p></section>",
                    esc(&e.public_message())
                ),
            ),
            nonce,
        ),
    }
}

async fn render(session: &Session, nonce: &str) -> Result<String, Error> {
    let token = session.csrf_token().await?;
    let Some(user) = session.user_id().await? else {
        let body = format!(
            "<section><h2>Sign in</h2>\
             <form method=\"post\" action=\"/ui/login\" class=\"row\">{}\
             <input type=\"text\" name=\"user_id\" placeholder=\"user id, e.g. ada\" required maxlength=\"64\" autofocus>\
             <label class=\"check\"><input type=\"checkbox\" name=\"remember\" value=\"1\"> remember me for 30 days</label>\
             <button type=\"submit\">Sign in</button></form></section>",
            csrf_input(&token)
        );
        return Ok(layout("sign in", &body));
    };
    // A protected field that does not decrypt (a key change without the previous key) is
    // shown as unavailable: the page, and its logout forms, still work.
    let (fields, unreadable) = session.readable_entries().await?;
    let counter = fields.get("counter").and_then(|v| v.as_i64()).unwrap_or(0);
    let devices = session.list_sessions().await?;
    let this = devices.iter().find(|d| d.current);
    let mut rows = format!("<tr><th>user</th><td><b>{}</b></td></tr>", esc(&user));
    if let Some(created) = session.created_at().await? {
        rows.push_str(&format!(
            "<tr><th>created</th><td>{}</td></tr>",
            time_text(created)
        ));
    }
    if let Some(d) = this {
        rows.push_str(&format!(
            "<tr><th>last seen</th><td>{}</td></tr>",
            time_text(d.last_seen)
        ));
    }
    let expiry = match session.expiry().await? {
        Expiry::Persistent(d) => format!("remembered for {} days", d.as_secs() / 86_400),
        Expiry::BrowserSession => "until the browser closes".into(),
        _ => "the configured idle timeout".into(),
    };
    rows.push_str(&format!(
        "<tr><th>expiry</th><td>{}</td></tr>",
        esc(&expiry)
    ));
    for (k, v) in &fields {
        let shown = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push_str(&format!(
            "<tr><th>{}</th><td><code>{}</code></td></tr>",
            esc(k),
            esc(&shown)
        ));
    }
    for k in &unreadable {
        rows.push_str(&format!(
            "<tr class=\"unavailable\"><th>{}</th><td class=\"muted\">unavailable (cannot be decrypted)</td></tr>",
            esc(k)
        ));
    }
    let device_rows: String = devices.iter().map(|d| device_row(d, &token)).collect();
    let body = format!(
        "<section><h2>This session</h2><table>{rows}</table></section>\
         <section><h2>Counter</h2><div class=\"row\"><span class=\"count\" id=\"counter\">{counter}</span>{}</div></section>\
         <section><h2>Devices of {}</h2><table id=\"devices\"><tr><th>device</th><th>address</th><th>last seen</th><th></th></tr>{device_rows}</table></section>\
         <section class=\"row\">{} {}</section>",
        button_form("/ui/counter", &token, "Count", "", ""),
        esc(&user),
        button_form("/ui/logout", &token, "Log out", "quiet", ""),
        button_form("/ui/logout-all", &token, "Log out everywhere", "danger", ""),
    );
    let script = format!("<script nonce=\"{nonce}\">{LIVE_SCRIPT}</script>");
    Ok(layout_with(&user, &body, &script))
}

/// A short name for a `User-Agent`: "Chrome 120 on Linux" (the whole text is the title).
pub fn device_name(agent: &str) -> String {
    let version = |name: &str| {
        let at = agent.find(name)? + name.len();
        let v: String = agent[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Some(format!("{} {v}", name.trim_end_matches('/')))
    };
    let browser = version("Edg/")
        .map(|b| b.replace("Edg", "Edge"))
        .or_else(|| version("HeadlessChrome/"))
        .or_else(|| version("Chrome/"))
        .or_else(|| version("Firefox/"))
        .or_else(|| agent.contains("Safari/").then(|| "Safari".to_string()));
    let os = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(k, _)| agent.contains(k))
    .map(|(_, v)| *v);
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b,
        (None, Some(o)) => o.to_string(),
        (None, None) => agent.chars().take(40).collect(),
    }
}

fn device_row(d: &DeviceSession, token: &str) -> String {
    let agent = d.user_agent.as_deref().unwrap_or("unknown device");
    let short = device_name(agent);
    let marker = if d.current {
        "<span class=\"tag\">this device</span>"
    } else {
        ""
    };
    let revoke = button_form(
        "/ui/revoke",
        token,
        "Revoke",
        "danger",
        &format!(
            "<input type=\"hidden\" name=\"handle\" value=\"{}\">",
            esc(&d.handle)
        ),
    );
    format!(
        "<tr class=\"device{}\" data-handle=\"{}\"><td title=\"{}\">{}{marker}</td><td class=\"muted\">{}</td><td class=\"muted\">{}</td><td>{revoke}</td></tr>",
        if d.current { " current" } else { "" },
        esc(&d.handle),
        esc(agent),
        esc(&short),
        esc(d.client_addr.as_deref().unwrap_or("")),
        time_text(d.last_seen),
    )
}

/// `POST /ui/login` form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The user to sign in as.
    pub user_id: String,
    /// The "remember me" checkbox.
    #[serde(default)]
    pub remember: Option<String>,
}

/// `POST /ui/revoke` form.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    /// The device to end.
    pub handle: String,
}

/// A form post with no fields but its token.
#[derive(Debug, Deserialize)]
pub struct EmptyForm {}

async fn done(r: Result<(), Error>) -> Page {
    match r {
        Ok(()) => Page::see_home(),
        Err(Error::SessionEnded | Error::NotLoggedIn) => Page::see_home(),
        Err(e) => Page::html(
            e.status_code(),
            layout(
                "error",
                &format!(
                    "<section><h2>That did not work</h2><p>{}</p><p><a href=\"/\">Back</a></p></section>",
                    esc(&e.public_message())
                ),
            ),
            nonce(),
        ),
    }
}

/// `POST /ui/login`: signs in (rotating the id), "remember me" for 30 days or a browser session.
pub async fn login(session: &Session, form: LoginForm) -> Page {
    let user = form.user_id.trim().to_string();
    if user.is_empty() || user.len() > 64 {
        return Page::see_home();
    }
    done(
        async {
            session.login(&user).await?;
            let expiry = if form.remember.is_some() {
                Expiry::Persistent(Duration::from_secs(30 * 86_400))
            } else {
                Expiry::BrowserSession
            };
            // A configuration whose longest expiry is shorter keeps its own.
            match session.set_expiry(expiry).await {
                Ok(()) | Err(Error::TooLarge { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        .await,
    )
    .await
}

/// `POST /ui/counter`.
pub async fn counter(session: &Session) -> Page {
    done(session.increment("counter", 1).await.map(|_| ())).await
}

/// `POST /ui/logout`.
pub async fn logout(session: &Session) -> Page {
    done(session.destroy().await).await
}

/// `POST /ui/logout-all`.
pub async fn logout_all(session: &Session) -> Page {
    done(session.logout_all().await.map(|_| ())).await
}

/// `POST /ui/revoke`: ends one of the user's devices (this one too, if asked).
pub async fn revoke(session: &Session, form: RevokeForm) -> Page {
    done(session.revoke(&form.handle).await.map(|_| ())).await
}

/// A form refused by the CSRF check: `403` with a page that says so, or, when the session the
/// page belonged to is gone (logged out, revoked, expired), back to `/` (the login form).
pub fn refused(no_session: bool) -> Page {
    if no_session {
        return Page::see_home();
    }
    Page::html(
        403,
        layout(
            "forbidden",
            "<section><h2>Forbidden</h2><p id=\"csrf-refused\">This form's security token is missing or not valid, so nothing was changed. \
             Go <a href=\"/\">back to the page</a> and try again.</p></section>",
        ),
        nonce(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_device_names() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";
        assert_eq!(device_name(chrome), "HeadlessChrome 156 on Linux");
        let firefox =
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(device_name(firefox), "Firefox 128 on Windows");
        assert_eq!(device_name("curl/8.5.0"), "curl/8.5.0");
        assert_eq!(device_name(""), "");
    }

    /// The signed-in page has one script, with the nonce its content policy names (fresh for
    /// every page, 128 bits); the sign-in form and the other pages have none.
    #[tokio::test]
    async fn only_the_signed_in_page_has_a_script_and_it_carries_the_nonce() {
        use tessera_core::{Key, SessionConfig, SessionManager, Store};
        let m = SessionManager::new(
            Store::memory(),
            SessionConfig::builder(Key::generate()).build().unwrap(),
        );
        let s = m.start::<&str>([]);
        let signed_out = page(&s).await;
        assert_eq!(signed_out.status, 200);
        assert!(signed_out.html.contains("action=\"/ui/login\""));
        assert!(!signed_out.html.contains("<script"), "{}", signed_out.html);
        s.login("ada").await.unwrap();
        let (one, two) = (page(&s).await, page(&s).await);
        for p in [&one, &two] {
            assert_eq!(p.status, 200);
            assert_eq!(p.nonce.len(), 22, "16 bytes, base64url: {}", p.nonce);
            assert_eq!(p.html.matches("<script").count(), 1, "{}", p.html);
            let tag = format!("<script nonce=\"{}\">", p.nonce);
            assert!(p.html.contains(&tag), "{}", p.html);
            assert!(p.html.contains("new EventSource('/live')"));
            let csp = &p.headers()[4];
            assert_eq!(csp.0, "content-security-policy");
            assert_eq!(
                csp.1,
                format!(
                    "default-src 'none'; script-src 'nonce-{}'; connect-src 'self'; \
                     style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; \
                     base-uri 'none'",
                    p.nonce
                )
            );
        }
        assert_ne!(one.nonce, two.nonce, "a fresh nonce for every page");
        for p in [refused(false), refused(true), counter(&s).await] {
            assert!(!p.html.contains("<script"), "{}", p.html);
            assert!(p.headers()[4].1.contains(&format!("'nonce-{}'", p.nonce)));
        }
    }
}
