//! OAuth access tokens: used from the account's sealed credentials while valid, refreshed
//! ahead of expiry through `CLAUDE_OAUTH_TOKEN_URL` under a lock so only one refresh runs
//! across instances; a failed refresh puts the account in error state.

use foldhash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use http::HeaderValue;
use serde::Deserialize;

use crate::actors::router::{EntryKind, RouterHandle};
use crate::domain::account::{Account, AccountStatus, Credentials, StatusChange, SubscriptionInfo};
use crate::domain::crypto::CredentialCipher;
use crate::error::AppError;

/// Refresh this long before the token expires.
const REFRESH_AHEAD: chrono::Duration = chrono::Duration::seconds(60);
/// Claude Code's public OAuth client id (what CRS sends).
const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
const LOCK_TTL: Duration = Duration::from_secs(30);
const WAIT_FOR_OTHER_REFRESH: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
}

/// The scope that lets a token read the account's profile.
pub const PROFILE_SCOPE: &str = "user:profile";
const PROFILE_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads a subscription account's profile at `url` (`GET`, bearer `token`).
pub async fn fetch_profile(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<SubscriptionInfo, String> {
    let answer = http
        .get(url)
        .bearer_auth(token)
        .header("accept", "application/json")
        .header("user-agent", "claude-cli/1.0.56 (external, cli)")
        .timeout(PROFILE_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("the profile could not be read: {}", e.without_url()))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(format!(
            "the profile endpoint answered HTTP {}",
            status.as_u16()
        ));
    }
    let body: serde_json::Value = answer
        .json()
        .await
        .map_err(|e| format!("the profile is not JSON: {}", e.without_url()))?;
    Ok(SubscriptionInfo::from_profile(&body, Utc::now()))
}

/// Reads the profile of account `id` and stores it on the account; a failure is logged
/// and changes nothing.
pub async fn store_profile(
    router: &RouterHandle,
    http: &reqwest::Client,
    url: &str,
    id: &str,
    token: &str,
) -> Option<SubscriptionInfo> {
    match fetch_profile(http, url, token).await {
        Ok(info) => {
            let stored = info.clone();
            let patch = std::sync::Arc::new(move |a: &mut Account| {
                a.subscription = Some(stored.clone());
                true
            });
            if let Err(e) = router.patch_account(id, patch).await {
                log::warn!("profile of account {id} not stored: {e}");
            }
            Some(info)
        }
        Err(e) => {
            log::warn!("profile of account {id} not read: {e}");
            None
        }
    }
}

/// Opens an account's credentials.
pub fn credentials(cipher: &CredentialCipher, account: &Account) -> Result<Credentials, AppError> {
    let json = cipher.open(&account.credentials_encrypted).map_err(|_| {
        AppError::Internal(format!(
            "credentials of account {} cannot be decrypted",
            account.id
        ))
    })?;
    serde_json::from_str(&json).map_err(|_| {
        AppError::Internal(format!(
            "credentials of account {} are malformed",
            account.id
        ))
    })
}

/// Most accounts whose opened credentials are kept (past it, all are dropped and opened
/// again as used).
const OPENED_CAPACITY: usize = 10_000;

/// Console accounts' upstream keys as last opened, by account id, with the sealed text they
/// were opened from: one decryption, parse and header check per change of credentials, not
/// per request. Kept as the ready `x-api-key` value (cloning it counts a reference).
#[derive(Default)]
pub struct OpenedCredentials {
    by_account: Mutex<HashMap<String, (String, Option<HeaderValue>)>>,
}

