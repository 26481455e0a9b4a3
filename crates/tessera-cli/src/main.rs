//! `tessera`: the operator's command-line tool for sessions kept by tessera in Redis or
//! Valkey, on the same URLs the apps use (`redis://`, `rediss://`, `redis-sentinel://`,
//! `redis-cluster://`).
//!
//! ```text
//! tessera doctor                          the server's durability and settings, with what to change
//! tessera sessions <user>                 a user's devices: handle, created, last seen, agent, address
//! tessera inspect <handle> [--user U]     one session's fields (protected ones named, never shown)
//! tessera end <user>                      every session of a user (logout everywhere)
//! tessera end --handle H [--user U]       one session
//! tessera end --where tenant=acme         every live session whose indexed field holds the value
//! tessera count <field>                   live sessions per value of an indexed field
//! tessera events [--follow] [--after C]   lifecycle events, oldest first
//! ```
//!
//! Tables for people, `--json` for scripts (one JSON document; `events` prints one JSON object
//! per line). Exit codes: see [`Exit`]. An end here does not know the apps' indexed fields
//! (except the one `--where` names): their entries for the ended sessions stay until the
//! apps' next query prunes them (a query checks every entry, so none is ever counted).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod commands;
mod render;

/// What the process exits with, for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done (for `doctor`: nothing to change).
    Ok = 0,
    /// 1: `doctor` found settings that put sessions at risk.
    Warnings = 1,
    /// 2: the command line or an argument is wrong (also clap's own usage errors).
    Usage = 2,
    /// 3: the store could not be reached or failed.
    Store = 3,
    /// 4: nothing has that handle (`inspect`, `end --handle`).
    NotFound = 4,
    /// 5: an `end` was not confirmed (answered other than `y`, or stdin closed, without
    /// `--yes`).
    NotConfirmed = 5,
}

/// The tool's command line.
#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Sessions kept by tessera in Redis or Valkey: check, list, inspect, end, count, follow."
)]
pub struct Cli {
    /// The store's URL, as the apps have it.
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    pub url: Option<String>,
    /// The apps' key namespace (`SessionConfigBuilder::namespace`).
    #[arg(long, env = "TESSERA_NAMESPACE", default_value = "", global = true)]
    pub namespace: String,
    /// The apps run without lifecycle events: publish none (default: they have them on, and
    /// every end this tool makes is published as theirs are).
    #[arg(long, global = true)]
    pub no_events: bool,
    /// The apps' protected fields (`protected_field`), comma-separated: `inspect` names them
    /// and never prints what they hold. Values sealed by tessera are recognised without this.
    #[arg(long, env = "TESSERA_PROTECTED", value_delimiter = ',', global = true)]
    pub protected: Vec<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The durability and configuration check of every server, with what to change.
    Doctor,
    /// A user's sessions (devices), most recently used first.
    Sessions {
        /// The user's id.
        user: String,
    },
    /// One session: its metadata and fields; protected fields are named, never shown.
    Inspect {
        /// Its handle (from `sessions`, `events` or a device list).
        handle: String,
        /// Its user: one index read instead of a key scan.
        #[arg(long)]
        user: Option<String>,
    },
    /// Ends sessions, after showing how many and asking (`--yes` for scripts).
    End {
        /// Every session of this user (logout everywhere).
        #[arg(conflicts_with_all = ["handle", "where_"], required_unless_present_any = ["handle", "where_"])]
        user: Option<String>,
        /// The session with this handle.
        #[arg(long)]
        handle: Option<String>,
        /// With `--handle`: its user (one index read instead of a key scan).
        #[arg(long = "user", requires = "handle")]
        handle_user: Option<String>,
        /// Every live session whose indexed FIELD holds VALUE (a list field of the apps needs
        /// `--list`: without it, nothing matches).
        #[arg(long = "where", value_name = "FIELD=VALUE", conflicts_with = "handle")]
        where_: Option<String>,
        /// With `--where`: FIELD holds a JSON list, each element indexed.
        #[arg(long, requires = "where_")]
        list: bool,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Live sessions per value of an indexed field.
    Count {
        /// The field (declared with `index_field` or `index_list_field` in the apps).
        field: String,
        /// The field holds a JSON list, each element indexed (`index_list_field`).
        #[arg(long)]
        list: bool,
    },
    /// Lifecycle events, oldest first.
    Events {
        /// Keep printing events as they come, until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Start after this cursor (from an earlier event); default: the oldest retained.
        #[arg(long)]
        after: Option<String>,
        /// At most this many (without `--follow`), 1 to 10,000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tessera: cannot start: {e}");
            return ExitCode::from(Exit::Store as u8);
        }
    };
    let code = runtime.block_on(commands::run(cli));
    ExitCode::from(code as u8)
}
