//! The builder of [`SessionConfig`]: its defaults and one setter per setting (checked by
//! `build`, in validate.rs).

use super::{IndexedField, Limits, SessionConfig, TrailLimits, DEFAULT_MAX_SESSIONS_PER_USER};
use crate::cookie::{CookieConfig, Key, SameSite};
use std::time::Duration;

/// Builder for [`SessionConfig`].
#[derive(Debug)]
#[must_use]
pub struct SessionConfigBuilder {
    pub(super) key: Key,
    pub(super) previous: Vec<Key>,
    pub(super) idle_timeout: Duration,
    pub(super) longest_expiry: Option<Duration>,
    pub(super) trusted_proxies: usize,
    pub(super) forwarded_header: crate::ForwardedHeader,
    pub(super) touch_interval: Duration,
    pub(super) absolute_lifetime: Option<Duration>,
    pub(super) namespace: String,
    pub(super) cookie: CookieConfig,
    pub(super) max_sessions_per_user: Option<usize>,
    pub(super) limits: Limits,
    pub(super) indexed: Vec<IndexedField>,
    pub(super) protected: Vec<String>,
    pub(super) field_key: Option<crate::field_crypto::FieldKey>,
    pub(super) previous_field_keys: Vec<crate::field_crypto::FieldKey>,
    pub(super) undecryptable_as_absent: bool,
    pub(super) trail: TrailLimits,
    pub(super) events: Option<bool>,
    pub(super) events_retention: usize,
    pub(super) sweep_interval: Duration,
    pub(super) instance: Option<String>,
    pub(super) trusted_origins: Vec<String>,
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
    ///
    /// ```
    /// # use tessera_core::{FieldKey, Key, SessionConfig};
    /// // In production: FieldKey::from_hex(&std::env::var("TESSERA_FIELD_KEY")?), a key of
    /// // its own (never the cookie key).
    /// let field_key = FieldKey::generate();
    /// let config = SessionConfig::builder(Key::generate())
    ///     .protected_field("api_token")
    ///     .field_key(field_key)
    ///     .build()
    ///     .unwrap();
    /// assert!(config.is_protected("api_token"));
    /// let without = SessionConfig::builder(Key::generate()).protected_field("api_token").build();
    /// assert!(without.is_err()); // a protected field needs a field key
    /// ```
    pub fn field_key(mut self, key: crate::field_crypto::FieldKey) -> Self {
        self.field_key = Some(key);
        self
    }

    /// An older field key that still decrypts (key rotation): a value written under it is
    /// read, and written under the current key the next time that field is written.
    ///
    /// ```
    /// # use tessera_core::{FieldKey, Key, SessionConfig};
    /// # let (new_key, old_key) = (FieldKey::generate(), FieldKey::generate());
    /// // Rotating the field key: values written under the old one are still read.
    /// let config = SessionConfig::builder(Key::generate())
    ///     .protected_field("api_token")
    ///     .field_key(new_key)
    ///     .previous_field_key(old_key)
    ///     .build()
    ///     .unwrap();
    /// assert!(config.is_protected("api_token"));
    /// ```
    pub fn previous_field_key(mut self, key: crate::field_crypto::FieldKey) -> Self {
        self.previous_field_keys.push(key);
        self
    }

    /// What reading a protected value that does not decrypt (tampered, written under an
    /// unknown key, not encrypted) gives: by default
    /// [`Error::Undecryptable`](crate::Error::Undecryptable) (a 500, logged); with `true`, the
    /// field reads as absent (still logged).
    ///
    /// ```
    /// # use tessera_core::{FieldKey, Key, SessionConfig};
    /// // A lost field key: the user is asked for the token again instead of seeing a 500.
    /// let config = SessionConfig::builder(Key::generate())
    ///     .protected_field("api_token")
    ///     .field_key(FieldKey::generate())
    ///     .undecryptable_as_absent(true)
    ///     .build()
    ///     .unwrap();
    /// assert!(config.is_protected("api_token"));
    /// ```
    pub fn undecryptable_as_absent(mut self, on: bool) -> Self {
        self.undecryptable_as_absent = on;
        self
    }

