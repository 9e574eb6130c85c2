//! Client restriction per key (issue 13): a key limited to Claude Code refuses an SDK
//! request with 403 `permission_error` before anything is counted or relayed, and relays
//! a request shaped as Claude Code sends it; custom user-agent patterns admit their tool.

use serde_json::{Value, json};

use super::harness::{SONNET, answer, error_body, start};

/// Headers Claude Code 2.0 sends on `/v1/messages` (OAuth login, macOS).
pub const CLAUDE_CODE_HEADERS: [(&str, &str); 8] = [
    ("user-agent", "claude-cli/2.0.14 (external, cli)"),
    ("x-app", "cli"),
    ("anthropic-version", "2023-06-01"),
    (
        "anthropic-beta",
        "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14",
    ),
    ("x-stainless-lang", "js"),
    ("x-stainless-package-version", "0.60.0"),
    ("x-stainless-runtime", "node"),
    ("x-stainless-retry-count", "0"),
];

/// Headers of the Anthropic Python SDK.
pub const SDK_HEADERS: [(&str, &str); 5] = [
    ("user-agent", "Anthropic/Python 0.69.0"),
    ("anthropic-version", "2023-06-01"),
    ("x-stainless-lang", "python"),
    ("x-stainless-package-version", "0.69.0"),
    ("x-stainless-runtime", "CPython"),
];

/// A message request as Claude Code builds it.
pub fn claude_code_body() -> Value {
    json!({
        "model": SONNET,
        "max_tokens": 64,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "\nYou are an interactive CLI tool that helps users with software engineering tasks."}
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        "metadata": {"user_id": format!(
            "user_{}_account_0b7f6b1e-7c64-4c8a-9a5e-2f3c1d2e4f50_session_4e1c2a9b-1d3f-4c55-8e0a-6b7d9c0e1f23",
            "ab".repeat(32)
        )}
    })
}

/// POSTs `body` to `/api/v1/messages` with `key` and `headers`; status and JSON body.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let mut req = client.post(url).header("x-api-key", key).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, _, body) = answer(req.send().await.expect("the relay answers")).await;
    (status, body)
}

#[actix_rt::test]
async fn a_claude_code_only_key_refuses_an_sdk_and_relays_claude_code() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-console-1", 10).await;
    let (key, plain) = relay
        .key(|k| {
            k.enable_client_restriction = true;
            k.allowed_clients = vec!["claude_code".into()];
        })
        .await;
    let url = relay.app.url("/api/v1/messages");
    let client = &relay.app.client;
    let sdk_body = json!({"model": SONNET, "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}]});
    let refused = error_body(
        "permission_error",
        "this API key may only be used from these clients: claude_code",
    );
    assert_eq!(
        send(client, &url, &plain, &SDK_HEADERS, &sdk_body).await,
        (403, refused.clone())
    );
    // The Claude Code body from the SDK, and Claude Code's user agent without its body,
    // are refused too.
    assert_eq!(
        send(client, &url, &plain, &SDK_HEADERS, &claude_code_body()).await,
        (403, refused.clone())
    );
    assert_eq!(
        send(client, &url, &plain, &CLAUDE_CODE_HEADERS, &sdk_body).await,
        (403, refused.clone())
    );
    // The models route of a restricted key takes the same check (user agent only there).
    let resp = client
        .get(relay.app.url("/v1/models"))
        .header("x-api-key", &plain)
        .header("user-agent", "Anthropic/Python 0.69.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(relay.mock.message_count(), 0, "nothing was relayed");
    relay.wait_no_leases(&key).await;
    assert_eq!(relay.usage_rows(), 0);

    let (status, body) = send(
        client,
        &url,
        &plain,
        &CLAUDE_CODE_HEADERS,
        &claude_code_body(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(relay.mock.message_count(), 1);
    relay.wait_usage_rows(1).await;
}

#[actix_rt::test]
async fn custom_user_agent_patterns_admit_their_tool_and_unrestricted_keys_admit_all() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-console-1", 10).await;
    let (_, restricted) = relay
        .key(|k| {
            k.enable_client_restriction = true;
            k.allowed_clients = vec!["claude_code".into(), "ua:my-tool/*".into()];
        })
        .await;
    // The flag off: the list is kept but not enforced (as in CRS).
    let (_, flag_off) = relay
        .key(|k| {
            k.enable_client_restriction = false;
            k.allowed_clients = vec!["claude_code".into()];
        })
        .await;
    let url = relay.app.url("/api/v1/messages");
    let client = &relay.app.client;
    let body = json!({"model": SONNET, "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}]});
    let tool = [("user-agent", "My-Tool/1.4 (linux)")];
    assert_eq!(send(client, &url, &restricted, &tool, &body).await.0, 200);
    let other = [("user-agent", "other-tool/1.4")];
    let (status, refused) = send(client, &url, &restricted, &other, &body).await;
    assert_eq!(status, 403);
    assert_eq!(
        refused,
        error_body(
            "permission_error",
            "this API key may only be used from these clients: claude_code, ua:my-tool/*",
        )
    );
    assert_eq!(
        send(client, &url, &flag_off, &SDK_HEADERS, &body).await.0,
        200
    );
    assert_eq!(relay.mock.message_count(), 2);
}
