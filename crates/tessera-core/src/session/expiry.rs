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
    /// for this long since its last use (sliding, like the idle timeout). From twice the
    /// [touch interval](crate::SessionConfigBuilder::touch_interval) (at least 1 s: the TTL
    /// slides at most once per touch interval, so a shorter one could end a session in use) to
    /// [`longest_expiry`](crate::SessionConfigBuilder::longest_expiry).
    Persistent(Duration),
}

impl Expiry {
    /// As stored in `fields::OWN_EXPIRY` (`None` for the default: the field goes). A browser
    /// session stores no duration: it always has the configured idle timeout.
    fn stored(self) -> Option<String> {
        match self {
            Expiry::Default => None,
            Expiry::BrowserSession => Some("b".into()),
            Expiry::Persistent(d) => Some(format!("p {}", d.as_millis())),
        }
    }

    /// What is stored, a persistent expiry cut to `longest_ms` (the configuration may have
    /// been lowered since it was set).
    fn parse(raw: Option<&Vec<u8>>, longest_ms: u64) -> Expiry {
        if let Some(ms) = own_idle_ms(raw, longest_ms) {
            return Expiry::Persistent(Duration::from_millis(ms));
        }
        match raw.map(Vec::as_slice) {
            Some(r) if r.first() == Some(&b'b') => Expiry::BrowserSession,
            _ => Expiry::Default,
        }
    }
}

impl Session {
    /// Gives this session its own expiry ("remember me"), or back the configured one with
    /// [`Expiry::Default`]. It takes effect on this response (the cookie is sent again with
    /// the new `Max-Age`, or none) and in the store (the TTL slides by it from now on, on every
    /// instance); a login's id rotation keeps it. A persistent expiry outside twice the touch
    /// interval (at least 1 s) to
    /// [`longest_expiry`](crate::SessionConfigBuilder::longest_expiry) is
    /// [`Error::InvalidExpiry`] and changes nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use std::time::Duration;
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).longest_expiry(Duration::from_secs(30 * 86_400)).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// use tessera_core::Expiry;
    /// // With `.longest_expiry(Duration::from_secs(30 * 86_400))` in the configuration:
    /// let remember_me = true;
    /// session.login("ada").await?;
    /// if remember_me {
    ///     session.set_expiry(Expiry::Persistent(Duration::from_secs(30 * 86_400))).await?;
    /// }
    /// assert!(session.expiry_age().await? > Duration::from_secs(29 * 86_400));
    /// let a_year = Expiry::Persistent(Duration::from_secs(365 * 86_400));
    /// assert!(session.set_expiry(a_year).await.is_err()); // past longest_expiry
    /// # Ok(()) }
    /// ```
    pub async fn set_expiry(&self, expiry: Expiry) -> Result<()> {
        let config = &self.mgr().inner.config;
        if let Expiry::Persistent(d) = expiry {
            let shortest = (config.touch_interval * 2).max(Duration::from_secs(1));
            if d < shortest || d > config.longest_expiry {
                return Err(Error::InvalidExpiry {
                    shortest_secs: shortest.as_secs_f64().ceil() as u64,
                    longest_secs: config.longest_expiry.as_secs(),
                });
            }
        }
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let name = fields::OWN_EXPIRY;
        match expiry.stored() {
            Some(v) => {
                st.data_mut()
                    .insert(name.to_string(), v.clone().into_bytes());
                st.dirty.insert(name.to_string(), Some(v));
            }
            None => {
                st.remove_data(name);
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// use tessera_core::Expiry;
    /// assert_eq!(session.expiry().await?, Expiry::Default);
    /// session.set_expiry(Expiry::BrowserSession).await?; // "remember me" unticked
    /// assert_eq!(session.expiry().await?, Expiry::BrowserSession);
    /// # Ok(()) }
    /// ```
    pub async fn expiry(&self) -> Result<Expiry> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(Expiry::parse(
            st.data.get(fields::OWN_EXPIRY),
            self.timing().longest_ms,
        ))
    }

    /// How long this session lives if it is not used again, counted from now: its idle
    /// timeout (its own, after [`set_expiry`](Session::set_expiry)) less the time since the
    /// store last slid its TTL, and never past the absolute lifetime. A session not stored yet
    /// counts from the save at the end of this request. The TTL slides at most once per touch
    /// interval, so when this request did not slide it and the store did not say when it last
    /// did, this counts as if it slid a whole touch interval ago: the session may live up to
    /// one touch interval longer, never shorter.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use std::time::Duration;
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).idle_timeout(Duration::from_secs(3600)).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// let left = session.expiry_age().await?;
    /// assert!(left <= Duration::from_secs(3600));
    /// # Ok(()) }
    /// ```
    pub async fn expiry_age(&self) -> Result<Duration> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let t = self.timing_for(&st);
        let idle = Duration::from_millis(t.idle_ms);
        let mut left = match (st.status, st.slid_at) {
            (Status::Stored, Some(at)) => idle.saturating_sub(at.elapsed()),
            (Status::Stored, None) => idle.saturating_sub(Duration::from_millis(t.touch_ms)),
            _ => idle,
        };
        if t.absolute_ms > 0 {
            let created = st
                .data
                .get(fields::CREATED)
                .and_then(|v| super::time_of_ms(std::str::from_utf8(v).ok()?));
            let end = created.unwrap_or_else(std::time::SystemTime::now)
                + Duration::from_millis(t.absolute_ms);
            let until_end = end
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            left = left.min(until_end);
        }
        Ok(left)
    }

    /// When this session ends if it is not used again: now plus
    /// [`expiry_age`](Session::expiry_age) (the same lower bound).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// let ends = session.expiry_date().await?;
    /// assert!(ends > std::time::SystemTime::now());
    /// # Ok(()) }
    /// ```
    pub async fn expiry_date(&self) -> Result<std::time::SystemTime> {
        Ok(std::time::SystemTime::now() + self.expiry_age().await?)
    }

    /// The timing of this session's writes: its own idle timeout when it has one.
    pub(super) fn timing_for(&self, st: &State) -> Timing {
        let t = self.timing();
        match own_idle_ms(st.data.get(fields::OWN_EXPIRY), t.longest_ms) {
            Some(idle_ms) => Timing { idle_ms, ..t },
            None => t,
        }
    }

    /// The cookie's `Max-Age` for this session (`None`: a browser-session cookie).
    pub(super) fn cookie_max_age(&self, st: &State) -> Option<Duration> {
        let config = &self.mgr().inner.config;
        match Expiry::parse(st.data.get(fields::OWN_EXPIRY), self.timing().longest_ms) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_expiry_is_cut_to_the_longest_the_configuration_allows_now() {
        let p = b"p 90000".to_vec();
        assert_eq!(own_idle_ms(Some(&p), 60_000), Some(60_000));
        assert_eq!(own_idle_ms(Some(&p), 120_000), Some(90_000));
        assert_eq!(
            Expiry::parse(Some(&p), 60_000),
            Expiry::Persistent(Duration::from_secs(60))
        );
        let b = b"b".to_vec();
        assert_eq!(
            own_idle_ms(Some(&b), 60_000),
            None,
            "the configured idle timeout"
        );
        assert_eq!(Expiry::parse(Some(&b), 60_000), Expiry::BrowserSession);
        for junk in [&b"p "[..], b"p -1", b"p 1e9", b"x 100", b"p 0", b""] {
            assert_eq!(own_idle_ms(Some(&junk.to_vec()), 60_000), None, "{junk:?}");
        }
        assert_eq!(Expiry::parse(None, 60_000), Expiry::Default);
    }
}
