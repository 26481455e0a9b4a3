//! Queries across sessions by an indexed field: find, count, count per value, end. Each costs
//! a few round trips whose commands grow with the sessions that hold the value (and members
//! not yet pruned), never with the keyspace: no `SCAN`, no `KEYS`, every command single-key.

use super::devices::handle_of;
use super::index::{prunable_below, terms, GUARD};
use super::manager::SessionManager;
use super::state::is_user_field;
use crate::codec;
use crate::config::IndexedField;
use crate::error::{Error, Result};
use crate::store::{fields, EndIf};
use std::collections::{BTreeMap, HashMap};
use tracing::Instrument as _;

/// One session found by [`SessionManager::find_sessions`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FoundSession {
    /// The session's handle (as in the device list; never its id).
    pub handle: String,
    /// The bound user, if logged in.
    pub user_id: Option<String>,
    /// Its user fields, each decoded as JSON.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// What [`SessionManager::find_sessions`] found: the exact count of live sessions that hold
/// the value, and the requested page of them, most recently refreshed first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FoundSessions {
    /// How many live sessions hold the value.
    pub count: usize,
    /// The page asked for.
    pub sessions: Vec<FoundSession>,
}

/// A live session that holds the value, as checked: its member and user.
struct Match {
    member: String,
    user: Option<String>,
}

impl SessionManager {
    fn indexed_field(&self, field: &str) -> Result<&IndexedField> {
        self.inner
            .config
            .indexed(field)
            .ok_or_else(|| Error::NotIndexed(field.to_string()))
    }

