//! CSRF protection that belongs to the session: one secret per session, kept in its hash, and
//! tokens masked afresh for every page, so a compressed response never repeats the same bytes
//! (no BREACH oracle).

//!
//! A page without a session (a visitor who has written nothing: the login form) costs no store
//! write: its token is derived from a random nonce in a pre-session cookie (HMAC with the
//! cookie key: a double-submit cookie that only the server can pair with a token), so a crawler
//! makes no session and no `created` event. Once the browser has a session, its pages carry
//! the session's tokens and the pre-session cookie is dropped.
//!
//! The session's secret is created with a compare-and-set in the store
//! ([`Store::set_if_absent`](crate::store::Store)): two pages loaded at once both end up with
//! the one stored secret.
//!
//! The cross-origin rule for state-changing requests ([`is_cross_origin`],
//! [`Session::check_origin`]) is that of Go's `net/http.CrossOriginProtection`.

use super::state::{State, Status};
use super::Session;
use crate::error::{Error, Result};
use crate::store::{fields, SetIfAbsent};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Bytes of a session's CSRF secret (and of each token's mask), and of a pre-session nonce.
const SECRET_BYTES: usize = 32;

/// What the pre-session secret is derived for (the HMAC's label), so no other value derived
/// from the cookie key can stand for it.
const PRE_SESSION_LABEL: &str = "tessera.csrf.pre-session";

/// The pre-session cookie of one request (see the module's text).
#[derive(Debug, Default)]
pub(super) struct PreSession {
    /// The nonce: the request's cookie's, or one made for this response.
    nonce: Option<[u8; SECRET_BYTES]>,
    /// The request carried a well-formed pre-session cookie.
    had: bool,
    /// A new nonce: the response sets the cookie.
    send: bool,
}

/// The first well-formed pre-session cookie (`name`) in `Cookie` headers.
pub(super) fn pre_session<H: AsRef<[u8]>>(headers: &[H], name: &str) -> PreSession {
    if let Some(nonce) = crate::cookie::values_named(headers, name).find_map(decode_secret) {
        return PreSession {
            nonce: Some(nonce),
            had: true,
            send: false,
        };
    }
    PreSession::default()
}

/// The name of the form field [`csrf_input`] renders and the adapters' form checks read.
pub const CSRF_FIELD: &str = "csrf_token";

