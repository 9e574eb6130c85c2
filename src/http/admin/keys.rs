//! `/admin/api-keys`: list (pages, search, tag / active filters), create, batch create, get,
//! update, enable / disable, soft delete, restore, permanent delete, regenerate, usage by
//! day and model, recent usage records.

use actix_web::{HttpResponse, web};
use serde_json::Value;

use super::{AdminAuth, Params, ok, param_bool, param_int, param_str};
use crate::service::AdminError;
use crate::service::keys::{self as service, KeyQuery};
use crate::service::reports::{self, RecordView};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api-keys", web::get().to(list))
        .route("/api-keys", web::post().to(create))
        .route("/api-keys/batch", web::post().to(batch_create))
        .route("/api-keys/deleted", web::get().to(list_deleted))
        .route("/api-keys/{id}", web::get().to(get))
        .route("/api-keys/{id}", web::put().to(update))
        .route("/api-keys/{id}", web::delete().to(soft_delete))
        .route("/api-keys/{id}/enable", web::post().to(enable))
        .route("/api-keys/{id}/disable", web::post().to(disable))
        .route("/api-keys/{id}/restore", web::post().to(restore))
        .route("/api-keys/{id}/permanent", web::delete().to(purge))
        .route("/api-keys/{id}/regenerate", web::post().to(regenerate))
        .route("/api-keys/{id}/usage", web::get().to(usage))
        .route("/api-keys/{id}/usage/records", web::get().to(records));
}

const MAX_PAGE_SIZE: i64 = 1000;
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_RECORDS: i64 = 1000;

fn query(params: &Params) -> Result<KeyQuery, AdminError> {
    let page = param_int(params, "page", 1, i64::from(u32::MAX))?;
    let page_size = param_int(params, "pageSize", 1, MAX_PAGE_SIZE)?;
    let deleted = match param_str(params, "status").as_deref() {
        None | Some("active") => None,
        Some("deleted") => Some(true),
        Some("all") => Some(false),
        Some(_) => {
            return Err(AdminError::field(
                "status",
                "must be one of: active, deleted, all",
            ));
        }
    };
    Ok(KeyQuery {
        search: param_str(params, "search"),
        tag: param_str(params, "tag"),
        active: param_bool(params, "isActive")?.or(param_bool(params, "active")?),
        deleted,
        // A page size alone asks for the first page.
        page: page
            .or(page_size.map(|_| 1))
            .map(|p| usize::try_from(p).unwrap_or(1)),
        page_size: usize::try_from(page_size.unwrap_or(DEFAULT_PAGE_SIZE)).unwrap_or(1),
    })
}

async fn respond_list(auth: &AdminAuth, q: KeyQuery) -> Result<HttpResponse, AdminError> {
    let (data, page) = service::list(&auth.ctx, &q).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "success": true,
        "data": data,
        "pagination": page,
    })))
}

async fn list(auth: AdminAuth, params: Params) -> Result<HttpResponse, AdminError> {
    let q = query(&params)?;
    respond_list(&auth, q).await
}

async fn list_deleted(auth: AdminAuth, params: Params) -> Result<HttpResponse, AdminError> {
    let q = KeyQuery {
        deleted: Some(true),
        ..query(&params)?
    };
    respond_list(&auth, q).await
}

async fn create(auth: AdminAuth, body: web::Json<Value>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::create(&auth.ctx, &body).await?))
}

async fn batch_create(auth: AdminAuth, body: web::Json<Value>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::batch_create(&auth.ctx, &body).await?))
}

async fn get(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let key = service::load(&auth.ctx, &id).await?;
    Ok(ok(service::KeyView::from(&key)))
}

async fn update(
    auth: AdminAuth,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::update(&auth.ctx, &id, &body).await?))
}

async fn enable(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::set_active(&auth.ctx, &id, true).await?))
}

async fn disable(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::set_active(&auth.ctx, &id, false).await?))
}

async fn soft_delete(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::soft_delete(&auth.ctx, &id).await?))
}

async fn restore(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::restore(&auth.ctx, &id).await?))
}

async fn purge(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    service::purge(&auth.ctx, &id).await?;
    Ok(ok(
        serde_json::json!({ "id": id.into_inner(), "deleted": true }),
    ))
}

async fn regenerate(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::regenerate(&auth.ctx, &id).await?))
}

async fn usage(
    auth: AdminAuth,
    id: web::Path<String>,
    params: Params,
) -> Result<HttpResponse, AdminError> {
    let (from, to) = reports::date_range(
        params.get("from").map(String::as_str),
        params.get("to").map(String::as_str),
        30,
        auth.ctx.config.timezone_offset_hours,
    )?;
    let key = service::load(&auth.ctx, &id).await?;
    Ok(ok(reports::subject_usage(
        &auth.ctx, &key.id, false, from, to,
    )
    .await?))
}

async fn records(
    auth: AdminAuth,
    id: web::Path<String>,
    params: Params,
) -> Result<HttpResponse, AdminError> {
    let limit =
        usize::try_from(param_int(&params, "limit", 1, MAX_RECORDS)?.unwrap_or(100)).unwrap_or(1);
    let key = service::load(&auth.ctx, &id).await?;
    let events = auth.ctx.router.recent_usage(&key.id, limit).await?;
    Ok(ok(events.iter().map(RecordView::from).collect::<Vec<_>>()))
}
