//! The client API (SPEC §4): messages (and aliases), count_tokens, models, key-info, usage.
//! Thin: the work is in `crate::relay`.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde_json::json;

use crate::domain::limits;
use crate::error::AppError;
use crate::relay::auth;
use crate::relay::dialect::Dialect;
use crate::relay::pipeline::{self, Endpoint, RelayShared};
use crate::relay::upstream::UpstreamClients;

pub fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["/api", "/claude", ""] {
        cfg.route(&format!("{prefix}/v1/messages"), web::post().to(messages))
            .route(
                &format!("{prefix}/v1/messages/count_tokens"),
                web::post().to(count_tokens),
            );
    }
    cfg.route("/api/v1/models", web::get().to(models))
        .route("/v1/models", web::get().to(models))
        .route("/api/v1/key-info", web::get().to(key_info))
        .route("/api/v1/usage", web::get().to(usage));
}

async fn messages(
    shared: web::Data<RelayShared>,
    clients: web::Data<UpstreamClients>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    pipeline::relay(
        &shared,
        &clients,
        &req,
        body,
        Endpoint::Messages,
        Dialect::Anthropic,
    )
    .await
}

async fn count_tokens(
    shared: web::Data<RelayShared>,
    clients: web::Data<UpstreamClients>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    pipeline::relay(
        &shared,
        &clients,
        &req,
        body,
        Endpoint::CountTokens,
        Dialect::Anthropic,
    )
    .await
}

async fn models(
    shared: web::Data<RelayShared>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    model_list(&shared, &req).await
}

/// The Claude models of the price table, in the `{"object":"list"}` shape both the
/// Anthropic and the OpenAI clients read.
pub(crate) async fn model_list(
    shared: &RelayShared,
    req: &HttpRequest,
) -> Result<HttpResponse, AppError> {
    authenticated(shared, req).await?;
    let mut names: Vec<&str> = shared
        .prices
        .model_names()
        .filter(|m| m.starts_with("claude-"))
        .collect();
    names.sort_unstable();
    let data: Vec<_> = names
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "anthropic" }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "object": "list", "data": data })))
}

async fn authenticated(
    shared: &RelayShared,
    req: &HttpRequest,
) -> Result<std::sync::Arc<crate::domain::api_key::ApiKey>, AppError> {
    let key = auth::authenticate(
        &shared.router,
        auth::extract_key(req),
        &shared.config.api_key_prefix,
        &shared.encryption_key,
        None,
    )
    .await?;
    auth::check_client(&key, req, None)?;
    Ok(key)
}

/// Micro-dollars as USD.
fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

async fn key_info(
    shared: web::Data<RelayShared>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    let key = authenticated(&shared, &req).await?;
    let names = limits::key_counter_names(
        &key.id,
        Utc::now(),
        shared.config.timezone_offset_hours,
        key.weekly_reset_day,
        key.weekly_reset_hour,
    );
    let counters = shared
        .router
        .read_counters(vec![names.daily, names.total, names.weekly_opus])
        .await?;
    let concurrency = shared
        .router
        .count_leases(&format!("key:{}", key.id))
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "id": key.id,
        "name": key.name,
        "isActive": key.is_active,
        "permissions": key.permissions,
        "expiresAt": key.effective_expiry(),
        "limits": {
            "concurrencyLimit": key.concurrency_limit,
            "rateLimitWindow": key.rate_limit_window_minutes,
            "rateLimitRequests": key.rate_limit_requests,
            "rateLimitCost": usd(key.rate_limit_cost_micros),
            "tokenLimit": key.token_limit,
            "dailyCostLimit": usd(key.daily_cost_limit_micros),
            "totalCostLimit": usd(key.total_cost_limit_micros),
            "weeklyOpusCostLimit": usd(key.weekly_opus_cost_limit_micros),
        },
        "usage": {
            "currentConcurrency": concurrency,
            "dailyCost": usd(counters[0].cost_micros),
            "totalCost": usd(counters[1].cost_micros),
            "weeklyOpusCost": usd(counters[2].cost_micros),
        },
    })))
}

async fn usage(shared: web::Data<RelayShared>, req: HttpRequest) -> Result<HttpResponse, AppError> {
    let key = authenticated(&shared, &req).await?;
    let local = limits::to_local(Utc::now(), shared.config.timezone_offset_hours);
    let owner = format!("key:{}", key.id);
    let names: Vec<String> = limits::period_names(&owner, local)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let c = shared.router.read_counters(names).await?;
    let view = |c: &limits::Counters| {
        json!({
            "requests": c.requests,
            "inputTokens": c.input_tokens,
            "outputTokens": c.output_tokens,
            "cacheCreateTokens": c.cache_create_tokens,
            "cacheReadTokens": c.cache_read_tokens,
            "allTokens": c.tokens(),
            "cost": usd(c.cost_micros),
        })
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": key.id,
        "name": key.name,
        "total": view(&c[0]),
        "month": view(&c[1]),
        "day": view(&c[2]),
        "hour": view(&c[3]),
    })))
}
