//! The errors tessera-core returns: [`Error`], grouped by [`ErrorKind`]; [`StoreError`], the
//! store's own words inside a store failure; [`ConfigError`], a configuration that cannot work.
//!
//! # Kinds and details
//!
//! [`Error`] has a variant per detail (which field, which limit, which cursor) and
//! [`Error::kind`] says which of a few concerns it belongs to, as redis-rs's `ErrorKind` does:
//! an app or adapter decides what to do from the kind (the HTTP status, `Retry-After`, a retry)
//! and logs the details. [`Error::status_code`] and [`Error::retry_after`] are functions of the
//! kind alone.
//!
//! | [`ErrorKind`] | variants | HTTP |
//! |---|---|---|
//! | [`Unavailable`](ErrorKind::Unavailable) | [`Error::Unavailable`] | 503 + `Retry-After: 1` |
//! | [`OutcomeUnknown`](ErrorKind::OutcomeUnknown) | [`Error::OutcomeUnknown`] | 503 |
//! | [`Store`](ErrorKind::Store) | [`Error::Store`] | 500 |
//! | [`InvalidInput`](ErrorKind::InvalidInput) | [`ReservedField`](Error::ReservedField), [`NotAnInteger`](Error::NotAnInteger), [`InvalidUserId`](Error::InvalidUserId), [`TooLarge`](Error::TooLarge), [`InvalidExpiry`](Error::InvalidExpiry), [`NotIndexed`](Error::NotIndexed), [`InvalidIndexValue`](Error::InvalidIndexValue), [`ProtectedField`](Error::ProtectedField), [`InvalidAction`](Error::InvalidAction), [`InvalidCursor`](Error::InvalidCursor) | 400 |
//! | [`SessionEnded`](ErrorKind::SessionEnded) | [`Error::SessionEnded`] | 409 |
//! | [`NotLoggedIn`](ErrorKind::NotLoggedIn) | [`Error::NotLoggedIn`] | 401 |
//! | [`Data`](ErrorKind::Data) | [`Decode`](Error::Decode), [`Encode`](Error::Encode), [`Undecryptable`](Error::Undecryptable) | 500 |
//! | [`Config`](ErrorKind::Config) | [`Error::Config`] | 500 |
//! | [`Unsupported`](ErrorKind::Unsupported) | [`Unsupported`](Error::Unsupported), [`EventsOff`](Error::EventsOff) | 501 |
//! | [`EventsMissed`](ErrorKind::EventsMissed) | [`Error::EventsMissed`] | 410 |
//!
//! Why the variants stay flat (the details) rather than nest per kind (`Error::Input(InputError::TooLarge
//! {..})`): every place that builds an error (about 250, across the session engine and both
//! stores) and every `match` an app wrote on a variant keeps working unchanged, and a variant
//! says its detail in one name. The grouping is [`Error::kind`], one exhaustive match in this
//! file: a new variant must be given a kind here before anything compiles. Both enums are
//! `#[non_exhaustive]`, so new details and kinds can come without a breaking release.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// What went wrong with the session store: a message, and the Redis client's own error as
/// [`source()`](std::error::Error::source) when it reported one. Opaque on purpose: the client
/// library is an implementation detail, so a new major version of it is not a breaking change
/// for users. Carried by [`Error::Unavailable`], [`Error::OutcomeUnknown`], [`Error::Store`]
/// and [`ConfigError::Store`]. Two are equal when they say the same (the source is not
/// compared).
///
/// ```
/// # async fn demo() {
/// use tessera_core::error::StoreError;
/// fn log(e: &StoreError) {
///     eprintln!("{e} (cause: {:?})", std::error::Error::source(e));
/// }
/// if let Err(tessera_core::Error::Unavailable(e)) = tessera_core::Store::redis("redis://127.0.0.1:1").await {
///     log(&e);
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StoreError {
    message: Cow<'static, str>,
    /// Did not answer in time (so a write may still have been applied).
    timeout: bool,
    source: Option<Arc<fred::error::Error>>,
}

impl StoreError {
    /// A failure tessera itself detected.
    pub(crate) fn new(message: impl Into<Cow<'static, str>>) -> Self {
        StoreError {
            message: message.into(),
            timeout: false,
            source: None,
        }
    }

