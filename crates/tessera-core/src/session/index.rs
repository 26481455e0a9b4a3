//! Field indexes, the writer's side: which index entries a write adds before it lands, and
//! which it removes after.
//!
//! An indexed field's value `v` is found through the sorted set `[ns]index:<field>:<v>`, and
//! the sessions that hold some value of the field through `[ns]index:<field>` (the holders,
//! read by the counts per value). Member = the session's storage key, score = its deadline:
//! the time of its last add (server ms) plus its own session's bound
//! ([`SessionManager::field_bound_ms`]: twice its own idle timeout, never less than twice the
//! configured one). The rules that keep a query exact on every topology:
//! - a write that gives a field a new value adds the member (to the value's set and the
//!   holders) **before** it writes, so a session that holds a value is always in that value's
//!   set; the adds of one hash slot are one script (one for all keys on a single server);
//! - a member is only a candidate: a query reads each candidate session and keeps only those
//!   that hold the value now (a session that ended, expired or moved on is never returned);
//! - members that no longer belong are removed by the writer that changed the value and by
//!   queries that find them, but only when their last add is older than [`GUARD`] at the
//!   moment the session was checked: a member added moments ago may belong to a write still on
//!   its way, and the server refuses such a write once half the guard has passed (see
//!   field_add.lua, index_prune.lua; [`prunable_below`] turns that into a score); a session
//!   that ends for good leaves the index of every value it held;
//! - an entry lives as long as its own session: past its deadline, queries no longer read it
//!   and the next add or prune of its key drops it, and each key lives until its latest
//!   member's deadline; a session's entries are added again (one script) at the first TTL
//!   refresh of each half idle timeout ([`refresh_due`]), not at every refresh, so the cost of
//!   a request does not grow with the session's terms.

use super::manager::SessionManager;
use super::state::{is_user_field, State};
use super::Session;
use crate::codec;
use crate::config::IndexedField;
use crate::error::Result;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// How long after its last add a member is kept even though its session does not hold the
/// value (yet). A write behind an index add must reach its server within half of it (its
/// deadline says so, checked by the server), so a member whose last add is older than this at
/// the moment a session was checked belonged to a write that had landed by then; the other half
/// covers clock differences between cluster nodes.
pub(crate) const GUARD: Duration = Duration::from_secs(4);

/// The latest server time at which a write behind an index add made at `added_ms` may land.
pub(crate) fn write_cap(added_ms: u64) -> u64 {
    added_ms + GUARD.as_millis() as u64 / 2
}

/// The highest score (deadline) a prune may remove for a session checked at `checked_ms` (a
/// time no later than the check, by the store's clock): members last added more than [`GUARD`]
/// before it. A score is the last add plus the member's bound, at least `floor_ms`
/// ([`SessionManager::field_floor_ms`]), so a score at most this limit is a last add at most
/// `checked_ms - GUARD` (a member with a longer bound is kept longer, never dropped early).
pub(crate) fn prunable_below(checked_ms: u64, floor_ms: u64) -> u64 {
    checked_ms
        .saturating_sub(GUARD.as_millis() as u64)
        .saturating_add(floor_ms)
}

/// Whether a TTL refresh at `now_ms` of a session last refreshed at `prev_ms` (as stored
/// before this refresh; `None`: unknown) must add its index entries again: at the first refresh
/// of each period of half its idle timeout. Every refresh of a period follows one that did
/// (or the write that added the entries), so the last add is at most one period old (two if a
/// refresh was lost) and the entries, kept twice the idle timeout past it, outlive the session.
pub(crate) fn refresh_due(prev_ms: Option<u64>, now_ms: Option<u64>, idle_ms: u64) -> bool {
    let period = (idle_ms / 2).max(1);
    match (prev_ms, now_ms) {
        (Some(prev), Some(now)) => prev / period != now / period,
        _ => true,
    }
}

/// `(field, term)` pairs: index entries of one session.
pub(crate) type Entries = Vec<(String, String)>;

