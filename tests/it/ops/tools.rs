//! `rebuild-cache` after a Redis wipe, `diagnose` (healthy, MySQL down, eviction policy)
//! and `check` (passes, cleans up) in each mode.

use chrono::Utc;
use claude_relay::domain::api_key::ApiKey;
use claude_relay::domain::keys::{generate_key, hash_key};
use claude_relay::domain::pricing::is_opus;
use claude_relay::domain::usage_event::UsageEvent;
use claude_relay::ledger::CounterContext;
use secrecy::ExposeSecret;

use super::{actors, cli, cli_ok, counter_snapshot, redis_keys, wipe_redis};
use crate::support::mysql::scalar;
use crate::support::{TestEnv, eventually, free_port};

#[actix_rt::test]
async fn rebuild_cache_after_a_redis_wipe_restores_counters_from_the_archive() {
    let env = TestEnv::new();
    cli_ok(&env, &["init"]);
    let config = env.config();
    let a = actors(&config).await;
    let plain = generate_key("cr_");
    let mut key = ApiKey::new(
        uuid::Uuid::new_v4().to_string(),
        "rebuild".into(),
        hash_key(&plain, config.encryption_key.expose_secret()),
    );
    key.weekly_reset_day = 3;
    a.router.create_key(key.clone()).await.unwrap();
    for (i, model) in [
        "claude-opus-4-1-20250805",
        "claude-sonnet-4-20250514",
        "claude-opus-4-1-20250805",
        "claude-3-5-haiku-20241022",
    ]
    .iter()
    .enumerate()
    {
        let e = UsageEvent {
            request_id: uuid::Uuid::new_v4().to_string(),
            upstream_request_id: None,
            api_key_id: key.id.clone(),
            account_id: "acct-1".into(),
            model: model.to_string(),
            input_tokens: 10 + i as i64,
            output_tokens: 7,
            cache_create_5m_tokens: 3,
            cache_create_1h_tokens: 1,
            cache_read_tokens: 2,
            cost_micros: 999 + i as i64,
            status_code: 200,
            is_stream: false,
            latency_ms: 12,
            created_at: Utc::now(),
        };
        let u = CounterContext {
            opus: is_opus(model),
            weekly_reset: (3, 0),
            rate_window: None,
        };
        a.router.record_usage(e, u).await.unwrap();
    }
    let db = env.direct_mysql();
    eventually(
        std::time::Duration::from_secs(10),
        "4 archived rows",
        || {
            let (db, router, prefix) = (db.clone(), a.router.clone(), env.key_prefix.clone());
            async move {
                router.drain_usage(std::time::Duration::from_secs(10)).await;
                match scalar(&db, "SELECT COUNT(*) AS n FROM usage_records") {
                    4 => Ok(()),
                    n => Err(format!(
                        "{n} rows; stats {:?}; redis keys {:?}",
                        router.usage_stats().await,
                        redis_keys(&prefix)
                            .into_iter()
                            .filter(|k| !k.starts_with("usage:"))
                            .collect::<Vec<_>>()
                    )),
                }
            }
        },
    )
    .await;
    let before = counter_snapshot(&env.key_prefix);
    assert!(
        before.keys().any(|k| k.contains(":opus_week:")),
        "{before:?}"
    );
    wipe_redis(&env.key_prefix);
    let out = cli_ok(&env, &["rebuild-cache"]);
    // The running instance may have noticed the wipe first and rebuilt its key's three
    // limit counter sets (total, day, weekly Opus) itself; the command restores the rest.
    assert!(
        out.contains("before: 0 counter sets") || out.contains("before: 3 counter sets"),
        "{out}"
    );
    assert_eq!(counter_snapshot(&env.key_prefix), before);
    assert!(
        redis_keys(&env.key_prefix)
            .iter()
            .any(|k| k.starts_with("cache:apikey:")),
        "the key cache is filled again"
    );
}

#[actix_rt::test]
async fn diagnose_names_mysql_when_it_is_down_and_passes_when_healthy() {
    let env = TestEnv::new();
    cli_ok(&env, &["init"]);
    let out = cli_ok(&env, &["diagnose"]);
    assert!(out.contains("[OK  ] schema version"), "{out}");
    assert!(out.contains("[OK  ] mysql connectivity"), "{out}");
    assert!(out.contains("[OK  ] redis connectivity"), "{out}");
    assert!(out.contains("redis maxmemory-policy"), "{out}");
    assert!(out.contains("data counts: api_keys 0"), "{out}");

    let port = free_port();
    let down = TestEnv::new().with("MYSQL_PORT", port.to_string());
    let (ok, out) = cli(&down, &["diagnose"]);
    assert!(!ok, "diagnose must fail: {out}");
    assert!(
        out.contains(&format!(
            "[FAIL] mysql connectivity: mysql at 127.0.0.1:{port}"
        )),
        "{out}"
    );
    assert!(
        out.contains("diagnose: 1 failure(s): mysql connectivity"),
        "{out}"
    );
}

#[actix_rt::test]
async fn diagnose_warns_about_an_allkeys_eviction_policy() {
    let mut redis = crate::support::RedisServer::spawn();
    let env = TestEnv::new().with("REDIS_PORT", redis.port().to_string());
    cli_ok(&env, &["init"]);
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut conn)
        .unwrap();
    let out = cli_ok(&env, &["diagnose"]);
    assert!(
        out.contains("[WARN] redis maxmemory-policy: allkeys-lru"),
        "{out}"
    );
    redis.stop();
    let (ok, out) = cli(&env, &["diagnose"]);
    assert!(!ok && out.contains("[FAIL] redis connectivity"), "{out}");
}

#[actix_rt::test]
async fn check_passes_and_cleans_up_in_every_mode() {
    for mode in ["hybrid", "mysql", "redis"] {
        let env = TestEnv::new().with("DATABASE_TYPE", mode);
        cli_ok(&env, &["init"]);
        let out = cli_ok(&env, &["check"]);
        assert!(
            out.contains("check: all steps passed, probes removed"),
            "{mode}: {out}"
        );
        assert!(out.contains("routing: api keys"), "{out}");
        let left: Vec<String> = redis_keys(&env.key_prefix)
            .into_iter()
            .filter(|k| k.contains("probe"))
            .collect();
        assert!(left.is_empty(), "{mode}: probes left in Redis: {left:?}");
        if mode != "redis" {
            let db = env.direct_mysql();
            assert_eq!(
                scalar(&db, "SELECT COUNT(*) AS n FROM api_keys"),
                0,
                "{mode}"
            );
            assert_eq!(
                scalar(&db, "SELECT COUNT(*) AS n FROM kv_entries"),
                0,
                "{mode}"
            );
        }
    }
}
