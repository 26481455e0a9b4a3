//! Signed session cookies: the value is `base64url(id) "." base64url(HMAC-SHA256)`.

use crate::error::ConfigError;
use crate::id::{SessionId, ID_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use std::fmt;
use std::time::Duration;

const ID_B64: usize = 22; // base64url of 16 bytes, no padding
const TAG_B64: usize = 43; // base64url of 32 bytes, no padding
pub(crate) const VALUE_LEN: usize = ID_B64 + 1 + TAG_B64;

/// An HMAC-SHA256 key that signs session cookies. At least 32 bytes.
///
/// ```
/// use tessera_core::Key;
/// let key = Key::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap();
/// assert!(Key::from_bytes(b"too short").is_err());
/// let fresh = Key::generate();
/// # let _ = (key, fresh);
/// ```
#[derive(Clone)]
pub struct Key(hmac::Key);

impl Key {
    /// A key from raw bytes (32 bytes or more).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() < 32 {
            return Err(ConfigError::KeyTooShort(bytes.len()));
        }
        Ok(Key(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// A key from hex text (64 hex digits or more), as in the `TESSERA_SECRET` variable.
    pub fn from_hex(hex: &str) -> Result<Self, ConfigError> {
        let hex = hex.trim();
        if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::KeyNotHex);
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| ConfigError::KeyNotHex))
            .collect::<Result<_, _>>()?;
        Self::from_bytes(&bytes)
    }

    /// A random 32-byte key. Cookies signed with it stop verifying when the process exits, so
    /// use it only for tests and demos.
    pub fn generate() -> Self {
        Key(hmac::Key::new(
            hmac::HMAC_SHA256,
            &crate::id::random_bytes::<32>(),
        ))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SameSite {
    /// `SameSite=Strict`
    Strict,
    /// `SameSite=Lax` (the default)
    Lax,
    /// `SameSite=None` (requires `Secure`)
    None,
}

/// Cookie attributes. Defaults: name `tessera`, `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`,
/// no `Domain`, a browser-session cookie (no `Max-Age`), and the `__Host-` prefix whenever the
/// cookie is `Secure` with `Path=/` and no `Domain` (so `__Host-tessera` by default).
#[derive(Debug, Clone)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) persistent: bool,
    /// `None`: on exactly when the cookie can carry it (`Secure`, `Path=/`, no `Domain`).
    pub(crate) host_prefix: Option<bool>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: "tessera".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
            persistent: false,
            host_prefix: None,
        }
    }
}

impl CookieConfig {
    /// Whether the `__Host-` prefix is added: as configured, else whenever the cookie can
    /// carry it. A name that already has a `__Host-`/`__Secure-` prefix gets none added.
    fn adds_host_prefix(&self) -> bool {
        let can = self.secure && self.path == "/" && self.domain.is_none();
        !has_prefix(&self.name, "__Host-")
            && !has_prefix(&self.name, "__Secure-")
            && self.host_prefix.unwrap_or(can)
    }

    /// The name cookies had before the `__Host-` prefix became the default, when the prefix
    /// is added by default (not asked for): such cookies are still read, and re-issued.
    pub(crate) fn legacy_name(&self) -> Option<&str> {
        (self.host_prefix.is_none() && self.adds_host_prefix()).then_some(self.name.as_str())
    }

    /// The full cookie name, with the `__Host-` prefix when it applies.
    pub(crate) fn full_name(&self) -> String {
        if self.adds_host_prefix() {
            format!("__Host-{}", self.name)
        } else {
            self.name.clone()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let ok_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok_name {
            return Err(ConfigError::Cookie("name must be non-empty [A-Za-z0-9._-]"));
        }
        let host = self.host_prefix == Some(true) || has_prefix(&self.name, "__Host-");
        if host && (!self.secure || self.path != "/" || self.domain.is_some()) {
            return Err(ConfigError::Cookie(
                "the __Host- prefix requires Secure, Path=/ and no Domain (browsers drop such a cookie)",
            ));
        }
        if has_prefix(&self.name, "__Secure-") && !self.secure {
            return Err(ConfigError::Cookie(
                "the __Secure- prefix requires Secure (browsers drop such a cookie)",
            ));
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(ConfigError::Cookie("SameSite=None requires Secure"));
        }
        Ok(())
    }

    fn base(&self, value: String) -> cookie::Cookie<'static> {
        self.named(self.full_name(), value)
    }

