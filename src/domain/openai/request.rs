//! An OpenAI Chat Completions request as an Anthropic Messages request: roles, content
//! parts, tools and sampling options translated; options Claude cannot honour are refused
//! with a message naming the field, never dropped silently.

use serde_json::{Map, Value, json};

use super::ChatOptions;

/// `max_tokens` sent when the client names no limit (Claude requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Image types Claude accepts in base64 image blocks.
const IMAGE_MEDIA_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// The translated request and what the answer translation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaudeRequest {
    /// The Anthropic Messages body.
    pub body: Value,
    pub options: ChatOptions,
}

/// Translates a Chat Completions body; `Err` is a client error naming the field.
pub fn to_claude_request(body: &[u8]) -> Result<ClaudeRequest, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("request body must be a JSON object".into());
    };
    translate(fields)
}

/// Translates a parsed Chat Completions body.
pub fn translate(mut fields: Map<String, Value>) -> Result<ClaudeRequest, String> {
    // An explicit null means "not given", as OpenAI treats it.
    fields.retain(|_, v| !v.is_null());
    for name in fields.keys() {
        check_field_known(name)?;
    }
    check_neutral_options(&fields)?;

    let mut out = Map::new();
    let model = match fields.remove("model") {
        Some(Value::String(m)) if !m.is_empty() => m,
        Some(_) => return Err("model: must be a non-empty string".into()),
        None => return Err("model: field required".into()),
    };
    out.insert("model".into(), Value::String(model));

    let max_tokens = match (
        fields.remove("max_completion_tokens"),
        fields.remove("max_tokens"),
    ) {
        (Some(v), _) => positive_int(&v, "max_completion_tokens")?,
        (None, Some(v)) => positive_int(&v, "max_tokens")?,
        (None, None) => DEFAULT_MAX_TOKENS,
    };
    out.insert("max_tokens".into(), json!(max_tokens));

    let Some(Value::Array(messages)) = fields.remove("messages") else {
        return Err("messages: field required (an array)".into());
    };
    let (system, turns) = translate_messages(messages)?;
    if let Some(system) = system {
        out.insert("system".into(), Value::String(system));
    }
    out.insert("messages".into(), Value::Array(turns));

    for (name, range_max) in [("temperature", 1.0), ("top_p", 1.0)] {
        if let Some(v) = fields.remove(name) {
            let n = v
                .as_f64()
                .filter(|n| (0.0..=range_max).contains(n))
                .ok_or_else(|| format!("{name}: must be a number between 0 and {range_max}"))?;
            out.insert(name.into(), json!(n));
        }
    }
    if let Some(v) = fields.remove("top_k") {
        out.insert("top_k".into(), json!(positive_int(&v, "top_k")?));
    }
    if let Some(stop) = fields.remove("stop") {
        let sequences = stop_sequences(stop)?;
        if !sequences.is_empty() {
            out.insert("stop_sequences".into(), json!(sequences));
        }
    }

    let stream = match fields.remove("stream") {
        Some(Value::Bool(b)) => b,
        Some(_) => return Err("stream: must be a boolean".into()),
        None => false,
    };
    let include_usage = match fields.remove("stream_options") {
        Some(_) if !stream => {
            return Err("stream_options: only allowed when stream is true".into());
        }
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("stream_options.include_usage: must be a boolean".into()),
        },
        Some(_) => return Err("stream_options: must be an object".into()),
        None => false,
    };
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }

    let user = match (fields.remove("user"), fields.remove("safety_identifier")) {
        (Some(v), _) => Some((v, "user")),
        (None, Some(v)) => Some((v, "safety_identifier")),
        (None, None) => None,
    };
    if let Some((v, name)) = user {
        let id = v
            .as_str()
            .ok_or_else(|| format!("{name}: must be a string"))?;
        out.insert("metadata".into(), json!({ "user_id": id }));
    }

    let has_tools = if let Some(tools) = fields.remove("tools") {
        let tools = translate_tools(tools)?;
        let any = !tools.is_empty();
        if any {
            out.insert("tools".into(), Value::Array(tools));
        }
        any
    } else {
        false
    };
    let parallel = match fields.remove("parallel_tool_calls") {
        Some(Value::Bool(b)) => b,
        Some(_) => return Err("parallel_tool_calls: must be a boolean".into()),
        None => true,
    };
    let choice = fields
        .remove("tool_choice")
        .map(|c| translate_tool_choice(&c))
        .transpose()?;
    if !has_tools && choice.as_ref().is_some_and(|c| c["type"] != "none") {
        return Err("tool_choice: requires tools".into());
    }
    // Without tools, "none" and `parallel_tool_calls` say nothing Claude needs to hear.
    if has_tools && (choice.is_some() || !parallel) {
        let mut choice = choice.unwrap_or_else(|| json!({"type": "auto"}));
        if !parallel && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        out.insert("tool_choice".into(), choice);
    }

    Ok(ClaudeRequest {
        body: Value::Object(out),
        options: ChatOptions {
            stream,
            include_usage,
        },
    })
}

