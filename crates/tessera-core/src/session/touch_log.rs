//! What this process has seen of each session's TTL refreshes, so a read inside the touch
//! interval can be one plain `HGETALL`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When this process last saw each session's TTL refreshed, on its own monotonic clock, keyed
/// by a 64-bit hash of the storage key. Each instant is an estimate that errs towards "older"
/// (taken before the command that observed the refresh was sent, minus the age the store
/// reported), so "seen refreshed less than a touch interval ago" is never wrong in the
/// dangerous direction; such a load needs no refresh and can be a plain `HGETALL` instead of
/// the refresh script. No wall clock enters the decision: an app clock that is off from the
/// server's, or steps (VM resume, NTP), cannot stop the TTL from sliding.
///
/// Bounded with two generations: when the current map reaches `TOUCH_LOG_CAP` entries it
/// becomes the previous one (the older previous one is dropped), so recently seen sessions
/// stay known; at most 2 x `TOUCH_LOG_CAP` entries, about 6 MB. Forgetting costs only a script
/// load, never correctness.
pub(super) struct TouchLog {
    maps: std::sync::Mutex<[HashMap<u64, Instant>; 2]>,
}

const TOUCH_LOG_CAP: usize = 100_000;

impl TouchLog {
    pub(super) fn new() -> Self {
        TouchLog {
            maps: std::sync::Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }

    fn slot(key: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    /// The session at `key` was refreshed at `at` (or later).
    pub(super) fn note(&self, key: &str, at: Instant) {
        let slot = Self::slot(key);
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let known = m[1].get(&slot).copied();
        if m[0].len() >= TOUCH_LOG_CAP && !m[0].contains_key(&slot) {
            m[1] = std::mem::take(&mut m[0]);
        }
        let e = m[0].entry(slot).or_insert(at);
        *e = (*e).max(at).max(known.unwrap_or(at));
    }

    /// Forgets `key` (its session ended or moved).
    pub(super) fn forget(&self, key: &str) {
        let slot = Self::slot(key);
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        m[0].remove(&slot);
        m[1].remove(&slot);
    }

    /// When the session at `key` was last seen refreshed (the same estimate, erring towards
    /// "older"), if this process knows.
    pub(super) fn last(&self, key: &str) -> Option<Instant> {
        let slot = Self::slot(key);
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        m[0].get(&slot).or_else(|| m[1].get(&slot)).copied()
    }

    /// Refreshed less than `touch` ago (with a small margin).
    pub(super) fn fresh(&self, key: &str, touch: Duration) -> bool {
        let margin = (touch / 10).min(Duration::from_secs(1));
        let slot = Self::slot(key);
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let seen = m[0].get(&slot).or_else(|| m[1].get(&slot));
        seen.is_some_and(|&t| t.elapsed() + margin < touch)
    }
}

#[cfg(test)]
mod touch_log_tests {
    use super::*;

    #[test]
    fn recent_knowledge_survives_a_full_generation() {
        let log = TouchLog::new();
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        log.note("hot", now);
        for i in 0..TOUCH_LOG_CAP + 10 {
            log.note(&format!("k{i}"), now);
        }
        assert!(
            log.fresh("hot", minute),
            "one generation back is still known"
        );
        assert!(!log.fresh("never-seen", minute));
        if let Some(long_ago) = now.checked_sub(2 * minute) {
            log.note("old", long_ago);
            assert!(!log.fresh("old", minute), "seen refreshed too long ago");
        }
        log.forget("hot");
        assert!(!log.fresh("hot", minute), "forgotten");
        let sizes = {
            let m = log.maps.lock().unwrap();
            m[0].len() + m[1].len()
        };
        assert!(sizes <= 2 * TOUCH_LOG_CAP, "bounded: {sizes}");
    }
}
