//! `cargo run -p axum-demo`: serves the demo on `PORT` (default 3000).

use tessera_core::SessionManager;

#[tokio::main]
async fn main() {
    demo_core::init_tracing();

    if let Err(e) = run().await {
        eprintln!("axum-demo: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let config = axum_demo::config_from_env()?;
    let store = axum_demo::store_from_env().await?;
    tracing::info!(?store, "session store ready");
    let port: u16 = std::env::var("PORT")
        .ok()
        .map(|p| {
            p.parse()
                .map_err(|_| "PORT must be a port number".to_string())
        })
        .transpose()?
        .unwrap_or(3000);
    let app = axum_demo::app(SessionManager::new(store, config))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    tracing::info!("axum-demo listening on http://0.0.0.0:{port}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
