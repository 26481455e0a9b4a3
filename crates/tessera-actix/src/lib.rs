//! actix-web adapter for tessera.
//!
//! Not implemented yet: this crate is a compiling placeholder so the workspace layout is
//! final. The axum adapter (`tessera-axum`) is the one to use today; the actix middleware,
//! extractor and endpoint helpers will share the same `tessera-core` session engine.
#![deny(missing_docs)]

pub use tessera_core as core;
