//! The in-memory backend: the Redis semantics, in a mutex-protected map.

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
struct Entry {
    fields: HashMap<String, Vec<u8>>,
    expires: Instant,
}

impl Map {
    /// The live entry at `key`, dropping it if expired (as Redis does lazily).
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        self.ops += 1;
        if self.ops % 1024 == 0 {
            let now = Instant::now();
            self.entries.retain(|_, e| e.expires > now);
        }
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.expires <= Instant::now())
        {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }
}

fn num(e: &Entry, f: &str) -> Option<u64> {
    std::str::from_utf8(e.fields.get(f)?).ok()?.parse().ok()
}

impl MemoryBackend {
    pub(crate) fn load(&self, key: &str, t: Timing) -> Option<Loaded> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.live(key)?;
        let now = now_ms();
        let created = num(e, fields::CREATED).unwrap_or(now);
        let Some(ttl) = ttl_ms(now, created, t) else {
            map.entries.remove(key);
            return None;
        };
        let fields_before = e.fields.clone();
        let stale =
            num(e, fields::TOUCHED).is_none_or(|last| now.saturating_sub(last) >= t.touch_ms);
        if stale {
            e.fields
                .insert(fields::TOUCHED.into(), now.to_string().into_bytes());
            e.expires = Instant::now() + Duration::from_millis(ttl);
        }
        Some(Loaded {
            fields: fields_before,
            touched: stale,
        })
    }

    pub(crate) fn write(&self, key: &str, op: &WriteOp<'_>, t: Timing) -> WriteResult {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let created = match op.mode {
            Mode::Create { created_ms } => {
                if map.live(key).is_some() {
                    return WriteResult::Exists;
                }
                if created_ms == 0 {
                    now
                } else {
                    created_ms
                }
            }
            Mode::Update => match map.live(key) {
                None => return WriteResult::Gone,
                Some(e) => num(e, fields::CREATED).unwrap_or(now),
            },
        };
        let Some(ttl) = ttl_ms(now, created, t) else {
            map.entries.remove(key);
            return WriteResult::Gone;
        };
        let existed = map.entries.remove(key);
        let had_entry = existed.is_some();
        let mut e = existed.unwrap_or_else(|| Entry {
            fields: HashMap::new(),
            expires: Instant::now(),
        });
        let mut incr = 0;
        if let Some((f, by)) = op.incr {
            let cur = match e.fields.get(f) {
                None => Some(0i64),
                Some(raw) => std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok()),
            };
            match cur.and_then(|c| c.checked_add(by)) {
                Some(n) => {
                    incr = n;
                    e.fields.insert(f.to_string(), n.to_string().into_bytes());
                }
                None => {
                    if had_entry {
                        map.entries.insert(key.to_string(), e);
                    }
                    return WriteResult::NotAnInteger;
                }
            }
        }
        if matches!(op.mode, Mode::Create { .. }) {
            e.fields
                .insert(fields::CREATED.into(), created.to_string().into_bytes());
        }
        e.fields
            .insert(fields::TOUCHED.into(), now.to_string().into_bytes());
        for (f, v) in &op.set {
            e.fields.insert(f.to_string(), v.as_bytes().to_vec());
        }
        for f in &op.del {
            e.fields.remove(*f);
        }
        e.expires = Instant::now() + Duration::from_millis(ttl);
        map.entries.insert(key.to_string(), e);
        WriteResult::Written { incr }
    }

    pub(crate) fn delete(&self, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entries.remove(key);
    }
}
