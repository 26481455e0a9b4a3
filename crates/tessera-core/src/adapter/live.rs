//! What both adapters' live-connection helpers send when a session ends, defined once: the
//! server-sent event's name and data, and the WebSocket close frame's code and reason.

use crate::session::{EndCause, Session};
use futures_util::future::{BoxFuture, Either, FutureExt as _, Shared};
use futures_util::{Stream, StreamExt as _};

/// The name of the last server-sent event of a stream whose session ended: `ended`.
pub const ENDED_EVENT: &str = crate::layout::LIVE_ENDED_EVENT;

/// The WebSocket close code when the session ended (4000-4999 are for applications): a
/// client tells it from a network drop and does not reconnect.
pub const ENDED_CLOSE_CODE: u16 = 4001;

/// The data of the [`ENDED_EVENT`]: `{"type": "ended", "cause": "<cause>"}`
/// ([`EndCause::as_str`]); also the WebSocket close frame's reason (at most 39 bytes, well
/// within the 123 a close frame allows).
///
/// ```
/// use tessera_core::{adapter::ended_data, EndCause};
/// assert_eq!(ended_data(EndCause::LogoutAll), r#"{"cause":"logout_all","type":"ended"}"#);
/// ```
pub fn ended_data(cause: EndCause) -> String {
    serde_json::json!({ "type": ENDED_EVENT, "cause": cause.as_str() }).to_string()
}

/// A server-sent event as it goes on the wire: `event: <name>` (if any), one `data:` line per
/// line of `data`, and the blank line that ends it. For adapters without an SSE type of their
/// own (actix-web).
///
/// ```
/// use tessera_core::adapter::sse_frame;
/// assert_eq!(sse_frame(Some("tick"), "a\nb"), "event: tick\ndata: a\ndata: b\n\n");
/// assert_eq!(sse_frame(None, "a\rid: 9"), "data: a\ndata: id: 9\n\n");
/// ```
pub fn sse_frame(event: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = event {
        // A name is one line: anything after a line break would start a new field.
        let name = name.split(['\r', '\n']).next().unwrap_or_default();
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    // Every line break the protocol knows (CRLF, LF, CR) starts a new data line, so data can
    // never end the event or add a field.
    for line in data.replace("\r\n", "\n").split(['\r', '\n']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// The end of `session` ([`Session::ended`]), as a future that several places can wait on. A
/// store failure while loading the session proves nothing: it never resolves then (logged),
/// and the connection stays open as it would without tessera.
pub fn end_of(session: Session) -> Shared<BoxFuture<'static, EndCause>> {
    async move {
        match session.ended().await {
            Ok(cause) => cause,
            Err(e) => {
                tracing::warn!(error = %e, "session: could not watch for the end of a live connection's session");
                std::future::pending().await
            }
        }
    }
    .boxed()
    .shared()
}

/// `events` until they end (then the stream ends), or until `session` ends (then
/// `last(cause)`, and the stream ends): what the adapters' SSE helpers send.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
/// use futures_util::StreamExt as _;
/// use tessera_core::adapter::until_ended;
/// # let config = tessera_core::SessionConfig::builder(tessera_core::Key::generate()).lifecycle_events(true).build().unwrap();
/// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), config);
/// let session = manager.start(None::<&str>);
/// session.login("ada").await?;
/// let mut out = Box::pin(until_ended(session, futures_util::stream::pending::<String>(), |c| c.as_str().to_string()));
/// // The first poll starts watching: the session is live, nothing comes.
/// let wait = std::time::Duration::from_millis(50);
/// assert!(tokio::time::timeout(wait, out.next()).await.is_err());
/// manager.logout_all("ada").await?;
/// assert_eq!(out.next().await.as_deref(), Some("logout_all"));
/// assert_eq!(out.next().await, None);
/// # Ok(()) }
/// ```
pub fn until_ended<S, T>(
    session: Session,
    events: S,
    last: fn(EndCause) -> T,
) -> impl Stream<Item = T> + 'static
where
    S: Stream<Item = T> + 'static,
    T: 'static,
{
    let state = (Box::pin(events), end_of(session), false);
    futures_util::stream::unfold(state, move |(mut events, ended, done)| async move {
        if done {
            return None;
        }
        match futures_util::future::select(events.next(), ended.clone()).await {
            Either::Left((Some(e), _)) => Some((e, (events, ended, false))),
            Either::Left((None, _)) => None,
            Either::Right((cause, _)) => Some((last(cause), (events, ended, true))),
        }
    })
}
