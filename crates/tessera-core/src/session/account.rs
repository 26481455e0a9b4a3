//! Ending sessions from a request: logout, logout everywhere, the device list and revoke.

use super::devices::{handle_of, DeviceSession};
use super::state::{user_of, Status};
use super::Session;
use crate::error::{Error, Result};
use tracing::Instrument as _;

impl Session {
    /// Ends the session: deletes its record at once and clears the cookie. A later write in
    /// the same request starts a new session under a new id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// // Logout:
    /// session.destroy().await?;
    /// assert_eq!(session.user_id().await?, None);
    /// assert!(!session.is_stored().await?);
    /// # Ok(()) }
    /// ```
    pub async fn destroy(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        // Load first (one command) when a cookie named a session, so its user's index entry
        // goes too and device limits count only live sessions.
        self.ensure_loaded(&mut st).await?;
        Self::settle_index_refresh(&mut st).await;
        if let (Status::Stored, Some(id)) = (st.status, st.id.clone()) {
            let key = self.mgr().key_of(&id);
            let span = tracing::debug_span!("tessera.destroy", sid = %id.log_tag(), commands = 1);
            let deleted = self.mgr().end_key(&key).instrument(span).await;
            match deleted {
                Err(e) => return Self::failed(&mut st, e),
                Ok(existed) => {
                    if existed {
                        self.mgr()
                            .publish_ends(super::EventKind::Logout, &[id.storage_key()])
                            .await;
                    }
                    self.touches().forget(&key);
                    // Deleted for good: the member leaves its field indexes whatever its age.
                    super::index::prune_ended(self.mgr(), id.storage_str(), &st.data).await;
                    if let Some(u) = user_of(&st.data) {
                        let index = self.mgr().inner.config.index_key(&u);
                        if let Err(e) = self.store().index_remove(&index, &[id.storage_key()]).await
                        {
                            // The session is deleted: not "nothing was changed".
                            return Self::failed(&mut st, e.after_a_change());
                        }
                    }
                }
            }
        }
        st.mark_destroyed();
        Ok(())
    }

    /// Ends every session of this session's user, this one included (logout everywhere).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// # manager.start(None::<&str>).login("ada").await?; // Ada on her phone
    /// assert_eq!(session.list_sessions().await?.len(), 2); // this browser and her phone
    /// // "Log out everywhere":
    /// let ended = session.logout_all().await?;
    /// assert_eq!(ended, 2);
    /// assert_eq!(session.user_id().await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn logout_all(&self) -> Result<usize> {
        let user = self.user_id().await?.ok_or(Error::NotLoggedIn)?;
        let n = match self.mgr().logout_all(&user).await {
            Ok(n) => n,
            Err(e) => {
                let mut st = self.inner.state.lock().await;
                return Self::failed(&mut st, e);
            }
        };
        let mut st = self.inner.state.lock().await;
        st.mark_destroyed();
        Ok(n)
    }

    /// This session's user's live sessions, most recently used first, this one marked `current`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// for device in session.list_sessions().await? {
    ///     let this = if device.current { " (this device)" } else { "" };
    ///     println!("{} {:?} {:?}{this}", device.handle, device.user_agent, device.last_seen);
    /// }
    /// assert!(session.list_sessions().await?[0].current);
    /// # Ok(()) }
    /// ```
    pub async fn list_sessions(&self) -> Result<Vec<DeviceSession>> {
        let (user, member) = self.user_and_member().await?;
        let res = self.mgr().list_sessions_marking(&user, Some(&member)).await;
        self.note_failure(res).await
    }

    /// Ends one of this session's user's sessions by handle; `false` if it is not one of them.
    /// Revoking the current session ends it like [`destroy`](Session::destroy).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// # manager.start(None::<&str>).login("ada").await?; // Ada on her phone
    /// let devices = session.list_sessions().await?;
    /// let phone = devices.iter().find(|d| !d.current).unwrap();
    /// assert!(session.revoke(&phone.handle).await?);
    /// assert!(!session.revoke("not-one-of-hers").await?);
    /// assert_eq!(session.list_sessions().await?.len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn revoke(&self, handle: &str) -> Result<bool> {
        let (user, member) = self.user_and_member().await?;
        let res = self.mgr().revoke(&user, handle).await;
        let ok = self.note_failure(res).await?;
        if ok && handle_of(&member) == handle {
            let mut st = self.inner.state.lock().await;
            st.mark_destroyed();
        }
        Ok(ok)
    }

    /// Ends every other session of this session's user.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// # manager.start(None::<&str>).login("ada").await?; // Ada on her phone
    /// // After a password change: "sign out of other devices".
    /// assert_eq!(session.logout_others().await?, 1); // her phone
    /// assert_eq!(session.list_sessions().await?.len(), 1);
    /// assert!(session.is_stored().await?); // this one lives on
    /// # Ok(()) }
    /// ```
    pub async fn logout_others(&self) -> Result<usize> {
        let (user, member) = self.user_and_member().await?;
        let res = self.mgr().logout_all_except(&user, Some(&member)).await;
        self.note_failure(res).await
    }

    async fn user_and_member(&self) -> Result<(String, String)> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        match (user_of(&st.data), st.status, &st.id) {
            (Some(u), Status::Stored, Some(id)) => Ok((u, id.storage_key())),
            _ => Err(Error::NotLoggedIn),
        }
    }

    async fn note_failure<T>(&self, res: Result<T>) -> Result<T> {
        match res {
            Ok(v) => Ok(v),
            Err(e) => {
                let mut st = self.inner.state.lock().await;
                Self::failed(&mut st, e)
            }
        }
    }
}
