//! Admin authentication: every route refuses missing, wrong and expired credentials; login,
//! sessions, logout, password change; failed logins are rate-limited per address.

use std::time::Duration;

use claude_relay::actors::router::EntryKind;
use claude_relay::service::auth::session_id;
use reqwest::Method;
use serde_json::json;

use super::{ADMIN_PASSWORD, ADMIN_USER, assert_field_error, start};
use crate::support::env::random_hex;
use crate::support::eventually;

/// Every admin route (method, path), with ids that exist nowhere.
fn routes() -> Vec<(Method, &'static str)> {
    let id = "00000000-0000-4000-8000-000000000000";
    let paths: Vec<(Method, String)> = vec![
        (Method::GET, "/admin/api-keys".into()),
        (Method::POST, "/admin/api-keys".into()),
        (Method::POST, "/admin/api-keys/batch".into()),
        (Method::GET, "/admin/api-keys/deleted".into()),
        (Method::GET, format!("/admin/api-keys/{id}")),
        (Method::PUT, format!("/admin/api-keys/{id}")),
        (Method::DELETE, format!("/admin/api-keys/{id}")),
        (Method::POST, format!("/admin/api-keys/{id}/enable")),
        (Method::POST, format!("/admin/api-keys/{id}/disable")),
        (Method::POST, format!("/admin/api-keys/{id}/restore")),
        (Method::DELETE, format!("/admin/api-keys/{id}/permanent")),
        (Method::POST, format!("/admin/api-keys/{id}/regenerate")),
        (Method::GET, format!("/admin/api-keys/{id}/usage")),
        (Method::GET, format!("/admin/api-keys/{id}/usage/records")),
        (Method::GET, "/admin/claude-accounts".into()),
        (Method::POST, "/admin/claude-accounts".into()),
        (Method::GET, format!("/admin/claude-accounts/{id}")),
        (Method::PUT, format!("/admin/claude-accounts/{id}")),
        (Method::DELETE, format!("/admin/claude-accounts/{id}")),
        (
            Method::PUT,
            format!("/admin/claude-accounts/{id}/toggle-schedulable"),
        ),
        (
            Method::POST,
            format!("/admin/claude-accounts/{id}/reset-status"),
        ),
        (Method::POST, format!("/admin/claude-accounts/{id}/refresh")),
        (Method::GET, format!("/admin/claude-accounts/{id}/usage")),
        (Method::GET, "/admin/claude-console-accounts".into()),
        (Method::POST, "/admin/claude-console-accounts".into()),
        (Method::GET, "/admin/usage".into()),
        (Method::GET, "/admin/usage/report".into()),
        (Method::GET, "/admin/system".into()),
        (Method::GET, "/admin/audit".into()),
        (Method::GET, "/admin/no-such-route".into()),
        (Method::POST, "/web/auth/logout".into()),
        (Method::POST, "/web/auth/change-password".into()),
        (Method::GET, "/web/auth/user".into()),
    ];
    paths
        .into_iter()
        .map(|(m, p)| (m, &*Box::leak(p.into_boxed_str())))
        .collect()
}

