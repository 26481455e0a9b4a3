//! Sessions whose id and cookie another session framework manages, kept in tessera's layout.

use super::devices::handle_of;
use super::state::{is_user_field, user_of};
use super::{check_field, check_field_name_len, SessionManager};
use crate::codec;
use crate::error::{Error, Result};
use crate::store::{fields, Load, Mode, Timing, WriteOp, WriteResult};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Sessions whose id and cookie another session framework manages (tower-sessions, through
/// the `tessera-tower-sessions` crate), stored in tessera's layout: one hash per session at
/// `[namespace]session:<hash of the id>`, one field per value, the user's
/// `user:<id>:sessions` index kept current. So [`SessionManager::logout_all`],
/// [`list_sessions`](SessionManager::list_sessions) and [`revoke`](SessionManager::revoke)
/// work on them, on every topology, and `redis-cli` shows them as it shows any session.
///
/// The other framework decides when a session is saved and when it expires: each write sets
/// the key's expiry to the time it is given, and a read never moves it. A save never brings back
/// a session that was deleted meanwhile (a logout-all from another device wins).
///
/// Not covered: lifecycle events, field indexes and the activity trail are for sessions
/// tessera's own middleware runs; device lists show no user agent or address for these.
///
/// ```
/// # async fn demo() -> tessera_core::Result<()> {
/// use std::collections::HashMap;
/// use std::time::{Duration, SystemTime};
/// use tessera_core::{SessionConfig, SessionManager, Store};
///
/// let manager = SessionManager::new(Store::memory(), SessionConfig::builder(tessera_core::Key::generate()).build()?);
/// let records = manager.records();
/// let id = "an id with 128 bits or more of CSPRNG entropy";
/// let data = HashMap::from([("cart".to_string(), serde_json::json!([1, 2]))]);
/// let expires = SystemTime::now() + Duration::from_secs(3600);
/// assert!(records.create(id, &data, Some("ada"), expires).await?);
/// assert_eq!(records.load(id).await?.unwrap().data, data);
/// assert_eq!(manager.list_sessions("ada").await?[0].handle, records.handle(id));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Records {
    mgr: SessionManager,
}

/// A session as [`Records::load`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// Its values.
    pub data: HashMap<String, Value>,
    /// When it expires, as last written (`None` for a session tessera's own middleware wrote).
    pub expires_at: Option<SystemTime>,
}

/// Field writes and deletes that turn `old` (user fields as stored) into `new`.
type Delta = (Vec<(String, String)>, Vec<String>);

impl SessionManager {
    /// Sessions whose id and cookie another framework manages: see [`Records`].
    pub fn records(&self) -> Records {
        Records { mgr: self.clone() }
    }
}

