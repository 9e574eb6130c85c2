//! An Anthropic Messages SSE stream as OpenAI `chat.completion.chunk` events, translated
//! as the bytes arrive: the role first, text deltas, tool-call argument deltas with stable
//! indexes, the finish reason, the usage chunk when asked for, then `data: [DONE]`;
//! Claude's pings become SSE comments.
//!
//! Bytes may be split anywhere (inside a line, a UTF-8 character or a CR LF pair); only the
//! current line and the current event's data are buffered.

use serde_json::{Map, Value, json};

use super::error::error_body;
use super::response::{completion_id, tool_call, usage_json};
use super::{ChatOptions, finish_reason};
use crate::domain::usage::Usage;

/// The end of an OpenAI stream.
const DONE: &[u8] = b"data: [DONE]\n\n";
/// Claude's keep-alive as an SSE comment: clients skip it, but it keeps idle proxies open
/// and lets the server notice a client that went away while the model is silent.
const PING: &[u8] = b": ping\n\n";

/// Translates one stream; feed it the upstream bytes as they come.
#[derive(Debug)]
pub struct ChatStreamTranslator {
    options: ChatOptions,
    created: i64,
    /// The line being assembled.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF at the start of the next one ends nothing.
    after_cr: bool,
    /// `data:` lines of the current event, joined by LF.
    data: Vec<u8>,
    id: String,
    model: Value,
    /// Every chunk's bytes up to its delta (id, created and model do not change).
    prefix: Vec<u8>,
    /// Claude content-block index → OpenAI tool-call index, in order of appearance.
    tool_blocks: Vec<(u64, usize)>,
    /// Usage fields seen so far (`message_start`, overridden by `message_delta`).
    usage: Map<String, Value>,
    done: bool,
}

impl ChatStreamTranslator {
    /// `created` is the Unix time reported in every chunk.
    pub fn new(options: ChatOptions, created: i64) -> Self {
        let id = completion_id("");
        ChatStreamTranslator {
            options,
            created,
            line: Vec::new(),
            after_cr: false,
            data: Vec::new(),
            prefix: chunk_prefix(&id, created, &Value::Null),
            id,
            model: Value::Null,
            tool_blocks: Vec::new(),
            usage: Map::new(),
            done: false,
        }
    }

