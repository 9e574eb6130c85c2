//! The HTTP layer: routes, shared state, and the mapping of every error (ours and actix's
//! own) to the JSON error shape of SPEC §4. Handlers are thin: they call the router.

pub mod admin;
pub mod console;
pub mod edge;
pub mod health;
pub mod metrics;
pub mod openai;
pub mod relay;

pub use edge::Edge;

use std::sync::Arc;

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
