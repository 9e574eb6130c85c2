//! Token usage of one upstream answer: from a JSON response or incrementally from an SSE stream.

use std::borrow::Cow;

use serde_json::Value;

/// Longest SSE line kept for inspection; longer lines cannot carry usage and are skipped.
const MAX_LINE: usize = 1 << 20;
/// How far into a `data:` line the `"type"` of the event is looked for before giving up.
const TYPE_LOOKAHEAD: usize = 64;

/// Tokens of one request, as reported by the upstream (never estimated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uncached input tokens (`input_tokens`).
    pub input_tokens: u64,
    /// Output tokens (`output_tokens`).
    pub output_tokens: u64,
    /// Tokens written to the 5-minute cache (or the whole cache write when no split is given).
    pub cache_create_5m_tokens: u64,
    /// Tokens written to the 1-hour cache.
    pub cache_create_1h_tokens: u64,
    /// Tokens read from the cache (`cache_read_input_tokens`).
    pub cache_read_tokens: u64,
}

impl Usage {
    /// The `usage` of a non-streaming Messages answer; `None` when it has no `usage` object.
    pub fn from_response_json(response: &Value) -> Option<Usage> {
        let usage = response.get("usage")?.as_object()?;
        let mut out = Usage::default();
        UsagePatch::from_usage_object(usage).apply(&mut out);
        Some(out)
    }

    /// [`from_response_json`](Self::from_response_json) of a raw body; `None` when it is not JSON.
    /// Reads only the `usage` object (the content is skipped, not built); an answer whose
    /// `usage` has an unexpected shape is read as a whole, the slow way, with the same result.
    pub fn from_response_bytes(body: &[u8]) -> Option<Usage> {
        if let Some(usage) = trailing_usage(body) {
            return Some(usage.into_usage());
        }
        // Only an object is an answer (a struct would also be read from an array).
        if body.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        match serde_json::from_slice::<TypedAnswer>(body) {
            Ok(answer) => answer.usage.map(TypedUsage::into_usage),
            Err(_) => Self::from_response_json(&serde_json::from_slice(body).ok()?),
        }
    }

    /// All cache-write tokens (5m + 1h).
    pub fn cache_create_tokens(&self) -> u64 {
        self.cache_create_5m_tokens
            .saturating_add(self.cache_create_1h_tokens)
    }

    /// Every input-side token: uncached input + cache writes + cache reads.
    pub fn total_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_create_tokens())
            .saturating_add(self.cache_read_tokens)
    }

    /// Every token of the request (CRS `allTokens`): input side + output.
    pub fn total_tokens(&self) -> u64 {
        self.total_input_tokens().saturating_add(self.output_tokens)
    }
}

/// The `model` of a non-streaming Messages answer.
pub fn model_from_response_json(response: &Value) -> Option<&str> {
    response.get("model")?.as_str()
}

/// The answer's `usage` when it is the last member of the top-level object, as the Messages
/// API writes it: found from the end, so the content before it (of any length) is not read.
/// `None` sends the caller to the full reading. Sound whatever the content holds: the match
/// is a key (an object member, as it follows `{` or `,` and precedes `:`, and quotes inside
/// strings are escaped), and only `}` follows its value, so its object is the top-level one.
fn trailing_usage(body: &[u8]) -> Option<TypedUsage> {
    const KEY: &[u8] = b"\"usage\"";
    let at = memchr::memmem::rfind(body, KEY)?;
    let before = body
        .get(..at)?
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())?;
    if !matches!(before, b'{' | b',') {
        return None;
    }
    let value = body
        .get(at + KEY.len()..)?
        .trim_ascii_start()
        .strip_prefix(b":")?;
    let mut values = serde_json::Deserializer::from_slice(value).into_iter::<TypedUsage>();
    let usage = values.next()?.ok()?;
    let after = value.get(values.byte_offset()..)?;
    (after.trim_ascii() == b"}").then_some(usage)
}

/// A non-streaming answer as far as usage goes; every other field is skipped unread.
#[derive(serde::Deserialize)]
struct TypedAnswer {
    usage: Option<TypedUsage>,
}

#[derive(serde::Deserialize)]
struct TypedUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_creation: Option<TypedCacheCreation>,
    cache_read_input_tokens: Option<u64>,
}

#[derive(serde::Deserialize)]
struct TypedCacheCreation {
    ephemeral_5m_input_tokens: Option<u64>,
    ephemeral_1h_input_tokens: Option<u64>,
}

