//! `/admin/api-keys`: the minimal contract of SPEC §8 with exact bodies, validation naming
//! the field and writing nothing, list filters and pages, batch create, the key life cycle,
//! and keys created here used on `/api/v1/messages`.

use std::time::{Duration, Instant};

use claude_relay::domain::keys::hash_key;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{Admin, assert_field_error, fields, start, start_with};
use crate::support::eventually;

/// The fields of a key in every answer (plus `apiKey` at creation / regeneration).
const KEY_FIELDS: [&str; 34] = [
    "activatedAt",
    "activationDays",
    "activationUnit",
    "allowedClients",
    "claudeAccountId",
    "concurrencyLimit",
    "createdAt",
    "createdBy",
    "dailyCostLimit",
    "deletedAt",
    "deletedBy",
    "description",
    "enableClientRestriction",
    "enableModelRestriction",
    "expirationMode",
    "expiresAt",
    "id",
    "isActivated",
    "isActive",
    "isDeleted",
    "lastUsedAt",
    "name",
    "permissions",
    "rateLimitCost",
    "rateLimitRequests",
    "rateLimitWindow",
    "restrictedModels",
    "tags",
    "tokenLimit",
    "totalCostLimit",
    "updatedAt",
    "weeklyOpusCostLimit",
    "weeklyResetDay",
    "weeklyResetHour",
];

fn key_fields(with_plaintext: bool) -> Vec<String> {
    let mut f: Vec<String> = KEY_FIELDS.iter().map(|s| s.to_string()).collect();
    if with_plaintext {
        f.push("apiKey".into());
        f.sort();
    }
    f
}

fn full_body() -> Value {
    json!({
        "name": "team-a",
        "description": "for team A",
        "tags": ["team-a", "prod"],
        "permissions": "claude",
        "concurrencyLimit": 3,
        "rateLimitWindow": 60,
        "rateLimitRequests": 100,
        "rateLimitCost": 2.5,
        "tokenLimit": 100000,
        "dailyCostLimit": 10.25,
        "totalCostLimit": 100,
        "weeklyOpusCostLimit": 20,
        "enableModelRestriction": true,
        "restrictedModels": ["claude-opus-4-20250514"],
        "expiresAt": "2030-01-01T00:00:00Z",
        "expirationMode": "fixed",
        "isActive": true
    })
}

fn count(admin: &Admin, table: &str) -> i64 {
    admin.scalar(&format!("SELECT COUNT(*) AS n FROM {table}"))
}