    /// The store did not answer within a deadline tessera set.
    pub(crate) fn timeout(message: impl Into<Cow<'static, str>>) -> Self {
        StoreError {
            timeout: true,
            ..Self::new(message)
        }
    }

    /// A failure the Redis client reported.
    pub(crate) fn client(e: fred::error::Error) -> Self {
        use fred::error::ErrorKind as K;
        StoreError {
            message: Cow::Owned(e.details().to_string()),
            timeout: matches!(e.kind(), K::Timeout | K::IO)
                || e.details().starts_with("Connection closed.")
                || e.details().starts_with("Connection reset")
                // A command fred would have sent again (a Cluster redirect, or a connection
                // lost around it) with no attempt left: a write may have been applied.
                || e.details().starts_with("Too many failed write attempts"),
            source: Some(Arc::new(e)),
        }
    }

    /// A configuration the Redis client refused, in tessera's words (`message`), with the
    /// client's own error as the source.
    pub(crate) fn client_with(
        message: impl Into<Cow<'static, str>>,
        e: fred::error::Error,
    ) -> Self {
        StoreError {
            message: message.into(),
            timeout: false,
            source: Some(Arc::new(e)),
        }
    }

    /// The server's or the client's own words.
    pub(crate) fn details(&self) -> &str {
        &self.message
    }
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message && self.timeout == other.timeout
    }
}

impl Eq for StoreError {}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// What an [`Error`] is about: a few concerns, each with one HTTP status (see the
/// [module docs](crate::error) for which variant has which kind). Decide on this; log the
/// [`Error`] itself for the details.
///
/// ```
/// use tessera_core::{Error, ErrorKind};
/// let e = Error::TooLarge { what: "bytes in one value", limit: 10 };
/// assert_eq!(e.kind(), ErrorKind::InvalidInput);
/// assert_eq!(e.kind().status_code(), 400);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store could not be reached, did not answer a read in time, or refused a write:
    /// nothing was changed, retrying later is safe. 503 with `Retry-After`.
    Unavailable,
    /// A write was sent but not confirmed in time: it may or may not have been applied.
    /// 503 without `Retry-After`.
    OutcomeUnknown,
    /// The store answered with an error. 500.
    Store,
    /// The caller asked for something that cannot be done as asked: a reserved or protected
    /// field, a value over a limit, an invalid user id, expiry, indexed value, action or cursor,
    /// a query by a field that is not indexed. Nothing was changed. 400.
    InvalidInput,
    /// The session ended or moved while the request ran; its changes were not saved. 409.
    SessionEnded,
    /// The operation needs a logged-in session. 401.
    NotLoggedIn,
    /// A value that does not encode, or a stored value that does not decode or decrypt. 500.
    Data,
    /// A configuration that cannot work. 500.
    Config,
    /// The store or the configuration lacks what the operation needs (the query engine,
    /// lifecycle events turned on). 501.
    Unsupported,
    /// An events reader fell behind the retention. 410.
    EventsMissed,
}

impl ErrorKind {
    /// The HTTP status an adapter answers with for an error of this kind.
    pub fn status_code(self) -> u16 {
        match self {
            ErrorKind::Unavailable | ErrorKind::OutcomeUnknown => 503,
            ErrorKind::Store | ErrorKind::Data | ErrorKind::Config => 500,
            ErrorKind::InvalidInput => 400,
            ErrorKind::SessionEnded => 409,
            ErrorKind::NotLoggedIn => 401,
            ErrorKind::Unsupported => 501,
            ErrorKind::EventsMissed => 410,
        }
    }

    /// Whether this is a store failure (as opposed to a problem with a field, a value or the
    /// session).
    pub fn is_store_failure(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::OutcomeUnknown | ErrorKind::Store
        )
    }
}

