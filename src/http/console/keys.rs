//! API keys in the console: the list (search, tag and status filters, pages), create with
//! every limit the admin API accepts (the plaintext shown once, with a copy button), edit,
//! enable / disable, regenerate, delete / restore / purge, and the key's page with its
//! usage by day and model and its recent requests. Every change goes through
//! `service::keys`, so the rules and the audit entries are the admin API's.

use std::collections::HashMap;

use actix_web::web;
use chrono::{Duration, Utc};
use maud::{Markup, html};

use super::layout::{self, action_button, count, csrf_field, limit, money, when};
use super::{BASE, Form, Page, Session, chart, form_json, html, local_input_to_rfc3339, redirect};
use crate::domain::usage_event::local_date;
use crate::service::AdminError;
use crate::service::keys::{self as service, KeyQuery, KeyView};
use crate::service::reports::{self, RecordView};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/keys", web::get().to(list))
        .route("/keys", web::post().to(create))
        .route("/keys/new", web::get().to(new_form))
        .route("/keys/{id}", web::get().to(show))
        .route("/keys/{id}", web::post().to(update))
        .route("/keys/{id}/{action}", web::post().to(act));
}

const PAGE_SIZE: usize = 20;
const RECENT: usize = 20;
const USAGE_DAYS: i64 = 30;

type Params = web::Query<HashMap<String, String>>;

fn param(p: &Params, name: &str) -> Option<String> {
    crate::http::admin::param_str(p, name)
}

async fn list(s: Session, params: Params) -> Page {
    let page = crate::http::admin::param_int(&params, "page", 1, i64::from(u32::MAX))?
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(1);
    let status = param(&params, "status").unwrap_or_else(|| "current".into());
    let (active, deleted) = match status.as_str() {
        "current" => (None, None),
        "enabled" => (Some(true), None),
        "disabled" => (Some(false), None),
        "deleted" => (None, Some(true)),
        "all" => (None, Some(false)),
        _ => {
            return Err(AdminError::field(
                "status",
                "must be one of: current, enabled, disabled, deleted, all",
            )
            .into());
        }
    };
    let search = param(&params, "search");
    let tag = param(&params, "tag");
    let q = KeyQuery {
        search: search.clone(),
        tag: tag.clone(),
        active,
        deleted,
        page: Some(page),
        page_size: PAGE_SIZE,
    };
    let (keys, pages) = service::list(&s.ctx, &q).await?;
    let health = layout::health(&s.ctx.router).await;
    let link = |p: usize| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("page", &p.to_string());
        query.append_pair("status", &status);
        if let Some(v) = &search {
            query.append_pair("search", v);
        }
        if let Some(v) = &tag {
            query.append_pair("tag", v);
        }
        format!("{BASE}/keys?{}", query.finish())
    };
    let statuses = ["current", "enabled", "disabled", "deleted", "all"];
    let body = html! {
        div.actions { a href={(BASE) "/keys/new"} id="new-key" { "Create a key" } }
        form.filters method="get" action={(BASE) "/keys"} role="search" {
            label { "Search" input type="search" name="search" value=[search.as_deref()]; }
            label { "Tag" input type="text" name="tag" value=[tag.as_deref()]; }
            label { "Status" select name="status" {
                @for st in statuses { option value=(st) selected[st == status] { (st) } }
            } }
            button type="submit" { "Filter" }
        }
        div.table-wrap {
            table id="keys" {
                thead { tr { th { "Name" } th { "Tags" } th { "Status" } th { "Limits" } th { "Last used" } th { "Created" } } }
                tbody {
                    @for k in &keys {
                        tr {
                            td { a href={(BASE) "/keys/" (k.id)} class="key-name" { (k.name) } @if !k.description.is_empty() { div.muted { (k.description) } } }
                            td { @for t in &k.tags { span.tag { (t) } } }
                            td { (status_of(k)) }
                            td { (limits_summary(k)) }
                            td { (when(k.last_used_at)) }
                            td { (when(Some(k.created_at))) }
                        }
                    }
                    @if keys.is_empty() { tr { td colspan="6" { "No keys match." } } }
                }
            }
        }
        div.pager {
            @if pages.page > 1 { a href=(link(pages.page - 1)) rel="prev" { "← Previous" } }
            span { "Page " (pages.page) " of " (pages.total_pages.max(1)) " · " (pages.total) " keys" }
            @if pages.page < pages.total_pages { a href=(link(pages.page + 1)) rel="next" { "Next →" } }
        }
    };
    Ok(html(layout::page(&s, health.as_ref(), "API keys", body)))
}

