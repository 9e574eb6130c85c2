//! The one closed error type at the HTTP boundary (`AppError`), mapped once to a status and
//! the Anthropic error body, plus the storage errors it is built from.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Failure of a Redis call, as seen by callers of the cache actor.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    /// Redis is known to be down (circuit open) or not connected yet: failed without waiting.
    #[error("redis unavailable")]
    Unavailable,
    /// The call did not finish within the configured time-out.
    #[error("redis call timed out")]
    Timeout,
    /// Redis answered with an error, or the connection broke during the call.
    #[error("redis error: {0}")]
    Command(String),
    /// A stored value could not be decoded.
    #[error("bad cached value: {0}")]
    Decode(String),
}

/// Failure of a MySQL call, as seen by callers of the persistence actor.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// MySQL is known to be down or the pool could not hand out a connection in time.
    #[error("mysql unavailable")]
    Unavailable,
    /// The query did not finish within the configured time-out.
    #[error("mysql call timed out")]
    Timeout,
    /// A unique key already holds this value.
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// Any other database error (message kept for logs, never sent to clients).
    #[error("mysql error: {0}")]
    Query(String),
}

impl StoreError {
    /// True when the backend itself failed (as opposed to the data or the query).
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Unavailable | StoreError::Timeout)
    }
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => StoreError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StoreError::Duplicate(info.message().to_string())
            }
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | Error::BrokenTransactionManager => StoreError::Unavailable,
            other => {
                let text = other.to_string();
                // mysql_async reports dropped sockets as unknown database errors.
                if text.contains("Connection")
                    || text.contains("connection")
                    || text.contains("io error")
                {
                    StoreError::Unavailable
                } else {
                    StoreError::Query(text)
                }
            }
        }
    }
}

/// Every error an HTTP handler can return; the variant decides status and body.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Authentication(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{message}")]
    QuotaExceeded { code: &'static str, message: String },
    /// A backend needed for this request is down.
    #[error("{0}")]
    StorageUnavailable(String),
    /// No upstream account can take the request.
    #[error("{0}")]
    NoAccountAvailable(String),
    #[error("{0}")]
    UpstreamUnreachable(String),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    /// A bug or an unexpected backend answer; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// True when a backend outage caused this error (as opposed to the request).
    pub fn is_outage(&self) -> bool {
        matches!(self, AppError::StorageUnavailable(_))
    }

    /// The Anthropic `error.type` of this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            AppError::InvalidRequest(_) => "invalid_request_error",
            AppError::Authentication(_) => "authentication_error",
            AppError::Permission(_) => "permission_error",
            AppError::NotFound(_) => "not_found_error",
            AppError::PayloadTooLarge { .. } => "request_too_large",
            AppError::RateLimited { .. } => "rate_limit_error",
            AppError::QuotaExceeded { .. } => "insufficient_quota",
            AppError::StorageUnavailable(_)
            | AppError::NoAccountAvailable(_)
            | AppError::UpstreamUnreachable(_)
            | AppError::UpstreamTimeout
            | AppError::Internal(_) => "api_error",
        }
    }

    /// The JSON body sent to the client.
    pub fn body(&self) -> serde_json::Value {
        let message = match self {
            AppError::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let mut error = json!({ "type": self.error_type(), "message": message });
        if let AppError::QuotaExceeded { code, .. } = self {
            error["code"] = json!(code);
        }
        if let AppError::StorageUnavailable(_) = self {
            error["code"] = json!("storage_unavailable");
        }
        json!({ "type": "error", "error": error })
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable | StoreError::Timeout => AppError::StorageUnavailable(
                "storage unavailable: the database is not reachable, try again shortly".into(),
            ),
            StoreError::NotFound => AppError::NotFound("not found".into()),
            StoreError::Duplicate(m) => AppError::InvalidRequest(format!("duplicate value: {m}")),
            StoreError::Query(m) => AppError::Internal(m),
        }
    }
}

impl From<CacheError> for AppError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Decode(m) => AppError::Internal(m),
            _ => AppError::StorageUnavailable(
                "storage unavailable: the cache is not reachable, try again shortly".into(),
            ),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Authentication(_) => StatusCode::UNAUTHORIZED,
            AppError::Permission(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::QuotaExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
            AppError::StorageUnavailable(_) | AppError::NoAccountAvailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            AppError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let AppError::Internal(detail) = self {
            log::error!("internal error: {detail}");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let AppError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response.insert_header(("retry-after", retry_after_secs.to_string()));
        }
        response.json(self.body())
    }
}
