//! The session protocol's layout: everything the Rust engine, the Lua scripts and the memory
//! store must agree on, named once.
//!
//! | file | job |
//! |---|---|
//! | `layout/keys.rs` | every key format (sessions, user index, ended-before mark, field indexes, events, search index name, near-cache marker), the user-id escaping |
//! | `layout/fields.rs` | the reserved hash fields, the `__` prefix rule ([`fields::is_reserved`]), lifetime stamps |
//! | `layout/marker.rs` | the `__m` marker grammar ([`marker::Marker`]: moving, retired, ended) |
//! | `layout/replies.rs` | the scripts' reply codes, one table |
//! | `layout/script_args.rs` | each script's `ARGV` positions, and [`script_args::Argv`] that builds arguments by them |
//! | `layout/lua_header.rs` | the header generated from the above and prepended to every script |
//! | `layout/script_scan.rs` | (test) every script takes names, markers, codes and positions from the header |
//! | `layout/rust_scan.rs` | (test) no Rust file outside `layout/` types a reserved name, a marker or a key fragment |
//!
//! The scripts themselves live in `store/redis/scripts/`; `store/redis/protocol.rs` loads
//! them (header + prelude + script) and decodes their replies.

pub(crate) mod fields;
pub(crate) mod keys;

/// The server-sent event that ends a live connection whose session ended, as clients see it
/// (`tessera_core::adapter::ENDED_EVENT`): the same word as the `ended` marker, a different
/// thing, so defined here beside it.
pub(crate) const LIVE_ENDED_EVENT: &str = "ended";
pub(crate) mod lua_header;
pub(crate) mod marker;
pub(crate) mod replies;
#[cfg(test)]
mod rust_scan;
pub(crate) mod script_args;
#[cfg(test)]
mod script_scan;
