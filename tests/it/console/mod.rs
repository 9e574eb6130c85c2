//! The web console (issue 14) in a real headless Chromium against a running relay with real
//! Redis and MariaDB and the mock upstream: the whole operator task, a stored-XSS attempt,
//! a form without its CSRF token, and the key holder's page showing only its own key. Plus
//! plain-HTTP checks of the headers, redirects, the login limiter and the down banner.

mod browser;
mod http;

use std::time::Duration;

use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::admin::{ADMIN_PASSWORD, ADMIN_USER, Admin, start_with};

/// How long a console test waits for a relayed request to reach the MySQL archive. Under a
/// loaded parallel suite the outbox drain has stalled for over 30 s (outbox depth 1, nothing
/// archived). A likely cause, not proven: a drain lock whose `SET NX` or release reply timed
/// out (Redis calls are bounded at 200 ms) stays taken until its 60 s TTL ends. Polled, so a
/// healthy run is not slowed.
pub const ARCHIVE_WAIT: Duration = Duration::from_secs(90);

/// A relay for console tests: keys are re-read from the store within a second, usage is
/// archived quickly.
pub async fn start() -> Admin {
    start_with(
        |env| {
            env.set("KEY_CACHE_TTL_SECONDS", "1");
        },
        "healthy",
    )
    .await
}

/// An HTTP client that shows redirects instead of following them and keeps no cookies.
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client")
}

/// Logs in over the admin API and returns the console session cookie value (the token).
pub async fn session_token(admin: &Admin) -> String {
    let (status, body) = admin.login(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().expect("token").to_string()
}

/// Sends one relay request with `key`; returns the status.
pub async fn relay_status(admin: &Admin, key: &str) -> u16 {
    admin
        .app
        .client
        .post(admin.app.url("/api/v1/messages"))
        .header("x-api-key", key)
        .json(
            &json!({"model": "claude-sonnet-4-20250514", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .expect("relay answers")
        .status()
        .as_u16()
}

/// Creates a console account on the mock upstream and a key bound to nothing, over the
/// admin API; returns (key id, plaintext).
pub async fn api_key(admin: &Admin, body: Value) -> (String, String) {
    let (status, created) = admin.post("/admin/api-keys", &body).await;
    assert_eq!(status, 200, "{created}");
    (
        created["data"]["id"].as_str().unwrap().to_string(),
        created["data"]["apiKey"].as_str().unwrap().to_string(),
    )
}

pub async fn mock_account(admin: &Admin) -> String {
    let (status, account) = admin
        .post(
            "/admin/claude-accounts",
            &json!({"name": "mock", "type": "claude-console",
                "baseUrl": admin.mock.url, "apiKey": "sk-console-upstream"}),
        )
        .await;
    assert_eq!(status, 200, "{account}");
    account["data"]["id"].as_str().unwrap().to_string()
}
