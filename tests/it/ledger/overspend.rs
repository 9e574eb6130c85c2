//! The windows in which a key could get more than its daily cost limit after Redis lost the
//! counters: two relays that learn of the wipe at different times (one has served the key
//! from a journal the archive does not hold yet), and a rebuild slower than an admission's
//! wait. A test-owned redis-server is wiped; the key must not get one 200 past its limit,
//! counted exactly against the archive.

use std::time::{Duration, Instant};

use super::{Answer, Ledger, Tally, assert_exact, client, count, ledger_env, send};
use crate::support::mysql::TableLock;
use crate::support::{ChildRelay, RedisServer, TcpProxy, TestEnv, eventually, spawn_binary};

const HEALTHY: Duration = Duration::from_secs(20);
/// $0.005 a day: a few requests of the mock's usage.
const DAILY_LIMIT_MICROS: i64 = 5_000;

async fn relay_on(env: &TestEnv) -> ChildRelay {
    let relay = spawn_binary(env).await;
    relay.wait_for_health("healthy", HEALTHY).await;
    relay
}

/// Sends the key's requests to `base` until it is refused; returns the 200s' request ids.
async fn spend_to_the_limit(base: &str, key: &str) -> Vec<String> {
    let http = client();
    let mut served = Vec::new();
    for _ in 0..100 {
        match send(&http, base, key, false).await {
            Answer::Ok(id) => served.push(id),
            Answer::Refused(402, body) if body.contains("daily_cost_limit_exceeded") => {
                assert!(!served.is_empty(), "refused before any request: {body}");
                return served;
            }
            Answer::Refused(status, body) => panic!("{status} {body}"),
            Answer::Broken(e) => panic!("{e}"),
        }
    }
    panic!("the key was not refused within 100 requests");
}

/// `n` requests of the key to `base`, one after the other: `status body` or `200 <id>`.
async fn answers(base: &str, key: &str, n: usize) -> Vec<String> {
    let http = client();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(match send(&http, base, key, false).await {
            Answer::Ok(id) => format!("200 {id}"),
            Answer::Refused(status, body) => format!("{status} {body}"),
            Answer::Broken(e) => e,
        });
    }
    out
}

fn assert_all_refused(answers: &[String], when: &str) {
    let not_402: Vec<&String> = answers.iter().filter(|a| !a.starts_with("402 ")).collect();
    assert!(
        not_402.is_empty(),
        "{when}: the key over its daily limit was answered: {not_402:#?}"
    );
}

fn flush(env: &TestEnv) {
    let () = redis::cmd("FLUSHDB")
        .query(&mut env.redis())
        .expect("FLUSHDB");
}

