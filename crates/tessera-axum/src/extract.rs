//! The `Session` extractor, its rejection, and an error type handlers can return.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::request::Parts;
use http::StatusCode;
use std::ops::Deref;
use tessera_core::adapter::{Body, Refusal};

/// The request's session, taken as a handler argument. Derefs to [`tessera_core::Session`].
///
/// ```
/// use tessera_axum::{Session, SessionError};
/// async fn handler(session: Session) -> Result<String, SessionError> {
///     session.insert("theme", "dark").await?;
///     Ok(session.get::<String>("theme").await?.unwrap_or_default())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Session(pub tessera_core::Session);

impl Deref for Session {
    type Target = tessera_core::Session;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Rejection when a handler asks for [`Session`] on a route without [`SessionLayer`](crate::SessionLayer):
/// `500`, with the fix as text ([`tessera_core::adapter::SessionMissing`]).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{}", tessera_core::adapter::SessionMissing::from(*self))]
pub struct SessionMissing;

impl From<SessionMissing> for tessera_core::adapter::SessionMissing {
    fn from(_: SessionMissing) -> Self {
        tessera_core::adapter::SessionMissing::new(
            "add `.layer(tessera_axum::SessionLayer::new(store, config))` to the router that serves this route",
        )
    }
}

impl IntoResponse for SessionMissing {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        refusal(tessera_core::adapter::SessionMissing::from(self).refusal())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionMissing;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<tessera_core::Session>()
            .cloned()
            .map(Session)
            .ok_or(SessionMissing)
    }
}

/// A session error as an HTTP response: the status from [`tessera_core::Error::status_code`]
/// (store unavailable `503`, a session ended meanwhile `409`, a reserved field name `400`,
/// anything else `500`) and the JSON body every tessera error has, `{"error": "<public
/// message>"}`; the cause goes to the log, never the body.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SessionError(#[from] pub tessera_core::Error);

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

/// A core status code as an axum status: the one conversion in this crate.
pub(crate) fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A core [`Refusal`] as an axum response: the one way this adapter refuses. The refusal
/// rides along in the response's extensions, where [`SessionLayer::render_errors`]'s hook
/// finds it.
///
/// [`SessionLayer::render_errors`]: crate::SessionLayer::render_errors
pub(crate) fn refusal(r: Refusal) -> Response {
    let status = status(r.status);
    let mut res = match &r.body {
        Body::Json(body) => (status, Json(body)).into_response(),
        Body::Text(text) => (status, text.clone()).into_response(),
        _ => status.into_response(),
    };
    if let Some(secs) = r.retry_after {
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    res.extensions_mut().insert(r);
    res
}

/// The one way this adapter answers an error: [`Refusal::error`] (the JSON of every tessera
/// error, plus `Retry-After` when nothing was changed).
pub(crate) fn error_response(err: &tessera_core::Error) -> Response {
    refusal(Refusal::error(err))
}
