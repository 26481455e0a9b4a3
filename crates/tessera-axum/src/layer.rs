//! The tower layer and service.

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::header::{COOKIE, SET_COOKIE, USER_AGENT};
use http::{HeaderValue, Request, Response};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tessera_core::adapter::{
    ClientInfo, ManagerExt as _, Refusal, RefusedRequest, SessionExt as _,
};
use tessera_core::{SessionConfig, SessionManager, Store};
use tower_layer::Layer;
use tower_service::Service;

/// Adds sessions to every route below it.
///
/// ```
/// use tessera_axum::{Key, SessionConfig, SessionLayer, Store};
/// let layer = SessionLayer::new(Store::memory(), SessionConfig::builder(Key::generate()).build().unwrap());
/// let app: axum::Router = axum::Router::new().layer(layer);
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct SessionLayer {
    manager: SessionManager,
    render: Option<Render>,
}

/// The app's error pages ([`SessionLayer::render_errors`]).
#[derive(Clone)]
struct Render(Arc<RenderFn>);

type RenderFn = dyn Fn(&Refusal, &RefusedRequest) -> Option<Response<Body>> + Send + Sync;

impl std::fmt::Debug for Render {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Render(..)")
    }
}

impl SessionLayer {
    /// A layer over `store` with `config`.
    pub fn new(store: Store, config: SessionConfig) -> Self {
        Self::from_manager(SessionManager::new(store, config))
    }

    /// A layer sharing an existing manager (for example with endpoint helpers or another app).
    pub fn from_manager(manager: SessionManager) -> Self {
        SessionLayer {
            manager,
            render: None,
        }
    }

    /// Answers tessera's refusals with the app's own pages: every refusal below this layer
    /// (a [`SessionError`](crate::SessionError) a handler returned, a CSRF or cross-origin
    /// rejection, a store failure at the end of the request) goes through `render` first,
    /// with the request's path and `Accept` ([`RefusedRequest`]: an app serving pages and an
    /// API tells them apart); `Some(response)` replaces the JSON answer, `None` keeps it. The
    /// layer still adds the session's cookies to the page. [`Refusal::kind`] says what was
    /// refused, [`Refusal::message`] is safe to show, and [`Refusal::retry_after`] belongs in
    /// the page's `Retry-After` header if the app keeps it. Without a hook nothing of the
    /// request is kept for it (no cost).
    ///
    /// ```
    /// use axum::response::{Html, IntoResponse};
    /// use http::StatusCode;
    /// use tessera_axum::{Key, Refused, SessionConfig, SessionLayer, Store};
    ///
    /// let config = SessionConfig::builder(Key::generate()).build().unwrap();
    /// let layer = SessionLayer::new(Store::memory(), config).render_errors(|refusal, request| {
    ///     if !request.wants_html() {
    ///         return None; // API calls keep the JSON answer
    ///     }
    ///     let status = StatusCode::from_u16(refusal.status).ok()?;
    ///     let page = match refusal.kind {
    ///         Refused::Csrf => "<h1>This form expired</h1><p><a href=/>Start again</a></p>".to_string(),
    ///         _ => format!("<h1>Sorry</h1><p>{}</p>", refusal.message),
    ///     };
    ///     Some((status, Html(page)).into_response())
    /// });
    /// let app: axum::Router = axum::Router::new().layer(layer);
    /// # let _ = app;
    /// ```
    pub fn render_errors<F>(mut self, render: F) -> Self
    where
        F: Fn(&Refusal, &RefusedRequest) -> Option<Response<Body>> + Send + Sync + 'static,
    {
        self.render = Some(Render(Arc::new(render)));
        self
    }

    /// The manager behind this layer.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            manager: self.manager.clone(),
            render: self.render.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
    manager: SessionManager,
    render: Option<Render>,
}

/// The future [`SessionService`] returns.
pub struct ResponseFuture<E> {
    inner: Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send + 'static>>,
}

impl<E> std::fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture { .. }")
    }
}

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response<Body>, E>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, ReqBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let h = req.headers();
        let config = self.manager.config();
        let client = ClientInfo::behind_proxies(
            h.get(USER_AGENT).map(|v| v.as_bytes()),
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            config.forwarded_header(),
            h.get_all(config.forwarded_header().name())
                .iter()
                .map(|v| v.as_bytes()),
            config.trusted_proxies(),
        );
        // Bytes, not `to_str()`: one non-ASCII cookie must not hide the session cookie.
        let session = self.manager.start_with(
            req.headers().get_all(COOKIE).iter().map(|v| v.as_bytes()),
            client,
        );
        req.extensions_mut().insert(session.clone());
        // Use the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let render = self.render.clone().map(|r| {
            let accept = req.headers().get(http::header::ACCEPT);
            let asked = RefusedRequest::new(req.uri().path(), accept.and_then(|v| v.to_str().ok()));
            (r, asked)
        });
        let span = session.request_span();
        ResponseFuture {
            inner: Box::pin(tracing::Instrument::instrument(
                async move {
                    let mut res = inner.call(req).await?;
                    let outcome = session.finish(res.status().as_u16()).await;
                    if let Some(err) = outcome.error {
                        tracing::warn!(status = err.status_code(), error = %err, "session: replacing the handler's response");
                        res = crate::extract::error_response(&err);
                    }
                    // Counted once, on the answer the client gets.
                    if let Some(r) = res.extensions().get::<Refusal>() {
                        r.record();
                    }
                    if let Some((render, asked)) = &render {
                        let page = res
                            .extensions()
                            .get::<Refusal>()
                            .and_then(|r| (render.0)(r, asked));
                        if let Some(page) = page {
                            res = page;
                        }
                    }
                    for cookie in outcome.set_cookie.into_iter().chain(outcome.csrf_cookie) {
                        match HeaderValue::from_str(&cookie) {
                            Ok(v) => {
                                res.headers_mut().append(SET_COOKIE, v);
                            }
                            Err(_) => {
                                tracing::error!(
                                    "session: cookie header is not a valid header value"
                                )
                            }
                        }
                    }
                    Ok(res)
                },
                span,
            )),
        }
    }
}
