//! Each command: connect as the apps do, ask the core, print for people or for scripts.

use crate::render::{self, Out};
use crate::{Cli, Command, Exit};
use futures_util::StreamExt as _;
use std::time::Duration;
use tessera_core::{Error, ErrorKind, Key, RedisOptions, SessionConfig, SessionManager, Store};

/// Runs the command; what the process exits with.
pub(crate) async fn run(cli: Cli) -> Exit {
    let out = Out { json: cli.json };
    match run_inner(&cli, &out).await {
        Ok(code) => code,
        Err(Failure(code, message)) => {
            eprintln!("tessera: {message}");
            code
        }
    }
}

/// A command that could not do its job: the exit code and what to tell.
struct Failure(Exit, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::InvalidInput | ErrorKind::Unsupported | ErrorKind::Config => Exit::Usage,
            _ => Exit::Store,
        };
        let detail = match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        };
        Failure(code, detail)
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure(Exit::Usage, message.into())
}

async fn run_inner(cli: &Cli, out: &Out) -> Result<Exit, Failure> {
    let Some(url) = cli.url.as_deref().filter(|u| !u.is_empty()) else {
        return Err(usage("no store: pass --url URL or set REDIS_URL"));
    };
    // An operator's command fails at once when the server is not there (no background connect).
    let store = Store::redis_with(
        url,
        RedisOptions::default()
            .strict_start(true)
            .command_timeout(Duration::from_secs(5)),
    )
    .await?;
    let indexed = match &cli.command {
        Command::Count { field, list } => Some((field.as_str(), *list)),
        Command::End {
            where_: Some(w),
            list,
            ..
        } => Some((split_where(w)?.0, *list)),
        _ => None,
    };
    let manager = SessionManager::new(store.clone(), config(cli, indexed)?);
    match &cli.command {
        Command::Doctor => doctor(&store, out).await,
        Command::Sessions { user } => {
            let devices = manager.list_sessions(user).await?;
            out.sessions(&devices);
            Ok(Exit::Ok)
        }
        Command::Inspect { handle, user } => {
            match manager.inspect(handle, user.as_deref()).await? {
                Some(d) => {
                    out.details(&d);
                    Ok(Exit::Ok)
                }
                None => Err(Failure(
                    Exit::NotFound,
                    format!("no live session has the handle {handle}"),
                )),
            }
        }
        Command::End {
            user,
            handle,
            handle_user,
            where_,
            list,
            yes,
        } => {
            let target = match (user, handle, where_) {
                (Some(u), _, _) => Target::User(u),
                (_, Some(h), _) => Target::Handle(h, handle_user.as_deref()),
                (_, _, Some(w)) => {
                    let (f, v) = split_where(w)?;
                    Target::Where(f, v)
                }
                _ => return Err(usage("end needs a user, --handle H or --where FIELD=VALUE")),
            };
            end(&manager, target, *yes, *list, out).await
        }
        Command::Count { field, list } => {
            let counts = manager.count_by_value(field).await?;
            if counts.is_empty() && !list {
                eprintln!("tessera: if {field} is a list field of the apps (index_list_field), pass --list");
            }
            out.counts(field, &counts);
            Ok(Exit::Ok)
        }
        Command::Events {
            follow,
            after,
            limit,
        } => events(&manager, after.clone(), *limit as usize, *follow, out).await,
    }
}

/// The apps' layout as far as this tool needs it: the namespace, whether events are on, the
/// one indexed field a command names. The signing key is never used (no cookie is made here).
fn config(cli: &Cli, indexed: Option<(&str, bool)>) -> Result<SessionConfig, Failure> {
    let mut b = SessionConfig::builder(Key::generate())
        .namespace(cli.namespace.clone())
        .instance_name("tessera-cli")
        .lifecycle_events(!cli.no_events);
    // Named only, so that `inspect` never prints them (a key to read them is never needed).
    for name in &cli.protected {
        b = b.protected_field(name.clone());
    }
    if !cli.protected.is_empty() {
        b = b.field_key(tessera_core::FieldKey::generate());
    }
    if let Some((field, list)) = indexed {
        b = if list {
            b.index_list_field(field)
        } else {
            b.index_field(field)
        };
    }
    b.build().map_err(|e| usage(e.to_string()))
}

fn split_where(w: &str) -> Result<(&str, &str), Failure> {
    match w.split_once('=') {
        Some((f, v)) if !f.is_empty() && !v.is_empty() => Ok((f, v)),
        _ => Err(usage(format!("--where takes FIELD=VALUE, not {w:?}"))),
    }
}

