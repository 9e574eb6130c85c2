//! Upstream accounts for operators: the public view (no credential, proxy credentials
//! hidden), input rules for both account types and the CRS console alias, and every
//! account operation with its audit entry. Secrets are sealed before they are stored.

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;

use super::fields::Fields;
use super::{AdminContext, AdminError, audit::snapshot};
use crate::actors::router::EntryKind;
use crate::domain::account::{
    Account, AccountStatus, AccountType, Credentials, SessionWindow, SubscriptionInfo,
    WindowStatus, account_day_counter,
};
use crate::domain::api_key::{MAX_DESCRIPTION_LEN, validate_id, validate_name};
use crate::domain::audit::mask_url_credentials;
use crate::domain::crypto::CredentialCipher;
use crate::error::AppError;

const MAX_SECRET_LEN: usize = 8192;
const MAX_URL_LEN: usize = 1024;
const REFRESH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An account as the admin API shows it; never a credential.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub account_type: &'static str,
    /// `shared`, `dedicated` or `group` (CRS's `accountType`; `group`: only keys bound
    /// to one of its groups).
    pub account_type_scope: String,
    pub base_url: Option<String>,
    pub priority: i32,
    pub schedulable: bool,
    pub is_active: bool,
    pub status: &'static str,
    pub status_until: Option<DateTime<Utc>>,
    pub error_message: String,
    pub max_concurrency: i32,
    /// The proxy URL with its credentials replaced by `***`.
    pub proxy: Option<String>,
    pub has_refresh_token: bool,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// The account groups it belongs to.
    pub group_ids: Vec<String>,
    /// Model families (`opus`, `sonnet`, `haiku`) rate limited on it, with their end.
    pub model_cooldowns: std::collections::BTreeMap<String, DateTime<Utc>>,
    /// Client model → upstream model (CRS `supportedModels`); empty: every model as sent.
    pub supported_models: std::collections::BTreeMap<String, String>,
    /// The user agent sent upstream instead of the client's.
    pub user_agent: Option<String>,
    /// The 5-hour usage window (subscription accounts), as CRS shows it.
    pub session_window: SessionWindowView,
    /// Leaves rotation while the upstream says the window is near its limit.
    pub auto_stop_on_warning: bool,
    /// True while it sits out the rest of its window for that reason.
    pub five_hour_auto_stopped: bool,
    /// Dollars the account may cost per local day (0: no quota).
    pub daily_quota: f64,
    /// Dollars it cost today (null where not read: in audit entries).
    pub daily_usage: Option<f64>,
    /// The profile read from the OAuth provider (email, organization, subscription type).
    pub subscription_info: Option<SubscriptionInfo>,
}

/// CRS's `sessionWindow`: `progress` in percent of the window gone, `remainingTime` in
/// minutes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionWindowView {
    pub has_active_window: bool,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    pub progress: i64,
    pub remaining_time: Option<i64>,
    pub session_window_status: Option<&'static str>,
}

impl SessionWindowView {
    /// The window as it stands at `now`.
    pub fn of(w: Option<&SessionWindow>, now: DateTime<Utc>) -> SessionWindowView {
        let Some(w) = w else {
            return SessionWindowView {
                has_active_window: false,
                window_start: None,
                window_end: None,
                progress: 0,
                remaining_time: None,
                session_window_status: None,
            };
        };
        let status = w.status.map(WindowStatus::as_str);
        if now >= w.end {
            return SessionWindowView {
                has_active_window: false,
                window_start: Some(w.start),
                window_end: Some(w.end),
                progress: 100,
                remaining_time: Some(0),
                session_window_status: status,
            };
        }
        let total = (w.end - w.start).num_milliseconds().max(1);
        let gone = (now - w.start).num_milliseconds().clamp(0, total);
        let left = (w.end - now).num_milliseconds();
        // Rounded halves up, as JavaScript's Math.round.
        let round_div = |a: i64, b: i64| (2 * a + b).div_euclid(2 * b);
        SessionWindowView {
            has_active_window: true,
            window_start: Some(w.start),
            window_end: Some(w.end),
            progress: round_div(gone * 100, total),
            remaining_time: Some(round_div(left, 60_000)),
            session_window_status: status,
        }
    }
}

