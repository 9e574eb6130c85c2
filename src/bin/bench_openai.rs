//! `bench_openai`: CPU cost per request of the OpenAI Chat Completions translation against
//! the work `/api/v1/messages` does on the same request, measured on the very functions the
//! pipeline calls (`Dialect::prepare`, `AnswerFormat::success`, the stream rewrite and the
//! usage collector), single-threaded, without network or storage. Writes a markdown table
//! to `bench/results/openai.md` (or the path given as first argument).
//!
//! `BENCH_ITERATIONS` (default 20000) sets the iterations per measurement; each
//! measurement is repeated 5 times and the median round is reported.
//! Run it with `cargo run --release --features bench --bin bench_openai`.
#![allow(
    clippy::expect_used,
    reason = "a benchmark: any failure stops it loudly"
)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use claude_relay::domain::usage::{SseUsageCollector, Usage};
use claude_relay::relay::dialect::{AnswerFormat, Dialect};
use serde_json::{Value, json};

const ROUNDS: usize = 5;
const MODEL: &str = "claude-sonnet-4-20250514";

/// A chat of `turns` user/assistant exchanges of about `chars` characters each, with a
/// system prompt and, when `tools`, one tool definition.
fn chat_request(turns: usize, chars: usize, tools: bool, stream: bool) -> Value {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(chars / 45 + 1);
    let mut messages = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
    for i in 0..turns {
        messages.push(json!({"role": "user", "content": format!("Question {i}: {text}")}));
        messages.push(json!({"role": "assistant", "content": format!("Answer {i}: {text}")}));
    }
    messages.push(json!({"role": "user", "content": "And now?"}));
    let mut body =
        json!({"model": MODEL, "max_tokens": 1024, "messages": messages, "stream": stream});
    if tools {
        body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
            "description": "The weather of a city", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    }
    body
}

/// The Messages request the same conversation is as a native Anthropic client sends it.
fn messages_request(chat: &Value) -> Value {
    let translated = Dialect::OpenAiChat
        .prepare(Bytes::from(chat.to_string()))
        .expect("the sample translates");
    translated
        .tree
        .get()
        .expect("a translation has its tree")
        .clone()
}

fn json_answer(words: usize) -> Bytes {
    let text = "word ".repeat(words);
    Bytes::from(
        json!({
            "id": "msg_bench", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 200}
        })
        .to_string(),
    )
}

/// An SSE answer of `deltas` text deltas, one event per chunk (as the upstream sends them).
fn sse_chunks(deltas: usize) -> Vec<Bytes> {
    let event = |data: Value| {
        Bytes::from(format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap_or_default()
        ))
    };
    let mut out = vec![event(
        json!({"type": "message_start", "message": {"id": "msg_bench",
        "type": "message", "role": "assistant", "model": MODEL, "content": [], "stop_reason": null,
        "usage": {"input_tokens": 25, "output_tokens": 1, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 200}}}),
    )];
    out.push(event(
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    for i in 0..deltas {
        out.push(event(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": format!(" token{i}")}})));
    }
    out.push(event(json!({"type": "content_block_stop", "index": 0})));
    out.push(event(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
        "stop_sequence": null}, "usage": {"output_tokens": 12}}),
    ));
    out.push(event(json!({"type": "message_stop"})));
    out
}

/// Mean µs per call of `f`: the median of `ROUNDS` rounds of `n` calls.
fn measure(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..n {
                f();
            }
            started.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

/// One request's body work on the Messages endpoint: parse the request, read the usage of
/// the answer, pass the answer on.
fn messages_non_stream(request: &Bytes, answer: &Bytes) {
    let prepared = Dialect::Anthropic.prepare(request.clone()).expect("parses");
    let usage = Usage::from_response_bytes(answer);
    let out = prepared
        .answer
        .success(answer.clone(), 1_700_000_000)
        .expect("passes");
    black_box((prepared.body, usage, out));
}

/// The same on the Chat Completions endpoint: translate the request, read the usage, and
/// translate the answer.
fn chat_non_stream(request: &Bytes, answer: &Bytes) {
    let prepared = Dialect::OpenAiChat
        .prepare(request.clone())
        .expect("translates");
    let usage = Usage::from_response_bytes(answer);
    let out = prepared
        .answer
        .success(answer.clone(), 1_700_000_000)
        .expect("translates");
    black_box((prepared.body, usage, out));
}

/// A stream's work: usage collection on every chunk, plus the rewrite for OpenAI.
fn stream(format: AnswerFormat, chunks: &[Bytes]) {
    let mut usage = SseUsageCollector::new();
    let mut rewrite = format.stream_rewrite(1_700_000_000);
    let mut sent = 0usize;
    for chunk in chunks {
        usage.feed(chunk);
        let out = match rewrite.as_mut() {
            Some(r) => r.chunk(chunk),
            None => chunk.clone(),
        };
        sent += out.len();
    }
    if let Some(r) = rewrite.as_mut() {
        sent += r.end().len();
    }
    black_box((usage.finish(), sent));
}

struct Row {
    case: String,
    messages_us: f64,
    chat_us: f64,
}

fn main() {
    let n: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let out_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/results/openai.md".into());
    let mut rows = Vec::new();

    for (name, turns, chars, tools, words) in [
        ("one short user message", 0, 0, false, 20),
        ("10 turns × 500 chars + 1 tool", 10, 500, true, 300),
    ] {
        let chat = chat_request(turns, chars, tools, false);
        let native = Bytes::from(messages_request(&chat).to_string());
        let chat = Bytes::from(chat.to_string());
        let answer = json_answer(words);
        rows.push(Row {
            case: format!(
                "non-stream, {name} (request {} B, answer {} B)",
                chat.len(),
                answer.len()
            ),
            messages_us: measure(n, || messages_non_stream(&native, &answer)),
            chat_us: measure(n, || chat_non_stream(&chat, &answer)),
        });
    }
    for deltas in [20, 200] {
        let chunks = sse_chunks(deltas);
        let bytes: usize = chunks.iter().map(Bytes::len).sum();
        let openai = AnswerFormat::OpenAiChat(claude_relay::domain::openai::ChatOptions {
            stream: true,
            include_usage: true,
        });
        rows.push(Row {
            case: format!("stream answer, {deltas} text deltas ({bytes} B), rewrite only"),
            messages_us: measure(n / 10, || stream(AnswerFormat::Anthropic, &chunks)),
            chat_us: measure(n / 10, || stream(openai, &chunks)),
        });
    }

    let mut md = format!(
        "# OpenAI translation overhead (`cargo run --release --bin bench_openai`)\n\n\
         {} · {n} iterations per measurement (streams: {}), median of {ROUNDS} rounds, one \
         thread; the functions the pipeline calls, no network or storage.\n\n\
         | case | /api/v1/messages µs | /openai/claude/v1/chat/completions µs | translation overhead µs |\n\
         |---|---|---|---|\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        n / 10
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} |\n",
            r.case,
            r.messages_us,
            r.chat_us,
            r.chat_us - r.messages_us
        ));
    }
    print!("{md}");
    if let Err(e) = std::fs::write(&out_path, &md) {
        eprintln!("cannot write {out_path}: {e}");
        std::process::exit(1);
    }
}