/// Fields translated or accepted at their neutral value; anything else is refused.
const KNOWN_FIELDS: [&str; 28] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stream",
    "stream_options",
    "user",
    "safety_identifier",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "n",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "response_format",
    "store",
    "metadata",
    "modalities",
    "service_tier",
    "prompt_cache_key",
    "verbosity",
];

fn check_field_known(name: &str) -> Result<(), String> {
    if KNOWN_FIELDS.contains(&name) {
        return Ok(());
    }
    Err(match name {
        "functions" | "function_call" => {
            format!("{name}: the legacy function calling fields are not supported, use tools")
        }
        _ => format!("{name}: not supported by this relay (Claude has no equivalent)"),
    })
}

/// Options Claude has no equivalent for: accepted only at the value that changes nothing.
fn check_neutral_options(fields: &Map<String, Value>) -> Result<(), String> {
    let refuse = |name: &str, why: &str| Err(format!("{name}: {why}"));
    for (name, v) in fields {
        let neutral = match name.as_str() {
            "n" => v.as_u64() == Some(1),
            "logprobs" => v == &Value::Bool(false),
            "top_logprobs" => v.as_u64() == Some(0),
            "presence_penalty" | "frequency_penalty" => v.as_f64() == Some(0.0),
            "logit_bias" | "metadata" => v.as_object().is_some_and(Map::is_empty),
            "response_format" => v["type"] == "text",
            "store" => v == &Value::Bool(false),
            "modalities" => v == &json!(["text"]),
            "service_tier" => v == "auto" || v == "default",
            "verbosity" => v == "medium",
            _ => continue,
        };
        if !neutral {
            return match name.as_str() {
                "n" => refuse(name, "only 1 choice per request is supported"),
                "logprobs" | "top_logprobs" => refuse(name, "log probabilities are not supported"),
                "response_format" => refuse(
                    name,
                    "only {\"type\":\"text\"} is supported (describe the JSON you want in the prompt or use a tool)",
                ),
                "store" | "metadata" => refuse(name, "answers are not stored by this relay"),
                _ => refuse(
                    name,
                    "not supported by this relay (Claude has no equivalent)",
                ),
            };
        }
    }
    Ok(())
}

fn positive_int(v: &Value, name: &str) -> Result<u64, String> {
    v.as_u64()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{name}: must be a positive integer"))
}

fn stop_sequences(stop: Value) -> Result<Vec<String>, String> {
    match stop {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .map(|s| match s {
                Value::String(s) => Ok(s),
                _ => Err("stop: must be a string or an array of strings".to_string()),
            })
            .collect(),
        _ => Err("stop: must be a string or an array of strings".into()),
    }
}

/// Claude's side of one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    User,
    Assistant,
}

