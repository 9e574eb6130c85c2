//! What Redis holds in hybrid mode, as tables for mysql mode: entries with an expiry
//! (sessions, tokens, locks), counters, and concurrency leases with the admission check.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{concurrency_leases, concurrency_scopes, kv_entries, usage_counters};
use crate::actors::persistence::DbConn;
use crate::domain::limits::{Admission, AdmissionRequest, CounterUpdate, Counters};
use crate::error::StoreError;

fn now() -> chrono::NaiveDateTime {
    Utc::now().naive_utc()
}

/// Sets an entry with a lifetime (insert or replace).
pub async fn set_entry(
    mut conn: DbConn,
    key: String,
    value: String,
    ttl: Duration,
) -> Result<(), StoreError> {
    let expires = Utc::now() + ttl;
    diesel::replace_into(kv_entries::table)
        .values((
            kv_entries::entry_key.eq(key),
            kv_entries::entry_value.eq(value),
            kv_entries::expires_at.eq(Some(expires.naive_utc())),
        ))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// The entry's value unless missing or expired.
pub async fn get_entry(mut conn: DbConn, key: String) -> Result<Option<String>, StoreError> {
    Ok(kv_entries::table
        .filter(kv_entries::entry_key.eq(key))
        .filter(
            kv_entries::expires_at
                .is_null()
                .or(kv_entries::expires_at.gt(now())),
        )
        .select(kv_entries::entry_value)
        .first(&mut conn)
        .await
        .optional()?)
}

/// Extends the lifetime of a live entry; true when it existed.
pub async fn touch_entry(mut conn: DbConn, key: String, ttl: Duration) -> Result<bool, StoreError> {
    let n = diesel::update(
        kv_entries::table
            .filter(kv_entries::entry_key.eq(key))
            .filter(kv_entries::expires_at.gt(now())),
    )
    .set(kv_entries::expires_at.eq(Some((Utc::now() + ttl).naive_utc())))
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

pub async fn delete_entry(mut conn: DbConn, key: String) -> Result<bool, StoreError> {
    let n = diesel::delete(kv_entries::table.filter(kv_entries::entry_key.eq(key)))
        .execute(&mut conn)
        .await?;
    Ok(n > 0)
}

/// Takes a lock unless someone holds a live one; true when taken.
pub async fn acquire_lock(
    mut conn: DbConn,
    key: String,
    token: String,
    ttl: Duration,
) -> Result<bool, StoreError> {
    diesel::delete(
        kv_entries::table
            .filter(kv_entries::entry_key.eq(&key))
            .filter(kv_entries::expires_at.le(now())),
    )
    .execute(&mut conn)
    .await?;
    let n = diesel::insert_or_ignore_into(kv_entries::table)
        .values((
            kv_entries::entry_key.eq(key),
            kv_entries::entry_value.eq(token),
            kv_entries::expires_at.eq(Some((Utc::now() + ttl).naive_utc())),
        ))
        .execute(&mut conn)
        .await?;
    Ok(n == 1)
}

/// Releases a lock only if `token` still holds it.
pub async fn release_lock(
    mut conn: DbConn,
    key: String,
    token: String,
) -> Result<bool, StoreError> {
    let n = diesel::delete(
        kv_entries::table
            .filter(kv_entries::entry_key.eq(key))
            .filter(kv_entries::entry_value.eq(token)),
    )
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

/// Adds to many counter sets in one statement.
pub async fn add_counters(mut conn: DbConn, updates: Vec<CounterUpdate>) -> Result<(), StoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    conn.transaction::<_, diesel::result::Error, _>(async |c| add_counters_in(c, &updates).await)
        .await?;
    Ok(())
}

/// Counter rows per statement: 8 placeholders each, and MySQL allows 65,535 placeholders in
/// a prepared statement.
const COUNTER_ROWS_PER_STATEMENT: usize = 1000;

pub(crate) async fn add_counters_in(
    conn: &mut diesel_async::AsyncMysqlConnection,
    updates: &[CounterUpdate],
) -> Result<(), diesel::result::Error> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    // An archive batch names the same sets again and again (about 16 per event): summed
    // first, one row per set. Unsummed, a batch of 512 events was over MySQL's limit.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut summed: Vec<(&str, Counters, Option<i64>)> = Vec::new();
    for u in updates {
        match index.get(u.name.as_str()) {
            Some(&i) => summed[i].1.add(&u.delta),
            None => {
                index.insert(&u.name, summed.len());
                summed.push((&u.name, u.delta, u.ttl_seconds));
            }
        }
    }
    let base = Utc::now();
    for chunk in summed.chunks(COUNTER_ROWS_PER_STATEMENT) {
        // diesel's upsert DSL has no MySQL form for "add to the stored value": plain SQL.
        let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let mut query = diesel::sql_query(format!(
            "INSERT INTO usage_counters (counter_key, requests, input_tokens, output_tokens, \
             cache_create_tokens, cache_read_tokens, cost_micros, expires_at) VALUES {placeholders} \
             ON DUPLICATE KEY UPDATE requests = requests + VALUES(requests), \
             input_tokens = input_tokens + VALUES(input_tokens), \
             output_tokens = output_tokens + VALUES(output_tokens), \
             cache_create_tokens = cache_create_tokens + VALUES(cache_create_tokens), \
             cache_read_tokens = cache_read_tokens + VALUES(cache_read_tokens), \
             cost_micros = cost_micros + VALUES(cost_micros)"
        ))
        .into_boxed();
        for (name, delta, ttl) in chunk {
            query = query
                .bind::<Text, _>(name.to_string())
                .bind::<BigInt, _>(delta.requests)
                .bind::<BigInt, _>(delta.input_tokens)
                .bind::<BigInt, _>(delta.output_tokens)
                .bind::<BigInt, _>(delta.cache_create_tokens)
                .bind::<BigInt, _>(delta.cache_read_tokens)
                .bind::<BigInt, _>(delta.cost_micros)
                .bind::<Nullable<Timestamp>, _>(
                    ttl.map(|t| (base + Duration::seconds(t)).naive_utc()),
                );
        }
        query.execute(conn).await?;
    }
    Ok(())
}

type CounterRow = (String, i64, i64, i64, i64, i64, i64);

async fn load_counters(
    conn: &mut diesel_async::AsyncMysqlConnection,
    names: &[String],
) -> Result<Vec<Counters>, diesel::result::Error> {
    use usage_counters::dsl as uc;
    let found: Vec<CounterRow> = usage_counters::table
        .filter(uc::counter_key.eq_any(names))
        .filter(uc::expires_at.is_null().or(uc::expires_at.gt(now())))
        .select((
            uc::counter_key,
            uc::requests,
            uc::input_tokens,
            uc::output_tokens,
            uc::cache_create_tokens,
            uc::cache_read_tokens,
            uc::cost_micros,
        ))
        .load(conn)
        .await?;
    Ok(names
        .iter()
        .map(|n| {
            found
                .iter()
                .find(|r| &r.0 == n)
                .map(|r| Counters::from_array([r.1, r.2, r.3, r.4, r.5, r.6]))
                .unwrap_or_default()
        })
        .collect())
}

/// Current values of counter sets (missing or expired read as zero), in the order asked.
pub async fn read_counters(
    mut conn: DbConn,
    names: Vec<String>,
) -> Result<Vec<Counters>, StoreError> {
    Ok(load_counters(&mut conn, &names).await?)
}

/// Counter sets whose name starts with `prefix` (reports, rebuilds).
pub async fn scan_counters(
    mut conn: DbConn,
    prefix: String,
) -> Result<Vec<(String, Counters)>, StoreError> {
    use usage_counters::dsl as uc;
    let rows: Vec<CounterRow> = usage_counters::table
        .filter(uc::counter_key.like(format!(
            "{}%",
            prefix.replace('%', "\\%").replace('_', "\\_")
        )))
        .filter(uc::expires_at.is_null().or(uc::expires_at.gt(now())))
        .select((
            uc::counter_key,
            uc::requests,
            uc::input_tokens,
            uc::output_tokens,
            uc::cache_create_tokens,
            uc::cache_read_tokens,
            uc::cost_micros,
        ))
        .load(&mut conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.0, Counters::from_array([r.1, r.2, r.3, r.4, r.5, r.6])))
        .collect())
}

