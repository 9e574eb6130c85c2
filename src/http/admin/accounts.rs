//! `/admin/claude-accounts` (and the CRS alias `/admin/claude-console-accounts`): list,
//! create, get, update, delete, toggle schedulable, reset status, refresh token, usage.

use actix_web::{HttpResponse, web};
use serde_json::Value;

use super::{AdminAuth, Params, ok};
use crate::domain::account::AccountType;
use crate::domain::oauth_flow::FlowKind;
use crate::service::AdminError;
use crate::service::accounts as service;
use crate::service::onboarding;
use crate::service::reports;

pub fn routes(cfg: &mut web::ServiceConfig) {
    for base in ["/claude-accounts", "/claude-console-accounts"] {
        cfg.route(&format!("{base}/{{id}}"), web::get().to(get))
            .route(&format!("{base}/{{id}}"), web::put().to(update))
            .route(&format!("{base}/{{id}}"), web::delete().to(delete))
            .route(
                &format!("{base}/{{id}}/toggle-schedulable"),
                web::put().to(toggle_schedulable),
            )
            .route(
                &format!("{base}/{{id}}/toggle-schedulable"),
                web::post().to(toggle_schedulable),
            )
            .route(
                &format!("{base}/{{id}}/reset-status"),
                web::post().to(reset_status),
            )
            .route(&format!("{base}/{{id}}/usage"), web::get().to(usage));
    }
    cfg.route(
        "/claude-accounts/generate-auth-url",
        web::post().to(generate_auth_url),
    )
    .route(
        "/claude-accounts/generate-setup-token-url",
        web::post().to(generate_setup_token_url),
    )
    .route(
        "/claude-accounts/exchange-code",
        web::post().to(exchange_code),
    )
    .route(
        "/claude-accounts/exchange-setup-token-code",
        web::post().to(exchange_setup_token_code),
    );
    cfg.route("/claude-accounts", web::get().to(list))
        .route("/claude-accounts", web::post().to(create))
        .route("/claude-accounts/{id}/refresh", web::post().to(refresh))
        .route("/claude-console-accounts", web::get().to(list_console))
        .route("/claude-console-accounts", web::post().to(create_console));
}

async fn generate_auth_url(auth: AdminAuth) -> Result<HttpResponse, AdminError> {
    Ok(ok(onboarding::start(&auth.ctx, FlowKind::Login).await?))
}

async fn generate_setup_token_url(auth: AdminAuth) -> Result<HttpResponse, AdminError> {
    Ok(ok(onboarding::start(&auth.ctx, FlowKind::SetupToken).await?))
}

async fn exchange_code(
    auth: AdminAuth,
    body: web::Json<Value>,
) -> Result<HttpResponse, AdminError> {
    Ok(ok(
        onboarding::exchange(&auth.ctx, &body, FlowKind::Login).await?
    ))
}

async fn exchange_setup_token_code(
    auth: AdminAuth,
    body: web::Json<Value>,
) -> Result<HttpResponse, AdminError> {
    Ok(ok(onboarding::exchange(
        &auth.ctx,
        &body,
        FlowKind::SetupToken,
    )
    .await?))
}

async fn list(auth: AdminAuth) -> Result<HttpResponse, AdminError> {
    let accounts = auth.ctx.router.list_accounts_report().await?;
    Ok(ok(service::views_with_usage(&auth.ctx, &accounts).await))
}

async fn list_console(auth: AdminAuth) -> Result<HttpResponse, AdminError> {
    let mut accounts = auth.ctx.router.list_accounts_report().await?;
    accounts.retain(|a| a.account_type == AccountType::ClaudeConsole);
    Ok(ok(service::views_with_usage(&auth.ctx, &accounts).await))
}

async fn create(auth: AdminAuth, body: web::Json<Value>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::create(&auth.ctx, &body, None).await?))
}

async fn create_console(
    auth: AdminAuth,
    body: web::Json<Value>,
) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::create(
        &auth.ctx,
        &body,
        Some(AccountType::ClaudeConsole),
    )
    .await?))
}

async fn get(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let a = service::load(&auth.ctx, &id).await?;
    Ok(ok(service::view_with_usage(&auth.ctx, &a).await))
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

async fn toggle_schedulable(
    auth: AdminAuth,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::toggle_schedulable(&auth.ctx, &id).await?))
}

async fn reset_status(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::reset_status(&auth.ctx, &id).await?))
}

async fn refresh(auth: AdminAuth, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    Ok(ok(service::refresh(&auth.ctx, &id).await?))
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
    let a = service::load(&auth.ctx, &id).await?;
    Ok(ok(
        reports::subject_usage(&auth.ctx, &a.id, true, from, to).await?
    ))
}
