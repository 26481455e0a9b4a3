//! The `Session` extractor, its rejection, and an error type handlers can return.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;
use std::ops::Deref;

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

/// Rejection when a handler asks for [`Session`] on a route without [`SessionLayer`](crate::SessionLayer).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no session on this request: add `.layer(tessera_axum::SessionLayer::new(store, config))` to the router that serves this route")]
pub struct SessionMissing;

impl IntoResponse for SessionMissing {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
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

/// A session error as an HTTP response: store unavailable is `503`, a session ended
/// meanwhile `409`, a reserved field name `400`, anything else `500`. The body names the
/// kind of failure only; the cause goes to the log.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SessionError(#[from] pub tessera_core::Error);

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        error_response(status, &self.0)
    }
}

pub(crate) fn error_response(status: StatusCode, err: &tessera_core::Error) -> Response {
    let mut res = Response::new(Body::from(err.public_message()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(secs) = err.retry_after() {
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    res
}
