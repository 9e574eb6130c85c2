//! Non-streaming and streaming relaying, with usage and cost recorded.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::fixtures::{console_account, create_key, store_account};
use crate::support::{TestEnv, eventually, mysql, spawn_app, start_mock};

fn request(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}],
    })
}

#[actix_rt::test]
async fn non_stream_request_is_relayed_and_its_usage_recorded() {
    let env = TestEnv::new();
    let mock = start_mock().await;
    let app = spawn_app(env.config()).await;
    app.wait_for_health("healthy", Duration::from_secs(10))
        .await;
    let router = &app.actors.router;
    let (key, plaintext) = create_key(router, &app.config, |_| {}).await;
    store_account(
        router,
        console_account(&app.config, "c1", &mock.url, "sk-upstream-1", 10),
    )
    .await;

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/api/v1/messages", app.address))
        .header("x-api-key", &plaintext)
        .header("anthropic-version", "2023-06-01")
        .json(&request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "Hello from the mock.");
    assert_eq!(body["usage"]["input_tokens"], 25);

    let received = mock.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].headers.get("x-api-key").map(String::as_str),
        Some("sk-upstream-1")
    );
    assert!(!received[0].headers.values().any(|v| v.contains(&plaintext)));

    let db = env.direct_mysql();
    let row_count = eventually(Duration::from_secs(10), "usage row archived", || {
        let db = db.clone();
        async move {
            let n = mysql::blocking(move || {
                mysql::scalar(&db, "SELECT COUNT(*) AS n FROM usage_records")
            });
            if n == 1 {
                Ok(n)
            } else {
                Err(format!("{n} rows"))
            }
        }
    })
    .await;
    assert_eq!(row_count, 1);
    let sql = format!(
        "SELECT input_tokens * 1000000000 + output_tokens * 1000000 + cache_create_5m_tokens * 1000 + cache_read_tokens AS n \
         FROM usage_records WHERE api_key_id = '{}'",
        key.id
    );
    let packed = mysql::blocking(move || mysql::scalar(&db, &sql));
    assert_eq!(packed, 25_012_100_200);
}

#[actix_rt::test]
async fn stream_request_is_passed_through_and_its_usage_recorded() {
    let env = TestEnv::new();
    let mock = start_mock().await;
    let app = spawn_app(env.config()).await;
    app.wait_for_health("healthy", Duration::from_secs(10))
        .await;
    let router = &app.actors.router;
    let (_key, plaintext) = create_key(router, &app.config, |_| {}).await;
    store_account(
        router,
        console_account(&app.config, "c1", &mock.url, "sk-upstream-1", 10),
    )
    .await;

    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", app.address))
        .bearer_auth(&plaintext)
        .json(&request(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let expected: String = crate::support::mock_upstream::sse_events(
        "claude-sonnet-4-20250514",
        crate::support::mock_upstream::DEFAULT_USAGE,
    )
    .concat();
    assert_eq!(text, expected);
    let db = env.direct_mysql();
    let cost = eventually(Duration::from_secs(10), "usage row archived", || {
        let db = db.clone();
        async move {
            let n = mysql::blocking(move || {
                mysql::scalar(&db, "SELECT COALESCE(SUM(output_tokens * 1000000 + cost_micros), -1) AS n FROM usage_records")
            });
            if n >= 0 { Ok(n) } else { Err("no row yet".to_string()) }
        }
    })
    .await;
    // sonnet-4: 25 in × $3 + 12 out × $15 + 100 cache write × $3.75 + 200 cache read × $0.30 per MTok
    // = 75 + 180 + 375 + 60 = 690 micro-dollars.
    assert_eq!(cost, 12_000_690);
}
