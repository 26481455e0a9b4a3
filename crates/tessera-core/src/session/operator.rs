//! What an operator asks of one session they know only by its handle (from a device list, an
//! event, a query): show it, end it. With the user's id, one index read finds it; without,
//! a key scan does (O(keys): an operator's tool, never a request).

use super::devices::{handle_of, rfc3339_ser, time_of_ms};
use super::manager::SessionManager;
use super::state::is_user_field;
use crate::codec;
use crate::error::Result;
use crate::store::fields;
use std::collections::HashMap;
use std::time::SystemTime;

/// One session as an operator sees it ([`SessionManager::inspect`]). Serializes with times as
/// RFC 3339.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct SessionDetails {
    /// Its handle (as device lists and events show it; never its id).
    pub handle: String,
    /// The bound user, if logged in.
    pub user_id: Option<String>,
    /// When it was created.
    #[serde(serialize_with = "rfc3339_opt")]
    pub created_at: Option<SystemTime>,
    /// When it was last refreshed (at most a touch interval ago when in use).
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_seen: Option<SystemTime>,
    /// The `User-Agent` of its login.
    pub user_agent: Option<String>,
    /// The client address of its login.
    pub client_addr: Option<String>,
    /// Its user fields, each decoded as JSON; protected fields are not among them.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The names of its protected fields: shown as protected, their values never read here.
    pub protected: Vec<String>,
}

fn rfc3339_opt<S: serde::Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339_ser(t, s),
        None => s.serialize_none(),
    }
}

impl SessionManager {
    /// The live session whose [handle](crate::DeviceSession::handle) is `handle`: found
    /// through `user_id`'s index when it is given (one read), else by a key scan of the
    /// namespace's sessions (`SCAN` on every primary: O(keys), for an operator's tool). Its
    /// protected fields are named, never read. `None`: no live session has that handle.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// let session = manager.start(None::<&str>);
    /// session.insert("tenant", "acme").await?;
    /// session.login("ada").await?;
    /// let handle = manager.list_sessions("ada").await?[0].handle.clone();
    /// let found = manager.inspect(&handle, None).await?.unwrap(); // by a key scan
    /// assert_eq!(found.user_id.as_deref(), Some("ada"));
    /// assert_eq!(found.fields["tenant"], "acme");
    /// assert!(manager.inspect(&handle, Some("bob")).await?.is_none()); // not Bob's
    /// # Ok(()) }
    /// ```
    pub async fn inspect(
        &self,
        handle: &str,
        user_id: Option<&str>,
    ) -> Result<Option<SessionDetails>> {
        Ok(self
            .find_handle(handle, user_id)
            .await?
            .map(|(_, h)| self.details(handle, &h)))
    }

    /// Ends the live session whose handle is `handle` (a `revoked` end), found as
    /// [`inspect`](SessionManager::inspect) finds it. `false`: no live session has that
    /// handle (or, with `user_id`, none of that user's).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// manager.start(None::<&str>).login("ada").await?;
    /// let handle = manager.list_sessions("ada").await?[0].handle.clone();
    /// assert!(manager.end_handle(&handle, None).await?);
    /// assert!(!manager.end_handle(&handle, None).await?);
    /// assert!(manager.list_sessions("ada").await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn end_handle(&self, handle: &str, user_id: Option<&str>) -> Result<bool> {
        let Some((member, h)) = self.find_handle(handle, user_id).await? else {
            return Ok(false);
        };
        let user = h
            .get(fields::USER)
            .map(|u| String::from_utf8_lossy(u).into_owned());
        if let Some(u) = &user {
            // The user's revoke: the index entry goes with the session, its end published once.
            if self.revoke(u, handle).await? {
                return Ok(true);
            }
            // Not in its user's index (the entry lapsed; found by the scan): ended below.
        }
        // As its own logout ends it: the key, its end published once, its index entries.
        let key = self.inner.config.session_key(&member);
        if !self.end_key(&key).await? {
            return Ok(false);
        }
        self.publish_ends(super::EventKind::Revoked, std::slice::from_ref(&member))
            .await;
        if let Some(u) = &user {
            let index = self.inner.config.index_key(u);
            if let Err(e) = self
                .inner
                .store
                .index_remove(&index, std::slice::from_ref(&member))
                .await
            {
                tracing::debug!(error = %e, "could not remove an ended session from its user's index; it lapses with its bound");
            }
        }
        super::index::prune_ended(self, &member, &h).await;
        Ok(true)
    }

    /// The member and stored hash of the live session with this handle.
    async fn find_handle(
        &self,
        handle: &str,
        user_id: Option<&str>,
    ) -> Result<Option<(String, HashMap<String, Vec<u8>>)>> {
        let member = match user_id {
            Some(u) => self
                .members_of(u)
                .await?
                .into_iter()
                .find(|m| handle_of(m) == handle),
            None => {
                let prefix = crate::layout::keys::session_prefix(self.inner.config.namespace());
                let is_it = |m: &str| handle_of(m) == handle;
                self.inner.store.scan_find(&prefix, &is_it).await?
            }
        };
        let Some(member) = member else {
            return Ok(None);
        };
        let key = self.inner.config.session_key(&member);
        let mut rows = self
            .inner
            .store
            .read_many(std::slice::from_ref(&key))
            .await?;
        let mut h = rows.pop().unwrap_or_default();
        // A tombstone (ended, or retired by a login) is no session.
        if !h.contains_key(fields::CREATED) {
            return Ok(None);
        }
        if let Some(u) = user_id {
            if h.get(fields::USER).map(Vec::as_slice) != Some(u.as_bytes()) {
                return Ok(None);
            }
        }
        if let Some(now) = self.inner.store.server_now() {
            fields::drop_expired(&mut h, now);
        }
        Ok(Some((member, h)))
    }

    fn details(&self, handle: &str, h: &HashMap<String, Vec<u8>>) -> SessionDetails {
        let text = |f: &str| h.get(f).map(|v| String::from_utf8_lossy(v).into_owned());
        let time = |f: &str| text(f).as_deref().and_then(time_of_ms);
        let mut names: Vec<&String> = h.keys().filter(|k| is_user_field(k)).collect();
        names.sort();
        let (mut values, mut protected) = (serde_json::Map::new(), Vec::new());
        for k in names {
            let raw = &h[k];
            if self.inner.config.is_protected(k) || crate::field_crypto::looks_sealed(raw) {
                protected.push(k.clone());
                continue;
            }
            let v = codec::decode_value(raw).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(raw).into_owned())
            });
            values.insert(k.clone(), v);
        }
        SessionDetails {
            handle: handle.to_string(),
            user_id: text(fields::USER),
            created_at: time(fields::CREATED),
            last_seen: time(fields::TOUCHED),
            user_agent: text(fields::USER_AGENT),
            client_addr: text(fields::CLIENT_ADDR),
            fields: values,
            protected,
        }
    }
}
