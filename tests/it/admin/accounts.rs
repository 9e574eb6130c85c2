//! `/admin/claude-accounts` and the console alias: both account types, exact bodies, no
//! secret ever returned or audited, validation, schedulable / status / refresh / delete.

use serde_json::{Value, json};

use super::{assert_field_error, fields, start};

const ACCOUNT_FIELDS: [&str; 31] = [
    "accountTypeScope",
    "autoStopOnWarning",
    "dailyQuota",
    "dailyUsage",
    "fiveHourAutoStopped",
    "sessionWindow",
    "subscriptionInfo",
    "baseUrl",
    "createdAt",
    "description",
    "errorMessage",
    "groupIds",
    "hasRefreshToken",
    "id",
    "isActive",
    "lastRefreshAt",
    "lastUsedAt",
    "maxConcurrency",
    "modelCooldowns",
    "name",
    "priority",
    "proxy",
    "schedulable",
    "status",
    "statusUntil",
    "supportedModels",
    "tokenExpiresAt",
    "type",
    "updatedAt",
    "userAgent",
    "errorMessage",
];

fn account_fields() -> Vec<String> {
    let mut f: Vec<String> = ACCOUNT_FIELDS.iter().map(|s| s.to_string()).collect();
    f.sort();
    f.dedup();
    f
}

#[actix_rt::test]
async fn accounts_of_both_types_without_ever_showing_a_secret() {
    let admin = start().await;
    let console = json!({
        "name": "console-1", "type": "claude-console", "baseUrl": "https://api.example.com/",
        "apiKey": "sk-ant-console-SECRET", "priority": 20, "maxConcurrency": 4,
        "proxy": "socks5://user:PROXYPASS@10.0.0.1:1080"
    });
    let (status, body) = admin.post("/admin/claude-accounts", &console).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fields(&body), ["data", "success"]);
    let c = &body["data"];
    assert_eq!(fields(c), account_fields());
    let console_id = c["id"].as_str().unwrap().to_string();
    assert_eq!(
        c,
        &json!({
            "id": console_id, "name": "console-1", "description": "", "type": "claude-console",
            "accountTypeScope": "shared", "baseUrl": "https://api.example.com", "priority": 20,
            "schedulable": true, "isActive": true, "status": "active", "statusUntil": null,
            "errorMessage": "", "maxConcurrency": 4, "proxy": "socks5://***@10.0.0.1:1080",
            "hasRefreshToken": false, "tokenExpiresAt": null, "createdAt": c["createdAt"],
            "updatedAt": c["updatedAt"], "lastUsedAt": null, "lastRefreshAt": null,
            "groupIds": [], "modelCooldowns": {}, "supportedModels": {}, "userAgent": null,
            "autoStopOnWarning": false, "fiveHourAutoStopped": false, "dailyQuota": 0.0,
            "dailyUsage": 0.0, "subscriptionInfo": null,
            "sessionWindow": {"hasActiveWindow": false, "windowStart": null, "windowEnd": null,
                              "progress": 0, "remainingTime": null, "sessionWindowStatus": null}
        })
    );

    let oauth = json!({
        "name": "oauth-1", "type": "claude-oauth", "accessToken": "sk-ant-oat01-ACCESS",
        "refreshToken": "sk-ant-ort01-REFRESH", "expiresAt": 1893456000000i64
    });
    let (status, body) = admin.post("/admin/claude-accounts", &oauth).await;
    assert_eq!(status, 200, "{body}");
    let oauth_id = body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["data"]["hasRefreshToken"], true);
    assert_eq!(body["data"]["tokenExpiresAt"], "2030-01-01T00:00:00Z");

    // The CRS alias for console accounts.
    let (status, body) = admin
        .post(
            "/admin/claude-console-accounts",
            &json!({"name": "crs-console", "apiUrl": "https://relay.example.com", "apiKey": "sk-ALIAS-SECRET", "priority": 5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["type"], "claude-console");
    assert_eq!(body["data"]["baseUrl"], "https://relay.example.com");
    let alias_id = body["data"]["id"].as_str().unwrap().to_string();

    // List ordered by priority; the alias lists console accounts only.
    let (_, list) = admin.get("/admin/claude-accounts").await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["crs-console", "console-1", "oauth-1"]);
    let (_, consoles) = admin.get("/admin/claude-console-accounts").await;
    assert_eq!(consoles["data"].as_array().unwrap().len(), 2);

    // Update: fields given change; a new secret replaces the old; the type cannot change.
    let (status, body) = admin
        .put(
            &format!("/admin/claude-accounts/{console_id}"),
            &json!({"priority": 1, "apiKey": "sk-ant-console-NEW-SECRET", "proxy": null}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["priority"], 1);
    assert_eq!(body["data"]["proxy"], Value::Null);
    assert_field_error(
        &admin
            .put(
                &format!("/admin/claude-accounts/{console_id}"),
                &json!({"type": "claude-oauth"}),
            )
            .await,
        "type",
    );

    let (status, body) = admin
        .put(
            &format!("/admin/claude-accounts/{console_id}/toggle-schedulable"),
            &json!({}),
        )
        .await;
    assert_eq!((status, &body["data"]["schedulable"]), (200, &json!(false)));

    // Reset status clears an upstream-caused state.
    admin
        .router()
        .change_account_status(
            &oauth_id,
            claude_relay::domain::account::StatusChange {
                status: claude_relay::domain::account::AccountStatus::Blocked,
                until: None,
                message: "organization disabled".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        admin
            .get(&format!("/admin/claude-accounts/{oauth_id}"))
            .await
            .1["data"]["status"],
        "blocked"
    );
    let (status, body) = admin
        .post(
            &format!("/admin/claude-accounts/{oauth_id}/reset-status"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["data"]["status"], &body["data"]["errorMessage"]),
        (&json!("active"), &json!(""))
    );

    // Refresh now: asks the OAuth server (the mock) and stores the new tokens sealed.
    let (status, body) = admin
        .post(
            &format!("/admin/claude-accounts/{oauth_id}/refresh"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(admin.mock.token_refreshes(), 1);
    assert!(body["data"]["lastRefreshAt"].is_string(), "{body}");
    let (status, body) = admin
        .post(
            &format!("/admin/claude-accounts/{console_id}/refresh"),
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_request")),
        "{body}"
    );
    admin.mock.set_token_status(400);
    let (status, body) = admin
        .post(
            &format!("/admin/claude-accounts/{oauth_id}/refresh"),
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (502, &json!("upstream_error")),
        "{body}"
    );

    // Deleting an account bound to a key is refused; unbound, it goes.
    let (_, key) = admin
        .post(
            "/admin/api-keys",
            &json!({"name": "bound", "claudeAccountId": alias_id}),
        )
        .await;
    let (status, body) = admin
        .delete(&format!("/admin/claude-accounts/{alias_id}"))
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_request")),
        "{body}"
    );
    admin
        .put(
            &format!("/admin/api-keys/{}", key["data"]["id"].as_str().unwrap()),
            &json!({"claudeAccountId": ""}),
        )
        .await;
    let (status, body) = admin
        .delete(&format!("/admin/claude-accounts/{alias_id}"))
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"success": true, "data": {"id": alias_id, "deleted": true}})
        )
    );
    assert_eq!(
        admin
            .get(&format!("/admin/claude-accounts/{alias_id}"))
            .await
            .0,
        404
    );
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM claude_accounts"), 2);

    // No secret in any answer, in the stored rows in clear, or in the audit log.
    let secrets = [
        "sk-ant-console-SECRET",
        "sk-ant-console-NEW-SECRET",
        "sk-ant-oat01-ACCESS",
        "sk-ant-ort01-REFRESH",
        "sk-ALIAS-SECRET",
        "PROXYPASS",
        "refreshed-1",
    ];
    admin.assert_never_returned(&secrets, &[]);
    let stored = admin.strings(
        "SELECT CONCAT(credentials_encrypted, COALESCE(proxy_encrypted, '')) AS s FROM claude_accounts",
    );
    let audit = admin.strings(
        "SELECT CONCAT(action, COALESCE(before_json, ''), COALESCE(after_json, '')) AS s FROM audit_log",
    );
    for row in stored.iter().chain(&audit) {
        for s in secrets {
            assert!(!row.contains(s), "{s} in {row}");
        }
    }
    let actions: Vec<String> = audit
        .iter()
        .map(|r| r.split('{').next().unwrap().to_string())
        .collect();
    for want in [
        "create",
        "update",
        "toggle_schedulable",
        "reset_status",
        "refresh_token",
        "delete",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} audited: {actions:?}"
        );
    }
}

