//! The per-request state machine: where the session stands, what changed, and what to do with
//! the cookie.

use super::ClientInfo;
use crate::cookie::Verified;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::store::fields;
use std::collections::{BTreeMap, HashMap};

/// What to do with the browser's cookie at the end of the request (one decision: sending a
/// cookie and clearing it are never both wanted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CookieAction {
    /// Leave the browser's cookie as it is.
    Keep,
    /// Send the cookie (again): a new id, a stale signing key, a sliding persistent cookie.
    Send,
    /// Tell the browser to drop the cookie: it is proven dead.
    Clear,
}

impl CookieAction {
    pub(super) fn clear_if(dead: bool) -> Self {
        if dead {
            CookieAction::Clear
        } else {
            CookieAction::Keep
        }
    }
}

/// Where a request's session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Not read yet (the handler has not used it).
    Unloaded,
    /// No record in the store: a new session (or one whose cookie pointed at nothing).
    New,
    /// A record exists in the store under `id`.
    Stored,
    /// Ended by this request (`destroy`); a later write starts a new session.
    Destroyed,
    /// Ended by someone else while this request ran, or moved to a new id by a concurrent
    /// login: nothing more is written.
    Ended,
}

pub(super) struct State {
    /// The validly signed session cookies of the request, in the order sent (tried in turn
    /// on the first load).
    pub(super) candidates: Vec<Verified>,
    /// More signed candidates were sent than are tried: none of them is proven dead.
    pub(super) truncated: bool,
    /// The request carried at least one validly signed session cookie.
    pub(super) had_cookie: bool,
    /// A candidate named a key retired by a concurrent login's rotation (a tombstone).
    pub(super) moved_away: bool,
    pub(super) id: Option<SessionId>,
    pub(super) status: Status,
    /// The session's fields: shared with the near-cache after a hit, copied on the first change
    /// (`data_mut`).
    pub(super) data: std::sync::Arc<HashMap<String, Vec<u8>>>,
    pub(super) dirty: BTreeMap<String, Option<String>>,
    /// What to do with the browser's cookie at the end of the request.
    pub(super) cookie: CookieAction,
    pub(super) failure: Option<Error>,
    pub(super) client: ClientInfo,
    /// The handler asked for data from the store itself, never the near-cache.
    pub(super) fresh_only: bool,
    /// The data came from the near-cache.
    pub(super) from_cache: bool,
    /// The user-index refresh started by a load that slid the TTL; awaited in `finish`.
    pub(super) index_refresh: Vec<tokio::task::JoinHandle<Result<Vec<String>>>>,
    /// The stored value of each indexed field this request changed, as it was before the
    /// first change (`None`: absent): what the write removes from the field's index.
    pub(super) index_before: HashMap<String, Option<Vec<u8>>>,
    /// During an increment of an indexed field: the entry of the value it will most likely
    /// reach, added before the write with the others.
    pub(super) incr_entry: Option<(String, String)>,
    /// Protected fields whose stored value did not decrypt, and why.
    pub(super) unreadable: HashMap<String, crate::field_crypto::Unreadable>,
    /// Lifetimes (ms) of fields set in this request with `insert_for`.
    pub(super) expire: BTreeMap<String, u64>,
    /// Lifetime stamps of fields this request found past their lifetime (dropped from `data`)
    /// that may still be in the store: a write of such a field deletes its stamp.
    pub(super) stale_stamps: std::collections::HashSet<String>,
    /// Activity trail entries recorded in this request, not saved yet (oldest first).
    pub(super) records: Vec<String>,
    /// A login is creating the session: it publishes `created` with its `login`, in one call.
    pub(super) created_by_login: bool,
    /// A login creating the session: its user-index entry, made with the create.
    pub(super) index_join: Option<JoinSpec>,
    /// What the create with `index_join` answered: the user's sessions over the device limit.
    pub(super) joined_victims: Vec<String>,
    /// When the stored session's TTL last slid, as this request knows it (`None`: not known,
    /// at most one touch interval ago): what [`Session::expiry_age`](super::Session::expiry_age)
    /// counts from.
    pub(super) slid_at: Option<std::time::Instant>,
}

/// The owned form of [`IndexJoin`](crate::store::IndexJoin), kept in the state while the
/// login's create runs.
#[derive(Debug, Clone)]
pub(super) struct JoinSpec {
    pub(super) key: String,
    pub(super) member: String,
    pub(super) bound_ms: u64,
    pub(super) max: usize,
    pub(super) leaving: Option<String>,
}

