//! The session hashes on the memory store, each operation mirroring its script (named on it)
//! in one process: the same answers, the same marks (`__m`), the same TTL rules.

use super::super::contract::SessionOps;
use super::super::{
    fields, now_ms, own_idle_ms, ttl_ms, EndIf, Freeze, Load, Loaded, Mode, NewSession, Picked,
    Refresh, Release, SetIfAbsent, Timing, WriteOp, WriteResult,
};
use super::keyspace::{
    append_trail, is_ended, is_tombstone, mark_ended, ms, user_field_count, Map, Value,
};
use super::{MemoryBackend, FREEZE};
use crate::error::Result;
use std::collections::HashMap;
use std::time::Instant;

impl SessionOps for MemoryBackend {
    /// Mirrors load.lua (`known_fresh` and `use_cache` change nothing here: the refresh
    /// decision reads this process's monotonic clock, and there is no near-cache).
    async fn load(
        &self,
        key: &str,
        t: Timing,
        _known_fresh: bool,
        _use_cache: bool,
    ) -> Result<Load> {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        let Some(e) = map.get(key) else {
            return Ok(Load::Gone);
        };
        let Value::Hash(h) = &mut e.value else {
            return Ok(Load::Gone);
        };
        if is_tombstone(h) {
            return Ok(Load::Moved);
        }
        if !h.contains_key(fields::CREATED) {
            return Ok(Load::Gone); // not a session hash
        }
        let created = fields::ms(h, fields::CREATED).unwrap_or(wall);
        let t = Timing {
            idle_ms: own_idle_ms(h.get(fields::OWN_EXPIRY), t.longest_ms).unwrap_or(t.idle_ms),
            ..t
        };
        let Some(ttl) = ttl_ms(wall, created, t) else {
            map.remove(key);
            return Ok(Load::Gone);
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
        Ok(Load::Found(Loaded {
            fields: std::sync::Arc::new(before),
            refresh,
            cached: false,
        }))
    }

    /// Mirrors write.lua (both modes).
    async fn write(&self, key: &str, op: &WriteOp<'_>, t: Timing) -> Result<WriteResult> {
        Ok(self.write_now(key, op, t))
    }

    /// Mirrors create.lua (as a write in `Mode::Create`).
    async fn create(&self, key: &str, op: &NewSession<'_>, t: Timing) -> Result<WriteResult> {
        // With the user's index: create.lua does both in one script; here, both in turn, the
        // one undone if the other fails (as on a cluster).
        if let Some(ix) = &op.index {
            return Box::pin(super::super::contract::create_and_join(
                self, key, op, ix, t,
            ))
            .await;
        }
        Ok(self.write_now(key, &op.as_write(), t))
    }

    /// Mirrors freeze.lua; the freeze is a flag of the entry (read as `__m` by `peek_raw`).
    async fn freeze(&self, key: &str, new_member: &str, t: Timing) -> Result<Freeze> {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        let seq = map.next();
        let Some(e) = map.get(key) else {
            return Ok(Freeze::Gone);
        };
        let Value::Hash(h) = &e.value else {
            return Ok(Freeze::Gone);
        };
        if is_tombstone(h) {
            return Ok(Freeze::Moved);
        }
        // A corrupt `__c` counts as "now", as in the scripts.
        if !h.contains_key(fields::CREATED) {
            // Not a session (an 'ended' mark stays: see `take`).
            return Ok(Freeze::Gone);
        }
        let live = ttl_ms(wall, fields::ms(h, fields::CREATED).unwrap_or(wall), t).is_some();
        if !live {
            map.remove(key);
            return Ok(Freeze::Gone);
        }
        if e.frozen
            .as_ref()
            .is_some_and(|(since, _)| now.duration_since(*since) < FREEZE)
        {
            return Ok(Freeze::Moved);
        }
        let token = crate::layout::marker::moving_token(seq, new_member);
        e.frozen = Some((now, token.clone()));
        Ok(Freeze::Frozen {
            token,
            fields: h.clone(),
        })
    }

    /// Mirrors release.lua.
    async fn release(&self, key: &str, token: &str, retire: bool) -> Result<Release> {
        let (mut map, now) = self.lock();
        let retired = crate::layout::marker::retired(token);
        let Some(e) = map.get(key) else {
            return Ok(Release::Gone);
        };
        if let Value::Hash(h) = &e.value {
            if h.get(fields::MOVING).map(Vec::as_slice) == Some(retired.as_bytes()) {
                return Ok(Release::Retired);
            }
        }
        if e.frozen.as_ref().map(|(_, t)| t.as_str()) != Some(token) {
            return Ok(Release::Taken);
        }
        if retire {
            let tombstone = HashMap::from([(fields::MOVING.to_string(), retired.into_bytes())]);
            map.insert(key, Value::Hash(tombstone), now);
            map.set_expiry(key, now + super::super::TOMBSTONE);
        } else {
            e.frozen = None;
        }
        Ok(Release::Done)
    }

    /// Mirrors set_if_absent.lua.
    async fn set_if_absent(&self, key: &str, field: &str, value: &str) -> Result<SetIfAbsent> {
        let (mut map, now) = self.lock();
        let Some(e) = map.get(key) else {
            return Ok(SetIfAbsent::Gone);
        };
        if e.frozen
            .as_ref()
            .is_some_and(|(since, _)| now.duration_since(*since) < FREEZE)
        {
            return Ok(SetIfAbsent::Moved);
        }
        let Value::Hash(h) = &mut e.value else {
            return Ok(SetIfAbsent::Gone);
        };
        if is_tombstone(h) {
            return Ok(SetIfAbsent::Moved);
        }
        if !h.contains_key(fields::CREATED) {
            return Ok(SetIfAbsent::Gone);
        }
        let held = h
            .entry(field.to_string())
            .or_insert_with(|| value.as_bytes().to_vec());
        let held = String::from_utf8_lossy(held).into_owned();
        map.used(key);
        map.resized(key, self.max_bytes);
        Ok(SetIfAbsent::Holds(held))
    }

    /// Mirrors end_if.lua.
    async fn end_if(
        &self,
        key: &str,
        field: &str,
        expected: Option<&[u8]>,
        tombstone_ms: u64,
    ) -> Result<EndIf> {
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
        Ok(match found {
            Some((true, false, _)) => EndIf::Changed,
            Some((true, true, _)) => {
                map.remove(key);
                // The 'ended' mark also tells the expiry sweeper this was not an expiry.
                mark_ended(&mut map, key, now, tombstone_ms);
                EndIf::Ended
            }
            Some((false, _, Some(successor))) => EndIf::Moved(successor),
            Some((false, _, None)) => EndIf::Marked,
            None if map.get(key).is_some() => EndIf::Marked,
            None => {
                mark_ended(&mut map, key, now, tombstone_ms);
                EndIf::Absent
            }
        })
    }

    /// As `DEL`.
    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.delete_one(key))
    }

    /// As one `DEL` per key.
    async fn delete_many(&self, keys: &[String]) -> Result<Vec<bool>> {
        Ok(keys.iter().map(|k| self.delete_one(k)).collect())
    }

    /// Mirrors take.lua, key by key.
    async fn take_many(
        &self,
        keys: &[String],
        names: &[&str],
        mark_ms: u64,
    ) -> Result<Vec<Picked>> {
        Ok(keys
            .iter()
            .map(|k| self.take_one(k, names, mark_ms))
            .collect())
    }

    /// As one `HMGET __c names...` per key (no `__c`: no session).
    async fn peek_many(&self, keys: &[String], names: &[&str]) -> Result<Vec<Picked>> {
        Ok(keys.iter().map(|k| self.peek_one(k, names)).collect())
    }

    /// As one `HMGET names...` per key, all read under one lock: one moment's view, so a
    /// login moving a session cannot run between two of the reads (a query would see the old
    /// id before its move and the new one after it, and count the session twice).
    async fn peek_raw(&self, keys: &[String], names: &[&str]) -> Result<Vec<Picked>> {
        Ok({
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
        })
    }

    /// As one `HGETALL` per key.
    async fn read_many(&self, keys: &[String]) -> Result<Vec<HashMap<String, Vec<u8>>>> {
        Ok(keys.iter().map(|k| self.read_one(k)).collect())
    }
}

