//! The tessera actix demo: the same routes as `axum-demo`, over the same `demo-core` logic.

use actix_web::web::{self, Bytes, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use demo_core::AdminRoute;
use serde_json::Value;
use tessera_actix::{reply, CsrfForm, CsrfRejection, OriginChecked, Session};

pub use demo_core::{config_from_env, port_from_env, store_from_env};

/// The demo's routes: `POST /login`, `GET /me`, `PUT /session`, `POST /counter`, plus
/// tessera's account endpoints, plus the admin routes and the operator's page (`GET /admin`)
/// when `ADMIN_TOKEN` is set. Mount inside
/// an `App` wrapped in `SessionMiddleware`. The state-changing JSON routes take
/// [`OriginChecked`], as the account endpoints do: a request a cross-site page could make is
/// refused (403) unless it carries the session's CSRF token in `X-CSRF-Token`.
pub fn routes(cfg: &mut ServiceConfig) {
    routes_with_admin(demo_core::admin_token_from_env())(cfg)
}

/// [`routes`] with the admin token given (`None`: the admin routes answer 404).
pub fn routes_with_admin(admin_token: Option<String>) -> impl Fn(&mut ServiceConfig) + Clone {
    if admin_token.is_some() {
        // Before any traffic: what happens before the recorder is installed is not counted.
        demo_core::metrics_recorder();
    }
    move |cfg: &mut ServiceConfig| {
        let metrics_token = admin_token.clone();
        cfg.route(
            "/metrics",
            web::get().to(move |req: HttpRequest| {
                let token = metrics_token.clone();
                async move {
                    let auth = req
                        .headers()
                        .get(actix_web::http::header::AUTHORIZATION)
                        .map(|v| v.as_bytes());
                    match demo_core::metrics_text(token.as_deref(), auth) {
                        Ok(text) => HttpResponse::Ok()
                            .content_type(demo_core::METRICS_CONTENT_TYPE)
                            .body(text),
                        Err(refused) => reply(refused),
                    }
                }
            }),
        );
        let admin = |route: AdminRoute| {
            let token = admin_token.clone();
            move |s: Session, req: HttpRequest, q: web::Query<Vec<(String, String)>>| {
                let token = token.clone();
                async move {
                    let auth = req
                        .headers()
                        .get(actix_web::http::header::AUTHORIZATION)
                        .map(|v| v.as_bytes());
                    reply(demo_core::admin(s.manager(), token.as_deref(), auth, route, &q).await)
                }
            }
        };
        cfg.route(
            "/admin/sessions",
            web::get().to(admin(AdminRoute::ListSessions)),
        )
        .route(
            "/admin/sessions",
            web::delete().to(admin(AdminRoute::EndSessions)),
        )
        .route("/admin/counts", web::get().to(admin(AdminRoute::Counts)))
        .route("/admin/events", web::get().to(admin(AdminRoute::Events)));
        base_routes(cfg);
        admin_ui_routes(cfg, admin_token.clone());
    }
}

fn base_routes(cfg: &mut ServiceConfig) {
    cfg.route("/login", web::post().to(login))
        .route(
            "/me",
            web::get().to(|s: Session| async move { reply(demo_core::me(&s).await) }),
        )
        .route("/session", web::put().to(put_session))
        .route("/live", web::get().to(live))
        .route("/activity", web::post().to(record_activity))
        .route(
            "/activity",
            web::get().to(|s: Session| async move { reply(demo_core::activity(&s).await) }),
        )
        .route(
            "/counter",
            web::post().to(|_: OriginChecked, s: Session| async move {
                reply(demo_core::counter(&s).await)
            }),
        )
        .configure(tessera_actix::endpoints)
        .configure(ui_routes);
}

/// `GET /` (the page for people) and its form posts, each checked against the session's CSRF
/// token before anything changes.
fn ui_routes(cfg: &mut ServiceConfig) {
    use demo_core::ui::{self, EmptyForm, LoginForm, RevokeForm};
    type Form<T> = Result<CsrfForm<T>, CsrfRejection>;
    // HEAD as GET (actix's `web::get()` does not match HEAD; the body is dropped by actix-http).
    async fn page(s: Session) -> HttpResponse {
        html(ui::page(&s).await)
    }
    cfg.route("/", web::get().to(page))
        .route("/", web::head().to(page))
        .route(
            "/ui/login",
            web::post().to(|s: Session, f: Form<LoginForm>| async move {
                match checked(f) {
                    Ok(f) => html(ui::login(&s, f).await),
                    Err(r) => *r,
                }
            }),
        )
        .route(
            "/ui/counter",
            web::post().to(|s: Session, f: Form<EmptyForm>| async move {
                match checked(f) {
                    Ok(_) => html(ui::counter(&s).await),
                    Err(r) => *r,
                }
            }),
        )
        .route(
            "/ui/logout",
            web::post().to(|s: Session, f: Form<EmptyForm>| async move {
                match checked(f) {
                    Ok(_) => html(ui::logout(&s).await),
                    Err(r) => *r,
                }
            }),
        )
        .route(
            "/ui/logout-all",
            web::post().to(|s: Session, f: Form<EmptyForm>| async move {
                match checked(f) {
                    Ok(_) => html(ui::logout_all(&s).await),
                    Err(r) => *r,
                }
            }),
        )
        .route(
            "/ui/revoke",
            web::post().to(|s: Session, f: Form<RevokeForm>| async move {
                match checked(f) {
                    Ok(f) => html(ui::revoke(&s, f).await),
                    Err(r) => *r,
                }
            }),
        );
}

/// A form that passed the CSRF check, or the answer for one that did not: the login form
/// when its session is gone, `403` when the token is not the session's.
fn checked<T>(f: Result<CsrfForm<T>, CsrfRejection>) -> Result<T, Box<HttpResponse>> {
    use actix_web::ResponseError;
    use tessera_actix::tessera_core::adapter::CsrfRejection as Reason;
    match f {
        Ok(CsrfForm(t)) => Ok(t),
        Err(CsrfRejection(Reason::NoSession)) => Err(Box::new(html(demo_core::ui::refused(true)))),
        Err(CsrfRejection(Reason::Invalid)) => Err(Box::new(html(demo_core::ui::refused(false)))),
        Err(other) => Err(Box::new(other.error_response())),
    }
}

/// A UI page or redirect as a response, never cached, never framed, scripts only with its nonce.
fn html(p: demo_core::ui::Page) -> HttpResponse {
    use actix_web::http::StatusCode;
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut b = HttpResponse::build(status);
    for header in p.headers() {
        b.insert_header(header);
    }
    match p.location {
        Some(to) => b.insert_header(("location", to)).finish(),
        None => b.content_type("text/html; charset=utf-8").body(p.html),
    }
}

/// The JSON body of a request that says it is JSON. Another content type is refused before it
/// is read: a cross-site `<form enctype="text/plain">` can post a body that parses as JSON, but
/// it cannot say `application/json` (that needs a CORS preflight).
fn body(req: &HttpRequest, b: &Bytes) -> Result<Value, String> {
    let json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err("the body must be JSON with Content-Type: application/json".into());
    }
    serde_json::from_slice(b).map_err(|e| format!("body is not JSON: {e}"))
}

