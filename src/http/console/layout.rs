//! The page shell of the console: head (own stylesheet and script only), navigation, the
//! banner while a backend is down, and small shared pieces (CSRF field, money, dates).

use std::time::Duration;

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::BASE;
use super::session::{CSRF_FIELD, Session};
use crate::actors::router::{HealthReport, HealthStatus, RouterHandle};

/// How long a page waits for the router's health (answered from memory).
const HEALTH_WAIT: Duration = Duration::from_millis(800);

/// The health the banner is drawn from; `None` when the router did not answer.
pub async fn health(router: &RouterHandle) -> Option<HealthReport> {
    router.health(HEALTH_WAIT).await
}

/// The banner while a backend the mode uses is down (or the router does not answer).
pub fn banner(health: Option<&HealthReport>) -> Markup {
    let down: Vec<(&str, Option<&str>)> = match health {
        None => vec![("the router", None)],
        Some(h) if h.status == HealthStatus::Healthy => vec![],
        Some(h) => [("Redis", &h.redis), ("MySQL", &h.mysql)]
            .into_iter()
            .filter(|(_, b)| b.used && !b.connected)
            .map(|(n, b)| (n, b.error.as_deref()))
            .collect(),
    };
    if down.is_empty() {
        return html! {};
    }
    html! {
        div.banner role="alert" id="backend-banner" {
            @for (name, error) in &down {
                p {
                    strong { (name) " is down." }
                    " Changes that need it answer 503 (nothing is saved) until it is back."
                    @if let Some(e) = error { " Last error: " code { (e) } }
                }
            }
        }
    }
}

/// A full console page for a logged-in operator.
pub fn page(s: &Session, health: Option<&HealthReport>, title: &str, body: Markup) -> Markup {
    let nav = [
        ("", "Dashboard"),
        ("keys", "API keys"),
        ("accounts", "Accounts"),
        ("usage", "Usage"),
        ("audit", "Audit log"),
        ("password", "Password"),
    ];
    shell(
        title,
        html! {
            header.top {
                a.brand href={(BASE) "/"} { "claude-relay" }
                nav aria-label="Main" {
                    @for (path, label) in nav {
                        a href={(BASE) "/" (path)} { (label) }
                    }
                }
                form.logout method="post" action={(BASE) "/logout"} {
                    (csrf_field(s))
                    span.who { (s.ctx.actor) }
                    button type="submit" id="logout" { "Log out" }
                }
            }
            (banner(health))
            main { h1 { (title) } (body) }
        },
    )
}

/// The document around `content`.
pub fn shell(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · claude-relay" }
                link rel="stylesheet" href={(BASE) "/assets/app.css"};
                script src={(BASE) "/assets/app.js"} defer {}
            }
            body { (content) }
        }
    }
}

/// A page for a public visitor (login, key holder's page).
pub fn public_page(title: &str, health: Option<&HealthReport>, body: Markup) -> Markup {
    shell(
        title,
        html! {
            header.top { span.brand { "claude-relay" } }
            (banner(health))
            main.narrow { h1 { (title) } (body) }
        },
    )
}

/// The error page: status, message, and what to do.
pub fn error_page(status: StatusCode, message: &str, hint: Option<&str>) -> Markup {
    shell(
        "Error",
        html! {
            header.top { a.brand href={(BASE) "/"} { "claude-relay" } }
            main.narrow {
                h1 { "Error " (status.as_u16()) }
                p.error id="error-message" role="alert" { (message) }
                @if let Some(h) = hint { p { (h) } }
                p { a href={(BASE) "/"} { "Back to the console" } }
            }
        },
    )
}

/// The hidden CSRF field of a state-changing form.
pub fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(s.csrf); }
}

/// A small form with one button that posts to `action` (enable, delete, …).
pub fn action_button(s: &Session, action: &str, label: &str, id: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(s))
            button type="submit" id=(id) { (label) }
        }
    }
}

/// USD with cents (or more digits below a cent).
pub fn money(usd: f64) -> String {
    if usd != 0.0 && usd.abs() < 0.01 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

/// A whole number with thousands separators.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A point in time as `YYYY-MM-DD HH:MM` UTC, or a dash.
pub fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "—".to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// A limit: the value, or "none" for 0.
pub fn limit(value: String, is_zero: bool) -> String {
    if is_zero { "none".into() } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_money_read_well() {
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(-1000), "-1,000");
        assert_eq!(count(12), "12");
        assert_eq!(money(1.5), "$1.50");
        assert_eq!(money(0.0012), "$0.0012");
        assert_eq!(money(0.0), "$0.00");
    }
}
