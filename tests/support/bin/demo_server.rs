//! `tessera-demo-server axum|actix`: the demo app (exactly the demos' routes and environment
//! variables) as a process of its own, so a test can run it with another clock (`LD_PRELOAD`).

#[tokio::main]
async fn main() {
    let adapter = std::env::args().nth(1).unwrap_or_else(|| "axum".into());
    let config = demo_core::config_from_env().expect("config");
    let store = demo_core::store_from_env().await.expect("store");
    let port = demo_core::port_from_env().expect("port");
    let manager = tessera_core::SessionManager::new(store, config);
    match adapter.as_str() {
        "axum" => {
            let app = axum_demo::app(manager)
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("listen");
            axum::serve(listener, app).await.expect("serve");
        }
        "actix" => {
            let mw = tessera_actix::SessionMiddleware::from_manager(manager);
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .wrap(mw.clone())
                    .configure(actix_demo::routes)
            })
            .workers(1)
            .bind(("127.0.0.1", port))
            .expect("listen")
            .run();
            // actix runs on its own system thread.
            std::thread::spawn(move || {
                actix_web::rt::System::new()
                    .block_on(server)
                    .expect("serve")
            })
            .join()
            .expect("actix thread");
        }
        other => panic!("unknown adapter {other}: axum or actix"),
    }
}
