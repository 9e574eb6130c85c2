//! Issue 16: limits hold across instances. Three real relay processes share one Redis and
//! one MariaDB database (each with its own journal directory); the in-process mock upstream
//! counts the requests it is answering. A key's concurrency limit, its daily cost limit, a
//! disable through one instance's admin API and a SIGKILLed instance's leases and journal
//! are checked across the three.

mod failover;
mod replicas;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::sync::Semaphore;

use crate::ledger::{Answer, Ledger, Tally, assert_exact, count, send};
use crate::support::env::random_hex;
use crate::support::{
    Behaviour, ChildRelay, Http, RedisCluster, TcpProxy, TestEnv, eventually, spawn_binary,
};

const HEALTHY: Duration = Duration::from_secs(30);
pub const WAIT: Duration = Duration::from_secs(60);

/// The environment of every instance: a fast archive writer, an admin token, and a key
/// cache far longer than any bound the tests assert (so only pub/sub can explain a
/// prompt refusal).
fn multi_env(token: &str) -> TestEnv {
    TestEnv::new()
        .with("USAGE_BATCH_INTERVAL_MS", "100")
        .with("ADMIN_TOKEN", token)
        .with("KEY_CACHE_TTL_SECONDS", "60")
}

/// `env` pointed at a test-owned Redis Cluster. The key prefix carries the hash tag the relay
/// would add, so the test's own reads name the same keys.
pub fn on_cluster(mut env: TestEnv, cluster: &RedisCluster) -> TestEnv {
    env.key_prefix = format!("{{{}}}", env.key_prefix);
    let prefix = env.key_prefix.clone();
    env.with("REDIS_MODE", "cluster")
        .with("REDIS_NODES", cluster.nodes_var())
        .with("REDIS_KEY_PREFIX", prefix)
}

/// Each case runs twice: on the shared Redis server and on a 6-node Redis Cluster.
macro_rules! on_standalone_and_cluster {
    ($case:ident, $env:expr) => {
        mod $case {
            #[actix_rt::test]
            async fn standalone() {
                super::$case($env).await;
            }

            #[actix_rt::test]
            async fn cluster() {
                let cluster = crate::support::RedisCluster::start();
                super::$case(crate::multi::on_cluster($env, &cluster)).await;
            }
        }
    };
}

// After the macro: the module uses it too.
mod jobs;

on_standalone_and_cluster!(
    a_concurrency_limit_of_3_holds_for_20_clients_over_3_instances,
    super::multi_env(&super::random_hex(32))
);
on_standalone_and_cluster!(
    a_daily_cost_limit_reached_through_one_instance_stops_all_three,
    super::multi_env(&super::random_hex(32))
);
on_standalone_and_cluster!(
    a_key_disabled_on_one_instance_is_refused_by_the_others_before_the_cache_ttl,
    super::multi_env(&super::random_hex(32))
);
on_standalone_and_cluster!(
    an_account_cooling_down_after_a_429_on_one_instance_is_skipped_by_all,
    super::multi_env(&super::random_hex(32))
);
on_standalone_and_cluster!(
    a_killed_instance_frees_its_slots_after_the_lease_time_and_its_journal_is_archived,
    super::multi_env(&super::random_hex(32)).with("REQUEST_TIMEOUT", "3000")
);

/// Starts instance `name` on its own journal directory.
async fn instance(env: &mut TestEnv, name: &str) -> ChildRelay {
    let dir = env.dir().join(format!("journal-{name}"));
    env.set("USAGE_JOURNAL_DIR", dir.to_str().expect("utf-8"));
    let relay = spawn_binary(env).await;
    relay.wait_for_health("healthy", HEALTHY).await;
    relay
}

async fn three(env: &mut TestEnv) -> [ChildRelay; 3] {
    [
        instance(env, "1").await,
        instance(env, "2").await,
        instance(env, "3").await,
    ]
}

