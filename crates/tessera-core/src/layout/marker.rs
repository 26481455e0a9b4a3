//! The grammar of the rotation marker, the reserved field [`MOVING`](super::fields::MOVING)
//! (`__m`). It holds one of three values:
//!
//! - `<ms> <member>`: a login is moving the session to the new id `member` (its storage key),
//!   since server time `ms` (freeze.lua). Writes to the key answer MOVED while it is younger
//!   than the freeze; the whole value is the rotation's token.
//! - `retired <token>`: the old key of a completed rotation, where `token` is the freeze's
//!   `<ms> <member>` (release.lua): a tombstone with no session fields, for a few seconds.
//! - `ended`: no session, only a short mark that an action ended it (end_if.lua, take.lua):
//!   a create still on its way for this id finds it and fails, and the expiry sweeper knows
//!   the session was ended, not expired.
//!
//! The scripts build and test these values with the prelude's helpers (`moving_mark`,
//! `retired_mark`, `is_retired`, `is_ended`, `mark_successor`), from the header's
//! `MARK_RETIRED` and `MARK_ENDED`.

/// The prefix of a retired key's marker (`retired <token>`).
pub(crate) const RETIRED_PREFIX: &str = "retired ";
/// The marker of a key whose session an action ended.
pub(crate) const ENDED: &str = "ended";

/// The marker values as the scripts' header names them: `(Lua name, value)`.
pub(crate) const LUA: &[(&str, &str)] = &[("MARK_RETIRED", RETIRED_PREFIX), ("MARK_ENDED", ENDED)];

/// One value of `__m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Marker {
    /// `<ms> <member>`: a rotation to `member` under way since `since_ms`.
    Moving {
        /// When the freeze was taken, server ms.
        since_ms: u64,
        /// The new id's storage key.
        member: String,
    },
    /// `retired <token>`: the old key of a completed rotation (`token` as the freeze made it,
    /// normally `<ms> <member>`; kept as it is, whatever it holds).
    Retired {
        /// The rotation's token.
        token: String,
    },
    /// `ended`.
    Ended,
}

impl Marker {
    /// The stored value (the Rust side writes markers through [`moving_token`] and
    /// [`retired`]; this, the inverse of [`parse`](Self::parse), is for the round-trip test).
    #[cfg(test)]
    pub(crate) fn encode(&self) -> String {
        match self {
            Marker::Moving { since_ms, member } => moving_token(*since_ms, member),
            Marker::Retired { token } => retired(token),
            Marker::Ended => ENDED.to_string(),
        }
    }

    /// A stored value read back; `None` when it is none of the three (corrupt, or written by
    /// something else).
    pub(crate) fn parse(v: &[u8]) -> Option<Marker> {
        let v = std::str::from_utf8(v).ok()?;
        if v == ENDED {
            return Some(Marker::Ended);
        }
        if let Some(token) = v.strip_prefix(RETIRED_PREFIX) {
            return Some(Marker::Retired {
                token: token.to_string(),
            });
        }
        let (since_ms, member) = split_token(v)?;
        Some(Marker::Moving {
            since_ms,
            member: member.to_string(),
        })
    }

    /// The member the session moved (or is moving) to: a moving marker's, or the one named by
    /// a retired marker's token.
    pub(crate) fn successor(&self) -> Option<&str> {
        match self {
            Marker::Moving { member, .. } => Some(member),
            Marker::Retired { token } => split_token(token).map(|(_, m)| m),
            Marker::Ended => None,
        }
    }
}

/// A rotation's token (and its moving marker): `<ms> <member>`.
pub(crate) fn moving_token(since_ms: u64, member: &str) -> String {
    format!("{since_ms} {member}")
}

/// The marker of a key retired with `token`: `retired <token>`.
pub(crate) fn retired(token: &str) -> String {
    format!("{RETIRED_PREFIX}{token}")
}

/// Whether a stored marker is a retired key's (`is_retired` in the prelude; as there, only
/// the prefix is looked at).
pub(crate) fn is_retired(v: &[u8]) -> bool {
    v.starts_with(RETIRED_PREFIX.as_bytes())
}

/// Whether a stored marker is the `ended` mark (`is_ended` in the prelude).
pub(crate) fn is_ended(v: &[u8]) -> bool {
    v == ENDED.as_bytes()
}

/// The member a stored marker names (moving or retired), if it is well formed.
pub(crate) fn successor(v: &[u8]) -> Option<String> {
    Marker::parse(v)?.successor().map(str::to_string)
}

/// `<ms> <member>`: the digits and a non-empty member.
fn split_token(v: &str) -> Option<(u64, &str)> {
    let (ms, member) = v.split_once(' ')?;
    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) || member.is_empty() {
        return None;
    }
    Some((ms.parse().ok()?, member))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_formats_round_trip() {
        let moving = Marker::Moving {
            since_ms: 1_700_000_000_123,
            member: "abc".into(),
        };
        assert_eq!(moving.encode(), "1700000000123 abc");
        let retired_one = Marker::Retired {
            token: moving.encode(),
        };
        assert_eq!(retired_one.encode(), "retired 1700000000123 abc");
        for m in [moving.clone(), retired_one.clone(), Marker::Ended] {
            assert_eq!(Marker::parse(m.encode().as_bytes()), Some(m));
        }
        assert_eq!(moving.successor(), Some("abc"));
        assert_eq!(retired_one.successor(), Some("abc"));
        assert_eq!(Marker::Ended.successor(), None);
        assert!(is_retired(b"retired x") && !is_retired(b"ended"));
        assert!(is_ended(b"ended") && !is_ended(b"ended "));
        assert_eq!(successor(b"retired 12 m"), Some("m".into()));
        for bad in [&b"12"[..], b" m", b"x m", b"12 ", b"retired nonsense", b""] {
            assert_eq!(successor(bad), None, "{bad:?}");
        }
        assert_eq!(Marker::parse(b"x y"), None);
        assert_eq!(retired("t"), "retired t");
    }
}
