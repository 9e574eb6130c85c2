//! Issue 16: jobs run once with several instances. Three relays share Redis and MySQL: an
//! expired OAuth token is refreshed by one of them for all; limit counters lost under load
//! are rebuilt from the archive by exactly one; and a rebuilder that stalled past its lock
//! cannot overwrite what replaced it (the lock's token fences every write).

use std::time::Duration;

use futures_util::future::join_all;

use claude_relay::actors::cache::{CacheActor, CacheHandle, LedgerEpoch};
use claude_relay::actors::cache_migrate::CounterValue;
use claude_relay::domain::limits::Counters;
use claude_relay::ledger::ArchiveBoundary;

use crate::ledger::{Answer, Ledger, client, metric, send};
use crate::relay::harness::credential_of;
use crate::support::fixtures::{oauth_account, store_account};
use crate::support::{ChildRelay, RedisServer, TestEnv, eventually};

use super::{WAIT, finish_exact, instance, load_over, multi_env, random_hex};

on_standalone_and_cluster!(
    a_rebuilder_that_lost_its_lock_writes_nothing,
    crate::support::TestEnv::new()
);

async fn three(f: &mut Ledger) -> [ChildRelay; 3] {
    [
        instance(&mut f.env, "1").await,
        instance(&mut f.env, "2").await,
        instance(&mut f.env, "3").await,
    ]
}

