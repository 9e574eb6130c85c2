//! Every client error of SPEC §4 with its exact status and body; none of them reaches the
//! upstream. Upstream error answers pass through unchanged.

use chrono::Utc;
use claude_relay::domain::account::AccountStatus;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::Semaphore;

use super::harness::{
    OPUS, SONNET, SONNET_COST, answer, away_from_minute_end, error_body, request, start,
};
use crate::support::fixtures::{console_account, store_account};
use crate::support::{Behaviour, free_port};

fn quota_body(code: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": "insufficient_quota", "message": message, "code": code}})
}

#[actix_rt::test]
async fn key_checks_refuse_with_the_exact_status_and_body() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let body = request(SONNET, false, "Hello");

    let (_, disabled) = relay.key(|k| k.is_active = false).await;
    let (_, expired) = relay
        .key(|k| k.expires_at = Some(Utc::now() - chrono::Duration::hours(1)))
        .await;
    let (deleted_key, deleted) = relay.key(|_| {}).await;
    assert!(relay.router().delete_key(&deleted_key.id).await.unwrap());
    let (_, blocking) = relay
        .key(|k| {
            k.enable_model_restriction = true;
            k.restricted_models = vec![SONNET.to_string()];
        })
        .await;
    let unknown = claude_relay::domain::keys::generate_key(&relay.app.config.api_key_prefix);

    let cases: Vec<(&str, Option<&str>, u16, Value)> = vec![
        (
            "missing",
            None,
            401,
            error_body("authentication_error", "missing API key"),
        ),
        (
            "invalid format",
            Some("cr_not-a-key"),
            401,
            error_body("authentication_error", "invalid API key format"),
        ),
        (
            "unknown",
            Some(&unknown),
            401,
            error_body("authentication_error", "invalid API key"),
        ),
        (
            "disabled",
            Some(&disabled),
            401,
            error_body("authentication_error", "API key is disabled"),
        ),
        (
            "expired",
            Some(&expired),
            401,
            error_body("authentication_error", "API key has expired"),
        ),
        (
            "soft-deleted",
            Some(&deleted),
            401,
            error_body("authentication_error", "invalid API key"),
        ),
        (
            "blocked model",
            Some(&blocking),
            403,
            error_body(
                "permission_error",
                "this API key may not use model claude-sonnet-4-20250514",
            ),
        ),
    ];
    for (what, key, status, want) in cases {
        let (got_status, retry, got) =
            answer(relay.post("/api/v1/messages", key, &body).await).await;
        assert_eq!((got_status, &got), (status, &want), "{what}");
        assert_eq!(retry, None, "{what}");
    }
    // The blocked key may still use another model.
    let (status, _, _) = relay
        .message(
            &blocking,
            &request("claude-3-5-haiku-20241022", false, "Hi"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(relay.mock.message_count(), 1);
}

#[actix_rt::test]
async fn bad_bodies_are_refused_before_the_upstream() {
    let relay = start(|env| {
        env.set("MAX_REQUEST_BODY_BYTES", "2048");
    })
    .await;
    relay.console("c1", "sk-c1", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    let post_raw = |body: Vec<u8>| {
        relay
            .app
            .client
            .post(relay.app.url("/api/v1/messages"))
            .header("x-api-key", &plaintext)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let (status, _, body) = answer(post_raw(b"{\"model\": ".to_vec()).await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        error_body(
            "invalid_request_error",
            "request body is not valid JSON: EOF while parsing a value at line 1 column 10"
        )
    );

    let (status, _, body) = relay
        .message(&plaintext, &json!({"model": SONNET, "max_tokens": 10}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        error_body(
            "invalid_request_error",
            "messages: field required (an array)"
        )
    );

    let mut big = request(SONNET, false, &"x".repeat(4096));
    big["padding"] = json!("y");
    let (status, _, body) = answer(post_raw(big.to_string().into_bytes()).await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        error_body("request_too_large", "request body is too large")
    );

    assert_eq!(relay.mock.message_count(), 0);
    // A body within the limit goes through.
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "Hello"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(relay.mock.message_count(), 1);
}

#[actix_rt::test]
async fn over_concurrency_is_refused_with_429_and_retry_after() {
    let relay = start(|_| {}).await;
    relay.console("gated", "sk-gated", 10).await;
    let gate = Arc::new(Semaphore::new(0));
    relay
        .mock
        .set("sk-gated", Behaviour::Gated { gate: gate.clone() });
    let (key, plaintext) = relay.key(|k| k.concurrency_limit = 1).await;

    let mut held = relay
        .post(
            "/api/v1/messages",
            Some(&plaintext),
            &request(SONNET, true, "one"),
        )
        .await;
    assert_eq!(held.status(), 200);
    // The first event is through: the request holds its lease.
    let first = held.chunk().await.unwrap().expect("first event");
    assert!(first.starts_with(b"event: message_start"));
    assert_eq!(relay.mock.message_count(), 1);

    let (status, retry, body) = relay
        .message(&plaintext, &request(SONNET, false, "two"))
        .await;
    assert_eq!(status, 429);
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(
        body,
        error_body(
            "rate_limit_error",
            "concurrency limit exceeded for this API key"
        )
    );
    assert_eq!(relay.mock.message_count(), 1);

    gate.add_permits(100);
    let rest = held.text().await.unwrap();
    assert!(rest.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    relay.wait_no_leases(&key).await;
    relay.mock.set("sk-gated", Behaviour::Normal);
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "three"))
        .await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn over_the_rate_window_is_refused_with_429_and_retry_after() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let (_, plaintext) = relay
        .key(|k| {
            k.rate_limit_window_minutes = 1;
            k.rate_limit_requests = 1;
        })
        .await;
    // Both requests must fall in the same one-minute window.
    away_from_minute_end().await;

    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "one"))
        .await;
    assert_eq!(status, 200);
    let (status, retry, body) = relay
        .message(&plaintext, &request(SONNET, false, "two"))
        .await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        error_body(
            "rate_limit_error",
            "rate limit exceeded: too many requests in the current window"
        )
    );
    let retry: u64 = retry.expect("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(relay.mock.message_count(), 1);
}

#[actix_rt::test]
async fn over_the_daily_or_total_cost_is_refused_with_402() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let (daily_key, daily) = relay.key(|k| k.daily_cost_limit_micros = 500).await;
    let (total_key, total) = relay.key(|k| k.total_cost_limit_micros = SONNET_COST).await;

    for (key, plaintext, code, message) in [
        (
            &daily_key,
            &daily,
            "daily_cost_limit_exceeded",
            "daily cost limit of this API key reached",
        ),
        (
            &total_key,
            &total,
            "total_cost_limit_exceeded",
            "total cost limit of this API key reached",
        ),
    ] {
        let before = relay.mock.message_count();
        let (status, _, _) = relay
            .message(plaintext, &request(SONNET, false, "one"))
            .await;
        assert_eq!(status, 200, "{code}");
        relay.wait_total_cost(key, SONNET_COST).await;
        let (status, retry, body) = relay
            .message(plaintext, &request(SONNET, false, "two"))
            .await;
        assert_eq!((status, body), (402, quota_body(code, message)));
        assert_eq!(retry, None);
        assert_eq!(relay.mock.message_count(), before + 1, "{code}");
    }
}

