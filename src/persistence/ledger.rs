//! What the usage ledger reads back from the archive: the limit counters of the current
//! windows with, from the same snapshot, how far each instance's journal was archived; and
//! an instance's rows archived after such a snapshot.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Char, Date, Nullable, Text, Timestamp};
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::ops::BASELINE_PREFIX;
use super::schema::{api_keys, journal_checkpoints, usage_counters, usage_records};
use crate::actors::persistence::DbConn;
use crate::domain::limits::{self, Counters};
use crate::domain::usage_event::UsageEvent;
use crate::error::StoreError;
use crate::ledger::ArchiveBoundary;

/// How long a rebuilt weekly Opus counter lives (as the relay writes it).
const OPUS_WEEK_TTL_SECS: i64 = 15 * 24 * 3600;

/// The limit counters as the archive explains them, and where each instance's journal stood.
#[derive(Debug, Default)]
pub struct LedgerSnapshot {
    /// Instance id → where its journal stands in the archive.
    pub boundaries: HashMap<String, ArchiveBoundary>,
    /// (counter set name, value, lifetime in ms) for every live key: zero values included,
    /// so whatever Redis holds under those names is replaced.
    pub counters: Vec<(String, Counters, Option<i64>)>,
}

#[derive(QueryableByName)]
struct KeySums {
    #[diesel(sql_type = Char)]
    key_id: String,
    #[diesel(sql_type = BigInt)]
    requests: i64,
    #[diesel(sql_type = BigInt)]
    input_tokens: i64,
    #[diesel(sql_type = BigInt)]
    output_tokens: i64,
    #[diesel(sql_type = BigInt)]
    cache_create_tokens: i64,
    #[diesel(sql_type = BigInt)]
    cache_read_tokens: i64,
    #[diesel(sql_type = BigInt)]
    cost_micros: i64,
}

impl KeySums {
    fn counters(&self) -> Counters {
        Counters {
            requests: self.requests,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_create_tokens: self.cache_create_tokens,
            cache_read_tokens: self.cache_read_tokens,
            cost_micros: self.cost_micros,
        }
    }
}

#[derive(QueryableByName)]
struct DayCost {
    #[diesel(sql_type = Char)]
    key_id: String,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    cost_micros: i64,
}

const SUMS: &str = "CAST(COALESCE(SUM(requests), 0) AS SIGNED) AS requests, \
     CAST(COALESCE(SUM(input_tokens), 0) AS SIGNED) AS input_tokens, \
     CAST(COALESCE(SUM(output_tokens), 0) AS SIGNED) AS output_tokens, \
     CAST(COALESCE(SUM(cache_create_tokens), 0) AS SIGNED) AS cache_create_tokens, \
     CAST(COALESCE(SUM(cache_read_tokens), 0) AS SIGNED) AS cache_read_tokens, \
     CAST(COALESCE(SUM(cost_micros), 0) AS SIGNED) AS cost_micros";

const RECORD_SUMS: &str = "CAST(COUNT(*) AS SIGNED) AS requests, \
     CAST(COALESCE(SUM(input_tokens), 0) AS SIGNED) AS input_tokens, \
     CAST(COALESCE(SUM(output_tokens), 0) AS SIGNED) AS output_tokens, \
     CAST(COALESCE(SUM(cache_create_5m_tokens + cache_create_1h_tokens), 0) AS SIGNED) \
       AS cache_create_tokens, \
     CAST(COALESCE(SUM(cache_read_tokens), 0) AS SIGNED) AS cache_read_tokens, \
     CAST(COALESCE(SUM(cost_micros), 0) AS SIGNED) AS cost_micros";