pub(crate) fn cipher(ctx: &AdminContext) -> Result<CredentialCipher, AdminError> {
    CredentialCipher::new(ctx.config.encryption_key.expose_secret())
        .map_err(|e| AppError::Internal(format!("credential cipher: {e}")).into())
}

fn open_credentials(c: &CredentialCipher, a: &Account) -> Result<Credentials, AdminError> {
    let json = c
        .open(&a.credentials_encrypted)
        .map_err(|e| AppError::Internal(format!("account {}: credentials: {e}", a.id)))?;
    serde_json::from_str(&json)
        .map_err(|e| AppError::Internal(format!("account {}: credentials: {e}", a.id)).into())
}

fn seal_credentials(c: &CredentialCipher, creds: &Credentials) -> Result<String, AdminError> {
    let json = serde_json::to_string(creds).map_err(|e| AppError::Internal(e.to_string()))?;
    c.seal(&json)
        .map_err(|e| AppError::Internal(format!("sealing credentials: {e}")).into())
}

/// The view of `a` (opens the sealed parts only to describe them).
pub fn view(ctx: &AdminContext, a: &Account) -> AccountView {
    let c = cipher(ctx).ok();
    let open = |s: &str| c.as_ref().and_then(|c| c.open(s).ok());
    let has_refresh_token = open(&a.credentials_encrypted)
        .and_then(|j| serde_json::from_str::<Credentials>(&j).ok())
        .is_some_and(|cr| cr.refresh_token.is_some_and(|t| !t.is_empty()));
    AccountView {
        id: a.id.clone(),
        name: a.name.clone(),
        description: a.description.clone(),
        account_type: a.account_type.as_str(),
        account_type_scope: a.scope.clone(),
        base_url: a.base_url.clone(),
        priority: a.priority,
        schedulable: a.schedulable,
        is_active: a.is_active,
        status: a.effective_status(Utc::now()).as_str(),
        status_until: a.status_until,
        error_message: a.error_message.clone(),
        max_concurrency: a.max_concurrency,
        proxy: a
            .proxy_encrypted
            .as_deref()
            .map(|p| open(p).map_or_else(|| "***".to_string(), |u| mask_url_credentials(&u))),
        has_refresh_token,
        token_expires_at: a.token_expires_at,
        created_at: a.created_at,
        updated_at: a.updated_at,
        last_used_at: a.last_used_at,
        last_refresh_at: a.last_refresh_at,
        group_ids: a.group_ids.clone(),
        model_cooldowns: a
            .model_cooldowns
            .iter()
            .filter(|(_, until)| **until > Utc::now())
            .map(|(f, until)| (f.clone(), *until))
            .collect(),
        supported_models: a.model_mapping.clone(),
        user_agent: a.user_agent.clone(),
        session_window: SessionWindowView::of(a.session_window.as_ref(), Utc::now()),
        auto_stop_on_warning: a.auto_stop_on_warning,
        five_hour_auto_stopped: a.five_hour_stopped(Utc::now()),
        daily_quota: a.daily_quota,
        daily_usage: None,
        subscription_info: a.subscription.clone(),
    }
}