impl TypedUsage {
    /// The same reading as [`UsagePatch::from_usage_object`] of the same object.
    fn into_patch(self) -> UsagePatch {
        let split = self.cache_creation.as_ref();
        let split_5m = split.and_then(|s| s.ephemeral_5m_input_tokens);
        let split_1h = split.and_then(|s| s.ephemeral_1h_input_tokens);
        let (cache_create_5m, cache_create_1h) = if split_5m.is_some() || split_1h.is_some() {
            (Some(split_5m.unwrap_or(0)), Some(split_1h.unwrap_or(0)))
        } else {
            (
                self.cache_creation_input_tokens,
                self.cache_creation_input_tokens.map(|_| 0),
            )
        };
        UsagePatch {
            input: self.input_tokens,
            output: self.output_tokens,
            cache_create_5m,
            cache_create_1h,
            cache_read: self.cache_read_input_tokens,
        }
    }

    fn into_usage(self) -> Usage {
        let mut out = Usage::default();
        self.into_patch().apply(&mut out);
        out
    }
}

/// Fields present in one `usage` object; absent fields leave the running value unchanged.
#[derive(Debug, Default)]
struct UsagePatch {
    input: Option<u64>,
    output: Option<u64>,
    cache_create_5m: Option<u64>,
    cache_create_1h: Option<u64>,
    cache_read: Option<u64>,
}

impl UsagePatch {
    fn from_usage_object(usage: &serde_json::Map<String, Value>) -> Self {
        let num =
            |obj: &serde_json::Map<String, Value>, k: &str| obj.get(k).and_then(Value::as_u64);
        let total_create = num(usage, "cache_creation_input_tokens");
        let split = usage.get("cache_creation").and_then(Value::as_object);
        let split_5m = split.and_then(|s| num(s, "ephemeral_5m_input_tokens"));
        let split_1h = split.and_then(|s| num(s, "ephemeral_1h_input_tokens"));
        let (cache_create_5m, cache_create_1h) = if split_5m.is_some() || split_1h.is_some() {
            (Some(split_5m.unwrap_or(0)), Some(split_1h.unwrap_or(0)))
        } else {
            // Only the total is known: it counts as 5-minute cache writes.
            (total_create, total_create.map(|_| 0))
        };
        Self {
            input: num(usage, "input_tokens"),
            output: num(usage, "output_tokens"),
            cache_create_5m,
            cache_create_1h,
            cache_read: num(usage, "cache_read_input_tokens"),
        }
    }

    fn apply(self, usage: &mut Usage) {
        let set = |slot: &mut u64, v: Option<u64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut usage.input_tokens, self.input);
        set(&mut usage.output_tokens, self.output);
        set(&mut usage.cache_create_5m_tokens, self.cache_create_5m);
        set(&mut usage.cache_create_1h_tokens, self.cache_create_1h);
        set(&mut usage.cache_read_tokens, self.cache_read);
    }
}

/// What to do with the line being assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// Keep collecting bytes until the end of the line.
    Collect,
    /// The line cannot carry usage: drop bytes until the end of the line.
    Skip,
}

/// Extracts usage from an Anthropic SSE stream fed as arbitrary byte chunks.
///
/// Reads `message_start` (input, cache creation 5m/1h, cache read, output so far, model) and
/// `message_delta` (output, plus any input/cache fields it repeats, which override). Only the
/// current partial line is buffered, and lines that clearly are other events (e.g. the large
/// `content_block_delta` ones) are dropped as soon as their type is known. Each usage-bearing
/// event is expected on one `data:` line, as Anthropic sends them. CR, LF and CRLF line ends
/// are accepted.
#[derive(Debug)]
pub struct SseUsageCollector {
    line: Vec<u8>,
    state: LineState,
    usage: Usage,
    seen: bool,
    model: Option<String>,
}

