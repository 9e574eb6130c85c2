//! Queries on `api_keys` and the mapping between its rows and `ApiKey`.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::api_keys;
use crate::actors::persistence::DbConn;
use crate::domain::api_key::{ApiKey, ExpirationMode, Permissions};
use crate::error::StoreError;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = api_keys, treat_none_as_null = true)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub key_hash: String,
    pub tags: String,
    pub is_active: bool,
    pub permissions: String,
    pub concurrency_limit: i32,
    pub rate_limit_window_minutes: i32,
    pub rate_limit_requests: i32,
    pub rate_limit_cost_micros: i64,
    pub token_limit: i64,
    pub daily_cost_limit_micros: i64,
    pub total_cost_limit_micros: i64,
    pub weekly_opus_cost_limit_micros: i64,
    pub weekly_reset_day: i8,
    pub weekly_reset_hour: i8,
    pub enable_model_restriction: bool,
    pub restricted_models: String,
    pub enable_client_restriction: bool,
    pub allowed_clients: String,
    pub claude_account_id: Option<String>,
    pub expiration_mode: String,
    pub activation_days: i32,
    pub activation_unit: String,
    pub is_activated: bool,
    pub activated_at: Option<NaiveDateTime>,
    pub expires_at: Option<NaiveDateTime>,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub deleted_at: Option<NaiveDateTime>,
    pub deleted_by: Option<String>,
}

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

fn clamp_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl From<&ApiKey> for ApiKeyRow {
    fn from(k: &ApiKey) -> Self {
        ApiKeyRow {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            key_hash: k.key_hash.clone(),
            tags: serde_json::to_string(&k.tags).unwrap_or_else(|_| "[]".into()),
            is_active: k.is_active,
            permissions: k.permissions.as_str().into(),
            concurrency_limit: clamp_i32(k.concurrency_limit),
            rate_limit_window_minutes: clamp_i32(k.rate_limit_window_minutes),
            rate_limit_requests: clamp_i32(k.rate_limit_requests),
            rate_limit_cost_micros: k.rate_limit_cost_micros,
            token_limit: k.token_limit,
            daily_cost_limit_micros: k.daily_cost_limit_micros,
            total_cost_limit_micros: k.total_cost_limit_micros,
            weekly_opus_cost_limit_micros: k.weekly_opus_cost_limit_micros,
            weekly_reset_day: i8::try_from(k.weekly_reset_day).unwrap_or(i8::MAX),
            weekly_reset_hour: i8::try_from(k.weekly_reset_hour).unwrap_or(i8::MAX),
            enable_model_restriction: k.enable_model_restriction,
            restricted_models: serde_json::to_string(&k.restricted_models)
                .unwrap_or_else(|_| "[]".into()),
            enable_client_restriction: k.enable_client_restriction,
            allowed_clients: serde_json::to_string(&k.allowed_clients)
                .unwrap_or_else(|_| "[]".into()),
            claude_account_id: k.claude_account_id.clone(),
            expiration_mode: k.expiration_mode.as_str().into(),
            activation_days: clamp_i32(k.activation_days),
            activation_unit: k.activation_unit.clone(),
            is_activated: k.is_activated,
            activated_at: k.activated_at.map(naive),
            expires_at: k.expires_at.map(naive),
            created_by: k.created_by.clone(),
            created_at: naive(k.created_at),
            updated_at: naive(k.updated_at),
            last_used_at: k.last_used_at.map(naive),
            deleted_at: k.deleted_at.map(naive),
            deleted_by: k.deleted_by.clone(),
        }
    }
}

