//! Step 3 of a rotation, retire: the old key becomes a short tombstone, only if the freeze
//! still holds.

use super::super::state::State;
use super::super::Session;
use super::{OldSession, Rotation};
use crate::error::{Error, Result};
use crate::store::Release;

impl Rotation {
    /// Step 3, retire: the old key becomes a short tombstone, only if the freeze still holds.
    /// Otherwise the copy goes again: the old key was ended meanwhile (`SessionEnded`), or its
    /// freeze was broken and it lives on.
    pub(super) async fn retire(&self, st: &mut State, old: &OldSession) -> Result<()> {
        let store = self.store();
        let mut released = store.release(&old.key, &old.token, true).await;
        if released.is_err() {
            // The retire's answer was lost: ask again by thawing, which says which it was.
            released = match store.release(&old.key, &old.token, false).await {
                Ok(Release::Retired) => Ok(Release::Done), // it did happen: keep the copy
                Ok(Release::Done) => released,             // thawed: the old one lives
                _ => released,
            };
        }
        if matches!(released, Ok(Release::Done | Release::Retired)) {
            return Ok(());
        }
        // Do not let the copy live on beside the old session (or after it ended).
        let _ = store.delete(&self.new_key).await;
        self.undo_member().await;
        match released {
            Ok(Release::Gone) => {
                st.mark_ended();
                Session::failed(st, Error::SessionEnded)
            }
            Ok(_) => {
                st.mark_moved();
                Session::failed(st, Error::SessionEnded)
            }
            Err(e) => Session::failed(st, e),
        }
    }
}
