//! Queries on `claude_accounts` and the mapping between its rows and `Account`.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::claude_accounts;
use crate::actors::persistence::DbConn;
use crate::domain::account::{Account, AccountStatus, AccountType, SessionWindow, WindowStatus};
use crate::error::{Cause, StoreError};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = claude_accounts, treat_none_as_null = true)]
pub struct AccountRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub account_type: String,
    pub base_url: Option<String>,
    pub credentials_encrypted: String,
    pub proxy_encrypted: Option<String>,
    pub token_expires_at: Option<NaiveDateTime>,
    pub scope: String,
    pub priority: i32,
    pub schedulable: bool,
    pub is_active: bool,
    pub status: String,
    pub status_until: Option<NaiveDateTime>,
    pub error_message: String,
    pub max_concurrency: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub last_refresh_at: Option<NaiveDateTime>,
    pub group_ids: String,
    pub model_cooldowns: String,
    pub model_mapping: String,
    pub user_agent: Option<String>,
    pub session_window_start: Option<NaiveDateTime>,
    pub session_window_end: Option<NaiveDateTime>,
    pub session_window_status: Option<String>,
    pub auto_stop_on_warning: bool,
    pub daily_quota: f64,
    pub subscription_info: Option<String>,
}

impl From<&Account> for AccountRow {
    fn from(a: &Account) -> Self {
        AccountRow {
            id: a.id.clone(),
            name: a.name.clone(),
            description: a.description.clone(),
            account_type: a.account_type.as_str().into(),
            base_url: a.base_url.clone(),
            credentials_encrypted: a.credentials_encrypted.clone(),
            proxy_encrypted: a.proxy_encrypted.clone(),
            token_expires_at: a.token_expires_at.map(|t| t.naive_utc()),
            scope: a.scope.clone(),
            priority: a.priority,
            schedulable: a.schedulable,
            is_active: a.is_active,
            status: a.status.as_str().into(),
            status_until: a.status_until.map(|t| t.naive_utc()),
            error_message: a.error_message.chars().take(1000).collect(),
            max_concurrency: a.max_concurrency,
            created_at: a.created_at.naive_utc(),
            updated_at: a.updated_at.naive_utc(),
            last_used_at: a.last_used_at.map(|t| t.naive_utc()),
            last_refresh_at: a.last_refresh_at.map(|t| t.naive_utc()),
            group_ids: serde_json::to_string(&a.group_ids).unwrap_or_else(|_| "[]".into()),
            model_cooldowns: serde_json::to_string(&a.model_cooldowns)
                .unwrap_or_else(|_| "{}".into()),
            model_mapping: serde_json::to_string(&a.model_mapping).unwrap_or_else(|_| "{}".into()),
            user_agent: a.user_agent.clone(),
            session_window_start: a.session_window.map(|w| w.start.naive_utc()),
            session_window_end: a.session_window.map(|w| w.end.naive_utc()),
            session_window_status: a
                .session_window
                .and_then(|w| w.status)
                .map(|s| s.as_str().to_string()),
            auto_stop_on_warning: a.auto_stop_on_warning,
            daily_quota: a.daily_quota,
            subscription_info: a
                .subscription
                .as_ref()
                .and_then(|s| serde_json::to_string(s).ok()),
        }
    }
}

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;

    fn try_from(r: AccountRow) -> Result<Self, StoreError> {
        let utc = |t: NaiveDateTime| -> DateTime<Utc> { t.and_utc() };
        Ok(Account {
            account_type: AccountType::parse(&r.account_type).ok_or_else(|| {
                StoreError::Query(Cause::message(format!(
                    "unknown account type {}",
                    r.account_type
                )))
            })?,
            status: AccountStatus::parse(&r.status).unwrap_or(AccountStatus::Error),
            id: r.id,
            name: r.name,
            description: r.description,
            base_url: r.base_url,
            credentials_encrypted: r.credentials_encrypted,
            proxy_encrypted: r.proxy_encrypted,
            token_expires_at: r.token_expires_at.map(utc),
            scope: r.scope,
            priority: r.priority,
            schedulable: r.schedulable,
            is_active: r.is_active,
            status_until: r.status_until.map(utc),
            error_message: r.error_message,
            max_concurrency: r.max_concurrency,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
            last_used_at: r.last_used_at.map(utc),
            last_refresh_at: r.last_refresh_at.map(utc),
            group_ids: serde_json::from_str(&r.group_ids).unwrap_or_default(),
            model_cooldowns: serde_json::from_str(&r.model_cooldowns).unwrap_or_default(),
            model_mapping: serde_json::from_str(&r.model_mapping).unwrap_or_default(),
            user_agent: r.user_agent,
            session_window: match (r.session_window_start, r.session_window_end) {
                (Some(start), Some(end)) => Some(SessionWindow {
                    start: utc(start),
                    end: utc(end),
                    status: r
                        .session_window_status
                        .as_deref()
                        .and_then(WindowStatus::parse),
                }),
                _ => None,
            },
            auto_stop_on_warning: r.auto_stop_on_warning,
            daily_quota: r.daily_quota,
            subscription: r
                .subscription_info
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
        })
    }
}

