//! `/admin/account-groups` (CRS paths): list, create, get, update, delete, and members.

use actix_web::{HttpResponse, web};
use serde_json::Value;

use super::{AdminAuth, ok};
use crate::service::AdminError;
use crate::service::groups as service;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/account-groups", web::get().to(list))
        .route("/account-groups", web::post().to(create))
        .route("/account-groups/{id}", web::get().to(get))
        .route("/account-groups/{id}", web::put().to(update))
        .route("/account-groups/{id}", web::delete().to(delete))
        .route("/account-groups/{id}/members", web::get().to(members))
        .route("/account-groups/{id}/members", web::post().to(add_member))
        .route(
            "/account-groups/{id}/members/{account_id}",
            web::delete().to(remove_member),
        );
}

async fn list(auth: AdminAuth) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::list(&auth.ctx).await?))
}

async fn create(auth: AdminAuth, body: web::Json<Value>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::create(&auth.ctx, &body).await?))
}

async fn get(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::get(&auth.ctx, &id).await?))
}

async fn update(
    auth: AdminAuth,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::update(&auth.ctx, &id, &body).await?))
}

async fn delete(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    service::delete(&auth.ctx, &id).await?;
    Ok(ok(
        serde_json::json!({ "id": id.into_inner(), "deleted": true }),
    ))
}

async fn members(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::members(&auth.ctx, &id).await?))
}

async fn add_member(
    auth: AdminAuth,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::add_member(&auth.ctx, &id, &body).await?))
}

async fn remove_member(
    auth: AdminAuth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    let (id, account_id) = path.into_inner();
    Ok(ok(
        service::remove_member(&auth.ctx, &id, &account_id).await?
    ))
}
