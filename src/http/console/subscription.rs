//! Connecting a Claude subscription from the console: the accounts page's form starts an
//! OAuth login (full scopes) or a setup-token login (inference only) through
//! `service::onboarding` (PKCE; verifier and state kept 10 minutes), the next page shows the
//! authorization link and takes the code (or the whole callback URL), and its post trades
//! the code through the same service and creates the account through `service::accounts`.
//! The account's name, priority and proxy are checked before the login starts, so a bad
//! field does not waste the one-time code, and wait sealed beside the pending login (not in
//! the page: a proxy URL may carry a password); an unknown or expired session or a refused code
//! is an error page and creates nothing.

use actix_web::web;
use maud::html;
use serde_json::{Value, json};

use super::layout::{self, csrf_field};
use super::{BASE, Form, Page, Session, html, redirect};
use crate::domain::account::AccountType;
use crate::domain::oauth_flow::FlowKind;
use crate::error::AppError;
use crate::service::AdminError;
use crate::service::accounts as accounts_service;
use crate::service::onboarding;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/accounts/subscription", web::post().to(start))
        .route("/accounts/subscription/code", web::post().to(finish));
}

/// The form's `flow` field: `oauth` (default) or `setup-token`.
fn flow(form: &Form) -> Result<FlowKind, AdminError> {
    match form.get("flow").map(|f| f.trim()).unwrap_or("oauth") {
        "oauth" | "" => Ok(FlowKind::Login),
        "setup-token" => Ok(FlowKind::SetupToken),
        _ => Err(AdminError::field("flow", "must be oauth or setup-token")),
    }
}

fn flow_name(kind: FlowKind) -> &'static str {
    match kind {
        FlowKind::Login => "oauth",
        FlowKind::SetupToken => "setup-token",
    }
}

/// The account fields the operator gave (name, priority, proxy), as the service reads them.
fn account_fields(form: &Form) -> Value {
    let mut body = json!({});
    for name in ["name", "priority", "proxy"] {
        if let Some(v) = form.get(name) {
            body[name] = v.trim().into();
        }
    }
    body
}

/// The accounts page's form for it.
pub fn add_form(s: &Session) -> maud::Markup {
    html! {
        section id="add-subscription" {
            h2 { "Add a Claude subscription" }
            p { "Log in with a Claude Pro or Max account: the relay keeps its tokens (encrypted) and refreshes them." }
            form.stack method="post" action={(BASE) "/accounts/subscription"} id="add-subscription-account" {
                (csrf_field(s))
                fieldset {
                    legend { "Access" }
                    label.check { input type="radio" name="flow" value="oauth" id="sub-flow-oauth" checked; "OAuth (full scopes: profile, Claude Code)" }
                    label.check { input type="radio" name="flow" value="setup-token" id="sub-flow-setup"; "Setup token (inference only, long-lived)" }
                }
                label { "Name" input type="text" name="name" id="sub-name" required; }
                label { "Priority (1 = first)" input type="number" min="1" max="100" name="priority" id="sub-priority" value="50"; }
                label { "Proxy URL (optional, used for the login and the account)" input type="text" name="proxy" id="sub-proxy" placeholder="socks5://user:pass@host:1080"; }
                div { button type="submit" id="start-subscription" { "Get the authorization link" } }
            }
        }
    }
}

/// Checks the account fields, starts the login and shows the link and the code field.
async fn start(s: Session, form: Form) -> Page {
    s.check_csrf(&form)?;
    let kind = flow(&form)?;
    let fields = account_fields(&form);
    accounts_service::check_new_fields(&fields, AccountType::ClaudeOauth)?;
    let login = onboarding::start(&s.ctx, kind).await?;
    // The fields wait server-side with the login, not in the page (a proxy has a password).
    onboarding::keep_fields(&s.ctx, &login.session_id, &fields).await?;
    let health = layout::health(&s.ctx.router).await;
    let body = html! {
        ol.steps {
            li {
                "Open this link, log in to Claude and allow access: "
                a id="auth-url" href=(login.auth_url) target="_blank" rel="noopener noreferrer" { "authorize" }
                label { "(or copy it)" input type="text" id="auth-url-text" readonly value=(login.auth_url); }
            }
            li { "Copy the code Claude shows (or the whole address of the page it lands on) and paste it below within 10 minutes." }
        }
        form.stack method="post" action={(BASE) "/accounts/subscription/code"} id="subscription-code" {
            (csrf_field(&s))
            input type="hidden" name="sessionId" value=(login.session_id);
            input type="hidden" name="flow" value=(flow_name(kind));
            label { "Authorization code or callback URL" input type="text" name="code" id="sub-code" autocomplete="off" required; }
            div { button type="submit" id="finish-subscription" { "Add the account" } }
        }
    };
    let title = match kind {
        FlowKind::Login => "Connect a Claude subscription (OAuth)",
        FlowKind::SetupToken => "Connect a Claude subscription (setup token)",
    };
    Ok(html(layout::page(&s, health.as_ref(), title, body)))
}

/// Trades the pasted code and creates the account.
async fn finish(s: Session, form: Form) -> Page {
    s.check_csrf(&form)?;
    let kind = flow(&form)?;
    let session_id = form.get("sessionId").map(|s| s.trim()).unwrap_or("");
    let fields = onboarding::kept_fields(&s.ctx, session_id).await?;
    let input = form.get("code").map(|c| c.trim()).unwrap_or("");
    let mut exchange = json!({
        "sessionId": session_id,
        "proxy": fields["proxy"].clone(),
    });
    let input_field = if input.starts_with("http://") || input.starts_with("https://") {
        "callbackUrl"
    } else {
        "authorizationCode"
    };
    exchange[input_field] = input.into();
    // The form calls the pasted value `code`.
    let tokens = onboarding::exchange(&s.ctx, &exchange, kind)
        .await
        .map_err(|e| match (e.field.as_deref(), &e.error) {
            (Some(f @ ("authorizationCode" | "callbackUrl")), AppError::InvalidRequest(m)) => {
                let message = m.strip_prefix(&format!("{f}: ")).unwrap_or(m);
                AdminError::field("code", message)
            }
            _ => e,
        })?;
    let mut body = fields;
    body["type"] = "claude-oauth".into();
    body["claudeAiOauth"] = tokens["claudeAiOauth"].clone();
    let view = accounts_service::create(&s.ctx, &body, None).await?;
    onboarding::drop_fields(&s.ctx, session_id).await;
    Ok(redirect(&format!("{BASE}/accounts/{}?added=1", view.id)))
}
