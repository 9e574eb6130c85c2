//! HTTP clients to the upstream (kept per HTTP worker) and the request we send: whitelisted
//! headers, the account's credentials, never the client's key. Accounts without a proxy go
//! through one pooled hyper client; proxied accounts through a reqwest client per proxy
//! (reqwest speaks HTTP, HTTPS and SOCKS proxies), which also serves the OAuth calls.

use foldhash::HashMap;
use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::HeaderMap as ClientHeaders;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

use crate::error::AppError;

/// Client headers passed to the upstream; everything else (cookies, the relay key, hop
/// headers) stays here. `content-type` is not among them: the relay always sends JSON and sets
/// it once itself.
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
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shorter than the idle time-outs of common front ends (60 s and more): a connection the
/// server closes as idle just when it is reused fails the request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
const POOL_MAX_IDLE_PER_HOST: usize = 512;
/// Upstream URLs remembered per worker (base URL × endpoint; a handful in practice).
const MAX_CACHED_URLS: usize = 1024;

/// How the relay authenticates to the upstream for one account.
#[derive(Clone)]
pub enum UpstreamAuth {
    /// The `x-api-key` value, ready (marked sensitive).
    ApiKey(HeaderValue),
    Bearer(String),
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamAuth(***)")
    }
}

/// The TLS settings of the direct client: rustls with ring and Mozilla's roots (as reqwest's
/// `rustls-tls`). Built once at start-up and shared by every worker's client.
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, AppError> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AppError::Internal(format!("TLS settings of the upstream client: {e}")))?
    .with_webpki_roots()
    .with_no_client_auth();
    Ok(Arc::new(config))
}

type DirectClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Upstream clients of one HTTP worker.
pub struct UpstreamClients {
    timeout: Duration,
    direct: DirectClient,
    /// By proxy URL ("" = direct, used for the OAuth calls of direct accounts).
    clients: RefCell<HashMap<String, reqwest::Client>>,
    /// Parsed upstream URLs by base URL and path, so a request neither parses its URL again
    /// nor joins its text, with the `host` header hyper would otherwise format per request.
    uris: RefCell<HashMap<String, Vec<(&'static str, Target)>>>,
}

/// Where a direct request goes: its URI and its `host` header.
#[derive(Clone)]
struct Target {
    uri: http::Uri,
    host: HeaderValue,
}

impl UpstreamClients {
    pub fn new(timeout: Duration, tls: &Arc<rustls::ClientConfig>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(tls))
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let direct = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        UpstreamClients {
            timeout,
            direct,
            clients: RefCell::default(),
            uris: RefCell::default(),
        }
    }

