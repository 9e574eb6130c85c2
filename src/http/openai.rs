//! The OpenAI-compatible client API: Chat Completions (translated onto the Messages
//! pipeline) and the model list, with every error in OpenAI's shape. Thin: the
//! translation is in `crate::domain::openai`, the relaying in `crate::relay`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::domain::openai::error::error_body;
use crate::error::AppError;
use crate::relay::dialect::Dialect;
use crate::relay::pipeline::{self, Endpoint, RelayShared};
use crate::relay::upstream::UpstreamClients;

/// Paths whose errors are written in OpenAI's shape.
pub fn is_openai_path(path: &str) -> bool {
    path.starts_with("/openai/") || path == "/api/v1/chat/completions"
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/openai/claude/v1/chat/completions",
        web::post().to(chat_completions),
    )
    .route("/api/v1/chat/completions", web::post().to(chat_completions))
    .route("/openai/claude/v1/models", web::get().to(models));
}

async fn chat_completions(
    shared: web::Data<RelayShared>,
    clients: web::Data<UpstreamClients>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    pipeline::relay(
        &shared,
        &clients,
        &req,
        body,
        Endpoint::Messages,
        Dialect::OpenAiChat,
    )
    .await
    .unwrap_or_else(|e| error_response(&e))
}

async fn models(shared: web::Data<RelayShared>, req: HttpRequest) -> HttpResponse {
    super::relay::model_list(&shared, &req)
        .await
        .unwrap_or_else(|e| error_response(&e))
}

/// The `code` of one of our errors.
fn code(error: &AppError) -> &'static str {
    match error {
        AppError::InvalidRequest(_) => "invalid_request",
        AppError::Authentication(_) => "invalid_api_key",
        AppError::Permission(_) => "permission_denied",
        AppError::NotFound(_) => "not_found",
        AppError::PayloadTooLarge { .. } => "request_too_large",
        AppError::RateLimited { .. } => "rate_limit_exceeded",
        AppError::QuotaExceeded { code, .. } => code,
        AppError::StorageUnavailable(_) => "storage_unavailable",
        AppError::NoAccountAvailable(_) => "no_account_available",
        AppError::UpstreamUnreachable(_) => "upstream_unreachable",
        AppError::UpstreamTimeout => "upstream_timeout",
        AppError::Internal(_) => "internal_error",
    }
}

/// One of our errors in OpenAI's shape, with the status (and `retry-after`) the Messages
/// endpoint gives it.
pub fn error_response(error: &AppError) -> HttpResponse {
    // The Anthropic answer decides status and headers (and logs internal errors); only
    // the body changes.
    let mut response = error.error_response();
    let message = error.body()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let body = error_body(&message, error.error_type(), code(error));
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut out = HttpResponse::build(status);
    for (name, value) in headers.iter() {
        out.insert_header((name.clone(), value.clone()));
    }
    out.json(body)
}

/// An error answer actix produced itself (bad payload, too large, …) in OpenAI's shape.
pub fn framework_error_body(status: StatusCode, message: &str) -> serde_json::Value {
    let (kind, code) = match status {
        StatusCode::UNAUTHORIZED => ("authentication_error", "invalid_api_key"),
        StatusCode::NOT_FOUND => ("not_found_error", "not_found"),
        StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", "request_too_large"),
        s if s.is_client_error() => ("invalid_request_error", "invalid_request"),
        _ => ("api_error", "internal_error"),
    };
    error_body(message, kind, code)
}