impl Default for SseUsageCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl SseUsageCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self {
            line: Vec::new(),
            state: LineState::Collect,
            usage: Usage::default(),
            seen: false,
            model: None,
        }
    }

    /// Feed the next chunk of the stream, exactly as received.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
            let line = &rest[..end];
            if self.at_line_start() {
                // The whole line is in this chunk: read it where it is, without copying.
                if line.len() <= MAX_LINE && classify(line) == LineState::Collect {
                    self.read_line(line);
                }
            } else {
                self.push(line);
                self.end_line();
            }
            rest = &rest[end + 1..];
        }
        self.push(rest);
    }

    /// The model named by `message_start`, if seen.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// End of stream: processes a last unterminated line and returns the usage, if any
    /// (`None` when no usage-bearing event was parsed). The only way to read the usage, so
    /// production and tests go through the same end-of-stream handling.
    pub fn finish(mut self) -> Option<Usage> {
        self.end_line();
        self.seen.then_some(self.usage)
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.state == LineState::Skip || bytes.is_empty() {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.line.clear();
            self.state = LineState::Skip;
            return;
        }
        self.line.extend_from_slice(bytes);
        self.state = classify(&self.line);
        if self.state == LineState::Skip {
            self.line.clear();
        }
    }

    /// True when nothing of the current line has been seen yet.
    fn at_line_start(&self) -> bool {
        self.state == LineState::Collect && self.line.is_empty()
    }

    fn end_line(&mut self) {
        if self.state == LineState::Collect && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.read_line(&line);
            self.line = line;
        }
        self.line.clear();
        self.state = LineState::Collect;
    }

    /// Takes the model and usage of a `message_start` or `message_delta` line.
    fn read_line(&mut self, line: &[u8]) {
        let Some(data) = data_payload(line) else {
            return;
        };
        // Only an object is an event (a struct would also be read from an array).
        if data.trim_ascii_start().first() != Some(&b'{') {
            return;
        }
        match serde_json::from_slice::<TypedEvent>(data) {
            Ok(event) => self.take_typed(event),
            // Lenient shapes (a float, a duplicate key, …) are read the slow way.
            Err(_) => self.take_value(data),
        }
    }

    /// The borrowed, typed reading: what [`take_value`](Self::take_value) takes, without
    /// building the event.
    fn take_typed(&mut self, event: TypedEvent) {
        let usage = match event.kind.as_deref() {
            Some("message_start") => event.message.and_then(|message| {
                if let Some(model) = message.model {
                    self.model = Some(model.into_owned());
                }
                message.usage
            }),
            Some("message_delta") => event.usage,
            _ => None,
        };
        if let Some(usage) = usage {
            usage.into_patch().apply(&mut self.usage);
            self.seen = true;
        }
    }

    fn take_value(&mut self, data: &[u8]) {
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        let usage = match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let message = event.get("message");
                if let Some(model) = message.and_then(|m| m.get("model")).and_then(Value::as_str) {
                    self.model = Some(model.to_owned());
                }
                message.and_then(|m| m.get("usage"))
            }
            Some("message_delta") => event.get("usage"),
            _ => None,
        };
        if let Some(usage) = usage.and_then(Value::as_object) {
            UsagePatch::from_usage_object(usage).apply(&mut self.usage);
            self.seen = true;
        }
    }
}

/// A stream event as far as usage goes; every other field is skipped unread.
#[derive(serde::Deserialize)]
struct TypedEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<TypedMessage<'a>>,
    usage: Option<TypedUsage>,
}

#[derive(serde::Deserialize)]
struct TypedMessage<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    usage: Option<TypedUsage>,
}

