//! What the store cannot see by itself: the client of the request, for device lists.

use axum::extract::ConnectInfo;
use http::header::USER_AGENT;
use http::Request;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tessera_core::adapter::ClientInfo;
use tessera_core::ForwardedHeader;
use tower_layer::Layer;
use tower_service::Service;

tokio::task_local! {
    static CLIENT: ClientInfo;
}

/// The client of the request being served, if a [`DeviceInfoLayer`] wraps it.
pub(crate) fn client() -> Option<ClientInfo> {
    CLIENT.try_with(Clone::clone).ok()
}

/// Records the user agent and address of each request for device lists: a session that gets
/// its user (a login: axum-login's `login`, or any save that sets the user id) keeps the
/// device it came from, as a login through tessera's own middleware does
/// ([`DeviceSession::user_agent`](tessera_core::DeviceSession::user_agent),
/// [`client_addr`](tessera_core::DeviceSession::client_addr)). The address is the peer's
/// (`axum::serve(.., app.into_make_service_with_connect_info::<SocketAddr>())`), or, behind
/// the [`trusted_proxies`](tessera_core::SessionConfigBuilder::trusted_proxies) of the store's
/// configuration, the one they forward.
///
/// It hands the client to the store through a task-local value, so it sees the saves that run
/// inside the request's own task (tower-sessions', axum-login's); put it outside the session
/// layers (added after them with axum's `Router::layer`). Without it, device lists show no user
/// agent or address for these sessions (everything else works).
///
/// ```
/// # use tessera_tower_sessions::{DeviceInfoLayer, StoreUnavailableLayer, TesseraStore};
/// # fn demo(store: TesseraStore) {
/// let app: axum::Router = axum::Router::new()
///     .layer(tower_sessions::SessionManagerLayer::new(store.clone()))
///     .layer(DeviceInfoLayer::new(&store))
///     .layer(StoreUnavailableLayer);
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DeviceInfoLayer {
    header: ForwardedHeader,
    proxies: usize,
}

impl DeviceInfoLayer {
    /// With the proxy settings of `store`'s configuration.
    pub fn new(store: &crate::TesseraStore) -> Self {
        let config = store.manager().config();
        DeviceInfoLayer {
            header: config.forwarded_header(),
            proxies: config.trusted_proxies(),
        }
    }
}

impl<S> Layer<S> for DeviceInfoLayer {
    type Service = DeviceInfo<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeviceInfo {
            inner,
            layer: *self,
        }
    }
}

/// The service of [`DeviceInfoLayer`].
#[derive(Debug, Clone)]
pub struct DeviceInfo<S> {
    inner: S,
    layer: DeviceInfoLayer,
}

impl<S, ReqBody> Service<Request<ReqBody>> for DeviceInfo<S>
where
    S: Service<Request<ReqBody>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let h = req.headers();
        let client = ClientInfo::behind_proxies(
            h.get(USER_AGENT).map(|v| v.as_bytes()),
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            self.layer.header,
            h.get_all(self.layer.header.name())
                .iter()
                .map(|v| v.as_bytes()),
            self.layer.proxies,
        );
        let fut = self.inner.call(req);
        Box::pin(CLIENT.scope(client, fut))
    }
}
