//! `AdminError`: the admin API's one error type, a closed wrapper around `AppError` that
//! also names the request field a validation error is about.

use crate::error::AppError;

/// An admin API failure: the `AppError` decides the status; `field` names the offending
/// input when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct AdminError {
    pub error: AppError,
    pub field: Option<String>,
}

impl AdminError {
    /// A 400 about one request field; the message starts with the field's name.
    pub fn field(name: &str, message: impl std::fmt::Display) -> AdminError {
        AdminError {
            error: AppError::InvalidRequest(format!("{name}: {message}")),
            field: Some(name.to_string()),
        }
    }

    /// A 400 not tied to one field.
    pub fn invalid(message: impl Into<String>) -> AdminError {
        AppError::InvalidRequest(message.into()).into()
    }

    pub fn not_found(message: impl Into<String>) -> AdminError {
        AppError::NotFound(message.into()).into()
    }

    pub fn unauthorized(message: impl Into<String>) -> AdminError {
        AppError::Authentication(message.into()).into()
    }

    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        if self.field.is_some() {
            return "validation_error";
        }
        match &self.error {
            AppError::InvalidRequest(_) => "invalid_request",
            AppError::Authentication(_) => "unauthorized",
            AppError::Permission(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::PayloadTooLarge { .. } => "request_too_large",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::QuotaExceeded { .. } => "quota_exceeded",
            AppError::StorageUnavailable(_) => "storage_unavailable",
            AppError::NoAccountAvailable(_) => "service_unavailable",
            AppError::UpstreamUnreachable(_) | AppError::UpstreamTimeout => "upstream_error",
            AppError::Internal(_) => "internal_error",
        }
    }

    /// The JSON body: `{"success":false,"error":code,"message":…[,"field":…]}`.
    pub fn body(&self) -> serde_json::Value {
        let message = match &self.error {
            AppError::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let mut body = serde_json::json!({
            "success": false,
            "error": self.code(),
            "message": message,
        });
        if let Some(f) = &self.field {
            body["field"] = f.clone().into();
        }
        body
    }
}

impl From<AppError> for AdminError {
    fn from(error: AppError) -> Self {
        AdminError { error, field: None }
    }
}
