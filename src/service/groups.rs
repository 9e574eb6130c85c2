//! Account groups for operators (CRS `/admin/account-groups`): create, list with member
//! counts, update, delete (refused while accounts or keys use the group), and membership,
//! each change with its audit entry.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::accounts::{self, AccountView};
use super::fields::Fields;
use super::{AdminContext, AdminError, audit::snapshot};
use crate::domain::account::Account;
use crate::domain::api_key::{MAX_DESCRIPTION_LEN, validate_id, validate_name};
use crate::domain::group::{AccountGroup, GROUP_BINDING_PREFIX, MAX_GROUPS_PER_ACCOUNT};

/// A group as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub platform: String,
    pub member_count: usize,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn view(g: &AccountGroup, accounts: &[Account]) -> GroupView {
    GroupView {
        id: g.id.clone(),
        name: g.name.clone(),
        description: g.description.clone(),
        platform: g.platform.clone(),
        member_count: accounts
            .iter()
            .filter(|a| a.group_ids.contains(&g.id))
            .count(),
        created_at: g.created_at,
        updated_at: g.updated_at,
    }
}

fn not_found(id: &str) -> AdminError {
    AdminError::not_found(format!("account group {id} not found"))
}

/// Loads a group by id; 404 when unknown.
pub async fn load(ctx: &AdminContext, id: &str) -> Result<AccountGroup, AdminError> {
    validate_id(id).map_err(|_| not_found(id))?;
    ctx.router.get_group(id).await?.ok_or_else(|| not_found(id))
}

fn apply_fields(g: &mut AccountGroup, f: &Fields<'_>) -> Result<(), AdminError> {
    if let Some(name) = f.string("name")? {
        validate_name(&name).map_err(|m| AdminError::field("name", m))?;
        g.name = name;
    }
    if let Some(d) = f.bounded_string("description", MAX_DESCRIPTION_LEN)? {
        g.description = d;
    }
    if let Some(p) = f.string("platform")?
        && p != g.platform
    {
        return Err(AdminError::field(
            "platform",
            "must be claude (the only platform this relay serves; it cannot change)",
        ));
    }
    Ok(())
}

/// `GET /admin/account-groups`.
pub async fn list(ctx: &AdminContext) -> Result<Vec<GroupView>, AdminError> {
    let groups = ctx.router.list_groups().await?;
    let accounts = ctx.router.list_accounts().await?;
    Ok(groups.iter().map(|g| view(g, &accounts)).collect())
}

/// `GET /admin/account-groups/{id}`.
pub async fn get(ctx: &AdminContext, id: &str) -> Result<GroupView, AdminError> {
    let g = load(ctx, id).await?;
    Ok(view(&g, &ctx.router.list_accounts().await?))
}

/// `POST /admin/account-groups`: `name` required, `platform` claude (the default).
pub async fn create(ctx: &AdminContext, body: &Value) -> Result<GroupView, AdminError> {
    let f = Fields::of(body)?;
    if f.string("name")?.is_none_or(|n| n.is_empty()) {
        return Err(AdminError::field("name", "is required"));
    }
    let now = Utc::now();
    let mut g = AccountGroup {
        id: uuid::Uuid::new_v4().to_string(),
        name: String::new(),
        description: String::new(),
        platform: "claude".into(),
        created_at: now,
        updated_at: now,
    };
    apply_fields(&mut g, &f)?;
    let g = ctx.router.save_group(g).await?;
    let v = view(&g, &[]);
    ctx.audit("create", "account_group", &g.id, None, Some(snapshot(&v)))
        .await;
    Ok(v)
}

/// `PUT /admin/account-groups/{id}`: name and description.
pub async fn update(ctx: &AdminContext, id: &str, body: &Value) -> Result<GroupView, AdminError> {
    let f = Fields::of(body)?;
    let before = load(ctx, id).await?;
    let mut g = before.clone();
    apply_fields(&mut g, &f)?;
    g.updated_at = Utc::now();
    let g = ctx.router.save_group(g).await?;
    let accounts = ctx.router.list_accounts().await?;
    let v = view(&g, &accounts);
    ctx.audit(
        "update",
        "account_group",
        id,
        Some(snapshot(&view(&before, &accounts))),
        Some(snapshot(&v)),
    )
    .await;
    Ok(v)
}

/// `DELETE /admin/account-groups/{id}`: refused while it has members or keys bound to it
/// (as in CRS).
pub async fn delete(ctx: &AdminContext, id: &str) -> Result<(), AdminError> {
    let before = load(ctx, id).await?;
    let accounts = ctx.router.list_accounts().await?;
    let members = view(&before, &accounts).member_count;
    if members > 0 {
        return Err(AdminError::invalid(format!(
            "account group {id} still has {members} account(s): remove them first"
        )));
    }
    let binding = format!("{GROUP_BINDING_PREFIX}{id}");
    let bound = ctx
        .router
        .list_keys(false)
        .await?
        .iter()
        .filter(|k| k.claude_account_id.as_deref() == Some(binding.as_str()))
        .count();
    if bound > 0 {
        return Err(AdminError::invalid(format!(
            "account group {id} is bound to {bound} api key(s): unbind them first"
        )));
    }
    if !ctx.router.delete_group(id).await? {
        return Err(not_found(id));
    }
    ctx.audit(
        "delete",
        "account_group",
        id,
        Some(snapshot(&view(&before, &accounts))),
        None,
    )
    .await;
    Ok(())
}

/// `GET /admin/account-groups/{id}/members`: the member accounts.
pub async fn members(ctx: &AdminContext, id: &str) -> Result<Vec<AccountView>, AdminError> {
    let g = load(ctx, id).await?;
    Ok(ctx
        .router
        .list_accounts()
        .await?
        .iter()
        .filter(|a| a.group_ids.contains(&g.id))
        .map(|a| accounts::view(ctx, a))
        .collect())
}

/// `POST /admin/account-groups/{id}/members` with `accountId`: adds the account.
pub async fn add_member(
    ctx: &AdminContext,
    id: &str,
    body: &Value,
) -> Result<AccountView, AdminError> {
    let f = Fields::of(body)?;
    let g = load(ctx, id).await?;
    let account_id = f
        .string("accountId")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AdminError::field("accountId", "is required"))?;
    validate_id(&account_id).map_err(|m| AdminError::field("accountId", m))?;
    let before = ctx.router.get_account(&account_id).await?.ok_or_else(|| {
        AdminError::field("accountId", format!("no account with id {account_id}"))
    })?;
    if before.group_ids.contains(&g.id) {
        return Ok(accounts::view(ctx, &before));
    }
    if before.group_ids.len() >= MAX_GROUPS_PER_ACCOUNT {
        return Err(AdminError::field(
            "accountId",
            format!("the account is already in {MAX_GROUPS_PER_ACCOUNT} groups"),
        ));
    }
    let mut a = before.clone();
    a.group_ids.push(g.id.clone());
    accounts::save(ctx, "add_to_group", &before, a).await
}

/// `DELETE /admin/account-groups/{id}/members/{accountId}`.
pub async fn remove_member(
    ctx: &AdminContext,
    id: &str,
    account_id: &str,
) -> Result<AccountView, AdminError> {
    let g = load(ctx, id).await?;
    let before = accounts::load(ctx, account_id).await?;
    if !before.group_ids.contains(&g.id) {
        return Err(AdminError::not_found(format!(
            "account {account_id} is not in account group {id}"
        )));
    }
    let mut a = before.clone();
    a.group_ids.retain(|x| *x != g.id);
    accounts::save(ctx, "remove_from_group", &before, a).await
}