async fn doctor(store: &Store, out: &Out) -> Result<Exit, Failure> {
    let report = store.check_server().await?;
    let caps = render::Capabilities {
        query_engine: store.has_query_engine(),
        field_expiry: store.native_field_expiry(),
    };
    out.doctor(&report, &caps);
    Ok(if report.warnings.is_empty() {
        Exit::Ok
    } else {
        Exit::Warnings
    })
}

enum Target<'a> {
    User(&'a str),
    Handle(&'a str, Option<&'a str>),
    Where(&'a str, &'a str),
}

async fn end(
    manager: &SessionManager,
    target: Target<'_>,
    yes: bool,
    list: bool,
    out: &Out,
) -> Result<Exit, Failure> {
    let mut found_user = None;
    let (matched, what) = match &target {
        Target::User(u) => (
            manager.list_sessions(*u).await?.len(),
            format!("of user {}", render::shown(u)),
        ),
        Target::Handle(h, user) => match manager.inspect(h, *user).await? {
            Some(d) => {
                let what = format!(
                    "with handle {h} (user {})",
                    render::shown(d.user_id.as_deref().unwrap_or("none"))
                );
                // Ended through its user's index: no second key scan.
                found_user = d.user_id;
                (1, what)
            }
            None => {
                return Err(Failure(
                    Exit::NotFound,
                    format!("no live session has the handle {h}"),
                ))
            }
        },
        Target::Where(f, v) => (
            manager.count_sessions(f, v).await?,
            format!("whose {} holds {}", render::shown(f), render::shown(v)),
        ),
    };
    if matched == 0 {
        if let (Target::Where(f, _), false) = (&target, list) {
            eprintln!(
                "tessera: if {f} is a list field of the apps (index_list_field), pass --list"
            );
        }
        out.ended(0, 0);
        return Ok(Exit::Ok);
    }
    let question = format!("End {matched} live session(s) {what}?");
    if !yes {
        if !render::confirm(&question) {
            return Err(Failure(
                Exit::NotConfirmed,
                "not confirmed: nothing was ended (--yes skips the question)".into(),
            ));
        }
        // Only what was confirmed: sessions may have come or gone while the question waited.
        let now = match &target {
            Target::User(u) => manager.list_sessions(*u).await?.len(),
            Target::Handle(..) => matched,
            Target::Where(f, v) => manager.count_sessions(f, v).await?,
        };
        if now != matched {
            return Err(Failure(
                Exit::NotConfirmed,
                format!("{matched} matched when asked, {now} match now: nothing was ended; run it again"),
            ));
        }
    }
    let ended = match target {
        Target::User(u) => manager.logout_all(u).await?,
        Target::Handle(h, user) => {
            let by_index = user.or(found_user.as_deref());
            let mut ended = manager.end_handle(h, by_index).await?;
            if !ended && user.is_none() && by_index.is_some() {
                // Not in its user's index (the entry lapsed): by the scan after all.
                ended = manager.end_handle(h, None).await?;
            }
            if !ended {
                return Err(Failure(
                    Exit::NotFound,
                    format!("the session with the handle {h} ended before it could be ended here"),
                ));
            }
            1
        }
        Target::Where(f, v) => manager.end_sessions(f, v).await?,
    };
    out.ended(matched, ended);
    Ok(Exit::Ok)
}

async fn events(
    manager: &SessionManager,
    after: Option<String>,
    limit: usize,
    follow: bool,
    out: &Out,
) -> Result<Exit, Failure> {
    if !follow {
        let page = manager.read_events(after.as_deref(), limit).await?;
        if page.missed {
            eprintln!("tessera: events after this cursor were already dropped by the retention");
        }
        for e in &page.events {
            out.event(e);
        }
        out.cursor(&page.cursor);
        return Ok(Exit::Ok);
    }
    // Checked once before following: a wrong cursor or events off is a usage error, not a
    // stream of errors.
    manager.read_events(after.as_deref(), 1).await?;
    let mut stream = manager.events(after);
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(Exit::Ok),
            item = stream.next() => match item {
                Some(Ok(e)) => out.event(&e),
                Some(Err(e)) if e.kind() == ErrorKind::EventsMissed => {
                    eprintln!("tessera: some events were dropped by the retention before they were read");
                }
                Some(Err(e)) => eprintln!("tessera: reading events: {e} (retrying)"),
                None => return Ok(Exit::Ok),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_where_needs_both_sides() {
        assert_eq!(
            super::split_where("tenant=acme").ok(),
            Some(("tenant", "acme"))
        );
        assert_eq!(super::split_where("a=b=c").ok(), Some(("a", "b=c")));
        for bad in ["tenant", "=acme", "tenant=", ""] {
            assert!(super::split_where(bad).is_err(), "{bad}");
        }
    }
}
