//! The CRS (Node.js Claude Relay Service) Redis layout and its conversion into ours, without
//! I/O: API key and account hashes become `ApiKey` / `Account` (secrets decrypted with the
//! CRS key, checked on one secret before anything else), the admin credentials are kept,
//! and the usage hashes become daily history rows and counter-set values named as the relay
//! names them (`usage:key:{id}:total`, `…:model:{m}:day:{date}`, `cost:key:{id}:opus_week:…`).
//! Layout: `shared/CRS_REDIS.md`; the importer is `cli/import_crs.rs`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::account::{
    Account, AccountStatus, AccountType, Credentials, SessionWindow, SubscriptionInfo, WindowStatus,
};
use super::api_key::{self, ApiKey, ExpirationMode, Permissions};
use super::crypto::{CRS_SALT_CONSOLE, CRS_SALT_OAUTH, CrsDecryptError, CrsDecryptor};
use super::group::{AccountGroup, bound_group};
use super::limits::Counters;

/// One Redis value of a CRS data set, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum CrsValue {
    String(String),
    Hash(HashMap<String, String>),
    Set(Vec<String>),
    List(Vec<String>),
    /// zset and stream: derived data the importer does not read.
    Other(String),
}

/// One `usage_daily` row of imported history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyImport {
    pub date: NaiveDate,
    pub api_key_id: String,
    pub account_id: String,
    pub model: String,
    pub counters: Counters,
}

const HOUR_TTL: i64 = 3 * 24 * 3600;
const DAY_TTL: i64 = 40 * 24 * 3600;
const MONTH_TTL: i64 = 400 * 24 * 3600;
const WEEK_TTL: i64 = 15 * 24 * 3600;

/// An account converted from CRS, secrets in plaintext until it is written.
pub struct PlannedAccount {
    pub account: Account,
    pub credentials: Credentials,
    pub proxy: Option<String>,
}

/// Everything the import will write, computed before anything is written.
#[derive(Default)]
pub struct CrsPlan {
    pub keys: Vec<ApiKey>,
    /// Claude account groups; their members carry the group id in `Account::group_ids`.
    pub groups: Vec<AccountGroup>,
    pub accounts: Vec<PlannedAccount>,
    pub admin: Option<(String, String)>,
    pub daily: Vec<DailyImport>,
    /// Counter set name (without the baseline prefix) → value and lifetime in seconds.
    pub baselines: BTreeMap<String, (Counters, Option<i64>)>,
    pub skipped: Vec<(String, String)>,
    pub notes: Vec<String>,
}

type Hash = HashMap<String, String>;

fn field<'a>(h: &'a Hash, name: &str) -> &'a str {
    h.get(name).map(String::as_str).unwrap_or("").trim()
}

fn flag(h: &Hash, name: &str) -> bool {
    field(h, name) == "true"
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "a CRS number written as a float: `as` saturates (NaN is 0), the wanted reading"
)]
fn int(h: &Hash, name: &str) -> i64 {
    let v = field(h, name);
    v.parse::<i64>()
        .ok()
        .or_else(|| v.parse::<f64>().ok().map(|f| f as i64))
        .unwrap_or(0)
}

/// USD as text → micro-dollars.
#[expect(
    clippy::cast_possible_truncation,
    reason = "USD text to micro-dollars: `as` saturates (NaN is 0), the wanted reading"
)]
fn micros(v: &str) -> i64 {
    v.trim()
        .parse::<f64>()
        .map(|f| (f * 1_000_000.0).round() as i64)
        .unwrap_or(0)
}

fn time(h: &Hash, name: &str) -> Option<DateTime<Utc>> {
    let v = field(h, name);
    if v.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    v.parse::<i64>()
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

/// The six counters of a CRS usage hash (`total…` fields for lifetime hashes).
fn usage_counters(h: &Hash, cost: i64) -> Counters {
    let get = |plain: &str, total: &str| {
        if h.contains_key(plain) {
            int(h, plain)
        } else {
            int(h, total)
        }
    };
    Counters {
        requests: get("requests", "totalRequests"),
        input_tokens: get("inputTokens", "totalInputTokens"),
        output_tokens: get("outputTokens", "totalOutputTokens"),
        cache_create_tokens: get("cacheCreateTokens", "totalCacheCreateTokens"),
        cache_read_tokens: get("cacheReadTokens", "totalCacheReadTokens"),
        cost_micros: cost,
    }
}

fn rated_cost(h: &Hash) -> i64 {
    int(h, "ratedCostMicro")
}

fn permissions(raw: &str) -> Option<Permissions> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "all" {
        return Some(Permissions::All);
    }
    let list: Vec<String> = match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Ok(serde_json::Value::String(s)) => vec![s],
        _ => vec![raw.to_string()],
    };
    if list.is_empty() || list.iter().any(|p| p == "all") {
        Some(Permissions::All)
    } else if list == ["claude"] {
        Some(Permissions::Claude)
    } else if list.iter().any(|p| p == "claude") {
        Some(Permissions::All)
    } else {
        None
    }
}