async fn record_activity(_: OriginChecked, s: Session, req: HttpRequest, b: Bytes) -> HttpResponse {
    reply(demo_core::record_activity(&s, body(&req, &b)).await)
}

async fn login(
    _: OriginChecked,
    s: Session,
    req: HttpRequest,
    q: web::Query<Vec<(String, String)>>,
    b: Bytes,
) -> HttpResponse {
    let remember = q
        .iter()
        .find(|(k, _)| k == "remember")
        .map(|(_, v)| v.as_str());
    reply(demo_core::login(&s, body(&req, &b), remember).await)
}

async fn put_session(
    _: OriginChecked,
    s: Session,
    req: HttpRequest,
    q: web::Query<Vec<(String, String)>>,
    b: Bytes,
) -> HttpResponse {
    let ttl = q.iter().find(|(k, _)| k == "ttl").map(|(_, v)| v.as_str());
    reply(demo_core::put_session(&s, body(&req, &b), ttl).await)
}

/// `GET /live`: server-sent events for the session (heartbeats), closed with an `ended` event
/// when the session ends on any instance; `401` without a session.
async fn live(s: Session) -> actix_web::HttpResponse {
    use futures_util::StreamExt as _;
    if let Err(r) = demo_core::live_allowed(&s).await {
        return reply(r);
    }
    let beats =
        demo_core::live_heartbeats().map(|data| tessera_actix::live::event("heartbeat", &data));
    tessera_actix::live::sse(s, beats)
}

