//! The in-memory backend: the Redis semantics (hashes, sorted-set user index, TTLs) in a
//! mutex-protected map. Same rules as the Lua scripts, so the behaviour suite runs unchanged.
//!
//! Bounded like a Redis with `maxmemory` and `volatile-lru`: when the data passes
//! `max_bytes`, the least recently used sessions are evicted. Expiry costs O(expired): keys
//! wait in a queue ordered by deadline, and each operation pops only those that are due.
//!
//! About 500 lines: the whole Redis semantics tessera relies on (hashes, sorted sets, TTLs,
//! eviction, the freeze), kept in one place so it can be compared with the Lua scripts.

use super::{
    fields, now_ms, own_idle_ms, ttl_ms, EndIf, Freeze, Load, Loaded, Mode, Refresh, Release,
    SetIfAbsent, Timing, WriteOp, WriteResult,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a rotation's freeze holds on the memory store (see freeze.lua).
const FREEZE: Duration = Duration::from_secs(2);

/// Bytes counted per key beyond its names and values (map entries, queue nodes).
const OVERHEAD: usize = 96;

#[derive(Debug)]
pub(crate) struct MemoryBackend {
    map: Mutex<Map>,
    max_bytes: usize,
    events: Box<Mutex<events::MemEvents>>,
}

mod events;

impl MemoryBackend {
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryBackend {
            map: Mutex::new(Map::default()),
            max_bytes,
            events: Box::new(Mutex::new(events::MemEvents::default())),
        }
    }
}

#[derive(Debug, Default)]
struct Map {
    entries: HashMap<String, Entry>,
    /// (deadline, sequence) -> key: the expiry queue.
    expiry: BTreeMap<(Instant, u64), String>,
    /// last use -> session key: eviction order (session hashes only, never user indexes).
    lru: BTreeMap<u64, String>,
    seq: u64,
    bytes: usize,
}

#[derive(Debug)]
enum Value {
    Hash(HashMap<String, Vec<u8>>),
    /// member -> score (ms since the epoch)
    ZSet(ZSet),
}

/// A sorted set: every operation O(log n) (a member's score by name, members in score order),
/// its size kept as it changes, as Redis's skiplist + dict.
#[derive(Debug, Default)]
struct ZSet {
    scores: HashMap<String, u64>,
    order: BTreeSet<(u64, String)>,
    /// Bytes counted for its members.
    bytes: usize,
}

impl ZSet {
    fn get(&self, m: &str) -> Option<u64> {
        self.scores.get(m).copied()
    }

    /// Sets `m`'s score (adds it if new).
    fn set(&mut self, m: &str, score: u64) {
        match self.scores.insert(m.to_string(), score) {
            Some(old) => {
                self.order.remove(&(old, m.to_string()));
            }
            None => self.bytes += m.len() + 24,
        }
        self.order.insert((score, m.to_string()));
    }

    fn remove(&mut self, m: &str) -> bool {
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
    fn remove_below(&mut self, min: u64) {
        while let Some((s, m)) = self.order.first().cloned() {
            if s >= min {
                break;
            }
            self.remove(&m);
        }
    }

    fn top(&self) -> Option<u64> {
        self.order.last().map(|(s, _)| *s)
    }

    fn len(&self) -> usize {
        self.scores.len()
    }

    fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Members scored at least `min`, lowest score first.
    fn scored_at_least(&self, min: u64) -> impl Iterator<Item = &String> {
        self.order.range((min, String::new())..).map(|(_, m)| m)
    }
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Option<(Instant, u64)>,
    /// Hashes: the last TTL refresh, on this process's monotonic clock (the touch decision
    /// never reads the wall clock, so a clock step cannot stop the TTL from sliding).
    refreshed: Instant,
    /// Hashes: position in the LRU order.
    used: u64,
    /// Hashes: a rotation in progress (since, token).
    frozen: Option<(Instant, String)>,
    bytes: usize,
}

impl Entry {
    fn size(key: &str, value: &Value) -> usize {
        OVERHEAD
            + key.len()
            + match value {
                Value::Hash(h) => h.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>(),
                Value::ZSet(z) => z.bytes,
            }
    }
}

impl Map {
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Removes every key whose deadline has passed: O(expired), as Redis's expiry does.
    fn expire_due(&mut self, now: Instant) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.remove(&key);
        }
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
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
    fn get(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.get_mut(key)
    }

