//! Each pooled client's connection task, started and kept running.
//!
//! fred ends a client's connection task on some errors and leaves the client looking
//! connected, with nothing sent again until the process restarts: an `ASK` redirect (a key of
//! a slot migrating between Cluster nodes, as a resharding does) with no write attempts left
//! ends it (fred 10.1, `router/utils.rs`). tessera allows one attempt per command, so that a
//! lost connection never replays an increment. So each task that ends other than by `quit` is
//! started again, and what depended on it is told first (the near-cache's tracking ended with
//! it).

use crate::error::{Error, Result, StoreError};
use fred::prelude::*;
use fred::types::ConnectHandle;
use std::time::Duration;

/// Starts the connection task of every client of `pool` and waits until each has connected,
/// within `limit`: its tasks, for [`supervise`]. On an error nothing is supervised (the caller
/// closes the pool).
pub(super) async fn start(
    pool: &Pool,
    limit: Duration,
    what: &'static str,
) -> Result<Vec<ConnectHandle>> {
    let mut waits = Vec::new();
    let mut tasks = Vec::new();
    for client in pool.clients() {
        // Listening before the task starts (as fred's own `init` does): a refusal that comes
        // at once is not missed.
        let mut wait = Box::pin(client.wait_for_connect());
        if let Some(done) = futures_util::FutureExt::now_or_never(&mut wait) {
            done.map_err(Error::from_fred)?;
        }
        tasks.push(client.connect());
        waits.push(wait);
    }
    let all = futures_util::future::try_join_all(waits);
    match tokio::time::timeout(limit, all).await {
        Err(_) => Err(Error::Unavailable(StoreError::timeout(what))),
        Ok(Err(e)) => Err(Error::from_fred(e)),
        Ok(Ok(_)) => Ok(tasks),
    }
}

/// Keeps each client's connection task (`tasks`, from [`start`]) running: one that ends with
/// an error, or a panic, is started again after `on_restart(i)` (client `i`), 50 ms later,
/// doubling to 500 ms while it keeps ending within 5 s; one that ends cleanly (`quit`) is left ended.
/// The watchers, to abort with the pool's other tasks.
pub(super) fn supervise(
    pool: &Pool,
    tasks: Vec<ConnectHandle>,
    on_restart: impl Fn(usize) + Send + Sync + 'static,
) -> Vec<tokio::task::JoinHandle<()>> {
    let on_restart = std::sync::Arc::new(on_restart);
    pool.clients()
        .iter()
        .cloned()
        .zip(tasks)
        .enumerate()
        .map(|(i, (client, task))| {
            let on_restart = on_restart.clone();
            tokio::spawn(async move {
                let mut task = task;
                let mut delay = Duration::from_millis(50);
                loop {
                    let started = std::time::Instant::now();
                    let error = match task.await {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) if e.is_canceled() => return,
                        Ok(Err(e)) => e.to_string(),
                        Err(panic) => panic.to_string(),
                    };
                    tracing::error!(client = i, %error, "the session store client's connection task ended; starting it again");
                    on_restart(i);
                    if started.elapsed() > Duration::from_secs(5) {
                        delay = Duration::from_millis(50);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                    task = client.connect();
                }
            })
        })
        .collect()
}