impl JoinSpec {
    /// The join as the store's create takes it.
    pub(super) fn as_join(&self) -> crate::store::IndexJoin<'_> {
        crate::store::IndexJoin {
            key: &self.key,
            member: &self.member,
            bound_ms: self.bound_ms,
            max: self.max,
            leaving: self.leaving.as_deref(),
        }
    }
}

pub(super) fn user_of(data: &HashMap<String, Vec<u8>>) -> Option<String> {
    data.get(fields::USER)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

pub(super) use crate::store::fields::is_user_field;

impl State {
    /// The fields, to change: copied first if the near-cache still shares them.
    pub(super) fn data_mut(&mut self) -> &mut HashMap<String, Vec<u8>> {
        std::sync::Arc::make_mut(&mut self.data)
    }

    /// Removes `field` from the fields (no copy of shared fields when it is absent).
    pub(super) fn remove_data(&mut self, field: &str) -> Option<Vec<u8>> {
        if self.data.contains_key(field) {
            self.data_mut().remove(field)
        } else {
            None
        }
    }

    /// This request ended the session: forget it and clear the cookie; a later write in the
    /// same request starts a new session under a new id.
    pub(super) fn mark_destroyed(&mut self) {
        self.status = Status::Destroyed;
        self.records.clear();
        self.id = None;
        self.data = Default::default();
        self.dirty.clear();
        self.index_before.clear();
        self.expire.clear();
        self.unreadable.clear();
        self.stale_stamps.clear();
        self.cookie = CookieAction::clear_if(self.had_cookie);
    }

    /// Someone else ended the session while this request ran: nothing more is written. The
    /// cookie is left alone: "gone" is also what a concurrent login's rotation looks like,
    /// whose response may already have given the browser a new cookie of the same name; the
    /// next request clears the cookie if it is still dead.
    pub(super) fn mark_ended(&mut self) {
        self.status = Status::Ended;
        self.records.clear();
        self.dirty.clear();
        self.index_before.clear();
        self.expire.clear();
        self.unreadable.clear();
        self.stale_stamps.clear();
        self.cookie = CookieAction::Keep;
    }

    /// A concurrent login is moving the session to a new id: as [`State::ended`].
    pub(super) fn mark_moved(&mut self) {
        self.mark_ended();
    }

    /// No cookie named a live session. Never adopt a client-supplied id: a new session gets
    /// a new one. The browser is told to drop the cookie only when every candidate was tried
    /// and found dead (a cookie the request did not prove dead may be someone's live one).
    pub(super) fn mark_no_session(&mut self) {
        self.status = Status::New;
        self.id = None;
        self.cookie = CookieAction::clear_if(self.had_cookie && !self.truncated);
    }

    pub(super) fn new(candidates: Vec<Verified>, truncated: bool, client: ClientInfo) -> Self {
        State {
            slid_at: None,
            client,
            index_refresh: Vec::new(),
            index_before: HashMap::new(),
            incr_entry: None,
            unreadable: HashMap::new(),
            expire: BTreeMap::new(),
            stale_stamps: std::collections::HashSet::new(),
            records: Vec::new(),
            created_by_login: false,
            index_join: None,
            joined_victims: Vec::new(),
            cookie: if candidates.first().is_some_and(|c| c.stale_key) {
                CookieAction::Send
            } else {
                CookieAction::Keep
            },
            id: candidates.first().map(|c| c.id.clone()),
            had_cookie: !candidates.is_empty(),
            moved_away: false,
            fresh_only: false,
            from_cache: false,
            candidates,
            truncated,
            status: Status::Unloaded,
            data: Default::default(),
            dirty: BTreeMap::new(),
            failure: None,
        }
    }

    /// The lifetimes (ms) given in this request to fields it sets: what the next write passes
    /// to the store.
    pub(super) fn pending_lifetimes(&self) -> Vec<(&str, u64)> {
        self.expire
            .iter()
            .filter(|(f, _)| matches!(self.dirty.get(f.as_str()), Some(Some(_))))
            .map(|(f, ms)| (f.as_str(), *ms))
            .collect()
    }

    /// Whether this request has changes to save (fields or trail entries).
    pub(super) fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || !self.records.is_empty()
    }

    pub(super) fn user_field_count(&self) -> usize {
        self.data.keys().filter(|k| is_user_field(k)).count()
    }
}
