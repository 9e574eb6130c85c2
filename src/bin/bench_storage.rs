//! `bench_storage`: measures the data layer through the router in each storage mode —
//! key validation (`find_key_by_hash`) on the in-process cache-hit path and with the
//! in-process cache off (`KEY_CACHE_TTL_SECONDS=0`: Redis cache in hybrid, Redis in redis
//! mode, MySQL in mysql mode), and the cost of recording one usage event — and writes a
//! markdown table to `bench/results/storage.md` (or the path given as first argument).
//!
//! Runs against the Redis and MySQL of the environment (`REDIS_*`, `MYSQL_*`, `.env`), in a
//! throwaway database `crbench_<hex>` and key prefix `crbench:<hex>:`, both removed after.
//! `BENCH_ITERATIONS` (default 20000) sets the number of lookups per measurement.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::let_underscore_must_use,
    reason = "a benchmark tool: any failure stops it loudly; its figures are small"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use claude_relay::actors::router::{HealthStatus, RouterHandle};
use claude_relay::app::Actors;
use claude_relay::config::{Config, StorageMode};
use claude_relay::domain::api_key::ApiKey;
use claude_relay::domain::keys::{generate_key, hash_key};
use claude_relay::domain::usage_event::UsageEvent;
use claude_relay::ledger::CounterContext;
use rand::Rng;

/// Lookups in flight at once for the throughput figures.
const CONCURRENCY: usize = 16;

/// Latency distribution of one measurement.
struct Stats {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn stats(mut samples: Vec<Duration>, total: Duration) -> Stats {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    Stats {
        ops_per_sec: samples.len() as f64 / total.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

/// One row of results for a mode.
struct ModeResult {
    mode: StorageMode,
    hit: Stats,
    hit_concurrent: f64,
    miss: Stats,
    miss_concurrent: f64,
    record: Stats,
    archive_secs: Option<f64>,
}

fn base_vars(mode: StorageMode, id: &str) -> HashMap<String, String> {
    let _ = dotenvy::dotenv();
    let mut vars: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("REDIS_") || k.starts_with("MYSQL_"))
        .collect();
    if let Ok(iter) = dotenvy::dotenv_iter() {
        for (k, v) in iter.flatten() {
            if k.starts_with("REDIS_") || k.starts_with("MYSQL_") {
                vars.entry(k).or_insert(v);
            }
        }
    }
    vars.insert("DATABASE_TYPE".into(), mode.as_str().into());
    vars.insert("ENCRYPTION_KEY".into(), "b".repeat(32));
    vars.insert("MYSQL_DATABASE".into(), format!("crbench_{id}"));
    vars.insert("REDIS_KEY_PREFIX".into(), format!("crbench:{id}:"));
    vars.insert(
        "USAGE_JOURNAL_DIR".into(),
        format!("/tmp/crbench-{id}/journal"),
    );
    vars.insert("BACKEND_PROBE_INTERVAL_MS".into(), "500".into());
    vars.insert("USAGE_BATCH_INTERVAL_MS".into(), "100".into());
    vars
}

async fn wait_healthy(router: &RouterHandle) {
    let started = Instant::now();
    loop {
        if let Some(h) = router.health(Duration::from_secs(1)).await
            && h.status == HealthStatus::Healthy
        {
            // Hybrid trusts its Redis cache once the start-up flush ran (next tick).
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "backends not healthy within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sequential lookups (latency) and then `CONCURRENCY` clients (throughput).
async fn lookups(router: &RouterHandle, hash: &str, n: usize) -> (Stats, f64) {
    for _ in 0..200 {
        router.find_key_by_hash(hash).await.expect("lookup");
    }
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let found = router.find_key_by_hash(hash).await.expect("lookup");
        samples.push(t.elapsed());
        assert!(found.is_some(), "the key exists");
    }
    let sequential = stats(samples, started.elapsed());
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let router = router.clone();
            let hash = hash.to_string();
            actix_rt::spawn(async move {
                for _ in 0..n / CONCURRENCY {
                    router.find_key_by_hash(&hash).await.expect("lookup");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let concurrent = (n / CONCURRENCY * CONCURRENCY) as f64 / started.elapsed().as_secs_f64();
    (sequential, concurrent)
}

fn event(key_id: &str, i: usize) -> UsageEvent {
    UsageEvent {
        request_id: uuid::Uuid::new_v4().to_string(),
        upstream_request_id: None,
        api_key_id: key_id.to_string(),
        account_id: "bench-account".into(),
        model: "claude-sonnet-4-5".into(),
        input_tokens: 100 + i as i64,
        output_tokens: 50,
        cache_create_5m_tokens: 0,
        cache_create_1h_tokens: 0,
        cache_read_tokens: 10,
        cost_micros: 1234,
        status_code: 200,
        is_stream: true,
        latency_ms: 100,
        created_at: chrono::Utc::now(),
    }
}

/// Runs `f` in an actix System of its own and stops it (and its actors) afterwards.
fn in_system<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let out = f().await;
            actix_rt::System::current().stop();
            tokio::time::sleep(Duration::from_millis(50)).await;
            out
        })
    })
    .join()
    .expect("bench thread")
}

fn bench_mode(mode: StorageMode, n: usize) -> ModeResult {
    let id: String = {
        let mut rng = rand::rng();
        (0..10)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).expect("digit"))
            .collect()
    };
    let vars = base_vars(mode, &id);
    let config = Config::from_map(&vars).expect("bench configuration");
    let plaintext = generate_key("cr_");
    let hash = hash_key(&plaintext, &"b".repeat(32));
    let key = ApiKey::new(
        uuid::Uuid::new_v4().to_string(),
        "bench".into(),
        hash.clone(),
    );

