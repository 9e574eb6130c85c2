//! The usage archive: idempotent batch inserts (unique request id) that also add the new
//! rows to the daily and minutely roll-ups (the minutely one kept for a week), in one
//! transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use diesel::mysql::Mysql;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Date, Datetime, Integer, Nullable, SmallInt, Text};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};

use super::literal;

use super::schema::{usage_daily, usage_records};
use crate::actors::persistence::DbConn;
use crate::domain::limits::{CounterUpdate, Counters};
use crate::domain::usage_event::UsageEvent;
use crate::error::StoreError;

/// One event to archive, with where it comes from in a journal and, in mysql mode, the
/// counter updates to add in the same transaction (so they are added exactly once).
#[derive(Debug, Clone)]
pub struct ArchiveItem {
    pub event: UsageEvent,
    /// (instance id, sequence number) of its journal record.
    pub journal: Option<(std::sync::Arc<str>, u64)>,
    pub counters: Vec<CounterUpdate>,
}

impl ArchiveItem {
    /// An event from elsewhere than a journal (imports, mode moves), no counters.
    pub fn bare(event: UsageEvent) -> Self {
        ArchiveItem {
            event,
            journal: None,
            counters: Vec::new(),
        }
    }
}

/// Writes the events without a journal behind them (imports, mode moves).
pub async fn insert_events(
    conn: DbConn,
    events: Vec<UsageEvent>,
    offset_hours: i32,
) -> Result<usize, StoreError> {
    insert_batch(
        conn,
        events.into_iter().map(ArchiveItem::bare).collect(),
        offset_hours,
    )
    .await
}

/// Writes the items not archived yet (with their daily roll-ups and, when given, their
/// counter updates) in one transaction; returns how many were new. Replaying a batch
/// changes nothing.
pub async fn insert_batch(
    mut conn: DbConn,
    items: Vec<ArchiveItem>,
    offset_hours: i32,
) -> Result<usize, StoreError> {
    insert_items(&mut conn, &items, offset_hours, true).await
}

/// `insert_batch` for a journal's next batch, which is new unless the process died between
/// a commit and its checkpoint: inserted without looking for the request ids first (a
/// fifth of MySQL's work per row), and with the look-up only when a duplicate turns up.
pub async fn insert_journal_batch(
    mut conn: DbConn,
    items: Vec<ArchiveItem>,
    offset_hours: i32,
) -> Result<usize, StoreError> {
    match insert_items(&mut conn, &items, offset_hours, false).await {
        Err(StoreError::Duplicate(_)) => insert_items(&mut conn, &items, offset_hours, true).await,
        other => other,
    }
}