#[actix_rt::test]
async fn over_the_weekly_opus_cost_is_refused_for_opus_only() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let (key, plaintext) = relay.key(|k| k.weekly_opus_cost_limit_micros = 1000).await;

    let (status, _, _) = relay
        .message(&plaintext, &request(OPUS, false, "one"))
        .await;
    assert_eq!(status, 200);
    // Opus 4: 25 × 15 + 12 × 75 + 100 × 18.75 + 200 × 1.50 micro-dollars.
    relay.wait_total_cost(&key, 3450).await;
    let (status, _, body) = relay
        .message(&plaintext, &request(OPUS, false, "two"))
        .await;
    assert_eq!(
        (status, body),
        (
            402,
            quota_body(
                "weekly_opus_cost_limit_exceeded",
                "weekly Opus cost limit of this API key reached"
            )
        )
    );
    assert_eq!(relay.mock.message_count(), 1);
    // Other models are not limited by the Opus budget.
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "three"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(relay.mock.message_count(), 2);
}

#[actix_rt::test]
async fn upstream_error_answers_pass_through_unchanged() {
    let relay = start(|_| {}).await;
    let account = relay.console("c1", "sk-c1", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;

    for (status, body) in [
        (
            400u16,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
        ),
        (
            404,
            r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-nope"}}"#,
        ),
    ] {
        relay.mock.set(
            "sk-c1",
            Behaviour::Fail {
                status,
                body: body.to_string(),
                headers: vec![],
            },
        );
        let resp = relay
            .post(
                "/api/v1/messages",
                Some(&plaintext),
                &request(SONNET, false, "Hello"),
            )
            .await;
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.text().await.unwrap(), body);
    }
    assert_eq!(relay.mock.message_count(), 2);
    // Client errors say nothing about the account.
    let stored = relay
        .router()
        .get_account(&account.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, AccountStatus::Active);
}