/// The request header the adapters' header checks read (for `fetch` / XHR posts).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A hidden form field carrying `token` (from [`Session::csrf_token`]), ready to put inside a
/// `<form method="post">`. The token is base64url, so it needs no escaping.
///
/// ```
/// let html = tessera_core::csrf_input("abc_-");
/// assert_eq!(html, r#"<input type="hidden" name="csrf_token" value="abc_-">"#);
/// ```
pub fn csrf_input(token: &str) -> String {
    let safe: String = token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!(r#"<input type="hidden" name="{CSRF_FIELD}" value="{safe}">"#)
}

/// Whether a `Content-Type` header value is a URL-encoded form, the only body a form check
/// reads for a token (a `text/plain` body shaped like one is not: any page can post those
/// cross-site).
///
/// ```
/// assert!(tessera_core::adapter::is_form_content_type(Some(b"application/x-www-form-urlencoded; charset=utf-8")));
/// assert!(!tessera_core::adapter::is_form_content_type(Some(b"text/plain")));
/// assert!(!tessera_core::adapter::is_form_content_type(None));
/// ```
pub fn is_form_content_type(value: Option<&[u8]>) -> bool {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Where a request comes from, as its headers say: the input of [`is_cross_origin`] and
/// [`check_origin`](crate::adapter::SessionExt::check_origin). Header values are raw bytes (`None`: the header is absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOrigin<'a> {
    /// The method (`GET`, `POST`, ...).
    pub method: &'a str,
    /// `Sec-Fetch-Site`, which every current browser sends.
    pub sec_fetch_site: Option<&'a [u8]>,
    /// `Origin`.
    pub origin: Option<&'a [u8]>,
    /// `Host` (or the URI's authority, for HTTP/2).
    pub host: Option<&'a [u8]>,
}

/// Whether a request is one a page of another origin made (Go's
/// `net/http.CrossOriginProtection` rule): `GET`, `HEAD` and `OPTIONS` never are; otherwise,
/// when `Sec-Fetch-Site` is present, anything but `same-origin` or `none` is; without it, an
/// `Origin` whose host (and port) is not the request's `Host` is; with neither header (curl, a
/// script, a server), it is not. An `Origin` listed in `trusted` (compared whole, ignoring ASCII
/// case) is never cross-origin.
///
/// ```
/// use tessera_core::adapter::{is_cross_origin, RequestOrigin};
/// let post = |site: Option<&'static str>, origin: Option<&'static str>| RequestOrigin {
///     method: "POST",
///     sec_fetch_site: site.map(str::as_bytes),
///     origin: origin.map(str::as_bytes),
///     host: Some(b"app.example"),
/// };
/// assert!(is_cross_origin(&post(Some("cross-site"), None), &[]));
/// assert!(is_cross_origin(&post(Some("same-site"), Some("https://evil.app.example")), &[]));
/// assert!(!is_cross_origin(&post(Some("same-origin"), Some("https://app.example")), &[]));
/// assert!(is_cross_origin(&post(None, Some("https://evil.example")), &[]));
/// assert!(!is_cross_origin(&post(None, Some("https://app.example")), &[]));
/// assert!(!is_cross_origin(&post(None, None), &[]), "curl");
/// assert!(!is_cross_origin(&post(Some("cross-site"), Some("https://partner.example")),
///                          &["https://partner.example".to_string()]));
/// ```
pub fn is_cross_origin(req: &RequestOrigin<'_>, trusted: &[String]) -> bool {
    if ["GET", "HEAD", "OPTIONS"].contains(&req.method) {
        return false;
    }
    let trusted_origin = || {
        req.origin.is_some_and(|o| {
            trusted
                .iter()
                .any(|t| t.as_bytes().eq_ignore_ascii_case(o.trim_ascii()))
        })
    };
    match req.sec_fetch_site.map(<[u8]>::trim_ascii) {
        Some(b"same-origin" | b"none") => false,
        Some(_) => !trusted_origin(),
        None => match req.origin {
            None => false,
            Some(origin) => {
                let host = origin
                    .trim_ascii()
                    .windows(3)
                    .position(|w| w == b"://")
                    .map(|at| &origin.trim_ascii()[at + 3..]);
                let same = matches!((host, req.host), (Some(o), Some(h)) if !o.is_empty() && o.eq_ignore_ascii_case(h.trim_ascii()));
                !same && !trusted_origin()
            }
        },
    }
}

/// What [`check_csrf`](crate::adapter::SessionExt::check_csrf) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfCheck {
    /// The token is this session's.
    Valid,
    /// A live session, and the token is not its own: missing, forged, another session's, or
    /// from before a login.
    Invalid,
    /// No live session: none, or it was logged out, revoked or expired since the page was
    /// served (an app may answer with its login page).
    NoSession,
}

/// Constant time: as long for every pair of equal-length inputs.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `mask || (secret XOR mask)`, base64url: a new text for every call, the same secret inside.
fn mask(secret: &[u8; SECRET_BYTES]) -> String {
    let pad: [u8; SECRET_BYTES] = crate::id::random_bytes();
    let mut out = Vec::with_capacity(2 * SECRET_BYTES);
    out.extend_from_slice(&pad);
    out.extend(secret.iter().zip(&pad).map(|(s, p)| s ^ p));
    URL_SAFE_NO_PAD.encode(out)
}