/// A client without an overall time-out: a stream stays open as long as the gate is shut.
fn patient() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Sends `bases.len()` streams at once (one per base URL) and returns their tasks.
fn streams(bases: &[String], key: &str) -> Vec<tokio::task::JoinHandle<Answer>> {
    let client = patient();
    bases
        .iter()
        .map(|base| {
            let (client, base, key) = (client.clone(), base.clone(), key.to_string());
            tokio::spawn(async move { send(&client, &base, &key, true).await })
        })
        .collect()
}

/// A gate the mock holds every stream of the upstream account behind.
fn shut_gate(f: &Ledger) -> Arc<Semaphore> {
    let gate = Arc::new(Semaphore::new(0));
    f._upstream
        .set("sk-up", Behaviour::Gated { gate: gate.clone() });
    gate
}

fn status(a: &Answer) -> String {
    match a {
        Answer::Ok(_) => "200".into(),
        Answer::Refused(s, body) => format!("{s} {body}"),
        Answer::Broken(e) => format!("broken: {e}"),
    }
}

async fn a_concurrency_limit_of_3_holds_for_20_clients_over_3_instances(env: TestEnv) {
    let mut f = Ledger::new(env).await;
    let (_key, plaintext) = f.another_key(|k| k.concurrency_limit = 3).await;
    let relays = three(&mut f.env).await;
    for round in 1..=2usize {
        // The previous round's last leases are released by recordings after the answers.
        wait_no_leases(&f.env, &_key.id).await;
        let gate = shut_gate(&f);
        let bases: Vec<String> = (0..20).map(|i| relays[i % 3].base.clone()).collect();
        let tasks = streams(&bases, &plaintext);
        // 17 refused at once, 3 held open by the mock.
        eventually(WAIT, "17 answered, 3 in flight", || async {
            let done = tasks.iter().filter(|t| t.is_finished()).count();
            let in_flight = f._upstream.in_flight();
            if done == 17 && in_flight == 3 {
                Ok(())
            } else {
                Err(format!(
                    "{done} answered, {in_flight} in flight at the mock"
                ))
            }
        })
        .await;
        gate.add_permits(1_000);
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.expect("client task"));
        }
        let ok = answers
            .iter()
            .filter(|a| matches!(a, Answer::Ok(_)))
            .count();
        let refused: Vec<&Answer> = answers
            .iter()
            .filter(|a| matches!(a, Answer::Refused(429, _)))
            .collect();
        let others: Vec<String> = answers
            .iter()
            .filter(|a| !matches!(a, Answer::Ok(_) | Answer::Refused(429, _)))
            .map(status)
            .collect();
        assert_eq!((ok, refused.len(), others.len()), (3, 17, 0), "{others:?}");
        assert!(
            refused.iter().all(|a| status(a).contains("concurrency")),
            "{:?}",
            refused.iter().map(|a| status(a)).collect::<Vec<_>>()
        );
        assert_eq!(f._upstream.in_flight_high(), 3, "round {round}");
        assert_eq!(f._upstream.message_count(), 3 * round);
        eventually(WAIT, "the streams ended at the mock", || async {
            match f._upstream.in_flight() {
                0 => Ok(()),
                n => Err(format!("{n} in flight")),
            }
        })
        .await;
    }
}

async fn a_daily_cost_limit_reached_through_one_instance_stops_all_three(env: TestEnv) {
    let mut f = Ledger::new(env).await;
    // $0.005 a day: a few requests of the mock's usage.
    let (_key, plaintext) = f.another_key(|k| k.daily_cost_limit_micros = 5_000).await;
    let relays = three(&mut f.env).await;
    let client = crate::ledger::client();
    let mut served = 0;
    let refused = loop {
        match send(&client, &relays[0].base, &plaintext, false).await {
            Answer::Ok(_) => served += 1,
            other => break status(&other),
        }
        assert!(served < 100, "still served after 100 requests");
    };
    assert!(served > 0, "refused before any request");
    assert!(refused.starts_with("402 "), "{refused}");
    assert!(refused.contains("daily_cost_limit_exceeded"), "{refused}");
    for relay in &relays[1..] {
        let answer = status(&send(&client, &relay.base, &plaintext, false).await);
        assert!(
            answer.starts_with("402 "),
            "instance {}: {answer}",
            relay.port
        );
        assert!(answer.contains("daily_cost_limit_exceeded"), "{answer}");
    }
    assert_eq!(f._upstream.message_count(), served);
}

