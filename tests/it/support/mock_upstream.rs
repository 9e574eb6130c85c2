//! An in-process stand-in for the Anthropic API: canned JSON and SSE answers whose usage is
//! known (a tool-use answer when the request offers tools and does not answer a tool call
//! yet), per-credential behaviours (errors with headers, streams that pause until the test
//! lets them go on, streams that break off, endless streams that notice a disconnect), an
//! OAuth token endpoint, and a record of what it received.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

/// Usage the mock reports (the same numbers in JSON and SSE answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockUsage {
    pub input: u64,
    pub output: u64,
    pub cache_create: u64,
    pub cache_read: u64,
}

pub const DEFAULT_USAGE: MockUsage = MockUsage {
    input: 25,
    output: 12,
    cache_create: 100,
    cache_read: 200,
};

/// What the mock does for requests with a given credential.
#[derive(Clone)]
pub enum Behaviour {
    /// 200 with the canned answer (JSON or SSE by the request's `stream`).
    Normal,
    /// This status, body and headers.
    Fail {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// SSE whose events wait, each, for a permit of `gate` (the first one is sent at once).
    Gated { gate: Arc<Semaphore> },
    /// SSE that sends `events` events and then breaks the connection.
    BreakAfter { events: usize },
    /// SSE that sends a ping every 20 ms until the client goes away.
    Endless,
    /// 200 with the canned answer and these extra headers (e.g. the 5-hour window status).
    WithHeaders(Vec<(String, String)>),
    /// No answer at all, until the client goes away.
    Silent,
}

/// What the mock saw of one request.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Headers,
    pub body: Value,
}

