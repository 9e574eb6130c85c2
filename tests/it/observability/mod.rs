//! Issue 7: /metrics as Prometheus text moving with traffic, backend gauges, access logs
//! with request ids, and no secrets in logs.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::support::app::TestRelay;
use crate::support::fixtures::{console_account, create_key, store_account};
use crate::support::{RedisServer, eventually, spawn_binary};

/// Parses /metrics with a Prometheus parser; returns every sample as `name{labels}` → value.
async fn scrape(http: &crate::support::Http) -> HashMap<String, f64> {
    let text = http
        .client
        .get(http.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            Some((format!("{}{{{}}}", s.metric, labels.join(",")), value))
        })
        .collect()
}

fn get(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

fn message() -> serde_json::Value {
    json!({"model": "claude-sonnet-4-20250514", "max_tokens": 16,
           "messages": [{"role": "user", "content": "the secret prompt 7f3a"}]})
}

#[actix_rt::test]
async fn metrics_move_with_traffic() {
    let relay = TestRelay::builder().start().await;
    let (app, mock) = (&relay.app, &relay.mock);
    let router = &app.actors.router;
    let (_key, plaintext) = create_key(router, &app.config, |_| {}).await;
    store_account(
        router,
        console_account(&app.config, "c1", &mock.url, "sk-up", 10),
    )
    .await;

    let before = scrape(&app.http).await;
    let requests = "claude_relay_http_requests_total{route=/api/v1/messages,status=200}";
    let written = "claude_relay_usage_events{outcome=written}";
    assert_eq!(get(&before, requests), 0.0);
    for _ in 0..5 {
        let r = app
            .http
            .client
            .post(app.http.url("/api/v1/messages"))
            .header("x-api-key", &plaintext)
            .json(&message())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["request-id"]
                .to_str()
                .unwrap()
                .starts_with("req_")
        );
    }
    let after = eventually(Duration::from_secs(10), "5 usage rows written", || async {
        let s = scrape(&app.http).await;
        if get(&s, written) == get(&before, written) + 5.0 {
            Ok(s)
        } else {
            Err(format!("written {}", get(&s, written)))
        }
    })
    .await;
    assert_eq!(get(&after, requests), 5.0);
    assert_eq!(
        get(&after, "claude_relay_usage_events{outcome=dropped}"),
        0.0
    );
    assert_eq!(get(&after, "claude_relay_backend_up{backend=redis}"), 1.0);
    assert_eq!(get(&after, "claude_relay_backend_up{backend=mysql}"), 1.0);
    assert_eq!(
        get(&after, "claude_relay_relay_overhead_seconds_count{}"),
        5.0
    );
    assert_eq!(
        get(&after, "claude_relay_mysql_pool_connections{state=max}"),
        5.0
    );
}

/// actix's own error answers (no route, a body too large for its route) pass the same
/// middleware as the relay's: JSON, a request id, counted under their route.
#[actix_rt::test]
async fn actix_errors_are_json_with_a_request_id_and_counted() {
    let relay = TestRelay::builder().start().await;
    let http = &relay.app.http;
    let unmatched = "claude_relay_http_requests_total{route=unmatched,status=404}";
    let before = get(&scrape(http).await, unmatched);
    for _ in 0..3 {
        let r = http
            .client
            .get(http.url("/no/such/route"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-type"], "application/json");
        let id = r.headers()["request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), "req_".len() + 32, "{id}");
        assert!(id.starts_with("req_"), "{id}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "not_found_error");
    }
    assert_eq!(get(&scrape(http).await, unmatched), before + 3.0);

    // One path, two statuses: each counted under its own status (a worker keeps the
    // metrics of a path per status).
    let refused = "claude_relay_http_requests_total{route=/api/v1/messages,status=401}";
    let invalid = "claude_relay_http_requests_total{route=/api/v1/messages,status=400}";
    let (_key, plaintext) = create_key(&relay.app.actors.router, &relay.app.config, |_| {}).await;
    for (key, status) in [("", 401), (plaintext.as_str(), 400), ("", 401)] {
        let r = http
            .client
            .post(http.url("/api/v1/messages"))
            .header("content-type", "application/json")
            .header("x-api-key", key)
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }
    let after = scrape(http).await;
    assert_eq!(get(&after, refused), 2.0);
    assert_eq!(get(&after, invalid), 1.0);
    assert_eq!(get(&after, unmatched), before + 3.0);
}

#[actix_rt::test]
async fn backend_gauge_drops_to_zero_when_redis_stops() {
    let mut redis = RedisServer::spawn();
    let redis_port = redis.port();
    let relay = TestRelay::builder()
        .edit(|env| {
            env.set("REDIS_PORT", redis_port.to_string());
        })
        .start()
        .await;
    let app = &relay.app;
    assert_eq!(
        get(
            &scrape(&app.http).await,
            "claude_relay_backend_up{backend=redis}"
        ),
        1.0
    );
    redis.stop();
    // Probe interval 100 ms + probe time-out; how fast is the health tests' business (and a
    // loaded machine's), this one checks the gauge follows.
    eventually(Duration::from_secs(10), "redis gauge 0", || async {
        let v = get(
            &scrape(&app.http).await,
            "claude_relay_backend_up{backend=redis}",
        );
        if v == 0.0 {
            Ok(())
        } else {
            Err(format!("gauge {v}"))
        }
    })
    .await;
}

#[actix_rt::test]
async fn logs_have_access_lines_and_no_secrets() {
    // Keys and accounts are made through an in-process relay on the same backends as the
    // child process whose logs are read.
    let setup = TestRelay::builder()
        .edit(|env| {
            let log_dir = env.dir().join("logs");
            env.set("LOG_DIR", log_dir.to_str().unwrap());
            env.set("RUST_LOG", "debug");
        })
        .start()
        .await;
    let (env, mock, config) = (&setup.env, &setup.mock, &setup.app.config);
    let log_dir = env.dir().join("logs");
    let (_key, plaintext) = create_key(&setup.app.actors.router, config, |_| {}).await;
    store_account(
        &setup.app.actors.router,
        console_account(config, "c1", &mock.url, "sk-upstream-secret-99", 10),
    )
    .await;

    let relay = spawn_binary(env).await;
    relay
        .wait_for_health("healthy", Duration::from_secs(15))
        .await;
    let r = relay
        .http
        .client
        .post(relay.http.url("/api/v1/messages?key=ignored"))
        .header("x-api-key", &plaintext)
        .json(&message())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["request-id"].to_str().unwrap().to_string();
    let logs = eventually(Duration::from_secs(5), "access line logged", || async {
        let logs = relay.logs();
        if logs.contains(&request_id) {
            Ok(logs)
        } else {
            Err("no access line yet".to_string())
        }
    })
    .await;
    assert!(
        logs.contains(&format!("{request_id} POST /api/v1/messages 200")),
        "{logs}"
    );
    for secret in [
        plaintext.as_str(),
        "the secret prompt 7f3a",
        "sk-upstream-secret-99",
        "Hello from the mock",
    ] {
        assert!(!logs.contains(secret), "log output contains {secret:?}");
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let file = std::fs::read_to_string(log_dir.join(format!("hybrid-{today}.log")))
        .expect("daily log file");
    assert!(file.contains(&request_id));
    assert!(!file.contains(&plaintext));
}