impl OpenedCredentials {
    /// The `x-api-key` value of the account's [`credentials`] (None: it has no API key),
    /// opened again only when its sealed text changed.
    pub fn api_key_header(
        &self,
        cipher: &CredentialCipher,
        account: &Account,
    ) -> Result<Option<HeaderValue>, AppError> {
        if let Ok(opened) = self.by_account.lock()
            && let Some((sealed, key)) = opened.get(&account.id)
            && *sealed == account.credentials_encrypted
        {
            return Ok(key.clone());
        }
        let key = match credentials(cipher, account)?.api_key {
            Some(key) => {
                let mut value =
                    HeaderValue::from_maybe_shared(bytes::Bytes::from(key)).map_err(|_| {
                        AppError::Internal(
                            "an upstream credential is not a valid header value".into(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        if let Ok(mut opened) = self.by_account.lock() {
            if opened.len() >= OPENED_CAPACITY {
                opened.clear();
            }
            opened.insert(
                account.id.clone(),
                (account.credentials_encrypted.clone(), key.clone()),
            );
        }
        Ok(key)
    }
}

/// A valid access token for an OAuth account, refreshing it when it is about to expire.
pub async fn access_token(
    router: &RouterHandle,
    cipher: &CredentialCipher,
    http: &reqwest::Client,
    urls: OauthUrls<'_>,
    account: &Account,
) -> Result<String, AppError> {
    let creds = credentials(cipher, account)?;
    let fresh = account
        .token_expires_at
        .is_none_or(|t| t > Utc::now() + REFRESH_AHEAD);
    match creds.access_token {
        Some(token) if fresh => Ok(token),
        _ => refresh(router, cipher, http, urls, account).await,
    }
}

/// Where tokens are refreshed and, after a refresh, the profile is read.
#[derive(Debug, Clone, Copy)]
pub struct OauthUrls<'a> {
    pub token: &'a str,
    pub profile: &'a str,
}

impl<'a> OauthUrls<'a> {
    pub fn of(config: &'a crate::config::Config) -> OauthUrls<'a> {
        OauthUrls {
            token: &config.claude_oauth_token_url,
            profile: &config.claude_oauth_profile_url,
        }
    }
}

/// Refreshes the account's token now (also used by the admin API).
pub async fn refresh(
    router: &RouterHandle,
    cipher: &CredentialCipher,
    http: &reqwest::Client,
    urls: OauthUrls<'_>,
    account: &Account,
) -> Result<String, AppError> {
    let lock = format!("oauth-refresh:{}", account.id);
    let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER_REFRESH;
    loop {
        let token = uuid::Uuid::new_v4().to_string();
        match router.acquire_lock(&lock, &token, LOCK_TTL).await {
            Ok(true) => {
                let result = refresh_locked(router, cipher, http, urls, account).await;
                if let Err(e) = router.release_lock(&lock, &token).await {
                    log::debug!("refresh lock not released (it expires by itself): {e}");
                }
                return result;
            }
            Ok(false) => {}
            // No lock backend: refresh anyway rather than fail the request.
            Err(_) => return refresh_locked(router, cipher, http, urls, account).await,
        }
        // Another request (on this instance or another) refreshes: its token arrives as an
        // entry. Should it give up without one, the lock frees and this request takes it.
        if let Ok(Some(sealed)) = router.get_entry(EntryKind::OauthToken, &account.id).await
            && let Ok(token) = cipher.open(&sealed)
        {
            return Ok(token);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AppError::NoAccountAvailable(
                "the upstream account's token is being refreshed, try again".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn refresh_locked(
    router: &RouterHandle,
    cipher: &CredentialCipher,
    http: &reqwest::Client,
    urls: OauthUrls<'_>,
    account: &Account,
) -> Result<String, AppError> {
    let token_url = urls.token;
    // Another instance may have refreshed while we waited for the lock.
    if let Ok(Some(sealed)) = router.get_entry(EntryKind::OauthToken, &account.id).await
        && let Ok(token) = cipher.open(&sealed)
    {
        return Ok(token);
    }
    let mut creds = credentials(cipher, account)?;
    let Some(refresh_token) = creds.refresh_token.clone() else {
        return fail(router, account, "the account has no refresh token").await;
    };
    let answer = http
        .post(token_url)
        .json(&serde_json::json!({
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT_ID,
        }))
        .send()
        .await;
    let parsed = match answer {
        Ok(r) if r.status().is_success() => r.json::<TokenAnswer>().await.ok(),
        Ok(r) => {
            log::warn!(
                "token refresh of account {} refused: HTTP {}",
                account.id,
                r.status()
            );
            None
        }
        Err(e) => {
            log::warn!(
                "token refresh of account {} failed: {}",
                account.id,
                e.without_url()
            );
            None
        }
    };
    let Some(t) = parsed else {
        return fail(router, account, "token refresh failed").await;
    };
    let lifetime = chrono::Duration::seconds(t.expires_in.unwrap_or(3600).clamp(60, 365 * 86400));
    creds.access_token = Some(t.access_token.clone());
    if let Some(r) = t.refresh_token {
        creds.refresh_token = Some(r);
    }
    let seal = |s: &str| {
        cipher
            .seal(s)
            .map_err(|_| AppError::Internal("cannot encrypt credentials".into()))
    };
    let sealed = seal(&serde_json::to_string(&creds).unwrap_or_default())?;
    let (expires_at, refreshed_at) = (Utc::now() + lifetime, Utc::now());
    // Only the token's fields (and a status the old token caused) change: requests of this
    // account patch its 5-hour window at the same time, and a whole-row write would undo
    // theirs, or theirs this one (the new token lost, the spent refresh token kept).
    let refreshed = Arc::new(move |a: &mut Account| {
        a.credentials_encrypted = sealed.clone();
        a.token_expires_at = Some(expires_at);
        a.last_refresh_at = Some(refreshed_at);
        if matches!(a.status, AccountStatus::Unauthorized | AccountStatus::Error) {
            a.status = AccountStatus::Active;
            a.status_until = None;
            a.error_message.clear();
        }
        true
    });
    // The token goes where waiting requests (of every instance) look for it first; the
    // account row, a MySQL write that may be slow under load, follows.
    let ttl = lifetime.to_std().unwrap_or(Duration::from_secs(3600));
    if let Err(e) = router
        .set_entry(
            EntryKind::OauthToken,
            &account.id,
            seal(&t.access_token)?,
            ttl,
        )
        .await
    {
        log::debug!("refreshed token not cached (refreshed again next time): {e}");
    }
    router.patch_account(&account.id, refreshed).await?;
    log::info!("refreshed the OAuth token of account {}", account.id);
    // The profile is read again (off the request's path) when the token may read it: its
    // scope says so, or, without a scope in the answer, the account has a profile already.
    let profile_scope = match &t.scope {
        Some(scope) => scope.split_whitespace().any(|s| s == PROFILE_SCOPE),
        None => account.subscription.is_some(),
    };
    if profile_scope {
        let (router, http, url, id, token) = (
            router.clone(),
            http.clone(),
            urls.profile.to_string(),
            account.id.clone(),
            t.access_token.clone(),
        );
        actix::spawn(async move {
            store_profile(&router, &http, &url, &id, &token).await;
        });
    }
    Ok(t.access_token)
}

async fn fail(router: &RouterHandle, account: &Account, why: &str) -> Result<String, AppError> {
    let change = StatusChange {
        status: AccountStatus::Error,
        until: None,
        message: why.to_string(),
    };
    if let Err(e) = router.change_account_status(&account.id, change).await {
        log::warn!("account status not saved: {e}");
    }
    Err(AppError::NoAccountAvailable(format!(
        "upstream account unavailable: {why}"
    )))
}
