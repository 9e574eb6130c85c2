//! The data layer of issue 3 through `RouterHandle`, against real Redis and MariaDB: one
//! contract suite run in every storage mode, the degradation table of SPEC §1 (hybrid),
//! consistency of the key caches, no-loss usage archiving, concurrency and bad input.
//! This file holds the helpers the suites share.

/// Defines, in the calling module, one `#[actix_rt::test]` per mode for each named contract function.
macro_rules! in_every_mode {
    ($($name:ident),* $(,)?) => {
        mod hybrid {
            $(#[actix_rt::test]
            async fn $name() {
                super::$name(claude_relay::config::StorageMode::Hybrid).await
            })*
        }
        mod redis {
            $(#[actix_rt::test]
            async fn $name() {
                super::$name(claude_relay::config::StorageMode::Redis).await
            })*
        }
        mod mysql {
            $(#[actix_rt::test]
            async fn $name() {
                super::$name(claude_relay::config::StorageMode::Mysql).await
            })*
        }
    };
}

mod archive_rows;
mod bad_input;
mod concurrency;
mod consistency;
mod contract;
mod degradation;
mod no_loss;
mod record_batch;
mod replay;

use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use claude_relay::actors::router::{HealthStatus, RouterHandle};
use claude_relay::app::Actors;
use claude_relay::config::StorageMode;
use claude_relay::domain::account::{Account, AccountStatus, AccountType};
use claude_relay::domain::api_key::ApiKey;
use claude_relay::domain::crypto::CredentialCipher;
use claude_relay::domain::keys::{generate_key, hash_key};
use claude_relay::domain::usage_event::UsageEvent;
use claude_relay::error::AppError;
use claude_relay::ledger::CounterContext;

use crate::support::{TestEnv, eventually, mysql};

/// Generous bound for anything asynchronous: 4 tests share 2 cores.
pub const RECOVER: Duration = Duration::from_secs(30);

/// A test environment in `mode` with a fast usage writer.
pub fn env_in(mode: StorageMode) -> TestEnv {
    TestEnv::new()
        .with("DATABASE_TYPE", mode.as_str())
        .with("USAGE_BATCH_INTERVAL_MS", "100")
}

/// Starts cache, persistence and router actors for `env` (inside the test's System).
pub fn start(env: &TestEnv) -> Actors {
    Actors::start(&env.config(), true).expect("actors start")
}

/// Waits until the router reports `want`.
pub async fn wait_status(router: &RouterHandle, want: HealthStatus) {
    eventually(RECOVER, &format!("router health {want:?}"), || async {
        match router.health(Duration::from_secs(2)).await {
            Some(h) if h.status == want => Ok(()),
            Some(h) => Err(format!(
                "{:?} redis={:?} mysql={:?}",
                h.status, h.redis, h.mysql
            )),
            None => Err("router did not answer".into()),
        }
    })
    .await
}

/// Waits until the router sees `backend` ("redis" | "mysql") as `up`.
pub async fn wait_backend(router: &RouterHandle, backend: &str, up: bool) {
    eventually(
        RECOVER,
        &format!("router sees {backend} up={up}"),
        || async {
            let h = router
                .health(Duration::from_secs(2))
                .await
                .ok_or("router did not answer")?;
            let view = if backend == "redis" {
                &h.redis
            } else {
                &h.mysql
            };
            if view.connected == up {
                Ok(())
            } else {
                Err(format!("{view:?}"))
            }
        },
    )
    .await
}

/// Now, at the precision MySQL stores (DATETIME(6)), so records compare equal after a
/// round trip.
pub fn now_micros() -> chrono::DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .expect("truncate")
}

/// A fresh key record and its plaintext, hashed with the environment's ENCRYPTION_KEY.
pub fn new_key(env: &TestEnv, name: &str) -> (String, ApiKey) {
    let plaintext = generate_key("cr_");
    let hash = hash_key(&plaintext, env.var("ENCRYPTION_KEY").expect("key"));
    let mut key = ApiKey::new(uuid::Uuid::new_v4().to_string(), name.to_string(), hash);
    let now = now_micros();
    key.created_at = now;
    key.updated_at = now;
    (plaintext, key)
}

/// A fresh console account with encrypted credentials.
pub fn new_account(env: &TestEnv, name: &str, priority: i32) -> Account {
    let cipher = CredentialCipher::new(env.var("ENCRYPTION_KEY").expect("key")).expect("cipher");
    let now = now_micros();
    Account {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        description: String::new(),
        account_type: AccountType::ClaudeConsole,
        base_url: Some("http://127.0.0.1:18080".into()),
        credentials_encrypted: cipher
            .seal(r#"{"apiKey":"sk-upstream-test"}"#)
            .expect("seal"),
        proxy_encrypted: None,
        token_expires_at: None,
        scope: "shared".into(),
        priority,
        schedulable: true,
        is_active: true,
        status: AccountStatus::Active,
        status_until: None,
        error_message: String::new(),
        max_concurrency: 0,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        last_refresh_at: None,
        group_ids: Vec::new(),
        model_cooldowns: Default::default(),
        model_mapping: Default::default(),
        user_agent: None,
        session_window: None,
        auto_stop_on_warning: false,
        daily_quota: 0.0,
        subscription: None,
    }
}

/// One usage event of `key_id` with distinct token numbers derived from `i`.
pub fn event(key_id: &str, account_id: &str, i: i64) -> UsageEvent {
    UsageEvent {
        request_id: uuid::Uuid::new_v4().to_string(),
        upstream_request_id: None,
        api_key_id: key_id.to_string(),
        account_id: account_id.to_string(),
        model: "claude-sonnet-4-5".into(),
        input_tokens: 100 + i,
        output_tokens: 10,
        cache_create_5m_tokens: 2,
        cache_create_1h_tokens: 1,
        cache_read_tokens: 5,
        cost_micros: 1_000,
        status_code: 200,
        is_stream: false,
        latency_ms: 12,
        created_at: now_micros(),
    }
}

/// What an event needs besides itself to be counted: not Opus, the default weekly reset, no
/// rate window.
pub fn updates(_e: &UsageEvent) -> CounterContext {
    CounterContext {
        opus: false,
        weekly_reset: (1, 0),
        rate_window: None,
    }
}

/// Asserts a 503 `storage_unavailable` whose message names the cause.
#[track_caller]
pub fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, AppError>, what: &str) {
    match result {
        Err(AppError::StorageUnavailable(message)) => {
            assert!(
                message.starts_with("storage unavailable"),
                "{what}: unclear message {message:?}"
            );
        }
        other => panic!("{what}: expected StorageUnavailable, got {other:?}"),
    }
}

/// `SELECT … AS n` on the test's database, directly (not through any proxy).
pub fn count(env: &TestEnv, sql: &str) -> i64 {
    mysql::scalar(&env.direct_mysql(), sql)
}

/// A blocking connection to the Redis on `port` (one helper for every suite).
pub use crate::support::env::redis_connection as redis_conn;

/// The shared Redis port.
pub fn shared_redis_port() -> u16 {
    crate::support::env::backends().redis_port
}

/// Runs one Redis command on a fresh blocking connection to `port`.
pub fn redis_query<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> T {
    cmd.query(&mut redis_conn(port)).expect("redis command")
}
