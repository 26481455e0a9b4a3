//! Login and `cycle_id`: binding a user (its id, client info), starting anew for another
//! user, then moving the session to a fresh id (`rotation.rs`, the freeze protocol).

use super::devices::check_user_id;
use super::state::{is_user_field, user_of, CookieAction, State, Status};
use super::Session;
use crate::error::{Error, Result};
use crate::store::fields;
use std::collections::BTreeMap;

impl Session {
    /// Binds the session to `user_id` and moves it to a new id (defence against session
    /// fixation). The session is saved at once (an error response later in the request does
    /// not undo a login); the new cookie is sent with the response.
    ///
    /// - Anonymous -> user, or the same user again: the session keeps its data (a cart
    ///   survives login).
    /// - Another user than the one bound: the session starts anew, as Django's `login`
    ///   flushes: the previous user's session ends (its key and its index entry go), none of
    ///   its fields are carried over, only what this request set is kept, and the new
    ///   session's creation time (and so its absolute lifetime) starts now.
    ///
    /// The session joins the user's index (`user:<id>:sessions`); with
    /// `max_sessions_per_user`, the user's least recently used sessions beyond the limit end.
    /// The client's `User-Agent` and address (from the adapter) are recorded for device lists.
    ///
    /// `user_id` is any `Display` type (`&str`, `u64`, a `Uuid`, ...): its text is the id, so
    /// `42` and `"42"` name the same user.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert("cart", ["p-17"]).await?;
    /// // The password checked out:
    /// session.login("ada").await?;
    /// assert_eq!(session.user_id().await?.as_deref(), Some("ada"));
    /// let cart: Option<Vec<String>> = session.get("cart").await?;
    /// assert_eq!(cart, Some(vec!["p-17".to_string()])); // the cart survives the login
    /// # Ok(()) }
    /// ```
    pub async fn login(&self, user_id: impl std::fmt::Display) -> Result<()> {
        let user_id = user_id.to_string();
        let user_id = user_id.as_str();
        check_user_id(user_id)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if st.status == Status::Ended {
            return Self::failed(&mut st, Error::SessionEnded);
        }
        let mut previous_user = user_of(&st.data);
        let switching = previous_user.as_deref().is_some_and(|p| p != user_id);
        if switching {
            Box::pin(self.end_for_another_user(&mut st)).await?;
            previous_user = None;
        }
        // Before anything of the login is set: a session whose protected values this instance
        // cannot carry to the new id is not logged in here (nothing changed).
        Self::check_carried(&st)?;
        // Tokens of the page before the login are not good after it.
        super::csrf::forget_secret(&mut st);
        let meta = [
            (fields::USER, Some(user_id.to_string())),
            (fields::USER_AGENT, st.client.user_agent.clone()),
            (fields::CLIENT_ADDR, st.client.client_addr.clone()),
        ];
        for (f, v) in meta {
            match v {
                Some(v) => {
                    st.data_mut().insert(f.into(), v.clone().into_bytes());
                    st.dirty.insert(f.into(), Some(v));
                }
                None if st.remove_data(f).is_some() => {
                    st.dirty.insert(f.into(), None);
                }
                None => {}
            }
        }
        // Boxed: the rotation's future is large, and this keeps callers' futures small.
        let res =
            Box::pin(self.cycle_locked(&mut st, previous_user, super::EventKind::Login)).await;
        if res.is_ok() {
            crate::metrics::login();
        }
        if switching {
            // The previous user's session is already gone: a later failure has changed
            // something, so it must not be answered as "nothing was changed".
            if let Some(Error::Unavailable(e)) = st.failure.take() {
                st.failure = Some(Error::OutcomeUnknown(e));
            }
            if let Err(Error::Unavailable(e)) = res {
                return Err(Error::OutcomeUnknown(e));
            }
        }
        res
    }

    /// Login as another user: ends the stored session of the previous user (key and index
    /// member) and keeps only what this request set, for a fresh session.
    async fn end_for_another_user(&self, st: &mut State) -> Result<()> {
        Self::settle_index_refresh(st).await;
        if let (Status::Stored, Some(id)) = (st.status, st.id.clone()) {
            let key = self.mgr().key_of(&id);
            match self.mgr().end_key(&key).await {
                Err(e) => return Self::failed(st, e),
                Ok(true) => {
                    self.mgr()
                        .publish_ends(super::EventKind::Logout, &[id.storage_key()])
                        .await
                }
                Ok(false) => {}
            }
            self.touches().forget(&key);
            let entries = super::index::all_entries(&self.mgr().inner.config, &st.data);
            self.prune_in_background(st, id.storage_key(), entries, u64::MAX);
            if let Some(u) = user_of(&st.data) {
                let index = self.mgr().inner.config.index_key(&u);
                if let Err(e) = self.store().index_remove(&index, &[id.storage_key()]).await {
                    // Harmless: the member points at a deleted key and its bound removes it.
                    tracing::debug!(error = %e, "could not remove the old member from the user index");
                }
            }
        }
        let pending: BTreeMap<String, Option<String>> = std::mem::take(&mut st.dirty)
            .into_iter()
            .filter(|(k, v)| v.is_some() && is_user_field(k))
            .collect();
        st.data = std::sync::Arc::new(
            pending
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?.into_bytes())))
                .collect(),
        );
        st.dirty = pending;
        st.status = Status::New;
        st.id = None;
        // Nothing of the previous user's session is left, unreadable fields included.
        st.unreadable.clear();
        st.cookie = CookieAction::clear_if(st.had_cookie);
        Ok(())
    }

    /// Moves the session to a new id: the current contents are copied to a new key, then the
    /// old key is deleted (single-key steps, no RENAME, so it works on Redis Cluster). A write
    /// racing the move is either in the copy or refused (never acknowledged and lost). If the
    /// old session was ended meanwhile, the copy is removed again and [`Error::SessionEnded`]
    /// returned.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// let before = session.list_sessions().await?[0].handle.clone();
    /// // A privilege change (a password change, sudo mode): a new id, the same session.
    /// session.cycle_id().await?;
    /// let devices = session.list_sessions().await?;
    /// assert_eq!(devices.len(), 1);
    /// assert_ne!(devices[0].handle, before);
    /// assert_eq!(session.user_id().await?.as_deref(), Some("ada"));
    /// # Ok(()) }
    /// ```
    pub async fn cycle_id(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let user = user_of(&st.data);
        Box::pin(self.cycle_locked(&mut st, user, super::EventKind::Rotated)).await
    }
}