/// The request headers as they arrived: every (name, value) pair in order, so a header sent
/// twice shows twice. Names are lowercase (HTTP/1 names are case-insensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    fn of(req: &HttpRequest) -> Headers {
        Headers(
            req.headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        v.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Every value of `name`, in the order received.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value, in the order received.
    pub fn values(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Every header name, in the order received (repeated names repeat).
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

impl std::ops::Index<&str> for Headers {
    type Output = String;
    fn index(&self, name: &str) -> &String {
        self.get(name)
            .unwrap_or_else(|| panic!("no header {name:?} in {:?}", self.0))
    }
}

#[derive(Default)]
struct State {
    behaviours: HashMap<String, Behaviour>,
    received: Vec<Received>,
    token_refreshes: usize,
    token_status: u16,
    /// JSON bodies received on /oauth/token (refreshes and code exchanges).
    token_requests: Vec<Value>,
    /// The request targets /oauth/token was asked with (absolute through a proxy).
    token_targets: Vec<String>,
    /// Status of /api/oauth/profile (0: 200).
    profile_status: u16,
    /// The `authorization` headers /api/oauth/profile received, in order.
    profile_requests: Vec<String>,
}

pub struct MockUpstream {
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    state: Arc<Mutex<State>>,
    /// Endless streams whose client went away.
    closed_streams: Arc<AtomicUsize>,
    flight: Arc<Flight>,
    server: ServerHandle,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    closed: Arc<AtomicUsize>,
    flight: Arc<Flight>,
}

/// Message requests being answered right now (a stream until its last event is sent or its
/// client goes away), and the most there ever were at once.
#[derive(Default)]
struct Flight {
    now: AtomicUsize,
    high: AtomicUsize,
}

/// One request in flight; leaves the count when dropped.
struct InFlight(Arc<Flight>);

impl InFlight {
    fn enter(flight: &Arc<Flight>) -> InFlight {
        let now = flight.now.fetch_add(1, Ordering::SeqCst) + 1;
        flight.high.fetch_max(now, Ordering::SeqCst);
        InFlight(flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts the mock on a free port inside the current actix System.
pub async fn start_mock() -> MockUpstream {
    let state = Arc::new(Mutex::new(State {
        token_status: 200,
        token_requests: Vec::new(),
        ..State::default()
    }));
    let closed = Arc::new(AtomicUsize::new(0));
    let flight = Arc::new(Flight::default());
    let shared = Shared {
        state: state.clone(),
        closed: closed.clone(),
        flight: flight.clone(),
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(shared.clone()))
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .route("/v1/messages", web::post().to(messages))
            .route("/v1/messages/count_tokens", web::post().to(count_tokens))
            .route("/oauth/token", web::post().to(token))
            .route("/api/oauth/profile", web::get().to(profile))
    })
    .workers(1)
    // Like a real API's front end, it keeps idle connections longer than the relay's pool
    // does (50 s): actix' 5 s default would close one just as the relay reuses it.
    .keep_alive(Duration::from_secs(120))
    .bind(("127.0.0.1", 0))
    .expect("mock binds");
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    MockUpstream {
        port,
        url: format!("http://127.0.0.1:{port}"),
        state,
        closed_streams: closed,
        flight,
        server: handle,
    }
}

impl MockUpstream {
    /// Sets the behaviour for requests carrying `credential` (API key or bearer token).
    pub fn set(&self, credential: &str, behaviour: Behaviour) {
        self.state
            .lock()
            .unwrap()
            .behaviours
            .insert(credential.to_string(), behaviour);
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Requests received on /v1/messages.
    pub fn message_count(&self) -> usize {
        self.received()
            .iter()
            .filter(|r| r.path == "/v1/messages")
            .count()
    }

    /// The JSON bodies received on /oauth/token, in order.
    pub fn token_requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().token_requests.clone()
    }

    pub fn token_refreshes(&self) -> usize {
        self.state.lock().unwrap().token_refreshes
    }

    /// Makes the token endpoint answer with this status.
    pub fn set_token_status(&self, status: u16) {
        self.state.lock().unwrap().token_status = status;
    }

    /// The request targets of /oauth/token, in order.
    pub fn token_targets(&self) -> Vec<String> {
        self.state.lock().unwrap().token_targets.clone()
    }

    /// The `authorization` headers /api/oauth/profile received, in order.
    pub fn profile_requests(&self) -> Vec<String> {
        self.state.lock().unwrap().profile_requests.clone()
    }

    /// Makes the profile endpoint answer with this status.
    pub fn set_profile_status(&self, status: u16) {
        self.state.lock().unwrap().profile_status = status;
    }

    /// Message requests being answered now (streams until their end or their client left).
    pub fn in_flight(&self) -> usize {
        self.flight.now.load(Ordering::SeqCst)
    }

    /// The most message requests ever in flight at once.
    pub fn in_flight_high(&self) -> usize {
        self.flight.high.load(Ordering::SeqCst)
    }

    /// Endless streams whose client went away (the relay closed the upstream connection).
    pub fn closed_streams(&self) -> usize {
        self.closed_streams.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until exactly `n` endless streams saw their client go away.
    pub async fn wait_closed_streams(&self, n: usize) {
        super::eventually(
            Duration::from_secs(10),
            "upstream streams closed",
            || async {
                match self.closed_streams() {
                    c if c == n => Ok(()),
                    c => Err(format!("{c} closed")),
                }
            },
        )
        .await;
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        let server = self.server.clone();
        actix_rt::spawn(async move { server.stop(false).await });
    }
}

fn credential(req: &HttpRequest) -> String {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    h("x-api-key")
        .or_else(|| h("authorization").map(|a| a.trim_start_matches("Bearer ").to_string()))
        .unwrap_or_default()
}

/// The canned non-streaming answer.
pub fn json_answer(model: &str, u: MockUsage) -> Value {
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Hello from the mock."}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": u.input, "output_tokens": u.output,
                  "cache_creation_input_tokens": u.cache_create, "cache_read_input_tokens": u.cache_read}
    })
}

/// The input of the canned tool calls: the tool is called for Paris, then for Tokyo.
pub const TOOL_CITIES: [&str; 2] = ["Paris", "Tokyo"];

/// True when the canned answer to `body` is the tool-use one: the request offers tools and
/// its last message carries no tool result.
pub fn wants_tool_use(body: &Value) -> bool {
    let offers_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let last = body["messages"].as_array().and_then(|m| m.last());
    let answers_tool = last.is_some_and(|m| {
        m["content"]
            .as_array()
            .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
    });
    offers_tools && !answers_tool
}

/// The canned tool-use answer: a short text, then two calls of the request's first tool.
pub fn tool_json_answer(model: &str, tool: &str, u: MockUsage) -> Value {
    let calls = TOOL_CITIES.iter().enumerate().map(|(i, city)| {
        json!({"type": "tool_use", "id": format!("toolu_mock_{}", i + 1), "name": tool, "input": {"city": city}})
    });
    let mut content = vec![json!({"type": "text", "text": "Let me check."})];
    content.extend(calls);
    json!({
        "id": "msg_mock_tool", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": u.input, "output_tokens": u.output,
                  "cache_creation_input_tokens": u.cache_create, "cache_read_input_tokens": u.cache_read}
    })
}

