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
    /// `SCAN MATCH <prefix>* COUNT 1000`, every primary of a cluster at once.
    async fn scan_suffixes(&self, prefix: &str) -> Result<Vec<String>> {
        let pattern = format!("{}*", glob_escape(prefix));
        let client = self.pool().next_connected().clone();
        let scan = async {
            if client.is_clustered() {
                Box::pin(
                    client
                        .scan_cluster_buffered(pattern, Some(1000), None)
                        .try_collect::<Vec<_>>(),
                )
                .await
            } else {
                Box::pin(
                    client
                        .scan_buffered(pattern, Some(1000), None)
                        .try_collect::<Vec<_>>(),
                )
                .await
            }
        };
        let keys = tokio::time::timeout(SCAN_LIMIT, scan)
            .await
            .map_err(|_| {
                Error::Unavailable(StoreError::timeout(
                    "the key scan did not finish within 60 s",
                ))
            })?
            .map_err(Error::from_fred)?;
        Ok(keys
            .iter()
            .filter_map(|k| k.as_str()?.strip_prefix(prefix).map(str::to_string))
            .collect())
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
