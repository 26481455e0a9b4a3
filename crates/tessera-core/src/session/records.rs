//! Sessions whose id and cookie another session framework manages, kept in tessera's layout.

use super::devices::handle_of;
use super::protected;
use super::state::{is_user_field, user_of};
use super::{check_field, check_field_name_len, SessionManager};
use crate::codec;
use crate::error::{Error, Result};
use crate::store::{fields, Load, Mode, Timing, WriteOp, WriteResult};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
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
/// Not covered: lifecycle events, field indexes and the activity trail are for sessions
/// tessera's own middleware runs; device lists show no user agent or address for these.
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
    mgr: SessionManager,
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

/// What a [`Records::load`] returned, in brief: a digest of each field's value (64 bits of
/// SHA-256 of its stored text, never the value), and a random name for this load.
/// [`Records::save`] given it writes the fields whose value differs from the digest and
/// deletes those it lists that the new values no longer hold; fields it does not list (added
/// by another request since) are left alone. It holds for one save: the session remembers the
/// last loads whose view a save used, and a second save with the same view (a copy of the
/// record kept by a cache, such as tower-sessions' `CachingSessionStore`, given to every later
/// request) replaces every value instead, since that view no longer says what this session's
/// own earlier saves added. Carried between the load and the save of one request as a JSON
/// value ([`to_value`](Self::to_value), [`from_value`](Self::from_value)), for a framework
/// that gives the store nothing but the record back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    digests: BTreeMap<String, String>,
    /// Names this load (base64url of 96 random bits); empty for a `Default` one, whose
    /// reuse is not detected.
    nonce: String,
}

impl Loaded {
    fn digest(encoded: &str) -> String {
        use base64::Engine as _;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"tessera.loaded\0");
        ctx.update(encoded.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ctx.finish().as_ref()[..8])
    }

    fn new(digests: BTreeMap<String, String>) -> Self {
        use base64::Engine as _;
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(crate::id::random_bytes::<12>());
        Loaded { digests, nonce }
    }

    /// Whether `encoded` (a value's stored text) is what `field` held when loaded.
    fn unchanged(&self, field: &str, encoded: &str) -> bool {
        self.digests
            .get(field)
            .is_some_and(|d| *d == Self::digest(encoded))
    }

    /// As a JSON object: `{"n": name of the load, "d": {field name: digest}}`.
    pub fn to_value(&self) -> Value {
        let digests = self
            .digests
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        serde_json::json!({"n": self.nonce, "d": Value::Object(digests)})
    }

    /// From [`to_value`](Self::to_value)'s output; `None` for anything else.
    pub fn from_value(v: &Value) -> Option<Self> {
        let nonce = v.get("n")?.as_str()?;
        // A name that could not have been written to the session's list of saved loads.
        if nonce.len() > 64
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let mut digests = BTreeMap::new();
        for (k, v) in v.get("d")?.as_object()? {
            digests.insert(k.clone(), v.as_str()?.to_string());
        }
        Some(Loaded {
            digests,
            nonce: nonce.to_string(),
        })
    }
}

/// How many loads' names a session remembers as used by a save ([`fields::SAVED_LOADS`]):
/// as many copies of one record as caches hold it (one per instance) are told stale.
const SAVED_LOADS_KEPT: usize = 16;

/// How a [`Records::take_over`] ended.
#[derive(Debug)]
pub enum TakeOver<T> {
    /// No session of the other store under that key: none, or a value that is not one of its
    /// records (left alone: nothing is deleted).
    Nothing,
    /// Its user logged out everywhere after the switch ([`SessionManager::logout_all`]): not
    /// taken over, and the old key deleted.
    Refused,
    /// Written in tessera's layout (or found written there by another instance), and the old
    /// key deleted.
    Taken(T),
    /// Written, but its user logged out everywhere meanwhile: the caller ends what it wrote.
    EndedMeanwhile(T),
    /// Written, but the old key no longer held the value read (ended, or taken over by another
    /// instance, meanwhile): left as it is; the caller decides whether what it wrote stays.
    Raced(T),
}

