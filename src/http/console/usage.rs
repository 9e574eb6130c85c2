//! Usage totals per key, account and model over a chosen range (with CSV export), and the
//! audit log (who changed what, when), filterable and paged.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use serde_json::Value;

use super::layout::{self, count, money, when};
use super::{BASE, Page, Session, chart, html};
use crate::domain::audit::{AuditEntry, AuditFilter};
use crate::http::admin::{param_int, param_str};
use crate::service::AdminError;
use crate::service::reports::{self, GroupStats, Report, ReportQuery};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/usage", web::get().to(usage))
        .route("/usage.csv", web::get().to(usage_csv))
        .route("/audit", web::get().to(audit));
}

type Params = web::Query<HashMap<String, String>>;

const AUDIT_PAGE: i64 = 50;

async fn report(s: &Session, params: &Params) -> Result<Report, AdminError> {
    let (from, to) = reports::date_range(
        params.get("from").map(String::as_str),
        params.get("to").map(String::as_str),
        7,
        s.ctx.config.timezone_offset_hours,
    )?;
    reports::report(&s.ctx, from, to, &ReportQuery::default()).await
}

fn group_table(id: &str, title: &str, groups: &[GroupStats]) -> Markup {
    html! {
        h2 { (title) }
        div.table-wrap {
            table id=(id) {
                thead { tr { th { "Name" } th.num { "Requests" } th.num { "Input" } th.num { "Output" } th.num { "Cache write" } th.num { "Cache read" } th.num { "Cost" } } }
                tbody {
                    @for g in groups {
                        tr {
                            td { (g.name.as_deref().unwrap_or(&g.id)) }
                            td.num { (count(g.stats.requests)) }
                            td.num { (count(g.stats.input_tokens)) }
                            td.num { (count(g.stats.output_tokens)) }
                            td.num { (count(g.stats.cache_create_tokens)) }
                            td.num { (count(g.stats.cache_read_tokens)) }
                            td.num { (money(g.stats.cost)) }
                        }
                    }
                    @if groups.is_empty() { tr { td colspan="7" { "No requests in this range." } } }
                }
            }
        }
    }
}

async fn usage(s: Session, params: Params) -> Page {
    let r = report(&s, &params).await?;
    let health = layout::health(&s.ctx.router).await;
    let csv = format!("{BASE}/usage.csv?from={}&to={}", r.from, r.to);
    let body = html! {
        form.filters method="get" action={(BASE) "/usage"} {
            label { "From" input type="date" name="from" value=(r.from); }
            label { "To" input type="date" name="to" value=(r.to); }
            button type="submit" { "Show" }
            a href=(csv) id="usage-csv" download { "Export CSV" }
        }
        div.cards {
            div.card { div.label { "Requests" } div.value id="usage-requests" { (count(r.totals.requests)) } }
            div.card { div.label { "Tokens" } div.value { (count(r.totals.all_tokens)) } }
            div.card { div.label { "Cost" } div.value { (money(r.totals.cost)) } }
        }
        @let points: Vec<(String, f64)> = r.daily.iter().map(|d| (d.date.format("%m-%d").to_string(), d.stats.cost)).collect();
        (chart::bars("Cost per day (USD)", &points, money))
        (group_table("usage-by-key", "By key", &r.by_key))
        (group_table("usage-by-account", "By account", &r.by_account))
        (group_table("usage-by-model", "By model", &r.by_model))
    };
    Ok(html(layout::page(&s, health.as_ref(), "Usage", body)))
}

/// One CSV field, quoted when it needs to be; a leading formula character is neutralised
/// (a key name like `=HYPERLINK(…)` must not run in a spreadsheet).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The report's groups as CSV rows: group, id, name, figures.
pub fn report_csv(r: &Report) -> String {
    let mut out = String::from(
        "group,id,name,requests,input_tokens,output_tokens,cache_create_tokens,cache_read_tokens,total_tokens,cost_usd\n",
    );
    for (group, rows) in [
        ("key", &r.by_key),
        ("account", &r.by_account),
        ("model", &r.by_model),
    ] {
        for g in rows {
            let st = &g.stats;
            out.push_str(&format!(
                "{group},{},{},{},{},{},{},{},{},{:.6}\n",
                csv_field(&g.id),
                csv_field(g.name.as_deref().unwrap_or("")),
                st.requests,
                st.input_tokens,
                st.output_tokens,
                st.cache_create_tokens,
                st.cache_read_tokens,
                st.all_tokens,
                st.cost
            ));
        }
    }
    out
}

async fn usage_csv(s: Session, params: Params) -> Page {
    let r = report(&s, &params).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"usage-{}-{}.csv\"", r.from, r.to),
        ))
        .body(report_csv(&r)))
}

/// The top-level fields that differ between `before` and `after`.
fn changed_fields(e: &AuditEntry) -> String {
    let empty = serde_json::Map::new();
    let obj = |v: &Option<Value>| {
        v.as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (before, after) = (obj(&e.before), obj(&e.after));
    let mut names: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| *k != "updatedAt" && before.get(*k) != after.get(*k))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn audit(s: Session, params: Params) -> Page {
    let offset = param_int(&params, "offset", 0, i64::from(u32::MAX))?.unwrap_or(0);
    let filter = AuditFilter {
        target_type: param_str(&params, "targetType"),
        target_id: param_str(&params, "targetId"),
        action: param_str(&params, "action"),
        limit: AUDIT_PAGE,
        offset,
    };
    let shown = filter.clone();
    let (entries, total) = s.ctx.router.list_audit(filter).await?;
    let health = layout::health(&s.ctx.router).await;
    let link = |o: i64| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("offset", &o.to_string());
        for (k, v) in [
            ("targetType", &shown.target_type),
            ("targetId", &shown.target_id),
            ("action", &shown.action),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        format!("{BASE}/audit?{}", q.finish())
    };
    let body = html! {
        form.filters method="get" action={(BASE) "/audit"} {
            label { "Target type" select name="targetType" {
                option value="" { "any" }
                @for t in ["api_key", "account", "admin"] { option value=(t) selected[shown.target_type.as_deref() == Some(t)] { (t) } }
            } }
            label { "Target id" input type="text" name="targetId" value=[shown.target_id.as_deref()]; }
            label { "Action" input type="text" name="action" value=[shown.action.as_deref()]; }
            button type="submit" { "Filter" }
        }
        div.table-wrap {
            table id="audit" {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Target" } th { "Changed" } th { "From" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td { (when(Some(e.created_at))) }
                            td { (e.actor) }
                            td { (e.action) }
                            td { (e.target_type) " " code { (e.target_id) } }
                            td { (changed_fields(e)) }
                            td { (e.client_addr) }
                        }
                    }
                    @if entries.is_empty() { tr { td colspan="6" { "No entries match." } } }
                }
            }
        }
        div.pager {
            @if offset > 0 { a href=(link((offset - AUDIT_PAGE).max(0))) rel="prev" { "← Newer" } }
            span { (total) " entries" }
            @if offset + AUDIT_PAGE < total { a href=(link(offset + AUDIT_PAGE)) rel="next" { "Older →" } }
        }
    };
    Ok(html(layout::page(&s, health.as_ref(), "Audit log", body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
    }
}
