//! Every key tessera writes, by namespace (`[ns]`, the configuration's `namespace`, default
//! empty):
//!
//! | key | what |
//! |---|---|
//! | `[ns]session:<storage key>` | one session's hash ([`session`]) |
//! | `[ns]user:<id>:sessions` | a user's sessions, scored by bound ([`user_sessions`]) |
//! | `[ns]user:<id>:ended_before` | the time of the user's last logout-all ([`ended_before`]) |
//! | `[ns]index:<field>:<value>` | the sessions whose indexed field holds a value ([`value_index`]) |
//! | `[ns]index:<field>` | the values an indexed field holds ([`field_values`]) |
//! | `{[ns]events}` and `:expiry`, `:users`, `:sweep`, `:pending` | lifecycle events ([`events`], [`EventKeys`]) |
//! | `[ns]sessions-idx` | the query engine's index name, not a key ([`search_index`]) |
//! | `tessera:near-cache:db` | the database's near-cache marker, in no namespace ([`NEAR_CACHE_MARKER`]) |
//!
//! User ids and indexed values enter a key escaped by [`user_key_part`].

use std::borrow::Cow;

/// The prefix of session keys after the namespace.
const SESSION: &str = "session:";
/// The prefix of user keys after the namespace.
const USER: &str = "user:";
/// The prefix of field-index keys after the namespace.
const INDEX: &str = "index:";

/// `[ns]session:<storage key>`: one session's hash.
pub(crate) fn session(ns: &str, storage_key: &str) -> String {
    // On every request: three pushes into one exact allocation, not `format!`'s machinery.
    let mut k = String::with_capacity(ns.len() + SESSION.len() + storage_key.len());
    k.push_str(ns);
    k.push_str(SESSION);
    k.push_str(storage_key);
    k
}

/// `[ns]session:`: what every session key starts with (the query engine's `PREFIX`).
pub(crate) fn session_prefix(ns: &str) -> String {
    session(ns, "")
}

/// `[ns]user:<id>:sessions`: the user's sessions (a sorted set: member = storage key, score
/// = an upper bound of its expiry).
pub(crate) fn user_sessions(ns: &str, user_id: &str) -> String {
    format!("{ns}{USER}{}:sessions", user_key_part(user_id))
}

/// `[ns]user:<id>:ended_before`: the time of the user's last logout-all, while sessions of
/// another store are refused a take-over (see `Records::take_over`).
pub(crate) fn ended_before(ns: &str, user_id: &str) -> String {
    format!("{ns}{USER}{}:ended_before", user_key_part(user_id))
}

/// `[ns]index:<field>:<value>`: the sessions whose `field` holds `value` (the value escaped
/// like a user id, so it can never pick a Cluster slot).
pub(crate) fn value_index(ns: &str, field: &str, value: &str) -> String {
    format!("{ns}{INDEX}{field}:{}", user_key_part(value))
}

/// `[ns]index:<field>`: the values `field` holds in some session.
pub(crate) fn field_values(ns: &str, field: &str) -> String {
    format!("{ns}{INDEX}{field}")
}

/// `{[ns]events}`: the lifecycle events stream. Its helper keys ([`EventKeys`]) share its
/// hash tag, so one script reaches them all on Cluster.
pub(crate) fn events(ns: &str) -> String {
    format!("{{{ns}events}}")
}

/// `[ns]sessions-idx`: the name of the query engine's index over the session hashes.
pub(crate) fn search_index(ns: &str) -> String {
    format!("{ns}sessions-idx")
}

/// The key of the database's near-cache marker: a random value, created (`SET NX`) by the
/// first instance that turns tracking on (see store/redis/near_cache.rs). One per database,
/// whatever the namespace.
pub(crate) const NEAR_CACHE_MARKER: &str = "tessera:near-cache:db";

/// Whether `key` is one of tessera's own keys in namespace `ns` (sessions, user and field
/// indexes, anything under a hash tag such as the events): never another store's session,
/// whatever it holds.
pub(crate) fn is_own(ns: &str, key: &str) -> bool {
    key.starts_with('{')
        || key
            .strip_prefix(ns)
            .is_some_and(|rest| [SESSION, USER, INDEX].iter().any(|p| rest.starts_with(p)))
}