    /// The live sessions whose `field` holds `value` (checked against each session, so a
    /// session that ended, expired or changed the value is never counted), most recently
    /// refreshed first; the members that no longer belong are pruned on the way.
    async fn matches(&self, f: &IndexedField, value: &str) -> Result<Vec<Match>> {
        let config = &self.inner.config;
        let store = &self.inner.store;
        let key = config.value_index_key(&f.name, value);
        // No later than every read below: what stale members are pruned against.
        let checked = store.server_now();
        let mut members = store.index_members(&key).await?;
        members.reverse();
        let keys: Vec<String> = members.iter().map(|m| config.session_key(m)).collect();
        let rows = store
            .peek_many(
                &keys,
                &[
                    f.name.as_str(),
                    fields::USER,
                    fields::MOVING,
                    &stamp_of(&f.name),
                ],
            )
            .await?;
        let mut found = Vec::new();
        let mut stale = Vec::new();
        // A session being moved to a new id by a login: its old key (frozen, `__m` = "<ms>
        // <new member>") and, once created, the new one both hold the value for a moment.
        let mut moving_to: HashMap<String, String> = HashMap::new();
        for (m, row) in members.into_iter().zip(rows) {
            let hit = row.and_then(|mut r| {
                let raw = r[0].take()?;
                if expired(&r[3], checked) {
                    return None; // past its lifetime: as good as gone
                }
                if let Some(succ) = r[2]
                    .take()
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.rsplit(' ').next().map(String::from))
                {
                    moving_to.insert(m.clone(), succ);
                }
                terms(&raw, f.list)
                    .iter()
                    .any(|t| t == value)
                    .then(|| Match {
                        member: m.clone(),
                        user: r[1]
                            .take()
                            .map(|u| String::from_utf8_lossy(&u).into_owned()),
                    })
            });
            match hit {
                Some(h) => found.push(h),
                None => stale.push(m),
            }
        }
        if !moving_to.is_empty() {
            // Counted once: under the new id when both are here.
            let present: std::collections::HashSet<String> =
                found.iter().map(|h| h.member.clone()).collect();
            found.retain(|h| {
                moving_to
                    .get(&h.member)
                    .is_none_or(|succ| !present.contains(succ))
            });
        }
        if let (false, Some(at)) = (stale.is_empty(), checked) {
            let store = store.clone();
            let max = prunable_below(at, self.index_bound_ms());
            tokio::spawn(async move {
                if let Err(e) = store.index_prune(&key, &stale, max).await {
                    tracing::debug!(error = %e, "could not prune a field index");
                }
            });
        }
        Ok(found)
    }

    /// The live sessions whose indexed `field` holds `value` (for a list field: has it as an
    /// element): the exact count, and `limit` of them from `offset`, most recently refreshed
    /// first, with their user fields.
    ///
    /// Cost: one `ZRANGEBYSCORE` of the value's index, one round trip of `HMGET`s (one per
    /// candidate), and one of `HGETALL`s for the page. A field that is not indexed is
    /// [`Error::NotIndexed`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).index_field("tenant").build().unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// let session = manager.start(None::<&str>);
    /// session.insert("tenant", "acme").await?;
    /// session.finish(200).await;
    /// let found = manager.find_sessions("tenant", "acme", 0, 10).await?;
    /// assert_eq!(found.count, 1);
    /// assert_eq!(found.sessions[0].fields["tenant"], "acme");
    /// # Ok(()) }
    /// ```
    pub async fn find_sessions(
        &self,
        field: &str,
        value: &str,
        offset: usize,
        limit: usize,
    ) -> Result<FoundSessions> {
        let f = self.indexed_field(field)?.clone();
        let span = tracing::debug_span!("tessera.find_sessions", field);
        async {
            let found = self.matches(&f, value).await?;
            let page: Vec<&Match> = found.iter().skip(offset).take(limit).collect();
            let keys: Vec<String> = page
                .iter()
                .map(|m| self.inner.config.session_key(&m.member))
                .collect();
            let hashes = if keys.is_empty() {
                Vec::new()
            } else {
                self.inner.store.read_many(&keys).await?
            };
            let mut sessions = Vec::with_capacity(page.len());
            let mut count = found.len();
            let now = self.inner.store.server_now();
            for (m, mut h) in page.into_iter().zip(hashes) {
                if let Some(now) = now {
                    crate::store::fields::drop_expired(&mut h, now);
                }
                let holds = h
                    .get(&f.name)
                    .is_some_and(|raw| terms(raw, f.list).iter().any(|t| t == value));
                if !h.contains_key(fields::CREATED) || !holds {
                    // Ended or changed between the check and this read: neither listed nor
                    // counted.
                    count -= 1;
                    continue;
                }
                sessions.push(FoundSession {
                    handle: handle_of(&m.member),
                    user_id: m.user.clone(),
                    fields: user_fields(&self.inner.config, &h),
                });
            }
            Ok(FoundSessions { count, sessions })
        }
        .instrument(span)
        .await
    }

    /// How many live sessions hold `value` in the indexed `field` (exact). Two round trips.
    pub async fn count_sessions(&self, field: &str, value: &str) -> Result<usize> {
        let f = self.indexed_field(field)?.clone();
        Ok(self.matches(&f, value).await?.len())
    }

    /// For each value the indexed `field` holds in some live session, how many live sessions
    /// hold it (values held by none are left out). Cost: the field's value list, then one
    /// round trip of index reads (one per value) and one of `HMGET`s (one per candidate
    /// session): it grows with the sessions that hold the field, not with the keyspace.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).index_field("tenant").build().unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// for tenant in ["acme", "acme", "globex"] {
    ///     let session = manager.start(None::<&str>);
    ///     session.insert("tenant", tenant).await?;
    ///     session.finish(200).await;
    /// }
    /// let counts = manager.count_by_value("tenant").await?;
    /// assert_eq!(counts["acme"], 2);
    /// assert_eq!(counts["globex"], 1);
    /// # Ok(()) }
    /// ```
    pub async fn count_by_value(&self, field: &str) -> Result<BTreeMap<String, usize>> {
        let f = self.indexed_field(field)?.clone();
        let config = &self.inner.config;
        let store = &self.inner.store;
        let span = tracing::debug_span!("tessera.count_by_value", field);
        async {
            // No later than every read below: what stale members and values are pruned against.
            let checked = store.server_now();
            let values = store.index_members(&config.values_key(&f.name)).await?;
            let reads = values.iter().map(|v| {
                let key = config.value_index_key(&f.name, v);
                async move { store.index_members(&key).await }
            });
            let lists = futures_util::future::join_all(reads).await;
            // Each candidate session once, with the values whose index named it.
            let mut candidates: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, list) in lists.into_iter().enumerate() {
                for m in list? {
                    candidates.entry(m).or_default().push(i);
                }
            }
            let members: Vec<String> = candidates.keys().cloned().collect();
            let keys: Vec<String> = members.iter().map(|m| config.session_key(m)).collect();
            let rows = store
                .peek_many(&keys, &[f.name.as_str(), &stamp_of(&f.name)])
                .await?;
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            let mut stale: HashMap<usize, Vec<String>> = HashMap::new();
            for (m, row) in members.iter().zip(rows) {
                let held = row
                    .and_then(|mut r| {
                        if expired(&r[1], checked) {
                            None
                        } else {
                            r[0].take()
                        }
                    })
                    .map(|raw| terms(&raw, f.list))
                    .unwrap_or_default();
                for &i in &candidates[m] {
                    if held.iter().any(|t| *t == values[i]) {
                        *counts.entry(values[i].clone()).or_default() += 1;
                    } else {
                        stale.entry(i).or_default().push(m.clone());
                    }
                }
            }
            let max = checked.map(|at| prunable_below(at, self.index_bound_ms()));
            let prunes: Vec<(String, Vec<String>)> = stale
                .into_iter()
                .map(|(i, ms)| (config.value_index_key(&f.name, &values[i]), ms))
                .chain(std::iter::once((
                    config.values_key(&f.name),
                    values
                        .iter()
                        .filter(|v| !counts.contains_key(*v))
                        .cloned()
                        .collect(),
                )))
                .filter(|(_, ms)| !ms.is_empty())
                .collect();
            if let (false, Some(max)) = (prunes.is_empty(), max) {
                let store = store.clone();
                tokio::spawn(async move {
                    for (key, ms) in prunes {
                        if let Err(e) = store.index_prune(&key, &ms, max).await {
                            tracing::debug!(error = %e, "could not prune a field index");
                        }
                    }
                });
            }
            Ok(counts)
        }
        .instrument(span)
        .await
    }

    /// Ends every live session whose indexed `field` holds `value` (an admin action: a tenant
    /// being offboarded, a recalled product's carts), and returns how many ended.
    ///
    /// Each session is ended by a single-key script that deletes it only if the field still
    /// holds what the query saw (a session that moved to another value meanwhile is left
    /// alone). Racing logins: a login (or a first save) whose index entry the query saw but
    /// whose session did not exist yet finds an 'ended' mark at its id and fails
    /// ([`Error::SessionEnded`]), so it is ended too; one whose index entry came later
    /// started after the action and is not affected.
    pub async fn end_sessions(&self, field: &str, value: &str) -> Result<usize> {
        let f = self.indexed_field(field)?.clone();
        let config = &self.inner.config;
        let store = &self.inner.store;
        let span = tracing::debug_span!("tessera.end_sessions", field);
        async {
            let key = config.value_index_key(&f.name, value);
            let members = store.index_members(&key).await?;
            let keys: Vec<String> = members.iter().map(|m| config.session_key(m)).collect();
            let rows = store
                .peek_many(&keys, &[f.name.as_str(), fields::USER, &stamp_of(&f.name)])
                .await?;
            let mut ended = 0;
            let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
            let mut gone: Vec<String> = Vec::new();
            let targets: Vec<(String, Row)> = members.into_iter().zip(rows).collect();
            for chunk in targets.chunks(500) {
                let ends = chunk
                    .iter()
                    .map(|(m, row)| self.end_one(&f, value, m.clone(), row.clone()));
                let mut first_error = None;
                let mut ended_now = Vec::new();
                for r in futures_util::future::join_all(ends).await {
                    let one = match r {
                        Ok(one) => one,
                        Err(e) => {
                            first_error.get_or_insert(e);
                            continue;
                        }
                    };
                    gone.extend(one.gone);
                    if let Some((member, user)) = one.ended {
                        ended += 1;
                        gone.push(member.clone());
                        ended_now.push(member.clone());
                        if let Some(u) = user {
                            by_user.entry(u).or_default().push(member);
                        }
                    }
                }
                // What did end is published even when another end of the chunk failed.
                self.publish_ends(super::EventKind::Revoked, &ended_now)
                    .await;
                if let Some(e) = first_error {
                    return Err(e);
                }
            }
            // Bookkeeping: the ended sessions leave this index and their users' indexes (a
            // member left behind is only a candidate that is checked and skipped).
            if let Err(e) = store.index_remove(&key, &gone).await {
                tracing::debug!(error = %e, "could not remove ended sessions from a field index");
            }
            for (u, ms) in by_user {
                if let Err(e) = store.index_remove(&config.index_key(&u), &ms).await {
                    tracing::debug!(error = %e, "could not remove ended sessions from a user index");
                }
            }
            tracing::info!(field, ended, "sessions ended by field");
            Ok(ended)
        }
        .instrument(span)
        .await
    }

    /// Ends the session of one candidate if it holds `value`: `row` is what the query read
    /// (`None`: no session there yet). A concurrent change is read again, and a login's id
    /// rotation followed to the new id, a few times at most.
    async fn end_one(
        &self,
        f: &IndexedField,
        value: &str,
        mut member: String,
        mut row: Row,
    ) -> Result<EndOne> {
        let config = &self.inner.config;
        let store = &self.inner.store;
        let tombstone_ms = GUARD.as_millis() as u64;
        let mut out = EndOne::default();
        for _ in 0..4 {
            let key = config.session_key(&member);
            let (expected, user) = match &row {
                None => (None, None),
                Some(r) => match &r[0] {
                    Some(raw)
                        if terms(raw, f.list).iter().any(|t| t == value)
                            && !expired(&r[2], store.server_now()) =>
                    {
                        (
                            Some(raw.clone()),
                            r[1].as_ref()
                                .map(|u| String::from_utf8_lossy(u).into_owned()),
                        )
                    }
                    _ => return Ok(out), // does not hold the value (any more)
                },
            };
            match store
                .end_if(&key, &f.name, expected.as_deref(), tombstone_ms)
                .await?
            {
                EndIf::Ended => {
                    out.ended = Some((member, user));
                    return Ok(out);
                }
                EndIf::Absent => {
                    out.gone.push(member);
                    return Ok(out);
                }
                EndIf::Changed => {}
                EndIf::Moved(successor) => {
                    out.gone.push(std::mem::replace(&mut member, successor));
                }
            }
            let key = config.session_key(&member);
            row = store
                .peek_many(
                    std::slice::from_ref(&key),
                    &[f.name.as_str(), fields::USER, &stamp_of(&f.name)],
                )
                .await?
                .pop()
                .flatten();
        }
        tracing::debug!("a session kept changing while being ended by field; left alone");
        Ok(out)
    }
}