/// Reads, in one consistent snapshot, every key's limit counters at `now` (total, today,
/// this Opus week, the current rate window: archive plus imported baselines) and the last
/// archived journal sequence number of every instance.
pub async fn snapshot(
    mut conn: DbConn,
    now: DateTime<Utc>,
    offset_hours: i32,
) -> Result<LedgerSnapshot, StoreError> {
    let snap = conn
        .transaction::<_, diesel::result::Error, _>(async |c| {
            let boundaries: Vec<(String, i64, i64)> = journal_checkpoints::table
                .select((
                    journal_checkpoints::instance_id,
                    journal_checkpoints::archived_seq,
                    journal_checkpoints::last_row_id,
                ))
                .load(c)
                .await?;
            let keys: Vec<(String, i8, i8, i32)> = api_keys::table
                .filter(api_keys::deleted_at.is_null())
                .select((
                    api_keys::id,
                    api_keys::weekly_reset_day,
                    api_keys::weekly_reset_hour,
                    api_keys::rate_limit_window_minutes,
                ))
                .load(c)
                .await?;
            let totals: Vec<KeySums> = diesel::sql_query(format!(
                "SELECT api_key_id AS key_id, {SUMS} FROM usage_daily WHERE source = 'relay' \
                 GROUP BY api_key_id"
            ))
            .load(c)
            .await?;
            let today = limits::to_local(now, offset_hours).date_naive();
            let days: Vec<KeySums> = diesel::sql_query(format!(
                "SELECT api_key_id AS key_id, {SUMS} FROM usage_daily WHERE source = 'relay' \
                 AND usage_date = ? GROUP BY api_key_id"
            ))
            .bind::<Date, _>(today)
            .load(c)
            .await?;
            let opus_days: Vec<DayCost> = diesel::sql_query(
                "SELECT api_key_id AS key_id, usage_date AS day, \
                 CAST(COALESCE(SUM(cost_micros), 0) AS SIGNED) AS cost_micros FROM usage_daily \
                 WHERE source = 'relay' AND usage_date >= ? AND model LIKE '%opus%' \
                 GROUP BY api_key_id, usage_date",
            )
            .bind::<Date, _>(today - Duration::days(8))
            .load(c)
            .await?;
            let totals: HashMap<String, Counters> = totals
                .iter()
                .map(|s| (s.key_id.clone(), s.counters()))
                .collect();
            let days: HashMap<String, Counters> = days
                .iter()
                .map(|s| (s.key_id.clone(), s.counters()))
                .collect();
            // Usage of keys no longer listed (deleted, or written by tools) is rebuilt too:
            // the journals count only what is not in the archive yet, so counters left out
            // here would stay short of the archive for good.
            let mut keys = keys;
            let listed: HashSet<String> = keys.iter().map(|k| k.0.clone()).collect();
            let unlisted: Vec<(String, i8, i8, i32)> = totals
                .keys()
                .filter(|id| !listed.contains(*id))
                .map(|id| (id.clone(), 1, 0, 0))
                .collect();
            keys.extend(unlisted);
            let mut counters = Vec::new();
            for (key_id, reset_day, reset_hour, window_minutes) in &keys {
                let (reset_day, reset_hour) = (
                    u8::try_from(*reset_day).unwrap_or(1),
                    u8::try_from(*reset_hour).unwrap_or(0),
                );
                let names =
                    limits::key_counter_names(key_id, now, offset_hours, reset_day, reset_hour);
                counters.push((
                    names.total,
                    totals.get(key_id).copied().unwrap_or_default(),
                    None,
                ));
                counters.push((
                    names.daily,
                    days.get(key_id).copied().unwrap_or_default(),
                    Some(limits::DAY_TTL * 1000),
                ));
                let week_start =
                    limits::week_start(limits::to_local(now, offset_hours), reset_day, reset_hour);
                let mut opus = opus_days
                    .iter()
                    .filter(|d| &d.key_id == key_id && d.day >= week_start)
                    .map(|d| d.cost_micros)
                    .sum::<i64>();
                if reset_hour > 0 {
                    // The reset day counts from its reset hour on only.
                    let day_start = week_start
                        .and_hms_opt(0, 0, 0)
                        .unwrap_or_default()
                        .and_utc()
                        - Duration::hours(i64::from(offset_hours));
                    let before: Vec<KeySums> = diesel::sql_query(format!(
                        "SELECT api_key_id AS key_id, {RECORD_SUMS} FROM usage_records \
                         WHERE api_key_id = ? AND created_at >= ? AND created_at < ? \
                         AND model LIKE '%opus%' GROUP BY api_key_id"
                    ))
                    .bind::<Char, _>(key_id)
                    .bind::<Timestamp, _>(day_start.naive_utc())
                    .bind::<Timestamp, _>(
                        (day_start + Duration::hours(i64::from(reset_hour))).naive_utc(),
                    )
                    .load(c)
                    .await?;
                    opus -= before.iter().map(|s| s.cost_micros).sum::<i64>();
                }
                counters.push((
                    names.weekly_opus,
                    Counters {
                        cost_micros: opus,
                        ..Counters::default()
                    },
                    Some(OPUS_WEEK_TTL_SECS * 1000),
                ));
                let minutes = u32::try_from(*window_minutes).unwrap_or(0);
                if let Some(w) = limits::rate_window(key_id, minutes, now) {
                    let start = now
                        - Duration::seconds(now.timestamp().rem_euclid(i64::from(minutes) * 60));
                    let sums: Vec<KeySums> = diesel::sql_query(format!(
                        "SELECT api_key_id AS key_id, {RECORD_SUMS} FROM usage_records \
                         WHERE api_key_id = ? AND created_at >= ? GROUP BY api_key_id"
                    ))
                    .bind::<Char, _>(key_id)
                    .bind::<Timestamp, _>(start.naive_utc())
                    .load(c)
                    .await?;
                    counters.push((
                        w.name,
                        <[KeySums]>::first(&sums)
                            .map(KeySums::counters)
                            .unwrap_or_default(),
                        Some(i64::try_from(w.ttl_seconds).unwrap_or(i64::MAX) * 1000),
                    ));
                }
            }
            // Imported history (no archive rows behind it) is a baseline under `import:`.
            let baseline_names: Vec<String> = counters
                .iter()
                .map(|(n, _, _)| format!("{BASELINE_PREFIX}{n}"))
                .collect();
            type Row = (String, i64, i64, i64, i64, i64, i64);
            let baselines: Vec<Row> = usage_counters::table
                .filter(usage_counters::counter_key.eq_any(&baseline_names))
                .select((
                    usage_counters::counter_key,
                    usage_counters::requests,
                    usage_counters::input_tokens,
                    usage_counters::output_tokens,
                    usage_counters::cache_create_tokens,
                    usage_counters::cache_read_tokens,
                    usage_counters::cost_micros,
                ))
                .load(c)
                .await?;
            let baselines: HashMap<String, Counters> = baselines
                .into_iter()
                .map(|r| (r.0, Counters::from_array([r.1, r.2, r.3, r.4, r.5, r.6])))
                .collect();
            for (name, value, _) in &mut counters {
                if let Some(b) = baselines.get(&format!("{BASELINE_PREFIX}{name}")) {
                    value.add(b);
                }
            }
            Ok(LedgerSnapshot {
                boundaries: boundaries
                    .into_iter()
                    .filter_map(|(instance, seq, row_id)| {
                        let boundary = ArchiveBoundary {
                            seq: u64::try_from(seq).ok()?,
                            row_id: u64::try_from(row_id).unwrap_or(0),
                        };
                        Some((instance, boundary))
                    })
                    .collect(),
                counters,
            })
        })
        .await?;
    Ok(snap)
}

