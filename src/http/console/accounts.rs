//! Upstream accounts in the console: the list (status, cool-down, priority, schedulable,
//! last used), add a console account, add an OAuth account by pasting its credentials
//! JSON, edit, reset status, toggle schedulable, delete, and the account's usage. Every
//! change goes through `service::accounts` (its rules, sealing and audit entries).

use actix_web::web;
use chrono::{Duration, Utc};
use maud::html;

use super::layout::{self, action_button, count, csrf_field, limit, money, when};
use super::{BASE, Form, Page, Session, chart, form_json, html, redirect};
use crate::domain::account::AccountType;
use crate::domain::usage_event::local_date;
use crate::service::AdminError;
use crate::service::accounts::{self as service, AccountView};
use crate::service::reports;

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Before `/accounts/{id}`, which would take `subscription` for an id.
    super::subscription::routes(cfg);
    cfg.route("/accounts", web::get().to(list))
        .route("/accounts/console", web::post().to(create_console))
        .route("/accounts/oauth", web::post().to(create_oauth))
        .route("/accounts/{id}", web::get().to(show))
        .route("/accounts/{id}", web::post().to(update))
        .route("/accounts/{id}/{action}", web::post().to(act));
}

const USAGE_DAYS: i64 = 30;

async fn list(s: Session) -> Page {
    let accounts = s.ctx.router.list_accounts_report().await?;
    let views: Vec<AccountView> = accounts.iter().map(|a| service::view(&s.ctx, a)).collect();
    let health = layout::health(&s.ctx.router).await;
    let body = html! {
        div.table-wrap {
            table id="accounts" {
                thead { tr { th { "Name" } th { "Type" } th { "Status" } th { "Cool-down until" } th.num { "Priority" } th { "Schedulable" } th { "Last used" } } }
                tbody {
                    @for a in &views {
                        tr {
                            td { a href={(BASE) "/accounts/" (a.id)} class="account-name" { (a.name) } }
                            td { (a.account_type) }
                            td { (a.status) @if !a.is_active { " (inactive)" } }
                            td { (when(a.status_until)) }
                            td.num { (a.priority) }
                            td { @if a.schedulable { "yes" } @else { "no" } }
                            td { (when(a.last_used_at)) }
                        }
                    }
                    @if views.is_empty() { tr { td colspan="7" { "No accounts yet: add one below." } } }
                }
            }
        }
        div.grid2 {
            section {
                h2 { "Add a console account" }
                form.stack method="post" action={(BASE) "/accounts/console"} id="add-console-account" {
                    (csrf_field(&s))
                    label { "Name" input type="text" name="name" id="console-name" required; }
                    label { "API URL" input type="text" name="baseUrl" id="console-url" placeholder="https://api.anthropic.com" required; }
                    label { "API key" input type="password" name="apiKey" id="console-key" autocomplete="off" required; }
                    label { "Priority (1 = first)" input type="number" min="1" max="100" name="priority" value="50"; }
                    label { "Proxy URL (optional)" input type="text" name="proxy" placeholder="socks5://user:pass@host:1080"; }
                    div { button type="submit" id="add-console" { "Add account" } }
                }
            }
            section {
                h2 { "Add an OAuth account" }
                form.stack method="post" action={(BASE) "/accounts/oauth"} id="add-oauth-account" {
                    (csrf_field(&s))
                    label { "Name" input type="text" name="name" required; }
                    label { "Credentials JSON (as Claude Code stores it: {\"claudeAiOauth\": {\"accessToken\": …, \"refreshToken\": …, \"expiresAt\": …}})"
                        textarea name="credentials" required {} }
                    label { "Priority (1 = first)" input type="number" min="1" max="100" name="priority" value="50"; }
                    label { "Proxy URL (optional)" input type="text" name="proxy"; }
                    div { button type="submit" { "Add account" } }
                }
            }
        }
        (super::subscription::add_form(&s))
    };
    Ok(html(layout::page(&s, health.as_ref(), "Accounts", body)))
}

