//! Counters, rate windows and admission: the names of the counter sets a usage event
//! touches, and the admission request / answer both backends implement atomically.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::usage_event::UsageEvent;

/// The six numbers every counter set holds (a Redis hash or a `usage_counters` row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_create_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost_micros: i64,
}

impl Counters {
    /// The fields that are not zero, as stored (the relay never writes zero fields).
    pub fn nonzero_fields(&self) -> Vec<(&'static str, i64)> {
        Counters::FIELDS
            .iter()
            .copied()
            .zip(self.to_array())
            .filter(|(_, n)| *n != 0)
            .collect()
    }

    /// Field names as stored (Redis hash fields, in this order).
    pub const FIELDS: [&'static str; 6] = [
        "requests",
        "input",
        "output",
        "cacheCreate",
        "cacheRead",
        "cost",
    ];

    pub fn to_array(self) -> [i64; 6] {
        [
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.cache_create_tokens,
            self.cache_read_tokens,
            self.cost_micros,
        ]
    }

    pub fn from_array(v: [i64; 6]) -> Self {
        Counters {
            requests: v[0],
            input_tokens: v[1],
            output_tokens: v[2],
            cache_create_tokens: v[3],
            cache_read_tokens: v[4],
            cost_micros: v[5],
        }
    }

    /// Every token counted.
    pub fn tokens(&self) -> i64 {
        self.input_tokens + self.output_tokens + self.cache_create_tokens + self.cache_read_tokens
    }

    pub fn add(&mut self, other: &Counters) {
        let a = self.to_array();
        let b = other.to_array();
        *self = Counters::from_array(std::array::from_fn(|i| a[i] + b[i]));
    }

    /// The contribution of one event (with `requests` as given: admission counts requests in
    /// rate windows itself).
    pub fn of_event(e: &UsageEvent, requests: i64) -> Counters {
        Counters {
            requests,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cache_create_tokens: e.cache_create_tokens(),
            cache_read_tokens: e.cache_read_tokens,
            cost_micros: e.cost_micros,
        }
    }
}

/// A counter set to add to: logical name (no Redis prefix) and lifetime in seconds
/// (None = forever).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterUpdate {
    pub name: String,
    pub delta: Counters,
    pub ttl_seconds: Option<i64>,
}

pub const HOUR_TTL: i64 = 3 * 24 * 3600;
pub const DAY_TTL: i64 = 40 * 24 * 3600;
pub const MONTH_TTL: i64 = 400 * 24 * 3600;

/// Names of the counter sets of one owner (`key:{id}`, `account:{id}`, `model:{m}`, …).
pub fn period_names(
    owner: &str,
    local: DateTime<chrono::FixedOffset>,
) -> [(String, Option<i64>); 4] {
    let day = day_label(local);
    let mut month = String::with_capacity(7);
    push_padded(&mut month, local.year(), 4);
    month.push('-');
    push_padded(&mut month, local.month(), 2);
    let mut hour = String::with_capacity(2);
    push_padded(&mut hour, local.hour(), 2);
    [
        (total_name(owner), None),
        (
            ["usage:", owner, ":month:", &month].concat(),
            Some(MONTH_TTL),
        ),
        (["usage:", owner, ":day:", &day].concat(), Some(DAY_TTL)),
        (
            ["usage:", owner, ":hour:", &day, "T", &hour].concat(),
            Some(HOUR_TTL),
        ),
    ]
}

/// The all-time counter set of an owner.
fn total_name(owner: &str) -> String {
    ["usage:", owner, ":total"].concat()
}

/// The counter set of an owner's local day.
fn day_name(owner: &str, local: DateTime<chrono::FixedOffset>) -> String {
    ["usage:", owner, ":day:", &day_label(local)].concat()
}

/// `YYYY-MM-DD` of a local time, its numbers written by itoa. Counter names are made for
/// every request: `format!` costs several times more than joining their parts.
fn day_label(local: DateTime<chrono::FixedOffset>) -> String {
    let mut out = String::with_capacity(10);
    push_day(&mut out, local);
    out
}

