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

pub use http::{spawn_app, Browser, TestApp};
pub use server::{Server, ServerKind};

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
pub use fixture::{Backend, Fx};
