//! Step 4 of a rotation, settle: the old member leaves the user's index, the request takes
//! on the new id, the events are published, the sessions over the device limit end.

use super::super::lifecycle::event;
use super::super::state::{CookieAction, State};
use super::super::{EventKind, Session};
use super::step2_copy::Copied;
use super::{OldSession, Rotation};
use crate::error::Result;
use crate::store::events::EventBatch;
use crate::store::fields;

impl Rotation {
    /// Step 4, settle: the old member leaves the previous user's index and its field indexes,
    /// the request takes on the new id and what was copied, the events are published (`login`
    /// or `rotated`; `created` too for a session step 1 created), and the sessions over the
    /// device limit end.
    pub(super) async fn settle(
        &self,
        session: &Session,
        st: &mut State,
        moved: Option<(OldSession, Copied)>,
        victims: Vec<String>,
        created_here: bool,
    ) -> Result<()> {
        let moved_event = match moved {
            Some((old, copied)) => Some(self.settle_moved(session, st, old, copied).await),
            None => {
                if self.create_now {
                    self.announce_created(created_here).await;
                }
                // Otherwise not stored yet: created at the end of the request, if anything
                // is set.
                None
            }
        };
        if let (Some((old_member, ttl)), true) = (moved_event, self.mgr.events_on()) {
            self.announce_move(old_member, ttl).await;
        }
        if let (Some(u), false) = (&self.user, victims.is_empty()) {
            if let Err(e) = Box::pin(self.mgr.end_members(u, &victims, EventKind::Evicted)).await {
                return Session::failed(st, e);
            }
        }
        Ok(())
    }

    /// Step 4 for a moved session: the old member leaves the previous user's index, the old
    /// id's field-index entries go, and the request's state becomes the copy under the new
    /// id. Returns the old member and the new key's TTL, for the event.
    async fn settle_moved(
        &self,
        session: &Session,
        st: &mut State,
        old: OldSession,
        copied: Copied,
    ) -> (String, u64) {
        let store = self.store();
        let config = &self.mgr.inner.config;
        let Copied {
            mut data,
            keep_raw,
            old_entries,
            created,
            sent,
        } = copied;
        session.touches().forget(&old.key);
        session.touches().note(&self.new_key, sent);
        let now = store.server_now().unwrap_or_else(crate::store::now_ms);
        let ttl = crate::store::ttl_ms(now, created, self.timing).unwrap_or(self.timing.idle_ms);
        if let Some(pu) = &self.previous_user {
            if let Err(e) = store
                .index_remove(&config.index_key(pu), &[old.id.storage_key()])
                .await
            {
                // Harmless: the member points at a deleted key and its bound removes it.
                tracing::debug!(error = %e, "could not remove the old member from the user index");
            }
        }
        // The old id is retired for good: its entries go whatever their age, and it leaves
        // the holders of its fields too (else each login left one more candidate there).
        session.retire_in_background(st, old.id.storage_key(), old_entries);
        for (field, reason) in keep_raw {
            data.remove(&field);
            tracing::warn!(%field, %reason, "a protected session field does not decrypt; copied as it is by the id rotation");
            if !config.undecryptable_as_absent {
                st.unreadable.insert(field, reason);
            }
        }
        let now = store.server_now().unwrap_or_else(crate::store::now_ms);
        for (f, ms) in std::mem::take(&mut st.expire) {
            data.insert(
                fields::stamp_of(&f),
                now.saturating_add(ms).to_string().into_bytes(),
            );
        }
        fields::drop_expired(&mut data, now);
        st.stale_stamps.clear();
        st.data = std::sync::Arc::new(data);
        session.saved_records(st);
        st.dirty.clear();
        st.index_before.clear();
        st.cookie = CookieAction::Send;
        st.id = Some(self.new_id.clone());
        (old.id.storage_key(), ttl)
    }

    /// Step 4 for a session step 1 created under the new id (a login is saved at once):
    /// `created` and `login` in one call, with the tracking. If that fails, the new session
    /// goes again, so that every session with events on is tracked.
    async fn announce_created(&self, created_here: bool) {
        if created_here {
            crate::metrics::created();
        }
        if !(self.mgr.events_on() && created_here) {
            return;
        }
        let user = self.user.as_deref();
        let batch = EventBatch {
            confirm: vec![self.new_member.clone()],
            events: vec![
                event(EventKind::Created, &self.new_member, user, false),
                event(self.kind, &self.new_member, user, false),
            ],
            ..Default::default()
        };
        self.mgr.publish_after(batch).await;
    }

    /// Step 4's event for a moved session (`kind`, naming the previous handle); the new id,
    /// tracked before the copy existed, gets its exact expiry (ZADD XX: not if it was ended
    /// meanwhile) and the old id is no longer tracked.
    async fn announce_move(&self, old_member: String, ttl: u64) {
        let mut e = event(self.kind, &self.new_member, self.user.as_deref(), false);
        e.previous = super::super::devices::handle_of(&old_member);
        let mut batch = EventBatch::default();
        batch.rescore.push((self.new_member.clone(), ttl));
        batch.confirm.push(self.new_member.clone());
        batch.untrack.push(old_member);
        batch.events.push(e);
        self.mgr.publish_after(batch).await;
    }
}
