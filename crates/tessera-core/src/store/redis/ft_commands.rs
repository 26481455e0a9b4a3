//! The Redis query engine (`FT.*`), where the server has it: an index over the session hashes
//! (`ON HASH PREFIX <namespace>session:`), free queries and counts grouped by a field. Detected
//! at connect; never emulated by scanning.

use super::protocol::{flat_fields, unexpected};
use super::RedisBackend;
use crate::error::{Error, Result};
use crate::store::contract::QueryOps;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use std::collections::HashMap;

/// What the server offers for `FT.*` queries, found at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryEngine {
    /// `FT.SEARCH` is in the command table.
    Available,
    /// It is not (Redis without the search module, Valkey without valkey-search, Redis 7).
    Missing,
    /// A Redis Cluster: each shard would answer for its own keys only (the query engine needs
    /// a coordinator to query every shard), so tessera does not offer it there.
    Cluster,
}

impl QueryEngine {
    /// The typed error for a query this engine cannot run.
    pub(crate) fn require(self) -> Result<()> {
        match self {
            QueryEngine::Available => Ok(()),
            QueryEngine::Missing => Err(Error::Unsupported(
                "the server has no query engine (FT.SEARCH is not in its command table): use Redis 8 with the query engine or load the search module, or query the declared field indexes",
            )),
            QueryEngine::Cluster => Err(Error::Unsupported(
                "the query engine is not used on Redis Cluster (each shard sees only its own sessions; a coordinator would be needed): query the declared field indexes",
            )),
        }
    }
}

/// Asks the command table (`COMMAND INFO FT.SEARCH`); a cluster is [`QueryEngine::Cluster`].
pub(super) async fn detect(pool: &Pool) -> QueryEngine {
    if pool.is_clustered() {
        return QueryEngine::Cluster;
    }
    if has_command(pool, "FT.SEARCH").await {
        QueryEngine::Available
    } else {
        QueryEngine::Missing
    }
}

/// Whether the server's command table has `name` (`COMMAND INFO`; on a cluster, one node's).
pub(super) async fn has_command(pool: &Pool, name: &str) -> bool {
    let reply: std::result::Result<Vec<Value>, _> = pool
        .next()
        .custom(
            CustomCommand::new_static("COMMAND", ClusterHash::Random, false),
            vec!["INFO", name],
        )
        .await;
    matches!(reply, Ok(v) if v.first().is_some_and(|c| !c.is_null()))
}

fn ft(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Random, false)
}

impl QueryOps for RedisBackend {
    /// `FT.CREATE <index> ON HASH PREFIX 1 <prefix> SCHEMA ...`; an index that exists already
    /// is left as it is.
    async fn ft_create(&self, index: &str, prefix: &str, schema: &[String]) -> Result<()> {
        self.query_engine.require()?;
        self.bounded_write(async {
        let mut args: Vec<Value> = vec![
            index.into(),
            "ON".into(),
            "HASH".into(),
            "PREFIX".into(),
            1i64.into(),
            prefix.into(),
            "SCHEMA".into(),
        ];
        args.extend(schema.iter().map(|s| Value::from(s.as_str())));
        let reply: std::result::Result<Value, _> = Box::pin(
            self.pool
                .next_connected()
                .with_options(&self.write_opts)
                .custom(ft("FT.CREATE"), args),
        )
        .await;
        match reply {
            Ok(_) => {
                tracing::info!(target: "tessera::search", index, "query engine index created over the session hashes");
                Ok(())
            }
            Err(e) if e.details().to_ascii_lowercase().contains("already exists") => Ok(()),
            Err(e) => Err(Error::from_fred(e)),
        }
        }).await
    }

    /// `FT.SEARCH <index> <query> LIMIT offset limit`: the total, and each document's key and
    /// fields.
    async fn ft_search(
        &self,
        index: &str,
        query: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<(String, HashMap<String, Vec<u8>>)>)> {
        self.query_engine.require()?;
        self.bounded(async {
            let args: Vec<Value> = vec![
                index.into(),
                query.into(),
                "LIMIT".into(),
                (offset as i64).into(),
                (limit as i64).into(),
            ];
            let reply: Value = Box::pin(
                self.pool
                    .next_connected()
                    .with_options(&self.read_opts)
                    .custom(ft("FT.SEARCH"), args),
            )
            .await
            .map_err(Error::from_fred)?;
            let Value::Array(parts) = reply else {
                return Err(unexpected(format!("FT.SEARCH replied {reply:?}")));
            };
            let mut it = parts.into_iter();
            let total = it.next().and_then(|v| v.as_i64()).unwrap_or(0).max(0) as usize;
            let mut docs = Vec::new();
            while let Some(key) = it.next() {
                let key = key.into_string().unwrap_or_default();
                let fields = match it.next() {
                    Some(v) => flat_fields(v)?,
                    None => HashMap::new(),
                };
                docs.push((key, fields));
            }
            Ok((total, docs))
        })
        .await
    }

    /// `FT.AGGREGATE <index> <query> GROUPBY 1 @<field> REDUCE COUNT 0 AS count`: each value of
    /// `field` (`None` for documents without it) and how many documents hold it.
    async fn ft_count_by(
        &self,
        index: &str,
        query: &str,
        field: &str,
    ) -> Result<Vec<(Option<String>, usize)>> {
        self.query_engine.require()?;
        self.bounded(async {
            let args: Vec<Value> = vec![
                index.into(),
                query.into(),
                "GROUPBY".into(),
                1i64.into(),
                format!("@{field}").into(),
                "REDUCE".into(),
                "COUNT".into(),
                0i64.into(),
                "AS".into(),
                "count".into(),
                // Every group (the default cap is 10 rows).
                "LIMIT".into(),
                0i64.into(),
                1_000_000i64.into(),
            ];
            let reply: Value = Box::pin(
                self.pool
                    .next_connected()
                    .with_options(&self.read_opts)
                    .custom(ft("FT.AGGREGATE"), args),
            )
            .await
            .map_err(Error::from_fred)?;
            let Value::Array(parts) = reply else {
                return Err(unexpected(format!("FT.AGGREGATE replied {reply:?}")));
            };
            let mut out = Vec::new();
            for row in parts.into_iter().skip(1) {
                let fields = flat_fields(row)?;
                let count = fields
                    .get("count")
                    .and_then(|c| std::str::from_utf8(c).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                let value = fields
                    .get(field)
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                out.push((value, count));
            }
            Ok(out)
        })
        .await
    }
}
