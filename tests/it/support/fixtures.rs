//! Keys and accounts made through the router (the same operations the admin API uses).

use chrono::Utc;
use claude_relay::actors::router::RouterHandle;
use claude_relay::config::Config;
use claude_relay::domain::account::{Account, AccountStatus, AccountType, Credentials};
use claude_relay::domain::api_key::ApiKey;
use claude_relay::domain::crypto::CredentialCipher;
use claude_relay::domain::keys;
use secrecy::ExposeSecret;

/// Creates a key; `edit` sets limits before it is stored. Returns (record, plaintext).
pub async fn create_key(
    router: &RouterHandle,
    config: &Config,
    edit: impl FnOnce(&mut ApiKey),
) -> (ApiKey, String) {
    let plaintext = keys::generate_key(&config.api_key_prefix);
    let hash = keys::hash_key(&plaintext, config.encryption_key.expose_secret());
    let mut key = ApiKey::new(uuid::Uuid::new_v4().to_string(), "test key".into(), hash);
    edit(&mut key);
    let key = router.create_key(key).await.expect("key stored");
    (key, plaintext)
}

fn sealed(config: &Config, creds: &Credentials) -> String {
    CredentialCipher::new(config.encryption_key.expose_secret())
        .unwrap()
        .seal(&serde_json::to_string(creds).unwrap())
        .unwrap()
}

/// A console account with base URL `base_url` and upstream key `api_key`.
pub fn console_account(
    config: &Config,
    name: &str,
    base_url: &str,
    api_key: &str,
    priority: i32,
) -> Account {
    let now = Utc::now();
    Account {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into(),
        description: String::new(),
        account_type: AccountType::ClaudeConsole,
        base_url: Some(base_url.into()),
        credentials_encrypted: sealed(
            config,
            &Credentials {
                api_key: Some(api_key.into()),
                ..Credentials::default()
            },
        ),
        proxy_encrypted: None,
        token_expires_at: None,
        scope: "shared".into(),
        priority,
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

/// An OAuth account whose access token expires at `expires_at`.
pub fn oauth_account(
    config: &Config,
    name: &str,
    access: &str,
    refresh: &str,
    expires_at: chrono::DateTime<Utc>,
    priority: i32,
) -> Account {
    let mut a = console_account(config, name, "", "", priority);
    a.account_type = AccountType::ClaudeOauth;
    a.base_url = None;
    a.credentials_encrypted = sealed(
        config,
        &Credentials {
            access_token: Some(access.into()),
            refresh_token: Some(refresh.into()),
            ..Credentials::default()
        },
    );
    a.token_expires_at = Some(expires_at);
    a
}

pub async fn store_account(router: &RouterHandle, account: Account) -> Account {
    router
        .create_account(account)
        .await
        .expect("account stored")
}
