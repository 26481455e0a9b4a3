//! `SessionConfigBuilder::build`: the checks of a combination of settings, in order (the
//! first failing one is the error), then the configuration.

use super::MAX_FIELD_NAME_BYTES;
use super::{default_instance, EventsConfig, SessionConfig, SessionConfigBuilder, MAX_EXPIRY};
use crate::cookie::Signer;
use crate::error::ConfigError;
use crate::layout::fields::is_reserved;
use std::time::Duration;

impl SessionConfigBuilder {
    /// Checks and builds the configuration.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate()).build();
    /// assert!(config.is_ok());
    /// // A combination that cannot work is an error at startup, never a silent fix:
    /// let err = SessionConfig::builder(Key::generate())
    ///     .idle_timeout(Duration::from_secs(30))
    ///     .touch_interval(Duration::from_secs(60))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("touch interval"));
    /// ```
    pub fn build(self) -> Result<SessionConfig, ConfigError> {
        self.check_timeouts()?;
        self.check_namespace_and_limits()?;
        self.check_fields()?;
        self.check_trail_and_events()?;
        let events = (self.events == Some(true)).then(|| EventsConfig {
            retention: self.events_retention,
            sweep_interval: self.sweep_interval,
            instance: self.instance.unwrap_or_else(default_instance),
        });
        let field_keys = self
            .field_key
            .map(|current| crate::field_crypto::FieldKeys {
                current,
                previous: self.previous_field_keys,
            });
        self.cookie.validate()?;
        let longest_expiry = self.longest_expiry.unwrap_or(self.idle_timeout);
        if longest_expiry < self.idle_timeout || longest_expiry > MAX_EXPIRY {
            return Err(ConfigError::Timeouts(
                "longest_expiry is at least the idle timeout and at most ten years",
            ));
        }
        Ok(SessionConfig {
            idle_timeout: self.idle_timeout,
            longest_expiry,
            trusted_proxies: self.trusted_proxies,
            forwarded_header: self.forwarded_header,
            touch_interval: self.touch_interval,
            absolute_lifetime: self.absolute_lifetime,
            namespace: self.namespace,
            cookie_name: self.cookie.full_name(),
            pre_session_cookie_name: self.cookie.pre_session_name(),
            cookie: self.cookie,
            signer: Signer::new(self.key, self.previous),
            max_sessions_per_user: self.max_sessions_per_user.unwrap_or(0),
            limits: self.limits,
            indexed: self.indexed,
            protected: self.protected,
            field_keys,
            undecryptable_as_absent: self.undecryptable_as_absent,
            trail: self.trail,
            events,
            trusted_origins: self.trusted_origins,
        })
    }

    /// The idle timeout, touch interval and absolute lifetime.
    fn check_timeouts(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The namespace, the size limits and the device limit.
    fn check_namespace_and_limits(&self) -> Result<(), ConfigError> {
        if self
            .namespace
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'{' || b == b'}')
        {
            return Err(ConfigError::Namespace(
                "no whitespace, control characters or braces (braces would change Cluster hash slots)",
            ));
        }
        if self.limits.max_fields == 0 || self.limits.max_value_bytes == 0 {
            return Err(ConfigError::Limit(
                "max_fields and max_value_bytes must be at least 1",
            ));
        }
        if self.max_sessions_per_user == Some(0) {
            return Err(ConfigError::Limit(
                "max_sessions_per_user must be at least 1",
            ));
        }
        Ok(())
    }

    /// The indexed and protected fields' names, and the field key.
    fn check_fields(&self) -> Result<(), ConfigError> {
        for (i, f) in self.indexed.iter().enumerate() {
            let bad = f.name.is_empty()
                || is_reserved(&f.name)
                || f.name.len() > 64
                || f.name.bytes().any(|b| {
                    b == b':' || b == b'{' || b == b'}' || b == b'%' || b <= b' ' || b == 0x7f
                });
            if bad {
                return Err(ConfigError::Index(
                    "an indexed field's name is 1 to 64 bytes, does not start with `__`, and has no `:`, braces, `%`, spaces or control characters",
                ));
            }
            if ["user_id", "created_at", "last_seen"].contains(&f.name.as_str()) {
                return Err(ConfigError::Index(
                    "`user_id`, `created_at` and `last_seen` name tessera's own fields in queries; the user is indexed already (`user:<id>:sessions`)",
                ));
            }
            if self.indexed[..i].iter().any(|g| g.name == f.name) {
                return Err(ConfigError::Index("a field is indexed twice"));
            }
        }
        for p in &self.protected {
            if p.is_empty() || is_reserved(p) || p.len() > MAX_FIELD_NAME_BYTES {
                return Err(ConfigError::Protected(
                    "a protected field's name is a user field name (1 to 256 bytes, not starting with `__`)",
                ));
            }
            if self.indexed.iter().any(|f| &f.name == p) {
                return Err(ConfigError::Protected(
                    "a protected field cannot be indexed (its stored value is ciphertext)",
                ));
            }
        }
        if !self.protected.is_empty() && self.field_key.is_none() {
            return Err(ConfigError::Protected(
                "protected fields need a field key (`field_key`)",
            ));
        }
        Ok(())
    }

    /// The activity trail's bounds and the events' settings.
    fn check_trail_and_events(&self) -> Result<(), ConfigError> {
        if self.trail.max_entries == 0
            || self.trail.max_entries > 10_000
            || self.trail.max_action_bytes == 0
            || self.trail.max_action_bytes > 4096
        {
            return Err(ConfigError::Limit(
                "the activity trail keeps 1 to 10,000 entries of 1 to 4,096 bytes",
            ));
        }
        if self.events == Some(true)
            && (self.events_retention == 0 || self.sweep_interval < Duration::from_millis(100))
        {
            return Err(ConfigError::Limit(
                "events need a retention of at least 1 and a sweep interval of at least 100 ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cookie::{Key, SameSite};

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
        assert!(
            b().cookie_name("__Host-x").secure(false).build().is_err(),
            "browsers drop a __Host- cookie without Secure"
        );
        assert!(b().max_fields(0).build().is_err());
        assert_eq!(
            b().build().unwrap().max_sessions_per_user(),
            Some(1000),
            "a device limit by default: a user's sessions cannot grow without end"
        );
        assert_eq!(
            b().max_sessions_per_user(None)
                .build()
                .unwrap()
                .max_sessions_per_user(),
            None
        );
    }
}
