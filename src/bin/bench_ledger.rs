//! `bench_ledger`: what the usage ledger costs and how fast it drains, written as a markdown
//! table to `bench/results/ledger.md` (or the path given as first argument):
//! - the journal append on the hot path (CPU µs per event, one thread, fsync interval as
//!   shipped: the append itself is one `write`);
//! - the archive rate and the drain time of a backlog of `BENCH_BACKLOG` events (default
//!   1,000,000) journaled while MySQL was away, by a hybrid relay's archive writer into the
//!   local MariaDB, with its daily roll-ups; MariaDB's CPU per archived event from
//!   `/proc/<mariadbd pid>/stat` when it runs on this machine, and this process's (the
//!   archive writer: journal read, decode, statements).
//!
//! Runs against the Redis and MySQL of the environment (`REDIS_*`, `MYSQL_*`), in a throwaway
//! database `crledger_<hex>` and key prefix, both removed after.
#![allow(
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::let_underscore_must_use,
    reason = "a benchmark: it stops loudly on any failure, and its figures are floats"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use claude_relay::app::Actors;
use claude_relay::config::Config;
use claude_relay::domain::usage_event::UsageEvent;
use claude_relay::ledger::journal::{FsyncPolicy, JournalMode};
use claude_relay::ledger::{CounterContext, Journal};

fn event(i: u64) -> UsageEvent {
    UsageEvent {
        request_id: claude_relay::http::metrics::RequestId::new().0,
        upstream_request_id: Some(format!("req_up_{i:020}")),
        api_key_id: "00000000-0000-4000-8000-00000000000b".into(),
        account_id: format!("acct-{}", i % 4),
        model: if i.is_multiple_of(10) {
            "claude-opus-4-1-20250805".into()
        } else {
            "claude-sonnet-4-20250514".into()
        },
        input_tokens: 25 + i64::try_from(i % 100).unwrap_or(0),
        output_tokens: 12,
        cache_create_5m_tokens: 100,
        cache_create_1h_tokens: 0,
        cache_read_tokens: 200,
        cost_micros: 690,
        status_code: 200,
        is_stream: i.is_multiple_of(2),
        latency_ms: 3,
        created_at: chrono::Utc::now(),
    }
}

fn context() -> CounterContext {
    CounterContext {
        opus: false,
        weekly_reset: (1, 0),
        rate_window: Some(("rate:key:bench:1764583200".into(), 120)),
    }
}

/// CPU seconds (user + system) this process has used.
fn own_cpu() -> f64 {
    cpu_of("self").unwrap_or(0.0)
}

/// CPU seconds of a process from `/proc/<pid>/stat` (clock ticks of 1/100 s).
fn cpu_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn mariadb_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().to_string();
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (name.chars().all(|c| c.is_ascii_digit()) && matches!(comm.trim(), "mariadbd" | "mysqld"))
            .then_some(name)
    })
}

/// Appends `n` events and returns (wall µs per event, CPU µs per event, bytes per event).
fn append_cost(dir: &Path, n: u64) -> (f64, f64, f64) {
    let journal = Journal::open(
        dir,
        FsyncPolicy::Interval(Duration::from_millis(1000)),
        0,
        JournalMode::Both,
    )
    .expect("journal");
    let events: Vec<UsageEvent> = (0..n).map(event).collect();
    let cpu = own_cpu();
    let started = Instant::now();
    for e in events {
        journal.append(&e, &context()).expect("append");
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu() - cpu;
    let per = |x: f64| x * 1e6 / n as f64;
    let bytes = journal.stats().unarchived_bytes as f64 / n as f64;
    (per(wall), per(cpu), bytes)
}

fn vars(id: &str, dir: &Path) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("REDIS_") || k.starts_with("MYSQL_") || k.starts_with("USAGE_BATCH")
        })
        .collect();
    vars.insert("DATABASE_TYPE".into(), "hybrid".into());
    vars.insert("ENCRYPTION_KEY".into(), "b".repeat(32));
    vars.insert("MYSQL_DATABASE".into(), format!("crledger_{id}"));
    vars.insert("REDIS_KEY_PREFIX".into(), format!("crledger:{id}:"));
    vars.insert("USAGE_JOURNAL_DIR".into(), dir.display().to_string());
    vars
}

