//! CSRF checks: a form post's `csrf_token` field ([`CsrfForm`]) or a request's `X-CSRF-Token`
//! header ([`CsrfHeader`]) against the session's token ([`tessera_core::Session::csrf_token`]).
//! A request that fails the check is refused with `403 Forbidden` before the handler runs, so
//! it changes nothing. [`OriginChecked`] guards the JSON routes: a cross-origin request
//! passes only with the token.

use crate::extract::SessionMissing;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use std::ops::Deref;
use tessera_core::adapter::{require_csrf, require_same_origin, CsrfRejection as Reason};
use tessera_core::{CSRF_FIELD, CSRF_HEADER};

/// Why a CSRF check refused a request: [`tessera_core::adapter::CsrfRejection`] (which it
/// derefs to, and which says the status and body), as an actix error. An app that answers
/// some refusals itself matches on the reason:
///
/// ```
/// use actix_web::{HttpResponse, ResponseError};
/// use tessera_actix::tessera_core::adapter::CsrfRejection as Reason;
/// use tessera_actix::{CsrfForm, CsrfRejection};
/// fn checked<T>(f: Result<CsrfForm<T>, CsrfRejection>) -> Result<T, HttpResponse> {
///     match f {
///         Ok(CsrfForm(t)) => Ok(t),
///         Err(CsrfRejection(Reason::NoSession)) => Err(HttpResponse::Forbidden().body("please sign in again")),
///         Err(other) => Err(other.error_response()),
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

impl ResponseError for CsrfRejection {
    fn status_code(&self) -> StatusCode {
        crate::extract::status(self.0.status_code())
    }

    fn error_response(&self) -> HttpResponse {
        crate::extract::refusal(self.0.refusal())
    }
}

fn session_of(req: &HttpRequest) -> Result<tessera_core::Session, SessionMissing> {
    req.extensions()
        .get::<tessera_core::Session>()
        .cloned()
        .ok_or(SessionMissing)
}

/// A form post (`application/x-www-form-urlencoded`) whose `csrf_token` field matched the
/// session's token; `T` is read from the same form (its other fields). Put the token in the
/// form with [`tessera_core::csrf_input`].
///
/// ```
/// use tessera_actix::{CsrfForm, Session, SessionError};
/// #[derive(serde::Deserialize)]
/// struct Rename { name: String }
/// async fn rename(session: Session, CsrfForm(form): CsrfForm<Rename>) -> Result<&'static str, SessionError> {
///     session.insert("name", &form.name).await?;
///     Ok("renamed")
/// }
/// # let _ = actix_web::web::post().to(rename);
/// ```
#[derive(Debug, Clone)]
pub struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = CsrfRejection;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = session_of(req);
        let content_type = req.headers().get(actix_web::http::header::CONTENT_TYPE);
        let form = tessera_core::adapter::is_form_content_type(content_type.map(|v| v.as_bytes()));
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let session = session?;
            if !form {
                return Err(Reason::NotAForm.into());
            }
            let body = body
                .await
                .map_err(|e| Reason::Body(e.as_response_error().status_code().as_u16()))?;
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
        })
    }
}

/// A request whose `X-CSRF-Token` header matched the session's token (for `fetch` / XHR
/// posts). Take it as an argument of the handler it guards.
///
/// ```
/// use tessera_actix::{CsrfHeader, Session, SessionError};
/// async fn like(_: CsrfHeader, session: Session) -> Result<String, SessionError> {
///     Ok(session.increment("likes", 1).await?.to_string())
/// }
/// # let _ = actix_web::web::post().to(like);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CsrfHeader;

impl FromRequest for CsrfHeader {
    type Error = CsrfRejection;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = session_of(req);
        let token = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Box::pin(async move {
            require_csrf(&session?, &token).await?;
            Ok(CsrfHeader)
        })
    }
}

/// A request that passed the cross-origin check
/// ([`check_origin`](tessera_core::adapter::SessionExt::check_origin)):
/// `GET`/`HEAD`/`OPTIONS`, a request of the same origin (`Sec-Fetch-Site: same-origin` or
/// `none`; without it, an `Origin` whose host is the request's `Host`), one without either
/// header (curl, scripts), or a cross-origin one carrying this session's CSRF token in
/// `X-CSRF-Token`. Otherwise `403` ([`Reason::CrossOrigin`]) before the handler runs.
/// The account endpoints ([`endpoints`](crate::endpoints)) take it; take it in every
/// state-changing JSON handler.
///
/// ```
/// use tessera_actix::{OriginChecked, Session, SessionError};
/// async fn like(_: OriginChecked, session: Session) -> Result<String, SessionError> {
///     Ok(session.increment("likes", 1).await?.to_string())
/// }
/// # let _ = actix_web::web::post().to(like);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct OriginChecked;

impl FromRequest for OriginChecked {
    type Error = CsrfRejection;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = session_of(req);
        let h = req.headers();
        let bytes = |name: &str| h.get(name).map(|v| v.as_bytes().to_vec());
        let method = req.method().as_str().to_string();
        let site = bytes("sec-fetch-site");
        let origin = bytes("origin");
        let host = bytes("host").or_else(|| {
            req.uri()
                .authority()
                .map(|a| a.as_str().as_bytes().to_vec())
        });
        let token = h
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Box::pin(async move {
            let origin_of = tessera_core::adapter::RequestOrigin {
                method: &method,
                sec_fetch_site: site.as_deref(),
                origin: origin.as_deref(),
                host: host.as_deref(),
            };
            require_same_origin(&session?, &origin_of, token.as_deref()).await?;
            Ok(OriginChecked)
        })
    }
}
