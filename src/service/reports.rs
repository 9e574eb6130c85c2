//! Usage reports over the archive's daily roll-ups: totals, daily trend and breakdowns by
//! model, key and account for a date range (local dates in `TIMEZONE_OFFSET`), cost in USD.

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration, NaiveDate, Utc};
use serde::Serialize;

use super::fields::usd;
use super::{AdminContext, AdminError};
use crate::domain::limits::Counters;
use crate::domain::usage_event::{UsageEvent, local_date};
use crate::persistence::usage::DailyRow;

/// Longest range one report may cover, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Figures of one group of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_create_tokens: i64,
    pub cache_read_tokens: i64,
    pub all_tokens: i64,
    /// USD.
    pub cost: f64,
}

impl From<Counters> for Stats {
    fn from(c: Counters) -> Self {
        Stats {
            requests: c.requests,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            cache_create_tokens: c.cache_create_tokens,
            cache_read_tokens: c.cache_read_tokens,
            all_tokens: c.tokens(),
            cost: usd(c.cost_micros),
        }
    }
}

/// One day of a trend.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DayStats {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub stats: Stats,
}

/// One group (model, key or account) of a breakdown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStats {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub stats: Stats,
}

/// One day of one group (the trend by key, account or model).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DayGroupStats {
    pub date: NaiveDate,
    pub id: String,
    #[serde(flatten)]
    pub stats: Stats,
}

/// What to break a trend down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Key,
    Account,
    Model,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "key" => Some(GroupBy::Key),
            "account" => Some(GroupBy::Account),
            "model" => Some(GroupBy::Model),
            _ => None,
        }
    }
    fn of(self, r: &DailyRow) -> &str {
        match self {
            GroupBy::Key => &r.api_key_id,
            GroupBy::Account => &r.account_id,
            GroupBy::Model => &r.model,
        }
    }
}

/// The full report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub totals: Stats,
    pub daily: Vec<DayStats>,
    pub by_model: Vec<GroupStats>,
    pub by_key: Vec<GroupStats>,
    pub by_account: Vec<GroupStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<Vec<DayGroupStats>>,
}

/// The usage of one key or account.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectUsage {
    pub id: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub totals: Stats,
    pub daily: Vec<DayStats>,
    pub models: Vec<GroupStats>,
}

/// A recent archive row as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordView {
    pub request_id: String,
    pub account_id: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_create_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost: f64,
    pub status_code: u16,
    pub is_stream: bool,
    pub latency_ms: u32,
    pub created_at: chrono::DateTime<Utc>,
}

impl From<&UsageEvent> for RecordView {
    fn from(e: &UsageEvent) -> Self {
        RecordView {
            request_id: e.request_id.clone(),
            account_id: e.account_id.clone(),
            model: e.model.clone(),
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cache_create_tokens: e.cache_create_tokens(),
            cache_read_tokens: e.cache_read_tokens,
            cost: usd(e.cost_micros),
            status_code: e.status_code,
            is_stream: e.is_stream,
            latency_ms: e.latency_ms,
            created_at: e.created_at,
        }
    }
}

fn parse_date(field: &str, s: &str) -> Result<NaiveDate, AdminError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| AdminError::field(field, "must be a date YYYY-MM-DD"))
}

