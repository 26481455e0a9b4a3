//! Free queries over the session hashes with the Redis query engine (`FT.*`), where the
//! server has it: an index `[namespace]sessions-idx` `ON HASH PREFIX [namespace]session:`,
//! created once. Without the engine every call here is [`Error::Unsupported`], never a scan.
//!
//! Schema: `__u AS user_id` (TAG, separator U+001F like the indexed fields: a user id is one
//! tag), `__c AS created_at` and `__t AS last_seen` (NUMERIC, ms),
//! and every scalar indexed field as a case-sensitive TAG. List fields are not in it: a list is
//! stored as JSON text, which the engine cannot split into elements; query those with
//! [`SessionManager::find_sessions`].

use super::devices::handle_of;
use super::manager::SessionManager;
use super::query::{user_fields, FoundSession, FoundSessions};
use crate::error::{Error, Result};
use crate::store::fields;
use std::collections::BTreeMap;

/// The query engine's TAG separator of the scalar indexed fields: a control character no real
/// value holds. A value that does is refused on write ([`Error::InvalidIndexValue`]), so one
/// stored value is always one tag.
pub(crate) const TAG_SEPARATOR: char = '\u{1f}';
const TAG_SEPARATOR_STR: &str = "\u{1f}";

/// Whether the query engine keeps `value` as one whole tag, exactly as the field index does:
/// no [`TAG_SEPARATOR`] inside (it would be split into two tags, each found by a query for it),
/// no other ASCII control character but white space (the engine cuts a tag at NUL, so
/// `"a\0b"` would be found by `@tenant:{a}`, and a query cannot name the others), and no white
/// space at either end (the engine trims what C's `isspace` calls white space, so `" acme"`
/// would be found by `@tenant:{acme}` and never by a query for itself). The one rule for the
/// values of scalar indexed fields and for user ids (the `user_id` tag).
pub(crate) fn is_whole_tag(value: &str) -> bool {
    let engine_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r');
    !value
        .chars()
        .any(|c| (c.is_ascii_control() && !engine_space(c)) || c == TAG_SEPARATOR)
        && !value.starts_with(engine_space)
        && !value.ends_with(engine_space)
}

/// Escapes `value` for a TAG query built by the application (`@tenant:{<here>}`): every ASCII
/// character but letters, digits and `_` gets a backslash, so a value is matched as a whole,
/// whatever punctuation or spaces it holds, and cannot add query syntax of its own.
///
/// ```
/// use tessera_core::escape_tag;
/// assert_eq!(escape_tag("acme"), "acme");
/// assert_eq!(escape_tag("Acme, Inc"), r"Acme\,\ Inc");
/// assert_eq!(escape_tag("a} | @user_id:{x"), r"a\}\ \|\ \@user_id\:\{x");
/// let query = format!("@tenant:{{{}}}", escape_tag("evil-corp.io"));
/// assert_eq!(query, r"@tenant:{evil\-corp\.io}");
/// ```
pub fn escape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Every query is narrowed to documents with a creation time: live sessions, never the
/// tombstones a login's id rotation leaves for a moment.
const LIVE: &str = "@created_at:[-inf +inf]";

impl SessionManager {
    fn search_index_name(&self) -> String {
        crate::layout::keys::search_index(&self.inner.config.namespace)
    }

