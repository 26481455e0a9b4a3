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
use crate::layout::marker;
use crate::store::{fields, EndIf};
use std::collections::HashSet;
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

/// A live session that holds the value, as checked: its member.
struct Match {
    member: String,
}

/// A live session among a field's candidates, as checked: its member and the terms its field
/// holds now.
struct Live {
    member: String,
    held: Vec<String>,
}

/// A login moves a session to a new id in steps (freeze the old key, add the new member to the
/// indexes, create the new key, retire the old one); `__m` of the old key names the new member
/// (see [`marker`]).
fn successor(moving: Option<&[u8]>) -> Option<String> {
    marker::successor(moving?)
}

impl SessionManager {
    fn indexed_field(&self, field: &str) -> Result<&IndexedField> {
        self.inner
            .config
            .indexed(field)
            .ok_or_else(|| Error::NotIndexed(field.to_string()))
    }

    /// The candidates of a field-index key: the members whose deadline has not passed, latest
    /// deadline first; and the time, no later than every read that follows, that stale members
    /// are pruned against.
    async fn candidates(&self, key: &str) -> Result<(Vec<String>, Option<u64>)> {
        let store = &self.inner.store;
        let checked = store.server_now();
        let mut members = store.field_members(key, checked.unwrap_or(0)).await?;
        members.reverse();
        Ok((members, checked))
    }

    /// Checks each candidate session of `f` (one pipelined round trip of `HMGET`s) and returns
    /// the live ones, in the order given, each session counted once while a login moves it to
    /// a new id: under the new id when both are seen, and through the old id's successor when
    /// only the retired old id is (one more round trip, only then). The one check behind every
    /// query, so a listing and a count agree at every moment.
    async fn check(
        &self,
        f: &IndexedField,
        members: &[String],
        checked: Option<u64>,
    ) -> Result<Vec<Live>> {
        let config = &self.inner.config;
        let stamp = fields::stamp_of(&f.name);
        let names = [
            fields::CREATED,
            f.name.as_str(),
            fields::MOVING,
            stamp.as_str(),
        ];
        let mut live = Vec::new();
        // The members found live: a retired id's successor is read (again) unless it is one of
        // them. Being a candidate is not enough: the candidates' reads are concurrent, so the
        // new id may have been read as absent (its key not created yet) just before the old id
        // was read as retired.
        let mut found_live: HashSet<String> = HashSet::new();
        // The members read as retired: their successor is queued already.
        let mut retired_ids: HashSet<String> = HashSet::new();
        // A frozen old key -> its new member.
        let mut moving_to: HashMap<String, String> = HashMap::new();
        let mut batch: Vec<String> = members.to_vec();
        for _hop in 0..4 {
            if batch.is_empty() {
                break;
            }
            let keys: Vec<String> = batch.iter().map(|m| config.session_key(m)).collect();
            let rows = self.inner.store.peek_raw(&keys, &names).await?;
            let mut successors = Vec::new();
            for (m, row) in batch.into_iter().zip(rows) {
                let Some(mut r) = row else { continue };
                let succ = successor(r[2].as_deref());
                if r[0].is_none() {
                    // No session here: a retired id leads to where the session went.
                    let retired = r[2].as_deref().is_some_and(marker::is_retired);
                    if let (true, Some(s)) = (retired, succ) {
                        if retired_ids.insert(m) {
                            successors.push(s);
                        }
                    }
                    continue;
                }
                if !found_live.insert(m.clone()) {
                    continue; // read again through a retired id, and live both times
                }
                if expired(&r[3], checked) {
                    continue; // the field is past its lifetime: as good as gone
                }
                if let Some(s) = succ {
                    moving_to.insert(m.clone(), s);
                }
                live.push(Live {
                    member: m,
                    held: r[1]
                        .take()
                        .map(|raw| terms(&raw, f.list))
                        .unwrap_or_default(),
                });
            }
            // Each successor once, unless found live or retired already (this hop's reads are
            // concurrent: one read as absent may have been created since).
            let mut queued: HashSet<&str> = HashSet::new();
            let next: Vec<String> = successors
                .iter()
                .filter(|s| !found_live.contains(*s) && !retired_ids.contains(*s))
                .filter(|s| queued.insert(s.as_str()))
                .cloned()
                .collect();
            batch = next;
        }
        if !moving_to.is_empty() {
            // Counted once: under the new id when both are here.
            let present: HashSet<String> = live.iter().map(|l| l.member.clone()).collect();
            live.retain(|l| {
                moving_to
                    .get(&l.member)
                    .is_none_or(|succ| !present.contains(succ))
            });
        }
        Ok(live)
    }

    /// Removes from `key` the `members` found not to belong (in the background, guarded: see
    /// `index::prunable_below`).
    fn prune_later(&self, key: String, stale: Vec<String>, checked: Option<u64>) {
        let (false, Some(at)) = (stale.is_empty(), checked) else {
            return;
        };
        let store = self.inner.store.clone();
        let max_score = prunable_below(at, self.field_floor_ms());
        tokio::spawn(async move {
            let keys = [key];
            if let Err(e) = store.index_prune(&keys, &stale, max_score).await {
                tracing::debug!(error = %e, "could not prune a field index");
            }
        });
    }

