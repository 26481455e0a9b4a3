//! Login and id rotation: binding a user, starting anew for another user, and moving a
//! session to a fresh id without losing a write that races it (the freeze protocol, see
//! ARCHITECTURE.md).

use super::devices::check_user_id;
use super::state::{is_user_field, user_of, CookieAction, State, Status};
use super::{tag, Session};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::store::{fields, Freeze, Release, WriteResult};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tracing::Instrument as _;

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
                    st.data.insert(f.into(), v.clone().into_bytes());
                    st.dirty.insert(f.into(), Some(v));
                }
                None if st.data.remove(f).is_some() => {
                    st.dirty.insert(f.into(), None);
                }
                None => {}
            }
        }
        // Boxed: the rotation's future is large, and this keeps callers' futures small.
        let res =
            Box::pin(self.cycle_locked(&mut st, previous_user, super::EventKind::Login)).await;
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
        st.data = pending
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?.into_bytes())))
            .collect();
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
    pub async fn cycle_id(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let user = user_of(&st.data);
        Box::pin(self.cycle_locked(&mut st, user, super::EventKind::Rotated)).await
    }

    /// Moves the session to a fresh id. Order, so that a crash or a race between any two
    /// steps leaves nothing unsafe (each step is one single-key command, fine on Redis
    /// Cluster):
    /// 1. at once: add the new member to the user's index (a crash after it leaves a member
    ///    pointing at nothing, which its bound removes later), and freeze the old key while
    ///    reading it (writes to it now answer "moved" instead of landing behind the copy);
    /// 2. write the new session key: what step 1 read plus this request's changes;
    /// 3. retire the old key, only if the freeze still holds: if the key is gone, a
    ///    logout-all or revoke won the race, so the copy is deleted again and the request gets
    ///    `SessionEnded`; if the freeze was broken, the copy is deleted and the old key lives;
    /// 4. remove the old member from the previous user's index; end sessions over the limit.
    ///
    /// Any failure after step 1 removes the new member again and thaws the old key.
    ///
    /// With lifecycle events on, `kind` (login or rotated) is published once the move is made.
    async fn cycle_locked(
        &self,
        st: &mut State,
        previous_user: Option<String>,
        kind: super::EventKind,
    ) -> Result<()> {
        if st.status == Status::Ended {
            return Err(Error::SessionEnded);
        }
        Self::check_carried(st)?;
        let mgr = self.mgr().clone();
        let config = &mgr.inner.config;
        let store = self.store();
        let timing = self.timing_for(st);
        let user = user_of(&st.data);
        let new_id = SessionId::generate();
        let new_member = new_id.storage_key();
        let new_key = mgr.key_of(&new_id);
        let index = user.as_deref().map(|u| config.index_key(u));
        let old = match (st.status, &st.id) {
            (Status::Stored, Some(id)) => Some((id.clone(), mgr.key_of(id))),
            _ => None,
        };
        // What the event says once the move is made.
        let mut moved_event = None;
        Self::settle_index_refresh(st).await;
        // The old member leaves the same index: it must not count toward the device limit.
        let leaving = match (&old, &previous_user) {
            (Some((id, _)), Some(pu)) if Some(pu) == user.as_ref() => Some(id.storage_key()),
            _ => None,
        };
        let span = tracing::debug_span!("tessera.cycle", sid = %tag(st.id.as_ref()), new_sid = %new_id.log_tag());
        // With events on, the new id joins the expiry set before its key can exist (so whoever
        // ends it from then on can claim its end), alongside the index add.
        let track_new = mgr.events_on() && (old.is_some() || user.is_some());
        // A session not stored yet is created under the new id in the same round trip as the
        // index add: the two keys live in different slots and nothing orders them, because
        // the browser gets the cookie only after both succeeded.
        let create_now = old.is_none() && user.is_some();
        let track_batch = || crate::store::events::EventBatch {
            track_pending: vec![(
                new_member.clone(),
                mgr.inner.new_session_ttl(),
                user.clone().unwrap_or_default(),
            )],
            ..Default::default()
        };
        let add = async {
            let index_add = async {
                match &index {
                    Some(ix) => store
                        .index_add(
                            ix,
                            &new_member,
                            mgr.index_bound_ms(),
                            config.max_sessions_per_user,
                            leaving.as_deref(),
                        )
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            };
            let track = async {
                // A created session is tracked by the create step itself, before its key.
                if !track_new || create_now {
                    return Ok(());
                }
                mgr.publish(&track_batch()).await.map(|_| ())
            };
            let (added, tracked) = tokio::join!(index_add, track);
            tracked.and(added)
        };
        let freeze = async {
            match &old {
                Some((_, key)) => store.freeze(key, &new_member, timing).await.map(Some),
                None => Ok(None),
            }
        };
        if old.is_none() {
            st.id = Some(new_id.clone());
        }
        // What a rolled-back create gives back: the request's pending changes (a successful
        // write clears them) and its cookie decision.
        let before_create = create_now.then(|| {
            (
                st.dirty.clone(),
                st.cookie,
                st.expire.clone(),
                st.records.clone(),
                st.data.get(fields::TRAIL).cloned(),
            )
        });
        st.created_by_login = create_now;
        let create = async {
            if !create_now {
                return None;
            }
            // Tracked before its key exists: an end racing this login is claimed.
            if track_new {
                if let Err(e) = mgr.publish(&track_batch()).await {
                    return Some(Err(e));
                }
            }
            Some(self.write_now(st, None).await)
        };
        let (added, frozen, created) =
            Box::pin(async { tokio::join!(add, freeze, create) }.instrument(span)).await;
        let created_here =
            std::mem::take(&mut st.created_by_login) && matches!(created, Some(Ok(_)));
        let undo_member = || async {
            if let Some(ix) = &index {
                if let Err(e) = store
                    .index_remove(ix, std::slice::from_ref(&new_member))
                    .await
                {
                    tracing::debug!(error = %e, "could not remove a failed login's index member; its bound removes it");
                }
            }
            if track_new {
                let batch = crate::store::events::EventBatch {
                    untrack: vec![new_member.clone()],
                    ..Default::default()
                };
                if let Err(e) = mgr.publish(&batch).await {
                    tracing::debug!(error = %e, "could not untrack a failed login's new id; the sweeper drops it");
                }
            }
        };
        let thaw = |key: String, token: String| async move {
            if let Err(e) = store.release(&key, &token, false).await {
                tracing::debug!(error = %e, "could not thaw the old key; its freeze lapses by itself");
            }
        };
        let victims = match added {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => {
                undo_member().await;
                if let (Some((_, key)), Ok(Some(Freeze::Frozen { token, .. }))) = (&old, frozen) {
                    thaw(key.clone(), token).await;
                }
                if let (Some(Ok(_)), Some((dirty, cookie, expire, records, trail))) =
                    (&created, before_create)
                {
                    // Not in the index, so not handed out: the new key goes again, and the
                    // request's changes are pending again (a retried login or a `save` keeps
                    // them).
                    if let Err(e) = store.delete(&new_key).await {
                        tracing::debug!(error = %e, "could not delete a login's new key after its index add failed; it expires by its TTL");
                    }
                    st.status = Status::New;
                    st.id = None;
                    st.dirty = dirty;
                    st.cookie = cookie;
                    st.expire = expire;
                    st.records = records;
                    match trail {
                        Some(t) => st.data.insert(fields::TRAIL.to_string(), t),
                        None => st.data.remove(fields::TRAIL),
                    };
                }
                return Self::failed(st, e);
            }
        };
        if let Some(Err(e)) = created {
            undo_member().await;
            return Err(e);
        }
        if let Some((old_id, old_key)) = old {
            let (token, mut data) = match frozen {
                Ok(Some(Freeze::Frozen { token, fields })) => (token, fields),
                Ok(Some(Freeze::Gone)) | Ok(None) => {
                    undo_member().await;
                    st.mark_ended();
                    return Self::failed(st, Error::SessionEnded);
                }
                Ok(Some(Freeze::Moved)) => {
                    undo_member().await;
                    st.mark_moved();
                    return Self::failed(st, Error::SessionEnded);
                }
                Err(e) => {
                    undo_member().await;
                    return Self::failed(st, e);
                }
            };
            // The copy: the store's current contents plus this request's changes.
            data.remove(fields::MOVING);
            let old_entries = super::index::all_entries(config, &data);
            // Protected values are bound to the storage key: decrypt them for the old one (what
            // does not decrypt is copied as it is, and stays unreadable), encrypt for the new.
            let mut keep_raw = HashMap::new();
            if let Some(keys) = &config.field_keys {
                for field in &config.protected {
                    if let Some(stored) = data.get(field) {
                        match keys.open(field, &old_id.storage_key(), stored) {
                            Ok((plain, _)) => {
                                data.insert(field.clone(), plain);
                            }
                            Err(why) => {
                                keep_raw.insert(field.clone(), why);
                            }
                        }
                    }
                }
            }
            // Nothing past its lifetime is copied.
            if let Some(now) = store.server_now() {
                fields::drop_expired(&mut data, now);
            }
            for (k, v) in &st.dirty {
                keep_raw.remove(k);
                match v {
                    Some(v) => data.insert(k.clone(), v.clone().into_bytes()),
                    None => data.remove(k),
                };
                // A field written in this request has the lifetime it was given here, if any
                // (its new stamp is written with the copy), else none.
                if !k.starts_with(fields::EXPIRES) {
                    data.remove(&format!("{}{k}", fields::EXPIRES));
                }
            }
            let created = fields::ms(&data, fields::CREATED).unwrap_or(0);
            let copy: Vec<(String, String)> = data
                .iter()
                .filter(|(k, _)| k.as_str() != fields::CREATED && k.as_str() != fields::TOUCHED)
                .map(|(k, v)| {
                    let text = String::from_utf8_lossy(v);
                    let stored = if keep_raw.contains_key(k) {
                        text
                    } else {
                        let keys = config.field_keys.as_ref();
                        super::sealed_fields::seal(keys, config, &new_member, k, &text)
                            .into_owned()
                            .into()
                    };
                    (k.clone(), stored.into_owned())
                })
                .collect();
            let set: Vec<(&str, &str)> =
                copy.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            // The new member joins the field indexes of every value the copy holds before the
            // copy exists (a session that holds a value is always in its index).
            let new_entries = super::index::all_entries(config, &data);
            let mut not_after = 0;
            if !new_entries.is_empty() {
                let added = super::index::add_all(
                    &mgr,
                    &new_member,
                    &new_entries,
                    mgr.field_bound_ms(&data),
                )
                .await;
                match added {
                    Ok(at) => not_after = super::index::write_cap(at),
                    Err(e) => {
                        thaw(old_key, token).await;
                        undo_member().await;
                        return Self::failed(st, e);
                    }
                }
            }
            let sent = Instant::now();
            // Lifetimes given in this request: the copy's stamps say what is left of the others.
            let expire = st.pending_lifetimes();
            let records: Vec<&str> = st.records.iter().map(String::as_str).collect();
            let written = store
                .create(
                    &new_key, &set, created, &expire, &records, not_after, timing,
                )
                .await;
            if let Ok(WriteResult::Gone) = written {
                // The new id carries an 'ended' mark: an end-by-query saw this login's index
                // entry. The login is ended with it: the old key is retired (no session is left
                // under either id) and the request answers "ended".
                let retired = store.release(&old_key, &token, true).await;
                undo_member().await;
                match retired {
                    // The session ended with this login: its end, once.
                    Ok(Release::Done | Release::Retired) => {
                        mgr.publish_ends(super::EventKind::Revoked, &[old_id.storage_key()])
                            .await
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "could not retire the old key of a login ended by a query; its freeze lapses");
                    }
                }
                st.mark_ended();
                return Self::failed(st, Error::SessionEnded);
            }
            let failure = match written {
                Ok(WriteResult::Written { .. }) => None,
                Ok(WriteResult::TooLate) => Some(super::too_late()),
                Err(e) => Some(e),
                Ok(other) => Some(Error::Store(crate::error::StoreError::new(format!(
                    "id rotation: writing the new key gave {other:?}"
                )))),
            };
            if let Some(e) = failure {
                let _ = store.delete(&new_key).await;
                thaw(old_key, token).await;
                undo_member().await;
                return Self::failed(st, e);
            }
            let mut released = store.release(&old_key, &token, true).await;
            if released.is_err() {
                // The retire's answer was lost: ask again by thawing, which says which it was.
                released = match store.release(&old_key, &token, false).await {
                    Ok(Release::Retired) => Ok(Release::Done), // it did happen: keep the copy
                    Ok(Release::Done) => released,             // thawed: the old one lives
                    _ => released,
                };
            }
            if !matches!(released, Ok(Release::Done | Release::Retired)) {
                // Do not let the copy live on beside the old session (or after it ended).
                let _ = store.delete(&new_key).await;
                undo_member().await;
                return match released {
                    Ok(Release::Gone) => {
                        st.mark_ended();
                        Self::failed(st, Error::SessionEnded)
                    }
                    Ok(_) => {
                        st.mark_moved();
                        Self::failed(st, Error::SessionEnded)
                    }
                    Err(e) => Self::failed(st, e),
                };
            }
            self.touches().forget(&old_key);
            self.touches().note(&new_key, sent);
            let now = store.server_now().unwrap_or_else(crate::store::now_ms);
            let ttl = crate::store::ttl_ms(now, created, timing).unwrap_or(timing.idle_ms);
            moved_event = Some((Some(old_id.storage_key()), ttl));
            if let Some(pu) = &previous_user {
                if let Err(e) = store
                    .index_remove(&config.index_key(pu), &[old_id.storage_key()])
                    .await
                {
                    // Harmless: the member points at a deleted key and its bound removes it.
                    tracing::debug!(error = %e, "could not remove the old member from the user index");
                }
            }
            // The old id is retired for good: its entries go whatever their age, and it leaves
            // the holders of its fields too (else each login left one more candidate there).
            self.retire_in_background(st, old_id.storage_key(), old_entries);
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
                    format!("{}{f}", fields::EXPIRES),
                    now.saturating_add(ms).to_string().into_bytes(),
                );
            }
            fields::drop_expired(&mut data, now);
            st.stale_stamps.clear();
            st.data = data;
            self.saved_records(st);
            st.dirty.clear();
            st.index_before.clear();
            st.cookie = CookieAction::Send;
            st.id = Some(new_id);
        } else if create_now {
            // Created above under the new id (a login is saved at once): `created` and `login`
            // in one call, with the tracking. If that fails, the new session goes again, so
            // that every session with events on is tracked.
            if mgr.events_on() && created_here {
                let user_ref = user.as_deref();
                let batch = crate::store::events::EventBatch {
                    confirm: vec![new_member.clone()],
                    events: vec![
                        super::lifecycle::event(
                            super::EventKind::Created,
                            &new_member,
                            user_ref,
                            false,
                        ),
                        super::lifecycle::event(kind, &new_member, user_ref, false),
                    ],
                    ..Default::default()
                };
                mgr.publish_after(batch).await;
            }
        } else {
            // Not stored yet: created at the end of the request, if anything is set.
        }
        if let (Some((old_member, ttl)), true) = (moved_event, mgr.events_on()) {
            let mut e = super::lifecycle::event(kind, &new_member, user.as_deref(), false);
            let mut batch = crate::store::events::EventBatch::default();
            if let Some(old_member) = old_member {
                e.previous = super::devices::handle_of(&old_member);
                // Tracked before the copy existed; now its exact expiry (ZADD XX: not if it
                // was ended meanwhile).
                batch.rescore.push((new_member.clone(), ttl));
                batch.confirm.push(new_member.clone());
                batch.untrack.push(old_member);
            }
            batch.events.push(e);
            mgr.publish_after(batch).await;
        }
        if let (Some(u), false) = (&user, victims.is_empty()) {
            if let Err(e) = Box::pin(mgr.end_members(u, &victims, super::EventKind::Evicted)).await
            {
                return Self::failed(st, e);
            }
        }
        Ok(())
    }
}
