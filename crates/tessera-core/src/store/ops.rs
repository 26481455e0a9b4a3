//! The operations' inputs and answers, shared by both backends and the session logic: the
//! timeouts a call carries ([`Timing`]), the write and create ops, and what each operation
//! found (a load, a write, a rotation's freeze and release, a compare-and-set, an end by query).

use super::fields;
use std::collections::HashMap;
use std::time::Duration;

/// How long a key retired by a login's id rotation stays as a tombstone ("moved"): long enough
/// for the requests the browser sent with the old cookie before the login's answer arrived.
pub(crate) const TOMBSTONE: Duration = Duration::from_secs(2);

/// Timeouts in milliseconds, as the backends take them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) idle_ms: u64,
    pub(crate) touch_ms: u64,
    /// 0 = no absolute lifetime.
    pub(crate) absolute_ms: u64,
    /// The most activity trail entries a session keeps.
    pub(crate) trail_max: usize,
    /// The longest idle timeout a session's own expiry may give (the configuration's
    /// `longest_expiry` now: a stored expiry above it, from before the configuration was
    /// lowered, is cut to it).
    pub(crate) longest_ms: u64,
}

/// A loaded session hash (reserved fields included).
#[derive(Debug)]
pub(crate) struct Loaded {
    /// Shared with the near-cache on a hit: copied on the first change.
    pub(crate) fields: std::sync::Arc<HashMap<String, Vec<u8>>>,
    pub(crate) refresh: Refresh,
    /// Served by the near-cache (no store command).
    pub(crate) cached: bool,
}

/// What a load did about the TTL refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// The load slid the TTL (the last refresh was at least a touch interval old).
    Done,
    /// Not due. `age_ms`: how long ago the last refresh was, by the store's own clock (so app
    /// clocks never enter the decision); `None` when the load did not measure it.
    NotDue { age_ms: Option<u64> },
    /// Due, but the store refused the write (over `maxmemory` with `noeviction`): the session
    /// is served anyway and the refresh is tried again on the next request.
    Refused(String),
}

/// Step 1 of an id rotation: the old key, frozen against writes, and its current contents.
#[derive(Debug)]
pub(crate) enum Freeze {
    /// No live session at the old key.
    Gone,
    /// Another rotation of this session is under way.
    Moved,
    /// Frozen: `token` releases it; `fields` is what the copy must hold.
    Frozen {
        token: String,
        fields: HashMap<String, Vec<u8>>,
    },
}

/// The last step of an id rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// Retired (replaced by a short-lived tombstone) or thawed, as asked.
    Done,
    /// Already retired with this token: a retire whose answer was lost did complete.
    Retired,
    /// The old key was ended meanwhile (logout-all, revoke, expiry).
    Gone,
    /// The freeze was broken (it went stale and a write landed, or another rotation took over).
    Taken,
}

/// What [`Store::set_if_absent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetIfAbsent {
    /// The field holds this value now: the one given, or the one that was there first.
    Holds(String),
    /// No session at the key: nothing written.
    Gone,
    /// A login is moving the session to a new id: nothing written.
    Moved,
}

/// What ending a session found by a field query did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndIf {
    /// It still held the value: deleted.
    Ended,
    /// It no longer holds the value: left alone.
    Changed,
    /// Nothing there: an 'ended' tombstone was left, so a create still on its way fails.
    Absent,
    /// No session there, but a key already (an 'ended' mark: whoever ended the session
    /// publishes its end): left as it is.
    Marked,
    /// A login moved the session to a new id moments ago: its storage key (member).
    Moved(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A new key; fails if it exists. `created_ms` keeps the creation time across id rotation
    /// (0 = now).
    Create { created_ms: u64 },
    /// An existing key; writes nothing if it is gone.
    Update,
}

