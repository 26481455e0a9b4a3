//! What tessera measures, through the [`metrics`](https://docs.rs/metrics) facade: the library
//! emits, the app picks the exporter (Prometheus, StatsD, OpenTelemetry, ...). Without an
//! installed recorder every call is a no-op; with one (the Prometheus exporter), a write cost
//! 1.5 to 5 µs more CPU than without, a read no more than the run's noise (`BENCHMARKS.md`,
//! "What metrics cost").
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | [`SESSIONS_CREATED`] | counter | | sessions written for the first time (a request's first save, or a login that made one) |
//! | [`LOGINS`] | counter | | logins (`Session::login`, each one an id rotation) |
//! | [`SESSIONS_ENDED`] | counter | `cause` | ends, by the cause of [`EventKind`](crate::EventKind): `logout`, `logout_all`, `revoked`, `evicted`, counted by the instance that ended them; `expired`, counted by the instance that published its `expired` event (its expiry sweeper, or a logout everywhere that found it gone; lifecycle events on) |
//! | [`STORE_COMMAND_SECONDS`] | histogram | `op` | each store operation's latency, seconds; its `_count` is the number of operations (one round trip each, mostly one command or script); a load the near-cache answered is `op="load_cached"` (no command) |
//! | [`STORE_COMMAND_ERRORS`] | counter | `op` | store operations that failed, also those refused before reaching a server (a store still connecting) |
//! | [`UNAVAILABLE`] | counter | `cause` | `503` answers, by cause: `unavailable` (nothing was changed), `outcome_unknown` (a write may have happened), `over_memory` (the server refused a write over `maxmemory`) |
//! | [`NEAR_CACHE_HITS`], [`NEAR_CACHE_MISSES`], [`NEAR_CACHE_INVALIDATIONS`], [`NEAR_CACHE_FLUSHES`] | counter | | the near-cache: reads answered locally, reads sent, entries the server invalidated, whole-cache flushes (a tracking connection lost) |
//! | [`EVENTS_PUBLISHED`] | counter | `type` | lifecycle events this instance published, by type |
//! | [`EXPIRY_SWEEPER_LAG`] | gauge | | how long after its expiry the sweeper found the oldest session it looked at in its last sweep, seconds (0 when nothing was due); set only by the instance that swept (one holds the sweep lease at a time): aggregate instances with `max` |
//! | [`USER_SESSIONS`] | histogram | | a user's index size (live and lapsed members), each time it is read (device lists, revokes, logouts everywhere) |
//!
//! Operation names (`op`) are the store contract's: `load`, `write`, `create`, `freeze`,
//! `release`, `index_add`, `events_apply`, ... (see `store/contract.rs`). Label values are
//! fixed sets: no session, user or key ever becomes a label.
//!
//! Each request the adapters serve runs in a `tracing` span `tessera.request` whose field
//! `handle` is the session's [handle](crate::DeviceSession::handle) (the one device lists and
//! events show; never the id or the cookie), recorded when the request names a session and
//! again when it ends under another one (a new session, a login).
//!
//! ```
//! // An app that exports to Prometheus installs the recorder once, at start-up:
//! // let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! // and serves `handle.render()`. tessera itself only names what it emits:
//! assert_eq!(tessera_core::metrics::SESSIONS_CREATED, "tessera_sessions_created_total");
//! ```

/// Counter: sessions written for the first time.
pub const SESSIONS_CREATED: &str = "tessera_sessions_created_total";
/// Counter: logins.
pub const LOGINS: &str = "tessera_logins_total";
/// Counter, label `cause`: sessions ended.
pub const SESSIONS_ENDED: &str = "tessera_sessions_ended_total";
/// Histogram, label `op`: store operation latency, seconds.
pub const STORE_COMMAND_SECONDS: &str = "tessera_store_command_seconds";
/// Counter, label `op`: store operations that failed.
pub const STORE_COMMAND_ERRORS: &str = "tessera_store_command_errors_total";
/// Counter, label `cause`: `503` answers.
pub const UNAVAILABLE: &str = "tessera_unavailable_total";
/// Counter: near-cache reads answered locally.
pub const NEAR_CACHE_HITS: &str = "tessera_near_cache_hits_total";
/// Counter: near-cache reads sent to the server.
pub const NEAR_CACHE_MISSES: &str = "tessera_near_cache_misses_total";
/// Counter: near-cache entries the server invalidated.
pub const NEAR_CACHE_INVALIDATIONS: &str = "tessera_near_cache_invalidations_total";
/// Counter: whole near-cache flushes.
pub const NEAR_CACHE_FLUSHES: &str = "tessera_near_cache_flushes_total";
/// Counter, label `type`: lifecycle events published.
pub const EVENTS_PUBLISHED: &str = "tessera_events_published_total";
/// Gauge: the expiry sweeper's lag, seconds.
pub const EXPIRY_SWEEPER_LAG: &str = "tessera_expiry_sweeper_lag_seconds";
/// Histogram: a user index's size when read.
pub const USER_SESSIONS: &str = "tessera_user_sessions";

/// Every name above, for exporters that want to describe or pre-register them.
pub const ALL: [&str; 13] = [
    SESSIONS_CREATED,
    LOGINS,
    SESSIONS_ENDED,
    STORE_COMMAND_SECONDS,
    STORE_COMMAND_ERRORS,
    UNAVAILABLE,
    NEAR_CACHE_HITS,
    NEAR_CACHE_MISSES,
    NEAR_CACHE_INVALIDATIONS,
    NEAR_CACHE_FLUSHES,
    EVENTS_PUBLISHED,
    EXPIRY_SWEEPER_LAG,
    USER_SESSIONS,
];

/// Describes every metric to the installed recorder (units and help text, which the
/// Prometheus exporter prints as `# HELP`). Optional: the metrics exist without it. Call it
/// after installing the recorder.
///
/// ```
/// tessera_core::metrics::describe(); // a no-op without a recorder
/// ```
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(SESSIONS_CREATED, "Sessions written for the first time.");
    describe_counter!(LOGINS, "Logins (each rotates the session id).");
    describe_counter!(SESSIONS_ENDED, "Sessions ended, by cause.");
    describe_histogram!(
        STORE_COMMAND_SECONDS,
        Unit::Seconds,
        "Store operation latency, by operation."
    );
    describe_counter!(STORE_COMMAND_ERRORS, "Store operations that failed.");
    describe_counter!(UNAVAILABLE, "503 answers, by cause.");
    describe_counter!(NEAR_CACHE_HITS, "Near-cache reads answered locally.");
    describe_counter!(NEAR_CACHE_MISSES, "Near-cache reads sent to the server.");
    describe_counter!(
        NEAR_CACHE_INVALIDATIONS,
        "Near-cache entries invalidated by the server."
    );
    describe_counter!(NEAR_CACHE_FLUSHES, "Whole near-cache flushes.");
    describe_counter!(EVENTS_PUBLISHED, "Lifecycle events published, by type.");
    describe_gauge!(
        EXPIRY_SWEEPER_LAG,
        Unit::Seconds,
        "How late the expiry sweeper found the oldest due session of its last sweep."
    );
    describe_histogram!(USER_SESSIONS, "A user's session index size when read.");
}

