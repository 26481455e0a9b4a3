//! The in-memory backend: the Redis semantics (hashes, sorted-set user index, TTLs) in a
//! mutex-protected map. Same rules as the Lua scripts, so the behaviour suite runs unchanged.

use super::{fields, now_ms, ttl_ms, Loaded, Mode, Timing, WriteOp, WriteResult};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct MemoryBackend {
    map: Mutex<Map>,
}

#[derive(Debug, Default)]
struct Map {
    entries: HashMap<String, Entry>,
    ops: u64,
}

#[derive(Debug)]
enum Value {
    Hash(HashMap<String, Vec<u8>>),
    /// member -> score (ms since the epoch)
    ZSet(HashMap<String, u64>),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
    fn hash(&mut self) -> Option<&mut HashMap<String, Vec<u8>>> {
        match &mut self.value {
            Value::Hash(h) => Some(h),
            Value::ZSet(_) => None,
        }
    }
}

impl Map {
    /// The live entry at `key`, dropping it if expired (as Redis does lazily), with a sweep of
    /// all expired entries every 1024 operations so memory stays bounded.
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        self.ops += 1;
        let now = Instant::now();
        if self.ops % 1024 == 0 {
            self.entries.retain(|_, e| e.live(now));
        }
        if self.entries.get(key).is_some_and(|e| !e.live(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn live_hash(&mut self, key: &str) -> Option<&mut HashMap<String, Vec<u8>>> {
        self.live(key).and_then(Entry::hash)
    }
}

fn num(h: &HashMap<String, Vec<u8>>, f: &str) -> Option<u64> {
    std::str::from_utf8(h.get(f)?).ok()?.parse().ok()
}

fn lock(m: &Mutex<Map>) -> std::sync::MutexGuard<'_, Map> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryBackend {
    pub(crate) fn load(&self, key: &str, t: Timing) -> Option<Loaded> {
        let mut map = lock(&self.map);
        let now = now_ms();
        let e = map.live(key)?;
        let h = e.hash()?;
        let created = num(h, fields::CREATED).unwrap_or(now);
        let Some(ttl) = ttl_ms(now, created, t) else {
            map.entries.remove(key);
            return None;
        };
        let before = h.clone();
        let stale =
            num(h, fields::TOUCHED).is_none_or(|last| now.saturating_sub(last) >= t.touch_ms);
        if stale {
            h.insert(fields::TOUCHED.into(), now.to_string().into_bytes());
            e.expires = Some(Instant::now() + Duration::from_millis(ttl));
        }
        Some(Loaded {
            fields: before,
            touched: stale,
        })
    }

    pub(crate) fn write(&self, key: &str, op: &WriteOp<'_>, t: Timing) -> WriteResult {
        let mut map = lock(&self.map);
        let now = now_ms();
        let (created, touched_at, user) = match op.mode {
            Mode::Create { created_ms } => {
                if map.live(key).is_some() {
                    return WriteResult::Exists;
                }
                (if created_ms == 0 { now } else { created_ms }, None, None)
            }
            Mode::Update => match map.live_hash(key) {
                None => return WriteResult::Gone,
                Some(h) => match num(h, fields::CREATED) {
                    Some(c) => (
                        c,
                        num(h, fields::TOUCHED),
                        h.get(fields::USER)
                            .map(|u| String::from_utf8_lossy(u).into_owned()),
                    ),
                    None => return WriteResult::Gone,
                },
            },
        };
        let creating = matches!(op.mode, Mode::Create { .. });
        let touched =
            creating || touched_at.is_none_or(|last| now.saturating_sub(last) >= t.touch_ms);
        let Some(ttl) = ttl_ms(now, created, t) else {
            map.entries.remove(key);
            return WriteResult::Gone;
        };
        let mut fresh = HashMap::new();
        let h = match op.mode {
            Mode::Create { .. } => &mut fresh,
            Mode::Update => map.live_hash(key).expect("checked above"),
        };
        let mut incr = 0;
        if let Some((f, by)) = op.incr {
            let cur = match h.get(f) {
                None => Some(0i64),
                Some(raw) => std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok()),
            };
            match cur.and_then(|c| c.checked_add(by)) {
                Some(n) => {
                    incr = n;
                    h.insert(f.to_string(), n.to_string().into_bytes());
                }
                None => return WriteResult::NotAnInteger,
            }
        }
        for (f, v) in &op.set {
            h.insert(f.to_string(), v.as_bytes().to_vec());
        }
        for f in &op.del {
            h.remove(*f);
        }
        if touched && !creating {
            h.insert(fields::TOUCHED.into(), now.to_string().into_bytes());
            if let Some(e) = map.entries.get_mut(key) {
                e.expires = Some(Instant::now() + Duration::from_millis(ttl));
            }
        }
        if let Mode::Create { .. } = op.mode {
            fresh.insert(fields::CREATED.into(), created.to_string().into_bytes());
            fresh.insert(fields::TOUCHED.into(), now.to_string().into_bytes());
            map.entries.insert(
                key.to_string(),
                Entry {
                    value: Value::Hash(fresh),
                    expires: Some(Instant::now() + Duration::from_millis(ttl)),
                },
            );
        }
        WriteResult::Written {
            incr,
            touched: touched && !creating,
            user,
        }
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        let mut map = lock(&self.map);
        map.live(key).is_some() && map.entries.remove(key).is_some()
    }

