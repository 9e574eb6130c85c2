//! No usage event lost, none doubled: MySQL cut in the middle of 2,000 events; a relay that
//! dies with events in the Redis outbox; a relay that dies with events in the local spool
//! (both backends down). The dead relay is an actix System of its own on another thread,
//! stopped without draining; a new set of actors on the same backends replays.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use claude_relay::actors::router::{HealthStatus, RouterHandle};
use claude_relay::app::Actors;
use claude_relay::config::{Config, StorageMode};

use super::{
    RECOVER, count, env_in, event, redis_query, shared_redis_port, start, updates, wait_backend,
    wait_status,
};
use crate::support::{RedisServer, TcpProxy, TestEnv, eventually, mysql};

fn outbox_len(env: &TestEnv) -> i64 {
    redis_query(
        shared_redis_port(),
        ::redis::cmd("LLEN").arg(format!("{}outbox:usage", env.key_prefix)),
    )
}

async fn wait_rows(env: &TestEnv, want: i64, within: Duration) {
    eventually(within, &format!("{want} archive rows"), || async {
        let n = count(env, "SELECT COUNT(*) AS n FROM usage_records");
        if n == want {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        }
    })
    .await;
}

/// Exactly `ids` archived, each once, and the daily roll-ups count each once.
fn assert_archived_once(env: &TestEnv, ids: &BTreeSet<String>) {
    let stored: Vec<String> = mysql::strings(
        &env.direct_mysql(),
        "SELECT request_id AS s FROM usage_records",
    );
    assert_eq!(stored.len(), ids.len(), "rows");
    let stored: BTreeSet<String> = stored.into_iter().collect();
    assert_eq!(&stored, ids, "the archived request ids");
    assert_eq!(
        count(
            env,
            "SELECT CAST(SUM(requests) AS SIGNED) AS n FROM usage_daily"
        ),
        ids.len() as i64,
        "usage_daily requests"
    );
}

#[actix_rt::test]
async fn two_thousand_events_with_mysql_cut_in_the_middle() {
    let proxy = TcpProxy::to_mysql();
    let env = env_in(StorageMode::Hybrid).with("MYSQL_PORT", proxy.port().to_string());
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let key_id = uuid::Uuid::new_v4().to_string();
    let mut ids = BTreeSet::new();
    let mut cut_at = None;
    for i in 0..2_000i64 {
        if i == 700 {
            proxy.cut();
            cut_at = Some(Instant::now());
        }
        if i == 1_400 {
            // MySQL stays away for at least 4 s, events arriving all along.
            let away = cut_at.expect("cut").elapsed();
            if away < Duration::from_secs(4) {
                tokio::time::sleep(Duration::from_secs(4) - away).await;
            }
            proxy.open();
        }
        if (700..1_400).contains(&i) && i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let e = event(&key_id, "acct", i);
        ids.insert(e.request_id.clone());
        router
            .record_usage(e.clone(), updates(&e))
            .await
            .unwrap_or_else(|err| panic!("event {i}: {err}"));
    }
    wait_rows(&env, 2_000, Duration::from_secs(90)).await;
    eventually(RECOVER, "outbox empty", || async {
        let n = outbox_len(&env);
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} left"))
        }
    })
    .await;
    // Let a few more drains run: still exactly once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_archived_once(&env, &ids);
    let total = router
        .read_counters(vec![format!("usage:key:{key_id}:total")])
        .await
        .expect("counters");
    assert_eq!(total[0].requests, 2_000, "real-time counters");
    let stats = router.usage_stats().await;
    assert_eq!(stats.recorded, 2_000);
    assert_eq!(stats.dropped, 0);
}

/// Runs `phase` in a relay of its own (an actix System on another thread) and then kills
/// that relay: the System and every arbiter stop, nothing drains. Returns what `phase`
/// returned and the dead relay's router handle.
fn in_a_relay_that_dies<T, F, Fut>(config: Config, phase: F) -> (T, RouterHandle)
where
    T: Send + 'static,
    F: FnOnce(Actors) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let actors = Actors::start(&config, true).expect("actors");
            let router = actors.router.clone();
            let out = phase(actors).await;
            actix_rt::System::current().stop();
            tokio::time::sleep(Duration::from_millis(100)).await;
            (out, router)
        })
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

