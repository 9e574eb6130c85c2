//! The relay key record and its pure rules (activation, expiry, permissions, models).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Longest id, name or similar identifier accepted from outside.
pub const MAX_ID_LEN: usize = 64;
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_DESCRIPTION_LEN: usize = 2000;

/// Which services a key may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Permissions {
    #[default]
    All,
    Claude,
}

impl Permissions {
    pub fn as_str(self) -> &'static str {
        match self {
            Permissions::All => "all",
            Permissions::Claude => "claude",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(Permissions::All),
            "claude" => Some(Permissions::Claude),
            _ => None,
        }
    }
}

/// `fixed`: expires at `expires_at`; `activation`: the clock starts at first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExpirationMode {
    #[default]
    Fixed,
    Activation,
}

impl ExpirationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpirationMode::Fixed => "fixed",
            ExpirationMode::Activation => "activation",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fixed" => Some(ExpirationMode::Fixed),
            "activation" => Some(ExpirationMode::Activation),
            _ => None,
        }
    }
}

/// One relay key. Money in micro-dollars; 0 / empty means "no limit".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub description: String,
    /// sha256_hex(plaintext + ENCRYPTION_KEY); never leaves the storage layer in answers.
    pub key_hash: String,
    pub tags: Vec<String>,
    pub is_active: bool,
    pub permissions: Permissions,
    pub concurrency_limit: u32,
    pub rate_limit_window_minutes: u32,
    pub rate_limit_requests: u32,
    pub rate_limit_cost_micros: i64,
    pub token_limit: i64,
    pub daily_cost_limit_micros: i64,
    pub total_cost_limit_micros: i64,
    pub weekly_opus_cost_limit_micros: i64,
    pub weekly_reset_day: u8,
    pub weekly_reset_hour: u8,
    pub enable_model_restriction: bool,
    pub restricted_models: Vec<String>,
    /// When on (and `allowed_clients` is not empty) only those clients may use the key.
    #[serde(default)]
    pub enable_client_restriction: bool,
    /// Client ids (`claude_code`, …) and `ua:` user-agent patterns; see `domain::client`.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    pub claude_account_id: Option<String>,
    pub expiration_mode: ExpirationMode,
    pub activation_days: u32,
    pub activation_unit: String,
    pub is_activated: bool,
    pub activated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<String>,
}

/// Why a key may not be used right now (checked in SPEC §5 order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    Disabled,
    Deleted,
    Expired,
    PermissionDenied,
    ModelBlocked(String),
}

