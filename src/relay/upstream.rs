//! HTTP clients to the upstream (kept per HTTP worker) and the request we send: whitelisted
//! headers, the account's credentials, never the client's key. Accounts without a proxy go
//! through the worker's own connections (`connections`); proxied accounts through a reqwest
//! client per proxy (reqwest speaks HTTP, HTTPS and SOCKS proxies), which also serves the
//! OAuth calls.

use foldhash::HashMap;
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::HeaderMap as ClientHeaders;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::{Instant, Sleep};

use super::connections::{self, Lease, Origin, SendError};
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

/// Upstream clients of one HTTP worker.
pub struct UpstreamClients {
    timeout: Duration,
    /// Dials direct connections: TCP, and TLS with ALPN for https.
    connector: HttpsConnector<HttpConnector>,
    /// Direct connections by origin (`scheme://authority/`), shared by the targets.
    origins: RefCell<HashMap<String, Rc<Origin>>>,
    /// By proxy URL ("" = direct, used for the OAuth calls of direct accounts).
    clients: RefCell<HashMap<String, reqwest::Client>>,
    /// Parsed upstream URLs by base URL and path, so a request neither parses its URL again
    /// nor joins its text, with the `host` header hyper would otherwise format per request.
    uris: RefCell<HashMap<String, Vec<(&'static str, Target)>>>,
}

/// Where a direct request goes: its URI (absolute, and in origin form for HTTP/1), its
/// `host` header and its origin's connections.
#[derive(Clone)]
struct Target {
    uri: http::Uri,
    origin_form: http::Uri,
    host: HeaderValue,
    origin: Rc<Origin>,
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
        UpstreamClients {
            timeout,
            connector,
            origins: RefCell::default(),
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
            .pool_max_idle_per_host(connections::MAX_IDLE)
            .pool_idle_timeout(connections::IDLE_TIMEOUT)
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
        let failed = || UpstreamError::Failed(format!("the upstream URL {text} is not valid"));
        let origin_form = match uri.path_and_query() {
            Some(p) => http::Uri::try_from(p.as_str()).map_err(|_| failed())?,
            None => http::Uri::from_static("/"),
        };
        let origin = self.origin(&uri).ok_or_else(failed)?;
        let target = Target {
            uri,
            origin_form,
            host,
            origin,
        };
        let mut uris = self.uris.borrow_mut();
        if uris.len() >= MAX_CACHED_URLS {
            uris.clear();
        }
        uris.entry(base.to_string())
            .or_default()
            .push((path, target.clone()));
        Ok(target)
    }