/// The system prompt (system and developer messages joined) and the alternating turns,
/// consecutive messages of the same side merged into one.
fn translate_messages(messages: Vec<Value>) -> Result<(Option<String>, Vec<Value>), String> {
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(Side, Vec<Value>)> = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(mut m) = message else {
            return Err(format!("{at}: must be an object"));
        };
        m.retain(|_, v| !v.is_null());
        for name in ["function_call", "audio"] {
            if m.contains_key(name) {
                return Err(format!("{at}.{name}: not supported, use tool_calls"));
            }
        }
        let role = match m.remove("role") {
            Some(Value::String(r)) => r,
            _ => return Err(format!("{at}.role: field required (a string)")),
        };
        let content = m.remove("content");
        let (side, blocks) = match role.as_str() {
            "system" | "developer" => {
                let text = text_only(content, &format!("{at}.content"))?;
                system.push(text);
                continue;
            }
            "user" => (Side::User, user_blocks(content, &at)?),
            "assistant" => (
                Side::Assistant,
                assistant_blocks(content, m.remove("tool_calls"), &at)?,
            ),
            "tool" => (Side::User, vec![tool_result(content, m, &at)?]),
            "function" => {
                return Err(format!(
                    "{at}.role: the legacy \"function\" role is not supported, use \"tool\""
                ));
            }
            other => {
                return Err(format!(
                    "{at}.role: unknown role {other:?} (system, developer, user, assistant or tool)"
                ));
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if *last == side => existing.extend(blocks),
            _ => turns.push((side, blocks)),
        }
    }
    if turns.is_empty() {
        return Err("messages: at least one user or assistant message is required".into());
    }
    let turns = turns
        .into_iter()
        .map(|(side, blocks)| {
            let role = match side {
                Side::User => "user",
                Side::Assistant => "assistant",
            };
            json!({ "role": role, "content": compact(blocks) })
        })
        .collect();
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, turns))
}

/// One text block becomes a plain string (the form most clients send); the rest stays blocks.
fn compact(mut blocks: Vec<Value>) -> Value {
    if blocks.len() == 1
        && blocks[0]["type"] == "text"
        && let Some(Value::String(text)) = blocks[0].get_mut("text").map(Value::take)
    {
        return Value::String(text);
    }
    Value::Array(blocks)
}

fn text_block(text: String) -> Value {
    json!({ "type": "text", "text": text })
}

/// The text of a string or of an array of text parts (joined by newlines).
fn text_only(content: Option<Value>, at: &str) -> Result<String, String> {
    match content {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.into_iter().enumerate() {
                texts.push(text_part(part, &format!("{at}[{j}]"))?);
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(format!("{at}: must be a string or an array of text parts")),
        None => Err(format!("{at}: field required")),
    }
}

fn text_part(part: Value, at: &str) -> Result<String, String> {
    match (
        part["type"].as_str(),
        part.get("text").and_then(Value::as_str),
    ) {
        (Some("text"), Some(text)) => Ok(text.to_string()),
        (Some("text"), None) => Err(format!("{at}.text: field required (a string)")),
        _ => Err(format!("{at}.type: only text parts are allowed here")),
    }
}

fn user_blocks(content: Option<Value>, at: &str) -> Result<Vec<Value>, String> {
    match content {
        Some(Value::String(s)) => Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(j, part)| user_part(part, &format!("{at}.content[{j}]")))
            .collect(),
        Some(_) => Err(format!(
            "{at}.content: must be a string or an array of content parts"
        )),
        None => Err(format!("{at}.content: field required")),
    }
}

fn user_part(part: Value, at: &str) -> Result<Value, String> {
    match part["type"].as_str() {
        Some("text") => Ok(text_block(text_part(part, at)?)),
        Some("image_url") => {
            let url = part["image_url"]["url"]
                .as_str()
                .or_else(|| part["image_url"].as_str())
                .ok_or_else(|| format!("{at}.image_url.url: field required (a string)"))?;
            image_block(url, &format!("{at}.image_url.url"))
        }
        Some(other) => Err(format!(
            "{at}.type: {other:?} parts are not supported (text and image_url are)"
        )),
        None => Err(format!("{at}.type: field required")),
    }
}

