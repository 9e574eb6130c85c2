//! Queries of the operations commands: imported usage history (`usage_daily` rows with
//! `source = 'import'`), durable counter baselines (`usage_counters` rows named
//! `import:<counter set>`), absolute counter writes, the archive read in pages for
//! `rebuild-cache`, and server figures for `diagnose`.

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{usage_counters, usage_records};
use crate::actors::persistence::DbConn;
pub use crate::domain::crs::DailyImport;
use crate::domain::limits::Counters;
use crate::domain::usage_event::UsageEvent;
use crate::error::StoreError;

/// Name prefix of the durable baseline rows in `usage_counters` (hybrid mode): counter
/// values that have no archive rows behind them (imported history).
pub const BASELINE_PREFIX: &str = "import:";

/// A `usage_counters` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    pub name: String,
    pub counters: Counters,
    pub expires_at: Option<NaiveDateTime>,
}

/// Rows of imported history (`source = 'import'`).
pub async fn daily_imports(conn: DbConn) -> Result<Vec<DailyImport>, StoreError> {
    let filter = super::usage::DailyFilter {
        source: Some("import"),
        ..Default::default()
    };
    let rows = super::usage::daily_rows_matching(conn, filter).await?;
    Ok(rows
        .into_iter()
        .map(|r| DailyImport {
            date: r.date,
            api_key_id: r.api_key_id,
            account_id: r.account_id,
            model: r.model,
            counters: r.counters,
        })
        .collect())
}

/// Writes imported history rows with absolute values (idempotent).
pub async fn put_daily_imports(mut conn: DbConn, rows: Vec<DailyImport>) -> Result<(), StoreError> {
    use diesel::sql_types::{BigInt, Date, Text};
    for chunk in rows.chunks(200) {
        let placeholders = vec!["(?, ?, ?, ?, 'import', ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let mut query = diesel::sql_query(format!(
            "INSERT INTO usage_daily (usage_date, api_key_id, account_id, model, source, \
             requests, input_tokens, output_tokens, cache_create_tokens, cache_read_tokens, \
             cost_micros) VALUES {placeholders} ON DUPLICATE KEY UPDATE \
             requests = VALUES(requests), input_tokens = VALUES(input_tokens), \
             output_tokens = VALUES(output_tokens), \
             cache_create_tokens = VALUES(cache_create_tokens), \
             cache_read_tokens = VALUES(cache_read_tokens), cost_micros = VALUES(cost_micros)"
        ))
        .into_boxed();
        for r in chunk {
            let c = r.counters;
            query = query
                .bind::<Date, _>(r.date)
                .bind::<Text, _>(r.api_key_id.clone())
                .bind::<Text, _>(r.account_id.clone())
                .bind::<Text, _>(r.model.clone())
                .bind::<BigInt, _>(c.requests)
                .bind::<BigInt, _>(c.input_tokens)
                .bind::<BigInt, _>(c.output_tokens)
                .bind::<BigInt, _>(c.cache_create_tokens)
                .bind::<BigInt, _>(c.cache_read_tokens)
                .bind::<BigInt, _>(c.cost_micros);
        }
        query.execute(&mut conn).await?;
    }
    Ok(())
}

/// `usage_counters` rows whose name starts with `prefix`, expired ones left out.
pub async fn counter_rows(mut conn: DbConn, prefix: String) -> Result<Vec<CounterRow>, StoreError> {
    use usage_counters::dsl as uc;
    let now = Utc::now().naive_utc();
    type Row = (String, i64, i64, i64, i64, i64, i64, Option<NaiveDateTime>);
    let rows: Vec<Row> = usage_counters::table
        .filter(uc::counter_key.like(format!(
            "{}%",
            prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        )))
        .filter(uc::expires_at.is_null().or(uc::expires_at.gt(now)))
        .select((
            uc::counter_key,
            uc::requests,
            uc::input_tokens,
            uc::output_tokens,
            uc::cache_create_tokens,
            uc::cache_read_tokens,
            uc::cost_micros,
            uc::expires_at,
        ))
        .load(&mut conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| CounterRow {
            name: r.0,
            counters: Counters::from_array([r.1, r.2, r.3, r.4, r.5, r.6]),
            expires_at: r.7,
        })
        .collect())
}

/// Replaces `usage_counters` rows with absolute values (idempotent).
pub async fn put_counter_rows(mut conn: DbConn, rows: Vec<CounterRow>) -> Result<(), StoreError> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    for chunk in rows.chunks(200) {
        let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let mut query = diesel::sql_query(format!(
            "INSERT INTO usage_counters (counter_key, requests, input_tokens, output_tokens, \
             cache_create_tokens, cache_read_tokens, cost_micros, expires_at) VALUES \
             {placeholders} ON DUPLICATE KEY UPDATE requests = VALUES(requests), \
             input_tokens = VALUES(input_tokens), output_tokens = VALUES(output_tokens), \
             cache_create_tokens = VALUES(cache_create_tokens), \
             cache_read_tokens = VALUES(cache_read_tokens), cost_micros = VALUES(cost_micros), \
             expires_at = VALUES(expires_at)"
        ))
        .into_boxed();
        for r in chunk {
            let c = r.counters;
            query = query
                .bind::<Text, _>(r.name.clone())
                .bind::<BigInt, _>(c.requests)
                .bind::<BigInt, _>(c.input_tokens)
                .bind::<BigInt, _>(c.output_tokens)
                .bind::<BigInt, _>(c.cache_create_tokens)
                .bind::<BigInt, _>(c.cache_read_tokens)
                .bind::<BigInt, _>(c.cost_micros)
                .bind::<Nullable<Timestamp>, _>(r.expires_at);
        }
        query.execute(&mut conn).await?;
    }
    Ok(())
}