    fn hash(&mut self, key: &str) -> Option<&mut HashMap<String, Vec<u8>>> {
        match &mut self.entries.get_mut(key)?.value {
            Value::Hash(h) => Some(h),
            Value::ZSet(_) => None,
        }
    }

    /// The sorted set at `key`, created empty (no TTL yet) if there is none.
    fn zset_entry(&mut self, key: &str, now: Instant) -> &mut Entry {
        if !matches!(self.get(key).map(|e| &e.value), Some(Value::ZSet(_))) {
            self.insert(key, Value::ZSet(ZSet::default()), now);
        }
        self.get(key).expect("inserted above")
    }

    fn insert(&mut self, key: &str, value: Value, now: Instant) {
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

    fn set_expiry(&mut self, key: &str, at: Instant) {
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
    fn used(&mut self, key: &str) {
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
    fn resized(&mut self, key: &str, max: usize) {
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

/// A key retired by a rotation (see release.lua): only `__m` = "retired <token>".
fn is_tombstone(h: &HashMap<String, Vec<u8>>) -> bool {
    !h.contains_key(fields::CREATED)
        && h.get(fields::MOVING)
            .is_some_and(|m| m.starts_with(b"retired "))
}

/// A key whose session an admin action ended before it was created (see `end_if`).
fn is_ended(h: &HashMap<String, Vec<u8>>) -> bool {
    !h.contains_key(fields::CREATED) && h.get(fields::MOVING).is_some_and(|m| m == b"ended")
}

fn user_field_count(h: &HashMap<String, Vec<u8>>) -> usize {
    h.keys().filter(|k| !k.starts_with("__")).count()
}

/// Appends entries to a session's activity trail, dropping the oldest past `max` (as the
/// scripts' `append_trail`).
fn append_trail(h: &mut HashMap<String, Vec<u8>>, now: u64, max: usize, records: &[&str]) {
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
fn mark_ended(map: &mut Map, key: &str, now: Instant, mark_ms: u64) {
    let h = HashMap::from([(fields::MOVING.to_string(), b"ended".to_vec())]);
    map.insert(key, Value::Hash(h), now);
    map.set_expiry(key, now + ms(mark_ms));
}

/// A field-index key after a change (as index_trim in the scripts' prelude): members whose
/// deadline (score) is before `wall` go, and the key lives until its latest deadline (a key
/// left empty is gone).
fn index_trim(map: &mut Map, key: &str, now: Instant, wall: u64) {
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

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

impl MemoryBackend {
    fn lock(&self) -> (std::sync::MutexGuard<'_, Map>, Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.expire_due(now);
        (map, now)
    }

    pub(crate) fn load(&self, key: &str, t: Timing) -> Load {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        let Some(e) = map.get(key) else {
            return Load::Gone;
        };
        let Value::Hash(h) = &mut e.value else {
            return Load::Gone;
        };
        if is_tombstone(h) {
            return Load::Moved;
        }
        if !h.contains_key(fields::CREATED) {
            return Load::Gone; // not a session hash
        }
        let created = fields::ms(h, fields::CREATED).unwrap_or(wall);
        let t = Timing {
            idle_ms: own_idle_ms(h.get(fields::OWN_EXPIRY), t.longest_ms).unwrap_or(t.idle_ms),
            ..t
        };
        let Some(ttl) = ttl_ms(wall, created, t) else {
            map.remove(key);
            return Load::Gone;
        };
        // Fields past their lifetime go now (as a load script removes them on Redis).
        let dropped = !fields::drop_expired(h, wall).is_empty();
        let before = h.clone();
        let age = now.duration_since(e.refreshed);
        let refresh = if age >= ms(t.touch_ms) {
            h.insert(fields::TOUCHED.into(), wall.to_string().into_bytes());
            e.refreshed = now;
            map.set_expiry(key, now + ms(ttl));
            Refresh::Done
        } else {
            Refresh::NotDue {
                age_ms: Some(age.as_millis() as u64),
            }
        };
        map.used(key);
        if dropped {
            map.resized(key, self.max_bytes);
        }
        Load::Found(Loaded {
            fields: before,
            refresh,
            cached: false,
        })
    }

    pub(crate) fn write(&self, key: &str, op: &WriteOp<'_>, t: Timing) -> WriteResult {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        if op.not_after_ms > 0 && wall > op.not_after_ms {
            return WriteResult::TooLate;
        }
        let creating = matches!(op.mode, Mode::Create { .. });
        let mut t = t;
        let (created, due, user) = match op.mode {
            Mode::Create { created_ms } => {
                if let Some(e) = map.get(key) {
                    // An 'ended' tombstone (see `end_if`): this id's session was ended before
                    // its create arrived.
                    return match &e.value {
                        Value::Hash(h) if is_ended(h) => WriteResult::Gone,
                        _ => WriteResult::Exists,
                    };
                }
                (if created_ms == 0 { wall } else { created_ms }, true, None)
            }
            Mode::Update => {
                let Some(e) = map.get(key) else {
                    return WriteResult::Gone;
                };
                if let Some((since, _)) = &e.frozen {
                    if now.duration_since(*since) < FREEZE {
                        return WriteResult::Moved;
                    }
                    e.frozen = None; // a stale freeze: this write wins
                }
                let due = now.duration_since(e.refreshed) >= ms(t.touch_ms);
                let Value::Hash(h) = &e.value else {
                    return WriteResult::Gone;
                };
                if is_tombstone(h) {
                    return WriteResult::Moved;
                }
                if !h.contains_key(fields::CREATED) {
                    return WriteResult::Gone;
                }
                let c = fields::ms(h, fields::CREATED).unwrap_or(wall);
                let user = h
                    .get(fields::USER)
                    .map(|u| String::from_utf8_lossy(u).into_owned());
                // The session's own expiry, unless this write changes it (as write.lua).
                let changes_own = op.set.iter().any(|(f, _)| *f == fields::OWN_EXPIRY)
                    || op.del.contains(&fields::OWN_EXPIRY);
                if !changes_own {
                    t.idle_ms =
                        own_idle_ms(h.get(fields::OWN_EXPIRY), t.longest_ms).unwrap_or(t.idle_ms);
                }
                (c, due || changes_own, user)
            }
        };
        let Some(ttl) = ttl_ms(wall, created, t) else {
            map.remove(key);
            return WriteResult::Gone;
        };
        if creating {
            map.insert(key, Value::Hash(HashMap::new()), now);
        }
        let h = map.hash(key).expect("a live hash");
        let mut incr = 0;
        if let Some((f, _)) = op.incr {
            if op.max_fields > 0 && !h.contains_key(f) && user_field_count(h) >= op.max_fields {
                if creating {
                    map.remove(key);
                }
                return WriteResult::TooManyFields;
            }
        }
        if let Some((f, by)) = op.incr {
            // A field past its lifetime is counted from zero (as write.lua does).
            let stamp = format!("{}{f}", fields::EXPIRES);
            if fields::ms(h, &stamp).is_some_and(|at| at <= wall) {
                h.remove(f);
                h.remove(&stamp);
            }
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
                None => {
                    if creating {
                        map.remove(key);
                    }
                    return WriteResult::NotAnInteger;
                }
            }
        }
        for (f, v) in &op.set {
            h.insert(f.to_string(), v.as_bytes().to_vec());
        }
        for f in &op.del {
            h.remove(*f);
        }
        for (f, ttl) in &op.expire {
            h.insert(
                format!("{}{f}", fields::EXPIRES),
                wall.saturating_add(*ttl).to_string().into_bytes(),
            );
        }
        if !op.records.is_empty() {
            append_trail(h, wall, t.trail_max, &op.records);
        }
        if creating {
            h.insert(fields::CREATED.into(), created.to_string().into_bytes());
        }
        if due {
            h.insert(fields::TOUCHED.into(), wall.to_string().into_bytes());
            if let Some(e) = map.get(key) {
                e.refreshed = now;
            }
            map.set_expiry(key, now + ms(ttl));
        }
        map.used(key);
        map.resized(key, self.max_bytes);
        WriteResult::Written {
            incr,
            refreshed: due && !creating,
            user,
        }
    }

    /// Sets `field` of the live session at `key` unless it holds a value (as set_if_absent.lua).
    pub(crate) fn set_if_absent(&self, key: &str, field: &str, value: &str) -> SetIfAbsent {
        let (mut map, now) = self.lock();
        let Some(e) = map.get(key) else {
            return SetIfAbsent::Gone;
        };
        if e.frozen
            .as_ref()
            .is_some_and(|(since, _)| now.duration_since(*since) < FREEZE)
        {
            return SetIfAbsent::Moved;
        }
        let Value::Hash(h) = &mut e.value else {
            return SetIfAbsent::Gone;
        };
        if is_tombstone(h) {
            return SetIfAbsent::Moved;
        }
        if !h.contains_key(fields::CREATED) {
            return SetIfAbsent::Gone;
        }
        let held = h
            .entry(field.to_string())
            .or_insert_with(|| value.as_bytes().to_vec());
        let held = String::from_utf8_lossy(held).into_owned();
        map.used(key);
        map.resized(key, self.max_bytes);
        SetIfAbsent::Holds(held)
    }

    pub(crate) fn freeze(&self, key: &str, new_member: &str, t: Timing) -> Freeze {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        let seq = map.next();
        let Some(e) = map.get(key) else {
            return Freeze::Gone;
        };
        let Value::Hash(h) = &e.value else {
            return Freeze::Gone;
        };
        if is_tombstone(h) {
            return Freeze::Moved;
        }
        // A corrupt `__c` counts as "now", as in the scripts.
        if !h.contains_key(fields::CREATED) {
            // Not a session (an 'ended' mark stays: see `take`).
            return Freeze::Gone;
        }
        let live = ttl_ms(wall, fields::ms(h, fields::CREATED).unwrap_or(wall), t).is_some();
        if !live {
            map.remove(key);
            return Freeze::Gone;
        }
        if e.frozen
            .as_ref()
            .is_some_and(|(since, _)| now.duration_since(*since) < FREEZE)
        {
            return Freeze::Moved;
        }
        let token = format!("{seq} {new_member}");
        e.frozen = Some((now, token.clone()));
        Freeze::Frozen {
            token,
            fields: h.clone(),
        }
    }

    pub(crate) fn release(&self, key: &str, token: &str, retire: bool) -> Release {
        let (mut map, now) = self.lock();
        let retired = format!("retired {token}");
        let Some(e) = map.get(key) else {
            return Release::Gone;
        };
        if let Value::Hash(h) = &e.value {
            if h.get(fields::MOVING).map(Vec::as_slice) == Some(retired.as_bytes()) {
                return Release::Retired;
            }
        }
        if e.frozen.as_ref().map(|(_, t)| t.as_str()) != Some(token) {
            return Release::Taken;
        }
        if retire {
            let tombstone = HashMap::from([(fields::MOVING.to_string(), retired.into_bytes())]);
            map.insert(key, Value::Hash(tombstone), now);
            map.set_expiry(key, now + super::TOMBSTONE);
        } else {
            e.frozen = None;
        }
        Release::Done
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        let (mut map, _) = self.lock();
        map.remove(key).is_some()
    }

    pub(crate) fn peek(&self, key: &str, names: &[&str]) -> Option<Vec<Option<Vec<u8>>>> {
        let (mut map, _) = self.lock();
        let h = map.hash(key)?;
        h.contains_key(fields::CREATED)
            .then(|| names.iter().map(|n| h.get(*n).cloned()).collect())
    }

    /// `names` of the hash at `key`, whatever it holds; `None` where it holds none of them.
    /// `names` of each hash in `keys`, all read under one lock: one moment's view, so a login
    /// moving a session cannot run between two of the reads (a query would see the old id
    /// before its move and the new one after it, and count the session twice).
    pub(crate) fn peek_raw(
        &self,
        keys: &[String],
        names: &[&str],
    ) -> Vec<Option<Vec<Option<Vec<u8>>>>> {
        let (mut map, _) = self.lock();
        keys.iter()
            .map(|key| {
                let e = map.entries.get_mut(key)?;
                let Value::Hash(h) = &e.value else {
                    return None;
                };
                // A freeze is the `__m` field in Redis (freeze.lua), a flag of the entry here:
                // read as the field, so a query sees a session being moved the same way.
                let frozen = e.frozen.as_ref().map(|(_, token)| token.as_bytes());
                let vals: Vec<Option<Vec<u8>>> = names
                    .iter()
                    .map(|n| match (h.get(*n), frozen) {
                        (None, Some(token)) if *n == fields::MOVING => Some(token.to_vec()),
                        (v, _) => v.cloned(),
                    })
                    .collect();
                vals.iter().any(Option::is_some).then_some(vals)
            })
            .collect()
    }

    pub(crate) fn index_add(
        &self,
        key: &str,
        member: &str,
        bound_ms: u64,
        max: usize,
        leaving: Option<&str>,
    ) -> Vec<String> {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        let score = wall + bound_ms;
        let e = map.zset_entry(key, now);
        let Value::ZSet(z) = &mut e.value else {
            return Vec::new();
        };
        let s = z.get(member).map_or(score, |s| s.max(score));
        z.set(member, s);
        z.remove_below(wall);
        let top = z.top().unwrap_or(wall);
        let want = now + ms(top.saturating_sub(wall));
        let at = e.expires.map_or(want, |(cur, _)| cur.max(want));
        let counted = z.len() - usize::from(leaving.is_some_and(|l| z.get(l).is_some()));
        let victims = if max == 0 || counted <= max {
            Vec::new()
        } else {
            // Least recently refreshed first, as index_add.lua (a user's few sessions).
            z.order
                .iter()
                .map(|(_, m)| m)
                .filter(|m| m.as_str() != member && Some(m.as_str()) != leaving)
                .take(counted - max)
                .cloned()
                .collect()
        };
        map.set_expiry(key, at);
        map.resized(key, usize::MAX);
        victims
    }

    /// Adds or refreshes `member` in each field-index key (see field_add.lua): score = its
    /// deadline (now + `bound_ms`), members whose deadline has passed dropped, the key living
    /// until its latest deadline. O(log n) per key and member dropped.
    pub(crate) fn field_add(&self, keys: &[String], member: &str, bound_ms: u64) {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        for key in keys {
            let e = map.zset_entry(key, now);
            let Value::ZSet(z) = &mut e.value else {
                continue;
            };
            z.set(member, wall.saturating_add(bound_ms));
            index_trim(&mut map, key, now, wall);
        }
    }

    /// The members of a user index whose bound has not passed (scored at least `min`; field
    /// indexes: last added at or after it), lowest score first.
    pub(crate) fn index_members(&self, key: &str, min: Option<u64>) -> Vec<String> {
        let (mut map, _) = self.lock();
        let min = min.unwrap_or_else(now_ms);
        match map.get(key).map(|e| &e.value) {
            Some(Value::ZSet(z)) => z.scored_at_least(min).cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Removes `members` from each of `keys` where scored (deadline) at most `max_score`, and
    /// the members whose deadline has passed (see index_prune.lua).
    pub(crate) fn index_prune(&self, keys: &[String], members: &[String], max_score: u64) -> i64 {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        let mut n = 0;
        for key in keys {
            let Some(Value::ZSet(z)) = map.get(key).map(|e| &mut e.value) else {
                continue;
            };
            for m in members {
                if z.get(m).is_some_and(|s| s <= max_score) {
                    z.remove(m);
                    n += 1;
                }
            }
            index_trim(&mut map, key, now, wall);
        }
        n
    }

    /// Ends the session at `key` if `field` still holds `expected` (see end_if.lua).
    pub(crate) fn end_if(
        &self,
        key: &str,
        field: &str,
        expected: Option<&[u8]>,
        tombstone_ms: u64,
    ) -> EndIf {
        let (mut map, now) = self.lock();
        let found = map.hash(key).map(|h| {
            let successor = is_tombstone(h)
                .then(|| h.get(fields::MOVING))
                .flatten()
                .and_then(|m| {
                    std::str::from_utf8(m)
                        .ok()?
                        .rsplit(' ')
                        .next()
                        .map(String::from)
                });
            (
                h.contains_key(fields::CREATED),
                expected.is_none() || h.get(field).map(Vec::as_slice) == expected,
                successor,
            )
        });
        match found {
            Some((true, false, _)) => EndIf::Changed,
            Some((true, true, _)) => {
                map.remove(key);
                // The 'ended' mark also tells the expiry sweeper this was not an expiry.
                mark_ended(&mut map, key, now, tombstone_ms);
                EndIf::Ended
            }
            Some((false, _, Some(successor))) => EndIf::Moved(successor),
            Some((false, _, None)) => EndIf::Absent,
            None if map.get(key).is_some() => EndIf::Absent,
            None => {
                mark_ended(&mut map, key, now, tombstone_ms);
                EndIf::Absent
            }
        }
    }

    /// Deletes the key, returning what `names` held if a session was there.
    pub(crate) fn take(
        &self,
        key: &str,
        names: &[&str],
        mark_ms: u64,
    ) -> Option<Vec<Option<Vec<u8>>>> {
        let (mut map, now) = self.lock();
        let (found, ended) = match map.hash(key) {
            Some(h) => (
                h.contains_key(fields::CREATED)
                    .then(|| names.iter().map(|n| h.get(*n).cloned()).collect()),
                is_ended(h),
            ),
            None => (None, false),
        };
        if !ended {
            // An 'ended' mark stays: it stops a login still on its way.
            map.remove(key);
            if found.is_some() && mark_ms > 0 {
                mark_ended(&mut map, key, now, mark_ms);
            }
        }
        found
    }

    /// A whole session hash without touching it; empty if there is none.
    pub(crate) fn read(&self, key: &str) -> HashMap<String, Vec<u8>> {
        let (mut map, _) = self.lock();
        map.hash(key).cloned().unwrap_or_default()
    }

    pub(crate) fn index_remove(&self, key: &str, members: &[String]) {
        let (mut map, _) = self.lock();
        let empty = match map.get(key).map(|e| &mut e.value) {
            Some(Value::ZSet(z)) => {
                for m in members {
                    z.remove(m);
                }
                z.is_empty()
            }
            _ => false,
        };
        if empty {
            map.remove(key);
        } else {
            map.resized(key, usize::MAX);
        }
    }

    /// Live keys and the bytes they are counted for.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let (map, _) = self.lock();
        (map.entries.len(), map.bytes)
    }

    #[cfg(test)]
    pub(crate) fn key_count(&self) -> usize {
        self.usage().0
    }

    /// Puts a raw hash (for tests that feed corrupt stored data to the session logic).
    #[cfg(test)]
    pub(crate) fn put_raw(&self, key: &str, h: HashMap<String, Vec<u8>>) {
        let (mut map, now) = self.lock();
        map.insert(key, Value::Hash(h), now);
        map.set_expiry(key, now + Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests;
