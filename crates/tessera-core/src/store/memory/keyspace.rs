//! The memory store's keyspace: what a Redis server keeps, in one map. Hashes and sorted sets,
//! each key with its deadline in an expiry queue (expiry costs O(expired), as Redis's does),
//! sessions in least-recently-used order for eviction past the byte bound (as
//! `volatile-lru`), and the helpers the scripts' prelude has (trail, marks, index trims).

use super::super::fields;
use crate::layout::marker;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Bytes counted per key beyond its names and values (map entries, queue nodes).
pub(super) const OVERHEAD: usize = 96;

#[derive(Debug, Default)]
pub(super) struct Map {
    pub(super) entries: HashMap<String, Entry>,
    /// (deadline, sequence) -> key: the expiry queue.
    pub(super) expiry: BTreeMap<(Instant, u64), String>,
    /// last use -> session key: eviction order (session hashes only, never user indexes).
    pub(super) lru: BTreeMap<u64, String>,
    pub(super) seq: u64,
    pub(super) bytes: usize,
}

#[derive(Debug)]
pub(super) enum Value {
    Hash(HashMap<String, Vec<u8>>),
    /// member -> score (ms since the epoch)
    ZSet(ZSet),
}

/// A sorted set: every operation O(log n) (a member's score by name, members in score order),
/// its size kept as it changes, as Redis's skiplist + dict.
#[derive(Debug, Default)]
pub(super) struct ZSet {
    pub(super) scores: HashMap<String, u64>,
    pub(super) order: BTreeSet<(u64, String)>,
    /// Bytes counted for its members.
    pub(super) bytes: usize,
}

impl ZSet {
    pub(super) fn get(&self, m: &str) -> Option<u64> {
        self.scores.get(m).copied()
    }

    /// Sets `m`'s score (adds it if new).
    pub(super) fn set(&mut self, m: &str, score: u64) {
        match self.scores.insert(m.to_string(), score) {
            Some(old) => {
                self.order.remove(&(old, m.to_string()));
            }
            None => self.bytes += m.len() + 24,
        }
        self.order.insert((score, m.to_string()));
    }

    pub(super) fn remove(&mut self, m: &str) -> bool {
        match self.scores.remove(m) {
            Some(old) => {
                self.order.remove(&(old, m.to_string()));
                self.bytes -= m.len() + 24;
                true
            }
            None => false,
        }
    }

    /// Removes the members scored below `min`: O(removed · log n).
    pub(super) fn remove_below(&mut self, min: u64) {
        while let Some((s, m)) = self.order.first().cloned() {
            if s >= min {
                break;
            }
            self.remove(&m);
        }
    }

    pub(super) fn top(&self) -> Option<u64> {
        self.order.last().map(|(s, _)| *s)
    }

