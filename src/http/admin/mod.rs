//! The admin API (SPEC §8): `/web/auth/*` and `/admin/*`, CRS paths, `{"success":true,
//! "data":…}` answers and `{"success":false,"error":code,"message":…}` errors. Handlers are
//! thin: they authenticate (`AdminAuth`), read the request and call `crate::service`.

pub mod accounts;
pub mod auth;
pub mod groups;
pub mod keys;
pub mod system;
pub mod usage;

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use serde::Serialize;

pub use auth::AdminAuth;

use crate::error::AppError;
use crate::service::AdminError;

/// Largest admin request body.
const BODY_LIMIT: usize = 1024 * 1024;

/// Registers the admin routes; body, path and query errors answer in the admin shape.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(BODY_LIMIT)
        .error_handler(|e, _| {
            AdminError::invalid(format!("the request body is not valid JSON: {e}")).into()
        });
    let query = web::QueryConfig::default()
        .error_handler(|e, _| AdminError::invalid(format!("bad query string: {e}")).into());
    cfg.service(
        web::scope("/web/auth")
            .app_data(json.clone())
            .configure(auth::routes),
    )
    .service(
        web::scope("/admin")
            .app_data(json)
            .app_data(query)
            .configure(keys::routes)
            .configure(accounts::routes)
            .configure(groups::routes)
            .configure(usage::routes)
            .configure(system::routes)
            .default_service(web::to(unknown_route)),
    );
}

/// Unknown `/admin/*` paths: 401 without valid credentials, 404 with them.
async fn unknown_route(_auth: AdminAuth) -> Result<HttpResponse, AdminError> {
    Err(AdminError::not_found("no such admin route"))
}

/// `{"success":true,"data":data}`.
pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "success": true, "data": data }))
}

/// Query parameters as a map (values parsed by the handlers, errors naming the parameter).
pub type Params = web::Query<HashMap<String, String>>;

/// An optional whole-number query parameter in `min..=max`.
pub fn param_int(
    params: &HashMap<String, String>,
    name: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, AdminError> {
    match params.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(AdminError::field(
                name,
                format!("must be a whole number between {min} and {max}"),
            )),
        },
    }
}

/// An optional boolean query parameter (`true` / `false`).
pub fn param_bool(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<bool>, AdminError> {
    match params.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some("true") | Some("1") => Ok(Some(true)),
        Some("false") | Some("0") => Ok(Some(false)),
        Some(_) => Err(AdminError::field(name, "must be true or false")),
    }
}

/// An optional non-empty text query parameter.
pub fn param_str(params: &HashMap<String, String>, name: &str) -> Option<String> {
    params
        .get(name)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        self.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        if let AppError::Internal(detail) = &self.error {
            log::error!("admin api internal error: {detail}");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let AppError::RateLimited {
            retry_after_secs, ..
        } = &self.error
        {
            response.insert_header(("retry-after", retry_after_secs.to_string()));
        }
        response.json(self.body())
    }
}
