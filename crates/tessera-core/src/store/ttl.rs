//! Lifetime maths both backends share with the Lua scripts: a session's remaining TTL under
//! its idle timeout and absolute deadline, its own ("remember me") idle timeout, the clock.

use super::Timing;
use std::time::Duration;

/// The idle timeout of a session with its own persistent expiry (`fields::OWN_EXPIRY` =
/// `p <ms>`), at most `longest_ms`; `None` for the configured one (no field, or `b`: a browser
/// session keeps the configured idle timeout). Mirrors `own_idle` in the scripts' prelude.
pub(crate) fn own_idle_ms(v: Option<&Vec<u8>>, longest_ms: u64) -> Option<u64> {
    let v = std::str::from_utf8(v?).ok()?;
    let ms = v.strip_prefix("p ")?;
    if !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n.min(longest_ms.max(1)))
}

/// Remaining lifetime of a session: the idle timeout, capped by its absolute deadline.
/// `None` when the absolute deadline has passed. Mirrors the Lua scripts.
pub(crate) fn ttl_ms(now: u64, created: u64, t: Timing) -> Option<u64> {
    if t.absolute_ms == 0 {
        return Some(t.idle_ms);
    }
    let deadline = created.saturating_add(t.absolute_ms);
    if now >= deadline {
        None
    } else {
        Some(t.idle_ms.min(deadline - now))
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
