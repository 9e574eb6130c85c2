//! Upstream Claude accounts: types, states and the state changes upstream answers cause.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How the relay authenticates to the upstream with this account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountType {
    #[serde(rename = "claude-oauth")]
    ClaudeOauth,
    #[serde(rename = "claude-console")]
    ClaudeConsole,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::ClaudeOauth => "claude-oauth",
            AccountType::ClaudeConsole => "claude-console",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "claude-oauth" => Some(AccountType::ClaudeOauth),
            "claude-console" => Some(AccountType::ClaudeConsole),
            _ => None,
        }
    }
}

/// Scheduling state; every state but `Active` and `Blocked` ends by itself at `status_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    RateLimited,
    Unauthorized,
    Blocked,
    Error,
    TempUnavailable,
    /// A console account whose cost today reached its daily quota (until the next local
    /// day; CRS `quota_exceeded`).
    QuotaExceeded,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::RateLimited => "rate_limited",
            AccountStatus::Unauthorized => "unauthorized",
            AccountStatus::Blocked => "blocked",
            AccountStatus::Error => "error",
            AccountStatus::TempUnavailable => "temp_unavailable",
            AccountStatus::QuotaExceeded => "quota_exceeded",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => AccountStatus::Active,
            "rate_limited" => AccountStatus::RateLimited,
            "unauthorized" => AccountStatus::Unauthorized,
            "blocked" => AccountStatus::Blocked,
            "error" => AccountStatus::Error,
            "temp_unavailable" => AccountStatus::TempUnavailable,
            "quota_exceeded" => AccountStatus::QuotaExceeded,
            _ => return None,
        })
    }
}

/// Secrets of an account, kept encrypted at rest (`credentials_encrypted`).
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(***)")
    }
}

/// One upstream account as stored. Secrets are in `credentials_encrypted` and
/// `proxy_encrypted` (AES-256-GCM under ENCRYPTION_KEY).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    pub name: String,
    pub description: String,
    pub account_type: AccountType,
    pub base_url: Option<String>,
    pub credentials_encrypted: String,
    pub proxy_encrypted: Option<String>,
    pub token_expires_at: Option<DateTime<Utc>>,
    /// `shared` (pool) or `dedicated` (only keys bound to it).
    pub scope: String,
    pub priority: i32,
    pub schedulable: bool,
    pub is_active: bool,
    pub status: AccountStatus,
    pub status_until: Option<DateTime<Utc>>,
    pub error_message: String,
    pub max_concurrency: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// The account groups it belongs to (keys bound to `group:<id>` are served by them).
    #[serde(default)]
    pub group_ids: Vec<String>,
    /// Rate-limit cooldowns of one model family (`opus` / `sonnet` / `haiku`) → until:
    /// an Opus 429 leaves Sonnet requests flowing on the same account.
    #[serde(default)]
    pub model_cooldowns: BTreeMap<String, DateTime<Utc>>,
    /// Client model → upstream model (CRS `supportedModels`); when not empty, the account
    /// serves only these models.
    #[serde(default)]
    pub model_mapping: BTreeMap<String, String>,
    /// The user agent sent upstream instead of the client's (console accounts).
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The 5-hour usage window of a subscription account (CRS `sessionWindow*`).
    #[serde(default)]
    pub session_window: Option<SessionWindow>,
    /// Leave rotation while the upstream says the 5-hour window is near its limit, until
    /// the window ends (CRS `autoStopOnWarning`).
    #[serde(default)]
    pub auto_stop_on_warning: bool,
    /// Console accounts: dollars the account may cost per local day (CRS `dailyQuota`);
    /// 0 = no quota.
    #[serde(default)]
    pub daily_quota: f64,
    /// What the OAuth provider's profile says of a subscription account.
    #[serde(default)]
    pub subscription: Option<SubscriptionInfo>,
}

/// Length of a subscription's usage window.
pub const SESSION_WINDOW_HOURS: i64 = 5;

/// What the upstream says of the 5-hour window (`anthropic-ratelimit-unified-5h-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStatus {
    Allowed,
    AllowedWarning,
    Rejected,
}

impl WindowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowStatus::Allowed => "allowed",
            WindowStatus::AllowedWarning => "allowed_warning",
            WindowStatus::Rejected => "rejected",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "allowed" => WindowStatus::Allowed,
            "allowed_warning" => WindowStatus::AllowedWarning,
            "rejected" => WindowStatus::Rejected,
            _ => return None,
        })
    }
}

