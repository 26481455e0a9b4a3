//! Step 2 of a rotation, copy: the new session key, written with what step 1 read plus this
//! request's changes, protected values sealed for it.

use super::super::index::{self, Entries};
use super::super::sealed_fields;
use super::super::state::State;
use super::super::{EventKind, Session};
use super::{OldSession, Rotation};
use crate::error::{Error, Result};
use crate::field_crypto::Unreadable;
use crate::store::{fields, Release, WriteResult};
use std::collections::HashMap;
use std::time::Instant;

/// What step 2 wrote under the new id.
pub(super) struct Copied {
    /// The session as copied, protected values in plain: the state's data once settled.
    pub(super) data: HashMap<String, Vec<u8>>,
    /// Protected fields copied as they were stored (they do not decrypt), and why.
    pub(super) keep_raw: HashMap<String, Unreadable>,
    /// The old id's field-index entries, retired in step 4.
    pub(super) old_entries: Entries,
    /// The session's creation time, kept by the copy.
    pub(super) created: u64,
    /// When the copy was sent.
    pub(super) sent: Instant,
}

impl Rotation {
    /// Step 2, copy: the new key gets the store's current contents plus this request's
    /// changes, protected values sealed for it, after its field-index entries were added.
    pub(super) async fn copy(
        &self,
        st: &mut State,
        old: &OldSession,
        mut data: HashMap<String, Vec<u8>>,
    ) -> Result<Copied> {
        let config = &self.mgr.inner.config;
        data.remove(fields::MOVING);
        let old_entries = index::all_entries(config, &data);
        let mut keep_raw = self.open_protected(old, &mut data);
        // Nothing past its lifetime is copied.
        if let Some(now) = self.store().server_now() {
            fields::drop_expired(&mut data, now);
        }
        Self::apply_changes(st, &mut data, &mut keep_raw);
        let created = fields::ms(&data, fields::CREATED).unwrap_or(0);
        let copy = self.sealed_copy(&data, &keep_raw);
        let set: Vec<(&str, &str)> = copy.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // The new member joins the field indexes of every value the copy holds before the
        // copy exists (a session that holds a value is always in its index).
        let new_entries = index::all_entries(config, &data);
        let mut not_after = 0;
        if !new_entries.is_empty() {
            let bound = self.mgr.field_bound_ms(&data);
            match index::add_all(&self.mgr, &self.new_member, &new_entries, bound).await {
                Ok(at) => not_after = index::write_cap(at),
                Err(e) => {
                    self.thaw(&old.key, &old.token).await;
                    self.undo_member().await;
                    return Session::failed(st, e);
                }
            }
        }
        let sent = Instant::now();
        // Lifetimes given in this request: the copy's stamps say what is left of the others.
        let expire = st.pending_lifetimes();
        let records: Vec<&str> = st.records.iter().map(String::as_str).collect();
        let written = self
            .store()
            .create(
                &self.new_key,
                &crate::store::NewSession {
                    set: &set,
                    created_ms: created,
                    expire: &expire,
                    records: &records,
                    not_after_ms: not_after,
                    index: None,
                },
                self.timing,
            )
            .await;
        self.check_copy(st, old, written).await?;
        Ok(Copied {
            data,
            keep_raw,
            old_entries,
            created,
            sent,
        })
    }

    /// Protected values are bound to the storage key: decrypted for the old one. What does
    /// not decrypt is copied as it is (and stays unreadable): returned, with why.
    fn open_protected(
        &self,
        old: &OldSession,
        data: &mut HashMap<String, Vec<u8>>,
    ) -> HashMap<String, Unreadable> {
        let config = &self.mgr.inner.config;
        let mut keep_raw = HashMap::new();
        if let Some(keys) = &config.field_keys {
            for field in &config.protected {
                if let Some(stored) = data.get(field) {
                    match keys.open(field, &old.id.storage_key(), stored) {
                        Ok((plain, _)) => {
                            data.insert(field.clone(), plain);
                        }
                        Err(why) => {
                            keep_raw.insert(field.clone(), why);
                        }
                    }
                }
            }
        }
        keep_raw
    }

    /// This request's changes on top of what the old key held.
    fn apply_changes(
        st: &State,
        data: &mut HashMap<String, Vec<u8>>,
        keep_raw: &mut HashMap<String, Unreadable>,
    ) {
        for (k, v) in &st.dirty {
            keep_raw.remove(k);
            match v {
                Some(v) => data.insert(k.clone(), v.clone().into_bytes()),
                None => data.remove(k),
            };
            // A field written in this request has the lifetime it was given here, if any
            // (its new stamp is written with the copy), else none.
            if fields::stamped_field(k).is_none() {
                data.remove(&fields::stamp_of(k));
            }
        }
    }

    /// The copy's fields as stored: protected values sealed for the new key (those that did
    /// not decrypt as they were); the creation and refresh times are the create's own.
    fn sealed_copy(
        &self,
        data: &HashMap<String, Vec<u8>>,
        keep_raw: &HashMap<String, Unreadable>,
    ) -> Vec<(String, String)> {
        let config = &self.mgr.inner.config;
        data.iter()
            .filter(|(k, _)| k.as_str() != fields::CREATED && k.as_str() != fields::TOUCHED)
            .map(|(k, v)| {
                let text = String::from_utf8_lossy(v);
                let stored = if keep_raw.contains_key(k) {
                    text
                } else {
                    let keys = config.field_keys.as_ref();
                    sealed_fields::seal(keys, config, &self.new_member, k, &text)
                        .into_owned()
                        .into()
                };
                (k.clone(), stored.into_owned())
            })
            .collect()
    }

    /// What step 2's create answered: written, or the login undone (the old key thawed, or
    /// retired with it when an end-by-query ended the new id).
    async fn check_copy(
        &self,
        st: &mut State,
        old: &OldSession,
        written: Result<WriteResult>,
    ) -> Result<()> {
        if let Ok(WriteResult::Gone) = written {
            return self.end_with_query(st, old).await;
        }
        let failure = match written {
            Ok(WriteResult::Written { .. }) => None,
            Ok(WriteResult::TooLate) => Some(super::super::too_late()),
            Err(e) => Some(e),
            Ok(other) => Some(Error::Store(crate::error::StoreError::new(format!(
                "id rotation: writing the new key gave {other:?}"
            )))),
        };
        if let Some(e) = failure {
            let _ = self.store().delete(&self.new_key).await;
            self.thaw(&old.key, &old.token).await;
            self.undo_member().await;
            return Session::failed(st, e);
        }
        Ok(())
    }

    /// The new id carries an 'ended' mark: an end-by-query saw this login's index entry. The
    /// login is ended with it: the old key is retired (no session is left under either id)
    /// and the request answers "ended".
    async fn end_with_query(&self, st: &mut State, old: &OldSession) -> Result<()> {
        let retired = self.store().release(&old.key, &old.token, true).await;
        self.undo_member().await;
        match retired {
            // The session ended with this login: its end, once.
            Ok(Release::Done | Release::Retired) => {
                self.mgr
                    .publish_ends(EventKind::Revoked, &[old.id.storage_key()])
                    .await
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "could not retire the old key of a login ended by a query; its freeze lapses");
            }
        }
        st.mark_ended();
        Session::failed(st, Error::SessionEnded)
    }
}
