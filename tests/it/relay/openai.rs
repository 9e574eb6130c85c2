//! The OpenAI-compatible Chat Completions endpoints (issue 15) end to end: translated
//! requests reach the mock upstream as Messages requests, answers and streams come back as
//! chat completions, usage is recorded exactly as for `/api/v1/messages`, errors have
//! OpenAI's shape with the Messages endpoint's statuses; and the official `openai` Python
//! SDK drives the relay.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{Relay, SONNET, SONNET_COST, answer, away_from_minute_end, request, start};
use crate::support::mock_upstream::TOOL_CITIES;
use crate::support::{Behaviour, mysql};

const CHAT: &str = "/openai/claude/v1/chat/completions";
const CHAT_ALIAS: &str = "/api/v1/chat/completions";

/// POSTs a chat request with the relay key as `Authorization: Bearer` (none when `key`
/// is None).
async fn post_chat(
    relay: &Relay,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut req = relay.app.client.post(relay.app.url(path)).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("the relay answers")
}

async fn chat(relay: &Relay, key: &str, body: &Value) -> (u16, Option<String>, Value) {
    answer(post_chat(relay, CHAT, Some(key), body).await).await
}

fn openai_error(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code}})
}

/// The chunks of an OpenAI stream; panics unless it ends with `data: [DONE]`.
fn chunks(text: &str) -> Vec<Value> {
    assert!(text.ends_with("data: [DONE]\n\n"), "stream end: {text}");
    text.split("\n\n")
        .filter(|e| !e.is_empty() && *e != "data: [DONE]")
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data line: {e}"));
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

/// `(delta, finish_reason)` of every chunk that has a choice.
fn deltas(chunks: &[Value]) -> Vec<(Value, Value)> {
    chunks
        .iter()
        .filter(|c| !c["choices"].as_array().unwrap().is_empty())
        .map(|c| {
            (
                c["choices"][0]["delta"].clone(),
                c["choices"][0]["finish_reason"].clone(),
            )
        })
        .collect()
}

/// Every `usage_records` row as `key|account|model|in|out|5m|1h|read|cost|status|stream`,
/// in insertion order.
fn usage_rows(relay: &Relay) -> Vec<String> {
    let db = relay.env.direct_mysql();
    mysql::strings(
        &db,
        "SELECT CONCAT_WS('|', api_key_id, account_id, model, input_tokens, output_tokens, \
         cache_create_5m_tokens, cache_create_1h_tokens, cache_read_tokens, cost_micros, \
         status_code, is_stream) AS s FROM usage_records ORDER BY id",
    )
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[actix_rt::test]
async fn chat_completion_is_translated_both_ways_and_recorded_as_a_messages_request() {
    let relay = start(|_| {}).await;
    let (key, plaintext) = relay.key(|_| {}).await;
    let account = relay.console("c1", "sk-c1", 10).await;

    let (status, _, body) = chat(
        &relay,
        &plaintext,
        &json!({
            "model": SONNET, "max_tokens": 64, "temperature": 0.2, "user": "alice",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let created = body["created"].as_i64().expect("created");
    assert!((chrono::Utc::now().timestamp() - created).abs() < 60);
    assert_eq!(
        body,
        json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": created, "model": SONNET,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock."},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 325, "completion_tokens": 12, "total_tokens": 337,
                      "prompt_tokens_details": {"cached_tokens": 200, "cache_creation_tokens": 100}},
        })
    );
    let received = relay.mock.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body,
        json!({"model": SONNET, "max_tokens": 64, "temperature": 0.2, "system": "Be brief.",
               "messages": [{"role": "user", "content": "Hello"}], "metadata": {"user_id": "alice"}})
    );
    assert_eq!(received[0].headers["x-api-key"], "sk-c1");
    assert_eq!(received[0].headers["anthropic-version"], "2023-06-01");
    assert!(!received[0].headers.values().any(|v| v.contains(&plaintext)));

    // The same request through the Messages endpoint records the very same row.
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "Hello"))
        .await;
    assert_eq!(status, 200);
    relay.wait_usage_rows(2).await;
    let rows = usage_rows(&relay);
    let want = format!(
        "{}|{}|{SONNET}|25|12|100|0|200|{SONNET_COST}|200|0",
        key.id, account.id
    );
    assert_eq!(rows, vec![want.clone(), want]);
    relay.wait_total_cost(&key, 2 * SONNET_COST).await;
    relay.wait_no_leases(&key).await;
}