/// The secret inside a token, if it is one.
fn unmask(token: &str) -> Option<[u8; SECRET_BYTES]> {
    if token.len() > 4 * SECRET_BYTES {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    if raw.len() != 2 * SECRET_BYTES {
        return None;
    }
    let (pad, masked) = raw.split_at(SECRET_BYTES);
    let mut secret = [0u8; SECRET_BYTES];
    for (i, b) in secret.iter_mut().enumerate() {
        *b = pad[i] ^ masked[i];
    }
    Some(secret)
}

fn decode_secret(raw: &[u8]) -> Option<[u8; SECRET_BYTES]> {
    if raw.len() > 2 * SECRET_BYTES {
        return None;
    }
    URL_SAFE_NO_PAD.decode(raw).ok()?.try_into().ok()
}

impl Session {
    /// A CSRF token for a form or a `fetch` of this page: put it in the form with
    /// [`csrf_input`] (field `csrf_token`) or send it as the `X-CSRF-Token` header, and check
    /// it with [`check_csrf`](crate::adapter::SessionExt::check_csrf) (the adapters' `CsrfForm` and `CsrfHeader`
    /// extractors do). Every call masks the secret afresh, so no two responses carry the same
    /// token.
    ///
    /// With a session, the secret is the session's: made on first use (a compare-and-set in
    /// the store, so two pages loaded at once share it), kept in the session, and replaced at
    /// login (a token from before the login is refused after it). Without one (a visitor who
    /// has written nothing, the login form), nothing is written to the store: the token is
    /// derived from a nonce in a pre-session cookie (`<cookie name>-csrf`, sent with this
    /// response, living for the idle timeout from the last page that used it), which the
    /// checks accept while the browser has no session.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// let token = session.csrf_token().await?;
    /// let form = format!(
    ///     r#"<form method="post" action="/profile">{}<button>Save</button></form>"#,
    ///     tessera_core::csrf_input(&token),
    /// );
    /// assert!(form.contains(&token));
    /// assert_ne!(session.csrf_token().await?, token); // masked afresh on every call
    /// # Ok(()) }
    /// ```
    pub async fn csrf_token(&self) -> Result<String> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if matches!(st.status, Status::Ended) {
            return Err(Error::SessionEnded);
        }
        if let Some(secret) = st.data.get(fields::CSRF).and_then(|v| decode_secret(v)) {
            return Ok(mask(&secret));
        }
        match st.status {
            Status::Stored => {
                let Some(id) = st.id.clone() else {
                    return Err(Error::SessionEnded);
                };
                let fresh = URL_SAFE_NO_PAD.encode(crate::id::random_bytes::<SECRET_BYTES>());
                let key = self.mgr().key_of(&id);
                let held = self.store().set_if_absent(&key, fields::CSRF, &fresh).await;
                match held {
                    Ok(SetIfAbsent::Holds(v)) => {
                        let secret = match decode_secret(v.as_bytes()) {
                            Some(secret) => {
                                st.dirty.remove(fields::CSRF);
                                secret
                            }
                            // Not a secret (written by something else): replaced by ours with
                            // the request's write, rather than leaving the page without forms.
                            None => {
                                tracing::warn!("a session's CSRF secret is malformed: replaced");
                                st.dirty
                                    .insert(fields::CSRF.to_string(), Some(fresh.clone()));
                                decode_secret(fresh.as_bytes()).expect("a fresh secret")
                            }
                        };
                        st.data_mut().insert(
                            fields::CSRF.to_string(),
                            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
                        );
                        Ok(mask(&secret))
                    }
                    Ok(SetIfAbsent::Gone) => {
                        st.mark_ended();
                        Err(Error::SessionEnded)
                    }
                    Ok(SetIfAbsent::Moved) => {
                        st.mark_moved();
                        Err(Error::SessionEnded)
                    }
                    Err(e) => Self::failed(&mut st, e),
                }
            }
            // No session, and this request writes none: the pre-session token.
            _ if !st.has_changes() => Ok(self.pre_session_token()),
            // A session this request creates: its secret is written with it.
            _ => {
                let secret: [u8; SECRET_BYTES] = crate::id::random_bytes();
                let stored = URL_SAFE_NO_PAD.encode(secret);
                st.data_mut()
                    .insert(fields::CSRF.to_string(), stored.clone().into_bytes());
                st.dirty.insert(fields::CSRF.to_string(), Some(stored));
                Ok(mask(&secret))
            }
        }
    }

    /// A token of the pre-session secret (the request's nonce, or a new one); the response
    /// sets the cookie (again: its lifetime slides with every page that uses it).
    fn pre_session_token(&self) -> String {
        let mut pre = self.inner.pre.lock().unwrap_or_else(|e| e.into_inner());
        let nonce = *pre.nonce.get_or_insert_with(crate::id::random_bytes);
        pre.send = true;
        mask(&self.pre_session_secrets(&nonce)[0])
    }

    /// The pre-session secret of `nonce` under each cookie key (the current one first).
    fn pre_session_secrets(&self, nonce: &[u8; SECRET_BYTES]) -> Vec<[u8; SECRET_BYTES]> {
        self.mgr()
            .inner
            .config
            .signer
            .derive(PRE_SESSION_LABEL, nonce)
    }

    /// The pre-session cookie to send with the response, if any: a new nonce's, or its
    /// removal once the browser has a session (`stored`).
    pub(super) fn pre_session_cookie(&self, stored: bool) -> Option<String> {
        let pre = self.inner.pre.lock().unwrap_or_else(|e| e.into_inner());
        let cookie = &self.mgr().inner.config.cookie;
        match (pre.send, pre.nonce) {
            (true, Some(nonce)) => Some(cookie.pre_session_header(
                URL_SAFE_NO_PAD.encode(nonce),
                self.mgr().inner.config.idle_timeout,
            )),
            _ if pre.had && stored => Some(cookie.pre_session_removal()),
            _ => None,
        }
    }

    /// The cross-origin rule for a state-changing request (see [`is_cross_origin`], with the
    /// configuration's [trusted origins](crate::SessionConfigBuilder::trusted_origin)): a
    /// request that is not cross-origin is [`CsrfCheck::Valid`]; a cross-origin one only with
    /// this session's CSRF token (`token`, the `X-CSRF-Token` header), as
    /// [`check_csrf`](Session::check_csrf) says. The adapters' `OriginChecked` extractor, which
    /// guards their account endpoints, calls this.
    pub(crate) async fn check_origin(
        &self,
        req: &RequestOrigin<'_>,
        token: Option<&str>,
    ) -> Result<CsrfCheck> {
        if !is_cross_origin(req, &self.mgr().inner.config.trusted_origins) {
            return Ok(CsrfCheck::Valid);
        }
        self.check_csrf(token.unwrap_or("")).await
    }

    /// [`verify_csrf`](Session::verify_csrf), telling a wrong token from a session that is
    /// gone: what the adapters' `CsrfForm` and `CsrfHeader` answer with.
    ///
    /// Without a session, a token of the request's pre-session cookie is valid (the login
    /// form); another token is `Invalid` when the request carries a pre-session cookie, and
    /// `NoSession` otherwise (or when the request's session cookie names a session that is
    /// gone: the page's session ended).
    pub(crate) async fn check_csrf(&self, token: &str) -> Result<CsrfCheck> {
        if self.verify_csrf(token).await? {
            return Ok(CsrfCheck::Valid);
        }
        if self.is_stored().await? {
            return Ok(CsrfCheck::Invalid);
        }
        let had_cookie = self.inner.state.lock().await.had_cookie;
        let nonce = self
            .inner
            .pre
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .nonce;
        let valid = nonce.is_some_and(|nonce| {
            unmask(token).is_some_and(|given| {
                // Every key compared (constant time each), so the time says nothing of which.
                self.pre_session_secrets(&nonce)
                    .iter()
                    .fold(false, |ok, s| same(s, &given) | ok)
            })
        });
        Ok(if valid {
            CsrfCheck::Valid
        } else if had_cookie || nonce.is_none() {
            CsrfCheck::NoSession
        } else {
            CsrfCheck::Invalid
        })
    }

    /// Whether `token` is a CSRF token of this session (compared in constant time). `false`
    /// for a missing, malformed or forged token, a token of another session, and a session
    /// that no longer exists (logged out, revoked, expired).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// let token = session.csrf_token().await?;
    /// // A token that came another way than a form or a header (a WebSocket message):
    /// assert!(session.verify_csrf(&token).await?);
    /// assert!(!session.verify_csrf("forged").await?);
    /// # Ok(()) }
    /// ```
    pub async fn verify_csrf(&self, token: &str) -> Result<bool> {
        let Some(given) = unmask(token) else {
            return Ok(false);
        };
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if st.status != Status::Stored {
            return Ok(false);
        }
        let Some(secret) = st.data.get(fields::CSRF).and_then(|v| decode_secret(v)) else {
            return Ok(false);
        };
        Ok(same(&secret, &given))
    }
}

