//! The guides, as pages of this crate's documentation: the same text as `docs/*.md` in the
//! repository, so every Rust example in them is compiled (and the ones that need no server
//! run) by `cargo test -p tessera-axum --doc`.
//!
//! - [`user`]: the calls an app makes: login, logout everywhere, devices, remember me, CSRF,
//!   field lifetimes, protected fields, queries, the activity trail, events, the near-cache.
//! - [`operations`]: topologies, recommended server settings, failures and what a client may
//!   assume, the promises and the tests that prove them.
//! - [`migration`]: coming from tower-sessions, axum-login or actix-session.

#[doc = include_str!("../docs/user-guide.md")]
pub mod user {}

#[doc = include_str!("../docs/operations.md")]
pub mod operations {}

#[doc = include_str!("../docs/migration.md")]
pub mod migration {}