/// The views of `accounts` with what each cost today (one counter read for all; without
/// the counters, `dailyUsage` is null rather than the list failing).
pub async fn views_with_usage(ctx: &AdminContext, accounts: &[Account]) -> Vec<AccountView> {
    let now = Utc::now();
    let offset = ctx.config.timezone_offset_hours;
    let names: Vec<String> = accounts
        .iter()
        .map(|a| account_day_counter(&a.id, now, offset))
        .collect();
    let spent = match ctx.router.read_counters(names).await {
        Ok(v) => v.into_iter().map(|c| Some(c.cost_micros)).collect(),
        Err(e) => {
            log::debug!("daily usage of accounts not read: {e}");
            vec![None; accounts.len()]
        }
    };
    accounts
        .iter()
        .zip(spent)
        .map(|(a, micros)| {
            let mut v = view(ctx, a);
            v.daily_usage = micros.map(super::fields::usd);
            v
        })
        .collect()
}

/// The view of one account with what it cost today.
pub async fn view_with_usage(ctx: &AdminContext, a: &Account) -> AccountView {
    views_with_usage(ctx, std::slice::from_ref(a))
        .await
        .pop()
        .unwrap_or_else(|| view(ctx, a))
}

fn check_url(field: &str, url: &str, schemes: &[&str]) -> Result<(), AdminError> {
    let ok = schemes.iter().any(|s| {
        url.strip_prefix(s)
            .and_then(|r| r.strip_prefix("://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
    });
    if !ok || url.len() > MAX_URL_LEN || url.chars().any(|c| c.is_whitespace()) {
        return Err(AdminError::field(
            field,
            format!("must be a {} URL", schemes.join(" / ")),
        ));
    }
    Ok(())
}

/// The proxy as a URL: a string, or CRS's object `{type, host, port, username, password}`.
/// `Some(None)` removes it.
pub(super) fn proxy_field(f: &Fields<'_>) -> Result<Option<Option<String>>, AdminError> {
    let url = match f.raw("proxy") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(None)),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Some(None)),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(v @ Value::Object(_)) => {
            let p = Fields::of(v)?;
            let kind = p.string("type")?.unwrap_or_else(|| "http".into());
            let host = p
                .string("host")?
                .filter(|h| !h.is_empty())
                .ok_or_else(|| AdminError::field("proxy", "host is required"))?;
            let port = p
                .int("port", 1, 65_535)
                .map_err(|_| AdminError::field("proxy", "port must be 1..=65535"))?
                .ok_or_else(|| AdminError::field("proxy", "port is required"))?;
            let auth = match (p.string("username")?, p.string("password")?) {
                (Some(u), Some(pw)) if !u.is_empty() => format!("{u}:{pw}@"),
                (Some(u), _) if !u.is_empty() => format!("{u}@"),
                _ => String::new(),
            };
            format!("{kind}://{auth}{host}:{port}")
        }
        Some(_) => return Err(AdminError::field("proxy", "must be a URL or an object")),
    };
    check_url("proxy", &url, &["http", "https", "socks5", "socks5h"])?;
    Ok(Some(Some(url)))
}