    /// The connections of `uri`'s origin, shared by every URL of that origin.
    fn origin(&self, uri: &http::Uri) -> Option<Rc<Origin>> {
        let address = http::Uri::builder()
            .scheme(uri.scheme()?.clone())
            .authority(uri.authority()?.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let mut origins = self.origins.borrow_mut();
        if origins.len() >= MAX_CACHED_URLS {
            origins.clear();
        }
        let origin = origins
            .entry(address.to_string())
            .or_insert_with(|| Origin::new(address));
        Some(Rc::clone(origin))
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
        let Target {
            uri,
            origin_form,
            host,
            origin,
        } = self.target(base, path)?;
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
        // One timer for the whole exchange, the answer's body included.
        let started = Instant::now();
        let mut deadline = Box::pin(tokio::time::sleep_until(started + self.timeout));
        let sent = connections::send(&self.connector, &origin, outgoing, &origin_form, started);
        let (response, lease) = tokio::select! {
            biased;
            sent = sent => sent.map_err(UpstreamError::of_send)?,
            () = &mut deadline => return Err(UpstreamError::Timeout),
        };
        let (parts, incoming) = response.into_parts();
        Ok(UpstreamResponse {
            status: parts.status,
            headers: parts.headers,
            body: ResponseBody::Direct {
                incoming,
                deadline,
                lease,
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

    fn of_send(e: SendError) -> Self {
        match e {
            SendError::Connect(e) => {
                let text = UpstreamError::failed(&*e).to_string();
                UpstreamError::Failed(format!("cannot connect: {text}"))
            }
            SendError::Http(e) => UpstreamError::failed(&e),
        }
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
        /// The HTTP/1 connection, given back once the body has been read to its end.
        lease: Option<Lease>,
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
            ResponseBody::Direct {
                incoming,
                mut deadline,
                lease,
            } => {
                let collected = tokio::select! {
                    biased;
                    body = incoming.collect() => body.map_err(|e| UpstreamError::failed(&e))?,
                    () = &mut deadline => return Err(UpstreamError::Timeout),
                };
                if let Some(lease) = lease {
                    lease.give_back();
                }
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
            ResponseBody::Direct {
                incoming,
                deadline,
                lease,
            } => Box::pin(Deadlined {
                data: BodyDataStream::new(incoming),
                deadline,
                lease,
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

/// A direct answer's body that fails with `Timeout` once its deadline passes, and gives its
/// connection back when it ends.
struct Deadlined {
    data: BodyDataStream<hyper::body::Incoming>,
    deadline: Pin<Box<Sleep>>,
    lease: Option<Lease>,
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
            if self.ended
                && let Some(lease) = self.lease.take()
            {
                lease.give_back();
            }
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

    /// A bare HTTP/1 server on 127.0.0.1 answering every request with `{"n":<request number>}`;
    /// with `close_after_each`, it closes each connection after its answer without saying so
    /// (as a server whose idle time-out passed). Counts connections and requests.
    struct BareServer {
        base: String,
        connections: Arc<std::sync::atomic::AtomicUsize>,
        requests: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl BareServer {
        async fn start(close_after_each: bool) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}/", listener.local_addr().unwrap());
            let connections = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(AtomicUsize::new(0));
            let (conns, reqs) = (connections.clone(), requests.clone());
            tokio::spawn(async move {
                loop {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    conns.fetch_add(1, Ordering::SeqCst);
                    let reqs = reqs.clone();
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        loop {
                            let mut chunk = [0u8; 4096];
                            let Ok(n) = socket.read(&mut chunk).await else {
                                return;
                            };
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                                continue;
                            };
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if buf.len() < end + 4 + length {
                                continue;
                            }
                            buf.drain(..end + 4 + length);
                            let n = reqs.fetch_add(1, Ordering::SeqCst) + 1;
                            let body = format!("{{\"n\":{n}}}");
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                 content-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            socket.write_all(answer.as_bytes()).await.unwrap();
                            if close_after_each {
                                return;
                            }
                        }
                    });
                }
            });
            BareServer {
                base,
                connections,
                requests,
            }
        }

        fn counts(&self) -> (usize, usize) {
            use std::sync::atomic::Ordering;
            (
                self.connections.load(Ordering::SeqCst),
                self.requests.load(Ordering::SeqCst),
            )
        }
    }

    fn json_request() -> UpstreamRequest {
        build_request(
            &client_headers(&[]),
            &UpstreamAuth::ApiKey(HeaderValue::from_static("sk-up")),
            Bytes::from_static(b"{\"model\":\"m\"}"),
        )
        .unwrap()
    }

    async fn send_whole(clients: &UpstreamClients, base: &str) -> (u16, String) {
        let response = clients
            .send(None, base, "v1/messages", json_request())
            .await
            .unwrap();
        let status = response.status.as_u16();
        let body = response.bytes().await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn clients() -> UpstreamClients {
        UpstreamClients::new(Duration::from_secs(5), &tls_config().unwrap())
    }

    #[tokio::test]
    async fn one_connection_serves_requests_one_after_another() {
        let server = BareServer::start(false).await;
        let clients = clients();
        for n in 1..=5 {
            let answer = send_whole(&clients, &server.base).await;
            assert_eq!(answer, (200, format!("{{\"n\":{n}}}")));
        }
        assert_eq!(server.counts(), (1, 5), "(connections, requests)");
    }

    #[tokio::test]
    async fn concurrent_requests_open_a_connection_each_and_all_are_reused_after() {
        let server = BareServer::start(false).await;
        let clients = clients();
        let first =
            futures_util::future::join_all((0..4).map(|_| send_whole(&clients, &server.base)))
                .await;
        assert!(first.iter().all(|(status, _)| *status == 200), "{first:?}");
        assert_eq!(server.counts(), (4, 4));
        let target = clients.target(&server.base, "v1/messages").unwrap();
        assert_eq!(target.origin.idle_count(), 4);
        let second =
            futures_util::future::join_all((0..4).map(|_| send_whole(&clients, &server.base)))
                .await;
        assert!(
            second.iter().all(|(status, _)| *status == 200),
            "{second:?}"
        );
        assert_eq!(server.counts(), (4, 8), "no new connection");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
        let server = BareServer::start(true).await;
        let clients = clients();
        for n in 1..=5 {
            // Time for the connection's task to read the close.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let answer = send_whole(&clients, &server.base).await;
            assert_eq!(answer, (200, format!("{{\"n\":{n}}}")));
        }
        assert_eq!(server.counts(), (5, 5));
    }

    #[tokio::test]
    async fn a_streamed_answer_gives_its_connection_back_only_when_read_to_its_end() {
        let server = BareServer::start(false).await;
        let clients = clients();
        let response = clients
            .send(None, &server.base, "v1/messages", json_request())
            .await
            .unwrap();
        let chunks: Vec<_> = response.into_stream().collect().await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(&chunks[0].as_ref().unwrap()[..], b"{\"n\":1}");
        assert_eq!(send_whole(&clients, &server.base).await.0, 200);
        assert_eq!(
            server.counts(),
            (1, 2),
            "the read stream's connection served the next"
        );

        let dropped = clients
            .send(None, &server.base, "v1/messages", json_request())
            .await
            .unwrap()
            .into_stream();
        drop(dropped);
        assert_eq!(send_whole(&clients, &server.base).await.0, 200);
        assert_eq!(
            server.counts(),
            (2, 4),
            "an answer left unread takes its connection along"
        );
    }

    /// The message of a request to `base` that fails to connect.
    async fn connect_failure(base: &str) -> String {
        match clients()
            .send(None, base, "v1/messages", json_request())
            .await
        {
            Err(UpstreamError::Failed(m)) if m.starts_with("cannot connect: ") => m,
            Err(other) => panic!("not a connection failure: {other}"),
            Ok(response) => panic!("answered {}", response.status),
        }
    }

    #[tokio::test]
    async fn an_upstream_that_refuses_connections_fails_the_request_with_the_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let error = connect_failure(&base).await;
        assert!(error.contains("refused"), "{error}");
    }

    /// An HTTPS upstream on 127.0.0.1 offering `alpn` (HTTP/2 when it offers "h2"), and the
    /// client settings that trust its certificate. It answers with the version, authority and
    /// path it saw, and counts its connections.
    async fn tls_upstream(
        alpn: &[&[u8]],
    ) -> (
        String,
        Arc<rustls::ClientConfig>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = || Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}/", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let tls = acceptor.accept(tcp).await.unwrap();
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = TokioIo::new(tls);
                    let service = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let authority = match req.uri().authority() {
                                Some(a) => a.to_string(),
                                None => req.headers()["host"].to_str().unwrap().to_string(),
                            };
                            let seen =
                                format!("{:?} {authority} {}", req.version(), req.uri().path());
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(seen),
                            )))
                        },
                    );
                    // A client closing its connection ends the exchange; nothing to report.
                    let _closed: Result<(), hyper::Error> = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await
                    };
                });
            }
        });
        (base, Arc::new(client), connections)
    }

    #[tokio::test]
    async fn an_https_upstream_offering_http2_gets_one_shared_connection() {
        use std::sync::atomic::Ordering;
        let (base, tls, connections) = tls_upstream(&[b"h2", b"http/1.1"]).await;
        let clients = UpstreamClients::new(Duration::from_secs(5), &tls);
        let authority = base.trim_start_matches("https://").trim_end_matches('/');
        let expected = (200, format!("HTTP/2.0 {authority} /v1/messages"));
        assert_eq!(send_whole(&clients, &base).await, expected);
        let more =
            futures_util::future::join_all((0..4).map(|_| send_whole(&clients, &base))).await;
        assert_eq!(more, vec![expected; 4]);
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        let target = clients.target(&base, "v1/messages").unwrap();
        assert_eq!(
            target.origin.idle_count(),
            0,
            "HTTP/2 is shared, never lent"
        );
    }

    #[tokio::test]
    async fn an_https_upstream_speaking_http1_reuses_its_connection() {
        use std::sync::atomic::Ordering;
        let (base, tls, connections) = tls_upstream(&[b"http/1.1"]).await;
        let clients = UpstreamClients::new(Duration::from_secs(5), &tls);
        let authority = base.trim_start_matches("https://").trim_end_matches('/');
        for _ in 0..3 {
            assert_eq!(
                send_whole(&clients, &base).await,
                (200, format!("HTTP/1.1 {authority} /v1/messages"))
            );
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_https_upstream_with_a_certificate_nobody_vouches_for_is_refused() {
        let (base, _, _) = tls_upstream(&[b"http/1.1"]).await;
        let error = connect_failure(&base).await;
        assert!(error.contains("certificate"), "{error}");
    }

    /// The exchange's future is part of every relayed request's state, which is moved (copied)
    /// as a whole: the rare, large parts (dialling, handshakes) are boxed. It was 8 KB before.
    #[test]
    fn the_state_of_an_exchange_stays_small() {
        let clients = clients();
        let exchange = clients.send(None, "http://127.0.0.1:9/", "v1/messages", json_request());
        let size = std::mem::size_of_val(&exchange);
        assert!(size <= 3 * 1024, "{size} bytes");
    }
}