async fn insert_items(
    conn: &mut DbConn,
    items: &[ArchiveItem],
    offset_hours: i32,
    look_up_first: bool,
) -> Result<usize, StoreError> {
    if items.is_empty() {
        return Ok(0);
    }
    let inserted = conn
        .transaction::<_, diesel::result::Error, _>(async |c| {
            let ids: Vec<&str> = items.iter().map(|i| i.event.request_id.as_str()).collect();
            let existing: HashSet<String> = if look_up_first {
                usage_records::table
                    .filter(usage_records::request_id.eq_any(&ids))
                    .select(usage_records::request_id)
                    .load::<String>(c)
                    .await?
                    .into_iter()
                    .collect()
            } else {
                HashSet::new()
            };
            // Unique within the batch too.
            let mut seen: HashSet<&str> = HashSet::with_capacity(items.len());
            let fresh_items: Vec<&ArchiveItem> = items
                .iter()
                .filter(|i| {
                    !existing.contains(&i.event.request_id)
                        && seen.insert(i.event.request_id.as_str())
                })
                .collect();
            if fresh_items.is_empty() {
                save_checkpoints(c, items, false).await?;
                return Ok(0);
            }
            let fresh: Vec<&UsageEvent> = fresh_items.iter().map(|i| &i.event).collect();
            let rows: Vec<NewRecord<'_>> = fresh_items
                .iter()
                .map(|i| NewRecord::of(i, offset_hours))
                .collect();
            insert_records(c, &rows).await?;
            // Right after the rows: LAST_INSERT_ID() is the first id of their last statement.
            save_checkpoints(c, items, true).await?;
            let mut rollups: HashMap<(NaiveDate, &str, &str, &str), Counters> = HashMap::new();
            for e in &fresh {
                rollups
                    .entry((
                        e.local_date(offset_hours),
                        &e.api_key_id,
                        &e.account_id,
                        &e.model,
                    ))
                    .or_default()
                    .add(&Counters::of_event(e, 1));
            }
            // diesel's upsert DSL has no MySQL form for "add to the stored value": plain SQL,
            // one statement for every roll-up row of the batch.
            let mut sql = String::with_capacity(200 * rollups.len() + 512);
            sql.push_str(
                "INSERT INTO usage_daily (usage_date, api_key_id, account_id, model, source, \
                 requests, input_tokens, output_tokens, cache_create_tokens, cache_read_tokens, \
                 cost_micros) VALUES ",
            );
            for (n, ((date, key, account, model), c)) in rollups.iter().enumerate() {
                sql.push_str(if n == 0 { "(" } else { ",(" });
                literal::date(&mut sql, *date);
                for t in [key, account, model] {
                    sql.push(',');
                    literal::text(&mut sql, t);
                }
                sql.push_str(",'relay'");
                for v in [
                    c.requests,
                    c.input_tokens,
                    c.output_tokens,
                    c.cache_create_tokens,
                    c.cache_read_tokens,
                    c.cost_micros,
                ] {
                    sql.push(',');
                    literal::int(&mut sql, v);
                }
                sql.push(')');
            }
            sql.push_str(
                " ON DUPLICATE KEY UPDATE \
                 requests = requests + VALUES(requests), \
                 input_tokens = input_tokens + VALUES(input_tokens), \
                 output_tokens = output_tokens + VALUES(output_tokens), \
                 cache_create_tokens = cache_create_tokens + VALUES(cache_create_tokens), \
                 cache_read_tokens = cache_read_tokens + VALUES(cache_read_tokens), \
                 cost_micros = cost_micros + VALUES(cost_micros)",
            );
            c.batch_execute(&sql).await?;
            c.batch_execute(&minutely_upsert(&fresh)).await?;
            c.batch_execute(&minutely_prune(&fresh)).await?;
            let counters: Vec<CounterUpdate> = fresh_items
                .iter()
                .flat_map(|i| i.counters.iter().cloned())
                .collect();
            if !counters.is_empty() {
                super::ephemeral::add_counters_in(c, &counters).await?;
            }
            Ok(fresh.len())
        })
        .await?;
    Ok(inserted)
}

/// An archive row as inserted.
struct NewRecord<'a> {
    event: &'a UsageEvent,
    instance_id: Option<&'a str>,
    journal_seq: Option<i64>,
    status_code: i16,
    latency_ms: i32,
    usage_date: NaiveDate,
    created_at: chrono::NaiveDateTime,
}

impl<'a> NewRecord<'a> {
    fn of(item: &'a ArchiveItem, offset_hours: i32) -> Self {
        let e = &item.event;
        NewRecord {
            event: e,
            instance_id: item.journal.as_ref().map(|(instance, _)| &**instance),
            journal_seq: item
                .journal
                .as_ref()
                .map(|(_, seq)| i64::try_from(*seq).unwrap_or(i64::MAX)),
            status_code: i16::try_from(e.status_code).unwrap_or(i16::MAX),
            latency_ms: i32::try_from(e.latency_ms).unwrap_or(i32::MAX),
            usage_date: e.local_date(offset_hours),
            created_at: e.created_at.naive_utc(),
        }
    }
}