    /// Indexes a field that holds a JSON list: each element is indexed as
    /// [`index_field`](Self::index_field) indexes a value (a session whose `cart` is
    /// `["p-17", "p-3"]` is found by `cart = p-17` and by `cart = p-3`). A value that is not a
    /// list is indexed as one element.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .index_list_field("cart")
    ///     .build()
    ///     .unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// let session = manager.start(None::<&str>);
    /// session.insert("cart", ["p-17", "p-3"]).await?;
    /// session.save().await?;
    /// // A recalled product: whose cart holds it?
    /// assert_eq!(manager.count_sessions("cart", "p-3").await?, 1);
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .device_last_action(true)
    ///     .build()
    ///     .unwrap();
    /// # let manager = SessionManager::new(Store::memory(), config);
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// session.record("changed password").await?;
    /// session.save().await?;
    /// let devices = session.list_sessions().await?;
    /// assert_eq!(devices[0].last_action.as_ref().unwrap().action, "changed password");
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .lifecycle_events(true)
    ///     .events_retention(1_000_000) // a consumer may be a day behind at peak
    ///     .build()
    ///     .unwrap();
    /// assert!(config.lifecycle_events_on());
    /// ```
    pub fn events_retention(mut self, max_events: usize) -> Self {
        self.events_retention = max_events;
        self
    }

