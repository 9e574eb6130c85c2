//! Relay keys for operators: the CRS-shaped public view (never a hash; the plaintext only
//! at creation and regeneration), the input rules of create / update, listing with search,
//! filters and pages, and every key operation with its audit entry.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::fields::{Fields, usd};
use super::{AdminContext, AdminError, audit::snapshot};
use crate::domain::api_key::{
    ApiKey, ExpirationMode, MAX_DESCRIPTION_LEN, Permissions, validate_name,
};
use crate::domain::client::{MAX_ALLOWED_CLIENT_LEN, MAX_ALLOWED_CLIENTS, validate_allowed_client};
use crate::domain::group::bound_group;
use crate::domain::keys::{generate_key, hash_key};
use secrecy::ExposeSecret;

/// Most keys one batch may create.
pub const MAX_BATCH: i64 = 100;
const MAX_TAGS: usize = 50;
const MAX_TAG_LEN: usize = 64;
const MAX_MODELS: usize = 200;
const MAX_MODEL_LEN: usize = 128;

/// A key as the admin API shows it (CRS field names, money in USD).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: String,
    /// The plaintext key: only in the answers of create, batch create and regenerate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub is_active: bool,
    pub permissions: &'static str,
    pub concurrency_limit: u32,
    pub rate_limit_window: u32,
    pub rate_limit_requests: u32,
    pub rate_limit_cost: f64,
    pub token_limit: i64,
    pub daily_cost_limit: f64,
    pub total_cost_limit: f64,
    pub weekly_opus_cost_limit: f64,
    pub weekly_reset_day: u8,
    pub weekly_reset_hour: u8,
    pub enable_model_restriction: bool,
    pub restricted_models: Vec<String>,
    pub enable_client_restriction: bool,
    pub allowed_clients: Vec<String>,
    pub claude_account_id: Option<String>,
    pub expiration_mode: &'static str,
    pub activation_days: u32,
    pub activation_unit: String,
    pub is_activated: bool,
    pub activated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub is_deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<String>,
}

impl From<&ApiKey> for KeyView {
    fn from(k: &ApiKey) -> Self {
        KeyView {
            id: k.id.clone(),
            api_key: None,
            name: k.name.clone(),
            description: k.description.clone(),
            tags: k.tags.clone(),
            is_active: k.is_active,
            permissions: k.permissions.as_str(),
            concurrency_limit: k.concurrency_limit,
            rate_limit_window: k.rate_limit_window_minutes,
            rate_limit_requests: k.rate_limit_requests,
            rate_limit_cost: usd(k.rate_limit_cost_micros),
            token_limit: k.token_limit,
            daily_cost_limit: usd(k.daily_cost_limit_micros),
            total_cost_limit: usd(k.total_cost_limit_micros),
            weekly_opus_cost_limit: usd(k.weekly_opus_cost_limit_micros),
            weekly_reset_day: k.weekly_reset_day,
            weekly_reset_hour: k.weekly_reset_hour,
            enable_model_restriction: k.enable_model_restriction,
            restricted_models: k.restricted_models.clone(),
            enable_client_restriction: k.enable_client_restriction,
            allowed_clients: k.allowed_clients.clone(),
            claude_account_id: k.claude_account_id.clone(),
            expiration_mode: k.expiration_mode.as_str(),
            activation_days: k.activation_days,
            activation_unit: k.activation_unit.clone(),
            is_activated: k.is_activated,
            activated_at: k.activated_at,
            expires_at: k.expires_at,
            created_by: k.created_by.clone(),
            created_at: k.created_at,
            updated_at: k.updated_at,
            last_used_at: k.last_used_at,
            is_deleted: k.is_deleted(),
            deleted_at: k.deleted_at,
            deleted_by: k.deleted_by.clone(),
        }
    }
}

fn view_with_plaintext(k: &ApiKey, plaintext: String) -> KeyView {
    let mut v = KeyView::from(k);
    v.api_key = Some(plaintext);
    v
}

