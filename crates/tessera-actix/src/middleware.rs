//! The actix `Transform` and its service.

use crate::import::ActixSessionImport;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderValue, COOKIE, SET_COOKIE, USER_AGENT};
use actix_web::{HttpMessage, HttpResponse};
use futures_util::future::{ready, LocalBoxFuture, Ready};
use std::rc::Rc;
use std::sync::Arc;
use tessera_core::adapter::{
    ClientInfo, ManagerExt as _, Refusal, RefusedRequest, SessionExt as _,
};
use tessera_core::{SessionConfig, SessionManager, Store};

/// Adds sessions to every route of the app or scope it wraps. Cheap to clone: build it once
/// outside `HttpServer::new` and clone it into each worker's `App`.
///
/// ```
/// use tessera_actix::{Key, SessionConfig, SessionMiddleware, Store};
/// let mw = SessionMiddleware::new(Store::memory(), SessionConfig::builder(Key::generate()).build().unwrap());
/// let app = actix_web::App::new().wrap(mw);
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct SessionMiddleware {
    manager: SessionManager,
    import: Option<std::sync::Arc<ActixSessionImport>>,
    render: Option<Render>,
}

/// The app's error pages ([`SessionMiddleware::render_errors`]).
#[derive(Clone)]
struct Render(Arc<RenderFn>);

type RenderFn = dyn Fn(&Refusal, &RefusedRequest) -> Option<HttpResponse> + Send + Sync;

impl std::fmt::Debug for Render {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Render(..)")
    }
}

impl SessionMiddleware {
    /// Middleware over `store` with `config`.
    pub fn new(store: Store, config: SessionConfig) -> Self {
        Self::from_manager(SessionManager::new(store, config))
    }

    /// Middleware sharing an existing manager (for example with an axum service).
    pub fn from_manager(manager: SessionManager) -> Self {
        SessionMiddleware {
            manager,
            import: None,
            render: None,
        }
    }

    /// Answers tessera's refusals with the app's own pages: every refusal inside this
    /// middleware (a [`SessionError`](crate::SessionError) a handler returned, a CSRF or
    /// cross-origin rejection, a store failure at the end of the request) goes through `render`
    /// first, with the request's path and `Accept` ([`RefusedRequest`]: an app serving pages
    /// and an API tells them apart); `Some(response)` replaces the JSON answer, `None` keeps
    /// it. The middleware still adds the session's cookies to the page. [`Refusal::kind`] says
    /// what was refused, [`Refusal::message`] is safe to show, and [`Refusal::retry_after`]
    /// belongs in the page's `Retry-After` header if the app keeps it. Without a hook nothing
    /// of the request is kept for it (no cost).
    ///
    /// ```
    /// use actix_web::{http::StatusCode, HttpResponse};
    /// use tessera_actix::{Key, Refused, SessionConfig, SessionMiddleware, Store};
    ///
    /// let config = SessionConfig::builder(Key::generate()).build().unwrap();
    /// let mw = SessionMiddleware::new(Store::memory(), config).render_errors(|refusal, request| {
    ///     if !request.wants_html() {
    ///         return None; // API calls keep the JSON answer
    ///     }
    ///     let status = StatusCode::from_u16(refusal.status).ok()?;
    ///     let page = match refusal.kind {
    ///         Refused::Csrf => "<h1>This form expired</h1><p><a href=/>Start again</a></p>".to_string(),
    ///         _ => format!("<h1>Sorry</h1><p>{}</p>", refusal.message),
    ///     };
    ///     Some(HttpResponse::build(status).content_type("text/html; charset=utf-8").body(page))
    /// });
    /// let app = actix_web::App::new().wrap(mw);
    /// # let _ = app;
    /// ```
    pub fn render_errors<F>(mut self, render: F) -> Self
    where
        F: Fn(&Refusal, &RefusedRequest) -> Option<HttpResponse> + Send + Sync + 'static,
    {
        self.render = Some(Render(Arc::new(render)));
        self
    }