async fn a_key_disabled_on_one_instance_is_refused_by_the_others_before_the_cache_ttl(
    env: TestEnv,
) {
    let token = env.var("ADMIN_TOKEN").expect("ADMIN_TOKEN").to_string();
    let mut f = Ledger::new(env).await;
    let (key, plaintext) = f.another_key(|_| {}).await;
    let relays = three(&mut f.env).await;
    let client = crate::ledger::client();
    // Every instance has the key in its cache.
    for relay in &relays {
        let answer = status(&send(&client, &relay.base, &plaintext, false).await);
        assert_eq!(answer, "200", "instance {}", relay.port);
    }
    let disabled = client
        .request(
            Method::POST,
            relays[0].url(&format!("/admin/api-keys/{}/disable", key.id)),
        )
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("disable");
    assert_eq!(disabled.status(), 200);
    let at = Instant::now();
    let refusal = status(&send(&client, &relays[0].base, &plaintext, false).await);
    assert!(
        !refusal.starts_with("200"),
        "instance 1 still serves: {refusal}"
    );
    let mut took = Vec::new();
    for relay in &relays[1..] {
        eventually(WAIT, "the disabled key is refused", || async {
            let answer = status(&send(&client, &relay.base, &plaintext, false).await);
            if answer == refusal {
                Ok(())
            } else {
                Err(answer)
            }
        })
        .await;
        took.push(at.elapsed());
    }
    eprintln!("disabled key refused by instances 2 and 3 after {took:?} (cache TTL 60 s)");
    // Pub/sub, not the 60 s cache time-out: well within 5 s even on a loaded machine.
    assert!(took.iter().all(|t| *t < Duration::from_secs(5)), "{took:?}");
}

