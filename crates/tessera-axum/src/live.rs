//! Connections that live past their request, tied to the session: a server-sent event stream
//! or a WebSocket that closes, with a final word, when the session ends anywhere (a logout
//! everywhere on another instance, a revoke, expiry). See [`Session::ended`] for the
//! mechanism and its cost.
//!
//! [`Session::ended`]: tessera_core::Session::ended

use crate::Session;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::future::{BoxFuture, Shared};
use futures_util::{Stream, StreamExt as _};
use std::convert::Infallible;
use tessera_core::adapter::{end_of, ended_data, until_ended, ENDED_CLOSE_CODE, ENDED_EVENT};
use tessera_core::EndCause;

/// A server-sent event stream of `events` that ends when the session does: a last event
/// named `ended` ([`ENDED_EVENT`]) whose data is `{"type": "ended", "cause": "<cause>"}`
/// ([`EndCause::as_str`]), then the stream closes. When `events` ends first, the stream ends
/// with it (no `ended`). Comments keep it alive through proxies every 15 s.
///
/// ```
/// use axum::response::sse::Event;
/// use futures_util::StreamExt as _;
/// use tessera_axum::{live, Session, SessionError};
///
/// async fn feed(session: Session) -> Result<impl axum::response::IntoResponse, SessionError> {
///     if session.user_id().await?.is_none() {
///         return Err(tessera_axum::Error::NotLoggedIn.into());
///     }
///     let ticks = futures_util::stream::repeat_with(|| Event::default().event("tick").data("{}"))
///         .then(|e| async { tokio::time::sleep(std::time::Duration::from_secs(5)).await; e });
///     Ok(live::sse(session, ticks))
/// }
/// # let _: axum::Router = axum::Router::new().route("/feed", axum::routing::get(feed));
/// ```
pub fn sse<S>(
    session: Session,
    events: S,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static>
where
    S: Stream<Item = Event> + Send + 'static,
{
    let last = |cause| Event::default().event(ENDED_EVENT).data(ended_data(cause));
    Sse::new(until_ended(session.0, events, last).map(Ok)).keep_alive(KeepAlive::default())
}

/// A WebSocket that closes when the session ends, with the close code
/// [`ENDED_CLOSE_CODE`] (4001) and the cause as its reason (`{"type": "ended", "cause": "<cause>"}`):
/// [`recv`](LiveSocket::recv) answers `None` from then on, as for a socket the client closed.
/// A loop that only sends waits on [`ended`](LiveSocket::ended) beside its own work.
///
/// ```
/// use axum::extract::ws::{Message, WebSocketUpgrade};
/// use axum::response::Response;
/// use tessera_axum::{live::LiveSocket, Session};
///
/// async fn chat(session: Session, ws: WebSocketUpgrade) -> Response {
///     ws.on_upgrade(|socket| async move {
///         let mut socket = LiveSocket::new(socket, session);
///         while let Some(Ok(msg)) = socket.recv().await {
///             if let Message::Text(t) = msg {
///                 let _ = socket.send(Message::Text(format!("echo: {t}").into())).await;
///             }
///         }
///         // Here the client left, or the session ended (`socket.end_cause()` says which).
///     })
/// }
/// # let _: axum::Router = axum::Router::new().route("/chat", axum::routing::get(chat));
/// ```
pub struct LiveSocket {
    socket: WebSocket,
    ended: Shared<BoxFuture<'static, EndCause>>,
    cause: Option<EndCause>,
}

impl std::fmt::Debug for LiveSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSocket")
            .field("cause", &self.cause)
            .finish_non_exhaustive()
    }
}

impl LiveSocket {
    /// Ties `socket` to `session` (the request's, taken before the upgrade).
    pub fn new(socket: WebSocket, session: Session) -> Self {
        LiveSocket {
            socket,
            ended: end_of(session.0),
            cause: None,
        }
    }

    /// The next message from the client; `None` when the client closed, or when the session
    /// ended (the close frame is sent first).
    pub async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        if self.cause.is_some() {
            return None;
        }
        let ended = self.ended.clone();
        let next = Box::pin(self.socket.recv());
        let cause = match futures_util::future::select(next, ended).await {
            futures_util::future::Either::Left((msg, _)) => return msg,
            futures_util::future::Either::Right((cause, _)) => cause,
        };
        self.close(cause).await;
        None
    }

    /// Sends a message (an error once the socket is closed).
    pub async fn send(&mut self, msg: Message) -> Result<(), axum::Error> {
        self.socket.send(msg).await
    }

    /// Resolves when the session ends, after sending the close frame: for a loop that only
    /// pushes (`tokio::select!` it beside the work).
    pub async fn ended(&mut self) -> EndCause {
        if let Some(c) = self.cause {
            return c;
        }
        let cause = self.ended.clone().await;
        self.close(cause).await;
        cause
    }

    /// Why the session ended, once it has.
    pub fn end_cause(&self) -> Option<EndCause> {
        self.cause
    }

    /// Sends the close frame; the socket counts as closed once it is sent (or cannot be),
    /// so a `recv` or `ended` cancelled meanwhile (a `select!` branch that lost) sends it on
    /// the next call.
    async fn close(&mut self, cause: EndCause) {
        let frame = CloseFrame {
            code: ENDED_CLOSE_CODE,
            reason: ended_data(cause).into(),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
        self.cause = Some(cause);
    }
}
