//! The in-memory backend: the Redis semantics (hashes, sorted-set user index, TTLs) in a
//! mutex-protected map. Same rules as the Lua scripts, so the behaviour suite runs unchanged;
//! it implements the whole backend contract (`../contract.rs`), each operation naming the
//! script it mirrors.
//!
//! Bounded like a Redis with `maxmemory` and `volatile-lru`: when the data passes
//! `max_bytes`, the least recently used sessions are evicted. Expiry costs O(expired): keys
//! wait in a queue ordered by deadline, and each operation pops only those that are due.
//!
//! `keyspace.rs` is the map (what a server keeps); `session_hashes.rs`, `index_sets.rs` and
//! `event_log.rs` are the operations, one file per job of the contract; this file holds the
//! backend, its facts and the server-only operations' memory answers.

mod event_log;
mod index_sets;
mod keyspace;
mod session_hashes;
#[cfg(test)]
mod tests;

use super::contract::{Facts, OperatorOps, QueryOps, SettingsCheck, TakeoverOps};
use super::{now_ms, NearCacheStats, ServerReport};
use crate::error::{Error, Result};
use keyspace::Map;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a rotation's freeze holds on the memory store (see freeze.lua).
const FREEZE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct MemoryBackend {
    map: Mutex<Map>,
    max_bytes: usize,
    events: Box<Mutex<event_log::MemEvents>>,
}

impl MemoryBackend {
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryBackend {
            map: Mutex::new(Map::default()),
            max_bytes,
            events: Box::new(Mutex::new(event_log::MemEvents::default())),
        }
    }

    /// The map, its due keys expired first (as every Redis command sees only live keys).
    fn lock(&self) -> (std::sync::MutexGuard<'_, Map>, Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.expire_due(now);
        (map, now)
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
        map.insert(key, keyspace::Value::Hash(h), now);
        map.set_expiry(key, now + Duration::from_secs(60));
    }
}

impl Facts for MemoryBackend {
    fn describe(&self) -> String {
        "memory".into()
    }

    /// This process's clock.
    fn server_now(&self) -> Option<u64> {
        Some(now_ms())
    }

    /// Never: field lifetimes are stamps beside the fields, checked when read.
    fn native_field_expiry(&self) -> bool {
        false
    }

    fn has_query_engine(&self) -> bool {
        false
    }

    fn near_cache_stats(&self) -> Option<NearCacheStats> {
        None
    }

    fn memory_usage(&self) -> Option<(usize, usize)> {
        Some(self.usage())
    }

    #[cfg(feature = "test-hooks")]
    fn redis_pool(&self) -> Option<&fred::clients::Pool> {
        None
    }

    #[cfg(test)]
    fn as_memory(&self) -> Option<&MemoryBackend> {
        Some(self)
    }
}

/// The memory store has no query engine.
fn no_query_engine<T>() -> Result<T> {
    Err(Error::Unsupported(
        "the memory store has no query engine: query the declared field indexes",
    ))
}

impl QueryOps for MemoryBackend {
    /// `Error::Unsupported`.
    async fn ft_create(&self, _index: &str, _prefix: &str, _schema: &[String]) -> Result<()> {
        no_query_engine()
    }

    /// `Error::Unsupported`.
    async fn ft_search(
        &self,
        _index: &str,
        _query: &str,
        _offset: usize,
        _limit: usize,
    ) -> Result<(usize, Vec<(String, HashMap<String, Vec<u8>>)>)> {
        no_query_engine()
    }

    /// `Error::Unsupported`.
    async fn ft_count_by(
        &self,
        _index: &str,
        _query: &str,
        _field: &str,
    ) -> Result<Vec<(Option<String>, usize)>> {
        no_query_engine()
    }
}

impl TakeoverOps for MemoryBackend {
    /// None: the memory store holds no other store's keys.
    async fn get_bytes(&self, _key: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Nothing: the only reader of such keys is a take-over, which finds none here.
    async fn set_bytes(&self, _key: &str, _value: &[u8], _ttl_ms: u64) -> Result<()> {
        Ok(())
    }

    /// `false`: there is nothing to retire.
    async fn retire_bytes(&self, _key: &str, _expected: &[u8], _grace_ms: u64) -> Result<bool> {
        Ok(false)
    }
}

impl OperatorOps for MemoryBackend {
    /// Its own keys.
    async fn scan_find(
        &self,
        prefix: &str,
        matches: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<Option<String>> {
        let (map, _) = self.lock();
        Ok(map
            .entries
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .find(|s| matches(s))
            .map(str::to_string))
    }
}

impl SettingsCheck for MemoryBackend {
    /// The memory store itself, without warnings.
    async fn check_settings(&self) -> Result<ServerReport> {
        Ok(ServerReport {
            servers: vec!["memory".into()],
            warnings: Vec::new(),
        })
    }
}