/// Applies the fields present in `f` to `key` (every CRS field of SPEC §8). Returns the
/// account id to check when the binding changes to a non-empty id.
pub fn apply_fields(key: &mut ApiKey, f: &Fields<'_>) -> Result<Option<String>, AdminError> {
    if let Some(name) = f.string("name")? {
        validate_name(&name).map_err(|m| AdminError::field("name", m))?;
        key.name = name;
    }
    if let Some(d) = f.bounded_string("description", MAX_DESCRIPTION_LEN)? {
        key.description = d;
    }
    if let Some(tags) = f.string_list("tags", MAX_TAGS, MAX_TAG_LEN)? {
        key.tags = tags;
    }
    if let Some(p) = f.string("permissions")? {
        key.permissions = Permissions::parse(&p)
            .ok_or_else(|| AdminError::field("permissions", "must be one of: all, claude"))?;
    }
    if let Some(n) = f.int("concurrencyLimit", 0, 100_000)? {
        key.concurrency_limit = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = f.int("rateLimitWindow", 0, 525_600)? {
        key.rate_limit_window_minutes = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = f.int("rateLimitRequests", 0, 100_000_000)? {
        key.rate_limit_requests = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(m) = f.usd_micros("rateLimitCost")? {
        key.rate_limit_cost_micros = m;
    }
    if let Some(n) = f.int("tokenLimit", 0, i64::MAX / 2)? {
        key.token_limit = n;
    }
    if let Some(m) = f.usd_micros("dailyCostLimit")? {
        key.daily_cost_limit_micros = m;
    }
    if let Some(m) = f.usd_micros("totalCostLimit")? {
        key.total_cost_limit_micros = m;
    }
    if let Some(m) = f.usd_micros("weeklyOpusCostLimit")? {
        key.weekly_opus_cost_limit_micros = m;
    }
    if let Some(n) = f.int("weeklyResetDay", 1, 7)? {
        key.weekly_reset_day = u8::try_from(n).unwrap_or(1);
    }
    if let Some(n) = f.int("weeklyResetHour", 0, 23)? {
        key.weekly_reset_hour = u8::try_from(n).unwrap_or(0);
    }
    if let Some(b) = f.bool("enableModelRestriction")? {
        key.enable_model_restriction = b;
    }
    if let Some(models) = f.string_list("restrictedModels", MAX_MODELS, MAX_MODEL_LEN)? {
        key.restricted_models = models;
    }
    if let Some(b) = f.bool("enableClientRestriction")? {
        key.enable_client_restriction = b;
    }
    if let Some(clients) = f.string_list(
        "allowedClients",
        MAX_ALLOWED_CLIENTS,
        MAX_ALLOWED_CLIENT_LEN,
    )? {
        for c in &clients {
            validate_allowed_client(c).map_err(|m| AdminError::field("allowedClients", m))?;
        }
        key.allowed_clients = clients;
    }
    if let Some(b) = f.bool("isActive")? {
        key.is_active = b;
    }
    if let Some(mode) = f.string("expirationMode")? {
        key.expiration_mode = ExpirationMode::parse(&mode).ok_or_else(|| {
            AdminError::field("expirationMode", "must be one of: fixed, activation")
        })?;
    }
    if let Some(n) = f.int("activationDays", 0, 36_500)? {
        key.activation_days = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(u) = f.string("activationUnit")? {
        if u != "days" && u != "hours" {
            return Err(AdminError::field(
                "activationUnit",
                "must be one of: days, hours",
            ));
        }
        key.activation_unit = u;
    }
    if let Some(at) = f.datetime("expiresAt")? {
        key.expires_at = at;
    }
    let mut check_account = None;
    if f.has("claudeAccountId") {
        match f.string("claudeAccountId")?.filter(|s| !s.is_empty()) {
            None => key.claude_account_id = None,
            Some(id) => {
                crate::domain::api_key::validate_id(bound_group(&id).unwrap_or(&id))
                    .map_err(|m| AdminError::field("claudeAccountId", m))?;
                if key.claude_account_id.as_deref() != Some(id.as_str()) {
                    check_account = Some(id.clone());
                }
                key.claude_account_id = Some(id);
            }
        }
    }
    if key.expiration_mode == ExpirationMode::Activation && key.activation_days == 0 {
        return Err(AdminError::field(
            "activationDays",
            "must be at least 1 when expirationMode is activation",
        ));
    }
    Ok(check_account)
}

/// 400 naming `claudeAccountId` unless the account (or the `group:<id>` group) exists.
async fn check_account(ctx: &AdminContext, id: Option<String>) -> Result<(), AdminError> {
    if let Some(id) = &id
        && let Some(group) = bound_group(id)
    {
        if ctx.router.get_group(group).await?.is_none() {
            return Err(AdminError::field(
                "claudeAccountId",
                format!("no account group with id {group}"),
            ));
        }
        return Ok(());
    }
    if let Some(id) = id
        && ctx.router.get_account(&id).await?.is_none()
    {
        return Err(AdminError::field(
            "claudeAccountId",
            format!("no account with id {id}"),
        ));
    }
    Ok(())
}

fn new_key(ctx: &AdminContext) -> (ApiKey, String) {
    let plaintext = generate_key(&ctx.config.api_key_prefix);
    let hash = hash_key(&plaintext, ctx.config.encryption_key.expose_secret());
    let mut key = ApiKey::new(uuid::Uuid::new_v4().to_string(), String::new(), hash);
    key.created_by = ctx.actor.clone();
    (key, plaintext)
}

/// Sets the activation state of a new key from its expiration mode.
fn settle_activation(key: &mut ApiKey) {
    if key.expiration_mode == ExpirationMode::Activation {
        key.is_activated = false;
        key.activated_at = None;
    }
}

/// Loads a key by id; 404 when unknown.
pub async fn load(ctx: &AdminContext, id: &str) -> Result<ApiKey, AdminError> {
    crate::domain::api_key::validate_id(id).map_err(|_| not_found(id))?;
    ctx.router.get_key(id).await?.ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> AdminError {
    AdminError::not_found(format!("api key {id} not found"))
}

/// `POST /admin/api-keys`.
pub async fn create(ctx: &AdminContext, body: &Value) -> Result<KeyView, AdminError> {
    let f = Fields::of(body)?;
    if f.string("name")?.is_none_or(|n| n.is_empty()) {
        return Err(AdminError::field("name", "is required"));
    }
    let (mut key, plaintext) = new_key(ctx);
    let account = apply_fields(&mut key, &f)?;
    settle_activation(&mut key);
    check_account(ctx, account).await?;
    let key = ctx.router.create_key(key).await?;
    let view = KeyView::from(&key);
    ctx.audit("create", "api_key", &key.id, None, Some(snapshot(&view)))
        .await;
    Ok(view_with_plaintext(&key, plaintext))
}

/// `POST /admin/api-keys/batch`: `baseName` + `count` and the create fields; all or none.
pub async fn batch_create(ctx: &AdminContext, body: &Value) -> Result<Vec<KeyView>, AdminError> {
    let f = Fields::of(body)?;
    let base = f
        .string("baseName")?
        .or(f.string("name")?)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AdminError::field("baseName", "is required"))?;
    let count = f
        .int("count", 1, MAX_BATCH)?
        .ok_or_else(|| AdminError::field("count", "is required"))?;
    let mut template = ApiKey::new(String::new(), base.clone(), String::new());
    let account = apply_fields(&mut template, &f)?;
    validate_name(&format!("{base}_{count}")).map_err(|m| AdminError::field("baseName", m))?;
    settle_activation(&mut template);
    check_account(ctx, account).await?;
    let mut made: Vec<(ApiKey, String)> = Vec::new();
    for i in 1..=count {
        let (fresh, plaintext) = new_key(ctx);
        let key = ApiKey {
            id: fresh.id,
            key_hash: fresh.key_hash,
            name: format!("{base}_{i}"),
            created_by: fresh.created_by,
            created_at: fresh.created_at,
            updated_at: fresh.updated_at,
            ..template.clone()
        };
        match ctx.router.create_key(key).await {
            Ok(k) => made.push((k, plaintext)),
            Err(e) => {
                // All or none: remove what this batch already created.
                for (k, _) in &made {
                    if let Err(undo) = ctx.router.delete_key(&k.id).await {
                        log::error!("batch create: cannot remove key {} again: {undo}", k.id);
                    }
                }
                return Err(e.into());
            }
        }
    }
    for (k, _) in &made {
        ctx.audit(
            "batch_create",
            "api_key",
            &k.id,
            None,
            Some(snapshot(&KeyView::from(k))),
        )
        .await;
    }
    Ok(made
        .into_iter()
        .map(|(k, p)| view_with_plaintext(&k, p))
        .collect())
}

/// `PUT /admin/api-keys/{id}`: changes the fields present.
pub async fn update(ctx: &AdminContext, id: &str, body: &Value) -> Result<KeyView, AdminError> {
    let f = Fields::of(body)?;
    let before = load(ctx, id).await?;
    if before.is_deleted() {
        return Err(AdminError::invalid(format!(
            "api key {id} is deleted: restore it first"
        )));
    }
    let mut key = before.clone();
    let account = apply_fields(&mut key, &f)?;
    check_account(ctx, account).await?;
    save(ctx, "update", &before, key, None).await
}

async fn save(
    ctx: &AdminContext,
    action: &str,
    before: &ApiKey,
    mut key: ApiKey,
    previous_hash: Option<String>,
) -> Result<KeyView, AdminError> {
    key.updated_at = Utc::now();
    let key = ctx.router.save_key(key, previous_hash).await?;
    let view = KeyView::from(&key);
    ctx.audit(
        action,
        "api_key",
        &key.id,
        Some(snapshot(&KeyView::from(before))),
        Some(snapshot(&view)),
    )
    .await;
    Ok(view)
}

/// Enable / disable.
pub async fn set_active(ctx: &AdminContext, id: &str, active: bool) -> Result<KeyView, AdminError> {
    let before = load(ctx, id).await?;
    if before.is_deleted() {
        return Err(AdminError::invalid(format!(
            "api key {id} is deleted: restore it first"
        )));
    }
    let mut key = before.clone();
    key.is_active = active;
    save(
        ctx,
        if active { "enable" } else { "disable" },
        &before,
        key,
        None,
    )
    .await
}

/// Soft delete: the key stops working at once and can be restored.
pub async fn soft_delete(ctx: &AdminContext, id: &str) -> Result<KeyView, AdminError> {
    let before = load(ctx, id).await?;
    if before.is_deleted() {
        return Err(AdminError::invalid(format!(
            "api key {id} is already deleted"
        )));
    }
    let mut key = before.clone();
    key.deleted_at = Some(Utc::now());
    key.deleted_by = Some(ctx.actor.clone());
    save(ctx, "delete", &before, key, None).await
}

/// Undoes a soft delete.
pub async fn restore(ctx: &AdminContext, id: &str) -> Result<KeyView, AdminError> {
    let before = load(ctx, id).await?;
    if !before.is_deleted() {
        return Err(AdminError::invalid(format!("api key {id} is not deleted")));
    }
    let mut key = before.clone();
    key.deleted_at = None;
    key.deleted_by = None;
    save(ctx, "restore", &before, key, None).await
}

/// Removes a soft-deleted key for good.
pub async fn purge(ctx: &AdminContext, id: &str) -> Result<(), AdminError> {
    let before = load(ctx, id).await?;
    if !before.is_deleted() {
        return Err(AdminError::invalid(format!(
            "api key {id} must be deleted before it can be removed permanently"
        )));
    }
    if !ctx.router.delete_key(id).await? {
        return Err(not_found(id));
    }
    ctx.audit(
        "purge",
        "api_key",
        id,
        Some(snapshot(&KeyView::from(&before))),
        None,
    )
    .await;
    Ok(())
}

/// A new plaintext for the key; the old one stops working.
pub async fn regenerate(ctx: &AdminContext, id: &str) -> Result<KeyView, AdminError> {
    let before = load(ctx, id).await?;
    if before.is_deleted() {
        return Err(AdminError::invalid(format!(
            "api key {id} is deleted: restore it first"
        )));
    }
    let plaintext = generate_key(&ctx.config.api_key_prefix);
    let mut key = before.clone();
    key.key_hash = hash_key(&plaintext, ctx.config.encryption_key.expose_secret());
    let view = save(
        ctx,
        "regenerate",
        &before,
        key,
        Some(before.key_hash.clone()),
    )
    .await?;
    Ok(KeyView {
        api_key: Some(plaintext),
        ..view
    })
}

/// List filters of `GET /admin/api-keys`.
#[derive(Debug, Clone, Default)]
pub struct KeyQuery {
    pub search: Option<String>,
    pub tag: Option<String>,
    pub active: Option<bool>,
    /// `None`: not deleted; `Some(true)`: only deleted; `Some(false)`: all.
    pub deleted: Option<bool>,
    pub page: Option<usize>,
    pub page_size: usize,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub page: usize,
    pub page_size: usize,
    pub total: usize,
    pub total_pages: usize,
}

/// Filtered keys (newest first) and the page they are on.
pub async fn list(ctx: &AdminContext, q: &KeyQuery) -> Result<(Vec<KeyView>, Page), AdminError> {
    let keys = ctx.router.list_keys_report(q.deleted.is_some()).await?;
    let needle = q.search.as_ref().map(|s| s.to_lowercase());
    let matching: Vec<KeyView> = keys
        .iter()
        .filter(|k| match q.deleted {
            None => !k.is_deleted(),
            Some(true) => k.is_deleted(),
            Some(false) => true,
        })
        .filter(|k| q.active.is_none_or(|a| k.is_active == a))
        .filter(|k| q.tag.as_ref().is_none_or(|t| k.tags.contains(t)))
        .filter(|k| {
            needle.as_ref().is_none_or(|n| {
                k.name.to_lowercase().contains(n)
                    || k.description.to_lowercase().contains(n)
                    || k.id.contains(n.as_str())
            })
        })
        .map(KeyView::from)
        .collect();
    let total = matching.len();
    let (page, size) = match q.page {
        Some(p) => (p, q.page_size),
        None => (1, total.max(1)),
    };
    let data = matching
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    Ok((
        data,
        Page {
            page,
            page_size: size,
            total,
            total_pages: total.div_ceil(size),
        },
    ))
}
