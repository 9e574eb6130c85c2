//! SSE pass-through event by event, client disconnects and upstream failures mid-stream.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;

use super::harness::{Relay, SONNET, SONNET_COST, request, start};
use crate::support::mock_upstream::{DEFAULT_USAGE, sse_events};
use crate::support::{Behaviour, mysql};

/// How long the test waits for the next bytes while the mock is held back.
const QUIET: Duration = Duration::from_millis(150);

async fn streaming_client_response(relay: &Relay, plaintext: &str) -> reqwest::Response {
    // No overall time-out: the stream may stay open as long as the test holds the gate.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(relay.app.url("/api/v1/messages"))
        .header("x-api-key", plaintext)
        .json(&request(SONNET, true, "Hello"))
        .send()
        .await
        .unwrap()
}

/// Reads chunks until `buf` holds exactly one more event; returns that event.
async fn next_event(resp: &mut reqwest::Response, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            return String::from_utf8(event).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event within 10 s")
            .expect("stream readable")
            .expect("the stream has not ended");
        buf.extend_from_slice(&chunk);
    }
}

#[actix_rt::test]
async fn each_sse_event_reaches_the_client_before_the_upstream_sends_the_next() {
    let relay = start(|_| {}).await;
    let (key, plaintext) = relay.key(|_| {}).await;
    relay.console("gated", "sk-gated", 10).await;
    let gate = Arc::new(Semaphore::new(0));
    relay
        .mock
        .set("sk-gated", Behaviour::Gated { gate: gate.clone() });

    let mut resp = streaming_client_response(&relay, &plaintext).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let expected = sse_events(SONNET, DEFAULT_USAGE);
    assert_eq!(expected.len(), 9);
    let mut buf = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        let got = next_event(&mut resp, &mut buf).await;
        assert_eq!(&got, want, "event {i}");
        assert!(buf.is_empty(), "nothing beyond event {i} arrived yet");
        if i + 1 < expected.len() {
            // The mock has no permit: nothing else can come until the test gives one.
            let more = tokio::time::timeout(QUIET, resp.chunk()).await;
            assert!(
                more.is_err(),
                "data arrived after event {i} without a permit"
            );
            gate.add_permits(1);
        }
    }
    // After the last event the upstream ends, and so does the client's stream.
    let end = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(end, None);

    relay.wait_usage_rows(1).await;
    let db = relay.env.direct_mysql();
    let sql = format!(
        "SELECT input_tokens * 1000000000 + output_tokens * 1000000 + cache_create_5m_tokens * 1000 \
         + cache_read_tokens AS n FROM usage_records WHERE api_key_id = '{}' AND is_stream = 1",
        key.id
    );
    assert_eq!(
        mysql::blocking(move || mysql::scalar(&db, &sql)),
        25_012_100_200
    );
    let db = relay.env.direct_mysql();
    let cost = mysql::blocking(move || {
        mysql::scalar(&db, "SELECT SUM(cost_micros) AS n FROM usage_records")
    });
    assert_eq!(cost, SONNET_COST);
    relay.wait_total_cost(&key, SONNET_COST).await;
    relay.wait_no_leases(&key).await;
}

#[actix_rt::test]
async fn client_disconnect_closes_the_upstream_stream_and_releases_the_lease() {
    let relay = start(|_| {}).await;
    let (key, plaintext) = relay.key(|k| k.concurrency_limit = 1).await;
    relay.console("endless", "sk-endless", 10).await;
    relay.mock.set("sk-endless", Behaviour::Endless);

    let mut resp = streaming_client_response(&relay, &plaintext).await;
    assert_eq!(resp.status(), 200);
    let mut buf = Vec::new();
    let first = next_event(&mut resp, &mut buf).await;
    assert_eq!(first, sse_events(SONNET, DEFAULT_USAGE)[0]);
    let scope = format!("key:{}", key.id);
    assert_eq!(relay.router().count_leases(&scope).await.unwrap(), 1);
    assert_eq!(relay.mock.closed_streams(), 0);

    drop(resp);
    relay.mock.wait_closed_streams(1).await;
    relay.wait_no_leases(&key).await;
    // The slot is free again: a new request of this key (limit 1) is admitted.
    relay.mock.set("sk-endless", Behaviour::Normal);
    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "again"))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_rt::test]
async fn upstream_failure_mid_stream_ends_the_client_stream_with_an_error_event() {
    let relay = start(|_| {}).await;
    let (key, plaintext) = relay.key(|_| {}).await;
    relay.console("breaks", "sk-breaks", 10).await;
    relay
        .mock
        .set("sk-breaks", Behaviour::BreakAfter { events: 3 });

    let resp = streaming_client_response(&relay, &plaintext).await;
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("the stream ends")
        .expect("the stream ends cleanly for the client");
    let sent: String = sse_events(SONNET, DEFAULT_USAGE)
        .into_iter()
        .take(3)
        .collect();
    let error = json!({
        "type": "error",
        "error": {"type": "api_error", "message": "the upstream connection failed during the answer"},
    });
    assert_eq!(text, format!("{sent}event: error\ndata: {error}\n\n"));
    relay.wait_no_leases(&key).await;
}
