//! The console's session: the admin API's login token in an HttpOnly, SameSite=Strict cookie,
//! checked like a Bearer token on every page, and the CSRF token derived from it (a hash of
//! the secret session token, so a page of another site can neither read nor compute it).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

use super::{BASE, ConsoleError, redirect};
use crate::domain::keys::constant_time_eq;
use crate::http::AppState;
use crate::http::admin::auth::client_addr;
use crate::service::auth as service;
use crate::service::{AdminContext, AdminError};

/// Cookie holding the login token.
pub const SESSION_COOKIE: &str = "crs_console";
/// Cookie holding the login form's CSRF token (before there is a session).
pub const LOGIN_CSRF_COOKIE: &str = "crs_login_csrf";
/// Name of the CSRF field of every form that changes something.
pub const CSRF_FIELD: &str = "_csrf";

/// A logged-in operator on a console page.
pub struct Session {
    pub ctx: AdminContext,
    /// The login token (cookie value).
    pub token: String,
    /// The CSRF token every state-changing form of this session carries.
    pub csrf: String,
}

/// The CSRF token of a login token.
pub fn csrf_of(token: &str) -> String {
    hex::encode(Sha256::digest(format!("console-csrf:{token}").as_bytes()))
}

/// The value of cookie `name` in the request.
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value scoped to the console; `max_age` 0 deletes it.
pub fn set_cookie(req: &HttpRequest, name: &str, value: &str, max_age: u64) -> String {
    let secure = if req.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

impl Session {
    /// 403 unless the form carries this session's CSRF token.
    pub fn check_csrf(
        &self,
        form: &std::collections::HashMap<String, String>,
    ) -> Result<(), AdminError> {
        match form.get(CSRF_FIELD) {
            Some(t) if constant_time_eq(t, &self.csrf) => Ok(()),
            _ => Err(crate::error::AppError::Permission(
                "the form is missing its CSRF token or it is stale: reload the page and try again"
                    .into(),
            )
            .into()),
        }
    }
}

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, AdminError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| crate::error::AppError::Internal("no app state".into()).into())
}

/// The login page, keeping where the operator wanted to go when it is a console page.
fn to_login(req: &HttpRequest) -> actix_web::Error {
    let mut response: HttpResponse = redirect(&format!("{BASE}/login"));
    if cookie(req, SESSION_COOKIE).is_some() {
        // A stale session cookie: drop it.
        if let Ok(v) = header::HeaderValue::from_str(&set_cookie(req, SESSION_COOKIE, "", 0)) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    actix_web::error::InternalError::from_response("login required", response).into()
}

impl FromRequest for Session {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req).map_err(ConsoleError::from)?;
            let Some(token) = cookie(&req, SESSION_COOKIE) else {
                return Err(to_login(&req));
            };
            let principal = match service::authenticate(&state.router, &state.config, &token).await
            {
                Ok(p) => p,
                Err(e) if matches!(e.error, crate::error::AppError::Authentication(_)) => {
                    return Err(to_login(&req));
                }
                Err(e) => return Err(ConsoleError::from(e).into()),
            };
            Ok(Session {
                ctx: AdminContext {
                    router: state.router.clone(),
                    config: state.config.clone(),
                    actor: principal.username,
                    client_addr: client_addr(&req),
                },
                csrf: csrf_of(&token),
                token,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let req = TestRequest::default()
            .insert_header((header::COOKIE, "a=1; crs_console=tok; crs_console_x=no"))
            .to_http_request();
        assert_eq!(cookie(&req, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&req, "b"), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert_eq!(csrf_of("a").len(), 64);
    }
}