    /// Translates the next upstream chunk, appending OpenAI events to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            rest = rest.strip_prefix(b"\n").unwrap_or(rest);
            self.after_cr = false;
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            self.end_line(out);
            let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
            if rest[end] == b'\r' && end + 1 == rest.len() {
                self.after_cr = true;
            }
            rest = &rest[end + if crlf { 2 } else { 1 }..];
        }
        self.line.extend_from_slice(rest);
    }

    /// The upstream ended: translates a last event that lacked its blank line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        self.dispatch(out);
    }

    /// True once `[DONE]` was written.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The usage reported by the upstream so far.
    pub fn usage(&self) -> Option<Usage> {
        Usage::from_response_json(&json!({ "usage": self.usage }))
            .filter(|_| !self.usage.is_empty())
    }

    /// The event sent when the upstream connection fails mid-stream.
    pub fn failure_event(message: &str) -> Vec<u8> {
        event_bytes(&error_body(message, "api_error", "upstream_stream_failed"))
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
        } else if let Some(payload) = line.strip_prefix(b"data:") {
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            self.data
                .extend_from_slice(payload.strip_prefix(b" ").unwrap_or(payload));
        }
        // `event:`, `id:`, comments: the event type is also in the data.
        self.line = line;
        self.line.clear();
    }

    fn dispatch(&mut self, out: &mut Vec<u8>) {
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data);
        if let Ok(event) = serde_json::from_slice::<Value>(&data) {
            self.translate(&event, out);
        }
        self.data = data;
        self.data.clear();
    }

    fn translate(&mut self, event: &Value, out: &mut Vec<u8>) {
        match event["type"].as_str() {
            Some("message_start") => {
                let message = &event["message"];
                self.id = completion_id(message["id"].as_str().unwrap_or_default());
                self.model = message["model"].clone();
                self.prefix = chunk_prefix(&self.id, self.created, &self.model);
                self.merge_usage(&message["usage"]);
                self.chunk(json!({ "role": "assistant", "content": "" }), None, out);
            }
            Some("content_block_start") => {
                let block = &event["content_block"];
                match block["type"].as_str() {
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            self.chunk(json!({ "content": text }), None, out);
                        }
                    }
                    Some("tool_use") => {
                        let index = self.tool_blocks.len();
                        self.tool_blocks
                            .push((event["index"].as_u64().unwrap_or_default(), index));
                        let arguments = match &block["input"] {
                            Value::Object(o) if !o.is_empty() => block["input"].to_string(),
                            _ => String::new(),
                        };
                        let mut call = tool_call(
                            block["id"].as_str().unwrap_or_default(),
                            block["name"].as_str().unwrap_or_default(),
                            arguments,
                        );
                        call["index"] = json!(index);
                        self.chunk(json!({ "tool_calls": [call] }), None, out);
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        self.chunk(json!({ "content": text }), None, out);
                    }
                    Some("input_json_delta") => {
                        let partial = delta["partial_json"].as_str().unwrap_or_default();
                        let block = event["index"].as_u64().unwrap_or_default();
                        let index = self.tool_blocks.iter().find(|(b, _)| *b == block);
                        if let (Some((_, index)), false) = (index, partial.is_empty()) {
                            let delta = json!({ "tool_calls": [
                                { "index": index, "function": { "arguments": partial } }
                            ] });
                            self.chunk(delta, None, out);
                        }
                    }
                    // Thinking and signatures have no place in a chat completion.
                    _ => {}
                }
            }
            Some("message_delta") => {
                self.merge_usage(&event["usage"]);
                if let Some(stop) = event["delta"]["stop_reason"].as_str() {
                    self.chunk(json!({}), Some(finish_reason(stop)), out);
                }
            }
            Some("message_stop") => {
                if self.options.include_usage {
                    let usage = self.usage().unwrap_or_default();
                    let chunk = json!({
                        "id": self.id, "object": "chat.completion.chunk",
                        "created": self.created, "model": self.model,
                        "choices": [], "usage": usage_json(&usage),
                    });
                    out.extend_from_slice(&event_bytes(&chunk));
                }
                out.extend_from_slice(DONE);
                self.done = true;
            }
            Some("error") => {
                let error = &event["error"];
                let kind = error["type"].as_str().unwrap_or("api_error");
                let message = error["message"].as_str().unwrap_or("upstream error");
                out.extend_from_slice(&event_bytes(&error_body(message, kind, kind)));
            }
            Some("ping") => out.extend_from_slice(PING),
            // content_block_stop and anything new: nothing to say.
            _ => {}
        }
    }

    fn merge_usage(&mut self, usage: &Value) {
        if let Value::Object(fields) = usage {
            for (k, v) in fields {
                if !v.is_null() {
                    self.usage.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// Writes one `chat.completion.chunk` event (`finish` is one of the fixed ASCII
    /// reasons, so it needs no escaping).
    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(delta.to_string().as_bytes());
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(reason) => {
                out.push(b'"');
                out.extend_from_slice(reason.as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        if self.options.include_usage {
            out.extend_from_slice(b",\"usage\":null");
        }
        out.extend_from_slice(b"}\n\n");
    }
}

/// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[{"index":0,"delta":`
fn chunk_prefix(id: &str, created: i64, model: &Value) -> Vec<u8> {
    let id = Value::from(id);
    format!(
        "data: {{\"id\":{id},\"object\":\"chat.completion.chunk\",\"created\":{created},\
         \"model\":{model},\"choices\":[{{\"index\":0,\"delta\":"
    )
    .into_bytes()
}

fn event_bytes(value: &Value) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    // Serializing a Value into a Vec cannot fail.
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Claude stream with text, two tool calls (argument JSON split over deltas), a
    /// ping, a thinking delta and non-ASCII text.
    fn claude_stream() -> String {
        [
            r#"{"type":"message_start","message":{"id":"msg_01X","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1,"cache_creation_input_tokens":100,"cache_read_input_tokens":200}}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Météo "}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"→ ☀"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_A","name":"get_weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_B","name":"get_weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Tokyo\"}"}}"#,
            r#"{"type":"content_block_stop","index":2}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}"#,
            r#"{"type":"message_stop"}"#,
        ]
        .iter()
        .map(|data| {
            let kind = serde_json::from_str::<Value>(data).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string();
            format!("event: {kind}\ndata: {data}\n\n")
        })
        .collect()
    }

    fn options(include_usage: bool) -> ChatOptions {
        ChatOptions {
            stream: true,
            include_usage,
        }
    }

    fn translate_chunks(chunks: &[&[u8]], include_usage: bool) -> Vec<u8> {
        let mut t = ChatStreamTranslator::new(options(include_usage), 1_700_000_000);
        let mut out = Vec::new();
        for c in chunks {
            t.feed(c, &mut out);
        }
        t.finish(&mut out);
        out
    }

    fn events(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        text.split("\n\n")
            .filter(|e| !e.is_empty() && *e != "data: [DONE]" && !e.starts_with(':'))
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn whole_stream_translates_to_the_expected_chunks() {
        let out = translate_chunks(&[claude_stream().as_bytes()], true);
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            text.matches(": ping\n\n").count(),
            1,
            "the ping is kept as a comment"
        );
        let chunks = events(&out);
        let deltas: Vec<(Value, Value)> = chunks
            .iter()
            .filter(|c| !c["choices"].as_array().unwrap().is_empty())
            .map(|c| {
                (
                    c["choices"][0]["delta"].clone(),
                    c["choices"][0]["finish_reason"].clone(),
                )
            })
            .collect();
        assert_eq!(
            deltas,
            vec![
                (json!({"role": "assistant", "content": ""}), Value::Null),
                (json!({"content": "Météo "}), Value::Null),
                (json!({"content": "→ ☀"}), Value::Null),
                (
                    json!({"tool_calls": [{"index": 0, "id": "toolu_A", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 1, "id": "toolu_B", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                (
                    json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"city\": \"Tokyo\"}"}}]}),
                    Value::Null
                ),
                (json!({}), json!("tool_calls")),
            ]
        );
        for c in &chunks {
            assert_eq!(c["id"], "chatcmpl-01X");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["created"], 1_700_000_000);
            assert_eq!(c["model"], "claude-sonnet-4-20250514");
        }
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 325, "completion_tokens": 12, "total_tokens": 337,
                   "prompt_tokens_details": {"cached_tokens": 200, "cache_creation_tokens": 100}})
        );
        assert!(
            chunks[..chunks.len() - 1]
                .iter()
                .all(|c| c.get("usage") == Some(&Value::Null))
        );
    }

    #[test]
    fn without_include_usage_there_is_no_usage_chunk_nor_field() {
        let out = translate_chunks(&[claude_stream().as_bytes()], false);
        let chunks = events(&out);
        assert_eq!(chunks.len(), 9);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn split_at_every_byte_position_gives_the_same_output() {
        let whole = claude_stream();
        let bytes = whole.as_bytes();
        let expected = translate_chunks(&[bytes], true);
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(translate_chunks(&[a, b], true), expected, "split at {at}");
        }
    }

    #[test]
    fn byte_by_byte_and_three_way_splits_give_the_same_output() {
        let whole = claude_stream();
        let bytes = whole.as_bytes();
        let expected = translate_chunks(&[bytes], true);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(translate_chunks(&singles, true), expected);
        for step in [2, 3, 7, 64, 333] {
            for at in (0..bytes.len()).step_by(step) {
                let rest = &bytes[at..];
                let mid = rest.len() / 3;
                let chunks = [&bytes[..at], &rest[..mid], &rest[mid..]];
                assert_eq!(translate_chunks(&chunks, true), expected, "{at}/{mid}");
            }
        }
    }

    #[test]
    fn crlf_and_cr_line_ends_split_between_chunks() {
        let whole = claude_stream();
        let expected = translate_chunks(&[whole.as_bytes()], true);
        for ending in ["\r\n", "\r"] {
            let converted = whole.replace('\n', ending);
            let bytes = converted.as_bytes();
            for at in 0..=bytes.len() {
                let (a, b) = bytes.split_at(at);
                assert_eq!(
                    translate_chunks(&[a, b], true),
                    expected,
                    "{ending:?} at {at}"
                );
            }
        }
    }

    #[test]
    fn usage_matches_what_the_relay_records() {
        let whole = claude_stream();
        let mut t = ChatStreamTranslator::new(options(false), 1);
        t.feed(whole.as_bytes(), &mut Vec::new());
        let mut collector = crate::domain::usage::SseUsageCollector::new();
        collector.feed(whole.as_bytes());
        assert_eq!(t.usage(), collector.finish());
        assert!(t.is_done());
    }

    #[test]
    fn last_event_without_blank_line_is_translated_at_the_end() {
        let whole = claude_stream();
        let cut = whole.trim_end_matches('\n');
        let out = translate_chunks(&[cut.as_bytes()], false);
        assert!(out.ends_with(DONE));
    }

    #[test]
    fn upstream_error_event_and_failure_frame() {
        let stream = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let parse = |out: Vec<u8>| -> Value {
            let text = String::from_utf8(out).unwrap();
            let json = text
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            serde_json::from_str(json).unwrap()
        };
        assert_eq!(
            parse(translate_chunks(&[stream.as_bytes()], false)),
            json!({"error": {"message": "Overloaded", "type": "overloaded_error", "code": "overloaded_error"}})
        );
        assert_eq!(
            parse(ChatStreamTranslator::failure_event("gone")),
            json!({"error": {"message": "gone", "type": "api_error", "code": "upstream_stream_failed"}})
        );
    }
}
