//! The real binary started while a backend is down: it serves /health, reports the outage
//! and connects by itself when the backend appears (migrating the schema on first contact).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::migrations::TABLES;
use crate::support::mysql::{database_exists, table_names};
use crate::support::{RedisServer, TcpProxy, TestEnv, eventually, free_port, spawn_binary};

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
    // Still down after more probes (the cut refused them): no exit, no crash loop, nothing
    // created behind the cut.
    let refused = proxy.accepted();
    eventually(RECOVER, "three more MySQL probes refused", || async {
        match proxy.accepted() {
            n if n >= refused + 3 => Ok(()),
            n => Err(format!("{} more", n - refused)),
        }
    })
    .await;
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

/// Defect: in the first moments of `serve`, MySQL was reported "not connected yet" and
/// admin writes answered 503 although MySQL was up, only not probed yet. Now the relay
/// answers once the first probes are in: a client that connects meanwhile waits, and gets
/// the real state.
#[actix_rt::test]
async fn first_answers_wait_for_the_first_probe_of_a_slow_backend() {
    // MySQL behind a frozen proxy: the relay's first connection hangs until it opens.
    let proxy = TcpProxy::to_mysql();
    proxy.freeze();
    let port = free_port();
    let env = TestEnv::new()
        .with("MYSQL_PORT", proxy.port().to_string())
        .with("PORT", port.to_string());
    let http = crate::support::Http::new(port);
    let relay = crate::support::spawn_app(env.config());
    let client = async {
        eventually(RECOVER, "the relay's first MySQL connection", || async {
            match proxy.accepted() {
                0 => Err("no connection yet".to_string()),
                _ => Ok(()),
            }
        })
        .await;
        // Asked while the MySQL probe hangs: must not be answered with a guess.
        let mut early = tokio::spawn({
            let (client, url) = (http.client.clone(), http.url("/health"));
            async move { client.get(url).send().await }
        });
        // The one bounded wait of this test is for something that must NOT happen.
        let (answered_early, response) =
            match tokio::time::timeout(Duration::from_millis(800), &mut early).await {
                Ok(response) => (true, response),
                Err(_) => {
                    proxy.open();
                    (false, early.await)
                }
            };
        proxy.open();
        let response = response.unwrap().expect("answered");
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        (answered_early, status, body)
    };
    let (app, (answered_early, status, body)) = tokio::join!(relay, client);
    assert!(
        !answered_early,
        "answered before the first probe: {status} {body}"
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(body["databases"]["mysql"]["connected"], true, "{body}");
    assert_eq!(
        app.get_json("/health/ready").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "health": "healthy"})
        )
    );
}
