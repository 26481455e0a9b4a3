//! The tessera axum demo: the routes and the environment configuration, as a library so the
//! integration suite serves exactly these routes over real HTTP.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::time::Duration;
use tessera_axum::{Session, SessionError, SessionLayer};
use tessera_core::{Key, SessionConfig, SessionManager, Store};

/// The demo's routes behind a session layer.
pub fn app(manager: SessionManager) -> Router {
    routes().layer(SessionLayer::from_manager(manager))
}

/// The demo's routes without the layer (tests add their own routes before layering):
/// its own JSON routes plus tessera's account endpoints (`POST /logout`, `POST /logout-all`,
/// `GET /sessions`, `DELETE /sessions/{handle}`).
pub fn routes() -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/session", put(put_session))
        .route("/counter", post(counter))
        .merge(tessera_axum::endpoints())
}

/// Reads `TESSERA_SECRET`, `COOKIE_SECURE`, `SESSION_IDLE_SECS`, `SESSION_TOUCH_SECS`.
pub fn config_from_env() -> Result<SessionConfig, String> {
    let key = match std::env::var("TESSERA_SECRET") {
        Ok(hex) => Key::from_hex(&hex).map_err(|e| format!("TESSERA_SECRET: {e}"))?,
        Err(_) => {
            tracing::warn!("TESSERA_SECRET is not set: using a random signing key; sessions will not survive a restart or work across instances");
            Key::generate()
        }
    };
    let secs = |name: &str, default: u64| -> Result<Duration, String> {
        match std::env::var(name) {
            Ok(v) => v
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{name} must be a whole number of seconds")),
            Err(_) => Ok(Duration::from_secs(default)),
        }
    };
    let idle = secs("SESSION_IDLE_SECS", 30 * 60)?;
    let touch = secs(
        "SESSION_TOUCH_SECS",
        60.min(idle.as_secs().saturating_sub(1)),
    )?;
    let secure = std::env::var("COOKIE_SECURE")
        .map(|v| v != "0")
        .unwrap_or(true);
    SessionConfig::builder(key)
        .idle_timeout(idle)
        .touch_interval(touch)
        .secure(secure)
        .build()
        .map_err(|e| e.to_string())
}

/// The store: Redis when `REDIS_URL` is set, else in memory.
pub async fn store_from_env() -> Result<Store, String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Store::redis(&url).await.map_err(|e| {
            format!(
                "REDIS_URL: cannot connect: {e} ({:?})",
                std::error::Error::source(&e)
            )
        }),
        _ => Ok(Store::memory()),
    }
}

enum ApiError {
    Session(SessionError),
    BadRequest(String),
    Unauthorized,
}

impl From<tessera_core::Error> for ApiError {
    fn from(e: tessera_core::Error) -> Self {
        ApiError::Session(SessionError(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Session(e) => e.into_response(),
            ApiError::BadRequest(m) => {
                (StatusCode::BAD_REQUEST, Json(json!({ "error": m }))).into_response()
            }
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "no session" })),
            )
                .into_response(),
        }
    }
}

fn object(body: Result<Json<Value>, JsonRejection>) -> Result<Map<String, Value>, ApiError> {
    match body {
        Ok(Json(Value::Object(m))) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest("body must be a JSON object".into())),
        Err(e) => Err(ApiError::BadRequest(e.body_text())),
    }
}

async fn login(
    session: Session,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let fields = object(body)?;
    let user = match fields.get("user_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ApiError::BadRequest(
                "user_id (a non-empty string) is required".into(),
            ))
        }
    };
    for (k, v) in &fields {
        session.insert(k, v).await?;
    }
    session.login(&user).await?;
    Ok(Json(session.entries().await?))
}

async fn me(session: Session) -> Result<Json<Map<String, Value>>, ApiError> {
    if !session.is_stored().await? {
        return Err(ApiError::Unauthorized);
    }
    Ok(Json(session.entries().await?))
}

async fn put_session(
    session: Session,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    for (k, v) in object(body)? {
        if v.is_null() {
            session.remove(&k).await?;
        } else {
            session.insert(&k, &v).await?;
        }
    }
    Ok(Json(session.entries().await?))
}

async fn counter(session: Session) -> Result<Json<Value>, ApiError> {
    let n = session.increment("counter", 1).await?;
    Ok(Json(json!({ "counter": n })))
}
