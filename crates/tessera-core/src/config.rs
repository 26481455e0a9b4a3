//! Session settings.

use crate::cookie::{CookieConfig, Signer};
use std::time::Duration;

mod builder;
mod validate;

pub use self::builder::SessionConfigBuilder;

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
    /// The longest expiry one session may be given (`Session::set_expiry`); at least the idle
    /// timeout.
    pub(crate) longest_expiry: Duration,
    /// Reverse proxies in front of the app (see `SessionConfigBuilder::trusted_proxies`).
    pub(crate) trusted_proxies: usize,
    pub(crate) forwarded_header: crate::ForwardedHeader,
    pub(crate) touch_interval: Duration,
    pub(crate) absolute_lifetime: Option<Duration>,
    pub(crate) namespace: String,
    pub(crate) cookie: CookieConfig,
    pub(crate) signer: Signer,
    pub(crate) cookie_name: String,
    /// The pre-session CSRF cookie's name, made once (every request looks for it).
    pub(crate) pre_session_cookie_name: String,
    pub(crate) max_sessions_per_user: usize,
    pub(crate) limits: Limits,
    pub(crate) indexed: Vec<IndexedField>,
    pub(crate) protected: Vec<String>,
    pub(crate) field_keys: Option<crate::field_crypto::FieldKeys>,
    pub(crate) undecryptable_as_absent: bool,
    pub(crate) trail: TrailLimits,
    pub(crate) events: Option<EventsConfig>,
    /// Origins (`scheme://host[:port]`) whose cross-origin requests pass the origin check
    /// without a CSRF token (see `Session::check_origin`).
    pub(crate) trusted_origins: Vec<String>,
}

/// Bounds of the activity trail (see [`SessionConfigBuilder::activity_trail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrailLimits {
    pub(crate) max_entries: usize,
    pub(crate) max_action_bytes: usize,
    /// Device lists show each session's last action.
    pub(crate) in_device_list: bool,
}

/// Lifecycle events settings (see [`SessionConfigBuilder::lifecycle_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventsConfig {
    /// The stream keeps about this many events (`XADD MAXLEN ~`).
    pub(crate) retention: usize,
    /// How often an instance looks for expired sessions.
    pub(crate) sweep_interval: Duration,
    /// Names this process in the events it causes.
    pub(crate) instance: String,
}

/// This process's default instance name: `$HOSTNAME` (or `host`) and the process id.
fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

/// A field whose values are indexed, so sessions can be found by it (see
/// [`SessionConfigBuilder::index_field`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedField {
    pub(crate) name: String,
    /// A JSON list: each element is indexed.
    pub(crate) list: bool,
}

impl SessionConfig {
    /// Whether lifecycle events are published (see
    /// [`SessionConfigBuilder::lifecycle_events`]).
    pub fn lifecycle_events_on(&self) -> bool {
        self.events.is_some()
    }

    /// `{[namespace]events}`: the lifecycle events stream. Its helper keys (`:expiry`,
    /// `:users`, `:sweep`) share its hash tag, so one script reaches them all on Cluster.
    pub(crate) fn events_key(&self) -> String {
        crate::layout::keys::events(&self.namespace)
    }

    /// Whether `field` is stored encrypted.
    pub fn is_protected(&self, field: &str) -> bool {
        self.protected.iter().any(|p| p == field)
    }

    /// The indexed fields, in the order declared: `(name, is_list)`.
    pub fn indexed_fields(&self) -> impl Iterator<Item = (&str, bool)> {
        self.indexed.iter().map(|f| (f.name.as_str(), f.list))
    }

    pub(crate) fn indexed(&self, field: &str) -> Option<&IndexedField> {
        self.indexed.iter().find(|f| f.name == field)
    }

    /// `[namespace]index:<field>:<value>`: the sessions whose `field` holds `value` (the value
    /// escaped like a user id, so it can never pick a Cluster slot).
    pub(crate) fn value_index_key(&self, field: &str, value: &str) -> String {
        crate::layout::keys::value_index(&self.namespace, field, value)
    }

    /// `[namespace]index:<field>`: the values `field` holds in some session.
    pub(crate) fn values_key(&self, field: &str) -> String {
        crate::layout::keys::field_values(&self.namespace, field)
    }

    /// Idle timeout: a session not used for this long expires (default 30 minutes).
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The longest expiry one session may be given (see
    /// [`SessionConfigBuilder::longest_expiry`]).
    pub fn longest_expiry(&self) -> Duration {
        self.longest_expiry
    }

    /// How many reverse proxies stand in front of the app (see
    /// [`SessionConfigBuilder::trusted_proxies`]).
    pub fn trusted_proxies(&self) -> usize {
        self.trusted_proxies
    }

    /// The header the trusted proxies write the client's address to.
    pub fn forwarded_header(&self) -> crate::ForwardedHeader {
        self.forwarded_header
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

    /// `[namespace]session:<storage key>` (see [`crate::layout::keys`]).
    pub(crate) fn session_key(&self, storage_key: &str) -> String {
        crate::layout::keys::session(&self.namespace, storage_key)
    }

    /// `[namespace]user:<id>:sessions`, the id escaped by
    /// [`user_key_part`](crate::layout::keys::user_key_part).
    pub(crate) fn index_key(&self, user_id: &str) -> String {
        crate::layout::keys::user_sessions(&self.namespace, user_id)
    }

    /// The most user fields one session may hold.
    pub fn max_fields(&self) -> usize {
        self.limits.max_fields
    }

    /// The largest value one field may hold, in bytes as stored.
    pub fn max_value_bytes(&self) -> usize {
        self.limits.max_value_bytes
    }

    /// The most index terms one indexed field of a session may hold.
    pub fn max_index_terms_per_field(&self) -> usize {
        self.limits.max_index_terms_per_field
    }

    /// The most index terms all indexed fields of one session may hold together.
    pub fn max_index_terms_per_session(&self) -> usize {
        self.limits.max_index_terms
    }

    /// The longest index term, in bytes.
    pub fn max_index_term_bytes(&self) -> usize {
        self.limits.max_index_term_bytes
    }
}

/// The default device limit: without one, a client holding a user's credentials could create
/// sessions without end, and logout-all and the device list (O(sessions of the user)) would
/// grow past any timeout.
pub(crate) const DEFAULT_MAX_SESSIONS_PER_USER: usize = 1_000;

/// Size limits of one session, the same on every store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_fields: usize,
    pub(crate) max_value_bytes: usize,
    /// Index terms (distinct indexed values) one indexed field may hold.
    pub(crate) max_index_terms_per_field: usize,
    /// Index terms all indexed fields of one session may hold together.
    pub(crate) max_index_terms: usize,
    /// Bytes of one index term.
    pub(crate) max_index_term_bytes: usize,
}

/// Field names are short identifiers; a longer name is refused like a large value.
pub(crate) const MAX_FIELD_NAME_BYTES: usize = 256;

/// The longest expiry a session may have: ten years.
pub(crate) const MAX_EXPIRY: Duration = Duration::from_secs(10 * 365 * 86_400);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_fields: 1_000,
            max_value_bytes: 64 * 1024,
            max_index_terms_per_field: 64,
            max_index_terms: 256,
            max_index_term_bytes: 256,
        }
    }
}