/// Appends the `YYYY-MM-DD` of a local time.
fn push_day(out: &mut String, local: DateTime<chrono::FixedOffset>) {
    push_padded(out, local.year(), 4);
    out.push('-');
    push_padded(out, local.month(), 2);
    out.push('-');
    push_padded(out, local.day(), 2);
}

/// Appends `n` in decimal, zero-padded to `width` digits (a negative year as `format!`
/// would write it: `-` then the padded digits of its absolute value).
fn push_padded(out: &mut String, n: impl Into<i64>, width: usize) {
    let n: i64 = n.into();
    if n < 0 {
        out.push('-');
    }
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n.unsigned_abs());
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// Start (local date) of the weekly Opus period containing `local`.
pub fn week_start(
    local: DateTime<chrono::FixedOffset>,
    reset_day: u8,
    reset_hour: u8,
) -> chrono::NaiveDate {
    // reset_day: 1 = Monday … 7 = Sunday (CRS).
    let reset_day = u32::from(reset_day.clamp(1, 7));
    let today = local.weekday().number_from_monday();
    let mut back = (7 + today - reset_day) % 7;
    if back == 0 && local.hour() < u32::from(reset_hour) {
        back = 7;
    }
    local.date_naive() - Duration::days(i64::from(back))
}

/// Names of the counters the limits read for one key at `now`.
pub struct KeyCounterNames {
    pub daily: String,
    pub total: String,
    pub weekly_opus: String,
}

pub fn key_counter_names(
    key_id: &str,
    now: DateTime<Utc>,
    offset_hours: i32,
    reset_day: u8,
    reset_hour: u8,
) -> KeyCounterNames {
    let local = to_local(now, offset_hours);
    let owner = ["key:", key_id].concat();
    KeyCounterNames {
        daily: day_name(&owner, local),
        total: total_name(&owner),
        weekly_opus: format!(
            "cost:{owner}:opus_week:{}",
            week_start(local, reset_day, reset_hour)
        ),
    }
}

pub fn to_local(t: DateTime<Utc>, offset_hours: i32) -> DateTime<chrono::FixedOffset> {
    use chrono::Offset;
    let offset = chrono::FixedOffset::east_opt(offset_hours * 3600).unwrap_or(Utc.fix());
    t.with_timezone(&offset)
}

/// Every counter set one event adds to: key, account, model and key × model over
/// total / month / day / hour, the key's weekly Opus cost, and its current rate window.
pub fn counter_updates(
    e: &UsageEvent,
    offset_hours: i32,
    is_opus: bool,
    weekly: (u8, u8),
    rate_window: Option<&RateWindowName>,
) -> Vec<CounterUpdate> {
    let local = e.local_time(offset_hours);
    let mut updates = owner_updates(
        &e.api_key_id,
        &e.account_id,
        &e.model,
        local,
        Counters::of_event(e, 1),
    );
    updates.extend(window_updates(e, local, is_opus, weekly, rate_window));
    updates
}

/// The period sets (total / month / day / hour) of the key, the model, the account and
/// key × model, each adding `delta`.
fn owner_updates(
    key_id: &str,
    account_id: &str,
    model: &str,
    local: DateTime<chrono::FixedOffset>,
    delta: Counters,
) -> Vec<CounterUpdate> {
    let mut owners = Vec::with_capacity(4);
    owners.push(["key:", key_id].concat());
    owners.push(["model:", model].concat());
    if !account_id.is_empty() {
        owners.push(["account:", account_id].concat());
    }
    owners.push(["key:", key_id, ":model:", model].concat());
    owners
        .iter()
        .flat_map(|o| period_names(o, local))
        .map(|(name, ttl_seconds)| CounterUpdate {
            name,
            delta,
            ttl_seconds,
        })
        .collect()
}

