//! The one middleware around every route: gives the request its id, rewrites actix's own
//! error answers (bad JSON, payload too large, method not allowed, …) into the JSON error
//! shape of SPEC §4, counts and times the request, returns the id in `request-id` and logs
//! the access line.
//!
//! Written by hand rather than as `from_fn` + `ErrorHandlers`: that pair boxed two futures
//! and cloned the shared metrics handle (an atomic on a count both workers write) for every
//! request; this one's future is a plain struct and the metrics handle is the worker's own.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpMessage};

use super::metrics::{Metrics, RequestId, WorkerMetrics};
use super::openai;
use crate::error::AppError;

/// The middleware; `metrics: None` only rewrites errors and adds the id (tests).
#[derive(Clone, Default)]
pub struct Edge {
    metrics: Option<Arc<Metrics>>,
}

impl Edge {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Edge {
            metrics: Some(metrics),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Edge
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = EdgeService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        // Runs once on each worker: its requests are counted in a share of its own.
        ready(Ok(EdgeService {
            service,
            edge: Rc::new(WorkerEdge {
                metrics: self.metrics.as_ref().map(|m| (m.clone(), m.for_worker())),
                ids: uuid::ContextV7::new(),
            }),
        }))
    }
}

/// The middleware's state on one worker: cloned per request without touching a cache line
/// the other workers write.
struct WorkerEdge {
    metrics: Option<(Arc<Metrics>, Arc<WorkerMetrics>)>,
    /// The ordering of the worker's request ids.
    ids: uuid::ContextV7,
}

pub struct EdgeService<S> {
    service: S,
    edge: Rc<WorkerEdge>,
}

impl<S, B> Service<ServiceRequest> for EdgeService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = EdgeFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        req.extensions_mut()
            .insert(RequestId::new_in(&self.edge.ids));
        // Only the path: a query string may hold a key (`?key=`). Copied only when the access
        // line is written (not at the default level).
        let access = log::log_enabled!(target: "access", log::Level::Info)
            .then(|| (req.method().clone(), req.path().to_string()));
        EdgeFuture {
            inner: self.service.call(req),
            started,
            edge: self.edge.clone(),
            access,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        edge: Rc<WorkerEdge>,
        access: Option<(Method, String)>,
    }
}

impl<F, B> Future for EdgeFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    B: MessageBody + 'static,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(res) => res?,
        };
        let status = res.status();
        let mut res = if status.is_client_error() || status.is_server_error() {
            to_json_error(res)
        } else {
            res.map_into_left_body()
        };
        let elapsed = this.started.elapsed();
        if let Some((metrics, worker)) = &this.edge.metrics {
            worker.observe_request(metrics, res.request(), status, elapsed);
        }
        // The id moves into the header (no copy): the handler took what it needed.
        let id = res.request().extensions_mut().remove::<RequestId>();
        let logged_id = this.access.as_ref().and(id.as_ref()).map(|id| id.0.clone());
        if let Some(v) =
            id.and_then(|id| HeaderValue::from_maybe_shared(bytes::Bytes::from(id.0)).ok())
        {
            res.headers_mut()
                .insert(HeaderName::from_static("request-id"), v);
        }
        if let Some((method, path)) = this.access.take() {
            let request_id = logged_id.as_deref().unwrap_or("-");
            log::info!(
                target: "access",
                "{request_id} {method} {path} {} {:.3}ms",
                status.as_u16(),
                elapsed.as_secs_f64() * 1000.0
            );
        }
        Poll::Ready(Ok(res))
    }
}

/// An error answer in the JSON error shape: ours already are; actix's own are rewritten.
fn to_json_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> ServiceResponse<EitherBody<B>> {
    let is_json = res
        .response()
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // The console's pages answer errors as HTML on purpose.
            ["application/json", "text/event-stream", "text/html"]
                .iter()
                .any(|t| v.starts_with(t))
        });
    if is_json {
        return res.map_into_left_body();
    }
    let status = res.status();
    let message = res
        .response()
        .error()
        .map(|e| e.to_string())
        .filter(|m| !m.is_empty() && status.is_client_error())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let error = match status {
        StatusCode::UNAUTHORIZED => AppError::Authentication(message),
        StatusCode::FORBIDDEN => AppError::Permission(message),
        StatusCode::NOT_FOUND => AppError::NotFound(message),
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit: 0 },
        s if s.is_client_error() => AppError::InvalidRequest(message),
        _ => AppError::Internal(message),
    };
    let mut body = error.body();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        body["error"]["message"] = "request body is too large".into();
    }
    if openai::is_openai_path(res.request().path()) {
        let message = body["error"]["message"].as_str().unwrap_or_default();
        body = openai::framework_error_body(status, message);
    }
    let (req, mut response) = res.into_parts();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let response = response.set_body(BoxBody::new(body.to_string()));
    ServiceResponse::new(req, response).map_into_right_body()
}
