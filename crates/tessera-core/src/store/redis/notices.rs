//! Keyspace notifications of expired keys, when the server sends them
//! (`notify-keyspace-events` with `E` and `x`): each one hands the expired session to the expiry
//! sweeper at once, for a tighter bound than its interval. Found at the sweeper's start with `CONFIG GET` on every
//! primary; where `CONFIG` is refused (managed Redis often does) or the flags are off, nothing
//! is subscribed and the sweeper's interval alone bounds the delay. They are a hint only: the
//! sweep decides, so a lost notification (a reconnect, a failover) costs nothing but time.

use super::RedisBackend;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::ServerConfig;
use fred::types::{ClusterHash, CustomCommand};
use std::sync::Arc;
use tokio::sync::Notify;

/// The subscriptions; dropping it stops them.
pub(crate) struct ExpiryWatch {
    tasks: Vec<tokio::task::AbortHandle>,
    clients: Vec<SubscriberClient>,
}

impl Drop for ExpiryWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for c in self.clients.drain(..) {
            tokio::spawn(async move {
                let _ = c.quit().await;
            });
        }
    }
}

/// Whether the `notify-keyspace-events` flags include expired-key events.
fn sends_expired(flags: &str) -> bool {
    flags.contains('E') && (flags.contains('x') || flags.contains('A'))
}

impl RedisBackend {
    /// Subscribes to expired-key events on every primary that sends them; each expiry of a
    /// key starting with `prefix` sends the rest of its name (the session's storage key) to
    /// `expired` (when that is full, `wake` asks for a whole sweep). `None` when no primary
    /// sends them.
    pub(super) async fn subscribe_expiries(
        &self,
        prefix: String,
        expired: tokio::sync::mpsc::Sender<String>,
        wake: Arc<Notify>,
    ) -> Option<ExpiryWatch> {
        let mut configs = Vec::new();
        if self.config.server.is_clustered() {
            let nodes = self
                .pool
                .next()
                .cached_cluster_state()
                .map(|s| s.unique_primary_nodes())
                .unwrap_or_default();
            for server in nodes {
                let mut c = self.config.clone();
                c.server = ServerConfig::Centralized { server };
                configs.push(c);
            }
        } else {
            configs.push(self.config.clone());
        }
        let mut watch = ExpiryWatch {
            tasks: Vec::new(),
            clients: Vec::new(),
        };
        let total = configs.len();
        for config in configs {
            let Ok(client) =
                super::connect::builder(config, &self.options).build_subscriber_client()
            else {
                continue;
            };
            let setup = async {
                client.init().await?;
                let flags: Vec<Value> = client
                    .custom(
                        CustomCommand::new_static("CONFIG", ClusterHash::Random, false),
                        vec!["GET", "notify-keyspace-events"],
                    )
                    .await?;
                let flags = flags.get(1).and_then(|v| v.as_string()).unwrap_or_default();
                if !sends_expired(&flags) {
                    return Ok::<bool, fred::error::Error>(false);
                }
                client.psubscribe("__keyevent@*__:expired").await?;
                Ok(true)
            };
            let on = tokio::time::timeout(self.command_timeout * 4, setup).await;
            match on {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    let _ = client.quit().await;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::info!(target: "tessera::events", error = %e, "cannot use keyspace notifications on a node (CONFIG refused?); the sweeper's interval bounds expired events there");
                    let _ = client.quit().await;
                    continue;
                }
                Err(_) => {
                    let _ = client.quit().await;
                    continue;
                }
            }
            let resubscribe = client.manage_subscriptions();
            watch.tasks.push(resubscribe.abort_handle());
            // fred hands keyspace notifications to their own channel, parsed.
            let mut rx = client.keyspace_event_rx();
            let db = self.config.database.unwrap_or(0);
            let (wake, prefix, expired) = (wake.clone(), prefix.clone(), expired.clone());
            let task = tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match rx.recv().await {
                        Ok(ev) if ev.operation == "expired" && ev.db == db => {
                            let key = ev.key.as_str().unwrap_or_default();
                            if let Some(member) = key.strip_prefix(prefix.as_str()) {
                                if expired.try_send(member.to_string()).is_err() {
                                    wake.notify_one();
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => wake.notify_one(),
                        Err(RecvError::Closed) => return,
                    }
                }
            });
            watch.tasks.push(task.abort_handle());
            watch.clients.push(client);
        }
        tracing::info!(target: "tessera::events", nodes = watch.clients.len(), of = total, "keyspace notifications of expired keys");
        (!watch.clients.is_empty()).then_some(watch)
    }
}