impl MemoryBackend {
    fn delete_one(&self, key: &str) -> bool {
        let (mut map, _) = self.lock();
        map.remove(key).is_some()
    }

    /// Deletes the key, returning what `names` held if a session was there (take.lua).
    fn take_one(&self, key: &str, names: &[&str], mark_ms: u64) -> Picked {
        let (mut map, now) = self.lock();
        let (found, kept) = match map.hash(key) {
            Some(h) => (
                h.contains_key(fields::CREATED)
                    .then(|| names.iter().map(|n| h.get(*n).cloned()).collect()),
                is_ended(h) || is_tombstone(h),
            ),
            None => (None, false),
        };
        if !kept {
            // An 'ended' mark stays: it stops a login still on its way. So does a retired
            // id's tombstone: its session lives on under the new id.
            map.remove(key);
            if found.is_some() && mark_ms > 0 {
                mark_ended(&mut map, key, now, mark_ms);
            }
        }
        found
    }

    fn peek_one(&self, key: &str, names: &[&str]) -> Picked {
        let (mut map, _) = self.lock();
        let h = map.hash(key)?;
        h.contains_key(fields::CREATED)
            .then(|| names.iter().map(|n| h.get(*n).cloned()).collect())
    }

    /// A whole session hash without touching it; empty if there is none.
    fn read_one(&self, key: &str) -> HashMap<String, Vec<u8>> {
        let (mut map, _) = self.lock();
        map.hash(key).cloned().unwrap_or_default()
    }
}

