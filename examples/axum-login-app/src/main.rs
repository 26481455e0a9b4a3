//! Runs the example: `cargo run -p axum-login-app`, in-memory store, or Redis with
//! `REDIS_URL=redis://127.0.0.1:6379`. Listens on `BIND` (default `127.0.0.1:3001`).

use tessera_tower_sessions::tessera_core::{Key, SessionConfig, SessionManager, Store};
use tessera_tower_sessions::TesseraStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let store = match std::env::var("REDIS_URL") {
        Ok(url) => Store::redis(&url).await?,
        Err(_) => Store::memory(),
    };
    // tower-sessions makes and checks the cookie; the key is not used for it.
    let config = SessionConfig::builder(Key::generate()).build()?;
    let sessions = TesseraStore::new(SessionManager::new(store, config))
        .user_id_at("axum-login.data", "/user_id")
        .migrate_redis_store(std::env::var("MIGRATE_REDIS_STORE").is_ok_and(|v| v == "1"));
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    tracing::info!(%bind, "listening");
    // With the peer's address (ConnectInfo), which DeviceInfoLayer records for device lists.
    let app = axum_login_app::app(sessions);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await?;
    Ok(())
}
