//! axum and actix side by side: one store, one layout, so a session created through one
//! framework is served by the other (a mixed fleet behind one load balancer, or a migration).

use serde_json::json;
use tessera_core::{RedisOptions, SessionManager, Store};
use tessera_tests::fixture::{config, serve};
use tessera_tests::{spawn_app, Adapter, Browser, Server, ServerKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_and_actix_demos_share_sessions_through_one_redis() {
    for kind in [ServerKind::Redis7, ServerKind::Valkey] {
        let server = Server::start(kind);
        // Two separate managers (two processes in production), same key and same Redis.
        let store_a = Store::redis_with(&server.url(), RedisOptions::default())
            .await
            .unwrap();
        let store_b = Store::redis_with(&server.url(), RedisOptions::default())
            .await
            .unwrap();
        let axum_app = serve(Adapter::Axum, SessionManager::new(store_a, config(|c| c))).await;
        let actix_app = serve(Adapter::Actix, SessionManager::new(store_b, config(|c| c))).await;

        let via_axum = Browser::new(axum_app.addr);
        let r = via_axum
            .post("/login", Some(json!({"user_id": "42", "tenant": "acme"})))
            .await;
        assert_eq!(r.status, 200);
        let via_actix = via_axum.pointed_at(&actix_app);
        assert_eq!(
            via_actix.get("/me").await.json(),
            json!({"user_id": "42", "tenant": "acme"}),
            "{kind:?}"
        );
        // Alternate writes between the frameworks.
        assert_eq!(
            via_actix.post("/counter", None).await.json(),
            json!({"counter": 1})
        );
        assert_eq!(
            via_axum.post("/counter", None).await.json(),
            json!({"counter": 2})
        );
        via_actix
            .put("/session", json!({"tenant": null, "plan": "pro"}))
            .await;
        assert_eq!(
            via_axum.get("/me").await.json(),
            json!({"user_id": "42", "counter": 2, "plan": "pro"})
        );
        // Both list the same device; a login started on actix and read on axum.
        assert_eq!(
            via_axum
                .get("/sessions")
                .await
                .json()
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let second = Browser::new(actix_app.addr);
        second.post("/login", Some(json!({"user_id": "42"}))).await;
        assert_eq!(second.pointed_at(&axum_app).get("/me").await.status, 200);
        assert_eq!(
            via_axum
                .get("/sessions")
                .await
                .json()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // Logout-all on one framework ends the sessions everywhere.
        assert_eq!(via_actix.post("/logout-all", None).await.status, 204);
        assert_eq!(via_axum.get("/me").await.status, 401);
        assert_eq!(second.get("/me").await.status, 401);
        assert!(server.keys("*").is_empty(), "{:?}", server.keys("*"));
    }
}

#[tokio::test]
async fn a_missing_layer_is_a_named_500_not_a_silent_success() {
    let axum_app = spawn_app(axum_demo::routes()).await; // no SessionLayer
    let r = Browser::new(axum_app.addr).get("/me").await;
    assert_eq!(r.status, 500);
    assert!(r.body.contains("tessera_axum::SessionLayer"), "{}", r.body);

    let actix_app =
        tessera_tests::http::spawn_actix(|| actix_web::App::new().configure(actix_demo::routes));
    let r = Browser::new(actix_app.addr).get("/me").await;
    assert_eq!(r.status, 500);
    assert!(
        r.body.contains("tessera_actix::SessionMiddleware"),
        "{}",
        r.body
    );
}