/// What the write step of a [`Records::take_over`] did.
#[derive(Debug)]
pub enum Wrote<T> {
    /// Wrote the session anew.
    New(T),
    /// Found it written by another instance taking over the same session (`None`: and ended
    /// since): the old key is that instance's to delete.
    Existing(Option<T>),
}

/// How long a logout-all refuses the take-over of its user's sessions of another store: longer
/// than those stores' sessions live (tower-sessions: two weeks by default; actix-session: a day
/// by default) and than any usual "remember me".
pub const LEGACY_REFUSAL: Duration = Duration::from_secs(400 * 86_400);

/// Field writes and deletes that turn `old` (user fields as stored) into `new`.
type Delta = (Vec<(String, String)>, Vec<String>);

impl SessionManager {
    /// Sessions whose id and cookie another framework manages: see [`Records`].
    pub(crate) fn records(&self) -> Records {
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
    /// Protected fields are decrypted; one that does not is [`Error::Undecryptable`] (or
    /// absent, with
    /// [`undecryptable_as_absent`](crate::SessionConfigBuilder::undecryptable_as_absent)).
    pub async fn load(&self, id: &str) -> Result<Option<StoredRecord>> {
        let Some(fields) = self.read_plain(id).await? else {
            return Ok(None);
        };
        let expires_at = fields
            .get(fields::EXPIRES_AT)
            .and_then(|v| super::time_of_ms(std::str::from_utf8(v).ok()?));
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

    /// The stored hash under `id`, protected fields decrypted.
    async fn read_plain(&self, id: &str) -> Result<Option<HashMap<String, Vec<u8>>>> {
        let Some(mut fields) = self.read(&self.key(id)).await? else {
            return Ok(None);
        };
        let config = &self.mgr.inner.config;
        if let Some((field, reason)) = protected::unseal(config, &Self::member(id), &mut fields)
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
            protected::unseal(&self.mgr.inner.config, &member, &mut stored);
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
        self.unindex(user.as_deref(), &Self::member(id)).await;
        Ok(existed)
    }

    /// Says that this app takes over sessions of another store (what
    /// `TesseraStore::migrate_redis_store` and `SessionMiddleware::import_actix_session` call):
    /// from now on [`SessionManager::logout_all`] (and `logout_others`) of this manager and its
    /// clones first marks the user, so that the sessions of that store not taken over yet are
    /// refused (see [`take_over`](Self::take_over)). Every process that ends a user's sessions
    /// while take-overs may happen must call it (an admin tool with a manager of its own
    /// included).
    pub fn takes_over_sessions(&self) {
        self.mgr
            .inner
            .takes_over
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes over a session another store wrote under the plain string key `key`, so that of
    /// several instances exactly one writes it, a failure logs nobody out, and nothing is
    /// deleted that is not that store's session. The steps, in this order:
    ///
    /// 1. `GET key` (deletes nothing); `decode` says whether the value is a record of that
    ///    store (and that its id matches the one asked for), with its values and user. Not one:
    ///    [`TakeOver::Nothing`], the key left alone.
    /// 2. Its user logged out everywhere since the switch ([`SessionManager::logout_all`]
    ///    leaves a mark that lasts [`LEGACY_REFUSAL`], once
    ///    [`takes_over_sessions`](Self::takes_over_sessions) was called): [`TakeOver::Refused`],
    ///    the old key deleted. A record of those stores holds no time it was logged in at, so every session
    ///    of that user is refused while the mark lasts.
    /// 3. `write` writes it in tessera's layout. An error: returned, and the old key is as it
    ///    was, for the next request to take over.
    /// 4. Written anew: the logout-all mark is read again (a logout-all that started before
    ///    the write may not have seen it: [`TakeOver::EndedMeanwhile`]), then the old key is
    ///    deleted only if it still holds the value read (one compare-and-delete step; not:
    ///    [`TakeOver::Raced`]).
    ///
    /// With a non-zero `grace` the old key is not deleted in step 4 but left to expire within
    /// that time: for a take-over that writes the session under a new id (which the browser's
    /// other requests cannot find), the requests it sent with the old cookie before the first
    /// one's answer are taken over too, each as a session of its own, instead of being
    /// answered as logged out (a replay of the old cookie within the grace is taken over as
    /// well). A refused or ended one is deleted at once, whatever the grace.
    ///
    /// Always [`TakeOver::Nothing`] on the memory store (it holds no other store's keys).
    /// Only for keys that are not tessera's own (sessions, indexes, events, in this
    /// namespace): others are [`Error::Unsupported`].
    pub async fn take_over<D, T, Fut>(
        &self,
        key: &str,
        grace: Duration,
        decode: impl FnOnce(&[u8]) -> Option<(D, Option<String>)>,
        write: impl FnOnce(D, Option<String>) -> Fut,
    ) -> Result<TakeOver<T>>
    where
        Fut: Future<Output = Result<Wrote<T>>>,
    {
        check_legacy(&self.mgr.inner.config, key)?;
        let grace_ms = grace.as_millis().min(u64::MAX as u128) as u64;
        let store = &self.mgr.inner.store;
        let Some(raw) = store.get_bytes(key).await? else {
            return Ok(TakeOver::Nothing);
        };
        let Some((data, user)) = decode(&raw) else {
            return Ok(TakeOver::Nothing);
        };
        if self.ended_since_switch(user.as_deref()).await? {
            store.retire_bytes(key, &raw, 0).await?;
            return Ok(TakeOver::Refused);
        }
        let written = match write(data, user.clone()).await? {
            Wrote::New(t) => t,
            Wrote::Existing(Some(t)) => return Ok(TakeOver::Taken(t)),
            Wrote::Existing(None) => return Ok(TakeOver::Nothing),
        };
        if self.ended_since_switch(user.as_deref()).await? {
            store.retire_bytes(key, &raw, 0).await?;
            return Ok(TakeOver::EndedMeanwhile(written));
        }
        match store.retire_bytes(key, &raw, grace_ms).await {
            Ok(true) => Ok(TakeOver::Taken(written)),
            Ok(false) => Ok(TakeOver::Raced(written)),
            Err(e) => {
                // Taken over; the old key may linger until its own expiry (a logout-all still
                // refuses it, and the copy in tessera's layout is found first).
                tracing::warn!(error = %e, "a taken-over session's old key could not be deleted");
                Ok(TakeOver::Taken(written))
            }
        }
    }

    /// Deletes the session another store wrote under the plain string key `key` (see
    /// [`take_over`](Self::take_over)) if `is_record` says its value is one of that store's
    /// records: whether it did. Any other value is left alone.
    pub async fn delete_legacy(
        &self,
        key: &str,
        is_record: impl FnOnce(&[u8]) -> bool,
    ) -> Result<bool> {
        check_legacy(&self.mgr.inner.config, key)?;
        let store = &self.mgr.inner.store;
        match store.get_bytes(key).await? {
            Some(raw) if is_record(&raw) => store.retire_bytes(key, &raw, 0).await,
            _ => Ok(false),
        }
    }

    /// Whether `user` logged out everywhere within the last [`LEGACY_REFUSAL`] (one `GET` of
    /// a key of its own: on a Cluster, apart from any other key).
    async fn ended_since_switch(&self, user: Option<&str>) -> Result<bool> {
        let Some(u) = user else { return Ok(false) };
        let key = ended_key(&self.mgr.inner.config, u);
        Ok(self.mgr.inner.store.get_bytes(&key).await?.is_some())
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
                    protected::seal(config.field_keys.as_ref(), config, member, name, &enc);
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

/// `[namespace]user:<id>:ended_before`: the time of `user`'s last logout-all, while sessions
/// of another store are refused a take-over (see [`Records::take_over`]).
pub(super) fn ended_key(config: &crate::SessionConfig, user: &str) -> String {
    format!(
        "{}user:{}:ended_before",
        config.namespace(),
        crate::config::user_key_part(user)
    )
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