pub async fn insert(mut conn: DbConn, account: Account) -> Result<(), StoreError> {
    diesel::insert_into(claude_accounts::table)
        .values(AccountRow::from(&account))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Inserts or replaces an account by id (imports and migrations).
pub async fn upsert(mut conn: DbConn, account: Account) -> Result<(), StoreError> {
    diesel::replace_into(claude_accounts::table)
        .values(AccountRow::from(&account))
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub async fn get(mut conn: DbConn, id: String) -> Result<Option<Account>, StoreError> {
    claude_accounts::table
        .find(id)
        .select(AccountRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .map(Account::try_from)
        .transpose()
}

pub async fn list(mut conn: DbConn) -> Result<Vec<Account>, StoreError> {
    claude_accounts::table
        .select(AccountRow::as_select())
        .order((
            claude_accounts::priority.asc(),
            claude_accounts::created_at.asc(),
        ))
        .load(&mut conn)
        .await?
        .into_iter()
        .map(Account::try_from)
        .collect()
}

/// Replaces every column of an existing account; NotFound when it does not exist.
pub async fn update(mut conn: DbConn, account: Account) -> Result<(), StoreError> {
    let row = AccountRow::from(&account);
    diesel::update(claude_accounts::table.find(&account.id))
        .set(&row)
        .execute(&mut conn)
        .await?;
    let exists: i64 = claude_accounts::table
        .filter(claude_accounts::id.eq(&account.id))
        .count()
        .get_result(&mut conn)
        .await?;
    if exists == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Applies `patch` to the stored account `id` under its row lock, so that changes of some
/// fields made at the same time (the 5-hour window, the profile, a refreshed token) each
/// start from the others' writes instead of overwriting them. False when the account does
/// not exist or the patch changed nothing (then nothing is written).
pub async fn patch(
    mut conn: DbConn,
    id: String,
    patch: impl Fn(&mut Account) -> bool + Send + Sync,
) -> Result<bool, StoreError> {
    use diesel_async::AsyncConnection;
    conn.transaction::<_, StoreError, _>(async |c| {
        let Some(row) = claude_accounts::table
            .find(&id)
            .select(AccountRow::as_select())
            .for_update()
            .first(c)
            .await
            .optional()?
        else {
            return Ok(false);
        };
        let mut account = Account::try_from(row)?;
        if !patch(&mut account) {
            return Ok(false);
        }
        account.updated_at = Utc::now();
        diesel::update(claude_accounts::table.find(&id))
            .set(&AccountRow::from(&account))
            .execute(c)
            .await?;
        Ok(true)
    })
    .await
}

pub async fn delete(mut conn: DbConn, id: String) -> Result<bool, StoreError> {
    let n = diesel::delete(claude_accounts::table.find(id))
        .execute(&mut conn)
        .await?;
    Ok(n == 1)
}

pub async fn count(mut conn: DbConn) -> Result<i64, StoreError> {
    Ok(claude_accounts::table.count().get_result(&mut conn).await?)
}
