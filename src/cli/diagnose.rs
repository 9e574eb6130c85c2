//! `claude-relay diagnose`: every item of SPEC §3's row (connectivity, latency, versions,
//! schema version, cache hit rate, pool use, Redis memory / clients / slow log, MySQL
//! threads / slow queries / row-lock waits, data counts, configuration problems), each as
//! OK / WARN / FAIL with a hint. Exits non-zero when something fails.

use std::time::{Duration, Instant};

use crate::app::Actors;
use crate::config::Config;
use crate::persistence::ops as queries;

/// How long diagnose waits for a backend before calling it down.
const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Findings {
    items: Vec<(Level, String, String, String)>,
}

impl Findings {
    fn add(&mut self, level: Level, item: &str, detail: impl Into<String>, hint: &str) {
        let (detail, hint) = (detail.into(), hint.to_string());
        let tag = match level {
            Level::Ok => "OK  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        if hint.is_empty() || level == Level::Ok {
            println!("[{tag}] {item}: {detail}");
        } else {
            println!("[{tag}] {item}: {detail}\n       hint: {hint}");
        }
        self.items.push((level, item.to_string(), detail, hint));
    }
    fn ok(&mut self, item: &str, detail: impl Into<String>) {
        self.add(Level::Ok, item, detail, "");
    }
}