#[actix_rt::test]
async fn chat_stream_sends_chunks_usage_and_done_and_records_a_stream_row() {
    let relay = start(|_| {}).await;
    let (key, plaintext) = relay.key(|_| {}).await;
    let account = relay.console("c1", "sk-c1", 10).await;

    // The alias path is the same handler.
    let resp = post_chat(
        &relay,
        CHAT_ALIAS,
        Some(&plaintext),
        &json!({"model": SONNET, "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Hello"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let chunks = chunks(&text);
    assert_eq!(
        deltas(&chunks),
        vec![
            (json!({"role": "assistant", "content": ""}), Value::Null),
            (json!({"content": "Hello"}), Value::Null),
            (json!({"content": " from"}), Value::Null),
            (json!({"content": " the"}), Value::Null),
            (json!({"content": " mock."}), Value::Null),
            (json!({}), json!("stop")),
        ]
    );
    for c in &chunks {
        assert_eq!(
            (&c["id"], &c["object"], &c["model"]),
            (
                &json!("chatcmpl-mock"),
                &json!("chat.completion.chunk"),
                &json!(SONNET)
            )
        );
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 325, "completion_tokens": 12, "total_tokens": 337,
               "prompt_tokens_details": {"cached_tokens": 200, "cache_creation_tokens": 100}})
    );
    let received = relay.mock.received();
    assert_eq!(
        received[0].body,
        json!({"model": SONNET, "max_tokens": 4096, "stream": true,
               "messages": [{"role": "user", "content": "Hello"}]})
    );

    relay.wait_usage_rows(1).await;
    assert_eq!(
        usage_rows(&relay),
        vec![format!(
            "{}|{}|{SONNET}|25|12|100|0|200|{SONNET_COST}|200|1",
            key.id, account.id
        )]
    );
    relay.wait_total_cost(&key, SONNET_COST).await;
    relay.wait_no_leases(&key).await;
}

#[actix_rt::test]
async fn tool_call_round_trip_plain_and_streamed() {
    let relay = start(|_| {}).await;
    let (key, plaintext) = relay.key(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let question = json!([{"role": "user", "content": "Weather in Paris and Tokyo?"}]);

    let (status, _, body) = chat(
        &relay,
        &plaintext,
        &json!({"model": SONNET, "messages": question, "tools": weather_tools(), "tool_choice": "auto"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let message = body["choices"][0]["message"].clone();
    assert_eq!(
        message,
        json!({"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_mock_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "toolu_mock_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"}},
        ]})
    );
    let first = relay.mock.received()[0].body.clone();
    assert_eq!(
        (&first["tools"], &first["tool_choice"]),
        (
            &json!([{"name": "get_weather", "description": "The weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]),
            &json!({"type": "auto"})
        )
    );

    // The client sends the assistant message back with the tool results.
    let mut messages = question.as_array().unwrap().clone();
    messages.push(message);
    for (i, city) in TOOL_CITIES.iter().enumerate() {
        messages.push(json!({"role": "tool", "tool_call_id": format!("toolu_mock_{}", i + 1), "content": format!("sunny in {city}")}));
    }
    let (status, _, body) = chat(
        &relay,
        &plaintext,
        &json!({"model": SONNET, "messages": messages, "tools": weather_tools()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the mock."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        relay.mock.received()[1].body["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_mock_2", "name": "get_weather", "input": {"city": "Tokyo"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "sunny in Paris"},
                {"type": "tool_result", "tool_use_id": "toolu_mock_2", "content": "sunny in Tokyo"},
            ]},
        ])
    );

    // Streamed: argument deltas keep the index of their call.
    let resp = post_chat(
        &relay,
        CHAT,
        Some(&plaintext),
        &json!({"model": SONNET, "messages": question, "tools": weather_tools(), "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let chunks = chunks(&resp.text().await.unwrap());
    let call = |index: usize, id: &str| {
        json!({"tool_calls": [{"index": index, "id": id, "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]})
    };
    let args = |index: usize, piece: &str| json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]});
    assert_eq!(
        deltas(&chunks),
        vec![
            (json!({"role": "assistant", "content": ""}), Value::Null),
            (json!({"content": "Let me check."}), Value::Null),
            (call(0, "toolu_mock_1"), Value::Null),
            (args(0, "{\"city\": "), Value::Null),
            (args(0, "\"Paris\"}"), Value::Null),
            (call(1, "toolu_mock_2"), Value::Null),
            (args(1, "{\"city\": "), Value::Null),
            (args(1, "\"Tokyo\"}"), Value::Null),
            (json!({}), json!("tool_calls")),
        ]
    );
    relay.wait_usage_rows(3).await;
    relay.wait_total_cost(&key, 3 * SONNET_COST).await;
    relay.wait_no_leases(&key).await;
}

#[actix_rt::test]
async fn errors_have_openai_shape_and_the_messages_statuses_and_reach_nothing() {
    let relay = start(|env| {
        env.set("MAX_REQUEST_BODY_BYTES", "2048");
    })
    .await;
    relay.console("c1", "sk-c1", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    let hello = json!({"model": SONNET, "messages": [{"role": "user", "content": "Hello"}]});

    let (status, retry, body) = answer(post_chat(&relay, CHAT, None, &hello).await).await;
    assert_eq!(
        (status, retry, body),
        (
            401,
            None,
            openai_error("missing API key", "authentication_error", "invalid_api_key")
        )
    );
    // The key is checked before the body, as on the Messages endpoint.
    let mut two = hello.clone();
    two["n"] = json!(2);
    let (status, _, _) = answer(post_chat(&relay, CHAT, None, &two).await).await;
    assert_eq!(status, 401);

    let cases = [
        ("n", json!(2), "n: only 1 choice per request is supported"),
        (
            "logprobs",
            json!(true),
            "logprobs: log probabilities are not supported",
        ),
        (
            "temperature",
            json!(1.5),
            "temperature: must be a number between 0 and 1",
        ),
        (
            "seed",
            json!(1),
            "seed: not supported by this relay (Claude has no equivalent)",
        ),
        (
            "messages",
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}]}]),
            "messages[0].content[0].image_url.url: image type \"image/bmp\" is not supported (jpeg, png, gif, webp are)",
        ),
    ];
    for (field, value, message) in cases {
        let mut body = hello.clone();
        body[field] = value;
        let (status, _, got) = chat(&relay, &plaintext, &body).await;
        assert_eq!(
            (status, got),
            (
                400,
                openai_error(message, "invalid_request_error", "invalid_request")
            ),
            "{field}"
        );
    }
    let resp = relay
        .app
        .client
        .post(relay.app.url(CHAT))
        .bearer_auth(&plaintext)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    let (status, _, body) = answer(resp).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("request body is not valid JSON"),
        "{body}"
    );

    let mut big = hello.clone();
    big["messages"][0]["content"] = json!("x".repeat(4096));
    let (status, _, body) = chat(&relay, &plaintext, &big).await;
    assert_eq!(
        (status, body),
        (
            413,
            openai_error(
                "request body is too large",
                "invalid_request_error",
                "request_too_large"
            )
        )
    );

    let resp = relay
        .app
        .client
        .get(relay.app.url("/openai/claude/v1/nothing"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = answer(resp).await;
    assert_eq!(
        (status, body),
        (
            404,
            openai_error(
                "the requested resource was not found",
                "not_found_error",
                "not_found"
            )
        )
    );

    assert_eq!(relay.mock.message_count(), 0);
    assert_eq!(relay.usage_rows(), 0);
}

#[actix_rt::test]
async fn limits_answer_429_and_402_in_openai_shape() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let hello = json!({"model": SONNET, "messages": [{"role": "user", "content": "Hello"}]});

    let (_, windowed) = relay
        .key(|k| {
            k.rate_limit_window_minutes = 1;
            k.rate_limit_requests = 1;
        })
        .await;
    away_from_minute_end().await;
    assert_eq!(chat(&relay, &windowed, &hello).await.0, 200);
    let (status, retry, body) = chat(&relay, &windowed, &hello).await;
    assert_eq!(
        (status, body),
        (
            429,
            openai_error(
                "rate limit exceeded: too many requests in the current window",
                "rate_limit_error",
                "rate_limit_exceeded"
            )
        )
    );
    let retry: u64 = retry.expect("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");

    let (daily_key, daily) = relay.key(|k| k.daily_cost_limit_micros = 500).await;
    assert_eq!(chat(&relay, &daily, &hello).await.0, 200);
    relay.wait_total_cost(&daily_key, SONNET_COST).await;
    let (status, retry, body) = chat(&relay, &daily, &hello).await;
    assert_eq!(
        (status, retry, body),
        (
            402,
            None,
            openai_error(
                "daily cost limit of this API key reached",
                "insufficient_quota",
                "daily_cost_limit_exceeded"
            )
        )
    );
    assert_eq!(relay.mock.message_count(), 2);
}

#[actix_rt::test]
async fn upstream_errors_keep_their_status_in_openai_shape() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    relay.mock.set(
        "sk-c1",
        Behaviour::Fail {
            status: 400,
            body: r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: text content blocks must be non-empty"}}"#.into(),
            headers: vec![],
        },
    );
    let resp = post_chat(
        &relay,
        CHAT,
        Some(&plaintext),
        &json!({"model": SONNET, "messages": [{"role": "user", "content": ""}]}),
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (status, _, body) = answer(resp).await;
    assert_eq!(
        (status, body),
        (
            400,
            openai_error(
                "messages: text content blocks must be non-empty",
                "invalid_request_error",
                "invalid_request_error"
            )
        )
    );
    assert_eq!(relay.mock.message_count(), 1);
}

#[actix_rt::test]
async fn stream_client_disconnect_cancels_upstream_and_upstream_failure_ends_with_an_error_chunk() {
    let relay = start(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let (key, plaintext) = relay.key(|k| k.concurrency_limit = 1).await;
    let body = json!({"model": SONNET, "stream": true, "messages": [{"role": "user", "content": "Hello"}]});

    relay.mock.set("sk-c1", Behaviour::Endless);
    let mut resp = post_chat(&relay, CHAT, Some(&plaintext), &body).await;
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the role chunk within 10 s")
        .unwrap()
        .expect("a chunk");
    assert!(first.starts_with(b"data: {"), "{first:?}");
    assert_eq!(relay.mock.closed_streams(), 0);
    drop(resp);
    relay.mock.wait_closed_streams(1).await;
    relay.wait_no_leases(&key).await;

    relay.mock.set("sk-c1", Behaviour::BreakAfter { events: 3 });
    let resp = post_chat(&relay, CHAT, Some(&plaintext), &body).await;
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("the stream ends")
        .unwrap();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    assert_eq!(
        events[1]["choices"][0]["delta"],
        json!({"content": "Hello"})
    );
    assert_eq!(
        events[2],
        openai_error(
            "the upstream connection failed during the answer",
            "api_error",
            "upstream_stream_failed"
        )
    );
    relay.wait_no_leases(&key).await;
}

#[actix_rt::test]
async fn model_list_for_openai_clients() {
    let relay = start(|_| {}).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    let url = relay.app.url("/openai/claude/v1/models");
    let resp = relay
        .app
        .client
        .get(&url)
        .bearer_auth(&plaintext)
        .send()
        .await
        .unwrap();
    let (status, _, body) = answer(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let listed = body["data"].as_array().unwrap();
    assert!(
        listed.contains(&json!({"id": SONNET, "object": "model", "created": 1_700_000_000, "owned_by": "anthropic"})),
        "{body}"
    );
    let (status, _, body) = answer(relay.app.client.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, body),
        (
            401,
            openai_error("missing API key", "authentication_error", "invalid_api_key")
        )
    );
}

/// The interpreter of the virtualenv `scripts/test.sh` creates with the `openai` package.
fn sdk_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".local/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh once (it creates .local/venv and installs the \
         openai Python SDK into it)",
        python.display()
    );
    python
}

#[actix_rt::test]
async fn official_openai_python_sdk_talks_to_the_relay() {
    let python = sdk_python();
    let relay = start(|_| {}).await;
    let (key, plaintext) = relay.key(|_| {}).await;
    relay.console("c1", "sk-c1", 10).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_chat.py");

    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .env("RELAY_BASE_URL", relay.app.url("/openai/claude/v1"))
        .env("RELAY_API_KEY", &plaintext)
        .env("RELAY_MODEL", SONNET)
        .env("NO_PROXY", "127.0.0.1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the SDK script finishes within 120 s")
        .expect("the SDK script starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert_eq!(
        stdout.trim(),
        "ok: 5 requests reached the upstream",
        "{stderr}"
    );
    assert_eq!(relay.mock.message_count(), 5);
    relay.wait_usage_rows(5).await;
    relay.wait_total_cost(&key, 5 * SONNET_COST).await;
    relay.wait_no_leases(&key).await;
}