    /// How often an instance sweeps for sessions that expired (default 5 s): an `expired`
    /// event is published within about twice this after the expiry (sooner where the
    /// server's keyspace notifications are on).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .lifecycle_events(true)
    ///     .expiry_sweep_interval(Duration::from_secs(1)) // `expired` within about 2 s
    ///     .build();
    /// assert!(config.is_ok());
    /// let too_often = SessionConfig::builder(Key::generate())
    ///     .lifecycle_events(true)
    ///     .expiry_sweep_interval(Duration::from_millis(10))
    ///     .build();
    /// assert!(too_often.is_err()); // at least 100 ms
    /// ```
    pub fn expiry_sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every;
        self
    }

    /// The name of this instance in the events it causes (default `$HOSTNAME-<pid>`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .lifecycle_events(true)
    ///     .instance_name("web-1")
    ///     .build()
    ///     .unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// manager.start(None::<&str>).login("ada").await?;
    /// let page = manager.read_events(None, 10).await?;
    /// assert!(page.events.iter().all(|e| e.instance == "web-1"));
    /// # Ok(()) }
    /// ```
    pub fn instance_name(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Limit of concurrent sessions per user (default 1,000). A login beyond it ends that
    /// user's least recently used sessions (by last TTL refresh). `None` removes the limit;
    /// then logout-all and the device list cost grows without bound with a user's sessions.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// // At most two devices at a time:
    /// let config = SessionConfig::builder(Key::generate())
    ///     .max_sessions_per_user(Some(2))
    ///     .build()
    ///     .unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// for _device in 0..3 {
    ///     manager.start(None::<&str>).login("ada").await?;
    /// }
    /// assert_eq!(manager.list_sessions("ada").await?.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn max_sessions_per_user(mut self, max: Option<usize>) -> Self {
        self.max_sessions_per_user = max;
        self
    }
    /// Adds an older key that still verifies cookies (key rotation). Cookies signed with it
    /// are accepted and re-issued under the current key.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use tessera_core::adapter::SessionExt as _;
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// # let store = Store::memory();
    /// # let old_key = Key::generate();
    /// # let before = SessionManager::new(store.clone(), SessionConfig::builder(old_key.clone()).build().unwrap());
    /// # let session = before.start(None::<&str>);
    /// # session.insert("theme", "dark").await?;
    /// # let set_cookie = session.finish(200).await.set_cookie.unwrap();
    /// # let cookie = set_cookie.split(';').next().unwrap();
    /// // The next deploy signs with a new key; cookies signed with the old one still work.
    /// let config = SessionConfig::builder(Key::generate()).previous_key(old_key).build().unwrap();
    /// let manager = SessionManager::new(store, config);
    /// let session = manager.start([cookie]); // a browser's cookie, signed with the old key
    /// assert_eq!(session.get::<String>("theme").await?.as_deref(), Some("dark"));
    /// # Ok(()) }
    /// ```
    pub fn previous_key(mut self, key: Key) -> Self {
        self.previous.push(key);
        self
    }
    /// Idle timeout (default 30 minutes).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tessera_core::{Key, SessionConfig};
    /// // A back office: logged out after 8 hours without a request.
    /// let config = SessionConfig::builder(Key::generate())
    ///     .idle_timeout(Duration::from_secs(8 * 3600))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.idle_timeout(), Duration::from_secs(8 * 3600));
    /// ```
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
    ///
    /// ```
    /// # use tessera_core::{ForwardedHeader, Key, SessionConfig};
    /// // Behind one proxy that writes RFC 7239 `Forwarded: for=...`:
    /// let config = SessionConfig::builder(Key::generate())
    ///     .trusted_proxies(1)
    ///     .forwarded_header(ForwardedHeader::Forwarded)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.forwarded_header(), ForwardedHeader::Forwarded);
    /// ```
    pub fn forwarded_header(mut self, h: crate::ForwardedHeader) -> Self {
        self.forwarded_header = h;
        self
    }
    /// Minimum time between TTL refreshes on read-only requests (default 60 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .idle_timeout(Duration::from_secs(15 * 60))
    ///     .touch_interval(Duration::from_secs(30))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.touch_interval(), Duration::from_secs(30));
    /// let too_long = SessionConfig::builder(Key::generate())
    ///     .idle_timeout(Duration::from_secs(60))
    ///     .touch_interval(Duration::from_secs(60))
    ///     .build();
    /// assert!(too_long.is_err()); // shorter than the idle timeout
    /// ```
    pub fn touch_interval(mut self, d: Duration) -> Self {
        self.touch_interval = d;
        self
    }
    /// Absolute lifetime since creation (default none).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tessera_core::{Key, SessionConfig};
    /// // A bank: logged out after 12 hours, however active.
    /// let config = SessionConfig::builder(Key::generate())
    ///     .absolute_lifetime(Some(Duration::from_secs(12 * 3600)))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.absolute_lifetime(), Some(Duration::from_secs(12 * 3600)));
    /// ```
    pub fn absolute_lifetime(mut self, d: Option<Duration>) -> Self {
        self.absolute_lifetime = d;
        self
    }
    /// Key namespace prefix, e.g. `"shop:"` gives `shop:session:<key>` (default empty).
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// // Two apps on one Redis:
    /// let config = SessionConfig::builder(Key::generate()).namespace("shop:").build().unwrap();
    /// assert_eq!(config.namespace(), "shop:");
    /// let braces = SessionConfig::builder(Key::generate()).namespace("{shop}").build();
    /// assert!(braces.is_err()); // braces would pick Redis Cluster hash slots
    /// ```
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }
    /// An origin (`scheme://host[:port]`, as browsers send it in `Origin`, e.g.
    /// `https://app.example.com`) trusted to make state-changing requests without a CSRF
    /// token: the cross-origin check ([`Session::check_origin`](crate::adapter::SessionExt::check_origin),
    /// the adapters' `OriginChecked`) lets its requests through. Compared whole, ignoring ASCII
    /// case. None by default.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use tessera_core::adapter::{CsrfCheck, RequestOrigin, SessionExt as _};
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// // The admin app on another subdomain posts forms to this one:
    /// let config = SessionConfig::builder(Key::generate())
    ///     .trusted_origin("https://admin.example.com")
    ///     .build()
    ///     .unwrap();
    /// # let manager = SessionManager::new(Store::memory(), config);
    /// # let session = manager.start(None::<&str>);
    /// # let post_from = |origin: &'static str| RequestOrigin { method: "POST", sec_fetch_site: Some(b"same-site"), origin: Some(origin.as_bytes()), host: Some(b"app.example.com") };
    /// // What the adapters' cross-origin check says of a POST without a token from each:
    /// let admin = session.check_origin(&post_from("https://admin.example.com"), None).await?;
    /// assert_eq!(admin, CsrfCheck::Valid);
    /// let other = session.check_origin(&post_from("https://blog.example.com"), None).await?;
    /// assert_ne!(other, CsrfCheck::Valid);
    /// # Ok(()) }
    /// ```
    pub fn trusted_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins
            .push(origin.into().trim_end_matches('/').to_string());
        self
    }
    /// Cookie name (default `tessera`).
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate()).cookie_name("sid").build().unwrap();
    /// assert_eq!(config.cookie_name(), "__Host-sid"); // see host_prefix
    /// assert!(SessionConfig::builder(Key::generate()).cookie_name("my session").build().is_err());
    /// ```
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }
    /// `Secure` attribute (default on). Turn off only for plain-http development.
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// // Local development over plain http (never in production):
    /// let config = SessionConfig::builder(Key::generate()).secure(false).build().unwrap();
    /// assert_eq!(config.cookie_name(), "tessera"); // `__Host-` needs Secure
    /// ```
    pub fn secure(mut self, on: bool) -> Self {
        self.cookie.secure = on;
        self
    }
    /// `HttpOnly` attribute (default on).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use tessera_core::adapter::SessionExt as _;
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .http_only(true) // the default
    ///     .build()
    ///     .unwrap();
    /// # let manager = SessionManager::new(Store::memory(), config);
    /// # let session = manager.start(None::<&str>);
    /// # session.insert("theme", "dark").await?;
    /// # let set_cookie = session.finish(200).await.set_cookie.unwrap();
    /// // The Set-Cookie header of a response that saved a session: out of scripts' reach.
    /// assert!(set_cookie.contains("HttpOnly"));
    /// # Ok(()) }
    /// ```
    pub fn http_only(mut self, on: bool) -> Self {
        self.cookie.http_only = on;
        self
    }
    /// `SameSite` attribute (default `Lax`).
    ///
    /// ```
    /// # use tessera_core::{Key, SameSite, SessionConfig};
    /// let strict = SessionConfig::builder(Key::generate()).same_site(SameSite::Strict).build();
    /// assert!(strict.is_ok());
    /// // Embedded in another site's frame: SameSite=None, which needs Secure.
    /// let embedded = SessionConfig::builder(Key::generate())
    ///     .same_site(SameSite::None)
    ///     .secure(false)
    ///     .build();
    /// assert!(embedded.is_err());
    /// ```
    pub fn same_site(mut self, s: SameSite) -> Self {
        self.cookie.same_site = s;
        self
    }
    /// `Path` attribute (default `/`).
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// // An app mounted under /shop on a shared host:
    /// let config = SessionConfig::builder(Key::generate()).path("/shop").build().unwrap();
    /// assert_eq!(config.cookie_name(), "tessera"); // `__Host-` needs Path=/
    /// ```
    pub fn path(mut self, p: impl Into<String>) -> Self {
        self.cookie.path = p.into();
        self
    }
    /// `Domain` attribute (default none: host-only).
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// // One session for www.example.com and shop.example.com:
    /// let config = SessionConfig::builder(Key::generate())
    ///     .domain(Some("example.com".into()))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.cookie_name(), "tessera"); // `__Host-` needs no Domain
    /// ```
    pub fn domain(mut self, d: Option<String>) -> Self {
        self.cookie.domain = d;
        self
    }
    /// Persistent cookie with `Max-Age` = idle timeout, re-sent when the TTL slides (default:
    /// off, a browser-session cookie).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use tessera_core::adapter::SessionExt as _;
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).persistent(true).build().unwrap();
    /// # let manager = SessionManager::new(Store::memory(), config);
    /// # let session = manager.start(None::<&str>);
    /// # session.insert("theme", "dark").await?;
    /// # let set_cookie = session.finish(200).await.set_cookie.unwrap();
    /// // The Set-Cookie header of a response that saved a session: it outlives the browser,
    /// // for the idle timeout (30 minutes by default).
    /// assert!(set_cookie.contains("Max-Age=1800"));
    /// # Ok(()) }
    /// ```
    pub fn persistent(mut self, on: bool) -> Self {
        self.cookie.persistent = on;
        self
    }
    /// The `__Host-` name prefix. By default it is used whenever the cookie can carry it
    /// (`Secure`, `Path=/`, no `Domain`): a sibling subdomain cannot set or shadow such a
    /// cookie. `false` opts out (the cookie is then named exactly `cookie_name`); `true` makes
    /// a configuration that cannot carry it a build error.
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// // Keep the name an older deployment or another service reads:
    /// let config = SessionConfig::builder(Key::generate()).host_prefix(false).build().unwrap();
    /// assert_eq!(config.cookie_name(), "tessera");
    /// let shared = SessionConfig::builder(Key::generate())
    ///     .host_prefix(true)
    ///     .domain(Some("example.com".into()))
    ///     .build();
    /// assert!(shared.is_err()); // `__Host-` cannot have a Domain
    /// ```
    pub fn host_prefix(mut self, on: bool) -> Self {
        self.cookie.host_prefix = Some(on);
        self
    }
    /// The most user fields one session may hold (default 1,000). A change that would go past
    /// it is refused up front with [`Error::TooLarge`](crate::Error::TooLarge) (HTTP 400),
    /// on every store.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).max_fields(2).build().unwrap();
    /// # let manager = SessionManager::new(Store::memory(), config);
    /// # let session = manager.start(None::<&str>);
    /// session.insert("a", 1).await?;
    /// session.insert("b", 2).await?;
    /// let refused = session.insert("c", 3).await.unwrap_err();
    /// assert_eq!(refused.status_code(), 400);
    /// # Ok(()) }
    /// ```
    pub fn max_fields(mut self, n: usize) -> Self {
        self.limits.max_fields = n;
        self
    }
    /// The largest value one field may hold, in bytes as stored (default 64 KiB). A larger
    /// value is refused with [`Error::TooLarge`](crate::Error::TooLarge) (HTTP 400).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).max_value_bytes(1024).build().unwrap();
    /// # let manager = SessionManager::new(Store::memory(), config);
    /// # let session = manager.start(None::<&str>);
    /// let note = "x".repeat(2048);
    /// let refused = session.insert("note", &note).await.unwrap_err();
    /// assert_eq!(refused.status_code(), 400);
    /// # Ok(()) }
    /// ```
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.limits.max_value_bytes = n;
        self
    }
    /// The most index terms (distinct indexed values: a scalar field has one, a list field
    /// one per distinct element) one indexed field of a session may hold (default 64). Each
    /// term is a sorted-set entry in the store: a larger list is refused up front with
    /// [`Error::TooLarge`](crate::Error::TooLarge) (HTTP 400), on every store, before anything
    /// is written.
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .index_list_field("cart")
    ///     .max_index_terms_per_field(200) // carts of up to 200 distinct products
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.max_index_terms_per_field(), 200);
    /// ```
    pub fn max_index_terms_per_field(mut self, n: usize) -> Self {
        self.limits.max_index_terms_per_field = n;
        self
    }
    /// The most index terms all indexed fields of one session may hold together (default
    /// 256); past it, [`Error::TooLarge`](crate::Error::TooLarge) (HTTP 400), nothing written.
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .index_list_field("cart")
    ///     .index_list_field("wishlist")
    ///     .max_index_terms_per_session(400)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.max_index_terms_per_session(), 400);
    /// ```
    pub fn max_index_terms_per_session(mut self, n: usize) -> Self {
        self.limits.max_index_terms = n;
        self
    }
    /// The longest index term, in bytes (default 256; it is part of a key name in the store);
    /// a longer indexed value or list element is [`Error::TooLarge`](crate::Error::TooLarge)
    /// (HTTP 400), nothing written.
    ///
    /// ```
    /// # use tessera_core::{Key, SessionConfig};
    /// let config = SessionConfig::builder(Key::generate())
    ///     .index_field("tenant")
    ///     .max_index_term_bytes(64) // tenant slugs are short
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.max_index_term_bytes(), 64);
    /// ```
    pub fn max_index_term_bytes(mut self, n: usize) -> Self {
        self.limits.max_index_term_bytes = n;
        self
    }
}
