//! CSRF checks: a form post's `csrf_token` field ([`CsrfForm`]) or a request's `X-CSRF-Token`
//! header ([`CsrfHeader`]) against the session's token ([`tessera_core::Session::csrf_token`]).
//! A request that fails the check is refused with `403 Forbidden` before the handler runs, so
//! it changes nothing. [`OriginChecked`] guards the JSON routes: a cross-origin request
//! passes only with the token.

use crate::extract::SessionMissing;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use serde::de::DeserializeOwned;
use std::ops::Deref;
use tessera_core::adapter::{require_csrf, require_same_origin, CsrfRejection as Reason};
use tessera_core::{CSRF_FIELD, CSRF_HEADER};

/// Why a CSRF check refused a request: [`tessera_core::adapter::CsrfRejection`] (which it
/// derefs to, and which says the status and body), as an axum response. An app that answers
/// some refusals itself matches on the reason:
///
/// ```
/// use axum::response::{IntoResponse, Response};
/// use tessera_axum::tessera_core::adapter::CsrfRejection as Reason;
/// use tessera_axum::{CsrfForm, CsrfRejection};
/// fn checked<T>(f: Result<CsrfForm<T>, CsrfRejection>) -> Result<T, Response> {
///     match f {
///         Ok(CsrfForm(t)) => Ok(t),
///         Err(CsrfRejection(Reason::NoSession)) => Err("please sign in again".into_response()),
///         Err(other) => Err(other.into_response()),
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CsrfRejection(pub Reason);

impl Deref for CsrfRejection {
    type Target = Reason;
    fn deref(&self) -> &Reason {
        &self.0
    }
}

impl From<Reason> for CsrfRejection {
    fn from(r: Reason) -> Self {
        CsrfRejection(r)
    }
}

impl From<tessera_core::Error> for CsrfRejection {
    fn from(e: tessera_core::Error) -> Self {
        CsrfRejection(Reason::Session(e))
    }
}

impl From<SessionMissing> for CsrfRejection {
    fn from(m: SessionMissing) -> Self {
        CsrfRejection(Reason::Missing(m.into()))
    }
}

impl IntoResponse for CsrfRejection {
    fn into_response(self) -> Response {
        if let Reason::Missing(m) = &self.0 {
            tracing::error!("{m}");
        }
        crate::extract::refusal(self.0.refusal())
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
        if !tessera_core::adapter::is_form_content_type(content_type.map(|v| v.as_bytes())) {
            return Err(Reason::NotAForm.into());
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| Reason::Body(e.status().as_u16()))?;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&body).map_err(|e| Reason::Form(e.to_string()))?;
        let token = pairs
            .iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        require_csrf(&session, token).await?;
        serde_urlencoded::from_bytes(&body)
            .map(CsrfForm)
            .map_err(|e| Reason::Form(e.to_string()).into())
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
        require_csrf(&session, token).await?;
        Ok(CsrfHeader)
    }
}

/// A request that passed the cross-origin check
/// ([`check_origin`](tessera_core::adapter::SessionExt::check_origin)):
/// `GET`/`HEAD`/`OPTIONS`, a request of the same origin (`Sec-Fetch-Site: same-origin` or
/// `none`; without it, an `Origin` whose host is the request's `Host`), one without either
/// header (curl, scripts), or a cross-origin one carrying this session's CSRF token in
/// `X-CSRF-Token`. Otherwise `403` ([`Reason::CrossOrigin`]) before the handler runs.
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
        let req = tessera_core::adapter::RequestOrigin {
            method: parts.method.as_str(),
            sec_fetch_site: h.get("sec-fetch-site").map(|v| v.as_bytes()),
            origin: h.get(http::header::ORIGIN).map(|v| v.as_bytes()),
            host: h
                .get(http::header::HOST)
                .map(|v| v.as_bytes())
                .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes())),
        };
        let token = h.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        require_same_origin(&session, &req, token).await?;
        Ok(OriginChecked)
    }
}
