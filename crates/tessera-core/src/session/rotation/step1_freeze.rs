//! Step 1 of a rotation, freeze: the new member joins the user's index while the old key is
//! frozen and read, or a session not stored yet is created under the new id.

use super::super::state::{JoinSpec, State};
use super::super::{tag, Session};
use super::{OldSession, Rotation};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::store::events::EventBatch;
use crate::store::Freeze;
use std::collections::HashMap;
use tracing::Instrument as _;

/// What step 1 leaves for the next ones.
pub(super) struct Frozen {
    /// The user's sessions beyond the device limit, ended in step 4.
    pub(super) victims: Vec<String>,
    /// The frozen old key and what it held (`None`: no stored session to move).
    pub(super) old: Option<(OldSession, HashMap<String, Vec<u8>>)>,
    /// Step 1 created the session under the new id (a login of a session not stored yet).
    pub(super) created_here: bool,
}

impl Rotation {
    /// Step 1, freeze: at once, the new member joins the user's index (and, with events on,
    /// the expiry set) and the old key is frozen while read; a session not stored yet is
    /// created under the new id instead. A failure undoes what the others did.
    pub(super) async fn freeze(&self, session: &Session, st: &mut State) -> Result<Frozen> {
        let span = tracing::debug_span!("tessera.cycle", sid = %tag(st.id.as_ref()), new_sid = %self.new_id.log_tag());
        // A session not stored yet joins its user's index with its create: one script where
        // both keys are on one server (the store undoes the one if the other fails on a
        // cluster), so no separate index add.
        let joined = self.create_now && self.index.is_some();
        st.index_join = self.index.as_ref().filter(|_| joined).map(|ix| JoinSpec {
            key: ix.clone(),
            member: self.new_member.clone(),
            bound_ms: self.mgr.index_bound_ms(),
            max: self.mgr.inner.config.max_sessions_per_user,
            leaving: self.leaving.clone(),
        });
        let add = self.add_member(joined);
        let freeze = async {
            match &self.old {
                Some((_, key)) => self
                    .store()
                    .freeze(key, &self.new_member, self.timing)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        if self.old.is_none() {
            st.id = Some(self.new_id.clone());
        }
        st.created_by_login = self.create_now;
        let create = self.create_new(session, st);
        let (added, frozen, created) =
            Box::pin(async { tokio::join!(add, freeze, create) }.instrument(span)).await;
        let created_here =
            std::mem::take(&mut st.created_by_login) && matches!(created, Some(Ok(_)));
        st.index_join = None;
        let joined_victims = std::mem::take(&mut st.joined_victims);
        let victims = match added {
            Ok(v) => v.unwrap_or(joined_victims),
            Err(e) => {
                self.undo_member().await;
                if let (Some((_, key)), Ok(Some(Freeze::Frozen { token, .. }))) =
                    (&self.old, frozen)
                {
                    self.thaw(key, &token).await;
                }
                // A session not stored yet made its index entry with its create (nothing
                // here to fail): this is the index add of a stored session's move.
                debug_assert!(created.is_none(), "a create's index entry is made with it");
                return Session::failed(st, e);
            }
        };
        if let Some(Err(e)) = created {
            self.undo_member().await;
            return Err(e);
        }
        let old = match &self.old {
            Some((id, key)) => Some(self.frozen_old(st, id, key, frozen).await?),
            None => None,
        };
        Ok(Frozen {
            victims,
            old,
            created_here,
        })
    }

    /// Step 1's index add (`None`: no user, or `joined`: the create makes it), with the new
    /// id's tracking alongside.
    async fn add_member(&self, joined: bool) -> Result<Option<Vec<String>>> {
        let index_add = async {
            match self.index.as_ref().filter(|_| !joined) {
                Some(ix) => self
                    .store()
                    .index_add(
                        ix,
                        &self.new_member,
                        self.mgr.index_bound_ms(),
                        self.mgr.inner.config.max_sessions_per_user,
                        self.leaving.as_deref(),
                    )
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let track = async {
            // A created session is tracked by the create step itself, before its key.
            if !self.track_new || self.create_now {
                return Ok(());
            }
            self.mgr.publish(&self.track_batch()).await.map(|_| ())
        };
        let (added, tracked) = tokio::join!(index_add, track);
        tracked.and(added)
    }

    /// The tracking of the new id before its key exists, due at the session's own expiry (a
    /// "remember me" shorter than the idle timeout included); step 4 makes a move's exact.
    fn track_batch(&self) -> EventBatch {
        EventBatch {
            track_pending: vec![(
                self.new_member.clone(),
                self.mgr.inner.tracked_ttl_ms(self.timing, self.created_ms),
                self.user.clone().unwrap_or_default(),
            )],
            ..Default::default()
        }
    }

    /// Step 1 for a session not stored yet (`None` otherwise): created under the new id (a
    /// login is saved at once), tracked before its key exists so that an end racing this
    /// login is claimed.
    async fn create_new(&self, session: &Session, st: &mut State) -> Option<Result<i64>> {
        if !self.create_now {
            return None;
        }
        if self.track_new {
            if let Err(e) = self.mgr.publish(&self.track_batch()).await {
                return Some(Err(e));
            }
        }
        Some(session.write_now(st, None).await)
    }

    /// What step 1's freeze of the old key found: frozen (its token and contents), or the
    /// session ended or moving elsewhere meanwhile (the new member goes again).
    async fn frozen_old(
        &self,
        st: &mut State,
        id: &SessionId,
        key: &str,
        frozen: Result<Option<Freeze>>,
    ) -> Result<(OldSession, HashMap<String, Vec<u8>>)> {
        match frozen {
            Ok(Some(Freeze::Frozen { token, fields })) => {
                let old = OldSession {
                    id: id.clone(),
                    key: key.to_string(),
                    token,
                };
                Ok((old, fields))
            }
            Ok(Some(Freeze::Gone)) | Ok(None) => {
                self.undo_member().await;
                st.mark_ended();
                Session::failed(st, Error::SessionEnded)
            }
            Ok(Some(Freeze::Moved)) => {
                self.undo_member().await;
                st.mark_moved();
                Session::failed(st, Error::SessionEnded)
            }
            Err(e) => {
                self.undo_member().await;
                Session::failed(st, e)
            }
        }
    }
}
