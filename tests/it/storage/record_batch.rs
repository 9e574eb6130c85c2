//! The counting round trip of several journal records at once (`apply_usage_batch`): each
//! record is applied exactly once whatever else is in its batch, the counters of a batch are
//! summed per set, leases are released, and a record of another epoch changes nothing.
//! A batch of new records of one epoch takes the compact script (`RECORD_NEW`); one with a
//! replayed record falls back to the record-by-record script after the compact one changed
//! nothing: both paths are exercised here.

use claude_relay::actors::cache::{Applied, UsageApply};
use claude_relay::actors::router::HealthStatus;
use claude_relay::app::Actors;
use claude_relay::config::StorageMode;
use claude_relay::domain::limits::{CounterUpdate, Counters};
use claude_relay::kv::KeySpace;

use super::{env_in, start, wait_status};
use crate::support::TestEnv;

fn update(name: &str, requests: i64, cost_micros: i64) -> CounterUpdate {
    CounterUpdate {
        name: name.into(),
        delta: Counters {
            requests,
            cost_micros,
            ..Counters::default()
        },
        ttl_seconds: Some(3_600),
    }
}

/// A counter set's requests, cost and input fields (None where absent).
fn counters(env: &TestEnv, keys: &KeySpace, name: &str) -> Vec<Option<i64>> {
    env.redis_query(
        redis::cmd("HMGET")
            .arg(keys.named(name))
            .arg("requests")
            .arg("cost")
            .arg("input"),
    )
    .expect("read counters")
}

/// Adds a lease that would never expire to a lease set.
fn add_lease(env: &TestEnv, lease_set: &str, id: &str) {
    let _: i64 = env
        .redis_query(redis::cmd("ZADD").arg(lease_set).arg(i64::MAX).arg(id))
        .expect("add lease");
}

/// Leases held in a lease set.
fn leases_in(env: &TestEnv, lease_set: &str) -> i64 {
    env.redis_query(redis::cmd("ZCARD").arg(lease_set))
        .expect("zcard")
}

/// A healthy set of actors in `mode` and the ledger epoch they counted under.
async fn started(mode: StorageMode) -> (TestEnv, Actors, String) {
    let env = env_in(mode);
    let actors = start(&env);
    wait_status(&actors.router, HealthStatus::Healthy).await;
    let epoch = actors
        .cache
        .ledger_epoch()
        .await
        .expect("read epoch")
        .expect("an epoch is installed")
        .id;
    (env, actors, epoch)
}

#[actix_rt::test]
async fn a_batch_applies_each_record_once_and_sums_its_counters() {
    let (env, actors, epoch) = started(StorageMode::Hybrid).await;
    let cache = &actors.cache;
    let keys = cache.keys();
    let set = "usage:key:batch-test:total";
    let other_set = "usage:key:batch-test:day:2026-12-02";
    let lease_set = keys.leases("key:batch-test");
    add_lease(&env, &lease_set, "lease-1");
    let first = [update(set, 1, 100)];
    let second = [update(set, 1, 250), update(other_set, 1, 250)];
    let apply = |seq, updates, release| UsageApply {
        epoch: &epoch,
        instance: "batch-test-instance",
        seq,
        updates,
        release,
        archive: None,
    };
    let codes = cache
        .apply_usage_batch(&[
            apply(7, &first, Some(("key:batch-test", "lease-1"))),
            apply(8, &second, None),
            // The same record again in the same batch: applied once.
            apply(7, &first, None),
        ])
        .await
        .expect("batch");
    assert_eq!(codes, [Applied::Now, Applied::Now, Applied::Before]);

    let read = |name: &str| counters(&env, keys, name);
    assert_eq!(read(set), [Some(2), Some(350), None]);
    assert_eq!(read(other_set), [Some(1), Some(250), None]);
    let ttl: i64 = env
        .redis_query(redis::cmd("TTL").arg(keys.named(set)))
        .expect("ttl");
    assert!(
        (1..=3_600).contains(&ttl),
        "a new set gets its lifetime: {ttl}"
    );
    assert_eq!(leases_in(&env, &lease_set), 0, "the lease was released");

    // Replayed, and a record under another epoch: nothing is counted again.
    let wrong_epoch = format!("{epoch}-not");
    let codes = cache
        .apply_usage_batch(&[
            apply(8, &second, None),
            UsageApply {
                epoch: &wrong_epoch,
                ..apply(9, &first, None)
            },
        ])
        .await
        .expect("second batch");
    assert_eq!(codes, [Applied::Before, Applied::OtherEpoch]);
    assert_eq!(read(set), [Some(2), Some(350), None]);
    assert_eq!(read(other_set), [Some(1), Some(250), None]);

    // An empty batch is one harmless call.
    assert_eq!(
        cache.apply_usage_batch(&[]).await.expect("empty batch"),
        Vec::<Applied>::new()
    );
}

