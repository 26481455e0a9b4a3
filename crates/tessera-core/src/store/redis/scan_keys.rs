//! The operator's key scan (`OperatorOps`): `SCAN` on every primary, for the one lookup no
//! index serves (a session by its handle alone). O(keys): never on a request's path.

use super::RedisBackend;
use crate::error::{Error, Result, StoreError};
use crate::store::contract::OperatorOps;
use fred::prelude::*;
use futures_util::TryStreamExt as _;
use std::time::Duration;

/// How long a whole scan may take.
const SCAN_LIMIT: Duration = Duration::from_secs(60);

impl OperatorOps for RedisBackend {
    /// `SCAN MATCH <prefix>* COUNT 1000`, every primary of a cluster at once, until a match.
    async fn scan_find(
        &self,
        prefix: &str,
        matches: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<Option<String>> {
        let pattern = format!("{}*", glob_escape(prefix));
        let client = self.pool().next_connected().clone();
        let find = async {
            let mut keys: futures_util::stream::BoxStream<'_, _> = if client.is_clustered() {
                Box::pin(client.scan_cluster_buffered(pattern, Some(1000), None))
            } else {
                Box::pin(client.scan_buffered(pattern, Some(1000), None))
            };
            // Dropping the stream stops the scan.
            while let Some(key) = keys.try_next().await? {
                if let Some(suffix) = key.as_str().and_then(|k| k.strip_prefix(prefix)) {
                    if matches(suffix) {
                        return Ok(Some(suffix.to_string()));
                    }
                }
            }
            Ok::<_, fred::error::Error>(None)
        };
        tokio::time::timeout(SCAN_LIMIT, find)
            .await
            .map_err(|_| {
                Error::Unavailable(StoreError::timeout(
                    "the key scan did not finish within 60 s",
                ))
            })?
            .map_err(Error::from_fred)
    }
}

/// `prefix` as a `SCAN MATCH` pattern that matches it literally.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 4);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_namespace_is_matched_literally() {
        assert_eq!(super::glob_escape("[app]*s?\\"), "\\[app\\]\\*s\\?\\\\");
        assert_eq!(super::glob_escape("app:session:"), "app:session:");
    }
}
