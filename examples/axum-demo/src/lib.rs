//! The tessera axum demo: routes over `demo-core`'s logic, as a library so the integration
//! suite serves exactly these routes over real HTTP.

use axum::extract::rejection::JsonRejection;
use axum::extract::Query;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use demo_core::AdminRoute;
use serde_json::Value;
use tessera_axum::endpoints::reply;
use tessera_axum::{CsrfForm, CsrfRejection, OriginChecked, Session, SessionLayer};
use tessera_core::SessionManager;

pub use demo_core::{config_from_env, port_from_env, store_from_env};

/// The demo's routes behind a session layer.
pub fn app(manager: SessionManager) -> Router {
    routes().layer(SessionLayer::from_manager(manager))
}

/// The state-changing JSON routes take [`OriginChecked`], as tessera's account endpoints do: a
/// request a cross-site page could make is refused (403) unless it carries the session's CSRF
/// token in `X-CSRF-Token`; scripts without an `Origin` header are not affected.
///
/// The demo's routes without the layer (tests add their own routes before layering):
/// `POST /login`, `GET /me`, `PUT /session`, `POST /counter`, plus tessera's account
/// endpoints (`POST /logout`, `POST /logout-all`, `GET /sessions`, `DELETE /sessions/{handle}`),
/// plus `POST`/`GET /activity`, plus the admin routes (`GET`/`DELETE /admin/sessions`,
/// `GET /admin/counts`, `GET /admin/events`, `GET /metrics`) and the operator's page
/// (`GET /admin` and its forms) when `ADMIN_TOKEN` is set.
pub fn routes() -> Router {
    routes_with_admin(demo_core::admin_token_from_env())
}

/// [`routes`] with the admin token given (`None`: the admin routes answer 404).
pub fn routes_with_admin(admin_token: Option<String>) -> Router {
    let admin = |route: AdminRoute| {
        let token = admin_token.clone();
        move |s: Session, headers: HeaderMap, Query(q): Query<Vec<(String, String)>>| async move {
            let auth = headers
                .get(axum::http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            reply(demo_core::admin(s.manager(), token.as_deref(), auth, route, &q).await)
        }
    };
    if admin_token.is_some() {
        // Before any traffic: what happens before the recorder is installed is not counted.
        demo_core::metrics_recorder();
    }
    let metrics_token = admin_token.clone();
    Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| async move {
                use axum::response::IntoResponse;
                let auth = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                match demo_core::metrics_text(metrics_token.as_deref(), auth) {
                    Ok(text) => (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            demo_core::METRICS_CONTENT_TYPE,
                        )],
                        text,
                    )
                        .into_response(),
                    Err(refused) => reply(refused),
                }
            }),
        )
        .route(
            "/admin/sessions",
            get(admin(AdminRoute::ListSessions)).delete(admin(AdminRoute::EndSessions)),
        )
        .route("/admin/counts", get(admin(AdminRoute::Counts)))
        .route("/admin/events", get(admin(AdminRoute::Events)))
        .route(
            "/activity",
            post(record_activity)
                .get(|s: Session| async move { reply(demo_core::activity(&s).await) }),
        )
        .route("/login", post(login))
        .route(
            "/me",
            get(|s: Session| async move { reply(demo_core::me(&s).await) }),
        )
        .route("/session", put(put_session))
        .route("/live", get(live))
        .route(
            "/counter",
            post(|_: OriginChecked, s: Session| async move { reply(demo_core::counter(&s).await) }),
        )
        .merge(tessera_axum::endpoints())
        .merge(ui_routes())
        .merge(admin_ui_routes(admin_token.clone()))
}

/// `GET /` (the page for people) and its form posts, each checked against the session's CSRF
/// token before anything changes.
fn ui_routes() -> Router {
    use demo_core::ui::{self, EmptyForm, LoginForm, RevokeForm};
    type Form<T> = Result<CsrfForm<T>, CsrfRejection>;
    Router::new()
        .route(
            "/",
            get(|s: Session| async move { html(ui::page(&s).await) }),
        )
        .route(
            "/ui/login",
            post(|s: Session, f: Form<LoginForm>| async move {
                match checked(f) {
                    Ok(f) => html(ui::login(&s, f).await),
                    Err(r) => *r,
                }
            }),
        )
        .route(
            "/ui/counter",
            post(|s: Session, f: Form<EmptyForm>| async move {
                match checked(f) {
                    Ok(_) => html(ui::counter(&s).await),
                    Err(r) => *r,
                }
            }),
        )
        .route(
            "/ui/logout",
            post(|s: Session, f: Form<EmptyForm>| async move {
                match checked(f) {
                    Ok(_) => html(ui::logout(&s).await),
                    Err(r) => *r,
                }
            }),
        )
        .route(
            "/ui/logout-all",
            post(|s: Session, f: Form<EmptyForm>| async move {
                match checked(f) {
                    Ok(_) => html(ui::logout_all(&s).await),
                    Err(r) => *r,
                }
            }),
        )
        .route(
            "/ui/revoke",
            post(|s: Session, f: Form<RevokeForm>| async move {
                match checked(f) {
                    Ok(f) => html(ui::revoke(&s, f).await),
                    Err(r) => *r,
                }
            }),
        )
}