/// Everything that can go wrong with a session: one variant per detail, grouped by
/// [`kind`](Error::kind) (see the [module docs](crate::error)).
///
/// Store failures are split in two: [`Error::Unavailable`] (the server did not answer in
/// time, the connection is down: retrying later may work, HTTP 503) and [`Error::Store`] (the
/// server answered with an error, HTTP 500). [`Error::status_code`] gives the HTTP status the
/// adapters use.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session store could not be reached, did not answer a read within the command
    /// timeout, or refused a write (over `maxmemory`, a failover in progress): nothing was
    /// changed, so retrying later is safe (HTTP 503 with `Retry-After`).
    #[error("session store unavailable")]
    Unavailable(#[source] StoreError),
    /// A write was sent but its answer did not arrive within the command timeout (or the
    /// connection dropped meanwhile): it may or may not have been applied. Never sent later
    /// once its deadline has passed, but a server that was paused may still run what it had
    /// already received. HTTP 503 without `Retry-After`: a client must not assume either way.
    #[error("session store did not confirm a write; it may or may not have been applied")]
    OutcomeUnknown(#[source] StoreError),
    /// The session store answered with an error.
    #[error("session store error")]
    Store(#[source] StoreError),
    /// A field name is reserved for tessera's own metadata (it starts with `__`) or is empty.
    #[error(
        "field name {0:?} is reserved or empty: user fields must not be empty or start with \"__\""
    )]
    ReservedField(String),
    /// A stored field does not decode as the requested type (for example a field written by
    /// another application).
    #[error("session field {field:?} does not decode as the requested type")]
    Decode {
        /// The field that failed to decode.
        field: String,
        /// Why it failed.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// The operation needs a logged-in session (see `Session::login`).
    #[error("this needs a logged-in session")]
    NotLoggedIn,
    /// A user id that cannot be used: empty, over 512 bytes, holding U+001F or white space at
    /// either end (the query engine would split or trim it and match another user's tag).
    #[error(
        "user ids must be 1 to 512 bytes, without control characters but inner white space, and without white space at either end"
    )]
    InvalidUserId,
    /// A value could not be serialized.
    #[error("session value does not serialize")]
    Encode(#[source] Arc<serde_json::Error>),
    /// `increment` was called on a field that holds something other than an integer.
    #[error("session field {0:?} does not hold an integer")]
    NotAnInteger(String),
    /// The session was ended (logged out, revoked, expired) or moved to a new id (a login) by
    /// another request while this one ran; this request's changes were not saved, so the
    /// session is not brought back.
    #[error("the session ended or moved while the request ran; its changes were not saved")]
    SessionEnded,
    /// A session or value over the configured size limits (`max_fields`, `max_value_bytes`,
    /// 256-byte field names); nothing of the change was kept.
    #[error("{what} over the limit of {limit}")]
    TooLarge {
        /// What was too large ("fields in one session", "bytes in one value", ...).
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A session expiry ([`Session::set_expiry`](crate::Session::set_expiry)) outside what the
    /// configuration allows: shorter than twice the touch interval (the TTL refresh could not
    /// keep up) or longer than `longest_expiry`. HTTP 400; nothing was changed.
    #[error("a session expiry must be {shortest_secs} to {longest_secs} seconds")]
    InvalidExpiry {
        /// The shortest allowed, whole seconds (rounded up).
        shortest_secs: u64,
        /// The longest allowed (`longest_expiry`), whole seconds.
        longest_secs: u64,
    },
    /// A value of a scalar indexed field holds U+001F, the query engine's tag separator (it
    /// would be two tags there, found by a query for either: another tenant's, say), or begins
    /// or ends with white space (which the engine trims: `" acme"` would be found as `acme`).
    /// HTTP 400; nothing of the change was kept.
    #[error(
        "a value of indexed field {0:?} contains U+001F (the query engine's tag separator) or \
         begins or ends with white space (which the engine trims), or holds another control character"
    )]
    InvalidIndexValue(String),
    /// A configuration that cannot work (a store URL, a key, a limit): displays what is
    /// wrong, as the [`ConfigError`] it carries.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A query by a field that is not declared indexed
    /// ([`SessionConfigBuilder::index_field`](crate::SessionConfigBuilder::index_field)).
    #[error("session field {0:?} is not indexed")]
    NotIndexed(String),
    /// A protected field's stored value does not decrypt: tampered, moved from another field or
    /// session, written under a key this app does not have, or not encrypted at all (HTTP 500;
    /// see
    /// [`SessionConfigBuilder::undecryptable_as_absent`](crate::SessionConfigBuilder::undecryptable_as_absent)).
    #[error("protected session field {field:?} does not decrypt: {reason}")]
    Undecryptable {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// An operation a protected field does not support (`increment`: its stored value is
    /// ciphertext).
    #[error("session field {0:?} is protected: it cannot be incremented")]
    ProtectedField(String),
    /// The server lacks what this operation needs (for example the query engine, `FT.*`, for
    /// [`SessionManager::search`](crate::SessionManager::search)): never answered by scanning.
    #[error("the session store does not support this: {0}")]
    Unsupported(&'static str),
    /// An activity trail action that cannot be recorded: empty, or with control characters
    /// (HTTP 400; one over the length limit is [`Error::TooLarge`]).
    #[error("activity action is empty or has control characters")]
    InvalidAction,
    /// An events cursor that is not one this store hands out (HTTP 400).
    #[error("events cursor {0:?} is not valid")]
    InvalidCursor(String),
    /// Lifecycle events are not turned on in this configuration (HTTP 501; see
    /// `SessionConfigBuilder::lifecycle_events`).
    #[error("lifecycle events are not turned on")]
    EventsOff,
    /// An events reader fell behind the retention: events it had not read were dropped (see
    /// `SessionConfigBuilder::events_retention`). HTTP 410.
    #[error("events were dropped by the retention before they were read")]
    EventsMissed,
}

impl Error {
    /// What this error is about: what to decide on (the status, a retry); the variant itself
    /// holds the details.
    ///
    /// ```
    /// use tessera_core::{Error, ErrorKind};
    /// assert_eq!(Error::SessionEnded.kind(), ErrorKind::SessionEnded);
    /// assert_eq!(Error::InvalidUserId.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::OutcomeUnknown(_) => ErrorKind::OutcomeUnknown,
            Error::Store(_) => ErrorKind::Store,
            Error::ReservedField(_)
            | Error::NotAnInteger(_)
            | Error::InvalidUserId
            | Error::TooLarge { .. }
            | Error::InvalidExpiry { .. }
            | Error::NotIndexed(_)
            | Error::InvalidIndexValue(_)
            | Error::ProtectedField(_)
            | Error::InvalidAction
            | Error::InvalidCursor(_) => ErrorKind::InvalidInput,
            Error::SessionEnded => ErrorKind::SessionEnded,
            Error::NotLoggedIn => ErrorKind::NotLoggedIn,
            Error::Decode { .. } | Error::Encode(_) | Error::Undecryptable { .. } => {
                ErrorKind::Data
            }
            Error::Config(_) => ErrorKind::Config,
            Error::Unsupported(_) | Error::EventsOff => ErrorKind::Unsupported,
            Error::EventsMissed => ErrorKind::EventsMissed,
        }
    }

    /// The HTTP status an adapter answers with when this error ends a request: that of its
    /// [`kind`](Error::kind).
    ///
    /// ```
    /// assert_eq!(tessera_core::Error::SessionEnded.status_code(), 409);
    /// ```
    pub fn status_code(&self) -> u16 {
        self.kind().status_code()
    }

    /// A short message safe to show to clients (the cause goes to the log, never the body).
    /// A size limit is named with its value.
    ///
    /// ```
    /// let e = tessera_core::Error::TooLarge { what: "fields in one session", limit: 1000 };
    /// assert_eq!(e.public_message(), "fields in one session over the limit of 1000");
    /// ```
    pub fn public_message(&self) -> std::borrow::Cow<'static, str> {
        if let Error::TooLarge { .. } = self {
            return self.to_string().into();
        }
        match self {
            Error::Unavailable(_) => "session store unavailable, nothing was changed; try again",
            Error::OutcomeUnknown(_) => {
                "session store did not confirm the change; it may or may not have been applied"
            }
            Error::SessionEnded => "the session ended; changes were not saved",
            Error::ReservedField(_) => "reserved session field name",
            Error::NotAnInteger(_) => "session field does not hold an integer",
            Error::NotLoggedIn => "not logged in",
            Error::InvalidUserId => "invalid user id",
            Error::TooLarge { .. } => "session data over the size limit",
            Error::InvalidExpiry { .. } => "session expiry out of the allowed range",
            Error::NotIndexed(_) => "that session field is not indexed",
            Error::InvalidIndexValue(_) => {
                "an indexed session value holds U+001F, another control character or white space at either end"
            }
            Error::ProtectedField(_) => "that session field is protected",
            Error::Undecryptable { .. } => "a protected session field cannot be decrypted",
            Error::Unsupported(_) => "the session store does not support this query",
            Error::InvalidAction => "invalid activity action",
            Error::InvalidCursor(_) => "invalid events cursor",
            Error::EventsOff => "lifecycle events are not turned on",
            Error::EventsMissed => "events were dropped before they were read",
            Error::Store(_) | Error::Decode { .. } | Error::Encode(_) | Error::Config(_) => {
                "session error"
            }
        }
        .into()
    }

    /// `Retry-After` seconds to send with this error, if any: 1 when the store was unavailable
    /// and nothing was changed; none when a write's outcome is unknown (a retry could apply a
    /// change twice).
    pub fn retry_after(&self) -> Option<u32> {
        (self.kind() == ErrorKind::Unavailable).then_some(1)
    }

    /// Whether this is a store failure (as opposed to a problem with a field or value): see
    /// [`ErrorKind::is_store_failure`].
    pub fn is_store_failure(&self) -> bool {
        self.kind().is_store_failure()
    }

    /// The server refused a write because it is over `maxmemory` (policy `noeviction`).
    pub(crate) fn is_out_of_memory(&self) -> bool {
        match self {
            Error::Unavailable(e) => e.details().contains("OOM command not allowed"),
            _ => false,
        }
    }

    /// The same failure, seen from a write: a timeout or a connection lost after the command
    /// may have been sent leaves the outcome unknown; a refusal or a fail-fast (nothing sent)
    /// stays [`Error::Unavailable`].
    pub(crate) fn after_write(self) -> Self {
        match self {
            Error::Unavailable(e) if e.timeout => Error::OutcomeUnknown(e),
            other => other,
        }
    }

    /// The same failure, in a step after an earlier step of the same call changed something
    /// (a logout's index removal after its session was deleted): the client must not be told
    /// that nothing was changed, so a refusal is [`Error::OutcomeUnknown`] too.
    pub(crate) fn after_a_change(self) -> Self {
        match self {
            Error::Unavailable(e) => Error::OutcomeUnknown(e),
            other => other,
        }
    }

    pub(crate) fn from_fred(e: fred::error::Error) -> Self {
        use fred::error::ErrorKind as K;
        let unavailable = matches!(
            e.kind(),
            K::Timeout
                | K::IO
                | K::Canceled
                | K::Backpressure
                | K::Cluster
                | K::Sentinel
                | K::Routing
        ) || is_transient_reply(e.details());
        if unavailable {
            Error::Unavailable(StoreError::client(e))
        } else {
            Error::Store(StoreError::client(e))
        }
    }
}

