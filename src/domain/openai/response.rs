//! An Anthropic Messages answer as an OpenAI `chat.completion`: text and tool calls in
//! `choices[0].message`, the stop reason as `finish_reason`, tokens as `usage`.

use serde_json::{Value, json};

use super::finish_reason;
use crate::domain::usage::Usage;

/// The OpenAI `usage` object of Claude's token counts: every input-side token (uncached,
/// cache writes, cache reads) is a prompt token; cache reads are OpenAI's `cached_tokens`.
pub fn usage_json(usage: &Usage) -> Value {
    let prompt = usage.total_input_tokens();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt.saturating_add(usage.output_tokens),
        "prompt_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_creation_tokens": usage.cache_create_tokens(),
        },
    })
}

/// The `chatcmpl-…` id of a Claude message id.
pub fn completion_id(message_id: &str) -> String {
    format!(
        "chatcmpl-{}",
        message_id.strip_prefix("msg_").unwrap_or(message_id)
    )
}

/// One OpenAI tool call of a Claude `tool_use` block.
pub fn tool_call(id: &str, name: &str, arguments: String) -> Value {
    json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments } })
}

/// Translates a Claude Messages answer (already parsed); `created` is the Unix time to
/// report. `Err` when the answer is not a Messages answer.
pub fn to_chat_completion(answer: &Value, created: i64) -> Result<Value, String> {
    let blocks = answer["content"]
        .as_array()
        .ok_or("the upstream answer has no content array")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(tool_call(
                block["id"].as_str().unwrap_or_default(),
                block["name"].as_str().unwrap_or_default(),
                block["input"].to_string(),
            )),
            // Thinking and other blocks have no place in a chat completion.
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let usage = Usage::from_response_json(answer).unwrap_or_default();
    Ok(json!({
        "id": completion_id(answer["id"].as_str().unwrap_or_default()),
        "object": "chat.completion",
        "created": created,
        "model": answer["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": answer["stop_reason"].as_str().map(finish_reason),
        }],
        "usage": usage_json(&usage),
    }))
}

/// [`to_chat_completion`] of a raw body, serialized.
pub fn translate_body(body: &[u8], created: i64) -> Result<Vec<u8>, String> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|_| "the upstream answer is not JSON".to_string())?;
    let completion = to_chat_completion(&answer, created)?;
    serde_json::to_vec(&completion).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claude(content: Value, stop: &str) -> Value {
        json!({
            "id": "msg_01ABC", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-20250514", "content": content,
            "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 12,
                      "cache_creation_input_tokens": 100, "cache_read_input_tokens": 200},
        })
    }

    #[test]
    fn text_answer() {
        let out = to_chat_completion(
            &claude(
                json!([{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]),
                "end_turn",
            ),
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-01ABC", "object": "chat.completion", "created": 1_700_000_000,
                "model": "claude-sonnet-4-20250514",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                             "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 325, "completion_tokens": 12, "total_tokens": 337,
                          "prompt_tokens_details": {"cached_tokens": 200, "cache_creation_tokens": 100}},
            })
        );
    }

    #[test]
    fn tool_use_answer() {
        let out = to_chat_completion(
            &claude(
                json!([
                    {"type": "thinking", "thinking": "…", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
                ]),
                "tool_use",
            ),
            1,
        )
        .unwrap();
        assert_eq!(
            out["choices"][0]["message"],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            ]})
        );
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn finish_reasons() {
        for (stop, want) in [
            ("end_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("stop_sequence", "stop"),
            ("refusal", "content_filter"),
        ] {
            let out = to_chat_completion(&claude(json!([]), stop), 1).unwrap();
            assert_eq!(out["choices"][0]["finish_reason"], want, "{stop}");
        }
    }

    #[test]
    fn not_a_messages_answer() {
        assert_eq!(
            translate_body(b"<html>", 1).unwrap_err(),
            "the upstream answer is not JSON"
        );
        assert_eq!(
            translate_body(b"{}", 1).unwrap_err(),
            "the upstream answer has no content array"
        );
    }
}
