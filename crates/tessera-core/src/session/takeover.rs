//! Taking over sessions another store wrote (tower-sessions-redis-store, actix-session):
//! [`Records::take_over`] writes tessera's copy first, then compare-and-deletes the old key;
//! a logout-all's mark (`user:<id>:ended_before`) refuses the take-over of that user's
//! sessions not taken over yet. See ARCHITECTURE.md, *Take-overs*.

use super::records::Records;
use crate::error::{Error, Result};
use std::future::Future;
use std::time::Duration;

/// How a [`Records::take_over`] ended.
#[derive(Debug)]
pub enum TakeOver<T> {
    /// No session of the other store under that key: none, or a value that is not one of its
    /// records (left alone: nothing is deleted).
    Nothing,
    /// Its user logged out everywhere after the switch ([`SessionManager::logout_all`](crate::SessionManager::logout_all)): not
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

impl Records {
    /// Says that this app takes over sessions of another store (what
    /// `TesseraStore::migrate_redis_store` and `SessionMiddleware::import_actix_session` call):
    /// from now on [`SessionManager::logout_all`](crate::SessionManager::logout_all) (and `logout_others`) of this manager and its
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
    /// 2. Its user logged out everywhere since the switch ([`SessionManager::logout_all`](crate::SessionManager::logout_all)
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
}

/// `[namespace]user:<id>:ended_before`: the time of `user`'s last logout-all, while sessions
/// of another store are refused a take-over (see [`Records::take_over`]).
pub(super) fn ended_key(config: &crate::SessionConfig, user: &str) -> String {
    crate::layout::keys::ended_before(config.namespace(), user)
}

/// A key another store wrote: never one of tessera's own (sessions, user and field indexes,
/// events), whatever the namespace.
fn check_legacy(config: &crate::SessionConfig, key: &str) -> Result<()> {
    let own = crate::layout::keys::is_own(config.namespace(), key);
    if key.is_empty() || key.len() > 512 || own {
        return Err(Error::Unsupported(
            "only another store's session keys (not tessera's own) can be taken over",
        ));
    }
    Ok(())
}