    /// Takes over sessions written by actix-session's Redis store, so switching logs nobody
    /// out: see [`ActixSessionImport`]. From then on a logout-all through this middleware's
    /// manager also refuses that user's actix-session sessions not taken over yet
    /// ([`Records::takes_over_sessions`](tessera_core::adapter::Records::takes_over_sessions)).
    pub fn import_actix_session(mut self, import: ActixSessionImport) -> Self {
        self.manager.records().takes_over_sessions();
        self.import = Some(std::sync::Arc::new(import));
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionMiddlewareService {
            service: Rc::new(service),
            manager: self.manager.clone(),
            import: self.import.clone(),
            render: self.render.clone(),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around the app.
pub struct SessionMiddlewareService<S> {
    service: Rc<S>,
    manager: SessionManager,
    import: Option<std::sync::Arc<ActixSessionImport>>,
    render: Option<Render>,
}

impl<S> std::fmt::Debug for SessionMiddlewareService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMiddlewareService")
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for SessionMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let h = req.headers();
        let config = self.manager.config();
        let client = ClientInfo::behind_proxies(
            h.get(USER_AGENT).map(|v| v.as_bytes()),
            req.peer_addr().map(|a| a.ip()),
            config.forwarded_header(),
            h.get_all(config.forwarded_header().name())
                .map(|v| v.as_bytes()),
            config.trusted_proxies(),
        );
        // Bytes, not `to_str()`: one non-ASCII cookie must not hide the session cookie.
        let session = self
            .manager
            .start_with(req.headers().get_all(COOKIE).map(|v| v.as_bytes()), client);
        req.extensions_mut().insert(session.clone());
        let service = Rc::clone(&self.service);
        // An actix-session cookie: taken over when there is no tessera cookie, and removed.
        let legacy = self.import.as_ref().and_then(|imp| {
            let key = imp.session_key(req.headers())?;
            let has_own = has_cookie(req.headers(), self.manager.config().cookie_name());
            Some((std::sync::Arc::clone(imp), key, has_own))
        });
        let manager = self.manager.clone();
        let render = self.render.clone().map(|r| {
            let accept = req.headers().get(actix_web::http::header::ACCEPT);
            let asked = RefusedRequest::new(req.path(), accept.and_then(|v| v.to_str().ok()));
            (r, asked)
        });
        let span = session.request_span();
        Box::pin(tracing::Instrument::instrument(
            async move {
                // Whether the old cookie goes: after a take-over, when there was nothing to take,
                // or when the browser holds a live tessera session already.
                let mut drop_legacy = false;
                if let Some((imp, key, has_own)) = &legacy {
                    let live = *has_own && matches!(session.is_stored().await, Ok(true));
                    drop_legacy = live || imp.take_over(&manager, &session, key).await;
                }
                let res = service.call(req).await;
                // An error (the handler's `Err`, or an error status) commits nothing of the request.
                let status = match &res {
                    Ok(r) => r.status().as_u16(),
                    Err(e) => e.as_response_error().status_code().as_u16(),
                };
                let outcome = session.finish(status).await;
                let res = res?;
                let mut res = match outcome.error {
                    Some(err) => {
                        tracing::warn!(status = err.status_code(), error = %err, "session: replacing the handler's response");
                        let (req, _) = res.into_parts();
                        ServiceResponse::new(req, crate::extract::error_response(&err))
                            .map_into_right_body()
                    }
                    None => res.map_into_left_body(),
                };
                // Counted once, on the answer the client gets.
                if let Some(r) = res.response().extensions().get::<Refusal>() {
                    r.record();
                }
                if let Some((render, asked)) = &render {
                    let page = res
                        .response()
                        .extensions()
                        .get::<Refusal>()
                        .and_then(|r| (render.0)(r, asked));
                    if let Some(page) = page {
                        let (req, _) = res.into_parts();
                        res = ServiceResponse::new(req, page).map_into_right_body();
                    }
                }
                for cookie in outcome.set_cookie.into_iter().chain(outcome.csrf_cookie) {
                    match HeaderValue::from_str(&cookie) {
                        Ok(v) => {
                            res.headers_mut().append(SET_COOKIE, v);
                        }
                        Err(_) => {
                            tracing::error!("session: cookie header is not a valid header value")
                        }
                    }
                }
                if let (Some((imp, _, _)), true) = (&legacy, drop_legacy) {
                    let removal = format!(
                        "{}=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
                        imp.cookie_name_str()
                    );
                    if let Ok(v) = HeaderValue::from_str(&removal) {
                        res.headers_mut().append(SET_COOKIE, v);
                    }
                }
                Ok(res)
            },
            span,
        ))
    }
}

/// Whether the request carries a cookie of this name (whatever its value).
fn has_cookie(headers: &actix_web::http::header::HeaderMap, name: &str) -> bool {
    headers.get_all(COOKIE).any(|h| {
        h.as_bytes().split(|b| *b == b';').any(|part| {
            let part = part.trim_ascii_start();
            part.strip_prefix(name.as_bytes())
                .is_some_and(|rest| rest.first() == Some(&b'='))
        })
    })
}
