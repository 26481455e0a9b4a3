//! Session settings.

use crate::cookie::{CookieConfig, Key, SameSite, Signer};
use crate::error::ConfigError;
use std::time::Duration;

/// How sessions behave: timeouts, key namespace, cookie and signing keys.
///
/// Build it with [`SessionConfig::builder`]; `build()` checks the combination.
///
/// ```
/// use std::time::Duration;
/// use tessera_core::{Key, SameSite, SessionConfig};
///
/// let config = SessionConfig::builder(Key::generate())
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .touch_interval(Duration::from_secs(60))
///     .absolute_lifetime(Some(Duration::from_secs(12 * 3600)))
///     .namespace("shop:")
///     .cookie_name("sid")
///     .same_site(SameSite::Strict)
///     .build()
///     .unwrap();
/// assert_eq!(config.idle_timeout(), Duration::from_secs(1800));
/// ```
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) idle_timeout: Duration,
    pub(crate) touch_interval: Duration,
    pub(crate) absolute_lifetime: Option<Duration>,
    pub(crate) namespace: String,
    pub(crate) cookie: CookieConfig,
    pub(crate) signer: Signer,
    pub(crate) cookie_name: String,
    pub(crate) max_sessions_per_user: usize,
}

impl SessionConfig {
    /// Starts a builder; `key` signs new cookies.
    pub fn builder(key: Key) -> SessionConfigBuilder {
        SessionConfigBuilder {
            key,
            previous: Vec::new(),
            idle_timeout: Duration::from_secs(30 * 60),
            touch_interval: Duration::from_secs(60),
            absolute_lifetime: None,
            namespace: String::new(),
            cookie: CookieConfig::default(),
            max_sessions_per_user: None,
        }
    }

    /// Idle timeout: a session not used for this long expires (default 30 minutes).
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Touch interval: a read-only request refreshes the TTL only when the last refresh is at
    /// least this old (default 60 s).
    pub fn touch_interval(&self) -> Duration {
        self.touch_interval
    }

    /// Absolute lifetime since creation, if any.
    pub fn absolute_lifetime(&self) -> Option<Duration> {
        self.absolute_lifetime
    }

    /// Key namespace prefix (default empty).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The cookie name as sent to browsers (with the `__Host-` prefix when enabled).
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The most sessions one user may have at once (`None`: no limit).
    pub fn max_sessions_per_user(&self) -> Option<usize> {
        (self.max_sessions_per_user > 0).then_some(self.max_sessions_per_user)
    }

    pub(crate) fn session_key(&self, storage_key: &str) -> String {
        format!("{}session:{}", self.namespace, storage_key)
    }

    pub(crate) fn index_key(&self, user_id: &str) -> String {
        format!("{}user:{}:sessions", self.namespace, user_id)
    }
}

/// Builder for [`SessionConfig`].
#[derive(Debug)]
#[must_use]
pub struct SessionConfigBuilder {
    key: Key,
    previous: Vec<Key>,
    idle_timeout: Duration,
    touch_interval: Duration,
    absolute_lifetime: Option<Duration>,
    namespace: String,
    cookie: CookieConfig,
    max_sessions_per_user: Option<usize>,
}

impl SessionConfigBuilder {
    /// Limit of concurrent sessions per user (default none). A login beyond it ends that
    /// user's least recently used sessions (by last TTL refresh).
    pub fn max_sessions_per_user(mut self, max: Option<usize>) -> Self {
        self.max_sessions_per_user = max;
        self
    }
    /// Adds an older key that still verifies cookies (key rotation). Cookies signed with it
    /// are accepted and re-issued under the current key.
    pub fn previous_key(mut self, key: Key) -> Self {
        self.previous.push(key);
        self
    }
    /// Idle timeout (default 30 minutes).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
    /// Minimum time between TTL refreshes on read-only requests (default 60 s).
    pub fn touch_interval(mut self, d: Duration) -> Self {
        self.touch_interval = d;
        self
    }
    /// Absolute lifetime since creation (default none).
    pub fn absolute_lifetime(mut self, d: Option<Duration>) -> Self {
        self.absolute_lifetime = d;
        self
    }
    /// Key namespace prefix, e.g. `"shop:"` gives `shop:session:<key>` (default empty).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }
    /// Cookie name (default `tessera`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }
    /// `Secure` attribute (default on). Turn off only for plain-http development.
    pub fn secure(mut self, on: bool) -> Self {
        self.cookie.secure = on;
        self
    }
    /// `HttpOnly` attribute (default on).
    pub fn http_only(mut self, on: bool) -> Self {
        self.cookie.http_only = on;
        self
    }
    /// `SameSite` attribute (default `Lax`).
    pub fn same_site(mut self, s: SameSite) -> Self {
        self.cookie.same_site = s;
        self
    }
    /// `Path` attribute (default `/`).
    pub fn path(mut self, p: impl Into<String>) -> Self {
        self.cookie.path = p.into();
        self
    }
    /// `Domain` attribute (default none: host-only).
    pub fn domain(mut self, d: Option<String>) -> Self {
        self.cookie.domain = d;
        self
    }
    /// Persistent cookie with `Max-Age` = idle timeout, re-sent when the TTL slides (default:
    /// off, a browser-session cookie).
    pub fn persistent(mut self, on: bool) -> Self {
        self.cookie.persistent = on;
        self
    }
    /// Use the `__Host-` name prefix (requires `Secure`, `Path=/`, no `Domain`).
    pub fn host_prefix(mut self, on: bool) -> Self {
        self.cookie.host_prefix = on;
        self
    }

    /// Checks and builds the configuration.
    pub fn build(self) -> Result<SessionConfig, ConfigError> {
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Timeouts("idle timeout must be at least 1 s"));
        }
        if self.touch_interval >= self.idle_timeout {
            return Err(ConfigError::Timeouts(
                "touch interval must be shorter than the idle timeout",
            ));
        }
        if matches!(self.absolute_lifetime, Some(d) if d < Duration::from_secs(1)) {
            return Err(ConfigError::Timeouts(
                "absolute lifetime must be at least 1 s",
            ));
        }
        if self
            .namespace
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'{' || b == b'}')
        {
            return Err(ConfigError::Namespace(
                "no whitespace, control characters or braces (braces would change Cluster hash slots)",
            ));
        }
        if self.max_sessions_per_user == Some(0) {
            return Err(ConfigError::Limit(
                "max_sessions_per_user must be at least 1",
            ));
        }
        self.cookie.validate()?;
        Ok(SessionConfig {
            idle_timeout: self.idle_timeout,
            touch_interval: self.touch_interval,
            absolute_lifetime: self.absolute_lifetime,
            namespace: self.namespace,
            cookie_name: self.cookie.full_name(),
            cookie: self.cookie,
            signer: Signer::new(self.key, self.previous),
            max_sessions_per_user: self.max_sessions_per_user.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_combinations() {
        let b = || SessionConfig::builder(Key::generate());
        assert!(b().build().is_ok());
        assert!(b()
            .touch_interval(Duration::from_secs(3600))
            .build()
            .is_err());
        assert!(b().idle_timeout(Duration::ZERO).build().is_err());
        assert!(b().namespace("a{b}").build().is_err());
        assert!(b().secure(false).same_site(SameSite::None).build().is_err());
        assert!(b().cookie_name("bad name").build().is_err());
    }
}