/// Inserts archive rows through prepared statements of fixed sizes (128 rows, then 64, 32,
/// … 1 for the rest), which each connection prepares once and keeps: the server then binds
/// typed values instead of parsing SQL text. MariaDB's CPU per archived row, measured alone
/// (200,000 rows, 1,000 per transaction, 125 per statement): 38 µs as literal text, 23 µs as
/// a cached prepared statement. A statement of a batch's own size would be prepared anew
/// each time, its 18 placeholders per row described by the server and parsed by the driver.
async fn insert_records(c: &mut AsyncMysqlConnection, rows: &[NewRecord<'_>]) -> QueryResult<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        rest = match rest.len() {
            128.. => insert_fixed::<128>(c, rest).await?,
            64.. => insert_fixed::<64>(c, rest).await?,
            32.. => insert_fixed::<32>(c, rest).await?,
            16.. => insert_fixed::<16>(c, rest).await?,
            8.. => insert_fixed::<8>(c, rest).await?,
            4.. => insert_fixed::<4>(c, rest).await?,
            2.. => insert_fixed::<2>(c, rest).await?,
            _ => insert_fixed::<1>(c, rest).await?,
        };
    }
    Ok(())
}

/// Inserts the first `N` rows (the caller has at least `N`) and returns the others.
async fn insert_fixed<'r, 'a, const N: usize>(
    c: &mut AsyncMysqlConnection,
    rows: &'r [NewRecord<'a>],
) -> QueryResult<&'r [NewRecord<'a>]> {
    let (head, rest) = rows.split_at(N.min(rows.len()));
    let rows = <&[NewRecord<'a>; N]>::try_from(head)
        .map_err(|_| diesel::result::Error::QueryBuilderError("archive rows miscounted".into()))?;
    RecordsInsert { rows }.execute(c).await?;
    Ok(rest)
}

/// `INSERT INTO usage_records … VALUES` of exactly `N` rows, every value a bound parameter.
/// diesel's own insert of `Insertable` rows is never cached on MySQL (each value may be
/// `DEFAULT`, which changes the text), nor is `sql_query`; this one has one text per `N`,
/// named by its query id.
struct RecordsInsert<'r, 'a, const N: usize> {
    rows: &'r [NewRecord<'a>; N],
}

/// The query id of [`RecordsInsert`]: one prepared statement per row count.
struct RecordsInsertId<const N: usize>;