async fn a_killed_instance_frees_its_slots_after_the_lease_time_and_its_journal_is_archived(
    env: TestEnv,
) {
    // REQUEST_TIMEOUT 3 s: a lease lives 6 s (the time-out plus as much slack).
    const LEASE: Duration = Duration::from_secs(6);
    let mut f = Ledger::new(env).await;
    let (key, plaintext) = f.another_key(|k| k.concurrency_limit = 3).await;
    let relay_1 = instance(&mut f.env, "1").await;
    let relay_2 = instance(&mut f.env, "2").await;
    // Instance 3 reaches MySQL through a proxy the test cuts: what it serves stays in its
    // journal.
    let proxy = TcpProxy::to_mysql();
    let direct = f.env.var("MYSQL_PORT").expect("MYSQL_PORT").to_string();
    f.env.set("MYSQL_PORT", proxy.port().to_string());
    let mut relay_3 = instance(&mut f.env, "3").await;
    f.env.set("MYSQL_PORT", direct);
    let client = crate::ledger::client();
    let mut tally = Tally::default();
    // One request archived normally puts the key and the accounts in instance 3's caches.
    match send(&client, &relay_3.base, &plaintext, false).await {
        Answer::Ok(id) => tally.ok_ids.push(id),
        other => panic!("{}", status(&other)),
    }
    eventually(WAIT, "instance 3 archived its first event", || async {
        match backlog(&relay_3.http).await {
            Some(0) => Ok(()),
            other => Err(format!("backlog {other:?}")),
        }
    })
    .await;
    proxy.cut();
    for _ in 0..5 {
        match send(&client, &relay_3.base, &plaintext, false).await {
            Answer::Ok(id) => tally.ok_ids.push(id),
            other => panic!("{}", status(&other)),
        }
    }
    eventually(WAIT, "instance 3 holds 5 events", || async {
        match backlog(&relay_3.http).await {
            Some(5) => Ok(()),
            other => Err(format!("backlog {other:?}")),
        }
    })
    .await;
    assert_eq!(count(&f.env, "SELECT COUNT(*) AS n FROM usage_records"), 1);

    // Three streams hold the key's three slots through instance 3; then it dies. (A lease
    // is released by the recording after the answer: wait until the last one's is.)
    wait_no_leases(&f.env, &key.id).await;
    let gate = shut_gate(&f);
    let bases = vec![relay_3.base.clone(); 3];
    let held = streams(&bases, &plaintext);
    eventually(WAIT, "3 streams in flight", || async {
        match f._upstream.in_flight() {
            3 => Ok(()),
            n => Err(format!("{n} in flight")),
        }
    })
    .await;
    let refused = status(&send(&client, &relay_1.base, &plaintext, false).await);
    assert!(refused.starts_with("429 "), "{refused}");
    relay_3.kill();
    let killed = Instant::now();
    for t in held {
        let answer = t.await.expect("client task");
        assert!(matches!(answer, Answer::Broken(_)), "{}", status(&answer));
    }
    f._upstream.set("sk-up", Behaviour::Normal);
    drop(gate);

    // Refused while the dead instance's leases live; served once they expired.
    let mut refusals = 0;
    loop {
        assert!(killed.elapsed() < WAIT, "no slot free after {WAIT:?}");
        match send(&client, &relay_2.base, &plaintext, false).await {
            Answer::Ok(id) => {
                tally.ok_ids.push(id);
                break;
            }
            other => {
                let s = status(&other);
                assert!(s.starts_with("429 "), "{s}");
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let freed = killed.elapsed();
    eprintln!("slots of the killed instance free after {freed:?} ({refusals} refusals before)");
    assert!(refusals > 0, "no refusal: the slots were not held");
    // The leases were taken a moment before the kill: free a little under 6 s after it.
    assert!(
        freed >= LEASE - Duration::from_secs(2) && freed <= LEASE + Duration::from_secs(3),
        "{freed:?}"
    );
    // All three slots are free: three streams at once through the living instances. They are
    // counted as they reach the mock: the killed instance's streams stay in the mock's
    // in-flight count (their connections closed without a reset, a half-close the mock's
    // server keeps serving), which made a count of 3 in flight true before any new stream
    // arrived, or never true once one had.
    wait_no_leases(&f.env, &key.id).await;
    let gate = shut_gate(&f);
    let received_before = f._upstream.message_count();
    let bases = vec![
        relay_1.base.clone(),
        relay_2.base.clone(),
        relay_1.base.clone(),
    ];
    let again = streams(&bases, &plaintext);
    eventually(
        WAIT,
        "3 new streams held at the upstream at once",
        || async {
            let done = again.iter().filter(|t| t.is_finished()).count();
            match (f._upstream.message_count() - received_before, done) {
                (3, 0) => Ok(()),
                other => Err(format!("(reached the upstream, answered) {other:?}")),
            }
        },
    )
    .await;
    gate.add_permits(1_000);
    for t in again {
        match t.await.expect("client task") {
            Answer::Ok(id) => tally.ok_ids.push(id),
            other => panic!("{}", status(&other)),
        }
    }

    // Restarted on its journal, instance 3 archives the 5 events it had kept.
    let relay_3 = instance(&mut f.env, "3").await;
    assert_exact(
        &f.env,
        &[&relay_1.http, &relay_2.http, &relay_3.http],
        &tally,
        0,
        &[&key.id],
    )
    .await;
    let archived: BTreeSet<String> = crate::support::mysql::strings(
        &f.env.direct_mysql(),
        "SELECT request_id AS s FROM usage_records",
    )
    .into_iter()
    .collect();
    assert_eq!(
        archived.len(),
        10,
        "1 before the cut, 5 from the journal, 1 + 3 after the kill"
    );
}

/// The credential of the newest request the mock received.
fn last_credential(f: &Ledger) -> String {
    let received = f._upstream.received();
    let last = received
        .iter()
        .rev()
        .find(|r| r.path == "/v1/messages")
        .expect("a message request");
    crate::relay::harness::credential_of(&last.headers)
}

async fn an_account_cooling_down_after_a_429_on_one_instance_is_skipped_by_all(env: TestEnv) {
    let mut f = Ledger::new(env).await;
    let config = f.env.config();
    crate::support::fixtures::store_account(
        &f.setup.actors.router,
        crate::support::fixtures::console_account(&config, "c2", &f._upstream.url, "sk-backup", 90),
    )
    .await;
    let relays = three(&mut f.env).await;
    let client = crate::ledger::client();
    // Every instance serves from the preferred account and has it in its snapshot.
    for relay in &relays {
        assert_eq!(
            status(&send(&client, &relay.base, &f.plaintext, false).await),
            "200"
        );
        assert_eq!(last_credential(&f), "sk-up", "instance {}", relay.port);
    }
    // The preferred account answers 429 once, through instance 1: it cools down (60 s).
    f._upstream.set(
        "sk-up",
        Behaviour::Fail {
            status: 429,
            body:
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}"#
                    .into(),
            headers: vec![],
        },
    );
    let refused = status(&send(&client, &relays[0].base, &f.plaintext, false).await);
    assert!(refused.starts_with("429 "), "{refused}");
    // It would answer again, but no instance sends it anything while it cools down.
    f._upstream.set("sk-up", Behaviour::Normal);
    let at = Instant::now();
    for relay in &relays[1..] {
        eventually(WAIT, "the cooling account is skipped", || async {
            match status(&send(&client, &relay.base, &f.plaintext, false).await).as_str() {
                "200" if last_credential(&f) == "sk-backup" => Ok(()),
                other => Err(format!("{other} through {}", last_credential(&f))),
            }
        })
        .await;
    }
    let took = at.elapsed();
    eprintln!("the cooldown reached instances 2 and 3 within {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let before = f._upstream.message_count();
    for i in 0..12 {
        let relay = &relays[i % 3];
        assert_eq!(
            status(&send(&client, &relay.base, &f.plaintext, false).await),
            "200"
        );
        assert_eq!(last_credential(&f), "sk-backup", "request {i}");
    }
    assert_eq!(f._upstream.message_count(), before + 12);
}

/// Clients of the fixture's key spread over `relays`.
pub fn load_over(f: &Ledger, relays: &[ChildRelay]) -> crate::ledger::Load {
    let https: Vec<&Http> = relays.iter().map(|r| &r.http).collect();
    f.load(&crate::ledger::Targets::new(&https))
}

/// Stops the clients, then checks: every answer 200, none lost on the way, and every one
/// archived exactly once with the key's limit counters equal to the archive.
pub async fn finish_exact(load: crate::ledger::Load, f: &Ledger, relays: &[ChildRelay]) {
    let tally = load.finish().await;
    tally.assert_all_200();
    assert!(
        tally.transport_errors.is_empty(),
        "{:?}",
        tally.transport_errors
    );
    let https: Vec<&Http> = relays.iter().map(|r| &r.http).collect();
    assert_exact(&f.env, &https, &tally, 0, &[&f.key.id]).await;
}

/// Waits until no live lease of the key's concurrency slots is left in Redis.
async fn wait_no_leases(env: &TestEnv, key_id: &str) {
    let set = format!("{}lease:key:{key_id}", env.key_prefix);
    eventually(WAIT, "the key's leases are released", || async {
        let now = chrono::Utc::now().timestamp_millis();
        match env.redis_query::<i64>(redis::cmd("ZCOUNT").arg(&set).arg(now).arg("+inf")) {
            Ok(0) => Ok(()),
            other => Err(format!("{other:?} leases")),
        }
    })
    .await;
}

async fn backlog(http: &Http) -> Option<u64> {
    let (_, body) = http.health().await;
    body["usageBacklog"]["events"].as_u64()
}