/// Journals `n` events with no relay running (a backlog left by an outage), then starts a
/// hybrid relay on that journal and times the archive writer until the backlog is gone.
/// Returns (seconds, events/s, MariaDB CPU µs per event, relay CPU µs per event).
fn drain_backlog(config: Config, n: u64) -> (f64, f64, Option<f64>, f64) {
    {
        let journal = Journal::open(
            &config.journal_dir,
            FsyncPolicy::Never,
            0,
            JournalMode::Both,
        )
        .expect("journal");
        for i in 0..n {
            journal.append(&event(i), &context()).expect("append");
        }
        journal.sync().expect("sync");
    }
    let mariadb = mariadb_pid();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let actors = Actors::start(&config, true).expect("actors");
            let router = actors.router.clone();
            // Wait for MySQL (the database is created and migrated on first contact).
            let ready = Instant::now();
            while router
                .health(Duration::from_secs(1))
                .await
                .is_none_or(|h| !h.mysql.connected)
            {
                assert!(ready.elapsed() < Duration::from_secs(60), "mysql not up");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let db_cpu = mariadb.as_deref().and_then(cpu_of);
            let relay_cpu = own_cpu();
            let started = Instant::now();
            loop {
                let left = router.usage_stats().await.journal.unarchived_records;
                if left == 0 {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(1800),
                    "backlog not drained: {left} left"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let secs = started.elapsed().as_secs_f64();
            let relay = (own_cpu() - relay_cpu) * 1e6 / n as f64;
            let db = match (db_cpu, mariadb.as_deref().and_then(cpu_of)) {
                (Some(a), Some(b)) => Some((b - a) * 1e6 / n as f64),
                _ => None,
            };
            actix_rt::System::current().stop();
            (secs, n as f64 / secs, db, relay)
        })
    })
    .join()
    .expect("drain thread")
}

fn cleanup(config: &Config) {
    let status = std::process::Command::new("mariadb")
        .args([
            "--protocol=TCP",
            "-h",
            &config.mysql.host,
            "-P",
            &config.mysql.port.to_string(),
            "-u",
            &config.mysql.user,
            "-e",
            &format!("DROP DATABASE IF EXISTS `{}`", config.mysql.database),
        ])
        .status();
    if status.is_err() {
        eprintln!("could not drop {}", config.mysql.database);
    }
    let _ = std::fs::remove_dir_all(&config.journal_dir);
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/results/ledger.md".into());
    let backlog: u64 = std::env::var("BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let root = std::env::temp_dir().join(format!("crledger-{id}"));

    let (append_wall, append_cpu, bytes) = append_cost(&root.join("append"), 200_000);
    println!(
        "append: {append_wall:.2} µs wall, {append_cpu:.2} µs CPU, {bytes:.0} bytes per event"
    );

    let config = Config::from_map(&vars(&id, &root.join("drain"))).expect("configuration");
    let (secs, rate, db_cpu, relay_cpu) = drain_backlog(config.clone(), backlog);
    println!(
        "drain: {backlog} events in {secs:.1} s = {rate:.0} events/s; CPU per event: relay {relay_cpu:.1} µs, MariaDB {}",
        db_cpu.map_or("?".into(), |d| format!("{d:.1} µs"))
    );
    cleanup(&config);
    let _ = std::fs::remove_dir_all(&root);

    let mut md = String::new();
    let _ = writeln!(md, "# Usage ledger benchmark\n");
    let _ = writeln!(
        md,
        "`scripts/bench-ledger.sh` (release build) on this project's machine (2 cores shared \
         with Redis, MariaDB and the benchmark). One run, {}.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(md, "| what | figure |\n|---|---|");
    let _ = writeln!(
        md,
        "| journal append on the hot path (one `write`) | {append_cpu:.2} µs CPU, {append_wall:.2} µs wall per event |"
    );
    let _ = writeln!(md, "| journal record size | {bytes:.0} bytes per event |");
    let _ = writeln!(
        md,
        "| archive rate (journal → MariaDB, with daily roll-ups) | {rate:.0} events/s |"
    );
    let _ = writeln!(md, "| drain of a {backlog}-event backlog | {secs:.1} s |");
    if let Some(db) = db_cpu {
        let _ = writeln!(md, "| MariaDB CPU per archived event | {db:.1} µs |");
    }
    let _ = writeln!(
        md,
        "| relay CPU per archived event (journal read, decode, the archive writer) | {relay_cpu:.1} µs |"
    );
    std::fs::write(&out, md).expect("write results");
    println!("wrote {out}");
}