impl From<ApiKeyRow> for ApiKey {
    fn from(r: ApiKeyRow) -> Self {
        ApiKey {
            id: r.id,
            name: r.name,
            description: r.description,
            key_hash: r.key_hash,
            tags: serde_json::from_str(&r.tags).unwrap_or_default(),
            is_active: r.is_active,
            permissions: Permissions::parse(&r.permissions).unwrap_or_default(),
            concurrency_limit: u32::try_from(r.concurrency_limit).unwrap_or(0),
            rate_limit_window_minutes: u32::try_from(r.rate_limit_window_minutes).unwrap_or(0),
            rate_limit_requests: u32::try_from(r.rate_limit_requests).unwrap_or(0),
            rate_limit_cost_micros: r.rate_limit_cost_micros,
            token_limit: r.token_limit,
            daily_cost_limit_micros: r.daily_cost_limit_micros,
            total_cost_limit_micros: r.total_cost_limit_micros,
            weekly_opus_cost_limit_micros: r.weekly_opus_cost_limit_micros,
            weekly_reset_day: u8::try_from(r.weekly_reset_day).unwrap_or(0),
            weekly_reset_hour: u8::try_from(r.weekly_reset_hour).unwrap_or(0),
            enable_model_restriction: r.enable_model_restriction,
            restricted_models: serde_json::from_str(&r.restricted_models).unwrap_or_default(),
            enable_client_restriction: r.enable_client_restriction,
            allowed_clients: serde_json::from_str(&r.allowed_clients).unwrap_or_default(),
            claude_account_id: r.claude_account_id,
            expiration_mode: ExpirationMode::parse(&r.expiration_mode).unwrap_or_default(),
            activation_days: u32::try_from(r.activation_days).unwrap_or(0),
            activation_unit: r.activation_unit,
            is_activated: r.is_activated,
            activated_at: r.activated_at.map(utc),
            expires_at: r.expires_at.map(utc),
            created_by: r.created_by,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
            last_used_at: r.last_used_at.map(utc),
            deleted_at: r.deleted_at.map(utc),
            deleted_by: r.deleted_by,
        }
    }
}

pub async fn insert(mut conn: DbConn, key: ApiKey) -> Result<(), StoreError> {
    diesel::insert_into(api_keys::table)
        .values(ApiKeyRow::from(&key))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Inserts or replaces a key by id (imports and migrations).
pub async fn upsert(mut conn: DbConn, key: ApiKey) -> Result<(), StoreError> {
    let row = ApiKeyRow::from(&key);
    diesel::replace_into(api_keys::table)
        .values(row)
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub async fn get(mut conn: DbConn, id: String) -> Result<Option<ApiKey>, StoreError> {
    Ok(api_keys::table
        .find(id)
        .select(ApiKeyRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .map(ApiKey::from))
}

pub async fn get_by_hash(mut conn: DbConn, hash: String) -> Result<Option<ApiKey>, StoreError> {
    Ok(api_keys::table
        .filter(api_keys::key_hash.eq(hash))
        .select(ApiKeyRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .map(ApiKey::from))
}

pub async fn list(mut conn: DbConn, include_deleted: bool) -> Result<Vec<ApiKey>, StoreError> {
    let mut query = api_keys::table
        .select(ApiKeyRow::as_select())
        .order(api_keys::created_at.desc())
        .into_boxed();
    if !include_deleted {
        query = query.filter(api_keys::deleted_at.is_null());
    }
    Ok(query
        .load(&mut conn)
        .await?
        .into_iter()
        .map(ApiKey::from)
        .collect())
}

/// Replaces every column of an existing key; NotFound when it does not exist.
pub async fn update(mut conn: DbConn, key: ApiKey) -> Result<(), StoreError> {
    let row = ApiKeyRow::from(&key);
    let n = diesel::update(api_keys::table.find(&key.id))
        .set(&row)
        .execute(&mut conn)
        .await?;
    // MySQL counts only changed rows; an identical update of an existing row reports 0.
    if n == 0 && get_exists(&mut conn, &key.id).await? == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

async fn get_exists(conn: &mut DbConn, id: &str) -> Result<i64, StoreError> {
    Ok(api_keys::table
        .filter(api_keys::id.eq(id))
        .count()
        .get_result(conn)
        .await?)
}

/// Deletes the row for good; true when it existed.
pub async fn delete(mut conn: DbConn, id: String) -> Result<bool, StoreError> {
    let n = diesel::delete(api_keys::table.find(id))
        .execute(&mut conn)
        .await?;
    Ok(n == 1)
}

/// Sets `last_used_at` (and activation on first use) for one key.
pub async fn touch_used(
    mut conn: DbConn,
    id: String,
    at: DateTime<Utc>,
    activate: bool,
) -> Result<(), StoreError> {
    let at = naive(at);
    if activate {
        diesel::update(
            api_keys::table
                .find(&id)
                .filter(api_keys::is_activated.eq(false)),
        )
        .set((
            api_keys::is_activated.eq(true),
            api_keys::activated_at.eq(Some(at)),
        ))
        .execute(&mut conn)
        .await?;
    }
    diesel::update(api_keys::table.find(id))
        .set(api_keys::last_used_at.eq(Some(at)))
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub async fn count(mut conn: DbConn) -> Result<i64, StoreError> {
    Ok(api_keys::table.count().get_result(&mut conn).await?)
}