/// A data URL becomes a base64 image block, an http(s) URL a URL image block.
fn image_block(url: &str, at: &str) -> Result<Value, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| format!("{at}: a data URL needs a comma before the data"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| format!("{at}: only base64 data URLs are supported"))?;
        if !IMAGE_MEDIA_TYPES.contains(&media_type) {
            return Err(format!(
                "{at}: image type {media_type:?} is not supported (jpeg, png, gif, webp are)"
            ));
        }
        if data.is_empty() {
            return Err(format!("{at}: the data URL holds no data"));
        }
        return Ok(json!({
            "type": "image",
            "source": { "type": "base64", "media_type": media_type, "data": data },
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(format!("{at}: must be a data: URL or an http(s) URL"))
}

fn assistant_blocks(
    content: Option<Value>,
    tool_calls: Option<Value>,
    at: &str,
) -> Result<Vec<Value>, String> {
    let mut blocks = Vec::new();
    match content {
        None => {}
        Some(Value::String(s)) => blocks.push(text_block(s)),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.into_iter().enumerate() {
                let part_at = format!("{at}.content[{j}]");
                let text = match part["type"].as_str() {
                    Some("refusal") => part["refusal"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{part_at}.refusal: field required"))?,
                    _ => text_part(part, &part_at)?,
                };
                blocks.push(text_block(text));
            }
        }
        Some(_) => {
            return Err(format!(
                "{at}.content: must be a string or an array of text parts"
            ));
        }
    }
    // Claude refuses empty text blocks; an assistant turn that only calls tools has "".
    blocks.retain(|b| b["text"].as_str().is_none_or(|t| !t.is_empty()));
    match tool_calls {
        None => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.into_iter().enumerate() {
                blocks.push(tool_use(call, &format!("{at}.tool_calls[{j}]"))?);
            }
        }
        Some(_) => return Err(format!("{at}.tool_calls: must be an array")),
    }
    if blocks.is_empty() {
        return Err(format!(
            "{at}: an assistant message needs non-empty content or tool_calls"
        ));
    }
    Ok(blocks)
}

fn tool_use(call: Value, at: &str) -> Result<Value, String> {
    if call.get("type").is_some_and(|t| t != "function") {
        return Err(format!(
            "{at}.type: only \"function\" tool calls are supported"
        ));
    }
    let id = call["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{at}.id: field required (a string)"))?;
    let name = call["function"]["name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{at}.function.name: field required (a string)"))?;
    let input = match &call["function"]["arguments"] {
        Value::Null => json!({}),
        Value::String(s) if s.trim().is_empty() => json!({}),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                format!("{at}.function.arguments: must be a JSON object encoded as a string")
            })?,
        Value::Object(_) => call["function"]["arguments"].clone(),
        _ => {
            return Err(format!(
                "{at}.function.arguments: must be a JSON object encoded as a string"
            ));
        }
    };
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

fn tool_result(
    content: Option<Value>,
    mut m: Map<String, Value>,
    at: &str,
) -> Result<Value, String> {
    let id = match m.remove("tool_call_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return Err(format!("{at}.tool_call_id: field required (a string)")),
    };
    let text = text_only(content, &format!("{at}.content"))?;
    Ok(json!({ "type": "tool_result", "tool_use_id": id, "content": text }))
}

