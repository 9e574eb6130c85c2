//! HTTP clients to the upstream (one per proxy setting, kept per HTTP worker) and the
//! request we send: whitelisted headers, the account's credentials, never the client's key.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::header::HeaderMap;

use crate::error::AppError;

/// Client headers passed to the upstream; everything else (cookies, the relay key, hop
/// headers) stays here. `content-type` is not among them: the relay always sends JSON and sets
/// it once itself (`RequestBuilder::header` appends, so forwarding it too sent it twice).
const FORWARDED_HEADERS: [&str; 5] = [
    "anthropic-version",
    "anthropic-beta",
    "accept",
    // Claude Code's own headers (also set by Claude Code shaping).
    "x-app",
    "anthropic-dangerous-direct-browser-access",
];
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// Beta flag the upstream requires for OAuth bearer tokens.
const OAUTH_BETA: &str = "oauth-2025-04-20";

/// How the relay authenticates to the upstream for one account.
#[derive(Clone)]
pub enum UpstreamAuth {
    ApiKey(String),
    Bearer(String),
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamAuth(***)")
    }
}

/// Upstream clients of one HTTP worker, by proxy URL ("" = direct).
pub struct UpstreamClients {
    timeout: Duration,
    clients: RefCell<HashMap<String, reqwest::Client>>,
}

impl UpstreamClients {
    pub fn new(timeout: Duration) -> Self {
        UpstreamClients {
            timeout,
            clients: RefCell::new(HashMap::new()),
        }
    }

    /// The client for `proxy` (http://, https://, socks5:// URL), built on first use.
    pub fn client(&self, proxy: Option<&str>) -> Result<reqwest::Client, AppError> {
        let key = proxy.unwrap_or_default().to_string();
        if let Some(c) = self.clients.borrow().get(&key) {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(512)
            // Shorter than the idle time-outs of common front ends (60 s and more): a
            // connection the server closes as idle just when it is reused fails the request.
            .pool_idle_timeout(Duration::from_secs(50))
            .connect_timeout(Duration::from_secs(10))
            .timeout(self.timeout);
        if let Some(p) = proxy {
            let proxy = reqwest::Proxy::all(p)
                .map_err(|_| AppError::Internal("an account has an invalid proxy URL".into()))?;
            builder = builder.proxy(proxy);
        } else {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| AppError::Internal(format!("cannot build upstream client: {e}")))?;
        self.clients.borrow_mut().insert(key, client.clone());
        Ok(client)
    }
}

/// Builds the upstream request: URL, whitelisted client headers, the account's auth.
pub fn build_request(
    client: &reqwest::Client,
    url: &str,
    client_headers: &HeaderMap,
    auth: &UpstreamAuth,
    body: bytes::Bytes,
) -> reqwest::RequestBuilder {
    let mut request = client.post(url).body(body);
    let mut has_version = false;
    let mut beta: Option<String> = None;
    for (name, value) in client_headers {
        let name = name.as_str();
        let forwarded = FORWARDED_HEADERS.contains(&name)
            || name.starts_with("x-stainless-")
            || name == "user-agent";
        if !forwarded {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        match name {
            "anthropic-version" => has_version = true,
            "anthropic-beta" => {
                beta = Some(value.to_string());
                continue;
            }
            _ => {}
        }
        request = request.header(name, value);
    }
    if !has_version {
        request = request.header("anthropic-version", DEFAULT_ANTHROPIC_VERSION);
    }
    match auth {
        UpstreamAuth::ApiKey(key) => {
            request = request.header("x-api-key", key);
            if let Some(b) = beta {
                request = request.header("anthropic-beta", b);
            }
        }
        UpstreamAuth::Bearer(token) => {
            request = request.bearer_auth(token);
            let flags = match beta {
                Some(b) if b.split(',').any(|f| f.trim() == OAUTH_BETA) => b,
                Some(b) => format!("{OAUTH_BETA},{b}"),
                None => OAUTH_BETA.to_string(),
            };
            request = request.header("anthropic-beta", flags);
        }
    }
    request.header("content-type", "application/json")
}

/// The reset time of an upstream 429, from the unified reset header (epoch seconds) or
/// `retry-after` (seconds).
pub fn rate_limit_reset(
    headers: &reqwest::header::HeaderMap,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    if let Some(epoch) = get("anthropic-ratelimit-unified-reset") {
        return chrono::DateTime::from_timestamp(epoch, 0);
    }
    get("retry-after").map(|s| chrono::Utc::now() + chrono::Duration::seconds(s))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn client_headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn content_type_goes_upstream_once_whatever_the_client_sent() {
        let client = reqwest::Client::new();
        for sent in [
            client_headers(&[("content-type", "application/json")]),
            client_headers(&[("content-type", "text/plain"), ("accept", "*/*")]),
            client_headers(&[]),
        ] {
            let request = build_request(
                &client,
                "http://127.0.0.1:9/v1/messages",
                &sent,
                &UpstreamAuth::ApiKey("sk-up".into()),
                bytes::Bytes::from_static(b"{}"),
            )
            .build()
            .unwrap();
            let types: Vec<_> = request.headers().get_all("content-type").iter().collect();
            assert_eq!(types, vec!["application/json"], "client sent {sent:?}");
            assert_eq!(request.headers().get_all("x-api-key").iter().count(), 1);
            assert_eq!(request.headers()["anthropic-version"], "2023-06-01");
        }
    }
}