#[actix_rt::test]
async fn an_expired_oauth_token_is_refreshed_once_for_three_instances() {
    let mut f = Ledger::new(multi_env(&random_hex(32))).await;
    let config = f.env.config();
    let account = store_account(
        &f.setup.actors.router,
        oauth_account(
            &config,
            "oauth",
            "sk-ant-oat01-expired",
            "sk-ant-ort01-original",
            chrono::Utc::now() - chrono::Duration::hours(1),
            10,
        ),
    )
    .await;
    let (_key, plaintext) = f
        .another_key(|k| k.claude_account_id = Some(account.id.clone()))
        .await;
    let upstream = f._upstream.url.clone();
    f.env
        .set("CLAUDE_API_URL", upstream.clone())
        .set("CLAUDE_OAUTH_TOKEN_URL", format!("{upstream}/oauth/token"))
        .set(
            "CLAUDE_OAUTH_PROFILE_URL",
            format!("{upstream}/api/oauth/profile"),
        );
    let relays = three(&mut f).await;
    let client = client();
    let answers = join_all((0..30).map(|i| {
        let (client, base, key) = (&client, &relays[i % 3].base, &plaintext);
        async move { send(client, base, key, i % 2 == 1).await }
    }))
    .await;
    for (i, answer) in answers.iter().enumerate() {
        assert!(
            matches!(answer, Answer::Ok(_)),
            "request {i} not served: {}\nlogs of the instances:\n{}",
            super::status(answer),
            relays
                .iter()
                .map(ChildRelay::logs)
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
    }
    assert_eq!(f._upstream.token_refreshes(), 1, "one refresh for all");
    let credentials: Vec<String> = f
        ._upstream
        .received()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .map(|r| credential_of(&r.headers))
        .collect();
    assert_eq!(credentials.len(), 30);
    assert!(
        credentials.iter().all(|c| c == "sk-ant-oat01-refreshed-1"),
        "{credentials:?}"
    );
}

/// Epochs built from the archive by the relays of `f` (the in-process setup relay too).
async fn rebuilt(f: &Ledger, relays: &[ChildRelay]) -> f64 {
    let sample = "claude_relay_usage_counter_rebuilds{by=\"rebuilt\"}";
    let mut sum = metric(&f.setup.http, sample).await;
    for relay in relays {
        sum += metric(&relay.http, sample).await;
    }
    sum
}

#[actix_rt::test]
async fn counters_lost_under_load_are_rebuilt_by_one_of_three_instances() {
    let mut redis = RedisServer::spawn();
    let env = multi_env(&random_hex(32)).with("REDIS_PORT", redis.port().to_string());
    let mut f = Ledger::new(env).await;
    let relays = three(&mut f).await;
    let before = rebuilt(&f, &relays).await;
    let load = load_over(&f, &relays);
    load.wait_more(100, "before the fault").await;
    // Restarted empty: every instance finds the counters gone at about the same moment.
    redis.stop();
    redis.start();
    load.wait_more(100, "Redis back, empty").await;
    eventually(WAIT, "the counters are rebuilt", || async {
        match rebuilt(&f, &relays).await - before {
            0.0 => Err("not yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    load.wait_more(100, "after the rebuild").await;
    finish_exact(load, &f, &relays).await;
    assert_eq!(
        rebuilt(&f, &relays).await - before,
        1.0,
        "one instance rebuilt, the others caught up"
    );
}

/// A cache actor alone on `env`'s Redis, once connected.
async fn cache_on(env: &TestEnv) -> CacheHandle {
    let config = env.config();
    let cache = CacheActor::spawn(config.redis, Duration::from_millis(100), true);
    eventually(WAIT, "the cache actor connects", || async {
        cache.ping().await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    cache
}

fn epoch(id: &str) -> LedgerEpoch {
    LedgerEpoch {
        id: id.into(),
        boundaries: [(
            "instance-a".to_string(),
            ArchiveBoundary { seq: 41, row_id: 7 },
        )]
        .into(),
    }
}

async fn a_rebuilder_that_lost_its_lock_writes_nothing(env: TestEnv) {
    let cache = cache_on(&env).await;
    let lock = "lock:test-rebuild";
    let counters = vec![CounterValue {
        name: "usage:key:k1:total".into(),
        counters: Counters {
            requests: 5,
            cost_micros: 700,
            ..Counters::default()
        },
        ttl_ms: None,
    }];
    let names = ["usage:key:k1:total".to_string()];
    let read = || cache.read_counters(&names);
    // The first rebuilder's lock expires while it stalls; a second one takes it.
    assert!(
        cache
            .acquire_lock(lock, "first".into(), Duration::from_millis(100))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cache
            .acquire_lock(lock, "second".into(), Duration::from_secs(30))
            .await
            .unwrap()
    );
    let stale = cache
        .install_epoch(&epoch("stale"), &counters, lock, "first")
        .await
        .unwrap();
    assert!(!stale, "fenced out");
    assert_eq!(cache.ledger_epoch().await.unwrap(), None);
    assert_eq!(read().await.unwrap(), vec![Counters::default()]);

    assert!(
        cache
            .install_epoch(&epoch("fresh"), &counters, lock, "second")
            .await
            .unwrap()
    );
    assert_eq!(cache.ledger_epoch().await.unwrap(), Some(epoch("fresh")));
    assert_eq!(read().await.unwrap(), vec![counters[0].counters]);

    // Even the lock's holder installs nothing once an epoch exists.
    let mut other = counters.clone();
    other[0].counters.requests = 9;
    assert!(
        !cache
            .install_epoch(&epoch("late"), &other, lock, "second")
            .await
            .unwrap()
    );
    assert_eq!(cache.ledger_epoch().await.unwrap(), Some(epoch("fresh")));
    assert_eq!(read().await.unwrap(), vec![counters[0].counters]);
}

#[actix_rt::test]
async fn a_rebuild_lock_left_by_a_dead_holder_delays_the_rebuild_only_until_it_expires() {
    let mut f = Ledger::new(multi_env(&random_hex(32))).await;
    let relays = three(&mut f).await;
    let before = rebuilt(&f, &relays).await;
    // A process took the rebuild lock (3 s, as the relays take it) and died: it never
    // renews or releases it. Then Redis loses the counters.
    let cache = cache_on(&f.env).await;
    assert!(
        cache
            .acquire_lock("lock:ledger-rebuild", "dead".into(), Duration::from_secs(3))
            .await
            .unwrap()
    );
    let taken = std::time::Instant::now();
    cache.drop_epoch().await.unwrap();
    let load = load_over(&f, &relays);
    eventually(WAIT, "the counters are rebuilt", || async {
        match rebuilt(&f, &relays).await - before {
            0.0 => Err("not yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    let waited = taken.elapsed();
    eprintln!("rebuilt {waited:?} after the dead holder took the lock");
    assert!(waited >= Duration::from_millis(2_500), "{waited:?}");
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    load.wait_more(100, "after the rebuild").await;
    // Keys without limits are served all along (no transport error either: stricter than
    // before); the counters end up exact.
    finish_exact(load, &f, &relays).await;
    assert_eq!(rebuilt(&f, &relays).await - before, 1.0);
}