#[actix_rt::test]
async fn a_batch_archives_its_events_newest_first_once_each() {
    let (env, actors, epoch) = started(StorageMode::Redis).await;
    let cache = &actors.cache;
    let keys = cache.keys();
    let counted = [update("usage:key:archive-test:total", 1, 10)];
    let apply = |seq, event| UsageApply {
        epoch: &epoch,
        instance: "archive-test-instance",
        seq,
        updates: &counted,
        release: None,
        archive: Some(("archive-test", event)),
    };
    let codes = cache
        .apply_usage_batch(&[
            apply(1, r#"{"n":1}"#),
            apply(2, r#"{"n":2}"#),
            apply(1, r#"{"n":1}"#),
            apply(3, r#"{"n":3}"#),
        ])
        .await
        .expect("batch");
    assert_eq!(
        codes,
        [Applied::Now, Applied::Now, Applied::Before, Applied::Now]
    );
    let list = |name: String| {
        let items: Vec<String> = env
            .redis_query(redis::cmd("LRANGE").arg(name).arg(0).arg(-1))
            .expect("lrange");
        items
    };
    let newest_first = [r#"{"n":3}"#, r#"{"n":2}"#, r#"{"n":1}"#];
    assert_eq!(list(keys.usage_records("archive-test")), newest_first);
    let all = list(keys.usage_archive());
    assert_eq!(all[..3], newest_first, "the global list holds them too");

    // All new: the compact script pushes them in the same order.
    let codes = cache
        .apply_usage_batch(&[apply(4, r#"{"n":4}"#), apply(5, r#"{"n":5}"#)])
        .await
        .expect("new batch");
    assert_eq!(codes, [Applied::Now, Applied::Now]);
    let newest_first = [
        r#"{"n":5}"#,
        r#"{"n":4}"#,
        r#"{"n":3}"#,
        r#"{"n":2}"#,
        r#"{"n":1}"#,
    ];
    assert_eq!(list(keys.usage_records("archive-test")), newest_first);
    assert_eq!(list(keys.usage_archive())[..5], newest_first);
    let total: Option<i64> = env
        .redis_query(
            redis::cmd("HGET")
                .arg(keys.named("usage:key:archive-test:total"))
                .arg("requests"),
        )
        .expect("hget");
    assert_eq!(total, Some(5), "five records, each counted once");
}

#[actix_rt::test]
async fn new_records_are_summed_in_one_call_and_a_replay_among_them_is_counted_once() {
    let (env, actors, epoch) = started(StorageMode::Hybrid).await;
    let cache = &actors.cache;
    let keys = cache.keys();
    let set = "usage:key:new-test:total";
    let other_set = "usage:key:new-test:day:2026-12-02";
    let lease_set = keys.leases("key:new-test");
    let add_lease = |id: &str| add_lease(&env, &lease_set, id);
    let leases = || leases_in(&env, &lease_set);
    let read = |name: &str| counters(&env, keys, name);
    add_lease("lease-a");
    add_lease("lease-b");
    let first = [update(set, 1, 100)];
    let second = [update(set, 1, 50), update(other_set, 1, 50)];
    let apply = |seq, updates, release| UsageApply {
        epoch: &epoch,
        instance: "new-test-instance",
        seq,
        updates,
        release,
        archive: None,
    };
    let codes = cache
        .apply_usage_batch(&[
            apply(20, &first, Some(("key:new-test", "lease-a"))),
            apply(21, &second, Some(("key:new-test", "lease-b"))),
        ])
        .await
        .expect("new batch");
    assert_eq!(codes, [Applied::Now, Applied::Now]);
    assert_eq!(read(set), [Some(2), Some(150), None]);
    assert_eq!(read(other_set), [Some(1), Some(50), None]);
    assert_eq!(leases(), 0, "both leases released");

    // A new record batched with a replayed one: the compact script sets the new record's
    // bit, meets the replay, clears the bit again and changes nothing; the batch is then
    // counted record by record.
    add_lease("lease-c");
    let codes = cache
        .apply_usage_batch(&[
            apply(22, &first, Some(("key:new-test", "lease-c"))),
            apply(21, &second, None),
        ])
        .await
        .expect("mixed batch");
    assert_eq!(codes, [Applied::Now, Applied::Before]);
    assert_eq!(read(set), [Some(3), Some(250), None]);
    assert_eq!(read(other_set), [Some(1), Some(50), None]);
    assert_eq!(leases(), 0);

    // Every record under another epoch: leases released, nothing counted or marked (the
    // same records count once their instance has caught up).
    add_lease("lease-d");
    let stale = format!("{epoch}-stale");
    let codes = cache
        .apply_usage_batch(&[
            UsageApply {
                epoch: &stale,
                ..apply(23, &first, Some(("key:new-test", "lease-d")))
            },
            UsageApply {
                epoch: &stale,
                ..apply(24, &first, None)
            },
        ])
        .await
        .expect("stale batch");
    assert_eq!(codes, [Applied::OtherEpoch, Applied::OtherEpoch]);
    assert_eq!(read(set), [Some(3), Some(250), None]);
    assert_eq!(leases(), 0);
    let codes = cache
        .apply_usage_batch(&[apply(23, &first, None), apply(24, &first, None)])
        .await
        .expect("caught up");
    assert_eq!(codes, [Applied::Now, Applied::Now]);
    assert_eq!(read(set), [Some(5), Some(450), None]);
}

#[actix_rt::test]
async fn a_batch_after_the_script_cache_was_flushed_loads_its_script_and_names_each_key_once() {
    let (env, actors, epoch) = started(StorageMode::Hybrid).await;
    let cache = &actors.cache;
    let keys = cache.keys();
    let set = "usage:key:flush-test:total";
    let counted = [update(set, 1, 5)];
    let (scope_a, scope_b) = ("key:flush-test-a", "key:flush-test-b");
    for (scope, id) in [(scope_a, "a1"), (scope_a, "a2"), (scope_b, "b1")] {
        add_lease(&env, &keys.leases(scope), id);
    }
    // Redis forgets every script (as after a restart): the call loads its script again.
    let _: String = env
        .redis_query(redis::cmd("SCRIPT").arg("FLUSH"))
        .expect("flush scripts");
    let apply = |seq, release| UsageApply {
        epoch: &epoch,
        instance: "flush-test-instance",
        seq,
        updates: &counted,
        release,
        archive: None,
    };
    // 65,535 and 65,536 fall in two applied bitmaps; the leases in two scopes, a scope again
    // after the other.
    let batch = [
        apply(65_535, Some((scope_a, "a1"))),
        apply(65_536, Some((scope_b, "b1"))),
        apply(65_537, Some((scope_a, "a2"))),
    ];
    let codes = cache.apply_usage_batch(&batch).await.expect("batch");
    assert_eq!(codes, [Applied::Now; 3]);
    assert_eq!(counters(&env, keys, set), [Some(3), Some(15), None]);
    assert_eq!(leases_in(&env, &keys.leases(scope_a)), 0);
    assert_eq!(leases_in(&env, &keys.leases(scope_b)), 0);
    for seq in [65_535, 65_536] {
        let bitmap = keys.ledger_applied("flush-test-instance", seq);
        let bit: i64 = env
            .redis_query(redis::cmd("GETBIT").arg(&bitmap).arg(seq & 0xFFFF))
            .expect("getbit");
        assert_eq!(bit, 1, "record {seq} is marked in {bitmap}");
    }
    let again = cache.apply_usage_batch(&batch).await.expect("replay");
    assert_eq!(again, [Applied::Before; 3]);
    assert_eq!(counters(&env, keys, set), [Some(3), Some(15), None]);
}