#[actix_rt::test]
async fn create_update_list_delete_follow_the_minimal_contract() {
    let admin = start().await;
    let (status, body) = admin.post("/admin/api-keys", &full_body()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fields(&body), ["data", "success"]);
    assert_eq!(body["success"], true);
    let data = &body["data"];
    assert_eq!(fields(data), key_fields(true));
    let plaintext = data["apiKey"].as_str().unwrap().to_string();
    assert!(
        plaintext.starts_with("cr_") && plaintext.len() == 67,
        "{plaintext}"
    );
    let id = data["id"].as_str().unwrap().to_string();
    let expected = json!({
        "id": id, "apiKey": plaintext, "name": "team-a", "description": "for team A",
        "tags": ["team-a", "prod"], "isActive": true, "permissions": "claude",
        "concurrencyLimit": 3, "rateLimitWindow": 60, "rateLimitRequests": 100,
        "rateLimitCost": 2.5, "tokenLimit": 100000, "dailyCostLimit": 10.25,
        "totalCostLimit": 100.0, "weeklyOpusCostLimit": 20.0, "weeklyResetDay": 1,
        "weeklyResetHour": 0, "enableModelRestriction": true,
        "restrictedModels": ["claude-opus-4-20250514"], "claudeAccountId": null,
        "enableClientRestriction": false, "allowedClients": [],
        "expirationMode": "fixed", "activationDays": 0, "activationUnit": "days",
        "isActivated": true, "activatedAt": null, "expiresAt": "2030-01-01T00:00:00Z",
        "createdBy": "admin-token", "createdAt": data["createdAt"],
        "updatedAt": data["updatedAt"], "lastUsedAt": null, "isDeleted": false,
        "deletedAt": null, "deletedBy": null
    });
    assert_eq!(data, &expected);
    // Stored as micro-dollars and the CRS hash.
    assert_eq!(
        admin.scalar("SELECT daily_cost_limit_micros AS n FROM api_keys"),
        10_250_000
    );
    let hash = hash_key(&plaintext, admin.app.config.encryption_key.expose_secret());
    assert_eq!(
        admin.strings("SELECT key_hash AS s FROM api_keys"),
        [hash.as_str()]
    );

    // PUT takes the same fields and changes only those given.
    let (status, body) = admin
        .put(
            &format!("/admin/api-keys/{id}"),
            &json!({"name": "team-a2", "dailyCostLimit": 0, "tags": "x, y"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fields(&body["data"]), key_fields(false));
    assert_eq!(body["data"]["name"], "team-a2");
    assert_eq!(body["data"]["dailyCostLimit"], 0.0);
    assert_eq!(body["data"]["tags"], json!(["x", "y"]));
    assert_eq!(body["data"]["totalCostLimit"], 100.0);

    // GET list: the key, never a hash or the plaintext.
    let (status, body) = admin.get("/admin/api-keys").await;
    assert_eq!(status, 200);
    assert_eq!(fields(&body), ["data", "pagination", "success"]);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(fields(&body["data"][0]), key_fields(false));
    let (status, one) = admin.get(&format!("/admin/api-keys/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["data"], body["data"][0]);

    // DELETE soft-deletes: gone from the list, in /deleted, restorable.
    let (status, body) = admin.delete(&format!("/admin/api-keys/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["isDeleted"], true);
    assert_eq!(body["data"]["deletedBy"], "admin-token");
    assert_eq!(admin.get("/admin/api-keys").await.1["data"], json!([]));
    assert_eq!(count(&admin, "api_keys"), 1);
    let (_, deleted) = admin.get("/admin/api-keys/deleted").await;
    assert_eq!(deleted["data"][0]["id"], id);
    let (status, body) = admin
        .post(&format!("/admin/api-keys/{id}/restore"), &json!({}))
        .await;
    assert_eq!((status, &body["data"]["isDeleted"]), (200, &json!(false)));
    // Permanent delete only after a soft delete.
    let (status, body) = admin
        .delete(&format!("/admin/api-keys/{id}/permanent"))
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_request")),
        "{body}"
    );
    admin.delete(&format!("/admin/api-keys/{id}")).await;
    let (status, body) = admin
        .delete(&format!("/admin/api-keys/{id}/permanent"))
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"success": true, "data": {"id": id, "deleted": true}})
        )
    );
    assert_eq!(count(&admin, "api_keys"), 0);
    let (status, body) = admin.get(&format!("/admin/api-keys/{id}")).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"success": false, "error": "not_found", "message": format!("api key {id} not found")})
        )
    );

    // Audit: one row per change, none with a secret.
    let actions = admin.strings("SELECT action AS s FROM audit_log ORDER BY id");
    assert_eq!(
        actions,
        ["create", "update", "delete", "restore", "delete", "purge"]
    );
    let audit = admin.strings(
        "SELECT CONCAT(actor, target_id, COALESCE(before_json, ''), COALESCE(after_json, '')) AS s FROM audit_log",
    );
    for row in &audit {
        assert!(!row.contains(&plaintext) && !row.contains(&hash), "{row}");
        assert!(row.starts_with("admin-token"), "{row}");
    }
    let (_, log) = admin.get("/admin/audit?targetType=api_key&limit=2").await;
    assert_eq!(
        log["pagination"],
        json!({"limit": 2, "offset": 0, "total": 6})
    );
    assert_eq!(log["data"][0]["action"], "purge");
    assert_eq!(log["data"][0]["after"], Value::Null);
    assert_eq!(log["data"][1]["after"]["isDeleted"], true);
    assert_eq!(log["data"][1]["before"]["isDeleted"], false);
    admin.assert_never_returned(&[&hash], &[]);
    admin.assert_never_returned(&[&plaintext], &["POST /admin/api-keys"]);
}