/// One store operation's latency and outcome (the store contract's dispatch calls this).
pub(crate) fn store_op(op: &'static str, started: std::time::Instant, ok: bool) {
    ::metrics::histogram!(STORE_COMMAND_SECONDS, "op" => op).record(started.elapsed());
    if !ok {
        ::metrics::counter!(STORE_COMMAND_ERRORS, "op" => op).increment(1);
    }
}

/// A store operation that failed before reaching a server (the store still connecting): a
/// failure, no latency.
pub(crate) fn store_unreached(op: &'static str) {
    ::metrics::counter!(STORE_COMMAND_ERRORS, "op" => op).increment(1);
}

/// Sessions ended by this instance, with their cause.
pub(crate) fn ended(kind: crate::EventKind, n: usize) {
    if n > 0 {
        ::metrics::counter!(SESSIONS_ENDED, "cause" => kind.as_str()).increment(n as u64);
    }
}

/// A session written for the first time.
pub(crate) fn created() {
    ::metrics::counter!(SESSIONS_CREATED).increment(1);
}

/// A login.
pub(crate) fn login() {
    ::metrics::counter!(LOGINS).increment(1);
}

/// Why a `503` answer (the `cause` label of [`UNAVAILABLE`]): one byte, kept in the
/// refusal until the adapter counts the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// Nothing was changed.
    NotReached,
    OutcomeUnknown,
    OverMemory,
}

impl Unavailable {
    /// The cause of a `503` answer for `e`.
    pub(crate) fn of(e: &crate::Error) -> Self {
        if e.is_out_of_memory() {
            Unavailable::OverMemory
        } else if e.kind() == crate::ErrorKind::OutcomeUnknown {
            Unavailable::OutcomeUnknown
        } else {
            Unavailable::NotReached
        }
    }