/// Applies the fields present in `f` to `a` (credentials into `creds`).
fn apply_fields(
    a: &mut Account,
    creds: &mut Credentials,
    f: &Fields<'_>,
) -> Result<Option<Option<String>>, AdminError> {
    if let Some(name) = f.string("name")? {
        validate_name(&name).map_err(|m| AdminError::field("name", m))?;
        a.name = name;
    }
    if let Some(d) = f.bounded_string("description", MAX_DESCRIPTION_LEN)? {
        a.description = d;
    }
    if let Some(t) = f.string("type")? {
        let t = AccountType::parse(&t).ok_or_else(|| {
            AdminError::field("type", "must be one of: claude-console, claude-oauth")
        })?;
        if t != a.account_type {
            return Err(AdminError::field(
                "type",
                "cannot change the type of an account",
            ));
        }
    }
    if let Some(scope) = f.string("accountType")? {
        if scope != "shared" && scope != "dedicated" && scope != "group" {
            return Err(AdminError::field(
                "accountType",
                "must be one of: shared, dedicated, group",
            ));
        }
        a.scope = scope;
    }
    for name in ["baseUrl", "apiUrl"] {
        if let Some(url) = f.string(name)? {
            check_url(name, &url, &["http", "https"])?;
            a.base_url = Some(url.trim_end_matches('/').to_string());
        }
    }
    if let Some(n) = f.int("priority", 1, 100)? {
        a.priority = i32::try_from(n).unwrap_or(i32::MAX);
    }
    if let Some(b) = f.bool("schedulable")? {
        a.schedulable = b;
    }
    if let Some(b) = f.bool("isActive")? {
        a.is_active = b;
    }
    if let Some(n) = f.int("maxConcurrency", 0, 100_000)? {
        a.max_concurrency = i32::try_from(n).unwrap_or(i32::MAX);
    }
    if let Some(mapping) = model_mapping_field(f)? {
        a.model_mapping = mapping;
    }
    if let Some(micros) = f.usd_micros("dailyQuota")? {
        let quota = super::fields::usd(micros);
        if quota != a.daily_quota && a.status == AccountStatus::QuotaExceeded {
            // A new quota: the next counted request decides again.
            a.status = AccountStatus::Active;
            a.status_until = None;
            a.error_message.clear();
        }
        a.daily_quota = quota;
    }
    if let Some(b) = f.bool("autoStopOnWarning")? {
        a.auto_stop_on_warning = b;
    }
    if f.has("userAgent") {
        a.user_agent = f
            .bounded_string("userAgent", 512)?
            .filter(|u| !u.is_empty());
    }
    // OAuth fields at the top level or inside CRS's `claudeAiOauth` object.
    let nested = f.object("claudeAiOauth")?;
    let sources: Vec<&Fields<'_>> = std::iter::once(f).chain(nested.as_ref()).collect();
    for src in sources {
        if let Some(k) = src
            .bounded_string("apiKey", MAX_SECRET_LEN)?
            .filter(|s| !s.is_empty())
        {
            creds.api_key = Some(k);
        }
        if let Some(t) = src
            .bounded_string("accessToken", MAX_SECRET_LEN)?
            .filter(|s| !s.is_empty())
        {
            creds.access_token = Some(t);
        }
        if let Some(t) = src
            .bounded_string("refreshToken", MAX_SECRET_LEN)?
            .filter(|s| !s.is_empty())
        {
            creds.refresh_token = Some(t);
        }
        if let Some(at) = src.datetime("expiresAt")? {
            a.token_expires_at = at;
        }
        if let Some(v) = src.raw("subscriptionInfo") {
            a.subscription = match v {
                Value::Null => None,
                Value::Object(_) => Some(serde_json::from_value(v.clone()).map_err(|_| {
                    AdminError::field(
                        "subscriptionInfo",
                        "must be an object with string fields email, organizationName, \
                         organizationUuid, subscriptionType",
                    )
                })?),
                _ => return Err(AdminError::field("subscriptionInfo", "must be an object")),
            };
        }
    }
    proxy_field(f)
}

/// Most entries of a model mapping.
const MAX_MODEL_MAPPINGS: usize = 200;

