//! Every parser of untrusted input, fuzzed (issue #26): the `Cookie` header, `X-Forwarded-For`
//! and `Forwarded`, CSRF tokens and form bodies, the events cursor and the admin routes' query
//! parameters. (Stored hashes: `crates/tessera-core/src/session/stored_data_fuzz.rs`; the
//! legacy records of tower-sessions and actix-session: their crates' unit tests.)
//!
//! Property tests with structure-aware generators: each input is built from parts a client
//! could send (a genuine value, the same value with one byte changed, truncated or extended,
//! a value signed by another key, other cookies, junk bytes), so the expected answer is known
//! from how the input was built, not from a second parser. Each property checks the answer,
//! that nothing panics, and that the parse holds at most a bounded number of bytes at once
//! relative to its input (an allocator that counts them, `tessera_tests::fuzzing::Counting`).
//!
//! `PROPTEST_CASES` cases each: 10,000 in the test command (`.cargo/config.toml`), 1,000,000
//! with `scripts/fuzz.sh`. The HTTP properties go through the real axum and actix stacks over a
//! socket, on the memory store (the parsers are the same code on every backend).

use proptest::prelude::*;
use std::cell::Cell;
use tessera_core::adapter::{ClientInfo, ManagerExt, SessionExt as _};
use tessera_core::{ForwardedHeader, Key, SessionConfig, SessionManager, Store};
use tessera_tests::fuzzing::{self, peak_bytes, Counting};
use tessera_tests::{token_in, Adapter, Backend, Fixture, Setup};

#[global_allocator]
static ALLOC: Counting = Counting;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `test` over `PROPTEST_CASES` inputs of `strategy`; a failure panics with the shrunk input.
fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    if let Err(e) = fuzzing::runner().run(&strategy, test) {
        panic!("{e}");
    }
}

/// How a genuine value is changed (each property decides, from the result, whether it still
/// counts as the genuine one: whitespace around a cookie value or a token is not part of it).
#[derive(Debug, Clone)]
enum Mutation {
    /// Byte `at` (modulo the length) replaced by `to`.
    Replace(usize, u8),
    /// Cut to `at` (modulo the length) bytes.
    Truncate(usize),
    /// One byte appended.
    Extend(u8),
    /// The ASCII case of byte `at` swapped (a letter; else the next byte changed).
    Case(usize),
}

