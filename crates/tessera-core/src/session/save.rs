//! Saving a request's changes: [`Session::write_now`], the one path from the pending changes
//! (`State::dirty`, lifetimes, activity records) to the store's write (`write.lua`) or create,
//! in named steps: the field-index add before the write, the sealed field values, the write
//! itself, and the bookkeeping once it is written.

use super::index::{self, Entries};
use super::sealed_fields;
use super::state::{CookieAction, JoinSpec, State, Status};
use super::{too_late, Session};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::store::{fields, Mode, Timing, WriteOp, WriteResult};
use std::borrow::Cow;
use std::time::Instant;
use tracing::Instrument as _;

/// One attempt at writing: where to, and what besides the pending changes.
struct Attempt<'a> {
    id: SessionId,
    key: String,
    /// A new session: created, not updated.
    creating: bool,
    /// An increment sent with the changes.
    incr: Option<(&'a str, i64)>,
    t: Timing,
}

/// What the field-index step did before the write: the write's deadline, and the old values'
/// entries to prune once it is written.
struct IndexStep {
    /// The latest server time the write may land (0: none).
    not_after_ms: u64,
    /// The entries of values this write drops.
    index_remove: Entries,
    /// A server time no later than the write lands, what those entries are pruned against
    /// (`None`: nothing to prune, or no server time known).
    before_write: Option<u64>,
}

impl Session {
    /// Writes the pending changes now instead of at the end of the request, so that they are
    /// kept even if the response turns out to be an error (by default an error response
    /// commits nothing of its request: see [`finish`](crate::adapter::SessionExt::finish)). A no-op when nothing
    /// changed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert("order", 1017).await?;
    /// // Kept even if the handler goes on to answer an error:
    /// session.save().await?;
    /// assert!(session.is_stored().await?);
    /// # Ok(()) }
    /// ```
    pub async fn save(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        if !st.has_changes() {
            return Ok(());
        }
        self.write_now(&mut st, None).await.map(|_| ())
    }

    /// Writes the pending changes (and an optional increment) now, creating the record if the
    /// session is new. Returns the increment's result.
    pub(super) async fn write_now(&self, st: &mut State, incr: Option<(&str, i64)>) -> Result<i64> {
        // Only records pending (they do not load): whether a session exists decides between
        // an update and a create.
        self.ensure_loaded(st).await?;
        if st.status == Status::Ended {
            return Self::failed(st, Error::SessionEnded);
        }
        let t = self.timing_for(st);
        let creating = st.status != Status::Stored;
        for _attempt in 0..3 {
            if creating && st.id.is_none() {
                st.id = Some(SessionId::generate());
            }
            let id = st.id.clone().expect("set above");
            let key = self.mgr().key_of(&id);
            let attempt = Attempt {
                id,
                key,
                creating,
                incr,
                t,
            };
            let indexed = match self.index_before_write(st, &attempt).await {
                Ok(step) => step,
                Err(e) => return Self::failed(st, e),
            };
            let (res, sent) = self.send_write(st, &attempt, indexed.not_after_ms).await;
            match res {
                Err(e) => return Self::failed(st, e),
                Ok(WriteResult::Written {
                    incr,
                    refreshed,
                    user,
                    victims,
                }) => {
                    // A login's create with its index join: the sessions over the device
                    // limit, for the rotation to end.
                    st.joined_victims = victims;
                    self.after_saved(st, &attempt, indexed, sent).await?;
                    self.after_write(st, &attempt.id, &attempt.key, sent, refreshed, user);
                    return Ok(incr);
                }
                Ok(WriteResult::Gone) => {
                    st.mark_ended();
                    return Self::failed(st, Error::SessionEnded);
                }
                Ok(
                    r @ (WriteResult::NotAnInteger
                    | WriteResult::TooManyFields
                    | WriteResult::Moved),
                ) => return Err(self.refusal(st, r, incr.map(|i| i.0).unwrap_or(""))),
                Ok(WriteResult::TooLate) => return Self::failed(st, too_late()),
                Ok(WriteResult::Exists) if st.index_join.is_some() => {
                    // A login's create: its id is the rotation's, named in the index entry,
                    // so it is not drawn again here (nothing was written).
                    break;
                }
                Ok(WriteResult::Exists) => {
                    // 128-bit id collision: astronomically unlikely; draw again.
                    st.id = None;
                }
            }
        }
        Self::failed(
            st,
            Error::Store(crate::error::StoreError::new(
                "could not find a free session id",
            )),
        )
    }

    /// Step 1: the field-index entries of the values this write sets, added before the write
    /// (a session that holds a value is always in its index); the write must then land within
    /// half the prune guard of the add.
    async fn index_before_write(&self, st: &State, at: &Attempt<'_>) -> Result<IndexStep> {
        let (mut index_add, index_remove) = self.index_delta(st, at.creating);
        index_add.extend(st.incr_entry.clone());
        if st.dirty.contains_key(fields::OWN_EXPIRY) {
            // A new own expiry: every entry is added again, for as long as it now lives.
            index_add = index::all_entries(&self.mgr().inner.config, &st.data);
            index_add.extend(st.incr_entry.clone());
        }
        let mut not_after_ms = 0;
        if !index_add.is_empty() {
            let mgr = self.mgr();
            let member = at.id.storage_key();
            let added =
                index::add_all(mgr, &member, &index_add, mgr.field_bound_ms(&st.data)).await?;
            not_after_ms = index::write_cap(added);
        }
        // No later than the write lands: what the old values' entries are pruned against.
        let before_write = if index_remove.is_empty() {
            None
        } else {
            self.store().server_now()
        };
        Ok(IndexStep {
            not_after_ms,
            index_remove,
            before_write,
        })
    }