#[actix_rt::test]
async fn unreachable_upstream_is_502_and_the_lease_is_released() {
    let relay = start(|_| {}).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    store_account(
        relay.router(),
        console_account(&relay.app.config, "gone", &closed, "sk-gone", 10),
    )
    .await;
    let (key, plaintext) = relay.key(|k| k.concurrency_limit = 1).await;

    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "Hello"))
        .await;
    assert_eq!(
        (status, body),
        (
            502,
            error_body("api_error", "the upstream API could not be reached")
        )
    );
    relay.wait_no_leases(&key).await;
    assert_eq!(relay.usage_rows(), 0);
}

#[actix_rt::test]
async fn an_upstream_slower_than_the_time_out_is_504_and_a_stream_ends_at_it() {
    let relay = start(|env| {
        env.set("REQUEST_TIMEOUT", "1000");
    })
    .await;
    relay.console("slow", "sk-slow", 10).await;
    relay.mock.set("sk-slow", Behaviour::Silent);
    let (key, plaintext) = relay.key(|k| k.concurrency_limit = 1).await;

    let started = std::time::Instant::now();
    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "Hello"))
        .await;
    assert_eq!(
        (status, body),
        (
            504,
            error_body("api_error", "upstream did not answer in time")
        )
    );
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "answered after {waited:?}"
    );
    relay.wait_no_leases(&key).await;

    // A stream that started counts against the same time-out: it ends with an error event
    // and the upstream connection is closed.
    relay.mock.set("sk-slow", Behaviour::Endless);
    let resp = relay
        .post(
            "/api/v1/messages",
            Some(&plaintext),
            &request(SONNET, true, "Hello"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(text.contains("event: ping"), "{text}");
    assert!(
        text.ends_with("\n\n") && text.contains("event: error\ndata: "),
        "{text}"
    );
    let last = text.rsplit("event: ").next().unwrap();
    assert!(
        last.starts_with("error\ndata: "),
        "the error event comes last: {last}"
    );
    relay.mock.wait_closed_streams(1).await;
    relay.wait_no_leases(&key).await;
    // The non-stream request recorded nothing (no answer); the stream is billed for what
    // the upstream reported before the deadline: message_start's 25 input and 1 output
    // tokens.
    relay.wait_usage_rows(1).await;
    let db = relay.env.direct_mysql();
    let tokens = crate::support::mysql::blocking(move || {
        crate::support::mysql::scalar(
            &db,
            "SELECT input_tokens * 1000 + output_tokens AS n FROM usage_records WHERE is_stream",
        )
    });
    assert_eq!(tokens, 25_001);
}
