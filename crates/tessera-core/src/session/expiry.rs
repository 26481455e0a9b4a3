//! Per-session expiry ("remember me"): this session persistent for 30 days, that one a
//! browser session.

use super::state::{CookieAction, State, Status};
use super::Session;
use crate::error::{Error, Result};
use crate::store::{fields, own_idle_ms, Timing};
use std::time::Duration;

/// How long one session lasts without use, and what kind of cookie carries it. Set with
/// [`Session::set_expiry`]; every instance honours it (it is stored in the session).
///
/// ```
/// # async fn demo(session: tessera_core::Session) -> tessera_core::Result<()> {
/// use std::time::Duration;
/// use tessera_core::Expiry;
/// let remember_me = true;
/// session.login("ada").await?;
/// session
///     .set_expiry(if remember_me {
///         Expiry::Persistent(Duration::from_secs(30 * 86_400))
///     } else {
///         Expiry::BrowserSession
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The configuration's: its idle timeout, and a persistent cookie if
    /// [`persistent`](crate::SessionConfigBuilder::persistent) is on.
    Default,
    /// A cookie without `Max-Age` (the browser drops it when it closes); the store keeps the
    /// session for the configured idle timeout.
    BrowserSession,
    /// A persistent cookie with `Max-Age` of this duration, and the store keeps the session
    /// for this long since its last use (sliding, like the idle timeout). From 1 s to
    /// [`longest_expiry`](crate::SessionConfigBuilder::longest_expiry).
    Persistent(Duration),
}

impl Expiry {
    /// As stored in `fields::OWN_EXPIRY` (`None` for the default: the field goes).
    fn stored(self, idle: Duration) -> Option<String> {
        match self {
            Expiry::Default => None,
            Expiry::BrowserSession => Some(format!("b {}", idle.as_millis())),
            Expiry::Persistent(d) => Some(format!("p {}", d.as_millis())),
        }
    }

    fn parse(raw: Option<&Vec<u8>>) -> Expiry {
        match (own_idle_ms(raw), raw.and_then(|r| r.first())) {
            (Some(ms), Some(b'p')) => Expiry::Persistent(Duration::from_millis(ms)),
            (Some(_), Some(b'b')) => Expiry::BrowserSession,
            _ => Expiry::Default,
        }
    }
}

impl Session {
    /// Gives this session its own expiry ("remember me"), or back the configured one with
    /// [`Expiry::Default`]. It takes effect on this response (the cookie is sent again with
    /// the new `Max-Age`, or none) and in the store (the TTL slides by it from now on, on every
    /// instance); a login's id rotation keeps it. A persistent expiry outside 1 s to
    /// [`longest_expiry`](crate::SessionConfigBuilder::longest_expiry) is
    /// [`Error::TooLarge`] and changes nothing.
    pub async fn set_expiry(&self, expiry: Expiry) -> Result<()> {
        let config = &self.mgr().inner.config;
        if let Expiry::Persistent(d) = expiry {
            if d < Duration::from_secs(1) || d > config.longest_expiry {
                return Err(Error::TooLarge {
                    what: "seconds of session expiry",
                    limit: config.longest_expiry.as_secs() as usize,
                });
            }
        }
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let name = fields::OWN_EXPIRY;
        match expiry.stored(config.idle_timeout) {
            Some(v) => {
                st.data.insert(name.to_string(), v.clone().into_bytes());
                st.dirty.insert(name.to_string(), Some(v));
            }
            None => {
                st.data.remove(name);
                if st.status == Status::Stored {
                    st.dirty.insert(name.to_string(), None);
                } else {
                    st.dirty.remove(name);
                }
            }
        }
        if st.cookie == CookieAction::Keep {
            st.cookie = CookieAction::Send;
        }
        Ok(())
    }

    /// This session's expiry: [`Expiry::Default`] unless [`set_expiry`](Session::set_expiry)
    /// gave it another.
    pub async fn expiry(&self) -> Result<Expiry> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(Expiry::parse(st.data.get(fields::OWN_EXPIRY)))
    }

    /// The timing of this session's writes: its own idle timeout when it has one.
    pub(super) fn timing_for(&self, st: &State) -> Timing {
        let t = self.timing();
        match own_idle_ms(st.data.get(fields::OWN_EXPIRY)) {
            Some(idle_ms) => Timing { idle_ms, ..t },
            None => t,
        }
    }

    /// The cookie's `Max-Age` for this session (`None`: a browser-session cookie).
    pub(super) fn cookie_max_age(&self, st: &State) -> Option<Duration> {
        let config = &self.mgr().inner.config;
        match Expiry::parse(st.data.get(fields::OWN_EXPIRY)) {
            Expiry::Persistent(d) => Some(d),
            Expiry::BrowserSession => None,
            Expiry::Default => config.cookie.persistent.then_some(config.idle_timeout),
        }
    }

    /// Whether a TTL refresh sends the cookie again (to slide its `Max-Age`).
    pub(super) fn cookie_slides(&self, st: &State) -> bool {
        self.cookie_max_age(st).is_some()
    }
}
