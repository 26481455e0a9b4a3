//! Loading a request's session: each cookie candidate in turn, the throttled TTL refresh, and
//! the user-index refresh that follows it.

use super::state::{user_of, CookieAction, State, Status};
use super::Session;
use crate::error::Result;
use crate::id::SessionId;
use crate::store::{Load, Refresh};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

impl Session {
    pub(super) async fn ensure_loaded(&self, st: &mut State) -> Result<()> {
        if st.status != Status::Unloaded {
            return Ok(());
        }
        // Each validly signed cookie of our name, in turn, until one names a live session. On
        // a store failure the candidates stay (nothing is proven, the cookie is not cleared).
        for i in 0..st.candidates.len() {
            let (id, stale) = (st.candidates[i].id.clone(), st.candidates[i].stale_key);
            st.id = Some(id.clone());
            // Boxed: the store's future is large; every accessor awaits this one, and a small
            // accessor future is cheaper to move than one allocation.
            if Box::pin(self.load_one(st, &id)).await? {
                if stale {
                    st.cookie = CookieAction::Send;
                }
                st.candidates.clear();
                return Ok(());
            }
        }
        st.candidates.clear();
        if st.moved_away {
            // A login moved this session to a new id moments ago (another request of this
            // browser): nothing to serve or write here, and the cookie is left alone.
            st.mark_moved();
        } else {
            st.mark_no_session();
        }
        Ok(())
    }

    /// Loads the session under `id`; whether it exists.
    pub(super) async fn load_one(&self, st: &mut State, id: &SessionId) -> Result<bool> {
        let key = self.mgr().key_of(id);
        let timing = self.timing();
        let touch = Duration::from_millis(timing.touch_ms);
        let known_fresh = self.touches().fresh(&key, touch);
        let span = tracing::debug_span!("tessera.load", sid = %id.log_tag(), commands = 1, plain = known_fresh, found = tracing::field::Empty, touched = tracing::field::Empty);
        let sent = Instant::now();
        let res = self
            .store()
            .load(&key, timing, known_fresh, !st.fresh_only)
            .instrument(span.clone())
            .await;
        let loaded = match res {
            Err(e) => return Self::failed(st, e),
            Ok(Load::Gone) => {
                span.record("found", false);
                return Ok(false);
            }
            Ok(Load::Moved) => {
                span.record("found", false);
                st.moved_away = true;
                return Ok(false);
            }
            Ok(Load::Found(loaded)) => loaded,
        };
        span.record("found", true);
        span.record("touched", loaded.refresh == Refresh::Done);
        self.note_handle(id);
        st.status = Status::Stored;
        st.data = loaded.fields;
        // Fields past their lifetime are not served (a plain read or a near-cache copy may
        // still hold them where the server has no hash-field expiry).
        st.stale_stamps.clear();
        if let Some(now) = self.store().server_now() {
            // Checked before changing: the fields may be shared with the near-cache.
            if crate::store::fields::any_expired(&st.data, now) {
                let gone = crate::store::fields::drop_expired(st.data_mut(), now);
                st.stale_stamps.extend(gone);
            }
        }
        self.unseal_loaded(st, id.storage_str());
        st.from_cache = loaded.cached;
        st.slid_at = match loaded.refresh {
            Refresh::Done => Some(sent),
            Refresh::NotDue { age_ms: Some(age) } => sent.checked_sub(Duration::from_millis(age)),
            // A plain read (this process saw the refresh): when it saw it.
            Refresh::NotDue { age_ms: None } => self.touches().last(&key),
            Refresh::Refused(_) => None,
        };
        match loaded.refresh {
            Refresh::Done => {
                self.touches().note(&key, sent);
                if self.cookie_slides(st) {
                    st.cookie = CookieAction::Send;
                }
                let user = user_of(&st.data);
                self.refresh_index(st, id, user);
            }
            // The store measured the age on its own clock; `sent` is no later than the moment
            // it did, so the estimate errs towards "older".
            Refresh::NotDue { age_ms: Some(age) } => {
                if let Some(at) = sent.checked_sub(Duration::from_millis(age)) {
                    self.touches().note(&key, at);
                }
            }
            Refresh::NotDue { age_ms: None } => {}
            Refresh::Refused(reason) => {
                tracing::warn!(sid = %id.log_tag(), %reason, "session TTL refresh refused by the store (over maxmemory?): served without sliding the TTL");
            }
        }
        Ok(true)
    }

    /// Bookkeeping after a write that may have slid the TTL.
    pub(super) fn after_write(
        &self,
        st: &mut State,
        id: &SessionId,
        key: &str,
        sent: Instant,
        refreshed: bool,
        user: Option<String>,
    ) {
        if refreshed {
            st.slid_at = Some(sent);
            self.touches().note(key, sent);
            // A write that did not read (an increment) knows only the configured kind; the
            // finish reads the session's own expiry before it sends the cookie.
            if self.cookie_slides(st) {
                st.cookie = CookieAction::Send;
            }
            self.refresh_index(st, id, user);
        }
    }

    /// After a TTL refresh of a logged-in session, moves its bound in the user's index too.
    /// It runs while the handler works and is awaited before the response (one not sent or
    /// not confirmed is logged, not the request's failure: see `settle_index_refresh`).
    pub(super) fn refresh_index(&self, st: &mut State, id: &SessionId, user: Option<String>) {
        // `st.data` holds the session as read before this refresh: its last refresh.
        let prev = crate::store::fields::ms(&st.data, crate::store::fields::TOUCHED);
        self.refresh_field_indexes(st, id.storage_key(), prev);
        let Some(user) = user else { return };
        let store = self.store().clone();
        let index = self.mgr().inner.config.index_key(&user);
        let member = id.storage_key();
        let bound = self.mgr().index_bound_ms();
        st.index_refresh.push(tokio::spawn(async move {
            store.index_add(&index, &member, bound, 0, None).await
        }));
    }
}
