//! The key holder's page (`/admin-next/api-stats`, public as in CRS): the holder pastes
//! their key into a form (POST, so it never lands in a URL or a log) and sees that key's
//! limits, today's and this month's usage and cost, and a chart of the last 30 days. The
//! key is looked up by its hash, so only its own data can be shown; failed look-ups count
//! against the client address in the login limiter (the same lock-out as a wrong password).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{Datelike, Duration, Utc};
use maud::{Markup, html};
use secrecy::ExposeSecret;

use super::layout::{self, count, limit, money, when};
use super::{BASE, Form, Page, chart, html};
use crate::domain::keys::hash_key;
use crate::domain::usage_event::local_date;
use crate::http::AppState;
use crate::http::admin::auth::client_addr;
use crate::service::keys::KeyView;
use crate::service::reports::{self, Stats};
use crate::service::{AdminContext, AdminError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api-stats", web::get().to(form_page))
        .route("/api-stats", web::post().to(lookup));
}

/// Longest key the form accepts (longer input is not a key).
const MAX_KEY_LEN: usize = 256;
const CHART_DAYS: i64 = 30;
/// Actor name of the key holder's reads.
const HOLDER_ACTOR: &str = "key-holder";

fn key_form() -> Markup {
    html! {
        form.stack method="post" action={(BASE) "/api-stats"} {
            label { "Your API key" input type="password" name="apiKey" id="api-key" autocomplete="off" required; }
            button type="submit" id="show-stats" { "Show my usage" }
        }
    }
}

async fn form_page(state: web::Data<AppState>) -> HttpResponse {
    let health = layout::health(&state.router).await;
    html(layout::public_page(
        "Your key's usage",
        health.as_ref(),
        html! {
            p { "Paste your API key to see its limits and usage. The key is sent in the form, never in the address." }
            (key_form())
        },
    ))
}

fn figures(label: &str, id: &str, st: &Stats) -> Markup {
    html! {
        div.card id=(id) {
            div.label { (label) }
            div.value { (money(st.cost)) }
            div.muted { (count(st.requests)) " requests · " (count(st.all_tokens)) " tokens" }
        }
    }
}

async fn lookup(state: web::Data<AppState>, req: HttpRequest, form: Form) -> Page {
    let addr = client_addr(&req);
    state.login_limiter.check(&addr)?;
    let plaintext = form.get("apiKey").map(|k| k.trim()).unwrap_or("");
    if plaintext.is_empty() || plaintext.len() > MAX_KEY_LEN {
        return Err(AdminError::field("apiKey", "is required (paste your whole key)").into());
    }
    let hash = hash_key(plaintext, state.config.encryption_key.expose_secret());
    let key = state
        .router
        .find_key_by_hash(&hash)
        .await?
        .filter(|k| !k.is_deleted());
    let Some(key) = key else {
        state.login_limiter.failed(&addr);
        return Err(AdminError::unauthorized("no active key matches what you pasted").into());
    };
    let ctx = AdminContext {
        router: state.router.clone(),
        config: state.config.clone(),
        actor: HOLDER_ACTOR.into(),
        client_addr: addr,
    };
    let k = KeyView::from(&key);
    let today = local_date(Utc::now(), state.config.timezone_offset_hours);
    let month_start = today.with_day(1).unwrap_or(today);
    let chart_from = today - Duration::days(CHART_DAYS - 1);
    let from = chart_from.min(month_start);
    let usage = reports::subject_usage(&ctx, &key.id, false, from, today).await;
    let health = layout::health(&state.router).await;
    let body = html! {
        dl.facts {
            dt { "Key" } dd id="holder-key-name" { (k.name) }
            dt { "Status" } dd { @if k.is_active { "enabled" } @else { "disabled" } }
            dt { "Expires" } dd { (when(k.expires_at)) }
            dt { "Concurrency limit" } dd { (limit(k.concurrency_limit.to_string(), k.concurrency_limit == 0)) }
            dt { "Rate limit" } dd {
                @if k.rate_limit_window > 0 && (k.rate_limit_requests > 0 || k.rate_limit_cost > 0.0) {
                    @if k.rate_limit_requests > 0 { (k.rate_limit_requests) " requests " }
                    @if k.rate_limit_cost > 0.0 { (money(k.rate_limit_cost)) " " }
                    "per " (k.rate_limit_window) " minutes"
                } @else { "none" }
            }
            dt { "Token limit" } dd { (limit(count(k.token_limit), k.token_limit == 0)) }
            dt { "Daily cost limit" } dd { (limit(money(k.daily_cost_limit), k.daily_cost_limit == 0.0)) }
            dt { "Total cost limit" } dd { (limit(money(k.total_cost_limit), k.total_cost_limit == 0.0)) }
            dt { "Weekly Opus cost limit" } dd { (limit(money(k.weekly_opus_cost_limit), k.weekly_opus_cost_limit == 0.0)) }
            dt { "Blocked models" } dd { @if k.enable_model_restriction && !k.restricted_models.is_empty() { (k.restricted_models.join(", ")) } @else { "none" } }
        }
        @match &usage {
            Ok(u) => {
                @let sum = |from: chrono::NaiveDate| {
                    let mut st = Stats::default();
                    for d in u.daily.iter().filter(|d| d.date >= from) {
                        st.requests += d.stats.requests;
                        st.all_tokens += d.stats.all_tokens;
                        st.cost += d.stats.cost;
                    }
                    st
                };
                div.cards {
                    (figures("Today", "holder-today", &sum(today)))
                    (figures("This month", "holder-month", &sum(month_start)))
                }
                @let points: Vec<(String, f64)> = (0..CHART_DAYS).map(|i| {
                    let d = chart_from + Duration::days(i);
                    (d.format("%m-%d").to_string(), u.daily.iter().find(|x| x.date == d).map_or(0.0, |x| x.stats.cost))
                }).collect();
                (chart::bars("Cost per day over the last 30 days (USD)", &points, money))
            }
            Err(e) => p.error { "Usage is not available right now: " (e.to_string()) }
        }
        h2 { "Another key" }
        (key_form())
    };
    Ok(html(layout::public_page(
        "Your key's usage",
        health.as_ref(),
        body,
    )))
}