    /// Creates the query engine's index over the session hashes if it does not exist (once
    /// per manager; [`search`](Self::search) and [`search_counts`](Self::search_counts) call
    /// it too). Call it at startup to fail early: without the query engine it is
    /// [`Error::Unsupported`]. An index that exists already is kept as it is (drop it with
    /// `FT.DROPINDEX` after changing the indexed fields).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).index_field("tenant").build()?;
    /// let manager = SessionManager::new(Store::redis("redis://127.0.0.1:6379").await?, config);
    /// // At startup: an error now, not at the first query, if the server has no query engine.
    /// manager.create_search_index().await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_search_index(&self) -> Result<()> {
        self.inner
            .search_index
            .get_or_try_init(|| async {
                let config = &self.inner.config;
                let mut schema: Vec<String> = [
                    fields::USER,
                    "AS",
                    "user_id",
                    "TAG",
                    "CASESENSITIVE",
                    "SEPARATOR",
                    TAG_SEPARATOR_STR,
                    fields::CREATED,
                    "AS",
                    "created_at",
                    "NUMERIC",
                    "SORTABLE",
                    fields::TOUCHED,
                    "AS",
                    "last_seen",
                    "NUMERIC",
                    "SORTABLE",
                ]
                .into_iter()
                .map(String::from)
                .collect();
                for f in config.indexed.iter().filter(|f| !f.list) {
                    // One value per field: no separator may split it.
                    schema.extend(
                        [
                            f.name.as_str(),
                            "TAG",
                            "CASESENSITIVE",
                            "SEPARATOR",
                            TAG_SEPARATOR_STR,
                        ]
                        .into_iter()
                        .map(String::from),
                    );
                }
                let prefix = crate::layout::keys::session_prefix(config.namespace());
                self.inner
                    .store
                    .ft_create(&self.search_index_name(), &prefix, &schema)
                    .await
            })
            .await
            .map(|_| ())
    }

    /// Runs a query-engine query over the live sessions (`FT.SEARCH`, one command): `query` in
    /// the engine's syntax over the fields `user_id`, `created_at`, `last_seen` and the scalar
    /// indexed fields (`@tenant:{acme} @last_seen:[1700000000000 +inf]`); `*` or an empty
    /// query matches every session. Returns the total and `limit` sessions from `offset`.
    ///
    /// Only where the server has the query engine (see
    /// [`Store::has_query_engine`](crate::Store::has_query_engine)); elsewhere
    /// [`Error::Unsupported`].
    ///
    /// ```no_run
    /// # async fn demo(manager: tessera_core::SessionManager) -> Result<(), tessera_core::Error> {
    /// let found = manager.search("@tenant:{acme} @user_id:{ann}", 0, 20).await?;
    /// println!("{} sessions", found.count);
    /// # Ok(()) }
    /// ```
    pub async fn search(&self, query: &str, offset: usize, limit: usize) -> Result<FoundSessions> {
        self.create_search_index().await?;
        let q = query.trim();
        let full = if q.is_empty() || q == "*" {
            LIVE.to_string()
        } else {
            format!("{LIVE} ({q})")
        };
        let (total, docs) = self
            .inner
            .store
            .ft_search(&self.search_index_name(), &full, offset, limit)
            .await?;
        let prefix = crate::layout::keys::session_prefix(self.inner.config.namespace());
        let sessions = docs
            .into_iter()
            .filter_map(|(key, mut h)| {
                let member = key.strip_prefix(&prefix)?;
                if let Some(now) = self.inner.store.server_now() {
                    crate::store::fields::drop_expired(&mut h, now);
                }
                if !h.contains_key(fields::CREATED) {
                    return None; // ended between the match and the read of its fields
                }
                Some(FoundSession {
                    handle: handle_of(member),
                    user_id: h
                        .get(fields::USER)
                        .map(|u| String::from_utf8_lossy(u).into_owned()),
                    fields: user_fields(&self.inner.config, &h),
                })
            })
            .collect();
        Ok(FoundSessions {
            count: total,
            sessions,
        })
    }

    /// How many live sessions hold each value of `field` (`FT.AGGREGATE ... GROUPBY`, one
    /// command): `field` is a scalar indexed field or `user_id`. Sessions without the field
    /// are left out. Only where the server has the query engine; elsewhere
    /// [`Error::Unsupported`].
    ///
    /// ```no_run
    /// # async fn demo(manager: tessera_core::SessionManager) -> Result<(), tessera_core::Error> {
    /// let per_tenant = manager.search_counts("tenant").await?;
    /// let users_online = manager.search_counts("user_id").await?.len();
    /// println!("{users_online} users; acme: {:?}", per_tenant.get("acme"));
    /// # Ok(()) }
    /// ```
    pub async fn search_counts(&self, field: &str) -> Result<BTreeMap<String, usize>> {
        let known = field == "user_id" || self.inner.config.indexed(field).is_some_and(|f| !f.list);
        if !known {
            return Err(Error::NotIndexed(field.to_string()));
        }
        self.create_search_index().await?;
        let rows = self
            .inner
            .store
            .ft_count_by(&self.search_index_name(), LIVE, field)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(v, n)| Some((v.filter(|v| !v.is_empty())?, n)))
            .filter(|(_, n)| *n > 0)
            .collect())
    }
}
