//! SPEC §1 degradation table (hybrid mode), one test per row and outage: Redis down is a
//! test-owned redis-server stopped (or a TCP proxy cut where the data must survive the
//! outage), MySQL down is a TCP proxy in front of MariaDB cut.

use std::time::Duration;

use claude_relay::actors::router::{EntryKind, HealthStatus};
use claude_relay::config::StorageMode;
use claude_relay::domain::account::{AccountStatus, StatusChange};
use claude_relay::domain::limits::{Admission, AdmissionRequest, Counters, WindowLimits};

use super::{
    RECOVER, assert_unavailable, count, env_in, event, new_account, new_key, now_micros,
    redis_query, shared_redis_port, start, updates, wait_backend, wait_status,
};
use crate::support::{RedisServer, TcpProxy, TestEnv, eventually};

/// Hybrid against a test-owned redis-server.
fn with_own_redis() -> (RedisServer, TestEnv) {
    let redis = RedisServer::spawn();
    let env = env_in(StorageMode::Hybrid).with("REDIS_PORT", redis.port().to_string());
    (redis, env)
}

/// Hybrid with MariaDB behind a proxy the test can cut.
fn with_mysql_proxy() -> (TcpProxy, TestEnv) {
    let proxy = TcpProxy::to_mysql();
    let env = env_in(StorageMode::Hybrid).with("MYSQL_PORT", proxy.port().to_string());
    (proxy, env)
}

/// Hybrid with the shared Redis behind a proxy (its data survives the outage).
fn with_redis_proxy() -> (TcpProxy, TestEnv) {
    let proxy = TcpProxy::new(&format!("127.0.0.1:{}", shared_redis_port()));
    let env = env_in(StorageMode::Hybrid).with("REDIS_PORT", proxy.port().to_string());
    (proxy, env)
}

fn redis_exists(key: &str) -> bool {
    redis_query::<i64>(shared_redis_port(), ::redis::cmd("EXISTS").arg(key)) == 1
}

/// Events of this relay's journal not archived yet.
async fn unarchived(router: &claude_relay::actors::router::RouterHandle) -> u64 {
    router.usage_stats().await.journal.unarchived_records
}

async fn wait_rows(env: &TestEnv, want: i64) {
    eventually(RECOVER, &format!("{want} archive rows"), || async {
        let n = count(env, "SELECT COUNT(*) AS n FROM usage_records");
        if n == want {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        }
    })
    .await;
}

fn lease_request(scope: &str, cap: u32, window: Option<WindowLimits>) -> AdmissionRequest {
    AdmissionRequest {
        lease_scope: scope.to_string(),
        lease_id: uuid::Uuid::new_v4().to_string(),
        lease_ttl_ms: 60_000,
        concurrency_limit: cap,
        window,
        cost_limits: Vec::new(),
    }
}

fn request_window(name: &str, max_requests: i64) -> WindowLimits {
    WindowLimits {
        name: name.to_string(),
        ttl_seconds: 120,
        resets_in_seconds: 42,
        max_requests,
        max_tokens: 0,
        max_cost_micros: 0,
    }
}

// ---- key validation ----

#[actix_rt::test]
async fn key_validation_with_redis_down_reads_mysql() {
    let (mut redis, env) = with_own_redis();
    let env = env.with("KEY_CACHE_TTL_SECONDS", "0");
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let (_, before) = new_key(&env, "before");
    router.create_key(before.clone()).await.expect("create");

    redis.stop();
    wait_backend(router, "redis", false).await;
    wait_status(router, HealthStatus::Degraded).await;
    assert_eq!(
        router
            .find_key_by_hash(&before.key_hash)
            .await
            .expect("find"),
        Some(before.clone())
    );
    let (_, during) = new_key(&env, "during");
    router.create_key(during.clone()).await.expect("create");
    assert_eq!(
        router
            .find_key_by_hash(&during.key_hash)
            .await
            .expect("find"),
        Some(during)
    );
    assert_eq!(
        router
            .find_key_by_hash(&"f".repeat(64))
            .await
            .expect("find"),
        None,
        "an unknown key is a plain miss, not an outage"
    );
}