/// What a write found at its key before writing: the creation time, whether a TTL refresh is
/// due, the session's user and the timing that applies (its own idle timeout, if any).
struct Before {
    created: u64,
    due: bool,
    user: Option<String>,
    t: Timing,
}

impl MemoryBackend {
    /// write.lua (and create.lua, a write in `Mode::Create`).
    fn write_now(&self, key: &str, op: &WriteOp<'_>, t: Timing) -> WriteResult {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        if op.not_after_ms > 0 && wall > op.not_after_ms {
            return WriteResult::TooLate;
        }
        let creating = matches!(op.mode, Mode::Create { .. });
        let Before {
            created,
            due,
            user,
            t,
        } = match before_write(&mut map, key, op, t, now, wall) {
            Ok(b) => b,
            Err(refused) => return refused,
        };
        let Some(ttl) = ttl_ms(wall, created, t) else {
            map.remove(key);
            return WriteResult::Gone;
        };
        if creating {
            map.insert(key, Value::Hash(HashMap::new()), now);
        }
        let h = map.hash(key).expect("a live hash");
        // As write.lua: a session another framework manages keeps the expiry it set last; only
        // a write that sets it moves the TTL.
        let keeps_ttl = h.contains_key(fields::EXPIRES_AT)
            && !op.set.iter().any(|(f, _)| *f == fields::EXPIRES_AT);
        let incr = match increment(h, op, wall) {
            Ok(n) => n,
            Err(refused) => {
                if creating {
                    map.remove(key);
                }
                return refused;
            }
        };
        for (f, v) in &op.set {
            h.insert(f.to_string(), v.as_bytes().to_vec());
        }
        for f in &op.del {
            h.remove(*f);
        }
        for (f, ttl) in &op.expire {
            h.insert(
                fields::stamp_of(f),
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
            if !keeps_ttl {
                map.set_expiry(key, now + ms(ttl));
            }
        }
        map.used(key);
        map.resized(key, self.max_bytes);
        WriteResult::Written {
            incr,
            refreshed: due && !creating,
            user,
            victims: Vec::new(),
        }
    }
}

/// The checks at the top of write.lua: a create finds no key (an 'ended' mark: `Gone`), an
/// update finds a live, unfrozen session (a stale freeze is broken: this write wins).
fn before_write(
    map: &mut Map,
    key: &str,
    op: &WriteOp<'_>,
    mut t: Timing,
    now: Instant,
    wall: u64,
) -> std::result::Result<Before, WriteResult> {
    match op.mode {
        Mode::Create { created_ms } => {
            if let Some(e) = map.get(key) {
                // An 'ended' tombstone (see `end_if`): this id's session was ended before
                // its create arrived.
                return Err(match &e.value {
                    Value::Hash(h) if is_ended(h) => WriteResult::Gone,
                    _ => WriteResult::Exists,
                });
            }
            let created = if created_ms == 0 { wall } else { created_ms };
            Ok(Before {
                created,
                due: true,
                user: None,
                t,
            })
        }
        Mode::Update => {
            let Some(e) = map.get(key) else {
                return Err(WriteResult::Gone);
            };
            if let Some((since, _)) = &e.frozen {
                if now.duration_since(*since) < FREEZE {
                    return Err(WriteResult::Moved);
                }
                e.frozen = None; // a stale freeze: this write wins
            }
            let due = now.duration_since(e.refreshed) >= ms(t.touch_ms);
            let Value::Hash(h) = &e.value else {
                return Err(WriteResult::Gone);
            };
            if is_tombstone(h) {
                return Err(WriteResult::Moved);
            }
            if !h.contains_key(fields::CREATED) {
                return Err(WriteResult::Gone);
            }
            let created = fields::ms(h, fields::CREATED).unwrap_or(wall);
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
            Ok(Before {
                created,
                due: due || changes_own,
                user,
                t,
            })
        }
    }
}

/// write.lua's increment: refused past `max_fields` for a new field, or on a field that does
/// not hold an integer; a field past its lifetime counts from zero. The new value (0: none).
fn increment(
    h: &mut HashMap<String, Vec<u8>>,
    op: &WriteOp<'_>,
    wall: u64,
) -> std::result::Result<i64, WriteResult> {
    let Some((f, by)) = op.incr else {
        return Ok(0);
    };
    if op.max_fields > 0 && !h.contains_key(f) && user_field_count(h) >= op.max_fields {
        return Err(WriteResult::TooManyFields);
    }
    // A field past its lifetime is counted from zero (as write.lua does).
    let stamp = fields::stamp_of(f);
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
            h.insert(f.to_string(), n.to_string().into_bytes());
            Ok(n)
        }
        None => Err(WriteResult::NotAnInteger),
    }
}