/// The indexed terms of a stored value: a string is its text, a number or boolean its JSON
/// text; for a list field, each element so. Other values (objects, null) are not indexed.
pub(crate) fn terms(raw: &[u8], list: bool) -> Vec<String> {
    fn scalar(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let Ok(v) = codec::decode_value(raw) else {
        return Vec::new();
    };
    let mut out: Vec<String> = match (&v, list) {
        (serde_json::Value::Array(items), true) => items.iter().filter_map(scalar).collect(),
        _ => scalar(&v).into_iter().collect(),
    };
    out.sort();
    out.dedup();
    out
}

/// The terms of one field in a hash (empty if absent).
pub(crate) fn terms_in(data: &HashMap<String, Vec<u8>>, f: &IndexedField) -> Vec<String> {
    data.get(&f.name)
        .map(|raw| terms(raw, f.list))
        .unwrap_or_default()
}

/// The keys of `(field, term)` entries: each term's set, and the holders of each field.
fn entry_keys(config: &crate::SessionConfig, entries: &[(String, String)]) -> Vec<String> {
    let mut keys: Vec<String> = entries
        .iter()
        .map(|(field, term)| config.value_index_key(field, term))
        .collect();
    let fields: BTreeSet<&str> = entries.iter().map(|(f, _)| f.as_str()).collect();
    keys.extend(fields.into_iter().map(|f| config.values_key(f)));
    keys
}

/// Adds `member` under each `(field, term)`: the term's set and the field's holders, one
/// script per hash slot, all sent at once (one round trip on Redis). `bound_ms`: how long the
/// member lives past now (see [`SessionManager::field_bound_ms`]). Returns the earliest server
/// time of the adds (0 when there was nothing to add): the write that follows must land by
/// [`write_cap`] of it.
pub(crate) async fn add_all(
    mgr: &SessionManager,
    member: &str,
    entries: &[(String, String)],
    bound_ms: u64,
) -> Result<u64> {
    let keys = entry_keys(mgr.config(), entries);
    mgr.store().field_add(&keys, member, bound_ms).await
}

/// Removes `member` from each `(field, term)` set, and from the holders of each of `holders`
/// (fields it no longer holds), if its score is at most `max_score` (see [`prunable_below`];
/// `u64::MAX` for a member whose session is gone for good). Best effort: a member left behind
/// is only a candidate that queries skip, and it is dropped once its deadline passes.
pub(crate) async fn prune_all(
    mgr: &SessionManager,
    member: &str,
    entries: &[(String, String)],
    holders: &[&str],
    max_score: u64,
) {
    let config = mgr.config();
    let mut keys: Vec<String> = entries
        .iter()
        .map(|(field, term)| config.value_index_key(field, term))
        .collect();
    keys.extend(holders.iter().map(|f| config.values_key(f)));
    let pruned = mgr
        .store()
        .index_prune(&keys, std::slice::from_ref(&member.to_string()), max_score)
        .await;
    if let Err(e) = pruned {
        tracing::debug!(error = %e, "could not remove a member from a field index; queries skip it and it is dropped later");
    }
}

/// [`prune_all`] of a session that ended for good: every entry of `data`, whatever its age.
pub(crate) async fn prune_ended(
    mgr: &SessionManager,
    member: &str,
    data: &HashMap<String, Vec<u8>>,
) {
    let entries = all_entries(mgr.config(), data);
    let holders: BTreeSet<&str> = entries.iter().map(|(f, _)| f.as_str()).collect();
    let holders: Vec<&str> = holders.into_iter().collect();
    prune_all(mgr, member, &entries, &holders, u64::MAX).await;
}

/// Every `(field, term)` of the indexed fields in `data`.
pub(crate) fn all_entries(
    config: &crate::SessionConfig,
    data: &HashMap<String, Vec<u8>>,
) -> Vec<(String, String)> {
    config
        .indexed
        .iter()
        .flat_map(|f| terms_in(data, f).into_iter().map(|t| (f.name.clone(), t)))
        .collect()
}

impl Session {
    pub(super) fn indexed(&self, field: &str) -> Option<&IndexedField> {
        self.mgr().inner.config.indexed(field)
    }

    /// Refuses a value of an indexed field that would take the session past the index limits
    /// (terms per field, terms per session, bytes per term), before anything is written: each
    /// term is a sorted-set entry in the store, added before the write and kept as long as the
    /// session.
    pub(super) fn check_index_terms(&self, st: &State, field: &str, raw: &[u8]) -> Result<()> {
        let Some(f) = self.indexed(field) else {
            return Ok(());
        };
        let config = &self.mgr().inner.config;
        let limits = config.limits;
        let new = terms(raw, f.list);
        if new.len() > limits.max_index_terms_per_field {
            return Err(crate::Error::TooLarge {
                what: "index terms in one field",
                limit: limits.max_index_terms_per_field,
            });
        }
        if !f.list && !new.iter().all(|t| super::query_engine::is_whole_tag(t)) {
            return Err(crate::Error::InvalidIndexValue(field.to_string()));
        }
        if new.iter().any(|t| t.len() > limits.max_index_term_bytes) {
            return Err(crate::Error::TooLarge {
                what: "bytes in one index term",
                limit: limits.max_index_term_bytes,
            });
        }
        let others: usize = config
            .indexed
            .iter()
            .filter(|g| g.name != field)
            .map(|g| terms_in(&st.data, g).len())
            .sum();
        if others + new.len() > limits.max_index_terms {
            return Err(crate::Error::TooLarge {
                what: "index terms in one session",
                limit: limits.max_index_terms,
            });
        }
        Ok(())
    }

    /// Before the first change of an indexed field in this request: remember what the store
    /// held, so the write knows which index entries to add and which to remove.
    pub(super) fn note_index_change(&self, st: &mut State, field: &str) {
        if is_user_field(field)
            && self.indexed(field).is_some()
            && !st.index_before.contains_key(field)
        {
            let before = st.data.get(field).cloned();
            st.index_before.insert(field.to_string(), before);
        }
    }

    /// The index entries a write of the pending changes adds (every term of the new values) and
    /// removes (terms of the old values the new ones lack). `creating`: nothing is stored yet.
    pub(super) fn index_delta(&self, st: &State, creating: bool) -> (Entries, Entries) {
        let config = &self.mgr().inner.config;
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for f in &config.indexed {
            let Some(new) = st.dirty.get(&f.name) else {
                continue;
            };
            let new: BTreeSet<String> = new
                .as_deref()
                .map(|v| terms(v.as_bytes(), f.list))
                .unwrap_or_default()
                .into_iter()
                .collect();
            let old: BTreeSet<String> = if creating {
                BTreeSet::new()
            } else {
                st.index_before
                    .get(&f.name)
                    .cloned()
                    .flatten()
                    .map(|v| terms(&v, f.list))
                    .unwrap_or_default()
                    .into_iter()
                    .collect()
            };
            // Every term of the new value, not only those the old value lacked: this request's
            // view of the old value may be stale (another request may have moved the session
            // away meanwhile, and its entry may be pruned), and the add is one round trip
            // whatever its size.
            add.extend(new.iter().map(|t| (f.name.clone(), t.clone())));
            remove.extend(old.difference(&new).map(|t| (f.name.clone(), t.clone())));
        }
        (add, remove)
    }

    /// The entry an increment of `field` by `by` will most likely need (the value this request
    /// saw plus `by`), added before the `HINCRBY` like any write's entries. `None` for a field
    /// that is not indexed or does not hold an integer.
    pub(super) fn predicted_increment(
        &self,
        st: &State,
        field: &str,
        by: i64,
    ) -> Option<(String, String)> {
        self.indexed(field)?;
        let current = match st.data.get(field) {
            None => 0,
            Some(v) => std::str::from_utf8(v).ok()?.trim().parse::<i64>().ok()?,
        };
        Some((field.to_string(), current.checked_add(by)?.to_string()))
    }

    /// After an increment of an indexed field. When the result is the predicted value (no
    /// other request changed the field meanwhile), its entry was added before the write and
    /// nothing is left to do but drop the old value's entry (guarded). Otherwise (a concurrent
    /// change) the result's entry is added now: until it lands, a query does not find the
    /// session under the value it just reached. A failure to add it is reported (the increment
    /// itself was written: the outcome is "unknown", never "nothing changed").
    pub(super) async fn index_increment(
        &self,
        st: &mut State,
        field: &str,
        predicted: Option<(String, String)>,
    ) -> Result<()> {
        let Some(f) = self.indexed(field).cloned() else {
            return Ok(());
        };
        let Some(id) = st.id.clone() else {
            return Ok(());
        };
        let before = st.index_before.remove(field).flatten();
        let old: BTreeSet<String> = before
            .map(|v| terms(&v, f.list))
            .unwrap_or_default()
            .into_iter()
            .collect();
        let new: BTreeSet<String> = terms_in(&st.data, &f).into_iter().collect();
        let as_predicted = predicted.is_some_and(|(_, t)| new.len() == 1 && new.contains(&t));
        let add: Vec<(String, String)> = if as_predicted {
            Vec::new()
        } else {
            new.iter().map(|t| (f.name.clone(), t.clone())).collect()
        };
        let remove: Vec<(String, String)> = old
            .difference(&new)
            .map(|t| (f.name.clone(), t.clone()))
            .collect();
        let mgr = self.mgr().clone();
        // The increment landed before this moment: the old value's entry may go if it is older
        // than the guard by then.
        let checked = mgr.store().server_now();
        if !add.is_empty() {
            let added = add_all(&mgr, id.storage_str(), &add, mgr.field_bound_ms(&st.data)).await;
            if let Err(e) = added {
                let e = match e {
                    crate::Error::Unavailable(cause) => crate::Error::OutcomeUnknown(cause),
                    other => other,
                };
                return Self::failed(st, e);
            }
        }
        if let Some(at) = checked {
            let max = prunable_below(at, mgr.field_floor_ms());
            self.prune_in_background(st, id.storage_key(), remove, max);
        }
        Ok(())
    }

    /// After a TTL refresh: adds the session's entries again (one script per hash slot) when
    /// [`refresh_due`] says so, at most once per half idle timeout; `prev_touch`: the session's
    /// last refresh before this one.
    pub(super) fn refresh_field_indexes(
        &self,
        st: &mut State,
        member: String,
        prev_touch: Option<u64>,
    ) {
        let config = &self.mgr().inner.config;
        if config.indexed.is_empty() {
            return;
        }
        let mgr = self.mgr().clone();
        let idle = mgr.own_idle_ms(&st.data);
        if !refresh_due(prev_touch, mgr.store().server_now(), idle) {
            return;
        }
        let entries = all_entries(config, &st.data);
        if entries.is_empty() {
            return;
        }
        let bound = mgr.field_bound_ms(&st.data);
        st.index_refresh.push(tokio::spawn(async move {
            add_all(&mgr, &member, &entries, bound)
                .await
                .map(|_| Vec::new())
        }));
    }

    /// After a login retired `member` for good: it leaves every set of `entries` and the
    /// holders of each of their fields (in the background, awaited before the response).
    pub(super) fn retire_in_background(&self, st: &mut State, member: String, entries: Entries) {
        let mgr = self.mgr().clone();
        st.index_refresh.push(tokio::spawn(async move {
            let holders: BTreeSet<&str> = entries.iter().map(|(f, _)| f.as_str()).collect();
            let holders: Vec<&str> = holders.into_iter().collect();
            prune_all(&mgr, &member, &entries, &holders, u64::MAX).await;
            Ok(Vec::new())
        }));
    }

    /// After a write removed values: the member leaves their sets, and the holders of the
    /// fields it no longer holds (in the background, awaited before the response like the
    /// index refresh).
    pub(super) fn prune_in_background(
        &self,
        st: &mut State,
        member: String,
        entries: Vec<(String, String)>,
        max_score: u64,
    ) {
        if entries.is_empty() {
            return;
        }
        let mgr = self.mgr().clone();
        let emptied: BTreeSet<String> = entries
            .iter()
            .filter_map(|(f, _)| mgr.config().indexed(f))
            .filter(|f| terms_in(&st.data, f).is_empty())
            .map(|f| f.name.clone())
            .collect();
        st.index_refresh.push(tokio::spawn(async move {
            let holders: Vec<&str> = emptied.iter().map(String::as_str).collect();
            prune_all(&mgr, &member, &entries, &holders, max_score).await;
            Ok(Vec::new())
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::terms;

    #[test]
    fn terms_of_values() {
        assert_eq!(terms(b"acme", false), ["acme"]);
        assert_eq!(terms(b"42", false), ["42"]);
        assert_eq!(terms(b"\"42\"", false), ["42"]);
        assert_eq!(terms(b"true", false), ["true"]);
        assert!(terms(b"{\"a\":1}", false).is_empty());
        assert!(terms(b"null", false).is_empty());
        assert_eq!(terms(br#"["p-17","p-3","p-17"]"#, true), ["p-17", "p-3"]);
        assert_eq!(terms(b"p-9", true), ["p-9"]);
        // A list in a scalar field is not indexed.
        assert!(terms(br#"["a"]"#, false).is_empty());
    }
}
