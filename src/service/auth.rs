//! Operator authentication: login with argon2-verified passwords, login sessions (router
//! entries of kind `AdminSession`, 24 h sliding lifetime, stored under the SHA-256 of the
//! token so a store dump reveals no usable token), the static `ADMIN_TOKEN`, logout, password
//! change, and the per-address limiter of failed logins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::{AdminContext, AdminError};
use crate::actors::router::{EntryKind, RouterHandle};
use crate::config::Config;
use crate::domain::keys::{constant_time_eq, generate_key};
use crate::domain::password;
use crate::error::AppError;

/// Lifetime of a login session, renewed by every use.
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Actor name of requests made with the static `ADMIN_TOKEN`.
pub const STATIC_TOKEN_ACTOR: &str = "admin-token";
/// Failed logins allowed per client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
const MIN_PASSWORD_LEN: usize = 8;
const MAX_PASSWORD_LEN: usize = 1024;

/// Who a valid bearer token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub username: String,
    /// Session id (hash of the token); `None` for the static token.
    pub session: Option<String>,
}

/// The store name of a session token.
pub fn session_id(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks a bearer token: the static `ADMIN_TOKEN` first (needs no backend), then a login
/// session, whose lifetime is renewed.
pub async fn authenticate(
    router: &RouterHandle,
    config: &Config,
    token: &str,
) -> Result<Principal, AdminError> {
    if let Some(static_token) = &config.admin_token
        && !static_token.expose_secret().is_empty()
        && constant_time_eq(token, static_token.expose_secret())
    {
        return Ok(Principal {
            username: STATIC_TOKEN_ACTOR.into(),
            session: None,
        });
    }
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid_token());
    }
    let id = session_id(token);
    let Some(raw) = router.get_entry(EntryKind::AdminSession, &id).await? else {
        return Err(invalid_token());
    };
    let username = serde_json::from_str::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| v["username"].as_str().map(str::to_string))
        .ok_or_else(invalid_token)?;
    if let Err(e) = router
        .touch_entry(EntryKind::AdminSession, &id, SESSION_TTL)
        .await
    {
        log::warn!("admin session lifetime not renewed: {e}");
    }
    Ok(Principal {
        username,
        session: Some(id),
    })
}

fn invalid_token() -> AdminError {
    AdminError::unauthorized("invalid or expired admin token")
}

/// Verifies a password off the async threads (argon2 is deliberately slow).
async fn verify_password(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match stored {
        Some(hash) => password::verify(&password, &hash),
        None => {
            // Same work for unknown users, so timing does not tell which names exist.
            // The same work as a real check, so timing does not tell unknown users apart.
            password::hash(&password).ok();
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// A successful login.
pub struct Login {
    pub token: String,
    pub username: String,
}

/// Checks the credentials and opens a session. Failures count against `client_addr`.
pub async fn login(
    router: &RouterHandle,
    limiter: &LoginLimiter,
    client_addr: &str,
    username: &str,
    password: &str,
) -> Result<Login, AdminError> {
    limiter.check(client_addr)?;
    let stored = router.admin_password_hash(username).await?;
    if !verify_password(password.to_string(), stored).await {
        limiter.failed(client_addr);
        return Err(AdminError::unauthorized("invalid username or password"));
    }
    limiter.succeeded(client_addr);
    let token = generate_key("");
    let value = serde_json::json!({
        "username": username,
        "createdAt": chrono::Utc::now().to_rfc3339(),
        "clientAddr": client_addr,
    })
    .to_string();
    router
        .set_entry(
            EntryKind::AdminSession,
            &session_id(&token),
            value,
            SESSION_TTL,
        )
        .await?;
    if let Err(e) = router.touch_admin_login(username).await {
        log::warn!("last login time of {username} not recorded: {e}");
    }
    Ok(Login {
        token,
        username: username.to_string(),
    })
}

/// Ends a login session (the static token has none to end).
pub async fn logout(ctx: &AdminContext, session: Option<&str>) -> Result<(), AdminError> {
    if let Some(id) = session {
        ctx.router.delete_entry(EntryKind::AdminSession, id).await?;
    }
    Ok(())
}

/// Changes an operator's password after checking the current one.
pub async fn change_password(
    ctx: &AdminContext,
    username: &str,
    current: &str,
    new: &str,
) -> Result<(), AdminError> {
    if new.chars().count() < MIN_PASSWORD_LEN || new.len() > MAX_PASSWORD_LEN {
        return Err(AdminError::field(
            "newPassword",
            format!("must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"),
        ));
    }
    let stored = ctx.router.admin_password_hash(username).await?;
    if stored.is_none() {
        return Err(AdminError::field(
            "username",
            format!("no operator named {username}"),
        ));
    }
    if !verify_password(current.to_string(), stored).await {
        return Err(AdminError::field(
            "currentPassword",
            "does not match the current password",
        ));
    }
    let new = new.to_string();
    let hash = tokio::task::spawn_blocking(move || password::hash(&new))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(format!("password hash: {e}")))?;
    if !ctx.router.set_admin_password(username, hash).await? {
        return Err(AdminError::field(
            "username",
            format!("no operator named {username}"),
        ));
    }
    ctx.audit(
        "change_password",
        "admin",
        username,
        None,
        Some(serde_json::json!({ "username": username, "password": "***" })),
    )
    .await;
    Ok(())
}

/// Failed logins per client address, in process: after [`MAX_FAILURES`] within
/// [`FAILURE_WINDOW`] the address gets 429 until the window ends.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    /// 429 with the seconds to wait when `addr` is locked out.
    pub fn check(&self, addr: &str) -> Result<(), AdminError> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, start)| start.elapsed() < FAILURE_WINDOW);
        match map.get(addr) {
            Some((n, start)) if *n >= MAX_FAILURES => {
                let wait = FAILURE_WINDOW
                    .saturating_sub(start.elapsed())
                    .as_secs()
                    .max(1);
                Err(AppError::RateLimited {
                    message: format!("too many failed logins: try again in {wait} seconds"),
                    retry_after_secs: wait,
                }
                .into())
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, addr: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(addr.to_string()).or_insert((0, Instant::now()));
        entry.0 += 1;
    }

    pub fn succeeded(&self, addr: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_locks_out_after_max_failures_per_address() {
        let l = LoginLimiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(l.check("a").is_ok());
            l.failed("a");
        }
        assert!(l.check("a").is_err());
        assert!(l.check("b").is_ok());
        l.succeeded("a");
        assert!(l.check("a").is_ok());
    }

    #[test]
    fn session_ids_are_sha256_of_the_token() {
        assert_eq!(session_id("x").len(), 64);
        assert_ne!(session_id("x"), session_id("y"));
    }
}