async fn create_console(s: Session, form: Form) -> Page {
    s.check_csrf(&form)?;
    let body = form_json(&form, &[]);
    let view = service::create(&s.ctx, &body, Some(AccountType::ClaudeConsole)).await;
    // The console alias names the URL `apiUrl`; this form calls it `baseUrl`.
    let view = view.map_err(|e| match e.field.as_deref() {
        Some("apiUrl") => AdminError::field("baseUrl", "is required"),
        _ => e,
    })?;
    Ok(redirect(&format!("{BASE}/accounts/{}", view.id)))
}

async fn create_oauth(s: Session, form: Form) -> Page {
    s.check_csrf(&form)?;
    let raw = form.get("credentials").map(|c| c.trim()).unwrap_or("");
    let credentials: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| AdminError::field("credentials", format!("is not valid JSON: {e}")))?;
    if !credentials.is_object() {
        return Err(AdminError::field("credentials", "must be a JSON object").into());
    }
    let mut body = credentials;
    for name in ["name", "priority", "proxy"] {
        if let Some(v) = form.get(name) {
            body[name] = v.clone().into();
        }
    }
    body["type"] = "claude-oauth".into();
    let view = service::create(&s.ctx, &body, None).await?;
    Ok(redirect(&format!("{BASE}/accounts/{}", view.id)))
}

async fn update(s: Session, id: web::Path<String>, form: Form) -> Page {
    s.check_csrf(&form)?;
    let mut body = form_json(&form, &["schedulable", "isActive"]);
    // Empty secret fields keep the stored secret.
    for secret in ["apiKey", "baseUrl"] {
        if form.get(secret).is_some_and(|v| v.trim().is_empty())
            && let Some(map) = body.as_object_mut()
        {
            map.remove(secret);
        }
    }
    service::update(&s.ctx, &id, &body).await?;
    Ok(redirect(&format!("{BASE}/accounts/{id}?saved=1")))
}

async fn act(s: Session, path: web::Path<(String, String)>, form: Form) -> Page {
    s.check_csrf(&form)?;
    let (id, action) = path.into_inner();
    match action.as_str() {
        "reset-status" => service::reset_status(&s.ctx, &id).await.map(drop)?,
        "toggle-schedulable" => service::toggle_schedulable(&s.ctx, &id).await.map(drop)?,
        "delete" => {
            service::delete(&s.ctx, &id).await?;
            return Ok(redirect(&format!("{BASE}/accounts")));
        }
        _ => return Err(AdminError::not_found("no such account action").into()),
    }
    Ok(redirect(&format!("{BASE}/accounts/{id}")))
}

