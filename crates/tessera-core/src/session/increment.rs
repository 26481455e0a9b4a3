//! [`Session::increment`]: an integer field added to at once, in one write script when the
//! session is not loaded yet (existence check, `HINCRBY` and TTL refresh in one round trip),
//! else through [`write_now`](Session::write_now) with the pending changes.

use super::state::Status;
use super::{check_field, check_field_name_len, too_late, Session};
use crate::error::{Error, Result};
use crate::store::{Mode, WriteOp, WriteResult};
use std::time::Instant;
use tracing::Instrument as _;

impl Session {
    /// Adds `by` to an integer field at once (HINCRBY) and returns the new value; concurrent
    /// increments never lose an update. Pending changes are written in the same round trip.
    ///
    /// Operations apply in the order the handler made them: after `insert("n", 10)` in the
    /// same request, `increment("n", 1)` stores and returns 11; after inserting a value that
    /// is not an integer, it is [`Error::NotAnInteger`] and nothing is written.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// // A wrong password: count it (two requests at once both count).
    /// let attempts = session.increment("login_attempts", 1).await?;
    /// assert_eq!(attempts, 1);
    /// assert_eq!(session.increment("login_attempts", 1).await?, 2);
    /// # Ok(()) }
    /// ```
    pub async fn increment(&self, field: &str, by: i64) -> Result<i64> {
        check_field(field)?;
        check_field_name_len(field)?;
        if self.mgr().inner.config.is_protected(field) {
            return Err(Error::ProtectedField(field.to_string()));
        }
        let mut st = self.inner.state.lock().await;
        let indexed = self.indexed(field).is_some();
        // With field indexes, an increment loads first: a write that slides the TTL must also
        // move the bounds of the session's index entries, which needs its indexed values.
        let any_indexed = !self.mgr().inner.config.indexed.is_empty();
        if let (Status::Unloaded, Some(id), 1, false) =
            (st.status, st.id.clone(), st.candidates.len(), any_indexed)
        {
            // Not loaded yet (so nothing pending): one write script does the existence check,
            // the increment and the throttled TTL refresh, in one round trip, without reading
            // the session.
            let key = self.mgr().key_of(&id);
            let records: Vec<String> = st.records.clone();
            let op = WriteOp {
                mode: Mode::Update,
                set: Vec::new(),
                del: Vec::new(),
                incr: Some((field, by)),
                // Not loaded, so the store checks the field count for a new field.
                max_fields: self.mgr().inner.config.limits.max_fields,
                not_after_ms: 0,
                expire: Vec::new(),
                records: records.iter().map(String::as_str).collect(),
            };
            let span = tracing::debug_span!("tessera.increment", sid = %id.log_tag(), commands = 1);
            let sent = Instant::now();
            let write = self.store().write(&key, &op, self.timing_for(&st));
            match Box::pin(write.instrument(span)).await {
                Err(e) => return Self::failed(&mut st, e),
                Ok(WriteResult::Written {
                    incr,
                    refreshed,
                    user,
                    ..
                }) => {
                    // The records went with it (the trail itself is read when next loaded).
                    st.records.clear();
                    self.after_write(&mut st, &id, &key, sent, refreshed, user);
                    return Ok(incr);
                }
                Ok(
                    r @ (WriteResult::NotAnInteger
                    | WriteResult::TooManyFields
                    | WriteResult::Moved),
                ) => return Err(self.refusal(&mut st, r, field)),
                Ok(WriteResult::TooLate) => return Self::failed(&mut st, too_late()),
                Ok(WriteResult::Gone | WriteResult::Exists) => {
                    // No such session (expired or ended before this request): start a new one.
                    st.candidates.clear();
                    st.mark_no_session();
                }
            }
        }
        self.ensure_loaded(&mut st).await?;
        if indexed {
            self.note_index_change(&mut st, field);
        }
        if let Some(pending) = st.dirty.get(field).cloned() {
            // Set or removed earlier in this request: the increment applies to that value.
            let current = match pending {
                Some(v) => v
                    .parse::<i64>()
                    .map_err(|_| Error::NotAnInteger(field.into()))?,
                None => 0,
            };
            let n = current
                .checked_add(by)
                .ok_or_else(|| Error::NotAnInteger(field.into()))?;
            st.data_mut()
                .insert(field.to_string(), n.to_string().into_bytes());
            st.dirty.insert(field.to_string(), Some(n.to_string()));
            self.write_now(&mut st, None).await?;
            return Ok(n);
        }
        if !st.data.contains_key(field) {
            self.check_size(&st, field, 20)?;
            self.check_index_terms(&st, field, i64::MIN.to_string().as_bytes())?;
        }
        let predicted = self.predicted_increment(&st, field, by);
        st.incr_entry = predicted.clone();
        let res = self.write_now(&mut st, Some((field, by))).await;
        st.incr_entry = None;
        let res = res?;
        st.data_mut()
            .insert(field.to_string(), res.to_string().into_bytes());
        if indexed {
            self.index_increment(&mut st, field, predicted).await?;
        }
        Ok(res)
    }
}