/// The canned tool-use answer as SSE: the arguments of the first call arrive in pieces.
pub fn tool_sse_events(model: &str, tool: &str, u: MockUsage) -> Vec<String> {
    let event = |data: Value| {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        )
    };
    let mut events = vec![event(
        json!({"type": "message_start", "message": {"id": "msg_mock_tool",
        "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null,
        "usage": {"input_tokens": u.input, "output_tokens": 1,
                  "cache_creation_input_tokens": u.cache_create, "cache_read_input_tokens": u.cache_read}}}),
    )];
    events.push(event(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    events.push(event(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}})));
    events.push(event(json!({"type": "content_block_stop", "index": 0})));
    for (i, city) in TOOL_CITIES.iter().enumerate() {
        let index = i + 1;
        events.push(event(
            json!({"type": "content_block_start", "index": index, "content_block":
            {"type": "tool_use", "id": format!("toolu_mock_{index}"), "name": tool, "input": {}}}),
        ));
        for piece in ["", "{\"city\": ", &format!("\"{city}\"}}")] {
            events.push(event(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}})));
        }
        events.push(event(json!({"type": "content_block_stop", "index": index})));
    }
    events.push(event(
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
        "usage": {"output_tokens": u.output}}),
    ));
    events.push(event(json!({"type": "message_stop"})));
    events
}

/// The canned SSE answer, one string per event.
pub fn sse_events(model: &str, u: MockUsage) -> Vec<String> {
    let start = json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": null,
        "usage": {"input_tokens": u.input, "output_tokens": 1,
                  "cache_creation_input_tokens": u.cache_create, "cache_read_input_tokens": u.cache_read}}});
    let mut events = vec![format!("event: message_start\ndata: {start}\n\n")];
    events.push("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".into());
    for word in ["Hello", " from", " the", " mock."] {
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}});
        events.push(format!("event: content_block_delta\ndata: {delta}\n\n"));
    }
    events.push(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into(),
    );
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": u.output}});
    events.push(format!("event: message_delta\ndata: {delta}\n\n"));
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
    events
}

