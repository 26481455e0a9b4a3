//! Taking over sessions written by actix-session's Redis store, so switching to tessera logs
//! nobody out.

use actix_web::http::header::{HeaderMap, COOKIE};
use serde_json::Value;
use std::collections::HashMap;
use tessera_core::adapter::{ManagerExt as _, TakeOver, Wrote};
use tessera_core::{Session, SessionManager};

/// Takes over sessions written by [actix-session](https://docs.rs/actix-session)'s Redis
/// store (`RedisSessionStore`): a request without a tessera cookie that carries
/// actix-session's cookie has that session read and written as a new tessera session with the
/// same values, in the same request, then its old key deleted if it still holds what was read;
/// the old cookie is removed in the response. A failed write leaves the old session as it was;
/// a session whose user logged out everywhere since the switch is refused (see
/// [`Records::take_over`](tessera_core::adapter::Records::take_over)). Each value was
/// JSON text in actix-session, and is the JSON value in tessera (`session.get::<T>` reads it
/// as `actix_session::Session::get::<T>` did). Opt-in, with
/// [`SessionMiddleware::import_actix_session`](crate::SessionMiddleware::import_actix_session).
///
/// actix-session's cookie is checked with its own key (encrypted by default, or signed), so a
/// forged cookie names nothing and costs no store command.
///
/// ```
/// use tessera_actix::{ActixSessionImport, SessionMiddleware};
/// # use tessera_core::{Key, SessionConfig, Store};
/// # let actix_key = [7u8; 64]; // actix_web::cookie::Key::master() of the old app
/// let import = ActixSessionImport::new(&actix_key)
///     .unwrap()
///     .user_id_field("user_id"); // binds the user, so device lists and logout-all see it
/// let mw = SessionMiddleware::new(Store::memory(), SessionConfig::builder(Key::generate()).build().unwrap())
///     .import_actix_session(import);
/// # let _ = mw;
/// ```
#[derive(Clone)]
pub struct ActixSessionImport {
    key: cookie::Key,
    cookie_name: String,
    signed: bool,
    key_prefix: String,
    user_id_field: Option<String>,
    grace: std::time::Duration,
}

impl std::fmt::Debug for ActixSessionImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActixSessionImport")
            .field("cookie_name", &self.cookie_name)
            .field("signed", &self.signed)
            .field("key_prefix", &self.key_prefix)
            .field("user_id_field", &self.user_id_field)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// The key given to [`ActixSessionImport::new`] is shorter than 64 bytes.
#[derive(Debug, thiserror::Error)]
#[error("actix-session's key is 64 bytes (actix_web::cookie::Key::master()), got {0}")]
pub struct ImportKeyError(usize);

impl ActixSessionImport {
    /// How long a taken-over session's old key stays by default (see [`Self::grace`]).
    pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

    /// With actix-session's cookie key: the 64 bytes of its `Key::master()`. Defaults as
    /// actix-session's: cookie `id`, encrypted (private) content, Redis keys equal to the
    /// session key (no prefix).
    pub fn new(master_key: &[u8]) -> Result<Self, ImportKeyError> {
        let key =
            cookie::Key::try_from(master_key).map_err(|_| ImportKeyError(master_key.len()))?;
        Ok(ActixSessionImport {
            key,
            cookie_name: "id".into(),
            signed: false,
            key_prefix: String::new(),
            user_id_field: None,
            grace: Self::DEFAULT_GRACE,
        })
    }

    /// actix-session's cookie name (`cookie_name` there; default `id`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Whether actix-session's cookie was signed (`CookieContentSecurity::Signed`) rather
    /// than encrypted (the default).
    pub fn signed(mut self, signed: bool) -> Self {
        self.signed = signed;
        self
    }

    /// What actix-session's `cache_keygen` put before the session key in Redis key names
    /// (default none).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The value that names the session's user: the taken-over session is logged in as that
    /// user (a string, or a number as text), so it appears in the user's device list and
    /// logout-all ends it. The value stays a session field as well.
    pub fn user_id_field(mut self, field: impl Into<String>) -> Self {
        self.user_id_field = Some(field.into());
        self
    }

