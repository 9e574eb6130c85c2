//! `/health`, `/health/live`, `/health/ready` (SPEC §9). Answers from the router's memory,
//! so a hanging backend never delays them. Until every backend was probed once, `/health`
//! says `starting` and `/health/ready` 503: an unknown state is not a down one.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::actors::router::HealthStatus;

/// How long /health waits for the router before answering on its own.
const ROUTER_WAIT: Duration = Duration::from_millis(800);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    let version = env!("CARGO_PKG_VERSION");
    let Some(report) = state.router.health(ROUTER_WAIT).await else {
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "unhealthy",
            "mode": state.config.mode.as_str(),
            "version": version,
            "error": "router did not answer",
        }));
    };
    let mut databases = json!({ "redis": report.redis, "mysql": report.mysql });
    if !state.config.mysql.replicas.is_empty() {
        // Answered from the persistence actor's memory (its last probes), bounded anyway.
        let replicas = tokio::time::timeout(ROUTER_WAIT, state.router.pool_status())
            .await
            .map(|pool| pool.replicas)
            .unwrap_or_default();
        databases["mysqlReplicas"] = json!(replicas);
    }
    let body = json!({
        "status": report.status,
        "mode": report.mode.as_str(),
        "version": version,
        "uptime": report.uptime.as_secs(),
        "databases": databases,
        "usageBacklog": report.usage_backlog,
    });
    match report.status {
        HealthStatus::Unhealthy | HealthStatus::Starting => {
            HttpResponse::ServiceUnavailable().json(body)
        }
        _ => HttpResponse::Ok().json(body),
    }
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.router.health(ROUTER_WAIT).await {
        Some(r) if matches!(r.status, HealthStatus::Healthy | HealthStatus::Degraded) => {
            HttpResponse::Ok().json(json!({ "status": "ready", "health": r.status }))
        }
        Some(r) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not_ready", "health": r.status })),
        None => HttpResponse::ServiceUnavailable().json(json!({ "status": "not_ready" })),
    }
}
