//! `/admin/system` (mode, backend states, usage backlog, cache hit rate) and `/admin/audit`
//! (the audit log, newest first).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{AdminAuth, Params, param_int, param_str};
use crate::domain::audit::AuditFilter;
use crate::service::AdminError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/system", web::get().to(system))
        .route("/audit", web::get().to(audit));
}

const HEALTH_WAIT: Duration = Duration::from_secs(1);

async fn system(auth: AdminAuth) -> Result<HttpResponse, AdminError> {
    let router = &auth.ctx.router;
    let health = router.health(HEALTH_WAIT).await.ok_or_else(|| {
        AdminError::from(crate::error::AppError::Internal(
            "router did not answer".into(),
        ))
    })?;
    let usage = router.usage_stats().await;
    let cache = router.cache_stats().await;
    let lookups = cache.key_cache_hits + cache.key_cache_misses;
    let hit_rate = if lookups == 0 {
        0.0
    } else {
        cache.key_cache_hits as f64 / lookups as f64
    };
    Ok(super::ok(json!({
        "mode": health.mode.as_str(),
        "status": health.status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": health.uptime.as_secs(),
        "backends": {
            "redis": health.redis,
            "mysql": health.mysql,
            "redisTopology": auth.ctx.config.redis.topology.as_str(),
            "mysqlReplicas": router.pool_status().await.replicas,
        },
        "usageBacklog": health.usage_backlog,
        "usage": usage,
        "cache": {
            "keyCacheHits": cache.key_cache_hits,
            "keyCacheMisses": cache.key_cache_misses,
            "hitRate": hit_rate,
        },
    })))
}

/// `GET /admin/audit?limit&offset&targetType&targetId&action`.
async fn audit(auth: AdminAuth, params: Params) -> Result<HttpResponse, AdminError> {
    let filter = AuditFilter {
        target_type: param_str(&params, "targetType"),
        target_id: param_str(&params, "targetId"),
        action: param_str(&params, "action"),
        limit: param_int(&params, "limit", 1, 1000)?.unwrap_or(100),
        offset: param_int(&params, "offset", 0, i64::from(u32::MAX))?.unwrap_or(0),
    };
    let (limit, offset) = (filter.limit, filter.offset);
    let (entries, total) = auth.ctx.router.list_audit(filter).await?;
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "data": entries,
        "pagination": { "limit": limit, "offset": offset, "total": total },
    })))
}
