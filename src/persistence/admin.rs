//! Queries on `admin_users`.

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::admin_users;
use crate::actors::persistence::DbConn;
use crate::error::StoreError;

/// One operator account.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = admin_users)]
pub struct AdminUserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
}

/// Inserts the admin unless one with this name exists; returns true when inserted.
pub async fn insert_admin_if_missing(
    mut conn: DbConn,
    username: String,
    password_hash: String,
) -> Result<bool, StoreError> {
    let now = Utc::now().naive_utc();
    let inserted = diesel::insert_or_ignore_into(admin_users::table)
        .values((
            admin_users::username.eq(&username),
            admin_users::password_hash.eq(&password_hash),
            admin_users::created_at.eq(now),
            admin_users::updated_at.eq(now),
        ))
        .execute(&mut conn)
        .await?;
    Ok(inserted == 1)
}

pub async fn find_admin(
    mut conn: DbConn,
    username: String,
) -> Result<Option<AdminUserRow>, StoreError> {
    Ok(admin_users::table
        .filter(admin_users::username.eq(username))
        .select(AdminUserRow::as_select())
        .first(&mut conn)
        .await
        .optional()?)
}

/// Number of operator accounts.
pub async fn count_admins(mut conn: DbConn) -> Result<i64, StoreError> {
    Ok(admin_users::table.count().get_result(&mut conn).await?)
}

/// Replaces an operator's password hash; false when the operator does not exist.
pub async fn set_password_hash(
    mut conn: DbConn,
    username: String,
    password_hash: String,
) -> Result<bool, StoreError> {
    let changed = diesel::update(admin_users::table.filter(admin_users::username.eq(username)))
        .set((
            admin_users::password_hash.eq(password_hash),
            admin_users::updated_at.eq(Utc::now().naive_utc()),
        ))
        .execute(&mut conn)
        .await?;
    Ok(changed == 1)
}

/// Records a successful login.
pub async fn touch_login(mut conn: DbConn, username: String) -> Result<(), StoreError> {
    diesel::update(admin_users::table.filter(admin_users::username.eq(username)))
        .set(admin_users::last_login_at.eq(Some(Utc::now().naive_utc())))
        .execute(&mut conn)
        .await?;
    Ok(())
}
