//! OAuth onboarding at CRS's paths: `generate-auth-url` / `generate-setup-token-url` start a
//! login (PKCE verifier and state kept 10 minutes in the ephemeral store), `exchange-code` /
//! `exchange-setup-token-code` trade the code the operator pastes (or the whole callback
//! URL) for tokens at `CLAUDE_OAUTH_TOKEN_URL` (through the body's `proxy` when it names
//! one) and answer them as CRS does (`{claudeAiOauth:{accessToken,refreshToken,expiresAt,
//! scopes}}`) with the profile read at `CLAUDE_OAUTH_PROFILE_URL` (`subscriptionInfo`),
//! ready for `POST /admin/claude-accounts`, which stores them encrypted.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::fields::Fields;
use super::{AdminContext, AdminError};
use crate::actors::router::EntryKind;
use crate::domain::oauth_flow::{
    CLIENT_ID, FlowKind, PendingLogin, SESSION_MINUTES, SETUP_TOKEN_SECONDS, authorize_url,
    code_from_input,
};
use crate::error::AppError;
use crate::relay::oauth::{PROFILE_SCOPE, fetch_profile};

/// The answer of `generate-auth-url` / `generate-setup-token-url`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginStart {
    pub auth_url: String,
    pub session_id: String,
    pub instructions: Vec<&'static str>,
}

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

/// The answer to a session id that names no pending login (never started, used, expired).
fn unknown() -> AdminError {
    AdminError::field(
        "sessionId",
        "unknown or expired OAuth session: generate a new authorization URL",
    )
}

/// The entry that keeps a console login's account fields beside its pending login.
fn fields_entry(session_id: &str) -> String {
    format!("{session_id}-fields")
}

/// Keeps the account fields an operator gave with a login started from the console, sealed
/// and for as long as the login (a proxy URL may carry a password: it must not travel in
/// the page).
pub async fn keep_fields(
    ctx: &AdminContext,
    session_id: &str,
    fields: &Value,
) -> Result<(), AdminError> {
    let sealed = super::accounts::cipher(ctx)?
        .seal(&fields.to_string())
        .map_err(|e| AppError::Internal(format!("sealing the account fields: {e}")))?;
    let ttl = std::time::Duration::from_secs(u64::try_from(SESSION_MINUTES * 60).unwrap_or(600));
    ctx.router
        .set_entry(
            EntryKind::OauthSession,
            &fields_entry(session_id),
            sealed,
            ttl,
        )
        .await?;
    Ok(())
}

/// The account fields kept with a console login; an unknown or expired session is the
/// same error as the exchange gives.
pub async fn kept_fields(ctx: &AdminContext, session_id: &str) -> Result<Value, AdminError> {
    if crate::domain::api_key::validate_id(session_id).is_err() {
        return Err(unknown());
    }
    let sealed = ctx
        .router
        .get_entry(EntryKind::OauthSession, &fields_entry(session_id))
        .await?
        .ok_or_else(unknown)?;
    let json = super::accounts::cipher(ctx)?
        .open(&sealed)
        .map_err(|_| unknown())?;
    serde_json::from_str(&json).map_err(|_| unknown())
}

/// Forgets a console login's account fields (the account exists now).
pub async fn drop_fields(ctx: &AdminContext, session_id: &str) {
    if let Err(e) = ctx
        .router
        .delete_entry(EntryKind::OauthSession, &fields_entry(session_id))
        .await
    {
        log::debug!("console login fields not deleted (they expire): {e}");
    }
}

/// Starts a login of `kind`.
pub async fn start(ctx: &AdminContext, kind: FlowKind) -> Result<LoginStart, AdminError> {
    let login = PendingLogin::new(kind, Utc::now());
    let session_id = uuid::Uuid::new_v4().to_string();
    let value = serde_json::to_string(&login).map_err(|e| AppError::Internal(e.to_string()))?;
    let ttl = std::time::Duration::from_secs(u64::try_from(SESSION_MINUTES * 60).unwrap_or(600));
    ctx.router
        .set_entry(EntryKind::OauthSession, &session_id, value, ttl)
        .await?;
    Ok(LoginStart {
        auth_url: authorize_url(
            &ctx.config.claude_oauth_authorize_url,
            &ctx.config.claude_oauth_redirect_uri,
            &login,
        ),
        session_id,
        instructions: vec![
            "1. Open the authUrl in a browser and log in to Claude",
            "2. Copy the code shown (or the whole callback URL)",
            "3. POST it with the sessionId within 10 minutes",
        ],
    })
}

