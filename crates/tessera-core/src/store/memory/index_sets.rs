//! The user and field indexes on the memory store (sorted sets), each operation mirroring
//! its script: index_add.lua, field_add.lua, index_prune.lua, and `ZRANGEBYSCORE` / `ZREM`.

use super::super::contract::IndexOps;
use super::super::now_ms;
use super::keyspace::{index_trim, ms, Value};
use super::MemoryBackend;
use crate::error::Result;

impl IndexOps for MemoryBackend {
    /// Mirrors index_add.lua.
    async fn index_add(
        &self,
        key: &str,
        member: &str,
        bound_ms: u64,
        max: usize,
        leaving: Option<&str>,
    ) -> Result<Vec<String>> {
        let (mut map, now) = self.lock();
        let wall = now_ms();
        let score = wall + bound_ms;
        let e = map.zset_entry(key, now);
        let Value::ZSet(z) = &mut e.value else {
            return Ok(Vec::new());
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
        Ok(victims)
    }

    /// As `ZRANGEBYSCORE key (now +inf`.
    async fn index_members(&self, key: &str) -> Result<Vec<String>> {
        Ok(self.members_from(key, None))
    }

    /// As `ZRANGEBYSCORE key since +inf`.
    async fn field_members(&self, key: &str, since_ms: u64) -> Result<Vec<String>> {
        Ok(self.members_from(key, Some(since_ms)))
    }

    /// Mirrors index_prune.lua (all keys at once: one process has one slot).
    async fn index_prune(
        &self,
        keys: &[String],
        members: &[String],
        max_score: u64,
    ) -> Result<i64> {
        if keys.is_empty() {
            return Ok(0);
        }
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
        Ok(n)
    }

    /// Mirrors field_add.lua: O(log n) per key and member dropped.
    async fn field_add(&self, keys: &[String], member: &str, bound_ms: u64) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
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
        Ok(now_ms())
    }

    /// As `ZREM`; a set left empty is gone.
    async fn index_remove(&self, key: &str, members: &[String]) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
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
        Ok(())
    }
}

impl MemoryBackend {
    /// The members of an index scored at least `min` (`None`: now, a user index's live
    /// bounds), lowest score first.
    fn members_from(&self, key: &str, min: Option<u64>) -> Vec<String> {
        let (mut map, _) = self.lock();
        let min = min.unwrap_or_else(now_ms);
        match map.get(key).map(|e| &e.value) {
            Some(Value::ZSet(z)) => z.scored_at_least(min).cloned().collect(),
            _ => Vec::new(),
        }
    }
}