/// The 5-hour usage window of a subscription account: it starts with the first request
/// after the previous one ended, rounded down to the hour (as CRS), and lasts 5 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The upstream's last word on this window; None until it said something.
    pub status: Option<WindowStatus>,
}

impl SessionWindow {
    /// The window a request at `now` opens.
    pub fn starting_at(now: DateTime<Utc>) -> SessionWindow {
        let start = DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(3600), 0)
            .unwrap_or(now);
        SessionWindow {
            start,
            end: start + Duration::hours(SESSION_WINDOW_HOURS),
            status: None,
        }
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.start <= now && now < self.end
    }

    /// The window after a request at `now` whose answer said `status` (None: no header):
    /// None when nothing changes (the current window goes on and the status is the same),
    /// else the window to store (a new one when there was none or it had ended).
    pub fn after_request(
        current: Option<&SessionWindow>,
        now: DateTime<Utc>,
        status: Option<WindowStatus>,
    ) -> Option<SessionWindow> {
        match current {
            Some(w) if now < w.end => match status {
                Some(s) if w.status != Some(s) => Some(SessionWindow {
                    status: Some(s),
                    ..*w
                }),
                _ => None,
            },
            _ => Some(SessionWindow {
                status,
                ..SessionWindow::starting_at(now)
            }),
        }
    }
}

/// The account's profile at the OAuth provider (CRS `subscriptionInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_uuid: Option<String>,
    /// `claude_max` or `claude_pro` (CRS `accountType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_fetched_at: Option<DateTime<Utc>>,
}

impl SubscriptionInfo {
    /// The profile from the provider's answer (`GET /api/oauth/profile`): `account.email`,
    /// `organization.name` / `uuid`, and the subscription type from
    /// `account.has_claude_max` / `has_claude_pro` (an enterprise organization counts as
    /// Max, as CRS does).
    pub fn from_profile(v: &serde_json::Value, now: DateTime<Utc>) -> SubscriptionInfo {
        let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let enterprise = v["organization"]["organization_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("claude_enterprise"));
        let max = v["account"]["has_claude_max"].as_bool() == Some(true) || enterprise;
        let pro = v["account"]["has_claude_pro"].as_bool() == Some(true);
        SubscriptionInfo {
            email: text(&v["account"]["email"]),
            organization_name: text(&v["organization"]["name"]),
            organization_uuid: text(&v["organization"]["uuid"]),
            subscription_type: if max {
                Some("claude_max".into())
            } else if pro {
                Some("claude_pro".into())
            } else {
                None
            },
            profile_fetched_at: Some(now),
        }
    }
}

/// True when `cost_micros` spent today reached a daily quota of `quota` dollars (0: none).
pub fn quota_reached(quota: f64, cost_micros: i64) -> bool {
    quota > 0.0 && cost_micros as f64 >= quota * 1_000_000.0
}

/// The counter set of an account's usage on the local day of `now` (the one the relay adds
/// every counted request to).
pub fn account_day_counter(account_id: &str, now: DateTime<Utc>, offset_hours: i32) -> String {
    format!(
        "usage:account:{account_id}:day:{}",
        super::limits::to_local(now, offset_hours).format("%Y-%m-%d")
    )
}

/// The start of the next local day (UTC offset `offset_hours`, as usage dates are counted).
pub fn next_local_midnight(now: DateTime<Utc>, offset_hours: i32) -> DateTime<Utc> {
    let local = super::limits::to_local(now, offset_hours);
    let next = local.date_naive() + Duration::days(1);
    let midnight = next.and_hms_opt(0, 0, 0).unwrap_or_default();
    DateTime::<Utc>::from_naive_utc_and_offset(midnight, Utc)
        - Duration::hours(i64::from(offset_hours))
}

impl Account {
    /// The status in force at `now` (timed states end by themselves).
    pub fn effective_status(&self, now: DateTime<Utc>) -> AccountStatus {
        match (self.status, self.status_until) {
            (AccountStatus::Active, _) | (AccountStatus::Blocked, _) => self.status,
            (s, Some(until)) if until > now => s,
            (_, Some(_)) => AccountStatus::Active,
            (s, None) => s,
        }
    }

    /// True when the scheduler may pick this account at `now`.
    pub fn is_available(&self, now: DateTime<Utc>) -> bool {
        self.is_active
            && self.effective_status(now) == AccountStatus::Active
            && !self.five_hour_stopped(now)
    }

