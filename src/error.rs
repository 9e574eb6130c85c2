//! The one closed error type at the HTTP boundary (`AppError`), mapped once to a status and
//! the Anthropic error body, plus the storage errors it is built from.

use std::fmt;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// The error a backend call failed with, kept (not flattened to text) so logs show the
/// whole chain. Shared: one failure may be handed to several waiting callers.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(e))
    }

    /// A cause that is only a message (a rule of ours, not a library error).
    pub fn message(text: impl Into<String>) -> Cause {
        let boxed: Box<dyn std::error::Error + Send + Sync> = text.into().into();
        Cause(Arc::from(boxed))
    }

    /// The error and each of its sources.
    pub fn chain(&self) -> String {
        error_chain(&*self.0)
    }
}

/// An error and each of its sources, `: `-separated (a source its parent already quotes is
/// not repeated): the text of a log line that says what actually failed.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Equal when they read the same (tests compare errors; the cause has no identity).
impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

/// Failure of a Redis call, as seen by callers of the cache actor.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    /// Redis is known to be down (circuit open) or not connected yet: failed without waiting.
    #[error("redis unavailable")]
    Unavailable,
    /// The connection failed during the call (refused, reset, dropped, I/O error).
    #[error("redis connection failed: {0}")]
    Lost(#[source] Cause),
    /// The call did not finish within the configured time-out.
    #[error("redis call timed out")]
    Timeout,
    /// Redis answered the command with an error (wrong type, script error, …); the
    /// connection is fine.
    #[error("redis error: {0}")]
    Command(#[source] Cause),
    /// A stored value could not be decoded.
    #[error("bad cached value: {0}")]
    Decode(String),
}

impl CacheError {
    /// True when the backend itself failed (as opposed to the command or the data).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            CacheError::Unavailable | CacheError::Lost(_) | CacheError::Timeout
        )
    }
}

impl From<redis::RedisError> for CacheError {
    /// Sorts by the error's kind: connection-level failures are outages (they count against
    /// the circuit), anything Redis answered is a command error.
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_unrecoverable_error()
        {
            CacheError::Lost(Cause::new(e))
        } else {
            CacheError::Command(Cause::new(e))
        }
    }
}

/// Failure of a MySQL call, as seen by callers of the persistence actor.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// MySQL is known to be down (circuit open) or the schema is not ready yet: failed
    /// without trying.
    #[error("mysql unavailable")]
    Unavailable,
    /// No connection: the pool could not open or hand out one in time.
    #[error("cannot get a mysql connection: {0}")]
    Connect(#[source] Cause),
    /// The connection failed during the call (I/O error, closed by the server).
    #[error("mysql connection lost: {0}")]
    Lost(#[source] Cause),
    /// The query did not finish within the configured time-out.
    #[error("mysql call timed out")]
    Timeout,
    /// A unique key already holds this value.
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// Any other database error (kept for logs, never sent to clients).
    #[error("mysql error: {0}")]
    Query(#[source] Cause),
}

impl StoreError {
    /// True when the backend itself failed (as opposed to the data or the query).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable
                | StoreError::Connect(_)
                | StoreError::Lost(_)
                | StoreError::Timeout
        )
    }
}

/// How diesel-async renders a mysql_async error that is not a server error: it flattens it
/// to `DatabaseError(Unknown, <mysql_async Display>)`, so the variant survives only as the
/// Display prefix mysql_async gives it. These are the prefixes (and exact driver messages)
/// of the variants that mean the connection is gone; a unit test checks them against
/// mysql_async itself.
const MYSQL_ASYNC_IO_PREFIX: &str = "Input/output error: ";
const MYSQL_ASYNC_CONNECTION_GONE: [&str; 3] = [
    "Driver error: `Connection to the server is closed.'",
    "Driver error: `Pool was disconnected.'",
    "Driver error: `Packet out of order.'",
];

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => StoreError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StoreError::Duplicate(info.message().to_string())
            }
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )
            | Error::BrokenTransactionManager => StoreError::Lost(Cause::new(e)),
            Error::DatabaseError(DatabaseErrorKind::Unknown, ref info)
                if info.message().starts_with(MYSQL_ASYNC_IO_PREFIX)
                    || MYSQL_ASYNC_CONNECTION_GONE.contains(&info.message()) =>
            {
                StoreError::Lost(Cause::new(e))
            }
            other => StoreError::Query(Cause::new(other)),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        StoreError::Connect(Cause::new(e))
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
            StoreError::Unavailable
            | StoreError::Connect(_)
            | StoreError::Lost(_)
            | StoreError::Timeout => {
                if matches!(e, StoreError::Connect(_) | StoreError::Lost(_)) {
                    log::warn!("{}", error_chain(&e));
                }
                AppError::StorageUnavailable(
                    "storage unavailable: the database is not reachable, try again shortly".into(),
                )
            }
            StoreError::NotFound => AppError::NotFound("not found".into()),
            StoreError::Duplicate(m) => AppError::InvalidRequest(format!("duplicate value: {m}")),
            StoreError::Query(cause) => AppError::Internal(format!("mysql: {}", cause.chain())),
        }
    }
}

