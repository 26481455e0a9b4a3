//! Sessions whose id and cookie another session framework manages, kept in tessera's layout:
//! [`Records`] (load, create, save the difference, delete, check). What a load returned is in
//! `record_view.rs`; taking over another store's sessions in `takeover.rs`.

use super::devices::handle_of;
use super::record_view::{Loaded, SAVED_LOADS_KEPT};
use super::sealed_fields;
use super::state::{is_user_field, user_of};
use super::{check_field, check_field_name_len, SessionManager};
use crate::codec;
use crate::error::{Error, Result};
use crate::store::{fields, Load, Mode, Timing, WriteOp, WriteResult};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
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
/// a session that was deleted meanwhile (a logout-all from another device wins). A save given
/// what its load returned ([`StoredRecord::loaded`]) writes only the fields this request
/// changed or removed, so two requests of one session that change different fields both keep
/// their change. Protected fields
/// ([`protected_field`](crate::SessionConfigBuilder::protected_field)) are encrypted as
/// [`Session`](crate::Session) encrypts them: the same values, readable by either path.
///
/// Device lists show these sessions as they show tessera's own: the user agent and address of
/// the request that logged in (give them with [`with_client`](Records::with_client)), and a
/// last-seen time that a [`load`](Records::load) moves once per touch interval.
///
/// Not covered: lifecycle events, field indexes and the activity trail are for sessions
/// tessera's own middleware runs.
///
/// ```
/// # async fn demo() -> tessera_core::Result<()> {
/// # use tessera_core::adapter::ManagerExt as _;
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
    pub(super) mgr: SessionManager,
    /// The client of the request these calls serve, recorded when a session gets its user.
    client: Option<super::ClientInfo>,
}

/// A session as [`Records::load`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// Its values.
    pub data: HashMap<String, Value>,
    /// When it expires, as last written (`None` for a session tessera's own middleware wrote).
    pub expires_at: Option<SystemTime>,
    /// What this load returned, in brief: give it back to [`Records::save`] so that the save
    /// writes only what changed since.
    pub loaded: Loaded,
}

/// Field writes and deletes that turn `old` (user fields as stored) into `new`.
type Delta = (Vec<(String, String)>, Vec<String>);

impl SessionManager {
    /// Sessions whose id and cookie another framework manages: see [`Records`].
    pub(crate) fn records(&self) -> Records {
        Records {
            mgr: self.clone(),
            client: None,
        }
    }
}

