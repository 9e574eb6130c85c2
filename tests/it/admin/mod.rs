//! The admin API (issue 5) over real HTTP against real Redis and MariaDB: auth on every
//! route, exact bodies, validation that names the field and writes nothing, the audit log,
//! secrets never returned, degradation, and keys created here used on the relay.

mod accounts;
mod auth;
mod degradation;
mod groups;
mod keys;
mod onboarding;
mod subscriptions;
mod system;

use std::sync::Mutex;

use claude_relay::actors::router::RouterHandle;
use reqwest::Method;
use serde_json::Value;

use crate::support::app::TestRelay;
use crate::support::env::random_hex;
use crate::support::{MockUpstream, TestApp, TestEnv, mysql};

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct-horse-battery";

/// One relay for admin tests: the app, its environment, the mock upstream and every admin
/// answer seen (to check no secret ever leaves).
pub struct Admin {
    pub app: TestApp,
    pub mock: MockUpstream,
    pub env: TestEnv,
    /// The static ADMIN_TOKEN of this relay.
    pub token: String,
    seen: Mutex<Vec<(String, String)>>,
}

/// Starts a relay with an ADMIN_TOKEN and an operator (`ADMIN_USER` / `ADMIN_PASSWORD`);
/// `edit` may change the environment first; waits until `/health` reports `want`.
pub async fn start_with(edit: impl FnOnce(&mut TestEnv), want: &'static str) -> Admin {
    let token = random_hex(40);
    let admin_token = token.clone();
    let TestRelay { app, mock, env } = TestRelay::builder()
        .edit(move |env| {
            env.set("ADMIN_TOKEN", admin_token);
        })
        .edit(edit)
        .wait_for(want)
        .start()
        .await;
    let hash = claude_relay::domain::password::hash(ADMIN_PASSWORD).expect("hash");
    app.actors
        .router
        .ensure_admin(ADMIN_USER.into(), hash)
        .await
        .expect("operator created");
    Admin {
        app,
        mock,
        env,
        token,
        seen: Mutex::new(Vec::new()),
    }
}

pub async fn start() -> Admin {
    start_with(|_| {}, "healthy").await
}

impl Admin {
    pub fn router(&self) -> &RouterHandle {
        &self.app.actors.router
    }

    /// Sends a request with `Authorization: Bearer <token>` (none when `token` is None);
    /// returns the status and the JSON body.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.app.client.request(method.clone(), self.app.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.expect("body");
        assert!(
            ct.starts_with("application/json"),
            "{method} {path}: {status} content-type {ct:?}: {text}"
        );
        self.seen
            .lock()
            .unwrap()
            .push((format!("{method} {path}"), text.clone()));
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} not JSON ({e}): {text}"));
        (status, json)
    }

    /// A request with the static ADMIN_TOKEN.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_as(Some(&self.token.clone()), method, path, body)
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Logs in; returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> (u16, Value) {
        let body = serde_json::json!({"username": username, "password": password});
        self.call_as(None, Method::POST, "/web/auth/login", Some(&body))
            .await
    }

    /// One number from this test's database (`SELECT COUNT(*) AS n …`).
    pub fn scalar(&self, sql: &str) -> i64 {
        mysql::scalar(&self.env.direct_mysql(), sql)
    }

    /// Strings from this test's database.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        mysql::strings(&self.env.direct_mysql(), sql)
    }

    /// Asserts no admin answer seen so far contains any of `secrets`, except answers whose
    /// request line is in `allowed` (creation and regeneration show the plaintext once).
    pub fn assert_never_returned(&self, secrets: &[&str], allowed: &[&str]) {
        for (request, body) in self.seen.lock().unwrap().iter() {
            for s in secrets {
                assert!(
                    allowed.contains(&request.as_str()) || !body.contains(s),
                    "{request} returned a secret: {body}"
                );
            }
        }
    }
}

/// The sorted field names of a JSON object.
pub fn fields(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// Asserts a validation error naming `field`.
#[track_caller]
pub fn assert_field_error(answer: &(u16, Value), field: &str) {
    let (status, body) = answer;
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"], "validation_error", "{body}");
    assert_eq!(body["field"], field, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(field)),
        "the message names the field: {body}"
    );
}