/// A form that passed the CSRF check, or the answer for one that did not: the login form
/// when its session is gone, `403` when the token is not the session's.
fn checked<T>(f: Result<CsrfForm<T>, CsrfRejection>) -> Result<T, Box<Response>> {
    use axum::response::IntoResponse;
    use tessera_axum::tessera_core::adapter::CsrfRejection as Reason;
    match f {
        Ok(CsrfForm(t)) => Ok(t),
        Err(CsrfRejection(Reason::NoSession)) => Err(Box::new(html(demo_core::ui::refused(true)))),
        Err(CsrfRejection(Reason::Invalid)) => Err(Box::new(html(demo_core::ui::refused(false)))),
        Err(other) => Err(Box::new(other.into_response())),
    }
}

/// A UI page or redirect as a response, never cached, never framed, scripts only with its nonce.
fn html(p: demo_core::ui::Page) -> Response {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = p.headers();
    let mut res = match p.location {
        Some(to) => (status, [(header::LOCATION, to)]).into_response(),
        None => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            p.html,
        )
            .into_response(),
    };
    for (name, value) in headers {
        let value = HeaderValue::try_from(value).expect("the headers are ASCII text");
        res.headers_mut().insert(name, value);
    }
    res
}

fn body(b: Result<Json<Value>, JsonRejection>) -> Result<Value, String> {
    b.map(|Json(v)| v).map_err(|e| e.body_text())
}

async fn record_activity(
    _: OriginChecked,
    s: Session,
    b: Result<Json<Value>, JsonRejection>,
) -> Response {
    reply(demo_core::record_activity(&s, body(b)).await)
}

async fn login(
    _: OriginChecked,
    s: Session,
    Query(q): Query<Vec<(String, String)>>,
    b: Result<Json<Value>, JsonRejection>,
) -> Response {
    let remember = q
        .iter()
        .find(|(k, _)| k == "remember")
        .map(|(_, v)| v.as_str());
    reply(demo_core::login(&s, body(b), remember).await)
}

async fn put_session(
    _: OriginChecked,
    s: Session,
    Query(q): Query<Vec<(String, String)>>,
    b: Result<Json<Value>, JsonRejection>,
) -> Response {
    let ttl = q.iter().find(|(k, _)| k == "ttl").map(|(_, v)| v.as_str());
    reply(demo_core::put_session(&s, body(b), ttl).await)
}

/// `GET /live`: server-sent events for the session (heartbeats), closed with an `ended` event
/// when the session ends on any instance; `401` without a session.
async fn live(s: Session) -> axum::response::Response {
    use axum::response::sse::Event;
    use axum::response::IntoResponse;
    use futures_util::StreamExt as _;
    if let Err(r) = demo_core::live_allowed(&s).await {
        return reply(r);
    }
    let beats =
        demo_core::live_heartbeats().map(|data| Event::default().event("heartbeat").data(data));
    tessera_axum::live::sse(s, beats).into_response()
}

