//! The account endpoints' logic, framework-neutral: each adapter only turns a [`Reply`] into
//! its own response type and mounts the routes.
//!
//! | route | function | answer |
//! |---|---|---|
//! | `POST /logout` | [`logout`] | `204`, session ended, cookie cleared |
//! | `POST /logout-all` | [`logout_all`] | `204`; `401` when not logged in |
//! | `GET /sessions` | [`list_sessions`] | `200` + JSON array (each a serialized [`DeviceSession`](crate::DeviceSession)); `401` when not logged in |
//! | `DELETE /sessions/{handle}` | [`revoke`] | `204`; `404` when not one of the user's sessions; `401` when not logged in |
//!
//! The adapters mount the state-changing ones behind the cross-origin check
//! ([`Session::check_origin`](super::SessionExt::check_origin), their `OriginChecked`
//! extractor): a request a page of another origin made is `403` before any of these runs,
//! unless it carries the session's CSRF token.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use tessera_core::adapter::endpoints;
//! use tessera_core::{Key, SessionConfig, SessionManager, Store};
//! let manager = SessionManager::new(Store::memory(), SessionConfig::builder(Key::generate()).build().unwrap());
//! let anonymous = manager.start(None::<&str>);
//! let reply = endpoints::list_sessions(&anonymous).await;
//! assert_eq!(reply.status, 401);
//! # }
//! ```

use crate::error::Error;
use crate::session::Session;
use serde_json::Value;

/// An HTTP answer: status and optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// Set when this answers an error ([`Reply::error`]): the adapters answer it as every
    /// refusal ([`Refusal`](super::Refusal): `Retry-After` when nothing was changed, and the
    /// app's `render_errors` hook).
    pub refusal: Option<super::Refusal>,
}

impl Reply {
    /// A status without a body.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            body: None,
            refusal: None,
        }
    }

    /// `200` with a JSON body.
    pub fn json(body: Value) -> Self {
        Reply {
            status: 200,
            body: Some(body),
            refusal: None,
        }
    }

    /// The answer for an error: its status and `{"error": <public message>}`, plus
    /// `"field": <name>` when a protected field does not decrypt
    /// ([`Error::Undecryptable`]: the client learns which field, the reason goes to the log).
    ///
    /// ```
    /// use tessera_core::{adapter::endpoints::Reply, Error};
    /// let e = Error::Undecryptable { field: "api_token".into(), reason: "unknown key".into() };
    /// let r = Reply::error(&e);
    /// assert_eq!(r.status, 500);
    /// assert_eq!(r.body.unwrap()["field"], "api_token");
    /// ```
    pub fn error(e: &Error) -> Self {
        let refusal = super::Refusal::error(e);
        Reply {
            status: refusal.status,
            body: Some(error_body(e)),
            refusal: Some(refusal),
        }
    }
}

/// `{"error": <public message>}`, plus `"field": <name>` for a protected field that does not
/// decrypt: the body of every error answer.
pub(crate) fn error_body(e: &Error) -> Value {
    let mut body = serde_json::json!({ "error": e.public_message() });
    if let Error::Undecryptable { field, .. } = e {
        body["field"] = Value::String(field.clone());
    }
    body
}

fn done(r: Result<Reply, Error>) -> Reply {
    r.unwrap_or_else(|e| Reply::error(&e))
}

/// `POST /logout`: ends the session.
pub async fn logout(session: &Session) -> Reply {
    done(session.destroy().await.map(|_| Reply::status(204)))
}

/// `POST /logout-all`: ends every session of the logged-in user.
pub async fn logout_all(session: &Session) -> Reply {
    done(session.logout_all().await.map(|_| Reply::status(204)))
}

/// `GET /sessions`: the logged-in user's sessions, most recent first.
pub async fn list_sessions(session: &Session) -> Reply {
    done(session.list_sessions().await.map(|list| {
        Reply::json(Value::Array(
            list.iter()
                .map(|d| serde_json::to_value(d).unwrap_or_default())
                .collect(),
        ))
    }))
}

/// `DELETE /sessions/{handle}`: ends one of the logged-in user's sessions.
pub async fn revoke(session: &Session, handle: &str) -> Reply {
    done(
        session
            .revoke(handle)
            .await
            .map(|found| Reply::status(if found { 204 } else { 404 })),
    )
}
