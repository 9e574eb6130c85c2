//! The other client endpoints (count_tokens, models, key-info, usage) and what the relay
//! forwards to the upstream of the client's request headers.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::sync::Semaphore;

use super::harness::{SONNET, answer, away_from_minute_end, error_body, request, start};
use crate::support::{Behaviour, eventually};

#[actix_rt::test]
async fn count_tokens_is_forwarded_without_taking_a_concurrency_slot() {
    let relay = start(|_| {}).await;
    relay.console("gated", "sk-gated", 10).await;
    let gate = Arc::new(Semaphore::new(0));
    relay
        .mock
        .set("sk-gated", Behaviour::Gated { gate: gate.clone() });
    let (key, plaintext) = relay.key(|k| k.concurrency_limit = 1).await;

    // The key's only slot is taken by an open stream.
    let mut held = relay
        .post(
            "/api/v1/messages",
            Some(&plaintext),
            &request(SONNET, true, "held"),
        )
        .await;
    assert_eq!(held.status(), 200);
    held.chunk().await.unwrap().expect("first event");
    let scope = format!("key:{}", key.id);
    assert_eq!(relay.router().count_leases(&scope).await.unwrap(), 1);

    let body = json!({"model": SONNET, "messages": [{"role": "user", "content": "count me"}]});
    let (status, _, answer_body) = answer(
        relay
            .post("/api/v1/messages/count_tokens", Some(&plaintext), &body)
            .await,
    )
    .await;
    assert_eq!((status, answer_body), (200, json!({"input_tokens": 25})));
    let received = relay.mock.received();
    let counted: Vec<_> = received
        .iter()
        .filter(|r| r.path == "/v1/messages/count_tokens")
        .collect();
    assert_eq!(counted.len(), 1);
    assert_eq!(counted[0].body, body);
    assert_eq!(counted[0].headers["x-api-key"], "sk-gated");
    assert_eq!(relay.router().count_leases(&scope).await.unwrap(), 1);

    gate.add_permits(100);
    held.text().await.unwrap();
    relay.wait_no_leases(&key).await;
    // Only the message was archived; counting tokens costs nothing.
    relay.wait_usage_rows(1).await;
}

#[actix_rt::test]
async fn models_list_has_the_anthropic_shape() {
    let relay = start(|_| {}).await;
    let (_, plaintext) = relay.key(|_| {}).await;

    let resp = relay
        .app
        .client
        .get(relay.app.url("/api/v1/models"))
        .header("x-api-key", &plaintext)
        .send()
        .await
        .unwrap();
    let (status, _, body) = answer(resp).await;
    assert_eq!(status, 200);
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 2, "{body}");
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert!(data.len() >= 3, "{body}");
    for model in data {
        let keys: Vec<&str> = model
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, vec!["created", "id", "object", "owned_by"], "{model}");
        assert!(model["id"].as_str().unwrap().starts_with("claude-"));
        assert_eq!(model["object"], "model");
        assert!(model["created"].is_u64());
        assert_eq!(model["owned_by"], "anthropic");
    }
    assert!(data.iter().any(|m| m["id"] == SONNET));

    let (status, body) = relay.app.get_json("/api/v1/models").await;
    assert_eq!(
        (status.as_u16(), body),
        (401, error_body("authentication_error", "missing API key"))
    );
}

