//! The console in a real headless Chromium: the whole operator task of issue 14, a key name
//! carrying script shown as text, a form posted without its CSRF token refused, and the key
//! holder's page showing only the pasted key. One browser per test.
//!
//! With `SCREENSHOTS_DIR` set, the operator task saves the dashboard, the keys list and the
//! key holder's page there, and the subscription test the connected account's page (`scripts/screenshots.sh` refreshes docs/screenshots this way).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::{api_key, mock_account, relay_status, start};
use crate::admin::{ADMIN_PASSWORD, ADMIN_USER, Admin};
use crate::support::{Browser, eventually};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
/// The narrowest phone the console must work on.
const PHONE_WIDTH: u32 = 360;

async fn login(b: &Browser, admin: &Admin) {
    b.goto(&admin.app.url("/admin-next/login")).await;
    b.fill("#username", ADMIN_USER).await;
    b.fill("#password", ADMIN_PASSWORD).await;
    b.click_and_wait("#login").await;
    assert_eq!(b.text("main h1").await, "Dashboard");
}

/// Reloads `path` until the element `css` shows `want`.
async fn wait_for_text(b: &Browser, admin: &Admin, path: &str, css: &str, want: &str) {
    eventually(
        Duration::from_secs(15),
        &format!("{css} on {path} shows {want}"),
        || async {
            b.goto(&admin.app.url(path)).await;
            let got = b.text(css).await;
            if got == want { Ok(()) } else { Err(got) }
        },
    )
    .await;
}

async fn screenshot(b: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("SCREENSHOTS_DIR") {
        b.screenshot(&PathBuf::from(dir).join(format!("{name}.png")))
            .await;
    }
}

/// The page is no wider than the window (nothing cut off or scrolled sideways).
async fn fits_the_window(b: &Browser, what: &str) {
    let widths = b
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            json!([]),
        )
        .await;
    let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert_eq!(inner, u64::from(PHONE_WIDTH), "window width");
    assert!(scroll <= inner, "{what} is {scroll} px wide at {inner} px");
}

