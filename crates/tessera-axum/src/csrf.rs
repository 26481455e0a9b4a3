//! CSRF checks: a form post's `csrf_token` field ([`CsrfForm`]) or a request's `X-CSRF-Token`
//! header ([`CsrfHeader`]) against the session's token ([`tessera_core::Session::csrf_token`]).
//! A request that fails the check is refused with `403 Forbidden` before the handler runs, so
//! it changes nothing. [`OriginChecked`] guards the JSON routes: a cross-origin request
//! passes only with the token.

use crate::extract::{error_response, SessionMissing};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;
use serde::de::DeserializeOwned;
use tessera_core::{CSRF_FIELD, CSRF_HEADER};

/// Why a CSRF check refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrfRejection {
    /// No token, or not this session's (a forged or cross-site post): `403`.
    #[error("CSRF token missing or not valid")]
    Invalid,
    /// The request has no live session: none, or it was logged out, revoked or expired since
    /// the page was served. `403` too; an app may send the user to its login page instead.
    #[error("no live session for this request")]
    NoSession,
    /// A state-changing request that a page of another origin made (`Sec-Fetch-Site`, or
    /// `Origin` against `Host`; see [`tessera_core::is_cross_origin`]) without this session's
    /// token in `X-CSRF-Token`: `403`, with the JSON error body of the JSON routes. Nothing
    /// ran. ([`OriginChecked`] refuses with it.)
    #[error("cross-origin request without a valid CSRF token")]
    CrossOrigin,
    /// The body is not a form the handler's type reads: `422`.
    #[error("form body not readable: {0}")]
    Form(String),
    /// The request is not a form post (`application/x-www-form-urlencoded`): `415`. (A
    /// `text/plain` or multipart body is never read for a token.)
    #[error("not a form post (application/x-www-form-urlencoded)")]
    NotAForm,
    /// The body could not be read (over the body size limit: `413`).
    #[error("request body not readable")]
    Body(u16),
    /// The session store failed: `503` (or `500`), as any session error.
    #[error(transparent)]
    Session(#[from] tessera_core::Error),
    /// The route has no [`SessionLayer`](crate::SessionLayer): `500`.
    #[error(transparent)]
    Missing(#[from] SessionMissing),
}

impl IntoResponse for CsrfRejection {
    fn into_response(self) -> Response {
        match self {
            CsrfRejection::Invalid | CsrfRejection::NoSession => {
                (StatusCode::FORBIDDEN, self.to_string()).into_response()
            }
            CsrfRejection::CrossOrigin => crate::endpoints::reply(tessera_core::endpoints::Reply {
                status: 403,
                body: Some(serde_json::json!({ "error": self.to_string() })),
            }),
            CsrfRejection::Form(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, self.to_string()).into_response()
            }
            CsrfRejection::NotAForm => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, self.to_string()).into_response()
            }
            CsrfRejection::Body(status) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                self.to_string(),
            )
                .into_response(),
            CsrfRejection::Session(e) => error_response(&e),
            CsrfRejection::Missing(m) => m.into_response(),
        }
    }
}

/// Checks `token` against the session; the rejection says whether there was a session at all.
async fn check(session: &tessera_core::Session, token: &str) -> Result<(), CsrfRejection> {
    match session.check_csrf(token).await? {
        tessera_core::CsrfCheck::Valid => Ok(()),
        tessera_core::CsrfCheck::Invalid => Err(CsrfRejection::Invalid),
        tessera_core::CsrfCheck::NoSession => Err(CsrfRejection::NoSession),
    }
}

fn session_of(ext: &http::Extensions) -> Result<tessera_core::Session, SessionMissing> {
    ext.get::<tessera_core::Session>()
        .cloned()
        .ok_or(SessionMissing)
}

/// A form post (`application/x-www-form-urlencoded`) whose `csrf_token` field matched the
/// session's token; `T` is read from the same form (its other fields). Put the token in the
/// form with [`tessera_core::csrf_input`].
///
/// ```
/// use tessera_axum::{CsrfForm, Session, SessionError};
/// #[derive(serde::Deserialize)]
/// struct Rename { name: String }
/// async fn rename(session: Session, CsrfForm(form): CsrfForm<Rename>) -> Result<&'static str, SessionError> {
///     session.insert("name", &form.name).await?;
///     Ok("renamed")
/// }
/// # let _: axum::Router = axum::Router::new().route("/rename", axum::routing::post(rename));
/// ```
#[derive(Debug, Clone)]
pub struct CsrfForm<T>(pub T);

impl<S, T> FromRequest<S> for CsrfForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = CsrfRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let session = session_of(req.extensions())?;
        let content_type = req.headers().get(http::header::CONTENT_TYPE);
        if !tessera_core::is_form_content_type(content_type.map(|v| v.as_bytes())) {
            return Err(CsrfRejection::NotAForm);
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| CsrfRejection::Body(e.status().as_u16()))?;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&body).map_err(|e| CsrfRejection::Form(e.to_string()))?;
        let token = pairs
            .iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        check(&session, token).await?;
        serde_urlencoded::from_bytes(&body)
            .map(CsrfForm)
            .map_err(|e| CsrfRejection::Form(e.to_string()))
    }
}

/// A request whose `X-CSRF-Token` header matched the session's token (for `fetch` / XHR
/// posts). Take it as an argument of the handler it guards.
///
/// ```
/// use tessera_axum::{CsrfHeader, Session, SessionError};
/// async fn like(_: CsrfHeader, session: Session) -> Result<String, SessionError> {
///     Ok(session.increment("likes", 1).await?.to_string())
/// }
/// # let _: axum::Router = axum::Router::new().route("/like", axum::routing::post(like));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CsrfHeader;

impl<S: Send + Sync> FromRequestParts<S> for CsrfHeader {
    type Rejection = CsrfRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = session_of(&parts.extensions)?;
        let token = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        check(&session, token).await?;
        Ok(CsrfHeader)
    }
}

/// A request that passed the cross-origin check ([`tessera_core::Session::check_origin`]):
/// `GET`/`HEAD`/`OPTIONS`, a request of the same origin (`Sec-Fetch-Site: same-origin` or
/// `none`; without it, an `Origin` whose host is the request's `Host`), one without either
/// header (curl, scripts), or a cross-origin one carrying this session's CSRF token in
/// `X-CSRF-Token`. Otherwise `403` ([`CsrfRejection::CrossOrigin`]) before the handler runs.
/// The account endpoints ([`endpoints`](crate::endpoints())) take it; take it in every
/// state-changing JSON handler.
///
/// ```
/// use tessera_axum::{OriginChecked, Session, SessionError};
/// async fn like(_: OriginChecked, session: Session) -> Result<String, SessionError> {
///     Ok(session.increment("likes", 1).await?.to_string())
/// }
/// # let _: axum::Router = axum::Router::new().route("/like", axum::routing::post(like));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct OriginChecked;

impl<S: Send + Sync> FromRequestParts<S> for OriginChecked {
    type Rejection = CsrfRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = session_of(&parts.extensions)?;
        let h = &parts.headers;
        let req = tessera_core::RequestOrigin {
            method: parts.method.as_str(),
            sec_fetch_site: h.get("sec-fetch-site").map(|v| v.as_bytes()),
            origin: h.get(http::header::ORIGIN).map(|v| v.as_bytes()),
            host: h
                .get(http::header::HOST)
                .map(|v| v.as_bytes())
                .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes())),
        };
        let token = h.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        match session.check_origin(&req, token).await? {
            tessera_core::CsrfCheck::Valid => Ok(OriginChecked),
            _ => Err(CsrfRejection::CrossOrigin),
        }
    }
}
