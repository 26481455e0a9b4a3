//! The refusals both adapters answer with, defined once: what each is, its status and its
//! body. An adapter only turns a [`Refusal`] into its response type (axum's `IntoResponse`,
//! actix's `ResponseError`), through a type of its own (the orphan rule: a framework's trait
//! can only be implemented for the adapter's own types).

use super::{CsrfCheck, RequestOrigin};
use crate::error::Error;
use crate::session::Session;
use serde_json::Value;

/// The body of a [`Refusal`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Body {
    /// `text/plain; charset=utf-8`.
    Text(String),
    /// `application/json`.
    Json(Value),
}

/// A refusal as an HTTP answer, framework-neutral: the status, the body, and `Retry-After`
/// seconds when retrying later is safe. Every refusal of the adapters (an [`Error`] that ends
/// a request, a [`CsrfRejection`], a [`SessionMissing`]) is one of these, so both answer the
/// same bytes.
///
/// ```
/// use tessera_core::adapter::{Body, Refusal};
/// let r = Refusal::error(&tessera_core::Error::NotLoggedIn);
/// assert_eq!(r.status, 401);
/// assert_eq!(r.body, Body::Json(serde_json::json!({"error": "not logged in"})));
/// assert_eq!(r.retry_after, None);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Body,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u32>,
}

impl Refusal {
    /// The answer for an error that ends a request: the status of its
    /// [`kind`](Error::kind), the JSON body every tessera error has
    /// ([`Reply::error`](super::endpoints::Reply::error): `{"error": "<public message>"}`), and
    /// `Retry-After` when nothing was changed ([`Error::retry_after`]). The cause goes to the
    /// log, never the body.
    pub fn error(e: &Error) -> Self {
        let reply = super::endpoints::Reply::error(e);
        Refusal {
            status: reply.status,
            body: Body::Json(reply.body.unwrap_or(Value::Null)),
            retry_after: e.retry_after(),
        }
    }

    fn text(status: u16, text: String) -> Self {
        Refusal {
            status,
            body: Body::Text(text),
            retry_after: None,
        }
    }
}

/// A handler asked for the session on a route that has none: the adapter's layer or
/// middleware is missing. `500`, with the fix in the (text) body; the adapter names its own
/// layer in `fix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no session on this request: {fix}")]
pub struct SessionMissing {
    fix: &'static str,
}

impl SessionMissing {
    /// With the fix the adapter suggests, for example "add `.layer(...)` to the router that
    /// serves this route".
    pub const fn new(fix: &'static str) -> Self {
        SessionMissing { fix }
    }

    /// `500`, the message as text.
    pub fn refusal(&self) -> Refusal {
        Refusal::text(500, self.to_string())
    }
}

/// Why a CSRF or cross-origin check refused a request (before its handler ran, so it changed
/// nothing). The adapters' `CsrfForm`, `CsrfHeader` and `OriginChecked` extractors refuse with
/// it (wrapped in their own `CsrfRejection`, which derefs to this).
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
    /// `Origin` against `Host`; see [`is_cross_origin`](super::is_cross_origin)) without this
    /// session's token in `X-CSRF-Token`: `403`, with the JSON error body of the JSON routes.
    /// Nothing ran. (`OriginChecked` refuses with it.)
    #[error("cross-origin request without a valid CSRF token")]
    CrossOrigin,
    /// The body is not a form the handler's type reads: `422`.
    #[error("form body not readable: {0}")]
    Form(String),
    /// The request is not a form post (`application/x-www-form-urlencoded`): `415`. (A
    /// `text/plain` or multipart body is never read for a token.)
    #[error("not a form post (application/x-www-form-urlencoded)")]
    NotAForm,
    /// The body could not be read (over the body size limit: `413`): the status the framework
    /// gave.
    #[error("request body not readable")]
    Body(u16),
    /// The session store failed: `503` (or `500`), as any session error.
    #[error(transparent)]
    Session(#[from] Error),
    /// The route has no session layer or middleware: `500`.
    #[error(transparent)]
    Missing(#[from] SessionMissing),
}

impl CsrfRejection {
    /// The HTTP status.
    pub fn status_code(&self) -> u16 {
        match self {
            CsrfRejection::Invalid | CsrfRejection::NoSession | CsrfRejection::CrossOrigin => 403,
            CsrfRejection::Form(_) => 422,
            CsrfRejection::NotAForm => 415,
            CsrfRejection::Body(status) => *status,
            CsrfRejection::Session(e) => e.status_code(),
            CsrfRejection::Missing(_) => 500,
        }
    }

    /// The answer: the message as text; `{"error": "<message>"}` for
    /// [`CrossOrigin`](CsrfRejection::CrossOrigin) (it guards JSON routes); a store failure as
    /// any error ([`Refusal::error`]).
    pub fn refusal(&self) -> Refusal {
        match self {
            CsrfRejection::Session(e) => Refusal::error(e),
            CsrfRejection::Missing(m) => m.refusal(),
            CsrfRejection::CrossOrigin => Refusal {
                status: self.status_code(),
                body: Body::Json(serde_json::json!({ "error": self.to_string() })),
                retry_after: None,
            },
            other => Refusal::text(other.status_code(), other.to_string()),
        }
    }
}

/// Checks `token` (a form's `csrf_token` field, or the `X-CSRF-Token` header) against the
/// session ([`SessionExt::check_csrf`](super::SessionExt::check_csrf)); the rejection says
/// whether there was a live session at all.
pub async fn require_csrf(session: &Session, token: &str) -> Result<(), CsrfRejection> {
    match session.check_csrf(token).await? {
        CsrfCheck::Valid => Ok(()),
        CsrfCheck::Invalid => Err(CsrfRejection::Invalid),
        CsrfCheck::NoSession => Err(CsrfRejection::NoSession),
    }
}

/// The cross-origin check of a state-changing request
/// ([`SessionExt::check_origin`](super::SessionExt::check_origin)): passes a request that is
/// not cross-origin, or one that carries this session's token; otherwise
/// [`CsrfRejection::CrossOrigin`].
pub async fn require_same_origin(
    session: &Session,
    req: &RequestOrigin<'_>,
    token: Option<&str>,
) -> Result<(), CsrfRejection> {
    match session.check_origin(req, token).await? {
        CsrfCheck::Valid => Ok(()),
        _ => Err(CsrfRejection::CrossOrigin),
    }
}
