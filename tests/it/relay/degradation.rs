//! The request path under backend outages (SPEC §1): Redis stopped, MySQL cut off.

use std::time::Duration;

use super::harness::{SONNET, SONNET_COST, request, start};
use crate::support::{RedisServer, TcpProxy, mysql};

const OUTAGE_SEEN: Duration = Duration::from_secs(15);

#[actix_rt::test]
async fn redis_stopped_mid_test_keeps_relaying_for_a_known_key() {
    let mut redis = RedisServer::spawn();
    let relay = start(|env| {
        env.set("REDIS_PORT", redis.port().to_string());
    })
    .await;
    relay.console("c1", "sk-c1", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    let (_, unused) = relay.key(|_| {}).await;

    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "before"))
        .await;
    assert_eq!(status, 200, "{body}");

    redis.stop();
    relay
        .app
        .wait_for_backend("redis", false, OUTAGE_SEEN)
        .await;
    for i in 0..3 {
        let (status, _, body) = relay
            .message(&plaintext, &request(SONNET, false, &format!("during {i}")))
            .await;
        assert_eq!(status, 200, "request {i} with Redis down: {body}");
    }
    // A key not used before is checked against MySQL directly.
    let (status, _, body) = relay
        .message(&unused, &request(SONNET, false, "first use"))
        .await;
    assert_eq!(status, 200, "first use of a key with Redis down: {body}");
    assert_eq!(relay.mock.message_count(), 5);
    // The archive does not need Redis.
    relay.wait_usage_rows(5).await;

    redis.start();
    relay.app.wait_for_backend("redis", true, OUTAGE_SEEN).await;
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "after"))
        .await;
    assert_eq!(status, 200);
    relay.wait_usage_rows(6).await;
}

#[actix_rt::test]
async fn mysql_cut_keeps_relaying_validated_keys_and_queues_their_usage() {
    let proxy = TcpProxy::to_mysql();
    let relay = start(|env| {
        env.set("MYSQL_PORT", proxy.port().to_string());
    })
    .await;
    relay.console("c1", "sk-c1", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;

    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "before"))
        .await;
    assert_eq!(status, 200, "{body}");
    relay.wait_usage_rows(1).await;

    proxy.cut();
    relay
        .app
        .wait_for_backend("mysql", false, OUTAGE_SEEN)
        .await;
    for i in 0..3 {
        let (status, _, body) = relay
            .message(&plaintext, &request(SONNET, false, &format!("during {i}")))
            .await;
        assert_eq!(status, 200, "request {i} with MySQL down: {body}");
    }
    assert_eq!(relay.mock.message_count(), 4);
    // A key the relay has never seen cannot be checked without MySQL.
    let unknown = claude_relay::domain::keys::generate_key(&relay.app.config.api_key_prefix);
    let (status, _, body) = relay
        .message(&unknown, &request(SONNET, false, "who"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(relay.mock.message_count(), 4);
    // Queued, not written: after a drain attempt MySQL (reached directly) still holds the
    // first row only.
    relay
        .router()
        .drain_usage(std::time::Duration::from_secs(10))
        .await;
    assert_eq!(relay.usage_rows(), 1);

    proxy.open();
    relay.app.wait_for_backend("mysql", true, OUTAGE_SEEN).await;
    relay.wait_usage_rows(4).await;
    let db = relay.env.direct_mysql();
    let totals = mysql::blocking(move || {
        mysql::scalar(
            &db,
            "SELECT COUNT(DISTINCT request_id) * 1000000 + SUM(cost_micros) AS n FROM usage_records",
        )
    });
    assert_eq!(totals, 4_000_000 + 4 * SONNET_COST);
}