/// The key's weekly Opus cost (for an Opus model) and its current rate window.
fn window_updates(
    e: &UsageEvent,
    local: DateTime<chrono::FixedOffset>,
    is_opus: bool,
    weekly: (u8, u8),
    rate_window: Option<&RateWindowName>,
) -> Vec<CounterUpdate> {
    let mut updates = Vec::with_capacity(2);
    if is_opus {
        updates.push(CounterUpdate {
            name: format!(
                "cost:key:{}:opus_week:{}",
                e.api_key_id,
                week_start(local, weekly.0, weekly.1)
            ),
            delta: Counters {
                cost_micros: e.cost_micros,
                ..Counters::default()
            },
            ttl_seconds: Some(15 * 24 * 3600),
        });
    }
    if let Some(w) = rate_window {
        // Requests were counted at admission; tokens and cost arrive with the answer.
        updates.push(CounterUpdate {
            name: w.name.clone(),
            delta: Counters::of_event(e, 0),
            ttl_seconds: Some(i64::try_from(w.ttl_seconds).unwrap_or(i64::MAX)),
        });
    }
    updates
}

/// The counter sets of events that are summed in process before they are written: every
/// event of one key, account and model in one local hour names the same sets, so their
/// deltas are summed under this key and the names are made once per flush, not per event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LaterSets {
    key_id: String,
    account_id: String,
    model: String,
    /// The local hour (minutes and below zero).
    hour: DateTime<chrono::FixedOffset>,
}

/// One event's (or several events' summed) counters for later: the sets and their delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaterCounters {
    pub sets: LaterSets,
    pub delta: Counters,
}

impl LaterCounters {
    pub fn updates(&self) -> Vec<CounterUpdate> {
        self.sets.updates(self.delta)
    }
}

impl LaterSets {
    /// The updates of `delta` (summed over events of these sets): what
    /// [`split_for_record`] leaves for later from their [`counter_updates`].
    pub fn updates(&self, delta: Counters) -> Vec<CounterUpdate> {
        let all = owner_updates(
            &self.key_id,
            &self.account_id,
            &self.model,
            self.hour,
            delta,
        );
        split_for_record(all, &self.key_id).1
    }
}

/// One event's counters split as [`split_for_record`] splits its [`counter_updates`]: the
/// sets written with the event (named now, only those), and the sets summed for later with
/// the delta they get (named when written).
pub fn record_split(
    e: &UsageEvent,
    offset_hours: i32,
    is_opus: bool,
    weekly: (u8, u8),
    rate_window: Option<&RateWindowName>,
) -> (Vec<CounterUpdate>, LaterCounters) {
    let local = e.local_time(offset_hours);
    let delta = Counters::of_event(e, 1);
    // What `split_for_record` keeps now of the key's total and day (requests and cost; the
    // tokens are summed for later), built here without the sets it would leave for later:
    // this runs for every relayed request.
    let limited = Counters {
        requests: delta.requests,
        cost_micros: delta.cost_micros,
        ..Counters::default()
    };
    let mut day = String::with_capacity(40 + e.api_key_id.len());
    day.push_str("usage:key:");
    day.push_str(&e.api_key_id);
    day.push_str(":day:");
    push_day(&mut day, local);
    let mut now = Vec::with_capacity(4);
    now.push(CounterUpdate {
        name: ["usage:key:", &e.api_key_id, ":total"].concat(),
        delta: limited,
        ttl_seconds: None,
    });
    now.push(CounterUpdate {
        name: day,
        delta: limited,
        ttl_seconds: Some(DAY_TTL),
    });
    for u in window_updates(e, local, is_opus, weekly, rate_window) {
        // A rate window may limit tokens too; the weekly Opus set holds cost alone.
        if u.name.starts_with("rate:") || u.delta != Counters::default() {
            now.push(u);
        }
    }
    let hour = local
        .with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(local);
    let later = LaterCounters {
        sets: LaterSets {
            key_id: e.api_key_id.clone(),
            account_id: e.account_id.clone(),
            model: e.model.clone(),
            hour,
        },
        delta,
    };
    (now, later)
}

