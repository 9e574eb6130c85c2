//! Admin authentication over HTTP: the `AdminAuth` extractor (Bearer session token or the
//! static `ADMIN_TOKEN`) and `/web/auth/login`, `logout`, `change-password`, `user`.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::ok;
use crate::http::AppState;
use crate::service::auth::{self as service, SESSION_TTL};
use crate::service::fields::Fields;
use crate::service::{AdminContext, AdminError};

/// An authenticated admin request: who (for the audit log) and the session, if any.
pub struct AdminAuth {
    pub ctx: AdminContext,
    /// Session id of a login token; `None` for `ADMIN_TOKEN`.
    pub session: Option<String>,
}

/// The client's address as seen on the socket (not from headers a client can forge).
pub fn client_addr(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, AdminError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| crate::error::AppError::Internal("no app state".into()).into())
}

impl FromRequest for AdminAuth {
    type Error = AdminError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let token = bearer(req);
        let client_addr = client_addr(req);
        Box::pin(async move {
            let state = state?;
            let token = token.ok_or_else(|| {
                AdminError::unauthorized(
                    "admin authentication required: send Authorization: Bearer <token>",
                )
            })?;
            let principal = service::authenticate(&state.router, &state.config, &token).await?;
            Ok(AdminAuth {
                ctx: AdminContext {
                    router: state.router.clone(),
                    config: state.config.clone(),
                    actor: principal.username,
                    client_addr,
                },
                session: principal.session,
            })
        })
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/change-password", web::post().to(change_password))
        .route("/user", web::get().to(user));
}

fn required(f: &Fields<'_>, name: &str) -> Result<String, AdminError> {
    match f.raw(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(AdminError::field(name, "is required")),
    }
}

/// Logs an operator in (limited per client address) and audits it: the admin API's login
/// and the console's.
pub(crate) async fn log_in(
    state: &AppState,
    req: &HttpRequest,
    username: &str,
    password: &str,
) -> Result<service::Login, AdminError> {
    let addr = client_addr(req);
    let login = service::login(
        &state.router,
        &state.login_limiter,
        &addr,
        username,
        password,
    )
    .await?;
    let ctx = AdminContext {
        router: state.router.clone(),
        config: state.config.clone(),
        actor: login.username.clone(),
        client_addr: addr,
    };
    ctx.audit("login", "admin", &login.username, None, None)
        .await;
    Ok(login)
}

/// `POST /web/auth/login` {username, password} → {success, token, expiresIn (ms), username}.
async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, AdminError> {
    let f = Fields::of(&body)?;
    let username = required(&f, "username")?;
    let password = required(&f, "password")?;
    let login = log_in(&state, &req, &username, &password).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "success": true,
        "token": login.token,
        "expiresIn": u64::try_from(SESSION_TTL.as_millis()).unwrap_or(u64::MAX),
        "username": login.username,
    })))
}

/// `POST /web/auth/logout`: ends the session of the token used.
async fn logout(auth: AdminAuth) -> Result<HttpResponse, AdminError> {
    service::logout(&auth.ctx, auth.session.as_deref()).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "success": true, "message": "logged out" })))
}

/// `POST /web/auth/change-password` {currentPassword, newPassword[, username]}: the
/// session's operator, or `username` when authenticated with `ADMIN_TOKEN`.
async fn change_password(
    auth: AdminAuth,
    body: web::Json<Value>,
) -> Result<HttpResponse, AdminError> {
    let f = Fields::of(&body)?;
    let username = match auth.session {
        Some(_) => auth.ctx.actor.clone(),
        None => required(&f, "username")?,
    };
    let current = required(&f, "currentPassword")?;
    let new = required(&f, "newPassword")?;
    service::change_password(&auth.ctx, &username, &current, &new).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "success": true,
        "message": "password changed",
    })))
}

/// `GET /web/auth/user`: who the token belongs to.
async fn user(auth: AdminAuth) -> HttpResponse {
    ok(serde_json::json!({
        "username": auth.ctx.actor,
        "session": auth.session.is_some(),
    }))
}