#[actix_rt::test]
async fn validation_errors_name_the_field_and_write_nothing() {
    let admin = start().await;
    let with = |k: &str, v: Value| {
        let mut b = full_body();
        b[k] = v;
        b
    };
    let cases = [
        (with("dailyCostLimit", json!(-1)), "dailyCostLimit"),
        (with("concurrencyLimit", json!(-2)), "concurrencyLimit"),
        (with("tokenLimit", json!("lots")), "tokenLimit"),
        (with("permissions", json!("gemini")), "permissions"),
        (with("expiresAt", json!("next tuesday")), "expiresAt"),
        (with("name", json!("n".repeat(256))), "name"),
        (with("name", json!("")), "name"),
        (
            with(
                "claudeAccountId",
                json!("5b0b6f06-0000-4000-8000-000000000000"),
            ),
            "claudeAccountId",
        ),
        (with("expirationMode", json!("never")), "expirationMode"),
        (with("allowedClients", json!(["claude"])), "allowedClients"),
        (with("allowedClients", json!(["ua:"])), "allowedClients"),
        (
            with("enableClientRestriction", json!("maybe")),
            "enableClientRestriction",
        ),
        (with("tags", json!([1, 2])), "tags"),
        (json!({"description": "no name"}), "name"),
    ];
    for (body, field) in &cases {
        assert_field_error(&admin.post("/admin/api-keys", body).await, field);
        assert_field_error(
            &admin
                .post("/admin/api-keys/batch", &{
                    let mut b = body.clone();
                    let name = b.as_object_mut().unwrap().remove("name");
                    b["baseName"] = name.unwrap_or(Value::Null);
                    b["count"] = json!(2);
                    b
                })
                .await,
            if *field == "name" { "baseName" } else { field },
        );
    }
    assert_field_error(
        &admin
            .post(
                "/admin/api-keys/batch",
                &json!({"baseName": "b", "count": 0}),
            )
            .await,
        "count",
    );
    assert_eq!(count(&admin, "api_keys"), 0);
    assert_eq!(count(&admin, "audit_log"), 0);

    // Updates: the same rules, the stored key unchanged.
    let (_, created) = admin.post("/admin/api-keys", &full_body()).await;
    let id = created["data"]["id"].as_str().unwrap();
    let before = admin.get(&format!("/admin/api-keys/{id}")).await.1;
    for (body, field) in &cases[..cases.len() - 2] {
        assert_field_error(
            &admin.put(&format!("/admin/api-keys/{id}"), body).await,
            field,
        );
    }
    assert_eq!(admin.get(&format!("/admin/api-keys/{id}")).await.1, before);
    assert_eq!(count(&admin, "audit_log"), 1);

    // Bad JSON and bad query parameters answer in the admin shape too.
    let resp = admin
        .app
        .client
        .post(admin.app.url("/admin/api-keys"))
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["success"], &body["error"]),
        (&json!(false), &json!("invalid_request"))
    );
    assert_field_error(&admin.get("/admin/api-keys?page=0").await, "page");
    assert_field_error(
        &admin
            .get(&format!("/admin/api-keys/{id}/usage?from=2024-13-01"))
            .await,
        "from",
    );
    assert_field_error(&admin.get("/admin/usage?from=yesterday").await, "from");
    assert_field_error(
        &admin
            .get("/admin/usage?from=2024-02-02&to=2024-02-01")
            .await,
        "from",
    );
    assert_eq!(count(&admin, "api_keys"), 1);
}

