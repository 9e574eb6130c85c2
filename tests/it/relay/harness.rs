//! Set-up shared by the relay tests: one relay with its own environment, the mock upstream
//! it talks to, request bodies, and waits for what the relay records asynchronously.

use std::time::Duration;

use claude_relay::actors::router::RouterHandle;
use claude_relay::domain::account::Account;
use claude_relay::domain::api_key::ApiKey;
use serde_json::{Value, json};

use crate::support::app::TestRelay;
use crate::support::fixtures::{console_account, create_key, store_account};
use crate::support::{TestEnv, eventually, mysql};

pub const SONNET: &str = "claude-sonnet-4-20250514";
pub const OPUS: &str = "claude-opus-4-20250514";
/// Cost of the mock's usage (25 in, 12 out, 100 cache write, 200 cache read) on Sonnet 4:
/// 25 × 3 + 12 × 15 + 100 × 3.75 + 200 × 0.30 micro-dollars.
pub const SONNET_COST: i64 = 690;

/// One relay, its mock upstream and its environment (dropped in this order).
pub type Relay = TestRelay;

/// Starts the mock, then the relay (its OAuth accounts pointed at the mock); `edit` may
/// change the environment first. Waits until the relay is healthy.
pub async fn start(edit: impl FnOnce(&mut TestEnv)) -> Relay {
    TestRelay::builder().edit(edit).start().await
}

impl Relay {
    pub fn router(&self) -> &RouterHandle {
        &self.app.actors.router
    }

    /// A key with `edit` applied; returns (record, plaintext).
    pub async fn key(&self, edit: impl FnOnce(&mut ApiKey)) -> (ApiKey, String) {
        create_key(self.router(), &self.app.config, edit).await
    }

    /// A console account on the mock whose upstream key is `credential`.
    pub async fn console(&self, name: &str, credential: &str, priority: i32) -> Account {
        store_account(
            self.router(),
            console_account(&self.app.config, name, &self.mock.url, credential, priority),
        )
        .await
    }

    /// POSTs `body` to `path` with the relay key in `x-api-key` (none when `key` is None).
    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
        let mut req = self.app.client.post(self.app.url(path)).json(body);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req.send().await.expect("the relay answers")
    }

    /// POSTs a message request and returns status, `retry-after` and the JSON body.
    pub async fn message(&self, key: &str, body: &Value) -> (u16, Option<String>, Value) {
        answer(self.post("/api/v1/messages", Some(key), body).await).await
    }

    /// The upstream credential (console key or bearer token) of the last message request.
    pub fn last_credential(&self) -> String {
        let received = self.mock.received();
        let last = received
            .iter()
            .rev()
            .find(|r| r.path == "/v1/messages")
            .expect("the mock received a message request");
        credential_of(&last.headers)
    }

    /// Rows in this test's `usage_records`.
    pub fn usage_rows(&self) -> i64 {
        let db = self.env.direct_mysql();
        mysql::blocking(move || mysql::scalar(&db, "SELECT COUNT(*) AS n FROM usage_records"))
    }

    /// Waits until `usage_records` holds exactly `n` rows, then checks a drain of whatever
    /// is still queued adds none.
    pub async fn wait_usage_rows(&self, n: i64) {
        eventually(
            Duration::from_secs(20),
            &format!("{n} usage rows"),
            || async {
                let seen = self.usage_rows();
                if seen == n {
                    Ok(())
                } else {
                    Err(format!("{seen} rows"))
                }
            },
        )
        .await;
        self.router()
            .drain_usage(std::time::Duration::from_secs(10))
            .await;
        assert_eq!(self.usage_rows(), n, "usage rows after a drain");
    }

    /// Waits until the key's total cost counter is `micros`.
    pub async fn wait_total_cost(&self, key: &ApiKey, micros: i64) {
        let names = claude_relay::domain::limits::key_counter_names(
            &key.id,
            chrono::Utc::now(),
            self.app.config.timezone_offset_hours,
            key.weekly_reset_day,
            key.weekly_reset_hour,
        );
        eventually(
            Duration::from_secs(10),
            &format!("total cost {micros}"),
            || async {
                let c = self
                    .router()
                    .read_counters(vec![names.total.clone()])
                    .await
                    .map_err(|e| e.to_string())?;
                if c[0].cost_micros == micros {
                    Ok(())
                } else {
                    Err(format!("{:?}", c[0]))
                }
            },
        )
        .await;
    }

    /// Waits until the key holds no concurrency lease.
    pub async fn wait_no_leases(&self, key: &ApiKey) {
        let scope = format!("key:{}", key.id);
        eventually(Duration::from_secs(10), "no lease held", || async {
            match self.router().count_leases(&scope).await {
                Ok(0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
}

/// The credential the mock saw in these headers.
pub fn credential_of(headers: &crate::support::mock_upstream::Headers) -> String {
    headers
        .get("x-api-key")
        .cloned()
        .or_else(|| {
            headers
                .get("authorization")
                .map(|a| a.trim_start_matches("Bearer ").to_string())
        })
        .unwrap_or_default()
}

/// Status, `retry-after` and JSON body of an answer.
pub async fn answer(resp: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status} answer is not JSON ({e}): {text:?}"));
    (status, retry, body)
}

/// A message request; `text` also sets the session (first message).
pub fn request(model: &str, stream: bool, text: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
}

/// A message request of session `user_id` (`metadata.user_id`).
pub fn session_request(user_id: &str, text: &str) -> Value {
    let mut body = request(SONNET, false, text);
    body["metadata"] = json!({ "user_id": user_id });
    body
}

/// The Anthropic error body.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Waits (polling the clock) while fewer than 5 s of the current minute remain, so counters
/// by minute, hour and day (and a one-minute rate window) see the next requests in the
/// same period.
pub async fn away_from_minute_end() {
    use chrono::Timelike;
    eventually(Duration::from_secs(10), "a fresh minute", || async {
        match chrono::Utc::now().second() {
            s if s < 55 => Ok(()),
            s => Err(format!("second {s}")),
        }
    })
    .await;
}