/// Server replies that mean "not now" (a replica mid-failover, a dataset loading), and
/// fred's own reports of a connection that is going away.
fn is_transient_reply(details: &str) -> bool {
    [
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "BUSY",
        "Failed to route",
        "Connection closed",
        "Connection reset",
        "Too many failed write attempts",
    ]
    .iter()
    .any(|p| details.starts_with(p))
        // Over maxmemory with noeviction (also when raised inside a script).
        || details.contains("OOM command not allowed")
}

/// A configuration that cannot work, reported by the builders' `build()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A signing key shorter than 32 bytes.
    #[error("signing keys must be at least 32 bytes, got {0}")]
    KeyTooShort(usize),
    /// A key given as hex that is not hex.
    #[error("signing key is not valid hex")]
    KeyNotHex,
    /// A timeout or interval that is zero, or a touch interval not shorter than the idle timeout.
    #[error("invalid timeouts: {0}")]
    Timeouts(&'static str),
    /// A limit that cannot work (zero sessions per user).
    #[error("invalid limit: {0}")]
    Limit(&'static str),
    /// A cookie name or attribute that is not allowed.
    #[error("invalid cookie settings: {0}")]
    Cookie(&'static str),
    /// A namespace with characters that would make keys hard to read or unsafe in Redis Cluster.
    #[error("invalid namespace: {0}")]
    Namespace(&'static str),
    /// The store URL or store settings were rejected: what is wrong, with the Redis client's
    /// own error as its [`source()`](std::error::Error::source) when the client reported one
    /// (a URL it cannot read).
    #[error("invalid store configuration: {0}")]
    Store(#[source] StoreError),
    /// An indexed field that cannot be indexed (a reserved or unsafe name, declared twice).
    #[error("invalid indexed field: {0}")]
    Index(&'static str),
    /// A field key that is not 32 bytes (64 hex digits).
    #[error("invalid field key: {0}")]
    FieldKey(&'static str),
    /// Protected fields that cannot work as configured (no key, also indexed).
    #[error("invalid protected field: {0}")]
    Protected(&'static str),
}

/// Result alias for tessera-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