/// Trades the code of a started login for tokens.
pub async fn exchange(
    ctx: &AdminContext,
    body: &Value,
    kind: FlowKind,
) -> Result<Value, AdminError> {
    let f = Fields::of(body)?;
    let session_id = f
        .string("sessionId")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AdminError::field("sessionId", "is required"))?;
    let (field, input) = match (f.string("callbackUrl")?, f.string("authorizationCode")?) {
        (Some(url), _) if !url.is_empty() => ("callbackUrl", url),
        (_, Some(code)) if !code.is_empty() => ("authorizationCode", code),
        _ => {
            return Err(AdminError::field(
                "authorizationCode",
                "authorizationCode or callbackUrl is required",
            ));
        }
    };
    let code = code_from_input(&input).map_err(|m| AdminError::field(field, m))?;
    let proxy = super::accounts::proxy_field(&f)?.flatten();
    if crate::domain::api_key::validate_id(&session_id).is_err() {
        return Err(unknown());
    }
    let login: PendingLogin = ctx
        .router
        .get_entry(EntryKind::OauthSession, &session_id)
        .await?
        .and_then(|v| serde_json::from_str(&v).ok())
        .filter(|l: &PendingLogin| l.kind == kind)
        .ok_or_else(unknown)?;
    let mut request = json!({
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "code": code,
        "redirect_uri": ctx.config.claude_oauth_redirect_uri,
        "code_verifier": login.code_verifier,
        "state": login.state,
    });
    if kind == FlowKind::SetupToken {
        request["expires_in"] = json!(SETUP_TOKEN_SECONDS);
    }
    // Through the proxy the account will use, when the body names one (CRS `proxy`).
    let http = super::accounts::oauth_client(proxy.as_deref(), "proxy")?;
    let response = http
        .post(&ctx.config.claude_oauth_token_url)
        .header("user-agent", "claude-cli/1.0.56 (external, cli)")
        .header("accept", "application/json, text/plain, */*")
        .json(&request)
        .send()
        .await
        .map_err(|e| {
            AppError::UpstreamUnreachable(format!(
                "the OAuth server could not be reached: {}",
                e.without_url()
            ))
        })?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(300).collect();
        return Err(AdminError::invalid(format!(
            "the OAuth server refused the code (HTTP {}): {text}",
            status.as_u16()
        )));
    }
    let tokens: TokenAnswer = response.json().await.map_err(|e| {
        AppError::UpstreamUnreachable(format!("the OAuth server's answer is not understood: {e}"))
    })?;
    // The code is used: the session ends.
    if let Err(e) = ctx
        .router
        .delete_entry(EntryKind::OauthSession, &session_id)
        .await
    {
        log::warn!("OAuth session {session_id} not deleted: {e}");
    }
    let expires_at = tokens
        .expires_in
        .map(|s| (Utc::now() + chrono::Duration::seconds(s)).timestamp_millis());
    let scopes: Vec<String> = tokens
        .scope
        .unwrap_or_else(|| kind.scopes().to_string())
        .split_whitespace()
        .map(str::to_string)
        .collect();
    // The profile (email, organization, subscription type) where the token may read it;
    // a failure is logged and the tokens are answered all the same.
    let subscription = if scopes.iter().any(|s| s == PROFILE_SCOPE) {
        match fetch_profile(
            &http,
            &ctx.config.claude_oauth_profile_url,
            &tokens.access_token,
        )
        .await
        {
            Ok(info) => Some(info),
            Err(e) => {
                log::warn!("OAuth session {session_id}: {e}");
                None
            }
        }
    } else {
        None
    };
    ctx.audit(
        "oauth_exchange",
        "account",
        &session_id,
        None,
        Some(json!({"kind": kind, "scopes": scopes})),
    )
    .await;
    Ok(json!({
        "claudeAiOauth": {
            "accessToken": tokens.access_token,
            "refreshToken": tokens.refresh_token,
            "expiresAt": expires_at,
            "scopes": scopes,
            "subscriptionInfo": subscription,
        }
    }))
}
