//! CSRF protection that belongs to the session: one secret per session, kept in its hash, and
//! tokens masked afresh for every page, so a compressed response never repeats the same bytes
//! (no BREACH oracle).

use super::state::{State, Status};
use super::Session;
use crate::error::{Error, Result};
use crate::store::fields;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Bytes of a session's CSRF secret (and of each token's mask).
const SECRET_BYTES: usize = 32;

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
/// assert!(tessera_core::is_form_content_type(Some(b"application/x-www-form-urlencoded; charset=utf-8")));
/// assert!(!tessera_core::is_form_content_type(Some(b"text/plain")));
/// assert!(!tessera_core::is_form_content_type(None));
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

/// What [`Session::check_csrf`] found.
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
    URL_SAFE_NO_PAD.decode(raw).ok()?.try_into().ok()
}

impl Session {
    /// A CSRF token for a form or a `fetch` of this page: put it in the form with
    /// [`csrf_input`] (field `csrf_token`) or send it as the `X-CSRF-Token` header, and check
    /// it with [`verify_csrf`](Session::verify_csrf) (the adapters' `CsrfForm` and `CsrfHeader`
    /// extractors do). The session's secret is made on first use (so a page with a form
    /// starts a session), kept in the session, and replaced at login (a token from before the
    /// login is refused after it); every call masks it afresh, so no two responses carry the
    /// same token.
    pub async fn csrf_token(&self) -> Result<String> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if matches!(st.status, Status::Ended) {
            return Err(Error::SessionEnded);
        }
        if let Some(secret) = st.data.get(fields::CSRF).and_then(|v| decode_secret(v)) {
            return Ok(mask(&secret));
        }
        let secret: [u8; SECRET_BYTES] = crate::id::random_bytes();
        let stored = URL_SAFE_NO_PAD.encode(secret);
        st.data
            .insert(fields::CSRF.to_string(), stored.clone().into_bytes());
        st.dirty.insert(fields::CSRF.to_string(), Some(stored));
        Ok(mask(&secret))
    }

    /// [`verify_csrf`](Session::verify_csrf), telling a wrong token from a session that is
    /// gone: what the adapters' `CsrfForm` and `CsrfHeader` answer with.
    pub async fn check_csrf(&self, token: &str) -> Result<CsrfCheck> {
        if self.verify_csrf(token).await? {
            Ok(CsrfCheck::Valid)
        } else if self.is_stored().await? {
            Ok(CsrfCheck::Invalid)
        } else {
            Ok(CsrfCheck::NoSession)
        }
    }

    /// Whether `token` is a CSRF token of this session (compared in constant time). `false`
    /// for a missing, malformed or forged token, a token of another session, and a session
    /// that no longer exists (logged out, revoked, expired).
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
    if st.data.remove(fields::CSRF).is_some() || st.dirty.contains_key(fields::CSRF) {
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
