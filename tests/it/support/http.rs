//! `Http`: a client bound to one relay's base URL, with JSON helpers and health waits.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::poll::eventually;

/// Per-request bound, so a hanging relay fails the test instead of blocking it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pooled connection may idle: well under the relay's 5 s keep-alive.
const IDLE_BEFORE_SERVER_CLOSES: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct Http {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(port: u16) -> Http {
        Http {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                // The relay closes a connection idle for 5 s (actix's keep-alive): a pooled
                // connection reused at that moment fails the request ("error sending
                // request"), as a health poll after a 5 s load once did. Dropped sooner here.
                .pool_idle_timeout(IDLE_BEFORE_SERVER_CLOSES)
                .no_proxy()
                .build()
                .expect("reqwest client"),
        }
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and returns status and body parsed as JSON (panics when not JSON).
    pub async fn request_json(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method.clone(), self.url(path));
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.expect("read body");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path}: {status} body is not JSON ({e}; content-type {content_type:?}): {text:?}")
        });
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: content-type {content_type:?}, body {text}"
        );
        (status, json)
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        self.request_json(Method::GET, path, None).await
    }

    /// POSTs raw bytes with a content type; returns status and JSON body.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> (StatusCode, Value) {
        self.request_json(Method::POST, path, Some((content_type, body.into())))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_raw(path, "application/json", body.to_string())
            .await
    }

    /// `GET /health`.
    pub async fn health(&self) -> (StatusCode, Value) {
        self.get_json("/health").await
    }

    /// Polls `/health` until `status` is `want`; returns the body seen.
    pub async fn wait_for_health(&self, want: &str, timeout: Duration) -> Value {
        eventually(timeout, &format!("/health status {want}"), || async {
            let (code, body) = self.health().await;
            if body["status"] == want {
                Ok(body)
            } else {
                Err(format!("{code} {body}"))
            }
        })
        .await
    }

    /// Polls `/health` until `databases.<backend>.connected` is `connected`.
    pub async fn wait_for_backend(
        &self,
        backend: &str,
        connected: bool,
        timeout: Duration,
    ) -> (StatusCode, Value) {
        eventually(
            timeout,
            &format!("{backend}.connected = {connected}"),
            || async {
                let (code, body) = self.health().await;
                if body["databases"][backend]["connected"] == connected {
                    Ok((code, body))
                } else {
                    Err(format!("{code} {body}"))
                }
            },
        )
        .await
    }
}