    fn named(&self, name: String, value: String) -> cookie::Cookie<'static> {
        let mut c = cookie::Cookie::new(name, value);
        c.set_http_only(self.http_only);
        c.set_secure(self.secure);
        c.set_path(self.path.clone());
        c.set_same_site(match self.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        });
        if let Some(d) = &self.domain {
            c.set_domain(d.clone());
        }
        c
    }

    /// The cookie carrying `value`: persistent with this `Max-Age`, or a browser-session
    /// cookie (`None`).
    pub(crate) fn set_header(&self, value: String, max_age: Option<Duration>) -> String {
        let mut c = self.base(value);
        if let Some(max_age) = max_age {
            c.set_max_age(time::Duration::seconds(max_age.as_secs() as i64));
        }
        c.to_string()
    }

    pub(crate) fn removal_header(&self) -> String {
        Self::removal(self.base(String::new()))
    }

    fn removal(mut c: cookie::Cookie<'static>) -> String {
        c.set_max_age(time::Duration::ZERO);
        c.set_expires(time::OffsetDateTime::UNIX_EPOCH);
        c.to_string()
    }

    /// The name of the pre-session cookie: the session cookie's, with `-csrf` after it (so
    /// `__Host-tessera-csrf` by default). It carries the random nonce that the CSRF token of a
    /// page without a session is derived from (a double-submit cookie; see session/csrf.rs).
    pub(crate) fn pre_session_name(&self) -> String {
        format!("{}-csrf", self.full_name())
    }

    /// The pre-session cookie carrying `value`: the session cookie's attributes, for
    /// `max_age` (short-lived: a login form left open longer goes back to a fresh one).
    pub(crate) fn pre_session_header(&self, value: String, max_age: Duration) -> String {
        let mut c = self.named(self.pre_session_name(), value);
        c.set_max_age(time::Duration::seconds(max_age.as_secs() as i64));
        c.to_string()
    }

    /// Drops the pre-session cookie (the browser has a session now).
    pub(crate) fn pre_session_removal(&self) -> String {
        Self::removal(self.named(self.pre_session_name(), String::new()))
    }
}

/// Browsers match the `__Host-` / `__Secure-` prefixes case-insensitively (RFC 6265bis).
fn has_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The most validly signed cookies of our name one request may make us look up. Browsers send
/// several cookies of one name (different `Path`/`Domain`, one tossed by a sibling subdomain);
/// each candidate costs one load, so the count is bounded.
pub(crate) const MAX_CANDIDATES: usize = 4;

/// The validly signed values of cookie `name` in `Cookie` headers, in the order sent (at most
/// [`MAX_CANDIDATES`], distinct ids), and whether more were left out. Parsed at byte level: a
/// non-ASCII byte in another cookie (browsers send UTF-8 raw) does not hide ours.
pub(crate) fn candidates<H: AsRef<[u8]>>(
    headers: &[H],
    name: &str,
    signer: &Signer,
) -> (Vec<Verified>, bool) {
    let mut found: Vec<Verified> = Vec::new();
    let mut truncated = false;
    for value in values_named(headers, name) {
        let Some(v) = signer.verify(name, value) else {
            continue;
        };
        if found.iter().any(|f| f.id == v.id) {
            continue;
        }
        if found.len() == MAX_CANDIDATES {
            truncated = true;
            continue;
        }
        found.push(v);
    }
    (found, truncated)
}