#[actix_rt::test]
async fn every_admin_route_refuses_missing_wrong_and_expired_credentials() {
    let admin = start().await;
    // A session that expires by itself.
    let expired = random_hex(64);
    admin
        .router()
        .set_entry(
            EntryKind::AdminSession,
            &session_id(&expired),
            json!({"username": ADMIN_USER}).to_string(),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    // Polled, not slept: gone once its TTL ran out.
    eventually(Duration::from_secs(10), "the session expired", || async {
        match admin
            .router()
            .get_entry(EntryKind::AdminSession, &session_id(&expired))
            .await
        {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let body = json!({"name": "x", "type": "claude-console", "baseUrl": "http://h", "apiKey": "k"});
    let wrong = random_hex(64);
    let near_miss = format!("{}x", admin.token);
    for (method, path) in routes() {
        for token in [
            None,
            Some(wrong.as_str()),
            Some(expired.as_str()),
            Some("garbage"),
            Some(near_miss.as_str()),
        ] {
            let (status, answer) = admin
                .call_as(token, method.clone(), path, Some(&body))
                .await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {answer}");
            assert_eq!(answer["success"], false, "{answer}");
            assert_eq!(answer["error"], "unauthorized", "{answer}");
            assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    // Nothing was written by any of them.
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM api_keys"), 0);
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM claude_accounts"), 0);
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM audit_log"), 0);
    // The same routes accept the static token (unknown ids are 404, not 401).
    let (status, _) = admin.get("/admin/api-keys").await;
    assert_eq!(status, 200);
    let (status, body) = admin.get("/admin/no-such-route").await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("not_found")),
        "{body}"
    );
}

#[actix_rt::test]
async fn login_session_logout_and_password_change() {
    let admin = start().await;
    let (status, body) = admin.login(ADMIN_USER, "wrong-password").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body,
        json!({"success": false, "error": "unauthorized", "message": "invalid username or password"})
    );
    let (status, body) = admin.login("nobody", ADMIN_PASSWORD).await;
    assert_eq!(
        (status, &body["message"]),
        (401, &json!("invalid username or password"))
    );
    assert_field_error(
        &admin
            .call_as(
                None,
                Method::POST,
                "/web/auth/login",
                Some(&json!({"username": ADMIN_USER})),
            )
            .await,
        "password",
    );

    let (status, body) = admin.login(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        super::fields(&body),
        ["expiresIn", "success", "token", "username"]
    );
    assert_eq!(body["success"], true);
    assert_eq!(body["expiresIn"], 86_400_000);
    assert_eq!(body["username"], ADMIN_USER);
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64);
    // The session lives under the token's hash, never the token itself, with a 24 h TTL.
    let stored = admin
        .router()
        .get_entry(EntryKind::AdminSession, &session_id(&token))
        .await
        .unwrap()
        .expect("session stored");
    assert!(!stored.contains(&token));
    assert_eq!(
        admin
            .router()
            .get_entry(EntryKind::AdminSession, &token)
            .await
            .unwrap(),
        None
    );

    let (status, body) = admin
        .call_as(Some(&token), Method::GET, "/web/auth/user", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"success": true, "data": {"username": ADMIN_USER, "session": true}})
    );
    let (status, body) = admin
        .call_as(Some(&token), Method::GET, "/admin/api-keys", None)
        .await;
    assert_eq!((status, &body["data"]), (200, &json!([])), "{body}");

    // Password change: the current password is checked, the new one must be long enough.
    let change = |current: &str, new: &str| json!({"currentPassword": current, "newPassword": new});
    let path = "/web/auth/change-password";
    assert_field_error(
        &admin
            .call_as(
                Some(&token),
                Method::POST,
                path,
                Some(&change("nope-nope", "new-password-1")),
            )
            .await,
        "currentPassword",
    );
    assert_field_error(
        &admin
            .call_as(
                Some(&token),
                Method::POST,
                path,
                Some(&change(ADMIN_PASSWORD, "short")),
            )
            .await,
        "newPassword",
    );
    let (status, body) = admin
        .call_as(
            Some(&token),
            Method::POST,
            path,
            Some(&change(ADMIN_PASSWORD, "new-password-1")),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"success": true, "message": "password changed"}))
    );
    assert_eq!(admin.login(ADMIN_USER, ADMIN_PASSWORD).await.0, 401);
    let (status, body) = admin.login(ADMIN_USER, "new-password-1").await;
    assert_eq!(status, 200, "{body}");

    // Logout ends the session.
    let (status, body) = admin
        .call_as(Some(&token), Method::POST, "/web/auth/logout", None)
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"success": true, "message": "logged out"}))
    );
    let (status, _) = admin
        .call_as(Some(&token), Method::GET, "/admin/api-keys", None)
        .await;
    assert_eq!(status, 401);

    // Audit: logins and the password change, never a password.
    let actions = admin.strings("SELECT action AS s FROM audit_log ORDER BY id");
    assert_eq!(actions, ["login", "change_password", "login"]);
    for row in admin.strings(
        "SELECT CONCAT(actor, ' ', COALESCE(before_json, ''), ' ', COALESCE(after_json, '')) AS s FROM audit_log",
    ) {
        assert!(!row.contains("new-password-1") && !row.contains(ADMIN_PASSWORD), "{row}");
    }
    admin.assert_never_returned(&["new-password-1", ADMIN_PASSWORD], &[]);
}

#[actix_rt::test]
async fn failed_logins_are_rate_limited_per_address() {
    let admin = start().await;
    for _ in 0..5 {
        assert_eq!(admin.login(ADMIN_USER, "wrong-password").await.0, 401);
    }
    let resp = admin
        .app
        .client
        .post(admin.app.url("/web/auth/login"))
        .json(&json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"], "rate_limited");
    // The static token is not affected.
    assert_eq!(admin.get("/admin/api-keys").await.0, 200);
}