impl<const N: usize> QueryId for RecordsInsert<'_, '_, N> {
    type QueryId = RecordsInsertId<N>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const N: usize> QueryFragment<Mysql> for RecordsInsert<'_, '_, N> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO usage_records (request_id, instance_id, journal_seq, \
             upstream_request_id, api_key_id, account_id, model, input_tokens, \
             output_tokens, cache_create_5m_tokens, cache_create_1h_tokens, \
             cache_read_tokens, cost_micros, status_code, is_stream, latency_ms, \
             usage_date, created_at) VALUES ",
        );
        for (n, row) in self.rows.iter().enumerate() {
            let e = row.event;
            out.push_sql(if n == 0 { "(" } else { ",(" });
            out.push_bind_param::<Text, _>(&e.request_id)?;
            out.push_sql(",");
            out.push_bind_param::<Nullable<Text>, _>(&row.instance_id)?;
            out.push_sql(",");
            out.push_bind_param::<Nullable<BigInt>, _>(&row.journal_seq)?;
            out.push_sql(",");
            out.push_bind_param::<Nullable<Text>, _>(&e.upstream_request_id)?;
            for text in [&e.api_key_id, &e.account_id, &e.model] {
                out.push_sql(",");
                out.push_bind_param::<Text, _>(text)?;
            }
            for number in [
                &e.input_tokens,
                &e.output_tokens,
                &e.cache_create_5m_tokens,
                &e.cache_create_1h_tokens,
                &e.cache_read_tokens,
                &e.cost_micros,
            ] {
                out.push_sql(",");
                out.push_bind_param::<BigInt, _>(number)?;
            }
            out.push_sql(",");
            out.push_bind_param::<SmallInt, _>(&row.status_code)?;
            out.push_sql(",");
            out.push_bind_param::<Bool, _>(&e.is_stream)?;
            out.push_sql(",");
            out.push_bind_param::<Integer, _>(&row.latency_ms)?;
            out.push_sql(",");
            out.push_bind_param::<Date, _>(&row.usage_date)?;
            out.push_sql(",");
            out.push_bind_param::<Datetime, _>(&row.created_at)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

/// The statement adding `events` to the requests per minute (UTC) of `usage_minutely`.
fn minutely_upsert(events: &[&UsageEvent]) -> String {
    let mut minutes: BTreeMap<i64, i64> = BTreeMap::new();
    for e in events {
        *minutes
            .entry(e.created_at.timestamp().div_euclid(60))
            .or_default() += 1;
    }
    let mut sql = String::with_capacity(40 * minutes.len() + 128);
    sql.push_str("INSERT INTO usage_minutely (minute, requests) VALUES ");
    for (n, (minute, requests)) in minutes.into_iter().enumerate() {
        sql.push_str(if n == 0 { "(" } else { ",(" });
        let start = chrono::DateTime::from_timestamp(minute * 60, 0).unwrap_or_default();
        literal::minute(&mut sql, start.naive_utc());
        sql.push(',');
        literal::int(&mut sql, requests);
        sql.push(')');
    }
    sql.push_str(" ON DUPLICATE KEY UPDATE requests = requests + VALUES(requests)");
    sql
}

/// Minutes of `usage_minutely` kept: the console charts the last hour; a week leaves room to
/// look further back by hand.
const MINUTELY_KEPT_DAYS: i64 = 7;

/// The statement removing the minutes older than [`MINUTELY_KEPT_DAYS`] before the newest of
/// `events` (a range of the primary key: when there is nothing to remove, one index probe).
fn minutely_prune(events: &[&UsageEvent]) -> String {
    let newest = events
        .iter()
        .map(|e| e.created_at)
        .max()
        .unwrap_or_default();
    let mut sql = String::from("DELETE FROM usage_minutely WHERE minute < ");
    literal::minute(
        &mut sql,
        (newest - chrono::Duration::days(MINUTELY_KEPT_DAYS)).naive_utc(),
    );
    sql
}

/// Moves each journal's checkpoint to the last sequence number of `items` (written or met
/// again). When rows were just inserted, the checkpoint's row id moves to the first id of
/// their last statement: every row the instance archives later gets a higher id.
async fn save_checkpoints(
    c: &mut AsyncMysqlConnection,
    items: &[ArchiveItem],
    rows_inserted: bool,
) -> QueryResult<()> {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (instance, seq) in items.iter().filter_map(|i| i.journal.as_ref()) {
        let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
        let at = last.entry(&**instance).or_insert(seq);
        *at = (*at).max(seq);
    }
    for (instance, archived_seq) in last {
        CheckpointUpsert {
            instance,
            archived_seq,
            rows_inserted,
        }
        .execute(c)
        .await?;
    }
    Ok(())
}

/// Moves one instance's row of `journal_checkpoints` forward (never back: a batch archived
/// again after a crash meets a checkpoint already past it). One statement text, prepared
/// once per connection like the row inserts.
struct CheckpointUpsert<'a> {
    instance: &'a str,
    archived_seq: i64,
    rows_inserted: bool,
}

struct CheckpointUpsertId;

impl QueryId for CheckpointUpsert<'_> {
    type QueryId = CheckpointUpsertId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Mysql> for CheckpointUpsert<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO journal_checkpoints (instance_id, archived_seq, last_row_id) VALUES (",
        );
        out.push_bind_param::<Text, _>(self.instance)?;
        out.push_sql(",");
        out.push_bind_param::<BigInt, _>(&self.archived_seq)?;
        out.push_sql(", IF(");
        out.push_bind_param::<Bool, _>(&self.rows_inserted)?;
        out.push_sql(
            ", LAST_INSERT_ID(), 0)) ON DUPLICATE KEY UPDATE \
             archived_seq = GREATEST(archived_seq, VALUES(archived_seq)), \
             last_row_id = GREATEST(last_row_id, VALUES(last_row_id))",
        );
        Ok(())
    }
}

/// Archive rows in total (tests, diagnose).
pub async fn count_records(mut conn: DbConn) -> Result<i64, StoreError> {
    Ok(usage_records::table.count().get_result(&mut conn).await?)
}

/// An archive row as read back (everything but its id and local date).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = usage_records)]
pub struct UsageRecordRow {
    pub request_id: String,
    pub upstream_request_id: Option<String>,
    pub api_key_id: String,
    pub account_id: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_create_5m_tokens: i64,
    pub cache_create_1h_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost_micros: i64,
    pub status_code: i16,
    pub is_stream: bool,
    pub latency_ms: i32,
    pub created_at: chrono::NaiveDateTime,
}