/// True for the counter sets that admission reads (the key's day and total, its weekly Opus
/// cost, its rate windows): these are written with each event, never summed for later.
pub fn is_limit_counter(name: &str, key_id: &str) -> bool {
    name.starts_with("rate:")
        || name.starts_with("cost:")
        || name
            .strip_prefix("usage:key:")
            .and_then(|rest| rest.strip_prefix(key_id))
            .is_some_and(|rest| rest == ":total" || rest.starts_with(":day:"))
}

/// Splits an event's counter updates into what its recording round trip writes with the
/// event (what admission reads: the rate windows whole, the requests and cost of the key's
/// day, total and weekly Opus sets) and what is summed in process and written a few ms
/// later (every other set, and the token figures of those three). Fewer commands per
/// request; the limits stay exact.
pub fn split_for_record(
    updates: Vec<CounterUpdate>,
    key_id: &str,
) -> (Vec<CounterUpdate>, Vec<CounterUpdate>) {
    let mut now = Vec::new();
    let mut later = Vec::new();
    for u in updates {
        if !is_limit_counter(&u.name, key_id) {
            later.push(u);
        } else if u.name.starts_with("rate:") {
            // A window may limit tokens too.
            now.push(u);
        } else {
            let limited = Counters {
                requests: u.delta.requests,
                cost_micros: u.delta.cost_micros,
                ..Counters::default()
            };
            let tokens = Counters {
                requests: 0,
                cost_micros: 0,
                ..u.delta
            };
            if tokens != Counters::default() {
                later.push(CounterUpdate {
                    name: u.name.clone(),
                    delta: tokens,
                    ttl_seconds: u.ttl_seconds,
                });
            }
            if limited != Counters::default() {
                now.push(CounterUpdate {
                    delta: limited,
                    ..u
                });
            }
        }
    }
    (now, later)
}

/// The fixed rate window of a key at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateWindowName {
    pub name: String,
    pub ttl_seconds: u64,
    /// Seconds until this window ends (Retry-After).
    pub resets_in_seconds: u64,
}

pub fn rate_window(
    key_id: &str,
    window_minutes: u32,
    now: DateTime<Utc>,
) -> Option<RateWindowName> {
    if window_minutes == 0 {
        return None;
    }
    let len = i64::from(window_minutes) * 60;
    let ts = now.timestamp();
    let start = ts - ts.rem_euclid(len);
    Some(RateWindowName {
        name: format!("rate:key:{key_id}:{start}"),
        ttl_seconds: u64::try_from(len + 60).unwrap_or(60),
        resets_in_seconds: u64::try_from((start + len - ts).max(1)).unwrap_or(1),
    })
}

/// Limits of the current rate window; 0 = no limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowLimits {
    pub name: String,
    pub ttl_seconds: u64,
    pub resets_in_seconds: u64,
    pub max_requests: i64,
    pub max_tokens: i64,
    pub max_cost_micros: i64,
}

impl WindowLimits {
    /// The refusal for the window's current counters, if any.
    pub fn check(&self, c: &Counters) -> Option<Admission> {
        let retry = self.resets_in_seconds;
        if self.max_requests > 0 && c.requests >= self.max_requests {
            return Some(Admission::RequestsExceeded {
                retry_after_secs: retry,
            });
        }
        if self.max_tokens > 0 && c.tokens() >= self.max_tokens {
            return Some(Admission::TokensExceeded {
                retry_after_secs: retry,
            });
        }
        if self.max_cost_micros > 0 && c.cost_micros >= self.max_cost_micros {
            return Some(Admission::CostExceeded {
                retry_after_secs: retry,
            });
        }
        None
    }
}

/// Which cost limit refused a request (SPEC §4 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CostLimitKind {
    Daily,
    Total,
    WeeklyOpus,
}