#[actix_rt::test]
async fn list_pages_search_filters_batch_and_enable_disable() {
    let admin = start().await;
    let (status, body) = admin
        .post(
            "/admin/api-keys/batch",
            &json!({"baseName": "bulk", "count": 5, "tags": ["bulk"], "dailyCostLimit": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let made = body["data"].as_array().unwrap();
    assert_eq!(made.len(), 5);
    for (i, k) in made.iter().enumerate() {
        assert_eq!(fields(k), key_fields(true));
        assert_eq!(k["name"], format!("bulk_{}", i + 1));
        assert_eq!(k["dailyCostLimit"], 1.0);
        assert!(k["apiKey"].as_str().unwrap().starts_with("cr_"));
    }
    admin
        .post(
            "/admin/api-keys",
            &json!({"name": "solo key", "tags": ["other"]}),
        )
        .await;
    assert_eq!(count(&admin, "api_keys"), 6);

    let (_, page) = admin.get("/admin/api-keys?page=2&pageSize=4").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "pageSize": 4, "total": 6, "totalPages": 2})
    );
    let (_, tagged) = admin.get("/admin/api-keys?tag=other").await;
    assert_eq!(tagged["data"].as_array().unwrap().len(), 1);
    assert_eq!(tagged["data"][0]["name"], "solo key");
    let (_, found) = admin.get("/admin/api-keys?search=BULK_3").await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1);

    let id = made[0]["id"].as_str().unwrap();
    let (status, body) = admin
        .post(&format!("/admin/api-keys/{id}/disable"), &json!({}))
        .await;
    assert_eq!((status, &body["data"]["isActive"]), (200, &json!(false)));
    let (_, inactive) = admin.get("/admin/api-keys?isActive=false").await;
    assert_eq!(inactive["data"].as_array().unwrap().len(), 1);
    assert_eq!(inactive["data"][0]["id"], id);
    assert_eq!(
        admin.get("/admin/api-keys?isActive=true").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let (status, body) = admin
        .post(&format!("/admin/api-keys/{id}/enable"), &json!({}))
        .await;
    assert_eq!((status, &body["data"]["isActive"]), (200, &json!(true)));
    let actions = admin.strings("SELECT action AS s FROM audit_log ORDER BY id");
    assert_eq!(actions.iter().filter(|a| *a == "batch_create").count(), 5);
    assert_eq!(&actions[6..], ["disable", "enable"]);
}

