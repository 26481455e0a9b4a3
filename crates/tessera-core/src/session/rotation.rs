//! Moving a session to a fresh id (a login, `cycle_id`) without losing a write that races it:
//! the freeze protocol of ARCHITECTURE.md (*The user index*, "login / id rotation"), one
//! function per numbered step:
//!
//! 1. [`Rotation::freeze`]: add the new member to the user's index and freeze the old key
//!    while reading it (a session not stored yet is created under the new id instead);
//! 2. [`Rotation::copy`]: write the new session key, what step 1 read plus this request's
//!    changes;
//! 3. [`Rotation::retire`]: retire the old key, only if the freeze still holds;
//! 4. [`Rotation::settle`]: remove the old member from the user's index, take on the new id,
//!    publish the events, end the sessions over the device limit.
//!
//! Each step is a file of `rotation/`, named for it. Any failure after step 1 removes the new
//! member again ([`Rotation::undo_member`]) and thaws the old key ([`Rotation::thaw`]).

mod step1_freeze;
mod step2_copy;
mod step3_retire;
mod step4_settle;

use super::state::{user_of, State, Status};
use super::{EventKind, Session, SessionManager};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::store::events::EventBatch;
use crate::store::{Store, Timing};

/// One move of a session to a fresh id: what every step needs.
struct Rotation {
    mgr: SessionManager,
    timing: Timing,
    /// What the event says once the move is made (login or rotated).
    kind: EventKind,
    /// The user the session is bound to after the move.
    user: Option<String>,
    /// The user bound before this request's login: its index loses the old member.
    previous_user: Option<String>,
    new_id: SessionId,
    new_member: String,
    new_key: String,
    /// The user's index key.
    index: Option<String>,
    /// The stored session being moved, its id and key (`None`: not stored yet).
    old: Option<(SessionId, String)>,
    /// The old member, when it leaves the same user's index: it must not count toward the
    /// device limit.
    leaving: Option<String>,
    /// With events on, the new id joins the expiry set before its key can exist (so whoever
    /// ends it from then on can claim its end), alongside the index add.
    track_new: bool,
    /// A session not stored yet is created under the new id with its index entry: one script
    /// on one server (both or neither); on a cluster, where the two keys live in different
    /// slots, two scripts at once, unordered (the browser gets the cookie only after both
    /// succeeded, and the one is undone if the other fails).
    create_now: bool,
    /// The stored session's creation time, which its copy keeps (`None`: created now).
    created_ms: Option<u64>,
}

/// The stored session step 1 froze.
struct OldSession {
    id: SessionId,
    key: String,
    /// Releases the freeze (retire or thaw).
    token: String,
}

impl Session {
    /// Moves the session to a fresh id. Order, so that a crash or a race between any two
    /// steps leaves nothing unsafe (each step is one single-key command, fine on Redis
    /// Cluster; a session not stored yet is created with its index entry instead, see
    /// `create_now`):
    /// 1. freeze: at once, add the new member to the user's index (a crash after it leaves a
    ///    member pointing at nothing, which its bound removes later), and freeze the old key
    ///    while reading it (writes to it now answer "moved" instead of landing behind the copy);
    /// 2. copy: write the new session key, what step 1 read plus this request's changes;
    /// 3. retire the old key, only if the freeze still holds: if the key is gone, a
    ///    logout-all or revoke won the race, so the copy is deleted again and the request gets
    ///    `SessionEnded`; if the freeze was broken, the copy is deleted and the old key lives;
    /// 4. settle: remove the old member from the previous user's index; end sessions over the
    ///    limit.
    ///
    /// Any failure after step 1 removes the new member again and thaws the old key.
    ///
    /// With lifecycle events on, `kind` (login or rotated) is published once the move is made.
    pub(super) async fn cycle_locked(
        &self,
        st: &mut State,
        previous_user: Option<String>,
        kind: EventKind,
    ) -> Result<()> {
        if st.status == Status::Ended {
            return Err(Error::SessionEnded);
        }
        Self::check_carried(st)?;
        let rotation = Rotation::plan(self, st, previous_user, kind);
        Self::settle_index_refresh(st).await;
        let frozen = rotation.freeze(self, st).await?;
        let moved = match frozen.old {
            Some((old, data)) => {
                let copied = rotation.copy(st, &old, data).await?;
                rotation.retire(st, &old).await?;
                Some((old, copied))
            }
            None => None,
        };
        rotation
            .settle(self, st, moved, frozen.victims, frozen.created_here)
            .await
    }
}

impl Rotation {
    /// What the move of this request's session will be: its new id, its user's index, the
    /// stored session it moves (if any).
    fn plan(
        session: &Session,
        st: &State,
        previous_user: Option<String>,
        kind: EventKind,
    ) -> Rotation {
        let mgr = session.mgr().clone();
        let timing = session.timing_for(st);
        let user = user_of(&st.data);
        let new_id = SessionId::generate();
        let new_member = new_id.storage_key();
        let new_key = mgr.key_of(&new_id);
        let index = user.as_deref().map(|u| mgr.inner.config.index_key(u));
        let old = match (st.status, &st.id) {
            (Status::Stored, Some(id)) => Some((id.clone(), mgr.key_of(id))),
            _ => None,
        };
        let leaving = match (&old, &previous_user) {
            (Some((id, _)), Some(pu)) if Some(pu) == user.as_ref() => Some(id.storage_key()),
            _ => None,
        };
        let track_new = mgr.events_on() && (old.is_some() || user.is_some());
        let create_now = old.is_none() && user.is_some();
        let created_ms = old
            .as_ref()
            .and_then(|_| crate::store::fields::ms(&st.data, crate::store::fields::CREATED));
        Rotation {
            mgr,
            timing,
            kind,
            user,
            previous_user,
            new_id,
            new_member,
            new_key,
            index,
            old,
            leaving,
            track_new,
            create_now,
            created_ms,
        }
    }

    fn store(&self) -> &Store {
        &self.mgr.inner.store
    }

    /// After a failure past step 1: the new member leaves the user's index and the expiry
    /// set again (a failed login leaves no index member).
    async fn undo_member(&self) {
        if let Some(ix) = &self.index {
            if let Err(e) = self
                .store()
                .index_remove(ix, std::slice::from_ref(&self.new_member))
                .await
            {
                tracing::debug!(error = %e, "could not remove a failed login's index member; its bound removes it");
            }
        }
        if self.track_new {
            let batch = EventBatch {
                untrack: vec![self.new_member.clone()],
                ..Default::default()
            };
            if let Err(e) = self.mgr.publish(&batch).await {
                tracing::debug!(error = %e, "could not untrack a failed login's new id; the sweeper drops it");
            }
        }
    }

    /// After a failure past step 1: the old key thawed, writable again.
    async fn thaw(&self, key: &str, token: &str) {
        if let Err(e) = self.store().release(key, token, false).await {
            tracing::debug!(error = %e, "could not thaw the old key; its freeze lapses by itself");
        }
    }
}
