//! The replay of uncounted journal records (what the router does every
//! `USAGE_BATCH_INTERVAL_MS`) counts only records journaled before its previous tick: the
//! newer ones are on their way through the hot path, which counts them itself. A replay
//! that reached them raced the hot path under load and counted every record twice (once in
//! vain), pass after pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use claude_relay::actors::router::{HealthStatus, RouterHandle};
use claude_relay::config::StorageMode;

use super::{RECOVER, env_in, event, start, updates, wait_status};
use crate::support::eventually;

async fn requests_of(router: &RouterHandle, key_id: &str) -> i64 {
    router
        .read_counters(vec![format!("usage:key:{key_id}:total")])
        .await
        .expect("counters")[0]
        .requests
}

/// 2,500 records wait uncounted (more than one pass takes, so the replay takes two passes).
/// While the second tick's passes count them, a writer journals records as the hot path
/// would (nothing counts those, the tick being a minute away). None of the writer's records
/// is counted by those passes; each of the 2,500 is counted once; the next ticks count the
/// writer's.
#[actix_rt::test]
async fn a_replay_leaves_the_records_journaled_since_its_last_tick_to_the_hot_path() {
    let env = env_in(StorageMode::Hybrid).with("USAGE_BATCH_INTERVAL_MS", "60000");
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    eventually(RECOVER, "counters trusted", || async {
        let stats = router.usage_stats().await;
        if stats.counters_trusted {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    })
    .await;
    let journal = router.journal().clone();
    let (waiting, written) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    for i in 0..2_500 {
        let e = event(&waiting, "acct", i);
        journal.append(&e, &updates(&e)).expect("journaled");
    }
    // The first tick only marks where the waiting records end: they are newer than the last.
    router.replay_counters().await.expect("first tick");
    assert_eq!(router.usage_stats().await.journal.uncounted_records, 2_500);
    assert_eq!(requests_of(router, &waiting).await, 0);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (journal, stop, key) = (journal.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let e = event(&key, "acct", n);
                journal.append(&e, &updates(&e)).expect("journaled");
                n += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            n
        })
    };
    router.replay_counters().await.expect("second tick");
    // Its passes are over once they counted the 2,500 (the count is added after each pass).
    eventually(RECOVER, "the 2,500 waiting records replayed", || async {
        let stats = router.usage_stats().await;
        if stats.replayed >= 2_500 {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let appended = writer.join().expect("writer");
    assert!(
        appended > 0,
        "the writer journaled records during the replay"
    );
    let stats = router.usage_stats().await;
    assert_eq!(
        (stats.journal.uncounted_records, stats.replayed),
        (appended as u64, 2_500),
        "the writer's records are left to the hot path"
    );
    assert_eq!(requests_of(router, &written).await, 0);

    // The next ticks count them, once each.
    assert!(router.drain_usage(RECOVER).await, "journal drained");
    assert_eq!(requests_of(router, &written).await, appended);
    assert_eq!(requests_of(router, &waiting).await, 2_500);
    assert_eq!(router.usage_stats().await.replayed, 2_500 + appended as u64);
}