#[actix_rt::test]
async fn key_validation_with_mysql_down_uses_the_redis_cache_and_refuses_unknown_keys() {
    let (proxy, env) = with_mysql_proxy();
    // No in-process cache: the Redis cache alone must answer.
    let env = env.with("KEY_CACHE_TTL_SECONDS", "0");
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let (_, key) = new_key(&env, "cached");
    router.create_key(key.clone()).await.expect("create");
    let cached = format!("{}cache:apikey:{}", env.key_prefix, key.key_hash);
    eventually(RECOVER, "key cached in redis", || async {
        router
            .find_key_by_hash(&key.key_hash)
            .await
            .map_err(|e| e.to_string())?;
        if redis_exists(&cached) {
            Ok(())
        } else {
            Err("not cached".into())
        }
    })
    .await;

    proxy.cut();
    wait_backend(router, "mysql", false).await;
    wait_status(router, HealthStatus::Degraded).await;
    assert_eq!(
        router.find_key_by_hash(&key.key_hash).await.expect("find"),
        Some(key.clone())
    );
    assert_unavailable(
        router.find_key_by_hash(&"e".repeat(64)).await,
        "unknown key with MySQL down",
    );
}

// ---- create / update / delete key or account ----

#[actix_rt::test]
async fn writes_with_redis_down_work_and_the_cache_is_flushed_on_return() {
    let (mut redis, env) = with_own_redis();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let (_, doomed) = new_key(&env, "doomed");
    router.create_key(doomed.clone()).await.expect("create");
    let doomed_account = new_account(&env, "doomed", 50);
    router
        .create_account(doomed_account.clone())
        .await
        .expect("create");

    redis.stop();
    wait_backend(router, "redis", false).await;
    let (_, mut key) = new_key(&env, "during");
    router.create_key(key.clone()).await.expect("create");
    key.name = "renamed during".into();
    router.save_key(key.clone(), None).await.expect("save");
    assert_eq!(
        router.get_key(&key.id).await.expect("get"),
        Some(key.clone())
    );
    assert!(router.delete_key(&doomed.id).await.expect("delete"));
    let mut account = new_account(&env, "during", 10);
    router
        .create_account(account.clone())
        .await
        .expect("create");
    account.priority = 20;
    router.save_account(account.clone()).await.expect("save");
    assert!(
        router
            .delete_account(&doomed_account.id)
            .await
            .expect("delete")
    );
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) AS n FROM api_keys WHERE name = 'renamed during'"
        ),
        1
    );
    assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM api_keys"), 1);
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) AS n FROM claude_accounts WHERE priority = 20"
        ),
        1
    );
    assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM claude_accounts"), 1);

    redis.start();
    wait_status(router, HealthStatus::Healthy).await;
    assert_eq!(
        router.find_key_by_hash(&key.key_hash).await.expect("find"),
        Some(key)
    );
    assert_eq!(
        router
            .find_key_by_hash(&doomed.key_hash)
            .await
            .expect("find"),
        None
    );
}

#[actix_rt::test]
async fn writes_with_mysql_down_are_refused_and_write_nothing() {
    let (proxy, env) = with_mysql_proxy();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let (_, existing) = new_key(&env, "existing");
    router.create_key(existing.clone()).await.expect("create");
    let account = new_account(&env, "existing", 10);
    router
        .create_account(account.clone())
        .await
        .expect("create");

    proxy.cut();
    wait_backend(router, "mysql", false).await;
    let (_, fresh) = new_key(&env, "fresh");
    assert_unavailable(router.create_key(fresh.clone()).await, "create key");
    let mut changed = existing.clone();
    changed.is_active = false;
    assert_unavailable(router.save_key(changed, None).await, "save key");
    assert_unavailable(router.delete_key(&existing.id).await, "delete key");
    assert_unavailable(
        router.create_account(new_account(&env, "fresh", 1)).await,
        "create account",
    );
    let mut moved = account.clone();
    moved.priority = 99;
    assert_unavailable(router.save_account(moved).await, "save account");
    assert_unavailable(router.delete_account(&account.id).await, "delete account");
    assert_unavailable(router.get_key(&existing.id).await, "get key");
    assert_unavailable(router.list_keys(true).await, "list keys");
    assert!(
        !redis_exists(&format!(
            "{}cache:apikey:{}",
            env.key_prefix, fresh.key_hash
        )),
        "nothing cached for a refused key"
    );

    proxy.open();
    wait_status(router, HealthStatus::Healthy).await;
    assert_eq!(router.get_key(&fresh.id).await.expect("get"), None);
    assert_eq!(
        router.get_key(&existing.id).await.expect("get"),
        Some(existing)
    );
    assert_eq!(
        router.get_account(&account.id).await.expect("get"),
        Some(account)
    );
    assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM api_keys"), 1);
    assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM claude_accounts"), 1);
}

