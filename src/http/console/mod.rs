//! The web console at `/admin-next/` (CRS's path): server-rendered pages over the admin
//! services, with the admin API's login session kept in an HttpOnly, SameSite=Strict cookie,
//! a per-session CSRF token on every form that changes something, a strict
//! Content-Security-Policy (no inline script), `X-Frame-Options: DENY`, and a banner while a
//! backend is down. The key holder's page (`/admin-next/api-stats`) is public.

mod accounts;
mod assets;
mod auth;
mod chart;
mod dashboard;
mod keys;
mod layout;
mod session;
mod stats;
mod subscription;
mod usage;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpResponse, ResponseError, web};
use std::collections::HashMap;

use crate::error::AppError;
use crate::service::AdminError;

pub use session::Session;

/// Where the console lives.
pub const BASE: &str = "/admin-next";

/// The Content-Security-Policy of every console answer: own scripts and styles only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Registers `/` (a redirect) and everything under `/admin-next`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let form = web::FormConfig::default()
        .limit(256 * 1024)
        .error_handler(|e, _| {
            ConsoleError::from(AdminError::invalid(format!("bad form data: {e}"))).into()
        });
    let query = web::QueryConfig::default().error_handler(|e, _| {
        ConsoleError::from(AdminError::invalid(format!("bad query string: {e}"))).into()
    });
    cfg.route("/", web::get().to(to_console)).service(
        web::scope(BASE)
            .app_data(form)
            .app_data(query)
            .wrap(from_fn(security_headers))
            .route("", web::get().to(to_console))
            .configure(assets::routes)
            .configure(auth::routes)
            .configure(dashboard::routes)
            .configure(keys::routes)
            .configure(accounts::routes)
            .configure(usage::routes)
            .configure(stats::routes)
            .default_service(web::to(unknown_page)),
    );
}

async fn to_console() -> HttpResponse {
    redirect(&format!("{BASE}/"))
}

async fn unknown_page() -> Result<HttpResponse, ConsoleError> {
    Err(AdminError::not_found("no such page").into())
}

/// 303 See Other to `location` (after a form post, the browser then GETs it).
pub fn redirect(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Adds the security headers to every console answer.
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(res)
}

/// Form fields of a console post.
pub type Form = web::Form<HashMap<String, String>>;

/// A failed console request, shown as an HTML page with the admin error's status and
/// message (the admin API's `AdminError`, rendered for a browser instead of as JSON).
#[derive(Debug)]
pub struct ConsoleError(pub AdminError);

impl From<AdminError> for ConsoleError {
    fn from(e: AdminError) -> Self {
        ConsoleError(e)
    }
}

impl From<AppError> for ConsoleError {
    fn from(e: AppError) -> Self {
        ConsoleError(e.into())
    }
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        self.0.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        if let AppError::Internal(detail) = &self.0.error {
            log::error!("console internal error: {detail}");
        }
        let message = self.0.body()["message"]
            .as_str()
            .unwrap_or("error")
            .to_string();
        let hint = match &self.0.error {
            AppError::StorageUnavailable(_) => Some(
                "A storage backend is down, so changes cannot be saved right now. Nothing was changed; try again when the banner is gone.",
            ),
            AppError::RateLimited { .. } => Some("Too many failed attempts from your address."),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        if let AppError::RateLimited {
            retry_after_secs, ..
        } = &self.0.error
        {
            response.insert_header(("retry-after", retry_after_secs.to_string()));
        }
        response
            .content_type("text/html; charset=utf-8")
            .body(layout::error_page(self.status_code(), &message, hint).into_string())
    }
}

/// The result of a console handler.
pub type Page = Result<HttpResponse, ConsoleError>;

/// An HTML answer.
pub fn html(markup: maud::Markup) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

/// The form fields as the JSON object the admin services read: every non-control field as
/// a string (the services parse numbers, lists and dates leniently, naming the field).
pub fn form_json(form: &HashMap<String, String>, checkboxes: &[&str]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (k, v) in form {
        if k.starts_with('_') {
            continue;
        }
        map.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    for name in checkboxes {
        let on = form.get(*name).is_some_and(|v| v == "true" || v == "on");
        map.insert((*name).to_string(), serde_json::Value::Bool(on));
    }
    serde_json::Value::Object(map)
}

/// A `datetime-local` input value (`YYYY-MM-DDTHH:MM`, taken as UTC) as RFC 3339.
pub fn local_input_to_rfc3339(value: &str) -> Result<String, AdminError> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S"))
        .map(|d| d.and_utc().to_rfc3339())
        .map_err(|_| AdminError::field("expiresAt", "must be a date and time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_become_strings_and_checkboxes_booleans() {
        let form: HashMap<String, String> = [
            ("name", "a"),
            ("_csrf", "t"),
            ("enableModelRestriction", "on"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let json = form_json(&form, &["enableModelRestriction", "isActive"]);
        assert_eq!(
            json,
            serde_json::json!({"name": "a", "enableModelRestriction": true, "isActive": false})
        );
    }

    #[test]
    fn datetime_local_inputs_are_utc() {
        assert_eq!(
            local_input_to_rfc3339("2030-01-02T03:04").unwrap(),
            "2030-01-02T03:04:00+00:00"
        );
        assert_eq!(local_input_to_rfc3339("").unwrap(), "");
        assert_eq!(
            local_input_to_rfc3339("tomorrow")
                .unwrap_err()
                .field
                .as_deref(),
            Some("expiresAt")
        );
    }
}
