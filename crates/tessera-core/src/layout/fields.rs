//! The reserved hash fields of a session: every name tessera itself stores in a session hash,
//! beside the app's fields. They all start with [`RESERVED_PREFIX`] (`__`), which user fields
//! may not ([`is_reserved`] is the one test of that rule); the scripts get each name from here
//! through the generated header (`F_<NAME>`, see [`LUA`]).

use std::collections::HashMap;

/// The prefix of every reserved field: a user field may not start with it.
pub(crate) const RESERVED_PREFIX: &str = "__";

/// Creation time, ms since the Unix epoch (server clock). A hash without it is no session
/// (a tombstone or an `ended` mark, see [`MOVING`]).
pub(crate) const CREATED: &str = "__c";
/// Last TTL refresh ("last seen"), ms since the Unix epoch.
pub(crate) const TOUCHED: &str = "__t";
/// The bound user id, when logged in.
pub(crate) const USER: &str = "__u";
/// The User-Agent recorded at login, for device lists.
pub(crate) const USER_AGENT: &str = "__ua";
/// The client address recorded at login, for device lists.
pub(crate) const CLIENT_ADDR: &str = "__ip";
/// The rotation marker, in the grammar of [`Marker`](super::marker::Marker): `<ms> <member>`
/// while a login moves the session to a new id (freeze.lua), `retired <token>` on the old key
/// once retired (release.lua), `ended` on a key whose session an action ended (end_if.lua,
/// take.lua).
pub(crate) const MOVING: &str = "__m";
/// The activity trail: `<ms> <action>` lines, oldest first (see session/activity.rs and
/// `append_trail` in the prelude).
pub(crate) const TRAIL: &str = "__a";
/// The expiry another framework gave a session it manages (see `Records`), ms since the
/// Unix epoch.
pub(crate) const EXPIRES_AT: &str = "__e";
/// This session's own expiry ("remember me"), when it has one: `p <ms>` (a persistent
/// cookie, the store's idle timeout `ms`) or `b <ms>` (a browser-session cookie). The
/// scripts slide the TTL by it instead of the configured idle timeout (`own_idle` in the
/// prelude).
pub(crate) const OWN_EXPIRY: &str = "__i";
/// The session's CSRF secret, base64url (see session/csrf.rs).
pub(crate) const CSRF: &str = "__k";
/// The loads whose view a save of another framework's session (see `Records`) used, most
/// recent first, space-separated (at most `Records`' bound): a view given to a second
/// save is stale (a cache's copy of the record), and that save replaces every value.
pub(crate) const SAVED_LOADS: &str = "__l";
/// Prefix of a field's lifetime stamp: `__x:<field>` = its expiry, server ms (see
/// [`stamp_of`]).
pub(crate) const EXPIRES: &str = "__x:";

/// Every reserved name, as the scripts' header names it: `(Lua name, value)`. The Lua names
/// are `F_` and the Rust constant's name (`F_EXPIRES` is the stamps' prefix).
pub(crate) const LUA: &[(&str, &str)] = &[
    ("F_CREATED", CREATED),
    ("F_TOUCHED", TOUCHED),
    ("F_USER", USER),
    ("F_USER_AGENT", USER_AGENT),
    ("F_CLIENT_ADDR", CLIENT_ADDR),
    ("F_MOVING", MOVING),
    ("F_TRAIL", TRAIL),
    ("F_EXPIRES_AT", EXPIRES_AT),
    ("F_OWN_EXPIRY", OWN_EXPIRY),
    ("F_CSRF", CSRF),
    ("F_SAVED_LOADS", SAVED_LOADS),
    ("F_EXPIRES", EXPIRES),
];

/// Whether `name` is reserved (starts with `__`): tessera's own, never a user field. The one
/// test of the prefix rule; `is_reserved` in the prelude is its Lua twin.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// Whether `name` may be a user field as far as the prefix rule goes (not reserved).
pub(crate) fn is_user_field(name: &str) -> bool {
    !is_reserved(name)
}

/// The lifetime stamp of `field`: `__x:<field>`.
pub(crate) fn stamp_of(field: &str) -> String {
    format!("{EXPIRES}{field}")
}

/// The field a lifetime stamp belongs to (`None`: not a stamp).
pub(crate) fn stamped_field(stamp: &str) -> Option<&str> {
    stamp.strip_prefix(EXPIRES)
}

/// Removes from `data` the fields whose lifetime stamp is at most `now` (and their stamps);
/// the stamps that went.
pub(crate) fn drop_expired(data: &mut HashMap<String, Vec<u8>>, now: u64) -> Vec<String> {
    let gone: Vec<String> = data
        .iter()
        .filter(|(k, v)| is_past(k, v, now))
        .map(|(k, _)| k.clone())
        .collect();
    for stamp in &gone {
        data.remove(stamp);
        data.remove(&stamp[EXPIRES.len()..]);
    }
    gone
}

/// Whether `drop_expired` would remove anything (it reads only).
pub(crate) fn any_expired(data: &HashMap<String, Vec<u8>>, now: u64) -> bool {
    data.iter().any(|(k, v)| is_past(k, v, now))
}

/// `k` is a lifetime stamp whose time is at most `now`.
fn is_past(k: &str, v: &[u8], now: u64) -> bool {
    k.starts_with(EXPIRES)
        && std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|at| at <= now)
}

/// A stored time field (ms since the epoch, as text); `None` if absent or not a number.
pub(crate) fn ms(h: &HashMap<String, Vec<u8>>, name: &str) -> Option<u64> {
    std::str::from_utf8(h.get(name)?).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reserved_name_has_the_prefix_and_one_lua_name() {
        for (lua, name) in LUA {
            assert!(is_reserved(name), "{lua} = {name:?}");
            assert!(lua.starts_with("F_"), "{lua}");
        }
        let names: std::collections::HashSet<_> = LUA.iter().map(|(_, n)| *n).collect();
        assert_eq!(names.len(), LUA.len(), "two Lua names for one field");
        assert!(is_user_field("cart") && is_user_field("_x") && !is_user_field("__x"));
        assert_eq!(stamp_of("cart"), "__x:cart");
        assert_eq!(stamped_field("__x:cart"), Some("cart"));
        assert_eq!(stamped_field("cart"), None);
    }
}