/// Admission in mysql mode: the scope row is locked, so concurrent acquires serialise.
pub async fn admit(mut conn: DbConn, req: AdmissionRequest) -> Result<Admission, StoreError> {
    // The scope row is created outside the transaction: an INSERT IGNORE that meets the
    // existing row takes a shared lock, and two transactions each holding it and then
    // asking FOR UPDATE deadlock (InnoDB kills one with "Deadlock found").
    diesel::insert_or_ignore_into(concurrency_scopes::table)
        .values(concurrency_scopes::scope.eq(&req.lease_scope))
        .execute(&mut conn)
        .await?;
    let result = conn
        .transaction::<_, diesel::result::Error, _>(async |c| {
            let now_utc = Utc::now();
            let now = now_utc.naive_utc();
            let _locked: String = concurrency_scopes::table
                .find(&req.lease_scope)
                .select(concurrency_scopes::scope)
                .for_update()
                .first(c)
                .await?;
            diesel::delete(
                concurrency_leases::table
                    .filter(concurrency_leases::scope.eq(&req.lease_scope))
                    .filter(concurrency_leases::expires_at.le(now)),
            )
            .execute(c)
            .await?;
            if req.concurrency_limit > 0 {
                let held: i64 = concurrency_leases::table
                    .filter(concurrency_leases::scope.eq(&req.lease_scope))
                    .count()
                    .get_result(c)
                    .await?;
                if held >= i64::from(req.concurrency_limit) {
                    return Ok(Admission::ConcurrencyExceeded);
                }
            }
            if let Some(window) = &req.window {
                let current = load_counters(c, std::slice::from_ref(&window.name)).await?;
                if let Some(refusal) = window.check(&current[0]) {
                    return Ok(refusal);
                }
            }
            if !req.cost_limits.is_empty() {
                let names: Vec<String> =
                    req.cost_limits.iter().map(|l| l.counter.clone()).collect();
                let costs = load_counters(c, &names).await?;
                if let Some(refusal) = req.check_costs(&costs) {
                    return Ok(refusal);
                }
            }
            if let Some(window) = &req.window {
                let count_request = CounterUpdate {
                    name: window.name.clone(),
                    delta: Counters {
                        requests: 1,
                        ..Counters::default()
                    },
                    ttl_seconds: Some(i64::try_from(window.ttl_seconds).unwrap_or(i64::MAX)),
                };
                add_counters_in(c, &[count_request]).await?;
            }
            // Without a concurrency cap no lease is taken (nothing would count it).
            if req.concurrency_limit > 0 {
                diesel::insert_into(concurrency_leases::table)
                    .values((
                        concurrency_leases::scope.eq(&req.lease_scope),
                        concurrency_leases::lease_id.eq(&req.lease_id),
                        concurrency_leases::expires_at.eq((now_utc
                            + Duration::milliseconds(
                                i64::try_from(req.lease_ttl_ms).unwrap_or(i64::MAX),
                            ))
                        .naive_utc()),
                    ))
                    .execute(c)
                    .await?;
            }
            Ok(Admission::Granted)
        })
        .await?;
    Ok(result)
}