impl Mutation {
    fn apply(&self, v: &[u8]) -> Vec<u8> {
        let mut out = v.to_vec();
        match *self {
            Mutation::Replace(at, to) => {
                let at = at % out.len();
                out[at] = if out[at] == to {
                    to.wrapping_add(1)
                } else {
                    to
                };
            }
            Mutation::Truncate(at) => out.truncate(at % out.len()),
            Mutation::Extend(b) => out.push(b),
            Mutation::Case(at) => {
                let at = at % out.len();
                out[at] = if out[at].is_ascii_alphabetic() {
                    out[at] ^ 0x20
                } else {
                    out[at].wrapping_add(1)
                };
            }
        }
        out
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Replace(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<u8>().prop_map(Mutation::Extend),
        any::<usize>().prop_map(Mutation::Case),
    ]
}

// ---------------------------------------------------------------------------------------------
// The Cookie header

/// One `name=value` pair (or junk) of a `Cookie` header.
#[derive(Debug, Clone)]
enum CookiePart {
    /// The genuine session cookie; `style`: plain, quoted, or spaces around `=`.
    Genuine(u8),
    /// The genuine value, changed.
    Changed(Mutation),
    /// A well-formed value for another id, signed by another key.
    OtherKey,
    /// Another cookie.
    Other(String, String),
    /// Bytes with no `;` in them.
    Junk(Vec<u8>),
}

fn cookie_part() -> impl Strategy<Value = CookiePart> {
    prop_oneof![
        1 => (0u8..3).prop_map(CookiePart::Genuine),
        3 => mutation().prop_map(CookiePart::Changed),
        1 => Just(CookiePart::OtherKey),
        2 => ("[a-z_]{1,8}", "[ -:<-~]{0,40}").prop_map(|(n, v)| CookiePart::Other(n, v)),
        // Mapped, not filtered: a filter's rejections add up over a million cases.
        2 => proptest::collection::vec(
            any::<u8>().prop_map(|b| if b == b';' { b'_' } else { b }),
            0..64
        )
        .prop_map(CookiePart::Junk),
    ]
}

/// Parts, a separator style, and into how many header lines they are split.
fn cookie_headers() -> impl Strategy<Value = (Vec<CookiePart>, u8, usize)> {
    (
        proptest::collection::vec(cookie_part(), 0..12),
        0u8..3,
        1usize..4,
    )
}

struct CookieSetup {
    manager: SessionManager,
    name: String,
    genuine: Vec<u8>,
    other_key: Vec<u8>,
}

/// The value of the cookie `name` in a `Set-Cookie` header.
fn cookie_value(set_cookie: &str) -> Vec<u8> {
    let first = set_cookie.split(';').next().unwrap();
    first.split_once('=').unwrap().1.as_bytes().to_vec()
}

async fn logged_in(manager: &SessionManager) -> Vec<u8> {
    let s = manager.start(None::<&[u8]>);
    s.login("ada").await.unwrap();
    let out = s.finish(200).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    cookie_value(&out.set_cookie.expect("a login sends the cookie"))
}

fn config(key: Key) -> SessionConfig {
    SessionConfig::builder(key).build().unwrap()
}

/// Renders the parts; whether one of them is the genuine value, intact.
fn render(
    setup: &CookieSetup,
    (parts, sep, lines): &(Vec<CookiePart>, u8, usize),
) -> (Vec<Vec<u8>>, bool) {
    let name = setup.name.as_bytes();
    let mut genuine = false;
    let rendered: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| {
            let pair = |v: &[u8]| [name, b"=", v].concat();
            match p {
                CookiePart::Genuine(style) => {
                    genuine = true;
                    match style {
                        0 => pair(&setup.genuine),
                        1 => [name, b"=\"", &setup.genuine, b"\""].concat(),
                        _ => [b" ", name, b" = ", &setup.genuine, b" "].concat(),
                    }
                }
                CookiePart::Changed(m) => {
                    let v = m.apply(&setup.genuine);
                    // Whitespace around a value is not part of it (RFC 6265's optional
                    // whitespace), and `;` ends it: a tab, a space or a `;` added at the end
                    // leaves it genuine.
                    let head = v.split(|b| *b == b';').next().unwrap_or_default();
                    genuine |= head.trim_ascii() == setup.genuine;
                    pair(&v)
                }
                CookiePart::OtherKey => pair(&setup.other_key),
                CookiePart::Other(n, v) => format!("{n}={v}").into_bytes(),
                CookiePart::Junk(b) => b.clone(),
            }
        })
        .collect();
    let sep: &[u8] = match sep {
        0 => b"; ",
        1 => b";",
        _ => b" ;  ",
    };
    let per_line = rendered.len().div_ceil(*lines).max(1);
    let headers = rendered.chunks(per_line).map(|c| c.join(sep)).collect();
    (headers, genuine)
}