/// The JSON after `data:` (one optional space removed), or `None` for other lines.
fn data_payload(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"data:")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// Decide early whether a partial line can still be a usage-bearing `data:` line.
fn classify(partial: &[u8]) -> LineState {
    const DATA: &[u8] = b"data:";
    let n = partial.len().min(DATA.len());
    if partial[..n] != DATA[..n] {
        // `event:`, `id:`, comments…: nothing we need.
        return LineState::Skip;
    }
    if partial.len() <= DATA.len() {
        return LineState::Collect;
    }
    let head = &partial[..partial.len().min(DATA.len() + TYPE_LOOKAHEAD)];
    let Some(pos) = find(head, b"\"type\"") else {
        return LineState::Collect;
    };
    let after = &head[pos + 6..];
    let after = trim_start(after);
    let Some(after) = after.strip_prefix(b":") else {
        return LineState::Collect;
    };
    let after = trim_start(after);
    let Some(value) = after.strip_prefix(b"\"") else {
        return LineState::Collect;
    };
    match value.iter().position(|&b| b == b'"') {
        Some(end) => match &value[..end] {
            b"message_start" | b"message_delta" => LineState::Collect,
            _ => LineState::Skip,
        },
        None => LineState::Collect,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Copies of `shared/mock-upstream/fixtures/messages_stream.sse` / `messages_response.json`.
    const STREAM: &str = include_str!("testdata/messages_stream.sse");
    const RESPONSE: &str = include_str!("testdata/messages_response.json");

    fn expected_fixture_usage() -> Usage {
        Usage {
            input_tokens: 25,
            output_tokens: 12,
            cache_create_5m_tokens: 100,
            cache_create_1h_tokens: 0,
            cache_read_tokens: 200,
        }
    }

    fn collect(chunks: &[&[u8]]) -> (Option<Usage>, Option<String>) {
        let mut c = SseUsageCollector::new();
        for chunk in chunks {
            c.feed(chunk);
        }
        let model = c.model().map(str::to_owned);
        (c.finish(), model)
    }

    #[test]
    fn response_json_fixture() {
        let v: Value = serde_json::from_str(RESPONSE).unwrap();
        assert_eq!(
            Usage::from_response_json(&v),
            Some(expected_fixture_usage())
        );
        assert_eq!(
            model_from_response_json(&v),
            Some("claude-sonnet-4-20250514")
        );
    }

    #[test]
    fn response_body_truncated_at_every_byte_position_records_nothing() {
        let bytes = RESPONSE.as_bytes();
        let complete = RESPONSE.trim_end().len();
        for i in 0..=bytes.len() {
            let got = Usage::from_response_bytes(&bytes[..i]);
            if i >= complete {
                assert_eq!(got, Some(expected_fixture_usage()), "cut at {i}");
            } else {
                assert_eq!(got, None, "cut at {i}");
            }
        }
    }

    #[test]
    fn reading_only_the_usage_agrees_with_reading_the_whole_answer() {
        let bodies = [
            RESPONSE.to_string(),
            json!({"usage": null}).to_string(),
            json!({"usage": 3}).to_string(),
            json!({"content": [{"text": "x"}], "usage": {"input_tokens": 5, "output_tokens": 2}})
                .to_string(),
            json!({"usage": {"input_tokens": 5.0, "output_tokens": -2, "cache_read_input_tokens": 9}})
                .to_string(),
            json!({"usage": {"input_tokens": 1, "cache_creation_input_tokens": 40}}).to_string(),
            json!({"usage": {"cache_creation_input_tokens": 40,
                "cache_creation": {"ephemeral_1h_input_tokens": 30}}})
            .to_string(),
            json!({"usage": {"cache_creation_input_tokens": 40, "cache_creation": "x"}})
                .to_string(),
            r#"{"usage": {"input_tokens": 1, "input_tokens": 2}}"#.to_string(),
            r#"{"usage": {"input_tokens": 1}, "usage": {"input_tokens": 2}}"#.to_string(),
            // A `usage` of the content after the answer's own, or inside a string: the
            // answer's own counts.
            json!({"usage": {"input_tokens": 1}, "content": [{"type": "tool_use",
                "input": {"usage": {"input_tokens": 999}}}]})
            .to_string(),
            json!({"content": [{"type": "tool_use", "input": {"usage": {"input_tokens": 999}}},
                {"type": "text", "text": "\"usage\": {\"input_tokens\": 998}}"}],
                "usage": {"input_tokens": 3}})
            .to_string(),
            json!({"content": [{"type": "text", "text": "}, \"usage\": {\"input_tokens\": 7}}"}]})
                .to_string(),
            json!({"content": ["usage", {"usage": {"input_tokens": 9}}]}).to_string(),
            r#"{"content": [], "usage" : {"input_tokens": 4} }  "#.to_string(),
            "[1, 2]".to_string(),
            r#"[{"input_tokens": 5}]"#.to_string(),
            "not json".to_string(),
        ];
        for body in bodies {
            let whole = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| Usage::from_response_json(&v));
            assert_eq!(Usage::from_response_bytes(body.as_bytes()), whole, "{body}");
        }
        assert_eq!(
            Usage::from_response_bytes(br#"{"usage": {"input_tokens": 5, "output_tokens": 2}}"#),
            Some(Usage {
                input_tokens: 5,
                output_tokens: 2,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn the_usage_at_the_end_is_read_without_the_content_and_only_there() {
        let read = |body: &str| trailing_usage(body.as_bytes()).map(TypedUsage::into_usage);
        assert_eq!(read(RESPONSE), Some(expected_fixture_usage()));
        // Not the last member, nested, inside a string, an array element, not JSON: left to
        // the full reading.
        for body in [
            r#"{"usage": {"input_tokens": 1}, "content": []}"#,
            r#"{"content": [{"input": {"usage": {"input_tokens": 9}}}]}"#,
            r#"{"content": "x\"usage\": {\"input_tokens\": 9}}"}"#,
            r#"{"content": ["usage", 1]}"#,
            r#"{"usage": {"input_tokens": 1}"#,
            r#"{"usage": null}"#,
        ] {
            assert_eq!(read(body), None, "{body}");
        }
    }

    #[test]
    fn response_json_without_usage_is_none() {
        assert_eq!(Usage::from_response_json(&json!({"type": "message"})), None);
        assert_eq!(Usage::from_response_json(&json!({"usage": null})), None);
        assert_eq!(
            Usage::from_response_json(&json!({"type":"error","error":{"type":"api_error"}})),
            None
        );
    }

    #[test]
    fn total_cache_creation_without_split_counts_as_5m() {
        let v = json!({"usage": {"input_tokens": 3, "output_tokens": 4,
            "cache_creation_input_tokens": 50, "cache_read_input_tokens": 7}});
        assert_eq!(
            Usage::from_response_json(&v),
            Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                cache_create_5m_tokens: 50,
                cache_create_1h_tokens: 0,
                cache_read_tokens: 7,
            })
        );
    }

    #[test]
    fn split_cache_creation_is_used() {
        let v = json!({"usage": {"input_tokens": 1, "output_tokens": 2,
            "cache_creation_input_tokens": 300, "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}}});
        let u = Usage::from_response_json(&v).unwrap();
        assert_eq!(u.cache_create_5m_tokens, 100);
        assert_eq!(u.cache_create_1h_tokens, 200);
        assert_eq!(u.cache_create_tokens(), 300);
        assert_eq!(u.total_input_tokens(), 301);
        assert_eq!(u.total_tokens(), 303);
    }

    #[test]
    fn missing_and_null_fields_are_zero() {
        let v = json!({"usage": {"input_tokens": 9, "output_tokens": null}});
        assert_eq!(
            Usage::from_response_json(&v),
            Some(Usage {
                input_tokens: 9,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn stream_fixture_whole() {
        let (usage, model) = collect(&[STREAM.as_bytes()]);
        assert_eq!(usage, Some(expected_fixture_usage()));
        assert_eq!(model.as_deref(), Some("claude-sonnet-4-20250514"));
    }

    #[test]
    fn stream_fixture_split_at_every_byte_position() {
        let bytes = STREAM.as_bytes();
        for i in 0..=bytes.len() {
            let (usage, model) = collect(&[&bytes[..i], &bytes[i..]]);
            assert_eq!(usage, Some(expected_fixture_usage()), "split at {i}");
            assert_eq!(model.as_deref(), Some("claude-sonnet-4-20250514"));
        }
    }

    #[test]
    fn stream_fixture_split_at_every_pair_of_positions_and_byte_by_byte() {
        let bytes = STREAM.as_bytes();
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(collect(&singles).0, Some(expected_fixture_usage()));
        for i in (0..bytes.len()).step_by(7) {
            for j in (i..=bytes.len()).step_by(13) {
                let (usage, _) = collect(&[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(usage, Some(expected_fixture_usage()), "split at {i},{j}");
            }
        }
    }

    #[test]
    fn stream_with_crlf_line_ends() {
        let crlf = STREAM.replace('\n', "\r\n");
        let bytes = crlf.as_bytes();
        for i in 0..=bytes.len() {
            assert_eq!(
                collect(&[&bytes[..i], &bytes[i..]]).0,
                Some(expected_fixture_usage()),
                "split at {i}"
            );
        }
    }

    #[test]
    fn stream_without_final_newline() {
        let trimmed = STREAM.trim_end();
        let last_delta = trimmed.rfind("event: message_delta").unwrap();
        let cut = &trimmed[..trimmed[last_delta..].find("\n\n").unwrap() + last_delta];
        assert!(cut.ends_with("{\"output_tokens\":12}}"));
        assert_eq!(collect(&[cut.as_bytes()]).0, Some(expected_fixture_usage()));
    }

    #[test]
    fn stream_without_usage_is_none() {
        let s = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
        assert_eq!(collect(&[s.as_bytes()]), (None, None));
        assert_eq!(collect(&[]), (None, None));
        let err = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(collect(&[err.as_bytes()]).0, None);
    }

    #[test]
    fn stream_cut_before_message_delta_keeps_start_usage() {
        let cut = &STREAM[..STREAM.find("event: content_block_start").unwrap()];
        let (usage, _) = collect(&[cut.as_bytes()]);
        assert_eq!(
            usage,
            Some(Usage {
                output_tokens: 1,
                ..expected_fixture_usage()
            })
        );
    }

    #[test]
    fn message_delta_fields_override_start() {
        let s = concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-opus-4-1-20250805\",",
            "\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":5,",
            "\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
            "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"input_tokens\":11,",
            "\"cache_creation_input_tokens\":6,\"cache_read_input_tokens\":7,",
            "\"cache_creation\":{\"ephemeral_5m_input_tokens\":2,\"ephemeral_1h_input_tokens\":4},",
            "\"output_tokens\":99}}\n\n",
        );
        let (usage, model) = collect(&[s.as_bytes()]);
        assert_eq!(
            usage,
            Some(Usage {
                input_tokens: 11,
                output_tokens: 99,
                cache_create_5m_tokens: 2,
                cache_create_1h_tokens: 4,
                cache_read_tokens: 7,
            })
        );
        assert_eq!(model.as_deref(), Some("claude-opus-4-1-20250805"));
    }

    #[test]
    fn data_without_space_and_type_not_first() {
        let s = "data:{\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":4,\"output_tokens\":1}},\"type\":\"message_start\"}\n";
        let (usage, model) = collect(&[s.as_bytes()]);
        assert_eq!(usage.unwrap().input_tokens, 4);
        assert_eq!(model.as_deref(), Some("m"));
    }

    #[test]
    fn large_content_lines_are_not_buffered() {
        let mut c = SseUsageCollector::new();
        c.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"");
        for _ in 0..1000 {
            c.feed(&[b'x'; 1000]);
            assert!(c.line.len() < 200, "buffered {} bytes", c.line.len());
        }
        c.feed(b"\"}}\n\n");
        c.feed(STREAM.as_bytes());
        assert_eq!(c.finish(), Some(expected_fixture_usage()));
    }

    #[test]
    fn overlong_line_is_dropped_and_stream_continues() {
        let mut c = SseUsageCollector::new();
        c.feed(b"data: ");
        c.feed(&vec![b' '; MAX_LINE + 10]);
        assert!(c.line.is_empty());
        c.feed(b"\n");
        c.feed(STREAM.as_bytes());
        assert_eq!(c.finish(), Some(expected_fixture_usage()));
    }

    #[test]
    fn reading_an_event_typed_agrees_with_reading_it_whole() {
        let events = [
            r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":3,"output_tokens":1}}}"#,
            r#"{"type":"message_start","message":{"model":"claude\u002dx","usage":{"input_tokens":3}}}"#,
            r#"{"type":"message_start","message":{"model":7,"usage":{"input_tokens":3}}}"#,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":3.0,"output_tokens":2}}}"#,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":"3","cache_read_input_tokens":4}}}"#,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":-3,"output_tokens":2}}}"#,
            r#"{"type":"message_start","message":3}"#,
            r#"{"type":"message_start","message":{"model":"m"},"usage":{"input_tokens":9}}"#,
            r#"{"type":"message_start","message":{"usage":null}}"#,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":1,"input_tokens":2}}}"#,
            r#"{"type":"message_delta","usage":{"output_tokens":12,"cache_creation":{"ephemeral_1h_input_tokens":5}}}"#,
            r#"{"type":"message_delta","message":"x","usage":{"output_tokens":12}}"#,
            r#"{"type":"message_delta","usage":{"output_tokens":12},"type":"message_delta"}"#,
            r#"{"type":"message_delta","usage":[1]}"#,
            r#"{"type":7,"usage":{"output_tokens":12}}"#,
            r#"{"usage":{"output_tokens":12},"type":"message_delta"}"#,
            r#"[{"type":"message_delta","usage":{"output_tokens":12}}]"#,
            r#"{"type":"message_delta","usage":{"output_tokens":12}"#,
        ];
        for event in events {
            let mut typed = SseUsageCollector::new();
            typed.feed(format!("data: {event}\n").as_bytes());
            let mut whole = SseUsageCollector::new();
            whole.take_value(event.as_bytes());
            assert_eq!(typed.model(), whole.model(), "{event}");
            assert_eq!(typed.finish(), whole.finish(), "{event}");
        }
        let mut escaped = SseUsageCollector::new();
        escaped.feed(format!("data: {}\n", events[1]).as_bytes());
        assert_eq!(escaped.model(), Some("claude-x"));
        assert_eq!(escaped.finish().map(|u| u.input_tokens), Some(3));
    }

    #[test]
    fn invalid_json_is_ignored() {
        let s = "data: {\"type\":\"message_start\",\"message\":{\n\n";
        assert_eq!(collect(&[s.as_bytes()]).0, None);
    }
}