fn json_list(raw: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(raw).unwrap_or_default()
}

fn convert_key(id: &str, h: &Hash, now: DateTime<Utc>) -> Result<ApiKey, String> {
    api_key::validate_id(id)?;
    let hash = field(h, "apiKey").to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("apiKey is not a sha256 hex hash".into());
    }
    let mut name = field(h, "name").to_string();
    if name.is_empty() {
        name = id.to_string();
    }
    name.truncate(api_key::MAX_NAME_LEN);
    let permissions = permissions(field(h, "permissions")).ok_or_else(|| {
        format!(
            "permissions {} do not include claude",
            field(h, "permissions")
        )
    })?;
    let created_at = time(h, "createdAt").unwrap_or(now);
    let mut k = ApiKey::new(id.to_string(), name, hash);
    let mut description = field(h, "description").to_string();
    description.truncate(api_key::MAX_DESCRIPTION_LEN);
    k.description = description;
    k.tags = json_list(field(h, "tags"));
    k.is_active = flag(h, "isActive");
    k.permissions = permissions;
    k.concurrency_limit = clamp_u32(int(h, "concurrencyLimit"));
    k.rate_limit_window_minutes = clamp_u32(int(h, "rateLimitWindow"));
    k.rate_limit_requests = clamp_u32(int(h, "rateLimitRequests"));
    k.rate_limit_cost_micros = micros(field(h, "rateLimitCost"));
    k.token_limit = int(h, "tokenLimit").max(0);
    k.daily_cost_limit_micros = micros(field(h, "dailyCostLimit"));
    k.total_cost_limit_micros = micros(field(h, "totalCostLimit"));
    k.weekly_opus_cost_limit_micros = micros(field(h, "weeklyOpusCostLimit"));
    k.weekly_reset_day = if h.contains_key("weeklyResetDay") {
        u8::try_from(int(h, "weeklyResetDay").clamp(1, 7)).unwrap_or(1)
    } else {
        1
    };
    k.weekly_reset_hour = u8::try_from(int(h, "weeklyResetHour").clamp(0, 23)).unwrap_or(0);
    k.enable_model_restriction = flag(h, "enableModelRestriction");
    k.restricted_models = json_list(field(h, "restrictedModels"));
    // Carried over as CRS stores them: dropping them would open a restricted key to every
    // client. Ids this relay does not know never match, as in CRS.
    k.enable_client_restriction = flag(h, "enableClientRestriction");
    k.allowed_clients = json_list(field(h, "allowedClients"));
    k.claude_account_id = [
        field(h, "claudeAccountId"),
        field(h, "claudeConsoleAccountId"),
    ]
    .into_iter()
    .find(|v| !v.is_empty())
    .map(str::to_string);
    k.expiration_mode =
        ExpirationMode::parse(field(h, "expirationMode")).unwrap_or(ExpirationMode::Fixed);
    k.activation_days = clamp_u32(int(h, "activationDays"));
    if !field(h, "activationUnit").is_empty() {
        k.activation_unit = field(h, "activationUnit").to_string();
    }
    k.is_activated = if h.contains_key("isActivated") {
        flag(h, "isActivated")
    } else {
        true
    };
    k.activated_at = time(h, "activatedAt");
    k.expires_at = time(h, "expiresAt");
    k.created_by = field(h, "createdBy").to_string();
    k.created_at = created_at;
    k.updated_at = time(h, "updatedAt").unwrap_or(created_at);
    k.last_used_at = time(h, "lastUsedAt");
    if flag(h, "isDeleted") {
        k.is_active = false;
        k.deleted_at = Some(time(h, "deletedAt").unwrap_or(k.updated_at));
        k.deleted_by = Some(field(h, "deletedBy").to_string()).filter(|s| !s.is_empty());
    }
    Ok(k)
}

