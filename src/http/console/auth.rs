//! Console login (the admin API's login: same limiter, session and audit entry), logout and
//! password change. The login form carries a double-submit CSRF token (cookie + field).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::html;

use super::layout::{self, csrf_field};
use super::session::{CSRF_FIELD, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session, cookie, set_cookie};
use super::{BASE, ConsoleError, Form, Page, html, redirect};
use crate::domain::keys::{constant_time_eq, generate_key};
use crate::error::AppError;
use crate::http::AppState;
use crate::http::admin::auth::log_in;
use crate::service::AdminError;
use crate::service::auth::{self as service, SESSION_TTL};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/password", web::get().to(password_page))
        .route("/password", web::post().to(change_password));
}

/// Lifetime of the login form's CSRF cookie.
const LOGIN_FORM_TTL: u64 = 3600;

async fn login_page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let token = cookie(&req, LOGIN_CSRF_COOKIE).unwrap_or_else(|| generate_key(""));
    let health = layout::health(&state.router).await;
    let body = layout::public_page(
        "Log in",
        health.as_ref(),
        html! {
            form.stack method="post" action={(BASE) "/login"} {
                input type="hidden" name=(CSRF_FIELD) value=(token);
                label { "Username" input type="text" name="username" id="username" autocomplete="username" required; }
                label { "Password" input type="password" name="password" id="password" autocomplete="current-password" required; }
                button type="submit" id="login" { "Log in" }
            }
            p.muted { "Key holders: see your key's usage on " a href={(BASE) "/api-stats"} { "the key page" } "." }
        },
    );
    let mut response = html(body);
    if let Ok(v) =
        header::HeaderValue::from_str(&set_cookie(&req, LOGIN_CSRF_COOKIE, &token, LOGIN_FORM_TTL))
    {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

fn required(form: &Form, name: &str) -> Result<String, AdminError> {
    form.get(name)
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or_else(|| AdminError::field(name, "is required"))
}

async fn login(state: web::Data<AppState>, req: HttpRequest, form: Form) -> Page {
    let expected = cookie(&req, LOGIN_CSRF_COOKIE);
    let sent = form.get(CSRF_FIELD);
    if !matches!((&expected, sent), (Some(e), Some(s)) if constant_time_eq(e, s)) {
        return Err(AppError::Permission(
            "the login form is missing its CSRF token or it is stale: reload the page".into(),
        )
        .into());
    }
    let username = required(&form, "username")?;
    let password = required(&form, "password")?;
    let login = log_in(&state, &req, &username, &password).await?;
    let mut response = redirect(&format!("{BASE}/"));
    for value in [
        set_cookie(&req, SESSION_COOKIE, &login.token, SESSION_TTL.as_secs()),
        set_cookie(&req, LOGIN_CSRF_COOKIE, "", 0),
    ] {
        let v = header::HeaderValue::from_str(&value)
            .map_err(|e| AppError::Internal(format!("cookie: {e}")))?;
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

async fn logout(s: Session, req: HttpRequest, form: Form) -> Page {
    s.check_csrf(&form)?;
    service::logout(&s.ctx, Some(&crate::service::auth::session_id(&s.token))).await?;
    let mut response = redirect(&format!("{BASE}/login"));
    let v = header::HeaderValue::from_str(&set_cookie(&req, SESSION_COOKIE, "", 0))
        .map_err(|e| AppError::Internal(format!("cookie: {e}")))?;
    response.headers_mut().append(header::SET_COOKIE, v);
    Ok(response)
}

async fn password_page(
    s: Session,
    params: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let health = layout::health(&s.ctx.router).await;
    let done = params.get("changed").is_some();
    html(layout::page(
        &s,
        health.as_ref(),
        "Change password",
        html! {
            @if done { p.notice role="status" { "Password changed." } }
            form.stack method="post" action={(BASE) "/password"} {
                (csrf_field(&s))
                label { "Current password" input type="password" name="currentPassword" autocomplete="current-password" required; }
                label { "New password (at least 8 characters)" input type="password" name="newPassword" autocomplete="new-password" minlength="8" required; }
                button type="submit" { "Change password" }
            }
        },
    ))
}

async fn change_password(s: Session, form: Form) -> Page {
    s.check_csrf(&form)?;
    let current = required(&form, "currentPassword")?;
    let new = required(&form, "newPassword")?;
    let username = s.ctx.actor.clone();
    service::change_password(&s.ctx, &username, &current, &new)
        .await
        .map_err(ConsoleError::from)?;
    Ok(redirect(&format!("{BASE}/password?changed=1")))
}