impl CostLimitKind {
    /// The `error.code` of the 402 answer.
    pub fn code(self) -> &'static str {
        match self {
            CostLimitKind::Daily => "daily_cost_limit_exceeded",
            CostLimitKind::Total => "total_cost_limit_exceeded",
            CostLimitKind::WeeklyOpus => "weekly_opus_cost_limit_exceeded",
        }
    }
}

/// A cost limit checked at admission: the counter set's `cost` must stay below `max_micros`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostLimit {
    pub kind: CostLimitKind,
    pub counter: String,
    pub max_micros: i64,
}

/// One atomic admission: take a concurrency lease (cap 0 = none), check the rate window
/// and the cost limits (in that order) and count the request in the window, or refuse
/// without changing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionRequest {
    /// Logical name of the lease set (`key:{id}`).
    pub lease_scope: String,
    pub lease_id: String,
    pub lease_ttl_ms: u64,
    pub concurrency_limit: u32,
    pub window: Option<WindowLimits>,
    pub cost_limits: Vec<CostLimit>,
}

impl AdmissionRequest {
    /// The first cost limit reached by the given counters (same order as `cost_limits`).
    pub fn check_costs(&self, costs: &[Counters]) -> Option<Admission> {
        self.cost_limits
            .iter()
            .zip(costs)
            .find(|(l, c)| l.max_micros > 0 && c.cost_micros >= l.max_micros)
            .map(|(l, _)| Admission::CostLimitExceeded(l.kind))
    }
}

/// The answer to an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admission {
    Granted,
    ConcurrencyExceeded,
    RequestsExceeded { retry_after_secs: u64 },
    TokensExceeded { retry_after_secs: u64 },
    CostExceeded { retry_after_secs: u64 },
    CostLimitExceeded(CostLimitKind),
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn week_start_follows_reset_day_and_hour() {
        // 2026-11-26 is a Thursday.
        let t = to_local(Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap(), 0);
        assert_eq!(week_start(t, 1, 0).to_string(), "2026-11-23");
        assert_eq!(week_start(t, 4, 0).to_string(), "2026-11-26");
        assert_eq!(week_start(t, 4, 13).to_string(), "2026-11-19");
        assert_eq!(week_start(t, 5, 0).to_string(), "2026-11-20");
    }

    #[test]
    fn rate_window_is_fixed_and_reports_its_reset() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 20).unwrap();
        let w = rate_window("k", 1, now).unwrap();
        assert_eq!(w.name, format!("rate:key:k:{}", now.timestamp() - 20));
        assert_eq!(w.resets_in_seconds, 40);
        assert!(rate_window("k", 0, now).is_none());
    }

    #[test]
    fn window_check_order_is_requests_tokens_cost() {
        let limits = WindowLimits {
            name: "w".into(),
            ttl_seconds: 120,
            resets_in_seconds: 30,
            max_requests: 2,
            max_tokens: 100,
            max_cost_micros: 50,
        };
        let mut c = Counters::default();
        assert_eq!(limits.check(&c), None);
        c.cost_micros = 50;
        assert_eq!(
            limits.check(&c),
            Some(Admission::CostExceeded {
                retry_after_secs: 30
            })
        );
        c.input_tokens = 100;
        assert_eq!(
            limits.check(&c),
            Some(Admission::TokensExceeded {
                retry_after_secs: 30
            })
        );
        c.requests = 2;
        assert_eq!(
            limits.check(&c),
            Some(Admission::RequestsExceeded {
                retry_after_secs: 30
            })
        );
    }
}

#[cfg(test)]
mod limit_counter_tests {
    use super::{CounterUpdate, Counters, is_limit_counter, split_for_record};

    #[test]
    fn padded_numbers_read_as_format_writes_them() {
        for (n, width) in [
            (0i64, 2usize),
            (7, 2),
            (12, 2),
            (2026, 4),
            (33, 4),
            (123_456, 4),
            (-5, 4),
            (i64::MIN, 2),
            (i64::MAX, 1),
        ] {
            let mut out = String::new();
            super::push_padded(&mut out, n, width);
            let expected = if n < 0 {
                format!("-{:0width$}", n.unsigned_abs())
            } else {
                format!("{n:0width$}")
            };
            assert_eq!(out, expected, "{n} to {width} digits");
        }
    }