    /// Step 2: the values to store, protected fields encrypted for the key they are written to.
    fn sealed_changes<'s>(&self, st: &'s State, member: &str) -> Vec<(&'s str, Cow<'s, str>)> {
        let config = &self.mgr().inner.config;
        st.dirty
            .iter()
            .filter_map(|(k, v)| {
                let v = v.as_deref()?;
                let keys = config.field_keys.as_ref();
                Some((k.as_str(), sealed_fields::seal(keys, config, member, k, v)))
            })
            .collect()
    }

    /// Step 3: the write itself, one command: a create for a new session, else `write.lua`'s
    /// update of the changed fields. Returns its answer and when it was sent.
    async fn send_write(
        &self,
        st: &State,
        at: &Attempt<'_>,
        not_after_ms: u64,
    ) -> (Result<WriteResult>, Instant) {
        let stored = self.sealed_changes(st, at.id.storage_str());
        let expire = st.pending_lifetimes();
        let records: Vec<&str> = st.records.iter().map(String::as_str).collect();
        let sent = Instant::now();
        let res = if at.creating {
            // A new session: no existence check, no script (a fresh id cannot exist). An
            // increment here is of a field the new session does not hold yet.
            let by = at.incr.map(|(f, by)| (f, by.to_string()));
            let mut set: Vec<(&str, &str)> = stored.iter().map(|(k, v)| (*k, v.as_ref())).collect();
            if let Some((f, by)) = &by {
                set.push((f, by));
            }
            let span = tracing::debug_span!("tessera.save", sid = %at.id.log_tag(), commands = 1, fields = set.len(), create = true);
            Box::pin(
                self.store()
                    .create(
                        &at.key,
                        &crate::store::NewSession {
                            set: &set,
                            created_ms: 0,
                            expire: &expire,
                            records: &records,
                            not_after_ms,
                            index: st.index_join.as_ref().map(JoinSpec::as_join),
                        },
                        at.t,
                    )
                    .instrument(span),
            )
            .await
            .map(|r| match (r, at.incr) {
                (
                    WriteResult::Written {
                        refreshed,
                        user,
                        victims,
                        ..
                    },
                    Some((_, by)),
                ) => WriteResult::Written {
                    incr: by,
                    refreshed,
                    user,
                    victims,
                },
                (r, _) => r,
            })
        } else {
            let op = WriteOp {
                mode: Mode::Update,
                set: stored.iter().map(|(k, v)| (*k, v.as_ref())).collect(),
                del: st
                    .dirty
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| k.as_str())
                    .collect(),
                incr: at.incr,
                max_fields: 0,
                not_after_ms,
                expire,
                records,
            };
            let span = tracing::debug_span!("tessera.save", sid = %at.id.log_tag(), commands = 1, fields = op.set.len() + op.del.len(), create = false);
            Box::pin(self.store().write(&at.key, &op, at.t).instrument(span)).await
        };
        (res, sent)
    }

    /// Step 4, once written: a new session's `created` event (if that fails, the new key goes
    /// again and nothing was created), then the state: nothing pending, the lifetimes' stamps,
    /// the dropped values' entries pruned, a new session stored with its cookie to send.
    async fn after_saved(
        &self,
        st: &mut State,
        at: &Attempt<'_>,
        indexed: IndexStep,
        sent: Instant,
    ) -> Result<()> {
        if at.creating && self.mgr().events_on() && !st.created_by_login {
            // Tracked and announced before the cookie is handed out; if that
            // fails, the new key goes again and nothing was created.
            if let Err(e) = self.publish_created(st, at.id.storage_str(), at.t).await {
                if let Err(d) = self.store().delete(&at.key).await {
                    tracing::debug!(error = %d, "could not delete a new session whose event failed; it expires by its TTL");
                }
                return Self::failed(st, e);
            }
        }
        if at.creating && !st.created_by_login {
            crate::metrics::created();
        }
        if !at.creating && self.mgr().events_on() && st.dirty.contains_key(fields::OWN_EXPIRY) {
            // A new own expiry set the TTL anew (write.lua): the tracking follows it.
            self.retrack_expiry(st, at.id.storage_str(), at.t).await;
        }
        st.dirty.clear();
        self.saved_records(st);
        self.note_lifetime_stamps(st);
        // Written: what the index entries were before no longer matters, except
        // for an increment's field, whose entry `index_increment` moves next.
        let incr_field = at.incr.map(|(f, _)| f);
        st.index_before
            .retain(|k, _| incr_field == Some(k.as_str()));
        if let Some(before) = indexed.before_write {
            let max = index::prunable_below(before, self.mgr().field_floor_ms());
            self.prune_in_background(st, at.id.storage_key(), indexed.index_remove, max);
        }
        if at.creating {
            st.status = Status::Stored;
            st.cookie = CookieAction::Send;
            st.slid_at = Some(sent);
            self.touches().note(&at.key, sent);
        }
        Ok(())
    }

    /// The lifetime stamps the write script wrote, as this process estimates them.
    fn note_lifetime_stamps(&self, st: &mut State) {
        if st.expire.is_empty() {
            return;
        }
        let now = self
            .store()
            .server_now()
            .unwrap_or_else(crate::store::now_ms);
        for (f, ms) in std::mem::take(&mut st.expire) {
            let stamp = fields::stamp_of(&f);
            let at = now.saturating_add(ms);
            st.data_mut().insert(stamp, at.to_string().into_bytes());
        }
    }
}