    /// True while the account sits out the rest of its 5-hour window: it stops before the
    /// limit (`auto_stop_on_warning`) and the upstream said the window is at warning (or
    /// already rejected). The window's end brings it back.
    pub fn five_hour_stopped(&self, now: DateTime<Utc>) -> bool {
        self.auto_stop_on_warning
            && self.session_window.is_some_and(|w| {
                w.is_active(now)
                    && matches!(
                        w.status,
                        Some(WindowStatus::AllowedWarning | WindowStatus::Rejected)
                    )
            })
    }

    /// True when the account may serve `model` at `now`: available, and its model family
    /// not cooling down.
    pub fn serves_model(&self, model: &str, now: DateTime<Utc>) -> bool {
        (self.model_mapping.is_empty() || self.model_mapping.contains_key(model))
            && self
                .model_cooldowns
                .get(ModelFamily::of(model).as_str())
                .is_none_or(|until| *until <= now)
    }

    /// The model name sent upstream for a client's `model`.
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.model_mapping
            .get(model)
            .map(String::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(model)
    }

    /// True when the shared pool may use it (shared scope, schedulable, available):
    /// `dedicated` and `group` accounts serve only the keys bound to them.
    pub fn in_pool(&self, now: DateTime<Utc>) -> bool {
        self.schedulable && self.scope == "shared" && self.is_available(now)
    }

    /// True when a key bound to group `group_id` may use it now.
    pub fn serves_group(&self, group_id: &str, now: DateTime<Utc>) -> bool {
        self.schedulable && self.group_ids.iter().any(|g| g == group_id) && self.is_available(now)
    }
}

/// The model families upstream rate limits are counted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    Opus,
    Sonnet,
    Haiku,
    Other,
}

impl ModelFamily {
    pub fn of(model: &str) -> ModelFamily {
        let m = model.to_ascii_lowercase();
        if m.contains("opus") {
            ModelFamily::Opus
        } else if m.contains("sonnet") {
            ModelFamily::Sonnet
        } else if m.contains("haiku") {
            ModelFamily::Haiku
        } else {
            ModelFamily::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Opus => "opus",
            ModelFamily::Sonnet => "sonnet",
            ModelFamily::Haiku => "haiku",
            ModelFamily::Other => "other",
        }
    }
}

/// How long upstream answers put an account (or one model family) aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownRules {
    /// After a 429 that names no reset time.
    pub rate_limit_default: Duration,
    /// After a 529 (overloaded); None: the account stays in rotation.
    pub overload: Option<Duration>,
}

impl Default for CooldownRules {
    fn default() -> Self {
        CooldownRules {
            rate_limit_default: Duration::seconds(60),
            overload: Some(Duration::minutes(10)),
        }
    }
}

/// What an upstream answer does to the scheduling of an account.
#[derive(Debug, Clone, PartialEq)]
pub enum Cooldown {
    /// The whole account changes state.
    Account(StatusChange),
    /// Only requests for this model family avoid the account until then.
    Family {
        family: ModelFamily,
        until: DateTime<Utc>,
    },
}

/// The cooldown an upstream answer causes: a 429 for a model of a known family cools
/// that family only; every other change applies to the whole account.
pub fn cooldown_after_upstream(
    code: u16,
    reset: Option<DateTime<Utc>>,
    body: &str,
    model: &str,
    rules: &CooldownRules,
    now: DateTime<Utc>,
) -> Option<Cooldown> {
    let change = status_after_upstream(code, reset, body, rules, now)?;
    let family = ModelFamily::of(model);
    match (change.status, change.until) {
        (AccountStatus::RateLimited, Some(until)) if family != ModelFamily::Other => {
            Some(Cooldown::Family { family, until })
        }
        _ => Some(Cooldown::Account(change)),
    }
}

/// When the upstream says its limit resets, from the answer's headers (`header` looks one
/// up): `anthropic-ratelimit-unified-reset` (epoch seconds), `retry-after` (seconds or an
/// HTTP date), else the latest of the `anthropic-ratelimit-*-reset` times (RFC 3339).
pub fn reset_from_headers<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if let Some(epoch) =
        header("anthropic-ratelimit-unified-reset").and_then(|v| v.trim().parse::<i64>().ok())
    {
        return DateTime::from_timestamp(epoch, 0);
    }
    if let Some(v) = header("retry-after").map(str::trim) {
        if let Ok(secs) = v.parse::<i64>() {
            return Some(now + Duration::seconds(secs));
        }
        if let Ok(at) = DateTime::parse_from_rfc2822(v) {
            return Some(at.with_timezone(&Utc));
        }
    }
    [
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-reset",
    ]
    .iter()
    .filter_map(|h| header(h))
    .filter_map(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
    .map(|t| t.with_timezone(&Utc))
    .max()
}