// ---- relay: account choice ----

#[actix_rt::test]
async fn account_choice_with_redis_down_reads_mysql() {
    let (mut redis, env) = with_own_redis();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let a1 = new_account(&env, "a1", 10);
    router.create_account(a1.clone()).await.expect("create");

    redis.stop();
    wait_backend(router, "redis", false).await;
    let a2 = new_account(&env, "a2", 5);
    router.create_account(a2.clone()).await.expect("create");
    let snapshot = router.account_snapshot().await.expect("snapshot");
    assert_eq!(snapshot, vec![a2, a1]);
}

#[actix_rt::test]
async fn account_choice_with_mysql_down_uses_the_snapshot() {
    let (proxy, env) = with_mysql_proxy();
    let env = env.with("KEY_CACHE_TTL_SECONDS", "0");
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let a1 = new_account(&env, "a1", 10);
    let a2 = new_account(&env, "a2", 20);
    router.create_account(a1.clone()).await.expect("create");
    router.create_account(a2.clone()).await.expect("create");
    let cached = format!("{}cache:accounts", env.key_prefix);
    eventually(RECOVER, "account snapshot cached in redis", || async {
        router.account_snapshot().await.map_err(|e| e.to_string())?;
        if redis_exists(&cached) {
            Ok(())
        } else {
            Err("not cached".into())
        }
    })
    .await;

    proxy.cut();
    wait_backend(router, "mysql", false).await;
    // No in-process snapshot (KEY_CACHE_TTL_SECONDS=0): the Redis snapshot answers.
    assert_eq!(
        router.account_snapshot().await.expect("snapshot"),
        vec![a1.clone(), a2.clone()]
    );

    // A state change an upstream answer causes is applied at once, and written when
    // MySQL returns.
    let until = now_micros() + chrono::TimeDelta::seconds(300);
    let change = StatusChange {
        status: AccountStatus::RateLimited,
        until: Some(until),
        message: "429".into(),
    };
    router
        .change_account_status(&a1.id, change)
        .await
        .expect("status change while MySQL is down");
    let snapshot = router.account_snapshot().await.expect("snapshot");
    assert_eq!(snapshot[0].status, AccountStatus::RateLimited);
    assert_eq!(snapshot[1].status, AccountStatus::Active);

    proxy.open();
    wait_status(router, HealthStatus::Healthy).await;
    eventually(RECOVER, "status change written to MySQL", || async {
        let stored = router
            .get_account(&a1.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("gone")?;
        if stored.status == AccountStatus::RateLimited && stored.status_until == Some(until) {
            Ok(())
        } else {
            Err(format!(
                "{:?} until {:?}",
                stored.status, stored.status_until
            ))
        }
    })
    .await;
}

// ---- sticky sessions, admin login sessions (and OAuth tokens, locks) ----

#[actix_rt::test]
async fn sessions_with_redis_down_are_unavailable() {
    let (mut redis, env) = with_own_redis();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let ttl = Duration::from_secs(60);
    router
        .set_entry(EntryKind::Sticky, "s", "a".into(), ttl)
        .await
        .expect("set while up");

    redis.stop();
    wait_backend(router, "redis", false).await;
    for kind in [
        EntryKind::Sticky,
        EntryKind::AdminSession,
        EntryKind::OauthToken,
    ] {
        assert_unavailable(
            router.set_entry(kind, "s", "b".into(), ttl).await,
            &format!("set {kind:?}"),
        );
        assert_unavailable(router.get_entry(kind, "s").await, &format!("get {kind:?}"));
        assert_unavailable(
            router.touch_entry(kind, "s", ttl).await,
            &format!("touch {kind:?}"),
        );
        assert_unavailable(
            router.delete_entry(kind, "s").await,
            &format!("delete {kind:?}"),
        );
    }
    assert_unavailable(router.acquire_lock("l", "t", ttl).await, "lock");
}

#[actix_rt::test]
async fn sessions_with_mysql_down_work() {
    let (proxy, env) = with_mysql_proxy();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    proxy.cut();
    wait_backend(router, "mysql", false).await;
    let ttl = Duration::from_secs(60);
    for kind in [
        EntryKind::Sticky,
        EntryKind::AdminSession,
        EntryKind::OauthToken,
    ] {
        router
            .set_entry(kind, "s", format!("{kind:?}"), ttl)
            .await
            .expect("set");
        assert_eq!(
            router.get_entry(kind, "s").await.expect("get"),
            Some(format!("{kind:?}"))
        );
        assert!(router.touch_entry(kind, "s", ttl).await.expect("touch"));
        assert!(router.delete_entry(kind, "s").await.expect("delete"));
        assert_eq!(router.get_entry(kind, "s").await.expect("get"), None);
    }
    assert!(router.acquire_lock("l", "t", ttl).await.expect("lock"));
    assert!(!router.acquire_lock("l", "u", ttl).await.expect("lock"));
}

// ---- real-time usage / cost counters ----

#[actix_rt::test]
async fn counters_with_redis_down_are_paused_and_replayed_on_recovery() {
    let (proxy, env) = with_redis_proxy();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let key_id = uuid::Uuid::new_v4().to_string();
    let total = format!("usage:key:{key_id}:total");
    let events: Vec<_> = (0..5).map(|i| event(&key_id, "acct", i)).collect();
    for e in &events[..2] {
        router
            .record_usage(e.clone(), updates(e))
            .await
            .expect("record");
    }
    // Archived and counted in Redis before the outage (an event still in the Redis outbox
    // waits for Redis; counters still summed in process would count as local ones).
    wait_rows(&env, 2).await;
    assert!(
        router.flush_counters().await,
        "counters written to Redis before the outage"
    );

    proxy.cut();
    wait_backend(router, "redis", false).await;
    for e in &events[2..] {
        router
            .record_usage(e.clone(), updates(e))
            .await
            .expect("record");
    }
    // Paused in Redis; this instance counts locally (LIMITS_ON_CACHE_DOWN=local).
    let local = router
        .read_counters(vec![total.clone()])
        .await
        .expect("read");
    assert_eq!(local[0].requests, 3);
    // The archive keeps working meanwhile.
    wait_rows(&env, 5).await;

    proxy.open();
    wait_status(router, HealthStatus::Healthy).await;
    let want = Counters {
        requests: 5,
        input_tokens: 100 + 101 + 102 + 103 + 104,
        output_tokens: 50,
        cache_create_tokens: 15,
        cache_read_tokens: 25,
        cost_micros: 5_000,
    };
    eventually(RECOVER, "counters replayed", || async {
        let c = router
            .read_counters(vec![total.clone()])
            .await
            .map_err(|e| e.to_string())?;
        if c[0] == want {
            Ok(())
        } else {
            Err(format!("{:?}", c[0]))
        }
    })
    .await;
    // Replayed once: more drains (each waits for its batch) change nothing.
    for _ in 0..3 {
        router.drain_usage(std::time::Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        router.read_counters(vec![total]).await.expect("read")[0],
        want
    );
    assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM usage_records"), 5);
}

#[actix_rt::test]
async fn counters_with_mysql_down_work() {
    let (proxy, env) = with_mysql_proxy();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    proxy.cut();
    wait_backend(router, "mysql", false).await;
    let key_id = uuid::Uuid::new_v4().to_string();
    for i in 0..3 {
        let e = event(&key_id, "acct", i);
        router
            .record_usage(e.clone(), updates(&e))
            .await
            .expect("record");
    }
    let c = router
        .read_counters(vec![format!("usage:key:{key_id}:total")])
        .await
        .expect("read");
    assert_eq!(
        c[0],
        Counters {
            requests: 3,
            input_tokens: 303,
            output_tokens: 30,
            cache_create_tokens: 9,
            cache_read_tokens: 15,
            cost_micros: 3_000,
        }
    );
}

// ---- usage archive ----

#[actix_rt::test]
async fn archive_with_redis_down_works() {
    let (mut redis, env) = with_own_redis();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    redis.stop();
    wait_backend(router, "redis", false).await;
    let key_id = uuid::Uuid::new_v4().to_string();
    for i in 0..4 {
        let e = event(&key_id, "acct", i);
        router
            .record_usage(e.clone(), updates(&e))
            .await
            .expect("record");
    }
    wait_rows(&env, 4).await;
    assert_eq!(
        count(
            &env,
            "SELECT CAST(SUM(requests) AS SIGNED) AS n FROM usage_daily"
        ),
        4
    );
    redis.start();
    wait_status(router, HealthStatus::Healthy).await;
    for _ in 0..3 {
        router.drain_usage(std::time::Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM usage_records"), 4);
    assert_eq!(
        count(
            &env,
            "SELECT CAST(SUM(requests) AS SIGNED) AS n FROM usage_daily"
        ),
        4
    );
}

#[actix_rt::test]
async fn archive_with_mysql_down_waits_in_the_journal_and_is_written_once() {
    let (proxy, env) = with_mysql_proxy();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    proxy.cut();
    wait_backend(router, "mysql", false).await;
    let key_id = uuid::Uuid::new_v4().to_string();
    for i in 0..6 {
        let e = event(&key_id, "acct", i);
        router
            .record_usage(e.clone(), updates(&e))
            .await
            .expect("record");
    }
    assert_eq!(unarchived(router).await, 6);
    // Archive passes while MySQL is away keep everything.
    router.drain_usage(Duration::from_millis(300)).await;
    assert_eq!(unarchived(router).await, 6, "kept while MySQL is down");
    assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM usage_records"), 0);

    proxy.open();
    wait_rows(&env, 6).await;
    eventually(RECOVER, "journal archived", || async {
        match unarchived(router).await {
            0 => Ok(()),
            n => Err(format!("{n} left")),
        }
    })
    .await;
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(DISTINCT request_id) AS n FROM usage_records"
        ),
        6
    );
    assert_eq!(
        count(
            &env,
            "SELECT CAST(SUM(requests) AS SIGNED) AS n FROM usage_daily"
        ),
        6
    );
}

// ---- cost and rate limits, concurrency limits ----

async fn limits_with_redis_down(
    setting: &str,
) -> (RedisServer, TestEnv, claude_relay::app::Actors) {
    let (mut redis, env) = with_own_redis();
    let env = env.with("LIMITS_ON_CACHE_DOWN", setting);
    let actors = start(&env);
    wait_status(&actors.router, HealthStatus::Healthy).await;
    redis.stop();
    wait_backend(&actors.router, "redis", false).await;
    (redis, env, actors)
}

#[actix_rt::test]
async fn limits_with_redis_down_local_are_enforced_per_instance() {
    let (_redis, _env, actors) = limits_with_redis_down("local").await;
    let router = &actors.router;
    let scope = "key:local";
    let first = lease_request(scope, 2, None);
    assert_eq!(
        router.admit(first.clone()).await.expect("admit"),
        Admission::Granted
    );
    assert_eq!(
        router
            .admit(lease_request(scope, 2, None))
            .await
            .expect("admit"),
        Admission::Granted
    );
    assert_eq!(
        router
            .admit(lease_request(scope, 2, None))
            .await
            .expect("admit"),
        Admission::ConcurrencyExceeded
    );
    assert_eq!(router.count_leases(scope).await.expect("count"), 2);
    router.release_lease(scope, &first.lease_id).await;
    assert_eq!(
        router
            .admit(lease_request(scope, 2, None))
            .await
            .expect("admit"),
        Admission::Granted
    );
    let w = request_window("rate:key:local:w", 2);
    for _ in 0..2 {
        assert_eq!(
            router
                .admit(lease_request("key:w", 0, Some(w.clone())))
                .await
                .expect("admit"),
            Admission::Granted
        );
    }
    assert_eq!(
        router
            .admit(lease_request("key:w", 0, Some(w.clone())))
            .await
            .expect("admit"),
        Admission::RequestsExceeded {
            retry_after_secs: 42
        }
    );
    assert_eq!(
        router.read_counters(vec![w.name]).await.expect("read")[0].requests,
        2
    );
}

#[actix_rt::test]
async fn limits_with_redis_down_open_let_everything_through() {
    let (_redis, _env, actors) = limits_with_redis_down("open").await;
    let router = &actors.router;
    let w = request_window("rate:key:open:w", 1);
    for _ in 0..3 {
        assert_eq!(
            router
                .admit(lease_request("key:open", 1, Some(w.clone())))
                .await
                .expect("admit"),
            Admission::Granted
        );
    }
    assert_eq!(
        router.read_counters(vec![w.name]).await.expect("read"),
        vec![Counters::default()]
    );
}

#[actix_rt::test]
async fn limits_with_redis_down_closed_refuse_limited_requests() {
    let (_redis, _env, actors) = limits_with_redis_down("closed").await;
    let router = &actors.router;
    assert_unavailable(
        router.admit(lease_request("key:closed", 1, None)).await,
        "concurrency-limited request",
    );
    assert_unavailable(
        router
            .admit(lease_request(
                "key:closed",
                0,
                Some(request_window("rate:key:closed:w", 10)),
            ))
            .await,
        "rate-limited request",
    );
    assert_eq!(
        router
            .admit(lease_request("key:closed", 0, None))
            .await
            .expect("admit"),
        Admission::Granted,
        "a key without limits is not refused"
    );
    assert_unavailable(
        router.read_counters(vec!["usage:key:x:total".into()]).await,
        "counters",
    );
}

#[actix_rt::test]
async fn limits_with_mysql_down_are_enforced() {
    let (proxy, env) = with_mysql_proxy();
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    proxy.cut();
    wait_backend(router, "mysql", false).await;
    for want in [
        Admission::Granted,
        Admission::Granted,
        Admission::ConcurrencyExceeded,
    ] {
        assert_eq!(
            router
                .admit(lease_request("key:m", 2, None))
                .await
                .expect("admit"),
            want
        );
    }
    let w = request_window("rate:key:m:w", 1);
    assert_eq!(
        router
            .admit(lease_request("key:mw", 0, Some(w.clone())))
            .await
            .expect("admit"),
        Admission::Granted
    );
    assert_eq!(
        router
            .admit(lease_request("key:mw", 0, Some(w)))
            .await
            .expect("admit"),
        Admission::RequestsExceeded {
            retry_after_secs: 42
        }
    );
}

// ---- both down ----

#[actix_rt::test]
async fn both_down_known_keys_validate_and_everything_else_is_unavailable() {
    let mut redis = RedisServer::spawn();
    let proxy = TcpProxy::to_mysql();
    let env = env_in(StorageMode::Hybrid)
        .with("REDIS_PORT", redis.port().to_string())
        .with("MYSQL_PORT", proxy.port().to_string())
        .with("KEY_CACHE_TTL_SECONDS", "0");
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let (_, known) = new_key(&env, "known");
    router.create_key(known.clone()).await.expect("create");
    assert_eq!(
        router
            .find_key_by_hash(&known.key_hash)
            .await
            .expect("find"),
        Some(known.clone())
    );
    let account = new_account(&env, "a", 1);
    router
        .create_account(account.clone())
        .await
        .expect("create");

    redis.stop();
    proxy.cut();
    wait_status(router, HealthStatus::Unhealthy).await;
    // Past the in-process TTL (0 s here): the key seen before still validates.
    assert_eq!(
        router
            .find_key_by_hash(&known.key_hash)
            .await
            .expect("find"),
        Some(known.clone())
    );
    assert_unavailable(
        router.find_key_by_hash(&"d".repeat(64)).await,
        "unknown key",
    );
    let (_, fresh) = new_key(&env, "fresh");
    assert_unavailable(router.create_key(fresh).await, "create key");
    assert_unavailable(router.get_key(&known.id).await, "get key");
    assert_unavailable(router.list_keys(false).await, "list keys");
    assert_unavailable(router.get_account(&account.id).await, "get account");
    assert_unavailable(router.list_accounts().await, "list accounts");
    assert_unavailable(
        router
            .set_entry(EntryKind::Sticky, "s", "a".into(), Duration::from_secs(5))
            .await,
        "sticky session",
    );
    assert_unavailable(
        router.get_entry(EntryKind::AdminSession, "s").await,
        "admin session",
    );

    // Usage waits in the local journal and reaches MySQL (and the counters) once both are
    // back.
    let e = event(&known.id, &account.id, 0);
    router
        .record_usage(e.clone(), updates(&e))
        .await
        .expect("journaled");
    let journal = router.usage_stats().await.journal;
    assert_eq!(
        (journal.unarchived_records, journal.uncounted_records),
        (1, 1)
    );

    redis.start();
    proxy.open();
    wait_status(router, HealthStatus::Healthy).await;
    wait_rows(&env, 1).await;
    eventually(RECOVER, "counter replayed", || async {
        let c = router
            .read_counters(vec![format!("usage:key:{}:total", known.id)])
            .await
            .map_err(|e| e.to_string())?;
        if c[0].requests == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", c[0]))
        }
    })
    .await;
    assert!(matches!(
        router.find_key_by_hash(&known.key_hash).await,
        Ok(Some(_))
    ));
}