    /// The reqwest client for `proxy` (http://, https://, socks5:// URL; None: direct),
    /// built on first use: proxied relay calls and the OAuth calls go through it.
    pub fn client(&self, proxy: Option<&str>) -> Result<reqwest::Client, AppError> {
        let key = proxy.unwrap_or_default().to_string();
        if let Some(c) = self.clients.borrow().get(&key) {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(self.timeout)
            // The upstream's answer goes to the client as it is, a redirect included.
            .redirect(reqwest::redirect::Policy::none());
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

    /// `base` + `path` as a URI with its `host` header, made once per worker.
    fn target(&self, base: &str, path: &'static str) -> Result<Target, UpstreamError> {
        if let Some(paths) = self.uris.borrow().get(base)
            && let Some((_, target)) = paths.iter().find(|(p, _)| *p == path)
        {
            return Ok(target.clone());
        }
        let text = [base, path].concat();
        let uri = text
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
            .ok_or_else(|| {
                UpstreamError::Failed(format!("the upstream URL {text} is not an http(s) URL"))
            })?;
        let host = host_header(&uri).ok_or_else(|| {
            UpstreamError::Failed(format!("the upstream URL {text} has no valid host"))
        })?;
        let target = Target { uri, host };
        let mut uris = self.uris.borrow_mut();
        if uris.len() >= MAX_CACHED_URLS {
            uris.clear();
        }
        uris.entry(base.to_string())
            .or_default()
            .push((path, target.clone()));
        Ok(target)
    }

    /// Sends `request` to `base` + `path`, directly or through `proxy`. The whole exchange,
    /// the answer's body included, must end within the upstream time-out.
    pub async fn send(
        &self,
        proxy: Option<&reqwest::Client>,
        base: &str,
        path: &'static str,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let deadline = Instant::now() + self.timeout;
        let Target { uri, host } = self.target(base, path)?;
        let UpstreamRequest { mut headers, body } = request;
        if let Some(client) = proxy {
            let response = client
                .post(uri.to_string())
                .headers(headers)
                .body(body)
                .send()
                .await
                .map_err(UpstreamError::of_reqwest)?;
            return Ok(UpstreamResponse {
                status: response.status(),
                headers: response.headers().clone(),
                body: ResponseBody::Proxied(response),
            });
        }
        let mut outgoing = http::Request::new(Full::new(body));
        *outgoing.method_mut() = http::Method::POST;
        *outgoing.uri_mut() = uri;
        headers.insert(http::header::HOST, host);
        *outgoing.headers_mut() = headers;
        let response = tokio::time::timeout_at(deadline, self.direct.request(outgoing))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| UpstreamError::failed(&e))?;
        let (parts, incoming) = response.into_parts();
        Ok(UpstreamResponse {
            status: parts.status,
            headers: parts.headers,
            body: ResponseBody::Direct {
                incoming,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
            },
        })
    }
}

/// The `host` header of a request to `uri`, as hyper writes it: the port only when it is not
/// the scheme's own.
fn host_header(uri: &http::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    match uri.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(&format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    }
    .ok()
}

/// Why an upstream call failed (the message is for the log; it carries no URL).
#[derive(Debug)]
pub enum UpstreamError {
    Timeout,
    Failed(String),
}

impl UpstreamError {
    /// A hyper error with its causes ("client error (Connect): tcp connect error: …"): the
    /// outermost one alone rarely says what went wrong.
    fn failed(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        UpstreamError::Failed(text)
    }

    fn of_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            UpstreamError::Timeout
        } else {
            UpstreamError::Failed(e.without_url().to_string())
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Timeout => f.write_str("the upstream time-out passed"),
            UpstreamError::Failed(e) => f.write_str(e),
        }
    }
}

/// What goes upstream: the headers `build_request` chose and the JSON body.
pub struct UpstreamRequest {
    headers: HeaderMap,
    body: Bytes,
}

/// The upstream's answer: status and headers at once, the body read whole or as a stream.
pub struct UpstreamResponse {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
    body: ResponseBody,
}

enum ResponseBody {
    Direct {
        incoming: hyper::body::Incoming,
        deadline: Pin<Box<Sleep>>,
    },
    Proxied(reqwest::Response),
}

/// The answer's body as it arrives, ending with `UpstreamError::Timeout` when the upstream
/// time-out passes first.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>>>>;

impl UpstreamResponse {
    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, UpstreamError> {
        match self.body {
            ResponseBody::Direct { incoming, deadline } => {
                let collected = tokio::time::timeout_at(deadline.deadline(), incoming.collect())
                    .await
                    .map_err(|_| UpstreamError::Timeout)?
                    .map_err(|e| UpstreamError::failed(&e))?;
                Ok(collected.to_bytes())
            }
            ResponseBody::Proxied(response) => {
                response.bytes().await.map_err(UpstreamError::of_reqwest)
            }
        }
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> BodyStream {
        match self.body {
            ResponseBody::Direct { incoming, deadline } => Box::pin(Deadlined {
                data: BodyDataStream::new(incoming),
                deadline,
                ended: false,
            }),
            ResponseBody::Proxied(response) => Box::pin(
                response
                    .bytes_stream()
                    .map(|r| r.map_err(UpstreamError::of_reqwest)),
            ),
        }
    }
}

/// A direct answer's body that fails with `Timeout` once its deadline passes.
struct Deadlined {
    data: BodyDataStream<hyper::body::Incoming>,
    deadline: Pin<Box<Sleep>>,
    ended: bool,
}

impl Stream for Deadlined {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.data.poll_next_unpin(cx) {
            self.ended = item.is_none();
            return Poll::Ready(item.map(|r| r.map_err(|e| UpstreamError::failed(&e))));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(Some(Err(UpstreamError::Timeout)));
        }
        Poll::Pending
    }
}

