//! Taking over sessions written by actix-session's Redis store, so switching to tessera logs
//! nobody out.

use actix_web::http::header::{HeaderMap, COOKIE};
use serde_json::Value;
use std::collections::HashMap;
use tessera_core::adapter::{ManagerExt as _, Records, TakeOver, Wrote};
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
    /// logout-all ends it. The value stays a session field as well. A session whose value
    /// there is a user id tessera refuses (empty, over 512 bytes, control characters, white
    /// space at either end) is not taken over: that user logs in again.
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
        let records = manager.records();
        let decode = |raw: &[u8]| decode_state(raw, self.user_id_field.as_deref(), &records);
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
        match records.take_over(&key, self.grace, decode, write).await {
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

/// `raw` as an actix-session state (its values, each JSON text), with its user: the value
/// of `user_id_field`, a string or a number as text. `None`, logged with the reason, when it
/// is not one, or when its user is an id tessera refuses (`records` checks it): its login
/// would fail at every request, and taken over without it the app's own user field would
/// stay in a session that no logout-all ends.
fn decode_state(
    raw: &[u8],
    user_id_field: Option<&str>,
    records: &Records,
) -> Option<(HashMap<String, String>, Option<String>)> {
    let state: HashMap<String, String> = match serde_json::from_slice(raw) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "an actix-session session could not be decoded: not taken over");
            return None;
        }
    };
    let user = user_id_field.and_then(|f| match value_of(state.get(f)?) {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    if let Some(u) = &user {
        if let Err(e) = records.check(&HashMap::new(), Some(u)) {
            tracing::warn!(error = %e, "an actix-session session names a user id tessera refuses: not taken over");
            return None;
        }
    }
    Some((state, user))
}

/// An actix-session value (JSON text) as tessera's JSON value; anything else is kept as the
/// text it is.
fn value_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Property tests of [`decode_state`]: the bytes under an actix-session key are untrusted
/// (written by another app, or by anyone with access to the store). Structure-aware: states
/// as actix-session writes them, the same bytes mutated, and arbitrary bytes.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::collection::{hash_map, vec};
    use proptest::prelude::*;
    use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm};
    use std::ops::Range;
    use std::sync::OnceLock;
    use tessera_core::{Key, SessionConfig, Store};

    /// `PROPTEST_CASES` cases per property: 10,000 in the test command (`.cargo/config.toml`),
    /// 1,000,000 under `scripts/fuzz.sh`.
    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            // ChaCha, the default, is most of a case's time in a debug build.
            rng_algorithm: RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        }
    }

    const USER_FIELD: &str = "user_id";

    /// What checks the user id: the records of a manager in memory (no store is read).
    fn records() -> &'static Records {
        static RECORDS: OnceLock<Records> = OnceLock::new();
        RECORDS.get_or_init(|| {
            let config = SessionConfig::builder(Key::generate()).build().unwrap();
            SessionManager::new(Store::memory(), config).records()
        })
    }

    fn decode(raw: &[u8], user_id_field: Option<&str>) -> Decoded {
        decode_state(raw, user_id_field, records())
    }

    /// What [`decode_state`] answers.
    type Decoded = Option<(HashMap<String, String>, Option<String>)>;

    /// Whether tessera refuses `user` for certain, by its documented rule: empty, over 512
    /// bytes, control characters (U+001F, NUL, BEL), white space at either end.
    fn surely_refused(user: &str) -> bool {
        user.is_empty()
            || user.len() > 512
            || user.contains(['\u{1f}', '\0', '\u{7}'])
            || user.starts_with([' ', '\n'])
            || user.ends_with([' ', '\n'])
    }

    fn chars(c: impl Strategy<Value = char>, n: Range<usize>) -> impl Strategy<Value = String> {
        vec(c, n).prop_map(String::from_iter)
    }

    /// Any text: empty, ASCII, any Unicode (controls, U+001F, characters JSON escapes or
    /// writes as surrogate pairs), reserved names (`__`), the user field, JSON look-alikes,
    /// long.
    fn text() -> impl Strategy<Value = String> {
        let special = prop_oneof![
            Just('\0'),
            Just('\n'),
            Just('"'),
            Just('\\'),
            Just('\u{1f}'),
            Just('\u{7f}'),
            Just('\u{2028}'),
            Just('é'),
            Just('\u{1F600}'),
            Just('\u{FFFF}'),
        ];
        prop_oneof![
            2 => Just(String::new()),
            2 => Just(USER_FIELD.to_string()),
            4 => chars(proptest::char::range('a', 'z'), 1..8),
            2 => chars(proptest::char::range('a', 'z'), 0..6).prop_map(|s| format!("__{s}")),
            4 => chars(any::<char>(), 0..12),
            2 => chars(special, 1..6),
            1 => Just("null".to_string()),
            1 => Just("{\"a\":".to_string()),
            1 => (256..520usize).prop_map(|n| "x".repeat(n)),
        ]
    }

    /// Any JSON value: nested, huge and tiny numbers, Unicode, empty.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop_oneof![
                Just(u64::MAX as f64),
                Just(f64::MAX),
                Just(f64::MIN),
                Just(f64::MIN_POSITIVE),
                Just(5e-324),
                Just(-0.0),
                any::<f64>(),
            ]
            .prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
                .map(Value::Number)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                vec((text(), inner), 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A value as actix-session stores it (JSON text), or any other text (an app that wrote
    /// the store itself). To the decoder each is a string; JSON matters in the user field.
    fn value_text() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => json().prop_map(|v| v.to_string()),
            1 => text(),
        ]
    }

    /// The user field's text, with the user it names.
    fn user_text() -> impl Strategy<Value = (String, Option<String>)> {
        let same = |s: String| (s.clone(), Some(s));
        let pair = |t: &str, u: Option<&str>| Just((t.to_string(), u.map(str::to_string)));
        prop_oneof![
            text().prop_map(|s| (Value::String(s.clone()).to_string(), Some(s))),
            any::<i64>().prop_map(move |n| same(n.to_string())),
            any::<u64>().prop_map(move |n| same(n.to_string())),
            any::<f64>().prop_filter_map("finite", move |f| {
                Some(same(serde_json::Number::from_f64(f)?.to_string()))
            }),
            // JSON numbers that print otherwise, or do not fit (then: the text itself).
            pair("1e5", Some("100000.0")),
            pair("1e16", Some("1e+16")),
            pair("-0", Some("-0.0")),
            pair("1e400", Some("1e400")),
            pair(
                "123456789012345678901234567890",
                Some("1.2345678901234568e+29")
            ),
            // Not JSON: the text itself.
            chars(proptest::char::range('a', 'z'), 1..10).prop_map(move |s| same(format!("{s} x"))),
            pair("", Some("")),
            // User ids tessera refuses, and the longest it takes.
            prop_oneof![
                Just(" ada".to_string()),
                Just("ada\n".to_string()),
                Just("a\u{1f}b".to_string()),
                Just("a\u{7}b".to_string()),
                Just("a".repeat(512)),
                Just("a".repeat(513)),
            ]
            .prop_map(|s| (Value::String(s.clone()).to_string(), Some(s))),
            // JSON that names no user.
            pair("null", None),
            pair("true", None),
            pair("[\"ada\"]", None),
            pair("{\"id\":1}", None),
        ]
    }

    /// A state actix-session could have written (`entries` values, maybe a user), the user
    /// it names through [`USER_FIELD`], and its bytes (compact or pretty JSON).
    fn valid_state(
        entries: Range<usize>,
    ) -> impl Strategy<Value = (HashMap<String, String>, Option<String>, Vec<u8>)> {
        (
            hash_map(text(), value_text(), entries),
            proptest::option::of(user_text()),
            any::<bool>(),
        )
            .prop_map(|(mut state, user, pretty)| {
                let user = match user {
                    Some((text, user)) => {
                        state.insert(USER_FIELD.to_string(), text);
                        user
                    }
                    None => {
                        state.remove(USER_FIELD);
                        None
                    }
                };
                let raw = if pretty {
                    serde_json::to_vec_pretty(&state).unwrap()
                } else {
                    serde_json::to_vec(&state).unwrap()
                };
                (state, user, raw)
            })
    }

    /// One change to valid bytes.
    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Truncate(usize),
        Append(Vec<u8>),
        Insert(usize, Vec<u8>),
        Remove(usize, usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
            any::<usize>().prop_map(Mutation::Truncate),
            vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
            (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
            (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        ]
    }

    /// `raw` with the mutations applied in turn (positions taken modulo the length).
    fn mutate(mut raw: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
        for m in ms {
            let at = |i: usize, len: usize| i % (len + 1);
            match m {
                Mutation::Flip(i, x) if !raw.is_empty() => {
                    let n = raw.len();
                    raw[i % n] ^= x;
                }
                Mutation::Flip(..) => {}
                Mutation::Truncate(i) => raw.truncate(at(*i, raw.len())),
                Mutation::Append(b) => raw.extend_from_slice(b),
                Mutation::Insert(i, b) => {
                    let i = at(*i, raw.len());
                    raw.splice(i..i, b.iter().copied());
                }
                Mutation::Remove(i, n) => {
                    let i = at(*i, raw.len());
                    let end = (i + n).min(raw.len());
                    raw.drain(i..end);
                }
            }
        }
        raw
    }

    /// A JSON object with repeated keys, and the state it decodes to (the last value of each
    /// key, as serde reads a map).
    fn duplicated_keys() -> impl Strategy<Value = (Vec<u8>, HashMap<String, String>)> {
        let key = prop_oneof![Just(USER_FIELD), Just("a"), Just("b")];
        vec((key, value_text()), 1..8).prop_map(|pairs| {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::from(*k), Value::from(v.as_str())))
                .collect();
            let raw = format!("{{{}}}", body.join(",")).into_bytes();
            let state = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            (raw, state)
        })
    }

    /// Bytes from anywhere: random, JSON tokens at random, nesting past serde_json's depth
    /// limit (in the state, and in the user field's text).
    fn hostile() -> impl Strategy<Value = Vec<u8>> {
        let token = proptest::sample::select(b"{}[]\":,\\ 0-1.eEtruefalsn".to_vec());
        prop_oneof![
            vec(any::<u8>(), 0..256),
            vec(token, 0..256),
            (1..1_000usize).prop_map(|n| {
                let mut v = b"{\"a\":".to_vec();
                v.extend(std::iter::repeat_n(b'[', n));
                v.extend(std::iter::repeat_n(b']', n));
                v.push(b'}');
                v
            }),
            (1..1_000usize).prop_map(|n| {
                format!(
                    "{{\"{USER_FIELD}\":\"{}1{}\"}}",
                    "[".repeat(n),
                    "]".repeat(n)
                )
                .into_bytes()
            }),
        ]
    }

    /// What holds of every decode, whatever the bytes: no panic (the caller of this), a user
    /// only one tessera accepts, and an output no larger than the input encodes. The decode.
    fn check_any(raw: &[u8]) -> Result<Decoded, TestCaseError> {
        let out = decode(raw, Some(USER_FIELD));
        let Some((state, user)) = &out else {
            return Ok(out);
        };
        // `{"":""}` is 7 bytes; each further entry `,"":""` 6.
        prop_assert!(state.len() * 6 <= raw.len() + 5);
        // JSON escapes only shrink (`\n`, `\u00e9`), and the bytes were UTF-8.
        let bytes: usize = state.iter().map(|(k, v)| k.len() + v.len()).sum();
        prop_assert!(bytes <= raw.len(), "{bytes} bytes out of {}", raw.len());
        if let Some(u) = user {
            // The field's text, or a number's shortest form (24 bytes at most).
            prop_assert!(state.contains_key(USER_FIELD));
            prop_assert!(u.len() <= raw.len().max(24), "a user of {} bytes", u.len());
            prop_assert!(records().check(&HashMap::new(), Some(u)).is_ok());
        }
        // Without a user field: the same state, no user.
        prop_assert_eq!(decode(raw, None), Some((state.clone(), None)));
        Ok(out)
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn valid_states_decode_to_exactly_their_values_and_user(
            (state, user, raw) in valid_state(0..8)
        ) {
            let out = check_any(&raw)?;
            let accepted = user
                .as_deref()
                .is_none_or(|u| records().check(&HashMap::new(), Some(u)).is_ok());
            if user.as_deref().is_some_and(surely_refused) {
                prop_assert!(!accepted);
            }
            prop_assert_eq!(out, accepted.then(|| (state.clone(), user)));
            prop_assert_eq!(decode(&raw, None), Some((state, None)));
        }

        #[test]
        fn mutated_states_never_panic_and_stay_bounded(
            (_, _, raw) in valid_state(0..8),
            ms in vec(mutation(), 1..4),
        ) {
            check_any(&mutate(raw, &ms))?;
        }

        #[test]
        fn every_truncation_is_refused_or_bounded((_, _, raw) in valid_state(0..3)) {
            for n in 0..raw.len() {
                check_any(&raw[..n])?;
            }
        }

        #[test]
        fn duplicated_keys_keep_the_last_value((raw, state) in duplicated_keys()) {
            check_any(&raw)?;
            let got = decode(&raw, None).map(|(s, _)| s);
            prop_assert_eq!(got, Some(state));
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in hostile()) {
            check_any(&raw)?;
        }
    }

    /// What is not an actix-session state, or names a user tessera refuses: `None` (and a
    /// warning naming why).
    #[test]
    fn refusals_are_none() {
        for raw in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"a\":1}",
            b"{\"a\":null}",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":\"x\"",
            b"{\"a\":\"\xff\"}",
        ] {
            assert_eq!(decode(raw, Some(USER_FIELD)), None, "{raw:?}");
        }
        assert_eq!(
            decode(b"{}", Some(USER_FIELD)),
            Some((HashMap::new(), None))
        );
        let user = |text: &str| {
            let raw = serde_json::to_vec(&HashMap::from([(USER_FIELD, text)])).unwrap();
            decode(&raw, Some(USER_FIELD)).map(|(_, u)| u)
        };
        assert_eq!(user("\"ada\""), Some(Some("ada".to_string())));
        assert_eq!(user("42"), Some(Some("42".to_string())));
        assert_eq!(user("null"), Some(None));
        // A user id tessera refuses: not taken over (its login would fail every time).
        for refused in [
            "\"\"",
            "\" ada\"",
            "\"a\\u001fb\"",
            &format!("\"{}\"", "a".repeat(513)),
        ] {
            assert_eq!(user(refused), None, "{refused:.20}");
        }
    }
}
