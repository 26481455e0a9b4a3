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
    pub(crate) max_sessions_per_user: usize,
    pub(crate) limits: Limits,
    pub(crate) indexed: Vec<IndexedField>,
    pub(crate) protected: Vec<String>,
    pub(crate) field_keys: Option<crate::protect::FieldKeys>,
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
    /// Starts a builder; `key` signs new cookies.
    pub fn builder(key: Key) -> SessionConfigBuilder {
        SessionConfigBuilder {
            key,
            previous: Vec::new(),
            idle_timeout: Duration::from_secs(30 * 60),
            longest_expiry: None,
            trusted_proxies: 0,
            forwarded_header: crate::ForwardedHeader::XForwardedFor,
            touch_interval: Duration::from_secs(60),
            absolute_lifetime: None,
            namespace: String::new(),
            cookie: CookieConfig::default(),
            max_sessions_per_user: Some(DEFAULT_MAX_SESSIONS_PER_USER),
            limits: Limits::default(),
            indexed: Vec::new(),
            protected: Vec::new(),
            field_key: None,
            previous_field_keys: Vec::new(),
            undecryptable_as_absent: false,
            trail: TrailLimits {
                max_entries: 50,
                max_action_bytes: 100,
                in_device_list: false,
            },
            events: None,
            events_retention: 100_000,
            sweep_interval: Duration::from_secs(5),
            instance: None,
            trusted_origins: Vec::new(),
        }
    }

    /// Whether lifecycle events are published (see
    /// [`SessionConfigBuilder::lifecycle_events`]).
    pub fn lifecycle_events_on(&self) -> bool {
        self.events.is_some()
    }

    /// `{[namespace]events}`: the lifecycle events stream. Its helper keys (`:expiry`,
    /// `:users`, `:sweep`) share its hash tag, so one script reaches them all on Cluster.
    pub(crate) fn events_key(&self) -> String {
        format!("{{{}events}}", self.namespace)
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
        format!("{}index:{}:{}", self.namespace, field, user_key_part(value))
    }

    /// `[namespace]index:<field>`: the values `field` holds in some session.
    pub(crate) fn values_key(&self, field: &str) -> String {
        format!("{}index:{}", self.namespace, field)
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

    pub(crate) fn session_key(&self, storage_key: &str) -> String {
        format!("{}session:{}", self.namespace, storage_key)
    }

    /// `[namespace]user:<id>:sessions`, the id escaped by [`user_key_part`].
    pub(crate) fn index_key(&self, user_id: &str) -> String {
        format!("{}user:{}:sessions", self.namespace, user_key_part(user_id))
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

/// A user id as it appears in a key: readable as it is, except that `%`, `{`, `}`, spaces,
/// control characters and DEL are percent-escaped (`%7B`). So an id can never pick its own
/// Redis Cluster slot with a `{hash tag}`, and two different ids never share a key (the
/// escaping is one-to-one because `%` itself is escaped).
pub(crate) fn user_key_part(user_id: &str) -> std::borrow::Cow<'_, str> {
    let special = |b: u8| b == b'%' || b == b'{' || b == b'}' || b <= b' ' || b == 0x7f;
    if !user_id.bytes().any(special) {
        return std::borrow::Cow::Borrowed(user_id);
    }
    let mut out = String::with_capacity(user_id.len() + 8);
    for c in user_id.chars() {
        if c.is_ascii() && special(c as u8) {
            out.push_str(&format!("%{:02X}", c as u8));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The default device limit: without one, a client holding a user's credentials could create
/// sessions without end, and logout-all and the device list (O(sessions of the user)) would
/// grow past any timeout.
pub(crate) const DEFAULT_MAX_SESSIONS_PER_USER: usize = 1_000;

/// Builder for [`SessionConfig`].
#[derive(Debug)]
#[must_use]
pub struct SessionConfigBuilder {
    key: Key,
    previous: Vec<Key>,
    idle_timeout: Duration,
    longest_expiry: Option<Duration>,
    trusted_proxies: usize,
    forwarded_header: crate::ForwardedHeader,
    touch_interval: Duration,
    absolute_lifetime: Option<Duration>,
    namespace: String,
    cookie: CookieConfig,
    max_sessions_per_user: Option<usize>,
    limits: Limits,
    indexed: Vec<IndexedField>,
    protected: Vec<String>,
    field_key: Option<crate::protect::FieldKey>,
    previous_field_keys: Vec<crate::protect::FieldKey>,
    undecryptable_as_absent: bool,
    trail: TrailLimits,
    events: Option<bool>,
    events_retention: usize,
    sweep_interval: Duration,
    instance: Option<String>,
    trusted_origins: Vec<String>,
}

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

impl SessionConfigBuilder {
    /// Indexes a field's value, so that sessions can be found and counted by it
    /// ([`SessionManager::find_sessions`](crate::SessionManager::find_sessions)). A string
    /// value is indexed as its text, a number or boolean as its JSON text; other values are
    /// not indexed. Each indexed value costs one sorted set
    /// (`[namespace]index:<field>:<value>`) and a member in the field's value list
    /// (`[namespace]index:<field>`); a write that changes the field adds the session to the new
    /// value's set before it writes.
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .index_field("tenant")
    ///     .index_list_field("cart")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.indexed_fields().count(), 2);
    /// ```
    pub fn index_field(mut self, name: impl Into<String>) -> Self {
        self.indexed.push(IndexedField {
            name: name.into(),
            list: false,
        });
        self
    }

    /// Stores `name` encrypted and authenticated (AES-256-GCM, a fresh nonce per write, the
    /// field name and the session's storage key bound in): `redis-cli HGET` shows
    /// `enc:v1:<key id>:<base64>`, the handler sees the plain value. Needs a
    /// [`field_key`](Self::field_key). A protected field cannot be indexed, and
    /// [`Session::increment`](crate::Session::increment) on it is
    /// [`Error::ProtectedField`](crate::Error::ProtectedField).
    ///
    /// ```
    /// # use tessera_core::{FieldKey, Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .protected_field("api_token")
    ///     .field_key(FieldKey::generate())
    ///     .build()
    ///     .unwrap();
    /// assert!(config.is_protected("api_token"));
    /// ```
    pub fn protected_field(mut self, name: impl Into<String>) -> Self {
        self.protected.push(name.into());
        self
    }

    /// The key that encrypts protected fields.
    pub fn field_key(mut self, key: crate::protect::FieldKey) -> Self {
        self.field_key = Some(key);
        self
    }

    /// An older field key that still decrypts (key rotation): a value written under it is
    /// read, and written under the current key the next time that field is written.
    pub fn previous_field_key(mut self, key: crate::protect::FieldKey) -> Self {
        self.previous_field_keys.push(key);
        self
    }

    /// What reading a protected value that does not decrypt (tampered, written under an
    /// unknown key, not encrypted) gives: by default
    /// [`Error::Undecryptable`](crate::Error::Undecryptable) (a 500, logged); with `true`, the
    /// field reads as absent (still logged).
    pub fn undecryptable_as_absent(mut self, on: bool) -> Self {
        self.undecryptable_as_absent = on;
        self
    }

    /// Indexes a field that holds a JSON list: each element is indexed as
    /// [`index_field`](Self::index_field) indexes a value (a session whose `cart` is
    /// `["p-17", "p-3"]` is found by `cart = p-17` and by `cart = p-3`). A value that is not a
    /// list is indexed as one element.
    pub fn index_list_field(mut self, name: impl Into<String>) -> Self {
        self.indexed.push(IndexedField {
            name: name.into(),
            list: true,
        });
        self
    }

    /// Bounds of each session's activity trail ([`Session::record`](crate::Session::record)):
    /// at most `max_entries` entries (default 50; the oldest drop) of at most
    /// `max_action_bytes` each (default 100). Recording is opt-in: a session that never
    /// records stores nothing for it.
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .activity_trail(20, 64)
    ///     .build()
    ///     .unwrap();
    /// # let _ = config;
    /// ```
    pub fn activity_trail(mut self, max_entries: usize, max_action_bytes: usize) -> Self {
        self.trail.max_entries = max_entries;
        self.trail.max_action_bytes = max_action_bytes;
        self
    }

    /// Device lists ([`Session::list_sessions`](crate::Session::list_sessions)) also show each
    /// session's last recorded action (default off: it costs the list one more field per
    /// session, the trail, read from the store).
    pub fn device_last_action(mut self, on: bool) -> Self {
        self.trail.in_device_list = on;
        self
    }

    /// Publishes lifecycle events (created, login, rotated, logout, logout-all, revoked,
    /// evicted, expired) to a capped stream every instance can read
    /// ([`SessionManager::read_events`](crate::SessionManager::read_events)), and runs the
    /// expiry sweeper that turns expiries into `expired` events. Off by default: each new
    /// session, login and ending then costs one more command (BENCHMARKS.md).
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .lifecycle_events(true)
    ///     .events_retention(1_000_000)
    ///     .build()
    ///     .unwrap();
    /// assert!(config.lifecycle_events_on());
    /// ```
    pub fn lifecycle_events(mut self, on: bool) -> Self {
        self.events = Some(on);
        self
    }

    /// About how many events the stream keeps (default 100,000; `XADD MAXLEN ~`): a consumer
    /// that falls further behind than this misses events, and is told so
    /// ([`EventPage::missed`](crate::EventPage::missed)).
    pub fn events_retention(mut self, max_events: usize) -> Self {
        self.events_retention = max_events;
        self
    }

    /// How often an instance sweeps for sessions that expired (default 5 s): an `expired`
    /// event is published within about twice this after the expiry (sooner where the
    /// server's keyspace notifications are on).
    pub fn expiry_sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every;
        self
    }

    /// The name of this instance in the events it causes (default `$HOSTNAME-<pid>`).
    pub fn instance_name(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Limit of concurrent sessions per user (default 1,000). A login beyond it ends that
    /// user's least recently used sessions (by last TTL refresh). `None` removes the limit;
    /// then logout-all and the device list cost grows without bound with a user's sessions.
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
    /// The longest expiry [`Session::set_expiry`](crate::Session::set_expiry) may give one
    /// session ("remember me for 30 days"); default: the idle timeout, so no session outlives
    /// it unless this is raised. User-index entries are kept for twice this long, so a
    /// long-lived session is never missed by logout-all or a device list.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .longest_expiry(Duration::from_secs(30 * 86_400))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.longest_expiry(), Duration::from_secs(30 * 86_400));
    /// ```
    pub fn longest_expiry(mut self, d: Duration) -> Self {
        self.longest_expiry = Some(d);
        self
    }
    /// How many reverse proxies (load balancers) stand in front of the app, each adding the
    /// address it received the request from to the header
    /// [`forwarded_header`](Self::forwarded_header) names (default 0: the connection's peer
    /// is the client). Device lists then show the client's address, not the load balancer's;
    /// see [`ClientInfo::behind_proxies`](crate::adapter::ClientInfo::behind_proxies). Count exactly:
    /// one too many lets a client choose the address shown.
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate()).trusted_proxies(1).build().unwrap();
    /// assert_eq!(config.trusted_proxies(), 1);
    /// ```
    pub fn trusted_proxies(mut self, n: usize) -> Self {
        self.trusted_proxies = n;
        self
    }
    /// The header the trusted proxies write the client's address to (default
    /// `X-Forwarded-For`; `Forwarded` for proxies that write RFC 7239). Only that header is
    /// read: the other one, if a request carries it, is the client's own words.
    pub fn forwarded_header(mut self, h: crate::ForwardedHeader) -> Self {
        self.forwarded_header = h;
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
    /// An origin (`scheme://host[:port]`, as browsers send it in `Origin`, e.g.
    /// `https://app.example.com`) trusted to make state-changing requests without a CSRF
    /// token: the cross-origin check ([`Session::check_origin`](crate::adapter::SessionExt::check_origin),
    /// the adapters' `OriginChecked`) lets its requests through. Compared whole, ignoring ASCII
    /// case. None by default.
    pub fn trusted_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins
            .push(origin.into().trim_end_matches('/').to_string());
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
    /// The `__Host-` name prefix. By default it is used whenever the cookie can carry it
    /// (`Secure`, `Path=/`, no `Domain`): a sibling subdomain cannot set or shadow such a
    /// cookie. `false` opts out (the cookie is then named exactly `cookie_name`); `true` makes
    /// a configuration that cannot carry it a build error.
    pub fn host_prefix(mut self, on: bool) -> Self {
        self.cookie.host_prefix = Some(on);
        self
    }
    /// The most user fields one session may hold (default 1,000). A change that would go past
    /// it is refused up front with [`Error::TooLarge`](crate::Error::TooLarge) (HTTP 400),
    /// on every store.
    pub fn max_fields(mut self, n: usize) -> Self {
        self.limits.max_fields = n;
        self
    }
    /// The largest value one field may hold, in bytes as stored (default 64 KiB). A larger
    /// value is refused with [`Error::TooLarge`](crate::Error::TooLarge) (HTTP 400).
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.limits.max_value_bytes = n;
        self
    }
    /// The most index terms (distinct indexed values: a scalar field has one, a list field
    /// one per distinct element) one indexed field of a session may hold (default 64). Each
    /// term is a sorted-set entry in the store: a larger list is refused up front with
    /// [`Error::TooLarge`](crate::Error::TooLarge) (HTTP 400), on every store, before anything
    /// is written.
    pub fn max_index_terms_per_field(mut self, n: usize) -> Self {
        self.limits.max_index_terms_per_field = n;
        self
    }
    /// The most index terms all indexed fields of one session may hold together (default
    /// 256); past it, [`Error::TooLarge`](crate::Error::TooLarge) (HTTP 400), nothing written.
    pub fn max_index_terms_per_session(mut self, n: usize) -> Self {
        self.limits.max_index_terms = n;
        self
    }
    /// The longest index term, in bytes (default 256; it is part of a key name in the store);
    /// a longer indexed value or list element is [`Error::TooLarge`](crate::Error::TooLarge)
    /// (HTTP 400), nothing written.
    pub fn max_index_term_bytes(mut self, n: usize) -> Self {
        self.limits.max_index_term_bytes = n;
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
        for (i, f) in self.indexed.iter().enumerate() {
            let bad = f.name.is_empty()
                || f.name.starts_with("__")
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
            if p.is_empty() || p.starts_with("__") || p.len() > MAX_FIELD_NAME_BYTES {
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
        let events = (self.events == Some(true)).then(|| EventsConfig {
            retention: self.events_retention,
            sweep_interval: self.sweep_interval,
            instance: self.instance.unwrap_or_else(default_instance),
        });
        let field_keys = self.field_key.map(|current| crate::protect::FieldKeys {
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

    #[test]
    fn user_ids_cannot_pick_a_slot_or_collide() {
        let c = SessionConfig::builder(Key::generate()).build().unwrap();
        assert_eq!(
            c.index_key("42"),
            "user:42:sessions",
            "plain ids stay readable"
        );
        assert_eq!(
            c.index_key("ann@example.com"),
            "user:ann@example.com:sessions"
        );
        assert_eq!(c.index_key("{evil}"), "user:%7Bevil%7D:sessions");
        let ids = ["a b", "a%20b", "a%2520b", "{x}", "%7Bx%7D", "a\nb", "é{"];
        let keys: std::collections::HashSet<String> = ids.iter().map(|i| c.index_key(i)).collect();
        assert_eq!(keys.len(), ids.len(), "one key per id: {keys:?}");
        assert!(keys.iter().all(|k| !k.contains('{') && !k.contains('}')));
    }
}