/// Ends a lease; true when it was held.
pub async fn release_lease(
    mut conn: DbConn,
    scope: String,
    lease_id: String,
) -> Result<bool, StoreError> {
    let n = diesel::delete(
        concurrency_leases::table
            .filter(concurrency_leases::scope.eq(scope))
            .filter(concurrency_leases::lease_id.eq(lease_id)),
    )
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

/// Extends a live lease; true when it was still held.
pub async fn renew_lease(
    mut conn: DbConn,
    scope: String,
    lease_id: String,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let n = diesel::update(
        concurrency_leases::table
            .filter(concurrency_leases::scope.eq(scope))
            .filter(concurrency_leases::lease_id.eq(lease_id))
            .filter(concurrency_leases::expires_at.gt(now())),
    )
    .set(concurrency_leases::expires_at.eq((Utc::now() + ttl).naive_utc()))
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

/// Live leases of a scope.
pub async fn count_leases(mut conn: DbConn, scope: String) -> Result<i64, StoreError> {
    Ok(concurrency_leases::table
        .filter(concurrency_leases::scope.eq(scope))
        .filter(concurrency_leases::expires_at.gt(now()))
        .count()
        .get_result(&mut conn)
        .await?)
}

/// Deletes expired entries, counters and leases; returns how many rows went.
pub async fn sweep_expired(mut conn: DbConn, at: DateTime<Utc>) -> Result<usize, StoreError> {
    let at = at.naive_utc();
    let a = diesel::delete(kv_entries::table.filter(kv_entries::expires_at.le(at)))
        .execute(&mut conn)
        .await?;
    let b = diesel::delete(usage_counters::table.filter(usage_counters::expires_at.le(at)))
        .execute(&mut conn)
        .await?;
    let c = diesel::delete(concurrency_leases::table.filter(concurrency_leases::expires_at.le(at)))
        .execute(&mut conn)
        .await?;
    Ok(a + b + c)
}
