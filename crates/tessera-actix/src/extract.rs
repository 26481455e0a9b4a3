//! The `Session` extractor, its rejection, and an error type handlers can return.

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::future::{ready, Ready};
use std::ops::Deref;
use tessera_core::adapter::endpoints::Reply;
use tessera_core::adapter::{Body, Refusal};

/// The request's session, taken as a handler argument. Derefs to [`tessera_core::Session`].
///
/// ```
/// use tessera_actix::{Session, SessionError};
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

/// The error when a handler asks for [`Session`] on an app without [`SessionMiddleware`](crate::SessionMiddleware):
/// `500`, with the fix as text ([`tessera_core::adapter::SessionMissing`]).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{}", tessera_core::adapter::SessionMissing::from(*self))]
pub struct SessionMissing;

impl From<SessionMissing> for tessera_core::adapter::SessionMissing {
    fn from(_: SessionMissing) -> Self {
        tessera_core::adapter::SessionMissing::new(
            "add `.wrap(tessera_actix::SessionMiddleware::new(store, config))` to the App that serves this route",
        )
    }
}

impl ResponseError for SessionMissing {
    fn status_code(&self) -> StatusCode {
        status(
            tessera_core::adapter::SessionMissing::from(*self)
                .refusal()
                .status,
        )
    }

    fn error_response(&self) -> HttpResponse {
        refusal(tessera_core::adapter::SessionMissing::from(*self).refusal())
    }
}

impl FromRequest for Session {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.get_session().map_err(Into::into))
    }
}

/// The request's session where no extractor runs: in a guard, in the app's own middleware
/// (wrapped inside [`SessionMiddleware`](crate::SessionMiddleware)), or from a
/// `ServiceResponse` — what actix-session's `SessionExt` gives. The same handle as the
/// [`Session`] extractor (one per request).
///
/// ```
/// use actix_web::{dev::ServiceRequest, HttpRequest};
/// use tessera_actix::{SessionError, SessionExt as _};
///
/// async fn signed_in(req: &HttpRequest) -> Result<bool, actix_web::Error> {
///     let session = req.get_session()?;
///     Ok(session.user_id().await.map_err(SessionError)?.is_some())
/// }
///
/// // In a middleware (`actix_web::middleware::from_fn`), before the handler runs:
/// async fn theme_of(req: &ServiceRequest) -> Option<String> {
///     let session = req.get_session().ok()?;
///     session.get::<String>("theme").await.ok().flatten()
/// }
/// ```
pub trait SessionExt {
    /// This request's session, or [`SessionMissing`] (`500`, naming the fix) when no
    /// [`SessionMiddleware`](crate::SessionMiddleware) wraps the route.
    fn get_session(&self) -> Result<Session, SessionMissing>;
}

fn session_in(ext: &actix_web::dev::Extensions) -> Result<Session, SessionMissing> {
    ext.get::<tessera_core::Session>()
        .cloned()
        .map(Session)
        .ok_or_else(|| {
            tracing::error!("{SessionMissing}");
            SessionMissing
        })
}

impl SessionExt for HttpRequest {
    fn get_session(&self) -> Result<Session, SessionMissing> {
        session_in(&self.extensions())
    }
}

impl SessionExt for actix_web::dev::ServiceRequest {
    fn get_session(&self) -> Result<Session, SessionMissing> {
        session_in(&self.extensions())
    }
}

impl<B> SessionExt for actix_web::dev::ServiceResponse<B> {
    fn get_session(&self) -> Result<Session, SessionMissing> {
        self.request().get_session()
    }
}

impl SessionExt for actix_web::guard::GuardContext<'_> {
    fn get_session(&self) -> Result<Session, SessionMissing> {
        session_in(&self.req_data())
    }
}

/// A session error as an HTTP response: the status from [`tessera_core::Error::status_code`],
/// the JSON body every tessera error has (`{"error": "<public message>"}`), and `Retry-After`
/// when nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SessionError(#[from] pub tessera_core::Error);

impl ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        status(self.0.status_code())
    }

    fn error_response(&self) -> HttpResponse {
        error_response(&self.0)
    }
}

/// A core status code as an actix status: the one conversion in this crate.
pub(crate) fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A core [`Refusal`] as an actix response: the one way this adapter refuses. The refusal
/// rides along in the response's extensions, where [`SessionMiddleware::render_errors`]'s
/// hook finds it.
///
/// [`SessionMiddleware::render_errors`]: crate::SessionMiddleware::render_errors
pub(crate) fn refusal(r: Refusal) -> HttpResponse {
    let status = status(r.status);
    let mut res = match &r.body {
        Body::Json(body) => HttpResponse::build(status).json(body),
        Body::Text(text) => HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(text.clone()),
        _ => HttpResponse::new(status),
    };
    if let Some(secs) = r.retry_after {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    res.extensions_mut().insert(r);
    res
}

/// The one way this adapter answers an error: [`Refusal::error`] (`{"error": "<public
/// message>"}`, plus `Retry-After` when nothing was changed).
pub(crate) fn error_response(err: &tessera_core::Error) -> HttpResponse {
    refusal(Refusal::error(err))
}

/// A core [`Reply`] as an actix response.
pub fn reply(r: Reply) -> HttpResponse {
    let status = status(r.status);
    match r.body {
        Some(body) => HttpResponse::build(status).json(body),
        None => HttpResponse::new(status),
    }
}
