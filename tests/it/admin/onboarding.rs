//! OAuth onboarding at CRS's paths (issue 13) against the mock OAuth server: the
//! authorization URL carries PKCE S256, the code exchange sends the session's verifier and
//! answers the tokens as CRS does; an unknown, used or expired session is a clear 400; the
//! account made from the answer relays, and the relay refreshes its token.

use claude_relay::domain::oauth_flow::{CLIENT_ID, code_challenge};
use serde_json::{Value, json};

use super::{assert_field_error, fields, start};

fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[actix_rt::test]
async fn a_pkce_login_gives_tokens_that_relay_and_refresh() {
    let admin = start().await;
    let (status, body) = admin
        .post("/admin/claude-accounts/generate-auth-url", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fields(&body["data"]),
        ["authUrl", "instructions", "sessionId"]
    );
    let auth_url = body["data"]["authUrl"].as_str().unwrap();
    let session = body["data"]["sessionId"].as_str().unwrap().to_string();
    assert!(
        auth_url.starts_with("https://claude.ai/oauth/authorize?"),
        "{auth_url}"
    );
    let q = query(auth_url);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["redirect_uri"],
        "https://platform.claude.com/oauth/code/callback"
    );
    assert_eq!(
        q["scope"],
        "org:create_api_key user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload"
    );

    // The operator pastes the whole callback URL.
    let callback = format!(
        "https://platform.claude.com/oauth/code/callback?code=AUTHCODE123&state={}",
        q["state"]
    );
    let (status, body) = admin
        .post(
            "/admin/claude-accounts/exchange-code",
            &json!({"sessionId": session, "callbackUrl": callback}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let oauth = &body["data"]["claudeAiOauth"];
    assert_eq!(oauth["accessToken"], "sk-ant-oat01-refreshed-1");
    assert_eq!(oauth["refreshToken"], "sk-ant-ort01-refreshed-1");
    let scopes: Vec<&str> = oauth["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(scopes[0], "org:create_api_key");
    // The profile was read with the new token and comes with the answer.
    assert_eq!(oauth["subscriptionInfo"]["email"], "max-owner@example.com");
    assert_eq!(
        admin.mock.profile_requests(),
        ["Bearer sk-ant-oat01-refreshed-1"]
    );
    let sent = admin.mock.token_requests();
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(sent["grant_type"], "authorization_code");
    assert_eq!(sent["client_id"], CLIENT_ID);
    assert_eq!(sent["code"], "AUTHCODE123");
    assert_eq!(sent["state"], q["state"].as_str());
    assert_eq!(sent["redirect_uri"], q["redirect_uri"].as_str());
    assert_eq!(
        code_challenge(sent["code_verifier"].as_str().unwrap()),
        q["code_challenge"],
        "the verifier of this session answers the URL's challenge"
    );

    // The session is used up.
    let again = admin
        .post(
            "/admin/claude-accounts/exchange-code",
            &json!({"sessionId": session, "authorizationCode": "AUTHCODE123"}),
        )
        .await;
    assert_field_error(&again, "sessionId");
    assert_eq!(admin.mock.token_requests().len(), 1);

    // The account made from the answer (as CRS's web UI does) relays; with its access
    // token expired, the relay refreshes it first.
    let mut claude_ai_oauth = oauth.clone();
    claude_ai_oauth["expiresAt"] = json!(chrono::Utc::now().timestamp_millis() - 1000);
    let (status, account) = admin
        .post(
            "/admin/claude-accounts",
            &json!({"name": "max-1", "type": "claude-oauth", "claudeAiOauth": claude_ai_oauth}),
        )
        .await;
    assert_eq!(status, 200, "{account}");
    assert_eq!(account["data"]["hasRefreshToken"], true);
    let profile = json!({
        "email": "max-owner@example.com", "organizationName": "Example Org",
        "organizationUuid": "org-uuid-1", "subscriptionType": "claude_max",
        "profileFetchedAt": account["data"]["subscriptionInfo"]["profileFetchedAt"]
    });
    assert_eq!(account["data"]["subscriptionInfo"], profile);
    assert_eq!(
        admin.mock.profile_requests().len(),
        1,
        "the profile given with the account is not read again"
    );
    let account_id = account["data"]["id"].as_str().unwrap().to_string();
    let (_, key) = admin.post("/admin/api-keys", &json!({"name": "k"})).await;
    let resp = admin
        .app
        .client
        .post(admin.app.url("/api/v1/messages"))
        .header("x-api-key", key["data"]["apiKey"].as_str().unwrap())
        .json(
            &json!({"model": "claude-sonnet-4-20250514", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let sent = admin.mock.token_requests();
    assert_eq!(sent.len(), 2, "one refresh");
    assert_eq!(sent[1]["refresh_token"], "sk-ant-ort01-refreshed-1");
    let last = admin
        .mock
        .received()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/messages")
        .unwrap();
    assert_eq!(
        last.headers.get("authorization").map(String::as_str),
        Some("Bearer sk-ant-oat01-refreshed-2")
    );
    // After the refresh the profile is read again with the new token.
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "profile read after the refresh",
        || async {
            let seen = admin.mock.profile_requests();
            if seen.len() == 2 {
                Ok(seen)
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        admin.mock.profile_requests()[1],
        "Bearer sk-ant-oat01-refreshed-2"
    );
    let stored = admin
        .router()
        .get_account(&account_id)
        .await
        .unwrap()
        .unwrap();
    let info = stored.subscription.unwrap();
    assert_eq!(
        (
            info.email.as_deref(),
            info.organization_name.as_deref(),
            info.organization_uuid.as_deref(),
            info.subscription_type.as_deref()
        ),
        (
            Some("max-owner@example.com"),
            Some("Example Org"),
            Some("org-uuid-1"),
            Some("claude_max")
        )
    );
    assert_eq!(
        admin.strings(&format!(
            "SELECT JSON_UNQUOTE(JSON_EXTRACT(subscription_info, '$.email')) AS s \
             FROM claude_accounts WHERE id = '{account_id}'"
        )),
        ["max-owner@example.com"]
    );
}

#[actix_rt::test]
async fn a_failing_profile_endpoint_leaves_the_tokens_and_the_account() {
    let admin = start().await;
    admin.mock.set_profile_status(500);
    let (_, body) = admin
        .post("/admin/claude-accounts/generate-auth-url", &json!({}))
        .await;
    let (status, body) = admin
        .post(
            "/admin/claude-accounts/exchange-code",
            &json!({"sessionId": body["data"]["sessionId"], "authorizationCode": "CODE"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let oauth = body["data"]["claudeAiOauth"].clone();
    assert_eq!(oauth["accessToken"], "sk-ant-oat01-refreshed-1");
    assert_eq!(oauth["subscriptionInfo"], Value::Null);
    assert_eq!(admin.mock.profile_requests().len(), 1);

    // Created from the answer: the profile is tried again, fails, the account is made.
    let mut without = oauth.clone();
    without.as_object_mut().unwrap().remove("subscriptionInfo");
    let (status, account) = admin
        .post(
            "/admin/claude-accounts",
            &json!({"name": "max-2", "type": "claude-oauth", "claudeAiOauth": without}),
        )
        .await;
    assert_eq!(status, 200, "{account}");
    assert_eq!(account["data"]["subscriptionInfo"], Value::Null);
    assert_eq!(admin.mock.profile_requests().len(), 2);
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM claude_accounts"), 1);
    assert_eq!(
        admin.scalar("SELECT COUNT(*) AS n FROM claude_accounts WHERE subscription_info IS NULL"),
        1
    );
    // Without the profile scope (a setup token) nothing is asked.
    let (status, _) = admin
        .post(
            "/admin/claude-accounts",
            &json!({"name": "setup-1", "type": "claude-oauth",
                    "claudeAiOauth": {"accessToken": "sk-ant-oat01-setup", "scopes": ["user:inference"]}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(admin.mock.profile_requests().len(), 2);
}

#[actix_rt::test]
async fn the_code_exchange_goes_through_the_proxy_the_body_names() {
    let admin = start().await;
    let proxy = crate::support::TcpProxy::new(&format!("127.0.0.1:{}", admin.mock.port));
    let (_, body) = admin
        .post("/admin/claude-accounts/generate-auth-url", &json!({}))
        .await;
    let session = body["data"]["sessionId"].clone();

    // A proxy that cannot be used: a clear 400, nothing sent, the session kept.
    for bad in [
        json!({"type": "http", "host": "127.0.0.1"}),
        json!({"type": "http", "host": "127.0.0.1", "port": 0}),
        json!("ftp://127.0.0.1:21"),
        json!(42),
    ] {
        assert_field_error(
            &admin
                .post(
                    "/admin/claude-accounts/exchange-code",
                    &json!({"sessionId": session, "authorizationCode": "CODE", "proxy": bad}),
                )
                .await,
            "proxy",
        );
    }
    assert!(admin.mock.token_requests().is_empty());

    let (status, body) = admin
        .post(
            "/admin/claude-accounts/exchange-code",
            &json!({"sessionId": session, "authorizationCode": "CODE",
                    "proxy": {"type": "http", "host": "127.0.0.1", "port": proxy.port()}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Through a forward proxy the request carries the absolute URL.
    assert_eq!(
        admin.mock.token_targets(),
        [format!("{}/oauth/token", admin.mock.url)]
    );
    assert!(proxy.accepted() >= 1, "the proxy carried the exchange");
    assert_eq!(admin.mock.profile_requests().len(), 1);

    // Without a proxy: straight to the OAuth server.
    let (_, body) = admin
        .post("/admin/claude-accounts/generate-auth-url", &json!({}))
        .await;
    let (status, _) = admin
        .post(
            "/admin/claude-accounts/exchange-code",
            &json!({"sessionId": body["data"]["sessionId"], "authorizationCode": "CODE2"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(admin.mock.token_targets()[1], "/oauth/token");
}

#[actix_rt::test]
async fn setup_tokens_ask_for_inference_only_and_bad_exchanges_are_400() {
    let admin = start().await;
    let (_, body) = admin
        .post(
            "/admin/claude-accounts/generate-setup-token-url",
            &json!({}),
        )
        .await;
    let q = query(body["data"]["authUrl"].as_str().unwrap());
    assert_eq!(q["scope"], "user:inference");
    let session = body["data"]["sessionId"].as_str().unwrap().to_string();

    let bad: [(Value, &str); 4] = [
        (json!({"authorizationCode": "x"}), "sessionId"),
        (json!({"sessionId": session}), "authorizationCode"),
        (
            json!({"sessionId": session, "callbackUrl": "https://platform.claude.com/oauth/code/callback?state=1"}),
            "callbackUrl",
        ),
        (
            json!({"sessionId": "5b0b6f06-0000-4000-8000-000000000000", "authorizationCode": "x"}),
            "sessionId",
        ),
    ];
    for (body, field) in &bad {
        assert_field_error(
            &admin
                .post("/admin/claude-accounts/exchange-setup-token-code", body)
                .await,
            field,
        );
    }
    // A login session does not serve the other flow.
    let (_, login) = admin
        .post("/admin/claude-accounts/generate-auth-url", &json!({}))
        .await;
    assert_field_error(
        &admin
            .post(
                "/admin/claude-accounts/exchange-setup-token-code",
                &json!({"sessionId": login["data"]["sessionId"], "authorizationCode": "x"}),
            )
            .await,
        "sessionId",
    );
    assert!(admin.mock.token_requests().is_empty(), "nothing was sent");

    let (status, body) = admin
        .post(
            "/admin/claude-accounts/exchange-setup-token-code",
            &json!({"sessionId": session, "authorizationCode": "SETUP#state"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = &admin.mock.token_requests()[0];
    assert_eq!(sent["code"], "SETUP");
    assert_eq!(sent["expires_in"], 31_536_000);

    // The OAuth server refusing the code: 400 with its answer, the session kept.
    admin.mock.set_token_status(400);
    let (_, body) = admin
        .post("/admin/claude-accounts/generate-auth-url", &json!({}))
        .await;
    let (status, body) = admin
        .post(
            "/admin/claude-accounts/exchange-code",
            &json!({"sessionId": body["data"]["sessionId"], "authorizationCode": "stale"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["message"],
        "the OAuth server refused the code (HTTP 400): {\"error\":\"invalid_grant\"}"
    );
    assert_eq!(admin.scalar("SELECT COUNT(*) AS n FROM claude_accounts"), 0);
}
