//! `cargo run -p actix-demo`: serves the demo on `PORT` (default 3000), like `axum-demo`.

use actix_web::{App, HttpServer};
use tessera_actix::SessionMiddleware;
use tessera_core::SessionManager;

#[actix_web::main]
async fn main() {
    demo_core::init_tracing();

    if let Err(e) = run().await {
        eprintln!("actix-demo: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let config = actix_demo::config_from_env()?;
    let store = actix_demo::store_from_env().await?;
    tracing::info!(?store, "session store ready");
    let port = actix_demo::port_from_env()?;
    let sessions = SessionMiddleware::from_manager(SessionManager::new(store, config));
    tracing::info!("actix-demo listening on http://0.0.0.0:{port}");
    HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .configure(actix_demo::routes)
    })
    .bind(("0.0.0.0", port))
    .map_err(|e| format!("cannot listen on port {port}: {e}"))?
    .run()
    .await
    .map_err(|e| e.to_string())
}