fn status_of(k: &KeyView) -> &'static str {
    if k.is_deleted {
        "deleted"
    } else if !k.is_active {
        "disabled"
    } else if k.expires_at.is_some_and(|e| e <= Utc::now()) {
        "expired"
    } else {
        "enabled"
    }
}

fn limits_summary(k: &KeyView) -> String {
    let mut parts = Vec::new();
    if k.concurrency_limit > 0 {
        parts.push(format!("{} concurrent", k.concurrency_limit));
    }
    if k.rate_limit_window > 0 && k.rate_limit_requests > 0 {
        parts.push(format!(
            "{} req / {} min",
            k.rate_limit_requests, k.rate_limit_window
        ));
    }
    if k.daily_cost_limit > 0.0 {
        parts.push(format!("{} / day", money(k.daily_cost_limit)));
    }
    if k.total_cost_limit > 0.0 {
        parts.push(format!("{} total", money(k.total_cost_limit)));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// The create / edit fields, filled from `k` when editing.
async fn key_fields(s: &Session, k: Option<&KeyView>) -> Result<Markup, AdminError> {
    let accounts = s.ctx.router.list_accounts().await?;
    let num = |v: Option<String>| v.filter(|v| v != "0");
    let expires = k
        .and_then(|k| k.expires_at)
        .map(|e| e.format("%Y-%m-%dT%H:%M").to_string());
    let bound = k.and_then(|k| k.claude_account_id.clone());
    let mode = k.map_or("fixed", |k| k.expiration_mode);
    Ok(html! {
        div.fields {
            label { "Name" input type="text" name="name" id="key-name" required value=[k.map(|k| k.name.as_str())]; }
            label { "Description" input type="text" name="description" value=[k.map(|k| k.description.as_str())]; }
            label { "Tags (comma separated)" input type="text" name="tags" id="key-tags" value=[k.map(|k| k.tags.join(", "))]; }
            label { "Permissions" select name="permissions" {
                @for p in ["all", "claude"] { option value=(p) selected[k.is_some_and(|k| k.permissions == p)] { (p) } }
            } }
            label { "Concurrency limit (0 = none)" input type="number" min="0" name="concurrencyLimit" value=[num(k.map(|k| k.concurrency_limit.to_string()))]; }
            label { "Rate window (minutes)" input type="number" min="0" name="rateLimitWindow" value=[num(k.map(|k| k.rate_limit_window.to_string()))]; }
            label { "Requests per window" input type="number" min="0" name="rateLimitRequests" value=[num(k.map(|k| k.rate_limit_requests.to_string()))]; }
            label { "Cost per window (USD)" input type="number" min="0" step="any" name="rateLimitCost" value=[num(k.map(|k| k.rate_limit_cost.to_string()))]; }
            label { "Token limit" input type="number" min="0" name="tokenLimit" value=[num(k.map(|k| k.token_limit.to_string()))]; }
            label { "Daily cost limit (USD)" input type="number" min="0" step="any" name="dailyCostLimit" value=[num(k.map(|k| k.daily_cost_limit.to_string()))]; }
            label { "Total cost limit (USD)" input type="number" min="0" step="any" name="totalCostLimit" value=[num(k.map(|k| k.total_cost_limit.to_string()))]; }
            label { "Weekly Opus cost limit (USD)" input type="number" min="0" step="any" name="weeklyOpusCostLimit" value=[num(k.map(|k| k.weekly_opus_cost_limit.to_string()))]; }
            label { "Blocked models (comma separated)" input type="text" name="restrictedModels" value=[k.map(|k| k.restricted_models.join(", "))]; }
            label.check { input type="checkbox" name="enableModelRestriction" value="true" checked[k.is_some_and(|k| k.enable_model_restriction)]; "Block the models above" }
            label { "Expires (UTC, empty = never)" input type="datetime-local" name="expiresAt" value=[expires]; }
            label { "Expiry mode" select name="expirationMode" {
                option value="fixed" selected[mode == "fixed"] { "fixed date" }
                option value="activation" selected[mode == "activation"] { "days after first use" }
            } }
            label { "Days after first use" input type="number" min="0" name="activationDays" value=[num(k.map(|k| k.activation_days.to_string()))]; }
            label { "Bound account" select name="claudeAccountId" id="key-account" {
                option value="" { "any (shared pool)" }
                @for a in &accounts {
                    option value=(a.id) selected[bound.as_deref() == Some(a.id.as_str())] { (a.name) }
                }
            } }
        }
    })
}

async fn new_form(s: Session) -> Page {
    let health = layout::health(&s.ctx.router).await;
    let fields = key_fields(&s, None).await?;
    let body = html! {
        form.stack method="post" action={(BASE) "/keys"} id="create-key" {
            (csrf_field(&s))
            (fields)
            div { button type="submit" id="create" { "Create key" } }
        }
    };
    Ok(html(layout::page(
        &s,
        health.as_ref(),
        "Create a key",
        body,
    )))
}

/// The form as the admin API's JSON body.
fn key_body(form: &Form) -> Result<serde_json::Value, AdminError> {
    let mut body = form_json(form, &["enableModelRestriction"]);
    if let Some(e) = form.get("expiresAt") {
        body["expiresAt"] = local_input_to_rfc3339(e)?.into();
    }
    Ok(body)
}

/// The page that shows a new plaintext key once.
fn plaintext_page(
    s: &Session,
    health: Option<&crate::actors::router::HealthReport>,
    title: &str,
    k: &KeyView,
) -> Markup {
    let plaintext = k.api_key.clone().unwrap_or_default();
    layout::page(
        s,
        health,
        title,
        html! {
            div.notice role="status" {
                p { "The key " strong { (k.name) } " is ready. Copy it now: it is shown " strong { "only once" } " and cannot be read again." }
                div.secret {
                    input type="text" readonly id="plaintext-key" value=(plaintext) aria-label="The new API key";
                    button type="button" data-copy="plaintext-key" id="copy-key" hidden { "Copy" }
                }
            }
            p { a href={(BASE) "/keys/" (k.id)} id="to-key" { "Go to the key's page" } " · " a href={(BASE) "/keys"} { "All keys" } }
        },
    )
}

async fn create(s: Session, form: Form) -> Page {
    s.check_csrf(&form)?;
    let body = key_body(&form)?;
    let view = service::create(&s.ctx, &body).await?;
    let health = layout::health(&s.ctx.router).await;
    Ok(html(plaintext_page(
        &s,
        health.as_ref(),
        "Key created",
        &view,
    )))
}

async fn update(s: Session, id: web::Path<String>, form: Form) -> Page {
    s.check_csrf(&form)?;
    let body = key_body(&form)?;
    let view = service::update(&s.ctx, &id, &body).await?;
    Ok(redirect(&format!("{BASE}/keys/{}?saved=1", view.id)))
}

async fn act(s: Session, path: web::Path<(String, String)>, form: Form) -> Page {
    s.check_csrf(&form)?;
    let (id, action) = path.into_inner();
    let back = format!("{BASE}/keys/{id}");
    match action.as_str() {
        "enable" => service::set_active(&s.ctx, &id, true).await.map(drop)?,
        "disable" => service::set_active(&s.ctx, &id, false).await.map(drop)?,
        "delete" => service::soft_delete(&s.ctx, &id).await.map(drop)?,
        "restore" => service::restore(&s.ctx, &id).await.map(drop)?,
        "purge" => {
            service::purge(&s.ctx, &id).await?;
            return Ok(redirect(&format!("{BASE}/keys?status=deleted")));
        }
        "regenerate" => {
            let view = service::regenerate(&s.ctx, &id).await?;
            let health = layout::health(&s.ctx.router).await;
            return Ok(html(plaintext_page(
                &s,
                health.as_ref(),
                "Key regenerated",
                &view,
            )));
        }
        _ => return Err(AdminError::not_found("no such key action").into()),
    }
    Ok(redirect(&back))
}

async fn show(s: Session, id: web::Path<String>, params: Params) -> Page {
    let key = service::load(&s.ctx, &id).await?;
    let k = KeyView::from(&key);
    let health = layout::health(&s.ctx.router).await;
    let today = local_date(Utc::now(), s.ctx.config.timezone_offset_hours);
    let from = today - Duration::days(USAGE_DAYS - 1);
    let usage = reports::subject_usage(&s.ctx, &k.id, false, from, today).await;
    let recent = s.ctx.router.recent_usage(&k.id, RECENT).await;
    let fields = key_fields(&s, Some(&k)).await?;
    let base = format!("{BASE}/keys/{}", k.id);
    let body = html! {
        @if params.get("saved").is_some() { p.notice role="status" { "Saved." } }
        dl.facts {
            dt { "Name" } dd id="key-title" { (k.name) }
            dt { "Status" } dd id="key-status" { (status_of(&k)) }
            dt { "Id" } dd { code { (k.id) } }
            dt { "Tags" } dd { @for t in &k.tags { span.tag { (t) } } }
            dt { "Limits" } dd { (limits_summary(&k)) }
            dt { "Token limit" } dd { (limit(count(k.token_limit), k.token_limit == 0)) }
            dt { "Weekly Opus cost limit" } dd { (limit(money(k.weekly_opus_cost_limit), k.weekly_opus_cost_limit == 0.0)) }
            dt { "Blocked models" } dd { @if k.enable_model_restriction { (k.restricted_models.join(", ")) } @else { "none" } }
            dt { "Expires" } dd { (when(k.expires_at)) }
            dt { "Last used" } dd { (when(k.last_used_at)) }
            dt { "Created" } dd { (when(Some(k.created_at))) " by " (k.created_by) }
        }
        h2 { "Actions" }
        div.actions {
            @if k.is_deleted {
                (action_button(&s, &format!("{base}/restore"), "Restore", "restore-key"))
                form.inline method="post" action={(base) "/purge"} data-confirm="Remove this key for good?" {
                    (csrf_field(&s)) button.danger type="submit" id="purge-key" { "Delete permanently" }
                }
            } @else {
                @if k.is_active {
                    (action_button(&s, &format!("{base}/disable"), "Disable", "disable-key"))
                } @else {
                    (action_button(&s, &format!("{base}/enable"), "Enable", "enable-key"))
                }
                form.inline method="post" action={(base) "/regenerate"} data-confirm="The current key stops working at once. Regenerate?" {
                    (csrf_field(&s)) button type="submit" id="regenerate-key" { "Regenerate" }
                }
                form.inline method="post" action={(base) "/delete"} data-confirm="Delete this key? It can be restored." {
                    (csrf_field(&s)) button.danger type="submit" id="delete-key" { "Delete" }
                }
            }
        }
        h2 { "Usage, last 30 days" }
        @match &usage {
            Ok(u) => {
                div.cards {
                    div.card { div.label { "Requests" } div.value id="key-requests" { (count(u.totals.requests)) } }
                    div.card { div.label { "Tokens" } div.value { (count(u.totals.all_tokens)) } }
                    div.card { div.label { "Cost" } div.value { (money(u.totals.cost)) } }
                }
                div.grid2 {
                    @let points: Vec<(String, f64)> = (0..USAGE_DAYS).map(|i| {
                        let d = from + Duration::days(i);
                        (d.format("%m-%d").to_string(), u.daily.iter().find(|x| x.date == d).map_or(0.0, |x| x.stats.requests as f64))
                    }).collect();
                    (chart::bars("Requests per day", &points, |v| format!("{v:.0}")))
                    @let models: Vec<(String, f64)> = u.models.iter().map(|m| (m.id.clone(), m.stats.cost)).collect();
                    (chart::ranking("Cost by model", &models, money))
                }
            }
            Err(e) => p.error { "Usage is not available: " (e.to_string()) }
        }
        h2 { "Recent requests" }
        @match &recent {
            Ok(events) => (records_table(&events.iter().map(RecordView::from).collect::<Vec<_>>())),
            Err(e) => p.error { "Recent requests are not available: " (e.to_string()) }
        }
        h2 { "Edit" }
        @if k.is_deleted {
            p.muted { "Restore the key to edit it." }
        } @else {
            form.stack method="post" action=(base) id="edit-key" {
                (csrf_field(&s))
                (fields)
                div { button type="submit" id="save-key" { "Save" } }
            }
        }
    };
    Ok(html(layout::page(
        &s,
        health.as_ref(),
        &format!("Key {}", k.name),
        body,
    )))
}

/// The recent requests of a key.
pub fn records_table(records: &[RecordView]) -> Markup {
    html! {
        div.table-wrap {
            table id="recent-requests" {
                thead { tr { th { "Time" } th { "Model" } th.num { "Input" } th.num { "Output" } th.num { "Cache" } th.num { "Cost" } th.num { "Status" } th.num { "Latency" } } }
                tbody {
                    @for r in records {
                        tr {
                            td { (when(Some(r.created_at))) }
                            td { (r.model) }
                            td.num { (count(r.input_tokens)) }
                            td.num { (count(r.output_tokens)) }
                            td.num { (count(r.cache_create_tokens + r.cache_read_tokens)) }
                            td.num { (money(r.cost)) }
                            td.num { (r.status_code) }
                            td.num { (r.latency_ms) " ms" }
                        }
                    }
                    @if records.is_empty() { tr { td colspan="8" { "No requests yet." } } }
                }
            }
        }
    }
}