fn sse_response(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("request-id", "req_mock"))
        .streaming(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn messages(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let flight = InFlight::enter(&shared.flight);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let headers = Headers::of(&req);
    let behaviour = {
        let mut state = shared.state.lock().unwrap();
        state.received.push(Received {
            path: "/v1/messages".into(),
            headers,
            body: body.clone(),
        });
        state
            .behaviours
            .get(&credential(&req))
            .cloned()
            .unwrap_or(Behaviour::Normal)
    };
    let model = body["model"]
        .as_str()
        .unwrap_or("claude-sonnet-4-20250514")
        .to_string();
    let stream = body["stream"].as_bool() == Some(true);
    let tool = wants_tool_use(&body).then(|| {
        body["tools"][0]["name"]
            .as_str()
            .unwrap_or("tool")
            .to_string()
    });
    match behaviour {
        Behaviour::Silent => std::future::pending().await,
        Behaviour::Fail {
            status,
            body,
            headers,
        } => {
            let mut r = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            for (k, v) in headers {
                r.insert_header((k, v));
            }
            r.content_type("application/json").body(body)
        }
        Behaviour::WithHeaders(extra) => {
            let mut r = HttpResponse::Ok();
            r.insert_header(("request-id", "req_mock"));
            for (k, v) in extra {
                r.insert_header((k, v));
            }
            r.json(json_answer(&model, DEFAULT_USAGE))
        }
        Behaviour::Normal if !stream => HttpResponse::Ok()
            .insert_header(("request-id", "req_mock"))
            .json(match &tool {
                Some(tool) => tool_json_answer(&model, tool, DEFAULT_USAGE),
                None => json_answer(&model, DEFAULT_USAGE),
            }),
        Behaviour::Normal => {
            let (tx, rx) = mpsc::channel(16);
            let events = match &tool {
                Some(tool) => tool_sse_events(&model, tool, DEFAULT_USAGE),
                None => sse_events(&model, DEFAULT_USAGE),
            };
            actix_rt::spawn(async move {
                let _flight = flight;
                for e in events {
                    if tx.send(Ok(Bytes::from(e))).await.is_err() {
                        return;
                    }
                }
            });
            sse_response(rx)
        }
        Behaviour::Gated { gate } => {
            let (tx, rx) = mpsc::channel(1);
            actix_rt::spawn(async move {
                let _flight = flight;
                for (i, e) in sse_events(&model, DEFAULT_USAGE).into_iter().enumerate() {
                    if i > 0 {
                        // A client that goes away while held back ends the stream at once.
                        let permit = tokio::select! {
                            permit = gate.acquire() => permit,
                            () = tx.closed() => return,
                        };
                        let Ok(permit) = permit else {
                            return;
                        };
                        permit.forget();
                    }
                    if tx.send(Ok(Bytes::from(e))).await.is_err() {
                        return;
                    }
                }
            });
            sse_response(rx)
        }
        Behaviour::BreakAfter { events } => {
            let (tx, rx) = mpsc::channel(16);
            actix_rt::spawn(async move {
                let _flight = flight;
                for e in sse_events(&model, DEFAULT_USAGE).into_iter().take(events) {
                    let _ = tx.send(Ok(Bytes::from(e))).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tx
                    .send(Err(std::io::Error::other("mock breaks the stream")))
                    .await;
            });
            sse_response(rx)
        }
        Behaviour::Endless => {
            let (tx, rx) = mpsc::channel(1);
            let closed = shared.closed.clone();
            actix_rt::spawn(async move {
                let _flight = flight;
                let first = sse_events(&model, DEFAULT_USAGE).remove(0);
                if tx.send(Ok(Bytes::from(first))).await.is_err() {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let ping = Bytes::from_static(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
                    if tx.send(Ok(ping)).await.is_err() {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            });
            sse_response(rx)
        }
    }
}

async fn count_tokens(
    shared: web::Data<Shared>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.state.lock().unwrap().received.push(Received {
        path: "/v1/messages/count_tokens".into(),
        headers: Headers::of(&req),
        body,
    });
    HttpResponse::Ok().json(json!({"input_tokens": 25}))
}

/// The profile the mock's OAuth provider answers (a Max subscription).
pub fn mock_profile() -> Value {
    json!({
        "account": {"uuid": "acc-uuid-1", "email": "max-owner@example.com",
                    "has_claude_max": true, "has_claude_pro": false},
        "organization": {"uuid": "org-uuid-1", "name": "Example Org",
                         "organization_type": "claude_max"}
    })
}

async fn profile(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let status = {
        let mut s = shared.state.lock().unwrap();
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        s.profile_requests.push(auth);
        s.profile_status
    };
    if status != 0 && status != 200 {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .json(json!({"error": {"type": "permission_error"}}));
    }
    HttpResponse::Ok().json(mock_profile())
}

async fn token(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let (n, status) = {
        let mut s = shared.state.lock().unwrap();
        s.token_targets.push(req.uri().to_string());
        s.token_requests
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        s.token_refreshes += 1;
        (s.token_refreshes, s.token_status)
    };
    // Slow enough that concurrent requests really overlap with the refresh.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if status != 200 {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .json(json!({"error": "invalid_grant"}));
    }
    HttpResponse::Ok().json(json!({
        "access_token": format!("sk-ant-oat01-refreshed-{n}"),
        "refresh_token": format!("sk-ant-ort01-refreshed-{n}"),
        "expires_in": 28800,
    }))
}