    /// Counts one answer.
    pub(crate) fn record(self) {
        let cause = match self {
            Unavailable::NotReached => "unavailable",
            Unavailable::OutcomeUnknown => "outcome_unknown",
            Unavailable::OverMemory => "over_memory",
        };
        ::metrics::counter!(UNAVAILABLE, "cause" => cause).increment(1);
    }
}

/// The events a batch published (`ids[i]` is `Some` for each one published).
pub(crate) fn published(events: &[crate::store::events::NewEvent], ids: &[Option<String>]) {
    for (e, id) in events.iter().zip(ids) {
        if id.is_some() {
            ::metrics::counter!(EVENTS_PUBLISHED, "type" => e.kind).increment(1);
            // An expiry has no request that ended it: its published event is its end.
            if e.kind == crate::EventKind::Expired.as_str() {
                ended(crate::EventKind::Expired, 1);
            }
        }
    }
}

/// The near-cache's counters (it keeps its own for `Store::near_cache_stats` too).
pub(crate) fn near_cache(name: &'static str) {
    ::metrics::counter!(name).increment(1);
}

/// The sweeper's lag, ms.
pub(crate) fn sweeper_lag(ms: u64) {
    ::metrics::gauge!(EXPIRY_SWEEPER_LAG).set(ms as f64 / 1000.0);
}

/// A user index read, with its size.
pub(crate) fn user_sessions(n: usize) {
    ::metrics::histogram!(USER_SESSIONS).record(n as f64);
}

/// Whether a store operation's answer is a success (the contract's dispatch records failures).
pub(crate) trait Succeeded {
    fn succeeded(&self) -> bool;
}

impl<T> Succeeded for crate::Result<T> {
    fn succeeded(&self) -> bool {
        self.is_ok()
    }
}

impl<T> Succeeded for Option<T> {
    fn succeeded(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Every value recorded as `handle` on a `tessera.request` span, and every other field
    /// value of any span (to check that no id or cookie is ever one).
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<(Vec<String>, Vec<String>)>>);

    struct Visit<'a>(&'a Seen, bool);

    impl tracing::field::Visit for Visit<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            let mut seen = self.0 .0.lock().unwrap();
            let text = format!("{value:?}").trim_matches('"').to_string();
            if self.1 && field.name() == "handle" {
                seen.0.push(text);
            } else {
                seen.1.push(text);
            }
        }
    }

    impl<S> tracing_subscriber::Layer<S> for Seen
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let request = attrs.metadata().name() == "tessera.request";
            attrs.record(&mut Visit(self, request));
        }

        fn on_record(
            &self,
            id: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let request = ctx
                .span(id)
                .is_some_and(|s| s.metadata().name() == "tessera.request");
            values.record(&mut Visit(self, request));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_requests_span_carries_its_handle_never_its_id() {
        use crate::adapter::SessionExt as _;
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        let manager = crate::SessionManager::new(
            crate::Store::memory(),
            crate::SessionConfig::builder(crate::Key::generate())
                .build()
                .unwrap(),
        );
        // A login: the request ends under a new session, whose handle the span records.
        let session = manager.start(None::<&str>);
        session.login("ada").await.unwrap();
        let cookie = session.finish(200).await.set_cookie.unwrap();
        let handle = manager.list_sessions("ada").await.unwrap()[0]
            .handle
            .clone();
        assert_eq!(seen.0.lock().unwrap().0, std::slice::from_ref(&handle));
        // The next request names it: recorded when it is loaded.
        let pair = cookie.split(';').next().unwrap().to_string();
        let session = manager.start([pair.as_str()]);
        let _ = session.request_span();
        assert_eq!(session.user_id().await.unwrap().as_deref(), Some("ada"));
        session.finish(200).await;
        let (handles, others) = seen.0.lock().unwrap().clone();
        assert!(
            handles.len() >= 2 && handles.iter().all(|h| *h == handle),
            "{handles:?}"
        );
        // Neither the cookie's value nor the id it signs is ever in a field of any span.
        let value = pair.split_once('=').unwrap().1;
        let id = value.split('.').next().unwrap();
        assert!(id.len() >= 16, "{value}");
        for v in handles.iter().chain(&others) {
            assert!(!v.contains(id), "{v}");
        }
    }
}