impl Records {
    /// These calls on behalf of a request of `client`: a [`create`](Self::create) or
    /// [`save`](Self::save) that gives a session its user (a login) records the client's user
    /// agent and address for device lists, as a login through tessera's middleware does.
    ///
    /// ```
    /// # async fn demo() -> tessera_core::Result<()> {
    /// # use tessera_core::adapter::{ClientInfo, ManagerExt as _};
    /// # use std::{collections::HashMap, time::{Duration, SystemTime}};
    /// # use tessera_core::{SessionConfig, SessionManager, Store};
    /// let manager = SessionManager::new(Store::memory(), SessionConfig::builder(tessera_core::Key::generate()).build()?);
    /// let client = ClientInfo::new(Some(b"Firefox/140".as_slice()), Some("203.0.113.7".parse().unwrap()));
    /// let records = manager.records().with_client(client);
    /// let expires = SystemTime::now() + Duration::from_secs(3600);
    /// records.create("an id with 128 bits of entropy", &HashMap::new(), Some("ada"), expires).await?;
    /// let device = &manager.list_sessions("ada").await?[0];
    /// assert_eq!(device.user_agent.as_deref(), Some("Firefox/140"));
    /// assert_eq!(device.client_addr.as_deref(), Some("203.0.113.7"));
    /// # Ok(()) }
    /// ```
    pub fn with_client(&self, client: super::ClientInfo) -> Records {
        Records {
            mgr: self.mgr.clone(),
            client: Some(client),
        }
    }

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
            Load::Found(l) => Ok(Some(std::sync::Arc::unwrap_or_clone(l.fields))),
            Load::Gone | Load::Moved => Ok(None),
        }
    }

    /// The session under `id`, or `None` when there is no live session there.
    /// Protected fields are decrypted; one that does not is [`Error::Undecryptable`] (or
    /// absent, with
    /// [`undecryptable_as_absent`](crate::SessionConfigBuilder::undecryptable_as_absent)).
    ///
    /// Once per [touch interval](crate::SessionConfigBuilder::touch_interval) a load also
    /// moves the session's last-seen time (device lists): one write of that field only, which
    /// keeps the expiry the other framework set and never brings back a session deleted
    /// meanwhile.
    pub async fn load(&self, id: &str) -> Result<Option<StoredRecord>> {
        let Some(fields) = self.read_plain(id).await? else {
            return Ok(None);
        };
        let expires_at = fields
            .get(fields::EXPIRES_AT)
            .and_then(|v| super::time_of_ms(std::str::from_utf8(v).ok()?));
        if expires_at.is_some() {
            self.touch_if_due(id, &fields);
        }
        let mut out = HashMap::new();
        let mut loaded = BTreeMap::new();
        for (name, raw) in fields {
            if !is_user_field(&name) {
                continue;
            }
            let v = codec::decode_value(&raw).map_err(|e| Error::Decode {
                field: name.clone(),
                source: std::sync::Arc::new(e),
            })?;
            loaded.insert(name.clone(), Loaded::digest(&codec::encode_value(&v)));
            out.insert(name, v);
        }
        Ok(Some(StoredRecord {
            data: out,
            expires_at,
            loaded: Loaded::new(loaded),
        }))
    }

    /// Moves the last-seen time of the session under `id` (whose hash is `fields`) when it is
    /// a touch interval old: a write of no field, which the write script stamps. It keeps the
    /// TTL (a record's expiry moves only with a write that sets it: a stamp racing with a save
    /// never puts back an older one), never brings back a session gone meanwhile (the write
    /// refuses), and runs in the background, best effort: a store that refuses writes fails
    /// no read, and the next load tries again.
    fn touch_if_due(&self, id: &str, fields: &HashMap<String, Vec<u8>>) {
        let touch = self.mgr.inner.config.touch_interval.as_millis() as u64;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let seen = fields::ms(fields, fields::TOUCHED).unwrap_or(0);
        if now.saturating_sub(seen) < touch {
            return;
        }
        let key = self.key(id);
        let store = self.mgr.inner.store.clone();
        let t = Timing {
            touch_ms: 0,
            absolute_ms: 0,
            ..self.mgr.inner.timing
        };
        tokio::spawn(async move {
            let op = WriteOp {
                mode: Mode::Update,
                set: Vec::new(),
                del: Vec::new(),
                incr: None,
                max_fields: 0,
                not_after_ms: 0,
                expire: Vec::new(),
                records: Vec::new(),
            };
            if let Err(e) = store.write(&key, &op, t).await {
                tracing::debug!(error = %e, "last-seen stamp of a record not written (the next load tries again)");
            }
        });
    }

    /// The stored hash under `id`, protected fields decrypted.
    async fn read_plain(&self, id: &str) -> Result<Option<HashMap<String, Vec<u8>>>> {
        let Some(mut fields) = self.read(&self.key(id)).await? else {
            return Ok(None);
        };
        let config = &self.mgr.inner.config;
        if let Some((field, reason)) = sealed_fields::unseal(config, &Self::member(id), &mut fields)
            .into_iter()
            .next()
        {
            return Err(Error::Undecryptable {
                field,
                reason: reason.to_string(),
            });
        }
        Ok(Some(fields))
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
        let member = Self::member(id);
        let (set, _) = self.delta(
            &member,
            &HashMap::new(),
            None,
            data,
            None,
            user_id,
            expires_at,
        )?;
        let key = self.key(id);
        let t = self.timing(expires_at);
        let victims = self.index(user_id, &member, t).await?;
        let pairs: Vec<(&str, &str)> = set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = self
            .mgr
            .inner
            .store
            .create(&key, &crate::store::NewSession::fields(&pairs), t)
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
        crate::metrics::created();
        self.evict(user_id, victims).await;
        Ok(created)
    }

    /// Saves `data` as the session's values. With `loaded` (what the load of this request
    /// returned, [`StoredRecord::loaded`]) it writes the difference from what was loaded: the
    /// fields whose value this request changed, and deletes of the fields it removed; a field
    /// another request added or changed since, and this one did not touch, stays as that
    /// request wrote it (a field both changed: the last save wins). Without `loaded` it
    /// replaces every value (the fields `data` does not hold are deleted, whoever wrote them).
    /// Either way one read and one write, not atomic together. It sets its user (moving it
    /// between user indexes if that changed) and its expiry. `false` when there is no live
    /// session under `id` any more (it was deleted, revoked or expired meanwhile): nothing is
    /// written, so a late save never brings a session back.
    pub async fn save(
        &self,
        id: &str,
        data: &HashMap<String, Value>,
        loaded: Option<&Loaded>,
        user_id: Option<&str>,
        expires_at: SystemTime,
    ) -> Result<bool> {
        let key = self.key(id);
        let Some(mut stored) = self.read(&key).await? else {
            return Ok(false);
        };
        let old_user = user_of(&stored);
        let member = Self::member(id);
        // A view already given to a save (a cache's copy of the record) no longer lists what
        // the saves since added: that save replaces every value, as the copy holds them.
        let nonce = loaded.map(|l| l.nonce.as_str()).filter(|n| !n.is_empty());
        let (stale, remember) = {
            let saved: Vec<&str> = stored
                .get(fields::SAVED_LOADS)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(|v| v.split(' ').filter(|n| !n.is_empty()).collect())
                .unwrap_or_default();
            let remember = nonce.map(|n| {
                std::iter::once(n)
                    .chain(saved.iter().copied().filter(|s| *s != n))
                    .take(SAVED_LOADS_KEPT)
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            (nonce.is_some_and(|n| saved.contains(&n)), remember)
        };
        let loaded = if stale { None } else { loaded };
        if loaded.is_none() {
            // Compared in plaintext; a value that does not decrypt counts as changed (it is
            // written again if `data` holds it).
            sealed_fields::unseal(&self.mgr.inner.config, &member, &mut stored);
        }
        let (set, del) = self.delta(
            &member,
            &stored,
            loaded,
            data,
            old_user.as_deref(),
            user_id,
            expires_at,
        )?;
        let mut set = set;
        if let Some(r) = remember {
            set.push((fields::SAVED_LOADS.to_string(), r));
        }
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
        if existed {
            crate::metrics::ended(super::EventKind::Logout, 1);
        }
        self.unindex(user.as_deref(), &Self::member(id)).await;
        Ok(existed)
    }

    /// Checks `data` as [`create`](Self::create) and [`save`](Self::save) would (field names,
    /// sizes, the user id), without writing: for a caller that must know before it commits to
    /// a record it cannot put back.
    pub fn check(&self, data: &HashMap<String, Value>, user_id: Option<&str>) -> Result<()> {
        self.delta(
            "",
            &HashMap::new(),
            None,
            data,
            None,
            user_id,
            SystemTime::now(),
        )
        .map(|_| ())
    }

    /// Checks `new` against the limits and turns it into the writes and deletes that make
    /// the session stored under `member` hold it, the user field included: relative to
    /// `loaded` when given, else to `old` (the stored hash, protected fields decrypted).
    /// Protected fields are encrypted for `member`, as the Session path encrypts them.
    #[allow(clippy::too_many_arguments)]
    fn delta(
        &self,
        member: &str,
        old: &HashMap<String, Vec<u8>>,
        loaded: Option<&Loaded>,
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
            let unchanged = match loaded {
                Some(l) => l.unchanged(name, &enc),
                None => old.get(name).map(Vec::as_slice) == Some(enc.as_bytes()),
            };
            if !unchanged {
                let config = &self.mgr.inner.config;
                let stored =
                    sealed_fields::seal(config.field_keys.as_ref(), config, member, name, &enc);
                set.push((name.clone(), stored.into_owned()));
            }
        }
        let removed: Vec<&String> = match loaded {
            Some(l) => l.digests.keys().collect(),
            None => old.keys().collect(),
        };
        let mut del: Vec<String> = removed
            .into_iter()
            .filter(|k| is_user_field(k) && !new.contains_key(*k))
            .cloned()
            .collect();
        if let Some(u) = user_id {
            super::devices::check_user_id(u)?;
        }
        match (old_user, user_id) {
            (a, Some(u)) if a != Some(u) => {
                set.push((fields::USER.to_string(), u.to_string()));
                // A login: the device it came from, as tessera's own login records it.
                if let Some(c) = &self.client {
                    let meta = [
                        (fields::USER_AGENT, &c.user_agent),
                        (fields::CLIENT_ADDR, &c.client_addr),
                    ];
                    for (name, v) in meta {
                        match v {
                            Some(v) => set.push((name.to_string(), v.clone())),
                            None => del.push(name.to_string()),
                        }
                    }
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FieldKey, Key, SessionConfig, Store};
    use serde_json::json;

    fn records(
        config: impl FnOnce(crate::SessionConfigBuilder) -> crate::SessionConfigBuilder,
    ) -> Records {
        let config = config(SessionConfig::builder(Key::generate()))
            .build()
            .unwrap();
        SessionManager::new(Store::memory(), config).records()
    }

    fn later() -> SystemTime {
        SystemTime::now() + Duration::from_secs(600)
    }

    #[tokio::test]
    async fn a_save_writes_the_difference_from_what_was_loaded() {
        let r = records(|c| c);
        let id = "an id of another framework";
        let start = HashMap::from([
            ("start".to_string(), json!(1)),
            ("gone".to_string(), json!(2)),
        ]);
        assert!(r.create(id, &start, None, later()).await.unwrap());
        let slow = r.load(id).await.unwrap().unwrap();
        let fast = r.load(id).await.unwrap().unwrap();
        // The fast request sets `b`; the slow one, with its older view, sets `a` and removes
        // `gone`.
        let mut data = fast.data.clone();
        data.insert("b".into(), json!(true));
        assert!(r
            .save(id, &data, Some(&fast.loaded), None, later())
            .await
            .unwrap());
        let mut data = slow.data.clone();
        data.insert("a".into(), json!(true));
        data.remove("gone");
        assert!(r
            .save(id, &data, Some(&slow.loaded), None, later())
            .await
            .unwrap());
        assert_eq!(
            r.load(id).await.unwrap().unwrap().data,
            HashMap::from([
                ("start".to_string(), json!(1)),
                ("a".to_string(), json!(true)),
                ("b".to_string(), json!(true)),
            ])
        );
        // Without what was loaded, a save replaces every value.
        let only = HashMap::from([("a".to_string(), json!(false))]);
        assert!(r.save(id, &only, None, None, later()).await.unwrap());
        assert_eq!(r.load(id).await.unwrap().unwrap().data, only);
        // What was loaded travels as JSON.
        let l = r.load(id).await.unwrap().unwrap().loaded;
        assert_eq!(Loaded::from_value(&l.to_value()), Some(l));
        assert_eq!(Loaded::from_value(&json!({"a": 1})), None);
    }

    #[tokio::test]
    async fn a_view_saved_twice_replaces_every_value() {
        let r = records(|c| c);
        let id = "an id of another framework";
        let start = HashMap::from([("start".to_string(), json!(1))]);
        assert!(r.create(id, &start, None, later()).await.unwrap());
        // A cache keeps the record of this load and hands it to every later request.
        let view = r.load(id).await.unwrap().unwrap().loaded;
        let mut data = start.clone();
        data.insert("flash".into(), json!("hi"));
        assert!(r.save(id, &data, Some(&view), None, later()).await.unwrap());
        // The next request removes what the previous one added, with the same view.
        data.remove("flash");
        assert!(r.save(id, &data, Some(&view), None, later()).await.unwrap());
        assert_eq!(r.load(id).await.unwrap().unwrap().data, start);
        // A fresh view still leaves alone what it did not load.
        let fresh = r.load(id).await.unwrap().unwrap().loaded;
        let other = r.load(id).await.unwrap().unwrap();
        let mut added = other.data.clone();
        added.insert("b".into(), json!(2));
        assert!(r
            .save(id, &added, Some(&other.loaded), None, later())
            .await
            .unwrap());
        assert!(r
            .save(id, &start, Some(&fresh), None, later())
            .await
            .unwrap());
        assert_eq!(r.load(id).await.unwrap().unwrap().data, added);
    }

    #[tokio::test]
    async fn protected_fields_are_sealed_and_opened() {
        let r = records(|c| c.protected_field("token").field_key(FieldKey::generate()));
        let id = "an id of another framework";
        let data = HashMap::from([
            ("token".to_string(), json!("s3cret")),
            ("n".to_string(), json!(1)),
        ]);
        assert!(r.create(id, &data, None, later()).await.unwrap());
        let raw = r.read(&r.key(id)).await.unwrap().unwrap();
        let stored = String::from_utf8(raw["token"].clone()).unwrap();
        assert!(
            stored.starts_with("enc:v1:") && !stored.contains("s3cret"),
            "{stored}"
        );
        assert_eq!(raw["n"], b"1");
        let loaded = r.load(id).await.unwrap().unwrap();
        assert_eq!(loaded.data, data);
        // A save re-encrypts a changed value, for this session's key.
        let mut next = data.clone();
        next.insert("token".into(), json!("other"));
        assert!(r
            .save(id, &next, Some(&loaded.loaded), None, later())
            .await
            .unwrap());
        let raw = r.read(&r.key(id)).await.unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&raw["token"]).contains("other"));
        assert_eq!(r.load(id).await.unwrap().unwrap().data, next);
    }
}
