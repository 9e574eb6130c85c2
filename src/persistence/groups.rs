//! Queries on `account_groups` and the mapping between its rows and `AccountGroup`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::account_groups;
use crate::actors::persistence::DbConn;
use crate::domain::group::AccountGroup;
use crate::error::StoreError;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = account_groups)]
pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub platform: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl From<&AccountGroup> for GroupRow {
    fn from(g: &AccountGroup) -> Self {
        GroupRow {
            id: g.id.clone(),
            name: g.name.clone(),
            description: g.description.clone(),
            platform: g.platform.clone(),
            created_at: g.created_at.naive_utc(),
            updated_at: g.updated_at.naive_utc(),
        }
    }
}

impl From<GroupRow> for AccountGroup {
    fn from(r: GroupRow) -> Self {
        AccountGroup {
            id: r.id,
            name: r.name,
            description: r.description,
            platform: r.platform,
            created_at: r.created_at.and_utc(),
            updated_at: r.updated_at.and_utc(),
        }
    }
}

/// Inserts or replaces a group by id (create, update and imports).
pub async fn upsert(mut conn: DbConn, group: AccountGroup) -> Result<(), StoreError> {
    diesel::replace_into(account_groups::table)
        .values(GroupRow::from(&group))
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub async fn get(mut conn: DbConn, id: String) -> Result<Option<AccountGroup>, StoreError> {
    Ok(account_groups::table
        .find(id)
        .select(GroupRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .map(AccountGroup::from))
}

/// Every group, oldest first.
pub async fn list(mut conn: DbConn) -> Result<Vec<AccountGroup>, StoreError> {
    Ok(account_groups::table
        .select(GroupRow::as_select())
        .order((account_groups::created_at.asc(), account_groups::id.asc()))
        .load(&mut conn)
        .await?
        .into_iter()
        .map(AccountGroup::from)
        .collect())
}

/// Deletes a group; true when it existed.
pub async fn delete(mut conn: DbConn, id: String) -> Result<bool, StoreError> {
    let n = diesel::delete(account_groups::table.find(id))
        .execute(&mut conn)
        .await?;
    Ok(n == 1)
}
