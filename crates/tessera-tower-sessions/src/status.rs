//! 503 instead of tower-sessions' bare 500 when the store is unreachable.

use http::{header, HeaderValue, Request, Response, StatusCode};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// What the store reported during the request being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Nothing.
    None,
    /// Only failures that changed nothing: `Retry-After` these many seconds.
    RetryAfter(u32),
    /// At least one failure that may have changed something (a write whose outcome is
    /// unknown): no `Retry-After`, whatever else failed.
    MayHaveChanged,
}

tokio::task_local! {
    static FAILURE: Cell<Failure>;
    /// The last failure's refusal, counted once if the answer becomes a `503`.
    static REFUSAL: std::cell::RefCell<Option<tessera_core::adapter::Refusal>>;
}

/// Called by the store when tessera answered a store failure (a 503): remembered for the
/// request being served, if a [`StoreUnavailableLayer`] wraps it, with the error's own
/// [`retry_after`](tessera_core::Error::retry_after) (the adapters' rule: one only when
/// nothing was changed).
pub(crate) fn note_unavailable(e: &tessera_core::Error) {
    let _ = REFUSAL.try_with(|r| *r.borrow_mut() = Some(tessera_core::adapter::Refusal::error(e)));
    let _ = FAILURE.try_with(|c| {
        c.set(match (c.get(), e.retry_after()) {
            (Failure::MayHaveChanged, _) | (_, None) => Failure::MayHaveChanged,
            (Failure::RetryAfter(a), Some(b)) => Failure::RetryAfter(a.max(b)),
            (Failure::None, Some(b)) => Failure::RetryAfter(b),
        })
    });
}

/// A layer that turns the `500 Internal Server Error` tower-sessions (and axum-login) answer
/// when the session store fails into `503 Service Unavailable`, when the failure was the
/// store being unreachable or too slow. The same rule as tessera's adapters: `Retry-After: 1`
/// only when nothing was changed (the request can be retried, and load balancers and clients
/// treat it so); none when a write's outcome is unknown (it may have been applied, and a
/// retry could apply it twice). Other 500s pass unchanged.
///
/// It knows of the failure through a task-local flag the store sets, so it sees the session
/// loads and saves that run inside the request's own task (tower-sessions', axum-login's and
/// axum-messages' do), not store calls made from a task the handler spawned. The `503` keeps
/// the headers of the response it replaces.
///
/// Put it outside the session layers (added after them with axum's `Router::layer`):
///
/// ```
/// # use tessera_tower_sessions::StoreUnavailableLayer;
/// # fn demo(sessions: tower_sessions::SessionManagerLayer<tessera_tower_sessions::TesseraStore>) {
/// let app: axum::Router = axum::Router::new()
///     .layer(sessions)
///     .layer(StoreUnavailableLayer);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreUnavailableLayer;

impl<S> Layer<S> for StoreUnavailableLayer {
    type Service = StoreUnavailable<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StoreUnavailable { inner }
    }
}

/// The service of [`StoreUnavailableLayer`].
#[derive(Debug, Clone)]
pub struct StoreUnavailable<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for StoreUnavailable<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    ResBody: Default + Send,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let fut = self.inner.call(req);
        let answer = async move {
            let res = fut.await?;
            let failure = FAILURE.with(Cell::get);
            if failure == Failure::None || res.status() != StatusCode::INTERNAL_SERVER_ERROR {
                return Ok(res);
            }
            // The answer is a 503: counted in tessera's metrics as the adapters count theirs.
            if let Some(r) = REFUSAL.with(|r| r.borrow_mut().take()) {
                r.record();
            }
            let (mut parts, _) = res.into_parts();
            parts.status = StatusCode::SERVICE_UNAVAILABLE;
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::CONTENT_TYPE);
            parts.headers.remove(header::RETRY_AFTER);
            if let Failure::RetryAfter(secs) = failure {
                parts
                    .headers
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Ok(Response::from_parts(parts, ResBody::default()))
        };
        Box::pin(FAILURE.scope(
            Cell::new(Failure::None),
            REFUSAL.scope(std::cell::RefCell::new(None), answer),
        ))
    }
}