#[actix_rt::test]
async fn account_validation_names_the_field_and_writes_nothing() {
    let admin = start().await;
    let base = json!({"name": "c", "type": "claude-console", "baseUrl": "https://x.example", "apiKey": "k"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases = [
        (with("priority", json!(0)), "priority"),
        (with("priority", json!(101)), "priority"),
        (with("type", json!("gemini")), "type"),
        (with("baseUrl", json!("ftp://x")), "baseUrl"),
        (with("proxy", json!("telnet://p:1")), "proxy"),
        (with("maxConcurrency", json!(-1)), "maxConcurrency"),
        (with("name", json!("a".repeat(300))), "name"),
        (without("apiKey"), "apiKey"),
        (without("baseUrl"), "baseUrl"),
        (without("name"), "name"),
        (without("type"), "type"),
        (json!({"name": "o", "type": "claude-oauth"}), "accessToken"),
    ];
    for (body, field) in &cases {
        assert_field_error(&admin.post("/admin/claude-accounts", body).await, field);
    }
    assert_field_error(
        &admin
            .post(
                "/admin/claude-console-accounts",
                &json!({"name": "a", "apiKey": "k"}),
            )
            .await,
        "apiUrl",
    );
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM claude_accounts"), 0);
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM audit_log"), 0);
}

#[actix_rt::test]
async fn console_model_mapping_and_user_agent_are_set_and_validated() {
    let admin = start().await;
    let (status, body) = admin
        .post(
            "/admin/claude-console-accounts",
            &json!({"name": "mapped", "apiUrl": "https://relay.example.com", "apiKey": "sk-x",
                "supportedModels": {"claude-sonnet-4-5": "glm-4.6"}, "userAgent": "my-ua/1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["supportedModels"],
        json!({"claude-sonnet-4-5": "glm-4.6"})
    );
    assert_eq!(body["data"]["userAgent"], "my-ua/1");
    let id = body["data"]["id"].as_str().unwrap();
    // The older list form: those models as they are.
    let (status, body) = admin
        .put(
            &format!("/admin/claude-accounts/{id}"),
            &json!({"supportedModels": ["claude-haiku-4-5"], "userAgent": ""}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["supportedModels"],
        json!({"claude-haiku-4-5": "claude-haiku-4-5"})
    );
    assert_eq!(body["data"]["userAgent"], Value::Null);
    let before = admin.get(&format!("/admin/claude-accounts/{id}")).await.1;
    for bad in [json!({"a b": "c"}), json!(["x", 1]), json!("claude")] {
        assert_field_error(
            &admin
                .put(
                    &format!("/admin/claude-accounts/{id}"),
                    &json!({"supportedModels": bad}),
                )
                .await,
            "supportedModels",
        );
    }
    assert_eq!(
        admin.get(&format!("/admin/claude-accounts/{id}")).await.1,
        before
    );
}