async fn show(
    s: Session,
    id: web::Path<String>,
    params: web::Query<std::collections::HashMap<String, String>>,
) -> Page {
    let account = service::load(&s.ctx, &id).await?;
    let a = service::view_with_usage(&s.ctx, &account).await;
    let health = layout::health(&s.ctx.router).await;
    let today = local_date(Utc::now(), s.ctx.config.timezone_offset_hours);
    let from = today - Duration::days(USAGE_DAYS - 1);
    let usage = reports::subject_usage(&s.ctx, &a.id, true, from, today).await;
    let base = format!("{BASE}/accounts/{}", a.id);
    let body = html! {
        @if params.get("saved").is_some() { p.notice role="status" { "Saved." } }
        @if params.get("added").is_some() { p.notice role="status" id="account-added" { "Subscription connected." } }
        dl.facts {
            dt { "Name" } dd { (a.name) }
            dt { "Type" } dd { (a.account_type) }
            dt { "Status" } dd id="account-status" { (a.status) }
            @if !a.error_message.is_empty() { dt { "Last error" } dd { (a.error_message) } }
            dt { "Cool-down until" } dd { (when(a.status_until)) }
            dt { "Priority" } dd { (a.priority) }
            dt { "Schedulable" } dd { @if a.schedulable { "yes" } @else { "no" } }
            dt { "URL" } dd { (a.base_url.as_deref().unwrap_or("default")) }
            dt { "Proxy" } dd { (a.proxy.as_deref().unwrap_or("none")) }
            dt { "Token expires" } dd { (when(a.token_expires_at)) }
            dt { "Last used" } dd { (when(a.last_used_at)) }
            dt { "Daily quota" } dd id="daily-quota" { (limit(money(a.daily_quota), a.daily_quota == 0.0)) }
            dt { "Cost today" } dd id="daily-usage" { (a.daily_usage.map_or_else(|| "not available".to_string(), money)) }
        }
        @if a.account_type == AccountType::ClaudeOauth.as_str() || a.session_window.window_start.is_some() {
            h2 { "5-hour window" }
            @let w = &a.session_window;
            dl.facts id="session-window" {
                dt { "Start" } dd id="window-start" { (when(w.window_start)) }
                dt { "End" } dd id="window-end" { (when(w.window_end)) }
                dt { "Status" } dd id="window-status" {
                    @if w.has_active_window { "active" } @else { "no active window" }
                    @if let Some(st) = w.session_window_status { " (" (st) ")" }
                }
                @if w.has_active_window {
                    dt { "Progress" } dd { (w.progress) "% gone" @if let Some(m) = w.remaining_time { ", " (m) " min left" } }
                }
                dt { "Stop on warning" } dd id="auto-stop" {
                    @if a.auto_stop_on_warning { "yes" } @else { "no" }
                    @if a.five_hour_auto_stopped { " (stopped for the rest of this window)" }
                }
            }
        }
        @if let Some(p) = &a.subscription_info {
            h2 { "Subscription" }
            dl.facts id="profile" {
                dt { "Email" } dd id="profile-email" { (p.email.as_deref().unwrap_or("—")) }
                dt { "Organization" } dd id="profile-organization" { (p.organization_name.as_deref().unwrap_or("—")) }
                dt { "Subscription" } dd id="profile-subscription" { (p.subscription_type.as_deref().unwrap_or("—")) }
                dt { "Read" } dd { (when(p.profile_fetched_at)) }
            }
        }
        h2 { "Actions" }
        div.actions {
            (action_button(&s, &format!("{base}/reset-status"), "Reset status", "reset-status"))
            (action_button(&s, &format!("{base}/toggle-schedulable"), if a.schedulable { "Stop scheduling" } else { "Schedule again" }, "toggle-schedulable"))
            form.inline method="post" action={(base) "/delete"} data-confirm="Delete this account?" {
                (csrf_field(&s)) button.danger type="submit" { "Delete" }
            }
        }
        h2 { "Usage, last 30 days" }
        @match &usage {
            Ok(u) => {
                div.cards {
                    div.card { div.label { "Requests" } div.value { (count(u.totals.requests)) } }
                    div.card { div.label { "Tokens" } div.value { (count(u.totals.all_tokens)) } }
                    div.card { div.label { "Cost" } div.value { (money(u.totals.cost)) } }
                }
                @let points: Vec<(String, f64)> = (0..USAGE_DAYS).map(|i| {
                    let d = from + Duration::days(i);
                    (d.format("%m-%d").to_string(), u.daily.iter().find(|x| x.date == d).map_or(0.0, |x| x.stats.cost))
                }).collect();
                (chart::bars("Cost per day (USD)", &points, money))
            }
            Err(e) => p.error { "Usage is not available: " (e.to_string()) }
        }
        h2 { "Edit" }
        form.stack method="post" action=(base) {
            (csrf_field(&s))
            div.fields {
                label { "Name" input type="text" name="name" value=(a.name) required; }
                label { "Description" input type="text" name="description" value=(a.description); }
                label { "Priority (1 = first)" input type="number" min="1" max="100" name="priority" value=(a.priority); }
                label { "Max concurrency (0 = none)" input type="number" min="0" name="maxConcurrency" value=(a.max_concurrency); }
                @if a.account_type == AccountType::ClaudeConsole.as_str() {
                    label { "API URL" input type="text" name="baseUrl" value=[a.base_url.as_deref()]; }
                    label { "New API key (empty = keep)" input type="password" name="apiKey" autocomplete="off"; }
                }
                label.check { input type="checkbox" name="schedulable" value="true" checked[a.schedulable]; "Schedulable" }
                label.check { input type="checkbox" name="isActive" value="true" checked[a.is_active]; "Active" }
            }
            div { button type="submit" { "Save" } }
        }
    };
    Ok(html(layout::page(
        &s,
        health.as_ref(),
        &format!("Account {}", a.name),
        body,
    )))
}