/// A CRS secret: decrypted, or as is when it is not in the encrypted form.
fn secret(
    d: &CrsDecryptor,
    value: &str,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<Option<String>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    match d.decrypt(value) {
        Ok(v) => Ok(Some(v)),
        Err(CrsDecryptError::NotEncrypted) => {
            notes.push(format!(
                "{what} was stored unencrypted in CRS; imported as is"
            ));
            Ok(Some(value.to_string()))
        }
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn proxy_url(raw: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let host = v["host"].as_str()?;
    let port = v["port"]
        .as_u64()
        .map(|p| p.to_string())
        .or_else(|| v["port"].as_str().map(str::to_string))?;
    let scheme = match v["type"].as_str().unwrap_or("http") {
        "socks5" | "socks" => "socks5",
        "https" => "https",
        _ => "http",
    };
    let auth = match (v["username"].as_str(), v["password"].as_str()) {
        (Some(u), Some(p)) if !u.is_empty() => format!("{u}:{p}@"),
        (Some(u), _) if !u.is_empty() => format!("{u}@"),
        _ => String::new(),
    };
    Some(format!("{scheme}://{auth}{host}:{port}"))
}

fn status(raw: &str) -> Option<AccountStatus> {
    let normalized: String = raw
        .chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['_', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect();
    match normalized.as_str() {
        "" | "created" => Some(AccountStatus::Active),
        "temp_error" | "overloaded" => Some(AccountStatus::TempUnavailable),
        other => AccountStatus::parse(other),
    }
}

fn convert_account(
    id: &str,
    h: &Hash,
    kind: AccountType,
    d: &CrsDecryptor,
    (now, offset_hours): (DateTime<Utc>, i32),
    notes: &mut Vec<String>,
) -> Result<PlannedAccount, String> {
    api_key::validate_id(id)?;
    let what = |f: &str| format!("account {id} field {f}");
    let mut credentials = Credentials::default();
    let mut token_expires_at = None;
    match kind {
        AccountType::ClaudeOauth => {
            credentials.access_token =
                secret(d, field(h, "accessToken"), &what("accessToken"), notes)?;
            credentials.refresh_token =
                secret(d, field(h, "refreshToken"), &what("refreshToken"), notes)?;
            if let Some(oauth) =
                secret(d, field(h, "claudeAiOauth"), &what("claudeAiOauth"), notes)?
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&oauth)
            {
                if credentials.access_token.is_none() {
                    credentials.access_token = v["accessToken"].as_str().map(str::to_string);
                }
                if credentials.refresh_token.is_none() {
                    credentials.refresh_token = v["refreshToken"].as_str().map(str::to_string);
                }
            }
            token_expires_at = time(h, "expiresAt");
            if credentials.access_token.is_none() && credentials.refresh_token.is_none() {
                return Err("no access or refresh token".into());
            }
        }
        AccountType::ClaudeConsole => {
            credentials.api_key = secret(d, field(h, "apiKey"), &what("apiKey"), notes)?;
            if credentials.api_key.is_none() {
                return Err("no apiKey".into());
            }
            if field(h, "apiUrl").is_empty() {
                return Err("no apiUrl".into());
            }
        }
    }
    let raw_proxy = field(h, "proxy");
    let proxy = if raw_proxy.is_empty() {
        None
    } else {
        let p = proxy_url(raw_proxy);
        if p.is_none() {
            notes.push(format!(
                "account {id}: proxy `{raw_proxy}` not understood, left out"
            ));
        }
        p
    };
    let scope = match field(h, "accountType") {
        "dedicated" => "dedicated",
        // Serves only the keys bound to one of its groups, as in CRS.
        "group" => "group",
        _ => "shared",
    };
    let crs_status = field(h, "status");
    let status = status(crs_status).unwrap_or_else(|| {
        notes.push(format!(
            "account {id}: CRS status `{crs_status}` imported as error"
        ));
        AccountStatus::Error
    });
    let (status, status_until) = temporary_state(h, status, now, offset_hours);
    let created_at = time(h, "createdAt").unwrap_or(now);
    let mut name = field(h, "name").to_string();
    if name.is_empty() {
        name = id.to_string();
    }
    let max_concurrency = match kind {
        AccountType::ClaudeConsole => int(h, "maxConcurrentTasks"),
        AccountType::ClaudeOauth => int(h, "maxConcurrency"),
    };
    // CRS `supportedModels`: an object client model → upstream model, or (older) a list.
    let model_mapping: std::collections::BTreeMap<String, String> =
        match serde_json::from_str::<serde_json::Value>(field(h, "supportedModels")) {
            Ok(serde_json::Value::Object(o)) => o
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
                .collect(),
            Ok(serde_json::Value::Array(a)) => a
                .into_iter()
                .filter_map(|v| v.as_str().map(|m| (m.to_string(), m.to_string())))
                .collect(),
            _ => Default::default(),
        };
    let user_agent = Some(field(h, "userAgent").to_string())
        .filter(|u| !u.is_empty() && kind == AccountType::ClaudeConsole);
    let subscription = match kind {
        AccountType::ClaudeOauth => subscription_of(id, h, d, notes)?,
        AccountType::ClaudeConsole => None,
    };
    // CRS `sessionWindowStart` / `End` (ISO) and `sessionWindowStatus`.
    let session_window = match (time(h, "sessionWindowStart"), time(h, "sessionWindowEnd")) {
        (Some(start), Some(end)) if kind == AccountType::ClaudeOauth && start < end => {
            Some(SessionWindow {
                start,
                end,
                status: WindowStatus::parse(field(h, "sessionWindowStatus")),
            })
        }
        _ => None,
    };
    let daily_quota = match kind {
        AccountType::ClaudeConsole => field(h, "dailyQuota")
            .parse::<f64>()
            .ok()
            .filter(|q| q.is_finite() && *q > 0.0)
            .unwrap_or(0.0),
        AccountType::ClaudeOauth => 0.0,
    };
    let account = Account {
        id: id.to_string(),
        name,
        description: field(h, "description").to_string(),
        account_type: kind,
        base_url: Some(field(h, "apiUrl").trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty()),
        credentials_encrypted: String::new(),
        proxy_encrypted: None,
        token_expires_at,
        scope: scope.to_string(),
        priority: if h.contains_key("priority") {
            int(h, "priority").clamp(1, 100) as i32
        } else {
            50
        },
        schedulable: !h.contains_key("schedulable") || flag(h, "schedulable"),
        is_active: flag(h, "isActive"),
        status,
        status_until,
        error_message: field(h, "errorMessage").to_string(),
        max_concurrency: i32::try_from(max_concurrency.clamp(0, i64::from(i32::MAX))).unwrap_or(0),
        created_at,
        updated_at: time(h, "updatedAt").unwrap_or(created_at),
        last_used_at: time(h, "lastUsedAt"),
        last_refresh_at: time(h, "lastRefreshAt"),
        group_ids: Vec::new(),
        model_cooldowns: Default::default(),
        model_mapping,
        user_agent,
        session_window,
        auto_stop_on_warning: kind == AccountType::ClaudeOauth && flag(h, "autoStopOnWarning"),
        daily_quota,
        subscription,
    };
    Ok(PlannedAccount {
        account,
        credentials,
        proxy,
    })
}

/// CRS `subscriptionInfo` (JSON: `email`, `organizationName`, `organizationUuid`,
/// `accountType` or `hasClaudeMax` / `hasClaudePro`) and the encrypted `email` field.
fn subscription_of(
    id: &str,
    h: &Hash,
    d: &CrsDecryptor,
    notes: &mut Vec<String>,
) -> Result<Option<SubscriptionInfo>, String> {
    let info: serde_json::Value =
        serde_json::from_str(field(h, "subscriptionInfo")).unwrap_or(serde_json::Value::Null);
    let text = |k: &str| {
        info[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let subscription_type = text("accountType")
        .filter(|t| t == "claude_max" || t == "claude_pro")
        .or_else(|| (info["hasClaudeMax"].as_bool() == Some(true)).then(|| "claude_max".into()))
        .or_else(|| (info["hasClaudePro"].as_bool() == Some(true)).then(|| "claude_pro".into()));
    let email = match text("email") {
        Some(e) => Some(e),
        None => secret(
            d,
            field(h, "email"),
            &format!("account {id} field email"),
            notes,
        )?
        .filter(|e| !e.is_empty()),
    };
    let s = SubscriptionInfo {
        email,
        organization_name: text("organizationName"),
        organization_uuid: text("organizationUuid"),
        subscription_type,
        profile_fetched_at: text("profileFetchedAt")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
    };
    Ok((s != SubscriptionInfo::default()).then_some(s))
}

/// How long CRS keeps an account rate limited without `rateLimitEndAt` (its old data).
const CRS_RATE_LIMIT_HOURS: i64 = 1;
/// How long CRS keeps an account in `temp_error` (`TEMP_ERROR_RECOVERY_MINUTES`).
const CRS_TEMP_ERROR_MINUTES: i64 = 5;

/// The imported state and its end: a CRS rate limit (`rateLimitStatus: limited`, kept
/// beside `status`) ends at `rateLimitEndAt`, else an hour after `rateLimitedAt`; a
/// temporary error five minutes after `tempErrorAt`; without a time, counted from the
/// import. A state already over is imported as active.
/// A CRS account's temporary state with the end time it has here: a rate limit until
/// CRS's end (or an hour after it began), a temporary error for a few minutes, a daily
/// quota reached until the next local midnight (`offset_hours`, as the relay's days).
fn temporary_state(
    h: &Hash,
    status: AccountStatus,
    now: DateTime<Utc>,
    offset_hours: i32,
) -> (AccountStatus, Option<DateTime<Utc>>) {
    let limited = field(h, "rateLimitStatus") == "limited" || status == AccountStatus::RateLimited;
    let (status, end) = if limited && status != AccountStatus::Blocked {
        let end = time(h, "rateLimitEndAt").unwrap_or_else(|| {
            time(h, "rateLimitedAt").unwrap_or(now) + chrono::Duration::hours(CRS_RATE_LIMIT_HOURS)
        });
        (AccountStatus::RateLimited, end)
    } else if status == AccountStatus::QuotaExceeded {
        (
            status,
            super::account::next_local_midnight(now, offset_hours),
        )
    } else if status == AccountStatus::TempUnavailable {
        let since = time(h, "tempErrorAt").unwrap_or(now);
        (
            status,
            since + chrono::Duration::minutes(CRS_TEMP_ERROR_MINUTES),
        )
    } else {
        return (status, None);
    };
    if end <= now {
        (AccountStatus::Active, None)
    } else {
        (status, Some(end))
    }
}

/// A CRS account group hash as ours; None (with the reason) for other platforms.
fn convert_group(id: &str, h: &Hash, now: DateTime<Utc>) -> Result<AccountGroup, String> {
    api_key::validate_id(id)?;
    let platform = field(h, "platform");
    if platform != "claude" {
        return Err(format!(
            "a {platform} group: only Claude accounts are relayed"
        ));
    }
    let mut name = field(h, "name").to_string();
    if name.is_empty() {
        name = id.to_string();
    }
    name.truncate(api_key::MAX_NAME_LEN);
    let mut description = field(h, "description").to_string();
    description.truncate(api_key::MAX_DESCRIPTION_LEN);
    let created_at = time(h, "createdAt").unwrap_or(now);
    Ok(AccountGroup {
        id: id.to_string(),
        name,
        description,
        platform: "claude".into(),
        created_at,
        updated_at: time(h, "updatedAt").unwrap_or(created_at),
    })
}

/// The first encrypted account secret of the data set, with where it is.
fn first_secret(data: &BTreeMap<String, CrsValue>) -> Option<(String, String, bool)> {
    for (key, v) in data {
        let CrsValue::Hash(h) = v else { continue };
        let (fields, console): (&[&str], bool) = if key.starts_with("claude:account:") {
            (&["accessToken", "refreshToken", "claudeAiOauth"], false)
        } else if key.starts_with("claude_console_account:") {
            (&["apiKey"], true)
        } else {
            continue;
        };
        for f in fields {
            let value = field(h, f);
            if value.contains(':') {
                return Some((format!("{key} field {f}"), value.to_string(), console));
            }
        }
    }
    None
}

/// Splits `{prefix}{owner}:{rest}` usage key names: the period is at the end.
fn split_period(rest: &str, parts: usize) -> Option<(&str, Vec<&str>)> {
    let mut pieces: Vec<&str> = rest.rsplitn(parts + 1, ':').collect();
    if pieces.len() != parts + 1 {
        return None;
    }
    let head = pieces.pop()?;
    pieces.reverse();
    Some((head, pieces))
}

/// Reads the snapshot of a CRS database into a plan; fails on a wrong key before anything
/// is written.
pub fn plan(
    data: &BTreeMap<String, CrsValue>,
    crs_key: &str,
    now: DateTime<Utc>,
    offset_hours: i32,
) -> Result<CrsPlan, String> {
    let oauth = CrsDecryptor::new(crs_key, CRS_SALT_OAUTH).map_err(|e| e.to_string())?;
    let console = CrsDecryptor::new(crs_key, CRS_SALT_CONSOLE).map_err(|e| e.to_string())?;
    let mut plan = CrsPlan::default();
    match first_secret(data) {
        Some((what, value, is_console)) => {
            let d = if is_console { &console } else { &oauth };
            d.decrypt(&value).map_err(|e| {
                format!(
                    "the CRS ENCRYPTION_KEY given does not decrypt {what} ({e}); it is not the \
                     key of this CRS deployment. Nothing was written."
                )
            })?;
        }
        None => plan
            .notes
            .push("no encrypted account secret found: the CRS key could not be verified".into()),
    }
    let hash = |k: &str| match data.get(k) {
        Some(CrsValue::Hash(h)) => Some(h),
        _ => None,
    };
    let string = |k: &str| match data.get(k) {
        Some(CrsValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    let mut deleted_or_known: Vec<String> = Vec::new();
    for (key, v) in data {
        // API keys.
        if let Some(id) = key.strip_prefix("apikey:") {
            let CrsValue::Hash(h) = v else { continue };
            if id.contains(':') || id == "hash_map" {
                continue;
            }
            match convert_key(id, h, now) {
                Ok(k) => {
                    deleted_or_known.push(k.id.clone());
                    plan.keys.push(k);
                }
                Err(why) => plan.skipped.push((format!("api key {id}"), why)),
            }
            continue;
        }
        // Accounts.
        let account = if let Some(id) = key.strip_prefix("claude:account:") {
            Some((id, AccountType::ClaudeOauth, &oauth))
        } else {
            key.strip_prefix("claude_console_account:")
                .map(|id| (id, AccountType::ClaudeConsole, &console))
        };
        if let Some((id, kind, d)) = account {
            let CrsValue::Hash(h) = v else { continue };
            if id == "index" || id.contains(':') {
                continue;
            }
            match convert_account(id, h, kind, d, (now, offset_hours), &mut plan.notes) {
                Ok(a) => plan.accounts.push(a),
                Err(why) => {
                    if why.contains("did not decrypt") || why.contains("non-UTF-8") {
                        return Err(format!("{why}. Nothing was written."));
                    }
                    plan.skipped.push((format!("account {id}"), why));
                }
            }
            continue;
        }
        if let Some(id) = key.strip_prefix("account_group:") {
            let CrsValue::Hash(h) = v else { continue };
            match convert_group(id, h, now) {
                Ok(g) => plan.groups.push(g),
                Err(why) => plan.skipped.push((format!("account group {id}"), why)),
            }
            continue;
        }
        if key.starts_with("gemini_account:")
            || key.starts_with("openai_account:")
            || key.starts_with("bedrock_account:")
            || key.starts_with("azure_openai_account:")
            || key.starts_with("droid_account:")
        {
            if matches!(v, CrsValue::Hash(_)) {
                plan.skipped.push((
                    key.clone(),
                    "only Claude OAuth and Claude Console accounts are relayed".into(),
                ));
            }
            continue;
        }
    }
    // Group membership (`account_group_members:{id}` sets) onto the member accounts.
    for g in &plan.groups {
        let members = match data.get(&format!("account_group_members:{}", g.id)) {
            Some(CrsValue::Set(m)) => m.as_slice(),
            _ => &[],
        };
        for m in members {
            match plan.accounts.iter_mut().find(|p| p.account.id == *m) {
                Some(p) => p.account.group_ids.push(g.id.clone()),
                None => plan.notes.push(format!(
                    "account group {}: member {m} is not an imported account, left out",
                    g.id
                )),
            }
        }
    }
    for k in &plan.keys {
        if let Some(group) = k.claude_account_id.as_deref().and_then(bound_group)
            && !plan.groups.iter().any(|g| g.id == group)
        {
            plan.notes.push(format!(
                "api key {}: bound to account group {group}, which is not imported",
                k.id
            ));
        }
    }
    // Admin.
    if let Some(h) = hash("session:admin_credentials") {
        let (user, pw) = (field(h, "username"), field(h, "passwordHash"));
        if user.is_empty() || pw.is_empty() {
            plan.skipped.push((
                "admin credentials".into(),
                "username or passwordHash empty".into(),
            ));
        } else {
            plan.admin = Some((user.to_string(), pw.to_string()));
        }
    } else {
        plan.notes.push(
            "session:admin_credentials not found (CRS keeps it 24 h): no admin imported".into(),
        );
    }
    // Usage history.
    let key_ids: std::collections::HashSet<&str> =
        plan.keys.iter().map(|k| k.id.as_str()).collect();
    let mut base: BTreeMap<String, (Counters, Option<i64>)> = BTreeMap::new();
    let mut put = |name: String, c: Counters, ttl: Option<i64>| {
        base.insert(name, (c, ttl));
    };
    let mut model_totals: BTreeMap<String, Counters> = BTreeMap::new();
    let mut records_skipped = 0usize;
    for (key, v) in data {
        let Some(rest) = key.strip_prefix("usage:") else {
            if let Some(rest) = key.strip_prefix("account_usage:")
                && let CrsValue::Hash(h) = v
            {
                account_usage(rest, h, &mut put);
            }
            continue;
        };
        if rest.starts_with("records:") {
            records_skipped += 1;
            continue;
        }
        let CrsValue::Hash(h) = v else {
            continue;
        };
        if let Some(r) = rest.strip_prefix("daily:") {
            if let Some((id, p)) = split_period(r, 1)
                && key_ids.contains(id)
            {
                let cost = string(&format!("usage:cost:daily:{id}:{}", p[0])).map_or(0, micros);
                put(
                    format!("usage:key:{id}:day:{}", p[0]),
                    usage_counters(h, cost),
                    Some(DAY_TTL),
                );
            }
        } else if let Some(r) = rest.strip_prefix("monthly:") {
            if let Some((id, p)) = split_period(r, 1)
                && key_ids.contains(id)
            {
                let cost = string(&format!("usage:cost:monthly:{id}:{}", p[0])).map_or(0, micros);
                put(
                    format!("usage:key:{id}:month:{}", p[0]),
                    usage_counters(h, cost),
                    Some(MONTH_TTL),
                );
            }
        } else if let Some(r) = rest.strip_prefix("hourly:") {
            if let Some((id, p)) = split_period(r, 2)
                && key_ids.contains(id)
            {
                let cost =
                    string(&format!("usage:cost:hourly:{id}:{}:{}", p[0], p[1])).map_or(0, micros);
                put(
                    format!("usage:key:{id}:hour:{}T{}", p[0], p[1]),
                    usage_counters(h, cost),
                    Some(HOUR_TTL),
                );
            }
        } else if let Some(r) = rest.strip_prefix("model:") {
            // Global per-model sets: usage:model:{daily|monthly|hourly}:{model}:{period}.
            let (kind, r) = r.split_once(':').unwrap_or(("", ""));
            let (n, suffix, ttl) = match kind {
                "daily" => (1, "day", DAY_TTL),
                "monthly" => (1, "month", MONTH_TTL),
                "hourly" => (2, "hour", HOUR_TTL),
                _ => continue,
            };
            if let Some((model, p)) = split_period(r, n)
                && !model.is_empty()
                && !p.iter().any(|s| s.is_empty() || *s == "index")
            {
                put(
                    format!("usage:model:{model}:{suffix}:{}", p.join("T")),
                    usage_counters(h, rated_cost(h)),
                    Some(ttl),
                );
            }
        } else if let Some((id, after)) = rest.split_once(":model:") {
            // Per key and model: usage:{id}:model:{alltime|daily|monthly|hourly}:{model}[:{period}].
            if !key_ids.contains(id) {
                continue;
            }
            let (kind, r) = after.split_once(':').unwrap_or(("", ""));
            let c = usage_counters(h, rated_cost(h));
            match kind {
                "alltime" => {
                    put(format!("usage:key:{id}:model:{r}:total"), c, None);
                    model_totals.entry(r.to_string()).or_default().add(&c);
                }
                "daily" => {
                    if let Some((model, p)) = split_period(r, 1) {
                        put(
                            format!("usage:key:{id}:model:{model}:day:{}", p[0]),
                            c,
                            Some(DAY_TTL),
                        );
                        match NaiveDate::parse_from_str(p[0], "%Y-%m-%d") {
                            Ok(date) => plan.daily.push(DailyImport {
                                date,
                                api_key_id: id.to_string(),
                                account_id: String::new(),
                                model: model.to_string(),
                                counters: c,
                            }),
                            Err(_) => plan
                                .skipped
                                .push((key.clone(), "date in the key name not understood".into())),
                        }
                    }
                }
                "monthly" => {
                    if let Some((model, p)) = split_period(r, 1) {
                        put(
                            format!("usage:key:{id}:model:{model}:month:{}", p[0]),
                            c,
                            Some(MONTH_TTL),
                        );
                    }
                }
                "hourly" => {
                    if let Some((model, p)) = split_period(r, 2) {
                        put(
                            format!("usage:key:{id}:model:{model}:hour:{}T{}", p[0], p[1]),
                            c,
                            Some(HOUR_TTL),
                        );
                    }
                }
                _ => {}
            }
        } else if !rest.contains(':') && key_ids.contains(rest) {
            let cost = string(&format!("usage:cost:total:{rest}")).map_or(0, micros);
            put(
                format!("usage:key:{rest}:total"),
                usage_counters(h, cost),
                None,
            );
        }
    }
    for (model, c) in model_totals {
        put(format!("usage:model:{model}:total"), c, None);
    }
    // Weekly Opus cost (all Claude models in CRS, as its weeklyOpusCostLimit counts them).
    for (key, v) in data {
        if let (Some(r), CrsValue::String(s)) = (key.strip_prefix("usage:opus:weekly:"), v)
            && let Some((id, p)) = split_period(r, 1)
            && key_ids.contains(id)
        {
            let week = p[0].split('T').next().unwrap_or("");
            if NaiveDate::parse_from_str(week, "%Y-%m-%d").is_ok() {
                put(
                    format!("cost:key:{id}:opus_week:{week}"),
                    Counters {
                        cost_micros: micros(s),
                        ..Counters::default()
                    },
                    Some(WEEK_TTL),
                );
            }
        }
    }
    if records_skipped > 0 {
        plan.skipped.push((
            format!("{records_skipped} usage:records:* lists"),
            "per-request records are not imported; their totals are (daily per model and counters)"
                .into(),
        ));
    }
    plan.baselines = base;
    Ok(plan)
}

fn account_usage(rest: &str, h: &Hash, put: &mut impl FnMut(String, Counters, Option<i64>)) {
    let c = usage_counters(h, 0);
    let (kind, r) = rest.split_once(':').unwrap_or((rest, ""));
    match kind {
        "daily" | "monthly" | "hourly" if !r.contains("index") => {
            let (n, suffix, ttl) = match kind {
                "daily" => (1, "day", DAY_TTL),
                "monthly" => (1, "month", MONTH_TTL),
                _ => (2, "hour", HOUR_TTL),
            };
            if let Some((id, p)) = split_period(r, n)
                && !id.contains(':')
            {
                put(
                    format!("usage:account:{id}:{suffix}:{}", p.join("T")),
                    c,
                    Some(ttl),
                );
            }
        }
        "model" | "daily" | "monthly" | "hourly" => {}
        id if r.is_empty() && !id.is_empty() => put(format!("usage:account:{id}:total"), c, None),
        _ => {}
    }
}

/// A CRS number as a non-negative u32 (negatives are 0, too large ones the maximum).
fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_split_takes_the_period_from_the_end() {
        let (head, p) = split_period("id-1:claude-x:2026-11-26:18", 2).unwrap();
        assert_eq!(head, "id-1:claude-x");
        assert_eq!(p, vec!["2026-11-26", "18"]);
    }

    #[test]
    fn permissions_map_crs_lists() {
        assert_eq!(permissions("[]"), Some(Permissions::All));
        assert_eq!(permissions("all"), Some(Permissions::All));
        assert_eq!(permissions(r#"["claude"]"#), Some(Permissions::Claude));
        assert_eq!(permissions(r#"["gemini"]"#), None);
    }

    fn hash(pairs: &[(&str, &str)]) -> Hash {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn temporary_states_get_an_end_time() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let limited = hash(&[
            ("status", "active"),
            ("rateLimitStatus", "limited"),
            ("rateLimitedAt", "2026-11-27T11:30:00.000Z"),
            ("rateLimitEndAt", "2026-11-27T13:00:00.000Z"),
        ]);
        assert_eq!(
            temporary_state(&limited, AccountStatus::Active, now, 0),
            (
                AccountStatus::RateLimited,
                Some(Utc.with_ymd_and_hms(2026, 11, 27, 13, 0, 0).unwrap())
            )
        );
        // Old CRS data: an hour after rateLimitedAt.
        let old = hash(&[
            ("rateLimitStatus", "limited"),
            ("rateLimitedAt", "2026-11-27T11:30:00.000Z"),
        ]);
        assert_eq!(
            temporary_state(&old, AccountStatus::Active, now, 0),
            (
                AccountStatus::RateLimited,
                Some(Utc.with_ymd_and_hms(2026, 11, 27, 12, 30, 0).unwrap())
            )
        );
        // Over already: active.
        let over = hash(&[
            ("rateLimitStatus", "limited"),
            ("rateLimitedAt", "2026-11-27T10:00:00.000Z"),
        ]);
        assert_eq!(
            temporary_state(&over, AccountStatus::Active, now, 0),
            (AccountStatus::Active, None)
        );
        // A daily quota reached: until the next local midnight (UTC+8 here).
        let quota = hash(&[("status", "quota_exceeded")]);
        assert_eq!(
            temporary_state(&quota, status("quota_exceeded").unwrap(), now, 8),
            (
                AccountStatus::QuotaExceeded,
                Some(Utc.with_ymd_and_hms(2026, 11, 27, 16, 0, 0).unwrap())
            )
        );
        let temp = hash(&[
            ("status", "temp_error"),
            ("tempErrorAt", "2026-11-27T11:58:00.000Z"),
        ]);
        assert_eq!(
            temporary_state(&temp, AccountStatus::TempUnavailable, now, 0),
            (
                AccountStatus::TempUnavailable,
                Some(Utc.with_ymd_and_hms(2026, 11, 27, 12, 3, 0).unwrap())
            )
        );
        // No time at all: counted from the import.
        assert_eq!(
            temporary_state(&hash(&[]), AccountStatus::TempUnavailable, now, 0),
            (
                AccountStatus::TempUnavailable,
                Some(now + chrono::Duration::minutes(5))
            )
        );
        assert_eq!(
            temporary_state(&hash(&[]), AccountStatus::Error, now, 0),
            (AccountStatus::Error, None)
        );
    }

    #[test]
    fn client_restriction_is_imported() {
        let h: Hash = [
            ("apiKey", "a".repeat(64)),
            ("name", "cc only".into()),
            ("isActive", "true".into()),
            ("enableClientRestriction", "true".into()),
            ("allowedClients", r#"["claude_code","gemini_cli"]"#.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let k = convert_key("k1", &h, Utc::now()).unwrap();
        assert!(k.enable_client_restriction);
        assert_eq!(k.allowed_clients, vec!["claude_code", "gemini_cli"]);
        assert!(k.restricts_clients());
    }

    #[test]
    fn proxy_json_becomes_a_url() {
        assert_eq!(
            proxy_url(r#"{"type":"socks5","host":"127.0.0.1","port":1080}"#).as_deref(),
            Some("socks5://127.0.0.1:1080")
        );
        assert_eq!(micros("0.0300856"), 30086);
    }
}
