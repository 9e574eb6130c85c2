//! The HTTP layer: routes, shared state, and the mapping of every error (ours and actix's
//! own) to the JSON error shape of SPEC §4. Handlers are thin: they call the router.

pub mod admin;
pub mod console;
pub mod health;
pub mod metrics;
pub mod openai;
pub mod relay;

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpResponse, web};

use crate::actors::router::RouterHandle;
use crate::config::Config;
use crate::error::AppError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub router: RouterHandle,
    pub config: Arc<Config>,
    /// Failed admin logins per client address (in process).
    pub login_limiter: Arc<crate::service::auth::LoginLimiter>,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(health::routes)
        .configure(admin::routes)
        .configure(console::routes)
        .configure(relay::routes)
        .configure(openai::routes)
        .configure(metrics::routes)
        .default_service(web::to(not_found));
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    let error = AppError::NotFound("the requested resource was not found".into());
    if openai::is_openai_path(req.path()) {
        return openai::error_response(&error);
    }
    actix_web::ResponseError::error_response(&error)
}

/// Rewrites error answers that are not JSON yet (actix's own: bad JSON, payload too large,
/// method not allowed, …) into the Anthropic error shape (OpenAI's on the OpenAI paths).
pub fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(to_json_error::<B>)
}

fn to_json_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
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
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
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
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}