/// Deletes `usage_counters` rows by name; returns how many went.
pub async fn delete_counter_rows(
    mut conn: DbConn,
    names: Vec<String>,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for chunk in names.chunks(500) {
        n +=
            diesel::delete(usage_counters::table.filter(usage_counters::counter_key.eq_any(chunk)))
                .execute(&mut conn)
                .await?;
    }
    Ok(n)
}

/// Archive rows with `id > after`, oldest first, at most `limit`.
pub async fn archive_page(
    mut conn: DbConn,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, UsageEvent)>, StoreError> {
    use super::usage::UsageRecordRow;
    let rows: Vec<(i64, UsageRecordRow)> = usage_records::table
        .filter(usage_records::id.gt(after))
        .order(usage_records::id.asc())
        .limit(limit)
        .select((usage_records::id, UsageRecordRow::as_select()))
        .load(&mut conn)
        .await?;
    Ok(rows.into_iter().map(|(id, r)| (id, r.into())).collect())
}

/// Figures of the MySQL server and the relay's tables for `diagnose`.
#[derive(Debug, Clone, Default)]
pub struct MysqlFigures {
    pub version: String,
    /// `SHOW GLOBAL STATUS` values worth watching.
    pub status: Vec<(String, String)>,
    pub max_connections: Option<String>,
    /// Rows per relay table.
    pub counts: Vec<(String, i64)>,
}

#[derive(QueryableByName)]
struct NameValue {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Server version, connection and lock figures, and row counts.
pub async fn mysql_figures(mut conn: DbConn) -> Result<MysqlFigures, StoreError> {
    let version: Vec<NameValue> =
        diesel::sql_query("SELECT 'version' AS name, CAST(VERSION() AS CHAR) AS value")
            .load(&mut conn)
            .await?;
    let status: Vec<NameValue> = diesel::sql_query(
        "SELECT CAST(VARIABLE_NAME AS CHAR) AS name, CAST(VARIABLE_VALUE AS CHAR) AS value \
         FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ('THREADS_CONNECTED', \
         'THREADS_RUNNING', 'SLOW_QUERIES', 'INNODB_ROW_LOCK_WAITS', \
         'INNODB_ROW_LOCK_CURRENT_WAITS', 'INNODB_ROW_LOCK_TIME_AVG', 'UPTIME')",
    )
    .load(&mut conn)
    .await
    .unwrap_or_default();
    let max_connections: Vec<NameValue> = diesel::sql_query(
        "SELECT 'max_connections' AS name, CAST(@@max_connections AS CHAR) AS value",
    )
    .load(&mut conn)
    .await
    .unwrap_or_default();
    let mut counts = Vec::new();
    // Fixed table names (not user input), so formatting them into the SQL is safe.
    for table in [
        "api_keys",
        "claude_accounts",
        "admin_users",
        "usage_records",
        "usage_daily",
        "usage_counters",
        "kv_entries",
    ] {
        let n: Vec<Count> = diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"))
            .load(&mut conn)
            .await?;
        counts.push((table.to_string(), n.iter().map(|c| c.n).next().unwrap_or(0)));
    }
    let mut status: Vec<(String, String)> = status
        .into_iter()
        .map(|r| (r.name.to_ascii_lowercase(), r.value))
        .collect();
    status.sort();
    Ok(MysqlFigures {
        version: version
            .into_iter()
            .map(|r| r.value)
            .next()
            .unwrap_or_default(),
        status,
        max_connections: max_connections.into_iter().map(|r| r.value).next(),
        counts,
    })
}

/// Every operator as (username, password hash).
pub async fn admin_credentials(mut conn: DbConn) -> Result<Vec<(String, String)>, StoreError> {
    use super::schema::admin_users::dsl as a;
    Ok(super::schema::admin_users::table
        .order(a::username)
        .select((a::username, a::password_hash))
        .load(&mut conn)
        .await?)
}

/// Applied migration versions and how many embedded ones are pending. Blocking.
pub fn schema_state(config: &crate::config::MysqlConfig) -> Result<(Vec<String>, usize), String> {
    use diesel_migrations::MigrationHarness;
    let mut conn = super::setup::connect(config)?;
    let mut applied: Vec<String> = conn
        .applied_migrations()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    applied.sort();
    let pending = conn
        .pending_migrations(super::setup::MIGRATIONS)
        .map_err(|e| e.to_string())?
        .len();
    Ok((applied, pending))
}