/// Status of a message request with `key` (the relay's JSON answer).
async fn relay_status(admin: &Admin, key: &str) -> u16 {
    admin
        .app
        .client
        .post(admin.app.url("/api/v1/messages"))
        .header("x-api-key", key)
        .json(
            &json!({"model": "claude-sonnet-4-20250514", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (at most the in-process cache TTL plus slack) until `key` gets `want`.
async fn relay_becomes(admin: &Admin, key: &str, want: u16, ttl: Duration) {
    let started = Instant::now();
    eventually(
        ttl + Duration::from_secs(3),
        &format!("relay answers {want}"),
        || async {
            match relay_status(admin, key).await {
                s if s == want => Ok(()),
                s => Err(format!("{s}")),
            }
        },
    )
    .await;
    assert!(
        started.elapsed() <= ttl + Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
}

#[actix_rt::test]
async fn keys_created_here_work_on_the_relay_until_disabled_regenerated_or_deleted() {
    let ttl = Duration::from_secs(1);
    let admin = start_with(
        |env| {
            env.set("KEY_CACHE_TTL_SECONDS", "1");
        },
        "healthy",
    )
    .await;
    let (status, account) = admin
        .post(
            "/admin/claude-console-accounts",
            &json!({"name": "mock", "apiUrl": admin.mock.url, "apiKey": "sk-console-upstream", "priority": 10}),
        )
        .await;
    assert_eq!(status, 200, "{account}");
    let account_id = account["data"]["id"].as_str().unwrap().to_string();
    let (_, created) = admin
        .post(
            "/admin/api-keys",
            &json!({"name": "relay", "claudeAccountId": account_id}),
        )
        .await;
    assert_eq!(created["data"]["claudeAccountId"], account_id);
    let id = created["data"]["id"].as_str().unwrap().to_string();
    let key = created["data"]["apiKey"].as_str().unwrap().to_string();
    assert_eq!(relay_status(&admin, &key).await, 200);

    admin
        .post(&format!("/admin/api-keys/{id}/disable"), &json!({}))
        .await;
    relay_becomes(&admin, &key, 401, ttl).await;
    admin
        .post(&format!("/admin/api-keys/{id}/enable"), &json!({}))
        .await;
    relay_becomes(&admin, &key, 200, ttl).await;

    let (status, regenerated) = admin
        .post(&format!("/admin/api-keys/{id}/regenerate"), &json!({}))
        .await;
    assert_eq!(status, 200, "{regenerated}");
    assert_eq!(fields(&regenerated["data"]), key_fields(true));
    let new_key = regenerated["data"]["apiKey"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    relay_becomes(&admin, &key, 401, ttl).await;
    assert_eq!(relay_status(&admin, &new_key).await, 200);

    // Usage of the key, by day and model, and its recent records (from MySQL).
    admin
        .router()
        .drain_usage(std::time::Duration::from_secs(10))
        .await;
    eventually(Duration::from_secs(10), "3 usage rows", || async {
        let n = admin.scalar("SELECT COUNT(*) AS n FROM usage_records");
        if n == 3 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let (status, usage) = admin.get(&format!("/admin/api-keys/{id}/usage")).await;
    assert_eq!(status, 200, "{usage}");
    let data = &usage["data"];
    assert_eq!(
        fields(data),
        ["daily", "from", "id", "models", "to", "totals"]
    );
    assert_eq!(data["totals"]["requests"], 3);
    assert_eq!(
        fields(&data["totals"]),
        [
            "allTokens",
            "cacheCreateTokens",
            "cacheReadTokens",
            "cost",
            "inputTokens",
            "outputTokens",
            "requests"
        ]
    );
    let cost = data["totals"]["cost"].as_f64().unwrap();
    let micros = admin.scalar("SELECT CAST(SUM(cost_micros) AS SIGNED) AS n FROM usage_records");
    assert!(
        (cost - micros as f64 / 1e6).abs() < 1e-9,
        "{cost} vs {micros}"
    );
    assert_eq!(data["daily"].as_array().unwrap().len(), 1);
    assert_eq!(data["models"][0]["id"], "claude-sonnet-4-20250514");
    let (_, records) = admin
        .get(&format!("/admin/api-keys/{id}/usage/records?limit=2"))
        .await;
    assert_eq!(records["data"].as_array().unwrap().len(), 2);
    assert_eq!(records["data"][0]["accountId"], account_id);
    let (_, report) = admin.get("/admin/usage?groupBy=model").await;
    assert_eq!(report["data"]["totals"]["requests"], 3);
    assert_eq!(report["data"]["byKey"][0]["id"], id);
    assert_eq!(report["data"]["byKey"][0]["name"], "relay");
    assert_eq!(report["data"]["byAccount"][0]["name"], "mock");
    assert_eq!(report["data"]["trend"][0]["requests"], 3);
    let (_, account_usage) = admin
        .get(&format!("/admin/claude-accounts/{account_id}/usage"))
        .await;
    assert_eq!(account_usage["data"]["totals"]["requests"], 3);

    admin.delete(&format!("/admin/api-keys/{id}")).await;
    relay_becomes(&admin, &new_key, 401, ttl).await;
    admin.assert_never_returned(&["sk-console-upstream"], &[]);
    admin.assert_never_returned(
        &[&key, &new_key],
        &[
            "POST /admin/api-keys",
            &format!("POST /admin/api-keys/{id}/regenerate"),
        ],
    );
}

#[actix_rt::test]
async fn client_restriction_fields_are_set_shown_and_cleared() {
    let admin = start().await;
    let mut body = full_body();
    body["enableClientRestriction"] = json!(true);
    body["allowedClients"] = json!(["claude_code", "ua:my-tool/*"]);
    let (status, created) = admin.post("/admin/api-keys", &body).await;
    assert_eq!(status, 200, "{created}");
    let data = &created["data"];
    assert_eq!(data["enableClientRestriction"], true);
    assert_eq!(
        data["allowedClients"],
        json!(["claude_code", "ua:my-tool/*"])
    );
    assert_eq!(
        admin.strings("SELECT allowed_clients AS s FROM api_keys"),
        [r#"["claude_code","ua:my-tool/*"]"#]
    );
    let id = data["id"].as_str().unwrap();
    let (status, updated) = admin
        .put(
            &format!("/admin/api-keys/{id}"),
            &json!({"enableClientRestriction": false, "allowedClients": []}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["data"]["enableClientRestriction"], false);
    assert_eq!(updated["data"]["allowedClients"], json!([]));
    assert_eq!(
        admin.scalar("SELECT COUNT(*) AS n FROM api_keys WHERE enable_client_restriction = 0 AND allowed_clients = '[]'"),
        1
    );
}