/// `supportedModels`: an object (client model → upstream model) or a list (those models as
/// they are), as CRS stores it; `{}`, `[]` or null clears it.
fn model_mapping_field(
    f: &Fields<'_>,
) -> Result<Option<std::collections::BTreeMap<String, String>>, AdminError> {
    let field = "supportedModels";
    let check = |m: &str| -> Result<String, AdminError> {
        let m = m.trim();
        if m.is_empty()
            || m.len() > 128
            || !m
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:@/-[]".contains(c))
        {
            return Err(AdminError::field(
                field,
                format!("`{m}` is not a model name"),
            ));
        }
        Ok(m.to_string())
    };
    let mapping: std::collections::BTreeMap<String, String> = match f.raw(field) {
        None => return Ok(None),
        Some(Value::Null) => Default::default(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((check(k)?, check(s)?)),
                _ => Err(AdminError::field(field, "values must be model names")),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => check(s).map(|m| (m.clone(), m)),
                _ => Err(AdminError::field(field, "must be a list of model names")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(AdminError::field(field, "must be an object or a list")),
    };
    if mapping.len() > MAX_MODEL_MAPPINGS {
        return Err(AdminError::field(
            field,
            format!("must have at most {MAX_MODEL_MAPPINGS} entries"),
        ));
    }
    Ok(Some(mapping))
}

fn not_found(id: &str) -> AdminError {
    AdminError::not_found(format!("account {id} not found"))
}

/// Loads an account by id; 404 when unknown.
pub async fn load(ctx: &AdminContext, id: &str) -> Result<Account, AdminError> {
    validate_id(id).map_err(|_| not_found(id))?;
    ctx.router
        .get_account(id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// A new account of `account_type` named `name`, with the defaults before any field applies.
pub(crate) fn blank(name: String, account_type: AccountType, now: DateTime<Utc>) -> Account {
    Account {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        description: String::new(),
        account_type,
        base_url: None,
        credentials_encrypted: String::new(),
        proxy_encrypted: None,
        token_expires_at: None,
        scope: "shared".into(),
        priority: 50,
        schedulable: true,
        is_active: true,
        status: AccountStatus::Active,
        status_until: None,
        error_message: String::new(),
        max_concurrency: 0,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        last_refresh_at: None,
        group_ids: Vec::new(),
        model_cooldowns: Default::default(),
        model_mapping: Default::default(),
        user_agent: None,
        session_window: None,
        auto_stop_on_warning: false,
        daily_quota: 0.0,
        subscription: None,
    }
}

/// Checks the fields of a `create` body that are not credentials (name, priority, proxy,
/// …) without creating anything: the console checks them before an OAuth login starts,
/// so a bad field does not waste the one-time authorization code.
pub fn check_new_fields(body: &Value, account_type: AccountType) -> Result<(), AdminError> {
    let f = Fields::of(body)?;
    let name = f
        .string("name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AdminError::field("name", "is required"))?;
    let mut a = blank(name, account_type, Utc::now());
    apply_fields(&mut a, &mut Credentials::default(), &f)?;
    Ok(())
}

/// `POST /admin/claude-accounts` (and the console alias with `type` preset).
pub async fn create(
    ctx: &AdminContext,
    body: &Value,
    preset: Option<AccountType>,
) -> Result<AccountView, AdminError> {
    let f = Fields::of(body)?;
    let name = f
        .string("name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AdminError::field("name", "is required"))?;
    let account_type = match (preset, f.string("type")?) {
        (Some(t), _) => t,
        (None, Some(t)) => AccountType::parse(&t).ok_or_else(|| {
            AdminError::field("type", "must be one of: claude-console, claude-oauth")
        })?,
        (None, None) => return Err(AdminError::field("type", "is required")),
    };
    let mut a = blank(name, account_type, Utc::now());
    let mut creds = Credentials::default();
    let proxy = apply_fields(&mut a, &mut creds, &f)?;
    match account_type {
        AccountType::ClaudeConsole => {
            if a.base_url.is_none() {
                let field = if preset.is_some() {
                    "apiUrl"
                } else {
                    "baseUrl"
                };
                return Err(AdminError::field(field, "is required"));
            }
            if creds.api_key.is_none() {
                return Err(AdminError::field("apiKey", "is required"));
            }
        }
        AccountType::ClaudeOauth => {
            if creds.access_token.is_none() {
                return Err(AdminError::field("accessToken", "is required"));
            }
        }
    }
    let c = cipher(ctx)?;
    a.credentials_encrypted = seal_credentials(&c, &creds)?;
    let proxy_url = proxy.flatten();
    a.proxy_encrypted = proxy_url
        .as_deref()
        .map(|p| c.seal(p))
        .transpose()
        .map_err(|e| AppError::Internal(format!("sealing proxy: {e}")))?;
    let mut a = ctx.router.create_account(a).await?;
    // A token that may read the profile (CRS: the `user:profile` scope) and no profile
    // given: read it now; a failure leaves the account as created.
    if a.subscription.is_none()
        && has_profile_scope(&f)
        && let Some(token) = creds.access_token.as_deref()
    {
        let http = oauth_client(proxy_url.as_deref(), "proxy")?;
        if let Some(info) = crate::relay::oauth::store_profile(
            &ctx.router,
            &http,
            &ctx.config.claude_oauth_profile_url,
            &a.id,
            token,
        )
        .await
        {
            a.subscription = Some(info);
        }
    }
    ctx.audit(
        "create",
        "account",
        &a.id,
        None,
        Some(snapshot(&view(ctx, &a))),
    )
    .await;
    Ok(view_with_usage(ctx, &a).await)
}

/// True when the body's `scopes` (top level or in `claudeAiOauth`; a list or a
/// space-separated string) include the profile scope.
fn has_profile_scope(f: &Fields<'_>) -> bool {
    let nested = f.raw("claudeAiOauth").map(|o| &o["scopes"]);
    [f.raw("scopes"), nested]
        .into_iter()
        .flatten()
        .any(|v| match v {
            Value::String(s) => s
                .split_whitespace()
                .any(|x| x == crate::relay::oauth::PROFILE_SCOPE),
            Value::Array(a) => a
                .iter()
                .any(|x| x.as_str() == Some(crate::relay::oauth::PROFILE_SCOPE)),
            _ => false,
        })
}

/// An HTTP client for the OAuth provider, through `proxy` when there is one (`field`
/// names it in the error when the URL cannot be used).
pub(super) fn oauth_client(
    proxy: Option<&str>,
    field: &str,
) -> Result<reqwest::Client, AdminError> {
    let mut http = reqwest::Client::builder().timeout(REFRESH_TIMEOUT);
    http = match proxy {
        Some(p) => http.proxy(
            reqwest::Proxy::all(p)
                .map_err(|_| AdminError::field(field, "the proxy URL is not usable"))?,
        ),
        None => http.no_proxy(),
    };
    http.build()
        .map_err(|e| AppError::Internal(format!("http client: {e}")).into())
}

pub(super) async fn save(
    ctx: &AdminContext,
    action: &str,
    before: &Account,
    mut a: Account,
) -> Result<AccountView, AdminError> {
    a.updated_at = Utc::now();
    let a = ctx.router.save_account(a).await?;
    ctx.audit(
        action,
        "account",
        &a.id,
        Some(snapshot(&view(ctx, before))),
        Some(snapshot(&view(ctx, &a))),
    )
    .await;
    Ok(view_with_usage(ctx, &a).await)
}

/// `PUT /admin/claude-accounts/{id}`: changes the fields present; new secrets replace old.
pub async fn update(ctx: &AdminContext, id: &str, body: &Value) -> Result<AccountView, AdminError> {
    let f = Fields::of(body)?;
    let before = load(ctx, id).await?;
    let c = cipher(ctx)?;
    let mut creds = open_credentials(&c, &before)?;
    let mut a = before.clone();
    let proxy = apply_fields(&mut a, &mut creds, &f)?;
    a.credentials_encrypted = seal_credentials(&c, &creds)?;
    if let Some(p) = proxy {
        a.proxy_encrypted = p
            .map(|p| c.seal(&p))
            .transpose()
            .map_err(|e| AppError::Internal(format!("sealing proxy: {e}")))?;
    }
    save(ctx, "update", &before, a).await
}

/// Deletes an account unless keys are bound to it.
pub async fn delete(ctx: &AdminContext, id: &str) -> Result<(), AdminError> {
    let before = load(ctx, id).await?;
    let bound = ctx
        .router
        .list_keys(false)
        .await?
        .iter()
        .filter(|k| k.claude_account_id.as_deref() == Some(id))
        .count();
    if bound > 0 {
        return Err(AdminError::invalid(format!(
            "account {id} is bound to {bound} api key(s): unbind them first"
        )));
    }
    if !ctx.router.delete_account(id).await? {
        return Err(not_found(id));
    }
    ctx.audit(
        "delete",
        "account",
        id,
        Some(snapshot(&view(ctx, &before))),
        None,
    )
    .await;
    Ok(())
}

/// Flips `schedulable`.
pub async fn toggle_schedulable(ctx: &AdminContext, id: &str) -> Result<AccountView, AdminError> {
    let before = load(ctx, id).await?;
    let mut a = before.clone();
    a.schedulable = !a.schedulable;
    save(ctx, "toggle_schedulable", &before, a).await
}

/// Back to `active` now (clears rate limits, errors and cool-downs).
pub async fn reset_status(ctx: &AdminContext, id: &str) -> Result<AccountView, AdminError> {
    let before = load(ctx, id).await?;
    let mut a = before.clone();
    a.status = AccountStatus::Active;
    a.status_until = None;
    a.error_message = String::new();
    a.model_cooldowns.clear();
    // The upstream's word on the 5-hour window is forgotten: an auto-stopped account
    // returns (the window itself runs on).
    if let Some(w) = &mut a.session_window {
        w.status = None;
    }
    save(ctx, "reset_status", &before, a).await
}

/// Refreshes an OAuth account's tokens now at `CLAUDE_OAUTH_TOKEN_URL`, through the relay's
/// refresh (the same lock and storage of the new tokens as a refresh ahead of expiry).
pub async fn refresh(ctx: &AdminContext, id: &str) -> Result<AccountView, AdminError> {
    let before = load(ctx, id).await?;
    if before.account_type != AccountType::ClaudeOauth {
        return Err(AdminError::invalid(format!(
            "account {id} is a claude-console account: only claude-oauth accounts have tokens to refresh"
        )));
    }
    let c = cipher(ctx)?;
    let creds = open_credentials(&c, &before)?;
    if creds.refresh_token.is_none_or(|t| t.is_empty()) {
        return Err(AdminError::invalid(format!(
            "account {id} has no refresh token"
        )));
    }
    let proxy = before
        .proxy_encrypted
        .as_deref()
        .map(|p| c.open(p))
        .transpose()
        .map_err(|e| AppError::Internal(format!("account {id}: proxy: {e}")))?;
    let mut http = reqwest::Client::builder().timeout(REFRESH_TIMEOUT);
    http = match proxy {
        Some(p) => http.proxy(reqwest::Proxy::all(&p).map_err(|_| {
            AdminError::invalid(format!("account {id}: the proxy URL is not usable"))
        })?),
        None => http.no_proxy(),
    };
    let http = http
        .build()
        .map_err(|e| AppError::Internal(format!("http client: {e}")))?;
    // The relay's refresh reuses a cached access token when there is one: drop it, so
    // "refresh now" really asks the OAuth server.
    if let Err(e) = ctx.router.delete_entry(EntryKind::OauthToken, id).await {
        log::warn!("account {id}: cached access token not dropped: {e}");
    }
    crate::relay::oauth::refresh(
        &ctx.router,
        &c,
        &http,
        crate::relay::oauth::OauthUrls::of(&ctx.config),
        &before,
    )
    .await
    .map_err(|e| match e {
        // The relay reports a failed refresh as "no account": to an operator it is the
        // OAuth server's answer.
        AppError::NoAccountAvailable(m) => AppError::UpstreamUnreachable(m),
        other => other,
    })?;
    let after = load(ctx, id).await?;
    let v = view(ctx, &after);
    ctx.audit(
        "refresh_token",
        "account",
        id,
        Some(snapshot(&view(ctx, &before))),
        Some(snapshot(&v)),
    )
    .await;
    Ok(v)
}
