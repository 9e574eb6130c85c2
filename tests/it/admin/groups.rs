//! `/admin/account-groups` (issue 13, CRS paths): create, list with member counts, update,
//! members, binding a key with `claudeAccountId: "group:<id>"`, validation naming the field
//! and writing nothing, and deletion refused while the group is in use.

use serde_json::{Value, json};

use super::{assert_field_error, fields, start};

#[actix_rt::test]
async fn groups_are_created_filled_bound_and_deleted_when_unused() {
    let admin = start().await;
    let (status, body) = admin
        .post(
            "/admin/account-groups",
            &json!({"name": "team-a", "description": "team A's accounts"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let g = &body["data"];
    assert_eq!(
        fields(g),
        [
            "createdAt",
            "description",
            "id",
            "memberCount",
            "name",
            "platform",
            "updatedAt"
        ]
    );
    let id = g["id"].as_str().unwrap().to_string();
    assert_eq!(
        g,
        &json!({"id": id, "name": "team-a", "description": "team A's accounts",
            "platform": "claude", "memberCount": 0, "createdAt": g["createdAt"],
            "updatedAt": g["updatedAt"]})
    );
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM account_groups"), 1);

    let (_, account) = admin
        .post(
            "/admin/claude-accounts",
            &json!({"name": "c1", "type": "claude-console", "baseUrl": admin.mock.url,
                "apiKey": "sk-group-member", "accountType": "group"}),
        )
        .await;
    let account_id = account["data"]["id"].as_str().unwrap().to_string();
    let members = format!("/admin/account-groups/{id}/members");
    let (status, body) = admin
        .post(&members, &json!({"accountId": account_id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["groupIds"], json!([id]));
    assert_eq!(body["data"]["accountTypeScope"], "group");
    let (_, list) = admin.get("/admin/account-groups").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["memberCount"], 1);
    let (_, listed) = admin.get(&members).await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [account_id.as_str()]);

    // A key bound to the group relays through its member.
    let (status, key) = admin
        .post(
            "/admin/api-keys",
            &json!({"name": "grouped", "claudeAccountId": format!("group:{id}")}),
        )
        .await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["data"]["claudeAccountId"], format!("group:{id}"));
    let plain = key["data"]["apiKey"].as_str().unwrap();
    let resp = admin
        .app
        .client
        .post(admin.app.url("/api/v1/messages"))
        .header("x-api-key", plain)
        .json(
            &json!({"model": "claude-sonnet-4-20250514", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(admin.mock.message_count(), 1);

    // In use: deletion refused, nothing deleted.
    let (status, body) = admin.delete(&format!("/admin/account-groups/{id}")).await;
    assert_eq!(
        (status, &body["message"]),
        (
            400,
            &json!(format!(
                "account group {id} still has 1 account(s): remove them first"
            ))
        )
    );
    let (status, _) = admin.delete(&format!("{members}/{account_id}")).await;
    assert_eq!(status, 200);
    let (status, body) = admin.delete(&format!("/admin/account-groups/{id}")).await;
    assert_eq!(
        (status, &body["message"]),
        (
            400,
            &json!(format!(
                "account group {id} is bound to 1 api key(s): unbind them first"
            ))
        )
    );
    let key_id = key["data"]["id"].as_str().unwrap();
    let (status, _) = admin
        .put(
            &format!("/admin/api-keys/{key_id}"),
            &json!({"claudeAccountId": ""}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = admin.delete(&format!("/admin/account-groups/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"id": id, "deleted": true}));
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM account_groups"), 0);
    assert_eq!(
        admin.scalar("SELECT COUNT(*) AS n FROM audit_log WHERE target_type = 'account_group'"),
        2
    );
}

#[actix_rt::test]
async fn group_validation_names_the_field_and_writes_nothing() {
    let admin = start().await;
    let cases: [(Value, &str); 4] = [
        (json!({"description": "no name"}), "name"),
        (json!({"name": "x", "platform": "gemini"}), "platform"),
        (json!({"name": "n".repeat(256)}), "name"),
        (
            json!({"name": "x", "description": "d".repeat(2001)}),
            "description",
        ),
    ];
    for (body, field) in &cases {
        assert_field_error(&admin.post("/admin/account-groups", body).await, field);
    }
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM account_groups"), 0);
    let (_, g) = admin
        .post("/admin/account-groups", &json!({"name": "g"}))
        .await;
    let id = g["data"]["id"].as_str().unwrap();
    let members = format!("/admin/account-groups/{id}/members");
    assert_field_error(&admin.post(&members, &json!({})).await, "accountId");
    assert_field_error(
        &admin
            .post(
                &members,
                &json!({"accountId": "5b0b6f06-0000-4000-8000-000000000000"}),
            )
            .await,
        "accountId",
    );
    // A key bound to a group that does not exist.
    assert_field_error(
        &admin
            .post(
                "/admin/api-keys",
                &json!({"name": "k", "claudeAccountId": "group:5b0b6f06-0000-4000-8000-000000000000"}),
            )
            .await,
        "claudeAccountId",
    );
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM api_keys"), 0);
    let (status, _) = admin
        .get("/admin/account-groups/5b0b6f06-0000-4000-8000-000000000000")
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        admin.scalar("SELECT COUNT(*) AS n FROM audit_log"),
        1,
        "only the one group created"
    );
}