    pub(super) fn len(&self) -> usize {
        self.scores.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Members scored at least `min`, lowest score first.
    pub(super) fn scored_at_least(&self, min: u64) -> impl Iterator<Item = &String> {
        self.order.range((min, String::new())..).map(|(_, m)| m)
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) value: Value,
    pub(super) expires: Option<(Instant, u64)>,
    /// Hashes: the last TTL refresh, on this process's monotonic clock (the touch decision
    /// never reads the wall clock, so a clock step cannot stop the TTL from sliding).
    pub(super) refreshed: Instant,
    /// Hashes: position in the LRU order.
    pub(super) used: u64,
    /// Hashes: a rotation in progress (since, token).
    pub(super) frozen: Option<(Instant, String)>,
    pub(super) bytes: usize,
}

impl Entry {
    pub(super) fn size(key: &str, value: &Value) -> usize {
        OVERHEAD
            + key.len()
            + match value {
                Value::Hash(h) => h.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>(),
                Value::ZSet(z) => z.bytes,
            }
    }
}

impl Map {
    pub(super) fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Removes every key whose deadline has passed: O(expired), as Redis's expiry does.
    pub(super) fn expire_due(&mut self, now: Instant) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.remove(&key);
        }
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        if let Some(at) = e.expires {
            self.expiry.remove(&at);
        }
        if matches!(e.value, Value::Hash(_)) {
            self.lru.remove(&e.used);
        }
        self.bytes -= e.bytes;
        Some(e)
    }

    /// The live entry at `key` (expired keys are gone: every operation starts with
    /// `expire_due`).
    pub(super) fn get(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.get_mut(key)
    }

    pub(super) fn hash(&mut self, key: &str) -> Option<&mut HashMap<String, Vec<u8>>> {
        match &mut self.entries.get_mut(key)?.value {
            Value::Hash(h) => Some(h),
            Value::ZSet(_) => None,
        }
    }

    /// The sorted set at `key`, created empty (no TTL yet) if there is none.
    pub(super) fn zset_entry(&mut self, key: &str, now: Instant) -> &mut Entry {
        if !matches!(self.get(key).map(|e| &e.value), Some(Value::ZSet(_))) {
            self.insert(key, Value::ZSet(ZSet::default()), now);
        }
        self.get(key).expect("inserted above")
    }

    pub(super) fn insert(&mut self, key: &str, value: Value, now: Instant) {
        self.remove(key);
        let is_hash = matches!(value, Value::Hash(_));
        let used = self.next();
        let bytes = Entry::size(key, &value);
        if is_hash {
            self.lru.insert(used, key.to_string());
        }
        self.bytes += bytes;
        self.entries.insert(
            key.to_string(),
            Entry {
                value,
                expires: None,
                refreshed: now,
                used,
                frozen: None,
                bytes,
            },
        );
    }

    pub(super) fn set_expiry(&mut self, key: &str, at: Instant) {
        let seq = self.next();
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(old) = e.expires.replace((at, seq)) {
            self.expiry.remove(&old);
        }
        self.expiry.insert((at, seq), key.to_string());
    }

    /// Marks a session as just used (LRU order).
    pub(super) fn used(&mut self, key: &str) {
        let tick = self.next();
        if let Some(e) = self.entries.get_mut(key) {
            if matches!(e.value, Value::Hash(_)) {
                self.lru.remove(&e.used);
                e.used = tick;
                self.lru.insert(tick, key.to_string());
            }
        }
    }

    /// Recounts `key`'s size after a change and evicts least recently used sessions (never
    /// `key` itself) while the total is over `max`.
    pub(super) fn resized(&mut self, key: &str, max: usize) {
        if let Some(e) = self.entries.get_mut(key) {
            let bytes = Entry::size(key, &e.value);
            self.bytes = self.bytes - e.bytes + bytes;
            e.bytes = bytes;
        }
        while self.bytes > max {
            let Some((_, victim)) = self.lru.first_key_value() else {
                break;
            };
            if victim == key {
                break;
            }
            let victim = victim.clone();
            self.remove(&victim);
        }
    }
}

/// A key retired by a rotation (see release.lua): only `__m`, a retired marker.
pub(super) fn is_tombstone(h: &HashMap<String, Vec<u8>>) -> bool {
    !h.contains_key(fields::CREATED) && h.get(fields::MOVING).is_some_and(|m| marker::is_retired(m))
}

/// A key whose session an admin action ended before it was created (see `end_if`).
pub(super) fn is_ended(h: &HashMap<String, Vec<u8>>) -> bool {
    !h.contains_key(fields::CREATED) && h.get(fields::MOVING).is_some_and(|m| marker::is_ended(m))
}

pub(super) fn user_field_count(h: &HashMap<String, Vec<u8>>) -> usize {
    h.keys().filter(|k| fields::is_user_field(k)).count()
}

/// Appends entries to a session's activity trail, dropping the oldest past `max` (as the
/// scripts' `append_trail`).
pub(super) fn append_trail(
    h: &mut HashMap<String, Vec<u8>>,
    now: u64,
    max: usize,
    records: &[&str],
) {
    let mut lines: Vec<String> = h
        .get(fields::TRAIL)
        .map(|v| {
            String::from_utf8_lossy(v)
                .split('\n')
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    lines.extend(records.iter().map(|a| format!("{now} {a}")));
    let excess = lines.len().saturating_sub(max.max(1));
    lines.drain(..excess);
    h.insert(fields::TRAIL.into(), lines.join("\n").into_bytes());
}

/// Leaves an 'ended' mark at `key` for `mark_ms` (see end_if.lua and take.lua).
pub(super) fn mark_ended(map: &mut Map, key: &str, now: Instant, mark_ms: u64) {
    let h = HashMap::from([(
        fields::MOVING.to_string(),
        marker::ENDED.as_bytes().to_vec(),
    )]);
    map.insert(key, Value::Hash(h), now);
    map.set_expiry(key, now + ms(mark_ms));
}

/// A field-index key after a change (as index_trim in the scripts' prelude): members whose
/// deadline (score) is before `wall` go, and the key lives until its latest deadline (a key
/// left empty is gone).
pub(super) fn index_trim(map: &mut Map, key: &str, now: Instant, wall: u64) {
    let top = match map.get(key).map(|e| &mut e.value) {
        Some(Value::ZSet(z)) => {
            z.remove_below(wall);
            z.top()
        }
        _ => return,
    };
    match top {
        None => {
            map.remove(key);
        }
        Some(top) => {
            map.set_expiry(key, now + ms(top.saturating_sub(wall).max(1)));
            map.resized(key, usize::MAX);
        }
    }
}

pub(super) fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}
