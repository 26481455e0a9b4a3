//! Field indexes, the writer's side: which index entries a write adds before it lands, and
//! which it removes after.
//!
//! An indexed field's value `v` is found through the sorted set `[ns]index:<field>:<v>`
//! (member = the session's storage key, score = an upper bound of its expiry, as in the user
//! index) and the field's value list `[ns]index:<field>` (member = `v`). The rules that keep a
//! query exact on every topology, each step a single-key command:
//! - a write that gives a field a new value adds the member (and the value) **before** it
//!   writes, so a session that holds a value is always in that value's set;
//! - a member is only a candidate: a query reads each candidate session and keeps only those
//!   that hold the value now (a session that ended, expired or moved on is never returned);
//! - members that no longer belong are removed by the writer that changed the value and by
//!   queries that find them, but only when their last add is older than [`GUARD`] at the
//!   moment the session was checked: a member added moments ago may belong to a write still on
//!   its way, and the server refuses such a write once half the guard has passed (see
//!   field_add.lua, index_prune.lua); members whose bound passed leave on their own, and a
//!   session that ends for good leaves the index of every value it held.

use super::state::{is_user_field, State};
use super::Session;
use crate::codec;
use crate::config::IndexedField;
use crate::error::Result;
use crate::store::Store;
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

/// The highest score a prune may remove for a session checked at `checked_ms` (a time no later
/// than the check, by the store's clock): members last added more than [`GUARD`] before it.
pub(crate) fn prunable_below(checked_ms: u64, bound_ms: u64) -> u64 {
    (checked_ms + bound_ms).saturating_sub(GUARD.as_millis() as u64)
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

/// Adds `member` under each `(field, term)`: the term's set and the field's value list, all
/// sent at once (one round trip on Redis, each command single-key). Returns the earliest
/// server time of the adds (0 when there was nothing to add): the write that follows must land
/// by [`write_cap`] of it.
pub(crate) async fn add_all(
    store: &Store,
    config: &crate::SessionConfig,
    member: &str,
    entries: &[(String, String)],
    bound_ms: u64,
) -> Result<u64> {
    let adds = entries.iter().flat_map(|(field, term)| {
        let value_key = config.value_index_key(field, term);
        let values_key = config.values_key(field);
        [(value_key, member.to_string()), (values_key, term.clone())]
    });
    let futs = adds.map(|(key, m)| async move { store.field_add(&key, &m, bound_ms).await });
    let mut earliest = 0;
    for r in futures_util::future::join_all(futs).await {
        let at = r?;
        earliest = if earliest == 0 { at } else { earliest.min(at) };
    }
    Ok(earliest)
}

/// Removes `member` from each `(field, term)` set if its score is at most `max_score` (see
/// [`prunable_below`]; `u64::MAX` for a member whose session is gone for good). Best effort: a
/// member left behind is only a candidate that queries skip, and its bound removes it.
pub(crate) async fn prune_all(
    store: &Store,
    config: &crate::SessionConfig,
    member: &str,
    entries: &[(String, String)],
    max_score: u64,
) {
    let futs = entries.iter().map(|(field, term)| {
        let key = config.value_index_key(field, term);
        async move {
            store
                .index_prune(&key, std::slice::from_ref(&member.to_string()), max_score)
                .await
        }
    });
    for r in futures_util::future::join_all(futs).await {
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not remove a member from a field index; queries skip it and its bound removes it");
        }
    }
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
            let added = add_all(
                mgr.store(),
                mgr.config(),
                &id.storage_key(),
                &add,
                mgr.index_bound_ms(),
            )
            .await;
            if let Err(e) = added {
                let e = match e {
                    crate::Error::Unavailable(cause) => crate::Error::OutcomeUnknown(cause),
                    other => other,
                };
                return Self::failed(st, e);
            }
        }
        if let Some(at) = checked {
            let max = prunable_below(at, mgr.index_bound_ms());
            self.prune_in_background(st, id.storage_key(), remove, max);
        }
        Ok(())
    }

    /// After a TTL refresh: moves the session's bound in each index it is in.
    pub(super) fn refresh_field_indexes(&self, st: &mut State, member: String) {
        let config = &self.mgr().inner.config;
        if config.indexed.is_empty() {
            return;
        }
        let entries = all_entries(config, &st.data);
        if entries.is_empty() {
            return;
        }
        let mgr = self.mgr().clone();
        let bound = mgr.index_bound_ms();
        st.index_refresh.push(tokio::spawn(async move {
            add_all(mgr.store(), mgr.config(), &member, &entries, bound)
                .await
                .map(|_| Vec::new())
        }));
    }

    /// After a write removed values: the member leaves their sets (in the background, awaited
    /// before the response like the index refresh).
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
        st.index_refresh.push(tokio::spawn(async move {
            prune_all(mgr.store(), mgr.config(), &member, &entries, max_score).await;
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
