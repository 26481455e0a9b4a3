//! The user and field indexes on Redis (sorted sets): index_add.lua, field_add.lua and
//! index_prune.lua (one script per hash slot), `ZRANGEBYSCORE`, `ZREM`.

use super::protocol::{self, FIELD_ADD, INDEX_ADD, INDEX_PRUNE};
use super::RedisBackend;
use crate::error::{Error, Result};
use crate::store::contract::IndexOps;
use fred::prelude::*;

impl IndexOps for RedisBackend {
    /// index_add.lua.
    async fn index_add(
        &self,
        key: &str,
        member: &str,
        bound_ms: u64,
        max: usize,
        leaving: Option<&str>,
    ) -> Result<Vec<String>> {
        self.bounded_write(async {
            let args = protocol::index_add_args(member, bound_ms, max, leaving);
            self.eval_write(&INDEX_ADD, key, args).await
        })
        .await
    }

    /// `ZRANGEBYSCORE key (now +inf`, now by the server-clock estimate.
    async fn index_members(&self, key: &str) -> Result<Vec<String>> {
        self.bounded(self.members_from(key, None)).await
    }

    /// `ZRANGEBYSCORE key since +inf`.
    async fn field_members(&self, key: &str, since_ms: u64) -> Result<Vec<String>> {
        self.bounded(self.members_from(key, Some(since_ms))).await
    }

    /// index_prune.lua, one script per hash slot, sent together.
    async fn index_prune(
        &self,
        keys: &[String],
        members: &[String],
        max_score: u64,
    ) -> Result<i64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.bounded_write(async {
            let args = protocol::index_prune_args(max_score, members);
            let groups = self.slot_groups(keys);
            let prunes = groups.iter().map(|g| {
                let args = args.clone();
                async move { self.eval_write_keys::<i64>(&INDEX_PRUNE, g, args, 0).await }
            });
            let mut n = 0;
            for r in futures_util::future::join_all(prunes).await {
                n += r?;
            }
            Ok(n)
        })
        .await
    }

    /// field_add.lua, one script per hash slot (one in all on a single server), sent
    /// together; the earliest server time of them.
    async fn field_add(&self, keys: &[String], member: &str, bound_ms: u64) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.bounded_write(async {
            let args = protocol::field_add_args(member, bound_ms);
            let groups = self.slot_groups(keys);
            let adds = groups.iter().map(|g| {
                let args = args.clone();
                async move {
                    let reply: Vec<i64> = self.eval_write_keys(&FIELD_ADD, g, args, 0).await?;
                    let now = protocol::parse_field_add(&reply);
                    self.clock.observe(now, std::time::Instant::now());
                    Ok::<u64, Error>(now.max(0) as u64)
                }
            });
            let mut earliest = 0;
            for r in futures_util::future::join_all(adds).await {
                let at = r?;
                earliest = if earliest == 0 { at } else { earliest.min(at) };
            }
            Ok(earliest)
        })
        .await
    }

    /// `ZREM`.
    async fn index_remove(&self, key: &str, members: &[String]) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        self.bounded_write(async {
            let _: i64 = Box::pin(self.on_key_write(key, |c| async move {
                c.with_options(&self.write_opts)
                    .zrem(key, members.to_vec())
                    .await
            }))
            .await
            .map_err(Error::from_fred)?;
            Ok(())
        })
        .await
    }
}

impl RedisBackend {
    /// The members of an index scored above `min` (`None`: now, by the server-clock estimate:
    /// a user index's live bounds), lowest score first.
    async fn members_from(&self, key: &str, min: Option<u64>) -> Result<Vec<String>> {
        let (kind, min) = match min {
            None => (
                fred::types::sorted_sets::ZRangeKind::Exclusive,
                self.clock.now_ms() as f64,
            ),
            Some(m) => (fred::types::sorted_sets::ZRangeKind::Inclusive, m as f64),
        };
        let kind = &kind;
        Box::pin(self.on_key(key, |c| async move {
            c.with_options(&self.read_opts)
                .zrangebyscore(
                    key,
                    fred::types::sorted_sets::ZRange {
                        kind: kind.clone(),
                        range: fred::types::sorted_sets::ZRangeBound::Score(min),
                    },
                    "+inf",
                    false,
                    None,
                )
                .await
        }))
        .await
        .map_err(Error::from_fred)
    }
}

#[cfg(test)]
mod tests {
    //! index_add.lua's key TTL on both of its paths, against a real server: `PEXPIRE GT`
    //! (Redis 7, Valkey) and `PTTL` then `PEXPIRE` (Redis 6.2, run here with the version check
    //! replaced by `false`: every command of that path exists on Redis 7 too).
    use super::protocol::{self, INDEX_ADD};
    use crate::store::conformance::redis_server::RedisServer;
    use fred::prelude::*;

    const GATE: &str = "(tonumber(redis.REDIS_VERSION_NUM) or 0) >= 0x070000";

    async fn add(c: &Client, lua: &str, key: &str, member: &str, bound: u64) -> Vec<String> {
        let mut args = vec![Value::from(0i64)]; // no deadline
        args.extend(protocol::index_add_args(member, bound, 0, None));
        c.eval(lua, vec![key], args).await.expect("index_add.lua")
    }

    async fn pttl(c: &Client, key: &str) -> i64 {
        c.pttl(key).await.unwrap()
    }

    #[tokio::test]
    async fn the_key_lives_until_its_highest_bound_on_both_paths() {
        let server = RedisServer::start();
        let c = Builder::from_config(Config::from_url(&server.url()).unwrap())
            .build()
            .unwrap();
        c.init().await.unwrap();
        let gt = INDEX_ADD.lua().expect("the script's text").to_string();
        assert_eq!(
            gt.matches(GATE).count(),
            1,
            "the version check is where this test expects it"
        );
        let pre7 = gt.replace(GATE, "false");
        let bound: i64 = 100_000;
        for (path, lua) in [("PEXPIRE GT", &gt), ("PTTL + PEXPIRE", &pre7)] {
            let key = format!("user:{}:sessions", path.len());
            add(&c, lua, &key, "a", bound as u64).await;
            let t = pttl(&c, &key).await;
            assert!(
                t > bound - 5_000 && t <= bound,
                "{path}: a new key gets the bound ({t})"
            );
            let _: () = c.pexpire(&key, 10 * bound, None).await.unwrap();
            add(&c, lua, &key, "b", bound as u64).await;
            let t = pttl(&c, &key).await;
            assert!(t > 9 * bound, "{path}: a longer TTL is kept ({t})");
            // (Below the invariant, as no tessera write leaves it: the new bound still counts.)
            let _: () = c.pexpire(&key, bound / 2, None).await.unwrap();
            add(&c, lua, &key, "b", bound as u64).await;
            let t = pttl(&c, &key).await;
            assert!(
                t > bound - 5_000 && t <= bound,
                "{path}: raised to the bound ({t})"
            );
            // A key without a TTL (not made by tessera): from its highest score.
            let far = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
                + 5 * bound;
            let _: i64 = c
                .zadd(&key, None, None, false, false, (far as f64, "far"))
                .await
                .unwrap();
            let _: () = c.persist(&key).await.unwrap();
            add(&c, lua, &key, "c", bound as u64).await;
            let t = pttl(&c, &key).await;
            assert!(
                t > 4 * bound && t <= 5 * bound,
                "{path}: no TTL: from the highest score ({t})"
            );
        }
    }
}