pub async fn run(config: Config) -> Result<(), String> {
    let mut f = Findings { items: Vec::new() };
    println!(
        "claude-relay {} diagnose (mode {})",
        env!("CARGO_PKG_VERSION"),
        config.mode.as_str()
    );
    f.ok(
        "config",
        format!(
            "mode {}, timezone offset {}h",
            config.mode.as_str(),
            config.timezone_offset_hours
        ),
    );
    let actors =
        Actors::start(&config, false).map_err(|e| format!("cannot open USAGE_JOURNAL_DIR: {e}"))?;
    let deadline = Instant::now() + WAIT;
    let report = loop {
        let r = actors.router.health(Duration::from_secs(1)).await;
        let ready = r.as_ref().is_some_and(|r| {
            (!r.redis.used || r.redis.connected) && (!r.mysql.used || r.mysql.connected)
        });
        if ready || Instant::now() > deadline {
            break r.ok_or("the router did not answer")?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Redis.
    if !report.redis.used {
        f.ok("redis", "not used in this mode");
    } else if !report.redis.connected {
        f.add(
            Level::Fail,
            "redis connectivity",
            format!(
                "redis at {}:{} not reachable ({})",
                config.redis.host,
                config.redis.port,
                report.redis.error.clone().unwrap_or_default()
            ),
            "start Redis or fix REDIS_HOST / REDIS_PORT / REDIS_PASSWORD",
        );
    } else {
        redis_items(&actors, &config, &mut f).await;
    }
    // MySQL.
    if !report.mysql.used {
        f.ok("mysql", "not used in this mode");
    } else if !report.mysql.connected {
        f.add(
            Level::Fail,
            "mysql connectivity",
            format!(
                "mysql at {}:{} (database {}) not reachable ({})",
                config.mysql.host,
                config.mysql.port,
                config.mysql.database,
                report.mysql.error.clone().unwrap_or_default()
            ),
            "start MySQL / MariaDB or fix MYSQL_HOST / MYSQL_PORT / MYSQL_USER; `claude-relay init` creates the database",
        );
    } else {
        mysql_items(&actors, &config, &mut f).await;
    }
    let stats = actors.router.cache_stats().await;
    let lookups = stats.key_cache_hits + stats.key_cache_misses;
    if lookups == 0 {
        f.ok(
            "cache hit rate",
            "no lookups in this process (the running relay reports it on /metrics)",
        );
    } else {
        f.ok(
            "cache hit rate",
            format!(
                "{:.1}%",
                stats.key_cache_hits as f64 * 100.0 / lookups as f64
            ),
        );
    }
    match crate::ledger::journal::inspect(&config.journal_dir) {
        Ok(j) => {
            let age = j
                .oldest_unarchived
                .map(|t| (chrono::Utc::now() - t).num_seconds().max(0))
                .unwrap_or(0);
            let text = format!(
                "{} events not archived yet ({} bytes in {} segment(s), oldest {age}s) in {}{}",
                j.unarchived,
                j.bytes,
                j.segments,
                config.journal_dir.display(),
                if j.in_use {
                    ", held by a running relay"
                } else {
                    ""
                }
            );
            if j.corrupt > 0 {
                f.add(
                    Level::Warn,
                    "usage journal",
                    format!("{text}; {} unreadable record(s) skipped", j.corrupt),
                    "a record failed its checksum (disk or a crash mid-write); it cannot be archived",
                );
            } else if u64::try_from(age).unwrap_or(0) > config.backlog_degraded_after.as_secs() {
                f.add(
                    Level::Warn,
                    "usage journal",
                    text,
                    "events are archived when MySQL is up and a relay runs on this directory",
                );
            } else {
                f.ok("usage journal", text);
            }
        }
        Err(e) => f.add(
            Level::Fail,
            "usage journal",
            format!("{} cannot be read: {e}", config.journal_dir.display()),
            "check USAGE_JOURNAL_DIR and its permissions",
        ),
    }
    let fails: Vec<&str> = f
        .items
        .iter()
        .filter(|i| i.0 == Level::Fail)
        .map(|i| i.1.as_str())
        .collect();
    let warns = f.items.iter().filter(|i| i.0 == Level::Warn).count();
    if fails.is_empty() {
        println!("diagnose: no failures, {warns} warning(s)");
        Ok(())
    } else {
        Err(format!(
            "diagnose: {} failure(s): {}; {warns} warning(s)",
            fails.len(),
            fails.join(", ")
        ))
    }
}

async fn redis_items(actors: &Actors, config: &Config, f: &mut Findings) {
    match actors.cache.ping().await {
        Ok(d) => {
            let ms = d.as_secs_f64() * 1000.0;
            if ms > 50.0 {
                f.add(
                    Level::Warn,
                    "redis latency",
                    format!("{ms:.1}ms"),
                    "Redis should answer in well under a millisecond on a LAN",
                );
            } else {
                f.ok(
                    "redis connectivity",
                    format!("{}:{} PING {ms:.2}ms", config.redis.host, config.redis.port),
                );
            }
        }
        Err(e) => f.add(
            Level::Fail,
            "redis connectivity",
            e.to_string(),
            "check Redis",
        ),
    }
    let figures = match actors.cache.server_figures().await {
        Ok(x) => x,
        Err(e) => {
            f.add(
                Level::Warn,
                "redis info",
                e.to_string(),
                "INFO failed; is the user allowed to run it?",
            );
            return;
        }
    };
    let info = |k: &str| figures.info.get(k).cloned().unwrap_or_else(|| "?".into());
    let version = info("redis_version");
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 6 {
        f.ok("redis version", version);
    } else {
        f.add(
            Level::Warn,
            "redis version",
            version,
            "Redis 6 or newer is expected",
        );
    }
    let maxmemory: u64 = info("maxmemory").parse().unwrap_or(0);
    let used: u64 = info("used_memory").parse().unwrap_or(0);
    let mem = format!(
        "used {} of {}",
        info("used_memory_human"),
        if maxmemory == 0 {
            "unlimited".to_string()
        } else {
            info("maxmemory_human")
        }
    );
    if maxmemory > 0 && used * 10 > maxmemory * 9 {
        f.add(
            Level::Warn,
            "redis memory",
            mem,
            "above 90% of maxmemory: raise it or expect evictions",
        );
    } else {
        f.ok("redis memory", mem);
    }
    f.ok(
        "redis clients",
        format!(
            "{} connected, {} blocked",
            info("connected_clients"),
            info("blocked_clients")
        ),
    );
    match figures.slowlog_len {
        Some(n) if n > 100 => f.add(
            Level::Warn,
            "redis slowlog",
            format!("{n} entries"),
            "look at SLOWLOG GET for slow commands",
        ),
        Some(n) => f.ok("redis slowlog", format!("{n} entries")),
        None => f.ok("redis slowlog", "not readable (SLOWLOG disabled)"),
    }
    match figures.maxmemory_policy.as_deref() {
        Some(p) if p.starts_with("allkeys-") => f.add(
            Level::Warn,
            "redis maxmemory-policy",
            p.to_string(),
            "allkeys-* policies may evict real-time counters and leases; use noeviction (or volatile-lru) and size maxmemory",
        ),
        Some(p) => f.ok("redis maxmemory-policy", p.to_string()),
        None => f.ok("redis maxmemory-policy", "not readable (CONFIG disabled)"),
    }
    let counters = actors
        .cache
        .counter_names()
        .await
        .map(|n| n.len())
        .unwrap_or(0);
    f.ok(
        "redis data",
        format!(
            "{} keys in db {}, {counters} counter sets under prefix `{}`",
            figures.dbsize, config.redis.db, config.redis.key_prefix
        ),
    );
}

async fn mysql_items(actors: &Actors, config: &Config, f: &mut Findings) {
    let started = Instant::now();
    let figures = match actors
        .store
        .exec(|c| Box::pin(queries::mysql_figures(c)))
        .await
    {
        Ok(x) => x,
        Err(e) => {
            f.add(
                Level::Fail,
                "mysql connectivity",
                e.to_string(),
                "check MySQL and the user's rights on the database",
            );
            return;
        }
    };
    f.ok(
        "mysql connectivity",
        format!(
            "{}:{} database {} answered in {:.1}ms",
            config.mysql.host,
            config.mysql.port,
            config.mysql.database,
            started.elapsed().as_secs_f64() * 1000.0
        ),
    );
    f.ok("mysql version", figures.version.clone());
    let mysql = config.mysql.clone();
    match tokio::task::spawn_blocking(move || queries::schema_state(&mysql)).await {
        Ok(Ok((applied, 0))) => f.ok(
            "schema version",
            format!(
                "{} (all {} migrations applied)",
                applied.last().cloned().unwrap_or_default(),
                applied.len()
            ),
        ),
        Ok(Ok((_, pending))) => f.add(
            Level::Fail,
            "schema version",
            format!("{pending} migration(s) pending"),
            "run `claude-relay init` (or start the relay, which migrates)",
        ),
        Ok(Err(e)) => f.add(Level::Fail, "schema version", e, "check the database"),
        Err(e) => f.add(Level::Fail, "schema version", e.to_string(), ""),
    }
    let status = |k: &str| {
        figures
            .status
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "?".into())
    };
    f.ok(
        "mysql threads",
        format!(
            "{} connected, {} running (max_connections {})",
            status("threads_connected"),
            status("threads_running"),
            figures
                .max_connections
                .clone()
                .unwrap_or_else(|| "?".into())
        ),
    );
    let slow: u64 = status("slow_queries").parse().unwrap_or(0);
    if slow > 0 {
        f.add(
            Level::Warn,
            "mysql slow queries",
            slow.to_string(),
            "see the slow query log",
        );
    } else {
        f.ok("mysql slow queries", "0");
    }
    let waits = status("innodb_row_lock_current_waits");
    f.ok(
        "mysql row-lock waits",
        format!(
            "{} total, {waits} now, {}ms average",
            status("innodb_row_lock_waits"),
            status("innodb_row_lock_time_avg")
        ),
    );
    let pool = actors.store.pool_status().await;
    if pool.max_size > 0 && pool.in_use * 10 >= pool.max_size * 9 {
        f.add(
            Level::Warn,
            "pool use",
            format!("{}/{} in use", pool.in_use, pool.max_size),
            "raise MYSQL_CONNECTION_LIMIT",
        );
    } else {
        f.ok(
            "pool use",
            format!(
                "{}/{} in use, {} open",
                pool.in_use, pool.max_size, pool.size
            ),
        );
    }
    for replica in &pool.replicas {
        let item = format!("mysql replica {}", replica.host);
        match (&replica.last_error, replica.lag_seconds) {
            _ if replica.readable => f.ok(
                &item,
                format!("read from, {} s behind", replica.lag_seconds.unwrap_or(0)),
            ),
            (Some(error), _) => f.add(
                Level::Warn,
                &item,
                format!("not read from: {error}"),
                "reports and listings use the primary until it recovers",
            ),
            (None, _) => f.ok(&item, "not probed yet"),
        }
    }
    let counts: Vec<String> = figures
        .counts
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    f.ok("data counts", counts.join(", "));
    let admins = figures
        .counts
        .iter()
        .find(|(t, _)| t == "admin_users")
        .map_or(0, |c| c.1);
    if admins == 0 {
        f.add(
            Level::Warn,
            "admin users",
            "none",
            "run `claude-relay init` to create the admin",
        );
    }
}