#[actix_rt::test]
async fn an_operator_runs_the_relay_from_the_console() {
    let admin = start().await;
    let b = Browser::start(WIDTH, HEIGHT).await;

    // `/` leads to the console, which asks for a login first.
    b.goto(&admin.app.url("/")).await;
    assert!(
        b.current_url().await.ends_with("/admin-next/login"),
        "{}",
        b.current_url().await
    );
    login(&b, &admin).await;
    assert_eq!(b.text("#requests-today").await, "0");
    assert_eq!(b.text("[data-backend=Redis] .value").await, "up");
    assert_eq!(b.text("[data-backend=MySQL] .value").await, "up");
    assert!(b.try_find("#backend-banner").await.is_none());

    // An upstream account, on the mock.
    b.goto(&admin.app.url("/admin-next/accounts")).await;
    b.fill("#console-name", "mock upstream").await;
    b.fill("#console-url", &admin.mock.url).await;
    b.fill("#console-key", "sk-console-upstream").await;
    b.click_and_wait("#add-console").await;
    assert_eq!(b.text("#account-status").await, "active");
    let accounts = admin.router().list_accounts().await.unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].name, "mock upstream");

    // A key with a limit and tags; the plaintext is shown once and copied.
    b.goto(&admin.app.url("/admin-next/keys/new")).await;
    b.fill("#key-name", "team-a").await;
    b.fill("#key-tags", "team-a, prod").await;
    b.fill("input[name=dailyCostLimit]", "5").await;
    b.click_and_wait("#create").await;
    assert_eq!(b.text("main h1").await, "Key created");
    let shown = b.value("#plaintext-key").await;
    assert!(shown.starts_with("cr_"), "{shown}");
    b.grant("clipboard-read").await;
    b.grant("clipboard-write").await;
    b.click("#copy-key").await;
    eventually(
        Duration::from_secs(5),
        "the copy button confirms",
        || async {
            match b.text("#copy-key").await {
                t if t == "Copied" => Ok(()),
                t => Err(t),
            }
        },
    )
    .await;
    let copied = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             navigator.clipboard.readText().then(done, e => done('error: ' + e));",
            json!([]),
        )
        .await;
    assert_eq!(
        copied.as_str(),
        Some(shown.as_str()),
        "the clipboard holds the key"
    );
    let keys = admin.router().list_keys(false).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].tags, vec!["team-a", "prod"]);
    assert_eq!(keys[0].daily_cost_limit_micros, 5_000_000);
    let key_id = keys[0].id.clone();

    // The copied key relays a message through the mock upstream.
    assert_eq!(relay_status(&admin, &shown).await, 200);
    assert_eq!(admin.mock.message_count(), 1);

    // The request shows on the dashboard and on the key's page (once archived: the suite
    // drains the usage queue now rather than waiting for the next periodic drain).
    admin
        .router()
        .drain_usage(std::time::Duration::from_secs(30))
        .await;
    eventually(super::ARCHIVE_WAIT, "the request is archived", || async {
        match admin.scalar("SELECT COUNT(*) AS n FROM usage_records") {
            1 => Ok(()),
            n => Err(format!(
                "{n} rows; usage {:?}",
                admin.router().usage_stats().await
            )),
        }
    })
    .await;
    wait_for_text(&b, &admin, "/admin-next/", "#requests-today", "1").await;
    assert_eq!(b.text("#active-keys").await, "1");
    assert_eq!(b.text("#active-accounts").await, "1");
    assert_eq!(b.find_all("figure.chart svg").await.len(), 4);
    b.set_window_size(WIDTH, 1250).await;
    screenshot(&b, "dashboard").await;
    b.set_window_size(WIDTH, HEIGHT).await;

    b.goto(&admin.app.url("/admin-next/keys")).await;
    assert_eq!(b.text("#keys .key-name").await, "team-a");
    screenshot(&b, "keys").await;
    b.click_and_wait("#keys .key-name").await;
    assert_eq!(b.text("#key-title").await, "team-a");
    let key_page = format!("/admin-next/keys/{key_id}");
    wait_for_text(&b, &admin, &key_page, "#key-requests", "1").await;
    let recent = b.text("#recent-requests tbody tr").await;
    assert!(recent.contains("claude-sonnet-4-20250514"), "{recent}");

    // The key holder's page for the same key.
    b.goto(&admin.app.url("/admin-next/api-stats")).await;
    b.fill("#api-key", &shown).await;
    b.click_and_wait("#show-stats").await;
    assert_eq!(b.text("#holder-key-name").await, "team-a");
    screenshot(&b, "key-holder").await;

    // At phone width nothing is cut off.
    b.set_window_size(PHONE_WIDTH, 800).await;
    let inner = b
        .execute("return window.innerWidth;", json!([]))
        .await
        .as_u64()
        .unwrap();
    if inner != u64::from(PHONE_WIDTH) {
        // The window frame takes its share: size the viewport itself to 360 px.
        b.set_window_size(PHONE_WIDTH * 2 - u32::try_from(inner).unwrap(), 800)
            .await;
    }
    for path in ["/admin-next/", "/admin-next/keys", &key_page] {
        b.goto(&admin.app.url(path)).await;
        fits_the_window(&b, path).await;
    }
    b.set_window_size(WIDTH, HEIGHT).await;

    // Disable the key: the relay refuses it.
    b.goto(&admin.app.url(&key_page)).await;
    b.click_and_wait("#disable-key").await;
    assert_eq!(b.text("#key-status").await, "disabled");
    eventually(
        Duration::from_secs(5),
        "the relay refuses the key",
        || async {
            match relay_status(&admin, &shown).await {
                401 => Ok(()),
                s => Err(s.to_string()),
            }
        },
    )
    .await;
    assert_eq!(admin.mock.message_count(), 1);

    // Who did it is in the audit log.
    b.goto(&admin.app.url("/admin-next/audit?targetType=api_key"))
        .await;
    let audit = b.text("#audit tbody").await;
    assert!(
        audit.contains("disable") && audit.contains("create"),
        "{audit}"
    );
    assert!(audit.contains(ADMIN_USER), "{audit}");

    // Log out: the console asks for a login again and the session is gone.
    b.click_and_wait("#logout").await;
    assert!(b.current_url().await.ends_with("/admin-next/login"));
    b.goto(&admin.app.url("/admin-next/keys")).await;
    assert!(b.current_url().await.ends_with("/admin-next/login"));
    b.close().await;
}

#[actix_rt::test]
async fn a_key_name_carrying_script_is_shown_as_text() {
    let admin = start().await;
    let evil = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">";
    let (id, _) = api_key(
        &admin,
        json!({"name": evil, "description": "<b>bold?</b>", "tags": ["<i>t</i>"]}),
    )
    .await;
    let b = Browser::start(WIDTH, HEIGHT).await;
    login(&b, &admin).await;
    for path in [
        "/admin-next/keys".to_string(),
        format!("/admin-next/keys/{id}"),
        "/admin-next/audit".to_string(),
    ] {
        b.goto(&admin.app.url(&path)).await;
        let pwned = b
            .execute(
                "return window.pwned === undefined ? null : window.pwned;",
                json!([]),
            )
            .await;
        assert!(pwned.is_null(), "script ran on {path}: {pwned}");
        assert!(
            b.find_all("main script, main img").await.is_empty(),
            "{path} grew elements from the name"
        );
    }
    b.goto(&admin.app.url("/admin-next/keys")).await;
    assert_eq!(b.text("#keys .key-name").await, evil);
    assert_eq!(b.text("#keys .tag").await, "<i>t</i>");
    b.goto(&admin.app.url(&format!("/admin-next/keys/{id}")))
        .await;
    assert_eq!(b.text("#key-title").await, evil);
    b.close().await;
}

