//! Plain string keys another session store wrote (a take-over of its sessions): `GET`, `SET`
//! with an expiry, and retire_legacy.lua (delete or shorten only if unchanged).

use super::protocol::{self, value_bytes, RETIRE_LEGACY};
use super::RedisBackend;
use crate::error::{Error, Result};
use crate::store::contract::TakeoverOps;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

impl TakeoverOps for RedisBackend {
    /// `GET` (`None`: no key, or a key of another type: not another store's session record).
    /// Deletes nothing.
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.bounded(async {
            let get = CustomCommand::new_static("GET", ClusterHash::from(key), false);
            let get = &get;
            let reply: std::result::Result<Value, _> = Box::pin(self.on_key(key, |c| async move {
                c.with_options(&self.read_opts)
                    .custom(get.clone(), vec![Value::from(key)])
                    .await
            }))
            .await;
            match reply {
                Ok(v) => Ok(value_bytes(v)),
                // A hash, list...: not another store's session record.
                Err(e) if e.details().starts_with("WRONGTYPE") => Ok(None),
                Err(e) => Err(Error::from_fred(e)),
            }
        })
        .await
    }

    /// `SET key value PX ttl`.
    async fn set_bytes(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<()> {
        self.write_to(key, async {
            use fred::types::Expiration;
            let _: Value = Box::pin(self.on_key_write(key, |c| async move {
                c.with_options(&self.write_opts)
                    .set(
                        key,
                        value,
                        Some(Expiration::PX(ttl_ms.clamp(1, i64::MAX as u64) as i64)),
                        None,
                        false,
                    )
                    .await
            }))
            .await
            .map_err(Error::from_fred)?;
            Ok(())
        })
        .await
    }

    /// retire_legacy.lua (refused past its deadline).
    async fn retire_bytes(&self, key: &str, expected: &[u8], grace_ms: u64) -> Result<bool> {
        self.write_to(key, async {
            let args = protocol::retire_legacy_args(expected, grace_ms);
            protocol::parse_retire_legacy(self.eval_write(&RETIRE_LEGACY, key, args).await?)
        })
        .await
    }
}