/// `GET /admin` (the operator's page, signed in with the admin token: a cookie of its own) and
/// its forms under `/admin/ui/`: each post refused when cross-origin, and checked against the
/// browser's CSRF token, before anything changes. Without an admin token, all `404`.
fn admin_ui_routes(cfg: &mut ServiceConfig, admin_token: Option<String>) {
    use demo_core::admin_ui::{self, AdminRevokeForm, AdminUi, EndForm, SignInForm};
    use demo_core::ui::EmptyForm;
    use std::sync::Arc;
    type Form<T> = Result<CsrfForm<T>, CsrfRejection>;
    type Origin = Result<OriginChecked, CsrfRejection>;
    type Ui = web::Data<Arc<Option<AdminUi>>>;
    // HEAD as GET, as for `/`.
    async fn page(
        ui: Ui,
        s: Session,
        req: HttpRequest,
        q: web::Query<Vec<(String, String)>>,
    ) -> HttpResponse {
        admin_html(admin_ui::page(op(&ui, &req), &s, &q).await)
    }
    async fn confirm(ui: Ui, s: Session, req: HttpRequest, f: web::Query<EndForm>) -> HttpResponse {
        admin_html(admin_ui::confirm_end(op(&ui, &req), &s, f.into_inner()).await)
    }
    async fn sign_in(
        ui: Ui,
        s: Session,
        req: HttpRequest,
        o: Origin,
        f: Form<SignInForm>,
    ) -> HttpResponse {
        let op = op(&ui, &req);
        match admin_checked(op, o, f) {
            Ok(f) => admin_html(admin_ui::sign_in(op, &s, f).await),
            Err(r) => *r,
        }
    }
    async fn sign_out(ui: Ui, req: HttpRequest, o: Origin, f: Form<EmptyForm>) -> HttpResponse {
        let op = op(&ui, &req);
        match admin_checked(op, o, f) {
            Ok(_) => admin_html(admin_ui::sign_out(op).await),
            Err(r) => *r,
        }
    }
    async fn revoke(
        ui: Ui,
        s: Session,
        req: HttpRequest,
        o: Origin,
        f: Form<AdminRevokeForm>,
    ) -> HttpResponse {
        let op = op(&ui, &req);
        match admin_checked(op, o, f) {
            Ok(f) => admin_html(admin_ui::revoke(op, &s, f).await),
            Err(r) => *r,
        }
    }
    async fn end(
        ui: Ui,
        s: Session,
        req: HttpRequest,
        o: Origin,
        f: Form<EndForm>,
    ) -> HttpResponse {
        let op = op(&ui, &req);
        match admin_checked(op, o, f) {
            Ok(f) => admin_html(admin_ui::end(op, &s, f).await),
            Err(r) => *r,
        }
    }
    // The routes' own data, in a scope-less resource group: the other routes keep theirs.
    let ui: Ui = web::Data::new(Arc::new(AdminUi::from_env(admin_token)));
    cfg.service(
        web::resource("/admin")
            .app_data(ui.clone())
            .route(web::get().to(page))
            .route(web::head().to(page)),
    )
    .service(
        web::resource("/admin/ui/sign-in")
            .app_data(ui.clone())
            .route(web::post().to(sign_in)),
    )
    .service(
        web::resource("/admin/ui/sign-out")
            .app_data(ui.clone())
            .route(web::post().to(sign_out)),
    )
    .service(
        web::resource("/admin/ui/revoke")
            .app_data(ui.clone())
            .route(web::post().to(revoke)),
    )
    .service(
        web::resource("/admin/ui/end")
            .app_data(ui)
            .route(web::get().to(confirm))
            .route(web::post().to(end)),
    );
}

/// The operator of a request: whether the page exists, and the request's sign-in cookie.
fn op<'a>(
    ui: &'a Option<demo_core::admin_ui::AdminUi>,
    req: &HttpRequest,
) -> demo_core::admin_ui::Operator<'a> {
    let cookies = req.headers().get_all(actix_web::http::header::COOKIE);
    demo_core::admin_ui::Operator::new(ui.as_ref(), cookies.map(|v| v.as_bytes()))
}

/// An operator's form that passed the cross-origin and CSRF checks, or the answer for one that
/// did not: `403` (the page's own, nothing changed); `404` without an admin token.
fn admin_checked<T>(
    op: demo_core::admin_ui::Operator<'_>,
    origin: Result<OriginChecked, CsrfRejection>,
    f: Result<CsrfForm<T>, CsrfRejection>,
) -> Result<T, Box<HttpResponse>> {
    use actix_web::ResponseError;
    use tessera_actix::tessera_core::adapter::CsrfRejection as Reason;
    let refusal = |e: CsrfRejection| match e.0 {
        Reason::Invalid | Reason::NoSession | Reason::CrossOrigin => {
            Box::new(admin_html(demo_core::admin_ui::refused(op)))
        }
        other => Box::new(CsrfRejection(other).error_response()),
    };
    if !op.enabled() {
        return Err(Box::new(admin_html(demo_core::admin_ui::refused(op))));
    }
    origin.map_err(refusal)?;
    f.map(|CsrfForm(t)| t).map_err(refusal)
}

/// An operator's page or redirect as a response, with the page for people's headers, and the
/// sign-in cookie set or cleared.
fn admin_html(p: demo_core::admin_ui::AdminPage) -> HttpResponse {
    use actix_web::http::StatusCode;
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut b = HttpResponse::build(status);
    for header in p.headers() {
        b.insert_header(header);
    }
    if let Some(c) = &p.set_cookie {
        b.append_header(("set-cookie", c.as_str()));
    }
    let mut res = match p.location {
        Some(to) => b.insert_header(("location", to)).finish(),
        None => b.content_type("text/html; charset=utf-8").body(p.html),
    };
    if let Some(r) = p.refusal {
        res.extensions_mut().insert(*r);
    }
    res
}
