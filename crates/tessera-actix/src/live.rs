//! Connections that live past their request, tied to the session: a server-sent event stream
//! or a WebSocket ([actix-ws](https://docs.rs/actix-ws)) that closes, with a final word, when
//! the session ends anywhere (a logout everywhere on another instance, a revoke, expiry). See
//! [`Session::ended`] for the mechanism and its cost.
//!
//! [`Session::ended`]: tessera_core::Session::ended

use crate::Session;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures_util::future::{BoxFuture, Shared};
use futures_util::{Stream, StreamExt as _};
use std::time::Duration;
use tessera_core::adapter::{
    end_of, ended_data, sse_frame, until_ended, ENDED_CLOSE_CODE, ENDED_EVENT,
};
use tessera_core::EndCause;

/// How often a comment keeps an idle stream open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One server-sent event, as [`sse`] streams it: `event: <name>` and the data, one `data:`
/// line per line (a line break in `data` can never end the event or add a field).
///
/// ```
/// assert_eq!(tessera_actix::live::event("tick", "{}"), "event: tick\ndata: {}\n\n");
/// ```
pub fn event(name: &str, data: &str) -> String {
    sse_frame(Some(name), data)
}

/// A `text/event-stream` response of `events` (each made with [`event`]) that ends when the
/// session does: a last event named `ended` ([`ENDED_EVENT`]) whose data is
/// `{"type": "ended", "cause": "<cause>"}` ([`EndCause::as_str`]), then the stream closes. When `events` ends
/// first, the response ends with it (no `ended`). A comment keeps it alive through proxies
/// every 15 s.
///
/// ```
/// use futures_util::StreamExt as _;
/// use tessera_actix::{live, Session, SessionError};
///
/// async fn feed(session: Session) -> Result<actix_web::HttpResponse, SessionError> {
///     if session.user_id().await?.is_none() {
///         return Err(tessera_actix::Error::NotLoggedIn.into());
///     }
///     let ticks = futures_util::stream::repeat_with(|| live::event("tick", "{}"))
///         .then(|e| async { actix_web::rt::time::sleep(std::time::Duration::from_secs(5)).await; e });
///     Ok(live::sse(session, ticks))
/// }
/// # let _ = actix_web::App::new().route("/feed", actix_web::web::get().to(feed));
/// ```
pub fn sse<S>(session: Session, events: S) -> HttpResponse
where
    S: Stream<Item = String> + 'static,
{
    let keep_alive = futures_util::stream::unfold((), |()| async {
        actix_web::rt::time::sleep(KEEP_ALIVE).await;
        Some((Some(": keep-alive\n\n".to_string()), ()))
    });
    // The app's events, then a `None` that ends the merged stream (the keep-alive never ends).
    let app = events
        .map(Some)
        .chain(futures_util::stream::once(std::future::ready(None)));
    let merged = futures_util::stream::select(app, keep_alive)
        .take_while(|frame| std::future::ready(frame.is_some()))
        .filter_map(std::future::ready);
    let last = |cause| sse_frame(Some(ENDED_EVENT), &ended_data(cause));
    let body = until_ended(session.0, merged, last)
        .map(|frame| Ok::<_, std::convert::Infallible>(Bytes::from(frame)));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}

/// An [actix-ws](https://docs.rs/actix-ws) WebSocket that closes when the session ends, with
/// the close code [`ENDED_CLOSE_CODE`] (4001) and the cause as its reason
/// (`{"type": "ended", "cause": "<cause>"}`): [`recv`](LiveSocket::recv) answers `None` from then on, as for a
/// socket the client closed. A loop that only sends waits on [`ended`](LiveSocket::ended)
/// beside its own work.
///
/// ```
/// use actix_web::{web, HttpRequest, HttpResponse};
/// use tessera_actix::{live::LiveSocket, Session};
///
/// async fn chat(req: HttpRequest, body: web::Payload, session: Session) -> actix_web::Result<HttpResponse> {
///     let (response, ws, messages) = actix_ws::handle(&req, body)?;
///     let mut socket = LiveSocket::new(ws, messages, session);
///     actix_web::rt::spawn(async move {
///         while let Some(Ok(msg)) = socket.recv().await {
///             if let actix_ws::Message::Text(t) = msg {
///                 let _ = socket.session().text(format!("echo: {t}")).await;
///             }
///         }
///     });
///     Ok(response)
/// }
/// # let _ = actix_web::App::new().route("/chat", web::get().to(chat));
/// ```
pub struct LiveSocket {
    ws: actix_ws::Session,
    messages: actix_ws::MessageStream,
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
    /// Ties the socket `actix_ws::handle` made (`ws`, `messages`) to `session`.
    pub fn new(ws: actix_ws::Session, messages: actix_ws::MessageStream, session: Session) -> Self {
        LiveSocket {
            ws,
            messages,
            ended: end_of(session.0),
            cause: None,
        }
    }

    /// The next message from the client; `None` when the client closed, or when the session
    /// ended (the close frame is sent first).
    pub async fn recv(&mut self) -> Option<Result<actix_ws::Message, actix_ws::ProtocolError>> {
        if self.cause.is_some() {
            return None;
        }
        let ended = self.ended.clone();
        let next = Box::pin(self.messages.recv());
        let cause = match futures_util::future::select(next, ended).await {
            futures_util::future::Either::Left((msg, _)) => return msg,
            futures_util::future::Either::Right((cause, _)) => cause,
        };
        self.close(cause).await;
        None
    }

    /// The handle to send with (`text`, `binary`, `ping`...).
    pub fn session(&mut self) -> &mut actix_ws::Session {
        &mut self.ws
    }

    /// Resolves when the session ends, after sending the close frame: for a loop that only
    /// pushes (select it beside the work).
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
    /// so a `recv` or `ended` cancelled meanwhile (a branch that lost a select) sends it on the
    /// next call.
    async fn close(&mut self, cause: EndCause) {
        let reason = actix_ws::CloseReason {
            code: actix_ws::CloseCode::Other(ENDED_CLOSE_CODE),
            description: Some(ended_data(cause)),
        };
        let _ = self.ws.clone().close(Some(reason)).await;
        self.cause = Some(cause);
    }
}
