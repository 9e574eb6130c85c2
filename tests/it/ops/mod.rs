//! The operations commands (issue 6): `migrate to-hybrid` (CRS data set, our redis mode),
//! `migrate from-hybrid`, `rebuild-cache`, `diagnose` and `check`, run as the real binary
//! against real backends; results checked through the router and in MySQL / Redis.

mod crs;
mod modes;
mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use claude_relay::app::Actors;
use claude_relay::config::Config;

use crate::support::{RedisServer, TestEnv, eventually, run_cli};

/// The fixture data set A of a CRS v1.1.314 deployment (copied from shared/fixtures).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crs-redis")
}

/// A test-owned redis-server holding dataset-a.json in db 0 (CRS keys have no prefix).
pub fn crs_redis() -> RedisServer {
    let server = RedisServer::spawn();
    let dir = fixture_dir();
    let out = std::process::Command::new("python3")
        .arg(dir.join("tools/load_redis.py"))
        .arg(dir.join("dataset-a.json"))
        .args(["--port", &server.port().to_string(), "--db", "0", "--flush"])
        .output()
        .expect("python3 runs the fixture loader");
    assert!(
        out.status.success(),
        "loading dataset-a failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server
}

/// `crs_redis()` plus `tests/fixtures/crs-extra/dataset-subs.json` (issue 13 cases: a
/// Claude-Code-only key, an account group and a key bound to it) loaded over it.
pub fn crs_redis_with_subs() -> RedisServer {
    let server = crs_redis();
    let extra =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crs-extra/dataset-subs.json");
    let out = std::process::Command::new("python3")
        .arg(fixture_dir().join("tools/load_redis.py"))
        .arg(extra)
        .args(["--port", &server.port().to_string(), "--db", "0"])
        .output()
        .expect("python3 runs the fixture loader");
    assert!(
        out.status.success(),
        "loading dataset-subs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server
}

/// Runs the binary; returns (success, stdout + stderr).
pub fn cli(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let out: Output = run_cli(args, env);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs the binary and fails the test with its output unless it succeeded.
pub fn cli_ok(env: &TestEnv, args: &[&str]) -> String {
    let (ok, text) = cli(env, args);
    assert!(ok, "claude-relay {} failed:\n{text}", args.join(" "));
    text
}

/// The actors of `config` in this process, once the backends the mode uses answer.
pub async fn actors(config: &Config) -> Actors {
    // A journal directory of its own: routers of one test must not take over each other's.
    let mut config = config.clone();
    // In-process pools live until the test binary exits: keep them small.
    config.mysql.connection_limit = 2;
    config.journal_dir = config
        .journal_dir
        .join(uuid::Uuid::new_v4().simple().to_string());
    let actors = Actors::start(&config, false).expect("actors start");
    // Up, and the router's first cache flush done (it would delete what a test caches).
    eventually(Duration::from_secs(20), "backends up", || async {
        match actors.router.health(Duration::from_secs(1)).await {
            Some(r)
                if (!r.redis.used || r.redis.connected)
                    && (!r.mysql.used || r.mysql.connected)
                    && r.redis_cache_in_use =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    actors
}

/// A blocking connection to the shared Redis.
fn redis_conn() -> redis::Connection {
    crate::support::env::redis_connection(crate::support::env::backends().redis_port)
}

/// Every key of the shared Redis under `prefix` (prefix removed), sorted.
pub fn redis_keys(prefix: &str) -> Vec<String> {
    let mut conn = redis_conn();
    let mut out: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query::<Vec<String>>(&mut conn)
        .expect("KEYS")
        .into_iter()
        .map(|k| k[prefix.len()..].to_string())
        .collect();
    out.sort();
    out
}

/// Every real-time counter set under `prefix`: name → fields.
pub fn counter_snapshot(prefix: &str) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut conn = redis_conn();
    redis_keys(prefix)
        .into_iter()
        .filter(|k| {
            ["usage:key:", "usage:model:", "usage:account:", "cost:key:"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|k| {
            let fields: BTreeMap<String, i64> = redis::cmd("HGETALL")
                .arg(format!("{prefix}{k}"))
                .query(&mut conn)
                .expect("HGETALL");
            (k, fields)
        })
        .collect()
}

/// Deletes every key under `prefix` (a Redis wipe of this deployment).
pub fn wipe_redis(prefix: &str) {
    let mut conn = redis_conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .expect("KEYS");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(keys).query(&mut conn).expect("DEL");
    }
    // A running instance announces itself (`ledger:instances`) every 250 ms, wipe or not.
    let left: Vec<String> = redis_keys(prefix)
        .into_iter()
        .filter(|k| !k.ends_with("ledger:instances"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