/// The values of every cookie called `name` in `Cookie` headers, in the order sent, surrounding
/// quotes removed. Parsed at byte level: a non-ASCII byte in another cookie (browsers send UTF-8
/// raw) does not hide ours. The one parser of our cookies (the session's and the pre-session
/// CSRF cookie).
pub(crate) fn values_named<'a, H: AsRef<[u8]>>(
    headers: &'a [H],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .flat_map(|h| h.as_ref().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            if pair[..eq].trim_ascii() != name.as_bytes() {
                return None;
            }
            let value = pair[eq + 1..].trim_ascii();
            Some(match value {
                [b'"', inner @ .., b'"'] => inner,
                v => v,
            })
        })
}

/// Signs and verifies cookie values with a list of keys: the first signs, all verify.
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    keys: Vec<Key>,
}

/// What verifying a cookie value gave.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) id: SessionId,
    /// Signed with an older key: re-issue under the current one.
    pub(crate) stale_key: bool,
}

impl Signer {
    pub(crate) fn new(current: Key, previous: Vec<Key>) -> Self {
        let mut keys = vec![current];
        keys.extend(previous);
        Signer { keys }
    }

    /// HMAC-SHA256 of `label \0 data` under each key, the current one first: a value derived
    /// from the signing key for one purpose (the label), which only the server can compute.
    pub(crate) fn derive(&self, label: &str, data: &[u8]) -> Vec<[u8; 32]> {
        let mut m = Vec::with_capacity(label.len() + 1 + data.len());
        m.extend_from_slice(label.as_bytes());
        m.push(0);
        m.extend_from_slice(data);
        self.keys
            .iter()
            .map(|k| {
                let mut out = [0u8; 32];
                out.copy_from_slice(hmac::sign(&k.0, &m).as_ref());
                out
            })
            .collect()
    }

    fn message(cookie_name: &str, id: &SessionId) -> Vec<u8> {
        // Bind the signature to the cookie name, so a value cannot be replayed under another.
        let mut m = Vec::with_capacity(cookie_name.len() + 1 + ID_LEN);
        m.extend_from_slice(cookie_name.as_bytes());
        m.push(0);
        m.extend_from_slice(id.as_bytes());
        m
    }

    pub(crate) fn sign(&self, cookie_name: &str, id: &SessionId) -> String {
        let tag = hmac::sign(&self.keys[0].0, &Self::message(cookie_name, id));
        let mut out = String::with_capacity(VALUE_LEN);
        URL_SAFE_NO_PAD.encode_string(id.as_bytes(), &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut out);
        out
    }

