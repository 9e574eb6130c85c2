//! The per-worker hot path (issue 12): every HTTP worker admits and counts on its own Redis
//! connection and reads keys and accounts from the view the router publishes. What one
//! worker learns (a disabled key, a held slot, a backend outage) must hold on all of them.
//! Each request here goes out on a fresh connection, and the server hands connections to
//! its workers in turn, so every test drives every worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use super::harness::{Relay, SONNET, SONNET_COST, request, start};
use crate::support::{Behaviour, RedisServer, TcpProxy};

/// Sends `body` on a connection of its own.
async fn post_fresh(relay: &Relay, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .post(relay.app.url("/api/v1/messages"))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .expect("the relay answers")
}

/// `n` requests at once, each on its own connection; their statuses, sorted.
async fn statuses_at_once(relay: &Relay, key: &str, n: usize, stream: bool) -> Vec<u16> {
    let sends = (0..n).map(|i| {
        let body = request(SONNET, stream, &format!("parallel {i}"));
        async move {
            let resp = post_fresh(relay, key, &body).await;
            let status = resp.status().as_u16();
            // Streams that were admitted stay open (gated); read only the refusals.
            if status != 200 {
                resp.text().await.unwrap();
            }
            status
        }
    });
    let mut statuses = futures_util::future::join_all(sends).await;
    statuses.sort_unstable();
    statuses
}

#[actix_rt::test]
async fn a_disabled_key_is_refused_by_every_worker_at_once() {
    let token = crate::support::env::random_hex(40);
    let admin_token = token.clone();
    let relay = start(move |env| {
        env.set("ADMIN_TOKEN", admin_token);
    })
    .await;
    relay.console("main", "sk-up", 10).await;
    let (key, plaintext) = relay.key(|_| {}).await;
    // Every worker serves the key (and has it cached) first.
    assert_eq!(
        statuses_at_once(&relay, &plaintext, 8, false).await,
        vec![200; 8]
    );

    let disabled = relay
        .app
        .client
        .post(
            relay
                .app
                .url(&format!("/admin/api-keys/{}/disable", key.id)),
        )
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);

    // No waiting for KEY_CACHE_TTL_SECONDS: the change reached every worker's view.
    for i in 0..8 {
        let resp = post_fresh(&relay, &plaintext, &request(SONNET, false, "after")).await;
        assert_eq!(resp.status(), 401, "request {i}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["message"], "API key is disabled");
    }
    assert_eq!(relay.mock.message_count(), 8);
}

#[actix_rt::test]
async fn a_concurrency_limit_holds_across_workers_under_four_times_as_many_clients() {
    let relay = start(|_| {}).await;
    relay.console("gated", "sk-gated", 10).await;
    let gate = Arc::new(Semaphore::new(0));
    relay
        .mock
        .set("sk-gated", Behaviour::Gated { gate: gate.clone() });
    let (key, plaintext) = relay.key(|k| k.concurrency_limit = 3).await;

    // 12 streams at once over both workers: exactly 3 slots, held open by the gate.
    let mut expected = vec![200; 3];
    expected.extend([429; 9]);
    let held = statuses_at_once(&relay, &plaintext, 12, true).await;
    assert_eq!(held, expected);
    assert_eq!(relay.mock.message_count(), 3);

    // The streams end, their slots free, and the next round gets exactly 3 again.
    gate.add_permits(1_000);
    relay.wait_no_leases(&key).await;
    relay.wait_usage_rows(3).await;
    // Held shut again: a stream that ended at once would free its slot for a fourth.
    let gate = Arc::new(Semaphore::new(0));
    relay
        .mock
        .set("sk-gated", Behaviour::Gated { gate: gate.clone() });
    let again = statuses_at_once(&relay, &plaintext, 12, true).await;
    assert_eq!(again, expected);
    assert_eq!(relay.mock.message_count(), 6);
    gate.add_permits(1_000);
}

#[actix_rt::test]
async fn every_worker_counts_its_requests_in_redis_exactly_once() {
    let relay = start(|_| {}).await;
    relay.console("main", "sk-up", 10).await;
    let (key, plaintext) = relay.key(|k| k.daily_cost_limit_micros = 1_000_000).await;
    assert_eq!(
        statuses_at_once(&relay, &plaintext, 10, false).await,
        vec![200; 10]
    );
    relay.wait_usage_rows(10).await;
    relay.wait_total_cost(&key, 10 * SONNET_COST).await;
    // The daily counter (a limit counter, counted by the workers with the request) agrees.
    let names = claude_relay::domain::limits::key_counter_names(
        &key.id,
        chrono::Utc::now(),
        relay.app.config.timezone_offset_hours,
        key.weekly_reset_day,
        key.weekly_reset_hour,
    );
    let counters = relay
        .router()
        .read_counters(vec![names.daily])
        .await
        .unwrap();
    assert_eq!(counters[0].requests, 10);
    assert_eq!(counters[0].cost_micros, 10 * SONNET_COST);
}

#[actix_rt::test]
async fn a_key_over_its_daily_limit_is_refused_by_every_worker() {
    let relay = start(|_| {}).await;
    relay.console("main", "sk-up", 10).await;
    // Two requests' worth: the third is over the limit wherever it lands.
    let (key, plaintext) = relay
        .key(|k| k.daily_cost_limit_micros = 2 * SONNET_COST)
        .await;
    for _ in 0..2 {
        let resp = post_fresh(&relay, &plaintext, &request(SONNET, false, "x")).await;
        assert_eq!(resp.status(), 200);
    }
    // The limit counter is written in the round trip that records the request: once the
    // total shows both, every worker refuses.
    relay.wait_total_cost(&key, 2 * SONNET_COST).await;
    for i in 0..8 {
        let resp = post_fresh(&relay, &plaintext, &request(SONNET, false, "over")).await;
        assert_eq!(resp.status(), 402, "request {i}");
    }
    assert_eq!(relay.mock.message_count(), 2);
}

