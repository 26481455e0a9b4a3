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

/// What a [`Refusal`] refused, for an app that answers with its own pages (the adapters'
/// `render_errors` hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refused {
    /// An [`Error`] ended the request (a store failure, a session ended meanwhile, an input
    /// the session refuses...), by its kind.
    Error(crate::error::ErrorKind),
    /// A CSRF or cross-origin check refused a state-changing request: no token or not this
    /// session's, no live session any more, or a cross-origin request without the token.
    /// Nothing ran.
    Csrf,
    /// The request's body could not be read as the form the handler takes (not a form post,
    /// not readable, over the size limit). Nothing ran.
    Request,
    /// The route has no session layer or middleware: a bug in the app's wiring.
    Missing,
}

/// A refusal as an HTTP answer, framework-neutral: the status, the body, and `Retry-After`
/// seconds when retrying later is safe. Every refusal of the adapters (an [`Error`] that ends
/// a request, a [`CsrfRejection`], a [`SessionMissing`]) is one of these, so both answer the
/// same bytes: the JSON body `{"error": "<public message>"}`. An app that answers with its
/// own pages renders one from [`kind`](Refusal::kind) and [`message`](Refusal::message)
/// instead (the adapters' `render_errors`).
///
/// ```
/// use tessera_core::adapter::{Body, Refusal, Refused};
/// use tessera_core::ErrorKind;
/// let r = Refusal::error(&tessera_core::Error::NotLoggedIn);
/// assert_eq!(r.status, 401);
/// assert_eq!(r.body, Body::Json(serde_json::json!({"error": "not logged in"})));
/// assert_eq!(r.retry_after, None);
/// assert_eq!(r.kind, Refused::Error(ErrorKind::NotLoggedIn));
/// assert_eq!(r.message, "not logged in");
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
    /// What was refused.
    pub kind: Refused,
    /// The public message (the body's `error`): safe to show, never the cause.
    pub message: String,
    /// For a `503`: why, as [`metrics::UNAVAILABLE`](crate::metrics::UNAVAILABLE) counts it.
    unavailable: Option<crate::metrics::Unavailable>,
}

impl Refusal {
    /// The answer for an error that ends a request: the status of its
    /// [`kind`](Error::kind), the JSON body every tessera error has
    /// ([`Reply::error`](super::endpoints::Reply::error): `{"error": "<public message>"}`), and
    /// `Retry-After` when nothing was changed ([`Error::retry_after`]). The cause goes to the
    /// log, never the body.
    pub fn error(e: &Error) -> Self {
        let body = super::endpoints::error_body(e);
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Refusal {
            status: e.status_code(),
            body: Body::Json(body),
            retry_after: e.retry_after(),
            kind: Refused::Error(e.kind()),
            message,
            unavailable: (e.status_code() == 503).then(|| crate::metrics::Unavailable::of(e)),
        }
    }

    /// Counts this refusal in tessera's [metrics](crate::metrics) (a `503`, by its cause).
    /// The adapters call it once per answer, on the refusal the final response carries (a
    /// request whose handler answered an error and whose end then failed too is one answer).
    ///
    /// ```
    /// let r = tessera_core::adapter::Refusal::error(&tessera_core::Error::NotLoggedIn);
    /// r.record(); // not a 503: nothing counted
    /// ```
    pub fn record(&self) {
        if let Some(cause) = self.unavailable {
            cause.record();
        }
    }

    /// Any other refusal: `{"error": message}`, like every error.
    fn json(status: u16, kind: Refused, message: String) -> Self {
        Refusal {
            status,
            body: Body::Json(serde_json::json!({ "error": message })),
            retry_after: None,
            kind,
            message,
            unavailable: None,
        }
    }
}

/// The request a [`Refusal`] answers, as the adapters' `render_errors` hook sees it: enough
/// to tell a page from an API call in an app that serves both.
///
/// ```
/// use tessera_core::adapter::RefusedRequest;
/// let page = RefusedRequest::new("/settings", Some("text/html,application/xhtml+xml;q=0.9"));
/// assert!(page.wants_html());
/// let api = RefusedRequest::new("/api/cart", Some("application/json"));
/// assert!(!api.wants_html());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedRequest {
    /// The path (without the query).
    pub path: String,
    /// The `Accept` header, if any (and readable).
    pub accept: Option<String>,
}

impl RefusedRequest {
    /// From the path and the `Accept` header.
    pub fn new(path: impl Into<String>, accept: Option<&str>) -> Self {
        RefusedRequest {
            path: path.into(),
            accept: accept.map(str::to_string),
        }
    }

    /// Whether the client asked for HTML (`text/html` in `Accept`): a browser navigating or
    /// posting a form, not a `fetch` or an API client.
    pub fn wants_html(&self) -> bool {
        self.accept
            .as_deref()
            .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
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

    /// `500`, with the message (and its fix) in the JSON body of every error.
    pub fn refusal(&self) -> Refusal {
        Refusal::json(500, Refused::Missing, self.to_string())
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

    /// The answer, in the JSON body of every error (`{"error": "<message>"}`); a store
    /// failure as any error ([`Refusal::error`]).
    pub fn refusal(&self) -> Refusal {
        match self {
            CsrfRejection::Session(e) => Refusal::error(e),
            CsrfRejection::Missing(m) => m.refusal(),
            CsrfRejection::Invalid | CsrfRejection::NoSession | CsrfRejection::CrossOrigin => {
                Refusal::json(self.status_code(), Refused::Csrf, self.to_string())
            }
            other => Refusal::json(other.status_code(), Refused::Request, other.to_string()),
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