/// `GET /admin` (the operator's page, signed in with the admin token: a cookie of its own) and
/// its forms under `/admin/ui/`: each post refused when cross-origin, and checked against the
/// browser's CSRF token, before anything changes. Without an admin token, all `404`.
fn admin_ui_routes(admin_token: Option<String>) -> Router {
    use axum::routing::MethodRouter;
    use demo_core::admin_ui::{self, AdminRevokeForm, AdminUi, EndForm, SignInForm};
    use std::sync::Arc;
    type Form<T> = Result<CsrfForm<T>, CsrfRejection>;
    type Origin = Result<OriginChecked, CsrfRejection>;
    let ui: Arc<Option<AdminUi>> = Arc::new(AdminUi::from_env(admin_token));
    let page: MethodRouter = get({
        let ui = ui.clone();
        move |s: Session, h: HeaderMap, Query(q): Query<Vec<(String, String)>>| {
            let ui = ui.clone();
            async move { admin_html(admin_ui::page(op(&ui, &h), &s, &q).await) }
        }
    });
    let confirm: MethodRouter = get({
        let ui = ui.clone();
        move |s: Session, h: HeaderMap, Query(f): Query<EndForm>| {
            let ui = ui.clone();
            async move { admin_html(admin_ui::confirm_end(op(&ui, &h), &s, f).await) }
        }
    });
    Router::new()
        .route("/admin", page)
        .route(
            "/admin/ui/sign-in",
            post({
                let ui = ui.clone();
                move |s: Session, h: HeaderMap, o: Origin, f: Form<SignInForm>| {
                    let ui = ui.clone();
                    async move {
                        let op = op(&ui, &h);
                        match admin_checked(op, o, f) {
                            Ok(f) => admin_html(admin_ui::sign_in(op, &s, f).await),
                            Err(r) => *r,
                        }
                    }
                }
            }),
        )
        .route(
            "/admin/ui/sign-out",
            post({
                let ui = ui.clone();
                move |h: HeaderMap, o: Origin, f: Form<demo_core::ui::EmptyForm>| {
                    let ui = ui.clone();
                    async move {
                        let op = op(&ui, &h);
                        match admin_checked(op, o, f) {
                            Ok(_) => admin_html(admin_ui::sign_out(op).await),
                            Err(r) => *r,
                        }
                    }
                }
            }),
        )
        .route(
            "/admin/ui/revoke",
            post({
                let ui = ui.clone();
                move |s: Session, h: HeaderMap, o: Origin, f: Form<AdminRevokeForm>| {
                    let ui = ui.clone();
                    async move {
                        let op = op(&ui, &h);
                        match admin_checked(op, o, f) {
                            Ok(f) => admin_html(admin_ui::revoke(op, &s, f).await),
                            Err(r) => *r,
                        }
                    }
                }
            }),
        )
        .route(
            "/admin/ui/end",
            confirm.post({
                let ui = ui.clone();
                move |s: Session, h: HeaderMap, o: Origin, f: Form<EndForm>| {
                    let ui = ui.clone();
                    async move {
                        let op = op(&ui, &h);
                        match admin_checked(op, o, f) {
                            Ok(f) => admin_html(admin_ui::end(op, &s, f).await),
                            Err(r) => *r,
                        }
                    }
                }
            }),
        )
}

/// The operator of a request: whether the page exists, and the request's sign-in cookie.
fn op<'a>(
    ui: &'a Option<demo_core::admin_ui::AdminUi>,
    h: &HeaderMap,
) -> demo_core::admin_ui::Operator<'a> {
    let cookies = h.get_all(axum::http::header::COOKIE);
    demo_core::admin_ui::Operator::new(ui.as_ref(), cookies.iter().map(|v| v.as_bytes()))
}

/// An operator's form that passed the cross-origin and CSRF checks, or the answer for one that
/// did not: `403` (the page's own, nothing changed); `404` without an admin token.
fn admin_checked<T>(
    op: demo_core::admin_ui::Operator<'_>,
    origin: Result<OriginChecked, CsrfRejection>,
    f: Result<CsrfForm<T>, CsrfRejection>,
) -> Result<T, Box<Response>> {
    use axum::response::IntoResponse;
    use tessera_axum::tessera_core::adapter::CsrfRejection as Reason;
    let refusal = |e: CsrfRejection| match e.0 {
        Reason::Invalid | Reason::NoSession | Reason::CrossOrigin => {
            Box::new(admin_html(demo_core::admin_ui::refused(op)))
        }
        other => Box::new(CsrfRejection(other).into_response()),
    };
    if !op.enabled() {
        return Err(Box::new(admin_html(demo_core::admin_ui::refused(op))));
    }
    origin.map_err(refusal)?;
    f.map(|CsrfForm(t)| t).map_err(refusal)
}

/// An operator's page or redirect as a response, with the page for people's headers, and the
/// sign-in cookie set or cleared.
fn admin_html(p: demo_core::admin_ui::AdminPage) -> Response {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = match &p.location {
        Some(_) => status.into_response(),
        None => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            p.html.clone(),
        )
            .into_response(),
    };
    let h = res.headers_mut();
    for (name, value) in p.headers() {
        h.insert(
            name,
            HeaderValue::try_from(value).expect("the headers are ASCII text"),
        );
    }
    if let Some(to) = p
        .location
        .as_deref()
        .and_then(|v| HeaderValue::try_from(v).ok())
    {
        h.insert(header::LOCATION, to);
    }
    if let Some(c) = p
        .set_cookie
        .as_deref()
        .and_then(|v| HeaderValue::try_from(v).ok())
    {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(r) = p.refusal {
        res.extensions_mut().insert(*r);
    }
    res
}