#[actix_rt::test]
async fn key_info_and_usage_report_the_keys_limits_and_usage() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let (key, plaintext) = relay
        .key(|k| {
            k.name = "reporting".into();
            k.concurrency_limit = 3;
            k.rate_limit_window_minutes = 10;
            k.rate_limit_requests = 100;
            k.daily_cost_limit_micros = 5_000_000;
            k.total_cost_limit_micros = 50_000_000;
            k.weekly_opus_cost_limit_micros = 2_500_000;
        })
        .await;
    away_from_minute_end().await;
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "Hello"))
        .await;
    assert_eq!(status, 200);
    relay.wait_total_cost(&key, 690).await;
    relay.wait_no_leases(&key).await;

    let get = |path: &'static str| {
        let req = relay
            .app
            .client
            .request(Method::GET, relay.app.url(path))
            .header("x-api-key", &plaintext);
        async move { answer(req.send().await.unwrap()).await }
    };
    let (status, _, info) = get("/api/v1/key-info").await;
    assert_eq!(status, 200);
    assert_eq!(
        info,
        json!({
            "id": key.id,
            "name": "reporting",
            "isActive": true,
            "permissions": "all",
            "expiresAt": null,
            "limits": {
                "concurrencyLimit": 3,
                "rateLimitWindow": 10,
                "rateLimitRequests": 100,
                "rateLimitCost": 0.0,
                "tokenLimit": 0,
                "dailyCostLimit": 5.0,
                "totalCostLimit": 50.0,
                "weeklyOpusCostLimit": 2.5,
            },
            "usage": {
                "currentConcurrency": 0,
                "dailyCost": 0.00069,
                "totalCost": 0.00069,
                "weeklyOpusCost": 0.0,
            },
        })
    );

    let period = json!({
        "requests": 1,
        "inputTokens": 25,
        "outputTokens": 12,
        "cacheCreateTokens": 100,
        "cacheReadTokens": 200,
        "allTokens": 337,
        "cost": 0.00069,
    });
    let usage = eventually(Duration::from_secs(10), "usage counted", || async {
        let (status, _, usage) = get("/api/v1/usage").await;
        if status == 200 && usage["hour"]["requests"] == 1 {
            Ok(usage)
        } else {
            Err(format!("{status} {usage}"))
        }
    })
    .await;
    assert_eq!(
        usage,
        json!({
            "id": key.id,
            "name": "reporting",
            "total": period,
            "month": period,
            "day": period,
            "hour": period,
        })
    );
}

#[actix_rt::test]
async fn only_whitelisted_headers_reach_the_upstream_and_never_the_relay_key() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;

    let send = |auth_header: &'static str| {
        let mut req = relay
            .app
            .client
            .post(relay.app.url("/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "prompt-caching-2024-07-31")
            .header("user-agent", "relay-test/1.0")
            .header("x-stainless-lang", "js")
            .header("x-stainless-retry-count", "0")
            .header("cookie", "session=do-not-forward")
            .header("x-forwarded-for", "10.9.8.7")
            .header("x-custom-secret", "nope")
            .header("api-key", &plaintext)
            .json(&request(SONNET, false, "Hello"));
        req = match auth_header {
            "x-api-key" => req.header("x-api-key", &plaintext),
            _ => req.bearer_auth(&plaintext),
        };
        req.send()
    };
    for via in ["x-api-key", "authorization"] {
        let (status, _, body) = answer(send(via).await.unwrap()).await;
        assert_eq!(status, 200, "{via}: {body}");
    }

    let received = relay.mock.received();
    assert_eq!(received.len(), 2);
    for r in &received {
        // Every header once: the list keeps duplicates (`content-type` went up twice before).
        let mut names = r.headers.names();
        names.sort_unstable();
        assert_eq!(
            names,
            vec![
                "accept",
                "anthropic-beta",
                "anthropic-version",
                "content-length",
                "content-type",
                "host",
                "user-agent",
                "x-api-key",
                "x-stainless-lang",
                "x-stainless-retry-count",
            ],
            "{:?}",
            r.headers
        );
        assert_eq!(r.headers.all("content-type"), vec!["application/json"]);
        assert_eq!(r.headers["x-api-key"], "sk-c1");
        assert_eq!(r.headers["anthropic-beta"], "prompt-caching-2024-07-31");
        assert_eq!(r.headers["user-agent"], "relay-test/1.0");
        assert_eq!(r.headers["x-stainless-lang"], "js");
        assert!(
            !r.headers.values().any(|v| v.contains(&plaintext)),
            "the relay key reached the upstream: {:?}",
            r.headers
        );
        assert_eq!(r.body, request(SONNET, false, "Hello"));
    }
}