#[actix_rt::test]
async fn a_form_posted_without_its_csrf_token_is_refused() {
    let admin = start().await;
    let (id, _) = api_key(&admin, json!({"name": "victim"})).await;
    let b = Browser::start(WIDTH, HEIGHT).await;
    login(&b, &admin).await;
    b.goto(&admin.app.url(&format!("/admin-next/keys/{id}")))
        .await;
    // Strip the token from the disable form, as a forged form would lack it.
    b.execute(
        "document.querySelectorAll('input[name=_csrf]').forEach(e => e.remove());",
        json!([]),
    )
    .await;
    b.click_and_wait("#disable-key").await;
    assert_eq!(b.text("main h1").await, "Error 403");
    assert!(
        b.text("#error-message").await.contains("CSRF"),
        "{}",
        b.text("#error-message").await
    );
    let key = admin.router().get_key(&id).await.unwrap().unwrap();
    assert!(key.is_active, "the key was not disabled");

    // With a wrong token it is refused too; with the page's own token it works.
    b.goto(&admin.app.url(&format!("/admin-next/keys/{id}")))
        .await;
    b.execute(
        "document.querySelectorAll('input[name=_csrf]').forEach(e => e.value = 'f'.repeat(64));",
        json!([]),
    )
    .await;
    b.click_and_wait("#disable-key").await;
    assert_eq!(b.text("main h1").await, "Error 403");
    assert!(
        admin
            .router()
            .get_key(&id)
            .await
            .unwrap()
            .unwrap()
            .is_active
    );
    b.goto(&admin.app.url(&format!("/admin-next/keys/{id}")))
        .await;
    b.click_and_wait("#disable-key").await;
    assert_eq!(b.text("#key-status").await, "disabled");
    assert!(
        !admin
            .router()
            .get_key(&id)
            .await
            .unwrap()
            .unwrap()
            .is_active
    );
    b.close().await;
}

#[actix_rt::test]
async fn the_key_holder_sees_only_their_own_key() {
    let admin = start().await;
    mock_account(&admin).await;
    let (_, mine) = api_key(&admin, json!({"name": "mine", "dailyCostLimit": 3})).await;
    let (_, theirs) = api_key(&admin, json!({"name": "someone-else"})).await;
    for _ in 0..2 {
        assert_eq!(relay_status(&admin, &theirs).await, 200);
    }
    assert_eq!(relay_status(&admin, &mine).await, 200);
    admin
        .router()
        .drain_usage(std::time::Duration::from_secs(30))
        .await;
    // Up to ARCHIVE_WAIT: see its note.
    eventually(super::ARCHIVE_WAIT, "3 archived requests", || async {
        match admin.scalar("SELECT COUNT(*) AS n FROM usage_records") {
            3 => Ok(()),
            n => Err(n.to_string()),
        }
    })
    .await;

    let b = Browser::start(WIDTH, HEIGHT).await;
    b.goto(&admin.app.url("/admin-next/api-stats")).await;
    b.fill("#api-key", &mine).await;
    b.click_and_wait("#show-stats").await;
    assert_eq!(b.text("#holder-key-name").await, "mine");
    let today = b.text("#holder-today").await;
    assert!(today.contains("1 requests"), "{today}");
    let month = b.text("#holder-month").await;
    assert!(month.contains("1 requests"), "{month}");
    let page = b.source().await;
    assert!(page.contains("$3.00"), "the daily limit is shown");
    assert!(!page.contains("someone-else"), "another key's name leaked");
    assert!(
        !page.contains(&theirs) && !page.contains(&mine),
        "a key leaked"
    );
    assert_eq!(b.find_all("figure.chart svg").await.len(), 1);
    // The key never appears in the address.
    assert!(!b.current_url().await.contains(&mine[3..]));

    // A key that is not one is refused.
    b.fill("#api-key", "cr_not-a-key").await;
    b.click_and_wait("#show-stats").await;
    assert_eq!(b.text("main h1").await, "Error 401");
    b.close().await;
}

