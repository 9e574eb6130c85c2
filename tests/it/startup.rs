//! The real binary started while a backend is down: it serves /health, reports the outage
//! and connects by itself when the backend appears (migrating the schema on first contact).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::migrations::TABLES;
use crate::support::mysql::{database_exists, table_names};
use crate::support::{RedisServer, TcpProxy, TestEnv, free_port, spawn_binary};

const RECOVER: Duration = Duration::from_secs(30);

#[actix_rt::test]
async fn starts_with_redis_down_and_recovers() {
    let redis_port = free_port();
    let env = TestEnv::new().with("REDIS_PORT", redis_port.to_string());
    let mut relay = spawn_binary(&env).await;

    let (code, body) = relay.wait_for_backend("mysql", true, RECOVER).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["databases"]["redis"]["connected"], false, "{body}");
    assert_eq!(
        relay.get_json("/health/ready").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "health": "degraded"})
        )
    );

    let _redis = RedisServer::spawn_on(redis_port);
    let body = relay.wait_for_health("healthy", RECOVER).await;
    assert_eq!(body["databases"]["redis"]["connected"], true, "{body}");
    assert!(relay.is_running(), "{}", relay.logs());
}

#[actix_rt::test]
async fn starts_with_mysql_down_and_recovers_with_the_schema() {
    let proxy = TcpProxy::to_mysql();
    proxy.cut();
    let env = TestEnv::new().with("MYSQL_PORT", proxy.port().to_string());
    let db = env.direct_mysql();
    let mut relay = spawn_binary(&env).await;

    let (code, body) = relay.wait_for_backend("redis", true, RECOVER).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["databases"]["mysql"]["connected"], false, "{body}");
    // Still down a little later: no exit, no crash loop, nothing created behind the cut.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        relay.health().await.1["databases"]["mysql"]["connected"],
        false
    );
    assert!(relay.is_running(), "{}", relay.logs());
    assert!(!database_exists(&db));

    proxy.open();
    let body = relay.wait_for_health("healthy", RECOVER).await;
    assert_eq!(body["databases"]["mysql"]["connected"], true, "{body}");
    assert!(database_exists(&db), "created on first contact");
    assert_eq!(table_names(&db), TABLES, "migrated on first contact");
}

#[actix_rt::test]
async fn starts_with_both_down_unhealthy_and_recovers() {
    let redis_port = free_port();
    let proxy = TcpProxy::to_mysql();
    proxy.cut();
    let env = TestEnv::new()
        .with("REDIS_PORT", redis_port.to_string())
        .with("MYSQL_PORT", proxy.port().to_string());
    let mut relay = spawn_binary(&env).await;

    let (code, body) = relay.health().await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(
        relay.get_json("/health/live").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );

    let _redis = RedisServer::spawn_on(redis_port);
    proxy.open();
    relay.wait_for_health("healthy", RECOVER).await;
    assert!(relay.is_running(), "{}", relay.logs());
    assert_eq!(table_names(&env.direct_mysql()), TABLES);
}