/// An archived row of one instance's journal, with its key's weekly reset.
#[derive(Debug, Clone)]
pub struct JournalRow {
    /// The archive row's id: the next page starts after it.
    pub row_id: u64,
    pub seq: u64,
    pub event: UsageEvent,
    pub weekly_reset: (u8, u8),
}

type RowTuple = (
    i64,
    Option<i64>,
    String,
    Option<String>,
    String,
    String,
    String,
    (i64, i64, i64, i64, i64, i64),
    i16,
    bool,
    i32,
    chrono::NaiveDateTime,
    Option<(i8, i8)>,
);

/// Rows of `instance`'s journal archived after `after` (a sequence number above its `seq`,
/// found from its `row_id` on), in order. The rows are read by a range of the primary key:
/// one instance's rows have increasing ids in the order of their sequence numbers.
pub async fn rows_after(
    mut conn: DbConn,
    instance: String,
    after: ArchiveBoundary,
    limit: i64,
) -> Result<Vec<JournalRow>, StoreError> {
    use usage_records::dsl as r;
    let after_seq = i64::try_from(after.seq).unwrap_or(i64::MAX);
    let after_id = i64::try_from(after.row_id).unwrap_or(i64::MAX);
    let rows: Vec<RowTuple> = usage_records::table
        .left_join(api_keys::table.on(api_keys::id.eq(r::api_key_id)))
        .filter(r::id.gt(after_id))
        .filter(r::instance_id.eq(&instance))
        .filter(r::journal_seq.gt(after_seq))
        .order(r::id.asc())
        .limit(limit)
        .select((
            r::id,
            r::journal_seq,
            r::request_id,
            r::upstream_request_id,
            r::api_key_id,
            r::account_id,
            r::model,
            (
                r::input_tokens,
                r::output_tokens,
                r::cache_create_5m_tokens,
                r::cache_create_1h_tokens,
                r::cache_read_tokens,
                r::cost_micros,
            ),
            r::status_code,
            r::is_stream,
            r::latency_ms,
            r::created_at,
            (api_keys::weekly_reset_day, api_keys::weekly_reset_hour).nullable(),
        ))
        .load(&mut conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|t| JournalRow {
            row_id: u64::try_from(t.0).unwrap_or(0),
            seq: t.1.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            event: UsageEvent {
                request_id: t.2,
                upstream_request_id: t.3,
                api_key_id: t.4,
                account_id: t.5,
                model: t.6,
                input_tokens: t.7.0,
                output_tokens: t.7.1,
                cache_create_5m_tokens: t.7.2,
                cache_create_1h_tokens: t.7.3,
                cache_read_tokens: t.7.4,
                cost_micros: t.7.5,
                status_code: u16::try_from(t.8).unwrap_or(0),
                is_stream: t.9,
                latency_ms: u32::try_from(t.10).unwrap_or(0),
                created_at: t.11.and_utc(),
            },
            weekly_reset: t.12.map_or((1, 0), |(d, h)| {
                (u8::try_from(d).unwrap_or(1), u8::try_from(h).unwrap_or(0))
            }),
        })
        .collect())
}

/// Archive rows that came from journals (tests and diagnose).
pub async fn journal_rows(mut conn: DbConn) -> Result<i64, StoreError> {
    Ok(usage_records::table
        .filter(usage_records::instance_id.is_not_null())
        .count()
        .get_result(&mut conn)
        .await?)
}

#[allow(dead_code)]
fn _types(_: Nullable<Text>) {}