/// The query parameters of `url`.
fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Issue 13: a Claude subscription is connected from the accounts page, by OAuth (the
/// whole callback URL pasted; the profile read and shown) and by setup token (the bare
/// code pasted), against the mock OAuth server. The authorize step is not a real page:
/// the test reads the state from the shown link and pastes what Claude would show.
#[actix_rt::test]
async fn a_subscription_is_connected_from_the_accounts_page() {
    use claude_relay::domain::account::AccountType;
    use claude_relay::domain::oauth_flow::code_challenge;

    let admin = start().await;
    let b = Browser::start(WIDTH, HEIGHT).await;
    login(&b, &admin).await;

    b.goto(&admin.app.url("/admin-next/accounts")).await;
    b.click("#sub-flow-oauth").await;
    b.fill("#sub-name", "team max").await;
    b.fill("#sub-priority", "7").await;
    b.click_and_wait("#start-subscription").await;
    assert_eq!(
        b.text("main h1").await,
        "Connect a Claude subscription (OAuth)"
    );
    let link = b
        .execute(
            "return document.querySelector('#auth-url').href;",
            json!([]),
        )
        .await;
    let link = link.as_str().unwrap().to_string();
    assert_eq!(b.value("#auth-url-text").await, link);
    assert!(
        link.starts_with("https://claude.ai/oauth/authorize?"),
        "{link}"
    );
    let q = query(&link);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["scope"].contains("user:profile"), "{}", q["scope"]);
    assert!(admin.router().list_accounts().await.unwrap().is_empty());

    let callback = format!(
        "https://platform.claude.com/oauth/code/callback?code=AUTHCODE123&state={}",
        q["state"]
    );
    b.fill("#sub-code", &callback).await;
    b.click_and_wait("#finish-subscription").await;
    assert_eq!(b.text("#account-added").await, "Subscription connected.");
    assert_eq!(b.text("main h1").await, "Account team max");
    assert_eq!(b.text("#account-status").await, "active");
    assert_eq!(b.text("#profile-email").await, "max-owner@example.com");
    assert_eq!(b.text("#profile-organization").await, "Example Org");
    assert_eq!(b.text("#profile-subscription").await, "claude_max");
    assert_eq!(b.text("#window-start").await, "—");
    assert_eq!(b.text("#window-status").await, "no active window");
    assert_eq!(b.text("#auto-stop").await, "no");
    assert_eq!(b.text("#daily-quota").await, "none");
    assert_eq!(b.text("#daily-usage").await, "$0.00");
    screenshot(&b, "console-subscription").await;

    let sent = admin.mock.token_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["grant_type"], "authorization_code");
    assert_eq!(sent[0]["code"], "AUTHCODE123");
    assert_eq!(sent[0]["state"], q["state"].as_str());
    assert_eq!(
        code_challenge(sent[0]["code_verifier"].as_str().unwrap()),
        q["code_challenge"]
    );
    let accounts = admin.router().list_accounts().await.unwrap();
    assert_eq!(accounts.len(), 1);
    let a = &accounts[0];
    assert_eq!(
        (a.name.as_str(), a.account_type, a.priority),
        ("team max", AccountType::ClaudeOauth, 7)
    );
    assert!(
        b.current_url()
            .await
            .ends_with(&format!("/admin-next/accounts/{}?added=1", a.id))
    );
    let info = a.subscription.clone().unwrap();
    assert_eq!(info.email.as_deref(), Some("max-owner@example.com"));
    assert_eq!(info.subscription_type.as_deref(), Some("claude_max"));
    assert!(!b.source().await.contains("sk-ant-oat01"), "a token leaked");

    // The setup token: inference only, the bare code pasted, no profile to read.
    b.goto(&admin.app.url("/admin-next/accounts")).await;
    b.click("#sub-flow-setup").await;
    b.fill("#sub-name", "inference only").await;
    b.click_and_wait("#start-subscription").await;
    assert_eq!(
        b.text("main h1").await,
        "Connect a Claude subscription (setup token)"
    );
    let q = query(&b.value("#auth-url-text").await);
    assert_eq!(q["scope"], "user:inference");
    b.fill("#sub-code", "SETUPCODE9").await;
    b.click_and_wait("#finish-subscription").await;
    assert_eq!(b.text("main h1").await, "Account inference only");
    assert!(b.try_find("#profile").await.is_none());
    let sent = admin.mock.token_requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1]["code"], "SETUPCODE9");
    assert!(sent[1]["expires_in"].as_i64().unwrap() > 0, "{}", sent[1]);
    assert_eq!(admin.mock.profile_requests().len(), 1);
    let mut names: Vec<(String, AccountType)> = admin
        .router()
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.name, a.account_type))
        .collect();
    names.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        names,
        [
            ("inference only".to_string(), AccountType::ClaudeOauth),
            ("team max".to_string(), AccountType::ClaudeOauth)
        ]
    );
    b.close().await;
}