/// Drops the session's CSRF secret (at login): the next token is made from a new one.
pub(super) fn forget_secret(st: &mut State) {
    if st.remove_data(fields::CSRF).is_some() || st.dirty.contains_key(fields::CSRF) {
        if st.status == Status::Stored {
            st.dirty.insert(fields::CSRF.to_string(), None);
        } else {
            st.dirty.remove(fields::CSRF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_unmasks_to_its_secret_and_differs_every_time() {
        let secret: [u8; SECRET_BYTES] = crate::id::random_bytes();
        let (a, b) = (mask(&secret), mask(&secret));
        assert_ne!(a, b, "masked afresh");
        assert_eq!(unmask(&a), Some(secret));
        assert_eq!(unmask(&b), Some(secret));
        assert_eq!(a.len(), 86);
    }

    #[tokio::test]
    async fn a_page_without_a_session_writes_nothing_and_its_token_is_bound_to_its_cookie() {
        use crate::{Key, SessionConfig, SessionManager, Store};
        let manager = SessionManager::new(
            Store::memory(),
            SessionConfig::builder(Key::generate()).build().unwrap(),
        );
        let page = manager.start(None::<&str>);
        let token = page.csrf_token().await.unwrap();
        let out = page.finish(200).await;
        assert!(out.set_cookie.is_none(), "no session");
        let cookie = out.csrf_cookie.expect("the pre-session cookie");
        assert!(cookie.starts_with("__Host-tessera-csrf=") && cookie.contains("HttpOnly"));
        let pair = cookie.split(';').next().unwrap().to_string();
        let post = manager.start([pair.as_str()]);
        assert_eq!(post.check_csrf(&token).await.unwrap(), CsrfCheck::Valid);
        assert!(!post.is_stored().await.unwrap(), "nothing was written");
        let other = manager.start(None::<&str>).csrf_token().await.unwrap();
        assert_eq!(post.check_csrf(&other).await.unwrap(), CsrfCheck::Invalid);
        assert_eq!(post.check_csrf("forged").await.unwrap(), CsrfCheck::Invalid);
        let cookieless = manager.start(None::<&str>);
        assert_eq!(
            cookieless.check_csrf(&token).await.unwrap(),
            CsrfCheck::NoSession
        );
        // Once there is a session, its own tokens only, and the pre-session cookie goes.
        post.insert("x", &1).await.unwrap();
        let out = post.finish(200).await;
        let session = out.set_cookie.unwrap();
        assert!(out.csrf_cookie.unwrap().contains("Max-Age=0"));
        let next = manager.start([pair.as_str(), session.split(';').next().unwrap()]);
        assert_eq!(next.check_csrf(&token).await.unwrap(), CsrfCheck::Invalid);
        let own = next.csrf_token().await.unwrap();
        assert_eq!(next.check_csrf(&own).await.unwrap(), CsrfCheck::Valid);
    }

    #[test]
    fn cross_origin_rule() {
        let req =
            |method, site: Option<&'static str>, origin: Option<&'static str>| RequestOrigin {
                method,
                sec_fetch_site: site.map(str::as_bytes),
                origin: origin.map(str::as_bytes),
                host: Some(b"app.example:8080"),
            };
        let cross = |r: RequestOrigin<'_>| is_cross_origin(&r, &[]);
        assert!(!cross(req(
            "GET",
            Some("cross-site"),
            Some("https://evil.example")
        )));
        assert!(!cross(req("OPTIONS", Some("cross-site"), None)));
        assert!(cross(req("DELETE", Some("cross-site"), None)));
        assert!(cross(req(
            "POST",
            Some("same-site"),
            Some("https://app.example:8080")
        )));
        assert!(!cross(req("POST", Some("none"), None)));
        assert!(!cross(req("POST", None, Some("http://APP.example:8080"))));
        assert!(
            cross(req("POST", None, Some("http://app.example"))),
            "another port"
        );
        assert!(cross(req("POST", None, Some("null"))));
        assert!(cross(req("POST", None, Some("http://"))));
        assert!(!cross(req("PUT", None, None)));
        let trusted = ["https://partner.example".to_string()];
        let r = req("POST", Some("cross-site"), Some("https://partner.example"));
        assert!(!is_cross_origin(&r, &trusted));
        let r = req(
            "POST",
            Some("cross-site"),
            Some("https://partner.example.evil"),
        );
        assert!(is_cross_origin(&r, &trusted));
    }

    #[test]
    fn garbage_is_no_token() {
        for t in ["", "x", "%%%", &"A".repeat(86), &"A".repeat(10_000), "a b"] {
            let _ = unmask(t);
        }
        assert_eq!(unmask("not base64 !"), None);
        assert_eq!(unmask(&URL_SAFE_NO_PAD.encode([1u8; 63])), None);
        assert!(!same(b"ab", b"abc"));
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
    }
}