impl Records {
    /// The storage key suffix (member) of a foreign id: a hash of it, so the store never
    /// holds the id itself.
    fn member(id: &str) -> String {
        use base64::Engine as _;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"tessera.record\0");
        ctx.update(id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ctx.finish().as_ref()[..16])
    }

    fn key(&self, id: &str) -> String {
        self.mgr.inner.config.session_key(&Self::member(id))
    }

    /// The [`DeviceSession::handle`](crate::DeviceSession::handle) of the session under `id`,
    /// to mark "this device" in a device list.
    pub fn handle(&self, id: &str) -> String {
        handle_of(&Self::member(id))
    }

    /// Timing for a write that makes the key expire at `expires_at` (a refresh is always due),
    /// by this process's clock; from one second to ten years from now.
    fn timing(&self, expires_at: SystemTime) -> Timing {
        let ttl = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .clamp(Duration::from_secs(1), crate::config::MAX_EXPIRY);
        Timing {
            idle_ms: ttl.as_millis() as u64,
            touch_ms: 0,
            absolute_ms: 0,
            ..self.mgr.inner.timing
        }
    }

    /// A plain read: it never moves the TTL.
    async fn read(&self, key: &str) -> Result<Option<HashMap<String, Vec<u8>>>> {
        let t = Timing {
            touch_ms: u64::MAX,
            absolute_ms: 0,
            ..self.mgr.inner.timing
        };
        match self.mgr.inner.store.load(key, t, true, false).await? {
            Load::Found(l) => Ok(Some(l.fields)),
            Load::Gone | Load::Moved => Ok(None),
        }
    }

    /// The session under `id`, or `None` when there is no live session there.
    pub async fn load(&self, id: &str) -> Result<Option<StoredRecord>> {
        let Some(fields) = self.read(&self.key(id)).await? else {
            return Ok(None);
        };
        let expires_at = fields
            .get(fields::EXPIRES_AT)
            .and_then(|v| super::time_of_ms(std::str::from_utf8(v).ok()?));
        let mut out = HashMap::new();
        for (name, raw) in fields {
            if !is_user_field(&name) {
                continue;
            }
            let v = codec::decode_value(&raw).map_err(|e| Error::Decode {
                field: name.clone(),
                source: std::sync::Arc::new(e),
            })?;
            out.insert(name, v);
        }
        Ok(Some(StoredRecord {
            data: out,
            expires_at,
        }))
    }

    /// Creates the session under `id` with `data`, belonging to `user_id` (which adds it to
    /// that user's index, and ends the sessions beyond
    /// [`max_sessions_per_user`](crate::SessionConfigBuilder::max_sessions_per_user), those
    /// whose index entry was refreshed least recently first), expiring at `expires_at` (at most
    /// ten years away). `false` when a session with that id exists already (nothing written:
    /// the caller picks another id).
    pub async fn create(
        &self,
        id: &str,
        data: &HashMap<String, Value>,
        user_id: Option<&str>,
        expires_at: SystemTime,
    ) -> Result<bool> {
        let (set, _) = self.delta(&HashMap::new(), data, None, user_id, expires_at)?;
        let member = Self::member(id);
        let key = self.key(id);
        let t = self.timing(expires_at);
        let victims = self.index(user_id, &member, t).await?;
        let pairs: Vec<(&str, &str)> = set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = self
            .mgr
            .inner
            .store
            .create(&key, &pairs, 0, &[], &[], 0, t)
            .await;
        let created = match r? {
            WriteResult::Written { .. } => true,
            _ => {
                // The id is taken: the index entry added above is that session's own if it
                // belongs to the same user (then it stays), else it goes.
                let owner = self.read(&key).await?.and_then(|f| user_of(&f));
                if owner.as_deref() != user_id {
                    self.unindex(user_id, &member).await;
                }
                return Ok(false);
            }
        };
        self.evict(user_id, victims).await;
        Ok(created)
    }

    /// Replaces the session's values with `data`: it reads the session, then writes only the
    /// fields whose value differs and deletes those `data` no longer has (two round trips,
    /// not atomic: as with tower-sessions' own stores, the last save wins field by field). It
    /// sets its user (moving it between user indexes if
    /// that changed) and its expiry. `false` when there is no live session under `id` any more
    /// (it was deleted, revoked or expired meanwhile): nothing is written, so a late save
    /// never brings a session back.
    pub async fn save(
        &self,
        id: &str,
        data: &HashMap<String, Value>,
        user_id: Option<&str>,
        expires_at: SystemTime,
    ) -> Result<bool> {
        let key = self.key(id);
        let Some(stored) = self.read(&key).await? else {
            return Ok(false);
        };
        let old_user = user_of(&stored);
        let (set, del) = self.delta(&stored, data, old_user.as_deref(), user_id, expires_at)?;
        let member = Self::member(id);
        let t = self.timing(expires_at);
        let victims = self.index(user_id, &member, t).await?;
        let op = WriteOp {
            mode: Mode::Update,
            set: set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            del: del.iter().map(String::as_str).collect(),
            incr: None,
            max_fields: 0,
            not_after_ms: 0,
            expire: Vec::new(),
            records: Vec::new(),
        };
        // On an error the write may have landed: no index entry is removed (a stale one is only
        // a candidate, and its bound removes it).
        let written = matches!(
            self.mgr.inner.store.write(&key, &op, t).await?,
            WriteResult::Written { .. }
        );
        if !written {
            // Ended between the read and the write: the entry the index add just refreshed or
            // made points at nothing, and must not count toward the device limit.
            self.unindex(user_id, &member).await;
            return Ok(false);
        }
        if old_user.as_deref() != user_id {
            self.unindex(old_user.as_deref(), &member).await;
        }
        self.evict(user_id, victims).await;
        Ok(true)
    }

    /// Deletes the session under `id` (and its entry in its user's index); whether there was
    /// one.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        let key = self.key(id);
        let user = match self.read(&key).await? {
            Some(fields) => user_of(&fields),
            None => None,
        };
        let existed = self.mgr.end_key(&key).await?;
        self.unindex(user.as_deref(), &Self::member(id)).await;
        Ok(existed)
    }

    /// Takes a session another store wrote under a plain string key: its value, deleted in
    /// the same step (like `GETDEL`, but refused once past its deadline, so a take-over that
    /// waited in a paused server's socket never runs more than 250 ms after its caller gave
    /// up), so of several instances taking over the same session exactly one gets it. `None`
    /// when there is none (always, on the memory store). Only for keys that are not tessera's own (sessions,
    /// indexes, events, in this namespace): others are [`Error::Unsupported`].
    pub async fn take_legacy(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_legacy(&self.mgr.inner.config, key)?;
        self.mgr.inner.store.take_bytes(key).await
    }

    /// Puts back what [`take_legacy`](Self::take_legacy) took, when it could not be written
    /// in tessera's layout (the store failed in between): the key is written again, if nothing
    /// wrote it meanwhile, to expire after `ttl`, so the user is not logged out by a failed
    /// take-over.
    pub async fn put_back_legacy(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        check_legacy(&self.mgr.inner.config, key)?;
        self.mgr
            .inner
            .store
            .put_back_bytes(key, value, ttl.as_millis().min(u64::MAX as u128) as u64)
            .await
    }

    /// Deletes a session another store wrote under a plain string key (see
    /// [`take_legacy`](Self::take_legacy)); whether there was one.
    pub async fn delete_legacy(&self, key: &str) -> Result<bool> {
        check_legacy(&self.mgr.inner.config, key)?;
        self.mgr.inner.store.delete(key).await
    }

    /// Checks `data` as [`create`](Self::create) and [`save`](Self::save) would (field names,
    /// sizes, the user id), without writing: for a caller that must know before it commits to
    /// a record it cannot put back.
    pub fn check(&self, data: &HashMap<String, Value>, user_id: Option<&str>) -> Result<()> {
        self.delta(&HashMap::new(), data, None, user_id, SystemTime::now())
            .map(|_| ())
    }

    /// Checks `new` against the limits and turns it into the writes and deletes that make
    /// `old` (a stored hash) hold it, the user field included.
    fn delta(
        &self,
        old: &HashMap<String, Vec<u8>>,
        new: &HashMap<String, Value>,
        old_user: Option<&str>,
        user_id: Option<&str>,
        expires_at: SystemTime,
    ) -> Result<Delta> {
        let limits = self.mgr.inner.config.limits;
        if new.len() > limits.max_fields {
            return Err(Error::TooLarge {
                what: "fields in one session",
                limit: limits.max_fields,
            });
        }
        let mut set = Vec::new();
        for (name, v) in new {
            check_field(name)?;
            check_field_name_len(name)?;
            let enc = codec::encode_value(v);
            if enc.len() > limits.max_value_bytes {
                return Err(Error::TooLarge {
                    what: "bytes in one value",
                    limit: limits.max_value_bytes,
                });
            }
            if old.get(name).map(Vec::as_slice) != Some(enc.as_bytes()) {
                set.push((name.clone(), enc));
            }
        }
        let mut del: Vec<String> = old
            .keys()
            .filter(|k| is_user_field(k) && !new.contains_key(*k))
            .cloned()
            .collect();
        if let Some(u) = user_id {
            super::devices::check_user_id(u)?;
        }
        match (old_user, user_id) {
            (a, Some(u)) if a != Some(u) => set.push((fields::USER.to_string(), u.to_string())),
            (Some(_), None) => del.push(fields::USER.to_string()),
            _ => {}
        }
        let ms = expires_at
            .min(SystemTime::now() + crate::config::MAX_EXPIRY)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string();
        set.push((fields::EXPIRES_AT.to_string(), ms));
        Ok((set, del))
    }

    /// Adds (or refreshes) `member` in `user_id`'s index before the write that makes it hold
    /// the user; the members beyond the device limit, for [`Self::evict`].
    async fn index(&self, user_id: Option<&str>, member: &str, t: Timing) -> Result<Vec<String>> {
        let Some(u) = user_id else {
            return Ok(Vec::new());
        };
        let config = &self.mgr.inner.config;
        self.mgr
            .inner
            .store
            .index_add(
                &config.index_key(u),
                member,
                t.idle_ms.saturating_mul(2),
                config.max_sessions_per_user,
                None,
            )
            .await
    }

    async fn unindex(&self, user_id: Option<&str>, member: &str) {
        let Some(u) = user_id else { return };
        let index = self.mgr.inner.config.index_key(u);
        let members = [member.to_string()];
        if let Err(e) = self.mgr.inner.store.index_remove(&index, &members).await {
            tracing::debug!(error = %e, "could not remove a session from its user's index; its bound removes it");
        }
    }

    async fn evict(&self, user_id: Option<&str>, victims: Vec<String>) {
        let (Some(u), false) = (user_id, victims.is_empty()) else {
            return;
        };
        if let Err(e) = self
            .mgr
            .end_members(u, &victims, super::EventKind::Evicted)
            .await
        {
            tracing::warn!(error = %e, "could not end the sessions beyond the device limit; the next login retries");
        }
    }
}

/// A key another store wrote: never one of tessera's own (sessions, user and field indexes,
/// events), whatever the namespace.
fn check_legacy(config: &crate::SessionConfig, key: &str) -> Result<()> {
    let ns = config.namespace();
    let own = key.starts_with('{')
        || ["session:", "user:", "index:"]
            .iter()
            .any(|p| key.starts_with(&format!("{ns}{p}")));
    if key.is_empty() || key.len() > 512 || own {
        return Err(Error::Unsupported(
            "only another store's session keys (not tessera's own) can be taken over",
        ));
    }
    Ok(())
}
