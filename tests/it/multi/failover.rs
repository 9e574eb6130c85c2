//! Issue 16: a Redis failover under load is an outage the relay rides through. Three relay
//! instances serve 8 clients; the master holding the deployment's keys is SIGKILLed (in a
//! 6-node Redis Cluster, or under 3 Sentinels); its replica is promoted, the relays find it
//! by themselves, and afterwards every answer is archived exactly once and the limit
//! counters in the promoted replica equal the archive (what asynchronous replication lost
//! at the kill is counted again from the journals).

use crate::ledger::Ledger;
use crate::support::redis_topology::MASTER_NAME;
use crate::support::{ChildRelay, RedisCluster, RedisSentinels, eventually};

use super::{WAIT, finish_exact, instance, load_over, multi_env, on_cluster, random_hex};

/// Answers 200 each phase of the load must see.
const PER_PHASE: u64 = 150;

async fn three(f: &mut Ledger) -> [ChildRelay; 3] {
    [
        instance(&mut f.env, "1").await,
        instance(&mut f.env, "2").await,
        instance(&mut f.env, "3").await,
    ]
}

/// Waits until every instance reports Redis up again.
async fn redis_up_everywhere(relays: &[ChildRelay]) {
    for relay in relays {
        eventually(WAIT, "the instance reports Redis up", || async {
            let (_, body) = relay.http.health().await;
            match body["databases"]["redis"]["connected"].as_bool() {
                Some(true) => Ok(()),
                other => Err(format!("redis connected {other:?}: {body}")),
            }
        })
        .await;
    }
}

#[actix_rt::test]
async fn a_cluster_master_killed_under_load_loses_and_doubles_nothing() {
    let mut cluster = RedisCluster::start();
    let env = on_cluster(multi_env(&random_hex(32)), &cluster);
    let tagged = env.key_prefix.clone();
    let mut f = Ledger::new(env).await;
    let relays = three(&mut f).await;
    let load = load_over(&f, &relays);
    load.wait_more(PER_PHASE, "before the fault").await;

    let master = cluster.master_of(&tagged).expect("a master holds the keys");
    cluster.kill(master);
    let promoted = cluster.wait_failover(&tagged, master);
    eprintln!("master {master} killed; replica {promoted} promoted");
    load.wait_more(PER_PHASE, "after the failover").await;
    redis_up_everywhere(&relays).await;
    load.wait_more(PER_PHASE, "Redis up everywhere").await;
    finish_exact(load, &f, &relays).await;
}

#[actix_rt::test]
async fn a_sentinel_master_killed_under_load_loses_and_doubles_nothing() {
    let mut set = RedisSentinels::start();
    let env = multi_env(&random_hex(32))
        .with("REDIS_MODE", "sentinel")
        .with("REDIS_SENTINELS", set.sentinels_var())
        .with("REDIS_MASTER_NAME", MASTER_NAME)
        // Where the test itself reads counters: the master now, the replica after.
        .with("REDIS_PORT", set.master.port().to_string());
    let mut f = Ledger::new(env).await;
    let relays = three(&mut f).await;
    let load = load_over(&f, &relays);
    load.wait_more(PER_PHASE, "before the fault").await;

    set.master.stop();
    set.wait_failover();
    eprintln!(
        "master {} killed; replica {} promoted",
        set.master.port(),
        set.replica.port()
    );
    load.wait_more(PER_PHASE, "after the failover").await;
    redis_up_everywhere(&relays).await;
    load.wait_more(PER_PHASE, "Redis up everywhere").await;
    // The test reads the counters where they are now: the promoted replica.
    f.env.set("REDIS_PORT", set.replica.port().to_string());
    finish_exact(load, &f, &relays).await;
    // The killed master stays dead: the relays serve from the promoted replica alone.
    assert!(!set.master.answers());
}
