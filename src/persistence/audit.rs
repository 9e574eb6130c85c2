//! Queries on `audit_log`: one row per admin change (secrets already masked by the caller).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::audit_log;
use crate::actors::persistence::DbConn;
use crate::domain::audit::{AuditEntry, AuditFilter};
use crate::error::StoreError;

type Row = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    chrono::NaiveDateTime,
);

fn parse(raw: Option<String>) -> Option<serde_json::Value> {
    raw.and_then(|s| serde_json::from_str(&s).ok())
}

/// Appends one entry; returns its id.
pub async fn insert(mut conn: DbConn, entry: AuditEntry) -> Result<i64, StoreError> {
    let at = entry.created_at.naive_utc();
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::actor.eq(&entry.actor),
            audit_log::action.eq(&entry.action),
            audit_log::target_type.eq(&entry.target_type),
            audit_log::target_id.eq(&entry.target_id),
            audit_log::before_json.eq(entry.before.as_ref().map(|v| v.to_string())),
            audit_log::after_json.eq(entry.after.as_ref().map(|v| v.to_string())),
            audit_log::client_addr.eq(&entry.client_addr),
            audit_log::created_at.eq(at),
        ))
        .execute(&mut conn)
        .await?;
    // LAST_INSERT_ID is per connection: the same pooled connection answers it.
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "CAST(LAST_INSERT_ID() AS SIGNED)",
    ))
    .get_result(&mut conn)
    .await
    .map_err(Into::into)
}

/// Entries matching `filter`, newest first, and how many match in all.
pub async fn list(
    mut conn: DbConn,
    filter: AuditFilter,
) -> Result<(Vec<AuditEntry>, i64), StoreError> {
    let build = |f: &AuditFilter| {
        let mut q = audit_log::table.into_boxed();
        if let Some(t) = &f.target_type {
            q = q.filter(audit_log::target_type.eq(t.clone()));
        }
        if let Some(t) = &f.target_id {
            q = q.filter(audit_log::target_id.eq(t.clone()));
        }
        if let Some(a) = &f.action {
            q = q.filter(audit_log::action.eq(a.clone()));
        }
        q
    };
    let total: i64 = build(&filter).count().get_result(&mut conn).await?;
    let rows: Vec<Row> = build(&filter)
        .order(audit_log::id.desc())
        .limit(filter.limit)
        .offset(filter.offset)
        .select((
            audit_log::id,
            audit_log::actor,
            audit_log::action,
            audit_log::target_type,
            audit_log::target_id,
            audit_log::before_json,
            audit_log::after_json,
            audit_log::client_addr,
            audit_log::created_at,
        ))
        .load(&mut conn)
        .await?;
    let entries = rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.0,
            actor: r.1,
            action: r.2,
            target_type: r.3,
            target_id: r.4,
            before: parse(r.5),
            after: parse(r.6),
            client_addr: r.7,
            created_at: DateTime::<Utc>::from_naive_utc_and_offset(r.8, Utc),
        })
        .collect();
    Ok((entries, total))
}