    // 1. In-process cache hits (default KEY_CACHE_TTL_SECONDS=5), and recording usage.
    let (c, k, h) = (config.clone(), key, hash.clone());
    let (hit, hit_concurrent, record, archive_secs) = in_system(move || {
        Box::pin(async move {
            let actors = Actors::start(&c, true).expect("actors");
            let router = actors.router.clone();
            wait_healthy(&router).await;
            router.create_key(k.clone()).await.expect("create key");
            let (hit, hit_concurrent) = lookups(&router, &h, n).await;

            let events = n / 4;
            let mut samples = Vec::with_capacity(events);
            let started = Instant::now();
            for i in 0..events {
                let e = event(&k.id, i);
                let t = Instant::now();
                router
                    .record_usage(e, CounterContext::default())
                    .await
                    .expect("record");
                samples.push(t.elapsed());
            }
            let record = stats(samples, started.elapsed());
            let archive_secs = if mode.uses_mysql() {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    router.drain_usage(Duration::from_millis(200)).await;
                    let s = router.usage_stats().await;
                    if s.archived as usize >= events || Instant::now() > deadline {
                        break Some(started.elapsed().as_secs_f64());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } else {
                None
            };
            (hit, hit_concurrent, record, archive_secs)
        })
    });

    // 2. In-process cache off: the backend path of each mode.
    let mut c = config.clone();
    c.key_cache_ttl = Duration::ZERO;
    let h = hash;
    let (miss, miss_concurrent) = in_system(move || {
        Box::pin(async move {
            let actors = Actors::start(&c, false).expect("actors");
            let router = actors.router.clone();
            wait_healthy(&router).await;
            lookups(&router, &h, n / 2).await
        })
    });

    cleanup(&config);
    ModeResult {
        mode,
        hit,
        hit_concurrent,
        miss,
        miss_concurrent,
        record,
        archive_secs,
    }
}

/// Drops the bench database and deletes the bench keys.
fn cleanup(config: &Config) {
    if config.mode.uses_mysql()
        && let Ok(mut conn) = claude_relay::persistence::setup::connect(&config.mysql)
    {
        use diesel::connection::SimpleConnection;
        let _ = conn.batch_execute(&format!(
            "DROP DATABASE IF EXISTS `{}`",
            config.mysql.database
        ));
    }
    let url = format!("redis://{}:{}/", config.redis.host, config.redis.port);
    if let Ok(client) = redis::Client::open(url)
        && let Ok(mut conn) = client.get_connection()
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", config.redis.key_prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
    let _ = std::fs::remove_dir_all(config.journal_dir.parent().unwrap_or(&config.journal_dir));
}

fn pct(a: f64, b: f64) -> String {
    format!("{:+.1} %", (a / b - 1.0) * 100.0)
}

fn report(results: &[ModeResult], n: usize) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Storage benchmark (`cargo run --release --bin bench_storage`)\n"
    );
    let _ = writeln!(
        md,
        "{} · {} lookups per measurement, {CONCURRENCY} clients for throughput; one process, \
         router and storage actors as `serve` runs them; local Redis and MariaDB.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        n
    );
    let _ = writeln!(
        md,
        "| mode | key validation, in-process hit: p50 / p99 µs | seq ops/s | {CONCURRENCY} clients ops/s \
         | in-process cache off (KEY_CACHE_TTL_SECONDS=0): p50 / p99 µs | seq ops/s | {CONCURRENCY} clients ops/s \
         | record_usage p50 / p99 µs | record_usage ops/s | archive of all events (s) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let _ = writeln!(
            md,
            "| {} | {:.1} / {:.1} | {:.0} | {:.0} | {:.1} / {:.1} | {:.0} | {:.0} | {:.1} / {:.1} | {:.0} | {} |",
            r.mode.as_str(),
            r.hit.p50_us,
            r.hit.p99_us,
            r.hit.ops_per_sec,
            r.hit_concurrent,
            r.miss.p50_us,
            r.miss.p99_us,
            r.miss.ops_per_sec,
            r.miss_concurrent,
            r.record.p50_us,
            r.record.p99_us,
            r.record.ops_per_sec,
            r.archive_secs.map_or("–".into(), |s| format!("{s:.2}")),
        );
    }
    let find = |m| results.iter().find(|r| r.mode == m).expect("mode measured");
    let (h, r, m) = (
        find(StorageMode::Hybrid),
        find(StorageMode::Redis),
        find(StorageMode::Mysql),
    );
    let _ = writeln!(md, "\n## The requirement's claim\n");
    let _ = writeln!(
        md,
        "\"Hybrid within 5 % of redis-only and 30–50 % faster than mysql-only.\" Throughput of \
         hybrid relative to the others ({CONCURRENCY} clients; sequential in brackets):\n"
    );
    let _ = writeln!(md, "| path | hybrid vs redis | hybrid vs mysql |");
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(
        md,
        "| key validation, in-process hit | {} ({}) | {} ({}) |",
        pct(h.hit_concurrent, r.hit_concurrent),
        pct(h.hit.ops_per_sec, r.hit.ops_per_sec),
        pct(h.hit_concurrent, m.hit_concurrent),
        pct(h.hit.ops_per_sec, m.hit.ops_per_sec),
    );
    let _ = writeln!(
        md,
        "| key validation, backend path | {} ({}) | {} ({}) |",
        pct(h.miss_concurrent, r.miss_concurrent),
        pct(h.miss.ops_per_sec, r.miss.ops_per_sec),
        pct(h.miss_concurrent, m.miss_concurrent),
        pct(h.miss.ops_per_sec, m.miss.ops_per_sec),
    );
    let _ = writeln!(
        md,
        "| record_usage (sequential) | {} | {} |",
        pct(h.record.ops_per_sec, r.record.ops_per_sec),
        pct(h.record.ops_per_sec, m.record.ops_per_sec),
    );
    md
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/results/storage.md".into());
    let n: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut results = Vec::new();
    for mode in [StorageMode::Hybrid, StorageMode::Redis, StorageMode::Mysql] {
        eprintln!("benchmarking {} mode…", mode.as_str());
        results.push(bench_mode(mode, n));
    }
    let md = report(&results, n);
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).expect("results directory");
    }
    std::fs::write(&out, &md).expect("write results");
    println!("{md}");
    eprintln!("written to {out}");
}