/// The range `from..=to` of a query (defaults: the last `default_days` local days).
pub fn date_range(
    from: Option<&str>,
    to: Option<&str>,
    default_days: i64,
    offset_hours: i32,
) -> Result<(NaiveDate, NaiveDate), AdminError> {
    let today = local_date(Utc::now(), offset_hours);
    let to = match to.filter(|s| !s.is_empty()) {
        Some(s) => parse_date("to", s)?,
        None => today,
    };
    let from = match from.filter(|s| !s.is_empty()) {
        Some(s) => parse_date("from", s)?,
        None => to - Duration::days(default_days - 1),
    };
    if from > to {
        return Err(AdminError::field("from", "must not be after to"));
    }
    if (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(AdminError::field(
            "from",
            format!("the range may cover at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok((from, to))
}

fn group<'a>(
    rows: impl Iterator<Item = &'a DailyRow>,
    key: impl Fn(&DailyRow) -> String,
) -> BTreeMap<String, Counters> {
    let mut out: BTreeMap<String, Counters> = BTreeMap::new();
    for r in rows {
        out.entry(key(r)).or_default().add(&r.counters);
    }
    out
}

fn totals(rows: &[DailyRow]) -> Stats {
    let mut c = Counters::default();
    rows.iter().for_each(|r| c.add(&r.counters));
    c.into()
}

fn daily(rows: &[DailyRow]) -> Vec<DayStats> {
    let mut days: BTreeMap<NaiveDate, Counters> = BTreeMap::new();
    for r in rows {
        days.entry(r.date).or_default().add(&r.counters);
    }
    days.into_iter()
        .map(|(date, c)| DayStats {
            date,
            stats: c.into(),
        })
        .collect()
}

/// Groups sorted by cost, then requests, biggest first.
fn breakdown(rows: &[DailyRow], by: GroupBy, names: &HashMap<String, String>) -> Vec<GroupStats> {
    let mut groups: Vec<GroupStats> = group(rows.iter(), |r| by.of(r).to_string())
        .into_iter()
        .map(|(id, c)| GroupStats {
            name: names.get(&id).cloned(),
            id,
            stats: c.into(),
        })
        .collect();
    groups.sort_by(|a, b| {
        b.stats
            .cost
            .total_cmp(&a.stats.cost)
            .then(b.stats.requests.cmp(&a.stats.requests))
            .then(a.id.cmp(&b.id))
    });
    groups
}

/// Report filters.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    pub key_id: Option<String>,
    pub account_id: Option<String>,
    pub model: Option<String>,
    pub group_by: Option<GroupBy>,
}

/// `GET /admin/usage`: totals, daily trend and breakdowns for a range.
pub async fn report(
    ctx: &AdminContext,
    from: NaiveDate,
    to: NaiveDate,
    q: &ReportQuery,
) -> Result<Report, AdminError> {
    let mut rows = ctx
        .router
        .daily_usage(from, to, q.key_id.clone(), q.account_id.clone())
        .await?;
    if let Some(m) = &q.model {
        rows.retain(|r| r.model == *m);
    }
    let key_names: HashMap<String, String> = ctx
        .router
        .list_keys_report(true)
        .await
        .map(|ks| ks.into_iter().map(|k| (k.id, k.name)).collect())
        .unwrap_or_default();
    let account_names: HashMap<String, String> = ctx
        .router
        .list_accounts_report()
        .await
        .map(|accs| accs.into_iter().map(|a| (a.id, a.name)).collect())
        .unwrap_or_default();
    let trend = q.group_by.map(|by| {
        let mut cells: BTreeMap<(NaiveDate, String), Counters> = BTreeMap::new();
        for r in &rows {
            cells
                .entry((r.date, by.of(r).to_string()))
                .or_default()
                .add(&r.counters);
        }
        cells
            .into_iter()
            .map(|((date, id), c)| DayGroupStats {
                date,
                id,
                stats: c.into(),
            })
            .collect()
    });
    Ok(Report {
        from,
        to,
        totals: totals(&rows),
        daily: daily(&rows),
        by_model: breakdown(&rows, GroupBy::Model, &HashMap::new()),
        by_key: breakdown(&rows, GroupBy::Key, &key_names),
        by_account: breakdown(&rows, GroupBy::Account, &account_names),
        trend,
    })
}

/// Usage of one key (`account == false`) or account by day and model.
pub async fn subject_usage(
    ctx: &AdminContext,
    id: &str,
    account: bool,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<SubjectUsage, AdminError> {
    let (key_id, account_id) = if account {
        (None, Some(id.to_string()))
    } else {
        (Some(id.to_string()), None)
    };
    let rows = ctx.router.daily_usage(from, to, key_id, account_id).await?;
    Ok(SubjectUsage {
        id: id.to_string(),
        from,
        to,
        totals: totals(&rows),
        daily: daily(&rows),
        models: breakdown(&rows, GroupBy::Model, &HashMap::new()),
    })
}
