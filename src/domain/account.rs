//! Upstream Claude accounts: types, states and the state changes upstream answers cause.

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
        self.is_active && self.effective_status(now) == AccountStatus::Active
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
                .unwrap_or(now + Duration::minutes(60)),
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
        529 => change(
            AccountStatus::TempUnavailable,
            now + Duration::minutes(10),
            "upstream overloaded",
        ),
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
        let c = status_after_upstream(429, Some(reset), "", now).unwrap();
        assert_eq!(
            (c.status, c.until),
            (AccountStatus::RateLimited, Some(reset))
        );
        let c = status_after_upstream(401, None, "", now).unwrap();
        assert_eq!(
            (c.status, c.until),
            (
                AccountStatus::Unauthorized,
                Some(now + Duration::minutes(30))
            )
        );
        let c =
            status_after_upstream(403, None, "This organization has been disabled.", now).unwrap();
        assert_eq!((c.status, c.until), (AccountStatus::Blocked, None));
        assert_eq!(status_after_upstream(403, None, "forbidden", now), None);
        let c = status_after_upstream(529, None, "", now).unwrap();
        assert_eq!(c.until, Some(now + Duration::minutes(10)));
        let c = status_after_upstream(503, None, "", now).unwrap();
        assert_eq!(c.status, AccountStatus::TempUnavailable);
        assert_eq!(status_after_upstream(400, None, "", now), None);
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
        };
        assert!(!a.is_available(now));
        assert!(a.is_available(now + Duration::seconds(6)));
        a.status = AccountStatus::Blocked;
        a.status_until = None;
        assert!(!a.is_available(now + Duration::days(1)));
    }
}
