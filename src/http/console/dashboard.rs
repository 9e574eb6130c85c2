//! The dashboard: both backends with status and latency (as `/health` says), today's
//! requests, tokens and cost, active keys and accounts, requests per minute over the last
//! hour, cost per day over 30 days, and the top keys and models by cost.

use actix_web::web;
use chrono::{Duration, Utc};
use maud::{Markup, html};

use super::layout::{self, count, money};
use super::{Page, Session, chart, html};
use crate::actors::router::BackendView;
use crate::domain::account::AccountStatus;
use crate::domain::usage_event::local_date;
use crate::service::reports::{self, ReportQuery};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(dashboard));
}

/// Days of the cost trend.
const TREND_DAYS: i64 = 30;
/// Minutes of the activity chart.
const ACTIVITY_MINUTES: u32 = 60;
/// Entries of the top-keys and top-models rankings.
const TOP: usize = 8;

fn backend_card(name: &str, b: &BackendView) -> Markup {
    let (class, status) = match (b.used, b.connected) {
        (false, _) => ("muted", "not used"),
        (true, true) => ("up", "up"),
        (true, false) => ("down", "down"),
    };
    html! {
        div.card data-backend=(name) {
            div.label { (name) }
            div.value.(class) { (status) }
            div.muted { "latency " (b.latency.as_deref().unwrap_or("—")) }
        }
    }
}

fn card(label: &str, id: &str, value: String) -> Markup {
    html! { div.card { div.label { (label) } div.value id=(id) { (value) } } }
}

/// A section that could not be read (backend down): say so instead of failing the page.
fn unavailable(what: &str, e: &crate::error::AppError) -> Markup {
    html! { p.error role="status" { (what) " is not available: " (e.to_string()) } }
}

async fn dashboard(s: Session) -> Page {
    let router = &s.ctx.router;
    let health = layout::health(router).await;
    let offset = s.ctx.config.timezone_offset_hours;
    let today = local_date(Utc::now(), offset);
    let from = today - Duration::days(TREND_DAYS - 1);
    let report = reports::report(&s.ctx, from, today, &ReportQuery::default()).await;
    let per_minute = router.requests_per_minute(ACTIVITY_MINUTES).await;
    let keys = router.list_keys_report(false).await;
    let accounts = router.list_accounts_report().await;
    let now = Utc::now();
    let active_keys = keys.as_ref().map(|ks| {
        ks.iter()
            .filter(|k| k.is_active && !k.is_deleted() && k.expires_at.is_none_or(|e| e > now))
            .count()
    });
    let active_accounts = accounts.as_ref().map(|accs| {
        accs.iter()
            .filter(|a| a.is_active && a.effective_status(now) == AccountStatus::Active)
            .count()
    });
    let body = html! {
        section aria-label="Backends" {
            h2 { "Backends" }
            div.cards {
                @if let Some(h) = &health {
                    (backend_card("Redis", &h.redis))
                    (backend_card("MySQL", &h.mysql))
                    div.card { div.label { "Mode" } div.value { (h.mode.as_str()) } }
                } @else {
                    p.error { "The router did not answer." }
                }
            }
        }
        section aria-label="Today" {
            h2 { "Today" }
            div.cards {
                @match &report {
                    Ok(r) => {
                        @let t = r.daily.iter().find(|d| d.date == today).map(|d| d.stats.clone()).unwrap_or_default();
                        (card("Requests today", "requests-today", count(t.requests)))
                        (card("Tokens today", "tokens-today", count(t.all_tokens)))
                        (card("Cost today", "cost-today", money(t.cost)))
                    }
                    Err(e) => { (unavailable("Usage", &e.error)) }
                }
                @match &active_keys {
                    Ok(n) => (card("Active keys", "active-keys", n.to_string())),
                    Err(e) => (unavailable("Keys", e)),
                }
                @match &active_accounts {
                    Ok(n) => (card("Active accounts", "active-accounts", n.to_string())),
                    Err(e) => (unavailable("Accounts", e)),
                }
            }
        }
        div.grid2 {
            section {
                h2 { "Requests per minute, last hour" }
                @match &per_minute {
                    Ok(series) => {
                        @let start = now - Duration::minutes(i64::from(ACTIVITY_MINUTES) - 1);
                        @let points: Vec<(String, f64)> = series.iter().enumerate().map(|(i, n)| {
                            let t = start + Duration::minutes(i64::try_from(i).unwrap_or(0));
                            (t.format("%H:%M").to_string(), *n as f64)
                        }).collect();
                        (chart::bars("Requests per minute over the last hour (UTC)", &points, |v| format!("{v:.0}")))
                    }
                    Err(e) => (unavailable("Activity", e)),
                }
            }
            section {
                h2 { "Cost per day, last 30 days" }
                @if let Ok(r) = &report {
                    @let points: Vec<(String, f64)> = (0..TREND_DAYS).map(|i| {
                        let d = from + Duration::days(i);
                        let cost = r.daily.iter().find(|x| x.date == d).map_or(0.0, |x| x.stats.cost);
                        (d.format("%m-%d").to_string(), cost)
                    }).collect();
                    (chart::bars("Cost per day over the last 30 days (USD)", &points, money))
                }
            }
        }
        @if let Ok(r) = &report {
            div.grid2 {
                section {
                    h2 { "Top keys by cost, 30 days" }
                    @let items: Vec<(String, f64)> = r.by_key.iter().take(TOP).map(|g| (g.name.clone().unwrap_or_else(|| g.id.clone()), g.stats.cost)).collect();
                    (chart::ranking("Top keys by cost over the last 30 days", &items, money))
                }
                section {
                    h2 { "Top models by cost, 30 days" }
                    @let items: Vec<(String, f64)> = r.by_model.iter().take(TOP).map(|g| (g.id.clone(), g.stats.cost)).collect();
                    (chart::ranking("Top models by cost over the last 30 days", &items, money))
                }
            }
        }
    };
    Ok(html(layout::page(&s, health.as_ref(), "Dashboard", body)))
}