impl ApiKey {
    /// A key with every limit off, active, created now.
    pub fn new(id: String, name: String, key_hash: String) -> ApiKey {
        let now = Utc::now();
        ApiKey {
            id,
            name,
            description: String::new(),
            key_hash,
            tags: Vec::new(),
            is_active: true,
            permissions: Permissions::All,
            concurrency_limit: 0,
            rate_limit_window_minutes: 0,
            rate_limit_requests: 0,
            rate_limit_cost_micros: 0,
            token_limit: 0,
            daily_cost_limit_micros: 0,
            total_cost_limit_micros: 0,
            weekly_opus_cost_limit_micros: 0,
            weekly_reset_day: 1,
            weekly_reset_hour: 0,
            enable_model_restriction: false,
            restricted_models: Vec::new(),
            enable_client_restriction: false,
            allowed_clients: Vec::new(),
            claude_account_id: None,
            expiration_mode: ExpirationMode::Fixed,
            activation_days: 0,
            activation_unit: "days".into(),
            is_activated: true,
            activated_at: None,
            expires_at: None,
            created_by: String::new(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
            deleted_at: None,
            deleted_by: None,
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// The expiry that applies at `now`: for activation keys not used yet, none.
    pub fn effective_expiry(&self) -> Option<DateTime<Utc>> {
        match self.expiration_mode {
            ExpirationMode::Fixed => self.expires_at,
            ExpirationMode::Activation if self.is_activated => self
                .expires_at
                .or_else(|| self.activated_at.map(|a| a + self.activation_period())),
            ExpirationMode::Activation => None,
        }
    }

    /// Length of the activation period.
    pub fn activation_period(&self) -> Duration {
        let n = i64::from(self.activation_days);
        match self.activation_unit.as_str() {
            "hours" => Duration::hours(n),
            _ => Duration::days(n),
        }
    }

    /// True when the key is limited to some clients (CRS: the flag on and a non-empty list).
    pub fn restricts_clients(&self) -> bool {
        self.enable_client_restriction && !self.allowed_clients.is_empty()
    }

    /// Checks active → expiry → permission → model restriction (the stored-state part of
    /// the SPEC §5 order; limits are checked by admission).
    pub fn check_usable(&self, now: DateTime<Utc>, model: Option<&str>) -> Result<(), KeyRefusal> {
        if self.is_deleted() {
            return Err(KeyRefusal::Deleted);
        }
        if !self.is_active {
            return Err(KeyRefusal::Disabled);
        }
        if self.effective_expiry().is_some_and(|e| e <= now) {
            return Err(KeyRefusal::Expired);
        }
        if self.permissions != Permissions::All && self.permissions != Permissions::Claude {
            return Err(KeyRefusal::PermissionDenied);
        }
        if let Some(model) = model
            && self.enable_model_restriction
            && self.restricted_models.iter().any(|m| m == model)
        {
            return Err(KeyRefusal::ModelBlocked(model.to_string()));
        }
        Ok(())
    }
}

/// Checks an id from outside: non-empty, at most 64 characters of `[A-Za-z0-9_-]`.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!("id must be 1..={MAX_ID_LEN} characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("id may contain only letters, digits, '-' and '_'".into());
    }
    Ok(())
}

/// Checks a display name: 1..=255 characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("name must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!("name must be at most {MAX_NAME_LEN} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey::new("k1".into(), "n".into(), "h".into())
    }

    #[test]
    fn refusals_follow_the_spec_order() {
        let now = Utc::now();
        let mut k = key();
        assert_eq!(k.check_usable(now, Some("m")), Ok(()));
        k.enable_model_restriction = true;
        k.restricted_models = vec!["m".into()];
        assert_eq!(
            k.check_usable(now, Some("m")),
            Err(KeyRefusal::ModelBlocked("m".into()))
        );
        k.expires_at = Some(now - Duration::seconds(1));
        assert_eq!(k.check_usable(now, Some("m")), Err(KeyRefusal::Expired));
        k.is_active = false;
        assert_eq!(k.check_usable(now, Some("m")), Err(KeyRefusal::Disabled));
        k.deleted_at = Some(now);
        assert_eq!(k.check_usable(now, Some("m")), Err(KeyRefusal::Deleted));
    }

    #[test]
    fn activation_keys_expire_after_their_period_from_first_use() {
        let now = Utc::now();
        let mut k = key();
        k.expiration_mode = ExpirationMode::Activation;
        k.activation_days = 30;
        k.is_activated = false;
        assert_eq!(k.effective_expiry(), None);
        k.is_activated = true;
        k.activated_at = Some(now - Duration::days(31));
        assert_eq!(k.check_usable(now, None), Err(KeyRefusal::Expired));
        k.activated_at = Some(now - Duration::days(29));
        assert_eq!(k.check_usable(now, None), Ok(()));
    }

    #[test]
    fn ids_and_names_are_validated() {
        assert!(validate_id("0f73964f-97b5-40e9-a692-1f3556a2e19a").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id(&"a".repeat(65)).is_err());
        assert!(validate_id("a b").is_err());
        assert!(validate_id("a'; DROP TABLE x").is_err());
        assert!(validate_name("ok name").is_ok());
        assert!(validate_name(" ").is_err());
        assert!(validate_name(&"é".repeat(256)).is_err());
        assert!(validate_name("bad\u{0}name").is_err());
    }
}
