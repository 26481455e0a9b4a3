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

pub use http::{spawn_actix, spawn_app, token_in, Browser, TestApp};
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
pub mod fuzzing;
pub use fixture::{Adapter, Backend, Fixture, Setup};

/// The one per-backend test generator: one `#[tokio::test]` per case, backend (and adapter,
/// when adapters are listed), each named `[adapter::]backend::case`.
///
/// ```text
/// // Both adapters on every backend: axum::memory::case_a, ..., actix::cluster::case_b.
/// per_backend!([axum, actix] x [memory, redis7, redis8, valkey, sentinel, cluster] => case_a, case_b);
/// // Backends alone, through axum: redis7::case_a, valkey::case_a.
/// per_backend!([redis7, valkey] => case_a);
/// // Backends alone, through actix: redis8_search::case_a.
/// per_backend!(actix: [redis8_search] => case_a);
/// // A module named apart, for another adapter: redis7::case_a and redis7_actix::case_a.
/// per_backend!([redis7, redis7_actix = redis7 @ actix] => case_a);
/// // Cases that are functions of the calling module rather than of its `cases` module.
/// per_backend!([memory, redis7, cluster] => self::{case_a, case_b});
/// // Named case first, case_a::memory, case_a::redis7: where cases of one module run on
/// // different backend lists.
/// per_backend!(by_case [memory, redis7] => self::{case_a});
/// per_backend!(by_case [redis7, cluster] => self::{case_b});
/// ```
///
/// Backends: `memory`, `redis7`, `redis8`, `redis8_search` (Redis 8.2 with the query engine),
/// `valkey`, `sentinel` (Redis 7 primary + replica + 3 Sentinels), `cluster` (3 primaries + 3
/// replicas). Each case is `async fn case(setup: Setup)`, or takes what a [`Setup`] converts
/// into ([`Backend`], [`ServerKind`] for standalone servers), in the module `cases` beside the
/// call (or, with `self::{..}`, in the calling module itself).
#[macro_export]
macro_rules! per_backend {
    // Adapters x backends: adapter::backend::case.
    ([$($adapter:ident),+ $(,)?] x $backends:tt => $($cases:tt)+) => {
        $crate::per_backend!(@adapters [$($adapter),+] $backends [super::super::] {$($cases)+});
    };
    // Backends through one adapter: backend::case.
    ($adapter:ident : $backends:tt => $($cases:tt)+) => {
        $crate::per_backend!(@backends $adapter $backends [super::] {$($cases)+});
    };
    // Backends through axum: backend::case.
    ([$($backends:tt)+] => $($cases:tt)+) => {
        $crate::per_backend!(@backends axum [$($backends)+] [super::] {$($cases)+});
    };
    // Backends through axum, named case first: case::backend.
    (by_case $backends:tt => self::{$($case:ident),+ $(,)?}) => {
        $( $crate::per_backend!(@by_case $case $backends [super::]); )+
    };
    (by_case $backends:tt => $($case:ident),+ $(,)?) => {
        $( $crate::per_backend!(@by_case $case $backends [super::cases::]); )+
    };

    (@by_case $case:ident [$($m:ident $(= $b:ident @ $a:ident)?),+ $(,)?] $path:tt) => {
        mod $case {
            $( $crate::per_backend!(@test $m [$($b $a)?] axum $path $case); )+
        }
    };

    (@adapters [$($adapter:ident),+] $backends:tt $up:tt $cases:tt) => {
        $(
            mod $adapter {
                $crate::per_backend!(@backends $adapter $backends $up $cases);
            }
        )+
    };
    // Where the cases are: the `cases` module beside the call, or the calling module.
    (@backends $adapter:ident $backends:tt [$($up:tt)+] {self::{$($case:ident),+ $(,)?}}) => {
        $crate::per_backend!(@each $adapter $backends [$($up)+] [$($case),+]);
    };
    (@backends $adapter:ident $backends:tt [$($up:tt)+] {$($case:ident),+ $(,)?}) => {
        $crate::per_backend!(@each $adapter $backends [$($up)+ cases::] [$($case),+]);
    };
    (@each $adapter:ident [$($m:ident $(= $b:ident @ $a:ident)?),+ $(,)?] $path:tt $cases:tt) => {
        $( $crate::per_backend!(@mod $m [$($b $a)?] $adapter $path $cases); )+
    };
    (@mod $m:ident [] $adapter:ident $path:tt $cases:tt) => {
        $crate::per_backend!(@emit $m $m $adapter $path $cases);
    };
    (@mod $m:ident [$b:ident $a:ident] $adapter:ident $path:tt $cases:tt) => {
        $crate::per_backend!(@emit $m $b $a $path $cases);
    };
    (@emit $m:ident $backend:ident $adapter:ident $path:tt [$($case:ident),+]) => {
        mod $m {
            $( $crate::per_backend!(@test $case [$backend $adapter] $adapter $path $case); )+
        }
    };
    // One test `$name`: the case `$case` (at `$path`) on the backend and adapter named.
    (@test $name:ident [] $adapter:ident $path:tt $case:ident) => {
        $crate::per_backend!(@test $name [$name $adapter] $adapter $path $case);
    };
    (@test $name:ident [$backend:ident $with:ident] $adapter:ident [$($path:tt)+] $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $($path)+ $case(::core::convert::Into::into($crate::Setup {
                backend: $crate::per_backend!(@backend $backend),
                adapter: $crate::per_backend!(@adapter $with),
            }))
            .await
        }
    };

    (@backend memory) => { $crate::Backend::Memory };
    (@backend redis7) => { $crate::Backend::Redis($crate::ServerKind::Redis7) };
    (@backend redis8) => { $crate::Backend::Redis($crate::ServerKind::Redis8) };
    (@backend redis8_search) => { $crate::Backend::Redis($crate::ServerKind::Redis8Search) };
    (@backend valkey) => { $crate::Backend::Redis($crate::ServerKind::Valkey) };
    (@backend sentinel) => { $crate::Backend::Sentinel };
    (@backend cluster) => { $crate::Backend::Cluster };
    (@adapter axum) => { $crate::Adapter::Axum };
    (@adapter actix) => { $crate::Adapter::Actix };
}