#[actix_rt::test]
async fn an_expired_account_list_and_key_are_read_once_however_many_requests_find_them_stale() {
    let relay = start(|env| {
        env.set("KEY_CACHE_TTL_SECONDS", "3");
    })
    .await;
    relay.console("main", "sk-up", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    assert_eq!(
        statuses_at_once(&relay, &plaintext, 4, false).await,
        vec![200; 4]
    );
    // The list (and the key) expire; then 32 requests on both workers find them stale at once.
    actix_rt::time::sleep(Duration::from_millis(3_200)).await;
    let before = relay.router().cache_stats().await;
    let started = Instant::now();
    assert_eq!(
        statuses_at_once(&relay, &plaintext, 32, false).await,
        vec![200; 32]
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the burst ended within one TTL (else a second read would be due)"
    );
    let after = relay.router().cache_stats().await;
    assert_eq!(
        (
            after.account_list_reads - before.account_list_reads,
            after.key_reads - before.key_reads
        ),
        (1, 1),
        "one read of the list and one of the key for the whole burst"
    );
    assert_eq!(relay.mock.message_count(), 36);
}

#[actix_rt::test]
async fn a_frozen_redis_is_known_to_every_worker_and_none_waits_for_it() {
    // Redis's time-out is long: a worker still sending its admission script to the frozen
    // Redis would hold its request that long.
    const REDIS_TIMEOUT: Duration = Duration::from_millis(2_500);
    let redis = RedisServer::spawn();
    let proxy = TcpProxy::new(&format!("127.0.0.1:{}", redis.port()));
    let relay = start(|env| {
        env.set("REDIS_PORT", proxy.port().to_string());
        env.set("REDIS_TIMEOUT_MS", REDIS_TIMEOUT.as_millis().to_string());
    })
    .await;
    relay.console("main", "sk-up", 10).await;
    // A concurrency limit: every request is admitted by a script before it goes upstream.
    let (_, plaintext) = relay.key(|k| k.concurrency_limit = 20).await;
    assert_eq!(
        statuses_at_once(&relay, &plaintext, 8, false).await,
        vec![200; 8]
    );

    proxy.freeze();
    relay
        .app
        .wait_for_backend("redis", false, Duration::from_secs(20))
        .await;
    // One request at a time on fresh connections, which the server hands to its workers in
    // turn: each worker answers several, and none waits for Redis.
    for i in 0..8 {
        let started = Instant::now();
        let resp = post_fresh(&relay, &plaintext, &request(SONNET, false, "frozen")).await;
        let took = started.elapsed();
        assert_eq!(resp.status(), 200, "request {i}");
        assert!(
            took < REDIS_TIMEOUT,
            "request {i} took {took:?}: its worker waited for the frozen Redis"
        );
    }
    assert_eq!(relay.mock.message_count(), 16);

    proxy.open();
    relay
        .app
        .wait_for_backend("redis", true, Duration::from_secs(20))
        .await;
    assert_eq!(
        statuses_at_once(&relay, &plaintext, 8, false).await,
        vec![200; 8]
    );
    relay.wait_usage_rows(24).await;
}

#[actix_rt::test]
async fn a_worker_whose_counting_queue_is_full_leaves_the_rest_in_the_journal_for_the_replay() {
    // Each worker keeps at most 4 records for its counting round trips. Redis stalls for
    // 1.5 s, within its 5 s time-out, so it stays up: the queues fill while answers go on
    // (a key without limits makes no round trip before the upstream), and every record past
    // them waits in the journal until the replay counts it, once.
    let redis = RedisServer::spawn();
    let relay = start(|env| {
        env.set("REDIS_PORT", redis.port().to_string());
        env.set("REDIS_TIMEOUT_MS", "5000");
        env.set("USAGE_QUEUE_MAX_RECORDS", "4");
    })
    .await;
    relay.console("main", "sk-up", 10).await;
    let (key, plaintext) = relay.key(|_| {}).await;
    assert_eq!(
        statuses_at_once(&relay, &plaintext, 4, false).await,
        vec![200; 4]
    );
    let router = relay.router();
    let mut sent = 4;
    // The workers count once the router has published the ledger epoch to them (before,
    // the router counts, with no queue): a stall at a time until one finds them counting.
    for _ in 0..6 {
        let stall = redis.stall(1500);
        // The load starts once the stall surely has.
        let load = async {
            actix_rt::time::sleep(Duration::from_millis(300)).await;
            statuses_at_once(&relay, &plaintext, 40, false).await
        };
        let ((), statuses) = futures_util::join!(stall, load);
        assert_eq!(statuses, vec![200; 40]);
        sent += 40;
        if router.usage_stats().await.left_to_replay > 0 {
            break;
        }
    }
    let left = router.usage_stats().await.left_to_replay;
    assert!(left > 0, "no record was left to the replay");
    // Counted once each: by the workers or by the replay.
    relay.wait_total_cost(&key, sent * SONNET_COST).await;
    let stats = router.usage_stats().await;
    assert_eq!(stats.journal.uncounted_records, 0, "{stats:?}");
    assert!(stats.replayed >= left, "{stats:?}");
}
