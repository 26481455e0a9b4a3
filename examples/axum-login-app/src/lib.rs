//! An axum app built the usual way on tower-sessions, axum-login and axum-messages: nothing
//! in it knows tessera except the one line that picks the store ([`TesseraStore`] instead of
//! tower-sessions-redis-store's `RedisStore`), and the account routes that use tessera's user
//! index (device list, logout-all).
//!
//! Routes (JSON):
//! - `POST /login` `{"username", "password"}`: 204 and a flash message, or 401.
//! - `GET /me` (login required, else 401): `{"user", "messages"}`; the flash messages are
//!   shown once.
//! - `GET /devices` (login required): the user's sessions, `"current"` marking this one.
//! - `DELETE /devices/{handle}` (login required): ends one of them; 204, or 404.
//! - `POST /logout`: ends this session; 204.
//! - `POST /logout-all` (login required): ends every session of the user; `{"ended"}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use axum_login::{login_required, AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend};
use axum_messages::{Messages, MessagesManagerLayer};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use tessera_tower_sessions::{DeviceInfoLayer, StoreUnavailableLayer, TesseraStore};
use tower_sessions::{Expiry, SessionManagerLayer, SessionStore};

/// A user of the example: an id and an HMAC of its password (which is also its session auth
/// hash, so a password change ends its sessions, as axum-login does).
#[derive(Clone)]
pub struct User {
    id: String,
    pw_digest: Vec<u8>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User").field("id", &self.id).finish()
    }
}

impl AuthUser for User {
    type Id = String;

    fn id(&self) -> String {
        self.id.clone()
    }

    fn session_auth_hash(&self) -> &[u8] {
        &self.pw_digest
    }
}

/// The users: fixed, in memory (`ada` / `lovelace`, `alan` / `turing`). Passwords are kept as
/// HMACs under a fixed key (a real app keeps a password hash such as argon2 in its database).
#[derive(Clone, Debug)]
pub struct Backend {
    users: Arc<HashMap<String, User>>,
    key: ring::hmac::Key,
}

impl Default for Backend {
    fn default() -> Self {
        // The same on every instance: the tag is also the session auth hash, which axum-login
        // compares on each request, whichever instance wrote the session.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"axum-login-app example users");
        let users = [("ada", "lovelace"), ("alan", "turing")]
            .into_iter()
            .map(|(id, pw)| {
                let user = User {
                    id: id.to_string(),
                    pw_digest: ring::hmac::sign(&key, pw.as_bytes()).as_ref().to_vec(),
                };
                (id.to_string(), user)
            })
            .collect();
        Backend {
            users: Arc::new(users),
            key,
        }
    }
}

/// What `POST /login` takes.
#[derive(Clone, Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = std::convert::Infallible;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, Self::Error> {
        // Constant-time: ring compares the tags so.
        Ok(self.users.get(&creds.username).cloned().filter(|u| {
            ring::hmac::verify(&self.key, creds.password.as_bytes(), &u.pw_digest).is_ok()
        }))
    }

    async fn get_user(&self, id: &String) -> Result<Option<User>, Self::Error> {
        Ok(self.users.get(id).cloned())
    }
}

type Auth = AuthSession<Backend>;

/// The app over tessera: [`app_on`]'s routes, plus the device list and logout-all, which
/// tessera's user index makes possible.
pub fn app(store: TesseraStore) -> Router {
    let account = Router::new()
        .route("/devices", get(devices))
        .route("/devices/{handle}", delete(revoke))
        .route("/logout-all", post(logout_all))
        .route_layer(login_required!(Backend))
        .with_state(store.clone());
    let devices = DeviceInfoLayer::new(&store);
    app_on(store, account)
        .layer(devices)
        .layer(StoreUnavailableLayer)
}

/// The app as it is on any tower-sessions store (tower-sessions-redis-store's `RedisStore`
/// before the switch): login, `/me`, logout, and `extra` routes. The session layers are
/// tower-sessions', axum-login's and axum-messages' own.
pub fn app_on<S: SessionStore + Clone>(store: S, extra: Router) -> Router {
    let sessions = SessionManagerLayer::new(store)
        .with_secure(false) // the example runs on plain http://localhost
        .with_expiry(Expiry::OnInactivity(
            tower_sessions::cookie::time::Duration::hours(8),
        ));
    let auth = AuthManagerLayerBuilder::new(Backend::default(), sessions).build();
    Router::new()
        .route("/me", get(me))
        .route_layer(login_required!(Backend))
        .merge(extra)
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(MessagesManagerLayer)
        .layer(auth)
}

fn failure(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

async fn login(mut auth: Auth, messages: Messages, Json(creds): Json<Credentials>) -> Response {
    let user = match auth.authenticate(creds).await {
        Ok(Some(user)) => user,
        Ok(None) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(e) => return failure(e),
    };
    if let Err(e) = auth.login(&user).await {
        return failure(e);
    }
    messages.success(format!("Welcome, {}", user.id));
    StatusCode::NO_CONTENT.into_response()
}

async fn me(auth: Auth, messages: Messages) -> Response {
    let shown: Vec<String> = messages.into_iter().map(|m| m.message).collect();
    let user = auth.user.map(|u| u.id);
    Json(json!({"user": user, "messages": shown})).into_response()
}

async fn devices(auth: Auth, State(store): State<TesseraStore>) -> Response {
    let Some(user) = auth.user else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match store.list_sessions(&auth.session, &user.id).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => failure(e),
    }
}

async fn revoke(
    auth: Auth,
    State(store): State<TesseraStore>,
    Path(handle): Path<String>,
) -> Response {
    let Some(user) = auth.user else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match store.manager().revoke(&user.id, &handle).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => failure(e),
    }
}

async fn logout(mut auth: Auth) -> Response {
    match auth.logout().await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failure(e),
    }
}

async fn logout_all(auth: Auth, State(store): State<TesseraStore>) -> Response {
    let Some(user) = auth.user else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    // Ends this request's session too: anything written after it goes to a fresh one.
    match store.logout_all(&auth.session, &user.id).await {
        Ok(n) => Json(json!({"ended": n})).into_response(),
        Err(e) => failure(e),
    }
}