/// The keys of one namespace's events: `{[ns]events}` and its helpers.
#[derive(Debug, Clone)]
pub(crate) struct EventKeys {
    /// The stream (`{[ns]events}`).
    pub(crate) stream: String,
    /// `:expiry`: the expiry set (member = storage key, score = a server time no later than its
    /// expiry).
    pub(crate) expiry: String,
    /// `:users`: the users of tracked sessions (member -> user id).
    pub(crate) users: String,
    /// `:sweep`: the sweep lease.
    pub(crate) lease: String,
    /// `:pending`: members tracked before their key exists.
    pub(crate) pending: String,
}

impl EventKeys {
    /// The helpers of the stream `stream` ([`events`]).
    pub(crate) fn new(stream: String) -> Self {
        EventKeys {
            expiry: format!("{stream}:expiry"),
            users: format!("{stream}:users"),
            lease: format!("{stream}:sweep"),
            pending: format!("{stream}:pending"),
            stream,
        }
    }
}

/// A user id as it appears in a key: readable as it is, except that `%`, `{`, `}`, spaces,
/// control characters and DEL are percent-escaped (`%7B`). So an id can never pick its own
/// Redis Cluster slot with a `{hash tag}`, and two different ids never share a key (the
/// escaping is one-to-one because `%` itself is escaped).
pub(crate) fn user_key_part(user_id: &str) -> Cow<'_, str> {
    let special = |b: u8| b == b'%' || b == b'{' || b == b'}' || b <= b' ' || b == 0x7f;
    if !user_id.bytes().any(special) {
        return Cow::Borrowed(user_id);
    }
    let mut out = String::with_capacity(user_id.len() + 8);
    for c in user_id.chars() {
        if c.is_ascii() && special(c as u8) {
            out.push_str(&format!("%{:02X}", c as u8));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_cannot_pick_a_slot_or_collide() {
        let c = crate::SessionConfig::builder(crate::Key::generate())
            .build()
            .unwrap();
        assert_eq!(
            c.index_key("42"),
            "user:42:sessions",
            "plain ids stay readable"
        );
        assert_eq!(
            c.index_key("ann@example.com"),
            "user:ann@example.com:sessions"
        );
        assert_eq!(c.index_key("{evil}"), "user:%7Bevil%7D:sessions");
        let ids = ["a b", "a%20b", "a%2520b", "{x}", "%7Bx%7D", "a\nb", "é{"];
        let keys: std::collections::HashSet<String> = ids.iter().map(|i| c.index_key(i)).collect();
        assert_eq!(keys.len(), ids.len(), "one key per id: {keys:?}");
        assert!(keys.iter().all(|k| !k.contains('{') && !k.contains('}')));
    }

    #[test]
    fn every_key_format() {
        assert_eq!(session("shop:", "k"), "shop:session:k");
        assert_eq!(session_prefix("shop:"), "shop:session:");
        assert_eq!(ended_before("shop:", "a b"), "shop:user:a%20b:ended_before");
        assert_eq!(value_index("", "tenant", "{a}"), "index:tenant:%7Ba%7D");
        assert_eq!(field_values("", "tenant"), "index:tenant");
        assert_eq!(events("shop:"), "{shop:events}");
        assert_eq!(search_index("shop:"), "shop:sessions-idx");
        let e = EventKeys::new(events(""));
        assert_eq!(
            [e.stream, e.expiry, e.users, e.lease, e.pending],
            [
                "{events}",
                "{events}:expiry",
                "{events}:users",
                "{events}:sweep",
                "{events}:pending"
            ]
        );
        for own in [
            "shop:session:x",
            "shop:user:1:sessions",
            "shop:index:t",
            "{shop:events}",
        ] {
            assert!(is_own("shop:", own), "{own}");
        }
        for other in ["session:x", "tower:abc", "shop:other"] {
            assert!(!is_own("shop:", other), "{other}");
        }
    }
}