/// The lifetime stamp's name of `field`.
fn stamp_of(field: &str) -> String {
    format!("{}{field}", fields::EXPIRES)
}

/// Whether a lifetime stamp read beside a field says it has passed by `now`.
fn expired(stamp: &Option<Vec<u8>>, now: Option<u64>) -> bool {
    let at = stamp
        .as_deref()
        .and_then(|s| std::str::from_utf8(s).ok()?.trim().parse::<u64>().ok());
    matches!((at, now), (Some(at), Some(now)) if at <= now)
}

/// What a peek read of one session (`None`: no session there).
type Row = Option<Vec<Option<Vec<u8>>>>;

/// What ending one candidate did: the session it ended (member, user), and the members that
/// turned out to hold no session (absent, or moved to a new id).
#[derive(Default)]
struct EndOne {
    ended: Option<(String, Option<String>)>,
    gone: Vec<String>,
}

/// The user fields of a stored hash but the protected ones, decoded as JSON (undecodable
/// bytes as text).
pub(super) fn user_fields(
    config: &crate::SessionConfig,
    h: &HashMap<String, Vec<u8>>,
) -> serde_json::Map<String, serde_json::Value> {
    // Protected fields are never listed (they are ciphertext here, and secret).
    let mut names: Vec<&String> = h
        .keys()
        .filter(|k| is_user_field(k) && !config.is_protected(k))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|k| {
            let v = codec::decode_value(&h[k]).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&h[k]).into_owned())
            });
            (k.clone(), v)
        })
        .collect()
}
