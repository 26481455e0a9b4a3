//! Test support: real Redis / Valkey servers on free loopback ports, a test app over real
//! HTTP, and a minimal cookie-keeping browser.
//!
//! Binaries come from `REDIS_SERVER_BIN`, `REDIS8_SERVER_BIN`, `VALKEY_SERVER_BIN`, or from
//! `.servers/env.sh`, written by `scripts/install-servers.sh`. A missing binary fails the
//! test with the setup command to run: nothing is skipped.
#![allow(missing_docs, unreachable_pub)]

pub mod http;
pub mod resp;
pub mod server;
pub mod topology;

pub use http::{spawn_actix, spawn_app, Browser, TestApp};
pub use server::{Server, ServerKind};
pub use topology::Topology;

/// All standalone kinds the behaviour suite runs against.
pub const KINDS: [ServerKind; 3] = [ServerKind::Redis7, ServerKind::Redis8, ServerKind::Valkey];

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub mod fixture;
pub use fixture::{Adapter, Backend, Fixture, Setup};

/// Generates one `#[tokio::test]` per case, adapter (axum, actix) and backend: memory, Redis 7, Redis 8.2, Valkey
/// 8.1, Sentinel (Redis 7 primary + replica + 3 Sentinels) and Cluster (3 primaries + 3
/// replicas). Each case is `async fn case(backend: Backend)` in a module `cases`.
#[macro_export]
macro_rules! per_backend {
    ($($case:ident),* $(,)?) => {
        mod axum { $crate::per_backend!(@adapter $crate::Adapter::Axum; $($case),*); }
        mod actix { $crate::per_backend!(@adapter $crate::Adapter::Actix; $($case),*); }
    };
    (@adapter $adapter:expr; $($case:ident),*) => {
        $crate::per_backend!(@mod memory, $adapter, $crate::Backend::Memory; $($case),*);
        $crate::per_backend!(@mod redis7, $adapter, $crate::Backend::Redis($crate::ServerKind::Redis7); $($case),*);
        $crate::per_backend!(@mod redis8, $adapter, $crate::Backend::Redis($crate::ServerKind::Redis8); $($case),*);
        $crate::per_backend!(@mod valkey, $adapter, $crate::Backend::Redis($crate::ServerKind::Valkey); $($case),*);
        $crate::per_backend!(@mod sentinel, $adapter, $crate::Backend::Sentinel; $($case),*);
        $crate::per_backend!(@mod cluster, $adapter, $crate::Backend::Cluster; $($case),*);
    };
    (@mod $m:ident, $adapter:expr, $backend:expr; $($case:ident),*) => {
        mod $m {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::super::cases::$case($crate::Setup { backend: $backend, adapter: $adapter }).await
                }
            )*
        }
    };
}
