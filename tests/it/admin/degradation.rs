//! Degradation of the admin API: MySQL down → writes 503 `storage_unavailable` and nothing
//! half-written; Redis down → login sessions 503, `ADMIN_TOKEN` and writes still work.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::{ADMIN_PASSWORD, ADMIN_USER, start_with};
use crate::support::{RedisServer, TcpProxy};

const SWITCH: Duration = Duration::from_secs(20);

#[actix_rt::test]
async fn mysql_down_makes_writes_503_and_writes_nothing() {
    let proxy = TcpProxy::to_mysql();
    let port = proxy.port();
    let admin = start_with(
        |env| {
            env.set("MYSQL_PORT", port.to_string());
        },
        "healthy",
    )
    .await;
    let (status, created) = admin
        .post("/admin/api-keys", &json!({"name": "before"}))
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["id"].as_str().unwrap().to_string();

    proxy.cut();
    admin.app.wait_for_backend("mysql", false, SWITCH).await;
    let writes = [
        (
            Method::POST,
            "/admin/api-keys".to_string(),
            json!({"name": "during"}),
        ),
        (
            Method::PUT,
            format!("/admin/api-keys/{id}"),
            json!({"name": "renamed"}),
        ),
        (
            Method::POST,
            format!("/admin/api-keys/{id}/disable"),
            json!({}),
        ),
        (Method::DELETE, format!("/admin/api-keys/{id}"), json!({})),
        (
            Method::POST,
            "/admin/api-keys/batch".to_string(),
            json!({"baseName": "b", "count": 3}),
        ),
        (
            Method::POST,
            "/admin/claude-accounts".to_string(),
            json!({"name": "c", "type": "claude-console", "baseUrl": "https://x.example", "apiKey": "k"}),
        ),
    ];
    for (method, path, body) in &writes {
        let (status, answer) = admin.call(method.clone(), path, Some(body)).await;
        assert_eq!(status, 503, "{method} {path}: {answer}");
        assert_eq!(answer["success"], false);
        assert_eq!(answer["error"], "storage_unavailable", "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains("storage unavailable"), "{message}");
        assert!(
            !message.contains("3306") && !message.contains("SQL"),
            "{message}"
        );
    }
    // Reports need MySQL too.
    assert_eq!(admin.get("/admin/usage").await.0, 503);

    proxy.open();
    admin.app.wait_for_backend("mysql", true, SWITCH).await;
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM api_keys"), 1);
    assert_eq!(admin.strings("SELECT name AS s FROM api_keys"), ["before"]);
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM claude_accounts"), 0);
    assert_eq!(
        admin.strings("SELECT action AS s FROM audit_log"),
        ["create"]
    );
    let (status, body) = admin.get(&format!("/admin/api-keys/{id}")).await;
    assert_eq!((status, &body["data"]["isActive"]), (200, &json!(true)));
}

#[actix_rt::test]
async fn redis_down_refuses_login_sessions_but_admin_token_and_writes_work() {
    let mut redis = RedisServer::spawn();
    let port = redis.port();
    let admin = start_with(
        |env| {
            env.set("REDIS_PORT", port.to_string());
        },
        "healthy",
    )
    .await;
    let (status, body) = admin.login(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let session = body["token"].as_str().unwrap().to_string();

    redis.stop();
    admin.app.wait_for_backend("redis", false, SWITCH).await;
    let (status, body) = admin.login(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "storage_unavailable");
    let (status, body) = admin
        .call_as(Some(&session), Method::GET, "/admin/api-keys", None)
        .await;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("storage_unavailable")),
        "{body}"
    );

    let (status, body) = admin
        .post("/admin/api-keys", &json!({"name": "while redis is down"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.get("/admin/api-keys").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["name"], "while redis is down");
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM api_keys"), 1);

    redis.start();
    admin.app.wait_for_backend("redis", true, SWITCH).await;
    // The test-owned Redis keeps nothing over a restart: the old session is gone (401),
    // logging in works again.
    let (status, _) = admin
        .call_as(Some(&session), Method::GET, "/admin/api-keys", None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(admin.login(ADMIN_USER, ADMIN_PASSWORD).await.0, 200);
}
