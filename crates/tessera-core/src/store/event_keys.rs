//! What the stores keep for lifecycle events: a capped stream of events, the expiry set (every
//! tracked session and a server time no later than its expiry) and the users of tracked
//! sessions, all under one hash tag; plus the probe the expiry sweeper runs on session keys.
//! The rules are in `redis/scripts/events.lua` (run by `redis/event_scripts.rs`); the memory
//! store follows them in one process (`memory/event_log.rs`).

use std::collections::HashMap;

/// The keys of one namespace's events, named in [`crate::layout::keys`].
pub(crate) use crate::layout::keys::EventKeys;

/// One event to publish.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub(crate) kind: &'static str,
    /// The session's storage key (the expiry set's member).
    pub(crate) member: String,
    pub(crate) handle: String,
    /// Empty: none (or, for a claim, the one the users hash holds).
    pub(crate) user: String,
    pub(crate) previous: String,
    /// It ends the session: published only by whoever removes `member` from the expiry set.
    pub(crate) claim: bool,
}

/// What one call to the events script does, in this order: untrack, rescore, track, publish.
#[derive(Debug, Default, Clone)]
pub(crate) struct EventBatch {
    /// (member, ms until its expiry, user or "").
    pub(crate) track: Vec<(String, u64, String)>,
    /// Like `track`, for an id whose key does not exist yet (a login's new id): until it is
    /// confirmed, the sweeper drops it without an event when its key is gone (the login did
    /// not complete), so a login undone after its tracking never shows up as `expired`.
    pub(crate) track_pending: Vec<(String, u64, String)>,
    /// Pending members whose session now exists.
    pub(crate) confirm: Vec<String>,
    pub(crate) untrack: Vec<String>,
    /// (member, ms until its expiry): only members still tracked.
    pub(crate) rescore: Vec<(String, u64)>,
    pub(crate) events: Vec<NewEvent>,
}

impl EventBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.track.is_empty()
            && self.track_pending.is_empty()
            && self.confirm.is_empty()
            && self.untrack.is_empty()
            && self.rescore.is_empty()
            && self.events.is_empty()
    }
}

/// What a sweep found due ([`expiry_due`](super::contract::EventOps::expiry_due)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Due {
    /// The store's clock when it looked, ms.
    pub(crate) now: u64,
    /// Each due member and its score (when it became due, ms), oldest first.
    pub(crate) members: Vec<(String, u64)>,
}

impl Due {
    /// How long ago the oldest of them became due, ms (0: none).
    pub(crate) fn lag_ms(&self) -> u64 {
        self.members
            .first()
            .map_or(0, |(_, score)| self.now.saturating_sub(*score))
    }
}

/// A stored event: its stream id and fields.
pub(crate) type StoredEvent = (String, HashMap<String, String>);

/// What the sweeper found at a tracked session's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Nothing: it expired.
    Gone,
    /// A live session, expiring in this many ms.
    Live(u64),
    /// An 'ended' mark: a request ended it and publishes its end.
    Ended,
    /// Retired by a login's id rotation (the session lives on under a new id), or not a
    /// session at all.
    Moved,
}

/// A stream id `<ms>-<seq>`, as numbers (ordered as the stream orders them).
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A reader's cursor: a stream id after which another id can exist. The largest id
/// (`u64::MAX-u64::MAX`) has none, and Redis refuses it as an exclusive start (`XRANGE
/// (id`); it is as malformed as any other cursor no stream can have written.
pub(crate) fn parse_cursor(cursor: &str) -> Option<(u64, u64)> {
    parse_id(cursor).filter(|id| *id != (u64::MAX, u64::MAX))
}

/// Subscriptions that wake the sweeper when the server reports an expired key (Redis only);
/// dropping it stops them.
pub(crate) use super::redis::ExpiryWatch;
