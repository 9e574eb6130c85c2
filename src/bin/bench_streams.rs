//! `bench_streams`: many long streams at once, as Claude Code traffic looks (few requests
//! per second, each streaming for tens of seconds). It starts a slow SSE upstream of its own
//! (each answer drips `BENCH_STREAM_EVENTS` text deltas over `BENCH_STREAM_SECONDS`), then
//! opens `BENCH_STREAMS` streaming requests at once through a running relay and reads them
//! to the end. It checks that every stream completes with every event in order, and samples
//! the relay's RSS and CPU time (from /proc) before, while all streams are open, and after.
//! `bench/streams.sh` starts the relay and calls it; the table goes to the path given as
//! first argument.
//!
//! Environment: `RELAY_URL`, `RELAY_KEY` (a relay key), `RELAY_PID`, `BENCH_MOCK_PORT`
//! (where the slow upstream listens; the relay's account must point there).
#![allow(
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark: any failure stops it loudly, and it reports on stdout"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One SSE event as the upstream sends it.
fn event(data: &serde_json::Value) -> Bytes {
    Bytes::from(format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or_default()
    ))
}

/// The slow upstream's answer: message_start, `deltas` text deltas ("0", "1", …) spread
/// over `seconds`, then the closing events.
async fn slow_stream(shape: web::Data<(u64, Duration)>, _body: Bytes) -> HttpResponse {
    let (deltas, seconds) = **shape;
    let gap = seconds / u32::try_from(deltas.max(1)).unwrap_or(1);
    let start = event(
        &json!({"type": "message_start", "message": {"id": "msg_slow",
        "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
        "content": [], "stop_reason": null, "usage": {"input_tokens": 25, "output_tokens": 1,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    );
    let block = event(
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    let head = futures_util::stream::iter([Ok::<Bytes, actix_web::Error>(start), Ok(block)]);
    let body = futures_util::stream::unfold(0u64, move |i| async move {
        if i > deltas {
            return None;
        }
        if i == deltas {
            let end = [
                event(&json!({"type": "content_block_stop", "index": 0})),
                event(
                    &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": deltas}}),
                ),
                event(&json!({"type": "message_stop"})),
            ]
            .concat();
            return Some((Ok(Bytes::from(end)), i + 1));
        }
        tokio::time::sleep(gap).await;
        let delta = event(
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": i.to_string()}}),
        );
        Some((Ok(delta), i + 1))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(head.chain(body))
}

/// RSS (KiB) and CPU seconds of a process.
fn sample(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces): utime and stime are the 12th and
    // 13th of what follows `) `.
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (rss, (ticks(11) + ticks(12)) / 100.0)
}

/// Reads one stream to its end; true when it held every delta in order and ended with
/// `message_stop`.
async fn read_stream(client: &reqwest::Client, url: &str, key: &str, deltas: u64) -> bool {
    let body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "drip"}]});
    let Ok(resp) = client
        .post(url)
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
    else {
        return false;
    };
    if resp.status() != 200 {
        return false;
    }
    let mut text = String::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
            Err(_) => return false,
        }
    }
    let mut expected = 0u64;
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
            && v["type"] == "content_block_delta"
        {
            if v["delta"]["text"].as_str() != Some(expected.to_string().as_str()) {
                return false;
            }
            expected += 1;
        }
    }
    expected == deltas && text.contains("event: message_stop")
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/results/streams.md".into());
    let streams = usize::try_from(env_number("BENCH_STREAMS", 5000)).unwrap_or(5000);
    let deltas = env_number("BENCH_STREAM_EVENTS", 20);
    let seconds = Duration::from_secs(env_number("BENCH_STREAM_SECONDS", 10));
    let mock_port = u16::try_from(env_number("BENCH_MOCK_PORT", 18090)).unwrap_or(18090);
    let relay_url = std::env::var("RELAY_URL").expect("RELAY_URL");
    let key = std::env::var("RELAY_KEY").expect("RELAY_KEY");
    let pid: u32 = std::env::var("RELAY_PID")
        .expect("RELAY_PID")
        .parse()
        .expect("RELAY_PID is a number");

    let shape = web::Data::new((deltas, seconds));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shape.clone())
            .route("/v1/messages", web::post().to(slow_stream))
    })
    .workers(1)
    .max_connections(streams * 2)
    .backlog(4096)
    .bind(("127.0.0.1", mock_port))?
    .run();
    actix_web::rt::spawn(server);
    // The relay may only now be told where the upstream is: the script waits for this.
    println!("mock ready on {mock_port}");

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(seconds * 6)
        .build()
        .expect("client");
    let url = format!("{relay_url}/api/v1/messages");
    let (idle_rss, cpu_before) = sample(pid);
    let started = Instant::now();
    let completed = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (client, url, key, completed) =
                (client.clone(), url.clone(), key.clone(), completed.clone());
            actix_web::rt::spawn(async move {
                if read_stream(&client, &url, &key, deltas).await {
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Halfway through, every stream is open and dripping.
    tokio::time::sleep(seconds / 2).await;
    let (open_rss, cpu_half) = sample(pid);
    let half_elapsed = started.elapsed();
    for t in tasks {
        t.await.expect("stream task");
    }
    let elapsed = started.elapsed();
    let (after_rss, cpu_after) = sample(pid);
    let ok = completed.load(Ordering::Relaxed);
    let per_stream_kb = (open_rss.saturating_sub(idle_rss)) as f64 / streams.max(1) as f64;
    let cpu_open = cpu_half - cpu_before;
    let table = format!(
        "# Long streams benchmark\n\n\
         `bench/streams.sh` (release build): {streams} streaming requests at once through the \
         relay (hybrid mode), each answered by a slow upstream that drips {deltas} text deltas \
         over {} s. One run, {}.\n\n\
         | what | figure |\n|---|---|\n\
         | streams completed with every event in order | {ok} of {streams} |\n\
         | wall time until the last stream ended | {:.1} s |\n\
         | relay RSS before | {:.1} MB |\n\
         | relay RSS with all streams open | {:.1} MB |\n\
         | memory per open stream | {per_stream_kb:.1} KB |\n\
         | relay RSS after | {:.1} MB |\n\
         | relay CPU while the streams were open (first {:.1} s) | {:.2} s ({:.1} % of one core) |\n\
         | relay CPU for the whole run | {:.2} s |\n",
        seconds.as_secs(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        elapsed.as_secs_f64(),
        idle_rss as f64 / 1024.0,
        open_rss as f64 / 1024.0,
        after_rss as f64 / 1024.0,
        half_elapsed.as_secs_f64(),
        cpu_open,
        cpu_open * 100.0 / half_elapsed.as_secs_f64(),
        cpu_after - cpu_before,
    );
    std::fs::write(&out, &table)?;
    println!("{table}");
    if ok != streams {
        return Err(std::io::Error::other(format!(
            "{} streams failed",
            streams - ok
        )));
    }
    Ok(())
}