    /// The live sessions whose `field` holds `value` (checked against each session, so a
    /// session that ended, expired or changed the value is never counted), most recently
    /// refreshed first; the members that no longer belong are pruned on the way.
    async fn matches(&self, f: &IndexedField, value: &str) -> Result<Vec<Match>> {
        let key = self.inner.config.value_index_key(&f.name, value);
        let (members, checked) = self.candidates(&key).await?;
        let live = self.check(f, &members, checked).await?;
        let found: Vec<Match> = live
            .into_iter()
            .filter(|l| l.held.iter().any(|t| t == value))
            .map(|l| Match { member: l.member })
            .collect();
        let holding: HashSet<&str> = found.iter().map(|m| m.member.as_str()).collect();
        let stale: Vec<String> = members
            .into_iter()
            .filter(|m| !holding.contains(m.as_str()))
            .collect();
        self.prune_later(key, stale, checked);
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
    /// # use tessera_core::adapter::SessionExt as _;
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
            let mut listed: Vec<Option<FoundSession>> = vec![None; page.len()];
            // (position in the page, member to read): a login may move a session to a new id
            // between the check and this read; its retired id leads to the new one.
            let mut todo: Vec<(usize, String)> = page
                .iter()
                .enumerate()
                .map(|(i, m)| (i, m.member.clone()))
                .collect();
            for _hop in 0..4 {
                if todo.is_empty() {
                    break;
                }
                let keys: Vec<String> = todo
                    .iter()
                    .map(|(_, m)| self.inner.config.session_key(m))
                    .collect();
                let hashes = self.inner.store.read_many(&keys).await?;
                let now = self.inner.store.server_now();
                let mut next = Vec::new();
                for ((i, m), mut h) in todo.into_iter().zip(hashes) {
                    if !h.contains_key(fields::CREATED) {
                        let retired = h.get(fields::MOVING).is_some_and(|v| marker::is_retired(v));
                        if let (true, Some(succ)) =
                            (retired, successor(h.get(fields::MOVING).map(Vec::as_slice)))
                        {
                            next.push((i, succ));
                        }
                        continue;
                    }
                    if let Some(now) = now {
                        crate::store::fields::drop_expired(&mut h, now);
                    }
                    let holds = h
                        .get(&f.name)
                        .is_some_and(|raw| terms(raw, f.list).iter().any(|t| t == value));
                    if holds {
                        listed[i] = Some(FoundSession {
                            handle: handle_of(&m),
                            user_id: h
                                .get(fields::USER)
                                .map(|u| String::from_utf8_lossy(u).into_owned()),
                            fields: user_fields(&self.inner.config, &h),
                        });
                    }
                }
                todo = next;
            }
            // Ended or changed between the check and this read: neither listed nor counted.
            let count = found.len() - listed.iter().filter(|s| s.is_none()).count();
            let sessions: Vec<FoundSession> = listed.into_iter().flatten().collect();
            Ok(FoundSessions { count, sessions })
        }
        .instrument(span)
        .await
    }

    /// How many live sessions hold `value` in the indexed `field` (exact). Two round trips.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).index_field("tenant").build().unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// let session = manager.start(None::<&str>);
    /// session.insert("tenant", "acme").await?;
    /// session.save().await?;
    /// assert_eq!(manager.count_sessions("tenant", "acme").await?, 1);
    /// assert_eq!(manager.count_sessions("tenant", "globex").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn count_sessions(&self, field: &str, value: &str) -> Result<usize> {
        let f = self.indexed_field(field)?.clone();
        Ok(self.matches(&f, value).await?.len())
    }

    /// For each value the indexed `field` holds in some live session, how many live sessions
    /// hold it (values held by none are left out). Cost: one read of the field's holders
    /// (`[namespace]index:<field>`), then one round trip of `HMGET`s (one per holder): it grows
    /// with the sessions that hold the field, not with the number of values nor the keyspace.
    /// Exact while logins move sessions to new ids (each session counted once, as
    /// [`find_sessions`](Self::find_sessions) lists it).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use tessera_core::adapter::SessionExt as _;
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
        let span = tracing::debug_span!("tessera.count_by_value", field);
        async {
            let key = self.inner.config.values_key(&f.name);
            let (members, checked) = self.candidates(&key).await?;
            let live = self.check(&f, &members, checked).await?;
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            let mut holding: HashSet<&str> = HashSet::new();
            for l in &live {
                if !l.held.is_empty() {
                    holding.insert(l.member.as_str());
                }
                for t in &l.held {
                    *counts.entry(t.clone()).or_default() += 1;
                }
            }
            let stale: Vec<String> = members
                .iter()
                .filter(|m| !holding.contains(m.as_str()))
                .cloned()
                .collect();
            self.prune_later(key, stale, checked);
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// use tessera_core::{Key, SessionConfig, SessionManager, Store};
    /// let config = SessionConfig::builder(Key::generate()).index_field("tenant").build().unwrap();
    /// let manager = SessionManager::new(Store::memory(), config);
    /// let session = manager.start(None::<&str>);
    /// session.insert("tenant", "acme").await?;
    /// session.save().await?;
    /// // Acme is offboarded:
    /// assert_eq!(manager.end_sessions("tenant", "acme").await?, 1);
    /// assert_eq!(manager.count_sessions("tenant", "acme").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn end_sessions(&self, field: &str, value: &str) -> Result<usize> {
        let f = self.indexed_field(field)?.clone();
        let config = &self.inner.config;
        let store = &self.inner.store;
        let span = tracing::debug_span!("tessera.end_sessions", field);
        async {
            let key = config.value_index_key(&f.name, value);
            let (members, _) = self.candidates(&key).await?;
            let keys: Vec<String> = members.iter().map(|m| config.session_key(m)).collect();
            let rows = store
                .peek_many(&keys, &[f.name.as_str(), fields::USER, &fields::stamp_of(&f.name)])
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
                EndIf::Absent | EndIf::Marked => {
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
                    &[f.name.as_str(), fields::USER, &fields::stamp_of(&f.name)],
                )
                .await?
                .pop()
                .flatten();
        }
        tracing::debug!("a session kept changing while being ended by field; left alone");
        Ok(out)
    }
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