async fn assert_dead(router: &RouterHandle) {
    assert!(
        router.health(Duration::from_secs(1)).await.is_none(),
        "the killed relay still answers"
    );
}

#[actix_rt::test]
async fn events_in_the_outbox_of_a_killed_relay_are_archived_once_by_the_next() {
    let proxy = Arc::new(TcpProxy::to_mysql());
    let env = env_in(StorageMode::Hybrid).with("MYSQL_PORT", proxy.port().to_string());
    let cut = proxy.clone();
    let env_prefix = env.key_prefix.clone();
    let (ids, dead) = in_a_relay_that_dies(env.config(), move |actors| async move {
        let router = &actors.router;
        wait_status(router, HealthStatus::Healthy).await;
        cut.cut();
        wait_backend(router, "mysql", false).await;
        let key_id = uuid::Uuid::new_v4().to_string();
        let mut ids = BTreeSet::new();
        for i in 0..300 {
            let e = event(&key_id, "acct", i);
            ids.insert(e.request_id.clone());
            router
                .record_usage(e.clone(), updates(&e))
                .await
                .expect("record");
        }
        let queued: i64 = redis_query(
            shared_redis_port(),
            ::redis::cmd("LLEN").arg(format!("{env_prefix}outbox:usage")),
        );
        assert_eq!(queued, 300, "every event reached the outbox");
        ids
    });
    assert_dead(&dead).await;

    proxy.open();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        outbox_len(&env),
        300,
        "nobody drained: the relay really is dead"
    );
    assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM usage_records"), 0);

    let next = start(&env);
    wait_status(&next.router, HealthStatus::Healthy).await;
    wait_rows(&env, 300, RECOVER).await;
    eventually(RECOVER, "outbox empty", || async {
        let n = outbox_len(&env);
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} left"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_archived_once(&env, &ids);
}

#[actix_rt::test]
async fn events_in_the_spool_of_a_killed_relay_are_archived_once_by_the_next() {
    let redis = RedisServer::spawn();
    let proxy = Arc::new(TcpProxy::to_mysql());
    let env = env_in(StorageMode::Hybrid)
        .with("REDIS_PORT", redis.port().to_string())
        .with("MYSQL_PORT", proxy.port().to_string());
    let spool = std::path::PathBuf::from(env.var("SPOOL_DIR").expect("spool dir"));
    let key_id = uuid::Uuid::new_v4().to_string();

    let cut = proxy.clone();
    let key = key_id.clone();
    let ((ids, mut redis), dead) = in_a_relay_that_dies(env.config(), move |actors| async move {
        let mut redis = redis;
        let router = &actors.router;
        wait_status(router, HealthStatus::Healthy).await;
        redis.stop();
        cut.cut();
        wait_status(router, HealthStatus::Unhealthy).await;
        let mut ids = BTreeSet::new();
        for i in 0..50 {
            let e = event(&key, "acct", i);
            ids.insert(e.request_id.clone());
            router
                .record_usage(e.clone(), updates(&e))
                .await
                .expect("spooled");
        }
        assert_eq!(router.usage_stats().await.spooled, 50);
        (ids, redis)
    });
    assert_dead(&dead).await;
    let spooled: usize = std::fs::read_dir(&spool)
        .expect("spool dir")
        .map(|f| {
            let text = std::fs::read_to_string(f.expect("entry").path()).expect("read");
            text.lines().filter(|l| !l.trim().is_empty()).count()
        })
        .sum();
    assert_eq!(spooled, 50, "every event is in the spool files");

    redis.start();
    proxy.open();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(&env, "SELECT COUNT(*) AS n FROM usage_records"),
        0,
        "the relay is dead"
    );

    let next = start(&env);
    wait_status(&next.router, HealthStatus::Healthy).await;
    wait_rows(&env, 50, RECOVER).await;
    eventually(RECOVER, "spool replayed and removed", || async {
        let left = std::fs::read_dir(&spool).expect("spool dir").count();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} files"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_archived_once(&env, &ids);
    // The counters the dead relay could not write were replayed once.
    let total = next
        .router
        .read_counters(vec![format!("usage:key:{key_id}:total")])
        .await
        .expect("counters");
    assert_eq!(total[0].requests, 50);
}