fn translate_tools(tools: Value) -> Result<Vec<Value>, String> {
    let Value::Array(tools) = tools else {
        return Err("tools: must be an array".into());
    };
    tools
        .into_iter()
        .enumerate()
        .map(|(i, tool)| {
            let at = format!("tools[{i}]");
            if tool["type"] != "function" {
                return Err(format!("{at}.type: only \"function\" tools are supported"));
            }
            let function = &tool["function"];
            let name = function["name"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{at}.function.name: field required (a string)"))?;
            let schema = match &function["parameters"] {
                Value::Null => json!({ "type": "object", "properties": {} }),
                p @ Value::Object(_) => p.clone(),
                _ => {
                    return Err(format!(
                        "{at}.function.parameters: must be a JSON schema object"
                    ));
                }
            };
            let mut out = json!({ "name": name, "input_schema": schema });
            match &function["description"] {
                Value::Null => {}
                Value::String(d) => out["description"] = Value::String(d.clone()),
                _ => return Err(format!("{at}.function.description: must be a string")),
            }
            Ok(out)
        })
        .collect()
}

fn translate_tool_choice(choice: &Value) -> Result<Value, String> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({ "type": "auto" })),
            "none" => Ok(json!({ "type": "none" })),
            "required" => Ok(json!({ "type": "any" })),
            other => Err(format!(
                "tool_choice: unknown value {other:?} (auto, none, required or a function)"
            )),
        },
        Value::Object(_) if choice["type"] == "function" => {
            let name = choice["function"]["name"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or("tool_choice.function.name: field required (a string)")?;
            Ok(json!({ "type": "tool", "name": name }))
        }
        _ => Err("tool_choice: must be auto, none, required or {\"type\":\"function\",…}".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: Value) -> ClaudeRequest {
        to_claude_request(body.to_string().as_bytes()).expect("translates")
    }

    fn err(body: Value) -> String {
        to_claude_request(body.to_string().as_bytes()).expect_err("refused")
    }

    fn base(messages: Value) -> Value {
        json!({ "model": "claude-sonnet-4-20250514", "messages": messages })
    }

    #[test]
    fn simple_request_with_options_and_nulls_as_absent() {
        let r = ok(json!({
            "model": "claude-sonnet-4-20250514",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": "END",
            "user": "u-1", "n": 1, "logprobs": false, "presence_penalty": 0, "stream": false,
            "seed": null,
        }));
        assert_eq!(
            r.body,
            json!({
                "model": "claude-sonnet-4-20250514", "max_tokens": 100,
                "messages": [{"role": "user", "content": "Hi"}],
                "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"],
                "metadata": {"user_id": "u-1"},
            })
        );
        assert_eq!(r.options, ChatOptions::default());
    }

    #[test]
    fn max_completion_tokens_wins_and_default_applies() {
        let mut b = base(json!([{"role": "user", "content": "x"}]));
        assert_eq!(ok(b.clone()).body["max_tokens"], DEFAULT_MAX_TOKENS);
        b["max_tokens"] = json!(10);
        b["max_completion_tokens"] = json!(20);
        assert_eq!(ok(b).body["max_tokens"], 20);
    }

    #[test]
    fn system_developer_and_merged_turns() {
        let r = ok(base(json!([
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Bye", "name": "bob"},
        ])));
        assert_eq!(r.body["system"], "Be brief.\n\nUse French.");
        assert_eq!(
            r.body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "again"}]},
                {"role": "assistant", "content": "Bonjour"},
                {"role": "user", "content": "Bye"},
            ])
        );
    }

    #[test]
    fn images_from_data_and_http_urls() {
        let r = ok(base(json!([{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]}])));
        assert_eq!(
            r.body["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ])
        );
    }

    #[test]
    fn bad_images_are_refused_naming_the_part() {
        let img = |url: &str| {
            base(
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]),
            )
        };
        assert_eq!(
            err(img("data:image/bmp;base64,AAAA")),
            "messages[0].content[0].image_url.url: image type \"image/bmp\" is not supported (jpeg, png, gif, webp are)"
        );
        assert_eq!(
            err(img("data:image/png,rawdata")),
            "messages[0].content[0].image_url.url: only base64 data URLs are supported"
        );
        assert_eq!(
            err(img("file:///etc/passwd")),
            "messages[0].content[0].image_url.url: must be a data: URL or an http(s) URL"
        );
        assert_eq!(
            err(base(
                json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}])
            )),
            "messages[0].content[0].type: \"input_audio\" parts are not supported (text and image_url are)"
        );
    }

    #[test]
    fn tools_tool_calls_and_results_round_trip() {
        let r = ok(json!({
            "model": "claude-sonnet-4-20250514",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Tokyo?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25°C"}]},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
        }));
        assert_eq!(
            r.body["tools"],
            json!([{"name": "get_weather", "description": "Weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
        );
        assert_eq!(
            r.body["tool_choice"],
            json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            r.body["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Tokyo?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Tokyo"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "25°C"},
                    {"type": "text", "text": "Thanks"},
                ]},
            ])
        );
    }

    #[test]
    fn tool_choice_values() {
        let with = |choice: Value| {
            let mut b = base(json!([{"role": "user", "content": "x"}]));
            b["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
            b["tool_choice"] = choice;
            b
        };
        assert_eq!(
            ok(with(json!("auto"))).body["tool_choice"],
            json!({"type": "auto"})
        );
        assert_eq!(
            ok(with(json!("none"))).body["tool_choice"],
            json!({"type": "none"})
        );
        assert_eq!(
            ok(with(json!("required"))).body["tool_choice"],
            json!({"type": "any"})
        );
        assert_eq!(
            ok(with(json!("auto"))).body["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(
            err(with(json!("sometimes"))),
            "tool_choice: unknown value \"sometimes\" (auto, none, required or a function)"
        );
        let mut no_tools = base(json!([{"role": "user", "content": "x"}]));
        no_tools["parallel_tool_calls"] = json!(false);
        no_tools["tool_choice"] = json!("none");
        assert_eq!(ok(no_tools.clone()).body.get("tool_choice"), None);
        no_tools["tool_choice"] = json!("required");
        assert_eq!(err(no_tools), "tool_choice: requires tools");
        let mut serial = with(json!(null));
        serial["parallel_tool_calls"] = json!(false);
        assert_eq!(
            ok(serial).body["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn stream_and_include_usage() {
        let mut b = base(json!([{"role": "user", "content": "x"}]));
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
        let r = ok(b.clone());
        assert_eq!(r.body["stream"], true);
        assert_eq!(
            r.options,
            ChatOptions {
                stream: true,
                include_usage: true
            }
        );
        b["stream"] = json!(false);
        assert_eq!(err(b), "stream_options: only allowed when stream is true");
    }

    #[test]
    fn unsupported_options_are_refused_naming_the_field() {
        let with = |name: &str, v: Value| {
            let mut b = base(json!([{"role": "user", "content": "x"}]));
            b[name] = v;
            err(b)
        };
        assert_eq!(
            with("n", json!(2)),
            "n: only 1 choice per request is supported"
        );
        assert_eq!(
            with("logprobs", json!(true)),
            "logprobs: log probabilities are not supported"
        );
        assert_eq!(
            with("top_logprobs", json!(3)),
            "top_logprobs: log probabilities are not supported"
        );
        assert_eq!(
            with("frequency_penalty", json!(0.5)),
            "frequency_penalty: not supported by this relay (Claude has no equivalent)"
        );
        assert_eq!(
            with("response_format", json!({"type": "json_object"})),
            "response_format: only {\"type\":\"text\"} is supported (describe the JSON you want in the prompt or use a tool)"
        );
        assert_eq!(
            with("seed", json!(7)),
            "seed: not supported by this relay (Claude has no equivalent)"
        );
        assert_eq!(
            with("functions", json!([])),
            "functions: the legacy function calling fields are not supported, use tools"
        );
        assert_eq!(
            with("temperature", json!(1.5)),
            "temperature: must be a number between 0 and 1"
        );
        assert_eq!(
            with("max_tokens", json!(0)),
            "max_tokens: must be a positive integer"
        );
        assert_eq!(
            with("stop", json!([1])),
            "stop: must be a string or an array of strings"
        );
    }

    #[test]
    fn malformed_messages_are_refused_naming_the_field() {
        assert_eq!(
            err(json!({"model": "m"})),
            "messages: field required (an array)"
        );
        assert_eq!(err(json!({"messages": []})), "model: field required");
        assert_eq!(
            err(base(
                json!([{"role": "system", "content": "only a system prompt"}])
            )),
            "messages: at least one user or assistant message is required"
        );
        assert_eq!(
            err(base(json!([{"role": "robot", "content": "x"}]))),
            "messages[0].role: unknown role \"robot\" (system, developer, user, assistant or tool)"
        );
        assert_eq!(
            err(base(json!([{"role": "tool", "content": "x"}]))),
            "messages[0].tool_call_id: field required (a string)"
        );
        assert_eq!(
            err(base(json!([{"role": "assistant", "content": null}]))),
            "messages[0]: an assistant message needs non-empty content or tool_calls"
        );
        assert_eq!(
            err(base(json!([{"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
            ]}]))),
            "messages[0].tool_calls[0].function.arguments: must be a JSON object encoded as a string"
        );
        assert_eq!(
            err(base(json!([{"role": "user", "content": 5}]))),
            "messages[0].content: must be a string or an array of content parts"
        );
        assert!(
            to_claude_request(b"{not json")
                .unwrap_err()
                .starts_with("request body is not valid JSON")
        );
        assert_eq!(
            to_claude_request(b"[1]").unwrap_err(),
            "request body must be a JSON object"
        );
    }
}