#[derive(Debug)]
pub(crate) struct WriteOp<'a> {
    pub(crate) mode: Mode,
    pub(crate) set: Vec<(&'a str, &'a str)>,
    pub(crate) del: Vec<&'a str>,
    pub(crate) incr: Option<(&'a str, i64)>,
    /// With `incr` on a field that does not exist yet: refuse if the session already holds
    /// this many user fields (0 = not checked by the store: the caller checked).
    pub(crate) max_fields: usize,
    /// Refuse the write if it would land after this server time, ms (0 = no cap): a write
    /// behind a field-index add must land within half the prune guard of it.
    pub(crate) not_after_ms: u64,
    /// Set fields that get a lifetime, ms (see `set_lifetimes` in the scripts' prelude).
    pub(crate) expire: Vec<(&'a str, u64)>,
    /// Activity trail entries to append, oldest first (stamped with the store's time).
    pub(crate) records: Vec<&'a str>,
}

/// What a load found.
#[derive(Debug)]
pub(crate) enum Load {
    /// No live session.
    Gone,
    /// The key was retired by a login's id rotation moments ago (a tombstone): the session
    /// lives on under a new id, which the browser may already hold.
    Moved,
    Found(Loaded),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteResult {
    /// Written. `refreshed`: an update also slid the TTL (its last refresh was at least a touch
    /// interval old); `user`: the session's user, for the index refresh that must follow.
    Written {
        incr: i64,
        refreshed: bool,
        user: Option<String>,
        /// A create with an index join ([`NewSession::index`]): the user's sessions over the
        /// device limit, which the caller ends (empty otherwise).
        victims: Vec<String>,
    },
    /// Update of a key that no longer exists (or passed its absolute lifetime): nothing written.
    Gone,
    /// The increment's field does not hold an integer: nothing written.
    NotAnInteger,
    /// Create of a key that exists (an id collision): nothing written.
    Exists,
    /// The session is being moved to a new id by a login in another request: nothing written.
    Moved,
    /// The increment would add a field beyond `max_fields`: nothing written.
    TooManyFields,
    /// It would have landed after `not_after_ms` (memory store; Redis answers an error):
    /// nothing written.
    TooLate,
}

/// A new session hash under a fresh id (see create.lua): the fields, the creation time, the
/// lifetimes of some fields and the first trail entries, all or nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewSession<'a> {
    pub(crate) set: &'a [(&'a str, &'a str)],
    /// Keeps the creation time across an id rotation (0 = now).
    pub(crate) created_ms: u64,
    /// Set fields that get a lifetime, ms (see `set_lifetimes` in the scripts' prelude).
    pub(crate) expire: &'a [(&'a str, u64)],
    /// Activity trail entries, oldest first (stamped with the store's time).
    pub(crate) records: &'a [&'a str],
    /// Refuse the create if it would land after this server time, ms (0 = no cap).
    pub(crate) not_after_ms: u64,
    /// A login's new session joins its user's index in the same step (`None`: no index).
    pub(crate) index: Option<IndexJoin<'a>>,
}

/// A new session's entry in its user's index, made with its create: as
/// [`IndexOps::index_add`](super::contract::IndexOps::index_add) would, all or nothing with the
/// create (one script where both keys are on one server; on a cluster, two, the one undone
/// if the other fails).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexJoin<'a> {
    /// The index key, `user:<id>:sessions`.
    pub(crate) key: &'a str,
    /// The new session's member.
    pub(crate) member: &'a str,
    /// The member's score is now + this.
    pub(crate) bound_ms: u64,
    /// The device limit (0 = none).
    pub(crate) max: usize,
    /// The member a rotation replaces (not counted, never chosen).
    pub(crate) leaving: Option<&'a str>,
}

impl<'a> NewSession<'a> {
    /// Just these fields: created now, no lifetimes, no trail entry, no cap.
    pub(crate) fn fields(set: &'a [(&'a str, &'a str)]) -> Self {
        NewSession {
            set,
            created_ms: 0,
            expire: &[],
            records: &[],
            not_after_ms: 0,
            index: None,
        }
    }

    /// The same create as a [`WriteOp`] in `Mode::Create` (the memory store runs both alike).
    pub(crate) fn as_write(&self) -> WriteOp<'a> {
        WriteOp {
            mode: Mode::Create {
                created_ms: self.created_ms,
            },
            set: self.set.to_vec(),
            del: Vec::new(),
            incr: None,
            max_fields: 0,
            not_after_ms: self.not_after_ms,
            expire: self.expire.to_vec(),
            records: self.records.to_vec(),
        }
    }
}

/// Some named fields of one key, in the order asked; `None` where the key holds no session
/// (or, for a raw read, none of the names).
pub(crate) type Picked = Option<Vec<Option<Vec<u8>>>>;

impl Load {
    /// A plain `HGETALL`: a hash without `__c` is no session, unless it is a tombstone.
    pub(crate) fn of_plain(fields: std::sync::Arc<HashMap<String, Vec<u8>>>) -> Load {
        if fields.contains_key(fields::CREATED) {
            Load::Found(Loaded {
                fields,
                refresh: Refresh::NotDue { age_ms: None },
                cached: false,
            })
        } else if fields
            .get(fields::MOVING)
            .is_some_and(|m| crate::layout::marker::is_retired(m))
        {
            Load::Moved
        } else {
            Load::Gone
        }
    }
}
