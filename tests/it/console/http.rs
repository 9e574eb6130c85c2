//! The console over plain HTTP: redirects, security headers, the login form's CSRF check,
//! validation errors that name the field and change nothing, the CSV export, the key
//! holder's rate limit, and the banner (and 503 for writes) while MySQL is down.

use std::time::Duration;

use serde_json::json;

use super::{api_key, mock_account, raw_client, relay_status, session_token, start};
use crate::admin::start_with;
use crate::support::{TcpProxy, eventually};
use claude_relay::service::auth::MAX_FAILURES;

const SWITCH: Duration = Duration::from_secs(20);

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The CSRF token of the console page at `path` (read from its logout form).
async fn csrf(client: &reqwest::Client, url: &str, token: &str) -> String {
    let r = client
        .get(url)
        .header("cookie", format!("crs_console={token}"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let page = r.text().await.unwrap();
    let at = page
        .find("name=\"_csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field on {url}: {status}: {page}"))
        + 20;
    page[at..at + 64].to_string()
}

#[actix_rt::test]
async fn pages_redirect_to_login_and_carry_the_security_headers() {
    let admin = start().await;
    let c = raw_client();
    let r = c.get(admin.app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/admin-next/");
    let r = c.get(admin.app.url("/admin-next/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/admin-next/login");
    let r = c
        .get(admin.app.url("/admin-next/keys"))
        .header("cookie", "crs_console=not-a-session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/admin-next/login");

    let token = session_token(&admin).await;
    for path in [
        "/admin-next/",
        "/admin-next/keys",
        "/admin-next/login",
        "/admin-next/api-stats",
    ] {
        let r = c
            .get(admin.app.url(path))
            .header("cookie", format!("crs_console={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "x-frame-options"), "DENY", "{path}");
        let csp = header(&r, "content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(header(&r, "content-type").starts_with("text/html"));
        let body = r.text().await.unwrap();
        // Every script is a file of our own: none inline.
        assert_eq!(
            body.matches("<script").count(),
            body.matches("<script src=\"/admin-next/assets/app.js\"")
                .count(),
            "{path}"
        );
    }
    let r = c
        .get(admin.app.url("/admin-next/assets/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/css"));
    let r = c
        .get(admin.app.url("/admin-next/no-such-page"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(header(&r, "content-type").starts_with("text/html"));
}

#[actix_rt::test]
async fn the_login_form_needs_its_csrf_cookie_and_sets_a_strict_session_cookie() {
    let admin = start().await;
    let c = raw_client();
    let form = [
        ("username", crate::admin::ADMIN_USER),
        ("password", crate::admin::ADMIN_PASSWORD),
        ("_csrf", "abc"),
    ];
    let r = c
        .post(admin.app.url("/admin-next/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(header(&r, "set-cookie").is_empty());
    let r = c
        .post(admin.app.url("/admin-next/login"))
        .header("cookie", "crs_login_csrf=abc")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/admin-next/");
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("crs_console="))
        .expect("a session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    assert!(session.contains("Path=/admin-next"), "{session}");
    // The cookie's token is an admin API session.
    let token = session["crs_console=".len()..].split(';').next().unwrap();
    let (status, _) = admin
        .call_as(Some(token), reqwest::Method::GET, "/web/auth/user", None)
        .await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn bad_form_input_names_the_field_and_changes_nothing() {
    let admin = start().await;
    let c = raw_client();
    let token = session_token(&admin).await;
    let csrf = csrf(&c, &admin.app.url("/admin-next/keys/new"), &token).await;
    for (field, value) in [
        ("concurrencyLimit", "-1"),
        ("dailyCostLimit", "lots"),
        ("expiresAt", "tomorrow"),
        ("claudeAccountId", "no-such-account"),
    ] {
        let r = c
            .post(admin.app.url("/admin-next/keys"))
            .header("cookie", format!("crs_console={token}"))
            .form(&[("_csrf", csrf.as_str()), ("name", "k"), (field, value)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let body = r.text().await.unwrap();
        assert!(body.contains(&format!("{field}:")), "{field}: {body}");
    }
    let r = c
        .post(admin.app.url("/admin-next/keys"))
        .header("cookie", format!("crs_console={token}"))
        .form(&[("_csrf", csrf.as_str()), ("name", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("name: is required"));
    assert!(admin.router().list_keys(true).await.unwrap().is_empty());
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM api_keys"), 0);
}

#[actix_rt::test]
async fn usage_exports_as_csv() {
    let admin = start().await;
    mock_account(&admin).await;
    let (_, key) = api_key(&admin, json!({"name": "=cmd,\"x\""})).await;
    assert_eq!(relay_status(&admin, &key).await, 200);
    admin
        .router()
        .drain_usage(std::time::Duration::from_secs(30))
        .await;
    // Up to ARCHIVE_WAIT: see its note.
    eventually(super::ARCHIVE_WAIT, "1 archived request", || async {
        match admin.scalar("SELECT COUNT(*) AS n FROM usage_records") {
            1 => Ok(()),
            n => Err(n.to_string()),
        }
    })
    .await;
    let c = raw_client();
    let token = session_token(&admin).await;
    let r = c
        .get(admin.app.url("/admin-next/usage.csv"))
        .header("cookie", format!("crs_console={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/csv"));
    assert!(header(&r, "content-disposition").starts_with("attachment"));
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("group,id,name,requests,"));
    assert!(
        lines[1].starts_with("key,") && lines[1].contains(",\"'=cmd,\"\"x\"\"\",1,"),
        "{csv}"
    );
    assert!(
        lines[2].starts_with("account,") && lines[2].contains(",mock,1,"),
        "{csv}"
    );
    assert!(
        lines[3].starts_with("model,claude-sonnet-4-20250514,,1,25,12,100,200,337,"),
        "{csv}"
    );
    // The dashboard counts it today and in its minute (the per-minute query on MySQL).
    let dashboard = c
        .get(admin.app.url("/admin-next/"))
        .header("cookie", format!("crs_console={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        dashboard.contains("id=\"requests-today\">1<"),
        "{dashboard}"
    );
    assert_eq!(dashboard.matches(": 1</title>").count(), 1, "{dashboard}");
    let r = c
        .get(admin.app.url("/admin-next/usage.csv?from=2026-13-01"))
        .header("cookie", format!("crs_console={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("from: must be a date"));
}

#[actix_rt::test]
async fn the_key_holder_page_is_rate_limited_like_login() {
    let admin = start().await;
    let (_, key) = api_key(&admin, json!({"name": "mine"})).await;
    let c = raw_client();
    let lookup = |k: String| {
        let c = c.clone();
        let url = admin.app.url("/admin-next/api-stats");
        async move { c.post(url).form(&[("apiKey", k)]).send().await.unwrap() }
    };
    let r = lookup(key.clone()).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("mine"));
    for _ in 0..MAX_FAILURES {
        assert_eq!(lookup("cr_wrong".into()).await.status(), 401);
    }
    let r = lookup(key.clone()).await;
    assert_eq!(r.status(), 429);
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() > 0);
    assert!(!r.text().await.unwrap().contains("mine"));
    let r = lookup(String::new()).await;
    assert_eq!(r.status(), 429);
}

#[actix_rt::test]
async fn mysql_down_shows_a_banner_and_writes_answer_503() {
    let proxy = TcpProxy::to_mysql();
    let port = proxy.port();
    let admin = start_with(
        |env| {
            env.set("MYSQL_PORT", port.to_string());
        },
        "healthy",
    )
    .await;
    let c = raw_client();
    let token = session_token(&admin).await;
    let page = |path: &'static str| {
        let c = c.clone();
        let url = admin.app.url(path);
        let token = token.clone();
        async move {
            c.get(url)
                .header("cookie", format!("crs_console={token}"))
                .send()
                .await
                .unwrap()
        }
    };
    let healthy = page("/admin-next/").await.text().await.unwrap();
    assert!(!healthy.contains("backend-banner"));
    let csrf = csrf(&c, &admin.app.url("/admin-next/keys/new"), &token).await;

    proxy.cut();
    admin.app.wait_for_backend("mysql", false, SWITCH).await;
    let r = page("/admin-next/").await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("id=\"backend-banner\""), "{body}");
    assert!(body.contains("MySQL is down."), "{body}");
    let r = c
        .post(admin.app.url("/admin-next/keys"))
        .header("cookie", format!("crs_console={token}"))
        .form(&[("_csrf", csrf.as_str()), ("name", "during")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("Nothing was changed"), "{body}");

    proxy.open();
    admin.app.wait_for_backend("mysql", true, SWITCH).await;
    assert!(admin.router().list_keys(true).await.unwrap().is_empty());
    let body = page("/admin-next/").await.text().await.unwrap();
    assert!(!body.contains("backend-banner"));
}

/// Posts a console form with the session's CSRF token; returns status, Location and body.
async fn post_form(
    admin: &crate::admin::Admin,
    token: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String, String) {
    let c = raw_client();
    let csrf = csrf(&c, &admin.app.url("/admin-next/keys"), token).await;
    let mut form: Vec<(&str, &str)> = vec![("_csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let r = c
        .post(admin.app.url(path))
        .header("cookie", format!("crs_console={token}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = header(&r, "location");
    (status, location, r.text().await.unwrap())
}

#[actix_rt::test]
async fn a_key_is_edited_regenerated_deleted_and_restored_through_the_forms() {
    let admin = start().await;
    mock_account(&admin).await;
    let (id, old) = api_key(&admin, json!({"name": "k", "tags": ["a"]})).await;
    let token = session_token(&admin).await;
    let page = format!("/admin-next/keys/{id}");

    let (status, location, _) = post_form(
        &admin,
        &token,
        &page,
        &[
            ("name", "renamed"),
            ("tags", "x, y"),
            ("concurrencyLimit", "2"),
            ("weeklyOpusCostLimit", "7.5"),
            ("restrictedModels", "claude-opus-4-20250514"),
            ("enableModelRestriction", "true"),
            ("expiresAt", "2031-02-03T04:05"),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, format!("{page}?saved=1").as_str())
    );
    let k = admin.router().get_key(&id).await.unwrap().unwrap();
    assert_eq!(k.name, "renamed");
    assert_eq!(k.tags, vec!["x", "y"]);
    assert_eq!(k.concurrency_limit, 2);
    assert_eq!(k.weekly_opus_cost_limit_micros, 7_500_000);
    assert!(k.enable_model_restriction);
    assert_eq!(k.restricted_models, vec!["claude-opus-4-20250514"]);
    assert_eq!(
        k.expires_at.unwrap().to_rfc3339(),
        "2031-02-03T04:05:00+00:00"
    );

    let (status, _, body) = post_form(&admin, &token, &format!("{page}/regenerate"), &[]).await;
    assert_eq!(status, 200);
    let at = body
        .find("id=\"plaintext-key\" value=\"")
        .expect("the new key")
        + 26;
    let new_key: String = body[at..].chars().take_while(|c| *c != '"').collect();
    assert!(new_key.starts_with("cr_") && new_key != old, "{new_key}");
    // Shown once: the key's page does not show it again.
    let c = raw_client();
    let again = c
        .get(admin.app.url(&page))
        .header("cookie", format!("crs_console={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!again.contains(&new_key));
    eventually(Duration::from_secs(5), "the new key relays", || async {
        match relay_status(&admin, &new_key).await {
            200 => Ok(()),
            s => Err(s.to_string()),
        }
    })
    .await;

    let (status, location, _) = post_form(&admin, &token, &format!("{page}/delete"), &[]).await;
    assert_eq!((status, location.as_str()), (303, page.as_str()));
    assert!(
        admin
            .router()
            .get_key(&id)
            .await
            .unwrap()
            .unwrap()
            .is_deleted()
    );
    // A deleted key cannot be edited: 400 and nothing changes.
    let (status, _, body) = post_form(&admin, &token, &page, &[("name", "zombie")]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        admin.router().get_key(&id).await.unwrap().unwrap().name,
        "renamed"
    );
    let (status, _, _) = post_form(&admin, &token, &format!("{page}/restore"), &[]).await;
    assert_eq!(status, 303);
    assert!(
        !admin
            .router()
            .get_key(&id)
            .await
            .unwrap()
            .unwrap()
            .is_deleted()
    );
    let (status, _, _) = post_form(&admin, &token, &format!("{page}/explode"), &[]).await;
    assert_eq!(status, 404);
}

#[actix_rt::test]
async fn an_oauth_account_is_added_from_its_credentials_json() {
    let admin = start().await;
    let token = session_token(&admin).await;
    let (status, _, body) = post_form(
        &admin,
        &token,
        "/admin-next/accounts/oauth",
        &[("name", "max"), ("credentials", "{not json")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("credentials: is not valid JSON"), "{body}");
    let (status, _, body) = post_form(
        &admin,
        &token,
        "/admin-next/accounts/oauth",
        &[("name", "max"), ("credentials", "{\"claudeAiOauth\": {}}")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("accessToken: is required"), "{body}");
    assert!(admin.router().list_accounts().await.unwrap().is_empty());

    let creds = r#"{"claudeAiOauth": {"accessToken": "sk-ant-oat01-secret",
        "refreshToken": "sk-ant-ort01-secret", "expiresAt": 1893456000000}}"#;
    let (status, location, _) = post_form(
        &admin,
        &token,
        "/admin-next/accounts/oauth",
        &[("name", "max"), ("credentials", creds), ("priority", "10")],
    )
    .await;
    assert_eq!(status, 303);
    let accounts = admin.router().list_accounts().await.unwrap();
    assert_eq!(accounts.len(), 1);
    let a = &accounts[0];
    assert_eq!(location, format!("/admin-next/accounts/{}", a.id));
    assert_eq!((a.name.as_str(), a.priority), ("max", 10));
    assert_eq!(
        a.token_expires_at.unwrap().timestamp_millis(),
        1_893_456_000_000
    );
    let c = raw_client();
    let page = c
        .get(admin.app.url(&location))
        .header("cookie", format!("crs_console={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("claude-oauth"));
    assert!(!page.contains("sk-ant-oat01-secret") && !page.contains("sk-ant-ort01-secret"));
    let (status, _, _) = post_form(
        &admin,
        &token,
        &format!("{location}/toggle-schedulable"),
        &[],
    )
    .await;
    assert_eq!(status, 303);
    assert!(
        !admin
            .router()
            .get_account(&a.id)
            .await
            .unwrap()
            .unwrap()
            .schedulable
    );
}

#[actix_rt::test]
async fn the_dashboard_counts_requests_in_redis_mode_too() {
    let admin = start_with(
        |env| {
            env.set("DATABASE_TYPE", "redis");
        },
        "healthy",
    )
    .await;
    mock_account(&admin).await;
    let (_, key) = api_key(&admin, json!({"name": "r"})).await;
    assert_eq!(relay_status(&admin, &key).await, 200);
    assert_eq!(relay_status(&admin, &key).await, 200);
    let token = session_token(&admin).await;
    let c = raw_client();
    eventually(
        Duration::from_secs(30),
        "2 requests on the dashboard",
        || async {
            let page = c
                .get(admin.app.url("/admin-next/"))
                .header("cookie", format!("crs_console={token}"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            let today = page.contains("id=\"requests-today\">2<");
            // Both requests fall in the last minute or two of the per-minute chart.
            let per_minute: usize = ["1", "2"]
                .iter()
                .map(|n| {
                    page.matches(&format!(": {n}</title>")).count() * n.parse::<usize>().unwrap()
                })
                .sum();
            if today && per_minute == 2 {
                Ok(())
            } else {
                Err(format!("today {today}, per minute {per_minute}"))
            }
        },
    )
    .await;
}

#[actix_rt::test]
async fn the_keys_list_pages_and_filters_and_the_password_changes() {
    let admin = start().await;
    for i in 0..23 {
        let tags = if i % 2 == 0 {
            json!(["even"])
        } else {
            json!(["odd"])
        };
        api_key(&admin, json!({"name": format!("key-{i:02}"), "tags": tags})).await;
    }
    let token = session_token(&admin).await;
    let c = raw_client();
    let get = |path: String| {
        let c = c.clone();
        let url = admin.app.url(&path);
        let token = token.clone();
        async move {
            let r = c
                .get(url)
                .header("cookie", format!("crs_console={token}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let rows = |page: &str| page.matches("class=\"key-name\"").count();
    let (status, first) = get("/admin-next/keys".into()).await;
    assert_eq!(status, 200);
    assert_eq!(rows(&first), 20);
    assert!(first.contains("Page 1 of 2 · 23 keys"), "{first}");
    let (_, second) = get("/admin-next/keys?page=2&status=current".into()).await;
    assert_eq!(rows(&second), 3);
    let (_, odd) = get("/admin-next/keys?tag=odd".into()).await;
    assert_eq!(rows(&odd), 11);
    let (_, found) = get("/admin-next/keys?search=KEY-07".into()).await;
    assert_eq!(rows(&found), 1);
    assert!(found.contains(">key-07<"));
    let (status, body) = get("/admin-next/keys?status=sideways".into()).await;
    assert_eq!(status, 400);
    assert!(body.contains("status: must be one of"));
    let (status, _) = get("/admin-next/keys?page=0".into()).await;
    assert_eq!(status, 400);

    // Password: a wrong current one is refused and changes nothing; then it changes.
    let (status, _, body) = post_form(
        &admin,
        &token,
        "/admin-next/password",
        &[
            ("currentPassword", "wrong-password"),
            ("newPassword", "new-password-1"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("currentPassword: does not match"), "{body}");
    assert_eq!(
        admin
            .login(crate::admin::ADMIN_USER, crate::admin::ADMIN_PASSWORD)
            .await
            .0,
        200
    );
    let (status, location, _) = post_form(
        &admin,
        &token,
        "/admin-next/password",
        &[
            ("currentPassword", crate::admin::ADMIN_PASSWORD),
            ("newPassword", "new-password-1"),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/admin-next/password?changed=1")
    );
    assert_eq!(
        admin
            .login(crate::admin::ADMIN_USER, "new-password-1")
            .await
            .0,
        200
    );
    assert_eq!(
        admin
            .login(crate::admin::ADMIN_USER, crate::admin::ADMIN_PASSWORD)
            .await
            .0,
        401
    );
}

#[actix_rt::test]
async fn an_account_is_edited_and_its_status_reset_through_the_forms() {
    let admin = start().await;
    let id = mock_account(&admin).await;
    let token = session_token(&admin).await;
    let page = format!("/admin-next/accounts/{id}");
    let (status, location, _) = post_form(
        &admin,
        &token,
        &page,
        &[
            ("name", "renamed"),
            ("priority", "7"),
            ("maxConcurrency", "3"),
            ("baseUrl", ""),
            ("apiKey", ""),
            ("schedulable", "true"),
            ("isActive", "true"),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, format!("{page}?saved=1").as_str())
    );
    let a = admin.router().get_account(&id).await.unwrap().unwrap();
    assert_eq!(
        (a.name.as_str(), a.priority, a.max_concurrency),
        ("renamed", 7, 3)
    );
    assert_eq!(
        a.base_url.as_deref(),
        Some(admin.mock.url.as_str()),
        "empty keeps the URL"
    );
    let (status, _, body) = post_form(&admin, &token, &page, &[("priority", "500")]).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("priority: must be between 1 and 100"),
        "{body}"
    );
    assert_eq!(
        admin
            .router()
            .get_account(&id)
            .await
            .unwrap()
            .unwrap()
            .priority,
        7
    );
    let (status, _, _) = post_form(&admin, &token, &format!("{page}/reset-status"), &[]).await;
    assert_eq!(status, 303);
    let (status, _, body) = post_form(
        &admin,
        &token,
        "/admin-next/accounts/console",
        &[("name", "no-url"), ("apiKey", "k")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("baseUrl: is required"), "{body}");
    assert_eq!(admin.router().list_accounts().await.unwrap().len(), 1);
    let (status, location, _) = post_form(&admin, &token, &format!("{page}/delete"), &[]).await;
    assert_eq!((status, location.as_str()), (303, "/admin-next/accounts"));
    assert!(admin.router().list_accounts().await.unwrap().is_empty());
}

/// Issue 13: connecting a subscription with an unknown or used-up session, a session of the
/// other flow, a refused or malformed code, or a bad account field is a clear 400 that
/// creates nothing (and a bad field is refused before any login starts).
#[actix_rt::test]
async fn a_subscription_code_for_an_unknown_session_changes_nothing() {
    let admin = start().await;
    let token = session_token(&admin).await;
    let finish = "/admin-next/accounts/subscription/code";
    let nothing_created = |admin: &crate::admin::Admin| {
        assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM claude_accounts"), 0);
    };

    // Unknown session.
    let (status, _, body) = post_form(
        &admin,
        &token,
        finish,
        &[
            ("sessionId", "0b6f6c1e-4f7e-4a4e-9d1e-000000000000"),
            ("flow", "oauth"),
            ("name", "max"),
            ("priority", "50"),
            ("proxy", ""),
            ("code", "AUTHCODE123"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(
            "sessionId: unknown or expired OAuth session: generate a new authorization URL"
        ),
        "{body}"
    );
    assert!(admin.mock.token_requests().is_empty());
    nothing_created(&admin);

    // A bad account field is refused before a login starts.
    let (status, _, body) = post_form(
        &admin,
        &token,
        "/admin-next/accounts/subscription",
        &[("flow", "oauth"), ("name", ""), ("priority", "50")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("name: is required"), "{body}");
    let (status, _, body) = post_form(
        &admin,
        &token,
        "/admin-next/accounts/subscription",
        &[("flow", "oauth"), ("name", "max"), ("proxy", "ftp://x")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("proxy: must be a http"), "{body}");
    let (status, _, body) = post_form(
        &admin,
        &token,
        "/admin-next/accounts/subscription",
        &[("flow", "magic"), ("name", "max")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("flow: must be oauth or setup-token"),
        "{body}"
    );

    // The account fields wait server-side with the login: a proxy's password is not sent
    // back in the page.
    let (status, _, page) = post_form(
        &admin,
        &token,
        "/admin-next/accounts/subscription",
        &[
            ("flow", "oauth"),
            ("name", "max"),
            ("priority", "50"),
            ("proxy", "http://user:pw-stays-out@127.0.0.1:3128"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(!page.contains("pw-stays-out"), "{page}");
    assert!(!page.contains("name=\"proxy\""), "{page}");

    // A setup-token session is not an OAuth one.
    let (status, _, page) = post_form(
        &admin,
        &token,
        "/admin-next/accounts/subscription",
        &[("flow", "setup-token"), ("name", "max"), ("priority", "50")],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let at = page.find("name=\"sessionId\" value=\"").unwrap() + 24;
    let session = page[at..at + 36].to_string();
    let form = |flow: &'static str, code: &'static str| {
        let session = session.clone();
        move || {
            vec![
                ("sessionId", session.clone()),
                ("flow", flow.to_string()),
                ("name", "max".to_string()),
                ("priority", "50".to_string()),
                ("proxy", String::new()),
                ("code", code.to_string()),
            ]
        }
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let admin = &admin;
        let token = token.clone();
        async move {
            let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(admin, &token, finish, &f).await
        }
    };
    let (status, _, body) = post(form("oauth", "AUTHCODE123")()).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("sessionId: unknown or expired OAuth session"),
        "{body}"
    );
    // A code that is not one.
    let (status, _, body) = post(form("setup-token", "two words")()).await;
    assert_eq!(status, 400);
    assert!(body.contains("code: not an authorization code"), "{body}");
    assert!(admin.mock.token_requests().is_empty());
    // The OAuth server refuses the code.
    admin.mock.set_token_status(400);
    let (status, _, body) = post(form("setup-token", "AUTHCODE123")()).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("the OAuth server refused the code (HTTP 400)"),
        "{body}"
    );
    assert_eq!(admin.mock.token_requests().len(), 1);
    nothing_created(&admin);
    assert!(admin.router().list_accounts().await.unwrap().is_empty());
}

/// Issue 13: the account page shows the 5-hour window (start, end, status), the stop on
/// warning, the daily quota with today's cost, and the profile.
#[actix_rt::test]
async fn the_account_page_shows_the_window_quota_and_profile() {
    use claude_relay::domain::account::{SessionWindow, SubscriptionInfo, WindowStatus};

    let admin = start().await;
    let token = session_token(&admin).await;
    let (status, created) = admin
        .post(
            "/admin/claude-accounts",
            &json!({"name": "max", "type": "claude-oauth", "accessToken": "sk-ant-oat01-max",
                    "expiresAt": 1893456000000i64, "autoStopOnWarning": true,
                    "dailyQuota": 12.5}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["id"].as_str().unwrap().to_string();
    let mut stored = admin.router().get_account(&id).await.unwrap().unwrap();
    let mut window = SessionWindow::starting_at(chrono::Utc::now());
    window.status = Some(WindowStatus::AllowedWarning);
    stored.session_window = Some(window);
    stored.subscription = Some(SubscriptionInfo {
        email: Some("owner@example.com".into()),
        organization_name: Some("Org <b>".into()),
        organization_uuid: Some("org-1".into()),
        subscription_type: Some("claude_pro".into()),
        profile_fetched_at: None,
    });
    admin.router().save_account(stored).await.unwrap();

    let page = raw_client()
        .get(admin.app.url(&format!("/admin-next/accounts/{id}")))
        .header("cookie", format!("crs_console={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    for want in [
        format!("<dd id=\"window-start\">{}</dd>", fmt(window.start)),
        format!("<dd id=\"window-end\">{}</dd>", fmt(window.end)),
        "<dd id=\"window-status\">active (allowed_warning)</dd>".to_string(),
        // A warning with the stop on: out of rotation for the rest of the window.
        "<dd id=\"auto-stop\">yes (stopped for the rest of this window)</dd>".to_string(),
        "<dd id=\"daily-quota\">$12.50</dd>".to_string(),
        "<dd id=\"daily-usage\">$0.00</dd>".to_string(),
        "<dd id=\"profile-email\">owner@example.com</dd>".to_string(),
        "<dd id=\"profile-organization\">Org &lt;b&gt;</dd>".to_string(),
        "<dd id=\"profile-subscription\">claude_pro</dd>".to_string(),
    ] {
        assert!(page.contains(&want), "{want} not in {page}");
    }
}