impl From<UsageRecordRow> for UsageEvent {
    fn from(r: UsageRecordRow) -> Self {
        UsageEvent {
            request_id: r.request_id,
            upstream_request_id: r.upstream_request_id,
            api_key_id: r.api_key_id,
            account_id: r.account_id,
            model: r.model,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cache_create_5m_tokens: r.cache_create_5m_tokens,
            cache_create_1h_tokens: r.cache_create_1h_tokens,
            cache_read_tokens: r.cache_read_tokens,
            cost_micros: r.cost_micros,
            status_code: u16::try_from(r.status_code).unwrap_or(0),
            is_stream: r.is_stream,
            latency_ms: u32::try_from(r.latency_ms).unwrap_or(0),
            created_at: r.created_at.and_utc(),
        }
    }
}

/// The newest archive rows of a key, newest first.
pub async fn recent_for_key(
    mut conn: DbConn,
    key_id: String,
    limit: i64,
) -> Result<Vec<UsageEvent>, StoreError> {
    // Key ids are ASCII (`api_key::validate_id`) and so is the column: another id matches no
    // row (MySQL would refuse to compare it).
    if !key_id.is_ascii() {
        return Ok(Vec::new());
    }
    let rows: Vec<UsageRecordRow> = usage_records::table
        .filter(usage_records::api_key_id.eq(key_id))
        .order(usage_records::created_at.desc())
        .limit(limit)
        .select(UsageRecordRow::as_select())
        .load(&mut conn)
        .await?;
    Ok(rows.into_iter().map(UsageEvent::from).collect())
}

/// Daily roll-up rows in a date range, optionally for one key or account.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DailyRow {
    pub date: NaiveDate,
    pub api_key_id: String,
    pub account_id: String,
    pub model: String,
    pub counters: Counters,
}

/// Which roll-up rows to read; `None` leaves that column unfiltered.
#[derive(Debug, Clone, Default)]
pub struct DailyFilter {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub key_id: Option<String>,
    pub account_id: Option<String>,
    /// `relay` (archived requests) or `import` (history brought in from CRS).
    pub source: Option<&'static str>,
}

pub async fn daily_rows(
    conn: DbConn,
    from: NaiveDate,
    to: NaiveDate,
    key_id: Option<String>,
    account_id: Option<String>,
) -> Result<Vec<DailyRow>, StoreError> {
    let filter = DailyFilter {
        from: Some(from),
        to: Some(to),
        key_id,
        account_id,
        source: None,
    };
    daily_rows_matching(conn, filter).await
}

/// Roll-up rows matching `filter`, by date, key and model.
pub async fn daily_rows_matching(
    mut conn: DbConn,
    filter: DailyFilter,
) -> Result<Vec<DailyRow>, StoreError> {
    use usage_daily::dsl as d;
    let mut q = usage_daily::table.into_boxed();
    if let Some(from) = filter.from {
        q = q.filter(d::usage_date.ge(from));
    }
    if let Some(to) = filter.to {
        q = q.filter(d::usage_date.le(to));
    }
    if let Some(k) = filter.key_id {
        q = q.filter(d::api_key_id.eq(k));
    }
    if let Some(a) = filter.account_id {
        q = q.filter(d::account_id.eq(a));
    }
    if let Some(source) = filter.source {
        q = q.filter(d::source.eq(source));
    }
    type Row = (
        NaiveDate,
        String,
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    );
    let rows: Vec<Row> = q
        .order((d::usage_date.asc(), d::api_key_id.asc(), d::model.asc()))
        .select((
            d::usage_date,
            d::api_key_id,
            d::account_id,
            d::model,
            d::requests,
            d::input_tokens,
            d::output_tokens,
            d::cache_create_tokens,
            d::cache_read_tokens,
            d::cost_micros,
        ))
        .load(&mut conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| DailyRow {
            date: r.0,
            api_key_id: r.1,
            account_id: r.2,
            model: r.3,
            counters: Counters::from_array([r.4, r.5, r.6, r.7, r.8, r.9]),
        })
        .collect())
}
