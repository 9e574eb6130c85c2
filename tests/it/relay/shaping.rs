//! Claude Code shaping (issue 13): on an OAuth account an SDK's request goes upstream with
//! Claude Code's headers and system prompt; Claude Code's own request goes unchanged; a
//! console account gets every request unchanged; `CLAUDE_CODE_*` change the values.

use chrono::Utc;
use claude_relay::domain::shaping::{DEFAULT_BETA, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_AGENT};
use serde_json::{Value, json};

use super::clients::{CLAUDE_CODE_HEADERS, SDK_HEADERS, claude_code_body, send};
use super::harness::{Relay, SONNET, start};
use crate::support::fixtures::{oauth_account, store_account};

fn last(relay: &Relay) -> crate::support::mock_upstream::Received {
    relay
        .mock
        .received()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/messages")
        .expect("a message request")
}

fn sdk_body() -> Value {
    json!({"model": SONNET, "max_tokens": 16, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}]})
}

async fn oauth(relay: &Relay) {
    store_account(
        relay.router(),
        oauth_account(
            &relay.app.config,
            "sub",
            "sk-ant-oat01-valid",
            "sk-ant-ort01-r",
            Utc::now() + chrono::Duration::hours(8),
            10,
        ),
    )
    .await;
}

#[actix_rt::test]
async fn sdk_requests_on_oauth_accounts_are_sent_as_claude_code_sends_them() {
    let relay = start(|_| {}).await;
    oauth(&relay).await;
    let (_, plain) = relay.key(|_| {}).await;
    let url = relay.app.url("/api/v1/messages");
    let mut headers = SDK_HEADERS.to_vec();
    headers.push(("anthropic-beta", "prompt-caching-2024-07-31"));
    let (status, body) = send(&relay.app.client, &url, &plain, &headers, &sdk_body()).await;
    assert_eq!(status, 200, "{body}");
    let seen = last(&relay);
    assert_eq!(seen.headers["user-agent"], DEFAULT_USER_AGENT);
    assert_eq!(seen.headers["x-app"], "cli");
    assert_eq!(
        seen.headers["anthropic-beta"],
        format!("{DEFAULT_BETA},prompt-caching-2024-07-31")
    );
    assert!(
        !seen
            .headers
            .names()
            .iter()
            .any(|k| k.starts_with("x-stainless-"))
    );
    assert_eq!(seen.headers["authorization"], "Bearer sk-ant-oat01-valid");
    assert_eq!(
        seen.body["system"],
        json!([
            {"type": "text", "text": DEFAULT_SYSTEM_PROMPT},
            {"type": "text", "text": "Be brief."}
        ])
    );
    assert_eq!(seen.body["messages"], sdk_body()["messages"]);

    // Claude Code's own request: its headers and body as they came.
    let cc = claude_code_body();
    let (status, _) = send(&relay.app.client, &url, &plain, &CLAUDE_CODE_HEADERS, &cc).await;
    assert_eq!(status, 200);
    let seen = last(&relay);
    assert_eq!(
        seen.headers["user-agent"],
        "claude-cli/2.0.14 (external, cli)"
    );
    assert_eq!(seen.headers["x-stainless-lang"], "js");
    assert_eq!(seen.body, cc);
}

#[actix_rt::test]
async fn console_accounts_and_configured_values() {
    let relay = start(|env| {
        env.set("CLAUDE_CODE_USER_AGENT", "claude-cli/9.9.9 (external, cli)");
        env.set("CLAUDE_CODE_SYSTEM_PROMPT", "custom prompt");
    })
    .await;
    relay.console("console", "sk-console", 1).await;
    let (_, plain) = relay.key(|_| {}).await;
    let url = relay.app.url("/api/v1/messages");
    let (status, _) = send(&relay.app.client, &url, &plain, &SDK_HEADERS, &sdk_body()).await;
    assert_eq!(status, 200);
    let seen = last(&relay);
    assert_eq!(seen.headers["user-agent"], "Anthropic/Python 0.69.0");
    assert_eq!(seen.body, sdk_body(), "console accounts: unchanged");

    oauth(&relay).await;
    let mut a = relay
        .router()
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.name == "console")
        .unwrap();
    a.schedulable = false;
    relay.router().save_account(a).await.unwrap();
    let (status, _) = send(&relay.app.client, &url, &plain, &SDK_HEADERS, &sdk_body()).await;
    assert_eq!(status, 200);
    let seen = last(&relay);
    assert_eq!(
        seen.headers["user-agent"],
        "claude-cli/9.9.9 (external, cli)"
    );
    assert_eq!(seen.body["system"][0]["text"], "custom prompt");
}

#[actix_rt::test]
async fn console_model_mapping_and_user_agent_are_applied() {
    let relay = start(|_| {}).await;
    let mut a = crate::support::fixtures::console_account(
        &relay.app.config,
        "mapped",
        &relay.mock.url,
        "sk-mapped",
        1,
    );
    a.model_mapping = [(SONNET.to_string(), "glm-4.6".to_string())].into();
    a.user_agent = Some("my-relay-ua/1.0".into());
    store_account(relay.router(), a).await;
    let (_, plain) = relay.key(|_| {}).await;
    let url = relay.app.url("/api/v1/messages");
    let (status, body) = send(&relay.app.client, &url, &plain, &SDK_HEADERS, &sdk_body()).await;
    assert_eq!(status, 200, "{body}");
    let seen = last(&relay);
    assert_eq!(seen.body["model"], "glm-4.6");
    assert_eq!(
        seen.body["system"], "Be brief.",
        "console accounts are not shaped"
    );
    assert_eq!(seen.headers["user-agent"], "my-relay-ua/1.0");
    // A model outside the mapping: the account does not serve it.
    let mut opus = sdk_body();
    opus["model"] = json!("claude-opus-4-20250514");
    let (status, body) = send(&relay.app.client, &url, &plain, &SDK_HEADERS, &opus).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(relay.mock.message_count(), 1);
}
