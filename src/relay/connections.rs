//! The direct upstream connections of one HTTP worker, kept between requests. An HTTP/1
//! connection is lent to one request and given back once its answer's body has been read to
//! the end; an HTTP/2 connection (offered by TLS's ALPN) is shared by every request to its
//! origin. Everything here lives on the worker's thread: no lock, no spawned task per request,
//! no map lookup (each upstream URL holds its origin's connections), where hyper-util's pooled
//! client spent about 6 % of the relay's CPU on each request.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower_service::Service;

/// The body of a direct request: the JSON the relay built, whole.
pub type RequestBody = Full<Bytes>;

/// Shorter than the idle time-outs of common front ends (60 s and more): a connection the
/// server closes as idle just when it is reused fails the request. (The proxied clients
/// keep theirs as long.)
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle HTTP/1 connections kept per origin; more are closed when given back.
pub const MAX_IDLE: usize = 512;

/// The connections of one origin (scheme, host and port).
pub struct Origin {
    /// `scheme://authority/`, what the connector dials.
    address: http::Uri,
    /// Idle HTTP/1 connections with the time their last request started, oldest first.
    idle: RefCell<VecDeque<(http1::SendRequest<RequestBody>, Instant)>>,
    /// The HTTP/2 connection all requests share, once ALPN chose HTTP/2.
    shared: RefCell<Option<http2::SendRequest<RequestBody>>>,
}

/// An HTTP/1 connection lent to one request. Given back when the answer's body has been read
/// to its end; dropped otherwise, which closes it.
pub struct Lease {
    origin: Rc<Origin>,
    sender: http1::SendRequest<RequestBody>,
    started: Instant,
}

impl Lease {
    pub fn give_back(self) {
        self.origin.put(self.sender, self.started);
    }
}

/// Why a direct exchange failed before its answer's head arrived.
pub enum SendError {
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Http(hyper::Error),
}

impl Origin {
    pub fn new(address: http::Uri) -> Rc<Self> {
        Rc::new(Origin {
            address,
            idle: RefCell::default(),
            shared: RefCell::default(),
        })
    }

    /// Keeps `sender` for the next request unless it is closed. The idle time counts from
    /// `started` (the start of its last request, read then): a connection is dropped a little
    /// early rather than the clock read again.
    fn put(&self, sender: http1::SendRequest<RequestBody>, started: Instant) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        drop_expired(&mut idle, started);
        if idle.len() < MAX_IDLE {
            idle.push_back((sender, started));
        }
    }

    /// The most recently used idle HTTP/1 connection that can take a request now. Closed and
    /// expired ones are dropped on the way; one still finishing its last answer is left.
    fn take_idle(&self, now: Instant) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle.borrow_mut();
        drop_expired(&mut idle, now);
        let mut n = idle.len();
        while n > 0 {
            n -= 1;
            let sender = &idle[n].0;
            if sender.is_closed() {
                idle.remove(n);
            } else if sender.is_ready() {
                return idle.remove(n).map(|(sender, _)| sender);
            }
        }
        None
    }

    /// The shared HTTP/2 connection, unless there is none or it closed.
    fn take_shared(&self) -> Option<http2::SendRequest<RequestBody>> {
        let mut shared = self.shared.borrow_mut();
        match shared.as_ref() {
            Some(sender) if sender.is_closed() => {
                *shared = None;
                None
            }
            other => other.cloned(),
        }
    }

    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}

fn drop_expired(idle: &mut VecDeque<(http1::SendRequest<RequestBody>, Instant)>, now: Instant) {
    while idle
        .front()
        .is_some_and(|(_, since)| now.saturating_duration_since(*since) > IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
}

/// A new connection, as ALPN decided.
enum Fresh {
    Http1(http1::SendRequest<RequestBody>),
    Http2(http2::SendRequest<RequestBody>),
}

/// Sends `request` (absolute URI, `host` header set) to `origin` on an idle connection or a
/// new one. A request an idle connection could not take (it closed meanwhile) goes on the
/// next one: it was never written. `now` is the request's start. The lease is there for an
/// HTTP/1 answer, to be given back once its body has been read.
pub async fn send(
    connector: &HttpsConnector<HttpConnector>,
    origin: &Rc<Origin>,
    mut request: http::Request<RequestBody>,
    origin_form: &http::Uri,
    now: Instant,
) -> Result<(http::Response<Incoming>, Option<Lease>), SendError> {
    if let Some(mut sender) = origin.take_shared() {
        return send_http2(&mut sender, request).await.map(|r| (r, None));
    }
    let absolute = std::mem::replace(request.uri_mut(), origin_form.clone());
    while let Some(mut sender) = origin.take_idle(now) {
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, Some(lease(origin, sender, now)))),
            Err(mut e) => match e.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(SendError::Http(e.into_error())),
            },
        }
    }
    // Boxed: the dialling and the handshakes are rare and large, and the state of this
    // future is moved with every request.
    match Box::pin(connect(connector, &origin.address)).await? {
        Fresh::Http1(mut sender) => {
            let response = sender
                .send_request(request)
                .await
                .map_err(SendError::Http)?;
            Ok((response, Some(lease(origin, sender, now))))
        }
        Fresh::Http2(mut sender) => {
            *origin.shared.borrow_mut() = Some(sender.clone());
            *request.uri_mut() = absolute;
            send_http2(&mut sender, request).await.map(|r| (r, None))
        }
    }
}

fn lease(origin: &Rc<Origin>, sender: http1::SendRequest<RequestBody>, now: Instant) -> Lease {
    Lease {
        origin: Rc::clone(origin),
        sender,
        started: now,
    }
}

/// HTTP/2 takes the authority from the URI (absolute here), not from a `host` header.
async fn send_http2(
    sender: &mut http2::SendRequest<RequestBody>,
    mut request: http::Request<RequestBody>,
) -> Result<http::Response<Incoming>, SendError> {
    request.headers_mut().remove(http::header::HOST);
    sender.ready().await.map_err(SendError::Http)?;
    sender.send_request(request).await.map_err(SendError::Http)
}

/// Dials `address` (TCP, then TLS for https with ALPN offering HTTP/2 and HTTP/1.1) and runs
/// the connection as a task of this worker's runtime until it closes.
async fn connect(
    connector: &HttpsConnector<HttpConnector>,
    address: &http::Uri,
) -> Result<Fresh, SendError> {
    let io = connector
        .clone()
        .call(address.clone())
        .await
        .map_err(SendError::Connect)?;
    if io.connected().is_negotiated_h2() {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("upstream HTTP/2 connection ended: {e}");
            }
        });
        Ok(Fresh::Http2(sender))
    } else {
        let (sender, connection) = http1::handshake(io).await.map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("upstream connection ended: {e}");
            }
        });
        Ok(Fresh::Http1(sender))
    }
}