/// A state change caused by an upstream answer (SPEC §6).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub status: AccountStatus,
    pub until: Option<DateTime<Utc>>,
    pub message: String,
}

/// What an upstream status code does to the account; `reset` is the rate-limit reset time
/// from the answer's headers, `body` its text (to recognise "organization disabled").
pub fn status_after_upstream(
    code: u16,
    reset: Option<DateTime<Utc>>,
    body: &str,
    rules: &CooldownRules,
    now: DateTime<Utc>,
) -> Option<StatusChange> {
    let change = |status, until: DateTime<Utc>, message: &str| {
        Some(StatusChange {
            status,
            until: Some(until),
            message: message.to_string(),
        })
    };
    match code {
        429 => change(
            AccountStatus::RateLimited,
            reset
                .filter(|r| *r > now)
                .unwrap_or(now + rules.rate_limit_default),
            "rate limited by upstream",
        ),
        401 => change(
            AccountStatus::Unauthorized,
            now + Duration::minutes(30),
            "upstream rejected the credentials",
        ),
        403 if body.to_ascii_lowercase().contains("organization")
            && body.to_ascii_lowercase().contains("disabled") =>
        {
            Some(StatusChange {
                status: AccountStatus::Blocked,
                until: None,
                message: "organization disabled".into(),
            })
        }
        529 => match rules.overload {
            Some(d) => change(
                AccountStatus::TempUnavailable,
                now + d,
                "upstream overloaded",
            ),
            None => None,
        },
        500..=599 => change(
            AccountStatus::TempUnavailable,
            now + Duration::minutes(2),
            "upstream server error",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_answers_change_state_with_spec_cooldowns() {
        let now = Utc::now();
        let reset = now + Duration::minutes(7);
        let r = CooldownRules::default();
        let c = status_after_upstream(429, Some(reset), "", &r, now).unwrap();
        assert_eq!(
            (c.status, c.until),
            (AccountStatus::RateLimited, Some(reset))
        );
        let c = status_after_upstream(401, None, "", &r, now).unwrap();
        assert_eq!(
            (c.status, c.until),
            (
                AccountStatus::Unauthorized,
                Some(now + Duration::minutes(30))
            )
        );
        let c = status_after_upstream(403, None, "This organization has been disabled.", &r, now)
            .unwrap();
        assert_eq!((c.status, c.until), (AccountStatus::Blocked, None));
        assert_eq!(status_after_upstream(403, None, "forbidden", &r, now), None);
        let c = status_after_upstream(529, None, "", &r, now).unwrap();
        assert_eq!(c.until, Some(now + Duration::minutes(10)));
        let c = status_after_upstream(503, None, "", &r, now).unwrap();
        assert_eq!(c.status, AccountStatus::TempUnavailable);
        assert_eq!(status_after_upstream(400, None, "", &r, now), None);
    }

    #[test]
    fn a_429_cools_only_its_model_family_for_the_reset_or_the_short_default() {
        let now = Utc::now();
        let r = CooldownRules::default();
        assert_eq!(
            cooldown_after_upstream(429, None, "", "claude-opus-4-1-20250805", &r, now),
            Some(Cooldown::Family {
                family: ModelFamily::Opus,
                until: now + Duration::seconds(60)
            })
        );
        let reset = now + Duration::minutes(3);
        assert_eq!(
            cooldown_after_upstream(429, Some(reset), "", "claude-sonnet-4-5", &r, now),
            Some(Cooldown::Family {
                family: ModelFamily::Sonnet,
                until: reset
            })
        );
        // An unknown family: the whole account.
        assert!(matches!(
            cooldown_after_upstream(429, None, "", "some-model", &r, now),
            Some(Cooldown::Account(StatusChange {
                status: AccountStatus::RateLimited,
                ..
            }))
        ));
        // 529 configurable: off keeps the account in rotation.
        let off = CooldownRules {
            overload: None,
            ..r
        };
        assert_eq!(
            cooldown_after_upstream(529, None, "", "claude-opus-4", &off, now),
            None
        );
        let short = CooldownRules {
            overload: Some(Duration::seconds(30)),
            ..r
        };
        assert_eq!(
            status_after_upstream(529, None, "", &short, now).map(|c| c.until),
            Some(Some(now + Duration::seconds(30)))
        );
    }

    #[test]
    fn reset_times_come_from_the_upstream_headers() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let from = |pairs: &'static [(&'static str, &'static str)]| {
            reset_from_headers(
                |n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
                now,
            )
        };
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            from(&[("anthropic-ratelimit-unified-reset", "1764586800")]),
            Some(at("2025-12-01T11:00:00Z"))
        );
        assert_eq!(
            from(&[("retry-after", "30")]),
            Some(at("2026-12-01T10:00:30Z"))
        );
        assert_eq!(
            from(&[("retry-after", "Tue, 01 Dec 2026 10:05:00 GMT")]),
            Some(at("2026-12-01T10:05:00Z"))
        );
        assert_eq!(
            from(&[
                ("anthropic-ratelimit-requests-reset", "2026-12-01T10:01:00Z"),
                ("anthropic-ratelimit-tokens-reset", "2026-12-01T10:02:00Z"),
            ]),
            Some(at("2026-12-01T10:02:00Z"))
        );
        assert_eq!(from(&[]), None);
        assert_eq!(
            ModelFamily::of("claude-3-5-haiku-20241022"),
            ModelFamily::Haiku
        );
    }

    #[test]
    fn timed_states_recover_by_themselves() {
        let now = Utc::now();
        let mut a = Account {
            id: "a".into(),
            name: "a".into(),
            description: String::new(),
            account_type: AccountType::ClaudeConsole,
            base_url: None,
            credentials_encrypted: String::new(),
            proxy_encrypted: None,
            token_expires_at: None,
            scope: "shared".into(),
            priority: 50,
            schedulable: true,
            is_active: true,
            status: AccountStatus::RateLimited,
            status_until: Some(now + Duration::seconds(5)),
            error_message: String::new(),
            max_concurrency: 0,
            created_at: now,
            updated_at: now,
            last_used_at: None,
            last_refresh_at: None,
            group_ids: Vec::new(),
            model_cooldowns: BTreeMap::new(),
            model_mapping: BTreeMap::new(),
            user_agent: None,
            session_window: None,
            auto_stop_on_warning: false,
            daily_quota: 0.0,
            subscription: None,
        };
        assert!(!a.is_available(now));
        assert!(a.is_available(now + Duration::seconds(6)));
        a.status = AccountStatus::Blocked;
        a.status_until = None;
        assert!(!a.is_available(now + Duration::days(1)));
        a.model_cooldowns
            .insert("opus".into(), now + Duration::seconds(30));
        assert!(!a.serves_model("claude-opus-4-1", now));
        assert!(a.serves_model("claude-sonnet-4-5", now));
        assert!(a.serves_model("claude-opus-4-1", now + Duration::seconds(31)));
        a.model_mapping
            .insert("claude-sonnet-4-5".into(), "glm-4.6".into());
        assert!(a.serves_model("claude-sonnet-4-5", now));
        assert!(!a.serves_model("claude-haiku-4-5", now));
        assert_eq!(a.upstream_model("claude-sonnet-4-5"), "glm-4.6");
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_five_hour_window_starts_on_the_hour_and_follows_the_upstream_status() {
        let first = at("2026-12-02T09:47:12Z");
        let w = SessionWindow::after_request(None, first, None).unwrap();
        assert_eq!(
            w,
            SessionWindow {
                start: at("2026-12-02T09:00:00Z"),
                end: at("2026-12-02T14:00:00Z"),
                status: None
            }
        );
        // Within the window: nothing changes without news from the upstream.
        assert_eq!(
            SessionWindow::after_request(Some(&w), at("2026-12-02T13:59:59Z"), None),
            None
        );
        let warned = SessionWindow::after_request(
            Some(&w),
            at("2026-12-02T11:00:00Z"),
            Some(WindowStatus::AllowedWarning),
        )
        .unwrap();
        assert_eq!(
            (warned.start, warned.end, warned.status),
            (w.start, w.end, Some(WindowStatus::AllowedWarning))
        );
        assert_eq!(
            SessionWindow::after_request(
                Some(&warned),
                at("2026-12-02T12:00:00Z"),
                Some(WindowStatus::AllowedWarning)
            ),
            None
        );
        // The first request after the end opens the next window; the old status goes.
        assert_eq!(
            SessionWindow::after_request(Some(&warned), at("2026-12-02T16:20:00Z"), None),
            Some(SessionWindow {
                start: at("2026-12-02T16:00:00Z"),
                end: at("2026-12-02T21:00:00Z"),
                status: None
            })
        );
        assert_eq!(
            WindowStatus::parse("allowed_warning"),
            Some(WindowStatus::AllowedWarning)
        );
        assert_eq!(WindowStatus::parse("nonsense"), None);
    }

    #[test]
    fn an_auto_stopping_account_sits_out_a_warned_window_until_it_ends() {
        let now = at("2026-12-02T10:30:00Z");
        let mut a = Account {
            id: "a".into(),
            name: "a".into(),
            description: String::new(),
            account_type: AccountType::ClaudeOauth,
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
            model_cooldowns: BTreeMap::new(),
            model_mapping: BTreeMap::new(),
            user_agent: None,
            session_window: Some(SessionWindow {
                start: at("2026-12-02T10:00:00Z"),
                end: at("2026-12-02T15:00:00Z"),
                status: Some(WindowStatus::AllowedWarning),
            }),
            auto_stop_on_warning: false,
            daily_quota: 0.0,
            subscription: None,
        };
        assert!(a.is_available(now), "no auto stop: stays in rotation");
        a.auto_stop_on_warning = true;
        assert!(!a.is_available(now));
        assert!(a.five_hour_stopped(at("2026-12-02T14:59:59Z")));
        assert!(
            a.is_available(at("2026-12-02T15:00:00Z")),
            "the window ended"
        );
        a.session_window.as_mut().unwrap().status = Some(WindowStatus::Allowed);
        assert!(a.is_available(now));
    }

    #[test]
    fn daily_quotas_count_in_dollars_until_the_next_local_day() {
        assert!(!quota_reached(0.0, 5_000_000));
        assert!(!quota_reached(5.0, 4_999_999));
        assert!(quota_reached(5.0, 5_000_000));
        assert!(quota_reached(0.5, 600_000));
        // UTC+8: 2026-12-02T17:30Z is 01:30 on the 3rd; the next day starts on the 4th.
        assert_eq!(
            next_local_midnight(at("2026-12-02T17:30:00Z"), 8),
            at("2026-12-03T16:00:00Z")
        );
        assert_eq!(
            next_local_midnight(at("2026-12-02T15:59:59Z"), 8),
            at("2026-12-02T16:00:00Z")
        );
        let names = super::super::limits::period_names(
            "account:a1",
            super::super::limits::to_local(at("2026-12-02T17:30:00Z"), 8),
        );
        assert_eq!(
            account_day_counter("a1", at("2026-12-02T17:30:00Z"), 8),
            names[2].0
        );
        assert_eq!(names[2].0, "usage:account:a1:day:2026-12-03");
        assert_eq!(
            next_local_midnight(at("2026-12-02T23:00:00Z"), -5),
            at("2026-12-03T05:00:00Z")
        );
    }

    #[test]
    fn profiles_give_email_organization_and_subscription_type() {
        let now = at("2026-12-02T10:00:00Z");
        let p = serde_json::json!({
            "account": {"email": "ops@example.com", "has_claude_max": true, "has_claude_pro": false},
            "organization": {"name": "Example Org", "uuid": "org-1", "organization_type": "claude_max"}
        });
        assert_eq!(
            SubscriptionInfo::from_profile(&p, now),
            SubscriptionInfo {
                email: Some("ops@example.com".into()),
                organization_name: Some("Example Org".into()),
                organization_uuid: Some("org-1".into()),
                subscription_type: Some("claude_max".into()),
                profile_fetched_at: Some(now),
            }
        );
        let pro = serde_json::json!({"account": {"has_claude_pro": true}});
        assert_eq!(
            SubscriptionInfo::from_profile(&pro, now)
                .subscription_type
                .as_deref(),
            Some("claude_pro")
        );
        let ent = serde_json::json!({"account": {}, "organization": {"organization_type": "claude_enterprise"}});
        assert_eq!(
            SubscriptionInfo::from_profile(&ent, now)
                .subscription_type
                .as_deref(),
            Some("claude_max")
        );
        assert_eq!(
            SubscriptionInfo::from_profile(&serde_json::json!({}), now).subscription_type,
            None
        );
    }
}