    pub(crate) fn peek(&self, key: &str, names: &[&str]) -> Option<Vec<Option<Vec<u8>>>> {
        let mut map = lock(&self.map);
        let h = map.live_hash(key)?;
        Some(names.iter().map(|n| h.get(*n).cloned()).collect())
    }

    pub(crate) fn index_add(
        &self,
        key: &str,
        member: &str,
        bound_ms: u64,
        max: usize,
    ) -> Vec<String> {
        let mut map = lock(&self.map);
        let now = now_ms();
        let score = now + bound_ms;
        if map.live(key).is_none() {
            map.entries.insert(
                key.to_string(),
                Entry {
                    value: Value::ZSet(HashMap::new()),
                    expires: None,
                },
            );
        }
        let e = map.entries.get_mut(key).expect("inserted above");
        let Value::ZSet(z) = &mut e.value else {
            return Vec::new();
        };
        let s = z.entry(member.to_string()).or_insert(score);
        *s = (*s).max(score);
        z.retain(|_, s| *s >= now);
        let top = z.values().copied().max().unwrap_or(now);
        let want = Instant::now() + Duration::from_millis(top.saturating_sub(now));
        e.expires = Some(e.expires.map_or(want, |cur| cur.max(want)));
        if max == 0 || z.len() <= max {
            return Vec::new();
        }
        let mut by_age: Vec<(&String, &u64)> =
            z.iter().filter(|(m, _)| m.as_str() != member).collect();
        by_age.sort_by_key(|(m, s)| (**s, (*m).clone()));
        by_age
            .into_iter()
            .take(z.len() - max)
            .map(|(m, _)| m.clone())
            .collect()
    }

    pub(crate) fn index_members(&self, key: &str) -> Vec<String> {
        let mut map = lock(&self.map);
        let now = now_ms();
        match map.live(key).map(|e| &e.value) {
            Some(Value::ZSet(z)) => {
                let mut v: Vec<(&String, &u64)> = z.iter().filter(|(_, s)| **s >= now).collect();
                v.sort_by_key(|(m, s)| (**s, (*m).clone()));
                v.into_iter().map(|(m, _)| m.clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn index_remove(&self, key: &str, members: &[String]) {
        let mut map = lock(&self.map);
        let empty = match map.live(key).map(|e| &mut e.value) {
            Some(Value::ZSet(z)) => {
                for m in members {
                    z.remove(m);
                }
                z.is_empty()
            }
            _ => false,
        };
        if empty {
            map.entries.remove(key);
        }
    }

    #[cfg(test)]
    pub(crate) fn key_count(&self) -> usize {
        let mut map = lock(&self.map);
        let now = Instant::now();
        map.entries.retain(|_, e| e.live(now));
        map.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Timing;

    #[test]
    fn a_users_index_and_sessions_all_disappear_after_expiry() {
        let m = MemoryBackend::default();
        let t = Timing {
            idle_ms: 100,
            touch_ms: 10,
            absolute_ms: 0,
        };
        for k in ["s1", "s2"] {
            let op = WriteOp {
                mode: Mode::Create { created_ms: 0 },
                set: vec![("__u", "ann")],
                del: vec![],
                incr: None,
            };
            assert!(matches!(
                m.write(k, &op, t),
                WriteResult::Written { incr: 0, .. }
            ));
            assert!(m.index_add("user:ann:sessions", k, 200, 0).is_empty());
        }
        assert_eq!(m.key_count(), 3);
        assert_eq!(m.index_members("user:ann:sessions").len(), 2);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            m.key_count(),
            1,
            "sessions expired, the index outlives them by its bound"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(m.key_count(), 0, "nothing of the user is left");
    }

    #[test]
    fn device_limit_picks_the_lowest_bounds_but_never_the_new_member() {
        let m = MemoryBackend::default();
        assert!(m.index_add("i", "a", 1000, 2).is_empty());
        std::thread::sleep(Duration::from_millis(5));
        assert!(m.index_add("i", "b", 1000, 2).is_empty());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(m.index_add("i", "c", 1000, 2), vec!["a".to_string()]);
        assert_eq!(
            m.index_add("i", "c", 1000, 1),
            vec!["a".to_string(), "b".to_string()]
        );
    }
}