/// A request's cookies find the session exactly when its genuine value is among them, intact:
/// a changed byte, a cut, an extra byte, another key's signature or junk around it never finds
/// a session and never hides the genuine one. Parsing holds at most 8 KiB plus four times the
/// header's size.
#[test]
fn cookie_header() {
    let rt = rt();
    let manager = SessionManager::new(Store::memory(), config(Key::generate()));
    let other = SessionManager::new(Store::memory(), config(Key::generate()));
    let setup = rt.block_on(async {
        CookieSetup {
            name: manager.config().cookie_name().to_string(),
            genuine: logged_in(&manager).await,
            other_key: logged_in(&other).await,
            manager: manager.clone(),
        }
    });
    check(cookie_headers(), |input| {
        let (headers, genuine) = render(&setup, &input);
        let size: usize = headers.iter().map(Vec::len).sum();
        let (session, peak) =
            peak_bytes(|| ManagerExt::start_with(&setup.manager, &headers, ClientInfo::default()));
        prop_assert!(peak <= 8192 + 4 * size, "{peak} bytes held to parse {size}");
        let user = rt.block_on(async {
            let user = session.user_id().await;
            let out = session.finish(200).await;
            prop_assert!(out.error.is_none(), "{:?}", out.error);
            Ok(user)
        })?;
        let user = user.map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(user.as_deref(), genuine.then_some("ada"));
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// X-Forwarded-For and Forwarded

/// One hop a proxy (or the client) wrote.
#[derive(Debug, Clone)]
enum Hop {
    /// An address, in one of the forms proxies write (`style`): plain, with a port, bracketed.
    Addr(std::net::IpAddr, u8, u16),
    /// Not an address: `unknown`, an obfuscated name, junk (no `,`, `;`, `"`, `=`).
    Junk(String),
    /// Bytes that are not UTF-8 (one hop, no address).
    NotText(Vec<u8>),
}

fn hop() -> impl Strategy<Value = Hop> {
    prop_oneof![
        4 => (any::<std::net::IpAddr>(), 0u8..3, any::<u16>()).prop_map(|(a, s, p)| Hop::Addr(a, s, p)),
        2 => prop_oneof![
            Just("unknown".to_string()),
            "_[a-zA-Z0-9._-]{1,12}",
            "[ -!#-+\\--:<>-~]{0,24}",
        ]
        .prop_map(Hop::Junk),
        1 => proptest::collection::vec(0x80u8..0xff, 1..8).prop_map(Hop::NotText),
    ]
}

impl Hop {
    /// As an `X-Forwarded-For` entry, or a `Forwarded` element's `for=` value.
    fn render(&self, forwarded: bool) -> Vec<u8> {
        match self {
            Hop::Addr(a, style, port) => {
                let text = match (a, style) {
                    (_, 0) => a.to_string(),
                    (std::net::IpAddr::V4(v4), 1) => format!("{v4}:{port}"),
                    (std::net::IpAddr::V6(v6), 1) => format!("[{v6}]:{port}"),
                    (std::net::IpAddr::V4(v4), _) => v4.to_string(),
                    (std::net::IpAddr::V6(v6), _) => format!("[{v6}]"),
                };
                // RFC 7239 quotes a value with `:` or `[`.
                if forwarded && (text.contains(':') || text.contains('[')) {
                    format!("\"{text}\"").into_bytes()
                } else {
                    text.into_bytes()
                }
            }
            Hop::Junk(s) => s.clone().into_bytes(),
            Hop::NotText(b) => b.clone(),
        }
    }

    /// The address the app should take from it (the same text `IpAddr` prints).
    fn address(&self) -> Option<String> {
        match self {
            Hop::Addr(a, ..) => Some(a.to_string()),
            // Junk that happens to be an address is an address.
            Hop::Junk(s) => s
                .trim()
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|a| a.to_string()),
            Hop::NotText(_) => None,
        }
    }
}

/// Hops, the header, how many proxies are trusted, a line split, the `Forwarded` element's
/// other parameters and case, and a `User-Agent`.
type ForwardedInput = (Vec<Hop>, bool, usize, usize, u8, Option<Vec<u8>>);

fn forwarded_input() -> impl Strategy<Value = ForwardedInput> {
    (
        proptest::collection::vec(hop(), 0..8),
        any::<bool>(),
        0usize..10,
        1usize..4,
        0u8..4,
        proptest::option::of(prop_oneof![
            "[ -~]{0,300}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..300),
        ]),
    )
}

/// The client's address is the entry written that many proxies back, when it is an address,
/// in every form proxies write it; fewer hops than proxies, or a hop that is not an address,
/// is no address; no proxies is the peer. The user agent is kept as text to 256 characters.
#[test]
fn forwarded_headers() {
    let peer: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    check(
        forwarded_input(),
        |(hops, forwarded, trusted, lines, style, agent)| {
            let entries: Vec<Vec<u8>> = hops
                .iter()
                .map(|h| {
                    let v = h.render(forwarded);
                    if !forwarded {
                        return v;
                    }
                    let key: &[u8] = if style & 1 == 0 { b"for=" } else { b"For=" };
                    match style >> 1 {
                        0 => [key, &v].concat(),
                        _ => [b"proto=https;", key, &v, b";by=_lb"].concat(),
                    }
                })
                .collect();
            let per_line = entries.len().div_ceil(lines).max(1);
            let header: Vec<Vec<u8>> = entries
                .chunks(per_line)
                .map(|c| c.join(&b", "[..]))
                .collect();
            let size: usize =
                header.iter().map(Vec::len).sum::<usize>() + agent.as_ref().map_or(0, Vec::len);
            let which = if forwarded {
                ForwardedHeader::Forwarded
            } else {
                ForwardedHeader::XForwardedFor
            };
            let (info, peak) = peak_bytes(|| {
                ClientInfo::behind_proxies(
                    agent.as_deref(),
                    Some(peer),
                    which,
                    header.iter().map(Vec::as_slice),
                    trusted,
                )
            });
            prop_assert!(peak <= 1024 + 4 * size, "{peak} bytes held to parse {size}");
            let expected = match trusted {
                0 => Some(peer.to_string()),
                n if n > hops.len() => None,
                n => hops[hops.len() - n].address(),
            };
            prop_assert_eq!(info.client_addr, expected);
            let agent_text = agent
                .as_deref()
                .and_then(|a| std::str::from_utf8(a).ok())
                .map(|s| s.chars().take(256).collect::<String>());
            prop_assert_eq!(info.user_agent, agent_text);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// CSRF tokens

/// A token offered to `verify_csrf`.
#[derive(Debug, Clone)]
enum TokenInput {
    /// One of the session's own tokens (each masked afresh).
    Valid(usize),
    /// One of them, changed.
    Changed(usize, Mutation),
    /// Another session's token.
    OtherSession,
    /// Any text.
    Text(String),
    /// Any bytes, read as text with replacement characters.
    Bytes(Vec<u8>),
}

fn token_input() -> impl Strategy<Value = TokenInput> {
    prop_oneof![
        1 => (0usize..3).prop_map(TokenInput::Valid),
        4 => ((0usize..3), mutation()).prop_map(|(i, m)| TokenInput::Changed(i, m)),
        1 => Just(TokenInput::OtherSession),
        2 => "[A-Za-z0-9_-]{0,100}".prop_map(TokenInput::Text),
        2 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(TokenInput::Bytes),
    ]
}

/// A CSRF token passes exactly when it is one of the session's own tokens, intact: a changed
/// byte, a cut, an extra byte, another session's token or junk is refused, never an error.
#[test]
fn csrf_tokens() {
    let rt = rt();
    let manager = SessionManager::new(Store::memory(), config(Key::generate()));
    let (cookie, valid, other) = rt.block_on(async {
        let s = manager.start(None::<&[u8]>);
        s.login("ada").await.unwrap();
        let mut valid = Vec::new();
        for _ in 0..3 {
            valid.push(s.csrf_token().await.unwrap());
        }
        let out = s.finish(200).await;
        let cookie = cookie_value(&out.set_cookie.unwrap());
        let o = manager.start(None::<&[u8]>);
        o.login("bob").await.unwrap();
        let other = o.csrf_token().await.unwrap();
        assert!(o.finish(200).await.error.is_none());
        (cookie, valid, other)
    });
    let header = [manager.config().cookie_name().as_bytes(), b"=", &cookie].concat();
    check(token_input(), |input| {
        let (token, expected) = match &input {
            TokenInput::Valid(i) => (valid[*i].clone(), true),
            TokenInput::Changed(i, m) => {
                let t = String::from_utf8_lossy(&m.apply(valid[*i].as_bytes())).into_owned();
                // Whitespace around a token is ignored (a pasted or templated token).
                let same = t.trim() == valid[*i];
                (t, same)
            }
            TokenInput::OtherSession => (other.clone(), false),
            TokenInput::Text(t) => (t.clone(), valid.iter().any(|v| v == t.trim())),
            TokenInput::Bytes(b) => {
                let t = String::from_utf8_lossy(b).into_owned();
                let ok = valid.iter().any(|v| v == t.trim());
                (t, ok)
            }
        };
        let s = manager.start([&header]);
        rt.block_on(s.load()).unwrap();
        // Loaded first: the check itself reads the session's secret and compares.
        let (verdict, peak) = peak_bytes(|| rt.block_on(s.verify_csrf(&token)));
        prop_assert!(
            peak <= 4096 + 4 * token.len(),
            "{} bytes held to check {} bytes",
            peak,
            token.len()
        );
        prop_assert!(rt.block_on(s.finish(200)).error.is_none());
        prop_assert_eq!(verdict.map_err(|e| e.to_string()), Ok(expected));
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Form bodies, over HTTP

/// One `key=value` pair of a form body.
#[derive(Debug, Clone)]
enum FormPair {
    /// `csrf_token` with one of the page's tokens, intact, percent-encoded or not.
    Token(usize, bool),
    /// `csrf_token` with one of them changed.
    Changed(usize, Mutation),
    /// `csrf_token` with junk.
    JunkToken(String),
    /// Another field.
    Field(String, String),
}

/// What is posted: pairs (or raw bytes) and a `Content-Type`.
#[derive(Debug, Clone)]
enum FormBody {
    Pairs(Vec<FormPair>),
    Raw(Vec<u8>),
}

fn form_input() -> impl Strategy<Value = (FormBody, usize)> {
    let pair = prop_oneof![
        2 => ((0usize..3), any::<bool>()).prop_map(|(i, e)| FormPair::Token(i, e)),
        3 => ((0usize..3), mutation()).prop_map(|(i, m)| FormPair::Changed(i, m)),
        1 => "[ -~]{0,40}".prop_map(FormPair::JunkToken),
        3 => ("[a-z]{1,8}", "[ -~]{0,40}").prop_map(|(k, v)| FormPair::Field(k, v)),
    ];
    (
        prop_oneof![
            4 => proptest::collection::vec(pair, 0..6).prop_map(FormBody::Pairs),
            1 => proptest::collection::vec(any::<u8>(), 0..256).prop_map(FormBody::Raw),
        ],
        0usize..CONTENT_TYPES.len(),
    )
}

/// `Content-Type`s and whether each is a form.
const CONTENT_TYPES: [(&str, bool); 7] = [
    ("application/x-www-form-urlencoded", true),
    ("application/x-www-form-urlencoded; charset=UTF-8", true),
    ("Application/X-WWW-Form-Urlencoded", true),
    ("application/json", false),
    ("text/plain", false),
    ("multipart/form-data; boundary=x", false),
    ("", false),
];

fn percent_encode(s: &[u8], all: bool) -> String {
    s.iter()
        .map(|&b| {
            if !all && (b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A form post to `/ui/counter` passes (`303`, the counter counts) exactly when it is a form
/// whose first `csrf_token` is one of the page's tokens, intact; any other body (a changed
/// token, junk, bytes that are no form, another content type) is refused with a `4xx` and
/// counts nothing.
fn form_posts(adapter: Adapter) {
    let rt = rt();
    let (fx, b, tokens) = rt.block_on(async {
        let fx = Fixture::new(Setup {
            backend: Backend::Memory,
            adapter,
        })
        .await;
        let b = fx.browser();
        let t = token_in(&b.get("/").await.body);
        let r = b
            .post_form("/ui/login", &[("csrf_token", &t), ("user_id", "ada")])
            .await;
        assert_eq!(r.status, 303, "{r:?}");
        let mut tokens = Vec::new();
        for _ in 0..3 {
            tokens.push(token_in(&b.get("/").await.body));
        }
        (fx, b, tokens)
    });
    let counted = Cell::new(0i64);
    check(form_input(), |(body, ct)| {
        let (content_type, is_form) = CONTENT_TYPES[ct];
        let mut first_token: Option<bool> = None;
        let bytes = match &body {
            FormBody::Raw(b) => b.clone(),
            FormBody::Pairs(pairs) => pairs
                .iter()
                .map(|p| {
                    let (key, value, valid) = match p {
                        FormPair::Token(i, all) => (
                            "csrf_token",
                            percent_encode(tokens[*i].as_bytes(), *all),
                            true,
                        ),
                        FormPair::Changed(i, m) => {
                            let v = m.apply(tokens[*i].as_bytes());
                            let same = String::from_utf8_lossy(&v).trim() == tokens[*i];
                            ("csrf_token", percent_encode(&v, false), same)
                        }
                        FormPair::JunkToken(j) => {
                            let ok = tokens.iter().any(|t| t == j.trim());
                            ("csrf_token", percent_encode(j.as_bytes(), false), ok)
                        }
                        FormPair::Field(k, v) => {
                            return format!("{k}={}", percent_encode(v.as_bytes(), false));
                        }
                    };
                    first_token.get_or_insert(valid);
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("&")
                .into_bytes(),
        };
        let expected = is_form && first_token == Some(true);
        let r = rt.block_on(b.post_with_body("/ui/counter", content_type, &bytes));
        if expected {
            prop_assert_eq!(r.status, 303, "{:?}", r);
            counted.set(counted.get() + 1);
        } else {
            prop_assert!((400..500).contains(&r.status), "{:?}", r);
        }
        Ok(())
    });
    let me = rt.block_on(b.get("/me")).json();
    let expected = counted.get();
    assert_eq!(
        me["counter"].as_i64().unwrap_or(0),
        expected,
        "every accepted post counted once, every refused one not at all: {me}"
    );
    drop(fx);
}

#[test]
fn form_posts_axum() {
    form_posts(Adapter::Axum);
}

#[test]
fn form_posts_actix() {
    form_posts(Adapter::Actix);
}

// ---------------------------------------------------------------------------------------------
// The events cursor

/// A cursor offered to `read_events`.
#[derive(Debug, Clone)]
enum CursorInput {
    /// One a page returned.
    Real(usize),
    /// `ms-seq` of any two numbers.
    Numbers(u64, u64),
    /// `ms` alone.
    Ms(u64),
    /// Digits and dashes, in any shape (past `u64`, several dashes, empty parts).
    Digits(String),
    /// Any text.
    Text(String),
}

fn cursor_input() -> impl Strategy<Value = CursorInput> {
    prop_oneof![
        (0usize..4).prop_map(CursorInput::Real),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| CursorInput::Numbers(a, b)),
        // The edges: the largest id (no id can follow it) and its neighbours.
        (
            prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(0)],
            prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(0)]
        )
            .prop_map(|(a, b)| CursorInput::Numbers(a, b)),
        any::<u64>().prop_map(CursorInput::Ms),
        "[0-9-]{0,45}".prop_map(CursorInput::Digits),
        "\\PC{0,60}".prop_map(CursorInput::Text),
    ]
}

/// Any cursor is either read (a page of the events after it) or refused with
/// `Error::InvalidCursor`, never a panic or another error: every cursor a page returned and
/// every `ms-seq` of two numbers is read, but the largest, after which nothing can come (Redis
/// refuses it as an exclusive start), which is refused; so is text with a character no cursor
/// has.
#[test]
fn events_cursor() {
    let rt = rt();
    let manager = SessionManager::new(
        Store::memory(),
        SessionConfig::builder(Key::generate())
            .lifecycle_events(true)
            .build()
            .unwrap(),
    );
    let cursors = rt.block_on(async {
        let mut cursors = Vec::new();
        for u in ["ada", "bob", "cy", "dee"] {
            let s = manager.start(None::<&[u8]>);
            s.login(u).await.unwrap();
            assert!(s.finish(200).await.error.is_none());
            cursors.push(manager.read_events(None, 1000).await.unwrap().cursor);
        }
        cursors
    });
    check(cursor_input(), |input| {
        let (cursor, must_read, must_refuse) = match &input {
            CursorInput::Real(i) => (cursors[*i].clone(), true, false),
            CursorInput::Numbers(a, b) => {
                let last = (*a, *b) == (u64::MAX, u64::MAX);
                (format!("{a}-{b}"), !last, last)
            }
            CursorInput::Ms(a) => (a.to_string(), true, false),
            CursorInput::Digits(d) => (d.clone(), false, false),
            CursorInput::Text(t) => {
                let odd = t
                    .chars()
                    .any(|c| !(c.is_ascii_digit() || c == '-' || c == '+'));
                (t.clone(), false, odd)
            }
        };
        let got = rt.block_on(manager.read_events(Some(&cursor), 10));
        match got {
            Ok(page) => {
                prop_assert!(!must_refuse, "{cursor:?} was read");
                prop_assert!(page.events.len() <= 10);
            }
            Err(tessera_core::Error::InvalidCursor(c)) => {
                prop_assert!(!must_read, "{cursor:?} was refused");
                prop_assert_eq!(c, cursor);
            }
            Err(e) => prop_assert!(false, "{cursor:?}: {e}"),
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The admin routes' query parameters, over HTTP

fn query_input() -> impl Strategy<Value = (usize, Vec<(String, String)>, bool)> {
    let key = prop_oneof![
        Just("limit".to_string()),
        Just("field".to_string()),
        Just("after".to_string()),
        Just("tenant".to_string()),
        Just("cart".to_string()),
        "\\PC{0,12}",
    ];
    let value = prop_oneof![
        "[0-9]{0,25}",
        Just("acme".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        "\\PC{0,40}",
    ];
    (
        0usize..ADMIN_ROUTES.len(),
        proptest::collection::vec((key, value), 0..5),
        any::<bool>(),
    )
}

const ADMIN_ROUTES: [(&str, &str); 4] = [
    ("GET", "/admin/sessions"),
    ("DELETE", "/admin/sessions"),
    ("GET", "/admin/counts"),
    ("GET", "/admin/events"),
];

/// Any query on the admin routes is answered `200` or `400` with a JSON body, percent-encoded
/// or not, on both adapters: never a `5xx`, never a panic.
fn admin_queries(adapter: Adapter) {
    let rt = rt();
    let (fx, admin) = rt.block_on(async {
        let fx = Fixture::with(
            Setup {
                backend: Backend::Memory,
                adapter,
            },
            |c| {
                c.index_field("tenant")
                    .index_list_field("cart")
                    .lifecycle_events(true)
            },
        )
        .await;
        let b = fx.browser();
        let r = b
            .post(
                "/login",
                Some(serde_json::json!({"user_id": "ada", "tenant": "acme"})),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let admin = b.admin(tessera_tests::fixture::ADMIN_TOKEN);
        (fx, admin)
    });
    check(query_input(), |(route, pairs, encode_all)| {
        let (method, path) = ADMIN_ROUTES[route];
        let query = pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    percent_encode(k.as_bytes(), encode_all),
                    percent_encode(v.as_bytes(), encode_all)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let target = format!("{path}?{query}");
        let r = rt.block_on(admin.request(method.parse().unwrap(), &target, None, &[]));
        prop_assert!(
            r.status == 200 || r.status == 400,
            "{method} {target}: {r:?}"
        );
        let body: Result<serde_json::Value, _> = serde_json::from_str(&r.body);
        prop_assert!(body.is_ok(), "{method} {target}: not JSON: {r:?}");
        Ok(())
    });
    drop(fx);
}

#[test]
fn admin_queries_axum() {
    admin_queries(Adapter::Axum);
}

#[test]
fn admin_queries_actix() {
    admin_queries(Adapter::Actix);
}