    #[test]
    fn period_names_are_local_and_zero_padded() {
        use chrono::TimeZone;
        // 2026-03-04 23:30 UTC is 2026-03-05 07:30 at UTC+8.
        let local = super::to_local(
            chrono::Utc.with_ymd_and_hms(2026, 3, 4, 23, 30, 0).unwrap(),
            8,
        );
        let names: Vec<String> = super::period_names("key:k", local)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            vec![
                "usage:key:k:total",
                "usage:key:k:month:2026-03",
                "usage:key:k:day:2026-03-05",
                "usage:key:k:hour:2026-03-05T07",
            ]
        );
    }

    #[test]
    fn a_record_writes_what_limits_read_and_sums_the_rest() {
        let id = "k1";
        let delta = Counters {
            requests: 1,
            input_tokens: 25,
            output_tokens: 12,
            cache_create_tokens: 100,
            cache_read_tokens: 200,
            cost_micros: 690,
        };
        let update = |name: &str| CounterUpdate {
            name: name.into(),
            delta,
            ttl_seconds: Some(60),
        };
        let (now, later) = split_for_record(
            vec![
                update("usage:key:k1:total"),
                update("rate:key:k1:1700000000"),
                update("usage:model:m:total"),
            ],
            id,
        );
        let limited = Counters {
            requests: 1,
            cost_micros: 690,
            ..Counters::default()
        };
        assert_eq!(
            now.iter()
                .map(|u| (u.name.as_str(), u.delta))
                .collect::<Vec<_>>(),
            vec![
                ("usage:key:k1:total", limited),
                ("rate:key:k1:1700000000", delta)
            ]
        );
        let tokens = Counters {
            requests: 0,
            cost_micros: 0,
            ..delta
        };
        assert_eq!(
            later
                .iter()
                .map(|u| (u.name.as_str(), u.delta))
                .collect::<Vec<_>>(),
            vec![
                ("usage:key:k1:total", tokens),
                ("usage:model:m:total", delta)
            ]
        );
        assert!(later.iter().all(|u| u.ttl_seconds == Some(60)));
    }

    #[test]
    fn only_the_sets_admission_reads_are_limit_counters() {
        let id = "0f73964f-97b5-40e9-a692-1f3556a2e19a";
        assert!(is_limit_counter(&format!("usage:key:{id}:total"), id));
        assert!(is_limit_counter(
            &format!("usage:key:{id}:day:2026-11-26"),
            id
        ));
        assert!(is_limit_counter(
            &format!("cost:key:{id}:opus_week:2026-11-23"),
            id
        ));
        assert!(is_limit_counter(&format!("rate:key:{id}:1700000000"), id));
        assert!(!is_limit_counter(
            &format!("usage:key:{id}:month:2026-11"),
            id
        ));
        assert!(!is_limit_counter(
            &format!("usage:key:{id}:model:m:total"),
            id
        ));
        assert!(!is_limit_counter("usage:model:m:total", id));
        assert!(!is_limit_counter(&format!("usage:key:{id}x:total"), id));
    }
}