    /// Checks shape, encoding and signature; any failure is `None` (treated as no cookie).
    /// The tag comparison is constant-time (`ring::hmac::verify`).
    pub(crate) fn verify(&self, cookie_name: &str, value: &[u8]) -> Option<Verified> {
        let b = value;
        if b.len() != VALUE_LEN || b[ID_B64] != b'.' {
            return None;
        }
        let mut id = [0u8; ID_LEN];
        let n = URL_SAFE_NO_PAD.decode_slice(&b[..ID_B64], &mut id).ok()?;
        let mut tag = [0u8; 32];
        let m = URL_SAFE_NO_PAD
            .decode_slice(&b[ID_B64 + 1..], &mut tag)
            .ok()?;
        if n != ID_LEN || m != 32 {
            return None;
        }
        let id = SessionId::from_bytes(id);
        let msg = Self::message(cookie_name, &id);
        self.keys
            .iter()
            .position(|k| hmac::verify(&k.0, &msg, &tag).is_ok())
            .map(|i| Verified {
                id,
                stale_key: i > 0,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_rotate_and_reject() {
        let (k1, k2) = (Key::generate(), Key::generate());
        let old = Signer::new(k1.clone(), vec![]);
        let new = Signer::new(k2.clone(), vec![k1]);
        let id = SessionId::generate();
        let v_old = old.sign("tessera", &id);
        assert_eq!(v_old.len(), VALUE_LEN);
        let got = new.verify("tessera", v_old.as_bytes()).unwrap();
        assert_eq!(got.id, id);
        assert!(got.stale_key);
        let v_new = new.sign("tessera", &id);
        assert!(!new.verify("tessera", v_new.as_bytes()).unwrap().stale_key);
        // Bound to the cookie name.
        assert!(new.verify("other", v_new.as_bytes()).is_none());
        // Tampering anywhere, truncation, garbage.
        for i in 0..v_new.len() {
            let mut t = v_new.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            assert!(new.verify("tessera", &t).is_none(), "tampered at {i}");
        }
        assert!(new.verify("tessera", &v_new.as_bytes()[1..]).is_none());
        assert!(new.verify("tessera", b"").is_none());
        assert!(new
            .verify("tessera", "é".repeat(VALUE_LEN).as_bytes())
            .is_none());
        // A key it does not know.
        let stranger = Signer::new(Key::generate(), vec![]);
        assert!(stranger.verify("tessera", v_new.as_bytes()).is_none());
    }

    #[test]
    fn host_prefix_needs_secure_root_no_domain() {
        let mut c = CookieConfig {
            host_prefix: Some(true),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.full_name(), "__Host-tessera");
        c.domain = Some("example.com".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn host_prefix_is_the_default_whenever_the_cookie_can_carry_it() {
        let c = CookieConfig::default();
        assert_eq!(c.full_name(), "__Host-tessera", "Secure, Path=/, no Domain");
        let plain = CookieConfig {
            secure: false,
            ..Default::default()
        };
        assert_eq!(plain.full_name(), "tessera", "not Secure: no prefix");
        let domain = CookieConfig {
            domain: Some("example.com".into()),
            ..Default::default()
        };
        assert_eq!(domain.full_name(), "tessera");
        let opt_out = CookieConfig {
            host_prefix: Some(false),
            ..Default::default()
        };
        assert_eq!(opt_out.full_name(), "tessera");
        // A name with a prefix of its own: validated, never prefixed twice.
        for (name, secure, ok) in [
            ("__Host-x", false, false),
            ("__host-x", false, false),
            ("__Secure-x", false, false),
            ("__Host-x", true, true),
            ("__Secure-x", true, true),
        ] {
            let c = CookieConfig {
                name: name.into(),
                secure,
                ..Default::default()
            };
            assert_eq!(c.validate().is_ok(), ok, "{name} secure={secure}");
            if ok {
                assert_eq!(c.full_name(), name);
            }
        }
    }

    #[test]
    fn candidates_parse_bytes_and_keep_every_signed_value() {
        let s = Signer::new(Key::generate(), vec![]);
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let (va, vb) = (s.sign("t", &a), s.sign("t", &b));
        // UTF-8 (not visible ASCII) in another cookie of the same header.
        let header = format!("pref=Zo\u{eb}; t={va}; t=garbage; t=\"{vb}\"; t={va}");
        let (found, truncated) = candidates(&[header.as_bytes()], "t", &s);
        assert_eq!(
            found.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
            vec![a, b]
        );
        assert!(!truncated);
        let mut raw = b"x=\xff\xfe; ".to_vec();
        for _ in 0..MAX_CANDIDATES + 2 {
            raw.extend_from_slice(
                format!("t={}; ", s.sign("t", &SessionId::generate())).as_bytes(),
            );
        }
        let (found, truncated) = candidates(&[raw.as_slice()], "t", &s);
        assert_eq!(found.len(), MAX_CANDIDATES);
        assert!(truncated, "more signed candidates than looked up");
    }

    #[test]
    fn key_parsing() {
        assert_eq!(Key::from_hex("zz").unwrap_err(), ConfigError::KeyNotHex);
        assert_eq!(
            Key::from_hex("00ff").unwrap_err(),
            ConfigError::KeyTooShort(2)
        );
        assert!(Key::from_hex(&"ab".repeat(32)).is_ok());
    }
}
