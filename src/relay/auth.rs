//! Finding the relay key in a request and checking it (SPEC §5 order up to model checks).

use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use chrono::Utc;

use crate::actors::router::RouterHandle;
use crate::domain::api_key::{ApiKey, ExpirationMode, KeyRefusal};
use crate::domain::client::{self, ClientRequest};
use crate::domain::keys;
use crate::error::AppError;

/// The key as the client sent it: `x-api-key`, `Authorization: Bearer`, `x-goog-api-key`,
/// `api-key`, `?key=`, in that order.
pub fn extract_key(req: &HttpRequest) -> Option<String> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    header("x-api-key")
        .or_else(|| {
            header(AUTHORIZATION.as_str()).and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            })
        })
        .or_else(|| header("x-goog-api-key"))
        .or_else(|| header("api-key"))
        .or_else(|| {
            url::form_urlencoded::parse(req.query_string().as_bytes())
                .find(|(k, _)| k == "key")
                .map(|(_, v)| v.into_owned())
                .filter(|v| !v.is_empty())
        })
}

/// Checks presence, format, the hash lookup, active, activation / expiry, permission and
/// the model restriction; activates an activation-mode key on first use.
pub async fn authenticate(
    router: &RouterHandle,
    presented: Option<String>,
    prefix: &str,
    encryption_key: &str,
    model: Option<&str>,
) -> Result<Arc<ApiKey>, AppError> {
    let Some(plaintext) = presented else {
        return Err(AppError::Authentication("missing API key".into()));
    };
    if !keys::looks_like_key(&plaintext, prefix) {
        return Err(AppError::Authentication("invalid API key format".into()));
    }
    let hash = keys::hash_key(&plaintext, encryption_key);
    let Some(key) = router.find_shared_key_by_hash(&hash).await? else {
        return Err(AppError::Authentication("invalid API key".into()));
    };
    // The lookup is by hash; compare again in constant time so no cache mix-up can pass.
    if !keys::constant_time_eq(&key.key_hash, &hash) {
        return Err(AppError::Authentication("invalid API key".into()));
    }
    let now = Utc::now();
    match key.check_usable(now, model) {
        Ok(()) => {}
        Err(KeyRefusal::Deleted) => return Err(AppError::Authentication("invalid API key".into())),
        Err(KeyRefusal::Disabled) => {
            return Err(AppError::Authentication("API key is disabled".into()));
        }
        Err(KeyRefusal::Expired) => {
            return Err(AppError::Authentication("API key has expired".into()));
        }
        Err(KeyRefusal::PermissionDenied) => {
            return Err(AppError::Permission(
                "this API key may not use the Claude API".into(),
            ));
        }
        Err(KeyRefusal::ModelBlocked(m)) => {
            return Err(AppError::Permission(format!(
                "this API key may not use model {m}"
            )));
        }
    }
    if key.expiration_mode == ExpirationMode::Activation && !key.is_activated {
        let mut activated = ApiKey::clone(&key);
        activated.is_activated = true;
        activated.activated_at = Some(now);
        activated.expires_at = Some(now + activated.activation_period());
        activated.updated_at = now;
        return router.save_key(activated, None).await.map(Arc::new);
    }
    Ok(key)
}

/// 403 `permission_error` when the key is restricted to some clients and this request
/// comes from none of them (checked after the key, before anything is counted).
pub fn check_client(
    key: &ApiKey,
    req: &HttpRequest,
    body: Option<&client::BodyMarks>,
) -> Result<(), AppError> {
    if !key.restricts_clients() {
        return Ok(());
    }
    let request = ClientRequest {
        path: req.path(),
        headers: req.headers(),
        body,
    };
    if client::is_allowed(&key.allowed_clients, &request) {
        return Ok(());
    }
    Err(AppError::Permission(format!(
        "this API key may only be used from these clients: {}",
        key.allowed_clients.join(", ")
    )))
}