#[cfg(test)]
pub(crate) mod record_split_tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};

    use super::{CounterUpdate, Counters, RateWindowName, counter_updates, record_split};
    use crate::domain::usage_event::UsageEvent;

    /// An event of key `k1` at 23:`minute` on 2026-03-04 (UTC); other tests use it too.
    pub(crate) fn event(minute: u32, input: i64, account: &str, model: &str) -> UsageEvent {
        UsageEvent {
            request_id: format!("r{minute}"),
            upstream_request_id: None,
            api_key_id: "k1".into(),
            account_id: account.into(),
            model: model.into(),
            input_tokens: input,
            output_tokens: 7,
            cache_create_5m_tokens: 3,
            cache_create_1h_tokens: 2,
            cache_read_tokens: 11,
            cost_micros: 500 + i64::from(minute),
            status_code: 200,
            is_stream: false,
            latency_ms: 5,
            created_at: Utc.with_ymd_and_hms(2026, 3, 4, 23, minute, 30).unwrap(),
        }
    }

    /// Sums updates by set name (the order of a split does not matter, its sums do).
    fn summed(updates: &[CounterUpdate]) -> BTreeMap<String, (Counters, Option<i64>)> {
        let mut out: BTreeMap<String, (Counters, Option<i64>)> = BTreeMap::new();
        for u in updates {
            let e = out
                .entry(u.name.clone())
                .or_insert((Counters::default(), u.ttl_seconds));
            e.0.add(&u.delta);
        }
        out
    }

    #[test]
    fn record_split_equals_the_split_of_every_update_and_sums_by_hour() {
        let window = RateWindowName {
            name: "rate:key:k1:1772665200".into(),
            ttl_seconds: 3660,
            resets_in_seconds: 100,
        };
        for (opus, account, window) in [
            (true, "a1", Some(&window)),
            (false, "", None),
            (false, "a1", Some(&window)),
        ] {
            let events = [event(1, 10, account, "m"), event(59, 20, account, "m")];
            let mut expected_now = Vec::new();
            let mut expected_later = Vec::new();
            let mut got_now = Vec::new();
            let mut sums: BTreeMap<String, (super::LaterSets, Counters)> = BTreeMap::new();
            for e in &events {
                let all = counter_updates(e, 8, opus, (1, 0), window);
                let (now, later) = super::split_for_record(all, "k1");
                expected_now.extend(now);
                expected_later.extend(later);
                let (now, later) = record_split(e, 8, opus, (1, 0), window);
                got_now.extend(now);
                let entry = sums
                    .entry(format!("{:?}", later.sets))
                    .or_insert((later.sets, Counters::default()));
                entry.1.add(&later.delta);
            }
            // Both events fall in one local hour: one set of later sets, summed.
            assert_eq!(sums.len(), 1);
            let got_later: Vec<CounterUpdate> = sums
                .into_values()
                .flat_map(|(sets, delta)| sets.updates(delta))
                .collect();
            assert_eq!(expected_now, got_now);
            assert_eq!(summed(&expected_later), summed(&got_later));
            assert_eq!(
                summed(&got_later).len(),
                if account.is_empty() { 12 } else { 16 }
            );
        }
    }

    #[test]
    fn a_free_answer_writes_what_the_split_of_every_update_writes() {
        // No cost: the weekly Opus set (cost alone) gets nothing now; the rest as ever.
        let window = RateWindowName {
            name: "rate:key:k1:1772665200".into(),
            ttl_seconds: 3660,
            resets_in_seconds: 100,
        };
        let mut free = event(1, 10, "a1", "m");
        free.cost_micros = 0;
        let all = counter_updates(&free, 8, true, (1, 0), Some(&window));
        let (expected, _) = super::split_for_record(all, "k1");
        let (now, _) = record_split(&free, 8, true, (1, 0), Some(&window));
        assert_eq!(now, expected);
        assert_eq!(
            now.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            [
                "usage:key:k1:total",
                "usage:key:k1:day:2026-03-05",
                "rate:key:k1:1772665200"
            ]
        );
    }

    #[test]
    fn events_of_another_hour_sum_apart() {
        let a = record_split(&event(59, 1, "a", "m"), 0, false, (1, 0), None)
            .1
            .sets;
        let mut later = event(59, 1, "a", "m");
        later.created_at += chrono::Duration::minutes(1);
        let b = record_split(&later, 0, false, (1, 0), None).1.sets;
        assert_ne!(a, b);
        assert_eq!(
            a,
            record_split(&event(0, 1, "a", "m"), 0, false, (1, 0), None)
                .1
                .sets
        );
    }
}