impl From<CacheError> for AppError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Decode(m) => AppError::Internal(m),
            // An error Redis answered (LOADING, OOM, READONLY, …) is as unusable for this
            // request as an outage: 503 too, with the cause in the log.
            CacheError::Unavailable
            | CacheError::Lost(_)
            | CacheError::Timeout
            | CacheError::Command(_) => {
                if matches!(e, CacheError::Lost(_) | CacheError::Command(_)) {
                    log::warn!("{}", error_chain(&e));
                }
                AppError::StorageUnavailable(
                    "storage unavailable: the cache is not reachable, try again shortly".into(),
                )
            }
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

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    use super::*;

    /// What diesel-async makes of a mysql_async error that is not a server error.
    fn flattened(text: &str) -> DieselError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(text.to_string()))
    }

    #[test]
    fn a_dropped_mysql_connection_is_an_outage_with_its_cause() {
        for text in [
            "Input/output error: Input/output error: Connection reset by peer (os error 104)",
            "Input/output error: Input/output error: broken pipe",
            "Driver error: `Connection to the server is closed.'",
        ] {
            let error = StoreError::from(flattened(text));
            assert!(matches!(error, StoreError::Lost(_)), "{text}: {error:?}");
            assert!(error.is_outage());
            let source = std::error::Error::source(&error).expect("the cause is kept");
            assert_eq!(source.to_string(), text);
            assert_eq!(
                error_chain(&error),
                format!("mysql connection lost: {text}")
            );
        }
        let closed = DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("gone".to_string()),
        );
        assert!(matches!(StoreError::from(closed), StoreError::Lost(_)));
    }

    #[test]
    fn a_query_error_mentioning_a_connection_is_not_an_outage() {
        // The old rule searched the text for "connection": these were taken for outages.
        for text in [
            "Unknown column 'connection_id' in 'field list'",
            "Table 'crt.connections' doesn't exist",
        ] {
            let error = StoreError::from(flattened(text));
            assert!(matches!(error, StoreError::Query(_)), "{text}: {error:?}");
            assert!(!error.is_outage(), "{text}");
            assert_eq!(error.to_string(), format!("mysql error: {text}"));
        }
    }

    #[test]
    fn unique_violation_and_not_found_keep_their_meaning() {
        let dup = DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("Duplicate entry 'x' for key 'name'".to_string()),
        );
        assert_eq!(
            StoreError::from(dup),
            StoreError::Duplicate("Duplicate entry 'x' for key 'name'".into())
        );
        assert_eq!(
            StoreError::from(DieselError::NotFound),
            StoreError::NotFound
        );
    }

    #[test]
    fn redis_errors_are_sorted_by_kind_and_keep_their_cause() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let error = CacheError::from(refused);
        assert!(matches!(error, CacheError::Lost(_)), "{error:?}");
        assert!(error.is_outage());
        assert!(std::error::Error::source(&error).is_some());

        let wrong_type = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value".to_string(),
        ));
        let error = CacheError::from(wrong_type);
        assert!(matches!(error, CacheError::Command(_)), "{error:?}");
        assert!(!error.is_outage());
        assert!(
            error_chain(&error).contains("wrong kind of value"),
            "{error}"
        );
    }
}