/// Builds the upstream request: whitelisted client headers and the account's auth.
pub fn build_request(
    client_headers: &ClientHeaders,
    auth: &UpstreamAuth,
    body: Bytes,
) -> Result<UpstreamRequest, AppError> {
    let mut headers = HeaderMap::with_capacity(8);
    let mut beta: Option<&str> = None;
    for (name, value) in client_headers {
        let name = name.as_str();
        let known = FORWARDED_HEADERS.iter().find(|h| **h == name);
        let forwarded = known.is_some() || name.starts_with("x-stainless-") || name == "user-agent";
        if !forwarded {
            continue;
        }
        let Ok(text) = value.to_str() else { continue };
        if name == "anthropic-beta" {
            beta = Some(text);
            continue;
        }
        // The whitelisted names and the usual version come as static values: converting
        // the client's (another `http` version's types) would copy each into an allocation.
        let name = match known {
            Some(known) => HeaderName::from_static(known),
            None => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        let value = if name == "anthropic-version" && text == DEFAULT_ANTHROPIC_VERSION {
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION)
        } else {
            match HeaderValue::from_bytes(value.as_bytes()) {
                Ok(value) => value,
                Err(_) => continue,
            }
        };
        headers.append(name, value);
    }
    if !headers.contains_key("anthropic-version") {
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        );
    }
    let value = |v: &str| {
        HeaderValue::from_str(v).map_err(|_| {
            AppError::Internal("an upstream credential is not a valid header value".into())
        })
    };
    match auth {
        UpstreamAuth::ApiKey(key) => {
            headers.insert("x-api-key", key.clone());
            if let Some(b) = beta {
                headers.insert("anthropic-beta", value(b)?);
            }
        }
        UpstreamAuth::Bearer(token) => {
            let mut bearer = value(&format!("Bearer {token}"))?;
            bearer.set_sensitive(true);
            headers.insert(AUTHORIZATION, bearer);
            let flags = match beta {
                Some(b) if b.split(',').any(|f| f.trim() == OAUTH_BETA) => b.to_string(),
                Some(b) => format!("{OAUTH_BETA},{b}"),
                None => OAUTH_BETA.to_string(),
            };
            headers.insert("anthropic-beta", value(&flags)?);
        }
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(UpstreamRequest { headers, body })
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName as ClientName, HeaderValue as ClientValue};

    use super::*;

    #[test]
    fn the_host_header_carries_the_port_only_when_it_is_not_the_schemes_own() {
        let host = |url: &str| host_header(&url.parse().unwrap()).unwrap();
        assert_eq!(
            host("https://api.anthropic.com/v1/messages"),
            "api.anthropic.com"
        );
        assert_eq!(
            host("https://api.anthropic.com:443/v1"),
            "api.anthropic.com"
        );
        assert_eq!(
            host("http://127.0.0.1:18080/v1/messages"),
            "127.0.0.1:18080"
        );
        assert_eq!(host("http://relay.internal:80/v1"), "relay.internal");
        assert_eq!(host("https://relay.internal:80/v1"), "relay.internal:80");
        assert_eq!(host("http://[::1]:8080/v1"), "[::1]:8080");
        assert_eq!(host("http://user:secret@up.example:81/v1"), "up.example:81");
    }

    #[test]
    fn a_target_is_made_once_per_base_and_path_and_a_bad_url_is_refused() {
        let clients = UpstreamClients::new(Duration::from_secs(5), &tls_config().unwrap());
        let messages = clients
            .target("http://127.0.0.1:9/", "v1/messages")
            .unwrap();
        assert_eq!(messages.uri, "http://127.0.0.1:9/v1/messages");
        assert_eq!(messages.host, "127.0.0.1:9");
        let count = clients.target("http://127.0.0.1:9/", "v1/count").unwrap();
        assert_eq!(count.uri, "http://127.0.0.1:9/v1/count");
        assert_eq!(clients.uris.borrow().len(), 1, "one base");
        assert_eq!(clients.uris.borrow()["http://127.0.0.1:9/"].len(), 2);
        assert!(matches!(
            clients.target("ftp://127.0.0.1:9", "/v1/messages"),
            Err(UpstreamError::Failed(m)) if m.contains("not an http(s) URL")
        ));
        assert_eq!(clients.uris.borrow().len(), 1, "a refused URL is not kept");
    }

    fn client_headers(pairs: &[(&'static str, &'static str)]) -> ClientHeaders {
        let mut headers = ClientHeaders::new();
        for (name, value) in pairs {
            headers.append(
                ClientName::from_static(name),
                ClientValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn content_type_goes_upstream_once_whatever_the_client_sent() {
        for sent in [
            client_headers(&[("content-type", "application/json")]),
            client_headers(&[("content-type", "text/plain"), ("accept", "*/*")]),
            client_headers(&[]),
        ] {
            let request = build_request(
                &sent,
                &UpstreamAuth::ApiKey(HeaderValue::from_static("sk-up")),
                Bytes::from_static(b"{}"),
            )
            .unwrap();
            let types: Vec<_> = request.headers.get_all("content-type").iter().collect();
            assert_eq!(types, vec!["application/json"], "client sent {sent:?}");
            assert_eq!(request.headers.get_all("x-api-key").iter().count(), 1);
            assert_eq!(request.headers["anthropic-version"], "2023-06-01");
        }
    }

    #[test]
    fn whitelisted_headers_go_upstream_with_their_values() {
        let sent = client_headers(&[
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-os", "Linux"),
            ("user-agent", "claude-cli/2.0.14"),
            ("x-app", "cli"),
            ("accept", "text/event-stream"),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        let request = build_request(
            &sent,
            &UpstreamAuth::ApiKey(HeaderValue::from_static("sk-up")),
            Bytes::from_static(b"{}"),
        )
        .unwrap();
        let h = &request.headers;
        assert_eq!(h["anthropic-version"], "2023-06-01");
        assert_eq!(h["x-stainless-os"], "Linux");
        assert_eq!(h["user-agent"], "claude-cli/2.0.14");
        assert_eq!(h["x-app"], "cli");
        assert_eq!(h["accept"], "text/event-stream");
        assert!(h.get("x-forwarded-for").is_none());
        assert_eq!(
            h.len(),
            7,
            "five forwarded, the key and the content type: {h:?}"
        );
    }

    #[test]
    fn an_oauth_request_carries_the_bearer_and_the_oauth_beta_once() {
        let sent = client_headers(&[
            ("anthropic-beta", "tools-2024"),
            ("x-api-key", "cr_the_relay_key"),
            ("cookie", "a=b"),
            ("anthropic-version", "2024-01-01"),
        ]);
        let request = build_request(
            &sent,
            &UpstreamAuth::Bearer("tok".into()),
            Bytes::from_static(b"{}"),
        )
        .unwrap();
        let h = &request.headers;
        assert_eq!(h["authorization"], "Bearer tok");
        assert_eq!(h["anthropic-beta"], "oauth-2025-04-20,tools-2024");
        assert_eq!(h["anthropic-version"], "2024-01-01");
        assert_eq!(h.get_all("anthropic-version").iter().count(), 1);
        assert!(
            h.get("x-api-key").is_none(),
            "the relay key never goes upstream"
        );
        assert!(h.get("cookie").is_none());
    }
}