    /// How long the old session stays after it was taken over (default [`Self::DEFAULT_GRACE`]):
    /// the requests the browser sent with the old cookie before the first one's answer
    /// (a page's parallel requests, tabs restored together) are taken over too, each as a
    /// session of its own, rather than answered as logged out, since tessera's copy is
    /// under a new id they cannot find. A replay of the old cookie within it is taken over as
    /// well; a logout-all refuses it at once. Zero: deleted at once.
    pub fn grace(mut self, grace: std::time::Duration) -> Self {
        self.grace = grace;
        self
    }

    pub(crate) fn cookie_name_str(&self) -> &str {
        &self.cookie_name
    }

    /// The session key in the request's actix-session cookie, if it carries a valid one.
    pub(crate) fn session_key(&self, headers: &HeaderMap) -> Option<String> {
        for header in headers.get_all(COOKIE) {
            let Ok(text) = std::str::from_utf8(header.as_bytes()) else {
                continue;
            };
            for part in text.split(';') {
                // Percent-decoded, as actix-web reads its cookies.
                let Ok(c) = cookie::Cookie::parse_encoded(part.trim().to_string()) else {
                    continue;
                };
                if c.name() != self.cookie_name {
                    continue;
                }
                let name = self.cookie_name.as_str();
                let mut jar = cookie::CookieJar::new();
                jar.add_original(c);
                let found = if self.signed {
                    jar.signed(&self.key).get(name)
                } else {
                    jar.private(&self.key).get(name)
                };
                if let Some(c) = found {
                    return Some(c.value().to_string());
                }
            }
        }
        None
    }

    /// Takes the session stored under `session_key` into `session` (a new session of this
    /// request), and writes it now, through
    /// [`Records::take_over`](tessera_core::adapter::Records::take_over): written first, then the old
    /// key deleted if it still holds what was read; refused for a user who logged out
    /// everywhere since the switch. Whether the old cookie may go: the session was taken
    /// over, refused, or there is nothing to take (`false` when the store failed: the old
    /// session is untouched, for the next request to take).
    pub(crate) async fn take_over(
        &self,
        manager: &SessionManager,
        session: &Session,
        session_key: &str,
    ) -> bool {
        let key = format!("{}{session_key}", self.key_prefix);
        let decode = |raw: &[u8]| {
            let state: HashMap<String, String> = match serde_json::from_slice(raw) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "an actix-session session could not be decoded: not taken over");
                    return None;
                }
            };
            let user = self
                .user_id_field
                .as_ref()
                .and_then(|f| match value_of(state.get(f)?) {
                    Value::String(s) => Some(s),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            Some((state, user))
        };
        let write = |state: HashMap<String, String>, user: Option<String>| async move {
            for (field, text) in &state {
                if let Err(e) = session.insert(field, &value_of(text)).await {
                    tracing::warn!(error = %e, "an actix-session value tessera refuses was left out");
                }
            }
            match user {
                Some(u) => session.login(&u).await?,
                None => session.save().await?,
            }
            Ok(Wrote::New(()))
        };
        match manager
            .records()
            .take_over(&key, self.grace, decode, write)
            .await
        {
            Ok(TakeOver::Nothing) => true,
            Ok(TakeOver::Taken(())) => {
                tracing::debug!("took over an actix-session session");
                true
            }
            Ok(TakeOver::Refused) => {
                tracing::info!("an actix-session session of a user who logged out everywhere since: not taken over");
                true
            }
            Ok(TakeOver::EndedMeanwhile(())) => {
                if let Err(e) = session.destroy().await {
                    tracing::warn!(error = %e, "could not end a session taken over during a logout-all");
                }
                true
            }
            // Another request of this browser took it over at the same moment: each keeps the
            // session it wrote (both logged in, both in the user's index), the browser keeps
            // the last cookie it receives.
            Ok(TakeOver::Raced(())) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not take over an actix-session session; it stays for the next request");
                false
            }
        }
    }
}

/// An actix-session value (JSON text) as tessera's JSON value; anything else is kept as the
/// text it is.
fn value_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}