#[actix_rt::test]
async fn two_relays_learning_of_a_wipe_at_different_times_do_not_overspend_a_daily_limit() {
    let redis = RedisServer::spawn();
    let proxy = TcpProxy::to_mysql();
    let mut f = Ledger::new(ledger_env().with("REDIS_PORT", redis.port().to_string())).await;
    let (limited, plaintext) = f
        .another_key(|k| k.daily_cost_limit_micros = DAILY_LIMIT_MICROS)
        .await;
    let relay_a = relay_on(&f.env).await;
    // B: a journal of its own, MySQL through the proxy.
    let journal_b = f.env.dir().join("journal-b");
    f.env
        .set("USAGE_JOURNAL_DIR", journal_b.to_str().expect("utf-8"));
    f.env.set("MYSQL_PORT", proxy.port().to_string());
    let relay_b = relay_on(&f.env).await;

    // One answer through B first: B knows the key and the account from then on (a relay
    // cut off from MySQL serves the keys it has cached).
    let mut served = answers(&relay_b.http.base, &plaintext, 1).await;
    assert!(served[0].starts_with("200 "), "{served:?}");
    served[0] = served[0]["200 ".len()..].to_string();
    let key_rows = format!(
        "SELECT COUNT(*) AS n FROM usage_records WHERE api_key_id = '{}'",
        limited.id
    );
    eventually(HEALTHY, "the first answer archived", || async {
        match count(&f.env, &key_rows) {
            1 => Ok(()),
            n => Err(format!("{n} rows")),
        }
    })
    .await;
    // B serves the key to its limit while it cannot archive: those events are in B's
    // journal and in the Redis counters only.
    proxy.cut();
    served.extend(spend_to_the_limit(&relay_b.http.base, &plaintext).await);
    assert_eq!(count(&f.env, &key_rows), 1, "B archived while cut off");

    // Redis loses the counters; A rebuilds them from an archive without B's events.
    flush(&f.env);
    proxy.open();
    let from_a = answers(&relay_a.http.base, &plaintext, 5).await;
    assert_all_refused(&from_a, "through A after the wipe");
    let from_b = answers(&relay_b.http.base, &plaintext, 3).await;
    assert_all_refused(&from_b, "through B after the wipe");

    let tally = Tally {
        ok_ids: served,
        ..Tally::default()
    };
    assert_exact(
        &f.env,
        &[&relay_a.http, &relay_b.http],
        &tally,
        0,
        &[&limited.id],
    )
    .await;
    assert_eq!(
        count(&f.env, &key_rows),
        i64::try_from(tally.ok_ids.len()).expect("count"),
        "the key's archive rows are its 200s"
    );
    assert_all_refused(
        &answers(&relay_a.http.base, &plaintext, 1).await,
        "once settled",
    );
}

#[actix_rt::test]
async fn a_rebuild_slower_than_the_admission_wait_does_not_overspend_a_daily_limit() {
    // Longer than the wait before an admission without limits falls back (3 s), twice.
    const SLOW: Duration = Duration::from_secs(7);
    let redis = RedisServer::spawn();
    let f = Ledger::new(ledger_env().with("REDIS_PORT", redis.port().to_string())).await;
    let (limited, plaintext) = f
        .another_key(|k| k.daily_cost_limit_micros = DAILY_LIMIT_MICROS)
        .await;
    let relay = relay_on(&f.env).await;
    let served = spend_to_the_limit(&relay.http.base, &plaintext).await;
    let key_rows = format!(
        "SELECT COUNT(*) AS n FROM usage_records WHERE api_key_id = '{}'",
        limited.id
    );
    let want = i64::try_from(served.len()).expect("count");
    eventually(HEALTHY, "the key's 200s archived", || async {
        let n = count(&f.env, &key_rows);
        if n == want {
            Ok(())
        } else {
            Err(format!("{n} of {want} rows"))
        }
    })
    .await;

    // The rebuild's archive snapshot waits on the roll-ups while they are locked.
    let lock = TableLock::write(&f.env.direct_mysql(), "usage_daily");
    flush(&f.env);
    let base = relay.http.base.clone();
    let key = plaintext.clone();
    let during = actix_rt::spawn(async move { answers(&base, &key, 3).await });
    let started = Instant::now();
    eventually(
        HEALTHY,
        "the rebuild held past the admission wait",
        || async {
            if during.is_finished() {
                // Answered while the counters could not be rebuilt: what did it say?
                return Ok(());
            }
            if started.elapsed() >= SLOW {
                Ok(())
            } else {
                Err("requests waiting".into())
            }
        },
    )
    .await;
    drop(lock);
    let during = during.await.expect("requests during the rebuild");
    assert_all_refused(&during, "while the counters were rebuilt");
    assert_all_refused(
        &answers(&relay.http.base, &plaintext, 3).await,
        "after the rebuild",
    );

    let tally = Tally {
        ok_ids: served,
        ..Tally::default()
    };
    assert_exact(&f.env, &[&relay.http], &tally, 0, &[&limited.id]).await;
    assert_eq!(
        count(&f.env, &key_rows),
        want,
        "the key's archive rows are its 200s"
    );
}
